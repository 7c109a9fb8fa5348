//! From a detected region to its text: the region cut out and straightened
//! (a perspective warp onto an upright rectangle), turned upright when the
//! orientation classifier says it is upside down, and read by the CTC
//! recogniser, as RapidOCR does each step.

use image::imageops::FilterType;
use image::RgbImage;
use imageproc::geometric_transformations::{warp_into, Border, Interpolation, Projection};

use super::detect::{normalized_bgr, Quad};

/// The recogniser's and the classifier's input height.
pub const HEIGHT: u32 = 48;
/// The classifier's input width.
pub const CLS_WIDTH: u32 = 192;
/// The narrowest recogniser input (PP-OCR's 320).
const MIN_REC_WIDTH: u32 = 320;
/// Recogniser inputs are padded up to a multiple of this, so that crops of
/// other images batch with this one's when their widths are close.
const REC_WIDTH_STEP: u32 = 64;

/// The region of `image` inside `quad`, as an upright rectangle; a region
/// much taller than wide is vertical text, turned to read left to right.
pub fn crop(image: &RgbImage, quad: &Quad) -> Option<RgbImage> {
    let dist = |a: [f32; 2], b: [f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    let w = dist(quad[0], quad[1]).max(dist(quad[2], quad[3])) as u32;
    let h = dist(quad[0], quad[3]).max(dist(quad[1], quad[2])) as u32;
    if w == 0 || h == 0 {
        return None;
    }
    let from = quad.map(|p| (p[0], p[1]));
    let to = [
        (0.0, 0.0),
        (w as f32, 0.0),
        (w as f32, h as f32),
        (0.0, h as f32),
    ];
    let projection = Projection::from_control_points(from, to)?;
    let mut out = RgbImage::new(w, h);
    warp_into(
        image,
        projection,
        Interpolation::Bicubic,
        Border::Replicate,
        &mut out,
    );
    if h as f32 / w as f32 >= 1.5 {
        out = image::imageops::rotate270(&out);
    }
    Some(out)
}

/// `crop` resized to `HEIGHT` rows and at most `width` columns, keeping
/// its aspect, normalised and zero-padded on the right to `width`.
fn padded(crop: &RgbImage, width: u32) -> Vec<f32> {
    let ratio = crop.width() as f32 / crop.height() as f32;
    let resized_w = ((HEIGHT as f32 * ratio).ceil() as u32).clamp(1, width);
    let resized = image::imageops::resize(crop, resized_w, HEIGHT, FilterType::Triangle);
    let plane = normalized_bgr(&resized);
    let mut data = vec![0f32; (3 * HEIGHT * width) as usize];
    for c in 0..3 {
        for y in 0..HEIGHT {
            let src = (c * HEIGHT * resized_w + y * resized_w) as usize;
            let dst = (c * HEIGHT * width + y * width) as usize;
            data[dst..dst + resized_w as usize]
                .copy_from_slice(&plane[src..src + resized_w as usize]);
        }
    }
    data
}

/// The classifier's input for a crop: `[3, 48, 192]`.
pub fn cls_input(crop: &RgbImage) -> Vec<f32> {
    padded(crop, CLS_WIDTH)
}

/// The width a crop is padded to for the recogniser, which is also its
/// batching key.
pub fn rec_width(crop: &RgbImage) -> u32 {
    let natural = (HEIGHT as f32 * crop.width() as f32 / crop.height() as f32).ceil() as u32;
    natural
        .div_ceil(REC_WIDTH_STEP)
        .saturating_mul(REC_WIDTH_STEP)
        .max(MIN_REC_WIDTH)
}

/// The recogniser's input for a crop: `[3, 48, width]`.
pub fn rec_input(crop: &RgbImage, width: u32) -> Vec<f32> {
    padded(crop, width)
}

/// One crop's best class at each time step and its probability.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Steps {
    pub classes: Vec<u32>,
    pub probs: Vec<f32>,
}

impl Steps {
    /// The argmax over each row of a `[t, classes]` slice.
    pub fn of(logits: &[f32], classes: usize) -> Self {
        let mut steps = Steps::default();
        for row in logits.chunks_exact(classes.max(1)) {
            let (best, p) =
                row.iter().enumerate().fold(
                    (0, f32::MIN),
                    |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
                );
            steps.classes.push(best as u32);
            steps.probs.push(p);
        }
        steps
    }
}

/// The recogniser's alphabet: class 0 is CTC's blank, then the model's own
/// character list (its `character` metadata, a line per character), then
/// a space.
#[derive(Debug, Clone)]
pub struct Alphabet {
    chars: Vec<String>,
}

impl Alphabet {
    pub fn from_metadata(list: &str) -> Self {
        let mut chars = vec![String::new()];
        chars.extend(list.lines().map(str::to_string));
        chars.push(" ".into());
        Self { chars }
    }

    pub fn len(&self) -> usize {
        self.chars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.len() <= 2
    }

    /// CTC's greedy decoding: repeats collapse, blanks drop. The confidence
    /// is the mean probability of the characters kept (0 for none).
    pub fn decode(&self, steps: &Steps) -> (String, f32) {
        let mut text = String::new();
        let (mut sum, mut kept) = (0f64, 0usize);
        let mut previous = None;
        for (&class, &p) in steps.classes.iter().zip(&steps.probs) {
            let repeat = previous == Some(class);
            previous = Some(class);
            if repeat || class == 0 {
                continue;
            }
            if let Some(c) = self.chars.get(class as usize) {
                text.push_str(c);
                sum += f64::from(p);
                kept += 1;
            }
        }
        let confidence = if kept == 0 {
            0.0
        } else {
            (sum / kept as f64) as f32
        };
        (text, confidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_collapses_repeats_and_drops_blanks() {
        let alphabet = Alphabet::from_metadata("0\n1\n2\n.");
        // 1 1 _ 1 2 2 _ . 0 (space is the last class)
        let steps = Steps {
            classes: vec![2, 2, 0, 2, 3, 3, 0, 4, 1, 5],
            probs: vec![0.9, 0.8, 1.0, 0.7, 1.0, 0.2, 1.0, 0.5, 0.6, 0.8],
        };
        let (text, confidence) = alphabet.decode(&steps);
        assert_eq!(text, "112.0 ");
        let mean = (0.9 + 0.7 + 1.0 + 0.5 + 0.6 + 0.8) / 6.0;
        assert!((confidence - mean).abs() < 1e-6, "{confidence}");
        assert_eq!(alphabet.decode(&Steps::default()), (String::new(), 0.0));
        assert_eq!(
            Steps::of(&[0.1, 0.7, 0.2, 0.5, 0.1, 0.4], 3).classes,
            vec![1, 0]
        );
    }

    #[test]
    fn crops_are_straightened_and_padded_to_a_shared_width() {
        let mut image = RgbImage::from_pixel(200, 100, image::Rgb([255, 255, 255]));
        for x in 20..180 {
            for y in 40..60 {
                image.put_pixel(x, y, image::Rgb([0, 0, 0]));
            }
        }
        let quad = [[20.0, 40.0], [180.0, 40.0], [180.0, 60.0], [20.0, 60.0]];
        let cut = crop(&image, &quad).unwrap();
        assert_eq!(cut.dimensions(), (160, 20));
        assert!(
            cut.pixels().all(|p| p.0[0] < 30),
            "the crop holds only the bar"
        );
        // 48 * 160 / 20 = 384 columns, padded up to 384 (a multiple of 64).
        assert_eq!(rec_width(&cut), 384);
        let tall = RgbImage::new(20, 60);
        assert_eq!(
            crop(&tall, &[[0.0, 0.0], [20.0, 0.0], [20.0, 60.0], [0.0, 60.0]])
                .unwrap()
                .dimensions(),
            (60, 20)
        );
        let input = rec_input(&cut, 448);
        assert_eq!(input.len(), 3 * 48 * 448);
        assert_eq!(input[447], 0.0, "padding is zero");
        assert_eq!(cls_input(&cut).len(), 3 * 48 * 192);
    }
}

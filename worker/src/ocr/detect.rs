//! Text detection's pre- and post-processing around the PP-OCR DB model,
//! step for step as RapidOCR does it (so that both read the same boxes):
//! resize the short side to the model's side in multiples of 32, threshold
//! the probability map, dilate, trace contours, fit each a rotated
//! rectangle, score it on the map, grow it by DB's unclip offset and fit
//! again.

use geo::{
    Area, Buffer, Coord, Euclidean, Length, LineString, MinimumRotatedRect, MultiPoint, Polygon,
};
use image::imageops::FilterType;
use image::{GrayImage, Luma, RgbImage};
use imageproc::point::Point;

/// A text region's corners in the image's pixels: top-left, top-right,
/// bottom-right, bottom-left.
pub type Quad = [[f32; 2]; 4];

/// DB's post-processing settings (RapidOCR's defaults).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Short side the detector sees (PP-OCR's 736).
    pub side: u32,
    pub threshold: f32,
    pub box_threshold: f32,
    pub unclip_ratio: f64,
    pub max_candidates: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            side: 736,
            threshold: 0.3,
            box_threshold: 0.5,
            unclip_ratio: 1.6,
            max_candidates: 1000,
        }
    }
}

/// The detector's input: `[3, h, w]`, BGR (the models were trained on
/// OpenCV's channel order), scaled to [-1, 1].
pub struct Input {
    pub height: u32,
    pub width: u32,
    pub data: Vec<f32>,
}

/// Resizes `image` for the detector, or None for an image too small to hold text.
pub fn prepare(image: &RgbImage, side: u32) -> Option<Input> {
    let (w, h) = image.dimensions();
    let short = w.min(h);
    let ratio = if short < side {
        side as f32 / short as f32
    } else {
        1.0
    };
    let round32 = |v: f32| ((v.trunc() / 32.0).round() * 32.0) as u32;
    let (rw, rh) = (round32(w as f32 * ratio), round32(h as f32 * ratio));
    if rw == 0 || rh == 0 {
        return None;
    }
    let resized = image::imageops::resize(image, rw, rh, FilterType::Triangle);
    Some(Input {
        height: rh,
        width: rw,
        data: normalized_bgr(&resized),
    })
}

/// `[3, h, w]` planes in B, G, R order of `(px / 255 - 0.5) / 0.5`.
pub fn normalized_bgr(image: &RgbImage) -> Vec<f32> {
    let plane = (image.width() * image.height()) as usize;
    let mut data = vec![0f32; plane * 3];
    for (i, px) in image.pixels().enumerate() {
        for (c, &v) in px.0.iter().enumerate() {
            data[(2 - c) * plane + i] = v as f32 / 127.5 - 1.0;
        }
    }
    data
}

/// The text regions of a probability map of `width` x `height`, in the
/// pixels of an image of `dest` (width, height), in reading order.
pub fn regions(
    map: &[f32],
    (width, height): (u32, u32),
    dest: (u32, u32),
    settings: &Settings,
) -> Vec<(Quad, f32)> {
    let bitmap = dilated(map, width, height, settings.threshold);
    let contours = imageproc::contours::find_contours::<i32>(&bitmap);
    let mut found = Vec::new();
    for contour in contours.iter().take(settings.max_candidates) {
        let Some((quad, short)) = mini_box(contour.points.iter().map(|p| (p.x as f64, p.y as f64)))
        else {
            continue;
        };
        if short < 3.0 {
            continue;
        }
        let score = box_score(map, width, height, &quad);
        if score < settings.box_threshold {
            continue;
        }
        let Some(grown) = unclip(&quad, settings.unclip_ratio) else {
            continue;
        };
        let Some((quad, short)) = mini_box(grown.into_iter()) else {
            continue;
        };
        if short < 5.0 {
            continue;
        }
        let scale = |v: f32, from: u32, to: u32| {
            (v / from as f32 * to as f32).round().clamp(0.0, to as f32)
        };
        let quad = quad.map(|[x, y]| [scale(x, width, dest.0), scale(y, height, dest.1)]);
        let quad = clockwise(quad).map(|[x, y]| {
            [
                x.clamp(0.0, dest.0 as f32 - 1.0).trunc(),
                y.clamp(0.0, dest.1 as f32 - 1.0).trunc(),
            ]
        });
        let side =
            |a: [f32; 2], b: [f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        if side(quad[0], quad[1]) as i32 <= 3 || side(quad[0], quad[3]) as i32 <= 3 {
            continue;
        }
        found.push((quad, score));
    }
    reading_order(found)
}

/// `map > threshold`, dilated by a 2x2 square as OpenCV anchors it (each
/// pixel takes the maximum of itself and its up and left neighbours).
fn dilated(map: &[f32], width: u32, height: u32, threshold: f32) -> GrayImage {
    let on = |x: u32, y: u32| map[(y * width + x) as usize] > threshold;
    GrayImage::from_fn(width, height, |x, y| {
        let hit = on(x, y)
            || (x > 0 && on(x - 1, y))
            || (y > 0 && on(x, y - 1))
            || (x > 0 && y > 0 && on(x - 1, y - 1));
        Luma([if hit { 255 } else { 0 }])
    })
}

/// The smallest rotated rectangle around `points`, its corners ordered as
/// RapidOCR's `get_mini_boxes` orders them, and its shorter side.
fn mini_box(points: impl Iterator<Item = (f64, f64)>) -> Option<(Quad, f64)> {
    let points: MultiPoint<f64> = points.map(|(x, y)| geo::Point::new(x, y)).collect();
    let rect = points.minimum_rotated_rect()?;
    let mut corners: Vec<[f32; 2]> = rect
        .exterior()
        .coords()
        .take(4)
        .map(|c| [c.x as f32, c.y as f32])
        .collect();
    if corners.len() < 4 {
        return None;
    }
    let side =
        |a: [f32; 2], b: [f32; 2]| (((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)) as f64).sqrt();
    let short = side(corners[0], corners[1]).min(side(corners[1], corners[2]));
    corners.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (i1, i4) = if corners[1][1] > corners[0][1] {
        (0, 1)
    } else {
        (1, 0)
    };
    let (i2, i3) = if corners[3][1] > corners[2][1] {
        (2, 3)
    } else {
        (3, 2)
    };
    Some(([corners[i1], corners[i2], corners[i3], corners[i4]], short))
}

/// The mean probability inside `quad` (DB's "fast" score: the quad's
/// corners truncated to whole pixels, as OpenCV's fillPoly takes them).
fn box_score(map: &[f32], width: u32, height: u32, quad: &Quad) -> f32 {
    let xs = quad.map(|p| p[0]);
    let ys = quad.map(|p| p[1]);
    let clamp = |v: f32, max: u32| (v as i64).clamp(0, max as i64 - 1) as u32;
    let xmin = clamp(xs.iter().copied().fold(f32::MAX, f32::min).floor(), width);
    let xmax = clamp(xs.iter().copied().fold(f32::MIN, f32::max).ceil(), width);
    let ymin = clamp(ys.iter().copied().fold(f32::MAX, f32::min).floor(), height);
    let ymax = clamp(ys.iter().copied().fold(f32::MIN, f32::max).ceil(), height);
    let mut mask = GrayImage::new(xmax - xmin + 1, ymax - ymin + 1);
    let mut poly: Vec<Point<i32>> = quad
        .iter()
        .map(|p| Point::new((p[0] - xmin as f32) as i32, (p[1] - ymin as f32) as i32))
        .collect();
    poly.dedup();
    if poly.len() > 1 && poly.first() == poly.last() {
        poly.pop();
    }
    if poly.len() < 3 {
        return 0.0;
    }
    imageproc::drawing::draw_polygon_mut(&mut mask, &poly, Luma([1]));
    let (mut sum, mut n) = (0f64, 0u64);
    for (x, y, m) in mask.enumerate_pixels() {
        if m.0[0] == 1 {
            sum += map[((ymin + y) * width + xmin + x) as usize] as f64;
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        (sum / n as f64) as f32
    }
}

/// The region grown by DB's unclip distance (area x ratio / perimeter),
/// with round corners as pyclipper's offset makes them.
fn unclip(quad: &Quad, ratio: f64) -> Option<Vec<(f64, f64)>> {
    let ring: LineString<f64> = quad
        .iter()
        .map(|p| Coord {
            x: p[0] as f64,
            y: p[1] as f64,
        })
        .collect();
    let polygon = Polygon::new(ring, vec![]);
    let perimeter = Euclidean.length(polygon.exterior());
    if perimeter <= 0.0 {
        return None;
    }
    let distance = polygon.unsigned_area() * ratio / perimeter;
    let grown = polygon.buffer(distance);
    let points: Vec<(f64, f64)> = grown
        .iter()
        .flat_map(|p| {
            p.exterior()
                .coords()
                .map(|c| (c.x, c.y))
                .collect::<Vec<_>>()
        })
        .collect();
    (!points.is_empty()).then_some(points)
}

/// Top-left, top-right, bottom-right, bottom-left (imutils' ordering).
fn clockwise(quad: Quad) -> Quad {
    let mut by_x = quad;
    by_x.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let mut left = [by_x[0], by_x[1]];
    let mut right = [by_x[2], by_x[3]];
    left.sort_by(|a, b| a[1].total_cmp(&b[1]));
    right.sort_by(|a, b| a[1].total_cmp(&b[1]));
    [left[0], right[0], right[1], left[1]]
}

/// Top to bottom; boxes whose tops are within 10 pixels of the one before
/// are one line, read left to right.
fn reading_order(mut found: Vec<(Quad, f32)>) -> Vec<(Quad, f32)> {
    found.sort_by(|a, b| a.0[0][1].total_cmp(&b.0[0][1]));
    let mut line = 0;
    let mut keyed: Vec<(usize, (Quad, f32))> = Vec::with_capacity(found.len());
    let mut previous: Option<f32> = None;
    for region in found {
        let y = region.0[0][1];
        if previous.is_some_and(|p| y - p >= 10.0) {
            line += 1;
        }
        previous = Some(y);
        keyed.push((line, region));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1 .0[0][0].total_cmp(&b.1 .0[0][0])));
    keyed.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bright_bar_on_the_map_is_one_region_grown_by_the_unclip_offset() {
        let (w, h) = (64u32, 32u32);
        let mut map = vec![0f32; (w * h) as usize];
        for y in 10..20 {
            for x in 8..56 {
                map[(y * w + x) as usize] = 0.9;
            }
        }
        let found = regions(&map, (w, h), (128, 64), &Settings::default());
        assert_eq!(found.len(), 1);
        let (quad, score) = found[0];
        // The dilated row and column below and right of the bar count as 0.
        let expected = 0.9 * (10.0 * 48.0) / (11.0 * 49.0);
        assert!((score - expected).abs() < 0.01, "{score}");
        // The contour spans x 8..56, y 10..20 (the dilation adds a column
        // and a row): area 480, perimeter 116, so unclip grows it by
        // 480 * 1.6 / 116 = 6.6 map pixels a side, and the image is twice
        // the map's size.
        let near = |v: f32, want: f32| (v - want).abs() <= 1.0;
        assert!(near(quad[0][0], 2.8) && near(quad[0][1], 6.8), "{quad:?}");
        assert!(
            near(quad[2][0], 125.2) && near(quad[2][1], 53.2),
            "{quad:?}"
        );
    }

    #[test]
    fn regions_read_top_to_bottom_then_left_to_right() {
        let q = |x: f32, y: f32| {
            (
                [[x, y], [x + 10.0, y], [x + 10.0, y + 5.0], [x, y + 5.0]],
                1.0,
            )
        };
        let order = reading_order(vec![q(50.0, 42.0), q(5.0, 40.0), q(0.0, 0.0), q(60.0, 3.0)]);
        let starts: Vec<[f32; 2]> = order.iter().map(|r| r.0[0]).collect();
        assert_eq!(
            starts,
            vec![[0.0, 0.0], [60.0, 3.0], [5.0, 40.0], [50.0, 42.0]]
        );
    }

    #[test]
    fn the_detector_sees_the_short_side_at_its_side_in_multiples_of_32() {
        let input = prepare(&RgbImage::new(1280, 720), 736).unwrap();
        assert_eq!((input.width, input.height), (1312, 736));
        assert_eq!(input.data.len(), 3 * 1312 * 736);
        assert_eq!(input.data[0], -1.0);
    }
}

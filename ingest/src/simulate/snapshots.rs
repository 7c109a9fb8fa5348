//! Meter and nameplate snapshots as a camera takes them, with the text on
//! them known: the simulator's cameras, the OCR tests and the accuracy set
//! all draw them from a seed. Each is tilted, blurred, grainy and lit
//! unevenly by an amount the seed picks, so the set spans easy and hard
//! reads the way a fleet of cameras does.

use std::io::Cursor;
use std::path::Path;

use ab_glyph::{FontVec, PxScale};
use image::{ImageFormat, Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_text_mut, text_size};
use imageproc::geometric_transformations::{rotate_about_center, Border, Interpolation};
use imageproc::rect::Rect;
use rand::rngs::StdRng;
use rand::Rng;

/// Debian's `fonts-dejavu-core`, which `scripts/install.sh` installs.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An electricity meter: its id, its reading and its serial number.
    Meter,
    /// A device's rating plate: model, serial number and ratings.
    Nameplate,
}

/// A rendered snapshot and the text drawn on it, top line first.
pub struct Snapshot {
    pub kind: Kind,
    pub lines: Vec<String>,
    /// The meter's reading as drawn (`012345.67`); None on a nameplate.
    pub reading: Option<String>,
    pub image: RgbImage,
}

pub struct Renderer {
    font: FontVec,
}

impl Renderer {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let bytes =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("font {}: {e}", path.display()))?;
        let font = FontVec::try_from_vec(bytes)
            .map_err(|e| anyhow::anyhow!("font {}: {e}", path.display()))?;
        Ok(Self { font })
    }

    /// The font `PULSE_OCR_FONT` names, or Debian's DejaVu Sans.
    pub fn from_env() -> anyhow::Result<Self> {
        let path = std::env::var("PULSE_OCR_FONT").unwrap_or_else(|_| DEFAULT_FONT.into());
        Self::open(Path::new(&path))
    }

    /// One snapshot of `width` x `height` pixels.
    pub fn render(&self, rng: &mut StdRng, kind: Kind, width: u32, height: u32) -> Snapshot {
        let (lines, reading) = match kind {
            Kind::Meter => {
                let reading = format!(
                    "{:06}.{:02}",
                    rng.random_range(0..1_000_000),
                    rng.random_range(0..100)
                );
                let lines = vec![
                    format!(
                        "METER {:02}-{:04}",
                        rng.random_range(0..100),
                        rng.random_range(0..10_000)
                    ),
                    reading.clone(),
                    format!("kWh SN {}", serial(rng)),
                ];
                (lines, Some(reading))
            }
            Kind::Nameplate => {
                let lines = vec![
                    format!(
                        "MODEL {}{}-{:03}",
                        letter(rng),
                        letter(rng),
                        rng.random_range(0..1000)
                    ),
                    format!("SN {:05}-{}", rng.random_range(0..100_000), letter(rng)),
                    format!(
                        "{}V {}Hz {}A",
                        [120, 230, 400][rng.random_range(0..3)],
                        [50, 60][rng.random_range(0..2)],
                        [5, 10, 16, 32][rng.random_range(0..4)]
                    ),
                ];
                (lines, None)
            }
        };
        let image = self.draw(rng, kind, &lines, width, height);
        Snapshot {
            kind,
            lines,
            reading,
            image,
        }
    }

    /// A meter showing `reading` (kWh, drawn as `012345.67`), as a camera
    /// watching one meter sees its counter grow.
    pub fn meter(
        &self,
        rng: &mut StdRng,
        meter_id: &str,
        reading: f64,
        width: u32,
        height: u32,
    ) -> Snapshot {
        let shown = format!("{:09.2}", reading.clamp(0.0, 999_999.99));
        let lines = vec![
            format!("METER {meter_id}"),
            shown.clone(),
            format!("kWh SN {}", serial(rng)),
        ];
        let image = self.draw(rng, Kind::Meter, &lines, width, height);
        Snapshot {
            kind: Kind::Meter,
            lines,
            reading: Some(shown),
            image,
        }
    }

    fn draw(
        &self,
        rng: &mut StdRng,
        kind: Kind,
        lines: &[String],
        width: u32,
        height: u32,
    ) -> RgbImage {
        let shade = rng.random_range(90..170u8);
        let back = Rgb([shade, shade.saturating_add(8), shade.saturating_sub(6)]);
        let mut image = RgbImage::from_pixel(width, height, back);
        // The panel the text is on: an LCD's pale green, a plate's metal.
        let panel = match kind {
            Kind::Meter => Rgb([
                rng.random_range(170..210),
                rng.random_range(200..235),
                rng.random_range(160..200),
            ]),
            Kind::Nameplate => {
                let g: u8 = rng.random_range(195..235);
                Rgb([g, g, g.saturating_add(5)])
            }
        };
        let ink = Rgb([
            rng.random_range(0..50),
            rng.random_range(0..50),
            rng.random_range(0..60),
        ]);
        let unit = height as f32 / 720.0;
        let scales: Vec<f32> = lines
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let big = kind == Kind::Meter && i == 1;
                unit * if big {
                    rng.random_range(84.0..110.0)
                } else {
                    rng.random_range(44.0..60.0)
                }
            })
            .collect();
        let gap = unit * rng.random_range(26.0..44.0);
        let sizes: Vec<(u32, u32)> = lines
            .iter()
            .zip(&scales)
            .map(|(l, s)| text_size(PxScale::from(*s), &self.font, l))
            .collect();
        let text_w = sizes.iter().map(|s| s.0).max().unwrap_or(0);
        let text_h: u32 = sizes.iter().map(|s| s.1).sum::<u32>() + gap as u32 * 2;
        let margin = (unit * 40.0) as u32;
        let panel_w = (text_w + 2 * margin).min(width - 2);
        let panel_h = (text_h + 2 * margin).min(height - 2);
        let left = rng.random_range(0..=(width - panel_w).max(1) - 1);
        let top = rng.random_range(0..=(height - panel_h).max(1) - 1);
        draw_filled_rect_mut(
            &mut image,
            Rect::at(left as i32, top as i32).of_size(panel_w, panel_h),
            panel,
        );
        let mut y = top + margin;
        for ((line, scale), size) in lines.iter().zip(&scales).zip(&sizes) {
            let x = left + margin + rng.random_range(0..=(text_w - size.0).min(margin));
            draw_text_mut(
                &mut image,
                ink,
                x as i32,
                y as i32,
                PxScale::from(*scale),
                &self.font,
                line,
            );
            y += size.1 + gap as u32;
        }
        let tilt = rng.random_range(-5.0f32..5.0).to_radians();
        let mut image = rotate_about_center(
            &image,
            tilt,
            Interpolation::Bilinear,
            Border::Constant(back),
        );
        glare(rng, &mut image);
        let sigma = rng.random_range(0.0f32..1.4);
        if sigma > 0.3 {
            image = imageproc::filter::gaussian_blur_f32(&image, sigma);
        }
        let grain = rng.random_range(0.0..9.0);
        imageproc::noise::gaussian_noise_mut(&mut image, 0.0, grain, rng.random());
        image
    }
}

/// A serial number such as `A7X-99310`.
fn serial(rng: &mut StdRng) -> String {
    format!(
        "{}{}{}-{:05}",
        letter(rng),
        rng.random_range(0..10),
        letter(rng),
        rng.random_range(0..100_000)
    )
}

fn letter(rng: &mut StdRng) -> char {
    char::from(b'A' + rng.random_range(0..26u8))
}

/// A light's reflection: a bright disc fading out, at most half opaque so
/// that the text under it still shows, as on a real plate.
fn glare(rng: &mut StdRng, image: &mut RgbImage) {
    if rng.random_bool(0.4) {
        return;
    }
    let (w, h) = image.dimensions();
    let cx = rng.random_range(0.0..w as f32);
    let cy = rng.random_range(0.0..h as f32);
    let radius = rng.random_range(0.1..0.35) * w as f32;
    let strength = rng.random_range(0.2..0.5);
    for (x, y, px) in image.enumerate_pixels_mut() {
        let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() / radius;
        if d < 1.0 {
            let a = strength * (1.0 - d * d);
            for c in px.0.iter_mut() {
                *c = (*c as f32 * (1.0 - a) + 255.0 * a) as u8;
            }
        }
    }
}

/// The snapshot's bytes as a camera would upload them.
pub fn encode(image: &RgbImage, format: ImageFormat) -> anyhow::Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => {
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
            image.write_with_encoder(encoder)?;
        }
        other => image.write_to(&mut out, other)?,
    }
    Ok(out.into_inner())
}

//! Snapshots as they arrive, checked before a pixel is decoded: the format
//! from the bytes themselves (a name or a content type may lie), the size
//! from the header, so that a 60000x60000 bomb is refused after reading a
//! few bytes, and a JPEG cut short is refused rather than read half grey.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, RgbImage};

/// Why an image cannot be read: said to the job's owner as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadImage(pub String);

fn bad(reason: impl Into<String>) -> BadImage {
    BadImage(reason.into())
}

/// Decodes a JPEG or PNG of at most `max_pixels` pixels.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, BadImage> {
    if bytes.is_empty() {
        return Err(bad("the file is empty"));
    }
    let format = image::guess_format(bytes)
        .map_err(|_| bad("not an image: its bytes are neither JPEG nor PNG"))?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        return Err(bad(format!(
            "a {} image: only JPEG and PNG are read",
            format.extensions_str().first().unwrap_or(&"other")
        )));
    }
    let name = if format == ImageFormat::Jpeg {
        "JPEG"
    } else {
        "PNG"
    };
    if format == ImageFormat::Jpeg && !has_end_marker(bytes) {
        return Err(bad("the JPEG is truncated: it has no end-of-image marker"));
    }
    let reader = |bytes| ImageReader::with_format(Cursor::new(bytes), format);
    let (width, height) = reader(bytes)
        .into_dimensions()
        .map_err(|e| bad(format!("the {name} header cannot be read: {e}")))?;
    if width == 0 || height == 0 {
        return Err(bad(format!(
            "the image is {width}x{height}: it has no pixels"
        )));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(bad(format!(
            "the image is {width}x{height} ({pixels} pixels), over the limit of {max_pixels} pixels"
        )));
    }
    let mut decoder = reader(bytes);
    // The header's size bounds what the decoder may allocate, so a header
    // that lies about the size cannot make it allocate more.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(1 << 20));
    decoder.limits(limits);
    let image = decoder
        .decode()
        .map_err(|e| bad(format!("the {name} cannot be decoded: {e}")))?;
    Ok(image.to_rgb8())
}

/// Whether a JPEG's end-of-image marker is in its last bytes (some
/// cameras append a few bytes of their own after it).
fn has_end_marker(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_testkit::meters::png_claiming;

    fn encoded(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
        let image = RgbImage::from_pixel(width, height, image::Rgb([200, 10, 10]));
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn reason(bytes: &[u8]) -> String {
        decode(bytes, 50_000_000).unwrap_err().0
    }

    #[test]
    fn jpeg_and_png_decode_to_their_size() {
        for format in [ImageFormat::Jpeg, ImageFormat::Png] {
            let image = decode(&encoded(64, 48, format), 10_000).unwrap();
            assert_eq!(image.dimensions(), (64, 48), "{format:?}");
        }
    }

    #[test]
    fn every_bad_image_is_refused_with_its_reason() {
        assert_eq!(reason(b""), "the file is empty");
        assert!(reason(b"METER 0123\nnot an image at all").starts_with("not an image"));
        let jpeg = encoded(64, 48, ImageFormat::Jpeg);
        assert!(reason(&jpeg[..jpeg.len() / 2]).contains("truncated"));
        let png = encoded(64, 48, ImageFormat::Png);
        assert!(reason(&png[..png.len() - 20]).contains("PNG cannot be decoded"));
        // A header claiming 60000x60000: refused before any pixel.
        let bomb = png_claiming(&png, 60_000, 60_000);
        assert!(reason(&bomb).contains("60000x60000 (3600000000 pixels), over the limit"));
        // A header that lies the other way: the pixel data does not fit it.
        let liar = png_claiming(&png, 640, 480);
        assert!(
            reason(&liar).starts_with("the PNG cannot be decoded"),
            "{}",
            reason(&liar)
        );
        let empty = png_claiming(&png, 0, 48);
        assert!(
            reason(&empty).starts_with("the PNG header cannot be read"),
            "{}",
            reason(&empty)
        );
        assert!(decode(&encoded(200, 200, ImageFormat::Png), 39_999)
            .unwrap_err()
            .0
            .contains("over the limit of 39999"));
        assert!(reason(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").contains("only JPEG and PNG"));
    }
}

//! What a file is, by its first bytes rather than by what its sender says.

/// The kinds of file Pulse stores, each with the content type it is served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jpeg,
    Png,
    Webp,
    Pdf,
    Parquet,
    /// A zip archive (of snapshots, for an OCR job).
    Zip,
    Json,
    Csv,
}

/// Bytes enough to tell every kind apart.
pub const SNIFF_BYTES: usize = 512;

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Jpeg,
        Kind::Png,
        Kind::Webp,
        Kind::Pdf,
        Kind::Parquet,
        Kind::Zip,
        Kind::Json,
        Kind::Csv,
    ];

    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Jpeg => "image/jpeg",
            Kind::Png => "image/png",
            Kind::Webp => "image/webp",
            Kind::Pdf => "application/pdf",
            Kind::Parquet => "application/vnd.apache.parquet",
            Kind::Zip => "application/zip",
            Kind::Json => "application/json",
            Kind::Csv => "text/csv",
        }
    }

    /// The kind a content type names (parameters such as `charset` aside).
    pub fn of_content_type(content_type: &str) -> Option<Kind> {
        let mime = content_type.split(';').next()?.trim();
        Kind::ALL
            .into_iter()
            .find(|k| k.content_type().eq_ignore_ascii_case(mime))
    }

    /// The kind `head` (a file's first [`SNIFF_BYTES`] bytes, or all of a
    /// shorter file) shows. Binary kinds are told by their signatures;
    /// text (JSON, CSV) must be UTF-8 without control bytes other than tab,
    /// CR and LF, which keeps a binary file from passing as text.
    pub fn of_bytes(head: &[u8]) -> Option<Kind> {
        let signature = |s: &[u8]| head.starts_with(s);
        if signature(&[0xFF, 0xD8, 0xFF]) {
            return Some(Kind::Jpeg);
        }
        if signature(b"\x89PNG\r\n\x1a\n") {
            return Some(Kind::Png);
        }
        if signature(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
            return Some(Kind::Webp);
        }
        if signature(b"%PDF-") {
            return Some(Kind::Pdf);
        }
        if signature(b"PAR1") {
            return Some(Kind::Parquet);
        }
        // A local file header, or the end record of an empty archive.
        if signature(b"PK\x03\x04") || signature(b"PK\x05\x06") {
            return Some(Kind::Zip);
        }
        let text = match std::str::from_utf8(head) {
            Ok(t) => t,
            // A multi-byte character cut by the end of the head is fine.
            Err(e) if e.error_len().is_none() => {
                std::str::from_utf8(&head[..e.valid_up_to()]).ok()?
            }
            Err(_) => return None,
        };
        if text.is_empty()
            || text
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
        {
            return None;
        }
        match text.trim_start().as_bytes().first() {
            Some(b'{' | b'[') => Some(Kind::Json),
            _ => Some(Kind::Csv),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_by_their_bytes() {
        let cases: [(&[u8], Option<Kind>); 13] = [
            (&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10], Some(Kind::Jpeg)),
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", Some(Kind::Png)),
            (b"RIFF\x10\0\0\0WEBPVP8 ", Some(Kind::Webp)),
            (b"RIFF\x10\0\0\0WAVEfmt ", None),
            (b"%PDF-1.7\n", Some(Kind::Pdf)),
            (b"PAR1\x15\x04", Some(Kind::Parquet)),
            (b"PK\x03\x04\x14\0", Some(Kind::Zip)),
            (b"PK\x05\x06\0\0", Some(Kind::Zip)),
            (b"  {\"a\": 1}", Some(Kind::Json)),
            (b"time,temperature_c\n1,21.5\n", Some(Kind::Csv)),
            (b"a,b\n\0\0", None),
            (b"\xff\xfe not utf-8", None),
            (b"", None),
        ];
        for (bytes, kind) in cases {
            assert_eq!(Kind::of_bytes(bytes), kind, "{bytes:?}");
        }
        // A character cut at the end of the head still reads as text.
        assert_eq!(
            Kind::of_bytes("a,é".as_bytes().split_at(4).0),
            Some(Kind::Csv)
        );
    }

    #[test]
    fn content_types_name_kinds() {
        assert_eq!(Kind::of_content_type("image/png"), Some(Kind::Png));
        assert_eq!(
            Kind::of_content_type("text/csv; charset=utf-8"),
            Some(Kind::Csv)
        );
        assert_eq!(Kind::of_content_type("IMAGE/JPEG"), Some(Kind::Jpeg));
        assert_eq!(Kind::of_content_type("application/x-msdownload"), None);
        for k in Kind::ALL {
            assert_eq!(Kind::of_content_type(k.content_type()), Some(k));
        }
    }
}

//! Meter and nameplate snapshots for the OCR tests: the simulator's
//! renderer, and images that lie about themselves.

pub use pulse_ingest::simulate::snapshots::{encode, Kind, Renderer, Snapshot, DEFAULT_FONT};

/// `png` with a header that says `width` x `height`, its checksum mended
/// so that only the size lies: the decompression bombs and lying headers
/// the OCR tests feed the worker.
pub fn png_claiming(png: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut out = png.to_vec();
    if out.len() < 33 {
        return out;
    }
    out[16..20].copy_from_slice(&width.to_be_bytes());
    out[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32fast::hash(&out[12..29]);
    out[29..33].copy_from_slice(&crc.to_be_bytes());
    out
}

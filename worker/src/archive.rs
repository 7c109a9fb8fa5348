//! Archives of snapshots: a zip's entries, one snapshot each. An archive
//! is refused whole, before anything is unpacked, when its directory
//! shows more entries, more bytes or a higher compression ratio than the
//! limits allow (a zip bomb shows all three); and since a directory can
//! lie, each entry is cut off as it unpacks at the size it declared.

use std::io::{Read, Seek};

/// What an archive may hold.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Limits {
    /// Most entries (snapshots) in one archive.
    #[arg(long, env = "PULSE_OCR_ARCHIVE_MAX_ENTRIES", default_value_t = 10_000)]
    pub archive_max_entries: usize,
    /// Most bytes one entry unpacks to.
    #[arg(long, env = "PULSE_OCR_ARCHIVE_MAX_ENTRY_BYTES", default_value_t = 64 << 20)]
    pub archive_max_entry_bytes: u64,
    /// Most bytes all entries together unpack to.
    #[arg(long, env = "PULSE_OCR_ARCHIVE_MAX_BYTES", default_value_t = 8 << 30)]
    pub archive_max_bytes: u64,
    /// Highest ratio of an entry's unpacked to packed size (JPEG and PNG
    /// hardly compress; a bomb's entries compress a thousandfold).
    #[arg(long, env = "PULSE_OCR_ARCHIVE_MAX_RATIO", default_value_t = 100)]
    pub archive_max_ratio: u64,
}

/// One file in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its place among the archive's records.
    index: usize,
    pub name: String,
    /// When it was last changed, ms since the epoch (zip keeps no zone:
    /// taken as UTC), if the archive says.
    pub modified_ms: Option<i64>,
}

/// An opened archive and the entries it may unpack.
pub struct Archive<R> {
    zip: zip::ZipArchive<R>,
    entries: Vec<Entry>,
    max_entry_bytes: u64,
}

impl<R: Read + Seek> Archive<R> {
    /// Opens `reader` as a zip within `limits`; the reason when refused.
    pub fn open(reader: R, limits: &Limits) -> Result<Self, String> {
        let zip =
            zip::ZipArchive::new(reader).map_err(|e| format!("not a readable zip archive: {e}"))?;
        let mut entries = Vec::new();
        let mut total: u64 = 0;
        for index in 0..zip.len() {
            let data = zip
                .by_index_data(index)
                .map_err(|e| format!("record {index} of the archive: {e}"))?;
            if data.is_dir() {
                continue;
            }
            let name = data
                .name()
                .map_or_else(|_| format!("#{index}"), |n| n.into_owned());
            if entries.len() == limits.archive_max_entries {
                return Err(format!(
                    "the archive has more than {} entries",
                    limits.archive_max_entries
                ));
            }
            let (size, packed) = (data.size(), data.compressed_size());
            if size > limits.archive_max_entry_bytes {
                return Err(format!(
                    "entry {name} unpacks to {size} bytes; at most {}",
                    limits.archive_max_entry_bytes
                ));
            }
            if size / packed.max(1) > limits.archive_max_ratio {
                return Err(format!(
                    "entry {name} is compressed {}:1; at most {}:1",
                    size / packed.max(1),
                    limits.archive_max_ratio
                ));
            }
            total = total.saturating_add(size);
            if total > limits.archive_max_bytes {
                return Err(format!(
                    "the archive unpacks to more than {} bytes",
                    limits.archive_max_bytes
                ));
            }
            let modified_ms = data.last_modified().and_then(|t| {
                let day = chrono::NaiveDate::from_ymd_opt(
                    t.year().into(),
                    t.month().into(),
                    t.day().into(),
                )?;
                let time =
                    day.and_hms_opt(t.hour().into(), t.minute().into(), t.second().into())?;
                Some(time.and_utc().timestamp_millis())
            });
            entries.push(Entry {
                index,
                name,
                modified_ms,
            });
        }
        Ok(Self {
            zip,
            entries,
            max_entry_bytes: limits.archive_max_entry_bytes,
        })
    }

    /// The files it holds, in the archive's order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The bytes of `entries()[item]`; the reason when it cannot be
    /// unpacked (encrypted, corrupt, or larger than it said).
    pub fn unpack(&mut self, item: usize) -> Result<Vec<u8>, String> {
        let entry = self
            .entries
            .get(item)
            .ok_or_else(|| format!("the archive has no entry {item}"))?;
        let name = &entry.name;
        let file = self
            .zip
            .by_index(entry.index)
            .map_err(|e| format!("entry {name}: {e}"))?;
        let declared = file.size();
        let mut bytes = Vec::with_capacity(declared.min(self.max_entry_bytes) as usize);
        // One byte past what it declared tells a lie from the truth.
        file.take(declared.min(self.max_entry_bytes) + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("entry {name}: {e}"))?;
        if bytes.len() as u64 > declared {
            return Err(format!(
                "entry {name} unpacks to more than the {declared} bytes it declared"
            ));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;

    fn limits() -> Limits {
        Limits {
            archive_max_entries: 3,
            archive_max_entry_bytes: 1 << 20,
            archive_max_bytes: 2 << 20,
            archive_max_ratio: 100,
        }
    }

    fn zipped(files: &[(&str, &[u8], CompressionMethod)]) -> Cursor<Vec<u8>> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.add_directory("snapshots/", SimpleFileOptions::default())
            .unwrap();
        for (name, bytes, method) in files {
            let options = SimpleFileOptions::default().compression_method(*method);
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        Cursor::new(zip.finish().unwrap().into_inner())
    }

    #[test]
    fn entries_unpack_in_order_and_directories_are_skipped() {
        let stored = CompressionMethod::Stored;
        let deflated = CompressionMethod::Deflated;
        let reader = zipped(&[
            ("snapshots/a.jpg", b"first", stored),
            ("snapshots/b.png", b"second", deflated),
        ]);
        let mut archive = Archive::open(reader, &limits()).unwrap();
        let names: Vec<&str> = archive.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["snapshots/a.jpg", "snapshots/b.png"]);
        assert_eq!(archive.unpack(0).unwrap(), b"first");
        assert_eq!(archive.unpack(1).unwrap(), b"second");
        assert!(archive.unpack(2).unwrap_err().contains("no entry 2"));
    }

    #[test]
    fn archives_beyond_the_limits_are_refused_before_unpacking() {
        let stored = CompressionMethod::Stored;
        let open = |files: &[(&str, &[u8], CompressionMethod)]| {
            Archive::open(zipped(files), &limits())
                .err()
                .unwrap_or_default()
        };
        let four: Vec<(&str, &[u8], CompressionMethod)> = ["a", "b", "c", "d"]
            .map(|n| (n, &b"x"[..], stored))
            .to_vec();
        assert_eq!(open(&four), "the archive has more than 3 entries");
        let big = vec![7u8; (1 << 20) + 1];
        assert_eq!(
            open(&[("big.png", &big, stored)]),
            "entry big.png unpacks to 1048577 bytes; at most 1048576"
        );
        let half = vec![7u8; 900 << 10];
        assert_eq!(
            open(&[
                ("1", &half, stored),
                ("2", &half, stored),
                ("3", &half, stored)
            ]),
            "the archive unpacks to more than 2097152 bytes"
        );
        // A megabyte of zeros deflates a thousandfold.
        let zeros = vec![0u8; 1 << 20];
        let refused = open(&[("bomb.jpg", &zeros, CompressionMethod::Deflated)]);
        assert!(
            refused.starts_with("entry bomb.jpg is compressed ")
                && refused.ends_with(":1; at most 100:1"),
            "{refused}"
        );
        assert_eq!(
            Archive::open(Cursor::new(b"PK\x03\x04 not really".to_vec()), &limits())
                .err()
                .map(|e| e.starts_with("not a readable zip archive")),
            Some(true)
        );
    }

    #[test]
    fn an_entry_larger_than_it_declared_is_cut_off() {
        let mut bytes = zipped(&[("a.jpg", b"0123456789", CompressionMethod::Stored)]).into_inner();
        // The directory (at the end) and the local header both say 10
        // bytes; make the central directory say 4.
        let central = bytes.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
        // Uncompressed size sits 24 bytes into a central directory record.
        bytes[central + 24..central + 28].copy_from_slice(&4u32.to_le_bytes());
        let mut archive = Archive::open(Cursor::new(bytes), &limits()).unwrap();
        let refused = archive.unpack(0).unwrap_err();
        assert!(refused.starts_with("entry a.jpg"), "{refused}");
    }
}

//! A batch's results in JSON, as published on the results topic.
//!
//! Serializing results was the largest single cost of processing a batch
//! (a sixth of the processor's CPU through serde_json: ~1 KiB and 50
//! strings per row, each key escaped anew). Rows are written here with
//! their keys as constants and strings copied whole when nothing in them
//! needs escaping; the text is the same as serde_json's, byte for byte,
//! which the tests check against serde_json itself.

use std::sync::Mutex;

use pulse_common::scored::ScoredEvent;

/// A batch's results, one after the other in one buffer: serialized while
/// the batch is decoded, so that its delivery, which the next batch waits
/// for, only hands them to the Kafka client.
#[derive(Default)]
pub struct Results {
    json: Vec<u8>,
    ends: Vec<usize>,
}

impl Results {
    /// Serializes `rows` into `buffer` (emptied first), a spare one from
    /// [`Buffers`] so that its memory is not requested anew for each batch.
    pub fn of(rows: &[ScoredEvent], mut buffer: Vec<u8>) -> serde_json::Result<Self> {
        buffer.clear();
        buffer.reserve(rows.len() * ROW_BYTES);
        let mut results = Results {
            json: buffer,
            ends: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            write_row(&mut results.json, row)?;
            results.ends.push(results.json.len());
        }
        Ok(results)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter())
            .map(|(start, end)| &self.json[start..*end])
    }

    /// The buffer, to be reused by a later batch.
    pub fn into_buffer(self) -> Vec<u8> {
        self.json
    }
}

/// Room reserved per row: a telemetry result with four readings takes about
/// 1.1 KiB; reserving enough up front saves copying the buffer as it grows.
const ROW_BYTES: usize = 1536;

/// Result buffers of delivered batches, kept for the next ones. A fresh
/// buffer of tens of MiB is zeroed by the kernel page by page as it is first
/// written, which cost as much as a fifth of serializing the results.
#[derive(Default)]
pub(crate) struct Buffers(Mutex<Vec<Vec<u8>>>);

/// One buffer for the batch being delivered, one for the batch being decoded.
const KEPT_BUFFERS: usize = 2;

impl Buffers {
    pub(crate) fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_default()
    }

    pub(crate) fn give(&self, buffer: Vec<u8>) {
        let mut kept = self.lock();
        if kept.len() < KEPT_BUFFERS {
            kept.push(buffer);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic while holding the lock leaves nothing half changed.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Appends `row` as serde_json would serialize it (fields in declaration
/// order, non-finite floats as null).
fn write_row(out: &mut Vec<u8>, row: &ScoredEvent) -> serde_json::Result<()> {
    let mut o = Object::open(out);
    o.string("tenant_id", &row.tenant_id)?;
    o.string("source_id", &row.source_id)?;
    o.string("event_id", &row.event_id)?;
    o.string("kind", &row.kind)?;
    o.integer("event_time", row.event_time);
    o.integer("event_time_ms", row.event_time_ms);
    o.integer("schema_id", row.schema_id);
    o.strings("reading_names", &row.reading_names)?;
    o.floats("reading_values", &row.reading_values);
    o.string("event_type", &row.event_type)?;
    o.string("properties_json", &row.properties_json)?;
    o.string("firmware_version", &row.firmware_version)?;
    o.key("score");
    o.float(row.score, row.score.is_finite());
    o.integer("is_anomaly", row.is_anomaly);
    o.string("model_version", &row.model_version)?;
    o.integer("device_seq", row.device_seq);
    o.strings("feature_names", &row.feature_names)?;
    o.floats("feature_values", &row.feature_values);
    o.integer("processed_ms", row.processed_ms);
    o.string("source_topic", &row.source_topic)?;
    o.integer("source_partition", row.source_partition);
    o.integer("source_offset", row.source_offset);
    o.close();
    Ok(())
}

/// A JSON object being written.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    fn close(self) {
        self.out.push(b'}');
    }

    /// Keys are this module's own field names: nothing in them to escape.
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn string(&mut self, key: &str, value: &str) -> serde_json::Result<()> {
        self.key(key);
        write_str(self.out, value)
    }

    fn integer<I: itoa::Integer>(&mut self, key: &str, value: I) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn strings<S: AsRef<str>>(&mut self, key: &str, values: &[S]) -> serde_json::Result<()> {
        self.key(key);
        self.out.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_str(self.out, v.as_ref())?;
        }
        self.out.push(b']');
        Ok(())
    }

    fn floats(&mut self, key: &str, values: &[f64]) {
        self.key(key);
        self.out.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.float(*v, v.is_finite());
        }
        self.out.push(b']');
    }

    /// JSON has no NaN or infinity: serde_json writes them as null.
    fn float<F: zmij::Float>(&mut self, value: F, finite: bool) {
        if finite {
            self.out
                .extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
    }
}

/// A JSON string: copied whole when nothing in it needs escaping (event
/// ids, names and versions never do), otherwise escaped by serde_json.
fn write_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    // Folded without stopping early, which the compiler turns into a few
    // wide comparisons; these strings are short and almost never escaped.
    let plain = !s.bytes().fold(false, |escape, b| {
        escape | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(event_id: &str) -> ScoredEvent {
        ScoredEvent {
            tenant_id: "acme".into(),
            source_id: "dev-7".into(),
            event_id: event_id.into(),
            kind: "telemetry".into(),
            event_time: 1_700_000_000,
            event_time_ms: 1_700_000_000_123,
            schema_id: 3,
            reading_names: vec!["humidity_pct".into(), "temperature_c".into()],
            reading_values: vec![41.25, -3.5e-7],
            event_type: String::new(),
            properties_json: "{}".into(),
            firmware_version: "1.2.3".into(),
            score: 0.873_456_7,
            is_anomaly: 1,
            model_version: "anomaly-v1".into(),
            device_seq: 42,
            feature_names: vec!["gap_s".into(), "temperature_c.z".into()],
            feature_values: vec![1.0, 1e21],
            processed_ms: 1_700_000_000_500,
            source_topic: "pulse.telemetry".into(),
            source_partition: 5,
            source_offset: 123_456,
        }
    }

    #[test]
    fn each_row_is_written_as_serde_json_writes_it() {
        let app = ScoredEvent {
            kind: "app".into(),
            event_type: "checkout \"fast\"".into(),
            properties_json: "{\"path\":\"C:\\tmp\"}\nline2\ttab\u{1}\u{7f}".into(),
            reading_names: vec![],
            reading_values: vec![],
            feature_names: vec!["ünïcode ✓".into()],
            feature_values: vec![-0.0],
            score: 0.0,
            is_anomaly: 0,
            source_partition: -1,
            source_offset: -2,
            ..row("b")
        };
        let odd_readings = ScoredEvent {
            reading_values: vec![f64::NAN, f64::INFINITY, f64::MIN_POSITIVE, 123456789.0],
            score: f32::NAN,
            ..row("c")
        };
        let rows = vec![row("a"), app, odd_readings, ScoredEvent::default()];
        let results = Results::of(&rows, Vec::new()).unwrap();
        assert_eq!(results.len(), rows.len());
        for (row, json) in rows.iter().zip(results.iter()) {
            let expected = serde_json::to_string(row).unwrap();
            assert_eq!(std::str::from_utf8(json).unwrap(), expected);
        }
        let back: ScoredEvent = serde_json::from_slice(results.iter().nth(1).unwrap()).unwrap();
        assert_eq!(back.event_type, "checkout \"fast\"");
        assert_eq!(
            back.properties_json,
            "{\"path\":\"C:\\tmp\"}\nline2\ttab\u{1}\u{7f}"
        );
    }

    #[test]
    fn a_reused_buffer_holds_only_the_new_batch() {
        let first = Results::of(&[row("a"), row("b")], Vec::new()).unwrap();
        let buffers = Buffers::default();
        buffers.give(first.into_buffer());
        let second = Results::of(&[row("c")], buffers.take()).unwrap();
        let each: Vec<&[u8]> = second.iter().collect();
        assert_eq!(
            each,
            vec![serde_json::to_vec(&row("c")).unwrap().as_slice()]
        );
        assert!(Results::of(&[], buffers.take()).unwrap().is_empty());
    }

    #[test]
    fn only_a_few_buffers_are_kept() {
        let buffers = Buffers::default();
        for size in [10, 20, 30] {
            buffers.give(Vec::with_capacity(size));
        }
        let kept: Vec<usize> = (0..3).map(|_| buffers.take().capacity()).collect();
        assert_eq!(kept, vec![20, 10, 0]);
    }
}

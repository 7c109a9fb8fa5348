//! The model's input row for an event: each feature the model names, from
//! the event's readings or else its device-history features, NaN where
//! neither has it.
//!
//! Readings and history features both come sorted by name, so the model's
//! features are walked in name order beside them: a few string comparisons
//! per feature, where a map lookup and then a binary search for each made
//! these the most compared strings of a batch.

use std::cmp::Ordering;

use pulse_common::event::Event;

use crate::state::device::Features;

pub(crate) struct Columns {
    /// The model's features in name order, each with its input column.
    sorted: Vec<(String, usize)>,
}

impl Columns {
    /// `features`: the model's inputs, in the order of its columns.
    pub(crate) fn new(features: &[String]) -> Self {
        let mut sorted: Vec<(String, usize)> = features.iter().cloned().zip(0..).collect();
        sorted.sort();
        Columns { sorted }
    }

    /// How many columns the model takes.
    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Appends `event`'s row to `out`.
    pub(crate) fn fill(&self, event: &Event, history: &Features, out: &mut Vec<f32>) {
        let start = out.len();
        out.resize(start + self.sorted.len(), f32::NAN);
        let row = &mut out[start..];
        let mut readings = event.readings.iter().peekable();
        let mut past = history.names.iter().zip(&history.values).peekable();
        for (name, column) in &self.sorted {
            let reading = next_named(&mut readings, name);
            let value = reading.or_else(|| next_named(&mut past, name));
            if let Some(v) = value {
                row[*column] = *v as f32;
            }
        }
    }
}

/// Moves `items`, sorted by name, up to `name`; its value if it is there.
/// Left on it, so that a name the model lists twice is found twice.
fn next_named<'a, N, I>(items: &mut std::iter::Peekable<I>, name: &str) -> Option<&'a f64>
where
    N: AsRef<str> + ?Sized + 'a,
    I: Iterator<Item = (&'a N, &'a f64)>,
{
    while let Some((n, v)) = items.peek() {
        match n.as_ref().cmp(name) {
            Ordering::Less => {
                items.next();
            }
            Ordering::Equal => return Some(*v),
            Ordering::Greater => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_common::schemas::EventKind;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn event(readings: &[(&str, f64)]) -> Event {
        Event {
            kind: EventKind::Telemetry,
            event_id: "e".into(),
            tenant_id: "acme".into(),
            source_id: "dev-1".into(),
            event_time_ms: 0,
            readings: readings.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            firmware_version: None,
            event_type: String::new(),
            properties: BTreeMap::new(),
        }
    }

    fn history(features: &[(&str, f64)]) -> Features {
        let mut sorted: Vec<(Arc<str>, f64)> =
            features.iter().map(|(n, v)| (Arc::from(*n), *v)).collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, values) = sorted.into_iter().unzip();
        Features {
            seq: 1,
            names,
            values,
        }
    }

    /// The row as looked up one feature at a time.
    fn looked_up(features: &[String], event: &Event, history: &Features) -> Vec<f32> {
        features
            .iter()
            .map(|f| {
                event
                    .readings
                    .get(f)
                    .copied()
                    .or_else(|| history.get(f))
                    .map_or(f32::NAN, |v| v as f32)
            })
            .collect()
    }

    fn bits(row: &[f32]) -> Vec<u32> {
        row.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn each_column_takes_its_feature_wherever_it_comes_from() {
        // Model order differs from name order; "temp" is a prefix of other
        // names; "x" is nowhere; a reading wins over a history feature of the
        // same name; "gap_s" is listed twice.
        let features: Vec<String> = [
            "temp.z",
            "gap_s",
            "temp",
            "x",
            "temp-c.ewma",
            "battery_v",
            "temp.delta",
            "gap_s",
            "both",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let columns = Columns::new(&features);
        assert_eq!(columns.len(), features.len());
        let e = event(&[("battery_v", 3.5), ("temp", 21.0), ("both", 1.0)]);
        let h = history(&[
            ("temp.z", 0.5),
            ("temp.delta", -1.0),
            ("temp-c.ewma", 20.5),
            ("gap_s", 2.0),
            ("both", 9.0),
            ("unused", 7.0),
        ]);
        let mut out = vec![42.0];
        columns.fill(&e, &h, &mut out);
        assert_eq!(out[0], 42.0, "rows are appended");
        let row = &out[1..];
        assert_eq!(bits(row), bits(&looked_up(&features, &e, &h)));
        assert_eq!(&row[..3], &[0.5, 2.0, 21.0]);
        assert!(row[3].is_nan());
        assert_eq!(&row[4..], &[20.5, 3.5, -1.0, 2.0, 1.0]);
    }

    #[test]
    fn an_event_without_history_or_readings_is_all_nan() {
        let features = vec!["a".to_string(), "b".to_string()];
        let mut out = Vec::new();
        Columns::new(&features).fill(&event(&[]), &history(&[]), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|v| v.is_nan()));
    }
}

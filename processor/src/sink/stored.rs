//! Which rows of a batch ClickHouse already holds, so that each is stored once.
//!
//! Every row carries its Kafka partition and offset. While this instance
//! owns a partition and its inserts succeed it knows the highest offset it
//! stored and that nothing past it is stored: a row is fresh if its offset
//! is past that mark. After a rebalance or a failed insert it knows nothing
//! and reads back the offsets stored within the batch's range. Rows are sent
//! in the table's sorting-key order (ClickHouse then skips sorting them), so
//! an insert cut short by a crash or a timeout, which ClickHouse may still
//! store in part, leaves any subset of a partition's rows, not a prefix: a
//! single highest offset could not tell which are missing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use pulse_common::scored::ScoredEvent;

/// The highest offset stored in ClickHouse per (topic, partition), as far
/// as this instance knows; forgotten at every rebalance.
#[derive(Clone, Default)]
pub struct Watermarks(Arc<Mutex<Known>>);

#[derive(Default)]
struct Known {
    /// Counts the times everything was forgotten, so that an insert that
    /// began before a rebalance does not bring back what it knew then.
    epoch: u64,
    offsets: HashMap<(String, i32), i64>,
}

impl Watermarks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn forget_all(&self) {
        let mut known = self.lock();
        known.epoch += 1;
        known.offsets.clear();
    }

    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.lock()
            .offsets
            .get(&(topic.to_string(), partition))
            .copied()
    }

    /// Records `marks`, unless everything was forgotten since `epoch`.
    pub(crate) fn update(&self, epoch: u64, marks: &[Mark<'_>]) {
        let mut known = self.lock();
        if known.epoch != epoch {
            return;
        }
        for ((topic, partition), offset) in marks {
            known
                .offsets
                .insert((topic.to_string(), *partition), *offset);
        }
    }
}

/// A partition and the highest offset of it stored.
pub(crate) type Mark<'a> = ((&'a str, i32), i64);

/// One partition's rows in a batch: the range of their offsets.
#[derive(Debug, PartialEq)]
pub(crate) struct Span<'a> {
    pub partition: (&'a str, i32),
    pub first: i64,
    pub last: i64,
}

/// The partitions of a batch's rows. A batch spans a handful: a short list,
/// searched without allocating a key per row.
pub(crate) fn spans(rows: &[ScoredEvent]) -> Vec<Span<'_>> {
    let mut spans: Vec<Span<'_>> = Vec::new();
    for row in rows {
        let partition = (&*row.source_topic, row.source_partition);
        match spans.iter_mut().find(|s| s.partition == partition) {
            Some(span) => {
                span.first = span.first.min(row.source_offset);
                span.last = span.last.max(row.source_offset);
            }
            None => spans.push(Span {
                partition,
                first: row.source_offset,
                last: row.source_offset,
            }),
        }
    }
    spans
}

/// What ClickHouse holds of one partition's span of a batch.
#[derive(Debug, PartialEq)]
pub(crate) enum Stored {
    /// Every offset of this instance's up to this one, none past it (-1: none).
    UpTo(i64),
    /// Read back from ClickHouse: the offsets stored within the span, and
    /// the highest stored at all (None: nothing from the span's first on).
    Read {
        offsets: HashSet<i64>,
        highest: Option<i64>,
    },
}

impl Stored {
    fn holds(&self, offset: i64) -> bool {
        match self {
            Stored::UpTo(mark) => offset <= *mark,
            Stored::Read { offsets, .. } => offsets.contains(&offset),
        }
    }

    /// The mark once the span's fresh rows are stored; None while rows past
    /// the span were stored before (they are read back with the next batch).
    pub(crate) fn after(&self, span: &Span<'_>) -> Option<i64> {
        match self {
            Stored::UpTo(mark) => Some((*mark).max(span.last)),
            Stored::Read { highest, .. } => match highest {
                Some(h) if *h > span.last => None,
                _ => Some(span.last),
            },
        }
    }
}

/// The rows not stored yet, in the events table's sorting-key order.
/// `stored[i]` is what ClickHouse holds of `spans[i]`.
pub(crate) fn fresh<'a>(
    rows: &'a [ScoredEvent],
    spans: &[Span<'_>],
    stored: &[Stored],
) -> Vec<&'a ScoredEvent> {
    let mut fresh: Vec<&ScoredEvent> = rows
        .iter()
        .filter(|r| {
            let partition = (&*r.source_topic, r.source_partition);
            spans
                .iter()
                .position(|s| s.partition == partition)
                .is_some_and(|i| !stored[i].holds(r.source_offset))
        })
        .collect();
    fresh.sort_unstable_by(|a, b| sorting_key(a).cmp(&sorting_key(b)));
    fresh
}

/// The events table's `ORDER BY (tenant_id, source_id, event_time_ms,
/// event_id)`: Rust orders strings byte by byte, as ClickHouse does.
fn sorting_key(r: &ScoredEvent) -> (&str, &str, i64, &str) {
    (&r.tenant_id, &r.source_id, r.event_time_ms, &r.event_id)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use pulse_common::scored::ScoredEvent;

    use super::{fresh, sorting_key, spans, Span, Stored, Watermarks};

    fn row(partition: i32, offset: i64, source: &str, time_ms: i64) -> ScoredEvent {
        ScoredEvent {
            tenant_id: "acme".into(),
            source_id: source.into(),
            event_id: format!("e-{partition}-{offset}"),
            event_time_ms: time_ms,
            source_topic: Arc::from("pulse.telemetry"),
            source_partition: partition,
            source_offset: offset,
            ..ScoredEvent::default()
        }
    }

    /// Partition 0 at offsets 10..20 and partition 1 at 5..10, devices and
    /// times interleaved so that consumption order is not key order.
    fn batch() -> Vec<ScoredEvent> {
        let mut rows = Vec::new();
        for offset in 10..20 {
            rows.push(row(
                0,
                offset,
                &format!("dev-{}", 9 - offset % 4),
                1000 - offset,
            ));
        }
        for offset in 5..10 {
            rows.push(row(
                1,
                offset,
                &format!("dev-{}", offset % 3),
                2000 + offset,
            ));
        }
        rows
    }

    fn offsets(rows: &[&ScoredEvent]) -> Vec<(i32, i64)> {
        let mut o: Vec<(i32, i64)> = rows
            .iter()
            .map(|r| (r.source_partition, r.source_offset))
            .collect();
        o.sort_unstable();
        o
    }

    #[test]
    fn spans_cover_each_partitions_offsets() {
        let rows = batch();
        assert_eq!(
            spans(&rows),
            vec![
                Span {
                    partition: ("pulse.telemetry", 0),
                    first: 10,
                    last: 19
                },
                Span {
                    partition: ("pulse.telemetry", 1),
                    first: 5,
                    last: 9
                },
            ]
        );
    }

    #[test]
    fn rows_past_the_mark_are_fresh_and_sorted_by_the_tables_key() {
        let rows = batch();
        let spans = spans(&rows);
        let stored = [Stored::UpTo(14), Stored::UpTo(-1)];
        let fresh = fresh(&rows, &spans, &stored);
        let expected: Vec<(i32, i64)> = (15..20)
            .map(|o| (0, o))
            .chain((5..10).map(|o| (1, o)))
            .collect();
        assert_eq!(offsets(&fresh), expected);
        let keys: Vec<_> = fresh.iter().map(|r| sorting_key(r)).collect();
        assert!(
            keys.windows(2).all(|w| w[0] <= w[1]),
            "not in key order: {keys:?}"
        );
        assert_ne!(
            fresh[0].source_offset, 15,
            "the batch's consumption order is not its key order"
        );
    }

    #[test]
    fn after_a_cut_short_insert_exactly_the_missing_rows_are_fresh() {
        let rows = batch();
        let spans = spans(&rows);
        // What a sorted insert cut short leaves: scattered offsets, not a prefix.
        let held: HashSet<i64> = [10, 13, 14, 18].into();
        let stored = [
            Stored::Read {
                offsets: held.clone(),
                highest: Some(18),
            },
            Stored::Read {
                offsets: HashSet::new(),
                highest: None,
            },
        ];
        let fresh = fresh(&rows, &spans, &stored);
        let expected: Vec<(i32, i64)> = (10..20)
            .filter(|o| !held.contains(o))
            .map(|o| (0, o))
            .chain((5..10).map(|o| (1, o)))
            .collect();
        assert_eq!(offsets(&fresh), expected);
        assert_eq!(stored[0].after(&spans[0]), Some(19));
        assert_eq!(stored[1].after(&spans[1]), Some(9));
    }

    #[test]
    fn rows_stored_past_the_batch_keep_the_partition_unknown() {
        let rows = batch();
        let spans = spans(&rows);
        // Another instance's larger batch reached offset 25 before a crash.
        let stored = Stored::Read {
            offsets: (10..20).collect(),
            highest: Some(25),
        };
        assert_eq!(stored.after(&spans[0]), None);
        assert_eq!(Stored::UpTo(30).after(&spans[0]), Some(30));
        assert_eq!(Stored::UpTo(3).after(&spans[0]), Some(19));
    }

    #[test]
    fn the_sorting_key_is_the_tables() {
        let ddl = include_str!("../../../schemas/clickhouse/0001_events.sql");
        assert!(
            ddl.contains("ORDER BY (tenant_id, source_id, event_time_ms, event_id)"),
            "the events table's sorting key changed: change sorting_key too"
        );
    }

    #[test]
    fn an_insert_that_began_before_a_rebalance_does_not_restore_what_was_forgotten() {
        let known = Watermarks::default();
        let epoch = known.epoch();
        known.update(epoch, &[(("pulse.telemetry", 0), 41)]);
        assert_eq!(known.get("pulse.telemetry", 0), Some(41));

        let before_rebalance = known.epoch();
        known.forget_all();
        known.update(before_rebalance, &[(("pulse.telemetry", 0), 99)]);
        assert_eq!(known.get("pulse.telemetry", 0), None);

        known.update(known.epoch(), &[(("pulse.telemetry", 0), 120)]);
        assert_eq!(known.get("pulse.telemetry", 0), Some(120));
        assert_eq!(known.get("pulse.telemetry", 1), None);
    }
}

//! Gathering a batch: a first record, then what arrives within the wait,
//! each tagged with the generation its partition was owned under; and where
//! each partition of a batch starts, to consume it again from there.

use std::collections::HashMap;
use std::future::Future;
use std::time::Instant;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;

use pulse_common::shutdown::Shutdown;

use super::Pipeline;
use crate::metrics;
use crate::source::assignment::Partition;

/// Records received together, with the generation under which each one's
/// partition was owned when it arrived.
pub(super) struct Batch {
    pub(super) messages: Vec<OwnedMessage>,
    pub(super) generations: HashMap<Partition, u64>,
}

/// What the loop waits for next.
pub(super) enum Next {
    Batch(Batch),
    /// The batch in flight was delivered (or failed) while no record came.
    Landed,
    Shutdown,
}

/// Where each partition of a batch starts, with the generation it was
/// received under: where to consume again if the batch did not commit.
#[derive(Default)]
pub(super) struct Starts(pub(super) HashMap<Partition, (u64, i64)>);

impl Starts {
    pub(super) fn of(batch: &Batch) -> Self {
        // A batch spans a handful of partitions: searched in a short list
        // rather than allocating a key per record.
        let mut first: Vec<((&str, i32), i64)> = Vec::new();
        for m in &batch.messages {
            let p = (m.topic(), m.partition());
            match first.iter_mut().find(|(q, _)| *q == p) {
                Some((_, offset)) => *offset = (*offset).min(m.offset()),
                None => first.push((p, m.offset())),
            }
        }
        let mut starts = Starts::default();
        for ((topic, partition), offset) in first {
            let partition = (topic.to_string(), partition);
            if let Some(g) = batch.generations.get(&partition) {
                starts.note(partition, *g, offset);
            }
        }
        starts
    }

    fn note(&mut self, partition: Partition, generation: u64, offset: i64) {
        let start = self.0.entry(partition).or_insert((generation, offset));
        if start.0 == generation {
            start.1 = start.1.min(offset);
        }
    }

    pub(super) fn merge(mut self, other: Starts) -> Self {
        for (partition, (generation, offset)) in other.0 {
            self.note(partition, generation, offset);
        }
        self
    }
}

impl Pipeline {
    /// The next batch: waits for a first record, then takes what arrives
    /// within `max_wait`, up to `max_batch`; records of partitions revoked
    /// meanwhile are left out. While waiting for the first record, the end
    /// of the delivery in flight (`landed`) is reported as soon as it happens.
    pub(super) async fn next_batch(
        &self,
        shutdown: &Shutdown,
        landed: impl Future<Output = ()>,
    ) -> Next {
        tokio::pin!(landed);
        let consumer = &self.source.consumer;
        let first = loop {
            tokio::select! {
                _ = shutdown.requested() => return Next::Shutdown,
                _ = &mut landed => return Next::Landed,
                m = consumer.recv() => match m {
                    Ok(m) => break m.detach(),
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                }
            }
        };
        let gathering = Instant::now();
        let max_batch = self.batching.max_batch;
        let mut received = Vec::with_capacity(max_batch);
        received.push(self.tagged(first));
        // One timer for the whole batch, not one per record.
        let deadline = tokio::time::sleep(self.batching.max_wait);
        tokio::pin!(deadline);
        while received.len() < max_batch {
            tokio::select! {
                biased;
                m = consumer.recv() => match m {
                    Ok(m) => received.push(self.tagged(m.detach())),
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                },
                _ = &mut deadline => break,
            }
        }
        let gathered = gathering.elapsed().as_secs_f64();
        metrics::GATHER_SECONDS.observe(gathered);
        tracing::debug!(
            records = received.len(),
            seconds = gathered,
            "batch gathered"
        );
        Next::Batch(self.owned_only(received))
    }

    fn tagged(&self, m: OwnedMessage) -> (OwnedMessage, Option<u64>) {
        let generation = self.source.assignment.generation(m.topic(), m.partition());
        (m, generation)
    }

    /// The records whose partition is still owned under the generation it
    /// had when they arrived.
    fn owned_only(&self, received: Vec<(OwnedMessage, Option<u64>)>) -> Batch {
        let mut batch = Batch {
            messages: Vec::with_capacity(received.len()),
            generations: HashMap::new(),
        };
        let mut stale = 0;
        for (m, generation) in received {
            let current = self.source.assignment.generation(m.topic(), m.partition());
            if generation.is_none() || current != generation {
                stale += 1;
                continue;
            }
            let known = batch
                .generations
                .keys()
                .any(|(t, p)| t == m.topic() && *p == m.partition());
            if let (Some(g), false) = (generation, known) {
                batch
                    .generations
                    .insert((m.topic().to_string(), m.partition()), g);
            }
            batch.messages.push(m);
        }
        if stale > 0 {
            tracing::info!(
                stale,
                "records of revoked partitions left to their new owner"
            );
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::{Batch, Starts};
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn batch(records: &[(i32, i64)], generations: &[(i32, u64)]) -> Batch {
        Batch {
            messages: records
                .iter()
                .map(|(p, o)| {
                    OwnedMessage::new(
                        None,
                        None,
                        "t".into(),
                        Timestamp::NotAvailable,
                        *p,
                        *o,
                        None,
                    )
                })
                .collect(),
            generations: generations
                .iter()
                .map(|(p, g)| (("t".to_string(), *p), *g))
                .collect(),
        }
    }

    fn sorted(starts: Starts) -> Vec<(i32, u64, i64)> {
        let mut v: Vec<_> = starts
            .0
            .into_iter()
            .map(|((_, p), (g, o))| (p, g, o))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_failed_batch_and_the_one_decoded_on_it_are_consumed_again_from_their_first_records() {
        let failed = batch(&[(0, 10), (0, 11), (1, 7)], &[(0, 1), (1, 1)]);
        let next = batch(
            &[(0, 12), (1, 8), (2, 40), (2, 41)],
            &[(0, 1), (1, 1), (2, 3)],
        );
        assert_eq!(sorted(Starts::of(&failed)), vec![(0, 1, 10), (1, 1, 7)]);
        assert_eq!(
            sorted(Starts::of(&failed).merge(Starts::of(&next))),
            vec![(0, 1, 10), (1, 1, 7), (2, 3, 40)]
        );
    }

    #[test]
    fn records_of_a_partition_not_owned_are_not_rewound() {
        let b = batch(&[(0, 10), (5, 3)], &[(0, 2)]);
        assert_eq!(sorted(Starts::of(&b)), vec![(0, 2, 10)]);
        assert!(Starts::of(&batch(&[], &[])).0.is_empty());
    }
}

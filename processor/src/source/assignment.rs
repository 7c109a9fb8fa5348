//! Which partitions this instance owns right now, as the consumer group's
//! rebalances move them.
//!
//! Every assignment of a partition gets a new generation number. A record is
//! tagged with its partition's generation when it is received; if the
//! partition was revoked before the batch is processed the generation no
//! longer matches, and the record is left to the partition's new owner.
//! Per-partition state loaded under an older generation is restored again.
//! Rebalance callbacks run inside the consumer's poll, so nothing changes
//! while a batch is decoded between two polls; a partition is given up only
//! once the delivery of the previous batch, which may run meanwhile, ended.

use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};

use crate::source::in_flight::InFlight;

/// A topic partition.
pub(crate) type Partition = (String, i32);

#[derive(Clone, Default)]
pub struct Assignment(Arc<Mutex<Owned>>);

#[derive(Default)]
struct Owned {
    next_generation: u64,
    /// By topic, then partition: looked up twice for every record, with the
    /// topic name borrowed from the record; hashed with foldhash, as the
    /// keys are the group's own topics.
    partitions: hashbrown::HashMap<String, hashbrown::HashMap<i32, u64>>,
}

impl Assignment {
    fn lock(&self) -> MutexGuard<'_, Owned> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation under which `partition` is owned, if it is.
    pub fn generation(&self, topic: &str, partition: i32) -> Option<u64> {
        self.lock().partitions.get(topic)?.get(&partition).copied()
    }

    /// Every partition owned now, with its generation.
    pub(crate) fn owned(&self) -> Vec<(Partition, u64)> {
        self.lock()
            .partitions
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions.iter().map(|(p, g)| ((topic.clone(), *p), *g))
            })
            .collect()
    }

    fn assign(&self, tpl: &TopicPartitionList) {
        let mut owned = self.lock();
        for e in tpl.elements() {
            owned.next_generation += 1;
            let generation = owned.next_generation;
            owned
                .partitions
                .entry(e.topic().to_string())
                .or_default()
                .insert(e.partition(), generation);
        }
    }

    fn revoke(&self, tpl: &TopicPartitionList) {
        let mut owned = self.lock();
        for e in tpl.elements() {
            if let Some(partitions) = owned.partitions.get_mut(e.topic()) {
                partitions.remove(&e.partition());
            }
        }
        owned
            .partitions
            .retain(|_, partitions| !partitions.is_empty());
    }
}

/// Consumer context that keeps [`Assignment`] current and tells the sink to
/// read its offset watermarks again after partitions move.
pub struct RebalanceAware {
    pub assignment: Assignment,
    pub on_move: Box<dyn Fn() + Send + Sync>,
    /// Deliveries under way, finished before partitions are given up.
    pub in_flight: InFlight,
}

impl ClientContext for RebalanceAware {}

impl ConsumerContext for RebalanceAware {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(?rebalance, "rebalance: giving up partitions");
        if let Rebalance::Revoke(tpl) = rebalance {
            if !self.in_flight.is_idle() {
                tracing::info!("rebalance: waiting for the batch being delivered");
                self.in_flight.wait_idle();
            }
            self.assignment.revoke(tpl);
        }
        (self.on_move)();
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(?rebalance, "rebalance: taking partitions");
        if let Rebalance::Assign(tpl) = rebalance {
            self.assignment.assign(tpl);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Offset;

    fn tpl(partitions: &[i32]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset("t", *p, Offset::Invalid).unwrap();
        }
        tpl
    }

    #[test]
    fn a_reassigned_partition_gets_a_new_generation() {
        let a = Assignment::default();
        a.assign(&tpl(&[0, 1]));
        let first = a.generation("t", 0).unwrap();
        assert_ne!(a.generation("t", 1), Some(first));
        a.revoke(&tpl(&[0]));
        assert_eq!(a.generation("t", 0), None);
        assert!(a.generation("t", 1).is_some());
        a.assign(&tpl(&[0]));
        let second = a.generation("t", 0).unwrap();
        assert!(second > first);
        let mut owned = a.owned();
        owned.sort();
        let one = a.generation("t", 1).unwrap();
        assert_eq!(
            owned,
            vec![(("t".to_string(), 0), second), (("t".to_string(), 1), one)]
        );
        a.revoke(&tpl(&[0, 1]));
        assert!(a.owned().is_empty());
        assert_eq!(a.generation("t", 1), None);
        assert_eq!(a.generation("u", 0), None);
    }
}

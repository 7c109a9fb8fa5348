//! Reading device state back from the changelogs when partitions arrive.

use std::collections::HashMap;

use pulse_common::schemas::EventKind;

use super::batch::Batch;
use super::{Kinds, Pipeline};
use crate::source::assignment::Partition;
use crate::state::changelog;
use crate::state::store::StateStore;

impl Pipeline {
    /// Reads the state of the batch's partitions from their changelogs,
    /// except those loaded under the partition's current assignment. Every
    /// other owned partition not loaded yet is read in the same pass: one
    /// restore for all the partitions a rebalance brought, rather than one
    /// per batch as their records start to arrive.
    pub(super) fn restore_state(
        &self,
        batch: &Batch,
        kinds: &Kinds,
        store: &mut StateStore,
    ) -> anyhow::Result<()> {
        let batch_needs = batch
            .generations
            .iter()
            .any(|(partition, generation)| !store.is_loaded(partition, *generation));
        if !batch_needs {
            return Ok(());
        }
        let mut wanted: HashMap<Partition, u64> =
            self.source.assignment.owned().into_iter().collect();
        wanted.extend(batch.generations.iter().map(|(p, g)| (p.clone(), *g)));
        let mut missing: HashMap<EventKind, Vec<i32>> = HashMap::new();
        for (partition, generation) in &wanted {
            if store.is_loaded(partition, *generation) {
                continue;
            }
            if let Some(kind) = kinds.get(&partition.0) {
                missing.entry(*kind).or_default().push(partition.1);
            }
        }
        for (kind, partitions) in missing {
            let restored = tokio::task::block_in_place(|| {
                changelog::restore(
                    &self.state.restore_config,
                    &self.state.changelogs.topic(kind),
                    &partitions,
                    self.state.restore_timeout,
                )
            })?;
            let events = self.topics.events(kind);
            for (p, devices) in restored {
                let partition = (events.clone(), p);
                if let Some(g) = wanted.get(&partition) {
                    store.load(partition, *g, devices);
                }
            }
        }
        Ok(())
    }
}

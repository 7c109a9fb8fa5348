//! Device state of the partitions this instance owns, and the changes a
//! batch makes to it. A batch works on its own copy of the states it
//! touches ([`BatchState`]); the copies replace the stored ones only once
//! the batch's transaction committed, so a batch that is retried or given up
//! starts again from the committed state.

use std::collections::HashMap;

use pulse_common::event::Event;

use crate::assignment::Partition;
use crate::changelog::DeviceKey;
use crate::state::{DeviceState, FeatureSettings, Features};

#[derive(Default)]
pub struct StateStore {
    partitions: HashMap<Partition, Loaded>,
}

struct Loaded {
    generation: u64,
    devices: HashMap<DeviceKey, DeviceState>,
}

impl StateStore {
    /// Whether `partition`'s state was loaded under `generation`.
    pub fn is_loaded(&self, partition: &Partition, generation: u64) -> bool {
        self.partitions
            .get(partition)
            .is_some_and(|l| l.generation == generation)
    }

    pub fn load(
        &mut self,
        partition: Partition,
        generation: u64,
        devices: HashMap<DeviceKey, DeviceState>,
    ) {
        self.partitions.insert(
            partition,
            Loaded {
                generation,
                devices,
            },
        );
    }

    /// Drops the state of partitions no longer owned.
    pub fn retain(&mut self, mut owned: impl FnMut(&Partition) -> bool) {
        self.partitions.retain(|p, _| owned(p));
    }

    pub fn devices(&self) -> usize {
        self.partitions.values().map(|l| l.devices.len()).sum()
    }

    fn get(&self, partition: &Partition, device: &DeviceKey) -> Option<&DeviceState> {
        self.partitions.get(partition)?.devices.get(device)
    }

    /// Makes a committed batch's states the current ones.
    pub fn apply(&mut self, batch: BatchState) {
        for ((partition, device), state) in batch.changed {
            if let Some(l) = self.partitions.get_mut(&partition) {
                l.devices.insert(device, state);
            }
        }
    }
}

/// The states a batch changed, by partition and device.
#[derive(Default)]
pub struct BatchState {
    pub changed: HashMap<(Partition, DeviceKey), DeviceState>,
}

impl BatchState {
    /// Takes in `event` read from `partition`: its features, or None for a
    /// retry of a recent event.
    pub fn observe(
        &mut self,
        store: &StateStore,
        partition: &Partition,
        event: &Event,
        settings: &FeatureSettings,
    ) -> Option<Features> {
        let device = (event.tenant_id.clone(), event.source_id.clone());
        let key = (partition.clone(), device);
        let state = match self.changed.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let current = store.get(&v.key().0, &v.key().1).cloned();
                v.insert(current.unwrap_or_default())
            }
        };
        state.observe(event, settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_common::schemas::EventKind;
    use std::collections::BTreeMap;

    fn event(id: &str) -> Event {
        Event {
            kind: EventKind::Telemetry,
            event_id: id.into(),
            tenant_id: "acme".into(),
            source_id: "dev-1".into(),
            event_time_ms: 0,
            readings: BTreeMap::from([("battery_v".to_string(), 3.9)]),
            firmware_version: None,
            event_type: String::new(),
            properties: BTreeMap::new(),
        }
    }

    /// The sequence number `batch` gives event `id`; None for a retry.
    fn seq(batch: &mut BatchState, store: &StateStore, id: &str) -> Option<u64> {
        let p: Partition = ("t".into(), 0);
        batch
            .observe(store, &p, &event(id), &FeatureSettings::default())
            .map(|f| f.seq)
    }

    #[test]
    fn a_batch_changes_the_store_only_when_applied() {
        let mut store = StateStore::default();
        store.load(("t".into(), 0), 1, HashMap::new());

        let mut batch = BatchState::default();
        assert_eq!(seq(&mut batch, &store, "a"), Some(1));
        assert_eq!(seq(&mut batch, &store, "b"), Some(2));
        // Given up: the next attempt starts from the stored state again.
        drop(batch);
        let mut batch = BatchState::default();
        assert_eq!(seq(&mut batch, &store, "a"), Some(1));
        store.apply(batch);

        let mut next = BatchState::default();
        assert_eq!(seq(&mut next, &store, "a"), None);
        assert_eq!(seq(&mut next, &store, "c"), Some(2));
    }

    #[test]
    fn state_is_dropped_with_its_partition() {
        let mut store = StateStore::default();
        store.load(("t".into(), 0), 1, HashMap::new());
        store.load(("t".into(), 1), 2, HashMap::new());
        store.retain(|p| p.1 == 1);
        assert!(!store.is_loaded(&("t".into(), 0), 1));
        assert!(store.is_loaded(&("t".into(), 1), 2));
        assert!(!store.is_loaded(&("t".into(), 1), 3));
    }
}

//! Device state of the partitions this instance owns, and the changes a
//! batch makes to it. A batch works on its own copy of the states it
//! touches ([`BatchState`]); the copies replace the stored ones only once
//! the batch's transaction committed, so a batch that is retried or given up
//! starts again from the committed state. A batch decoded while the one
//! before it is still being delivered starts from that batch's copies; it
//! is given up with it if that delivery fails.

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
    /// retry of a recent event. `earlier` is the batch before, still being
    /// delivered, whose states are newer than the store's.
    pub fn observe(
        &mut self,
        store: &StateStore,
        earlier: Option<&BatchState>,
        partition: &Partition,
        event: &Event,
        settings: &FeatureSettings,
    ) -> Option<Features> {
        let device = (event.tenant_id.clone(), event.source_id.clone());
        let key = (partition.clone(), device);
        let state = match self.changed.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let current = earlier
                    .and_then(|e| e.changed.get(v.key()))
                    .or_else(|| store.get(&v.key().0, &v.key().1))
                    .cloned();
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
        seq_after(batch, store, None, id)
    }

    /// The same, with `earlier` a batch still being delivered.
    fn seq_after(
        batch: &mut BatchState,
        store: &StateStore,
        earlier: Option<&BatchState>,
        id: &str,
    ) -> Option<u64> {
        let p: Partition = ("t".into(), 0);
        batch
            .observe(store, earlier, &p, &event(id), &FeatureSettings::default())
            .map(|f| f.seq)
    }

    #[test]
    fn a_batch_starts_from_the_one_still_being_delivered() {
        let mut store = StateStore::default();
        store.load(("t".into(), 0), 1, HashMap::new());
        let mut first = BatchState::default();
        assert_eq!(seq(&mut first, &store, "a"), Some(1));
        assert_eq!(seq(&mut first, &store, "b"), Some(2));

        let mut second = BatchState::default();
        assert_eq!(seq_after(&mut second, &store, Some(&first), "b"), None);
        assert_eq!(seq_after(&mut second, &store, Some(&first), "c"), Some(3));

        // The first delivery failed: both are given up, the store is as it was.
        drop((first, second));
        let mut again = BatchState::default();
        assert_eq!(seq(&mut again, &store, "a"), Some(1));
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

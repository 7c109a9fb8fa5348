//! Device state of the partitions this instance owns, and the changes a
//! batch makes to it. A batch works on its own copy of the states it
//! touches ([`BatchState`]); the copies replace the stored ones only once
//! the batch's transaction committed, so a batch that is retried or given up
//! starts again from the committed state. A batch decoded while the one
//! before it is still being delivered starts from that batch's copies; it
//! is given up with it if that delivery fails.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use hashbrown::hash_map::EntryRef;
use hashbrown::Equivalent;

use pulse_common::event::Event;

use crate::assignment::Partition;
use crate::changelog::DeviceKey;
use crate::state::{DeviceState, FeatureNames, FeatureSettings, Features};

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
    /// Looked up by borrowed names for every event: its key is copied only
    /// when a device first appears in the batch.
    pub changed: hashbrown::HashMap<(Partition, DeviceKey), DeviceState>,
    names: FeatureNames,
}

/// A device of a partition, by the names an event carries.
#[derive(Clone, Copy)]
struct DeviceOf<'a> {
    topic: &'a str,
    partition: i32,
    tenant: &'a str,
    source: &'a str,
}

impl Hash for DeviceOf<'_> {
    /// Hashes as the owned key does (a tuple of its parts, strings as str).
    fn hash<H: Hasher>(&self, state: &mut H) {
        ((self.topic, self.partition), (self.tenant, self.source)).hash(state);
    }
}

impl Equivalent<(Partition, DeviceKey)> for DeviceOf<'_> {
    fn equivalent(&self, key: &(Partition, DeviceKey)) -> bool {
        let ((topic, partition), (tenant, source)) = key;
        self.partition == *partition
            && self.source == source
            && self.tenant == tenant
            && self.topic == topic
    }
}

impl From<&DeviceOf<'_>> for (Partition, DeviceKey) {
    fn from(d: &DeviceOf<'_>) -> Self {
        (
            (d.topic.to_string(), d.partition),
            (d.tenant.to_string(), d.source.to_string()),
        )
    }
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
        let device = DeviceOf {
            topic: &partition.0,
            partition: partition.1,
            tenant: &event.tenant_id,
            source: &event.source_id,
        };
        let state = match self.changed.entry_ref(&device) {
            EntryRef::Occupied(o) => o.into_mut(),
            EntryRef::Vacant(v) => {
                let current = earlier
                    .and_then(|e| e.changed.get(&device))
                    .or_else(|| {
                        let key = (event.tenant_id.clone(), event.source_id.clone());
                        store.get(partition, &key)
                    })
                    .cloned();
                v.insert(current.unwrap_or_default())
            }
        };
        state.observe(event, settings, &mut self.names)
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

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

use crate::source::assignment::Partition;
use crate::state::changelog::DeviceKey;
use crate::state::device::{DeviceState, FeatureNames, FeatureSettings, Features};

#[derive(Default)]
pub(crate) struct StateStore {
    partitions: HashMap<Partition, Loaded>,
}

#[derive(Default)]
struct Loaded {
    generation: u64,
    devices: HashMap<DeviceKey, DeviceState>,
    /// Devices of each tenant, for the quota.
    per_tenant: HashMap<String, usize>,
}

impl Loaded {
    fn insert(&mut self, device: DeviceKey, state: DeviceState) {
        let tenant = device.0.clone();
        if self.devices.insert(device, state).is_none() {
            *self.per_tenant.entry(tenant).or_default() += 1;
        }
    }

    fn remove(&mut self, device: &DeviceKey) {
        if self.devices.remove(device).is_some() {
            if let Some(n) = self.per_tenant.get_mut(&device.0) {
                *n -= 1;
                if *n == 0 {
                    self.per_tenant.remove(&device.0);
                }
            }
        }
    }
}

/// Bounds on the state a partition holds: devices are created by whoever
/// writes events, and a partition's whole state must be read back within
/// the restore timeout when it moves to another instance.
#[derive(Debug, Clone, Copy)]
pub struct StateLimits {
    /// Most devices of one tenant in one partition; the events of a device
    /// beyond it are dead-lettered.
    pub max_devices_per_tenant: usize,
    /// A device whose latest event is older than this (in event time) is
    /// forgotten, with a tombstone in the changelog; 0 keeps devices forever.
    pub idle_ttl_ms: i64,
}

impl Default for StateLimits {
    fn default() -> Self {
        Self {
            max_devices_per_tenant: 100_000,
            idle_ttl_ms: 30 * 86_400_000,
        }
    }
}

/// What taking in an event came to.
#[derive(Debug, PartialEq)]
pub(crate) enum Observed {
    Features(Features),
    /// A retry of one of the device's recent events.
    Duplicate,
    /// A new device of a tenant that already has `limit` in the partition.
    OverQuota {
        limit: usize,
    },
}

impl StateStore {
    /// Whether `partition`'s state was loaded under `generation`.
    pub(crate) fn is_loaded(&self, partition: &Partition, generation: u64) -> bool {
        self.partitions
            .get(partition)
            .is_some_and(|l| l.generation == generation)
    }

    pub(crate) fn load(
        &mut self,
        partition: Partition,
        generation: u64,
        devices: HashMap<DeviceKey, DeviceState>,
    ) {
        let mut loaded = Loaded {
            generation,
            ..Loaded::default()
        };
        for (device, state) in devices {
            loaded.insert(device, state);
        }
        self.partitions.insert(partition, loaded);
    }

    /// Drops the state of partitions no longer owned.
    pub(crate) fn retain(&mut self, mut owned: impl FnMut(&Partition) -> bool) {
        self.partitions.retain(|p, _| owned(p));
    }

    pub(crate) fn devices(&self) -> usize {
        self.partitions.values().map(|l| l.devices.len()).sum()
    }

    fn get(&self, partition: &Partition, device: &DeviceKey) -> Option<&DeviceState> {
        self.partitions.get(partition)?.devices.get(device)
    }

    /// Makes a committed batch's states the current ones.
    pub(crate) fn apply(&mut self, batch: BatchState) {
        for (partition, device) in batch.evicted {
            if let Some(l) = self.partitions.get_mut(&partition) {
                l.remove(&device);
            }
        }
        for ((partition, device), state) in batch.changed {
            if let Some(l) = self.partitions.get_mut(&partition) {
                l.insert(device, state);
            }
        }
    }

    fn tenant_devices(&self, partition: &Partition, tenant: &str) -> usize {
        self.partitions
            .get(partition)
            .and_then(|l| l.per_tenant.get(tenant))
            .copied()
            .unwrap_or_default()
    }
}

/// The states a batch changed, by partition and device.
#[derive(Default)]
pub(crate) struct BatchState {
    /// Looked up by borrowed names for every event: its key is copied only
    /// when a device first appears in the batch.
    pub(crate) changed: hashbrown::HashMap<(Partition, DeviceKey), DeviceState>,
    /// Idle devices the batch forgets: tombstones in its changelog writes.
    pub(crate) evicted: hashbrown::HashSet<(Partition, DeviceKey)>,
    /// Devices the batch added less those it forgot, by partition and
    /// tenant, for the quota.
    added: HashMap<(Partition, String), isize>,
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
    pub(crate) fn observe(
        &mut self,
        store: &StateStore,
        earlier: Option<&BatchState>,
        partition: &Partition,
        event: &Event,
        settings: &FeatureSettings,
        limits: &StateLimits,
    ) -> Observed {
        let device = DeviceOf {
            topic: &partition.0,
            partition: partition.1,
            tenant: &event.tenant_id,
            source: &event.source_id,
        };
        let state = match self.changed.entry_ref(&device) {
            EntryRef::Occupied(o) => o.into_mut(),
            EntryRef::Vacant(v) => {
                let key = || (event.tenant_id.clone(), event.source_id.clone());
                let current = earlier
                    .and_then(|e| e.changed.get(&device))
                    .or_else(|| store.get(partition, &key()))
                    .cloned();
                let slot = (partition.clone(), event.tenant_id.clone());
                let state = match current {
                    Some(state) => {
                        // Back before its eviction committed: it stays.
                        if !self.evicted.is_empty() && self.evicted.remove(&(slot.0.clone(), key()))
                        {
                            *self.added.entry(slot).or_default() += 1;
                        }
                        state
                    }
                    None => {
                        // Counted against the store and this batch; a
                        // device added by the batch in flight is counted
                        // once it committed, so a quota can be passed by
                        // at most one batch's new devices.
                        let limit = limits.max_devices_per_tenant;
                        let added = self.added.entry(slot).or_default();
                        let held = store.tenant_devices(partition, &event.tenant_id) as isize;
                        if held + *added >= limit as isize {
                            return Observed::OverQuota { limit };
                        }
                        *added += 1;
                        DeviceState::default()
                    }
                };
                v.insert(state)
            }
        };
        match state.observe(event, settings, &mut self.names) {
            Some(features) => Observed::Features(features),
            None => Observed::Duplicate,
        }
    }

    /// Forgets the devices of the store whose latest event is older than
    /// `cutoff_ms`, except those the batch in flight (`earlier`) touched.
    /// Called before the batch's events are taken in, so that the slots
    /// it frees count for the batch's new devices.
    pub(crate) fn evict_idle(
        &mut self,
        store: &StateStore,
        earlier: Option<&BatchState>,
        cutoff_ms: i64,
    ) {
        for (partition, loaded) in &store.partitions {
            for (device, state) in &loaded.devices {
                if state.last_event_ms.is_none_or(|t| t >= cutoff_ms) {
                    continue;
                }
                let key = (partition.clone(), device.clone());
                if earlier.is_some_and(|b| b.changed.contains_key(&key)) {
                    continue;
                }
                *self
                    .added
                    .entry((partition.clone(), device.0.clone()))
                    .or_default() -= 1;
                self.evicted.insert(key);
            }
        }
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

    fn of_device(source: &str, t: i64) -> Event {
        Event {
            source_id: source.into(),
            event_time_ms: t,
            ..event(&format!("{source}-{t}"))
        }
    }

    fn observe(batch: &mut BatchState, store: &StateStore, e: &Event, limit: usize) -> Observed {
        let limits = StateLimits {
            max_devices_per_tenant: limit,
            ..StateLimits::default()
        };
        let p: Partition = ("t".into(), 0);
        batch.observe(store, None, &p, e, &FeatureSettings::default(), &limits)
    }

    #[test]
    fn a_tenant_beyond_its_quota_adds_no_device_and_known_devices_go_on() {
        let mut store = StateStore::default();
        store.load(("t".into(), 0), 1, HashMap::new());
        let mut batch = BatchState::default();
        for source in ["a", "b"] {
            let o = observe(&mut batch, &store, &of_device(source, 1), 2);
            assert!(matches!(o, Observed::Features(_)), "{source}: {o:?}");
        }
        assert_eq!(
            observe(&mut batch, &store, &of_device("c", 1), 2),
            Observed::OverQuota { limit: 2 }
        );
        store.apply(batch);
        assert_eq!(store.devices(), 2);
        let mut next = BatchState::default();
        assert_eq!(
            observe(&mut next, &store, &of_device("d", 2), 2),
            Observed::OverQuota { limit: 2 }
        );
        assert!(matches!(
            observe(&mut next, &store, &of_device("a", 2), 2),
            Observed::Features(f) if f.seq == 2
        ));
        // Another tenant has a quota of its own.
        let mut other = of_device("c", 2);
        other.tenant_id = "globex".into();
        assert!(matches!(
            observe(&mut next, &store, &other, 2),
            Observed::Features(_)
        ));
    }

    #[test]
    fn idle_devices_are_evicted_once_committed_and_free_their_quota() {
        let mut store = StateStore::default();
        store.load(("t".into(), 0), 1, HashMap::new());
        let mut batch = BatchState::default();
        observe(&mut batch, &store, &of_device("old", 1_000), 2);
        observe(&mut batch, &store, &of_device("new", 9_000), 2);
        store.apply(batch);

        let mut batch = BatchState::default();
        batch.evict_idle(&store, None, 5_000);
        let evicted: Vec<&str> = batch.evicted.iter().map(|(_, d)| d.1.as_str()).collect();
        assert_eq!(evicted, ["old"]);
        // The slot it frees is taken by a new device in the same batch.
        assert!(matches!(
            observe(&mut batch, &store, &of_device("newer", 10_000), 2),
            Observed::Features(_)
        ));
        // Given up: nothing is forgotten.
        drop(batch);
        assert_eq!(store.devices(), 2);

        // A device back before its eviction committed stays, with its history.
        let mut batch = BatchState::default();
        batch.evict_idle(&store, None, 5_000);
        assert!(matches!(
            observe(&mut batch, &store, &of_device("old", 10_000), 2),
            Observed::Features(f) if f.seq == 2
        ));
        assert!(batch.evicted.is_empty());
        assert_eq!(
            observe(&mut batch, &store, &of_device("newer", 10_000), 2),
            Observed::OverQuota { limit: 2 }
        );
        drop(batch);

        let mut batch = BatchState::default();
        batch.evict_idle(&store, None, 5_000);
        store.apply(batch);
        assert_eq!(store.devices(), 1);
        // Forgotten: it starts afresh when it comes back.
        let mut batch = BatchState::default();
        assert!(matches!(
            observe(&mut batch, &store, &of_device("old", 20_000), 2),
            Observed::Features(f) if f.seq == 1
        ));
    }

    /// The same, with `earlier` a batch still being delivered.
    fn seq_after(
        batch: &mut BatchState,
        store: &StateStore,
        earlier: Option<&BatchState>,
        id: &str,
    ) -> Option<u64> {
        let p: Partition = ("t".into(), 0);
        let observed = batch.observe(
            store,
            earlier,
            &p,
            &event(id),
            &FeatureSettings::default(),
            &StateLimits::default(),
        );
        match observed {
            Observed::Features(f) => Some(f.seq),
            Observed::Duplicate => None,
            Observed::OverQuota { .. } => panic!("over quota"),
        }
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

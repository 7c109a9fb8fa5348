//! Per-device state: rolling features over a device's recent readings, and
//! the ids of its latest events so that a client's retry of an event already
//! processed is recognised and dropped.
//!
//! The state is a pure function of the device's events in partition order,
//! so replaying a batch from the same starting state gives the same
//! features; that is what lets a batch be retried, and a partition move to
//! another instance, without a jump in the features.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use pulse_common::event::Event;

/// How features are computed.
#[derive(Debug, Clone, Copy)]
pub struct FeatureSettings {
    /// Weight of the newest reading in the exponentially weighted moving
    /// mean and variance.
    pub alpha: f64,
    /// Readings needed before a z-score is reported (NaN before).
    pub warmup: u64,
    /// How many recent event ids per device are remembered for dedup.
    pub dedup_window: usize,
}

impl Default for FeatureSettings {
    fn default() -> Self {
        Self {
            alpha: 0.1,
            warmup: 10,
            dedup_window: 32,
        }
    }
}

/// Moving statistics of one reading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Rolling {
    pub mean: f64,
    pub var: f64,
    pub last: f64,
    pub count: u64,
}

/// What is kept per device, and written to the changelog after each batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeviceState {
    /// Events seen from the device, retries excluded.
    pub seq: u64,
    pub last_event_ms: Option<i64>,
    pub readings: BTreeMap<String, Rolling>,
    pub recent_ids: VecDeque<String>,
}

/// Features of one event, computed from the state before it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    /// The event's position in its device's sequence, from 1.
    pub seq: u64,
    /// Names and values side by side, names sorted.
    pub names: Vec<Arc<str>>,
    pub values: Vec<f64>,
}

impl Features {
    /// Only tests look features up by name; the model's input row walks
    /// them in order (`model_input`).
    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<f64> {
        self.names
            .binary_search_by(|n| (**n).cmp(name))
            .ok()
            .map(|i| self.values[i])
    }
}

impl DeviceState {
    /// Takes in `event` and returns its features, or None when the event is a
    /// retry of one among the device's recent events (the state is unchanged).
    pub(crate) fn observe(
        &mut self,
        event: &Event,
        settings: &FeatureSettings,
        names: &mut FeatureNames,
    ) -> Option<Features> {
        // Ids are uuids of equal length: comparing the last byte first
        // spares a full comparison for almost every recent id.
        let last = event.event_id.as_bytes().last();
        let seen = |id: &String| id.as_bytes().last() == last && *id == event.event_id;
        if self.recent_ids.iter().any(seen) {
            return None;
        }
        self.recent_ids.push_back(event.event_id.clone());
        while self.recent_ids.len() > settings.dedup_window {
            self.recent_ids.pop_front();
        }
        self.seq += 1;
        let mut features = Vec::with_capacity(1 + 3 * event.readings.len());
        let gap_s = self
            .last_event_ms
            .map_or(f64::NAN, |t| (event.event_time_ms - t) as f64 / 1000.0);
        features.push((names.gap.clone(), gap_s));
        self.last_event_ms = Some(event.event_time_ms);
        for (name, &value) in &event.readings {
            let r = match self.readings.get_mut(name) {
                Some(r) => r,
                None => self.readings.entry(name.clone()).or_default(),
            };
            // Readings within the input contract cannot overflow these
            // statistics (see `pulse_common::contract`); a history that
            // did, restored from a state written before the bounds, starts
            // again rather than carrying an infinite statistic forever.
            if !(r.mean.is_finite() && r.var.is_finite() && r.last.is_finite()) {
                *r = Rolling::default();
            }
            let (delta, z) = if r.count == 0 {
                (f64::NAN, f64::NAN)
            } else {
                let sd = r.var.sqrt();
                let z = if r.count >= settings.warmup && sd > 0.0 {
                    (value - r.mean) / sd
                } else {
                    f64::NAN
                };
                (value - r.last, z)
            };
            r.update(value, settings.alpha);
            let [delta_name, ewma_name, z_name] = names.of(name);
            features.push((delta_name, delta));
            features.push((z_name, z));
            features.push((ewma_name, r.mean));
        }
        features.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let (names, values) = features.into_iter().unzip();
        Some(Features {
            seq: self.seq,
            names,
            values,
        })
    }
}

/// The names of the features of each reading, made once per batch and
/// shared by its rows instead of written anew three times per reading of
/// every event. Looked up for every reading, so hashed with foldhash.
pub(crate) struct FeatureNames {
    gap: Arc<str>,
    by_reading: hashbrown::HashMap<String, [Arc<str>; 3]>,
}

/// Reading names kept at most: they come from devices, so a fleet sending
/// ever new names must not grow the table without end; names beyond it are
/// made for each event.
const KEPT_READING_NAMES: usize = 4096;

impl Default for FeatureNames {
    fn default() -> Self {
        Self {
            gap: Arc::from("gap_s"),
            by_reading: hashbrown::HashMap::new(),
        }
    }
}

impl FeatureNames {
    /// The `.delta`, `.ewma` and `.z` feature names of reading `name`.
    fn of(&mut self, name: &str) -> [Arc<str>; 3] {
        if let Some(names) = self.by_reading.get(name) {
            return names.clone();
        }
        let names = [".delta", ".ewma", ".z"].map(|suffix| Arc::from(format!("{name}{suffix}")));
        if self.by_reading.len() < KEPT_READING_NAMES {
            self.by_reading.insert(name.to_string(), names.clone());
        }
        names
    }
}

impl Rolling {
    /// Exponentially weighted mean and variance (West's incremental form);
    /// the first reading starts the mean with zero variance.
    fn update(&mut self, value: f64, alpha: f64) {
        if self.count == 0 {
            self.mean = value;
            self.var = 0.0;
        } else {
            let diff = value - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + diff * incr);
        }
        self.last = value;
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_common::schemas::EventKind;

    fn reading(id: &str, t: i64, temperature: f64) -> Event {
        Event {
            kind: EventKind::Telemetry,
            event_id: id.to_string(),
            tenant_id: "acme".into(),
            source_id: "dev-1".into(),
            event_time_ms: t,
            readings: BTreeMap::from([("temperature_c".to_string(), temperature)]),
            firmware_version: None,
            event_type: String::new(),
            properties: BTreeMap::new(),
        }
    }

    #[test]
    fn features_follow_the_device_history() {
        let settings = FeatureSettings {
            alpha: 0.5,
            warmup: 2,
            dedup_window: 4,
        };
        let mut s = DeviceState::default();
        let f1 = s
            .observe(
                &reading("a", 1_000, 20.0),
                &settings,
                &mut FeatureNames::default(),
            )
            .unwrap();
        assert_eq!(f1.seq, 1);
        assert!(f1.get("gap_s").unwrap().is_nan());
        assert!(f1.get("temperature_c.delta").unwrap().is_nan());
        assert_eq!(f1.get("temperature_c.ewma"), Some(20.0));

        let f2 = s
            .observe(
                &reading("b", 3_500, 22.0),
                &settings,
                &mut FeatureNames::default(),
            )
            .unwrap();
        assert_eq!(f2.seq, 2);
        assert_eq!(f2.get("gap_s"), Some(2.5));
        assert_eq!(f2.get("temperature_c.delta"), Some(2.0));
        // One reading so far: below the warm-up, no z-score yet.
        assert!(f2.get("temperature_c.z").unwrap().is_nan());
        // mean 20 + 0.5 * 2 = 21; var 0.5 * (0 + 2 * 1) = 1.
        assert_eq!(f2.get("temperature_c.ewma"), Some(21.0));
        assert_eq!(s.readings["temperature_c"].var, 1.0);

        let f3 = s
            .observe(
                &reading("c", 4_500, 24.0),
                &settings,
                &mut FeatureNames::default(),
            )
            .unwrap();
        // (24 - 21) / sqrt(1) against the state before this reading.
        assert_eq!(f3.get("temperature_c.z"), Some(3.0));
    }

    #[test]
    fn a_retried_event_is_dropped_and_leaves_the_state_alone() {
        let settings = FeatureSettings::default();
        let mut s = DeviceState::default();
        s.observe(
            &reading("a", 1_000, 20.0),
            &settings,
            &mut FeatureNames::default(),
        )
        .unwrap();
        let before = s.clone();
        assert_eq!(
            s.observe(
                &reading("a", 1_000, 20.0),
                &settings,
                &mut FeatureNames::default()
            ),
            None
        );
        assert_eq!(s, before);
    }

    #[test]
    fn only_the_latest_ids_are_remembered() {
        let settings = FeatureSettings {
            dedup_window: 2,
            ..FeatureSettings::default()
        };
        let mut s = DeviceState::default();
        for id in ["a", "b", "c"] {
            s.observe(
                &reading(id, 1_000, 20.0),
                &settings,
                &mut FeatureNames::default(),
            )
            .unwrap();
        }
        assert_eq!(s.recent_ids, VecDeque::from(["b".into(), "c".into()]));
        assert!(s
            .observe(
                &reading("a", 1_000, 20.0),
                &settings,
                &mut FeatureNames::default()
            )
            .is_some());
    }

    #[test]
    fn state_round_trips_through_the_changelog_encoding() {
        let settings = FeatureSettings::default();
        let mut s = DeviceState::default();
        s.observe(
            &reading("a", 1_000, 20.5),
            &settings,
            &mut FeatureNames::default(),
        )
        .unwrap();
        let bytes = serde_json::to_vec(&s).unwrap();
        let back: DeviceState = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn features_stay_finite_at_the_contract_bounds_and_recover_from_an_overflowed_history() {
        let settings = FeatureSettings {
            warmup: 2,
            ..FeatureSettings::default()
        };
        let mut s = DeviceState::default();
        let mut names = FeatureNames::default();
        let bound = pulse_common::contract::MAX_READING_ABS;
        for (i, v) in [bound, -bound, bound, -bound, bound]
            .into_iter()
            .enumerate()
        {
            let f = s
                .observe(&reading(&i.to_string(), i as i64, v), &settings, &mut names)
                .unwrap();
            let ewma = f.get("temperature_c.ewma").unwrap();
            assert!(ewma.is_finite(), "{ewma}");
        }
        let r = &s.readings["temperature_c"];
        assert!(r.mean.is_finite() && r.var.is_finite(), "{r:?}");
        // The encoding never writes a null that a restore cannot read.
        let back: DeviceState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);

        // A history that overflowed before the bounds existed.
        s.readings.get_mut("temperature_c").unwrap().var = f64::INFINITY;
        let f = s
            .observe(&reading("x", 10, 21.0), &settings, &mut names)
            .unwrap();
        assert!(f.get("temperature_c.z").unwrap().is_nan());
        assert!(f.get("temperature_c.delta").unwrap().is_nan());
        assert_eq!(s.readings["temperature_c"].count, 1);
        assert_eq!(s.readings["temperature_c"].mean, 21.0);
        assert_eq!(s.readings["temperature_c"].var, 0.0);
    }

    #[test]
    fn the_smallest_spread_still_gives_a_finite_z_within_the_bounds() {
        let settings = FeatureSettings {
            warmup: 1,
            ..FeatureSettings::default()
        };
        let mut s = DeviceState::default();
        s.readings.insert(
            "temperature_c".into(),
            Rolling {
                mean: 0.0,
                var: f64::from_bits(1), // the smallest positive double
                last: 0.0,
                count: 5,
            },
        );
        let f = s
            .observe(
                &reading("a", 1, pulse_common::contract::MAX_READING_ABS),
                &settings,
                &mut FeatureNames::default(),
            )
            .unwrap();
        assert!(f.get("temperature_c.z").unwrap().is_finite());
    }

    #[test]
    fn feature_names_are_made_once_per_reading_and_kept_within_bounds() {
        let mut names = FeatureNames::default();
        let first = names.of("temperature_c");
        assert_eq!(
            first.each_ref().map(|n| &**n),
            [
                "temperature_c.delta",
                "temperature_c.ewma",
                "temperature_c.z"
            ]
        );
        assert!(Arc::ptr_eq(&first[2], &names.of("temperature_c")[2]));

        for i in 0..KEPT_READING_NAMES + 10 {
            names.of(&format!("r{i}"));
        }
        assert_eq!(names.by_reading.len(), KEPT_READING_NAMES);
        let beyond = format!("r{}", KEPT_READING_NAMES + 5);
        assert_eq!(&*names.of(&beyond)[0], format!("{beyond}.delta"));
    }
}

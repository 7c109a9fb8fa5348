//! A simulated device fleet: healthy readings that move together the way
//! real sensors do, with labelled anomalies injected at a chosen rate, so
//! detection quality can be scored. Deterministic for a given seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde_json::{json, Value};

/// What, if anything, is wrong with a simulated reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// Temperature jumps while humidity does not follow.
    HeatSpike,
    /// Vibration far above what the temperature explains.
    VibrationBurst,
}

impl Anomaly {
    pub fn label(self) -> &'static str {
        match self {
            Anomaly::HeatSpike => "heat_spike",
            Anomaly::VibrationBurst => "vibration_burst",
        }
    }
}

/// One device's slowly varying state.
struct Device {
    id: String,
    base_temperature: f64,
    phase: f64,
    battery: f64,
}

pub struct Fleet {
    tenant: String,
    devices: Vec<Device>,
    rng: StdRng,
    anomaly_rate: f64,
}

/// A generated event and the anomaly it carries, if any.
pub struct Generated {
    pub event: Value,
    pub anomaly: Option<Anomaly>,
}

impl Fleet {
    pub fn new(tenant: &str, devices: usize, anomaly_rate: f64, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let devices = (0..devices)
            .map(|i| Device {
                id: format!("device-{i:05}"),
                base_temperature: rng.random_range(17.0..25.0),
                phase: rng.random_range(0.0..std::f64::consts::TAU),
                battery: rng.random_range(3.6..4.1),
            })
            .collect();
        Self {
            tenant: tenant.to_string(),
            devices,
            rng,
            anomaly_rate,
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The next reading of device `index` at `now_ms`.
    pub fn next(&mut self, index: usize, now_ms: i64) -> Generated {
        let n = |rng: &mut StdRng, sd: f64| rng.sample::<f64, _>(StandardNormal) * sd;
        let anomaly = if self.rng.random_bool(self.anomaly_rate) {
            Some(if self.rng.random_bool(0.5) {
                Anomaly::HeatSpike
            } else {
                Anomaly::VibrationBurst
            })
        } else {
            None
        };
        let slot = index % self.devices.len();
        let device = &mut self.devices[slot];
        device.phase += 0.01;
        device.battery = (device.battery - 0.00001).max(3.5);
        let mut temperature =
            device.base_temperature + 4.0 * device.phase.sin() + n(&mut self.rng, 0.3);
        let humidity = 55.0 - 1.5 * (temperature - 21.0) + n(&mut self.rng, 1.0);
        let mut vibration = 0.20 + 0.02 * (temperature - 21.0) + n(&mut self.rng, 0.02);
        match anomaly {
            Some(Anomaly::HeatSpike) => temperature += 12.0,
            Some(Anomaly::VibrationBurst) => vibration += 0.8,
            None => {}
        }
        let event = json!({
            "kind": "telemetry",
            "event_id": uuid::Builder::from_random_bytes(self.rng.random()).into_uuid().to_string(),
            "tenant_id": self.tenant,
            "source_id": device.id,
            "event_time": now_ms,
            "readings": {
                "temperature_c": round(temperature),
                "humidity_pct": round(humidity),
                "vibration_g": round(vibration),
                "battery_v": round(device.battery),
            },
        });
        Generated { event, anomaly }
    }
}

/// Sends some events twice, right after themselves, as clients that retry a
/// send whose acknowledgement was lost do; returns how many were repeated.
pub fn with_retries(events: &mut Vec<Value>, rate: f64, rng: &mut StdRng) -> u64 {
    if rate <= 0.0 {
        return 0;
    }
    let mut out = Vec::with_capacity(events.len());
    let mut repeated = 0;
    for e in events.drain(..) {
        let again = rng.random_bool(rate.min(1.0));
        if again {
            out.push(e.clone());
            repeated += 1;
        }
        out.push(e);
    }
    *events = out;
    repeated
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_events() {
        let mut a = Fleet::new("t", 3, 0.1, 7);
        let mut b = Fleet::new("t", 3, 0.1, 7);
        for i in 0..50 {
            let (x, y) = (a.next(i, 1000), b.next(i, 1000));
            assert_eq!(x.event, y.event);
            assert_eq!(x.anomaly, y.anomaly);
        }
    }

    #[test]
    fn anomaly_rate_is_respected_and_labels_are_set() {
        let mut fleet = Fleet::new("t", 10, 0.05, 1);
        let anomalies = (0..10_000)
            .filter(|i| fleet.next(*i, 0).anomaly.is_some())
            .count();
        assert!(
            (350..650).contains(&anomalies),
            "{anomalies} of 10000 at 5%"
        );
    }

    #[test]
    fn heat_spikes_break_the_humidity_relation() {
        let mut fleet = Fleet::new("t", 1, 1.0, 3);
        let spike = (0..100)
            .map(|i| fleet.next(i, 0))
            .find(|g| g.anomaly == Some(Anomaly::HeatSpike))
            .expect("a heat spike");
        let r = &spike.event["readings"];
        let t = r["temperature_c"].as_f64().unwrap_or_default();
        let h = r["humidity_pct"].as_f64().unwrap_or_default();
        // Healthy: humidity = 55 - 1.5 (t - 21); a spike leaves it ~18 points too high.
        assert!(h - (55.0 - 1.5 * (t - 21.0)) > 10.0, "t={t} h={h}");
    }
}

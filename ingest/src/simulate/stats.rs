//! What a load run measured: events sent and refused, and the latency of
//! each send.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub events: u64,
    /// Events sent a second time, as a client retrying would.
    pub retries: u64,
    pub anomalies: u64,
    pub failures: u64,
    pub bytes: u64,
    latencies_us: Vec<u64>,
}

/// A summary, printed as one JSON line at the end of a run.
#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    pub events: u64,
    pub retries: u64,
    pub anomalies: u64,
    pub failures: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub mean_event_bytes: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Stats {
    pub fn record(&mut self, events: u64, anomalies: u64, bytes: u64, latency: Duration) {
        self.events += events;
        self.anomalies += anomalies;
        self.bytes += bytes;
        self.latencies_us.push(latency.as_micros() as u64);
    }

    pub fn merge(&mut self, other: Stats) {
        self.events += other.events;
        self.anomalies += other.anomalies;
        self.failures += other.failures;
        self.retries += other.retries;
        self.bytes += other.bytes;
        self.latencies_us.extend(other.latencies_us);
    }

    pub fn summary(mut self, elapsed: Duration) -> Summary {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies_us.len() as f64 * p).ceil() as usize)
                .clamp(1, self.latencies_us.len())
                - 1;
            self.latencies_us[i] as f64 / 1000.0
        };
        let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
        Summary {
            events: self.events,
            retries: self.retries,
            anomalies: self.anomalies,
            failures: self.failures,
            seconds,
            events_per_second: self.events as f64 / seconds,
            mean_event_bytes: self.bytes as f64 / (self.events.max(1) as f64),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rates() {
        let mut s = Stats::default();
        for ms in 1..=100u64 {
            s.record(2, 0, 200, Duration::from_millis(ms));
        }
        let summary = s.summary(Duration::from_secs(4));
        assert_eq!(summary.events, 200);
        assert_eq!(summary.events_per_second, 50.0);
        assert_eq!(summary.mean_event_bytes, 100.0);
        assert_eq!(summary.p50_ms, 50.0);
        assert_eq!(summary.p99_ms, 99.0);
    }
}

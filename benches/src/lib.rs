//! Shared inputs for Pulse's benchmarks: deterministic events of realistic size.

use serde_json::{json, Value};

/// A telemetry event as devices post it, with `readings` numbered readings.
pub fn telemetry_event(i: u64, readings: usize) -> Value {
    let readings: serde_json::Map<String, Value> = (0..readings)
        .map(|r| {
            (
                format!("sensor_{r}"),
                json!(20.0 + (i % 97) as f64 * 0.1 + r as f64),
            )
        })
        .collect();
    json!({
        "event_id": format!("00000000-0000-4000-8000-{:012x}", i),
        "tenant_id": "acme",
        "source_id": format!("device-{:05}", i % 1000),
        "event_time": 1_800_000_000_000i64 + i as i64,
        "readings": readings,
        "firmware_version": "2.1.0"
    })
}

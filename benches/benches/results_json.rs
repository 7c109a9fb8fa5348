//! Serializing a batch's results (the JSON records of the results topic):
//! the processor's writer side by side with serde_json, its baseline, which
//! writes the same bytes, so the report reads as a ratio on the same machine
//! in the same run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pulse_common::scored::ScoredEvent;
use pulse_processor::sink::results::Results;

/// A telemetry row as the processor writes it: four readings, thirteen features.
fn row(i: usize) -> ScoredEvent {
    let readings = ["battery_v", "humidity_pct", "temperature_c", "vibration_g"];
    let mut feature_names: Vec<std::sync::Arc<str>> = vec!["gap_s".into()];
    for r in readings {
        for suffix in [".delta", ".ewma", ".z"] {
            feature_names.push(format!("{r}{suffix}").into());
        }
    }
    let feature_values = (0..feature_names.len())
        .map(|k| (i * 31 + k) as f64 / 7.0)
        .collect();
    ScoredEvent {
        tenant_id: "acme".into(),
        source_id: format!("dev-{:04}", i % 1000),
        event_id: format!("6f1c2a9e-4b7d-4e21-9a3f-{i:012x}"),
        kind: "telemetry".into(),
        event_time: 1_795_000_000 + i as u32,
        event_time_ms: 1_795_000_000_000 + i as i64 * 7,
        schema_id: 2,
        reading_names: readings.iter().map(|r| r.to_string()).collect(),
        reading_values: vec![3.61, 41.7 + i as f64 / 100.0, 21.94, 0.213],
        properties_json: "{}".into(),
        score: 0.1 + (i % 10) as f32 / 100.0,
        model_version: "anomaly-v1".into(),
        device_seq: i as u64 / 1000 + 1,
        feature_names,
        feature_values,
        processed_ms: 1_795_000_001_000,
        source_topic: "pulse.telemetry".into(),
        source_partition: (i % 6) as i32,
        source_offset: i as i64,
        ..ScoredEvent::default()
    }
}

fn bench(c: &mut Criterion) {
    let rows: Vec<ScoredEvent> = (0..1000).map(row).collect();
    let mut group = c.benchmark_group("results_json");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("baseline_serde_json", |b| {
        let mut out = Vec::with_capacity(rows.len() * 1536);
        b.iter(|| {
            out.clear();
            for r in &rows {
                serde_json::to_writer(&mut out, r).map_err(|e| e.to_string())?;
            }
            Ok::<usize, String>(out.len())
        })
    });
    group.bench_function("results_writer", |b| {
        let mut buffer = Some(Vec::with_capacity(rows.len() * 1536));
        b.iter(|| {
            let results = Results::of(&rows, buffer.take().unwrap_or_default());
            let results = results.map_err(|e| e.to_string())?;
            let n = results.len();
            buffer = Some(results.into_buffer());
            Ok::<usize, String>(n)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

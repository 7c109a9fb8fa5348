//! The ingest hot path per event: JSON text -> validated Avro value -> Avro
//! bytes, side by side with its floor, parsing the JSON alone, so the report
//! reads as a ratio on the same machine in the same run.

use apache_avro::writer::datum::GenericDatumWriter;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pulse_benches::telemetry_event;
use pulse_common::json_avro::json_to_avro;
use pulse_common::schemas::EventKind;

fn bench(c: &mut Criterion) {
    let Some(schema) = EventKind::Telemetry.schema(2) else {
        panic!("telemetry v2 is shipped")
    };
    let writer = match GenericDatumWriter::builder(&schema).build() {
        Ok(w) => w,
        Err(e) => panic!("writer for telemetry v2: {e}"),
    };
    let mut group = c.benchmark_group("ingest_validation");
    for readings in [4usize, 32] {
        let text = telemetry_event(7, readings).to_string();
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("baseline_parse_json", readings),
            &text,
            |b, text| {
                b.iter(|| serde_json::from_str::<serde_json::Value>(text).map(|v| v.is_object()))
            },
        );
        group.bench_with_input(
            BenchmarkId::new("parse_validate_encode", readings),
            &text,
            |b, text| {
                b.iter(|| {
                    let json: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                    let value = json_to_avro(&schema, &json).map_err(|e| e.to_string());
                    value.and_then(|v| writer.write_value_to_vec(v).map_err(|e| e.to_string()))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

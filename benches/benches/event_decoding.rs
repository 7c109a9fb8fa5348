//! Reading telemetry records (Avro binary of the shipped v2 schema) into
//! events: the processor's direct reader side by side with the generic
//! reader and `Event::from_avro`, its baseline, which gives the same events
//! (the processor's unit tests check that), so the report reads as a ratio
//! on the same machine in the same run.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pulse_common::event::Event;
use pulse_common::json_avro::json_to_avro;
use pulse_common::schemas::EventKind;
use pulse_processor::decode::wire_event::{self, Plan};

/// A telemetry record as the load generator writes them: four readings.
fn record(schema: &apache_avro::Schema, i: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "event_id": format!("6f1c2a9e-4b7d-4e21-9a3f-{i:012x}"),
        "tenant_id": "acme",
        "source_id": format!("dev-{:04}", i % 1000),
        "event_time": 1_795_000_000_000i64 + i as i64 * 7,
        "readings": {
            "battery_v": 3.61,
            "humidity_pct": 41.7 + i as f64 / 100.0,
            "temperature_c": 21.94,
            "vibration_g": 0.213
        },
        "firmware_version": "2.1.0"
    });
    let value = json_to_avro(schema, &body).expect("a valid telemetry event");
    GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .expect("encodes")
}

fn bench(c: &mut Criterion) {
    let kind = EventKind::Telemetry;
    let schema = kind.schema(2).expect("shipped schema");
    let records: Vec<Vec<u8>> = (0..1000).map(|i| record(&schema, i)).collect();
    let mut group = c.benchmark_group("event_decoding");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("baseline_generic_reader", |b| {
        let reader = GenericDatumReader::builder(&schema)
            .build()
            .expect("reader");
        b.iter(|| {
            records
                .iter()
                .map(|r| {
                    let value = reader.read_value(&mut &r[..]).map_err(|e| e.to_string())?;
                    Event::from_avro(kind, value)
                        .map(|e| e.readings.len())
                        .map_err(|e| e.to_string())
                })
                .sum::<Result<usize, String>>()
        })
    });
    group.bench_function("direct_reader", |b| {
        let plan = Plan::of(&schema).expect("the shipped schema reads directly");
        b.iter(|| {
            records
                .iter()
                .map(|r| wire_event::read(&plan, kind, r).map(|e| e.readings.len()))
                .sum::<Option<usize>>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

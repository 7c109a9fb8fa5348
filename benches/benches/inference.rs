//! Model inference rows/s at batch sizes 1, 64 and 1024 through the
//! processor's own scorer. Batch 1 is the baseline the larger batches are read
//! against. Needs ORT_DYLIB_PATH (`./dev install` provides the library;
//! `source scripts/common.sh; export_stack_env` sets it).
//!   cargo bench -p pulse-benches --bench inference
//! `PULSE_BENCH_DEVICE=cuda` measures the CUDA provider instead (it must
//! load: the run fails rather than fall back to the CPU), with an ONNX Runtime
//! GPU build in ORT_DYLIB_PATH. `PULSE_MODEL_PATH` overrides the model file,
//! for a bench binary run away from its source tree.

use std::collections::BTreeMap;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pulse_common::event::Event;
use pulse_common::schemas::EventKind;
use pulse_processor::score::scorer::{ExecutionProvider, Scorer};
use pulse_processor::state::device::Features;

fn event(i: usize) -> Event {
    let x = (i % 97) as f64 / 97.0;
    Event {
        kind: EventKind::Telemetry,
        event_id: String::new(),
        tenant_id: "bench".into(),
        source_id: format!("device-{}", i % 1000),
        event_time_ms: 0,
        readings: BTreeMap::from([
            ("temperature_c".to_string(), 18.0 + 6.0 * x),
            ("humidity_pct".to_string(), 60.0 - 9.0 * x),
            ("vibration_g".to_string(), 0.15 + 0.1 * x),
            ("battery_v".to_string(), 3.6 + 0.4 * x),
        ]),
        firmware_version: None,
        event_type: String::new(),
        properties: BTreeMap::new(),
    }
}

fn bench(c: &mut Criterion) {
    let Ok(dylib) = std::env::var("ORT_DYLIB_PATH") else {
        eprintln!("ORT_DYLIB_PATH is not set; skipping the inference benchmark");
        return;
    };
    let model = std::env::var_os("PULSE_MODEL_PATH").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../processor/model/anomaly.onnx"),
        PathBuf::from,
    );
    let (device, group_name) = match std::env::var("PULSE_BENCH_DEVICE").as_deref() {
        Ok("cuda") => (ExecutionProvider::CudaRequired, "inference_cuda"),
        _ => (ExecutionProvider::Cpu, "inference_cpu"),
    };
    let scorer = match Scorer::load(dylib.as_ref(), &model, device, 1) {
        Ok(s) => s,
        Err(e) => panic!("cannot load the model: {e}"),
    };
    let events: Vec<Event> = (0..1024).map(event).collect();
    let history = Features::default();
    let mut group = c.benchmark_group(group_name);
    for batch in [1usize, 64, 1024] {
        let refs: Vec<(&Event, &Features)> =
            events[..batch].iter().map(|e| (e, &history)).collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &refs, |b, refs| {
            b.iter(|| scorer.score(refs).map(|s| s.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

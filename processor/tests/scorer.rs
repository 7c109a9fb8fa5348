//! The scorer against the real ONNX Runtime and the shipped model: a healthy
//! reading scores under the model's threshold, a wild one over it, a batch
//! scores each row as it would alone, and `cuda-required` refuses to start
//! where the CUDA provider cannot load. Run through `./dev test`.

use std::collections::BTreeMap;
use std::path::Path;

use pulse_common::event::Event;
use pulse_common::schemas::EventKind;
use pulse_processor::score::scorer::{ExecutionProvider, Scorer};
use pulse_processor::state::device::Features;
use pulse_testkit::Stack;

fn telemetry(temperature: f64, humidity: f64, vibration: f64, battery: f64) -> Event {
    Event {
        kind: EventKind::Telemetry,
        event_id: "e".into(),
        tenant_id: "t".into(),
        source_id: "d".into(),
        event_time_ms: 0,
        readings: BTreeMap::from([
            ("temperature_c".to_string(), temperature),
            ("humidity_pct".to_string(), humidity),
            ("vibration_g".to_string(), vibration),
            ("battery_v".to_string(), battery),
        ]),
        firmware_version: None,
        event_type: String::new(),
        properties: BTreeMap::new(),
    }
}

/// A device history in which the event sits `z` standard deviations from
/// the device's mean on every z-scored reading.
fn history(z: f64) -> Features {
    let mut names =
        ["humidity_pct.z", "temperature_c.z", "vibration_g.z"].map(std::sync::Arc::from);
    names.sort();
    Features {
        seq: 50,
        values: vec![z; names.len()],
        names: names.to_vec(),
    }
}

fn load(stack: &Stack, provider: ExecutionProvider) -> anyhow::Result<Scorer> {
    Scorer::load(
        Path::new(&stack.ort_dylib),
        Path::new(&stack.model_path),
        provider,
        1,
    )
}

#[test]
#[ignore = "needs ONNX Runtime: run through ./dev test"]
fn scores_healthy_under_and_wild_over_the_threshold_in_any_batch() {
    let stack = Stack::from_env();
    let scorer = load(&stack, ExecutionProvider::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let healthy = telemetry(21.0, 55.0, 0.2, 3.8);
    let wild = telemetry(95.0, 5.0, 4.0, 2.1);
    let (calm, far) = (history(0.1), history(9.0));

    let alone: Vec<f32> = [(&healthy, &calm), (&wild, &far)]
        .iter()
        .map(|pair| scorer.score(&[*pair]).unwrap_or_else(|e| panic!("{e}"))[0].score)
        .collect();
    let batch = scorer
        .score(&[(&healthy, &calm), (&wild, &far)])
        .unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(batch.len(), 2);
    assert!(
        alone[0] < scorer.threshold && !batch[0].is_anomaly,
        "healthy {alone:?} vs {}",
        scorer.threshold
    );
    assert!(
        alone[1] > scorer.threshold && batch[1].is_anomaly,
        "wild {alone:?} vs {}",
        scorer.threshold
    );
    for (one, in_batch) in alone.iter().zip(&batch) {
        assert!(
            (one - in_batch.score).abs() < 1e-6,
            "{alone:?} vs {batch:?}"
        );
    }
    assert!(scorer
        .score(&[])
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
}

#[test]
#[ignore = "needs ONNX Runtime: run through ./dev test"]
fn cuda_required_fails_where_the_runtime_has_no_cuda_provider() {
    let stack = Stack::from_env();
    // The project's own runtime is the CPU build from PyPI: it has no CUDA
    // provider, so `cuda` falls back and `cuda-required` must refuse.
    assert!(load(&stack, ExecutionProvider::Cuda).is_ok());
    let refused = load(&stack, ExecutionProvider::CudaRequired);
    assert!(
        refused.is_err(),
        "cuda-required loaded on a CPU-only runtime"
    );
}

//! Prometheus metrics of the worker.

use std::sync::LazyLock;

use prometheus::{
    register_gauge_vec, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, GaugeVec, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec,
};

pub static JOBS_RUNNING: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("pulse_worker_jobs_running", "Jobs this worker is running")
        .expect("metric registers once")
});

pub static JOBS_ENDED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "pulse_worker_jobs_ended_total",
        "Jobs this worker ended, by kind and state (succeeded, failed, canceled)",
        &["kind", "state"]
    )
    .expect("metric registers once")
});

pub static ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "pulse_worker_attempts_total",
        "Attempts started, by kind and how they ended (ok, error, canceled, abandoned)",
        &["kind", "outcome"]
    )
    .expect("metric registers once")
});

pub static OCR_PROVIDER: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "pulse_worker_ocr_execution_provider",
        "1 for the execution provider each OCR model runs on (cuda or cpu)",
        &["model", "provider"]
    )
    .expect("metric registers once")
});

pub static OCR_INSTANCES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "pulse_worker_ocr_instances",
        "Copies of each OCR model that run side by side",
        &["model"]
    )
    .expect("metric registers once")
});

pub static OCR_MAX_BATCH: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "pulse_worker_ocr_max_batch",
        "Most inputs in one batch of each OCR model",
        &["model"]
    )
    .expect("metric registers once")
});

pub static OCR_MAX_DELAY: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "pulse_worker_ocr_max_queue_delay_seconds",
        "Longest an input waits to be batched, for each OCR model",
        &["model"]
    )
    .expect("metric registers once")
});

pub static OCR_BATCH_SIZE: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "pulse_worker_ocr_batch_size",
        "Inputs in each batch an OCR model ran",
        &["model"],
        vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    )
    .expect("metric registers once")
});

pub static OCR_QUEUE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "pulse_worker_ocr_queue_seconds",
        "Time an input waited for its OCR model's batch",
        &["model"],
        vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0]
    )
    .expect("metric registers once")
});

pub static OCR_SNAPSHOTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "pulse_worker_ocr_snapshots_total",
        "Snapshots this worker read"
    )
    .expect("metric registers once")
});

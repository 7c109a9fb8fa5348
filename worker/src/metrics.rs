//! Prometheus metrics of the worker.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, register_int_gauge, IntCounterVec, IntGauge};

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

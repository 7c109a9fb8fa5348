//! Prometheus metrics of the query API.

use std::sync::LazyLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec,
    IntGauge,
};

pub static WS_CLIENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("pulse_query_ws_clients", "Connected WebSocket clients")
        .expect("metric registers once")
});

pub static CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "pulse_query_cache_total",
        "Cacheable reads answered from the cache (hit) or from ClickHouse (miss)",
        &["result"]
    )
    .expect("metric registers once")
});

pub static RESULTS_FANNED_OUT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "pulse_query_results_fanned_out_total",
        "Results read from the results topic and offered to WebSocket clients"
    )
    .expect("metric registers once")
});

pub static AUDIT_RECORDS_LOST: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "pulse_query_audit_records_lost_total",
        "Audit records given up: refused by ClickHouse for good, or not taken by shutdown"
    )
    .expect("metric registers once")
});

pub static SCHEDULED_JOBS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "pulse_query_scheduled_jobs_total",
        "Jobs of report schedules queued by this instance"
    )
    .expect("metric registers once")
});

pub static JOBS_SUBMITTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "pulse_query_jobs_submitted_total",
        "Jobs queued, through POST /v1/jobs or by a schedule, by kind",
        &["kind"]
    )
    .expect("metric registers once")
});

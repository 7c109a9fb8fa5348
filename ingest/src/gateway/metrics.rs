//! Prometheus metrics of the gateway.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    Histogram, IntCounter, IntCounterVec, IntGauge,
};

pub static EVENTS_ACCEPTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "pulse_ingest_events_accepted_total",
        "Events acknowledged by Kafka and answered 202"
    )
    .expect("metric registers once")
});

pub static EVENTS_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "pulse_ingest_events_rejected_total",
        "Events rejected, by reason",
        &["reason"]
    )
    .expect("metric registers once")
});

pub static REQUEST_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "pulse_ingest_request_seconds",
        "Time from request to response of POST /v1/events",
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registers once")
});

pub static PRODUCE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "pulse_ingest_kafka_produce_seconds",
        "Time for Kafka to acknowledge all events of a request",
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registers once")
});

pub static EVENTS_IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "pulse_ingest_events_in_flight",
        "Events waiting for Kafka's acknowledgement"
    )
    .expect("metric registers once")
});

pub static BYTES_IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "pulse_ingest_bytes_in_flight",
        "Request bytes whose events wait for Kafka"
    )
    .expect("metric registers once")
});

pub static FILES_STORED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "pulse_ingest_files_stored_total",
        "Files stored by POST /v1/files (a retried upload of a stored file not counted)"
    )
    .expect("metric registers once")
});

pub static FILE_BYTES_STORED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "pulse_ingest_file_bytes_stored_total",
        "Bytes of the files stored by POST /v1/files"
    )
    .expect("metric registers once")
});

pub static FILES_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "pulse_ingest_files_rejected_total",
        "Uploads to POST /v1/files refused, by reason",
        &["reason"]
    )
    .expect("metric registers once")
});

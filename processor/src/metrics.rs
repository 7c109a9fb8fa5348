//! Prometheus metrics of the processor.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    Histogram, IntCounter, IntCounterVec, IntGauge,
};

pub(crate) static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "pulse_processor_events_total",
        "Events handled, by outcome (stored, dead_lettered, duplicate)",
        &["outcome"]
    )
    .expect("metric registers once")
});

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub(crate) static INFERENCE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "pulse_processor_inference_seconds",
        "Model run time per batch",
        BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

pub(crate) static SINK_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "pulse_processor_clickhouse_insert_seconds",
        "ClickHouse insert time per batch",
        BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

pub(crate) static BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "pulse_processor_batch_events",
        "Events per processed batch",
        vec![1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0]
    )
    .expect("metric registers once")
});

pub(crate) static STATE_RECORDS_SKIPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "pulse_processor_state_records_skipped_total",
        "Changelog records that could not be read during a restore (their device starts afresh)"
    )
    .expect("metric registers once")
});

pub(crate) static STATE_DEVICES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "pulse_processor_state_devices",
        "Devices whose state this instance holds"
    )
    .expect("metric registers once")
});

pub(crate) static DECODE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "pulse_processor_decode_seconds",
        "Time per batch to decode records and update device state",
        BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

pub(crate) static COMMIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "pulse_processor_transaction_seconds",
        "Time per batch from opening its Kafka transaction (results, states, offsets) to committing it; the ClickHouse insert runs meanwhile",
        BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

pub(crate) static GATHER_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "pulse_processor_gather_seconds",
        "Time to gather a batch from the consumer, including waiting for records",
        BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

//! The registry's own Prometheus metrics (HTTP request metrics come from
//! `pulse_common::ops`), served on the metrics listener.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, IntCounterVec};

/// Log records a replica did not apply, by reason (`oversize`,
/// `too_many_subjects`, `too_many_versions`, `unparsable`, `malformed`).
/// Non-zero means the log holds more than this replica's limits allow.
pub static SKIPPED_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "pulse_registry_log_records_skipped_total",
        "Registry log records skipped on replay, by reason",
        &["reason"]
    )
    .expect("metric registers once")
});

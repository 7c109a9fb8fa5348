//! What the Pulse services share: the event model and its Avro schemas, the
//! settings and clients for Kafka and ClickHouse, and the operational endpoints
//! (`/healthz`, `/readyz`, `/metrics`) with logging and shutdown handling.

/// The text of `schemas/clickhouse/queries/<name>.sql`: every statement
/// Pulse sends is a file there, so that one test runs each on both
/// ClickHouse versions (`schemas/tests/test_statements.py`). For crates one
/// level below the repository's root, as all of Pulse's are.
#[macro_export]
macro_rules! statement {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/clickhouse/queries/",
            $name,
            ".sql"
        ))
    };
}

pub mod clickhouse;
pub mod clock;
pub mod config;
pub mod contract;
pub mod credentials;
pub mod event;
pub mod files;
pub mod jobs;
pub mod json_avro;
pub mod kafka;
pub mod logging;
pub mod onnx;
pub mod ops;
pub mod retry;
pub mod schemas;
pub mod scored;
pub mod shutdown;

//! What the Pulse services share: the event model and its Avro schemas, the
//! settings and clients for Kafka and ClickHouse, and the operational endpoints
//! (`/healthz`, `/readyz`, `/metrics`) with logging and shutdown handling.

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
pub mod ops;
pub mod retry;
pub mod schemas;
pub mod scored;
pub mod shutdown;

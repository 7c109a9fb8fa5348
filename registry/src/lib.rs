//! A Confluent-compatible schema registry whose state lives in a compacted
//! Kafka topic, so several instances agree and a restart loses nothing: the
//! log codec (`log`), the state machine replayed from it (`state`), the
//! store that reads and appends the topic (`store`), and the HTTP API
//! (`api`, with `access`, `limits` and `version`).

pub mod access;
pub mod api;
pub mod compat;
pub mod error;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod state;
pub mod store;
pub mod version;

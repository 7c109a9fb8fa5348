//! A Confluent-compatible schema registry whose state lives in a compacted
//! Kafka topic, so several instances agree and a restart loses nothing.

pub mod access;
pub mod api;
pub mod compat;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod state;
pub mod store;

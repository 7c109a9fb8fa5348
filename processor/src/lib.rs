//! Pulse processor: consumes events, keeps per-device state, scores
//! telemetry with an ONNX model and writes scored events to ClickHouse and
//! the results topic. Its modules follow a batch through its stages:
//!
//! - [`source`]: the topics, the partitions this instance owns, and whether
//!   a batch's delivery is still under way when they move;
//! - [`decode`]: records in the Confluent wire format to events;
//! - [`state`]: device state, its changelog, and its restore;
//! - [`score`]: the model's input and the ONNX scorer with its execution
//!   provider;
//! - [`sink`]: ClickHouse (migrations, stored offsets), the results, and the
//!   Kafka transaction that delivers a batch;
//! - [`pipeline`]: the loop that runs them.

pub mod decode;
pub(crate) mod metrics;
pub mod pipeline;
pub mod score;
pub mod sink;
pub mod source;
pub mod state;

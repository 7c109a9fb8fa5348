//! Pulse processor: consumes events, scores telemetry with an ONNX model and
//! writes scored events to ClickHouse and the results topic.

pub mod delivery;
pub mod metrics;
pub mod migrations;
pub mod pipeline;
pub mod scorer;

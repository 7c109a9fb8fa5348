//! Pulse processor: consumes events, keeps per-device state, scores
//! telemetry with an ONNX model and writes scored events to ClickHouse and
//! the results topic.

pub mod assignment;
pub mod changelog;
pub mod decoder;
pub mod delivery;
pub mod dispatch;
pub mod in_flight;
pub mod metrics;
pub mod migrations;
pub mod model_input;
pub mod pipeline;
pub mod results;
pub mod scorer;
pub mod state;
pub mod state_store;
pub mod stored;
pub mod topics;
pub mod wire_event;

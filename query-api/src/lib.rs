//! Pulse query API: scored events over HTTP and live over WebSocket.

pub mod metrics;
pub mod routes;
pub mod store;
pub mod stream;

//! Prometheus metrics of the query API.

use std::sync::LazyLock;

use prometheus::{register_int_gauge, IntGauge};

pub static WS_CLIENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("pulse_query_ws_clients", "Connected WebSocket clients")
        .expect("metric registers once")
});

//! Live results for WebSocket clients: one Kafka consumer per API instance
//! reads the results topic and fans each record out to every client, which
//! keeps those matching its filter.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use pulse_common::config::KafkaClient;
use pulse_common::kafka::client_config;
use pulse_common::scored::ScoredEvent;
use pulse_common::shutdown::Shutdown;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::auth::{Caller, Role};
use crate::extract::Params;
use crate::metrics;

/// A consumer of every partition of `topic`, positioned at the current end,
/// so everything produced after this returns is delivered. Each API instance
/// reads all results itself: no consumer group.
pub async fn consumer_from_now(kafka: &KafkaClient, topic: &str) -> anyhow::Result<StreamConsumer> {
    let mut cfg = client_config(kafka);
    // Results are written in transactions: only committed ones are shown.
    cfg.set("group.id", "pulse-query-api")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let consumer: StreamConsumer = cfg.create()?;
    let timeout = Duration::from_secs(10);
    let topic = topic.to_string();
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                let (_, high) = consumer.fetch_watermarks(&topic, p.id(), timeout)?;
                tpl.add_partition_offset(&topic, p.id(), Offset::Offset(high))?;
            }
        }
        if tpl.count() == 0 {
            anyhow::bail!("topic {topic} has no partitions");
        }
        consumer.assign(&tpl)?;
        Ok(())
    })?;
    Ok(consumer)
}

/// Reads the results topic into `tx` until shutdown.
pub async fn fan_out(
    consumer: StreamConsumer,
    tx: broadcast::Sender<Arc<ScoredEvent>>,
    shutdown: Shutdown,
) {
    loop {
        let msg = tokio::select! {
            _ = shutdown.requested() => return,
            m = consumer.recv() => m,
        };
        match msg {
            Ok(m) => match m.payload().map(serde_json::from_slice::<ScoredEvent>) {
                Some(Ok(event)) => {
                    // No receivers is fine: nobody is watching.
                    let _ = tx.send(Arc::new(event));
                }
                Some(Err(e)) => {
                    tracing::warn!(offset = m.offset(), error = %e, "skipping unreadable result")
                }
                None => {}
            },
            Err(e) => tracing::warn!(error = %e, "results consumer error"),
        }
    }
}

/// What a client asks to see, within its tenant.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    /// Taken from the credential; a client cannot set it.
    #[serde(skip)]
    #[param(ignore)]
    pub tenant_id: String,
    /// The token, for browsers, which cannot send headers when opening a WebSocket.
    #[serde(default, rename = "access_token")]
    _access_token: Option<String>,
    /// Only these sources (comma-separated); all when absent.
    pub source_id: Option<String>,
    /// Only events scoring at least this.
    pub min_score: Option<f32>,
}

impl Filter {
    fn matches(&self, e: &ScoredEvent) -> bool {
        e.tenant_id == self.tenant_id
            && self
                .source_id
                .as_deref()
                .is_none_or(|s| s.split(',').any(|s| s == e.source_id))
            && self.min_score.is_none_or(|m| e.score >= m)
    }
}

/// Scored events of the caller's tenant as JSON text messages, as they are
/// processed. A client more than the buffer behind gets
/// `{"type":"lagged","skipped":N}` and continues from the newest.
#[utoipa::path(get, path = "/v1/stream", tag = "live", params(Filter),
    responses(
        (status = 101, description = "WebSocket of scored events"),
        (status = 400, body = crate::routes::ErrorBody), (status = 401, body = crate::routes::ErrorBody),
        (status = 403, body = crate::routes::ErrorBody),
    ))]
pub async fn upgrade(
    State(live): State<Live>,
    caller: Caller,
    Params(mut filter): Params<Filter>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(denied) = caller.require(&[Role::Dashboard, Role::Admin]) {
        return denied.into_response();
    }
    filter.tenant_id = caller.tenant;
    let rx = live.tx.subscribe();
    ws.on_upgrade(move |socket| serve_client(socket, rx, filter, live.heartbeat))
}

/// The live side of the API: results from this instance's one consumer, and
/// how often clients are pinged.
#[derive(Clone)]
pub struct Live {
    pub tx: broadcast::Sender<Arc<ScoredEvent>>,
    pub heartbeat: Duration,
}

/// Sends matching results to one client. It is pinged every `heartbeat`; a
/// client that has not answered (any message counts) for three heartbeats
/// is gone and is dropped, so dead connections do not hold buffers.
async fn serve_client(
    mut socket: WebSocket,
    mut rx: broadcast::Receiver<Arc<ScoredEvent>>,
    filter: Filter,
    heartbeat: Duration,
) {
    metrics::WS_CLIENTS.inc();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if last_heard.elapsed() > heartbeat * 3 {
                    tracing::info!("WebSocket client stopped answering; dropping it");
                    break;
                }
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            event = rx.recv() => match event {
                Ok(e) if filter.matches(&e) => {
                    let Ok(text) = serde_json::to_string(&*e) else { continue };
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                // The client fell behind the buffer: tell it and go on from now.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let note = serde_json::json!({"type": "lagged", "skipped": n}).to_string();
                    if socket.send(Message::Text(note.into())).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => last_heard = tokio::time::Instant::now(),
            },
        }
    }
    metrics::WS_CLIENTS.dec();
}

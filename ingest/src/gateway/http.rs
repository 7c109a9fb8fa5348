//! `POST /v1/events`: validate, encode, produce, then answer.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use pulse_common::config::Topics;
use serde_json::json;

use super::encode::Encoders;
use super::metrics;
use super::parse::{parse_body, EventError, TimeBounds};
use super::produce::{EventProducer, Outgoing};

pub struct Gateway {
    pub topics: Topics,
    pub encoders: Encoders,
    pub producer: EventProducer,
    pub max_event_age: Duration,
    pub max_clock_skew: Duration,
    /// Suggested wait for a client told 503.
    pub retry_after: Duration,
}

pub fn router(gateway: Arc<Gateway>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(gateway)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn rejected(status: StatusCode, reason: &str, errors: Vec<EventError>) -> Response {
    metrics::EVENTS_REJECTED
        .with_label_values(&[reason])
        .inc_by(errors.len().max(1) as u64);
    (status, Json(json!({"error": reason, "errors": errors}))).into_response()
}

async fn post_events(
    State(gw): State<Arc<Gateway>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = handle(&gw, body).await;
    metrics::REQUEST_SECONDS.observe(started.elapsed().as_secs_f64());
    response
}

async fn handle(
    gw: &Gateway,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return rejected(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                vec![EventError {
                    index: 0,
                    event_id: None,
                    field: "(body)".into(),
                    reason: e.body_text(),
                }],
            )
        }
        Err(e) => {
            return rejected(
                e.status(),
                "unreadable_body",
                vec![EventError {
                    index: 0,
                    event_id: None,
                    field: "(body)".into(),
                    reason: e.body_text(),
                }],
            )
        }
    };
    let bounds = TimeBounds {
        now_ms: now_ms(),
        max_age_ms: gw.max_event_age.as_millis() as i64,
        max_skew_ms: gw.max_clock_skew.as_millis() as i64,
    };
    let events = match parse_body(&body, bounds) {
        Ok(events) => events,
        Err(errors) => {
            let status = if errors.iter().any(|e| e.field == "(body)") {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            return rejected(status, "invalid_events", errors);
        }
    };
    let mut payloads = Vec::with_capacity(events.len());
    for event in &events {
        match gw.encoders.encode(event).await {
            Ok(p) => payloads.push(p),
            Err(e) => {
                tracing::warn!(error = %e, "schema registry unavailable");
                return unavailable(gw, "registry_unavailable", &e.to_string());
            }
        }
    }
    let topics: Vec<String> = events.iter().map(|e| gw.topics.events(e.kind)).collect();
    let records = events
        .iter()
        .zip(payloads)
        .zip(&topics)
        .map(|((e, payload), topic)| Outgoing {
            topic,
            key: &e.key,
            payload,
        })
        .collect();
    let produce_started = Instant::now();
    if let Err(e) = gw.producer.send_all(records).await {
        tracing::warn!(error = %e, "Kafka did not acknowledge a request's events");
        return unavailable(gw, "kafka_unavailable", &e.to_string());
    }
    metrics::PRODUCE_SECONDS.observe(produce_started.elapsed().as_secs_f64());
    metrics::EVENTS_ACCEPTED.inc_by(events.len() as u64);
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    (
        StatusCode::ACCEPTED,
        Json(json!({"accepted": events.len(), "event_ids": ids})),
    )
        .into_response()
}

/// 503 with Retry-After: some events of the request may have been written,
/// so the client retries the whole request; event ids make that safe.
fn unavailable(gw: &Gateway, reason: &str, detail: &str) -> Response {
    metrics::EVENTS_REJECTED.with_label_values(&[reason]).inc();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, gw.retry_after.as_secs().max(1).to_string())],
        Json(json!({"error": reason, "message": detail, "retry": "retry the whole request with the same event ids"})),
    )
        .into_response()
}

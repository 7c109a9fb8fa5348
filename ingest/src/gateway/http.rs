//! `POST /v1/events`: authenticate, validate, encode, produce, then answer.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pulse_common::clock::now_ms;
use pulse_common::config::Topics;
use pulse_common::ops::Readiness;
use serde_json::json;
use tokio::sync::Semaphore;

use super::auth::{Credentials, Principal, Refusal};
use super::avro_body::{parse_avro, AVRO_CONTENT_TYPE};
use super::encode::Encoders;
use super::metrics;
use super::openapi::TimeWindow;
use super::parse::{parse_body, Claims, EventError, Layout, TimeBounds, ValidEvent};
use super::produce::{EventProducer, Outgoing};

pub struct Gateway {
    pub topics: Topics,
    pub encoders: Encoders,
    pub producer: EventProducer,
    /// None: authentication is off and events name their own tenant.
    pub credentials: Option<Arc<Credentials>>,
    pub max_event_age: Duration,
    pub max_clock_skew: Duration,
    /// Bounds events waiting for Kafka; a request that cannot get its share
    /// within `admission_timeout` is answered 503.
    pub in_flight: Semaphore,
    pub admission_timeout: Duration,
    /// Suggested wait for a client told 503.
    pub retry_after: Duration,
    /// The largest record each event topic takes, from its
    /// `max.message.bytes` (see [`RecordLimits`]).
    pub record_limits: RecordLimits,
}

/// Bytes a record batch of one record adds to its key and value (batch
/// header, record header and varints), rounded up.
const RECORD_OVERHEAD: usize = 128;

/// The producer's own `message.max.bytes` (librdkafka's default).
const PRODUCER_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The largest record each topic accepts. An event over it is refused
/// before anything of its request is produced: no retry could write it,
/// and sent, it would fail the batch the producer put it in with others.
#[derive(Debug, Clone, Default)]
pub struct RecordLimits(std::collections::HashMap<String, usize>);

impl RecordLimits {
    /// From each topic's `max.message.bytes`.
    pub fn new(max_message_bytes: std::collections::HashMap<String, usize>) -> Self {
        Self(max_message_bytes)
    }

    /// Why a record of `key` and `payload` cannot go to `topic`, if so.
    fn refuse(&self, topic: &str, key: &str, payload: &[u8]) -> Option<String> {
        let limit = self
            .0
            .get(topic)
            .copied()
            .unwrap_or(PRODUCER_MAX_MESSAGE_BYTES)
            .min(PRODUCER_MAX_MESSAGE_BYTES);
        let size = key.len() + payload.len() + RECORD_OVERHEAD;
        (size > limit).then(|| {
            format!("the event's record of about {size} bytes is over topic {topic}'s limit of {limit} (max.message.bytes)")
        })
    }
}

impl Gateway {
    /// The accepted range of event times, as of now.
    pub fn time_bounds(&self) -> TimeBounds {
        TimeBounds {
            now_ms: now_ms(),
            max_age_ms: self.max_event_age.as_millis() as i64,
            max_skew_ms: self.max_clock_skew.as_millis() as i64,
        }
    }
}

/// The gateway once start-up has built it. The routes are served from the
/// start, so that `/readyz` and `/metrics` answer while Kafka or the
/// registry are still awaited; until then an event is answered 503 with
/// what start-up waits for.
#[derive(Clone)]
pub struct Slot {
    gateway: Arc<OnceLock<Arc<Gateway>>>,
    readiness: Readiness,
}

impl Slot {
    pub fn new(readiness: Readiness) -> Self {
        Self {
            gateway: Arc::default(),
            readiness,
        }
    }

    /// Puts the built gateway in; the first one stays.
    pub fn fill(&self, gateway: Arc<Gateway>) {
        let _ = self.gateway.set(gateway);
    }

    fn get(&self) -> Result<&Arc<Gateway>, Rejected> {
        self.gateway.get().ok_or_else(|| {
            let waiting = self
                .readiness
                .waiting_for()
                .unwrap_or_else(|| "start-up".into());
            Rejected {
                retry_after: Some(Duration::from_secs(1)),
                ..Rejected::body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "starting",
                    format!("not ready yet: waiting for {waiting}"),
                )
            }
        })
    }
}

pub fn router(slot: Slot, max_body_bytes: usize, window: TimeWindow) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/openapi.json", get(move || super::openapi::json(window)))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(slot)
}

/// A refused request: status, the reason counted in metrics, and the events' errors.
pub(crate) struct Rejected {
    pub status: StatusCode,
    pub reason: &'static str,
    pub errors: Vec<EventError>,
    pub retry_after: Option<Duration>,
}

impl Rejected {
    fn new(status: StatusCode, reason: &'static str, errors: Vec<EventError>) -> Self {
        Self {
            status,
            reason,
            errors,
            retry_after: None,
        }
    }

    pub(crate) fn body(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::new(status, reason, vec![EventError::body(message)])
    }
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        self.counted_in(&metrics::EVENTS_REJECTED)
    }
}

impl Rejected {
    /// The answer, with the refusal counted in `rejected` by its reason.
    pub(crate) fn counted_in(self, rejected: &prometheus::IntCounterVec) -> Response {
        rejected
            .with_label_values(&[self.reason])
            .inc_by(self.errors.len().max(1) as u64);
        let body = Json(json!({"error": self.reason, "errors": self.errors}));
        let mut response = (self.status, body).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = secs.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

async fn post_events(
    State(slot): State<Slot>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let handled = match slot.get() {
        Ok(gw) => handle(gw, &headers, body).await,
        Err(starting) => Err(starting),
    };
    let response = match handled {
        Ok(r) => r,
        Err(rejected) => rejected.into_response(),
    };
    metrics::REQUEST_SECONDS.observe(started.elapsed().as_secs_f64());
    response
}

fn layout(headers: &HeaderMap) -> Result<Option<Layout>, Rejected> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    match mime {
        "application/json" | "" => Ok(Some(Layout::Json)),
        "application/x-ndjson" | "application/ndjson" => Ok(Some(Layout::Ndjson)),
        AVRO_CONTENT_TYPE => Ok(None),
        other => Err(Rejected::body(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type {other} is not accepted; send application/json, application/x-ndjson or {AVRO_CONTENT_TYPE}"),
        )),
    }
}

pub(crate) fn refused(r: Refusal) -> Rejected {
    let status = match r {
        Refusal::Missing | Refusal::Unknown => StatusCode::UNAUTHORIZED,
        Refusal::RateLimited { .. } | Refusal::BatchTooLarge { .. } => {
            StatusCode::TOO_MANY_REQUESTS
        }
    };
    let reason = match r {
        Refusal::Missing | Refusal::Unknown => "unauthenticated",
        _ => "rate_limited",
    };
    let retry_after = match &r {
        Refusal::RateLimited { retry_after, .. } => Some(*retry_after),
        _ => None,
    };
    Rejected {
        retry_after,
        ..Rejected::body(status, reason, r.to_string())
    }
}

async fn handle(
    gw: &Gateway,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Rejected> {
    let principal: Option<Arc<Principal>> = match &gw.credentials {
        Some(c) => Some(c.authenticate(headers).map_err(refused)?),
        None => None,
    };
    let layout = layout(headers)?;
    let body = body.map_err(|e| {
        let reason = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "unreadable_body"
        };
        Rejected::body(e.status(), reason, e.body_text())
    })?;
    let bounds = gw.time_bounds();
    let claims = principal.as_deref().map(|p| Claims {
        tenant: &p.tenant,
        device: p.device.as_deref(),
    });
    let parsed = match layout {
        Some(layout) => parse_body(&body, layout, bounds, claims),
        None => parse_avro(&body, &gw.encoders, bounds, claims)
            .map(|e| vec![e])
            .map_err(|e| vec![e]),
    };
    let events = parsed.map_err(|errors| {
        if errors.iter().any(|e| e.forbidden) {
            Rejected::new(StatusCode::FORBIDDEN, "forbidden", errors)
        } else if errors.iter().any(|e| e.field.starts_with('(')) {
            Rejected::new(StatusCode::BAD_REQUEST, "malformed_body", errors)
        } else {
            Rejected::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_events", errors)
        }
    })?;
    if let Some(p) = &principal {
        p.admit(events.len()).map_err(refused)?;
    }
    produce(gw, &events, body.len()).await?;
    metrics::EVENTS_ACCEPTED.inc_by(events.len() as u64);
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": events.len(), "event_ids": ids})),
    )
        .into_response())
}

/// Encodes and produces the events, holding their share of the in-flight
/// allowance until Kafka acknowledged them all.
pub(crate) async fn produce(
    gw: &Gateway,
    events: &[ValidEvent],
    bytes: usize,
) -> Result<(), Rejected> {
    let permits = u32::try_from(events.len()).unwrap_or(u32::MAX);
    let _admitted = tokio::time::timeout(gw.admission_timeout, gw.in_flight.acquire_many(permits))
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| unavailable(gw, "overloaded", "too many events are waiting for Kafka"))?;
    let _gauges = InFlight::enter(events.len(), bytes);
    let mut payloads = Vec::with_capacity(events.len());
    for event in events {
        let payload = gw.encoders.encode(event).await.map_err(|e| {
            tracing::warn!(error = %e, "schema registry unavailable");
            unavailable(gw, "registry_unavailable", &e.to_string())
        })?;
        payloads.push(payload);
    }
    let topics: Vec<String> = events.iter().map(|e| gw.topics.events(e.kind)).collect();
    let oversized: Vec<EventError> = events
        .iter()
        .zip(&payloads)
        .zip(&topics)
        .enumerate()
        .filter_map(|(index, ((e, payload), topic))| {
            let reason = gw.record_limits.refuse(topic, &e.key, payload)?;
            Some(EventError {
                index,
                event_id: Some(e.event_id.clone()),
                ..EventError::body(reason)
            })
        })
        .collect();
    if !oversized.is_empty() {
        return Err(Rejected::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "record_too_large",
            oversized,
        ));
    }
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
    let started = Instant::now();
    gw.producer.send_all(records).await.map_err(|e| {
        tracing::warn!(error = %e, "Kafka did not acknowledge a request's events");
        unavailable(gw, "kafka_unavailable", &e.to_string())
    })?;
    metrics::PRODUCE_SECONDS.observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// 503 with Retry-After: some events of the request may have been written,
/// so the client retries the whole request; event ids make that safe.
fn unavailable(gw: &Gateway, reason: &'static str, detail: &str) -> Rejected {
    Rejected {
        retry_after: Some(gw.retry_after),
        ..Rejected::body(
            StatusCode::SERVICE_UNAVAILABLE,
            reason,
            format!("{detail}; retry the whole request with the same event ids"),
        )
    }
}

/// Counts a request's events and bytes in the in-flight gauges while alive.
struct InFlight {
    events: i64,
    bytes: i64,
}

impl InFlight {
    fn enter(events: usize, bytes: usize) -> Self {
        let me = Self {
            events: events as i64,
            bytes: bytes as i64,
        };
        metrics::EVENTS_IN_FLIGHT.add(me.events);
        metrics::BYTES_IN_FLIGHT.add(me.bytes);
        me
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::EVENTS_IN_FLIGHT.sub(self.events);
        metrics::BYTES_IN_FLIGHT.sub(self.bytes);
    }
}

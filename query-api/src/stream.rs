//! WebSocket `/v1/stream`: live results for dashboards, each client with its
//! filter, its heartbeat and its place in the results topic (`crate::fanout`).
//!
//! A stream lasts no longer than its credential: at the token's `exp` the
//! API sends a close frame (code [`TOKEN_EXPIRED`], reason "token expired")
//! and the client reconnects with a fresh token. Clients only ever send
//! small messages (pongs, closes), so incoming messages are capped
//! (`--ws-max-message-bytes`) and a larger one ends the connection; each
//! tenant has at most `--ws-max-streams-per-tenant` streams open
//! (`crate::stream_slots`), and one more is refused with 429.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use pulse_common::scored::ScoredEvent;
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::Params;
use crate::fanout::{Feed, Position, Positioned};
use crate::job_feed::{JobFeed, JobNote};
use crate::metrics;
use crate::stream_slots::{Slot, StreamSlots};

/// The close code of a stream whose token expired (4000-4999 are for
/// applications): reconnect with a fresh token.
pub const TOKEN_EXPIRED: u16 = 4001;

/// What a client asks to see, within its tenant.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    /// Taken from the credential; a client cannot set it.
    #[serde(skip)]
    #[param(ignore)]
    pub tenant_id: String,
    /// The token, for browsers, which cannot send headers when opening a
    /// WebSocket; accepted on this route only, and never logged.
    #[serde(default, rename = "access_token")]
    _access_token: Option<String>,
    /// Only these sources (comma-separated); all when absent.
    pub source_id: Option<String>,
    /// Only these event types (comma-separated): an app event's `event_type`,
    /// or `telemetry` for telemetry; all when absent.
    pub event_type: Option<String>,
    /// Only events scoring at least this.
    pub min_score: Option<f32>,
    /// The `cursor` of the last message received before a disconnect: the
    /// results after it that are still in the instance's window come first.
    #[param(pattern = r"^([0-9]{1,9}\.[0-9]{1,18}(_[0-9]{1,9}\.[0-9]{1,18})*)?$")]
    pub resume: Option<String>,
    /// Also the tenant's job transitions, as `{"type":"job","job":{...}}`
    /// (the job as `GET /v1/jobs/{job_id}` shows it), from the connection on.
    pub jobs: Option<bool>,
}

impl Filter {
    fn matches(&self, e: &ScoredEvent) -> bool {
        e.tenant_id == self.tenant_id
            && self
                .source_id
                .as_deref()
                .is_none_or(|s| s.split(',').any(|s| s == e.source_id))
            && self.event_type.as_deref().is_none_or(|t| {
                let own = if &*e.kind == "telemetry" {
                    "telemetry"
                } else {
                    e.event_type.as_str()
                };
                t.split(',').any(|t| t == own)
            })
            && self.min_score.is_none_or(|m| e.score >= m)
    }
}

/// Scored events of the caller's tenant as JSON text messages, as they are
/// processed, each with a `cursor` to resume from after a reconnect. A
/// client resuming from a position older than the window first gets
/// `{"type":"gap"}`. A client more than the buffer behind gets
/// `{"type":"lagged","skipped":N,"cursor":...}` and continues from the
/// newest; reconnecting with that cursor fetches what it skipped.
#[utoipa::path(get, path = "/v1/stream", tag = "live", params(Filter),
    responses(
        (status = 101, description = "WebSocket of scored events"),
        (status = 400, description = "Not a WebSocket upgrade (`field`: `upgrade`), or a bad parameter", body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 429, description = "The tenant has the most streams open that it may (`--ws-max-streams-per-tenant`)", body = ErrorBody),
    ))]
pub async fn upgrade(
    State(live): State<Live>,
    caller: Caller,
    Params(mut filter): Params<Filter>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(denied) = caller.require(&[Role::Dashboard, Role::Admin]) {
        return denied.into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return ApiError::bad_param("upgrade", e.body_text()).into_response(),
    };
    let expires_at = caller.expires_at_s.map(instant_of);
    filter.tenant_id = caller.tenant;
    let from = match filter.resume.as_deref().map(Position::decode) {
        None => None,
        Some(Some(p)) => Some(p),
        Some(None) => {
            let reason = "not a cursor sent by this API";
            return ApiError::bad_param("resume", reason).into_response();
        }
    };
    let Some((resumed, rx)) = live.feed.subscribe(from.as_ref()) else {
        return ApiError::Unavailable("live feed unavailable").into_response();
    };
    let Some(slot) = live.slots.take(&filter.tenant_id) else {
        let reason = format!(
            "tenant {} has {} streams open, the most it may; close one first",
            filter.tenant_id,
            live.slots.per_tenant()
        );
        return ApiError::TooMany(reason).into_response();
    };
    let jobs = filter.jobs.unwrap_or(false).then(|| live.jobs.subscribe());
    let client = Client {
        jobs,
        filter,
        position: resumed.position,
        heartbeat: live.heartbeat,
        expires_at,
        _slot: slot,
    };
    ws.max_message_size(live.max_message_bytes)
        .max_frame_size(live.max_message_bytes)
        .on_upgrade(move |socket| client.serve(socket, resumed.replay, resumed.gap, rx))
}

/// The moment of `exp` (seconds since the epoch) on the runtime's clock;
/// now, for one already past.
fn instant_of(exp_s: i64) -> tokio::time::Instant {
    let left_ms = exp_s.saturating_mul(1000) - pulse_common::clock::now_ms();
    tokio::time::Instant::now() + Duration::from_millis(u64::try_from(left_ms).unwrap_or(0))
}

/// Resolves at `at`; never without one (a credential that does not expire).
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The live side of the API: results from this instance's one consumer, and
/// how often clients are pinged.
#[derive(Clone)]
pub struct Live {
    pub feed: Feed,
    /// Job transitions, for clients that ask for them.
    pub jobs: JobFeed,
    pub heartbeat: Duration,
    /// The largest message (and frame) a client may send.
    pub max_message_bytes: usize,
    pub slots: StreamSlots,
}

struct Client {
    filter: Filter,
    jobs: Option<broadcast::Receiver<Arc<JobNote>>>,
    position: Position,
    heartbeat: Duration,
    /// When the caller's token expires, if it does.
    expires_at: Option<tokio::time::Instant>,
    /// Held for as long as the connection lasts.
    _slot: Slot,
}

/// Why a client's connection ends.
struct Gone;

impl Client {
    /// Sends the replay, then matching results as they come. The client is
    /// pinged every `heartbeat`; one that has not answered (any message
    /// counts) for three heartbeats is gone and is dropped, so dead
    /// connections do not hold buffers.
    async fn serve(
        mut self,
        mut socket: WebSocket,
        replay: Vec<Arc<Positioned>>,
        gap: bool,
        mut rx: broadcast::Receiver<Arc<Positioned>>,
    ) {
        metrics::WS_CLIENTS.inc();
        let _ = self.run(&mut socket, replay, gap, &mut rx).await;
        metrics::WS_CLIENTS.dec();
    }

    async fn run(
        &mut self,
        socket: &mut WebSocket,
        replay: Vec<Arc<Positioned>>,
        gap: bool,
        rx: &mut broadcast::Receiver<Arc<Positioned>>,
    ) -> Result<(), Gone> {
        if gap {
            let note = serde_json::json!({"type": "gap", "reason": "the resume position is older than this instance's window; results may be missing"});
            send(socket, note.to_string()).await?;
        }
        for r in replay {
            self.offer(socket, &r).await?;
        }
        let heartbeat = self.heartbeat;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        let mut last_heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = until(self.expires_at) => {
                    let close = CloseFrame { code: TOKEN_EXPIRED, reason: "token expired".into() };
                    // Best effort: the client may be gone already.
                    let _ = socket.send(Message::Close(Some(close))).await;
                    return Err(Gone);
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > heartbeat * 3 {
                        tracing::info!("WebSocket client stopped answering; dropping it");
                        return Err(Gone);
                    }
                    socket.send(Message::Ping(Vec::new().into())).await.map_err(|_| Gone)?;
                }
                result = rx.recv() => match result {
                    Ok(r) => self.offer(socket, &r).await?,
                    // The client fell behind the buffer: tell it where it
                    // was and go on from now.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let note = serde_json::json!({"type": "lagged", "skipped": n, "cursor": self.position.encode()});
                        send(socket, note.to_string()).await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(Gone),
                },
                note = next_job(&mut self.jobs) => match note {
                    Ok(note) if note.tenant == self.filter.tenant_id => send(socket, note.json.clone()).await?,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let note = serde_json::json!({"type": "jobs_lagged", "skipped": n});
                        send(socket, note.to_string()).await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => self.jobs = None,
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(Gone),
                    Some(Ok(_)) => last_heard = tokio::time::Instant::now(),
                },
            }
        }
    }

    /// Moves the client's position past `r`, and sends `r` if it matches
    /// and the client has not had it, with the cursor of the new position.
    async fn offer(&mut self, socket: &mut WebSocket, r: &Positioned) -> Result<(), Gone> {
        if !self.position.pass(r.partition, r.offset) || !self.filter.matches(&r.event) {
            return Ok(());
        }
        // The record's own JSON object, with the cursor as its first field.
        let rest = r.json.strip_prefix('{').unwrap_or_default();
        let sep = if rest.trim_start().starts_with('}') {
            ""
        } else {
            ","
        };
        let text = format!("{{\"cursor\":\"{}\"{sep}{rest}", self.position.encode());
        send(socket, text).await
    }
}

/// The next job transition; never, for a client that did not ask for them.
async fn next_job(
    jobs: &mut Option<broadcast::Receiver<Arc<JobNote>>>,
) -> Result<Arc<JobNote>, broadcast::error::RecvError> {
    match jobs {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn send(socket: &mut WebSocket, text: String) -> Result<(), Gone> {
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|_| Gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tenant: &str, source: &str, kind: &str, event_type: &str, score: f32) -> ScoredEvent {
        ScoredEvent {
            tenant_id: tenant.into(),
            source_id: source.into(),
            kind: kind.into(),
            event_type: event_type.into(),
            score,
            ..ScoredEvent::default()
        }
    }

    fn filter(source: Option<&str>, event_type: Option<&str>, min_score: Option<f32>) -> Filter {
        Filter {
            tenant_id: "acme".into(),
            _access_token: None,
            source_id: source.map(Into::into),
            event_type: event_type.map(Into::into),
            min_score,
            resume: None,
            jobs: None,
        }
    }

    #[test]
    fn filters_keep_the_tenant_and_narrow_by_source_type_and_score() {
        let telemetry = event("acme", "d1", "telemetry", "", 0.9);
        let login = event("acme", "app-1", "app", "login", 0.0);
        let other_tenant = event("globex", "d1", "telemetry", "", 0.9);
        let all = filter(None, None, None);
        assert!(all.matches(&telemetry) && all.matches(&login));
        assert!(!all.matches(&other_tenant));
        let types = filter(None, Some("login,purchase"), None);
        assert!(types.matches(&login) && !types.matches(&telemetry));
        assert!(filter(None, Some("telemetry"), None).matches(&telemetry));
        let narrow = filter(Some("d2,d1"), None, Some(0.95));
        assert!(!narrow.matches(&telemetry));
        assert!(filter(Some("d2,d1"), None, Some(0.5)).matches(&telemetry));
        assert!(!filter(Some("d2"), None, None).matches(&telemetry));
    }
}

//! HTTP routes for analysts.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::store::EventStore;

/// Roles that may read events over HTTP.
const READERS: &[Role] = &[Role::Analyst, Role::Dashboard, Role::Admin];

const MAX_LIMIT: u64 = 10_000;

fn error(status: StatusCode, field: &str, reason: impl std::fmt::Display) -> Response {
    (
        status,
        Json(json!({"error": reason.to_string(), "field": field})),
    )
        .into_response()
}

/// A query string that does not parse: unknown parameters (`tenant_id`
/// among them: the tenant comes from the credential) or bad values.
pub fn bad_query(e: QueryRejection) -> Response {
    error(StatusCode::BAD_REQUEST, "query", e.body_text())
}

fn unavailable(e: clickhouse::error::Error) -> Response {
    tracing::warn!(error = %e, "ClickHouse query failed");
    error(StatusCode::SERVICE_UNAVAILABLE, "", "storage unavailable")
}

pub async fn event(
    State(store): State<EventStore>,
    caller: Caller,
    Path(event_id): Path<String>,
) -> Response {
    if let Err(denied) = caller.require(READERS) {
        return denied.into_response();
    }
    match store.event(&caller.tenant, &event_id).await {
        Ok(Some(e)) => Json(e).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "event_id", "no such event"),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecentQuery {
    source_id: Option<String>,
    limit: Option<u64>,
}

pub async fn recent(
    State(store): State<EventStore>,
    caller: Caller,
    q: Result<Query<RecentQuery>, QueryRejection>,
) -> Response {
    if let Err(denied) = caller.require(READERS) {
        return denied.into_response();
    }
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        );
    }
    match store
        .recent(&caller.tenant, q.source_id.as_deref(), limit)
        .await
    {
        Ok(events) => Json(json!({"events": events})).into_response(),
        Err(e) => unavailable(e),
    }
}

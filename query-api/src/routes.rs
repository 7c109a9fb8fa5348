//! HTTP routes for analysts.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::store::EventStore;

const MAX_LIMIT: u64 = 10_000;

fn error(status: StatusCode, field: &str, reason: impl std::fmt::Display) -> Response {
    (
        status,
        Json(json!({"error": reason.to_string(), "field": field})),
    )
        .into_response()
}

fn unavailable(e: clickhouse::error::Error) -> Response {
    tracing::warn!(error = %e, "ClickHouse query failed");
    error(StatusCode::SERVICE_UNAVAILABLE, "", "storage unavailable")
}

#[derive(Deserialize)]
pub struct TenantQuery {
    tenant_id: String,
}

pub async fn event(
    State(store): State<EventStore>,
    Path(event_id): Path<String>,
    Query(q): Query<TenantQuery>,
) -> Response {
    match store.event(&q.tenant_id, &event_id).await {
        Ok(Some(e)) => Json(e).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "event_id", "no such event"),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
pub struct RecentQuery {
    tenant_id: String,
    source_id: Option<String>,
    limit: Option<u64>,
}

pub async fn recent(State(store): State<EventStore>, Query(q): Query<RecentQuery>) -> Response {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        );
    }
    match store
        .recent(&q.tenant_id, q.source_id.as_deref(), limit)
        .await
    {
        Ok(events) => Json(json!({"events": events})).into_response(),
        Err(e) => unavailable(e),
    }
}

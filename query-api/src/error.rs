//! The API's one error type. Every refusal and failure that a handler or a
//! layer answers is an [`ApiError`], and every one reaches the caller the
//! same way: its status and an [`ErrorBody`] naming the field it concerns
//! (a parameter, `authorization`, `query`, `upgrade`, or empty) and why.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pulse_common::clickhouse::{classify, Failure, Limit};
use serde::Serialize;
use utoipa::ToSchema;

/// Why a request failed, and which parameter (or `authorization`, `query`).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub field: String,
}

#[derive(Debug)]
pub enum ApiError {
    /// A parameter with a bad value (400).
    BadParam { field: &'static str, reason: String },
    /// A query string that does not parse: unknown parameters (`tenant_id`
    /// among them: the tenant comes from the credential) or bad values (400).
    BadQuery(String),
    /// No such thing of the caller's tenant (404).
    NotFound {
        field: &'static str,
        reason: &'static str,
    },
    /// No valid credential, or one that is wrong or expired (401, with
    /// `WWW-Authenticate`).
    Unauthenticated(String),
    /// The credential's role may not use the route (403).
    Forbidden(String),
    /// The caller's allowance is spent (429, with `Retry-After`).
    RateLimited {
        reason: String,
        retry_after: Duration,
    },
    /// The tenant has as many of something as it may (429).
    TooMany(String),
    /// The request contradicts what exists: an idempotency key reused for
    /// another request, or a job that has ended (409).
    Conflict { field: &'static str, reason: String },
    /// What ClickHouse answered a read: a limit (422 rows, 504 time) or
    /// storage unavailable (503).
    Storage(clickhouse::error::Error),
    /// ClickHouse did not answer within the read's deadline (504).
    StorageTimeout,
    /// A part of the API is not available now (503).
    Unavailable(&'static str),
}

impl ApiError {
    pub fn bad_param(field: &'static str, reason: impl Into<String>) -> Self {
        Self::BadParam {
            field,
            reason: reason.into(),
        }
    }
}

impl From<clickhouse::error::Error> for ApiError {
    fn from(e: clickhouse::error::Error) -> Self {
        Self::Storage(e)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::BadQuery(e.body_text())
    }
}

fn answer(status: StatusCode, field: &str, reason: impl std::fmt::Display) -> Response {
    let body = ErrorBody {
        error: reason.to_string(),
        field: field.to_string(),
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::BadParam { field, reason } => answer(StatusCode::BAD_REQUEST, field, reason),
            Self::BadQuery(reason) => answer(StatusCode::BAD_REQUEST, "query", reason),
            Self::NotFound { field, reason } => answer(StatusCode::NOT_FOUND, field, reason),
            Self::Unauthenticated(reason) => {
                let mut response = answer(StatusCode::UNAUTHORIZED, "authorization", reason);
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            Self::Forbidden(reason) => answer(StatusCode::FORBIDDEN, "authorization", reason),
            Self::RateLimited {
                reason,
                retry_after,
            } => {
                let mut response = answer(StatusCode::TOO_MANY_REQUESTS, "authorization", reason);
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                if let Ok(v) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
                response
            }
            Self::TooMany(reason) => answer(StatusCode::TOO_MANY_REQUESTS, "", reason),
            Self::Conflict { field, reason } => answer(StatusCode::CONFLICT, field, reason),
            Self::Storage(e) => storage(e),
            Self::StorageTimeout => answer(
                StatusCode::GATEWAY_TIMEOUT,
                "query",
                "storage did not answer within the API's time limit; try again later",
            ),
            Self::Unavailable(what) => answer(StatusCode::SERVICE_UNAVAILABLE, "", what),
        }
    }
}

/// The answer to a query ClickHouse refused or could not run.
fn storage(e: clickhouse::error::Error) -> Response {
    match classify(&e) {
        Failure::Limit(Limit::Time) => answer(
            StatusCode::GATEWAY_TIMEOUT,
            "query",
            "the query ran past the API's time limit; narrow the time range or name a source_id",
        ),
        Failure::Limit(Limit::Rows) => answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query",
            "the query would read more rows than the API's limit allows; narrow the time range or name a source_id",
        ),
        Failure::Permanent => {
            // A read of the API's own that cannot run: the schema is not
            // what this release expects. Still 503 to the caller.
            tracing::error!(error = %e, "ClickHouse refused a read of the API's");
            answer(StatusCode::SERVICE_UNAVAILABLE, "", "storage unavailable")
        }
        Failure::Transient => {
            tracing::warn!(error = %e, "ClickHouse query failed");
            answer(StatusCode::SERVICE_UNAVAILABLE, "", "storage unavailable")
        }
    }
}

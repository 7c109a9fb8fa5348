//! `POST /v1/files`: a tenant's file, streamed to object storage as it
//! arrives, never held in memory whole. The content type must be one Pulse
//! stores and match the file's first bytes; the size limit and the tenant's
//! quota are checked as the bytes pass. An `Idempotency-Key` names the
//! file, so a retried upload finds the file the first one stored.

use std::sync::Arc;

use axum::body::{Body, BodyDataStream};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use pulse_common::files::{FileId, FileStore, UploadError, UploadLimits};
use serde::Deserialize;

use super::auth::Credentials;
use super::http::{refused, Rejected};
use super::metrics;

pub struct Uploads {
    pub store: FileStore,
    pub limits: UploadLimits,
    /// None: authentication is off and uploads name their tenant.
    pub credentials: Option<Arc<Credentials>>,
}

/// Longest idempotency key.
const MAX_KEY_LEN: usize = 256;

pub fn router(uploads: Arc<Uploads>) -> Router {
    Router::new()
        .route("/v1/files", post(upload))
        .with_state(uploads)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// The tenant, when authentication is off.
    tenant_id: Option<String>,
}

async fn upload(
    State(uploads): State<Arc<Uploads>>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut stream = body.into_data_stream();
    let answer = match handle(&uploads, query, &headers, &mut stream).await {
        Ok(r) => r,
        Err(rejected) => rejected.counted_in(&metrics::FILES_REJECTED),
    };
    // A refused upload, and a retry answered with the file stored before,
    // leave their body unread.
    drain(&mut stream).await;
    answer
}

/// Most of an unread upload body read and dropped, and for how long:
/// a client still sending when the answer comes and the connection closes
/// sees a broken connection instead of the answer. A larger rest is left
/// unread, and that client sees the connection close.
const DRAIN_BYTES: usize = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

async fn drain(stream: &mut BodyDataStream) {
    let draining = async {
        let mut read = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, draining).await;
}

async fn handle(
    uploads: &Uploads,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
    stream: &mut BodyDataStream,
) -> Result<Response, Rejected> {
    let tenant = match &uploads.credentials {
        Some(c) => {
            let principal = c.authenticate(headers).map_err(refused)?;
            principal.admit(1).map_err(refused)?;
            principal.tenant.clone()
        }
        None => {
            let Query(q) = query.map_err(|e| bad("query", e.body_text()))?;
            let tenant = q
                .tenant_id
                .ok_or_else(|| bad("tenant_id", "required while authentication is off"))?;
            pulse_common::contract::check_tenant(&tenant)
                .map_err(|e| bad("tenant_id", e.to_string()))?;
            tenant
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad("content-type", "missing: send the file's content type"))?;
    let id = match headers.get("idempotency-key") {
        Some(key) => {
            let key = key
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
                .ok_or_else(|| {
                    bad(
                        "idempotency-key",
                        format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
                    )
                })?;
            FileId::for_key(&tenant, key)
        }
        None => FileId::random(),
    };
    let (meta, created) = uploads
        .store
        .upload(&tenant, &id, content_type, stream, uploads.limits)
        .await
        .map_err(refusal)?;
    if created {
        metrics::FILES_STORED.inc();
        metrics::FILE_BYTES_STORED.inc_by(meta.size);
        tracing::info!(
            tenant,
            file_id = meta.file_id,
            size = meta.size,
            "file stored"
        );
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(meta)).into_response())
}

fn bad(field: &str, reason: impl Into<String>) -> Rejected {
    field_error(StatusCode::BAD_REQUEST, "bad_upload", field, reason)
}

fn field_error(
    status: StatusCode,
    reason: &'static str,
    field: &str,
    why: impl Into<String>,
) -> Rejected {
    let mut rejected = Rejected::body(status, reason, why);
    for e in &mut rejected.errors {
        e.field = field.to_string();
    }
    rejected
}

fn refusal(e: UploadError) -> Rejected {
    let (status, reason, field) = match &e {
        UploadError::Empty => (StatusCode::BAD_REQUEST, "empty_file", "(body)"),
        UploadError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "file_too_large", "(body)"),
        UploadError::OverQuota { .. } => (StatusCode::INSUFFICIENT_STORAGE, "over_quota", "(body)"),
        UploadError::UnsupportedType(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "content-type",
        ),
        UploadError::Mismatch { .. } => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_mismatch",
            "content-type",
        ),
        UploadError::Body(_) => (StatusCode::BAD_REQUEST, "unreadable_body", "(body)"),
        UploadError::Storage(err) => {
            tracing::warn!(error = %err, "object storage refused an upload");
            let mut r = field_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "(body)",
                e.to_string(),
            );
            r.retry_after = Some(std::time::Duration::from_secs(1));
            return r;
        }
    };
    field_error(status, reason, field, e.to_string())
}

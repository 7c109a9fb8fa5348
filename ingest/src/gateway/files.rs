//! `POST /v1/files`: a tenant's file, streamed to object storage as it
//! arrives, never held in memory whole. The content type must be one Pulse
//! stores and match the file's first bytes; the size limit and the tenant's
//! quota are checked as the bytes pass. An `Idempotency-Key` names the
//! file, so a retried upload finds the file the first one stored.
//!
//! With an S3 store, `POST /v1/uploads` grants a client an upload it sends
//! itself, in parts to presigned URLs, and
//! `POST /v1/uploads/{upload_id}/complete` makes it a file once its bytes
//! pass the same checks (`pulse_common::files` reads them back).

use std::sync::Arc;

use axum::body::{Body, BodyDataStream};
use axum::extract::Path;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use futures::StreamExt;
use pulse_common::files::{FileId, FileMeta, FileStore, Granted, UploadError, UploadLimits};
use serde::Deserialize;

use super::auth::Credentials;
use super::http::{refused, Rejected};
use super::metrics;

pub struct Uploads {
    pub store: FileStore,
    pub limits: UploadLimits,
    /// How long a granted upload's part URLs work.
    pub url_ttl: std::time::Duration,
    /// None: authentication is off and uploads name their tenant.
    pub credentials: Option<Arc<Credentials>>,
}

/// Longest idempotency key.
const MAX_KEY_LEN: usize = 256;

pub fn router(uploads: Arc<Uploads>) -> Router {
    Router::new()
        .route("/v1/files", post(upload))
        .route("/v1/uploads", post(grant))
        .route("/v1/uploads/{upload_id}/complete", post(complete))
        .route("/v1/uploads/{upload_id}", delete(abort))
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
    query: QueryResult,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut stream = body.into_data_stream();
    let answer = answered(handle(&uploads, query, &headers, &mut stream).await);
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

type QueryResult = Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>;

async fn handle(
    uploads: &Uploads,
    query: QueryResult,
    headers: &HeaderMap,
    stream: &mut BodyDataStream,
) -> Result<Response, Rejected> {
    let tenant = tenant_of(uploads, query, headers)?;
    let content_type = content_type_of(headers)?;
    let id = file_id_of(&tenant, headers)?;
    let (meta, created) = uploads
        .store
        .upload(&tenant, &id, content_type, stream, uploads.limits)
        .await
        .map_err(refusal)?;
    Ok(stored(meta, created))
}

/// The caller's tenant: its credential's, or named while authentication is off.
fn tenant_of(
    uploads: &Uploads,
    query: QueryResult,
    headers: &HeaderMap,
) -> Result<String, Rejected> {
    match &uploads.credentials {
        Some(c) => {
            let principal = c.authenticate(headers).map_err(refused)?;
            principal.admit(1).map_err(refused)?;
            Ok(principal.tenant.clone())
        }
        None => {
            let Query(q) = query.map_err(|e| bad("query", e.body_text()))?;
            let tenant = q
                .tenant_id
                .ok_or_else(|| bad("tenant_id", "required while authentication is off"))?;
            pulse_common::contract::check_tenant(&tenant)
                .map_err(|e| bad("tenant_id", e.to_string()))?;
            Ok(tenant)
        }
    }
}

fn content_type_of(headers: &HeaderMap) -> Result<&str, Rejected> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad("content-type", "missing: send the file's content type"))
}

/// The file an upload makes: named by its idempotency key, if it has one.
fn file_id_of(tenant: &str, headers: &HeaderMap) -> Result<FileId, Rejected> {
    let Some(key) = headers.get("idempotency-key") else {
        return Ok(FileId::random());
    };
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
    Ok(FileId::for_key(tenant, key))
}

/// 201 with the file this request made; 200 with the one an earlier
/// request with the same key made.
fn stored(meta: FileMeta, created: bool) -> Response {
    if created {
        metrics::FILES_STORED.inc();
        metrics::FILE_BYTES_STORED.inc_by(meta.size);
        tracing::info!(
            tenant = meta.tenant,
            file_id = meta.file_id,
            size = meta.size,
            "file stored"
        );
        (StatusCode::CREATED, Json(meta)).into_response()
    } else {
        (StatusCode::OK, Json(meta)).into_response()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    /// The file's type, checked against its bytes on completion.
    content_type: String,
    /// Its size in bytes: the parts must add up to it.
    size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteRequest {
    /// The ETag each part's `PUT` answered, in part order.
    parts: Vec<String>,
}

type JsonResult<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

async fn grant(
    State(uploads): State<Arc<Uploads>>,
    query: QueryResult,
    headers: HeaderMap,
    body: JsonResult<GrantRequest>,
) -> Response {
    let granted = async {
        let tenant = tenant_of(&uploads, query, &headers)?;
        let id = file_id_of(&tenant, &headers)?;
        let Json(request) =
            body.map_err(|e| field_error(e.status(), "bad_upload", "(body)", e.body_text()))?;
        let granted = uploads
            .store
            .grant_upload(
                &tenant,
                &id,
                &request.content_type,
                request.size,
                uploads.limits,
                uploads.url_ttl,
            )
            .await
            .map_err(refusal)?;
        Ok(match granted {
            Granted::Stored(meta) => stored(meta, false),
            Granted::Upload(grant) => (StatusCode::CREATED, Json(grant)).into_response(),
        })
    };
    answered(granted.await)
}

async fn complete(
    State(uploads): State<Arc<Uploads>>,
    Path(upload_id): Path<String>,
    query: QueryResult,
    headers: HeaderMap,
    body: JsonResult<CompleteRequest>,
) -> Response {
    let completed = async {
        let tenant = tenant_of(&uploads, query, &headers)?;
        let Json(request) =
            body.map_err(|e| field_error(e.status(), "bad_upload", "(body)", e.body_text()))?;
        let (meta, created) = uploads
            .store
            .complete_upload(&tenant, &upload_id, request.parts, uploads.limits)
            .await
            .map_err(refusal)?;
        Ok(stored(meta, created))
    };
    answered(completed.await)
}

async fn abort(
    State(uploads): State<Arc<Uploads>>,
    Path(upload_id): Path<String>,
    query: QueryResult,
    headers: HeaderMap,
) -> Response {
    let aborted = async {
        let tenant = tenant_of(&uploads, query, &headers)?;
        uploads
            .store
            .abort_upload(&tenant, &upload_id)
            .await
            .map_err(refusal)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    answered(aborted.await)
}

/// The answer, or the refusal counted by its reason.
fn answered(result: Result<Response, Rejected>) -> Response {
    result.unwrap_or_else(|r| r.counted_in(&metrics::FILES_REJECTED))
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
        UploadError::NotPresigned => (
            StatusCode::NOT_IMPLEMENTED,
            "presigned_uploads_unavailable",
            "(store)",
        ),
        UploadError::UnknownUpload => (StatusCode::NOT_FOUND, "unknown_upload", "upload_id"),
        UploadError::Parts(_) => (StatusCode::BAD_REQUEST, "bad_parts", "parts"),
        UploadError::SizeMismatch { .. } => (StatusCode::BAD_REQUEST, "size_mismatch", "size"),
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

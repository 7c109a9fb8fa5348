//! `GET /v1/files/{file_id}`: a file of the caller's tenant, as stored by
//! ingest's `POST /v1/files`. Another tenant's id is simply not found: the
//! tenant's prefix comes from the credential, never from the request.
//!
//! A file never changes once stored, so its SHA-256 is a strong ETag: a
//! client that sends it back in `If-None-Match` gets 304, and the answer
//! may be kept for a year (`immutable`), though only by the caller's own
//! cache (`private`: the file is the tenant's). A single `Range` gets 206
//! with just those bytes; one that lies past the end gets 416.
//!
//! With an S3 store and `PULSE_FILES_REDIRECT_TTL_S` set, a download the
//! caller may make is answered 307 with a presigned URL instead, short-lived
//! and never cached, and the store serves the bytes (with Range and ETag).
//! The tenant check and the audit record come first either way.

use std::ops::Range;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use pulse_common::files::{FileId, FileMeta, FileStore};

use crate::audit::RowsReturned;
use crate::error::{ApiError, ErrorBody};
use crate::extract::Reader;

const CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

/// How long a download's presigned URL works, if downloads redirect.
#[derive(Debug, Clone, Copy)]
pub struct Redirects(pub Option<std::time::Duration>);

/// A file of the caller's tenant.
#[utoipa::path(get, path = "/v1/files/{file_id}", tag = "files",
    params(("file_id" = String, Path, example = "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        description = "The file's id (32 hex digits), as `POST /v1/files` on ingest answered it")),
    responses(
        (status = 200, description = "The file's bytes, of the content type it was stored as",
            content(
                (String = "image/jpeg"), (String = "image/png"), (String = "image/webp"),
                (String = "application/pdf"), (String = "application/vnd.apache.parquet"),
                (String = "application/zip"), (String = "application/json"), (String = "text/csv"),
            )),
        (status = 206, description = "The bytes of the `Range` asked for",
            content(
                (String = "image/jpeg"), (String = "image/png"), (String = "image/webp"),
                (String = "application/pdf"), (String = "application/vnd.apache.parquet"),
                (String = "application/zip"), (String = "application/json"), (String = "text/csv"),
            )),
        (status = 304, description = "The file is the one the `If-None-Match` ETag names"),
        (status = 307, description = "Fetch the bytes from the presigned URL in `Location` (S3 stores with redirects on)"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "The tenant has no such file", body = ErrorBody),
        (status = 416, description = "The `Range` lies past the file's end", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn file(
    State(files): State<FileStore>,
    State(Redirects(redirect)): State<Redirects>,
    Reader(caller): Reader,
    Path(file_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = ApiError::NotFound {
        field: "file_id",
        reason: "no such file",
    };
    let Some(id) = FileId::parse(&file_id) else {
        return Err(not_found);
    };
    let meta = files
        .meta(&caller.tenant, &id)
        .await
        .map_err(unavailable)?
        .ok_or(not_found)?;
    let etag = format!("\"{}\"", meta.sha256);
    if matches(&headers, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        set_validators(&mut response, &etag);
        return Ok(response);
    }
    if let Some(ttl) = redirect {
        if let Some(signed) = files.presigned_get(&meta, ttl).await {
            return redirected(signed.map_err(unavailable)?);
        }
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => match parse_range(r, meta.size) {
            Ranged::Satisfiable(range) => Some(range),
            Ranged::Ignored => None,
            Ranged::Unsatisfiable => return Ok(unsatisfiable(&meta)),
        },
        None => None,
    };
    let stored = files.get(&meta, range.clone()).await.map_err(unavailable)?;
    let stream = stored.into_stream().map(|chunk| {
        chunk.inspect_err(
            |e| tracing::warn!(error = %e, "a file's bytes stopped coming from storage"),
        )
    });
    let (status, length) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.end - r.start),
        None => (StatusCode::OK, meta.size),
    };
    let mut response = (status, Body::from_stream(stream)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&meta.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(r) = &range {
        let value = format!("bytes {}-{}/{}", r.start, r.end - 1, meta.size);
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    set_validators(&mut response, &etag);
    response.extensions_mut().insert(RowsReturned(1));
    Ok(response)
}

fn redirected(url: url::Url) -> Result<Response, ApiError> {
    let location = HeaderValue::from_str(url.as_str())
        .map_err(|_| ApiError::Unavailable("file storage signed an unusable URL"))?;
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    let h = response.headers_mut();
    h.insert(header::LOCATION, location);
    // The URL is a short-lived credential of its own.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response.extensions_mut().insert(RowsReturned(1));
    Ok(response)
}

fn unavailable(e: object_store::Error) -> ApiError {
    tracing::warn!(error = %e, "object storage did not answer");
    ApiError::Unavailable("file storage unavailable")
}

fn set_validators(response: &mut Response, etag: &str) {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

fn unsatisfiable(meta: &FileMeta) -> Response {
    let body = ErrorBody {
        error: format!("the range lies past the file's {} bytes", meta.size),
        field: "range".into(),
    };
    let mut response = (StatusCode::RANGE_NOT_SATISFIABLE, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", meta.size)) {
        response.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    response
}

#[derive(Debug, PartialEq, Eq)]
enum Ranged {
    Satisfiable(Range<u64>),
    /// Not one range of bytes (several, or another unit): the whole file
    /// is sent, as RFC 9110 allows.
    Ignored,
    Unsatisfiable,
}

/// A `Range` header of one byte range, of a file of `size` bytes.
fn parse_range(value: &str, size: u64) -> Ranged {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ranged::Ignored;
    };
    if spec.contains(',') {
        return Ranged::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Ignored;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (first.trim().is_empty(), number(first), number(last)) {
        // The last n bytes.
        (true, _, Some(n)) if n > 0 => size.saturating_sub(n)..size,
        (true, _, _) => return Ranged::Unsatisfiable,
        (false, Some(a), None) if last.trim().is_empty() => a..size,
        (false, Some(a), Some(b)) if b >= a => a..(b + 1).min(size),
        _ => return Ranged::Ignored,
    };
    if range.start >= size {
        return Ranged::Unsatisfiable;
    }
    Ranged::Satisfiable(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_one_span_are_served_and_others_whole() {
        let cases = [
            ("bytes=0-9", Ranged::Satisfiable(0..10)),
            ("bytes=90-", Ranged::Satisfiable(90..100)),
            ("bytes=-5", Ranged::Satisfiable(95..100)),
            ("bytes=95-1000", Ranged::Satisfiable(95..100)),
            ("bytes=-1000", Ranged::Satisfiable(0..100)),
            ("bytes=100-", Ranged::Unsatisfiable),
            ("bytes=-0", Ranged::Unsatisfiable),
            ("bytes=0-1,5-9", Ranged::Ignored),
            ("bytes=9-0", Ranged::Ignored),
            ("items=0-9", Ranged::Ignored),
            ("bytes=a-b", Ranged::Ignored),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_range(header, 100), expected, "{header}");
        }
    }

    #[test]
    fn if_none_match_names_the_etag_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(matches(&h, "\"abc\""));
        assert!(!matches(&h, "\"abd\""));
        assert!(!matches(&HeaderMap::new(), "\"abc\""));
    }
}

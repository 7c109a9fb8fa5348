//! Short-lived caching of hot reads, per tenant, with ETag and
//! Cache-Control.
//!
//! Dashboards poll the same few reads every few seconds; answering repeats
//! from memory for a couple of seconds spares ClickHouse without showing
//! data noticeably older than the processor's own batching delay. Entries
//! are keyed by tenant, role and the request's path and query, so one
//! tenant's cached answer can never be served to another. Every answer
//! carries an ETag (a digest of its body); a client that sends it back in
//! `If-None-Match` gets 304 without the body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use moka::future::Cache;
use sha2::{Digest, Sha256};

use crate::audit::RowsReturned;
use crate::auth::Authenticated;
use crate::metrics;

/// Largest body worth keeping; a larger answer is passed through uncached.
const MAX_BODY: usize = 16 << 20;

#[derive(clap::Args, Debug, Clone)]
pub struct CacheArgs {
    /// How long a read's answer is reused for the same tenant and request, in milliseconds (0: never).
    #[arg(long, env = "PULSE_QUERY_CACHE_TTL_MS", default_value_t = 2000)]
    pub cache_ttl_ms: u64,
    /// Memory the cached answers may take, in MiB.
    #[arg(long, env = "PULSE_QUERY_CACHE_MAX_MB", default_value_t = 64)]
    pub cache_max_mb: u64,
}

struct Cached {
    body: Bytes,
    etag: HeaderValue,
    rows: u64,
}

#[derive(Clone)]
pub struct ResponseCache {
    entries: Option<Cache<String, Arc<Cached>>>,
    cache_control: HeaderValue,
}

impl ResponseCache {
    pub fn new(args: &CacheArgs) -> Self {
        let ttl = Duration::from_millis(args.cache_ttl_ms);
        let entries = (args.cache_ttl_ms > 0).then(|| {
            Cache::builder()
                .time_to_live(ttl)
                .max_capacity(args.cache_max_mb.saturating_mul(1 << 20))
                .weigher(|key: &String, v: &Arc<Cached>| {
                    u32::try_from(key.len() + v.body.len()).unwrap_or(u32::MAX)
                })
                .build()
        });
        let cache_control = format!("private, max-age={}", ttl.as_secs());
        Self {
            entries,
            cache_control: HeaderValue::from_str(&cache_control)
                .unwrap_or(HeaderValue::from_static("private, no-cache")),
        }
    }
}

/// The cache key of a request that may be cached: only GETs by an
/// authenticated caller.
fn key_of(request: &Request) -> Option<String> {
    if request.method() != Method::GET {
        return None;
    }
    let Authenticated(Ok(caller)) = request.extensions().get::<Authenticated>()? else {
        return None;
    };
    Some(format!(
        "{}\n{}\n{}",
        caller.tenant,
        caller.role.as_str(),
        request.uri()
    ))
}

fn etag_of(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..16])))
        .unwrap_or(HeaderValue::from_static("\"\""))
}

/// Answers a cacheable read from the cache, or runs it and keeps its
/// answer; layered on the routes of the hot reads only.
pub async fn middleware(
    State(cache): State<ResponseCache>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = key_of(&request) else {
        return next.run(request).await;
    };
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    if let Some(hit) = match &cache.entries {
        Some(entries) => entries.get(&key).await,
        None => None,
    } {
        metrics::CACHE.with_label_values(&["hit"]).inc();
        return answer(&cache, &hit, if_none_match.as_ref(), "hit");
    }
    metrics::CACHE.with_label_values(&["miss"]).inc();
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    let rows = parts.extensions.get::<RowsReturned>().map_or(0, |r| r.0);
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot buffer a read's answer");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let fresh = Arc::new(Cached {
        etag: etag_of(&body),
        body,
        rows,
    });
    if let Some(entries) = &cache.entries {
        entries.insert(key, fresh.clone()).await;
    }
    answer(&cache, &fresh, if_none_match.as_ref(), "miss")
}

/// `cached` as a 200, or as 304 when the client already holds it.
fn answer(
    cache: &ResponseCache,
    cached: &Cached,
    if_none_match: Option<&HeaderValue>,
    outcome: &'static str,
) -> Response {
    let not_modified = if_none_match.is_some_and(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == cached.etag || t.trim() == "*")
        })
    });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(cached.body.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.extensions_mut().insert(RowsReturned(cached.rows));
        r
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, cached.etag.clone());
    headers.insert(header::CACHE_CONTROL, cache.cache_control.clone());
    headers.insert("x-cache", HeaderValue::from_static(outcome));
    response
}

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

/// The cache on a router of its own, through `oneshot`: a read whose answer
/// counts how often it ran shows what came from memory.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::routing::get;
    use axum::{middleware, Extension, Json, Router};

    use super::*;
    use crate::test_support::{authenticator, send};
    use pulse_testkit::query_api::hs256;

    /// Answers with the caller's tenant and how many times it ran.
    fn counting_router(ttl_ms: u64) -> (Router, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let read = move |Extension(auth): Extension<Authenticated>| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                match auth.0 {
                    Ok(caller) => {
                        Json(serde_json::json!({"tenant": caller.tenant, "run": n})).into_response()
                    }
                    Err(_) => StatusCode::UNAUTHORIZED.into_response(),
                }
            }
        };
        let cache = ResponseCache::new(&CacheArgs {
            cache_ttl_ms: ttl_ms,
            cache_max_mb: 1,
        });
        let app = Router::new()
            .route("/v1/devices", get(read))
            .route_layer(middleware::from_fn_with_state(cache, super::middleware))
            .route_layer(middleware::from_fn_with_state(
                authenticator(),
                crate::auth::middleware,
            ));
        (app, calls)
    }

    #[tokio::test]
    async fn repeats_are_served_from_a_per_tenant_cache_until_the_ttl() {
        let (app, calls) = counting_router(2000);
        let acme = hs256("acme", "analyst");

        let first = send(&app, "/v1/devices", Some(&acme), &[]).await;
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(first.header("x-cache"), "miss");
        assert_eq!(first.header("cache-control"), "private, max-age=2");
        let etag = first.header("etag").to_string();
        assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
        assert_eq!(
            first.json(),
            serde_json::json!({"tenant": "acme", "run": 1})
        );

        // A repeat within the TTL is the cached answer, stale by design:
        // the read did not run again.
        let repeat = send(&app, "/v1/devices", Some(&acme), &[]).await;
        assert_eq!(
            (repeat.header("x-cache"), &repeat.body),
            ("hit", &first.body)
        );
        assert_eq!(repeat.header("etag"), etag);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let revalidated = send(
            &app,
            "/v1/devices",
            Some(&acme),
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
        assert!(revalidated.body.is_empty());
        assert_eq!(revalidated.header("etag"), etag);

        // Another tenant's identical request is its own entry, and so is
        // another query string.
        let globex = send(&app, "/v1/devices", Some(&hs256("globex", "analyst")), &[]).await;
        assert_eq!(globex.header("x-cache"), "miss");
        assert_eq!(
            globex.json(),
            serde_json::json!({"tenant": "globex", "run": 2})
        );
        let other = send(&app, "/v1/devices?limit=5", Some(&acme), &[]).await;
        assert_eq!(
            (other.header("x-cache"), other.json()["run"].as_u64()),
            ("miss", Some(3))
        );

        // A request without a credential is never cached nor answered from
        // the cache.
        let refused = send(&app, "/v1/devices", None, &[]).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            (refused.header("x-cache"), refused.header("etag")),
            ("", "")
        );

        // After the TTL the answer is fresh, with a new ETag; the old one no
        // longer matches.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let fresh = loop {
            let a = send(
                &app,
                "/v1/devices",
                Some(&acme),
                &[("if-none-match", &etag)],
            )
            .await;
            if a.status == StatusCode::OK {
                break a;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still cached after 15 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(fresh.header("x-cache"), "miss");
        assert_eq!(fresh.json()["run"], 5);
        assert_ne!(fresh.header("etag"), etag);
    }

    #[tokio::test]
    async fn a_ttl_of_zero_caches_nothing_but_still_tags_answers() {
        let (app, calls) = counting_router(0);
        let acme = hs256("acme", "analyst");
        let first = send(&app, "/v1/devices", Some(&acme), &[]).await;
        let second = send(&app, "/v1/devices", Some(&acme), &[]).await;
        assert_eq!(
            (first.header("x-cache"), second.header("x-cache")),
            ("miss", "miss")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_ne!(first.header("etag"), second.header("etag"));
    }
}

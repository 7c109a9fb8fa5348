//! The API as one router. Each group of routes is declared with the layers
//! that cover it, so what applies to a route is read beside it:
//!
//! - reads that dashboards repeat: cache, then the read deadline;
//! - the audit trail: the read deadline;
//! - the stream and exports, which run as long as they need: neither;
//! - all of them: authentication first, then the audit trail, then the
//!   tenant's rate limit (so refusals are recorded and counted too);
//! - the OpenAPI document, its page and the dashboard's files: none.
//!
//! `main` adds request tracing and the probes.

use axum::middleware;
use axum::routing::get;
use axum::Router;

use crate::audit::{self, AuditLog};
use crate::auth::{self, Authenticator};
use crate::budget::{self, Deadline};
use crate::cache::{self, ResponseCache};
use crate::limits::{self, Limiter};
use crate::state::AppState;
use crate::{admin, aggregates, dashboard, export, openapi, routes, stream};

/// The layers of the API's routes.
pub struct Layers {
    pub cache: ResponseCache,
    pub deadline: Deadline,
    pub limiter: Limiter,
    pub auth: std::sync::Arc<Authenticator>,
    pub audit: AuditLog,
}

pub fn app(state: AppState, layers: Layers) -> Router {
    let cached_reads = Router::new()
        .route("/v1/events", get(routes::events))
        .route("/v1/events/{event_id}", get(routes::event))
        .route("/v1/anomalies", get(routes::anomalies))
        .route("/v1/devices", get(routes::devices))
        .route("/v1/devices/{source_id}/series", get(routes::series))
        .route("/v1/aggregates", get(aggregates::aggregates))
        .route_layer(middleware::from_fn_with_state(
            layers.cache,
            cache::middleware,
        ));
    let bounded = cached_reads
        .route("/v1/audit", get(admin::audit))
        .route_layer(middleware::from_fn_with_state(
            layers.deadline,
            budget::deadline,
        ));
    let unbounded = Router::new()
        .route("/v1/stream", get(stream::upgrade))
        .route("/v1/export", get(export::export));
    let api = bounded
        .merge(unbounded)
        .route_layer(middleware::from_fn_with_state(
            layers.limiter,
            limits::middleware,
        ))
        .route_layer(middleware::from_fn_with_state(
            layers.audit,
            audit::middleware,
        ))
        .route_layer(middleware::from_fn_with_state(
            layers.auth,
            auth::middleware,
        ))
        .with_state(state);
    let public = Router::new()
        .route("/openapi.json", get(openapi::json))
        .route("/docs", get(openapi::docs))
        .merge(dashboard::router());
    api.merge(public)
}

/// Authentication, roles, parameters and the rate limit on the router
/// itself, through `oneshot`: no server and no storage (ClickHouse is an
/// address nothing listens on, and none of these requests reaches it).
#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use jsonwebtoken::{encode, EncodingKey, Header};
    use pulse_common::clock::now_ms;
    use pulse_common::shutdown::Shutdown;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::audit::AuditLog;
    use crate::auth::{AuthArgs, Authenticator};
    use crate::cache::CacheArgs;
    use crate::fanout::Feed;
    use crate::limits::LimitArgs;
    use crate::store::EventStore;
    use crate::stream::Live;
    use crate::stream_slots::StreamSlots;

    const SECRET: &str = "app-test-secret-0123456789abcdef";

    fn router(rate_burst: u32) -> Router {
        // A file of each router's own: the tests run in parallel.
        static ROUTERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = ROUTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let secret =
            std::env::temp_dir().join(format!("pulse-app-test-{}-{n}", std::process::id()));
        std::fs::write(&secret, SECRET).expect("secret written");
        let auth = Arc::new(
            Authenticator::from_args(&AuthArgs {
                jwt_hs256_secret_file: Some(secret),
                jwt_rs256_public_key_file: None,
                jwt_jwks_file: None,
                jwt_jwks_url: None,
                jwt_jwks_refresh_s: 300,
                jwt_issuer: None,
                jwt_audience: None,
                api_keys_file: None,
            })
            .expect("authenticator"),
        );
        let nowhere = clickhouse::Client::default().with_url("http://127.0.0.1:1");
        let (shutdown, _trigger) = Shutdown::new();
        let (log, _writer) = AuditLog::start(nowhere.clone(), shutdown);
        let state = AppState {
            store: EventStore::new(nowhere.clone(), nowhere, Duration::from_secs(1)),
            live: Live {
                feed: Feed::new(16, 16),
                heartbeat: Duration::from_secs(15),
                max_message_bytes: 1024,
                slots: StreamSlots::new(1),
            },
            auth: auth.clone(),
        };
        let layers = Layers {
            cache: ResponseCache::new(&CacheArgs {
                cache_ttl_ms: 0,
                cache_max_mb: 1,
            }),
            deadline: Deadline(Duration::from_secs(1)),
            limiter: Limiter::new(&LimitArgs {
                rate_limit: 1,
                rate_burst,
            })
            .expect("limiter"),
            auth,
            audit: log,
        };
        app(state, layers)
    }

    fn token(tenant: &str, role: &str) -> String {
        let claims = json!({
            "sub": format!("{role}@{tenant}"), "tenant": tenant, "role": role,
            "exp": now_ms() / 1000 + 600,
        });
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("token")
    }

    async fn get(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = Request::get(path);
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("answered");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn every_route_checks_the_credential_and_the_role_before_anything_else() {
        let app = router(1000);
        let analyst = token("acme", "analyst");
        let dashboard = token("acme", "dashboard");
        let cases: &[(&str, Option<&str>, StatusCode)] = &[
            ("/v1/events", None, StatusCode::UNAUTHORIZED),
            ("/v1/events", Some("not-a-key"), StatusCode::UNAUTHORIZED),
            ("/v1/events/e-1", None, StatusCode::UNAUTHORIZED),
            ("/v1/anomalies", None, StatusCode::UNAUTHORIZED),
            ("/v1/devices", None, StatusCode::UNAUTHORIZED),
            ("/v1/devices/d-1/series", None, StatusCode::UNAUTHORIZED),
            ("/v1/aggregates", None, StatusCode::UNAUTHORIZED),
            ("/v1/export", None, StatusCode::UNAUTHORIZED),
            ("/v1/stream", None, StatusCode::UNAUTHORIZED),
            ("/v1/audit", None, StatusCode::UNAUTHORIZED),
            ("/v1/audit", Some(&analyst), StatusCode::FORBIDDEN),
            ("/v1/audit", Some(&dashboard), StatusCode::FORBIDDEN),
            ("/v1/stream", Some(&analyst), StatusCode::FORBIDDEN),
        ];
        for (path, credential, status) in cases {
            let (got, body) = get(&app, path, *credential).await;
            assert_eq!(got, *status, "{path} {credential:?}: {body}");
            assert_eq!(body["field"], "authorization", "{path}: {body}");
        }
    }

    #[tokio::test]
    async fn bad_parameters_are_named_before_storage_is_asked() {
        let app = router(1000);
        let analyst = token("acme", "analyst");
        let admin = token("acme", "admin");
        let cases: &[(&str, &str, &str)] = &[
            ("/v1/events?limit=0", "limit", "must be between 1 and 10000"),
            (
                "/v1/events?limit=10001",
                "limit",
                "must be between 1 and 10000",
            ),
            (
                "/v1/events?tenant_id=globex",
                "query",
                "unknown field `tenant_id`",
            ),
            (
                "/v1/events?cursor=nope",
                "cursor",
                "not a cursor returned by this API",
            ),
            (
                "/v1/anomalies?from_ms=-1",
                "from_ms",
                "must be between 0 and",
            ),
            ("/v1/devices?limit=abc", "query", "invalid digit"),
            (
                "/v1/devices/d-1/series?resolution_s=90",
                "resolution_s",
                "whole minutes",
            ),
            ("/v1/aggregates?metric=a%20b", "metric", "reading's name"),
            (
                "/v1/aggregates?group_by=tenant_id",
                "query",
                "unknown variant",
            ),
            ("/v1/export?format=xlsx", "query", "unknown variant"),
            (
                "/v1/export?to_ms=4294967296000",
                "to_ms",
                "must be between 0 and",
            ),
        ];
        for (path, field, reason) in cases {
            let (status, body) = get(&app, path, Some(&analyst)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert_eq!(body["field"], *field, "{path}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains(reason), "{path}: {body}");
        }
        let (status, body) = get(&app, "/v1/audit?limit=0", Some(&admin)).await;
        assert_eq!(
            (status, &body["field"]),
            (StatusCode::BAD_REQUEST, &json!("limit"))
        );
        // Storage down is 503, never a 500.
        let (status, body) = get(&app, "/v1/events/e-1", Some(&analyst)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }

    #[tokio::test]
    async fn the_rate_limit_covers_refused_requests_and_the_document_needs_no_credential() {
        let app = router(2);
        let analyst = token("acme", "analyst");
        let statuses = [
            get(&app, "/v1/events?limit=0", Some(&analyst)).await.0,
            get(&app, "/v1/events?limit=0", Some(&analyst)).await.0,
            get(&app, "/v1/events?limit=0", Some(&analyst)).await.0,
        ];
        assert_eq!(
            statuses,
            [
                StatusCode::BAD_REQUEST,
                StatusCode::BAD_REQUEST,
                StatusCode::TOO_MANY_REQUESTS
            ]
        );
        // Another tenant has its own allowance.
        let (status, _) = get(
            &app,
            "/v1/events?limit=0",
            Some(&token("globex", "analyst")),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, doc) = get(&app, "/openapi.json", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(doc["info"]["title"], "Pulse query API");
    }
}

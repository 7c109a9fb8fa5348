//! ClickHouse is an address nothing listens on: none of these requests
//! reaches storage, except the one that shows storage down is a 503.

use std::time::Duration;

use axum::http::StatusCode;
use pulse_common::config::ClickHouseArgs;
use pulse_common::shutdown::Shutdown;
use serde_json::json;

use super::*;
use crate::cache::CacheArgs;
use crate::fanout::Feed;
use crate::limits::LimitArgs;
use crate::store::EventStore;
use crate::stream::Live;
use crate::stream_slots::StreamSlots;
use crate::test_support::{self, get};
use pulse_testkit::query_api::{
    claims_of, fixture, hs256, hs256_claims, rs256, ACME_ANALYST_KEY, HS256_SECRET,
};

fn router(rate_burst: u32) -> Router {
    let nowhere = ClickHouseArgs {
        url: "http://127.0.0.1:1".into(),
        database: "pulse".into(),
        user: "default".into(),
        password: String::new(),
        cluster: None,
    };
    let client = pulse_common::clickhouse::client(&nowhere);
    let (shutdown, _trigger) = Shutdown::new();
    let (log, _writer) = AuditLog::start(&nowhere, shutdown);
    let auth = test_support::authenticator();
    let state = AppState {
        store: EventStore::new(client.clone(), client, Duration::from_secs(1)),
        live: Live {
            feed: Feed::new(16, 16),
            jobs: crate::job_feed::JobFeed::new(16),
            heartbeat: Duration::from_secs(15),
            max_message_bytes: 1024,
            slots: StreamSlots::new(1),
        },
        auth: auth.clone(),
        files: pulse_common::files::FileStore::new(std::sync::Arc::new(
            object_store::memory::InMemory::new(),
        )),
        redirects: crate::files::Redirects(None),
        jobs: None,
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

#[tokio::test]
async fn every_route_checks_the_credential_and_the_role_before_anything_else() {
    let app = router(1000);
    let analyst = hs256("acme", "analyst");
    let dashboard = hs256("acme", "dashboard");
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
        (
            "/v1/files/0123456789abcdef0123456789abcdef",
            None,
            StatusCode::UNAUTHORIZED,
        ),
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
async fn forged_expired_confused_and_unknown_credentials_are_refused_on_every_route() {
    let app = router(1000);
    let forged = hs256_claims(
        &claims_of("acme", "admin", 3600),
        "not-the-secret-0123456789abcdefghij",
    );
    let expired = hs256_claims(&claims_of("acme", "admin", -3600), HS256_SECRET);
    // Signed with HS256 keyed by the RSA public key, as an algorithm
    // confusion attack would.
    let public_pem = std::fs::read_to_string(fixture("rs256-test-public.pem")).expect("public key");
    let confused = hs256_claims(&claims_of("acme", "admin", 3600), &public_pem);
    let cases: [(&str, Option<&str>, &str); 5] = [
        ("missing", None, "missing credentials"),
        ("forged", Some(&forged), "invalid token"),
        ("expired", Some(&expired), "token expired"),
        ("algorithm confusion", Some(&confused), "invalid token"),
        ("unknown key", Some("no-such-key"), "unknown API key"),
    ];
    for path in [
        "/v1/events",
        "/v1/events/acme-event-1",
        "/v1/anomalies",
        "/v1/devices",
        "/v1/devices/boiler-1/series",
        "/v1/aggregates",
        "/v1/export",
        "/v1/audit",
        "/v1/stream",
    ] {
        for (what, credential, reason) in cases {
            let (status, body) = get(&app, path, credential).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} on {path}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains(reason), "{what} on {path}: {body}");
            assert_eq!(body["field"], "authorization", "{what} on {path}");
        }
    }
    // The stream takes its credential from the query string too (a browser
    // cannot set headers on a WebSocket): the same refusals, and a role check.
    for (what, credential, reason) in cases {
        let path = match credential {
            Some(c) => format!("/v1/stream?access_token={c}"),
            None => "/v1/stream".to_string(),
        };
        let (status, body) = get(&app, &path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(reason)),
            "{what}: {body}"
        );
    }
    let analyst = rs256("acme", "analyst");
    let (status, _) = get(&app, &format!("/v1/stream?access_token={analyst}"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Elsewhere a query-string token is not a credential at all.
    let admin = hs256("acme", "admin");
    let (status, body) = get(&app, &format!("/v1/audit?access_token={admin}"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // The valid ones get past authentication: to storage, which is down.
    for credential in [hs256("acme", "admin"), rs256("acme", "admin")] {
        let (status, body) = get(&app, "/v1/events/e-1", Some(&credential)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    let (status, body) = get(&app, "/v1/events/e-1", Some(ACME_ANALYST_KEY)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

#[tokio::test]
async fn bad_parameters_are_named_before_storage_is_asked() {
    let app = router(1000);
    let analyst = hs256("acme", "analyst");
    let admin = hs256("acme", "admin");
    let between = "must be between";
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
        ("/v1/events?from_ms=-1", "from_ms", between),
        ("/v1/events?to_ms=4294967296000", "to_ms", between),
        ("/v1/anomalies?from_ms=-1", "from_ms", between),
        ("/v1/anomalies?limit=100000", "limit", between),
        ("/v1/devices?limit=abc", "query", "invalid digit"),
        (
            "/v1/devices/d-1/series?resolution_s=90",
            "resolution_s",
            "whole minutes",
        ),
        (
            "/v1/devices/d-1/series?resolution_s=61",
            "resolution_s",
            "whole minutes",
        ),
        (
            "/v1/devices/d-1/series?resolution_s=86460",
            "resolution_s",
            "whole minutes from 60 to 86400",
        ),
        ("/v1/aggregates?metric=a%20b", "metric", "reading's name"),
        (
            "/v1/aggregates?metric=temp%27%20OR%201%3D1",
            "metric",
            "reading's name",
        ),
        (
            "/v1/aggregates?group_by=tenant_id",
            "query",
            "unknown variant",
        ),
        ("/v1/aggregates?limit=0", "limit", between),
        ("/v1/aggregates?to_ms=-5", "to_ms", between),
        ("/v1/export?format=xlsx", "query", "unknown variant"),
        ("/v1/export?format=xml", "query", "unknown variant"),
        ("/v1/export?to_ms=4294967296000", "to_ms", between),
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
    let analyst = hs256("acme", "analyst");
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
        Some(&hs256("globex", "analyst")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, doc) = get(&app, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["info"]["title"], "Pulse query API");
}

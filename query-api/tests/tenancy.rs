//! Tenant isolation on every route of the query API, against the real
//! ClickHouse: two tenants' events are stored, and each caller sees only
//! its own tenant's, whatever it sends; SQL injection attempts in every
//! parameter find nothing. (Forged, expired, wrong-algorithm and unknown
//! credentials are refused on the router itself: `src/app/tests.rs`.)
//! Run through `./dev test`.

use pulse_testkit::query_api as support;

use reqwest::StatusCode;
use serde_json::Value;
use support::{row, start_api, Api};

const INJECTIONS: &[&str] = &[
    "' OR '1'='1",
    "x' OR tenant_id='globex",
    "1; DROP TABLE events --",
    "\\' OR 1=1 --",
    "acme' UNION SELECT * FROM events --",
];

/// Two tenants' events in a fresh database, and the API over it.
async fn start() -> Api {
    start_api(&[
        row("acme", "boiler-1", "acme-event-1"),
        row("acme", "boiler-2", "acme-event-2"),
        row("globex", "boiler-1", "globex-event-1"),
    ])
    .await
}

fn ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["event_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn each_caller_sees_only_its_own_tenant() {
    let api = start().await;
    let acme = support::hs256("acme", "analyst");
    let globex = support::rs256("globex", "analyst");

    // Each tenant lists its own events, by JWT (HS256, RS256) or API key.
    let (status, body) = api.get("/v1/events", Some(&acme)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body), ["acme-event-1", "acme-event-2"]);
    let (status, body) = api.get("/v1/events", Some(&globex)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body), ["globex-event-1"]);
    let (_, body) = api.get("/v1/events", Some(support::ACME_ANALYST_KEY)).await;
    assert_eq!(ids(&body), ["acme-event-1", "acme-event-2"]);

    // Another tenant's event id is not found; a shared source id shows only
    // the caller's rows.
    let (status, _) = api.get("/v1/events/acme-event-1", Some(&globex)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api.get("/v1/events/acme-event-1", Some(&acme)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["tenant_id"], "acme");
    let (_, body) = api
        .get("/v1/events?source_id=boiler-1", Some(&globex))
        .await;
    assert_eq!(ids(&body), ["globex-event-1"]);

    // No parameter names the tenant: trying is an error, not a wider view.
    let (status, body) = api.get("/v1/events?tenant_id=acme", Some(&globex)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "query");

    // Injection attempts in every parameter find nothing.
    for attempt in INJECTIONS {
        let q = url::form_urlencoded::byte_serialize(attempt.as_bytes()).collect::<String>();
        let (status, body) = api
            .get(&format!("/v1/events?source_id={q}"), Some(&globex))
            .await;
        assert_eq!(status, StatusCode::OK, "{attempt}: {body}");
        assert_eq!(ids(&body), Vec::<String>::new(), "{attempt}");
        let path = url::form_urlencoded::byte_serialize(attempt.as_bytes()).collect::<String>();
        let (status, _) = api.get(&format!("/v1/events/{path}"), Some(&globex)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{attempt}");
        let (status, _) = api
            .get(&format!("/v1/events?limit={q}"), Some(&globex))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{attempt}");
    }
    // The other reads: globex sees its one device and event, whatever the
    // parameters say.
    let (_, body) = api.get("/v1/devices", Some(&globex)).await;
    assert_eq!(body["devices"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["devices"][0]["events"], 1, "{body}");
    let (_, body) = api.get("/v1/aggregates", Some(&globex)).await;
    assert_eq!(body["groups"][0]["count"], 1, "{body}");
    assert_eq!(body["groups"].as_array().map(Vec::len), Some(1), "{body}");
    let (_, body) = api.get("/v1/devices/boiler-1/series", Some(&globex)).await;
    let counted: u64 = body["buckets"]
        .as_array()
        .map(|b| b.iter().filter_map(|b| b["events"].as_u64()).sum())
        .unwrap_or_default();
    assert_eq!(counted, 1, "{body}");
    for attempt in INJECTIONS {
        let q = url::form_urlencoded::byte_serialize(attempt.as_bytes()).collect::<String>();
        let (status, body) = api
            .get(&format!("/v1/aggregates?source_id={q}"), Some(&globex))
            .await;
        assert_eq!(status, StatusCode::OK, "{attempt}: {body}");
        assert_eq!(
            body["groups"].as_array().map(Vec::len),
            Some(0),
            "{attempt}"
        );
        let (status, _) = api
            .get(&format!("/v1/aggregates?metric={q}"), Some(&globex))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{attempt}");
        let (_, body) = api
            .get(&format!("/v1/devices/{q}/series"), Some(&globex))
            .await;
        assert_eq!(
            body["buckets"].as_array().map(Vec::len),
            Some(0),
            "{attempt}"
        );
    }
    // The table is intact.
    let (_, body) = api.get("/v1/events", Some(&acme)).await;
    assert_eq!(ids(&body), ["acme-event-1", "acme-event-2"]);
}

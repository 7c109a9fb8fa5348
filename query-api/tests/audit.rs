//! The audit trail: every request, allowed or refused, is a row in
//! ClickHouse with who, tenant, route, parameters, rows returned, status and
//! latency; a tenant's admins can search their tenant's records and no one
//! else's; the trail and exports never pass through the response cache.
//! Run through `./dev test`.

use pulse_testkit::query_api as support;
use std::time::Duration;

use pulse_testkit::poll_until;
use reqwest::StatusCode;
use serde_json::Value;
use support::{row, start_api};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn every_request_is_recorded_and_only_admins_see_their_tenant() {
    let api = start_api(&[
        row("acme", "boiler-1", "acme-event-1"),
        row("acme", "boiler-2", "acme-event-2"),
        row("globex", "boiler-1", "globex-event-1"),
    ])
    .await;
    let analyst = support::hs256("acme", "analyst");
    let admin = support::hs256("acme", "admin");
    let globex = support::hs256("globex", "admin");

    let requests: [(&str, Option<&str>, StatusCode); 7] = [
        ("/v1/events?limit=10", Some(&analyst), StatusCode::OK),
        ("/v1/export?format=csv", Some(&analyst), StatusCode::OK),
        ("/v1/export?format=ndjson", Some(&analyst), StatusCode::OK),
        ("/v1/events/acme-event-1", Some(&analyst), StatusCode::OK),
        (
            "/v1/events/acme-event-1",
            Some(&globex),
            StatusCode::NOT_FOUND,
        ),
        ("/v1/events", None, StatusCode::UNAUTHORIZED),
        ("/v1/audit", Some(&analyst), StatusCode::FORBIDDEN),
    ];
    for (path, credential, expected) in requests {
        let (status, body) = api.get(path, credential).await;
        assert_eq!(status, expected, "{path}: {body}");
    }

    // acme's admin finds acme's five requests (and its own searches). An
    // export is recorded when its stream ends, with the rows it sent.
    let records = poll_until(
        "acme's requests in the audit trail",
        Duration::from_secs(15),
        || async {
            let (status, body) = api.get("/v1/audit?limit=100", Some(&admin)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let records = body["records"].as_array().cloned().unwrap_or_default();
            let analysts: Vec<Value> = records
                .into_iter()
                .filter(|r| r["caller"] == "analyst@acme")
                .collect();
            (analysts.len() == 5).then_some(analysts)
        },
    )
    .await;
    let mut seen: Vec<(String, String, u64, u64)> = records
        .iter()
        .map(|r| {
            (
                r["route"].as_str().unwrap_or_default().to_string(),
                r["params"].as_str().unwrap_or_default().to_string(),
                r["status"].as_u64().unwrap_or_default(),
                r["rows"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("/v1/audit".to_string(), String::new(), 403, 0),
            ("/v1/events".to_string(), "limit=10".to_string(), 200, 2),
            ("/v1/events/{event_id}".to_string(), String::new(), 200, 1),
            ("/v1/export".to_string(), "format=csv".to_string(), 200, 2),
            (
                "/v1/export".to_string(),
                "format=ndjson".to_string(),
                200,
                2
            ),
        ]
    );
    assert!(records
        .iter()
        .all(|r| r["tenant"] == "acme" && r["role"] == "analyst"));
    assert!(records
        .iter()
        .all(|r| r["latency_ms"].as_f64().is_some_and(|l| l > 0.0)));

    // globex's admin sees globex's request, none of acme's.
    let (_, body) = api.get("/v1/audit?limit=100", Some(&globex)).await;
    let records = body["records"].as_array().cloned().unwrap_or_default();
    assert!(records.iter().all(|r| r["tenant"] == "globex"), "{body}");
    assert!(records
        .iter()
        .any(|r| r["route"] == "/v1/events/{event_id}" && r["status"] == 404));

    // The refused request has no tenant, but it is in the table.
    let refused: u64 = api
        .clickhouse
        .query("SELECT count() FROM audit WHERE status = 401 AND caller = ''")
        .fetch_one()
        .await
        .expect("audit table readable");
    assert_eq!(refused, 1);

    // The cache is on (the default TTL): a read repeated at once is a hit.
    // The audit trail is read afresh every time, and an export is never
    // held: neither passes through it.
    let http = reqwest::Client::new();
    let cache_of = |path: &'static str, token: String| {
        let request = http.get(format!("{}{path}", api.url)).bearer_auth(token);
        async move {
            let r = request.send().await.expect("API answers");
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let header = |name| {
                r.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            (header("x-cache"), header("etag").is_empty())
        }
    };
    cache_of("/v1/devices", analyst.clone()).await;
    assert_eq!(
        cache_of("/v1/devices", analyst.clone()).await,
        ("hit".to_string(), false)
    );
    for path in ["/v1/audit", "/v1/audit", "/v1/export?format=ndjson"] {
        assert_eq!(
            cache_of(path, admin.clone()).await,
            (String::new(), true),
            "{path}"
        );
    }
}

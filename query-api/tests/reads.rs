//! The analyst's reads against the real ClickHouse: keyset pagination walks
//! a range exactly once, the anomalies feed holds only flagged events, the
//! device list and time series come from the rollup with the right totals,
//! and another tenant sees none of it. (Bad parameters are named on the
//! router itself: `src/app/tests.rs`.) Run through
//! `./dev test`.

use pulse_testkit::query_api as support;
use std::collections::BTreeSet;

use pulse_common::clock::now_ms;
use pulse_common::scored::ScoredEvent;
use reqwest::StatusCode;
use serde_json::Value;
use support::{row_at, start_api, Api};

const ACME_EVENTS: i64 = 240;

/// 240 events of tenant acme, two devices alternating every half second
/// over two whole minutes, every tenth flagged; five of tenant globex.
fn rows(base_ms: i64) -> Vec<ScoredEvent> {
    let mut rows: Vec<ScoredEvent> = (0..ACME_EVENTS)
        .map(|i| {
            let mut r = row_at(
                "acme",
                &format!("device-{}", i % 2),
                &format!("acme-{i:04}"),
                base_ms + i * 500,
            );
            r.is_anomaly = u8::from(i % 10 == 0);
            r.score = if i % 10 == 0 { 0.9 } else { 0.1 };
            r
        })
        .collect();
    rows.extend((0..5).map(|i| row_at("globex", "device-0", &format!("globex-{i}"), base_ms + i)));
    rows
}

/// Every page of `path` (which takes `limit` and `cursor`), in order.
async fn walk(api: &Api, path: &str, token: &str) -> (Vec<Value>, Vec<usize>) {
    let mut events = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_string(),
        };
        let (status, body) = api.get(&url, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        let page = body["events"].as_array().cloned().unwrap_or_default();
        sizes.push(page.len());
        events.extend(page);
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (events, sizes),
        }
        assert!(sizes.len() < 100, "pagination does not end");
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn pages_feeds_devices_and_series_of_one_tenant() {
    // Two whole minutes, ten minutes ago.
    let base = (now_ms() / 60_000 - 10) * 60_000;
    let api = start_api(&rows(base)).await;
    let acme = support::hs256("acme", "analyst");
    let globex = support::hs256("globex", "analyst");

    // Keyset pages: every event once, newest first, the last page short.
    let (events, sizes) = walk(&api, "/v1/events?limit=100", &acme).await;
    assert_eq!(sizes, [100, 100, 40]);
    let expected: Vec<String> = (0..ACME_EVENTS)
        .rev()
        .map(|i| format!("acme-{i:04}"))
        .collect();
    assert_eq!(ids(&events), expected);
    let (events, _) = walk(&api, "/v1/events?source_id=device-1&limit=1000", &acme).await;
    assert_eq!(events.len(), 120);
    assert!(events.iter().all(|e| e["source_id"] == "device-1"));
    // A range: the first minute only.
    let (events, _) = walk(
        &api,
        &format!("/v1/events?from_ms={base}&to_ms={}&limit=50", base + 60_000),
        &acme,
    )
    .await;
    assert_eq!(events.len(), 120);

    // The anomalies feed: only flagged events, all of them.
    let (events, sizes) = walk(&api, "/v1/anomalies?limit=10", &acme).await;
    assert_eq!(sizes, [10, 10, 4]);
    assert!(events.iter().all(|e| e["is_anomaly"] == 1));
    let expected: Vec<String> = (0..ACME_EVENTS)
        .rev()
        .filter(|i| i % 10 == 0)
        .map(|i| format!("acme-{i:04}"))
        .collect();
    assert_eq!(ids(&events), expected);

    // Devices and their totals, from the rollup.
    let (status, body) = api.get("/v1/devices", Some(&acme)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let devices = body["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(devices.len(), 2);
    // Every tenth event is even, so device-0's.
    let totals: Vec<(String, u64, u64)> = devices
        .iter()
        .map(|d| {
            (
                d["source_id"].as_str().unwrap_or_default().to_string(),
                d["events"].as_u64().unwrap_or(0),
                d["anomalies"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        totals,
        [("device-0".into(), 120, 24), ("device-1".into(), 120, 0)]
    );

    // A device's series: per minute, then per hour; totals agree.
    let series = format!(
        "/v1/devices/device-0/series?from_ms={base}&to_ms={}",
        base + 180_000
    );
    let (status, body) = api
        .get(&format!("{series}&resolution_s=60"), Some(&acme))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let buckets = body["buckets"].as_array().cloned().unwrap_or_default();
    let counts: Vec<u64> = buckets
        .iter()
        .map(|b| b["events"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(counts, [60, 60]);
    assert_eq!(buckets[0]["bucket"].as_i64(), Some(base / 1000));
    let (_, body) = api
        .get(&format!("{series}&resolution_s=3600"), Some(&acme))
        .await;
    let hourly = body["buckets"].as_array().cloned().unwrap_or_default();
    let total: u64 = hourly
        .iter()
        .map(|b| b["events"].as_u64().unwrap_or(0))
        .sum();
    let anomalies: u64 = hourly
        .iter()
        .map(|b| b["anomalies"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!((total, anomalies), (120, 24));

    // Every pair of valid bounds is a valid request: a range that ends
    // before it starts is empty, and a series over more than 10000 buckets
    // is its last 10000, saying where it starts.
    let (status, body) = api.get("/v1/events?from_ms=10&to_ms=5", Some(&acme)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"], Value::Array(vec![]), "{body}");
    let to_ms = base + 3_600_000;
    let (status, body) = api
        .get(
            &format!("/v1/devices/device-0/series?from_ms=0&to_ms={to_ms}&resolution_s=60"),
            Some(&acme),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["from_ms"].as_i64(), Some(to_ms - 10_000 * 60_000));
    assert_eq!(body["buckets"].as_array().map(Vec::len), Some(2), "{body}");

    // The other tenant sees only its own, on every read.
    let (events, _) = walk(&api, "/v1/events?limit=2", &globex).await;
    let seen: BTreeSet<String> = ids(&events).into_iter().collect();
    assert_eq!(seen, (0..5).map(|i| format!("globex-{i}")).collect());
    let (events, _) = walk(&api, "/v1/anomalies", &globex).await;
    assert!(events.is_empty());
    let (_, body) = api.get("/v1/devices", Some(&globex)).await;
    assert_eq!(body["devices"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["devices"][0]["events"], 5);
    let (_, body) = api
        .get(&format!("{series}&resolution_s=60"), Some(&globex))
        .await;
    let counts: Vec<u64> = body["buckets"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|b| b["events"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(counts, [5]);
    let (_, body) = api
        .get(
            &format!(
                "/v1/devices/device-1/series?from_ms={base}&to_ms={}",
                base + 180_000
            ),
            Some(&globex),
        )
        .await;
    assert_eq!(body["buckets"], Value::Array(vec![]));
}

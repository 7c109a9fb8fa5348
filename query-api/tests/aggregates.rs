//! Aggregates against the real ClickHouse: counts, means, extremes and
//! quantiles per device, per kind and overall match the values computed
//! here from the same rows; redelivered copies count once (in pages too); another tenant's
//! rows never enter; a query past the row limit
//! is refused with a clear 422 (ClickHouse 18.16 counts rows read from the
//! rollup, not under FINAL). Run through `./dev test`.

use pulse_common::clock::now_ms;
use pulse_common::scored::ScoredEvent;
use pulse_testkit::query_api as support;
use reqwest::StatusCode;
use serde_json::Value;
use support::{row_at, start_api, start_api_with};

/// Device `d{k}` sends temperatures 1..=100 plus 10*k, score k/10 .. ;
/// one event is stored twice (a redelivery), and tenant globex has a device
/// with huge readings that must not show.
fn rows(base_ms: i64) -> Vec<ScoredEvent> {
    let mut rows = Vec::new();
    for k in 0..3i64 {
        for i in 1..=100i64 {
            let mut r = row_at(
                "acme",
                &format!("d{k}"),
                &format!("acme-{k}-{i:03}"),
                base_ms + i * 10,
            );
            r.reading_values = vec![(i + 10 * k) as f64];
            r.score = (k as f32) / 10.0;
            rows.push(r);
        }
    }
    let mut copy = rows[0].clone();
    copy.processed_ms += 1000;
    rows.push(copy);
    let mut other = row_at("globex", "d0", "globex-1", base_ms + 5);
    other.reading_values = vec![1e9];
    rows.push(other);
    rows
}

fn group<'a>(body: &'a Value, key: &str) -> &'a Value {
    body["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["key"] == key))
        .unwrap_or_else(|| panic!("no group {key} in {body}"))
}

fn close(v: &Value, expected: f64) -> bool {
    v.as_f64().is_some_and(|v| (v - expected).abs() < 1e-6)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn statistics_per_group_match_the_rows() {
    let base = now_ms() - 3_600_000;
    let api = start_api(&rows(base)).await;
    let acme = support::hs256("acme", "analyst");
    let range = format!("from_ms={}&to_ms={}", base, base + 10_000);

    let (status, body) = api
        .get(
            &format!("/v1/aggregates?metric=temperature_c&{range}"),
            Some(&acme),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["groups"].as_array().map(Vec::len), Some(3), "{body}");
    for k in 0..3 {
        let g = group(&body, &format!("d{k}"));
        let offset = 10.0 * k as f64;
        // The redelivered copy of acme-0-001 counts once.
        assert_eq!(g["count"], 100, "{g}");
        assert!(close(&g["avg"], 50.5 + offset), "{g}");
        assert!(close(&g["min"], 1.0 + offset), "{g}");
        assert!(close(&g["max"], 100.0 + offset), "{g}");
        // Quantiles of 1..=100: between the neighbouring ranks.
        for (name, q) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0)] {
            let v = g[name].as_f64().unwrap_or(f64::NAN) - offset;
            assert!((q..=q + 1.0).contains(&v), "{name} of d{k}: {g}");
        }
    }

    // Pages list the redelivered event once too.
    let (_, body) = api
        .get(
            &format!("/v1/events?source_id=d0&limit=1000&{range}"),
            Some(&acme),
        )
        .await;
    let ids: std::collections::BTreeSet<&str> = body["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["event_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(body["events"].as_array().map(Vec::len), Some(100), "{body}");
    assert_eq!(ids.len(), 100);

    let (status, body) = api
        .get(
            &format!("/v1/aggregates?metric=score&group_by=none&{range}"),
            Some(&acme),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let all = group(&body, "");
    assert_eq!(all["count"], 300, "{body}");
    assert!(close(&all["max"], 0.2_f32 as f64), "{body}");

    let (_, body) = api
        .get(
            &format!("/v1/aggregates?metric=temperature_c&group_by=kind&source_id=d2&{range}"),
            Some(&acme),
        )
        .await;
    let telemetry = group(&body, "telemetry");
    assert_eq!(telemetry["count"], 100, "{body}");
    assert!(close(&telemetry["min"], 21.0), "{body}");

    // A reading no event has: no groups. Another tenant: only its own row.
    let (_, body) = api
        .get(
            &format!("/v1/aggregates?metric=pressure&{range}"),
            Some(&acme),
        )
        .await;
    assert_eq!(body["groups"].as_array().map(Vec::len), Some(0), "{body}");
    let globex = support::hs256("globex", "analyst");
    let (_, body) = api
        .get(
            &format!("/v1/aggregates?metric=temperature_c&{range}"),
            Some(&globex),
        )
        .await;
    assert_eq!(group(&body, "d0")["count"], 1, "{body}");
    assert_eq!(body["groups"].as_array().map(Vec::len), Some(1), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn queries_past_the_row_limit_are_refused_clearly() {
    // 3 devices x 100 minutes: 300 rows in the per-minute rollup.
    let base = (now_ms() / 60_000 - 200) * 60_000;
    let rows: Vec<ScoredEvent> = (0..300i64)
        .map(|i| {
            row_at(
                "acme",
                &format!("d{}", i % 3),
                &format!("e{i}"),
                base + i / 3 * 60_000,
            )
        })
        .collect();
    let api = start_api_with(&rows, &[("PULSE_QUERY_MAX_ROWS", "50")]).await;
    let acme = support::hs256("acme", "analyst");
    let range = format!("from_ms={}&to_ms={}", base, base + 101 * 60_000);
    for path in [
        "/v1/devices".to_string(),
        format!("/v1/devices/d0/series?{range}"),
    ] {
        let (status, body) = api.get(&path, Some(&acme)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_eq!(body["field"], "query", "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("rows") && e.contains("narrow")),
            "{body}"
        );
    }
}

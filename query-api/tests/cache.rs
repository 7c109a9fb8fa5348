//! Short-lived caching of hot reads against the real ClickHouse: a repeat
//! within the TTL is answered from memory (stale by design), an ETag sent
//! back gets 304, another tenant never gets the cached answer, and after the
//! TTL the answer is fresh again. Run through `./dev test`.

mod support;

use std::time::Duration;

use pulse_testkit::poll_until;
use reqwest::{header, StatusCode};
use serde_json::Value;
use support::{row, start_api_with};

struct Answer {
    status: StatusCode,
    cache: String,
    etag: String,
    cache_control: String,
    body: String,
}

async fn get(url: &str, token: &str, if_none_match: Option<&str>) -> Answer {
    let mut req = reqwest::Client::new().get(url).bearer_auth(token);
    if let Some(tag) = if_none_match {
        req = req.header(header::IF_NONE_MATCH, tag);
    }
    let r = req.send().await.expect("API answers");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    Answer {
        status: r.status(),
        cache: header("x-cache"),
        etag: header("etag"),
        cache_control: header("cache-control"),
        body: r.text().await.unwrap_or_default(),
    }
}

fn devices(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    v["devices"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|d| d["source_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn repeats_are_served_from_a_per_tenant_cache_until_the_ttl() {
    let rows = [row("acme", "d1", "a1"), row("globex", "g1", "g1")];
    let api = start_api_with(&rows, &[("PULSE_QUERY_CACHE_TTL_MS", "3000")]).await;
    let acme = support::hs256("acme", "analyst");
    let url = format!("{}/v1/devices", api.url);

    let first = get(&url, &acme, None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.cache, "miss");
    assert_eq!(first.cache_control, "private, max-age=3");
    assert!(
        first.etag.starts_with('"') && first.etag.len() == 34,
        "{}",
        first.etag
    );
    assert_eq!(devices(&first.body), ["d1"]);

    // A new device, then a repeat within the TTL: the cached answer.
    let mut insert = api
        .clickhouse
        .insert::<pulse_common::scored::ScoredEvent>("events")
        .await
        .expect("insert");
    insert.write(&row("acme", "d2", "a2")).await.expect("row");
    insert.end().await.expect("stored");
    let repeat = get(&url, &acme, None).await;
    assert_eq!(
        (repeat.cache.as_str(), repeat.body.as_str()),
        ("hit", first.body.as_str())
    );
    assert_eq!(repeat.etag, first.etag);

    let revalidated = get(&url, &acme, Some(&first.etag)).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.body, "");
    assert_eq!(revalidated.etag, first.etag);

    // Another tenant's identical request is its own entry.
    let globex = support::hs256("globex", "analyst");
    let other = get(&url, &globex, None).await;
    assert_eq!(other.cache, "miss");
    assert_eq!(devices(&other.body), ["g1"]);

    // After the TTL the answer is fresh, with a new ETag; the old one no
    // longer matches.
    let fresh = poll_until("a fresh answer", Duration::from_secs(15), || async {
        let a = get(&url, &acme, Some(&first.etag)).await;
        (a.status == StatusCode::OK).then_some(a)
    })
    .await;
    assert_eq!(devices(&fresh.body), ["d1", "d2"]);
    assert_ne!(fresh.etag, first.etag);

    // The audit trail is always read afresh, and an export is never held.
    let admin = support::hs256("acme", "admin");
    for path in ["/v1/audit", "/v1/audit", "/v1/export?format=ndjson"] {
        let a = get(&format!("{}{path}", api.url), &admin, None).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        assert_eq!((a.cache.as_str(), a.etag.as_str()), ("", ""), "{path}");
    }
}

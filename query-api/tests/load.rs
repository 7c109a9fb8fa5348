//! Load and limits: 1000 sequential and 100 parallel requests all answered
//! without an error; a caller over its rate limit gets 429 with Retry-After
//! while other callers go on. Run through `./dev test`.

use futures::future::join_all;
use pulse_testkit::query_api as support;
use reqwest::StatusCode;
use support::{row, start_api, start_api_with};

fn rows() -> Vec<pulse_common::scored::ScoredEvent> {
    vec![
        row("acme", "boiler-1", "acme-event-1"),
        row("acme", "boiler-2", "acme-event-2"),
        row("globex", "boiler-1", "globex-event-1"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_thousand_sequential_and_a_hundred_parallel_requests_succeed() {
    let api = start_api(&rows()).await;
    let token = support::hs256("acme", "analyst");
    for i in 0..1000 {
        let (status, body) = api.get("/v1/events?limit=10", Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
        assert_eq!(
            body["events"].as_array().map(Vec::len),
            Some(2),
            "request {i}"
        );
    }
    let answers = join_all((0..100).map(|_| api.get("/v1/events?limit=10", Some(&token)))).await;
    let ok = answers
        .iter()
        .filter(|(s, b)| *s == StatusCode::OK && b["events"].as_array().map(Vec::len) == Some(2))
        .count();
    assert_eq!(ok, 100);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_caller_over_its_rate_gets_429_and_others_go_on() {
    let api = start_api_with(
        &rows(),
        &[
            ("PULSE_QUERY_RATE_LIMIT", "1"),
            ("PULSE_QUERY_RATE_BURST", "3"),
        ],
    )
    .await;
    let acme = support::hs256("acme", "analyst");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(api.get("/v1/events", Some(&acme)).await.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let response = reqwest::Client::new()
        .get(format!("{}/v1/events", api.url))
        .bearer_auth(&acme)
        .send()
        .await
        .expect("API answers");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["field"], "authorization");
    // Another caller has its own allowance.
    let (status, _) = api
        .get("/v1/events", Some(&support::hs256("globex", "analyst")))
        .await;
    assert_eq!(status, StatusCode::OK);
}

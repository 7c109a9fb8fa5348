//! The audit trail while ClickHouse is down: requests answered during the
//! outage (reads refused with 503, credentials refused with 401) are still
//! recorded, every one of them, once ClickHouse is back; none is lost and
//! none is written twice. Uses a ClickHouse server of its own. Run through
//! `./dev test`.

use pulse_testkit::query_api as support;
use pulse_testkit::ScriptedServer;
use reqwest::StatusCode;
use support::{row, start_api_on};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn requests_during_an_outage_are_recorded_once_clickhouse_is_back() {
    let server = ScriptedServer::clickhouse();
    tokio::task::block_in_place(|| server.start());
    let url = format!("http://127.0.0.1:{}", server.port());
    // No response cache: a read answered from it while ClickHouse is down
    // would depend on how fast the server stopped, not on the API.
    let api = start_api_on(
        &url,
        &[row("acme", "boiler-1", "acme-event-1")],
        &[("PULSE_QUERY_CACHE_TTL_MS", "0")],
    )
    .await;
    let analyst = support::hs256("acme", "analyst");

    for _ in 0..3 {
        let (status, body) = api.get("/v1/events/acme-event-1", Some(&analyst)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    tokio::task::block_in_place(|| server.stop());
    for _ in 0..5 {
        let (status, body) = api.get("/v1/events/acme-event-1", Some(&analyst)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    for _ in 0..2 {
        let (status, _) = api.get("/v1/events", Some("no-such-key")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    tokio::task::block_in_place(|| server.start());

    let statuses = api.audit_statuses(10).await;
    assert_eq!(statuses, [(200, 3), (401, 2), (503, 5)]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn sigterm_during_an_outage_ends_the_api_within_its_drain_bound() {
    let server = ScriptedServer::clickhouse();
    tokio::task::block_in_place(|| server.start());
    let url = format!("http://127.0.0.1:{}", server.port());
    let mut api = start_api_on(&url, &[], &[("PULSE_QUERY_CACHE_TTL_MS", "0")]).await;
    let analyst = support::hs256("acme", "analyst");
    tokio::task::block_in_place(|| server.stop());
    // Answered 503, their audit records queued behind a ClickHouse that is down.
    for _ in 0..3 {
        let (status, body) = api.get("/v1/events", Some(&analyst)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    // Service::stop waits 20 s (the drain bound of the tests) for the exit.
    let status = tokio::task::block_in_place(|| api.service_mut().stop());
    let status = status.expect("the API did not exit within 20 s of SIGTERM");
    assert!(status.success(), "exited with {status}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn records_clickhouse_refuses_for_good_are_dropped_and_counted_not_queued() {
    let api = support::start_api_with(
        &[row("acme", "boiler-1", "acme-event-1")],
        &[("PULSE_QUERY_CACHE_TTL_MS", "0")],
    )
    .await;
    let analyst = support::hs256("acme", "analyst");
    api.clickhouse
        .query("DROP TABLE audit")
        .execute()
        .await
        .expect("audit table dropped");
    for _ in 0..3 {
        let (status, body) = api.get("/v1/events/acme-event-1", Some(&analyst)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let service = api.service();
    let lost = pulse_testkit::poll_until(
        "the refused records counted",
        std::time::Duration::from_secs(30),
        || async move {
            service
                .metric("pulse_query_audit_records_lost_total")
                .await
                .filter(|n| *n >= 3.0)
        },
    )
    .await;
    assert_eq!(lost, 3.0, "each refused record counted once");
    // Still answering: nothing waits behind the refused records.
    let (status, _) = api.get("/v1/events/acme-event-1", Some(&analyst)).await;
    assert_eq!(status, StatusCode::OK);
}

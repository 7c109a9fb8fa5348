//! A ClickHouse that accepts reads and never answers them (frozen with
//! SIGSTOP): the API gives each read up a little after its query time limit
//! and answers 504 instead of holding the caller, recovers when ClickHouse
//! does, and every request is in the audit trail. Uses a ClickHouse server
//! of its own. Run through `./dev test`.

mod support;

use std::time::Duration;

use pulse_common::testkit::ScriptedServer;
use reqwest::StatusCode;
use support::{row, start_api_on};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn reads_from_a_hung_clickhouse_end_in_504() {
    let server = ScriptedServer::clickhouse();
    tokio::task::block_in_place(|| server.start());
    let url = format!("http://127.0.0.1:{}", server.port());
    let api = start_api_on(
        &url,
        &[row("acme", "boiler-1", "acme-event-1")],
        // Without the cache, every read goes to ClickHouse.
        &[
            ("PULSE_QUERY_TIMEOUT_S", "1"),
            ("PULSE_QUERY_CACHE_TTL_MS", "0"),
        ],
    )
    .await;
    let analyst = support::hs256("acme", "analyst");
    let (status, body) = api.get("/v1/events/acme-event-1", Some(&analyst)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    tokio::task::block_in_place(|| server.freeze());
    for path in ["/v1/events/acme-event-1", "/v1/devices"] {
        // Only a hang reaches this bound; the API's own is 1 s + 2 s.
        let answered =
            tokio::time::timeout(Duration::from_secs(60), api.get(path, Some(&analyst))).await;
        let Ok((status, body)) = answered else {
            panic!("{path}: no answer while ClickHouse hung");
        };
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{path}: {body}");
        assert_eq!(body["field"], "query", "{path}: {body}");
    }
    tokio::task::block_in_place(|| server.thaw());

    let (status, body) = api.get("/v1/events/acme-event-1", Some(&analyst)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event_id"], "acme-event-1", "{body}");
    let statuses = api.audit_statuses(4).await;
    assert_eq!(statuses, [(200, 2), (504, 2)]);
}

//! A ClickHouse that stops answering (frozen with SIGSTOP): the API gives a
//! read up a little after its query time limit and answers 504, and ends an
//! export that stopped receiving bytes as failed, instead of holding the
//! caller; it recovers when ClickHouse does, and every request is in the
//! audit trail. Each test uses a ClickHouse server of its own. Run through
//! `./dev test`.

use pulse_testkit::query_api as support;
use std::time::Duration;

use pulse_common::clock::now_ms;
use pulse_testkit::ScriptedServer;
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

const EXPORTED: u64 = 200_000;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn an_export_clickhouse_stops_sending_ends_as_failed() {
    let server = ScriptedServer::clickhouse();
    tokio::task::block_in_place(|| server.start());
    let url = format!("http://127.0.0.1:{}", server.port());
    // 5 s without a byte: long enough that a busy machine's slow first
    // bytes are not taken for the freeze.
    let api = start_api_on(&url, &[], &[("PULSE_EXPORT_IDLE_TIMEOUT_S", "5")]).await;
    // About 110 MB of CSV: far more than the sockets between ClickHouse,
    // the API and this client hold, so most of it is still to be sent when
    // ClickHouse freezes.
    api.generate_events("acme", EXPORTED, now_ms() - 1000, 300)
        .await;
    let token = support::hs256("acme", "analyst");
    let mut response = api.start_export("format=csv", &token).await;
    let first = response.chunk().await.expect("a first chunk");
    assert!(first.is_some_and(|c| !c.is_empty()));
    tokio::task::block_in_place(|| server.freeze());

    // Only a hang reaches this bound; the API's own is 5 s without a byte.
    let read_rest = async {
        let mut lines = 0u64;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => lines += chunk.iter().filter(|b| **b == b'\n').count() as u64,
                Ok(None) => return (lines, true),
                Err(_) => return (lines, false),
            }
        }
    };
    let Ok((lines, complete)) = tokio::time::timeout(Duration::from_secs(60), read_rest).await
    else {
        panic!("the export hung with ClickHouse");
    };
    assert!(
        !complete,
        "the export ended as if complete after {lines} lines"
    );
    assert!(lines < EXPORTED, "{lines} lines after ClickHouse froze");
    tokio::task::block_in_place(|| server.thaw());

    assert_eq!(api.audit_statuses(1).await, [(500, 1)]);
    let rows: u64 = api
        .clickhouse
        .query("SELECT rows FROM audit WHERE route = '/v1/export'")
        .fetch_one()
        .await
        .expect("the export's audit record");
    eprintln!(
        "export of {EXPORTED} broke off: {lines} lines read after the freeze, {rows} rows audited"
    );
    assert!(rows > 0 && rows < EXPORTED, "audited rows {rows}");
}

//! The query API as deployed: it reads as a ClickHouse user with
//! `readonly = 2` (no writes, per-query settings allowed) and writes its
//! audit trail as another user. It becomes ready, answers queries and
//! records its audit trail, while its reader cannot write.
//! Run through `./dev test`.

use pulse_testkit::query_api as support;
use std::time::Duration;

use pulse_testkit::{poll_until, Stack};
use reqwest::StatusCode;
use support::{row, start_api_with};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_read_only_reader_and_a_separate_audit_writer_serve_the_api() {
    let api = start_api_with(
        &[row("acme", "boiler-1", "acme-event-1")],
        &[
            ("PULSE_CLICKHOUSE_USER", "pulse_reader"),
            ("PULSE_AUDIT_CLICKHOUSE_USER", "default"),
        ],
    )
    .await;
    let analyst = support::hs256("acme", "analyst");
    let (status, body) = api.get("/v1/events?limit=10", Some(&analyst)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"][0]["event_id"], "acme-event-1", "{body}");

    let admin = support::hs256("acme", "admin");
    poll_until(
        "the read in the audit trail",
        Duration::from_secs(15),
        || async {
            let (status, body) = api.get("/v1/audit?limit=100", Some(&admin)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let records = body["records"].as_array().cloned().unwrap_or_default();
            records
                .iter()
                .any(|r| r["caller"] == "analyst@acme" && r["route"] == "/v1/events")
                .then_some(())
        },
    )
    .await;

    // The reader itself may not write.
    let stack = Stack::from_env();
    let refused = reqwest::Client::new()
        .post(format!("{}/?user=pulse_reader", stack.clickhouse_url))
        .body("CREATE TABLE default.reader_may_not_write (a UInt8) ENGINE = Memory")
        .send()
        .await
        .expect("ClickHouse answers");
    let status = refused.status();
    let text = refused.text().await.unwrap_or_default();
    assert!(
        !status.is_success() && text.contains("readonly"),
        "{status}: {text}"
    );
}

//! Export: 800,000 events (over 400 MB of CSV) streamed from ClickHouse
//! through the API while its peak memory stays under 200 MB; NDJSON of a
//! range parses line by line; Parquet of a range and of everything are
//! whole files with every row, in the same memory; another tenant's events
//! never appear. Run through `./dev test`.

use pulse_common::clock::now_ms;
use pulse_testkit::query_api as support;
use std::time::Duration;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::RowAccessor;
use pulse_testkit::{peak_rss_kib, poll_until};
use support::start_api;

const EVENTS: u64 = 800_000;
const MIN_BYTES: u64 = 400_000_000;
const MAX_RSS_KIB: u64 = 200 * 1024;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_large_export_streams_in_bounded_memory() {
    let api = start_api(&[support::row("globex", "boiler-1", "globex-event-1")]).await;
    let end = now_ms() - 1000;
    api.generate_events("acme", EVENTS, end, 300).await;
    let token = support::hs256("acme", "analyst");
    let http = reqwest::Client::new();

    let response = api.start_export("format=csv", &token).await;
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut head = Vec::new();
    let mut globex = false;
    let mut response = response;
    while let Some(chunk) = response.chunk().await.expect("export chunk") {
        if head.len() < 200 {
            head.extend_from_slice(&chunk[..chunk.len().min(200)]);
        }
        globex |= chunk.windows(6).any(|w| w == b"globex");
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let peak = peak_rss_kib(api.pid()).unwrap_or(u64::MAX);
    eprintln!(
        "exported {bytes} bytes, {lines} lines; query API peak RSS {} MiB",
        peak / 1024
    );
    assert!(String::from_utf8_lossy(&head).starts_with("\"tenant_id\",\"source_id\",\"event_id\""));
    assert_eq!(lines, EVENTS + 1, "a header and every event");
    assert!(bytes >= MIN_BYTES, "only {bytes} bytes");
    assert!(!globex, "another tenant's event in the export");
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB");

    // NDJSON of one second: every line an event of the tenant.
    let (from, to) = (end - 2_000, end - 1_000);
    let text = http
        .get(format!(
            "{}/v1/export?format=ndjson&from_ms={from}&to_ms={to}",
            api.url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("body");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(events.len(), 1000);
    assert!(events.iter().all(|e| e["tenant_id"] == "acme"));

    // Parquet of the same second, then of everything: whole files, the
    // tenant's rows only, in the same bounded memory.
    let parquet = |query: String| {
        let (http, token, url) = (http.clone(), token.clone(), api.url.clone());
        async move {
            let r = http
                .get(format!("{url}/v1/export?format=parquet{query}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("export");
            assert_eq!(
                r.headers()["content-type"],
                "application/vnd.apache.parquet"
            );
            SerializedFileReader::new(r.bytes().await.expect("body")).expect("a Parquet file")
        }
    };
    let second = parquet(format!("&from_ms={from}&to_ms={to}")).await;
    assert_eq!(second.metadata().file_metadata().num_rows(), 1000);
    let tenants: Vec<String> = second
        .get_row_iter(None)
        .expect("rows")
        .map(|r| r.expect("a row").get_string(0).cloned().unwrap_or_default())
        .collect();
    assert_eq!(tenants.len(), 1000);
    assert!(tenants.iter().all(|t| t == "acme"));
    let everything = parquet(String::new()).await;
    assert_eq!(
        everything.metadata().file_metadata().num_rows(),
        EVENTS as i64
    );
    let peak = peak_rss_kib(api.pid()).unwrap_or(u64::MAX);
    eprintln!(
        "after the Parquet exports, query API peak RSS {} MiB",
        peak / 1024
    );
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB");

    // A client that leaves after the first chunk: recorded as 499 with the
    // rows it was sent.
    let mut left = http
        .get(format!("{}/v1/export?format=ndjson", api.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("export starts");
    assert!(left.chunk().await.expect("a chunk").is_some());
    drop(left);
    let partial = poll_until(
        "the abandoned export in the audit trail",
        Duration::from_secs(30),
        || async {
            api.clickhouse
                .query("SELECT rows FROM audit WHERE route = '/v1/export' AND status = 499")
                .fetch_optional::<u64>()
                .await
                .ok()
                .flatten()
        },
    )
    .await;
    assert!((1..EVENTS).contains(&partial), "{partial} rows recorded");

    // The audit trail holds each export with the rows it streamed.
    let audited = poll_until("the exports in the audit trail", Duration::from_secs(15), || async {
        let rows: Vec<u64> = api
            .clickhouse
            .query("SELECT rows FROM audit WHERE route = '/v1/export' AND status = 200 ORDER BY rows")
            .fetch_all()
            .await
            .unwrap_or_default();
        (rows.len() == 4).then_some(rows)
    })
    .await;
    assert_eq!(audited, [1000, 1000, EVENTS, EVENTS]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn csv_text_cells_cannot_be_formulas_and_numbers_stay_numbers() {
    let mut event = support::row("acme", "=HYPERLINK(\"http://x\")", "@evt-1");
    event.kind = "app".into();
    event.event_type = "-login".into();
    event.score = -0.5;
    event.reading_values = vec![-21.5];
    let api = start_api(&[event]).await;
    let token = support::hs256("acme", "analyst");
    let csv = api
        .start_export("format=csv", &token)
        .await
        .text()
        .await
        .expect("body");
    let row = csv.lines().nth(1).expect("a data row");
    assert!(
        row.starts_with("\"acme\",\"'=HYPERLINK(\"\"http://x\"\")\",\"'@evt-1\",\"app\","),
        "{row}"
    );
    assert!(row.contains(",\"'-login\","), "{row}");
    assert!(row.contains(",\"[-21.5]\","), "{row}");
    assert!(
        row.contains(",-0.5,"),
        "a negative score stays a number: {row}"
    );
}

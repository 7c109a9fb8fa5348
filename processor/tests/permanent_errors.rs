//! A ClickHouse error that no retry can fix stops the processor instead of
//! holding every partition behind it forever: a column of the events table
//! is dropped under a running processor, which exits non-zero with
//! ClickHouse's error in its log and commits nothing of the refused batch.
//! Once the column is back, a restarted processor stores every event
//! exactly once. (A transient error, ClickHouse stopped or hung, is retried:
//! `clickhouse_outage.rs`.) Run through `./dev test`.

use std::time::{Duration, Instant};

use pulse_testkit::{
    clickhouse, event_counts, free_port, poll_until, processor_settings, produce_events,
    start_processor, start_registry, unique, Service, Stack,
};

const EVENTS: u64 = 500;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_dropped_column_stops_the_processor_with_clickhouses_error_and_loses_nothing() {
    let stack = Stack::from_env();
    let prefix = unique("permanent") + ".";
    let database = unique("permanent_");
    let registry = start_registry(&stack, &prefix).await;
    produce_events(&stack, &prefix, &registry.url, EVENTS, 31);

    let log = std::env::temp_dir().join(format!("{}.log", unique("processor-log")));
    let port = free_port();
    let settings = processor_settings(&prefix, &registry.url, &database, port, &[]);
    let mut processor = Service::spawn_logged(&stack, "pulse-processor", port, &settings, &log);
    processor.wait_ready(Duration::from_secs(60)).await;
    let client = clickhouse(&stack.clickhouse_url, &database);
    poll_until(
        "the first events stored",
        Duration::from_secs(60),
        || async { event_counts(&client).await.filter(|(c, _)| *c == EVENTS) },
    )
    .await;

    client
        .query("ALTER TABLE events DROP COLUMN firmware_version")
        .execute()
        .await
        .expect("column dropped");
    produce_events(&stack, &prefix, &registry.url, EVENTS, 32);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = processor.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the processor still runs 60 s after the column was dropped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!status.success(), "exited with {status}");
    let text = std::fs::read_to_string(&log).expect("the processor's log");
    assert!(
        text.contains("ClickHouse refused the batch for good"),
        "{text}"
    );
    assert!(
        text.contains("firmware_version"),
        "ClickHouse's own error: {text}"
    );
    assert_eq!(
        event_counts(&client).await,
        Some((EVENTS, EVENTS)),
        "nothing of the refused batch stored"
    );

    client
        .query("ALTER TABLE events ADD COLUMN firmware_version String AFTER properties_json")
        .execute()
        .await
        .expect("column back");
    let _processor = start_processor(&stack, &prefix, &registry.url, &database, port, &[]).await;
    let counts = poll_until("every event stored", Duration::from_secs(60), || async {
        event_counts(&client)
            .await
            .filter(|(c, _)| *c >= 2 * EVENTS)
    })
    .await;
    assert_eq!(counts, (2 * EVENTS, 2 * EVENTS));
    let _ = std::fs::remove_file(&log);
}

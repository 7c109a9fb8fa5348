//! Rebalance test: three processor instances join and leave the group while
//! they work through 120,000 events, 5% of which a client sent twice.
//! Afterwards every event is stored exactly once, and every device's state
//! moved with its partition: each device's sequence numbers run 1..n without
//! a repeat, and its moving averages continue across moves instead of
//! starting over. Run through `./dev test`.

use std::time::Duration;

use pulse_testkit::{
    clickhouse, device_sequences, event_counts, free_port, poll_until, produce_events_with_retries,
    start_processor, start_registry, unique, Service, Stack,
};

const EVENTS: u64 = 120_000;
const RETRY_RATE: f64 = 0.05;
/// The processor's default EWMA weight.
const ALPHA: f64 = 0.1;

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct History {
    source_id: String,
    device_seq: u64,
    reading_names: Vec<String>,
    reading_values: Vec<f64>,
    feature_names: Vec<String>,
    feature_values: Vec<f64>,
}

impl History {
    fn value(names: &[String], values: &[f64], name: &str) -> Option<f64> {
        names.iter().position(|n| n == name).map(|i| values[i])
    }
}

async fn stored(p: &Service) -> f64 {
    p.metric("pulse_processor_events_total{outcome=\"stored\"}")
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn instances_join_and_leave_and_state_moves_with_partitions() {
    let stack = Stack::from_env();
    let prefix = unique("rebalance") + ".";
    let database = unique("rebalance_");
    let registry = start_registry(&stack, &prefix).await;
    let summary =
        produce_events_with_retries(&stack, &prefix, &registry.url, EVENTS, 11, RETRY_RATE);
    let retries = summary["summary"]["retries"].as_u64().unwrap_or_default();
    assert!(retries > EVENTS / 40, "too few retries sent: {retries}");

    let client = clickhouse(&stack.clickhouse_url, &database);
    // Small batches, so that the run outlasts the group's moves.
    let settings = [("PULSE_MAX_BATCH", "200".to_string())];
    let start = |name: &'static str| {
        eprintln!("{name} joins");
        start_processor(
            &stack,
            &prefix,
            &registry.url,
            &database,
            free_port(),
            &settings,
        )
    };
    let reach = |share: f64| {
        let client = &client;
        async move {
            let target = (EVENTS as f64 * share) as u64;
            poll_until(
                &format!("{target} events stored"),
                Duration::from_secs(180),
                || async { event_counts(client).await.filter(|(c, _)| *c >= target) },
            )
            .await
        }
    };

    let mut a = start("a").await;
    let b = start("b").await;
    reach(0.15).await;
    let mut c = start("c").await;
    reach(0.35).await;
    let a_stored = stored(&a).await;
    eprintln!("a leaves after storing {a_stored}");
    assert!(a.stop().is_some_and(|s| s.success()), "a stops cleanly");
    reach(0.55).await;
    let a = start("a again").await;
    reach(0.75).await;
    let c_stored = stored(&c).await;
    eprintln!("c leaves after storing {c_stored}");
    assert!(c.stop().is_some_and(|s| s.success()), "c stops cleanly");
    let (count, unique_ids) = reach(1.0).await;
    let b_stored = stored(&b).await;
    let a2_stored = stored(&a).await;
    eprintln!(
        "stored by a: {a_stored}, b: {b_stored}, c: {c_stored}, a again: {a2_stored}; \
         {count} rows, {unique_ids} unique, {retries} retries sent"
    );
    for (name, n) in [("a", a_stored), ("b", b_stored), ("c", c_stored)] {
        assert!(n > 0.0, "instance {name} never got a partition");
    }
    // A late duplicate would show up after the count first reached EVENTS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(event_counts(&client).await, Some((EVENTS, EVENTS)));
    assert_eq!((count, unique_ids), (EVENTS, EVENTS));
    assert_eq!(device_sequences(&client).await, Some((1000, 0)));

    let rows: Vec<History> = client
        .query("SELECT ?fields FROM events WHERE kind = 'telemetry' ORDER BY source_id, device_seq")
        .fetch_all()
        .await
        .expect("events readable");
    assert_eq!(rows.len() as u64, EVENTS);
    let mut devices = 0;
    let mut checked = 0;
    for device in rows.chunk_by(|x, y| x.source_id == y.source_id) {
        devices += 1;
        let mut ewma: Option<f64> = None;
        for (i, row) in device.iter().enumerate() {
            // A device whose state was lost would start again at 1.
            assert_eq!(row.device_seq, i as u64 + 1, "{}", row.source_id);
            let reading = History::value(&row.reading_names, &row.reading_values, "temperature_c")
                .expect("a temperature reading");
            let expected = match ewma {
                None => reading,
                Some(m) => m + ALPHA * (reading - m),
            };
            ewma = Some(expected);
            let stored = History::value(
                &row.feature_names,
                &row.feature_values,
                "temperature_c.ewma",
            )
            .expect("an EWMA feature");
            assert!(
                (stored - expected).abs() < 1e-9,
                "{} event {}: EWMA {stored}, expected {expected}",
                row.source_id,
                row.device_seq
            );
            checked += 1;
        }
    }
    eprintln!("{devices} devices, {checked} events' sequence and EWMA checked");
    assert_eq!(devices, 1000);
}

//! Against the real ClickHouse server: a batch replayed after an insert that
//! stored only part of its rows (rows go in the table's sorting-key order, so
//! the part is scattered across offsets) stores exactly the missing rows.

use std::sync::Arc;
use std::time::Duration;

use pulse_common::scored::{ScoredEvent, EVENTS_TABLE};
use pulse_processor::sink::delivery::Delivery;
use pulse_processor::sink::migrations;
use pulse_processor::sink::stored::Watermarks;
use pulse_testkit::{clickhouse, event_counts, unique, Stack};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

const TOPIC: &str = "pulse.telemetry";

/// Rows of partitions 0 and 1 at `offsets`, devices and times shuffled so
/// that key order is far from offset order.
fn rows(offsets: std::ops::Range<i64>, rng: &mut StdRng) -> Vec<ScoredEvent> {
    offsets
        .flat_map(|offset| [0, 1].map(|partition| (partition, offset)))
        .map(|(partition, offset)| ScoredEvent {
            tenant_id: "acme".into(),
            source_id: format!("device-{:03}", rng.random_range(0..50)),
            event_id: format!("{partition}-{offset}"),
            kind: Arc::from("telemetry"),
            event_time_ms: 1_763_856_000_000 + rng.random_range(0..60_000),
            source_topic: Arc::from(TOPIC),
            source_partition: partition,
            source_offset: offset,
            ..ScoredEvent::default()
        })
        .collect()
}

/// Stores `rows` directly, as an insert cut short would have.
async fn store_directly(client: &clickhouse::Client, rows: &[&ScoredEvent]) {
    let mut insert = client.insert::<ScoredEvent>(EVENTS_TABLE).await.unwrap();
    for row in rows {
        insert.write(*row).await.unwrap();
    }
    insert.end().await.unwrap();
}

/// Rows stored more than once, by (partition, offset).
async fn stored_twice(client: &clickhouse::Client) -> u64 {
    client
        .query(
            "SELECT count() FROM (SELECT source_partition, source_offset, count() AS n \
             FROM events GROUP BY source_partition, source_offset HAVING n > 1)",
        )
        .fetch_one::<u64>()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_replayed_batch_stores_exactly_the_rows_a_cut_short_insert_left_out() {
    let stack = Stack::from_env();
    let database = unique("partial_insert");
    let client = clickhouse(&stack.clickhouse_url, &database);
    migrations::apply(&client, &database, None).await.unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let first = rows(0..300, &mut rng);
    let second = rows(300..600, &mut rng);

    // A crashed instance's insert of a larger batch (both batches' offsets,
    // sorted by the table's key) that ClickHouse stored the first 40% of.
    let mut sorted: Vec<&ScoredEvent> = first.iter().chain(&second).collect();
    sorted.sort_by(|a, b| {
        (&a.tenant_id, &a.source_id, a.event_time_ms, &a.event_id).cmp(&(
            &b.tenant_id,
            &b.source_id,
            b.event_time_ms,
            &b.event_id,
        ))
    });
    let cut = sorted.len() * 2 / 5;
    store_directly(&client, &sorted[..cut]).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9")
        .create()
        .unwrap();
    let delivery = Delivery {
        clickhouse: client.clone(),
        producer,
        watermarks: Watermarks::default(),
        results_topic: "unused".into(),
        alerts_topic: "unused".into(),
        threshold: 1.0,
        dead_letter_topic: "unused".into(),
        timeout: Duration::from_secs(30),
    };
    // This instance replays in smaller batches: after the first, rows past
    // it are still stored, so the second must be read back too.
    let limit = Duration::from_secs(30);
    let mut inserted = delivery.store(&first, limit).await.unwrap();
    assert_eq!(delivery.watermarks.get(TOPIC, 0), None);
    inserted += delivery.store(&second, limit).await.unwrap();
    assert_eq!(delivery.watermarks.get(TOPIC, 0), Some(599));
    assert_eq!(delivery.watermarks.get(TOPIC, 1), Some(599));
    assert_eq!(inserted, sorted.len() - cut);

    // Caught up: the next batch is fresh without reading anything back.
    let third = rows(600..650, &mut rng);
    assert_eq!(delivery.store(&third, limit).await.unwrap(), third.len());

    assert_eq!(event_counts(&client).await, Some((1300, 1300)));
    assert_eq!(stored_twice(&client).await, 0);
    client
        .with_database("default")
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .unwrap();
}

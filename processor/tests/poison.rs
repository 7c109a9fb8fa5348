//! Poison records among good ones: each goes to the dead-letter topic with
//! why and where it came from in its headers, and every good event around
//! them is stored once. Run through `./dev test`.

use std::time::Duration;

use pulse_common::config::{KafkaClient, Topics};
use pulse_common::kafka::client_config;
use pulse_common::schemas::EventKind;
use pulse_testkit::{
    clickhouse, event_counts, free_port, header, poll_until, produce_events, records,
    start_processor, start_registry, unique, Stack,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

const GOOD: u64 = 2_000;

/// A dead letter as read back: its key, origin, reason and payload.
struct Dead {
    key: String,
    partition: i32,
    offset: i64,
    reason: String,
    payload: Option<Vec<u8>>,
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn poison_records_are_dead_lettered_with_their_reason_and_processing_goes_on() {
    let stack = Stack::from_env();
    let prefix = unique("poison") + ".";
    let database = unique("poison_");
    let topics = Topics::new(prefix.clone());
    let telemetry = topics.events(EventKind::Telemetry);
    let registry = start_registry(&stack, &prefix).await;
    produce_events(&stack, &prefix, &registry.url, GOOD / 2, 21);

    // A record in the wire format of a registered schema, cut short.
    let good = records(&stack.kafka_bootstrap, &telemetry, 1).await;
    let whole = good[0].payload().expect("a payload").to_vec();
    let truncated = whole[..whole.len() / 2].to_vec();
    let poison: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("not in the wire format", Some(b"{\"json\": true}".to_vec())),
        ("no payload", None),
        ("truncated", Some(truncated)),
    ];
    let producer: FutureProducer = client_config(&KafkaClient::plaintext(&stack.kafka_bootstrap))
        .create()
        .expect("producer");
    let mut sent = Vec::new();
    for (key, payload) in &poison {
        let mut record = FutureRecord::<str, [u8]>::to(&telemetry)
            .key(key)
            .partition(0);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        let delivered = producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("poison record written");
        sent.push((key.to_string(), delivered.partition, delivered.offset));
    }
    produce_events(&stack, &prefix, &registry.url, GOOD / 2, 22);

    let client = clickhouse(&stack.clickhouse_url, &database);
    let processor =
        start_processor(&stack, &prefix, &registry.url, &database, free_port(), &[]).await;
    let counts = poll_until(
        "every good event stored",
        Duration::from_secs(120),
        || async { event_counts(&client).await.filter(|(c, _)| *c >= GOOD) },
    )
    .await;
    assert_eq!(counts, (GOOD, GOOD), "count() and uniqExact(event_id)");

    let dead = records(&stack.kafka_bootstrap, &topics.dead_letter(), poison.len()).await;
    let mut seen: Vec<Dead> = dead
        .iter()
        .map(|m| {
            let h = |key| {
                header(m, key)
                    .unwrap_or_else(|| panic!("header {key}"))
                    .to_string()
            };
            assert_eq!(h("pulse-source-topic"), telemetry);
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            Dead {
                key: key.unwrap_or_default(),
                partition: h("pulse-source-partition").parse().expect("a partition"),
                offset: h("pulse-source-offset").parse().expect("an offset"),
                reason: h("pulse-error"),
                payload: m.payload().map(<[u8]>::to_vec),
            }
        })
        .collect();
    seen.sort_by_key(|d| d.offset);
    let places: Vec<(String, i32, i64)> = seen
        .iter()
        .map(|d| (d.key.clone(), d.partition, d.offset))
        .collect();
    assert_eq!(
        places, sent,
        "each poison record dead-lettered once, nothing else"
    );
    let payloads: Vec<Option<Vec<u8>>> = seen.iter().map(|d| d.payload.clone()).collect();
    let originals: Vec<Option<Vec<u8>>> = poison.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(
        payloads, originals,
        "dead letters carry the record as it came"
    );
    let reasons: Vec<&str> = seen.iter().map(|d| d.reason.as_str()).collect();
    assert!(
        reasons[0].starts_with("undecodable: ") && reasons[0].contains("magic byte"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1], "undecodable: no payload");
    assert!(
        reasons[2].starts_with("undecodable: not a record of schema "),
        "{reasons:?}"
    );
    drop(processor);
}

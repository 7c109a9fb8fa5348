//! A transaction aborted right after its records were handed to the client,
//! as when ClickHouse refuses a batch's insert at once just after the
//! previous batch committed, against the real broker: every abort succeeds
//! and the producer goes on with the next transaction.

use std::time::Duration;

use pulse_common::config::KafkaClient;
use pulse_common::kafka::{client_config, durable_producer_config, ensure_topics, TopicSpec};
use pulse_common::scored::ScoredEvent;
use pulse_processor::sink::delivery::{Delivery, Publish, TRANSACTION_TIMEOUT};
use pulse_processor::sink::results::Results;
use pulse_processor::sink::stored::Watermarks;
use pulse_testkit::{unique, Stack};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, Producer};

const ROUNDS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_transaction_aborted_as_soon_as_its_records_are_sent_aborts_cleanly() {
    let stack = Stack::from_env();
    let kafka = KafkaClient::plaintext(&stack.kafka_bootstrap);
    let topic = unique("abort-results");
    ensure_topics(
        &kafka,
        &[TopicSpec::new(&topic, 3, 1)],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let mut cfg = durable_producer_config(&kafka);
    cfg.set("transactional.id", unique("abort-test")).set(
        "transaction.timeout.ms",
        TRANSACTION_TIMEOUT.as_millis().to_string(),
    );
    let producer: FutureProducer = cfg.create().unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let consumer: BaseConsumer = client_config(&kafka)
        .set("group.id", unique("abort-group"))
        .create()
        .unwrap();
    let group = consumer.group_metadata().unwrap();
    let delivery = Delivery {
        // Nothing listens there: the insert is never tried in this test.
        clickhouse: clickhouse::Client::default().with_url("http://127.0.0.1:9"),
        producer,
        watermarks: Watermarks::default(),
        results_topic: topic.clone(),
        alerts_topic: topic.clone(),
        threshold: 1.0,
        dead_letter_topic: topic,
        timeout: Duration::from_secs(30),
    };
    let rows: Vec<ScoredEvent> = (0..50)
        .map(|i| ScoredEvent {
            tenant_id: "acme".into(),
            source_id: format!("dev-{i}"),
            event_id: format!("e-{i}"),
            ..ScoredEvent::default()
        })
        .collect();
    let results = Results::of(&rows, Vec::new()).unwrap();
    let publish = Publish {
        rows: &rows,
        results: &results,
        dead: &[],
        states: &[],
        batch: &[],
        group: &group,
    };
    let mut aborted = 0;
    for round in 0..ROUNDS {
        // A committed transaction, then one aborted at once: the
        // coordinator may still be completing the first while the client
        // registers the second's partitions.
        let committed = delivery.begin(&publish).is_ok()
            && tokio::task::block_in_place(|| {
                delivery
                    .producer
                    .commit_transaction(Duration::from_secs(30))
            })
            .is_ok();
        assert!(committed, "round {round}: the transaction did not commit");
        let sending = match delivery.begin(&publish) {
            Ok(s) => s,
            Err(_) => panic!("round {round}: the transaction did not begin"),
        };
        match delivery.abort(sending) {
            Ok(()) => aborted += 1,
            Err(_) => panic!("round {round}: the abort failed after {aborted} clean aborts"),
        }
    }
    assert_eq!(aborted, ROUNDS);
}

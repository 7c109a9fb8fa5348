//! Against the real broker: the processor creates the topics that are
//! missing, and each device-state changelog gets exactly the partitions its
//! event topic has, whether that topic existed before or was created now.

use std::time::Duration;

use pulse_common::config::{KafkaClient, Topics};
use pulse_common::kafka::{client_config, ensure_topics, TopicSpec};
use pulse_common::schemas::EventKind;
use pulse_processor::source::topics::{self, Changelogs, Layout};
use pulse_testkit::{poll_until, unique, Stack};
use rdkafka::consumer::{BaseConsumer, Consumer};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The partitions of `topic`, once the broker's metadata shows it (a
/// topic just created can be missing from it for a moment).
async fn created_partitions(kafka: &KafkaClient, topic: &str) -> usize {
    poll_until(topic, TIMEOUT, || async {
        Some(partitions(kafka, topic)).filter(|&n| n > 0)
    })
    .await
}

/// The partitions `topic` has; 0 if it does not exist.
fn partitions(kafka: &KafkaClient, topic: &str) -> usize {
    let client: BaseConsumer = client_config(kafka).create().unwrap();
    let metadata = client.fetch_metadata(Some(topic), TIMEOUT).unwrap();
    metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: run through ./dev test"]
async fn changelogs_take_the_partitions_their_event_topics_have() {
    let stack = Stack::from_env();
    let kafka = KafkaClient::plaintext(&stack.kafka_bootstrap);
    let topics = Topics::new(format!("{}.", unique("topics")));
    let changelogs = Changelogs::new(&unique("topics-group")).unwrap();
    // Telemetry's topic exists with a partition count of its own (as ingest
    // may have made it); the app events' topic does not exist yet.
    let telemetry = topics.events(EventKind::Telemetry);
    let app = topics.events(EventKind::App);
    ensure_topics(&kafka, &[TopicSpec::new(&telemetry, 3, 1)], TIMEOUT)
        .await
        .unwrap();
    assert_eq!(partitions(&kafka, &app), 0);
    let layout = Layout {
        event_partitions: 5,
        result_partitions: 2,
        replication: 1,
    };

    topics::ensure(&kafka, &topics, &changelogs, &layout)
        .await
        .unwrap();
    let expected = [
        (telemetry.clone(), 3),
        (changelogs.topic(EventKind::Telemetry), 3),
        (app.clone(), 5),
        (changelogs.topic(EventKind::App), 5),
        (topics.results(), 2),
        (topics.alerts(), 2),
        (topics.dead_letter(), 2),
    ];
    for (topic, n) in &expected {
        assert_eq!(created_partitions(&kafka, topic).await, *n, "{topic}");
    }

    // A restart finds everything in place and changes nothing.
    topics::ensure(&kafka, &topics, &changelogs, &layout)
        .await
        .unwrap();
    for (topic, n) in &expected {
        assert_eq!(
            created_partitions(&kafka, topic).await,
            *n,
            "{topic} after a restart"
        );
    }
}

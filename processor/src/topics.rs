//! The Kafka topics the processor reads and writes, created when missing.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use pulse_common::config::{KafkaClient, Topics};
use pulse_common::kafka::{client_config, ensure_topics, TopicSpec};
use pulse_common::schemas::EventKind;

/// Sizes of the topics the processor creates.
pub struct Layout {
    /// Partitions of the event topics if they do not exist yet (ingest
    /// normally creates them).
    pub event_partitions: i32,
    pub result_partitions: i32,
    pub replication: i32,
}

/// Creates the event, results, dead-letter and state changelog topics that
/// are missing. A changelog has exactly its event topic's partitions, since
/// the state of the devices in event partition N lives in changelog
/// partition N; it is compacted, so it holds about one record per device.
pub async fn ensure(kafka: &KafkaClient, topics: &Topics, layout: &Layout) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(30);
    let spec = |name: String, partitions| TopicSpec::new(name, partitions, layout.replication);
    let mut specs: Vec<TopicSpec> = EventKind::ALL
        .iter()
        .map(|k| spec(topics.events(*k), layout.event_partitions))
        .collect();
    specs.push(spec(topics.results(), layout.result_partitions));
    specs.push(spec(topics.dead_letter(), layout.result_partitions));
    ensure_topics(kafka, &specs, timeout).await?;

    let metadata_client: BaseConsumer = client_config(kafka).create()?;
    let mut changelogs = Vec::new();
    for kind in EventKind::ALL {
        let events = topics.events(kind);
        let metadata =
            tokio::task::block_in_place(|| metadata_client.fetch_metadata(Some(&events), timeout))?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow::anyhow!("topic {events} has no partitions"))?;
        let mut changelog = spec(topics.changelog(kind), i32::try_from(partitions)?);
        changelog.settings = vec![
            ("cleanup.policy", "compact".to_string()),
            ("min.compaction.lag.ms", "60000".to_string()),
        ];
        changelogs.push(changelog);
    }
    ensure_topics(kafka, &changelogs, timeout).await
}

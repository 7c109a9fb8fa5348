//! The Kafka topics the processor reads and writes, created when missing.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use pulse_common::config::{KafkaClient, Topics};
use pulse_common::kafka::{client_config, ensure_topics, TopicSpec};
use pulse_common::schemas::EventKind;

/// The device-state changelog topics of one consumer group: state belongs
/// to the group that built it, as Kafka Streams' changelogs belong to their
/// application id.
#[derive(Debug, Clone)]
pub struct Changelogs {
    group: String,
}

impl Changelogs {
    pub fn new(group: &str) -> anyhow::Result<Self> {
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        anyhow::ensure!(
            !group.is_empty() && group.len() <= 200 && group.chars().all(valid),
            "consumer group {group:?} cannot name a Kafka topic: use letters, digits, '.', '_' and '-'"
        );
        Ok(Self {
            group: group.to_string(),
        })
    }

    pub fn topic(&self, kind: EventKind) -> String {
        format!("{}-state-{}", self.group, kind.as_str())
    }
}

/// Sizes of the topics the processor creates.
pub struct Layout {
    /// Partitions of the event topics if they do not exist yet (ingest
    /// normally creates them).
    pub event_partitions: i32,
    pub result_partitions: i32,
    pub replication: i32,
}

/// Creates the event, results, alerts, dead-letter and state changelog topics that
/// are missing. A changelog has exactly its event topic's partitions, since
/// the state of the devices in event partition N lives in changelog
/// partition N; it is compacted, so it holds about one record per device.
pub async fn ensure(
    kafka: &KafkaClient,
    topics: &Topics,
    changelogs: &Changelogs,
    layout: &Layout,
) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(30);
    let spec = |name: String, partitions| TopicSpec::new(name, partitions, layout.replication);
    let mut specs: Vec<TopicSpec> = EventKind::ALL
        .iter()
        .map(|k| spec(topics.events(*k), layout.event_partitions))
        .collect();
    specs.push(spec(topics.results(), layout.result_partitions));
    specs.push(spec(topics.alerts(), layout.result_partitions));
    specs.push(spec(topics.dead_letter(), layout.result_partitions));
    ensure_topics(kafka, &specs, timeout).await?;

    let metadata_client: BaseConsumer = client_config(kafka).create()?;
    let mut changelog_specs = Vec::new();
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
        let mut changelog = spec(changelogs.topic(kind), i32::try_from(partitions)?);
        changelog.settings = vec![
            ("cleanup.policy", "compact".to_string()),
            ("min.compaction.lag.ms", "60000".to_string()),
        ];
        changelog_specs.push(changelog);
    }
    ensure_topics(kafka, &changelog_specs, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelogs_are_named_for_their_group() {
        let c = Changelogs::new("pulse-processor").unwrap();
        assert_eq!(
            c.topic(EventKind::Telemetry),
            "pulse-processor-state-telemetry"
        );
        assert_eq!(c.topic(EventKind::App), "pulse-processor-state-app");
        assert!(Changelogs::new("team/a").is_err());
        assert!(Changelogs::new("").is_err());
    }
}

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
    let metadata_client: BaseConsumer = client_config(kafka).create()?;
    let partitions_of = |topic: &str| -> anyhow::Result<Option<i32>> {
        let metadata =
            tokio::task::block_in_place(|| metadata_client.fetch_metadata(Some(topic), timeout))?;
        let partitions = metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|n| *n > 0);
        Ok(partitions.map(i32::try_from).transpose()?)
    };
    let event_topics: Vec<String> = EventKind::ALL.iter().map(|k| topics.events(*k)).collect();
    let mut partitions = Vec::with_capacity(event_topics.len());
    for events in &event_topics {
        partitions.push(partitions_of(events)?);
    }
    // Ingest normally creates the event topics, and then everything else is
    // created in one round; a missing one is created first, since its
    // changelog takes the partitions it really has.
    let missing: Vec<TopicSpec> = event_topics
        .iter()
        .zip(&partitions)
        .filter(|(_, p)| p.is_none())
        .map(|(events, _)| spec(events.clone(), layout.event_partitions))
        .collect();
    if !missing.is_empty() {
        ensure_topics(kafka, &missing, timeout).await?;
    }
    let mut specs = vec![
        spec(topics.results(), layout.result_partitions),
        spec(topics.alerts(), layout.result_partitions),
        spec(topics.dead_letter(), layout.result_partitions),
    ];
    for ((kind, events), known) in EventKind::ALL.iter().zip(&event_topics).zip(partitions) {
        let partitions = match known {
            Some(n) => n,
            None => partitions_once_created(events, &partitions_of).await?,
        };
        let mut changelog = spec(changelogs.topic(*kind), partitions);
        changelog.settings = vec![
            ("cleanup.policy", "compact".to_string()),
            ("min.compaction.lag.ms", "60000".to_string()),
        ];
        specs.push(changelog);
    }
    ensure_topics(kafka, &specs, timeout).await
}

/// The partitions of a topic just created: the broker's metadata may not
/// show them for a moment, so it is read again until they appear.
async fn partitions_once_created(
    topic: &str,
    partitions_of: &impl Fn(&str) -> anyhow::Result<Option<i32>>,
) -> anyhow::Result<i32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(n) = partitions_of(topic)? {
            return Ok(n);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "topic {topic} was created but shows no partitions after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

//! Meter values read off snapshots, published as telemetry events of the
//! camera's device through ingest's own validation and Avro encoding, so
//! that they reach the processor, its anomaly model and storage as any
//! sensor's readings do.

use std::time::Duration;

use pulse_common::config::{KafkaClient, Topics};
use pulse_ingest::gateway::encode::Encoders;
use pulse_ingest::gateway::parse::{parse_body, Claims, Layout, TimeBounds};
use pulse_ingest::gateway::produce::{EventProducer, Outgoing};

use crate::failure::Failure;

/// How long a publish waits for Kafka before the attempt fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connected to Kafka at start; the schemas are registered on the first
/// publish, so that a registry outage delays OCR readings only, never the
/// worker's start or its reports.
pub struct Telemetry {
    registry_url: String,
    encoders: tokio::sync::OnceCell<Encoders>,
    producer: EventProducer,
    topics: Topics,
}

/// One reading to publish.
#[derive(Debug, Clone)]
pub struct Reading<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub name: &'a str,
    pub value: f64,
    pub event_id: &'a str,
    pub time_ms: i64,
}

/// The event id of item `item` of job `job_id`: the same on every attempt,
/// so that an event published twice (a crash between the publish and the
/// read's record) is one event in storage, which keeps the last copy of
/// an id.
pub fn event_id(job_id: &str, item: u32) -> String {
    uuid::Uuid::new_v5(&EVENT_NAMESPACE, format!("{job_id}/{item}").as_bytes()).to_string()
}

/// The namespace of OCR readings' event ids (a name-based UUID, as event
/// ids are UUIDs).
const EVENT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6f3c_9a1e_52b4_4d0c_9e1f_0c5e_7a21_b804);

impl Telemetry {
    pub fn new(registry_url: &str, kafka: &KafkaClient, topics: &Topics) -> anyhow::Result<Self> {
        Ok(Self {
            registry_url: registry_url.to_string(),
            encoders: tokio::sync::OnceCell::new(),
            producer: EventProducer::new(kafka, DELIVERY_TIMEOUT)?,
            topics: topics.clone(),
        })
    }

    /// The encoders, every shipped schema registered (as ingest does).
    async fn encoders(&self) -> Result<&Encoders, Failure> {
        self.encoders
            .get_or_try_init(|| async {
                let mut encoders = Encoders::new(&self.registry_url, &self.topics)?;
                let registered = encoders.register_all().await?;
                encoders.accept(&registered);
                anyhow::Ok(encoders)
            })
            .await
            .map_err(|e| Failure::Transient(format!("the schema registry: {e}")))
    }

    /// Publishes `reading`. A transient failure means it may not have
    /// been; a permanent one, that no attempt can (the reading is no valid
    /// event, e.g. a source id ingest would refuse).
    pub async fn publish(&self, reading: &Reading<'_>) -> Result<(), Failure> {
        let event = serde_json::json!({
            "kind": "telemetry",
            "event_id": reading.event_id,
            "tenant_id": reading.tenant,
            "source_id": reading.source,
            "event_time": reading.time_ms,
            "readings": { reading.name: reading.value },
        });
        let body = serde_json::to_vec(&event).map_err(|e| Failure::Permanent(e.to_string()))?;
        // The snapshot's time is when it was taken, however long ago: no
        // age bound, as a replayed archive is old by nature.
        let bounds = TimeBounds {
            now_ms: pulse_common::clock::now_ms(),
            max_age_ms: 0,
            max_skew_ms: 0,
        };
        let claims = Claims {
            tenant: reading.tenant,
            device: None,
        };
        let valid = parse_body(&body, Layout::Json, bounds, Some(claims)).map_err(|errors| {
            let why: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.reason))
                .collect();
            Failure::Permanent(format!(
                "the reading is not a valid event: {}",
                why.join("; ")
            ))
        })?;
        let encoders = self.encoders().await?;
        let mut records = Vec::with_capacity(valid.len());
        let mut topics = Vec::with_capacity(valid.len());
        for e in &valid {
            topics.push(self.topics.events(e.kind));
        }
        for (e, topic) in valid.iter().zip(&topics) {
            records.push(Outgoing {
                topic,
                key: &e.key,
                payload: encoders
                    .encode(e)
                    .await
                    .map_err(|e| Failure::Transient(format!("encoding the reading: {e}")))?,
            });
        }
        self.producer
            .send_all(records)
            .await
            .map_err(|e| Failure::Transient(format!("publishing the reading: Kafka: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshots_event_id_is_the_same_on_every_attempt_and_its_own() {
        let id = event_id("0f1e2d3c4b5a69788796a5b4c3d2e1f0", 7);
        assert_eq!(id, event_id("0f1e2d3c4b5a69788796a5b4c3d2e1f0", 7));
        assert_ne!(id, event_id("0f1e2d3c4b5a69788796a5b4c3d2e1f0", 8));
        assert_eq!(
            uuid::Uuid::parse_str(&id).map(|u| u.get_version_num()),
            Ok(5)
        );
    }
}

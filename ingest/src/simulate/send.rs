//! The transports a simulated fleet sends over: ingest's HTTP API, MQTT
//! through the broker and ingest's bridge, or straight to Kafka (Avro in the
//! Confluent wire format, as ingest would write it).

use std::time::{Duration, Instant};

use pulse_common::config::{KafkaClient, Topics};
use pulse_common::kafka::{client_config, ensure_topics, TopicSpec};
use pulse_common::schemas::EventKind;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::Value;

use crate::gateway::encode::Encoders;
use crate::gateway::parse::{parse_body, Layout, TimeBounds};
use crate::gateway::produce::{EventProducer, Outgoing};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Http,
    Mqtt,
    Kafka,
    /// Generate only, e.g. to write a labelled data set with --labels-out.
    None,
}

pub enum Sender {
    None,
    Http {
        client: reqwest::Client,
        url: String,
        api_key: Option<String>,
    },
    Mqtt {
        client: AsyncClient,
        root: String,
        /// Counts the telemetry topic's records, to see events reach Kafka.
        kafka: BaseConsumer,
        topic: String,
        start: i64,
    },
    Kafka {
        encoders: Encoders,
        producer: EventProducer,
        topics: Topics,
    },
}

impl Sender {
    pub fn http(ingest_url: &str, api_key: Option<String>) -> Self {
        Sender::Http {
            client: reqwest::Client::new(),
            url: format!("{ingest_url}/v1/events"),
            api_key,
        }
    }

    /// Connects to the MQTT broker. The broker acknowledges a message once it
    /// holds it; the run counts as done once the events are in Kafka.
    pub fn mqtt(
        url: &str,
        root: &str,
        client_id: &str,
        kafka: &KafkaClient,
        topics: &Topics,
    ) -> anyhow::Result<Self> {
        let (host, port) = url
            .trim_start_matches("mqtt://")
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("MQTT URL needs host:port: {url}"))?;
        let mut options = MqttOptions::new(client_id, host, port.parse()?);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(1000);
        let (client, mut events) = AsyncClient::new(options, 1000);
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let consumer: BaseConsumer = client_config(kafka).create()?;
        let topic = topics.events(EventKind::Telemetry);
        let start = records_in(&consumer, &topic)?;
        Ok(Sender::Mqtt {
            client,
            root: root.to_string(),
            kafka: consumer,
            topic,
            start,
        })
    }

    pub async fn kafka(
        kafka: &KafkaClient,
        registry_url: &str,
        topics: Topics,
    ) -> anyhow::Result<Self> {
        // Like ingest, create the event topics when they are missing.
        let specs: Vec<TopicSpec> = EventKind::ALL
            .iter()
            .map(|k| TopicSpec::new(topics.events(*k), 6, 1))
            .collect();
        ensure_topics(kafka, &specs, Duration::from_secs(30)).await?;
        let mut encoders = Encoders::new(registry_url, &topics)?;
        let registered = encoders.register_all().await?;
        encoders.accept(&registered);
        Ok(Sender::Kafka {
            encoders,
            producer: EventProducer::new(kafka, Duration::from_secs(30))?,
            topics,
        })
    }

    /// Sends a batch; returns the bytes sent. HTTP and Kafka return once the
    /// events are acknowledged; MQTT once they are handed to the client.
    pub async fn send(&self, events: &[Value]) -> anyhow::Result<u64> {
        match self {
            Sender::None => Ok(events.iter().map(|e| e.to_string().len() as u64).sum()),
            Sender::Http {
                client,
                url,
                api_key,
            } => {
                let body = if events.len() == 1 {
                    serde_json::to_vec(&events[0])?
                } else {
                    serde_json::to_vec(events)?
                };
                let bytes = body.len() as u64;
                let mut request = client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(body);
                if let Some(key) = api_key {
                    request = request.bearer_auth(key);
                }
                let response = request.send().await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "ingest answered {}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                );
                Ok(bytes)
            }
            Sender::Mqtt { client, root, .. } => {
                let mut bytes = 0;
                for event in events {
                    let topic = format!(
                        "{root}/{}/{}/telemetry",
                        event["tenant_id"].as_str().unwrap_or_default(),
                        event["source_id"].as_str().unwrap_or_default()
                    );
                    let payload = serde_json::to_vec(event)?;
                    bytes += payload.len() as u64;
                    client
                        .publish(topic, QoS::AtLeastOnce, false, payload)
                        .await?;
                }
                Ok(bytes)
            }
            Sender::Kafka {
                encoders,
                producer,
                topics,
            } => {
                let body = serde_json::to_vec(events)?;
                let bounds = TimeBounds {
                    now_ms: i64::MAX / 2,
                    max_age_ms: i64::MAX / 2,
                    max_skew_ms: i64::MAX / 2,
                };
                let valid = parse_body(&body, Layout::Json, bounds, None).map_err(|e| {
                    anyhow::anyhow!(
                        "generated events are invalid: {}",
                        serde_json::to_string(&e).unwrap_or_default()
                    )
                })?;
                let mut payloads = Vec::with_capacity(valid.len());
                for e in &valid {
                    payloads.push(encoders.encode(e).await?);
                }
                let bytes = payloads.iter().map(|p| p.len() as u64).sum();
                let names: Vec<String> = valid.iter().map(|e| topics.events(e.kind)).collect();
                let records = valid
                    .iter()
                    .zip(payloads)
                    .zip(&names)
                    .map(|((e, payload), topic)| Outgoing {
                        topic,
                        key: &e.key,
                        payload,
                    })
                    .collect();
                producer.send_all(records).await?;
                Ok(bytes)
            }
        }
    }

    /// For MQTT: waits until `sent` more events are in Kafka.
    pub async fn settle(&self, sent: u64, within: Duration) -> anyhow::Result<()> {
        if let Sender::Mqtt {
            kafka,
            topic,
            start,
            ..
        } = self
        {
            let deadline = Instant::now() + within;
            loop {
                let arrived = records_in(kafka, topic)? - start;
                if arrived >= sent as i64 {
                    return Ok(());
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "only {arrived} of {sent} MQTT messages reached Kafka"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

/// Records in all partitions of `topic`, from their high watermarks.
fn records_in(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<i64> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut total = 0;
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            total += high - low;
        }
    }
    Ok(total)
}

//! The processing loop: take a batch of records from Kafka, decode them
//! through the registry, score telemetry, then hand the batch to
//! [`Delivery`], which stores it exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use schema_registry_converter::async_impl::avro::AvroDecoder;

use pulse_common::clock::now_ms;
use pulse_common::config::Topics;
use pulse_common::event::Event;
use pulse_common::schemas::EventKind;
use pulse_common::scored::ScoredEvent;
use pulse_common::shutdown::Shutdown;

use crate::delivery::{DeadLetter, Delivery, DeliveryError, RebalanceAware};
use crate::metrics;
use crate::scorer::{Score, Scorer};

pub struct Pipeline {
    pub consumer: StreamConsumer<RebalanceAware>,
    pub decoder: AvroDecoder,
    pub scorer: Arc<Scorer>,
    pub delivery: Delivery,
    pub topics: Topics,
    pub max_batch: usize,
    pub max_wait: Duration,
}

/// What a batch turned into.
#[derive(Default)]
struct Outcome {
    rows: Vec<ScoredEvent>,
    dead: Vec<DeadLetter>,
}

impl Pipeline {
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let kinds: HashMap<String, EventKind> = EventKind::ALL
            .iter()
            .map(|k| (self.topics.events(*k), *k))
            .collect();
        while let Some(batch) = self.next_batch(&shutdown).await {
            let mut attempt = 0;
            let outcome = loop {
                match self.decode_and_score(&batch, &kinds).await {
                    Ok(o) => break o,
                    Err(e) => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "cannot process batch yet; retrying");
                        if !backoff(&shutdown, attempt).await {
                            return Ok(());
                        }
                    }
                }
            };
            let mut attempt = 0;
            while let Err(e) = self.deliver(&batch, &outcome).await {
                let e = match e {
                    DeliveryError::Fatal(e) => return Err(e.context("cannot deliver batch")),
                    DeliveryError::Retry(e) => e,
                };
                attempt += 1;
                tracing::warn!(error = %e, attempt, "cannot deliver batch; retrying");
                if !backoff(&shutdown, attempt).await {
                    // Not committed: the batch is processed again after restart.
                    return Ok(());
                }
            }
            metrics::BATCH_SIZE.observe(batch.len() as f64);
            metrics::EVENTS
                .with_label_values(&["stored"])
                .inc_by(outcome.rows.len() as u64);
            metrics::EVENTS
                .with_label_values(&["dead_lettered"])
                .inc_by(outcome.dead.len() as u64);
        }
        tracing::info!("processor drained");
        Ok(())
    }

    /// The next batch: waits for a first record, then takes what arrives
    /// within `max_wait`, up to `max_batch`. None once shutdown is requested.
    async fn next_batch(&self, shutdown: &Shutdown) -> Option<Vec<OwnedMessage>> {
        let first = loop {
            tokio::select! {
                _ = shutdown.requested() => return None,
                m = self.consumer.recv() => match m {
                    Ok(m) => break m.detach(),
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                }
            }
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + self.max_wait;
        while batch.len() < self.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error"),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    async fn decode_and_score(
        &self,
        batch: &[OwnedMessage],
        kinds: &HashMap<String, EventKind>,
    ) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::default();
        let mut events: Vec<(Event, &OwnedMessage)> = Vec::with_capacity(batch.len());
        for message in batch {
            let Some(kind) = kinds.get(message.topic()).copied() else {
                outcome.dead.push(DeadLetter {
                    message: message.clone(),
                    reason: format!("unexpected topic {}", message.topic()),
                });
                continue;
            };
            let payload = message.payload();
            let decoded = match self.decoder.decode(payload).await {
                Ok(d) => d,
                // The registry is unreachable: retry the batch, do not drop it.
                Err(e) if e.retriable => anyhow::bail!("schema registry: {e}"),
                Err(e) => {
                    outcome.dead.push(DeadLetter {
                        message: message.clone(),
                        reason: format!("undecodable: {e}"),
                    });
                    continue;
                }
            };
            match Event::from_avro(kind, &decoded.value) {
                Ok(event) => events.push((event, message)),
                Err(e) => outcome.dead.push(DeadLetter {
                    message: message.clone(),
                    reason: format!("invalid event: {e}"),
                }),
            }
        }
        let telemetry: Vec<&Event> = events
            .iter()
            .map(|(e, _)| e)
            .filter(|e| e.kind == EventKind::Telemetry)
            .collect();
        let started = Instant::now();
        let mut scores = self.scorer.score(&telemetry)?.into_iter();
        metrics::INFERENCE_SECONDS.observe(started.elapsed().as_secs_f64());
        let processed_ms = now_ms();
        for (event, source) in events {
            let score = if event.kind == EventKind::Telemetry {
                scores.next()
            } else {
                None
            };
            outcome
                .rows
                .push(self.row(event, source, score, processed_ms));
        }
        Ok(outcome)
    }

    fn row(
        &self,
        e: Event,
        source: &OwnedMessage,
        score: Option<Score>,
        processed_ms: i64,
    ) -> ScoredEvent {
        let score = score.unwrap_or(Score {
            score: 0.0,
            is_anomaly: false,
        });
        let (reading_names, reading_values) = e.readings.into_iter().unzip();
        ScoredEvent {
            tenant_id: e.tenant_id,
            source_id: e.source_id,
            event_id: e.event_id,
            kind: e.kind.as_str().to_string(),
            event_time: u32::try_from(e.event_time_ms.div_euclid(1000)).unwrap_or_default(),
            event_time_ms: e.event_time_ms,
            schema_id: schema_id(source.payload()),
            reading_names,
            reading_values,
            event_type: e.event_type,
            properties_json: serde_json::to_string(&e.properties).unwrap_or_default(),
            firmware_version: e.firmware_version.unwrap_or_default(),
            score: score.score,
            is_anomaly: u8::from(score.is_anomaly),
            model_version: self.scorer.model_version.clone(),
            processed_ms,
            source_topic: source.topic().to_string(),
            source_partition: source.partition(),
            source_offset: source.offset(),
        }
    }

    /// Stores the rows, then publishes results and offsets in one transaction.
    async fn deliver(
        &self,
        batch: &[OwnedMessage],
        outcome: &Outcome,
    ) -> Result<(), DeliveryError> {
        self.delivery
            .store(&outcome.rows)
            .await
            .map_err(DeliveryError::Retry)?;
        let group = self.consumer.group_metadata().ok_or_else(|| {
            DeliveryError::Fatal(anyhow::anyhow!("consumer has no group metadata"))
        })?;
        self.delivery
            .publish(&outcome.rows, &outcome.dead, batch, &group)
    }
}

/// Waits before retry `attempt` (0.25 s doubling to 10 s); false when
/// shutdown was requested meanwhile. The batch stays in memory and nothing
/// more is consumed, so memory stays bounded however long the outage.
async fn backoff(shutdown: &Shutdown, attempt: u32) -> bool {
    let pause = Duration::from_millis(250 << attempt.min(6)).min(Duration::from_secs(10));
    tokio::select! {
        _ = tokio::time::sleep(pause) => true,
        _ = shutdown.requested() => false,
    }
}

/// The schema id of a Confluent wire-format payload (magic byte, then 4 bytes).
fn schema_id(payload: Option<&[u8]>) -> u32 {
    payload
        .and_then(|p| p.get(1..5))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::schema_id;

    #[test]
    fn schema_id_reads_the_wire_format_header() {
        assert_eq!(schema_id(Some(&[0, 0, 0, 1, 2, 42])), 258);
        assert_eq!(schema_id(Some(&[0, 0])), 0);
        assert_eq!(schema_id(None), 0);
    }
}

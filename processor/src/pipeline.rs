//! The processing loop: take a batch of records from Kafka, decode them
//! through the registry, bring each device's state up to date, score
//! telemetry, then hand the batch to [`Delivery`], which stores it exactly
//! once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, Offset};
use schema_registry_converter::async_impl::avro::AvroDecoder;

use pulse_common::clock::now_ms;
use pulse_common::config::Topics;
use pulse_common::event::Event;
use pulse_common::schemas::EventKind;
use pulse_common::scored::ScoredEvent;
use pulse_common::shutdown::Shutdown;

use crate::assignment::{Assignment, Partition, RebalanceAware};
use crate::changelog::{self, encode_key, encode_state};
use crate::delivery::{
    DeadLetter, Delivery, DeliveryError, Publish, StateRecord, TRANSACTION_TIMEOUT,
};
use crate::metrics;
use crate::scorer::{Score, Scorer};
use crate::state::{FeatureSettings, Features};
use crate::state_store::{BatchState, StateStore};
use crate::topics::Changelogs;

pub struct Pipeline {
    pub consumer: StreamConsumer<RebalanceAware>,
    pub assignment: Assignment,
    /// Client settings for reading the state changelog back.
    pub restore_config: ClientConfig,
    pub restore_timeout: Duration,
    pub changelogs: Changelogs,
    pub decoder: AvroDecoder,
    pub scorer: Arc<Scorer>,
    pub features: FeatureSettings,
    pub delivery: Delivery,
    pub topics: Topics,
    pub max_batch: usize,
    pub max_wait: Duration,
}

/// Records received together, with the generation under which each one's
/// partition was owned when it arrived.
struct Batch {
    messages: Vec<OwnedMessage>,
    generations: HashMap<Partition, u64>,
}

/// What a batch turned into.
#[derive(Default)]
struct Outcome {
    rows: Vec<ScoredEvent>,
    dead: Vec<DeadLetter>,
    state: BatchState,
    duplicates: u64,
}

impl Pipeline {
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let kinds: HashMap<String, EventKind> = EventKind::ALL
            .iter()
            .map(|k| (self.topics.events(*k), *k))
            .collect();
        let mut store = StateStore::default();
        let mut attempt = 0;
        while let Some(batch) = self.next_batch(&shutdown).await {
            store.retain(|p| self.assignment.generation(&p.0, p.1).is_some());
            if batch.messages.is_empty() {
                continue;
            }
            let mut retries = 0;
            let outcome = loop {
                match self.decode_and_score(&batch, &kinds, &mut store).await {
                    Ok(o) => break o,
                    Err(e) => {
                        retries += 1;
                        tracing::warn!(error = %e, attempt = retries, "cannot process batch yet; retrying");
                        if !backoff(&shutdown, retries).await {
                            return Ok(());
                        }
                    }
                }
            };
            match self.deliver(&batch, &outcome, &kinds, &shutdown).await {
                Delivered::Yes => attempt = 0,
                Delivered::Stopping => return Ok(()),
                Delivered::Fatal(e) => return Err(e),
                Delivered::Rewind(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "cannot commit batch; consuming it again");
                    self.rewind(&batch)?;
                    if !backoff(&shutdown, attempt).await {
                        return Ok(());
                    }
                    continue;
                }
            }
            metrics::BATCH_SIZE.observe(batch.messages.len() as f64);
            for (outcome_label, n) in [
                ("stored", outcome.rows.len() as u64),
                ("dead_lettered", outcome.dead.len() as u64),
                ("duplicate", outcome.duplicates),
            ] {
                metrics::EVENTS
                    .with_label_values(&[outcome_label])
                    .inc_by(n);
            }
            store.apply(outcome.state);
            metrics::STATE_DEVICES.set(store.devices() as i64);
        }
        tracing::info!("processor drained");
        Ok(())
    }

    /// The next batch: waits for a first record, then takes what arrives
    /// within `max_wait`, up to `max_batch`; records of partitions revoked
    /// meanwhile are left out. None once shutdown is requested.
    async fn next_batch(&self, shutdown: &Shutdown) -> Option<Batch> {
        let first = loop {
            tokio::select! {
                _ = shutdown.requested() => return None,
                m = self.consumer.recv() => match m {
                    Ok(m) => break m.detach(),
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                }
            }
        };
        let gathering = Instant::now();
        let mut received = vec![self.tagged(first)];
        let deadline = Instant::now() + self.max_wait;
        while received.len() < self.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.consumer.recv()).await {
                Ok(Ok(m)) => received.push(self.tagged(m.detach())),
                Ok(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error"),
                Err(_) => break,
            }
        }
        metrics::GATHER_SECONDS.observe(gathering.elapsed().as_secs_f64());
        let mut batch = Batch {
            messages: Vec::with_capacity(received.len()),
            generations: HashMap::new(),
        };
        let mut stale = 0;
        for (m, generation) in received {
            let current = self.assignment.generation(m.topic(), m.partition());
            if generation.is_none() || current != generation {
                stale += 1;
                continue;
            }
            if let Some(g) = generation {
                batch
                    .generations
                    .insert((m.topic().to_string(), m.partition()), g);
            }
            batch.messages.push(m);
        }
        if stale > 0 {
            tracing::info!(
                stale,
                "records of revoked partitions left to their new owner"
            );
        }
        Some(batch)
    }

    fn tagged(&self, m: OwnedMessage) -> (OwnedMessage, Option<u64>) {
        let generation = self.assignment.generation(m.topic(), m.partition());
        (m, generation)
    }

    /// Reads the state of the batch's partitions from their changelogs,
    /// except those loaded under the partition's current assignment. Every
    /// other owned partition not loaded yet is read in the same pass: one
    /// restore for all the partitions a rebalance brought, rather than one
    /// per batch as their records start to arrive.
    fn restore_state(
        &self,
        batch: &Batch,
        kinds: &HashMap<String, EventKind>,
        store: &mut StateStore,
    ) -> anyhow::Result<()> {
        let batch_needs = batch
            .generations
            .iter()
            .any(|(partition, generation)| !store.is_loaded(partition, *generation));
        if !batch_needs {
            return Ok(());
        }
        let mut wanted: HashMap<Partition, u64> = self.assignment.owned().into_iter().collect();
        wanted.extend(batch.generations.iter().map(|(p, g)| (p.clone(), *g)));
        let mut missing: HashMap<EventKind, Vec<i32>> = HashMap::new();
        for (partition, generation) in &wanted {
            if store.is_loaded(partition, *generation) {
                continue;
            }
            if let Some(kind) = kinds.get(&partition.0) {
                missing.entry(*kind).or_default().push(partition.1);
            }
        }
        for (kind, partitions) in missing {
            let restored = tokio::task::block_in_place(|| {
                changelog::restore(
                    &self.restore_config,
                    &self.changelogs.topic(kind),
                    &partitions,
                    self.restore_timeout,
                )
            })?;
            let events = self.topics.events(kind);
            for (p, devices) in restored {
                let partition = (events.clone(), p);
                if let Some(g) = wanted.get(&partition) {
                    store.load(partition, *g, devices);
                }
            }
        }
        Ok(())
    }

    async fn decode_and_score(
        &self,
        batch: &Batch,
        kinds: &HashMap<String, EventKind>,
        store: &mut StateStore,
    ) -> anyhow::Result<Outcome> {
        self.restore_state(batch, kinds, store)?;
        let decoding = Instant::now();
        let mut outcome = Outcome::default();
        let mut events: Vec<(Event, &OwnedMessage, Features)> =
            Vec::with_capacity(batch.messages.len());
        for message in &batch.messages {
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
            let event = match Event::from_avro(kind, &decoded.value) {
                Ok(event) => event,
                Err(e) => {
                    outcome.dead.push(DeadLetter {
                        message: message.clone(),
                        reason: format!("invalid event: {e}"),
                    });
                    continue;
                }
            };
            let partition = (message.topic().to_string(), message.partition());
            match outcome
                .state
                .observe(store, &partition, &event, &self.features)
            {
                Some(features) => events.push((event, message, features)),
                None => outcome.duplicates += 1,
            }
        }
        metrics::DECODE_SECONDS.observe(decoding.elapsed().as_secs_f64());
        let telemetry: Vec<(&Event, &Features)> = events
            .iter()
            .filter(|(e, _, _)| e.kind == EventKind::Telemetry)
            .map(|(e, _, f)| (e, f))
            .collect();
        let started = Instant::now();
        let mut scores = self.scorer.score(&telemetry)?.into_iter();
        metrics::INFERENCE_SECONDS.observe(started.elapsed().as_secs_f64());
        let processed_ms = now_ms();
        for (event, source, features) in events {
            let score = if event.kind == EventKind::Telemetry {
                scores.next()
            } else {
                None
            };
            outcome
                .rows
                .push(self.row(event, source, features, score, processed_ms));
        }
        Ok(outcome)
    }

    fn row(
        &self,
        e: Event,
        source: &OwnedMessage,
        features: Features,
        score: Option<Score>,
        processed_ms: i64,
    ) -> ScoredEvent {
        let score = score.unwrap_or(Score {
            score: 0.0,
            is_anomaly: false,
        });
        let (reading_names, reading_values) = e.readings.into_iter().unzip();
        let (feature_names, feature_values) = features
            .names
            .into_iter()
            .zip(features.values)
            .filter(|(_, v)| v.is_finite())
            .unzip();
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
            device_seq: features.seq,
            feature_names,
            feature_values,
            processed_ms,
            source_topic: source.topic().to_string(),
            source_partition: source.partition(),
            source_offset: source.offset(),
        }
    }

    /// Stores the rows and publishes results, dead letters, device states and
    /// offsets in one transaction, committed only once the rows are stored.
    /// The transaction's records go out while ClickHouse stores the rows;
    /// if ClickHouse fails, the transaction is aborted, the rows are stored
    /// with retries, and the batch is published afresh.
    async fn deliver(
        &self,
        batch: &Batch,
        outcome: &Outcome,
        kinds: &HashMap<String, EventKind>,
        shutdown: &Shutdown,
    ) -> Delivered {
        let Some(group) = self.consumer.group_metadata() else {
            return Delivered::Fatal(anyhow::anyhow!("consumer has no group metadata"));
        };
        let states = self.state_records(outcome, kinds);
        let publish = Publish {
            rows: &outcome.rows,
            dead: &outcome.dead,
            states: &states,
            batch: &batch.messages,
            group: &group,
        };
        let committing = Instant::now();
        let sending = match self.delivery.begin(&publish) {
            Ok(s) => s,
            Err(e) => return Delivered::from(e),
        };
        // Bounded well inside the transaction's timeout, so that a slow
        // ClickHouse cannot leave the broker to abort the transaction.
        let overlapped = TRANSACTION_TIMEOUT / 3;
        let published = match self.delivery.store(&outcome.rows, overlapped).await {
            Ok(_) => self.delivery.commit(&publish, sending),
            Err(e) => {
                tracing::warn!(error = %e, "cannot store batch; retrying");
                if let Err(e) = self.delivery.abort(sending) {
                    return Delivered::from(e);
                }
                if !self.store_with_retries(&outcome.rows, shutdown).await {
                    // Not committed: the batch is processed again after restart.
                    return Delivered::Stopping;
                }
                self.delivery.publish(&publish)
            }
        };
        metrics::COMMIT_SECONDS.observe(committing.elapsed().as_secs_f64());
        match published {
            Ok(()) => Delivered::Yes,
            Err(e) => Delivered::from(e),
        }
    }

    /// Stores `rows`, retrying with backoff while ClickHouse is unavailable;
    /// false if shutdown was requested first.
    async fn store_with_retries(&self, rows: &[ScoredEvent], shutdown: &Shutdown) -> bool {
        let mut attempt = 1;
        loop {
            if !backoff(shutdown, attempt).await {
                return false;
            }
            match self.delivery.store(rows, STORE_LIMIT).await {
                Ok(_) => return true,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "cannot store batch; retrying");
                }
            }
        }
    }

    /// The changelog records of the devices a batch changed.
    fn state_records(
        &self,
        outcome: &Outcome,
        kinds: &HashMap<String, EventKind>,
    ) -> Vec<StateRecord> {
        outcome
            .state
            .changed
            .iter()
            .filter_map(|((partition, device), state)| {
                Some(StateRecord {
                    topic: self.changelogs.topic(*kinds.get(&partition.0)?),
                    partition: partition.1,
                    key: encode_key(device),
                    value: encode_state(state),
                })
            })
            .collect()
    }

    /// Puts the consumer back to the first record of the batch in each
    /// partition still owned, so an uncommitted batch is consumed again
    /// (and, with a rebalance pending, polled so the rebalance can happen).
    /// A failed seek would skip records, so it stops the processor instead.
    fn rewind(&self, batch: &Batch) -> anyhow::Result<()> {
        let mut first: HashMap<&Partition, i64> = HashMap::new();
        for m in &batch.messages {
            let Some((p, _)) = batch
                .generations
                .get_key_value(&(m.topic().to_string(), m.partition()))
            else {
                continue;
            };
            let o = first.entry(p).or_insert(m.offset());
            *o = (*o).min(m.offset());
        }
        for (partition, offset) in first {
            if self.assignment.generation(&partition.0, partition.1)
                != batch.generations.get(partition).copied()
            {
                continue;
            }
            self.consumer
                .seek(
                    &partition.0,
                    partition.1,
                    Offset::Offset(offset),
                    Duration::from_secs(10),
                )
                .map_err(|e| anyhow::anyhow!("cannot rewind {partition:?} to {offset}: {e}"))?;
        }
        Ok(())
    }
}

enum Delivered {
    Yes,
    Stopping,
    /// The transaction did not commit; consume the batch again.
    Rewind(anyhow::Error),
    Fatal(anyhow::Error),
}

impl From<DeliveryError> for Delivered {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::Retry(e) => Delivered::Rewind(e),
            DeliveryError::Fatal(e) => Delivered::Fatal(e.context("cannot deliver batch")),
        }
    }
}

/// How long one insert may take, outside a transaction, before it is
/// abandoned and tried again.
const STORE_LIMIT: Duration = Duration::from_secs(60);

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

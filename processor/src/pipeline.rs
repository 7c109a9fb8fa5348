//! The processing loop: take a batch of records from Kafka, decode them
//! through the registry, bring each device's state up to date, score
//! telemetry, then hand the batch to [`dispatch`], which stores it exactly
//! once in a task of its own while the loop goes on with the next batch.
//! At most one batch is delivered at a time, and the next one is handed
//! over only once it was, so batches still commit in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, Offset};
use tokio::task::JoinHandle;

use pulse_common::clock::now_ms;
use pulse_common::config::Topics;
use pulse_common::contract;
use pulse_common::event::Event;
use pulse_common::retry::backoff;
use pulse_common::schemas::EventKind;
use pulse_common::scored::ScoredEvent;
use pulse_common::shutdown::Shutdown;

use crate::decode::records::Decoder;
use crate::metrics;
use crate::score::scorer::{Score, Scorer};
use crate::sink::delivery::{DeadLetter, Delivery, StateRecord};
use crate::sink::dispatch::{self, Delivered, Shipment};
use crate::sink::results::{Buffers, Results};
use crate::source::assignment::{Assignment, Partition, RebalanceAware};
use crate::source::in_flight::InFlight;
use crate::source::topics::Changelogs;
use crate::state::changelog::{self, encode_key, encode_state};
use crate::state::device::{FeatureSettings, Features};
use crate::state::store::{BatchState, Observed, StateLimits, StateStore};

pub struct Pipeline {
    pub consumer: StreamConsumer<RebalanceAware>,
    pub assignment: Assignment,
    /// The deliveries under way, shared with the consumer's rebalances.
    pub in_flight: InFlight,
    /// Client settings for reading the state changelog back.
    pub restore_config: ClientConfig,
    pub restore_timeout: Duration,
    pub changelogs: Changelogs,
    pub decoder: Decoder,
    pub scorer: Arc<Scorer>,
    pub features: FeatureSettings,
    pub limits: StateLimits,
    pub delivery: Arc<Delivery>,
    pub topics: Topics,
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Result buffers handed back by delivered batches.
    pub buffers: Arc<Buffers>,
}

/// The kind of event each event topic carries; looked up for every record,
/// so hashed with foldhash rather than the DoS-resistant default (the
/// topics are the processor's own configuration).
type Kinds = hashbrown::HashMap<String, EventKind>;

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
    results: Results,
    dead: Vec<DeadLetter>,
    state: BatchState,
    duplicates: u64,
}

/// Where each partition of a batch starts, with the generation it was
/// received under: where to consume again if the batch did not commit.
#[derive(Default)]
struct Starts(HashMap<Partition, (u64, i64)>);

impl Starts {
    fn of(batch: &Batch) -> Self {
        // A batch spans a handful of partitions: searched in a short list
        // rather than allocating a key per record.
        let mut first: Vec<((&str, i32), i64)> = Vec::new();
        for m in &batch.messages {
            let p = (m.topic(), m.partition());
            match first.iter_mut().find(|(q, _)| *q == p) {
                Some((_, offset)) => *offset = (*offset).min(m.offset()),
                None => first.push((p, m.offset())),
            }
        }
        let mut starts = Starts::default();
        for ((topic, partition), offset) in first {
            let partition = (topic.to_string(), partition);
            if let Some(g) = batch.generations.get(&partition) {
                starts.note(partition, *g, offset);
            }
        }
        starts
    }

    fn note(&mut self, partition: Partition, generation: u64, offset: i64) {
        let start = self.0.entry(partition).or_insert((generation, offset));
        if start.0 == generation {
            start.1 = start.1.min(offset);
        }
    }

    fn merge(mut self, other: Starts) -> Self {
        for (partition, (generation, offset)) in other.0 {
            self.note(partition, generation, offset);
        }
        self
    }
}

/// The batch being delivered, and what the loop keeps of it meanwhile.
struct Flight {
    handle: JoinHandle<(Delivered, Shipment)>,
    /// Set once the delivery ended while the loop waited for records.
    landed: Option<Delivered>,
    state: BatchState,
    starts: Starts,
    records: usize,
    counts: [(&'static str, u64); 3],
    buffers: Arc<Buffers>,
}

impl Flight {
    /// Waits for the delivery to end; keeps the result, so that this wait
    /// can be given up for another and taken up again.
    async fn land(&mut self) {
        if self.landed.is_none() {
            self.landed = Some(self.joined().await);
        }
    }

    /// How the delivery ended, once it has.
    async fn result(&mut self) -> Delivered {
        match self.landed.take() {
            Some(delivered) => delivered,
            None => self.joined().await,
        }
    }

    async fn joined(&mut self) -> Delivered {
        match (&mut self.handle).await {
            Ok((delivered, shipment)) => {
                self.buffers.give(shipment.results.into_buffer());
                delivered
            }
            Err(e) => Delivered::Fatal(anyhow::anyhow!("delivery task failed: {e}")),
        }
    }
}

/// What the loop waits for next.
enum Next {
    Batch(Batch),
    /// The batch in flight was delivered (or failed) while no record came.
    Landed,
    Shutdown,
}

/// How a delivery ended, as far as the loop is concerned.
enum Settled {
    Done,
    /// Not committed: consume again from these starts.
    Again(anyhow::Error, Starts),
    Stop(anyhow::Result<()>),
}

/// What the loop does after a delivery ended.
enum Step {
    /// Hand the batch just decoded over.
    Go,
    /// Drop it and consume again.
    Again,
    Stop(anyhow::Result<()>),
}

impl Pipeline {
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let kinds: Kinds = EventKind::ALL
            .iter()
            .map(|k| (self.topics.events(*k), *k))
            .collect();
        let mut store = StateStore::default();
        let mut flight = None;
        let result = self
            .process(&kinds, &mut store, &mut flight, &shutdown)
            .await;
        // Drain: the batch in flight ends (committed, or to be consumed
        // again after the restart) before the consumer is closed.
        let drained = match flight {
            Some(f) => match self.settle(f, &mut store).await {
                Settled::Stop(Err(e)) => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        };
        tracing::info!("processor drained");
        result.and(drained)
    }

    async fn process(
        &self,
        kinds: &Kinds,
        store: &mut StateStore,
        flight: &mut Option<Flight>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        let mut attempt = 0;
        let mut next_sweep = Instant::now();
        loop {
            let batch = match self.next_batch(shutdown, flight).await {
                Next::Shutdown => return Ok(()),
                Next::Batch(batch) => batch,
                Next::Landed => {
                    let step = self.end_flight(flight, store, None, &mut attempt, shutdown);
                    if let Step::Stop(result) = step.await {
                        return result;
                    }
                    continue;
                }
            };
            store.retain(|p| self.assignment.generation(&p.0, p.1).is_some());
            if batch.messages.is_empty() {
                continue;
            }
            let mut retries = 0;
            // Idle devices are looked for now and then, not in every batch:
            // it walks every device the instance holds.
            let sweep = Instant::now() >= next_sweep;
            if sweep {
                next_sweep = Instant::now() + IDLE_SWEEP_INTERVAL;
            }
            let outcome = loop {
                let earlier = flight.as_ref().map(|f| &f.state);
                match self
                    .decode_and_score(&batch, kinds, store, earlier, sweep)
                    .await
                {
                    Ok(o) => break o,
                    Err(e) => {
                        retries += 1;
                        tracing::warn!(error = %e, attempt = retries, "cannot process batch yet; retrying");
                        if !backoff(shutdown, retries).await {
                            return Ok(());
                        }
                    }
                }
            };
            match self
                .end_flight(flight, store, Some(&batch), &mut attempt, shutdown)
                .await
            {
                Step::Go => {}
                Step::Again => continue,
                Step::Stop(result) => return result,
            }
            *flight = Some(self.dispatch(batch, outcome, kinds, shutdown)?);
        }
    }

    /// Hands a decoded batch to a delivery task.
    fn dispatch(
        &self,
        batch: Batch,
        outcome: Outcome,
        kinds: &Kinds,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Flight> {
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| anyhow::anyhow!("consumer has no group metadata"))?;
        let starts = Starts::of(&batch);
        let records = batch.messages.len();
        let counts = [
            ("stored", outcome.rows.len() as u64),
            ("dead_lettered", outcome.dead.len() as u64),
            ("duplicate", outcome.duplicates),
        ];
        let shipment = Shipment {
            states: self.state_records(&outcome.state, kinds),
            rows: outcome.rows,
            results: outcome.results,
            dead: outcome.dead,
            messages: batch.messages,
            group,
        };
        // Entered here, before the consumer is polled again, so that no
        // partition of this batch can be given up while it is delivered.
        let underway = self.in_flight.enter();
        let handle = dispatch::spawn(self.delivery.clone(), shipment, shutdown.clone(), underway);
        Ok(Flight {
            handle,
            landed: None,
            state: outcome.state,
            starts,
            records,
            counts,
            buffers: self.buffers.clone(),
        })
    }

    /// Waits for the delivery in flight to end; its states become the
    /// committed ones if it committed.
    async fn settle(&self, mut flight: Flight, store: &mut StateStore) -> Settled {
        match flight.result().await {
            Delivered::Yes => {
                metrics::BATCH_SIZE.observe(flight.records as f64);
                for (outcome, n) in flight.counts {
                    metrics::EVENTS.with_label_values(&[outcome]).inc_by(n);
                }
                store.apply(flight.state);
                metrics::STATE_DEVICES.set(store.devices() as i64);
                Settled::Done
            }
            Delivered::Stopping => Settled::Stop(Ok(())),
            Delivered::Fatal(e) => Settled::Stop(Err(e)),
            Delivered::Rewind(e) => Settled::Again(e, flight.starts),
        }
    }

    /// Ends the delivery in flight, if there is one. `decoded` is the batch
    /// decoded meanwhile, given up with it if it did not commit.
    async fn end_flight(
        &self,
        flight: &mut Option<Flight>,
        store: &mut StateStore,
        decoded: Option<&Batch>,
        attempt: &mut u32,
        shutdown: &Shutdown,
    ) -> Step {
        let Some(f) = flight.take() else {
            return Step::Go;
        };
        match self.settle(f, store).await {
            Settled::Done => {
                *attempt = 0;
                Step::Go
            }
            Settled::Stop(result) => Step::Stop(result),
            Settled::Again(e, mut starts) => {
                if let Some(batch) = decoded {
                    starts = starts.merge(Starts::of(batch));
                }
                *attempt += 1;
                match self.again(e, starts, *attempt, shutdown).await {
                    Ok(true) => Step::Again,
                    Ok(false) => Step::Stop(Ok(())),
                    Err(e) => Step::Stop(Err(e)),
                }
            }
        }
    }

    /// Consumes again from `starts` after a pause; false when shutdown was
    /// requested meanwhile.
    async fn again(
        &self,
        e: anyhow::Error,
        starts: Starts,
        attempt: u32,
        shutdown: &Shutdown,
    ) -> anyhow::Result<bool> {
        tracing::warn!(error = %e, attempt, "cannot commit batch; consuming it again");
        self.rewind(starts)?;
        Ok(backoff(shutdown, attempt).await)
    }

    /// The next batch: waits for a first record, then takes what arrives
    /// within `max_wait`, up to `max_batch`; records of partitions revoked
    /// meanwhile are left out. While waiting for the first record, the end
    /// of the delivery in flight is reported as soon as it happens.
    async fn next_batch(&self, shutdown: &Shutdown, flight: &mut Option<Flight>) -> Next {
        let first = loop {
            tokio::select! {
                _ = shutdown.requested() => return Next::Shutdown,
                _ = land(flight) => return Next::Landed,
                m = self.consumer.recv() => match m {
                    Ok(m) => break m.detach(),
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                }
            }
        };
        let gathering = Instant::now();
        let mut received = Vec::with_capacity(self.max_batch);
        received.push(self.tagged(first));
        // One timer for the whole batch, not one per record.
        let deadline = tokio::time::sleep(self.max_wait);
        tokio::pin!(deadline);
        while received.len() < self.max_batch {
            tokio::select! {
                biased;
                m = self.consumer.recv() => match m {
                    Ok(m) => received.push(self.tagged(m.detach())),
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                },
                _ = &mut deadline => break,
            }
        }
        let gathered = gathering.elapsed().as_secs_f64();
        metrics::GATHER_SECONDS.observe(gathered);
        tracing::debug!(
            records = received.len(),
            seconds = gathered,
            "batch gathered"
        );
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
            let known = batch
                .generations
                .keys()
                .any(|(t, p)| t == m.topic() && *p == m.partition());
            if let (Some(g), false) = (generation, known) {
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
        Next::Batch(batch)
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
        kinds: &Kinds,
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
        kinds: &Kinds,
        store: &mut StateStore,
        earlier: Option<&BatchState>,
        sweep: bool,
    ) -> anyhow::Result<Outcome> {
        self.restore_state(batch, kinds, store)?;
        let decoding = Instant::now();
        let mut outcome = Outcome::default();
        if sweep && self.limits.idle_ttl_ms > 0 {
            let cutoff = now_ms() - self.limits.idle_ttl_ms;
            outcome.state.evict_idle(store, earlier, cutoff);
        }
        let mut events: Vec<(Event, &OwnedMessage, Features, Arc<str>)> =
            Vec::with_capacity(batch.messages.len());
        let mut partition: Partition = (String::new(), -1);
        let mut topic: Arc<str> = Arc::from("");
        for message in &batch.messages {
            let Some(kind) = kinds.get(message.topic()).copied() else {
                outcome.dead.push(DeadLetter {
                    message: message.clone(),
                    reason: format!("unexpected topic {}", message.topic()),
                });
                continue;
            };
            let event = match self.decoder.decode(kind, message.payload()).await {
                Ok(Ok(event)) => match contract::check(&event) {
                    Ok(()) => event,
                    // Refused before it reaches device state: a producer
                    // writing to Kafka directly meets the same contract as
                    // one going through ingest.
                    Err(e) => {
                        outcome.dead.push(DeadLetter {
                            message: message.clone(),
                            reason: format!("breaks the input contract: {e}"),
                        });
                        continue;
                    }
                },
                // The registry is unreachable: retry the batch, do not drop it.
                Err(e) if e.retriable => anyhow::bail!("schema registry: {e}"),
                Err(e) => {
                    outcome.dead.push(DeadLetter {
                        message: message.clone(),
                        reason: format!("undecodable: {e}"),
                    });
                    continue;
                }
                Ok(Err(e)) => {
                    outcome.dead.push(DeadLetter {
                        message: message.clone(),
                        reason: format!("invalid event: {e}"),
                    });
                    continue;
                }
            };
            // A batch holds runs of records of one partition: its name is
            // copied when it changes, not for every record.
            if partition.1 != message.partition() || partition.0 != message.topic() {
                partition = (message.topic().to_string(), message.partition());
                topic = Arc::from(message.topic());
            }
            let observed = outcome.state.observe(
                store,
                earlier,
                &partition,
                &event,
                &self.features,
                &self.limits,
            );
            match observed {
                Observed::Features(features) => {
                    events.push((event, message, features, topic.clone()))
                }
                Observed::Duplicate => outcome.duplicates += 1,
                Observed::OverQuota { limit } => outcome.dead.push(DeadLetter {
                    message: message.clone(),
                    reason: format!(
                        "tenant {} already has {limit} devices in partition {}, its quota",
                        event.tenant_id, partition.1
                    ),
                }),
            }
        }

        metrics::DECODE_SECONDS.observe(decoding.elapsed().as_secs_f64());
        let telemetry: Vec<(&Event, &Features)> = events
            .iter()
            .filter(|(e, ..)| e.kind == EventKind::Telemetry)
            .map(|(e, _, f, _)| (e, f))
            .collect();
        let started = Instant::now();
        let mut scores = self.scorer.score(&telemetry)?.into_iter();
        metrics::INFERENCE_SECONDS.observe(started.elapsed().as_secs_f64());
        let processed_ms = now_ms();
        outcome.rows.reserve_exact(events.len());
        for (event, source, features, topic) in events {
            let score = if event.kind == EventKind::Telemetry {
                scores.next()
            } else {
                None
            };
            outcome
                .rows
                .push(self.row(event, (source, topic), features, score, processed_ms));
        }
        outcome.results = Results::of(&outcome.rows, self.buffers.take())?;
        tracing::debug!(
            records = batch.messages.len(),
            seconds = decoding.elapsed().as_secs_f64(),
            "batch decoded and scored"
        );
        Ok(outcome)
    }

    fn row(
        &self,
        e: Event,
        // The record, and its topic's name shared by the batch's rows.
        (source, source_topic): (&OwnedMessage, Arc<str>),
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
            kind: e.kind.shared_name(),
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
            source_topic,
            source_partition: source.partition(),
            source_offset: source.offset(),
        }
    }

    /// The changelog records of the devices a batch changed.
    fn state_records(&self, state: &BatchState, kinds: &Kinds) -> Vec<StateRecord> {
        let record = |(topic, partition): &Partition, device, value| {
            Some(StateRecord {
                topic: self.changelogs.topic(*kinds.get(topic)?),
                partition: *partition,
                key: encode_key(device),
                value,
            })
        };
        let tombstones = state
            .evicted
            .iter()
            .filter_map(|(partition, device)| record(partition, device, None));
        state
            .changed
            .iter()
            .filter_map(|((partition, device), state)| {
                record(partition, device, Some(encode_state(state)))
            })
            .chain(tombstones)
            .collect()
    }

    /// Puts the consumer back to `starts` in each partition still owned
    /// under the same generation, so that an uncommitted batch is consumed
    /// again (and, with a rebalance pending, polled so the rebalance can
    /// happen). A failed seek would skip records, so it stops the processor.
    fn rewind(&self, starts: Starts) -> anyhow::Result<()> {
        for (partition, (generation, offset)) in starts.0 {
            if self.assignment.generation(&partition.0, partition.1) != Some(generation) {
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

/// How often the devices held are looked through for idle ones.
const IDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Ends when the delivery in flight has ended; never if there is none.
async fn land(flight: &mut Option<Flight>) {
    match flight {
        Some(f) => f.land().await,
        None => std::future::pending().await,
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
    use super::{schema_id, Batch, Starts};
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn batch(records: &[(i32, i64)], generations: &[(i32, u64)]) -> Batch {
        Batch {
            messages: records
                .iter()
                .map(|(p, o)| {
                    OwnedMessage::new(
                        None,
                        None,
                        "t".into(),
                        Timestamp::NotAvailable,
                        *p,
                        *o,
                        None,
                    )
                })
                .collect(),
            generations: generations
                .iter()
                .map(|(p, g)| (("t".to_string(), *p), *g))
                .collect(),
        }
    }

    fn sorted(starts: Starts) -> Vec<(i32, u64, i64)> {
        let mut v: Vec<_> = starts
            .0
            .into_iter()
            .map(|((_, p), (g, o))| (p, g, o))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_failed_batch_and_the_one_decoded_on_it_are_consumed_again_from_their_first_records() {
        let failed = batch(&[(0, 10), (0, 11), (1, 7)], &[(0, 1), (1, 1)]);
        let next = batch(
            &[(0, 12), (1, 8), (2, 40), (2, 41)],
            &[(0, 1), (1, 1), (2, 3)],
        );
        assert_eq!(sorted(Starts::of(&failed)), vec![(0, 1, 10), (1, 1, 7)]);
        assert_eq!(
            sorted(Starts::of(&failed).merge(Starts::of(&next))),
            vec![(0, 1, 10), (1, 1, 7), (2, 3, 40)]
        );
    }

    #[test]
    fn records_of_a_partition_not_owned_are_not_rewound() {
        let b = batch(&[(0, 10), (5, 3)], &[(0, 2)]);
        assert_eq!(sorted(Starts::of(&b)), vec![(0, 2, 10)]);
        assert!(Starts::of(&batch(&[], &[])).0.is_empty());
    }

    #[test]
    fn schema_id_reads_the_wire_format_header() {
        assert_eq!(schema_id(Some(&[0, 0, 0, 1, 2, 42])), 258);
        assert_eq!(schema_id(Some(&[0, 0])), 0);
        assert_eq!(schema_id(None), 0);
    }
}

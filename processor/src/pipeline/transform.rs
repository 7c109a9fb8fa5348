//! A batch's records to what it stores: each record decoded, checked and
//! seen by its device's state (or dead-lettered, or dropped as a repeat),
//! then the telemetry scored in one call to the model.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;

use pulse_common::clock::now_ms;
use pulse_common::event::Event;
use pulse_common::schemas::EventKind;
use pulse_common::scored::ScoredEvent;

use super::batch::Batch;
use super::{Kinds, Pipeline};
use crate::decode::records::DecodeError;
use crate::metrics;
use crate::sink::delivery::DeadLetter;
use crate::sink::results::Results;
use crate::source::assignment::Partition;
use crate::state::device::Features;
use crate::state::store::{BatchState, Observed, StateStore};

/// What a batch turned into.
#[derive(Default)]
pub(super) struct Outcome {
    pub(super) rows: Vec<ScoredEvent>,
    pub(super) results: Results,
    pub(super) dead: Vec<DeadLetter>,
    pub(super) state: BatchState,
    pub(super) duplicates: u64,
}

impl Outcome {
    fn dead_letter(&mut self, message: &OwnedMessage, reason: String) {
        self.dead.push(DeadLetter {
            message: message.clone(),
            reason,
        });
    }
}

/// An event kept for scoring, with its record, its device's features and
/// its topic's name shared by the batch's rows.
type Kept<'a> = (Event, &'a OwnedMessage, Features, Arc<str>);

impl Pipeline {
    /// The batch's outcome; an error (the registry or the model cannot be
    /// reached) leaves nothing applied, and the batch is tried again.
    pub(super) async fn decode_and_score(
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
        let limits = &self.state.limits;
        if sweep && limits.idle_ttl_ms > 0 {
            let cutoff = now_ms() - limits.idle_ttl_ms;
            outcome.state.evict_idle(store, earlier, cutoff);
        }
        let mut kept: Vec<Kept<'_>> = Vec::with_capacity(batch.messages.len());
        let mut partition: Partition = (String::new(), -1);
        let mut topic: Arc<str> = Arc::from("");
        for message in &batch.messages {
            let Some(kind) = kinds.get(message.topic()).copied() else {
                let reason = format!("unexpected topic {}", message.topic());
                outcome.dead_letter(message, reason);
                continue;
            };
            let event = match self.decoder.decode(kind, message.payload()).await {
                Ok(event) => event,
                // The registry is unreachable: retry the batch, do not drop it.
                Err(e @ DecodeError::Unavailable(_)) => return Err(e.into()),
                Err(e) => {
                    outcome.dead_letter(message, e.to_string());
                    continue;
                }
            };
            // A batch holds runs of records of one partition: its name is
            // copied when it changes, not for every record.
            if partition.1 != message.partition() || partition.0 != message.topic() {
                partition = (message.topic().to_string(), message.partition());
                topic = Arc::from(message.topic());
            }
            let features = &self.state.features;
            match outcome
                .state
                .observe(store, earlier, &partition, &event, features, limits)
            {
                Observed::Features(features) => {
                    kept.push((event, message, features, topic.clone()))
                }
                Observed::Duplicate => outcome.duplicates += 1,
                Observed::OverQuota { limit } => {
                    let reason = format!(
                        "tenant {} already has {limit} devices in partition {}, its quota",
                        event.tenant_id, partition.1
                    );
                    outcome.dead_letter(message, reason);
                }
            }
        }
        metrics::DECODE_SECONDS.observe(decoding.elapsed().as_secs_f64());
        outcome.rows = self.scored_rows(kept)?;
        outcome.results = Results::of(&outcome.rows, self.buffers.take())?;
        tracing::debug!(
            records = batch.messages.len(),
            seconds = decoding.elapsed().as_secs_f64(),
            "batch decoded and scored"
        );
        Ok(outcome)
    }

    /// The kept events as rows, their telemetry scored together.
    fn scored_rows(&self, kept: Vec<Kept<'_>>) -> anyhow::Result<Vec<ScoredEvent>> {
        let telemetry: Vec<(&Event, &Features)> = kept
            .iter()
            .filter(|(e, ..)| e.kind == EventKind::Telemetry)
            .map(|(e, _, f, _)| (e, f))
            .collect();
        let started = Instant::now();
        let mut scores = self.scorer.score(&telemetry)?.into_iter();
        metrics::INFERENCE_SECONDS.observe(started.elapsed().as_secs_f64());
        let processed_ms = now_ms();
        let mut rows = Vec::with_capacity(kept.len());
        for (event, source, features, topic) in kept {
            let score = if event.kind == EventKind::Telemetry {
                scores.next()
            } else {
                None
            };
            rows.push(self.row(event, (source, topic), features, score, processed_ms));
        }
        Ok(rows)
    }
}

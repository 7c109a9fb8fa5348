//! The processing loop: take a batch of records from Kafka ([`batch`]),
//! read back the state of partitions this instance just took ([`restore`]),
//! decode and score the batch ([`transform`]) into rows and changelog
//! records ([`rows`]), then hand it to the sink, which stores it exactly
//! once in a task of its own while the loop goes on with the next batch
//! ([`flight`]). At most one batch is delivered at a time, and the next one
//! is handed over only once it was, so batches still commit in order; one
//! that did not commit is consumed again from its first records.

mod batch;
mod flight;
mod restore;
mod rows;
mod transform;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::StreamConsumer;
use rdkafka::ClientConfig;

use pulse_common::config::Topics;
use pulse_common::retry::backoff;
use pulse_common::schemas::EventKind;
use pulse_common::shutdown::Shutdown;

use crate::decode::records::Decoder;
use crate::score::scorer::Scorer;
use crate::sink::delivery::Delivery;
use crate::sink::results::Buffers;
use crate::source::assignment::{Assignment, RebalanceAware};
use crate::source::in_flight::InFlight;
use crate::source::topics::Changelogs;
use crate::state::device::FeatureSettings;
use crate::state::store::{StateLimits, StateStore};

use batch::Next;
use flight::{Flight, Settled, Step};

/// The input side: the group consumer, the partitions it owns, and the
/// deliveries under way, which its rebalances wait for.
pub struct Source {
    pub consumer: StreamConsumer<RebalanceAware>,
    pub assignment: Assignment,
    pub in_flight: InFlight,
}

/// How device state is kept, and read back from its changelogs when a
/// partition arrives.
pub struct StateSettings {
    pub features: FeatureSettings,
    pub limits: StateLimits,
    pub changelogs: Changelogs,
    /// Client settings for reading a changelog back.
    pub restore_config: ClientConfig,
    /// Longest time to read a partition's state back.
    pub restore_timeout: Duration,
}

/// How records are gathered into batches.
pub struct Batching {
    /// Most records per batch.
    pub max_batch: usize,
    /// Longest wait to fill a batch once its first record came.
    pub max_wait: Duration,
}

pub struct Pipeline {
    source: Source,
    decoder: Decoder,
    state: StateSettings,
    scorer: Arc<Scorer>,
    delivery: Arc<Delivery>,
    topics: Topics,
    batching: Batching,
    /// Result buffers handed back by delivered batches.
    buffers: Arc<Buffers>,
}

/// The kind of event each event topic carries; looked up for every record,
/// so hashed with foldhash rather than the DoS-resistant default (the
/// topics are the processor's own configuration).
type Kinds = hashbrown::HashMap<String, EventKind>;

/// How often the devices held are looked through for idle ones.
const IDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl Pipeline {
    pub fn new(
        source: Source,
        decoder: Decoder,
        state: StateSettings,
        scorer: Arc<Scorer>,
        delivery: Delivery,
        topics: Topics,
        batching: Batching,
    ) -> Self {
        Pipeline {
            source,
            decoder,
            state,
            scorer,
            delivery: Arc::new(delivery),
            topics,
            batching,
            buffers: Arc::default(),
        }
    }

    /// Processes batches until shutdown is requested or a delivery fails
    /// for good; the batch in flight is drained either way.
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
            let batch = match self.next_batch(shutdown, flight::land(flight)).await {
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
            store.retain(|p| self.source.assignment.generation(&p.0, p.1).is_some());
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
}

//! The batch being delivered: handing a scored batch to the sink, waiting
//! for its delivery to end, and, when it did not commit, putting the
//! consumer back to the batch's first records.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::Offset;
use tokio::task::JoinHandle;

use pulse_common::retry::backoff;
use pulse_common::shutdown::Shutdown;

use super::batch::{Batch, Starts};
use super::transform::Outcome;
use super::{Kinds, Pipeline};
use crate::metrics;
use crate::sink::dispatch::{self, Delivered, Shipment};
use crate::sink::results::Buffers;
use crate::state::store::{BatchState, StateStore};

/// The batch being delivered, and what the loop keeps of it meanwhile.
pub(super) struct Flight {
    handle: JoinHandle<(Delivered, Shipment)>,
    /// Set once the delivery ended while the loop waited for records.
    landed: Option<Delivered>,
    /// The device states the batch leaves, which the next batch builds on.
    pub(super) state: BatchState,
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

/// Ends when the delivery in flight has ended; never if there is none.
pub(super) async fn land(flight: &mut Option<Flight>) {
    match flight {
        Some(f) => f.land().await,
        None => std::future::pending().await,
    }
}

/// How a delivery ended, as far as the loop is concerned.
pub(super) enum Settled {
    Done,
    /// Not committed: consume again from these starts.
    Again(anyhow::Error, Starts),
    Stop(anyhow::Result<()>),
}

/// What the loop does after a delivery ended.
pub(super) enum Step {
    /// Hand the batch just decoded over.
    Go,
    /// Drop it and consume again.
    Again,
    Stop(anyhow::Result<()>),
}

impl Pipeline {
    /// Hands a decoded batch to a delivery task.
    pub(super) fn dispatch(
        &self,
        batch: Batch,
        outcome: Outcome,
        kinds: &Kinds,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Flight> {
        let group = self
            .source
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
        let underway = self.source.in_flight.enter();
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
    pub(super) async fn settle(&self, mut flight: Flight, store: &mut StateStore) -> Settled {
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
    pub(super) async fn end_flight(
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
                tracing::warn!(error = %e, attempt = *attempt, "cannot commit batch; consuming it again");
                if let Err(e) = self.rewind(starts) {
                    return Step::Stop(Err(e));
                }
                if backoff(shutdown, *attempt).await {
                    Step::Again
                } else {
                    Step::Stop(Ok(()))
                }
            }
        }
    }

    /// Puts the consumer back to `starts` in each partition still owned
    /// under the same generation, so that an uncommitted batch is consumed
    /// again (and, with a rebalance pending, polled so the rebalance can
    /// happen). A failed seek would skip records, so it stops the processor.
    fn rewind(&self, starts: Starts) -> anyhow::Result<()> {
        for (partition, (generation, offset)) in starts.0 {
            let owned = self.source.assignment.generation(&partition.0, partition.1);
            if owned != Some(generation) {
                continue;
            }
            self.source
                .consumer
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

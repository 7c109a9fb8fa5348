//! Delivering one processed batch, in a task of its own so that the next
//! batch is decoded and scored meanwhile: its rows stored in ClickHouse and
//! its results, dead letters, device states and offsets published in one
//! Kafka transaction, committed only once the rows are stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::message::OwnedMessage;
use tokio::task::JoinHandle;

use pulse_common::clickhouse::{classify, Failure};
use pulse_common::retry::backoff;
use pulse_common::scored::ScoredEvent;
use pulse_common::shutdown::Shutdown;

use crate::metrics;
use crate::sink::delivery::{
    DeadLetter, Delivery, DeliveryError, Publish, StateRecord, TRANSACTION_TIMEOUT,
};
use crate::sink::results::Results;
use crate::source::in_flight::Underway;

/// What one batch's delivery writes.
pub(crate) struct Shipment {
    pub(crate) rows: Vec<ScoredEvent>,
    pub(crate) results: Results,
    pub(crate) dead: Vec<DeadLetter>,
    pub(crate) states: Vec<StateRecord>,
    /// The batch's records, whose offsets the transaction commits.
    pub(crate) messages: Vec<OwnedMessage>,
    pub(crate) group: ConsumerGroupMetadata,
}

pub(crate) enum Delivered {
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

/// Starts delivering `shipment`; `underway` is released when it ends. The
/// shipment is handed back, to be freed by the thread that allocated it:
/// the allocator frees memory of its own thread much faster.
pub(crate) fn spawn(
    delivery: Arc<Delivery>,
    shipment: Shipment,
    shutdown: Shutdown,
    underway: Underway,
) -> JoinHandle<(Delivered, Shipment)> {
    tokio::spawn(async move {
        let delivered = deliver(&delivery, &shipment, &shutdown).await;
        drop(underway);
        (delivered, shipment)
    })
}

impl Shipment {
    fn publish(&self) -> Publish<'_> {
        Publish {
            rows: &self.rows,
            results: &self.results,
            dead: &self.dead,
            states: &self.states,
            batch: &self.messages,
            group: &self.group,
        }
    }
}

/// The transaction's records go out while ClickHouse stores the rows; if
/// ClickHouse fails, the transaction is aborted, the rows are stored with
/// retries, and the batch is published afresh.
async fn deliver(delivery: &Delivery, s: &Shipment, shutdown: &Shutdown) -> Delivered {
    let committing = Instant::now();
    // Bounded well inside the transaction's timeout, so that a slow
    // ClickHouse cannot leave the broker to abort the transaction.
    let overlapped = TRANSACTION_TIMEOUT / 3;
    let (begun, stored) = delivery.begin_during(&s.publish(), delivery.store(&s.rows, overlapped));
    // Stored rows need no undoing: the batch consumed again skips them.
    let sending = match begun {
        Ok(sending) => sending,
        Err(e) => return Delivered::from(e),
    };
    let inserted = committing.elapsed().as_secs_f64();
    let publish = s.publish();
    let published = match stored {
        Ok(_) => delivery.commit(&publish, sending),
        Err(e) => {
            if let Err(e) = delivery.abort(sending) {
                return Delivered::from(e);
            }
            if permanent(&e) {
                return refused(e);
            }
            tracing::warn!(error = %e, "cannot store batch; retrying");
            match store_with_retries(delivery, &s.rows, shutdown).await {
                Ok(true) => {}
                // Not committed: the batch is processed again after restart.
                Ok(false) => return Delivered::Stopping,
                Err(e) => return refused(e),
            }
            delivery.publish(&publish)
        }
    };
    let committed = committing.elapsed().as_secs_f64();
    metrics::COMMIT_SECONDS.observe(committed);
    tracing::debug!(
        rows = s.rows.len(),
        inserted,
        committed,
        "batch delivered (seconds since it was handed over)"
    );
    match published {
        Ok(()) => Delivered::Yes,
        Err(e) => Delivered::from(e),
    }
}

/// How long one insert may take, outside a transaction, before it is
/// abandoned and tried again.
const STORE_LIMIT: Duration = Duration::from_secs(60);

/// Stores `rows`, retrying with backoff while ClickHouse is unavailable;
/// false if shutdown was requested first, an error if ClickHouse refused
/// them for good. The batch stays in memory and nothing more is consumed,
/// so memory stays bounded however long the outage.
async fn store_with_retries(
    delivery: &Delivery,
    rows: &[ScoredEvent],
    shutdown: &Shutdown,
) -> anyhow::Result<bool> {
    let mut attempt = 1;
    loop {
        if !backoff(shutdown, attempt).await {
            return Ok(false);
        }
        match delivery.store(rows, STORE_LIMIT).await {
            Ok(_) => return Ok(true),
            Err(e) if permanent(&e) => return Err(e),
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "cannot store batch; retrying");
            }
        }
    }
}

/// Whether ClickHouse refused to store for good (an unknown column or
/// table, a type mismatch, no permission): retrying would hold every
/// partition forever behind an error only an operator can fix.
fn permanent(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|cause| cause.downcast_ref::<clickhouse::error::Error>())
        .any(|cause| classify(cause) == Failure::Permanent)
}

/// Stops the processor with what ClickHouse said. Nothing of the batch was
/// committed, so it is processed again once the table is fixed.
fn refused(e: anyhow::Error) -> Delivered {
    Delivered::Fatal(e.context("ClickHouse refused the batch for good; fix the table and restart"))
}

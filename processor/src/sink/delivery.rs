//! Storing a processed batch exactly once.
//!
//! ClickHouse: one batch is one INSERT of the rows it does not hold yet
//! (see [`crate::sink::stored`]: each row carries its Kafka partition and offset),
//! sent in the table's sorting-key order.
//!
//! Kafka: the batch's results, alerts, device states and dead letters and
//! the consumer offsets are committed in one transaction, so consumers reading `read_committed` see
//! each result once, and the batch is consumed again only if that
//! transaction did not commit. Another instance that took over the
//! partitions fences this one (consumer group metadata, KIP-447).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use clickhouse::Client;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use pulse_common::scored::{Alert, ScoredEvent, EVENTS_TABLE};

use crate::metrics;
use crate::sink::results::Results;
use crate::sink::stored::{self, Mark, Span, Stored, Watermarks};

/// Which offsets of a span ClickHouse holds, and the highest from its first on.
const STORED_OFFSETS: &str = include_str!("../../../schemas/clickhouse/queries/stored_offsets.sql");

/// A record that cannot be processed, bound for the dead-letter topic.
pub struct DeadLetter {
    pub message: OwnedMessage,
    pub reason: String,
}

/// A device's new state, bound for its changelog partition.
pub struct StateRecord {
    pub topic: String,
    pub partition: i32,
    pub key: Vec<u8>,
    /// None: a tombstone, the device is forgotten.
    pub value: Option<Vec<u8>>,
}

pub enum DeliveryError {
    /// Try the same batch again after a pause.
    Retry(anyhow::Error),
    /// This instance was fenced or its producer is broken: stop.
    Fatal(anyhow::Error),
}

pub struct Delivery {
    pub clickhouse: Client,
    pub producer: FutureProducer,
    pub watermarks: Watermarks,
    pub results_topic: String,
    pub alerts_topic: String,
    /// The model's threshold, carried in alerts.
    pub threshold: f32,
    pub dead_letter_topic: String,
    pub timeout: Duration,
}

/// How long the broker keeps a batch's transaction open before aborting it.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15);

impl Delivery {
    /// Inserts the rows not stored yet, giving up after `limit`, and returns
    /// how many were inserted.
    pub async fn store(&self, rows: &[ScoredEvent], limit: Duration) -> anyhow::Result<usize> {
        let stored = match tokio::time::timeout(limit, self.insert_fresh(rows)).await {
            Ok(stored) => stored,
            Err(_) => Err(anyhow::anyhow!(
                "ClickHouse did not store the batch within {limit:?}"
            )),
        };
        if stored.is_err() {
            // A failed or abandoned insert may still have been written: the
            // retry reads the stored offsets again instead of trusting ours.
            self.watermarks.forget_all();
        }
        stored
    }

    async fn insert_fresh(&self, rows: &[ScoredEvent]) -> anyhow::Result<usize> {
        let epoch = self.watermarks.epoch();
        let spans = stored::spans(rows);
        let mut held = Vec::with_capacity(spans.len());
        for span in &spans {
            held.push(
                match self.watermarks.get(span.partition.0, span.partition.1) {
                    Some(mark) => Stored::UpTo(mark),
                    None => self.read_stored(span).await?,
                },
            );
        }
        let fresh = stored::fresh(rows, &spans, &held);
        if !fresh.is_empty() {
            let started = Instant::now();
            let mut insert = self.clickhouse.insert::<ScoredEvent>(EVENTS_TABLE).await?;
            for row in &fresh {
                insert.write(*row).await?;
            }
            insert.end().await?;
            metrics::SINK_SECONDS.observe(started.elapsed().as_secs_f64());
        }
        let skipped = rows.len() - fresh.len();
        if skipped > 0 {
            tracing::info!(skipped, "rows of a replayed batch were already stored");
        }
        let marks: Vec<Mark<'_>> = spans
            .iter()
            .zip(&held)
            .filter_map(|(span, held)| held.after(span).map(|mark| (span.partition, mark)))
            .collect();
        self.watermarks.update(epoch, &marks);
        Ok(fresh.len())
    }

    /// The offsets ClickHouse holds within `span`, and the highest it holds
    /// from the span's first on.
    async fn read_stored(&self, span: &Span<'_>) -> anyhow::Result<Stored> {
        let (offsets, rows, highest): (Vec<i64>, u64, i64) = self
            .clickhouse
            .query(STORED_OFFSETS)
            .bind(span.last)
            .bind(span.partition.0)
            .bind(span.partition.1)
            .bind(span.first)
            .fetch_one()
            .await?;
        Ok(Stored::Read {
            offsets: offsets.into_iter().collect(),
            highest: (rows > 0).then_some(highest),
        })
    }

    /// Publishes the results, dead letters and device states and commits the
    /// batch's offsets, all in one Kafka transaction.
    pub fn publish(&self, out: &Publish<'_>) -> Result<(), DeliveryError> {
        let sending = self.begin(out)?;
        self.commit(out, sending)
    }

    /// Opens the batch's transaction and hands the client its records,
    /// which it sends in the background: the caller stores the rows in
    /// ClickHouse meanwhile, then commits or aborts.
    pub fn begin(&self, out: &Publish<'_>) -> Result<Sending, DeliveryError> {
        let result = tokio::task::block_in_place(|| self.begin_and_send(out));
        self.begun(result)
    }

    /// [`Delivery::begin`] on a thread of its own while `meanwhile` (the
    /// batch's insert) runs here: handing the client a batch's records
    /// takes a tenth of a second that the insert need not wait for.
    pub(crate) fn begin_during<F: Future>(
        &self,
        out: &Publish<'_>,
        meanwhile: F,
    ) -> (Result<Sending, DeliveryError>, F::Output) {
        let runtime = tokio::runtime::Handle::current();
        let (begun, output) = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let sender = scope.spawn(|| self.begin_and_send(out));
                let output = runtime.block_on(meanwhile);
                // A panic while sending is the batch's failure, not the process's.
                let begun = sender.join().unwrap_or_else(|_| {
                    tracing::error!("sending the batch's records panicked");
                    Err(KafkaError::Canceled)
                });
                (begun, output)
            })
        });
        (self.begun(begun), output)
    }

    /// The open transaction, or the error that ended it.
    fn begun(
        &self,
        sent: Result<Vec<DeliveryFuture>, KafkaError>,
    ) -> Result<Sending, DeliveryError> {
        sent.map(Sending).map_err(|e| self.failed(e))
    }

    /// Adds the batch's offsets to its transaction and commits it, once every
    /// record is acknowledged.
    pub fn commit(&self, out: &Publish<'_>, sending: Sending) -> Result<(), DeliveryError> {
        let result = tokio::task::block_in_place(|| self.finish(out, sending));
        result.map_err(|e| self.failed(e))
    }

    /// Abandons an open transaction: its records are never shown to
    /// read_committed consumers. Its records are waited for first (for at
    /// most `timeout`): an abort that reaches the coordinator before it has
    /// registered the transaction's partitions is refused with a fatal
    /// INVALID_TXN_STATE (librdkafka issue 4849), which happened when
    /// ClickHouse refused an insert at once; an acknowledged record shows
    /// that its partition was registered.
    pub fn abort(&self, sending: Sending) -> Result<(), DeliveryError> {
        let runtime = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            // Whether they were delivered does not matter: they are aborted.
            let settled = runtime.block_on(tokio::time::timeout(
                self.timeout,
                sending.acknowledged(),
            ));
            if settled.is_err() {
                tracing::warn!(timeout = ?self.timeout, "transaction records not acknowledged; aborting anyway");
            }
            self.abort_transaction()
        })
        .map_err(|e| DeliveryError::Fatal(e.into()))
    }

    /// Aborts the open transaction. An abort that timed out goes on in the
    /// client's background and is waited for again, a few times.
    fn abort_transaction(&self) -> Result<(), KafkaError> {
        let mut attempt = 1;
        loop {
            match self.producer.abort_transaction(self.timeout) {
                Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < 4 => {
                    tracing::warn!(error = %e, attempt, "transaction abort not finished; waiting again");
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// A transaction that failed: aborted so the batch can be tried again,
    /// unless the producer can no longer go on.
    fn failed(&self, e: KafkaError) -> DeliveryError {
        let fatal = matches!(&e, KafkaError::Transaction(t) if t.is_fatal());
        if !fatal {
            if let Err(abort) = tokio::task::block_in_place(|| self.abort_transaction()) {
                tracing::warn!(error = %abort, "cannot abort the transaction");
                return DeliveryError::Fatal(abort.into());
            }
            return DeliveryError::Retry(e.into());
        }
        DeliveryError::Fatal(e.into())
    }

    fn begin_and_send(&self, out: &Publish<'_>) -> Result<Vec<DeliveryFuture>, KafkaError> {
        self.producer.begin_transaction()?;
        let mut deliveries = Vec::with_capacity(out.rows.len() + out.dead.len() + out.states.len());
        if out.results.len() != out.rows.len() {
            tracing::error!(
                rows = out.rows.len(),
                results = out.results.len(),
                "results do not match the rows"
            );
            return Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::InvalidMessage,
            ));
        }
        // The client copies each record: one key and one payload buffer
        // serve the whole batch.
        let mut key = String::new();
        let mut payload = Vec::new();
        for (r, result) in out.rows.iter().zip(out.results.iter()) {
            key.clear();
            key.push_str(&r.tenant_id);
            key.push('/');
            key.push_str(&r.source_id);
            let record = FutureRecord::to(&self.results_topic)
                .key(&key)
                .payload(result);
            deliveries.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
            if let Some(alert) = Alert::for_row(r, self.threshold) {
                payload.clear();
                serde_json::to_writer(&mut payload, &alert).map_err(json_error)?;
                let record = FutureRecord::to(&self.alerts_topic)
                    .key(&key)
                    .payload(&payload);
                deliveries.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
            }
        }
        for s in out.states {
            let mut record = FutureRecord::<[u8], [u8]>::to(&s.topic)
                .partition(s.partition)
                .key(&s.key);
            if let Some(value) = &s.value {
                record = record.payload(value);
            }
            deliveries.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for d in out.dead {
            let m = &d.message;
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "pulse-error",
                    value: Some(d.reason.as_str()),
                })
                .insert(Header {
                    key: "pulse-source-topic",
                    value: Some(m.topic()),
                })
                .insert(Header {
                    key: "pulse-source-partition",
                    value: Some(&m.partition().to_string()),
                })
                .insert(Header {
                    key: "pulse-source-offset",
                    value: Some(&m.offset().to_string()),
                });
            let mut record =
                FutureRecord::<[u8], [u8]>::to(&self.dead_letter_topic).headers(headers);
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            if let Some(p) = m.payload() {
                record = record.payload(p);
            }
            deliveries.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
            tracing::warn!(topic = m.topic(), offset = m.offset(), reason = %d.reason, "record dead-lettered");
        }
        Ok(deliveries)
    }

    fn finish(&self, out: &Publish<'_>, sending: Sending) -> Result<(), KafkaError> {
        self.producer.send_offsets_to_transaction(
            &next_offsets(out.batch)?,
            out.group,
            self.timeout,
        )?;
        // Wait for every record's acknowledgement here: the client's commit
        // flushes first, and its flush, finding records still in flight,
        // sleeps in steps of 100 ms while another thread serves their
        // acknowledgements, which would cost most batches 100 ms.
        futures::executor::block_on(sending.acknowledged())?;
        self.producer.commit_transaction(self.timeout)?;
        Ok(())
    }
}

/// Serializing a result cannot fail (string keys, finite structure); were it
/// to, the batch is retried rather than published with an empty record.
fn json_error(e: serde_json::Error) -> KafkaError {
    tracing::error!(error = %e, "cannot serialize a result");
    KafkaError::MessageProduction(RDKafkaErrorCode::InvalidMessage)
}

/// An open transaction whose records the client is sending.
pub struct Sending(Vec<DeliveryFuture>);

impl Sending {
    /// Ends once every record was acknowledged or failed, with the first
    /// failure. One after the other: they are acknowledged in order within
    /// a partition, and a set of 20,000 futures polled together costs more
    /// than waiting on each in turn.
    async fn acknowledged(self) -> Result<(), KafkaError> {
        let mut outcome = Ok(());
        for delivery in self.0 {
            let failure = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e,
                Err(_) => KafkaError::Canceled,
            };
            if outcome.is_ok() {
                outcome = Err(failure);
            }
        }
        outcome
    }
}

/// What one batch's transaction publishes.
pub struct Publish<'a> {
    pub rows: &'a [ScoredEvent],
    /// The rows as published on the results topic, in the same order.
    pub results: &'a Results,
    pub dead: &'a [DeadLetter],
    pub states: &'a [StateRecord],
    pub batch: &'a [OwnedMessage],
    pub group: &'a ConsumerGroupMetadata,
}

/// The offsets to commit after `batch`: one past the last record of each partition.
fn next_offsets(batch: &[OwnedMessage]) -> Result<TopicPartitionList, KafkaError> {
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for m in batch {
        let e = next.entry((m.topic(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    Ok(tpl)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::FutureProducer;
    use rdkafka::ClientConfig;

    use super::{Delivery, DeliveryError, Publish, Watermarks};
    use crate::sink::results::Results;

    /// A delivery whose producer never initialised its transactions (no
    /// broker is needed: every transactional call fails at once).
    fn uninitialised_delivery() -> Delivery {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("transactional.id", "never-initialised")
            .create()
            .expect("producer");
        Delivery {
            clickhouse: clickhouse::Client::default().with_url("http://127.0.0.1:9"),
            producer,
            watermarks: Watermarks::default(),
            results_topic: "results".into(),
            alerts_topic: "alerts".into(),
            threshold: 1.0,
            dead_letter_topic: "dead".into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_cannot_be_sent_still_ends_its_insert_and_is_refused() {
        let delivery = uninitialised_delivery();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("group.id", "g")
            .set("bootstrap.servers", "127.0.0.1:9")
            .create()
            .expect("consumer");
        let group = consumer.group_metadata().expect("group metadata");
        let results = Results::default();
        let publish = Publish {
            rows: &[],
            results: &results,
            dead: &[],
            states: &[],
            batch: &[],
            group: &group,
        };
        let (begun, inserted) = delivery.begin_during(&publish, async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            42
        });
        assert_eq!(
            inserted, 42,
            "the insert ran to its end beside the failed send"
        );
        match begun {
            Err(DeliveryError::Fatal(e)) => {
                assert!(e.to_string().to_lowercase().contains("transaction"), "{e}")
            }
            Err(DeliveryError::Retry(e)) => {
                panic!("a producer without transactions cannot retry: {e}")
            }
            Ok(_) => panic!("a transaction began without init_transactions"),
        }
    }
}

//! Storing a processed batch exactly once.
//!
//! ClickHouse: every row carries its Kafka partition and offset, and a row is
//! inserted only if its offset is past the highest one already stored for
//! its partition (looked up again after every rebalance). One batch is one
//! INSERT, so after a crash the replayed batch is either skipped whole or
//! written whole.
//!
//! Kafka: the batch's results, alerts, device states and dead letters and
//! the consumer offsets are committed in one transaction, so consumers reading `read_committed` see
//! each result once, and the batch is consumed again only if that
//! transaction did not commit. Another instance that took over the
//! partitions fences this one (consumer group metadata, KIP-447).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickhouse::Client;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use pulse_common::scored::{Alert, ScoredEvent, EVENTS_TABLE};
use pulse_common::sql;

use crate::metrics;

/// The highest offset stored in ClickHouse per (topic, partition), as far
/// as this instance knows; forgotten at every rebalance.
#[derive(Clone, Default)]
pub struct Watermarks(Arc<Mutex<HashMap<(String, i32), i64>>>);

impl Watermarks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn forget_all(&self) {
        self.lock().clear();
    }
}

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
    pub value: Vec<u8>,
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

impl Delivery {
    /// Inserts the rows not stored yet and returns how many were inserted.
    pub async fn store(&self, rows: &[ScoredEvent]) -> anyhow::Result<usize> {
        let mut known = self.watermarks.lock().clone();
        for row in rows {
            let key = (row.source_topic.clone(), row.source_partition);
            if let std::collections::hash_map::Entry::Vacant(slot) = known.entry(key) {
                let stored = self
                    .stored_watermark(&row.source_topic, row.source_partition)
                    .await?;
                slot.insert(stored);
            }
        }
        let fresh: Vec<&ScoredEvent> = rows
            .iter()
            .filter(|r| r.source_offset > known[&(r.source_topic.clone(), r.source_partition)])
            .collect();
        if !fresh.is_empty() {
            let started = Instant::now();
            let mut insert = self.clickhouse.insert::<ScoredEvent>(EVENTS_TABLE).await?;
            for row in &fresh {
                insert.write(*row).await?;
            }
            insert.end().await?;
            metrics::SINK_SECONDS.observe(started.elapsed().as_secs_f64());
            for row in &fresh {
                let w = known
                    .entry((row.source_topic.clone(), row.source_partition))
                    .or_insert(-1);
                *w = (*w).max(row.source_offset);
            }
        }
        let skipped = rows.len() - fresh.len();
        if skipped > 0 {
            tracing::info!(skipped, "rows of a replayed batch were already stored");
        }
        *self.watermarks.lock() = known;
        Ok(fresh.len())
    }

    async fn stored_watermark(&self, topic: &str, partition: i32) -> anyhow::Result<i64> {
        let (rows, max): (u64, i64) = self
            .clickhouse
            .query(sql::STORED_WATERMARK)
            .bind(topic)
            .bind(partition)
            .fetch_one()
            .await?;
        Ok(if rows == 0 { -1 } else { max })
    }

    /// Publishes the results, dead letters and device states and commits the
    /// batch's offsets, all in one Kafka transaction.
    pub fn publish(&self, out: &Publish<'_>) -> Result<(), DeliveryError> {
        let result = tokio::task::block_in_place(|| self.transaction(out));
        result.map_err(|e| {
            let fatal = matches!(&e, KafkaError::Transaction(t) if t.is_fatal());
            if !fatal {
                if let Err(abort) = self.producer.abort_transaction(self.timeout) {
                    tracing::warn!(error = %abort, "cannot abort the transaction");
                    return DeliveryError::Fatal(abort.into());
                }
                return DeliveryError::Retry(e.into());
            }
            DeliveryError::Fatal(e.into())
        })
    }

    fn transaction(&self, out: &Publish<'_>) -> Result<(), KafkaError> {
        self.producer.begin_transaction()?;
        let mut deliveries = Vec::with_capacity(out.rows.len() + out.dead.len() + out.states.len());
        for r in out.rows {
            let key = format!("{}/{}", r.tenant_id, r.source_id);
            let payload = serde_json::to_vec(r).unwrap_or_default();
            let record = FutureRecord::to(&self.results_topic)
                .key(&key)
                .payload(&payload);
            deliveries.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
            if let Some(alert) = Alert::for_row(r, self.threshold) {
                let payload = serde_json::to_vec(&alert).unwrap_or_default();
                let record = FutureRecord::to(&self.alerts_topic)
                    .key(&key)
                    .payload(&payload);
                deliveries.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
            }
        }
        for s in out.states {
            let record = FutureRecord::to(&s.topic)
                .partition(s.partition)
                .key(&s.key)
                .payload(&s.value);
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
        self.producer.send_offsets_to_transaction(
            &next_offsets(out.batch)?,
            out.group,
            self.timeout,
        )?;
        // Wait for every record's acknowledgement here: the client's commit
        // flushes first, and its flush, finding records still in flight,
        // sleeps in steps of 100 ms while another thread serves their
        // acknowledgements, which would cost most batches 100 ms.
        for delivered in futures::executor::block_on(futures::future::join_all(deliveries)) {
            match delivered {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e),
                Err(_) => return Err(KafkaError::Canceled),
            }
        }
        self.producer.commit_transaction(self.timeout)?;
        Ok(())
    }
}

/// What one batch's transaction publishes.
pub struct Publish<'a> {
    pub rows: &'a [ScoredEvent],
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

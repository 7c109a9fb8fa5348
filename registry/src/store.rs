//! The registry's durable store: a single-partition compacted Kafka topic.
//!
//! Every instance tails the topic and applies its records to an in-memory
//! [`RegistryState`]. Writes are serialised across instances by Kafka's
//! transactional fencing: a writer first calls `init_transactions` with the
//! transactional id all instances share, which fences off any other writer
//! and completes its open transaction. It then commits a barrier record and
//! waits to read it back, so its state holds everything committed before;
//! plans the change against that state; and commits the change followed by a
//! second barrier, returning once it has read that back too. A writer fenced
//! meanwhile fails to commit and retries, so no two instances ever hand out
//! the same id or version, and every write is visible to the writing
//! instance's next request (others follow as they tail the log).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use super::error::RegistryError;
use super::log::Change;
use super::metrics::SKIPPED_RECORDS;
use super::state::RegistryState;
use pulse_common::config::KafkaClient;
use pulse_common::kafka::{client_config, ensure_topics, TopicSpec};
use pulse_common::shutdown::Shutdown;

const PARTITION: i32 = 0;
const WRITE_ATTEMPTS: u32 = 10;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kafka: KafkaClient,
    pub topic: String,
    pub replication_factor: i32,
    pub timeout: Duration,
}

pub struct KafkaStore {
    config: StoreConfig,
    state: Arc<RwLock<RegistryState>>,
    /// Counts applied records, so waiters wake up after each one.
    applied: watch::Receiver<u64>,
    /// This instance's name in barrier records.
    writer_id: String,
    next_token: AtomicU64,
    write_lock: tokio::sync::Mutex<()>,
}

impl KafkaStore {
    /// Creates the topic if needed, starts the reader and returns once the
    /// whole log has been applied.
    pub async fn open(
        config: StoreConfig,
        state: RegistryState,
        shutdown: Shutdown,
    ) -> anyhow::Result<Arc<Self>> {
        ensure_topic(&config).await?;
        let state = Arc::new(RwLock::new(state));
        let (applied_tx, applied) = watch::channel(0u64);
        let reader = reader_consumer(&config)?;
        {
            let state = state.clone();
            std::thread::Builder::new()
                .name("registry-log-reader".into())
                .spawn(move || read_log(reader, state, applied_tx, shutdown))?;
        }
        let store = Arc::new(Self {
            config,
            state,
            applied,
            writer_id: uuid::Uuid::new_v4().to_string(),
            next_token: AtomicU64::new(1),
            write_lock: tokio::sync::Mutex::new(()),
        });
        store
            .sync()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the registry log: {e}"))?;
        Ok(store)
    }

    /// Runs `f` against the current state.
    pub fn read<T>(&self, f: impl FnOnce(&RegistryState) -> T) -> T {
        // A poisoned lock means a panic while applying a record; the state
        // itself is still whole, so keep serving it.
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Returns once every record committed before the call has been applied.
    pub async fn sync(&self) -> Result<(), RegistryError> {
        self.write(|_| Ok(((), Vec::new()))).await
    }

    /// Plans a change against the up-to-date state and commits it to the log.
    /// `plan` may run several times if another instance writes concurrently.
    pub async fn write<T>(
        &self,
        plan: impl Fn(&RegistryState) -> Result<(T, Vec<Change>), RegistryError>,
    ) -> Result<T, RegistryError> {
        let _one_writer_here = self.write_lock.lock().await;
        let mut last_error = None;
        for attempt in 1..=WRITE_ATTEMPTS {
            let outcome = match self.fenced_producer() {
                Ok(producer) => self.try_write(&producer, &plan).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(out) => return Ok(out),
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Retry(e)) => {
                    tracing::warn!(attempt, error = %e, "registry write did not commit; retrying");
                    last_error = Some(e);
                    // Another instance is writing: back off for a random,
                    // growing while so the two stop fencing each other.
                    let ceiling_ms = 50u64 << attempt.min(5);
                    let pause = rand::random_range(ceiling_ms / 2..=ceiling_ms);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
        Err(RegistryError::store_unavailable(format!(
            "gave up after {WRITE_ATTEMPTS} attempts: {}",
            last_error.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    async fn try_write<T>(
        &self,
        producer: &BaseProducer,
        plan: &impl Fn(&RegistryState) -> Result<(T, Vec<Change>), RegistryError>,
    ) -> Result<T, Attempt> {
        self.commit_and_wait(producer, Vec::new()).await?;
        let (out, changes) = self.read(plan).map_err(Attempt::Failed)?;
        if !changes.is_empty() {
            self.commit_and_wait(producer, changes).await?;
        }
        Ok(out)
    }

    /// Commits `changes` plus a barrier in one transaction and waits until
    /// the reader has applied the barrier.
    async fn commit_and_wait(
        &self,
        producer: &BaseProducer,
        mut changes: Vec<Change>,
    ) -> Result<(), Attempt> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        changes.push(Change::Barrier {
            writer: self.writer_id.clone(),
            token,
        });
        self.commit(producer, &changes)
            .map_err(|e| Attempt::Retry(e.to_string()))?;
        let mut applied = self.applied.clone();
        let reached = |_: &u64| self.read(|s| s.barrier(&self.writer_id) >= Some(token));
        tokio::time::timeout(self.config.timeout, applied.wait_for(reached))
            .await
            .map_err(|_| {
                Attempt::Failed(RegistryError::store_timeout(
                    "reading back the registry log",
                ))
            })?
            .map_err(|_| {
                Attempt::Failed(RegistryError::internal("the registry log reader stopped"))
            })?;
        Ok(())
    }

    /// A transactional producer that has fenced off every other writer.
    fn fenced_producer(&self) -> Result<BaseProducer, Attempt> {
        let mut cfg = client_config(&self.config.kafka);
        cfg.set(
            "transactional.id",
            format!("pulse-registry-writer-{}", self.config.topic),
        )
        .set("enable.idempotence", "true")
        .set("acks", "all");
        // Creating a client only checks its configuration: a fault of ours.
        let producer: BaseProducer = cfg
            .create()
            .map_err(|e| Attempt::Failed(RegistryError::internal(e)))?;
        // Blocking, but bounded by the timeout; writes are rare. A broker
        // that is not yet (or no longer) the coordinator says so at once:
        // worth another attempt. A timeout already took the request's time.
        tokio::task::block_in_place(|| producer.init_transactions(self.config.timeout)).map_err(
            |e| match &e {
                KafkaError::Transaction(t) if t.is_retriable() && !is_timeout(&e) => {
                    Attempt::Retry(e.to_string())
                }
                _ => Attempt::Failed(kafka_fault(e)),
            },
        )?;
        Ok(producer)
    }

    fn commit(&self, producer: &BaseProducer, changes: &[Change]) -> Result<(), KafkaError> {
        let topic = &self.config.topic;
        tokio::task::block_in_place(|| {
            producer.begin_transaction()?;
            for change in changes {
                let (key, value) = change.to_record();
                let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic)
                    .partition(PARTITION)
                    .key(&key);
                if let Some(v) = &value {
                    record = record.payload(v);
                }
                producer.send(record).map_err(|(e, _)| e)?;
            }
            producer.commit_transaction(self.config.timeout)
        })
    }
}

enum Attempt {
    /// Another writer may have fenced this one: start over.
    Retry(String),
    /// The request itself cannot succeed.
    Failed(RegistryError),
}

impl From<Attempt> for RegistryError {
    fn from(a: Attempt) -> Self {
        match a {
            Attempt::Retry(e) => RegistryError::store_unavailable(e),
            Attempt::Failed(e) => e,
        }
    }
}

/// A failed Kafka operation as the client sees it: the brokers did not
/// answer in time, or could not be used at all. Either may pass, so both
/// are a 503, never a 500.
fn kafka_fault(e: KafkaError) -> RegistryError {
    if is_timeout(&e) {
        RegistryError::store_timeout(e)
    } else {
        RegistryError::store_unavailable(e)
    }
}

fn is_timeout(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        e.rdkafka_error_code(),
        Some(Code::OperationTimedOut | Code::RequestTimedOut | Code::MessageTimedOut)
    )
}

async fn ensure_topic(config: &StoreConfig) -> anyhow::Result<()> {
    let spec = TopicSpec {
        name: config.topic.clone(),
        partitions: 1,
        replication_factor: config.replication_factor,
        settings: vec![("cleanup.policy", "compact".into())],
    };
    ensure_topics(&config.kafka, &[spec], config.timeout).await
}

fn reader_consumer(config: &StoreConfig) -> anyhow::Result<BaseConsumer> {
    let mut cfg = client_config(&config.kafka);
    // Offsets are never committed: every instance reads the whole log itself.
    cfg.set("group.id", "pulse-registry-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&config.topic, PARTITION, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    Ok(consumer)
}

fn read_log(
    consumer: BaseConsumer,
    state: Arc<RwLock<RegistryState>>,
    applied: watch::Sender<u64>,
    shutdown: Shutdown,
) {
    while !shutdown.is_requested() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                apply_record(&state, msg.offset(), msg.key(), msg.payload());
                // Counted whatever became of the record: a barrier after a
                // skipped record must still be seen.
                applied.send_modify(|n| *n += 1);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "registry log read error"),
            None => {}
        }
    }
}

/// Applies one log record, skipping (with an error log and a count) any the
/// state cannot hold. A record too long to hold a schema within the limit is
/// not even parsed, so an old log cannot make a replica allocate for it.
fn apply_record(
    state: &RwLock<RegistryState>,
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let skip = |reason: &str, why: &dyn std::fmt::Display| {
        SKIPPED_RECORDS.with_label_values(&[reason]).inc();
        tracing::error!(offset, reason, error = %why, "skipping registry log record");
    };
    let limit = state
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .limits()
        .max_encoded_bytes();
    let length = key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
    if length > limit {
        let why = format!("record of {length} bytes, over the limit of {limit}");
        return skip("oversize", &why);
    }
    let change = match Change::from_record(key.unwrap_or_default(), value) {
        Ok(change) => change,
        Err(e) => return skip("malformed", &e),
    };
    let applied = state
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .apply(change);
    if let Err(skipped) = applied {
        skip(skipped.reason(), &skipped);
    }
}

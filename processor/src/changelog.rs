//! The device-state changelog: a compacted Kafka topic per event topic, with
//! the same partitions. After each batch the new state of every device it
//! touched is written to the partition matching the event's, inside the
//! batch's transaction, keyed by device; compaction keeps the latest state
//! of each device. A partition's state is read back from it before the
//! partition is processed by an instance that did not own it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::state::DeviceState;

/// A device: tenant and source id.
pub type DeviceKey = (String, String);

/// The record key of a device: a JSON array, so that any id round-trips.
pub fn encode_key(device: &DeviceKey) -> Vec<u8> {
    serde_json::to_vec(device).unwrap_or_default()
}

pub fn encode_state(state: &DeviceState) -> Vec<u8> {
    serde_json::to_vec(state).unwrap_or_default()
}

/// Reaching the end of the partition is how a restore finishes, not a
/// client error worth logging.
struct EndIsNotAnError;

impl ClientContext for EndIsNotAnError {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            tracing::error!(%error, reason, "Kafka client error while restoring state");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndIsNotAnError {}

/// Reads one changelog partition from the start to its end (the last stable
/// offset: only committed transactions count) and returns each device's
/// latest state.
pub fn restore(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> anyhow::Result<HashMap<DeviceKey, DeviceState>> {
    let started = Instant::now();
    let consumer: BaseConsumer<EndIsNotAnError> = config
        .clone()
        // Partitions are assigned, never subscribed: the group is not joined
        // and nothing is committed, but librdkafka wants a group id to poll.
        .set("group.id", "pulse-processor-restore")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create_with_context(EndIsNotAnError)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut devices = HashMap::new();
    let mut records = 0u64;
    let deadline = started + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!("restoring {topic}/{partition} took longer than {timeout:?}");
        }
        match consumer.poll(left.min(Duration::from_millis(500))) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                records += 1;
                let key: DeviceKey = serde_json::from_slice(m.key().unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("bad key at offset {}: {e}", m.offset()))?;
                match m.payload() {
                    // A tombstone forgets the device.
                    None => {
                        devices.remove(&key);
                    }
                    Some(p) => {
                        let state: DeviceState = serde_json::from_slice(p).map_err(|e| {
                            anyhow::anyhow!("bad state at offset {}: {e}", m.offset())
                        })?;
                        devices.insert(key, state);
                    }
                }
            }
        }
    }
    tracing::info!(
        topic,
        partition,
        records,
        devices = devices.len(),
        seconds = started.elapsed().as_secs_f64(),
        "device state restored"
    );
    Ok(devices)
}

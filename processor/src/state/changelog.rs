//! The device-state changelog: a compacted Kafka topic per event topic, with
//! the same partitions. After each batch the new state of every device it
//! touched is written to the partition matching the event's, inside the
//! batch's transaction, keyed by device; compaction keeps the latest state
//! of each device. A partition's state is read back from it before the
//! partition is processed by an instance that did not own it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use pulse_common::kafka::close_in_background;

use crate::metrics;
use crate::state::device::DeviceState;

/// A device: tenant and source id.
pub(crate) type DeviceKey = (String, String);

/// The record key of a device: a JSON array, so that any id round-trips.
pub(crate) fn encode_key(device: &DeviceKey) -> Vec<u8> {
    serde_json::to_vec(device).unwrap_or_default()
}

pub(crate) fn encode_state(state: &DeviceState) -> Vec<u8> {
    serde_json::to_vec(state).unwrap_or_default()
}

/// Applies one changelog record to a partition's devices. A record that
/// cannot be read is an error for the caller to count and skip, never a
/// reason to stop the restore: one device's bad state (written by an older
/// version, or by anyone with write access to the topic) must not stall
/// the partition. Its device is forgotten, since the record replaced
/// whatever state it had before.
fn apply(devices: &mut Devices, key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<(), String> {
    let key: DeviceKey = serde_json::from_slice(key.unwrap_or_default())
        .map_err(|e| format!("unreadable key: {e}"))?;
    match payload {
        // A tombstone forgets the device.
        None => {
            devices.remove(&key);
        }
        Some(p) => match serde_json::from_slice::<DeviceState>(p) {
            Ok(state) => {
                devices.insert(key, state);
            }
            Err(e) => {
                devices.remove(&key);
                return Err(format!("unreadable state of {key:?}: {e}"));
            }
        },
    }
    Ok(())
}

/// Reaching the end of a partition is how a restore finishes, not a client
/// error worth logging.
struct EndIsNotAnError;

impl ClientContext for EndIsNotAnError {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end {
            tracing::error!(%error, reason, "Kafka client error while restoring state");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndIsNotAnError {}

/// The devices of one partition and their latest states.
pub(crate) type Devices = HashMap<DeviceKey, DeviceState>;

/// Reads `partitions` of changelog `topic` from the start to their end (the
/// last stable offset: only committed transactions count), all at once,
/// and returns each device's latest state by partition.
pub(crate) fn restore(
    config: &ClientConfig,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> anyhow::Result<HashMap<i32, Devices>> {
    let started = Instant::now();
    let consumer: BaseConsumer<EndIsNotAnError> = config
        .clone()
        // Partitions are assigned, never subscribed: the group is not joined
        // and nothing is committed, but librdkafka wants a group id to poll.
        .set("group.id", "pulse-processor-restore")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        // The end of a partition is known from a fetch that found nothing
        // more; do not let the broker hold that fetch open.
        .set("fetch.wait.max.ms", "10")
        // An empty partition answers its first fetch with an error the
        // client backs off from before the end is reported (500 ms by
        // default, per restore).
        .set("fetch.error.backoff.ms", "10")
        .create_with_context(EndIsNotAnError)?;
    let mut restored: HashMap<i32, Devices> =
        partitions.iter().map(|p| (*p, Devices::new())).collect();
    // An empty partition (a new group's, say) has nothing to read: asking
    // for its bounds is one round trip, while reading to its end costs the
    // client a fetch backoff of about half a second.
    let mut open = HashSet::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, timeout)?;
        if high > low {
            open.insert(*p);
            tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
    }
    if !open.is_empty() {
        consumer.assign(&tpl)?;
    }
    let mut records = 0u64;
    let mut skipped = 0u64;
    let deadline = started + timeout;
    while !open.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!("restoring {topic} {open:?} took longer than {timeout:?}");
        }
        match consumer.poll(left.min(Duration::from_millis(500))) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                records += 1;
                let devices = restored.entry(m.partition()).or_default();
                if let Err(why) = apply(devices, m.key(), m.payload()) {
                    skipped += 1;
                    metrics::STATE_RECORDS_SKIPPED.inc();
                    tracing::warn!(
                        topic,
                        partition = m.partition(),
                        offset = m.offset(),
                        why,
                        "changelog record skipped: the device starts afresh"
                    );
                }
            }
        }
    }
    tracing::info!(
        topic,
        ?partitions,
        records,
        skipped,
        devices = restored.values().map(HashMap::len).sum::<usize>(),
        seconds = started.elapsed().as_secs_f64(),
        "device state restored"
    );
    close_in_background(consumer);
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(source: &str) -> Vec<u8> {
        encode_key(&("acme".to_string(), source.to_string()))
    }

    #[test]
    fn unreadable_records_are_skipped_and_their_device_starts_afresh() {
        let mut devices = Devices::new();
        let good = encode_state(&DeviceState {
            seq: 4,
            ..DeviceState::default()
        });
        assert_eq!(apply(&mut devices, Some(&key("a")), Some(&good)), Ok(()));
        assert_eq!(apply(&mut devices, Some(&key("b")), Some(&good)), Ok(()));
        // What an older processor wrote for readings of +-1.7e308: a null mean.
        let null_mean = br#"{"seq":4,"last_event_ms":1,"readings":{"x":{"mean":null,"var":null,"last":1.7e308,"count":4}},"recent_ids":[]}"#;
        let why = apply(&mut devices, Some(&key("a")), Some(null_mean)).expect_err("null mean");
        assert!(why.starts_with("unreadable state of"), "{why}");
        assert!(apply(&mut devices, Some(b"not json"), Some(&good)).is_err());
        assert!(apply(&mut devices, None, Some(&good)).is_err());
        assert!(apply(&mut devices, Some(&key("b")), Some(b"\0\0")).is_err());
        // "a" was forgotten by its bad record, "b" by its; a tombstone of
        // an unknown device is fine.
        assert_eq!(apply(&mut devices, Some(&key("c")), None), Ok(()));
        assert!(devices.is_empty(), "{devices:?}");
        assert_eq!(apply(&mut devices, Some(&key("a")), Some(&good)), Ok(()));
        assert_eq!(devices.len(), 1);
    }
}

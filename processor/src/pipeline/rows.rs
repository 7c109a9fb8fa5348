//! What a batch writes: a scored event as its ClickHouse row, and the
//! devices it changed as changelog records.

use std::sync::Arc;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;

use pulse_common::event::Event;
use pulse_common::scored::ScoredEvent;

use super::{Kinds, Pipeline};
use crate::score::scorer::Score;
use crate::sink::delivery::StateRecord;
use crate::source::assignment::Partition;
use crate::state::changelog::{encode_key, encode_state};
use crate::state::device::Features;
use crate::state::store::BatchState;

impl Pipeline {
    pub(super) fn row(
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
    pub(super) fn state_records(&self, state: &BatchState, kinds: &Kinds) -> Vec<StateRecord> {
        let record = |(topic, partition): &Partition, device, value| {
            Some(StateRecord {
                topic: self.state.changelogs.topic(*kinds.get(topic)?),
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
    use super::schema_id;

    #[test]
    fn schema_id_reads_the_wire_format_header() {
        assert_eq!(schema_id(Some(&[0, 0, 0, 1, 2, 42])), 258);
        assert_eq!(schema_id(Some(&[0, 0])), 0);
        assert_eq!(schema_id(None), 0);
    }
}

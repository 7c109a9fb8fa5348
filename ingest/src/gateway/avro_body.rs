//! Events that arrive already encoded: one record in the Confluent wire
//! format (magic byte 0, 4-byte schema id, Avro binary). The schema id must be
//! one of the versions this gateway registered; the record is decoded to
//! check it like a JSON event, then forwarded byte for byte.

use apache_avro::reader::datum::GenericDatumReader;
use pulse_common::contract;
use pulse_common::event::Event;

use super::encode::Encoders;
use super::parse::{record_key, Claims, EventError, Payload, TimeBounds, ValidEvent};

/// Content type of a body holding one Confluent wire-format Avro record.
pub const AVRO_CONTENT_TYPE: &str = "application/vnd.confluent.avro";

pub fn parse_avro(
    body: &[u8],
    encoders: &Encoders,
    bounds: TimeBounds,
    claims: Option<Claims<'_>>,
) -> Result<ValidEvent, EventError> {
    let (magic, rest) = body
        .split_first()
        .ok_or_else(|| EventError::body("empty body"))?;
    if *magic != 0 || rest.len() < 4 {
        return Err(EventError::body(
            "not the Confluent wire format: expected magic byte 0 and a 4-byte schema id",
        ));
    }
    let (id_bytes, mut datum) = rest.split_at(4);
    let id = u32::from_be_bytes([id_bytes[0], id_bytes[1], id_bytes[2], id_bytes[3]]);
    let (kind, version) = encoders.known_schema(id).ok_or_else(|| EventError {
        field: "(schema id)".into(),
        ..EventError::body(format!(
            "unknown schema id {id}: register the event's schema under the topic's subject first"
        ))
    })?;
    let schema = kind
        .schema(version)
        .ok_or_else(|| EventError::body(format!("schema {id} is not shipped")))?;
    let value = GenericDatumReader::builder(&schema)
        .build()
        .and_then(|r| r.read_value(&mut datum))
        .map_err(|e| EventError::body(format!("not a valid record of schema {id}: {e}")))?;
    if !datum.is_empty() {
        return Err(EventError::body(format!(
            "{} bytes after the record",
            datum.len()
        )));
    }
    let event = Event::from_avro(kind, value).map_err(|e| EventError {
        field: e.field,
        ..EventError::body(e.reason)
    })?;
    let refuse = |field: &str, reason: String, forbidden: bool| EventError {
        event_id: Some(event.event_id.clone()),
        field: field.to_string(),
        forbidden,
        ..EventError::body(reason)
    };
    if let Some(c) = claims {
        if event.tenant_id != c.tenant {
            return Err(refuse(
                "tenant_id",
                format!("'{}' is not this credential's tenant", event.tenant_id),
                true,
            ));
        }
        if c.device.is_some_and(|d| d != event.source_id) {
            return Err(refuse(
                "source_id",
                format!("'{}' is not this credential's device", event.source_id),
                true,
            ));
        }
    }
    bounds
        .check(event.event_time_ms)
        .map_err(|reason| refuse("event_time", reason, false))?;
    contract::check(&event).map_err(|e| refuse(&e.field, e.reason, false))?;
    Ok(ValidEvent {
        kind,
        schema_version: version,
        key: record_key(&event.tenant_id, &event.source_id),
        event_id: event.event_id,
        payload: Payload::Encoded(body.to_vec()),
    })
}

//! An event as the processor sees it after decoding: the same shape whatever
//! schema version the producer wrote.

use std::collections::BTreeMap;

use apache_avro::types::Value;

use crate::json_avro::FieldError;
use crate::schemas::EventKind;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub event_id: String,
    pub tenant_id: String,
    pub source_id: String,
    pub event_time_ms: i64,
    /// Telemetry readings by name; empty for app events.
    pub readings: BTreeMap<String, f64>,
    /// Only telemetry v2 and later carry it.
    pub firmware_version: Option<String>,
    /// App events only.
    pub event_type: String,
    /// App events only.
    pub properties: BTreeMap<String, String>,
}

impl Event {
    /// Reads an event of `kind` from a decoded Avro record, taking its
    /// strings over rather than copying them. Fields a version lacks take
    /// their empty value, so v1 and v2 records read alike.
    pub fn from_avro(kind: EventKind, value: Value) -> Result<Self, FieldError> {
        let Value::Record(fields) = value else {
            return Err(field_error("(event)", "not a record"));
        };
        let mut f = Fields::default();
        for (name, v) in fields {
            let slot = match name.as_str() {
                "event_id" => &mut f.event_id,
                "tenant_id" => &mut f.tenant_id,
                "source_id" => &mut f.source_id,
                "event_time" => &mut f.event_time,
                "readings" => &mut f.readings,
                "firmware_version" => &mut f.firmware_version,
                "event_type" => &mut f.event_type,
                "properties" => &mut f.properties,
                _ => continue,
            };
            *slot = Some(unwrap_union(v));
        }
        let required =
            |v: Option<Value>, name: &'static str| v.ok_or_else(|| field_error(name, "missing"));
        Ok(Self {
            kind,
            event_id: string(required(f.event_id, "event_id")?, "event_id")?,
            tenant_id: string(required(f.tenant_id, "tenant_id")?, "tenant_id")?,
            source_id: string(required(f.source_id, "source_id")?, "source_id")?,
            event_time_ms: match required(f.event_time, "event_time")? {
                Value::TimestampMillis(ms) | Value::Long(ms) => ms,
                _ => return Err(field_error("event_time", "not a timestamp-millis")),
            },
            readings: match f.readings {
                Some(v) => map_of(v, "readings", |v| match v {
                    Value::Double(d) => Some(d),
                    _ => None,
                })?,
                None => BTreeMap::new(),
            },
            firmware_version: match f.firmware_version {
                Some(Value::Null) | None => None,
                Some(v) => Some(string(v, "firmware_version")?),
            },
            event_type: match f.event_type {
                Some(v) => string(v, "event_type")?,
                None => String::new(),
            },
            properties: match f.properties {
                Some(v) => map_of(v, "properties", |v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                })?,
                None => BTreeMap::new(),
            },
        })
    }
}

/// The record's fields an event is read from, unions unwrapped.
#[derive(Default)]
struct Fields {
    event_id: Option<Value>,
    tenant_id: Option<Value>,
    source_id: Option<Value>,
    event_time: Option<Value>,
    readings: Option<Value>,
    firmware_version: Option<Value>,
    event_type: Option<Value>,
    properties: Option<Value>,
}

fn field_error(field: &str, reason: &str) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

fn unwrap_union(v: Value) -> Value {
    match v {
        Value::Union(_, inner) => *inner,
        other => other,
    }
}

fn string(v: Value, field: &str) -> Result<String, FieldError> {
    match v {
        Value::String(s) => Ok(s),
        Value::Uuid(u) => Ok(u.to_string()),
        _ => Err(field_error(field, "not a string")),
    }
}

fn map_of<T>(
    v: Value,
    field: &str,
    item: impl Fn(Value) -> Option<T>,
) -> Result<BTreeMap<String, T>, FieldError> {
    let Value::Map(m) = v else {
        return Err(field_error(field, "not a map"));
    };
    m.into_iter()
        .map(|(k, v)| match item(v) {
            Some(t) => Ok((k, t)),
            None => Err(field_error(&format!("{field}.{k}"), "wrong value type")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_avro::json_to_avro;
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    use serde_json::json;

    #[test]
    fn v1_and_v2_records_read_alike() {
        let body = json!({
            "event_id": "6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11",
            "tenant_id": "acme",
            "source_id": "dev-1",
            "event_time": 1_700_000_000_123i64,
            "readings": {"temperature_c": 21.5}
        });
        for version in [1, 2] {
            let schema = EventKind::Telemetry.schema(version).expect("shipped");
            let value = json_to_avro(&schema, &body).expect("valid");
            // Round-trip through the binary encoding, as the processor sees it.
            let bytes = GenericDatumWriter::builder(&schema)
                .build()
                .and_then(|w| w.write_value_to_vec(value))
                .expect("encodes");
            let decoded = GenericDatumReader::builder(&schema)
                .build()
                .and_then(|r| r.read_value(&mut bytes.as_slice()))
                .expect("decodes");
            let event = Event::from_avro(EventKind::Telemetry, decoded).expect("reads");
            assert_eq!(event.event_id, "6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11");
            assert_eq!(event.tenant_id, "acme");
            assert_eq!(event.event_time_ms, 1_700_000_000_123);
            assert_eq!(event.readings.get("temperature_c"), Some(&21.5));
            assert_eq!(event.firmware_version, None);
        }
    }
}

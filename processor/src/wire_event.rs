//! Reading an event straight from its Avro binary, without the generic
//! value tree in between.
//!
//! The generic reader builds a `Value` per record: a copy of every field
//! name, a boxed value per field, a hash map of the readings that is then
//! rebuilt as the event's sorted map. That was about a seventh of the
//! processor's CPU. Here the record is deserialized field by field into the
//! event's own types.
//!
//! Only the plain case takes this path: a schema whose `event_time`,
//! `readings` and `properties` have the types the shipped schemas give
//! them, and records whose values read as expected (an event id already in
//! canonical uuid form, strings where strings are expected). Anything else
//! is read by the generic reader and [`Event::from_avro`], whose results
//! and error messages stay the reference: this path returns None and the
//! record is read again that way.

use std::collections::BTreeMap;
use std::fmt;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::Schema;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use pulse_common::event::Event;
use pulse_common::schemas::EventKind;

/// Whether records of `schema` may take this path: a record whose
/// `event_time` is a long (timestamp-millis or plain), whose `readings`, if
/// any, is a map of doubles, whose `properties`, if any, a map of strings,
/// and whose other fields are scalars. Other shapes (timestamp-micros,
/// nullable map values, nested records, ...) are read, or refused, by the
/// generic reader exactly as before.
pub fn fits(schema: &Schema) -> bool {
    let Schema::Record(record) = schema else {
        return false;
    };
    record.fields.iter().all(|f| match f.name.as_str() {
        "event_time" => matches!(f.schema, Schema::Long | Schema::TimestampMillis),
        "readings" => matches!(&f.schema, Schema::Map(m) if matches!(*m.types, Schema::Double)),
        "properties" => matches!(&f.schema, Schema::Map(m) if matches!(*m.types, Schema::String)),
        // The generic reader rewrites uuids; only the event id's form is
        // checked here.
        "tenant_id" | "source_id" | "event_type" | "firmware_version" => !uuid(&f.schema),
        "event_id" => true,
        // Skipped: the Avro deserializer cannot skip a nested record's
        // fields, so only scalars (or unions of them) are.
        _ => scalar(&f.schema),
    })
}

fn scalar(schema: &Schema) -> bool {
    match schema {
        Schema::Union(u) => u.variants().iter().all(scalar),
        Schema::Array(_)
        | Schema::Map(_)
        | Schema::Record(_)
        | Schema::Enum(_)
        | Schema::Fixed(_)
        | Schema::Ref { .. } => false,
        _ => true,
    }
}

fn uuid(schema: &Schema) -> bool {
    match schema {
        Schema::Uuid(_) => true,
        Schema::Union(u) => u.variants().iter().any(uuid),
        _ => false,
    }
}

/// The event in `datum`, or None when the record is not the plain case
/// (see the module's documentation) and must be read the generic way.
pub fn read(reader: &GenericDatumReader<'_>, kind: EventKind, datum: &[u8]) -> Option<Event> {
    let mut bytes = datum;
    let wire: Wire = reader.read_deser(&mut bytes).ok()?;
    if !bytes.is_empty() {
        // Bytes left over: let the generic reader judge the record.
        return None;
    }
    let event_id = wire.event_id?.0?;
    if !canonical_uuid(&event_id) {
        // The generic reader rewrites a uuid in another form, or refuses it.
        return None;
    }
    // A field a version lacks reads as empty, but one that is there and
    // null is refused by the generic reader (save the firmware version).
    let event_type = match wire.event_type {
        None => String::new(),
        Some(Text(value)) => value?,
    };
    Some(Event {
        kind,
        event_id,
        tenant_id: wire.tenant_id?.0?,
        source_id: wire.source_id?.0?,
        event_time_ms: wire.event_time?,
        readings: wire.readings.unwrap_or_default(),
        firmware_version: wire.firmware_version.and_then(|t| t.0),
        event_type,
        properties: wire.properties.unwrap_or_default(),
    })
}

/// Lower-case hex in 8-4-4-4-12 groups: what the generic reader writes a
/// uuid as, so taking it as it is gives the same id.
fn canonical_uuid(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// The fields an event is read from; a field a schema version lacks stays
/// None (a string field that is there but null is `Some(Text(None))`), one
/// a schema has beyond these is skipped.
#[derive(Default)]
struct Wire {
    event_id: Option<Text>,
    tenant_id: Option<Text>,
    source_id: Option<Text>,
    event_time: Option<i64>,
    readings: Option<BTreeMap<String, f64>>,
    firmware_version: Option<Text>,
    event_type: Option<Text>,
    properties: Option<BTreeMap<String, String>>,
}

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    EventId,
    TenantId,
    SourceId,
    EventTime,
    Readings,
    FirmwareVersion,
    EventType,
    Properties,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Wire {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // As a map of fields: a struct would have to be named like the
        // writer's record, and the schema versions name theirs differently.
        deserializer.deserialize_map(WireVisitor)
    }
}

struct WireVisitor;

impl<'de> Visitor<'de> for WireVisitor {
    type Value = Wire;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Wire, A::Error> {
        let mut w = Wire::default();
        while let Some(field) = fields.next_key::<Field>()? {
            match field {
                Field::EventId => w.event_id = Some(fields.next_value()?),
                Field::TenantId => w.tenant_id = Some(fields.next_value()?),
                Field::SourceId => w.source_id = Some(fields.next_value()?),
                Field::EventTime => w.event_time = Some(fields.next_value()?),
                Field::Readings => w.readings = Some(fields.next_value()?),
                Field::FirmwareVersion => w.firmware_version = Some(fields.next_value()?),
                Field::EventType => w.event_type = Some(fields.next_value()?),
                Field::Properties => w.properties = Some(fields.next_value()?),
                Field::Other => {
                    fields.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(w)
    }
}

/// A string field, possibly in a union with null (None); any other type is
/// an error, which sends the record to the generic reader.
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or null")
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
        Ok(Text(Some(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
        Ok(Text(Some(v.to_string())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
        Ok(Text(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Text, E> {
        Ok(Text(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;
    use apache_avro::writer::datum::GenericDatumWriter;
    use pulse_common::json_avro::json_to_avro;
    use serde_json::{json, Value as Json};

    fn encode(schema: &Schema, value: Value) -> Vec<u8> {
        GenericDatumWriter::builder(schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .expect("encodes")
    }

    fn reader(schema: &Schema) -> GenericDatumReader<'_> {
        GenericDatumReader::builder(schema).build().expect("reader")
    }

    /// The event as the generic reader and `Event::from_avro` read it.
    fn generic(schema: &Schema, kind: EventKind, bytes: &[u8]) -> Event {
        let value = reader(schema).read_value(&mut &bytes[..]).expect("decodes");
        Event::from_avro(kind, value).expect("valid event")
    }

    fn shipped(kind: EventKind, version: u32, body: &Json) -> (Schema, Vec<u8>) {
        let schema = kind.schema(version).expect("shipped");
        let value = json_to_avro(&schema, body).expect("valid");
        let bytes = encode(&schema, value);
        (schema, bytes)
    }

    #[test]
    fn shipped_schemas_read_directly_as_the_generic_reader_reads_them() {
        let telemetry = json!({
            "event_id": "6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11",
            "tenant_id": "acme",
            "source_id": "dev-\u{e9}\"1\"",
            "event_time": 1_700_000_000_123i64,
            "readings": {"temperature_c": 21.5, "humidity_pct": -0.0, "battery_v": 3.7}
        });
        let mut with_firmware = telemetry.clone();
        with_firmware["firmware_version"] = json!("2.1.0");
        let app = json!({
            "event_id": "0b6f4c1e-1d8c-4a55-9a57-6f3c2f0d2b99",
            "tenant_id": "acme",
            "source_id": "app-7",
            "event_time": -5i64,
            "event_type": "login",
            "properties": {"user": "ann", "": "empty key"}
        });
        let cases = [
            (EventKind::Telemetry, 1, &telemetry),
            (EventKind::Telemetry, 2, &telemetry),
            (EventKind::Telemetry, 2, &with_firmware),
            (EventKind::App, 1, &app),
        ];
        for (kind, version, body) in cases {
            let (schema, bytes) = shipped(kind, version, body);
            assert!(fits(&schema), "{kind:?} v{version}");
            let direct = read(&reader(&schema), kind, &bytes);
            assert_eq!(
                direct,
                Some(generic(&schema, kind, &bytes)),
                "{kind:?} v{version}"
            );
        }
        let (schema, bytes) = shipped(EventKind::Telemetry, 2, &with_firmware);
        let event = read(&reader(&schema), EventKind::Telemetry, &bytes).expect("reads");
        assert_eq!(event.firmware_version.as_deref(), Some("2.1.0"));
        assert_eq!(event.readings.len(), 3);
        assert_eq!(event.source_id, "dev-\u{e9}\"1\"");
    }

    #[test]
    fn scalar_fields_beyond_the_events_are_skipped() {
        let schema = Schema::parse_str(
            r#"{"type": "record", "name": "Telemetry3", "fields": [
                {"name": "site", "type": "string"},
                {"name": "event_id", "type": "string"},
                {"name": "tenant_id", "type": "string"},
                {"name": "source_id", "type": "string"},
                {"name": "event_time", "type": "long"},
                {"name": "readings", "type": {"type": "map", "values": "double"}},
                {"name": "level", "type": ["null", "int", "double"]},
                {"name": "raw", "type": "bytes"}]}"#,
        )
        .expect("schema");
        let value = Value::Record(vec![
            ("site".into(), Value::String("roof".into())),
            (
                "event_id".into(),
                Value::String("6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11".into()),
            ),
            ("tenant_id".into(), Value::String("acme".into())),
            ("source_id".into(), Value::String("dev-1".into())),
            ("event_time".into(), Value::Long(42)),
            (
                "readings".into(),
                Value::Map([("t".to_string(), Value::Double(1.5))].into()),
            ),
            ("level".into(), Value::Union(1, Box::new(Value::Int(3)))),
            ("raw".into(), Value::Bytes(vec![0, 255, 7])),
        ]);
        let bytes = encode(&schema, value);
        assert!(fits(&schema));
        let direct = read(&reader(&schema), EventKind::Telemetry, &bytes).expect("reads");
        assert_eq!(direct, generic(&schema, EventKind::Telemetry, &bytes));
        assert_eq!(direct.event_time_ms, 42);
        assert_eq!(direct.readings.get("t"), Some(&1.5));
    }

    #[test]
    fn an_event_id_in_another_uuid_form_is_left_to_the_generic_reader() {
        let body = json!({
            "event_id": "6F1C4C1E-1D8C-4A55-9A57-6F3C2F0D2B11",
            "tenant_id": "acme",
            "source_id": "dev-1",
            "event_time": 1i64,
            "readings": {}
        });
        // Written through a twin schema whose event id is a plain string
        // (the same binary), as a producer other than Pulse's ingest might.
        let schema = EventKind::Telemetry.schema(1).expect("shipped");
        let twin = Schema::parse_str(
            &schema
                .canonical_form()
                .replace(r#","logicalType":"uuid""#, ""),
        )
        .expect("twin");
        assert!(!uuid(&twin), "twin still a uuid: {}", twin.canonical_form());
        let bytes = encode(&twin, json_to_avro(&twin, &body).expect("valid"));
        assert_eq!(read(&reader(&schema), EventKind::Telemetry, &bytes), None);
        // ... which writes it in lower case.
        let event = generic(&schema, EventKind::Telemetry, &bytes);
        assert_eq!(event.event_id, "6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11");
    }

    #[test]
    fn a_string_field_that_is_null_is_left_to_the_generic_reader() {
        // The generic reader refuses both; the event type only when it is
        // there (a version without it reads as an empty type).
        for null_field in ["tenant_id", "event_type"] {
            let field = |name: &str| {
                let ty = if name == null_field {
                    r#"["null", "string"]"#
                } else {
                    r#""string""#
                };
                format!(r#"{{"name": "{name}", "type": {ty}}}"#)
            };
            let schema = Schema::parse_str(&format!(
                r#"{{"type": "record", "name": "T", "fields": [{}, {}, {}, {}, {{"name": "event_time", "type": "long"}}]}}"#,
                field("event_id"),
                field("tenant_id"),
                field("source_id"),
                field("event_type"),
            ))
            .expect("schema");
            let text = |name: &str, value: &str| {
                let v = Value::String(value.into());
                let v = if name == null_field {
                    Value::Union(0, Box::new(Value::Null))
                } else {
                    v
                };
                (name.to_string(), v)
            };
            let value = Value::Record(vec![
                text("event_id", "6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11"),
                text("tenant_id", "acme"),
                text("source_id", "app-1"),
                text("event_type", "login"),
                ("event_time".into(), Value::Long(1)),
            ]);
            let bytes = encode(&schema, value);
            assert!(fits(&schema), "{null_field}");
            assert_eq!(
                read(&reader(&schema), EventKind::App, &bytes),
                None,
                "{null_field}"
            );
            let value = reader(&schema)
                .read_value(&mut &bytes[..])
                .expect("decodes");
            let refused = Event::from_avro(EventKind::App, value).expect_err("invalid");
            assert_eq!(refused.field, null_field);
        }
    }

    #[test]
    fn other_types_of_the_fields_read_are_left_to_the_generic_reader() {
        for (field, ty) in [
            (
                "event_time",
                r#"{"type": "long", "logicalType": "timestamp-micros"}"#,
            ),
            ("event_time", r#"["null", "long"]"#),
            (
                "readings",
                r#"{"type": "map", "values": ["null", "double"]}"#,
            ),
            ("readings", r#"{"type": "map", "values": "float"}"#),
            ("properties", r#"{"type": "map", "values": "bytes"}"#),
            ("tenant_id", r#"{"type": "string", "logicalType": "uuid"}"#),
            (
                "site",
                r#"{"type": "record", "name": "Site", "fields": [{"name": "x", "type": "int"}]}"#,
            ),
            ("tags", r#"{"type": "array", "items": "string"}"#),
            (
                "level",
                r#"{"type": "enum", "name": "Level", "symbols": ["LOW", "HIGH"]}"#,
            ),
        ] {
            let schema = Schema::parse_str(&format!(
                r#"{{"type": "record", "name": "T", "fields": [{{"name": "{field}", "type": {ty}}}]}}"#
            ))
            .expect("schema");
            assert!(!fits(&schema), "{field}: {ty}");
        }
        assert!(!fits(&Schema::String));
    }

    #[test]
    fn canonical_uuids_are_lower_case_hex_in_five_groups() {
        assert!(canonical_uuid("6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11"));
        for id in [
            "6F1C4C1E-1D8C-4A55-9A57-6F3C2F0D2B11",
            "6f1c4c1e1d8c4a559a576f3c2f0d2b11",
            "{6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11}",
            "6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b1g",
            "6f1c4c1e-1d8c-4a55-9a57_6f3c2f0d2b11",
            "",
        ] {
            assert!(!canonical_uuid(id), "{id}");
        }
    }
}

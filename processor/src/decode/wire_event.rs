//! Reading an event straight from its Avro binary, without the generic
//! value tree in between.
//!
//! The generic reader builds a `Value` per record: a copy of every field
//! name, a boxed value per field, a hash map of the readings that is then
//! rebuilt as the event's sorted map. That was about a seventh of the
//! processor's CPU; deserializing field by field through the Avro crate's
//! serde support still cost about a tenth (a call through serde's visitors
//! for every value, a field-name lookup per field). Here each writer schema
//! is turned once into a [`Plan`], a step per field, and a record is read
//! by following it over the bytes.
//!
//! Only the plain case takes this path: a schema whose `event_time`,
//! `readings` and `properties` have the types the shipped schemas give
//! them, whose text fields are strings (or unions of strings and null), and
//! whose other fields are scalars; and records whose values read as
//! expected (an event id already in canonical uuid form, strings where
//! strings are expected). Anything else is read by the generic reader and
//! [`Event::from_avro`], whose results and error messages stay the
//! reference: this path returns None and the record is read again that way.
//! It never accepts a record the generic reader refuses: every length,
//! union index, int range, boolean and UTF-8 string is checked as that
//! reader checks it.

use std::collections::BTreeMap;

use apache_avro::schema::UuidSchema;
use apache_avro::Schema;

use pulse_common::event::Event;
use pulse_common::schemas::EventKind;

/// How the records of one writer schema are read: a step per field, in the
/// schema's order.
#[derive(Debug)]
pub struct Plan {
    steps: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    Text(TextField, Text),
    EventTime,
    Readings,
    Properties,
    Skip(Skip),
}

/// The event's text fields.
#[derive(Debug, Clone, Copy)]
enum TextField {
    EventId,
    TenantId,
    SourceId,
    FirmwareVersion,
    EventType,
}

/// How a text field is written: a string, or a union whose branches are
/// null, a string, or something else (a record that takes such a branch is
/// left to the generic reader).
#[derive(Debug)]
enum Text {
    String,
    Union(Vec<Branch>),
}

#[derive(Debug, Clone, Copy)]
enum Branch {
    Null,
    String,
    Other,
}

/// A field the event does not use, read only to get past it.
#[derive(Debug)]
enum Skip {
    Null,
    Boolean,
    Int,
    Long,
    Fixed(usize),
    /// Bytes, or a string: checked to be UTF-8 as the generic reader does.
    Bytes {
        utf8: bool,
    },
    Union(Vec<Skip>),
}

impl Plan {
    /// The plan for records of `schema`, or None when its records are not
    /// the plain case (see the module's documentation): a record whose
    /// `event_time` is a long (timestamp-millis or plain), whose `readings`,
    /// if any, is a map of doubles, whose `properties`, if any, a map of
    /// strings, and whose other fields are scalars. Other shapes
    /// (timestamp-micros, nullable map values, nested records, ...) are
    /// read, or refused, by the generic reader.
    pub fn of(schema: &Schema) -> Option<Plan> {
        let Schema::Record(record) = schema else {
            return None;
        };
        let steps = record
            .fields
            .iter()
            .map(|f| {
                let text_field = |field| Some(Step::Text(field, text(&f.schema)?));
                match f.name.as_str() {
                    "event_time" => matches!(f.schema, Schema::Long | Schema::TimestampMillis)
                        .then_some(Step::EventTime),
                    "readings" => {
                        matches!(&f.schema, Schema::Map(m) if matches!(*m.types, Schema::Double))
                            .then_some(Step::Readings)
                    }
                    "properties" => {
                        matches!(&f.schema, Schema::Map(m) if matches!(*m.types, Schema::String))
                            .then_some(Step::Properties)
                    }
                    // The generic reader rewrites a uuid written as a
                    // string; only the event id's form is checked, per record.
                    "event_id" => match &f.schema {
                        Schema::Uuid(UuidSchema::String) => {
                            Some(Step::Text(TextField::EventId, Text::String))
                        }
                        _ => text_field(TextField::EventId),
                    },
                    "tenant_id" => text_field(TextField::TenantId),
                    "source_id" => text_field(TextField::SourceId),
                    "firmware_version" => text_field(TextField::FirmwareVersion),
                    "event_type" => text_field(TextField::EventType),
                    _ => skip(&f.schema).map(Step::Skip),
                }
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Plan { steps })
    }
}

fn text(schema: &Schema) -> Option<Text> {
    match schema {
        Schema::String => Some(Text::String),
        Schema::Union(u) => Some(Text::Union(
            u.variants()
                .iter()
                .map(|v| match v {
                    Schema::Null => Branch::Null,
                    Schema::String => Branch::String,
                    _ => Branch::Other,
                })
                .collect(),
        )),
        _ => None,
    }
}

/// How to get past a field of `schema`; None for types whose values the
/// generic reader checks beyond their encoding (uuids, decimals, enums)
/// or that hold other values (records, arrays, maps).
fn skip(schema: &Schema) -> Option<Skip> {
    Some(match schema {
        Schema::Null => Skip::Null,
        Schema::Boolean => Skip::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Skip::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Skip::Long,
        Schema::Float => Skip::Fixed(4),
        Schema::Double => Skip::Fixed(8),
        Schema::Bytes => Skip::Bytes { utf8: false },
        Schema::String => Skip::Bytes { utf8: true },
        Schema::Union(u) => Skip::Union(u.variants().iter().map(skip).collect::<Option<_>>()?),
        _ => return None,
    })
}

/// The event in `datum`, or None when the record is not the plain case
/// (see the module's documentation) and must be read the generic way.
pub fn read(plan: &Plan, kind: EventKind, datum: &[u8]) -> Option<Event> {
    let mut bytes = Bytes(datum);
    let mut wire = Wire::default();
    for step in &plan.steps {
        match step {
            Step::Text(field, text) => *wire.text(*field) = Some(bytes.text(text)?),
            Step::EventTime => wire.event_time = Some(bytes.long()?),
            Step::Readings => wire.readings = Some(bytes.map(Bytes::double)?),
            Step::Properties => {
                wire.properties = Some(bytes.map(|b| b.string().map(str::to_owned))?)
            }
            Step::Skip(skip) => bytes.skip(skip)?,
        }
    }
    if !bytes.0.is_empty() {
        // Bytes left over: let the generic reader judge the record.
        return None;
    }
    let event_id = wire.event_id??;
    if !canonical_uuid(&event_id) {
        // The generic reader rewrites a uuid in another form, or refuses it.
        return None;
    }
    // A field a version lacks reads as empty, but one that is there and
    // null is refused by the generic reader (save the firmware version).
    let event_type = match wire.event_type {
        None => String::new(),
        Some(value) => value?,
    };
    Some(Event {
        kind,
        event_id,
        tenant_id: wire.tenant_id??,
        source_id: wire.source_id??,
        event_time_ms: wire.event_time?,
        readings: wire.readings.unwrap_or_default(),
        firmware_version: wire.firmware_version.flatten(),
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
/// None, a text field that is there but null is `Some(None)`.
#[derive(Default)]
struct Wire {
    event_id: Option<Option<String>>,
    tenant_id: Option<Option<String>>,
    source_id: Option<Option<String>>,
    event_time: Option<i64>,
    readings: Option<BTreeMap<String, f64>>,
    firmware_version: Option<Option<String>>,
    event_type: Option<Option<String>>,
    properties: Option<BTreeMap<String, String>>,
}

impl Wire {
    fn text(&mut self, field: TextField) -> &mut Option<Option<String>> {
        match field {
            TextField::EventId => &mut self.event_id,
            TextField::TenantId => &mut self.tenant_id,
            TextField::SourceId => &mut self.source_id,
            TextField::FirmwareVersion => &mut self.firmware_version,
            TextField::EventType => &mut self.event_type,
        }
    }
}

/// The bytes of a record not read yet. Each read returns None where the
/// generic reader would fail.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    /// A zig-zag varint of at most ten bytes, as Avro writes ints and longs.
    fn long(&mut self) -> Option<i64> {
        let mut value: u64 = 0;
        for (i, byte) in self.0.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }

    fn int(&mut self) -> Option<i32> {
        i32::try_from(self.long()?).ok()
    }

    /// A length, block size or union index: a long that must not be negative.
    fn unsigned(&mut self) -> Option<usize> {
        usize::try_from(self.long()?).ok()
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.unsigned()?;
        self.take(n)
    }

    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn double(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn text(&mut self, text: &Text) -> Option<Option<String>> {
        let branch = match text {
            Text::String => Branch::String,
            Text::Union(branches) => *branches.get(self.unsigned()?)?,
        };
        match branch {
            Branch::Null => Some(None),
            Branch::String => Some(Some(self.string()?.to_owned())),
            Branch::Other => None,
        }
    }

    /// A map, in blocks: a count (negative when the block's size in bytes
    /// follows it), that many entries, until a count of zero.
    fn map<V>(
        &mut self,
        mut value: impl FnMut(&mut Self) -> Option<V>,
    ) -> Option<BTreeMap<String, V>> {
        let mut map = BTreeMap::new();
        loop {
            let count = self.long()?;
            if count == 0 {
                return Some(map);
            }
            if count < 0 {
                self.unsigned()?;
            }
            for _ in 0..count.checked_abs()? {
                let key = self.string()?.to_owned();
                map.insert(key, value(self)?);
            }
        }
    }

    fn skip(&mut self, skip: &Skip) -> Option<()> {
        match skip {
            Skip::Null => {}
            Skip::Boolean => {
                if *self.take(1)?.first()? > 1 {
                    return None;
                }
            }
            Skip::Int => {
                self.int()?;
            }
            Skip::Long => {
                self.long()?;
            }
            Skip::Fixed(n) => {
                self.take(*n)?;
            }
            Skip::Bytes { utf8: false } => {
                self.bytes()?;
            }
            Skip::Bytes { utf8: true } => {
                self.string()?;
            }
            Skip::Union(variants) => {
                let variant = variants.get(self.unsigned()?)?;
                self.skip(variant)?;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::types::Value;
    use apache_avro::writer::datum::GenericDatumWriter;
    use pulse_common::json_avro::json_to_avro;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
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

    fn plan(schema: &Schema) -> Plan {
        Plan::of(schema).expect("a plain schema")
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
            let direct = read(&plan(&schema), kind, &bytes);
            assert_eq!(
                direct,
                Some(generic(&schema, kind, &bytes)),
                "{kind:?} v{version}"
            );
        }
        let (schema, bytes) = shipped(EventKind::Telemetry, 2, &with_firmware);
        let event = read(&plan(&schema), EventKind::Telemetry, &bytes).expect("reads");
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
        let direct = read(&plan(&schema), EventKind::Telemetry, &bytes).expect("reads");
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
        assert!(
            !twin.canonical_form().contains("uuid"),
            "twin still a uuid: {}",
            twin.canonical_form()
        );
        let bytes = encode(&twin, json_to_avro(&twin, &body).expect("valid"));
        assert_eq!(read(&plan(&schema), EventKind::Telemetry, &bytes), None);
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
            assert_eq!(
                read(&plan(&schema), EventKind::App, &bytes),
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
            assert!(Plan::of(&schema).is_none(), "{field}: {ty}");
        }
        assert!(Plan::of(&Schema::String).is_none());
    }

    /// A schema with every field kind the plan knows: text fields plain and
    /// in unions, the readings and properties maps, and skipped scalars.
    const EVERY_STEP: &str = r#"{"type": "record", "name": "Every", "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "tenant_id", "type": "string"},
        {"name": "count", "type": "int"},
        {"name": "source_id", "type": ["string", "null"]},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ratio", "type": "float"},
        {"name": "readings", "type": {"type": "map", "values": "double"}},
        {"name": "note", "type": ["null", "string", "bytes", "long"]},
        {"name": "event_type", "type": ["null", "string"]},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "properties", "type": {"type": "map", "values": "string"}},
        {"name": "firmware_version", "type": ["null", "string"]}]}"#;

    fn random_text(rng: &mut StdRng) -> String {
        let alphabet = ['a', 'Z', '7', ' ', '"', '\\', '\u{e9}', '\u{1f600}', '-'];
        (0..rng.random_range(0..12))
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect()
    }

    fn random_record(rng: &mut StdRng) -> Value {
        let union_text = |rng: &mut StdRng, null_first: bool| {
            let (null, string) = if null_first { (0, 1) } else { (1, 0) };
            if rng.random_bool(0.2) {
                Value::Union(null, Box::new(Value::Null))
            } else {
                Value::Union(string, Box::new(Value::String(random_text(rng))))
            }
        };
        let id = format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            rng.random::<u32>(),
            rng.random::<u16>(),
            rng.random_range(0..0x1000),
            rng.random_range(0..0x1000),
            rng.random_range(0..1u64 << 48)
        );
        let readings = (0..rng.random_range(0..6))
            .map(|_| (random_text(rng), Value::Double(rng.random_range(-1e6..1e6))))
            .collect();
        let properties = (0..rng.random_range(0..4))
            .map(|_| (random_text(rng), Value::String(random_text(rng))))
            .collect();
        let note = match rng.random_range(0..4) {
            0 => Value::Union(0, Box::new(Value::Null)),
            1 => Value::Union(1, Box::new(Value::String(random_text(rng)))),
            2 => Value::Union(2, Box::new(Value::Bytes(vec![0, 255, 128]))),
            _ => Value::Union(3, Box::new(Value::Long(rng.random()))),
        };
        Value::Record(vec![
            ("flag".into(), Value::Boolean(rng.random())),
            ("event_id".into(), Value::Uuid(id.parse().expect("uuid"))),
            ("tenant_id".into(), Value::String(random_text(rng))),
            ("count".into(), Value::Int(rng.random())),
            ("source_id".into(), union_text(rng, false)),
            ("event_time".into(), Value::TimestampMillis(rng.random())),
            ("ratio".into(), Value::Float(rng.random())),
            ("readings".into(), Value::Map(readings)),
            ("note".into(), note),
            ("event_type".into(), union_text(rng, true)),
            ("day".into(), Value::Date(rng.random())),
            ("properties".into(), Value::Map(properties)),
            ("firmware_version".into(), union_text(rng, true)),
        ])
    }

    /// The event the generic reader reads from `bytes`, if it reads one.
    fn generic_or_none(schema: &Schema, bytes: &[u8]) -> Option<Event> {
        let mut rest = bytes;
        let value = reader(schema).read_value(&mut rest).ok()?;
        if !rest.is_empty() {
            return None;
        }
        Event::from_avro(EventKind::Telemetry, value).ok()
    }

    /// The same event, NaN readings included (a damaged double may read as
    /// NaN, which no float equals).
    fn assert_same(direct: &Event, generic: Option<Event>, bytes: &[u8]) {
        assert_eq!(
            Some(format!("{direct:?}")),
            generic.map(|e| format!("{e:?}")),
            "{bytes:?}"
        );
    }

    /// Reads `bytes` both ways; whenever the direct reader returns an event,
    /// the generic reader must return the same one. Whether it read one.
    fn read_as_the_generic_reader(plan: &Plan, schema: &Schema, bytes: &[u8]) -> bool {
        match read(plan, EventKind::Telemetry, bytes) {
            Some(event) => {
                assert_same(&event, generic_or_none(schema, bytes), bytes);
                true
            }
            None => false,
        }
    }

    /// `count` records of [`EVERY_STEP`] generated from `seed`, encoded. The
    /// maps are written in hash-map order, which differs from one run to the
    /// next: the properties checked hold for every order.
    fn generated(seed: u64, count: usize) -> (Schema, Plan, Vec<Vec<u8>>, StdRng) {
        let schema = Schema::parse_str(EVERY_STEP).expect("schema");
        let plan = plan(&schema);
        let mut rng = StdRng::seed_from_u64(seed);
        let records = (0..count)
            .map(|_| encode(&schema, random_record(&mut rng)))
            .collect();
        (schema, plan, records, rng)
    }

    #[test]
    fn generated_records_read_directly_as_the_generic_reader_reads_them() {
        let (schema, plan, records, _) = generated(7, 2_000);
        let direct_reads = records
            .iter()
            .filter(|bytes| read_as_the_generic_reader(&plan, &schema, bytes))
            .count();
        let left = records.len() - direct_reads;
        // Records with a null source or event type are left to the generic
        // reader (which refuses them): 36%, at 20% each.
        assert!(
            direct_reads > 1_100 && left > 550,
            "{direct_reads} read, {left} left"
        );
    }

    #[test]
    fn a_damaged_record_is_never_read_where_the_generic_reader_refuses_it() {
        let (schema, plan, records, mut rng) = generated(11, 300);
        let (mut refused, mut checked) = (0, 0);
        for bytes in records {
            let mut damaged: Vec<Vec<u8>> = (0..bytes.len()).map(|n| bytes[..n].to_vec()).collect();
            for _ in 0..20 {
                let mut b = bytes.clone();
                let at = rng.random_range(0..b.len());
                b[at] = rng.random();
                damaged.push(b);
            }
            damaged.push([&bytes[..], &[0]].concat());
            for b in damaged {
                if !read_as_the_generic_reader(&plan, &schema, &b) {
                    refused += 1;
                }
                checked += 1;
            }
        }
        assert!(refused > checked / 2, "{refused} of {checked} refused");
    }

    #[test]
    fn map_blocks_with_their_byte_size_are_read() {
        // Writers may split a map into blocks and give a block's size in
        // bytes after a negative count; the generic reader accepts both.
        // Written by hand in the order of the shipped v1 telemetry schema.
        let schema = EventKind::Telemetry.schema(1).expect("shipped");
        let text = |s: &str| [&[(s.len() * 2) as u8][..], s.as_bytes()].concat();
        let entry = |k: &str, v: f64| [text(k), v.to_le_bytes().to_vec()].concat();
        let bytes = [
            text("6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11"),
            text("acme"),
            text("dev-1"),
            vec![84],
            // A block of one entry, then a block of -2 entries of 22 bytes.
            vec![2],
            entry("a", 1.5),
            vec![3, 44],
            entry("b", 2.5),
            entry("c", -0.5),
            vec![0],
        ]
        .concat();
        let event = read(&plan(&schema), EventKind::Telemetry, &bytes).expect("reads");
        assert_eq!(event.event_time_ms, 42);
        assert_eq!(
            event.readings.into_iter().collect::<Vec<_>>(),
            vec![("a".into(), 1.5), ("b".into(), 2.5), ("c".into(), -0.5)]
        );
        assert_eq!(
            Some(read(&plan(&schema), EventKind::Telemetry, &bytes).expect("reads")),
            generic_or_none(&schema, &bytes)
        );
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

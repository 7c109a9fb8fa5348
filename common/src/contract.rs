//! The input contract: what every event must be, whichever way it came in
//! (JSON, NDJSON or Confluent Avro over HTTP, MQTT, or a record another
//! client produced straight to Kafka).
//!
//! Invariant: an event that passes [`check`] can enter device state, be
//! scored and be stored without any computed value overflowing, and none
//! of its names can be taken for a feature Pulse computes. Ingest refuses
//! an event that breaks it (422, naming the field); the processor
//! dead-letters one, with the same reason, so that a producer writing to
//! Kafka directly cannot poison a partition's state either.
//!
//! Why these bounds:
//! - Readings are finite and at most [`MAX_READING_ABS`] in magnitude: the
//!   moving variance squares the difference of two readings, which stays
//!   far from `f64::MAX` (1e30 against 1.8e308) and from f32's range the
//!   model takes (3.4e38).
//! - Reading names never contain a dot and are never `gap_s`: the history
//!   features are named `<reading>.delta`, `.ewma`, `.z` and `gap_s`, so a
//!   reading can never stand in for one of them in the model's input.
//! - Identifiers are bounded and printable: they are Kafka keys, ClickHouse
//!   sort keys and changelog keys, and appear in URLs and logs.

use crate::event::Event;
use crate::json_avro::FieldError;
use crate::schemas::EventKind;

/// Most bytes in a `tenant_id`.
pub const MAX_TENANT_LEN: usize = 64;
/// Most bytes in a `source_id` or `event_id`.
pub const MAX_ID_LEN: usize = 128;
/// Most bytes in a reading name, an `event_type` or a property key.
pub const MAX_NAME_LEN: usize = 64;
/// Most characters in a property value.
pub const MAX_PROPERTY_VALUE_LEN: usize = 1024;
/// Most readings in one telemetry event.
pub const MAX_READINGS: usize = 100;
/// Most properties in one app event.
pub const MAX_PROPERTIES: usize = 100;
/// Largest magnitude of a reading.
pub const MAX_READING_ABS: f64 = 1e15;
/// Latest event time, in milliseconds: events are stored with a DateTime,
/// seconds since 1970 in 32 bits (2106-02-07T06:28:15Z).
pub const MAX_EVENT_TIME_MS: i64 = u32::MAX as i64 * 1000 + 999;
/// The feature the processor computes from the time between two events.
pub const GAP_FEATURE: &str = "gap_s";

/// The parts of an event the contract looks at, borrowed from whatever
/// form it arrived in.
pub struct Parts<'a, R, P> {
    pub kind: EventKind,
    pub event_id: &'a str,
    pub tenant_id: &'a str,
    pub source_id: &'a str,
    pub event_time_ms: i64,
    pub event_type: &'a str,
    pub readings: R,
    pub properties: P,
}

/// Checks `event` against the contract.
pub fn check(event: &Event) -> Result<(), FieldError> {
    check_parts(Parts {
        kind: event.kind,
        event_id: &event.event_id,
        tenant_id: &event.tenant_id,
        source_id: &event.source_id,
        event_time_ms: event.event_time_ms,
        event_type: &event.event_type,
        readings: event.readings.iter().map(|(k, v)| (k.as_str(), *v)),
        properties: event
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    })
}

/// Checks an event's parts against the contract; the first field that
/// breaks it, with why.
pub fn check_parts<'a, R, P>(parts: Parts<'a, R, P>) -> Result<(), FieldError>
where
    R: IntoIterator<Item = (&'a str, f64)>,
    P: IntoIterator<Item = (&'a str, &'a str)>,
{
    identifier("event_id", parts.event_id, MAX_ID_LEN, printable)?;
    check_tenant(parts.tenant_id)?;
    identifier("source_id", parts.source_id, MAX_ID_LEN, source_char)?;
    if !(0..=MAX_EVENT_TIME_MS).contains(&parts.event_time_ms) {
        return Err(refuse(
            "event_time",
            format!(
                "{} is outside 0..{MAX_EVENT_TIME_MS} (1970-01-01 to 2106-02-07 UTC)",
                parts.event_time_ms
            ),
        ));
    }
    let mut count = 0;
    for (name, value) in parts.readings {
        count += 1;
        if count > MAX_READINGS {
            return Err(refuse(
                "readings",
                format!("more than {MAX_READINGS} readings"),
            ));
        }
        reading(name, value)?;
    }
    if parts.kind == EventKind::App {
        identifier("event_type", parts.event_type, MAX_NAME_LEN, name_char)?;
    }
    let mut count = 0;
    for (key, value) in parts.properties {
        count += 1;
        if count > MAX_PROPERTIES {
            return Err(refuse(
                "properties",
                format!("more than {MAX_PROPERTIES} properties"),
            ));
        }
        let field = || format!("properties.{}", shown(key));
        identifier(&field(), key, MAX_NAME_LEN, name_char).map_err(|e| FieldError {
            reason: format!("key {}", e.reason),
            ..e
        })?;
        // Characters, as JSON Schema's maxLength counts them.
        if value.chars().nth(MAX_PROPERTY_VALUE_LEN).is_some() {
            return Err(refuse(
                &field(),
                format!("longer than {MAX_PROPERTY_VALUE_LEN} characters"),
            ));
        }
        if value.contains('\0') {
            return Err(refuse(&field(), "contains a NUL byte".into()));
        }
    }
    Ok(())
}

fn reading(name: &str, value: f64) -> Result<(), FieldError> {
    let field = || format!("readings.{}", shown(name));
    if name.is_empty() {
        return Err(refuse("readings", "a reading name is empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(refuse(
            &field(),
            format!("name longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    if !name.chars().all(reading_char) {
        return Err(refuse(
            &field(),
            "name may hold only ASCII letters, digits, '_' and '-'".into(),
        ));
    }
    if name == GAP_FEATURE {
        return Err(refuse(
            &field(),
            format!("'{GAP_FEATURE}' is reserved for a computed feature"),
        ));
    }
    if !value.is_finite() {
        return Err(refuse(&field(), format!("{value} is not a finite number")));
    }
    if value.abs() > MAX_READING_ABS {
        return Err(refuse(
            &field(),
            format!("{value:e} is outside -{MAX_READING_ABS:e}..{MAX_READING_ABS:e}"),
        ));
    }
    Ok(())
}

/// A tenant id as events, files and credentials name it.
pub fn check_tenant(tenant_id: &str) -> Result<(), FieldError> {
    identifier("tenant_id", tenant_id, MAX_TENANT_LEN, tenant_char)
}

fn identifier(
    field: &str,
    value: &str,
    max: usize,
    allowed: fn(char) -> bool,
) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(refuse(field, "is empty".into()));
    }
    if value.len() > max {
        return Err(refuse(field, format!("longer than {max} bytes")));
    }
    match value.chars().find(|c| !allowed(*c)) {
        None => Ok(()),
        Some(c) => Err(refuse(field, format!("character {c:?} is not allowed"))),
    }
}

/// Tenants name object-store prefixes, topics' keys and URLs: ASCII only.
fn tenant_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Device and app names come from many systems: any letter or digit, and
/// the separators their ids commonly use.
fn source_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@' | '/')
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// No dot: it separates a reading from its computed features' suffixes.
fn reading_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_')
}

fn printable(c: char) -> bool {
    c.is_ascii_graphic()
}

/// A name as it may be shown in an error: at most 64 characters, control
/// characters escaped, so a refused name cannot flood or forge a log line.
fn shown(name: &str) -> String {
    let mut out: String = name.chars().take(64).flat_map(char::escape_debug).collect();
    if name.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

fn refuse(field: &str, reason: String) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn telemetry() -> Event {
        Event {
            kind: EventKind::Telemetry,
            event_id: "6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11".into(),
            tenant_id: "acme".into(),
            source_id: "boiler-7".into(),
            event_time_ms: 1_700_000_000_000,
            readings: BTreeMap::from([("temperature_c".to_string(), 21.5)]),
            firmware_version: None,
            event_type: String::new(),
            properties: BTreeMap::new(),
        }
    }

    fn app() -> Event {
        Event {
            kind: EventKind::App,
            readings: BTreeMap::new(),
            event_type: "checkout_completed".into(),
            properties: BTreeMap::from([("screen".to_string(), "home".to_string())]),
            ..telemetry()
        }
    }

    fn with_reading(name: &str, value: f64) -> Event {
        let mut e = telemetry();
        e.readings.insert(name.to_string(), value);
        e
    }

    #[test]
    fn valid_events_and_the_bounds_themselves_pass() {
        assert_eq!(check(&telemetry()), Ok(()));
        assert_eq!(check(&app()), Ok(()));
        let mut e = telemetry();
        e.event_time_ms = MAX_EVENT_TIME_MS;
        assert_eq!(check(&e), Ok(()));
        e.event_time_ms = 0;
        assert_eq!(check(&e), Ok(()));
        e.tenant_id = "t".repeat(MAX_TENANT_LEN);
        let prefix = "dév/7:a@b";
        e.source_id = prefix.to_string() + &"x".repeat(MAX_ID_LEN - prefix.len());
        e.readings = (0..MAX_READINGS)
            .map(|i| (format!("r{i}"), if i % 2 == 0 { 1e15 } else { -1e15 }))
            .collect();
        assert_eq!(e.source_id.len(), MAX_ID_LEN);
        assert_eq!(check(&e), Ok(()));
        let mut e = app();
        e.properties = (0..MAX_PROPERTIES)
            .map(|i| (format!("k{i}"), "é".repeat(MAX_PROPERTY_VALUE_LEN)))
            .collect();
        assert_eq!(check(&e), Ok(()));
    }

    /// (what is broken, the event, the field named, the start of the reason)
    fn broken() -> Vec<(&'static str, Event, &'static str, &'static str)> {
        let mut cases = Vec::new();
        let mut e = telemetry();
        e.source_id = String::new();
        cases.push(("empty source", e, "source_id", "is empty"));
        let mut e = telemetry();
        e.source_id = "x".repeat(100_000);
        cases.push(("huge source", e, "source_id", "longer than 128 bytes"));
        let mut e = telemetry();
        e.source_id = "dev\0-1".into();
        cases.push(("NUL in source", e, "source_id", "character '\\0'"));
        let mut e = telemetry();
        e.source_id = "dev 1".into();
        cases.push(("space in source", e, "source_id", "character ' '"));
        let mut e = telemetry();
        e.tenant_id = "acmé".into();
        cases.push(("non-ASCII tenant", e, "tenant_id", "character 'é'"));
        let mut e = telemetry();
        e.tenant_id = "a/b".into();
        cases.push(("slash in tenant", e, "tenant_id", "character '/'"));
        let mut e = telemetry();
        e.event_id = String::new();
        cases.push(("empty event id", e, "event_id", "is empty"));
        let mut e = telemetry();
        e.event_time_ms = -1;
        cases.push(("before 1970", e, "event_time", "-1 is outside"));
        let mut e = telemetry();
        e.event_time_ms = MAX_EVENT_TIME_MS + 1;
        cases.push(("after 2106", e, "event_time", "4294967296000 is outside"));
        cases.push((
            "+max double",
            with_reading("x", 1.7e308),
            "readings.x",
            "1.7e308 is outside",
        ));
        cases.push((
            "-max double",
            with_reading("x", -1.7e308),
            "readings.x",
            "-1.7e308 is outside",
        ));
        cases.push((
            "just over",
            with_reading("x", 1.0000001e15),
            "readings.x",
            "1.0000001e15 is outside",
        ));
        cases.push((
            "NaN",
            with_reading("x", f64::NAN),
            "readings.x",
            "NaN is not a finite",
        ));
        cases.push((
            "infinity",
            with_reading("x", f64::NEG_INFINITY),
            "readings.x",
            "-inf is not a finite",
        ));
        cases.push((
            "empty name",
            with_reading("", 1.0),
            "readings",
            "a reading name is empty",
        ));
        cases.push((
            "feature spoofing",
            with_reading("temperature_c.z", 9.0),
            "readings.temperature_c.z",
            "name may hold only",
        ));
        cases.push((
            "reserved gap",
            with_reading("gap_s", 1.0),
            "readings.gap_s",
            "'gap_s' is reserved",
        ));
        cases.push((
            "long name",
            with_reading(&"n".repeat(65), 1.0),
            "readings.nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn…",
            "name longer than 64 bytes",
        ));
        cases.push((
            "newline in name",
            with_reading("a\nb", 1.0),
            "readings.a\\nb",
            "name may hold only",
        ));
        let mut e = telemetry();
        e.readings = (0..1000).map(|i| (format!("r{i}"), 1.0)).collect();
        cases.push(("1,000 readings", e, "readings", "more than 100 readings"));
        let mut e = app();
        e.event_type = String::new();
        cases.push(("empty event type", e, "event_type", "is empty"));
        let mut e = app();
        e.event_type = "page view".into();
        cases.push(("space in event type", e, "event_type", "character ' '"));
        let mut e = app();
        e.properties.insert(String::new(), "v".into());
        cases.push(("empty property key", e, "properties.", "key is empty"));
        let mut e = app();
        e.properties.insert("k".into(), "v\0".into());
        cases.push(("NUL in value", e, "properties.k", "contains a NUL byte"));
        let mut e = app();
        e.properties.insert("k".into(), "v".repeat(1025));
        cases.push((
            "long value",
            e,
            "properties.k",
            "longer than 1024 characters",
        ));
        let mut e = app();
        e.properties = (0..101).map(|i| (format!("k{i}"), "v".into())).collect();
        cases.push((
            "101 properties",
            e,
            "properties",
            "more than 100 properties",
        ));
        cases
    }

    #[test]
    fn each_broken_rule_names_its_field_and_why() {
        for (what, event, field, reason) in broken() {
            match check(&event) {
                Ok(()) => panic!("{what}: passed"),
                Err(e) => {
                    assert_eq!(e.field, field, "{what}");
                    assert!(e.reason.starts_with(reason), "{what}: {}", e.reason);
                }
            }
        }
    }
}

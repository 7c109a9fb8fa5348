//! Turns a request body into validated events, or into the list of what is
//! wrong with it. Validation is all-or-nothing: one bad event rejects the
//! whole request, so nothing of a rejected request reaches Kafka.

use apache_avro::types::Value;
use pulse_common::json_avro::json_to_avro;
use pulse_common::schemas::EventKind;
use serde::Serialize;
use serde_json::Value as Json;

/// Envelope fields that pick the schema; they are not part of the event.
const KIND_FIELD: &str = "kind";
const VERSION_FIELD: &str = "schema_version";

/// One event, ready to encode.
#[derive(Debug, Clone)]
pub struct ValidEvent {
    pub kind: EventKind,
    pub schema_version: u32,
    pub event_id: String,
    /// Kafka record key: events of one device keep their order.
    pub key: String,
    pub value: Value,
}

/// Why one event of a request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventError {
    /// Position of the event in the request (0 for a single event).
    pub index: usize,
    /// The event's id, when it had a readable one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub field: String,
    pub reason: String,
}

/// Bounds on event time, relative to the gateway's clock.
#[derive(Debug, Clone, Copy)]
pub struct TimeBounds {
    pub now_ms: i64,
    pub max_age_ms: i64,
    pub max_skew_ms: i64,
}

/// Parses a body holding one JSON event or a JSON array of events.
pub fn parse_body(body: &[u8], bounds: TimeBounds) -> Result<Vec<ValidEvent>, Vec<EventError>> {
    let json: Json = serde_json::from_slice(body).map_err(|e| {
        vec![EventError {
            index: 0,
            event_id: None,
            field: "(body)".into(),
            reason: format!("malformed JSON: {e}"),
        }]
    })?;
    let items = match json {
        Json::Array(items) => items,
        single => vec![single],
    };
    if items.is_empty() {
        return Err(vec![EventError {
            index: 0,
            event_id: None,
            field: "(body)".into(),
            reason: "no events in the request".into(),
        }]);
    }
    let mut valid = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match validate(item, bounds) {
            Ok(e) => valid.push(e),
            Err((event_id, field, reason)) => errors.push(EventError {
                index,
                event_id,
                field,
                reason,
            }),
        }
    }
    if errors.is_empty() {
        Ok(valid)
    } else {
        Err(errors)
    }
}

type Rejection = (Option<String>, String, String);

fn validate(mut item: Json, bounds: TimeBounds) -> Result<ValidEvent, Rejection> {
    let event_id = item
        .get("event_id")
        .and_then(Json::as_str)
        .map(str::to_string);
    let reject = |field: &str, reason: String| (event_id.clone(), field.to_string(), reason);
    let obj = item
        .as_object_mut()
        .ok_or_else(|| reject("(event)", "expected a JSON object".into()))?;
    let kind = match obj.remove(KIND_FIELD) {
        Some(Json::String(k)) => EventKind::parse(&k).ok_or_else(|| {
            reject(
                KIND_FIELD,
                format!("unknown kind '{k}'; expected telemetry or app"),
            )
        })?,
        Some(_) => return Err(reject(KIND_FIELD, "expected a string".into())),
        None => return Err(reject(KIND_FIELD, "required field is missing".into())),
    };
    let schema_version = match obj.remove(VERSION_FIELD) {
        None => kind.latest_version(),
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| reject(VERSION_FIELD, "expected a positive integer".into()))?,
    };
    let schema = kind.schema(schema_version).ok_or_else(|| {
        reject(
            VERSION_FIELD,
            format!(
                "unknown {} schema version {schema_version}; known: 1 to {}",
                kind.as_str(),
                kind.latest_version()
            ),
        )
    })?;
    let value = json_to_avro(&schema, &item).map_err(|e| reject(&e.field, e.reason))?;
    // json_to_avro checked these fields' presence and types.
    let field = |name: &str| item.get(name).cloned().unwrap_or(Json::Null);
    let event_time = field("event_time").as_i64().unwrap_or_default();
    if event_time < bounds.now_ms - bounds.max_age_ms {
        return Err(reject(
            "event_time",
            format!("more than {} s in the past", bounds.max_age_ms / 1000),
        ));
    }
    if event_time > bounds.now_ms + bounds.max_skew_ms {
        return Err(reject(
            "event_time",
            format!("more than {} s in the future", bounds.max_skew_ms / 1000),
        ));
    }
    let tenant = field("tenant_id");
    let source = field("source_id");
    Ok(ValidEvent {
        kind,
        schema_version,
        event_id: event_id.unwrap_or_default(),
        key: format!(
            "{}/{}",
            tenant.as_str().unwrap_or_default(),
            source.as_str().unwrap_or_default()
        ),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    fn bounds() -> TimeBounds {
        TimeBounds {
            now_ms: NOW,
            max_age_ms: 7 * 86_400_000,
            max_skew_ms: 300_000,
        }
    }

    fn telemetry(id: &str) -> Json {
        json!({
            "kind": "telemetry",
            "event_id": id,
            "tenant_id": "acme",
            "source_id": "dev-7",
            "event_time": NOW - 1000,
            "readings": {"temperature_c": 20.5}
        })
    }

    const ID1: &str = "00000000-0000-4000-8000-000000000001";
    const ID2: &str = "00000000-0000-4000-8000-000000000002";

    #[test]
    fn single_event_and_batch_parse() {
        let one = parse_body(telemetry(ID1).to_string().as_bytes(), bounds()).expect("valid");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].key, "acme/dev-7");
        assert_eq!(one[0].schema_version, 2);
        assert_eq!(one[0].event_id, ID1);
        let batch = json!([telemetry(ID1), telemetry(ID2)]).to_string();
        let many = parse_body(batch.as_bytes(), bounds()).expect("valid");
        assert_eq!(
            many.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
            [ID1, ID2]
        );
    }

    #[test]
    fn explicit_v1_is_honoured() {
        let mut e = telemetry(ID1);
        e["schema_version"] = json!(1);
        let parsed = parse_body(e.to_string().as_bytes(), bounds()).expect("valid");
        assert_eq!(parsed[0].schema_version, 1);
    }

    #[test]
    fn one_bad_event_rejects_the_batch_and_names_it() {
        let mut bad = telemetry(ID2);
        bad["readings"]["temperature_c"] = json!("warm");
        let body = json!([telemetry(ID1), bad]).to_string();
        let errors = parse_body(body.as_bytes(), bounds()).expect_err("rejected");
        assert_eq!(
            errors,
            vec![EventError {
                index: 1,
                event_id: Some(ID2.into()),
                field: "readings.temperature_c".into(),
                reason: "expected a number, got a string".into(),
            }]
        );
    }

    #[test]
    fn envelope_and_time_errors() {
        let cases = [
            ("kind", json!("video"), "kind", "unknown kind"),
            (
                "schema_version",
                json!(9),
                "schema_version",
                "unknown telemetry schema version 9",
            ),
            (
                "event_time",
                json!(NOW - 8 * 86_400_000),
                "event_time",
                "more than 604800 s in the past",
            ),
            (
                "event_time",
                json!(NOW + 600_000),
                "event_time",
                "more than 300 s in the future",
            ),
        ];
        for (field, value, err_field, reason) in cases {
            let mut e = telemetry(ID1);
            e[field] = value;
            let errors = parse_body(e.to_string().as_bytes(), bounds()).expect_err(field);
            assert_eq!(errors[0].field, err_field);
            assert!(errors[0].reason.starts_with(reason), "{:?}", errors[0]);
        }
        let errors = parse_body(b"{not json", bounds()).expect_err("malformed");
        assert_eq!(errors[0].field, "(body)");
        let errors = parse_body(b"[]", bounds()).expect_err("empty");
        assert_eq!(errors[0].reason, "no events in the request");
    }
}

//! Turns a request body into validated events, or into the list of what is
//! wrong with it. Validation is all-or-nothing: one bad event rejects the
//! whole request, so nothing of a rejected request reaches Kafka.

use apache_avro::types::Value;
use pulse_common::contract::{self, Parts};
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
    pub payload: Payload,
}

/// An event's content: validated JSON still to encode, or a record that
/// arrived already encoded in the Confluent wire format.
#[derive(Debug, Clone)]
pub enum Payload {
    Value(Value),
    Encoded(Vec<u8>),
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
    /// The event claims a tenant or source its sender may not write as.
    #[serde(skip)]
    pub forbidden: bool,
}

impl EventError {
    pub fn body(reason: impl Into<String>) -> Self {
        Self {
            index: 0,
            event_id: None,
            field: "(body)".into(),
            reason: reason.into(),
            forbidden: false,
        }
    }
}

/// What the sender's credential allows it to write as.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    pub tenant: &'a str,
    /// A device token writes as this source only.
    pub device: Option<&'a str>,
}

/// How the events of a body are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One JSON event, or a JSON array of events.
    Json,
    /// One JSON event per line.
    Ndjson,
}

/// Bounds on event time, relative to the gateway's clock.
#[derive(Debug, Clone, Copy)]
pub struct TimeBounds {
    pub now_ms: i64,
    pub max_age_ms: i64,
    pub max_skew_ms: i64,
}

/// Splits a body into JSON documents, one per event.
fn documents(body: &[u8], layout: Layout) -> Result<Vec<Json>, Vec<EventError>> {
    match layout {
        Layout::Json => match serde_json::from_slice(body) {
            Ok(Json::Array(items)) => Ok(items),
            Ok(single) => Ok(vec![single]),
            Err(e) => Err(vec![EventError::body(format!("malformed JSON: {e}"))]),
        },
        Layout::Ndjson => {
            let mut items = Vec::new();
            let mut errors = Vec::new();
            let lines = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.trim_ascii().is_empty());
            for (index, line) in lines.enumerate() {
                match serde_json::from_slice(line) {
                    Ok(item) => items.push(item),
                    Err(e) => errors.push(EventError {
                        index,
                        field: "(line)".into(),
                        ..EventError::body(format!("malformed JSON: {e}"))
                    }),
                }
            }
            if errors.is_empty() {
                Ok(items)
            } else {
                Err(errors)
            }
        }
    }
}

/// Parses and validates every event of a JSON or NDJSON body.
pub fn parse_body(
    body: &[u8],
    layout: Layout,
    bounds: TimeBounds,
    claims: Option<Claims<'_>>,
) -> Result<Vec<ValidEvent>, Vec<EventError>> {
    let items = documents(body, layout)?;
    if items.is_empty() {
        return Err(vec![EventError::body("no events in the request")]);
    }
    let mut valid = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match validate(item, bounds, claims) {
            Ok(e) => valid.push(e),
            Err(r) => errors.push(EventError {
                index,
                event_id: r.event_id,
                field: r.field,
                reason: r.reason,
                forbidden: r.forbidden,
            }),
        }
    }
    if errors.is_empty() {
        Ok(valid)
    } else {
        Err(errors)
    }
}

struct Rejection {
    event_id: Option<String>,
    field: String,
    reason: String,
    forbidden: bool,
}

/// Fills `field` from the credential when the event omits it, and refuses
/// an event that names another value.
fn claim(
    obj: &mut serde_json::Map<String, Json>,
    field: &str,
    allowed: Option<&str>,
) -> Result<(), (String, String)> {
    let Some(allowed) = allowed else {
        return Ok(());
    };
    match obj.get(field) {
        None => {
            obj.insert(field.to_string(), Json::String(allowed.to_string()));
            Ok(())
        }
        Some(Json::String(s)) if s == allowed => Ok(()),
        Some(Json::String(s)) => Err((
            field.to_string(),
            format!("'{s}' is not '{allowed}', the only {field} this credential may write"),
        )),
        // Wrong types are reported by schema validation.
        Some(_) => Ok(()),
    }
}

fn validate(
    mut item: Json,
    bounds: TimeBounds,
    claims: Option<Claims<'_>>,
) -> Result<ValidEvent, Rejection> {
    let event_id = item
        .get("event_id")
        .and_then(Json::as_str)
        .map(str::to_string);
    let reject = |field: &str, reason: String| Rejection {
        event_id: event_id.clone(),
        field: field.to_string(),
        reason,
        forbidden: false,
    };
    let obj = item
        .as_object_mut()
        .ok_or_else(|| reject("(event)", "expected a JSON object".into()))?;
    if let Some(c) = claims {
        claim(obj, "tenant_id", Some(c.tenant))
            .and_then(|()| claim(obj, "source_id", c.device))
            .map_err(|(field, reason)| Rejection {
                forbidden: true,
                ..reject(&field, reason)
            })?;
    }
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
    bounds
        .check(event_time)
        .map_err(|reason| reject("event_time", reason))?;
    let tenant = field("tenant_id");
    let source = field("source_id");
    let entries = |name: &str| {
        item.get(name)
            .and_then(Json::as_object)
            .into_iter()
            .flatten()
    };
    contract::check_parts(Parts {
        kind,
        event_id: event_id.as_deref().unwrap_or_default(),
        tenant_id: tenant.as_str().unwrap_or_default(),
        source_id: source.as_str().unwrap_or_default(),
        event_time_ms: event_time,
        event_type: item
            .get("event_type")
            .and_then(Json::as_str)
            .unwrap_or_default(),
        // json_to_avro checked that readings are numbers and properties strings.
        readings: entries("readings").map(|(k, v)| (k.as_str(), v.as_f64().unwrap_or(f64::NAN))),
        properties: entries("properties")
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())),
    })
    .map_err(|e| reject(&e.field, e.reason))?;
    Ok(ValidEvent {
        kind,
        schema_version,
        event_id: event_id.unwrap_or_default(),
        key: record_key(
            tenant.as_str().unwrap_or_default(),
            source.as_str().unwrap_or_default(),
        ),
        payload: Payload::Value(value),
    })
}

/// Kafka record key: events of one device stay in order on one partition.
pub fn record_key(tenant: &str, source: &str) -> String {
    format!("{tenant}/{source}")
}

impl TimeBounds {
    /// Why `event_time` is out of bounds, if it is. A bound of 0 is no bound.
    pub fn check(&self, event_time: i64) -> Result<(), String> {
        if let Some(oldest) = self.oldest() {
            if event_time < oldest {
                return Err(format!(
                    "more than {} s in the past",
                    self.max_age_ms / 1000
                ));
            }
        }
        if let Some(newest) = self.newest() {
            if event_time > newest {
                return Err(format!(
                    "more than {} s in the future",
                    self.max_skew_ms / 1000
                ));
            }
        }
        Ok(())
    }

    /// The oldest event time accepted, if any is refused.
    pub fn oldest(&self) -> Option<i64> {
        (self.max_age_ms > 0).then(|| self.now_ms.saturating_sub(self.max_age_ms))
    }

    /// The newest event time accepted, if any is refused.
    pub fn newest(&self) -> Option<i64> {
        (self.max_skew_ms > 0).then(|| self.now_ms.saturating_add(self.max_skew_ms))
    }
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
        let one = parse_body(
            telemetry(ID1).to_string().as_bytes(),
            Layout::Json,
            bounds(),
            None,
        )
        .expect("valid");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].key, "acme/dev-7");
        assert_eq!(one[0].schema_version, 2);
        assert_eq!(one[0].event_id, ID1);
        let batch = json!([telemetry(ID1), telemetry(ID2)]).to_string();
        let many = parse_body(batch.as_bytes(), Layout::Json, bounds(), None).expect("valid");
        assert_eq!(
            many.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
            [ID1, ID2]
        );
    }

    #[test]
    fn explicit_v1_is_honoured() {
        let mut e = telemetry(ID1);
        e["schema_version"] = json!(1);
        let parsed =
            parse_body(e.to_string().as_bytes(), Layout::Json, bounds(), None).expect("valid");
        assert_eq!(parsed[0].schema_version, 1);
    }

    #[test]
    fn one_bad_event_rejects_the_batch_and_names_it() {
        let mut bad = telemetry(ID2);
        bad["readings"]["temperature_c"] = json!("warm");
        let body = json!([telemetry(ID1), bad]).to_string();
        let errors =
            parse_body(body.as_bytes(), Layout::Json, bounds(), None).expect_err("rejected");
        assert_eq!(
            errors,
            vec![EventError {
                index: 1,
                event_id: Some(ID2.into()),
                field: "readings.temperature_c".into(),
                reason: "expected a number, got a string".into(),
                forbidden: false,
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
            let errors = parse_body(e.to_string().as_bytes(), Layout::Json, bounds(), None)
                .expect_err(field);
            assert_eq!(errors[0].field, err_field);
            assert!(errors[0].reason.starts_with(reason), "{:?}", errors[0]);
        }
        let errors = parse_body(b"{not json", Layout::Json, bounds(), None).expect_err("malformed");
        assert_eq!(errors[0].field, "(body)");
        let errors = parse_body(b"[]", Layout::Json, bounds(), None).expect_err("empty");
        assert_eq!(errors[0].reason, "no events in the request");
    }

    #[test]
    fn a_bound_of_zero_is_no_bound() {
        let unbounded = TimeBounds {
            now_ms: NOW,
            max_age_ms: 0,
            max_skew_ms: 0,
        };
        assert_eq!(unbounded.check(i64::MIN), Ok(()));
        assert_eq!(unbounded.check(i64::MAX), Ok(()));
        assert_eq!((unbounded.oldest(), unbounded.newest()), (None, None));
        assert_eq!(bounds().oldest(), Some(NOW - 7 * 86_400_000));
        assert_eq!(bounds().check(NOW - 7 * 86_400_000), Ok(()));
        assert!(bounds().check(NOW - 7 * 86_400_000 - 1).is_err());
        assert_eq!(bounds().check(NOW + 300_000), Ok(()));
        assert!(bounds().check(NOW + 300_001).is_err());
    }

    #[test]
    fn ndjson_lines_are_events_and_bad_lines_are_named() {
        let body = format!("{}\n\n{}\n", telemetry(ID1), telemetry(ID2));
        let parsed = parse_body(body.as_bytes(), Layout::Ndjson, bounds(), None).expect("valid");
        assert_eq!(parsed.len(), 2);
        let body = format!("{}\n{{oops\n", telemetry(ID1));
        let errors =
            parse_body(body.as_bytes(), Layout::Ndjson, bounds(), None).expect_err("bad line");
        assert_eq!((errors[0].index, errors[0].field.as_str()), (1, "(line)"));
    }

    #[test]
    fn credentials_fill_and_fence_tenant_and_device() {
        let device = Claims {
            tenant: "acme",
            device: Some("dev-7"),
        };
        let mut e = telemetry(ID1);
        e.as_object_mut().expect("object").remove("tenant_id");
        e.as_object_mut().expect("object").remove("source_id");
        let parsed = parse_body(
            e.to_string().as_bytes(),
            Layout::Json,
            bounds(),
            Some(device),
        )
        .expect("filled in");
        assert_eq!(parsed[0].key, "acme/dev-7");

        let other_tenant = Claims {
            tenant: "globex",
            device: None,
        };
        let errors = parse_body(
            telemetry(ID1).to_string().as_bytes(),
            Layout::Json,
            bounds(),
            Some(other_tenant),
        )
        .expect_err("other tenant");
        assert!(errors[0].forbidden);
        assert_eq!(errors[0].field, "tenant_id");

        let other_device = Claims {
            tenant: "acme",
            device: Some("dev-8"),
        };
        let errors = parse_body(
            telemetry(ID1).to_string().as_bytes(),
            Layout::Json,
            bounds(),
            Some(other_device),
        )
        .expect_err("other device");
        assert!(errors[0].forbidden);
        assert_eq!(errors[0].field, "source_id");
    }
}

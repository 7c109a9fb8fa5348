//! The gateway's OpenAPI document, served at `/openapi.json`. Its bounds
//! come from the input contract's constants (`pulse_common::contract`) and
//! the shipped schemas, so the document cannot drift from what ingest
//! enforces; every answer code the gateway gives is listed with its body.

use axum::Json;
use pulse_common::contract::{
    GAP_FEATURE, MAX_EVENT_TIME_MS, MAX_ID_LEN, MAX_NAME_LEN, MAX_PROPERTIES,
    MAX_PROPERTY_VALUE_LEN, MAX_READINGS, MAX_READING_ABS, MAX_TENANT_LEN,
};
use std::time::Duration;

use pulse_common::clock::now_ms;
use serde_json::{json, Value};

use super::avro_body::AVRO_CONTENT_TYPE;
use super::parse::TimeBounds;

/// Serves the document, with the event times accepted as of now.
pub async fn json(window: TimeWindow) -> Json<Value> {
    Json(document(window.bounds(), window.authenticated))
}

/// How old and how far ahead an event's time may be, and whether the
/// credential names the tenant.
#[derive(Debug, Clone, Copy)]
pub struct TimeWindow {
    pub max_age: Duration,
    pub max_skew: Duration,
    pub authenticated: bool,
}

impl TimeWindow {
    fn bounds(&self) -> TimeBounds {
        TimeBounds {
            now_ms: now_ms(),
            max_age_ms: self.max_age.as_millis() as i64,
            max_skew_ms: self.max_skew.as_millis() as i64,
        }
    }
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn retry_later(description: &str) -> Value {
    let mut answer = error(description);
    answer["headers"] = json!({
        "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
    });
    answer
}

/// The identifier and name patterns are the ASCII part of what the
/// contract accepts (source ids may also hold letters and digits of any
/// script), so a document-valid id is always accepted.
pub fn document(bounds: TimeBounds, authenticated: bool) -> Value {
    let common = |kind: &str, versions: &[u32]| {
        json!({
            "kind": {"type": "string", "enum": [kind]},
            "schema_version": {"type": "integer", "enum": versions, "description": "The schema version; the latest by default."},
            "event_id": {"type": "string", "format": "uuid", "description": "Unique id of the event; a retry reuses it."},
            "tenant_id": {
                "type": "string", "minLength": 1, "maxLength": MAX_TENANT_LEN,
                "pattern": "^[A-Za-z0-9._-]+$",
                "description": "The tenant; taken from the credential when omitted, refused with 403 when it names another."
            },
            "source_id": {
                "type": "string", "minLength": 1, "maxLength": MAX_ID_LEN,
                "pattern": "^[A-Za-z0-9._:@/-]+$",
                "description": "The device or app. Letters and digits of any script are accepted too."
            },
            "event_time": event_time(&bounds)
        })
    };
    let name = json!({"type": "string", "minLength": 1, "maxLength": MAX_NAME_LEN, "pattern": "^[A-Za-z0-9_.:-]+$"});
    let mut telemetry = common("telemetry", &[2]);
    telemetry["readings"] = json!({
        "type": "object",
        "maxProperties": MAX_READINGS,
        "propertyNames": {
            "minLength": 1, "maxLength": MAX_NAME_LEN, "pattern": "^[A-Za-z0-9_-]+$",
            "not": {"enum": [GAP_FEATURE]}
        },
        "additionalProperties": {"type": "number", "minimum": -MAX_READING_ABS, "maximum": MAX_READING_ABS},
        "description": "Named readings: finite numbers. A name never contains a dot and is never gap_s: those name the features Pulse computes."
    });
    // Version 1 has no firmware version: a schema of its own, told apart
    // by its required schema_version.
    let mut telemetry_v1 = telemetry.clone();
    telemetry_v1["schema_version"]["enum"] = json!([1]);
    telemetry["firmware_version"] = json!({"type": ["string", "null"]});
    let mut app = common("app", &[1]);
    app["event_type"] = name.clone();
    app["properties"] = json!({
        "type": "object",
        "maxProperties": MAX_PROPERTIES,
        "propertyNames": name,
        "additionalProperties": {"type": "string", "maxLength": MAX_PROPERTY_VALUE_LEN, "pattern": "^[^\\u0000]*$"}
    });
    // Without a credentials file, nothing names the tenant but the event.
    let required = |extra: &str| {
        let mut fields = vec!["kind", "event_id", "source_id", "event_time", extra];
        if !authenticated {
            fields.push("tenant_id");
        }
        json!(fields)
    };
    let mut v1_required = required("readings");
    if let Some(fields) = v1_required.as_array_mut() {
        fields.push(json!("schema_version"));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Pulse ingest",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Takes in events from devices and apps and acknowledges them once Kafka has them. The input contract is docs/input-contract.md."
        },
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": "Send one event, a batch, or one pre-encoded Avro record",
                    "description": "A batch is all or nothing: one bad event refuses the whole request and nothing of it reaches Kafka.",
                    "security": [{"bearer": []}, {}],
                    "requestBody": {
                        "required": true,
                        "content": {
                            "application/json": {"schema": {"oneOf": [
                                {"$ref": "#/components/schemas/Event"},
                                {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Event"}}
                            ]}},
                            "application/x-ndjson": {"schema": {"type": "string", "description": "One JSON event per line."}},
                            AVRO_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary", "description": "Magic byte 0, a 4-byte schema id Pulse registered, the Avro record."}}
                        }
                    },
                    "responses": {
                        "202": {
                            "description": "Every event was acknowledged by Kafka",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}
                        },
                        "400": error("malformed_body: not JSON, an empty batch, a broken NDJSON line, a record not in the wire format or of an unknown schema id"),
                        "401": error("unauthenticated: no or an unknown credential"),
                        "403": error("forbidden: an event names another tenant, or a device token another device"),
                        "413": error("body_too_large: over --max-body-bytes; record_too_large: an event over its Kafka topic's max.message.bytes"),
                        "415": error("unsupported_media_type"),
                        "422": error("invalid_events: an event does not fit its schema, its time bounds or the input contract"),
                        "429": retry_later("rate_limited: the credential's events per second are spent"),
                        "503": retry_later("starting, kafka_unavailable, registry_unavailable or overloaded: retry the whole request with the same event ids")
                    }
                }
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "The process runs"}}}},
            "/readyz": {"get": {"summary": "Readiness", "responses": {
                "200": {"description": "Ready for traffic"},
                "503": {"description": "Not ready; the body says what start-up waits for", "content": {"text/plain": {"schema": {"type": "string"}}}}
            }}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Metrics in the text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key or a device token, when ingest runs with a credentials file"}},
            "schemas": {
                "Event": {"oneOf": [
                    {"$ref": "#/components/schemas/Telemetry"},
                    {"$ref": "#/components/schemas/TelemetryV1"},
                    {"$ref": "#/components/schemas/AppEvent"}
                ]},
                "Telemetry": {"type": "object", "properties": telemetry, "required": required("readings"), "additionalProperties": false},
                "TelemetryV1": {
                    "type": "object", "properties": telemetry_v1,
                    "required": v1_required,
                    "additionalProperties": false
                },
                "AppEvent": {"type": "object", "properties": app, "required": required("event_type"), "additionalProperties": false},
                "Accepted": {
                    "type": "object",
                    "properties": {
                        "accepted": {"type": "integer"},
                        "event_ids": {"type": "array", "items": {"type": "string"}}
                    },
                    "required": ["accepted", "event_ids"]
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "errors": {"type": "array", "items": {
                            "type": "object",
                            "properties": {
                                "index": {"type": "integer", "description": "The event's position, or line for NDJSON"},
                                "event_id": {"type": "string"},
                                "field": {"type": "string", "description": "A dotted path, or (body)"},
                                "reason": {"type": "string"}
                            },
                            "required": ["index", "field", "reason"]
                        }}
                    },
                    "required": ["error", "errors"]
                }
            }
        }
    })
}

/// Event times are bounded relative to the gateway's clock: the bounds are
/// those of the moment the document was served.
fn event_time(bounds: &TimeBounds) -> Value {
    let mut schema = json!({
        "type": "integer", "format": "int64",
        "description": format!(
            "Milliseconds since the Unix epoch (UTC): at most {} s old and {} s ahead \
             (--max-event-age-s, --max-clock-skew-s; 0 is no bound). The minimum and maximum \
             here are those of the moment this document was served.",
            bounds.max_age_ms / 1000,
            bounds.max_skew_ms / 1000
        )
    });
    let oldest = bounds.oldest().unwrap_or(0).max(0);
    let newest = bounds
        .newest()
        .map_or(MAX_EVENT_TIME_MS, |t| t.min(MAX_EVENT_TIME_MS));
    schema["minimum"] = json!(oldest);
    schema["maximum"] = json!(newest);
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    const DAY_MS: i64 = 86_400_000;

    fn doc() -> Value {
        let bounds = TimeBounds {
            now_ms: 100 * DAY_MS,
            max_age_ms: 7 * DAY_MS,
            max_skew_ms: 300_000,
        };
        document(bounds, false)
    }

    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() >= 8, "{found:?}");
        for r in found {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn the_bounds_are_the_contracts() {
        let doc = doc();
        let telemetry = &doc["components"]["schemas"]["Telemetry"]["properties"];
        assert_eq!(telemetry["readings"]["maxProperties"], MAX_READINGS);
        assert_eq!(
            telemetry["readings"]["additionalProperties"]["maximum"],
            MAX_READING_ABS
        );
        assert_eq!(telemetry["source_id"]["maxLength"], MAX_ID_LEN);
        assert_eq!(
            telemetry["readings"]["propertyNames"]["not"]["enum"][0],
            GAP_FEATURE
        );
        assert_eq!(telemetry["event_time"]["minimum"], 93 * DAY_MS);
        assert_eq!(telemetry["event_time"]["maximum"], 100 * DAY_MS + 300_000);
        let required = &doc["components"]["schemas"]["Telemetry"]["required"];
        assert!(required
            .as_array()
            .expect("a list")
            .contains(&json!("tenant_id")));
        let codes: Vec<&String> = doc["paths"]["/v1/events"]["post"]["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .collect();
        assert_eq!(
            codes,
            ["202", "400", "401", "403", "413", "415", "422", "429", "503"]
        );
    }
}

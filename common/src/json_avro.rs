//! Turns a JSON document into an Avro value of a given schema, naming the
//! exact field and reason when it does not fit. Ingest uses this so that a
//! rejected event tells its sender what to fix.

use std::collections::HashMap;

use apache_avro::schema::{RecordSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::Value as Json;

/// Why a JSON document does not fit a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// Dotted path of the offending field, e.g. `readings.temperature_c`.
    pub field: String,
    pub reason: String,
}

impl FieldError {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// Converts `json` into a value of `schema`. Unknown fields are rejected, so a
/// misspelled optional field is reported instead of silently dropped.
pub fn json_to_avro(schema: &Schema, json: &Json) -> Result<Value, FieldError> {
    convert(schema, json, "")
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() {
        "(event)"
    } else {
        path
    }
}

fn type_name(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn expected(path: &str, what: &str, got: &Json) -> FieldError {
    FieldError::new(
        display(path),
        format!("expected {what}, got {}", type_name(got)),
    )
}

fn convert(schema: &Schema, json: &Json, path: &str) -> Result<Value, FieldError> {
    match schema {
        Schema::Record(record) => convert_record(record, json, path),
        Schema::Map(map) => {
            let obj = json
                .as_object()
                .ok_or_else(|| expected(path, "an object", json))?;
            let mut out = HashMap::with_capacity(obj.len());
            for (k, v) in obj {
                out.insert(k.clone(), convert(&map.types, v, &child(path, k))?);
            }
            Ok(Value::Map(out))
        }
        Schema::Array(array) => {
            let items = json
                .as_array()
                .ok_or_else(|| expected(path, "an array", json))?;
            items
                .iter()
                .enumerate()
                .map(|(i, v)| convert(&array.items, v, &format!("{}[{i}]", display(path))))
                .collect::<Result<_, _>>()
                .map(Value::Array)
        }
        Schema::Union(union) => convert_union(union, json, path),
        Schema::Null => match json {
            Json::Null => Ok(Value::Null),
            other => Err(expected(path, "null", other)),
        },
        Schema::Boolean => json
            .as_bool()
            .map(Value::Boolean)
            .ok_or_else(|| expected(path, "a boolean", json)),
        Schema::Int => integer(json, path)
            .and_then(|n| {
                i32::try_from(n).map_err(|_| FieldError::new(display(path), "out of range for int"))
            })
            .map(Value::Int),
        Schema::Long => integer(json, path).map(Value::Long),
        Schema::TimestampMillis => integer(json, path).map(Value::TimestampMillis),
        Schema::Float => number(json, path).map(|n| Value::Float(n as f32)),
        Schema::Double => number(json, path).map(Value::Double),
        Schema::String => json
            .as_str()
            .map(|s| Value::String(s.to_string()))
            .ok_or_else(|| expected(path, "a string", json)),
        Schema::Uuid(_) => {
            let s = json
                .as_str()
                .ok_or_else(|| expected(path, "a UUID string", json))?;
            uuid::Uuid::parse_str(s)
                .map(Value::Uuid)
                .map_err(|e| FieldError::new(display(path), format!("not a UUID: {e}")))
        }
        Schema::Enum(e) => {
            let s = json
                .as_str()
                .ok_or_else(|| expected(path, "a string", json))?;
            e.symbols
                .iter()
                .position(|sym| sym == s)
                .map(|i| Value::Enum(i as u32, s.to_string()))
                .ok_or_else(|| {
                    FieldError::new(
                        display(path),
                        format!("must be one of {}", e.symbols.join(", ")),
                    )
                })
        }
        other => Err(FieldError::new(
            display(path),
            format!("schema type {other:?} is not accepted as JSON"),
        )),
    }
}

fn convert_record(record: &RecordSchema, json: &Json, path: &str) -> Result<Value, FieldError> {
    let obj = json
        .as_object()
        .ok_or_else(|| expected(path, "an object", json))?;
    if let Some(unknown) = obj.keys().find(|k| !record.lookup.contains_key(*k)) {
        return Err(FieldError::new(&child(path, unknown), "unknown field"));
    }
    let mut fields = Vec::with_capacity(record.fields.len());
    for field in &record.fields {
        let field_path = child(path, &field.name);
        let value = match (obj.get(&field.name), &field.default) {
            (Some(v), _) => convert(&field.schema, v, &field_path)?,
            (None, Some(default)) => default_value(&field.schema, default, &field_path)?,
            (None, None) => return Err(FieldError::new(&field_path, "required field is missing")),
        };
        fields.push((field.name.clone(), value));
    }
    Ok(Value::Record(fields))
}

/// Avro defines a union's default as a value of its first branch.
fn default_value(schema: &Schema, default: &Json, path: &str) -> Result<Value, FieldError> {
    match schema {
        Schema::Union(union) => {
            let first = union
                .variants()
                .first()
                .ok_or_else(|| FieldError::new(path, "empty union in schema"))?;
            Ok(Value::Union(0, Box::new(convert(first, default, path)?)))
        }
        other => convert(other, default, path),
    }
}

fn convert_union(union: &UnionSchema, json: &Json, path: &str) -> Result<Value, FieldError> {
    let variants = union.variants();
    if json.is_null() {
        return variants
            .iter()
            .position(|s| matches!(s, Schema::Null))
            .map(|i| Value::Union(i as u32, Box::new(Value::Null)))
            .ok_or_else(|| FieldError::new(display(path), "must not be null"));
    }
    let mut last_error = None;
    for (i, variant) in variants.iter().enumerate() {
        if matches!(variant, Schema::Null) {
            continue;
        }
        match convert(variant, json, path) {
            Ok(v) => return Ok(Value::Union(i as u32, Box::new(v))),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .unwrap_or_else(|| FieldError::new(display(path), "matches no branch of the union")))
}

/// An integer, written as JSON Schema counts one: `371` or `371.0`, but
/// not `1.5`, and only within the range of a long.
fn integer(json: &Json, path: &str) -> Result<i64, FieldError> {
    // 2^63 as a double: the first whole number past i64::MAX.
    const PAST_MAX: f64 = 9_223_372_036_854_775_808.0;
    json.as_i64()
        .or_else(|| {
            let x = json.as_f64().filter(|x| x.fract() == 0.0)?;
            (-PAST_MAX..PAST_MAX).contains(&x).then_some(x as i64)
        })
        .ok_or_else(|| expected(path, "an integer", json))
}

fn number(json: &Json, path: &str) -> Result<f64, FieldError> {
    json.as_f64()
        .ok_or_else(|| expected(path, "a number", json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_written_with_a_fraction_are_integers() {
        use serde_json::json;
        assert_eq!(integer(&json!(371.0), "t"), Ok(371));
        assert_eq!(integer(&json!(-2.0), "t"), Ok(-2));
        assert_eq!(integer(&json!(i64::MAX), "t"), Ok(i64::MAX));
        for bad in [json!(1.5), json!(9.3e18), json!(u64::MAX), json!("1")] {
            assert!(integer(&bad, "t").is_err(), "{bad}");
        }
    }
    use crate::schemas::EventKind;
    use serde_json::json;

    fn telemetry_v2() -> Schema {
        EventKind::Telemetry.schema(2).expect("v2 is shipped")
    }

    fn valid() -> Json {
        json!({
            "event_id": "6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11",
            "tenant_id": "acme",
            "source_id": "dev-1",
            "event_time": 1_700_000_000_000i64,
            "readings": {"temperature_c": 21.5, "humidity_pct": 40}
        })
    }

    #[test]
    fn valid_event_converts_and_fills_the_optional_field() {
        let v = json_to_avro(&telemetry_v2(), &valid()).expect("valid");
        let Value::Record(fields) = v else {
            panic!("not a record")
        };
        let names: Vec<_> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "event_id",
                "tenant_id",
                "source_id",
                "event_time",
                "readings",
                "firmware_version"
            ]
        );
        assert_eq!(fields[3].1, Value::TimestampMillis(1_700_000_000_000));
        assert_eq!(fields[5].1, Value::Union(0, Box::new(Value::Null)));
        let Value::Map(readings) = &fields[4].1 else {
            panic!("readings not a map")
        };
        assert_eq!(readings.get("humidity_pct"), Some(&Value::Double(40.0)));
        let schema = telemetry_v2();
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .expect("writer");
        assert!(writer.write_value_to_vec(Value::Record(fields)).is_ok());
    }

    #[test]
    fn optional_field_given_as_string_takes_the_string_branch() {
        let mut j = valid();
        j["firmware_version"] = json!("1.4.2");
        let Value::Record(fields) = json_to_avro(&telemetry_v2(), &j).expect("valid") else {
            panic!("not a record")
        };
        assert_eq!(
            fields[5].1,
            Value::Union(1, Box::new(Value::String("1.4.2".into())))
        );
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        let cases: Vec<(Json, &str, &str)> = vec![
            (
                json!({"readings": {}}),
                "event_id",
                "required field is missing",
            ),
            (
                {
                    let mut j = valid();
                    j["readings"]["temperature_c"] = json!("hot");
                    j
                },
                "readings.temperature_c",
                "expected a number, got a string",
            ),
            (
                {
                    let mut j = valid();
                    j["colour"] = json!("red");
                    j
                },
                "colour",
                "unknown field",
            ),
            (
                {
                    let mut j = valid();
                    j["event_id"] = json!("not-a-uuid");
                    j
                },
                "event_id",
                "not a UUID",
            ),
            (
                {
                    let mut j = valid();
                    j["event_time"] = json!(1.5);
                    j
                },
                "event_time",
                "expected an integer, got a number",
            ),
            (json!([1, 2]), "(event)", "expected an object, got an array"),
        ];
        for (input, field, reason) in cases {
            let err = json_to_avro(&telemetry_v2(), &input).expect_err("must be rejected");
            assert_eq!(err.field, field, "input {input}");
            assert!(
                err.reason.starts_with(reason),
                "input {input}: reason {:?} should start with {reason:?}",
                err.reason
            );
        }
    }
}

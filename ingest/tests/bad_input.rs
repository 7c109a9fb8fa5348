//! Table-driven bad input against the real gateway and broker: each case
//! asserts the status, the error body (which event, which field, why), and
//! that nothing of it reached Kafka. After every case a marker event is
//! accepted; at the end the topics hold exactly the markers, in order.
//! Run through `./dev test`.

use std::collections::HashMap;
use std::time::Duration;

use apache_avro::types::Value;
use pulse_common::clock::now_ms;
use pulse_common::config::Topics;
use pulse_common::event::Event;
use pulse_common::schemas::EventKind;
use pulse_testkit::{
    clickhouse, event_counts, free_port, poll_until, records, schema_id, start_ingest,
    start_processor, start_registry, unique, wire_record, Stack,
};
use rdkafka::Message;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

const KEY: &str = "key-acme-0123456789";
const DEVICE_TOKEN: &str = "token-dev-1-0123456789";
const SLOW_KEY: &str = "key-slow-0123456789";
const MAX_BODY: usize = 64 * 1024;

fn id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn telemetry(n: u64) -> Json {
    json!({
        "kind": "telemetry", "event_id": id(n), "tenant_id": "acme", "source_id": "dev-1",
        "event_time": now_ms(), "readings": {"temperature_c": 21.5}
    })
}

fn app(n: u64) -> Json {
    json!({
        "kind": "app", "event_id": id(n), "tenant_id": "acme", "source_id": "shop",
        "event_time": now_ms(), "event_type": "opened", "properties": {"screen": "home"}
    })
}

fn with(mut event: Json, path: &[&str], value: Json) -> Json {
    let (last, parents) = path.split_last().expect("a path");
    let mut target = &mut event;
    for p in parents {
        target = &mut target[*p];
    }
    target[*last] = value;
    event
}

fn without(mut event: Json, field: &str) -> Json {
    event.as_object_mut().expect("object").remove(field);
    event
}

/// One bad request and what the gateway must answer.
struct Case {
    name: &'static str,
    auth: Option<&'static str>,
    content_type: &'static str,
    body: Vec<u8>,
    status: u16,
    error: &'static str,
    /// (index, field, start of the reason) of the first error.
    first: Option<(usize, &'static str, &'static str)>,
}

fn json_case(
    name: &'static str,
    body: Json,
    status: u16,
    error: &'static str,
    first: (usize, &'static str, &'static str),
) -> Case {
    Case {
        name,
        auth: Some(KEY),
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        status,
        error,
        first: Some(first),
    }
}

fn invalid(name: &'static str, body: Json, first: (usize, &'static str, &'static str)) -> Case {
    json_case(name, body, 422, "invalid_events", first)
}

fn telemetry_fields(n: u64, tenant: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "event_id",
            Value::Uuid(uuid::Uuid::parse_str(&id(n)).expect("uuid")),
        ),
        ("tenant_id", Value::String(tenant.into())),
        ("source_id", Value::String("dev-1".into())),
        ("event_time", Value::TimestampMillis(now_ms())),
        (
            "readings",
            Value::Map(HashMap::from([("t".to_string(), Value::Double(1.0))])),
        ),
        ("firmware_version", Value::Union(0, Box::new(Value::Null))),
    ]
}

fn cases(v2_id: u32) -> Vec<Case> {
    let day = 86_400_000i64;
    let mut c = vec![
        json_case(
            "JSON null instead of an event",
            json!(null),
            400,
            "malformed_body",
            (0, "(event)", "expected a JSON object"),
        ),
        Case {
            body: b"{\"kind\": ".to_vec(),
            ..json_case(
                "truncated JSON",
                json!(0),
                400,
                "malformed_body",
                (0, "(body)", "malformed JSON"),
            )
        },
        json_case(
            "empty batch",
            json!([]),
            400,
            "malformed_body",
            (0, "(body)", "no events in the request"),
        ),
        json_case(
            "array of numbers",
            json!([1]),
            400,
            "malformed_body",
            (0, "(event)", "expected a JSON object"),
        ),
        invalid(
            "missing kind",
            without(telemetry(1), "kind"),
            (0, "kind", "required field is missing"),
        ),
        invalid(
            "unknown kind",
            with(telemetry(1), &["kind"], json!("video")),
            (0, "kind", "unknown kind 'video'"),
        ),
        invalid(
            "kind not a string",
            with(telemetry(1), &["kind"], json!(3)),
            (0, "kind", "expected a string"),
        ),
        invalid(
            "unknown schema version",
            with(telemetry(1), &["schema_version"], json!(7)),
            (0, "schema_version", "unknown telemetry schema version 7"),
        ),
        invalid(
            "schema version not a number",
            with(telemetry(1), &["schema_version"], json!("2")),
            (0, "schema_version", "expected a positive integer"),
        ),
        invalid(
            "missing event_id",
            without(telemetry(1), "event_id"),
            (0, "event_id", "required field is missing"),
        ),
        invalid(
            "event_id not a UUID",
            with(telemetry(1), &["event_id"], json!("abc")),
            (0, "event_id", "not a UUID"),
        ),
        invalid(
            "event_id a number",
            with(telemetry(1), &["event_id"], json!(5)),
            (0, "event_id", "expected a UUID string, got a number"),
        ),
        invalid(
            "missing source_id",
            without(telemetry(1), "source_id"),
            (0, "source_id", "required field is missing"),
        ),
        invalid(
            "source_id a number",
            with(telemetry(1), &["source_id"], json!(9)),
            (0, "source_id", "expected a string, got a number"),
        ),
        invalid(
            "missing event_time",
            without(telemetry(1), "event_time"),
            (0, "event_time", "required field is missing"),
        ),
        invalid(
            "event_time a string",
            with(telemetry(1), &["event_time"], json!("today")),
            (0, "event_time", "expected an integer, got a string"),
        ),
        invalid(
            "event_time fractional",
            with(telemetry(1), &["event_time"], json!(1.5)),
            (0, "event_time", "expected an integer, got a number"),
        ),
        invalid(
            "event_time 8 days old",
            with(telemetry(1), &["event_time"], json!(now_ms() - 8 * day)),
            (0, "event_time", "more than 604800 s in the past"),
        ),
        invalid(
            "event_time an hour ahead",
            with(telemetry(1), &["event_time"], json!(now_ms() + 3_600_000)),
            (0, "event_time", "more than 300 s in the future"),
        ),
        invalid(
            "missing readings",
            without(telemetry(1), "readings"),
            (0, "readings", "required field is missing"),
        ),
        invalid(
            "readings an array",
            with(telemetry(1), &["readings"], json!([1.0])),
            (0, "readings", "expected an object, got an array"),
        ),
        invalid(
            "reading a string",
            with(telemetry(1), &["readings", "temperature_c"], json!("hot")),
            (
                0,
                "readings.temperature_c",
                "expected a number, got a string",
            ),
        ),
        invalid(
            "reading null",
            with(telemetry(1), &["readings", "temperature_c"], json!(null)),
            (0, "readings.temperature_c", "expected a number, got null"),
        ),
        invalid(
            "reading a boolean",
            with(telemetry(1), &["readings", "temperature_c"], json!(true)),
            (
                0,
                "readings.temperature_c",
                "expected a number, got a boolean",
            ),
        ),
        invalid(
            "unknown field",
            with(telemetry(1), &["colour"], json!("red")),
            (0, "colour", "unknown field"),
        ),
        invalid(
            "misspelled optional field",
            with(telemetry(1), &["firmware_versoin"], json!("1.0")),
            (0, "firmware_versoin", "unknown field"),
        ),
        invalid(
            "firmware_version a number",
            with(telemetry(1), &["firmware_version"], json!(2)),
            (0, "firmware_version", "expected a string, got a number"),
        ),
        invalid(
            "v1 has no firmware_version",
            with(
                with(telemetry(1), &["schema_version"], json!(1)),
                &["firmware_version"],
                json!("1.0"),
            ),
            (0, "firmware_version", "unknown field"),
        ),
        invalid(
            "app event without event_type",
            without(app(1), "event_type"),
            (0, "event_type", "required field is missing"),
        ),
        invalid(
            "app property a number",
            with(app(1), &["properties", "items"], json!(3)),
            (0, "properties.items", "expected a string, got a number"),
        ),
        invalid(
            "third event of a batch is bad",
            json!([
                telemetry(1),
                app(2),
                with(telemetry(3), &["readings"], json!("x"))
            ]),
            (2, "readings", "expected an object, got a string"),
        ),
        json_case(
            "event of another tenant",
            with(telemetry(1), &["tenant_id"], json!("globex")),
            403,
            "forbidden",
            (0, "tenant_id", "'globex' is not 'acme'"),
        ),
        Case {
            auth: Some(DEVICE_TOKEN),
            ..json_case(
                "device token writing as another device",
                with(telemetry(1), &["source_id"], json!("dev-2")),
                403,
                "forbidden",
                (0, "source_id", "'dev-2' is not 'dev-1'"),
            )
        },
        Case {
            auth: None,
            ..json_case(
                "no credentials",
                telemetry(1),
                401,
                "unauthenticated",
                (0, "(body)", "missing credentials"),
            )
        },
        Case {
            auth: Some("not-a-key"),
            ..json_case(
                "unknown key",
                telemetry(1),
                401,
                "unauthenticated",
                (0, "(body)", "unknown API key"),
            )
        },
        Case {
            auth: Some(SLOW_KEY),
            ..json_case(
                "batch larger than the key's burst",
                json!([telemetry(1), telemetry(2), telemetry(3)]),
                429,
                "rate_limited",
                (0, "(body)", "3 events exceed the burst of 2"),
            )
        },
        Case {
            body: {
                let filler = "x".repeat(MAX_BODY);
                with(telemetry(1), &["readings"], json!({ filler: 1.0 }))
                    .to_string()
                    .into_bytes()
            },
            ..json_case(
                "body over the limit",
                json!(0),
                413,
                "body_too_large",
                (0, "(body)", "length limit exceeded"),
            )
        },
        Case {
            content_type: "text/csv",
            ..json_case(
                "unsupported content type",
                telemetry(1),
                415,
                "unsupported_media_type",
                (0, "(body)", "content type text/csv is not accepted"),
            )
        },
        Case {
            content_type: "application/x-ndjson",
            body: format!("{}\n{{broken\n", telemetry(1)).into_bytes(),
            ..json_case(
                "NDJSON with a broken line",
                json!(0),
                400,
                "malformed_body",
                (1, "(line)", "malformed JSON"),
            )
        },
        Case {
            content_type: "application/x-ndjson",
            body: format!("{}\n{}\n", telemetry(1), without(telemetry(2), "readings")).into_bytes(),
            ..json_case(
                "NDJSON with an invalid event",
                json!(0),
                422,
                "invalid_events",
                (1, "readings", "required field is missing"),
            )
        },
    ];
    c.extend(contract_cases());
    let avro = |name, body: Vec<u8>, status, error, first| Case {
        content_type: "application/vnd.confluent.avro",
        body,
        ..json_case(name, json!(0), status, error, first)
    };
    c.push(avro(
        "Avro without the magic byte",
        vec![1, 0, 0, 0, 1, 2],
        400,
        "malformed_body",
        (0, "(body)", "not the Confluent wire format"),
    ));
    c.push(avro(
        "Avro with an unknown schema id",
        wire_record(
            999_999,
            EventKind::Telemetry,
            2,
            telemetry_fields(1, "acme"),
        ),
        400,
        "malformed_body",
        (0, "(schema id)", "unknown schema id 999999"),
    ));
    let mut truncated = wire_record(v2_id, EventKind::Telemetry, 2, telemetry_fields(1, "acme"));
    truncated.truncate(truncated.len() - 3);
    c.push(avro(
        "truncated Avro record",
        truncated,
        400,
        "malformed_body",
        (0, "(body)", "not a valid record of schema"),
    ));
    let mut trailing = wire_record(v2_id, EventKind::Telemetry, 2, telemetry_fields(1, "acme"));
    trailing.extend([1, 2, 3]);
    c.push(avro(
        "Avro record with trailing bytes",
        trailing,
        400,
        "malformed_body",
        (0, "(body)", "3 bytes after the record"),
    ));
    let reading = |name: &'static str, value: f64| {
        let mut fields = telemetry_fields(1, "acme");
        fields[4].1 = Value::Map(HashMap::from([(name.to_string(), Value::Double(value))]));
        wire_record(v2_id, EventKind::Telemetry, 2, fields)
    };
    for (name, body, field, reason) in [
        (
            "Avro reading of +1.7e308",
            reading("t", 1.7e308),
            "readings.t",
            "1.7e308 is outside",
        ),
        (
            "Avro reading of -1.7e308",
            reading("t", -1.7e308),
            "readings.t",
            "-1.7e308 is outside",
        ),
        (
            "Avro NaN reading",
            reading("t", f64::NAN),
            "readings.t",
            "NaN is not a finite number",
        ),
        (
            "Avro infinite reading",
            reading("t", f64::INFINITY),
            "readings.t",
            "inf is not a finite number",
        ),
        (
            "Avro reading spoofing a feature",
            reading("t.ewma", 1.0),
            "readings.t.ewma",
            "name may hold only",
        ),
        (
            "Avro empty source_id",
            {
                let mut fields = telemetry_fields(1, "acme");
                fields[2].1 = Value::String(String::new());
                wire_record(v2_id, EventKind::Telemetry, 2, fields)
            },
            "source_id",
            "is empty",
        ),
    ] {
        c.push(avro(name, body, 422, "invalid_events", (0, field, reason)));
    }
    c.push(avro(
        "JSON sent as Avro",
        telemetry(1).to_string().into_bytes(),
        400,
        "malformed_body",
        (0, "(body)", "not the Confluent wire format"),
    ));
    c.push(Case {
        content_type: "application/json",
        ..avro(
            "Avro sent as JSON",
            reading("t", 1.0),
            400,
            "malformed_body",
            (0, "(body)", "malformed JSON"),
        )
    });
    c.push(avro(
        "Avro record of another tenant",
        wire_record(
            v2_id,
            EventKind::Telemetry,
            2,
            telemetry_fields(1, "globex"),
        ),
        403,
        "forbidden",
        (0, "tenant_id", "'globex' is not this credential's tenant"),
    ));
    c
}

/// Events that fit their schema but break the input contract
/// (`pulse_common::contract`): extreme or reserved readings, identifiers
/// out of bounds, too many entries.
fn contract_cases() -> Vec<Case> {
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let mut c = vec![
        invalid(
            "empty source_id",
            with(telemetry(1), &["source_id"], json!("")),
            (0, "source_id", "is empty"),
        ),
        invalid(
            "source_id of 200 characters",
            with(telemetry(1), &["source_id"], json!("d".repeat(200))),
            (0, "source_id", "longer than 128 bytes"),
        ),
        invalid(
            "NUL byte in source_id",
            with(telemetry(1), &["source_id"], json!("dev\u{0}-1")),
            (0, "source_id", "character '\\0' is not allowed"),
        ),
        invalid(
            "newline in source_id",
            with(
                telemetry(1),
                &["source_id"],
                json!("dev-1\nforged log line"),
            ),
            (0, "source_id", "character '\\n' is not allowed"),
        ),
        invalid(
            "empty reading name",
            with(telemetry(1), &["readings", ""], json!(1.0)),
            (0, "readings", "a reading name is empty"),
        ),
        invalid(
            "1,000 readings",
            with(
                telemetry(1),
                &["readings"],
                Json::Object((0..1000).map(|i| (format!("r{i}"), json!(1.0))).collect()),
            ),
            (0, "readings", "more than 100 readings"),
        ),
        invalid(
            "reading of +1.7e308",
            with(telemetry(1), &["readings", "temperature_c"], json!(1.7e308)),
            (0, "readings.temperature_c", "1.7e308 is outside"),
        ),
        invalid(
            "reading of -1.7e308",
            with(
                telemetry(1),
                &["readings", "temperature_c"],
                json!(-1.7e308),
            ),
            (0, "readings.temperature_c", "-1.7e308 is outside"),
        ),
        invalid(
            "reading just over the bound",
            with(telemetry(1), &["readings", "temperature_c"], json!(2e15)),
            (0, "readings.temperature_c", "2e15 is outside"),
        ),
        invalid(
            "reading spoofing a history feature",
            with(telemetry(1), &["readings", "temperature_c.z"], json!(0.0)),
            (0, "readings.temperature_c.z", "name may hold only"),
        ),
        invalid(
            "reading named like the gap feature",
            with(telemetry(1), &["readings", "gap_s"], json!(1.0)),
            (0, "readings.gap_s", "'gap_s' is reserved"),
        ),
        invalid(
            "empty event_type",
            with(app(1), &["event_type"], json!("")),
            (0, "event_type", "is empty"),
        ),
        invalid(
            "event_type with a newline",
            with(app(1), &["event_type"], json!("opened\nclosed")),
            (0, "event_type", "character '\\n' is not allowed"),
        ),
        invalid(
            "empty property key",
            with(app(1), &["properties", ""], json!("v")),
            (0, "properties.", "key is empty"),
        ),
        invalid(
            "NUL byte in a property value",
            with(app(1), &["properties", "screen"], json!("home\u{0}")),
            (0, "properties.screen", "contains a NUL byte"),
        ),
        invalid(
            "101 properties",
            with(
                app(1),
                &["properties"],
                Json::Object((0..101).map(|i| (format!("k{i}"), json!("v"))).collect()),
            ),
            (0, "properties", "more than 100 properties"),
        ),
    ];
    c.push(Case {
        body: br#"{"kind": "telemetry", "readings": {"t": 1e400}}"#.to_vec(),
        ..json_case(
            "number beyond a double",
            json!(0),
            400,
            "malformed_body",
            (0, "(body)", "malformed JSON"),
        )
    });
    c.push(Case {
        body: deep.into_bytes(),
        ..json_case(
            "10,000 levels of nesting",
            json!(0),
            400,
            "malformed_body",
            (0, "(body)", "recursion limit exceeded"),
        )
    });
    c.push(Case {
        content_type: "application/x-ndjson",
        body: format!(
            "{}\n{}\n",
            telemetry(1),
            with(telemetry(2), &["readings", "x.delta"], json!(1.0))
        )
        .into_bytes(),
        ..json_case(
            "NDJSON line spoofing a feature",
            json!(0),
            422,
            "invalid_events",
            (1, "readings.x.delta", "name may hold only"),
        )
    });
    c
}

fn credentials_file() -> tempfile::NamedTempFile {
    let sha = |s: &str| hex::encode(Sha256::digest(s.as_bytes()));
    let text = format!(
        "[[api_keys]]\nname = \"acme\"\ntenant = \"acme\"\nsha256 = \"{}\"\n\n\
         [[api_keys]]\nname = \"slow\"\ntenant = \"acme\"\nsha256 = \"{}\"\nevents_per_second = 1\nburst = 2\n\n\
         [[device_tokens]]\nname = \"dev-1\"\ntenant = \"acme\"\ndevice = \"dev-1\"\nsha256 = \"{}\"\n",
        sha(KEY),
        sha(SLOW_KEY),
        sha(DEVICE_TOKEN)
    );
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, text.as_bytes()).expect("written");
    file
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Option<String>, Json) {
    let mut req = http
        .post(url)
        .header("Content-Type", content_type)
        .body(body);
    if let Some(a) = auth {
        req = req.bearer_auth(a);
    }
    let r = req.send().await.expect("gateway answers");
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, retry_after, r.json().await.unwrap_or(Json::Null))
}

async fn event_ids_on(stack: &Stack, topic: &str, registry: &str, expected: usize) -> Vec<String> {
    let decoder = AvroDecoder::new(SrSettings::new(registry.to_string()));
    let kind = if topic.ends_with("telemetry") {
        EventKind::Telemetry
    } else {
        EventKind::App
    };
    let mut ids = Vec::new();
    for m in records(&stack.kafka_bootstrap, topic, expected).await {
        let value = decoder.decode(m.payload()).await.expect("decodes").value;
        ids.push(Event::from_avro(kind, value).expect("an event").event_id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn bad_input_is_refused_with_a_named_reason_and_never_reaches_kafka() {
    let stack = Stack::from_env();
    let prefix = unique("bad") + ".";
    let credentials = credentials_file();
    let registry = start_registry(&stack, &prefix).await;
    let ingest = start_ingest(
        &stack,
        &prefix,
        &registry.url,
        &[
            (
                "PULSE_INGEST_CREDENTIALS",
                credentials.path().display().to_string(),
            ),
            ("PULSE_INGEST_MAX_BODY_BYTES", MAX_BODY.to_string()),
            ("PULSE_EVENT_PARTITIONS", "1".into()),
        ],
    )
    .await;
    let topics = Topics::new(prefix.clone());
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events", ingest.url);
    let v2_id = schema_id(&registry.url, &topics.events(EventKind::Telemetry), 2).await;

    let cases = cases(v2_id);
    assert!(cases.len() >= 65, "only {} cases", cases.len());
    let mut markers = Vec::new();
    for (n, case) in cases.into_iter().enumerate() {
        let (status, _, body) = post(&http, &url, case.auth, case.content_type, case.body).await;
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(body["error"], case.error, "{}: {body}", case.name);
        if let Some((index, field, reason)) = case.first {
            let first = &body["errors"][0];
            assert_eq!(first["index"], index, "{}: {body}", case.name);
            assert_eq!(first["field"], field, "{}: {body}", case.name);
            let got = first["reason"].as_str().unwrap_or_default();
            assert!(
                got.starts_with(reason) || got.contains(reason),
                "{}: reason {got:?} lacks {reason:?}",
                case.name
            );
        }
        // A marker after every case: the topic's order shows where each case's writes would be.
        let marker = 1_000_000 + n as u64;
        let (status, _, body) = post(
            &http,
            &url,
            Some(KEY),
            "application/json",
            telemetry(marker).to_string().into_bytes(),
        )
        .await;
        assert_eq!(status, 202, "marker after {}: {body}", case.name);
        markers.push(id(marker));
    }

    // The slow key: a burst of 2 is accepted, the next event is told when to retry.
    let (status, _, _) = post(
        &http,
        &url,
        Some(SLOW_KEY),
        "application/json",
        json!([telemetry(2_000_001), telemetry(2_000_002)])
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 202);
    let (status, retry_after, body) = post(
        &http,
        &url,
        Some(SLOW_KEY),
        "application/json",
        telemetry(2_000_003).to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    markers.extend([id(2_000_001), id(2_000_002)]);

    let telemetry_ids = event_ids_on(
        &stack,
        &topics.events(EventKind::Telemetry),
        &registry.url,
        markers.len(),
    )
    .await;
    assert_eq!(
        telemetry_ids, markers,
        "the telemetry topic holds the markers and nothing else"
    );
    let app_ids = event_ids_on(&stack, &topics.events(EventKind::App), &registry.url, 0).await;
    assert!(
        app_ids.is_empty(),
        "app events of rejected batches were written: {app_ids:?}"
    );

    // And the pipeline goes on: a processor stores exactly the markers.
    let database = unique("bad_");
    let _processor =
        start_processor(&stack, &prefix, &registry.url, &database, free_port(), &[]).await;
    let client = clickhouse(&stack.clickhouse_url, &database);
    let expected = markers.len() as u64;
    let counts = poll_until("every marker stored", Duration::from_secs(60), || async {
        event_counts(&client).await.filter(|(c, _)| *c >= expected)
    })
    .await;
    assert_eq!(
        counts,
        (expected, expected),
        "count() and uniqExact(event_id)"
    );
}

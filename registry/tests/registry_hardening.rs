//! The schema registry's hardening on the real Kafka broker: a store that
//! does not answer is a 503, limits refuse with Confluent-style bodies and
//! write nothing (and hold on replay), basic authentication guards every
//! route but the probes, and /metrics lives on its own port. Run through
//! `./dev test`.

use std::io::Write;

use apache_avro::types::Value;
use pulse_testkit::{free_port, unique, ScriptedServer, Service, Stack};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A registry of the test's own on `topic`, its metrics on `metrics_port`.
async fn registry(
    stack: &Stack,
    topic: &str,
    metrics_port: u16,
    settings: &[(&str, String)],
) -> Service {
    let port = free_port();
    let mut env = vec![
        ("PULSE_REGISTRY_LISTEN", format!("127.0.0.1:{port}")),
        (
            "PULSE_REGISTRY_METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        ),
        ("PULSE_REGISTRY_TOPIC", topic.to_string()),
    ];
    env.extend(settings.iter().cloned());
    Service::start(stack, "pulse-registry", port, &[], &env).await
}

fn record(name: &str, doc_bytes: usize) -> String {
    json!({"type": "record", "name": name, "doc": "d".repeat(doc_bytes),
           "fields": [{"name": "n", "type": "long"}]})
    .to_string()
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Json) {
    let r = request.send().await.expect("registry answers");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

fn register(
    http: &reqwest::Client,
    base: &str,
    subject: &str,
    schema: &str,
) -> reqwest::RequestBuilder {
    http.post(format!("{base}/subjects/{subject}/versions"))
        .header("Content-Type", CONTENT_TYPE)
        .json(&json!({"schema": schema}))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_store_that_does_not_answer_is_503() {
    let stack = Stack::from_env();
    let broker = ScriptedServer::kafka();
    tokio::task::block_in_place(|| broker.start());
    let r = registry(
        &stack,
        &unique("_schemas_outage_"),
        free_port(),
        &[
            (
                "PULSE_KAFKA_BOOTSTRAP",
                format!("127.0.0.1:{}", broker.port()),
            ),
            ("PULSE_REGISTRY_TIMEOUT_MS", "2000".into()),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let (status, _) = send(register(&http, &r.url, "s-value", &record("A", 0))).await;
    assert_eq!(status, 200, "registers while the broker is up");

    tokio::task::block_in_place(|| broker.stop());
    let (status, body) = send(register(&http, &r.url, "s-value", &record("B", 0))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error_code"], 50301, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("The backend data store "), "{message}");
    // Reads are served from the replica's copy and go on working.
    let (status, body) = send(http.get(format!("{}/subjects/s-value/versions", r.url))).await;
    assert_eq!((status, body), (200, json!([1])));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn limits_refuse_with_confluent_bodies_write_nothing_and_hold_on_replay() {
    let stack = Stack::from_env();
    let topic = unique("_schemas_limits_");
    let http = reqwest::Client::new();
    let small = [
        ("PULSE_REGISTRY_MAX_SCHEMA_BYTES", "300".to_string()),
        ("PULSE_REGISTRY_MAX_SUBJECTS", "2".into()),
        ("PULSE_REGISTRY_MAX_VERSIONS_PER_SUBJECT", "2".into()),
        ("PULSE_REGISTRY_COMPATIBILITY", "NONE".into()),
    ];
    {
        let r = registry(&stack, &topic, free_port(), &small).await;
        for (subject, name) in [("a-value", "A1"), ("a-value", "A2"), ("b-value", "B1")] {
            let (status, body) = send(register(&http, &r.url, subject, &record(name, 0))).await;
            assert_eq!(status, 200, "{subject} {name}: {body}");
        }
        // A body far over the limit is refused before it is read: the
        // answer is 413, unless the server closed the connection while
        // the client was still writing, which is as much a refusal.
        let huge = "x".repeat(2 << 20);
        // A client of its own: a connection the server closed mid-body must
        // not go back to the pool the requests below take theirs from.
        let once = reqwest::Client::new();
        match register(&once, &r.url, "c-value", &huge).send().await {
            Ok(answer) => {
                assert_eq!(answer.status().as_u16(), 413);
                let body: Json = answer.json().await.unwrap_or(Json::Null);
                assert_eq!(
                    body,
                    json!({"error_code": 41301, "message": "Request body exceeds the schema size limit"})
                );
            }
            Err(e) => assert!(e.is_request(), "{e}"),
        }
        let table = [
            (
                "c-value",
                record("Big", 300),
                413,
                json!({"error_code": 41301, "message": format!(
                    "Schema of {} bytes exceeds the limit of 300 bytes",
                    record("Big", 300).len()
                )}),
            ),
            (
                "c-value",
                record("C1", 0),
                429,
                json!({"error_code": 42901, "message":
                    "The registry holds its limit of 2 subjects; delete one permanently first"}),
            ),
            (
                "a-value",
                record("A3", 0),
                429,
                json!({"error_code": 42902, "message":
                    "Subject 'a-value' holds its limit of 2 versions; delete one permanently first"}),
            ),
        ];
        for (subject, schema, status, expected) in &table {
            let answer = send(register(&http, &r.url, subject, schema)).await;
            assert_eq!(answer, (*status, expected.clone()), "{subject}");
        }
    }
    // A fresh replica with room to spare shows exactly what was accepted:
    // the refusals wrote nothing to the log.
    let r = registry(&stack, &topic, free_port(), &[]).await;
    let (_, subjects) = send(http.get(format!("{}/subjects", r.url))).await;
    assert_eq!(subjects, json!(["a-value", "b-value"]));
    let (_, versions) = send(http.get(format!("{}/subjects/a-value/versions", r.url))).await;
    assert_eq!(versions, json!([1, 2]));

    // Written under the defaults, then replayed under a tighter size limit:
    // the long schema is skipped, counted, and its id never handed out again.
    let long = record("Long", 500);
    let (status, first) = send(register(&http, &r.url, "long-value", &long)).await;
    assert_eq!(status, 200, "{first}");
    drop(r);
    let metrics_port = free_port();
    let tight = [("PULSE_REGISTRY_MAX_SCHEMA_BYTES", "300".to_string())];
    let r = registry(&stack, &topic, metrics_port, &tight).await;
    let (status, body) = send(http.get(format!("{}/subjects/long-value/versions", r.url))).await;
    assert_eq!((status, body["error_code"].clone()), (404, json!(40401)));
    let metrics = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .expect("metrics answer");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("metrics body");
    assert!(
        text.lines()
            .any(|l| l == r#"pulse_registry_log_records_skipped_total{reason="oversize"} 1"#),
        "{text}"
    );
    let (status, body) = send(register(&http, &r.url, "fresh-value", &record("F1", 0))).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["id"].as_u64() > first["id"].as_u64(),
        "skipped id {} reused: {body}",
        first["id"]
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn metrics_are_served_on_their_own_port_only() {
    let stack = Stack::from_env();
    let metrics_port = free_port();
    let r = registry(&stack, &unique("_schemas_metrics_"), metrics_port, &[]).await;
    let http = reqwest::Client::new();
    let on_api = http
        .get(format!("{}/metrics", r.url))
        .send()
        .await
        .expect("answers");
    assert_eq!(on_api.status(), 404);
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    for (path, status) in [
        ("/metrics", 200),
        ("/healthz", 200),
        ("/readyz", 200),
        ("/subjects", 404),
    ] {
        let answer = http
            .get(format!("{metrics_url}{path}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(answer.status().as_u16(), status, "{path}");
    }
}

fn credentials_file() -> tempfile::NamedTempFile {
    let sha = |s: &str| hex::encode(Sha256::digest(s.as_bytes()));
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        file,
        "[[users]]\nname = \"reader\"\nrole = \"read\"\nsha256 = \"{}\"\n\n\
         [[users]]\nname = \"writer\"\nrole = \"write\"\nsha256 = \"{}\"\n",
        sha("r-secret"),
        sha("w-secret")
    )
    .expect("written");
    file
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn basic_authentication_guards_every_route_but_the_probes() {
    let stack = Stack::from_env();
    let credentials = credentials_file();
    let metrics_port = free_port();
    let r = registry(
        &stack,
        &unique("_schemas_auth_"),
        metrics_port,
        &[(
            "PULSE_REGISTRY_CREDENTIALS",
            credentials.path().display().to_string(),
        )],
    )
    .await;
    let http = reqwest::Client::new();
    let schema = record("R", 0);
    let reader = Some(("reader", "r-secret"));
    let writer = Some(("writer", "w-secret"));
    let wrong = Some(("writer", "r-secret"));
    let schema_body = json!({"schema": schema});
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, u16);
    let table: &[Case] = &[
        ("GET", "/healthz", None, 200),
        ("GET", "/readyz", None, 200),
        ("GET", "/subjects", None, 401),
        ("GET", "/subjects", wrong, 401),
        ("GET", "/subjects", reader, 200),
        ("POST", "/subjects/s-value/versions", None, 401),
        ("POST", "/subjects/s-value/versions", reader, 403),
        ("POST", "/subjects/s-value/versions", writer, 200),
        ("GET", "/subjects/s-value/versions", reader, 200),
        ("GET", "/subjects/s-value/versions/1", writer, 200),
        ("GET", "/schemas/ids/1", reader, 200),
        ("POST", "/subjects/s-value", reader, 403),
        ("POST", "/subjects/s-value", writer, 200),
        ("PUT", "/config", reader, 403),
        ("PUT", "/config/s-value", writer, 200),
        ("GET", "/config", None, 401),
        ("DELETE", "/subjects/s-value", reader, 403),
        ("DELETE", "/subjects/s-value", writer, 200),
        ("GET", "/metrics", reader, 404),
    ];
    for (method, path, user, status) in table {
        let method: reqwest::Method = method.parse().expect("method");
        let mut request = http.request(method.clone(), format!("{}{path}", r.url));
        request = match *path {
            "/config" | "/config/s-value" => request.json(&json!({"compatibility": "NONE"})),
            _ if method == reqwest::Method::POST => request.json(&schema_body),
            _ => request,
        };
        if let Some((name, password)) = user {
            request = request.basic_auth(name, Some(password));
        }
        let response = request.send().await.expect("answers");
        let case = format!("{method} {path} as {user:?}");
        assert_eq!(response.status().as_u16(), *status, "{case}");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let expected = (*status == 401).then(|| r#"Basic realm="pulse-registry""#.to_string());
        assert_eq!(challenge, expected, "{case}");
        if *status == 401 || *status == 403 {
            let body: Json = response.json().await.expect("json body");
            let code = if *status == 401 { 40101 } else { 40301 };
            assert_eq!(body["error_code"], code, "{case}");
        }
    }
    // Metrics need no credentials on their own port.
    let metrics = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .expect("answers");
    assert_eq!(metrics.status(), 200);

    // ingest and the processor pass credentials as userinfo of
    // PULSE_REGISTRY_URL; their registry client sends them as basic auth.
    let with_user = |user: &str, password: &str| {
        r.url
            .replacen("http://", &format!("http://{user}:{password}@"), 1)
    };
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        "readings".into(),
        false,
        SuppliedSchema::new(None, SchemaType::Avro, schema.clone()),
    );
    let value = Value::Record(vec![("n".into(), Value::Long(7))]);
    let refused = AvroEncoder::new(SrSettings::new(with_user("reader", "r-secret")))
        .encode_value(value.clone(), &strategy)
        .await
        .expect_err("a reader cannot register");
    assert!(refused.to_string().contains("403"), "{refused}");
    let bytes = AvroEncoder::new(SrSettings::new(with_user("writer", "w-secret")))
        .encode_value(value.clone(), &strategy)
        .await
        .expect("a writer registers");
    let decoded = AvroDecoder::new(SrSettings::new(with_user("reader", "r-secret")))
        .decode(Some(&bytes))
        .await
        .expect("a reader decodes");
    assert_eq!(decoded.value, value);
    let unauthenticated = AvroDecoder::new(SrSettings::new(r.url.clone()))
        .decode(Some(&bytes))
        .await
        .expect_err("no credentials");
    assert!(
        unauthenticated.to_string().contains("401"),
        "{unauthenticated}"
    );
}

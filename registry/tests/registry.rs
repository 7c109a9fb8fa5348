//! The schema registry on the real Kafka broker: several instances agree,
//! a restart loses nothing, and schema_registry_converter works against it.
//! Run through `./dev test`.

use std::collections::BTreeSet;
use std::time::Duration;

use apache_avro::types::Value;
use futures::future::join_all;
use pulse_testkit::{poll_until, start_registry, unique, Stack};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde_json::{json, Value as Json};

fn record_schema(i: usize) -> String {
    json!({"type": "record", "name": format!("R{i}"), "fields": [{"name": "n", "type": "long"}]})
        .to_string()
}

async fn register(http: &reqwest::Client, base: &str, subject: &str, schema: &str) -> (u16, Json) {
    let r = http
        .post(format!("{base}/subjects/{subject}/versions"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schema": schema}))
        .send()
        .await
        .expect("registry answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

async fn get(http: &reqwest::Client, url: String) -> (u16, Json) {
    let r = http.get(url).send().await.expect("registry answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn instances_agree_under_concurrent_writes_and_survive_restart() {
    let stack = Stack::from_env();
    let prefix = unique("registry-test-");
    let a = start_registry(&stack, &prefix).await;
    let b = start_registry(&stack, &prefix).await;
    let http = reqwest::Client::new();

    // Different record names: incompatible under BACKWARD, so allow anything.
    let put = http
        .put(format!("{}/config/shared-value", a.url))
        .json(&json!({"compatibility": "NONE"}))
        .send()
        .await
        .expect("config answers");
    assert_eq!(put.status(), 200);

    // 10 registrations of distinct schemas, alternating instances, all at once.
    let writes = (0..10).map(|i| {
        let base = if i % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        let http = http.clone();
        async move { register(&http, &base, "shared-value", &record_schema(i)).await }
    });
    let results = join_all(writes).await;
    let mut ids = BTreeSet::new();
    let mut versions = BTreeSet::new();
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        ids.insert(body["id"].as_u64().expect("id"));
        versions.insert(body["version"].as_u64().expect("version"));
    }
    assert_eq!(ids.len(), 10, "no id handed out twice: {ids:?}");
    assert_eq!(versions, (1..=10).collect(), "versions 1..10 exactly once");

    // Both instances list the same versions and resolve every id to its
    // schema. A listing is served from the instance's copy of the log, which
    // follows another instance's writes within moments: polled, not read once.
    let all_versions = json!((1..=10).collect::<Vec<_>>());
    for base in [&a.url, &b.url] {
        let url = format!("{base}/subjects/shared-value/versions");
        // Fails the test unless the listing is exactly 1..=10 within the deadline.
        poll_until("every version listed", Duration::from_secs(10), || async {
            let (_, listed) = get(&http, url.clone()).await;
            (listed == all_versions).then_some(())
        })
        .await;
    }
    let (i, (_, first)) = results.iter().enumerate().next().expect("one result");
    let (status, by_id) = get(&http, format!("{}/schemas/ids/{}", b.url, first["id"])).await;
    assert_eq!(status, 200);
    assert_eq!(by_id["schema"].as_str(), Some(record_schema(i).as_str()));

    // Restart: a fresh instance rebuilds the same state from the topic.
    drop(a);
    drop(b);
    let c = start_registry(&stack, &prefix).await;
    let (_, listed) = get(&http, format!("{}/subjects/shared-value/versions", c.url)).await;
    assert_eq!(listed, json!((1..=10).collect::<Vec<_>>()));
    let (_, config) = get(&http, format!("{}/config/shared-value", c.url)).await;
    assert_eq!(config["compatibilityLevel"], "NONE");
    let (status, body) = register(&http, &c.url, "shared-value", &record_schema(99)).await;
    assert_eq!(status, 200);
    assert_eq!(body["version"], 11);
    assert!(
        !ids.contains(&body["id"].as_u64().expect("id")),
        "new id after restart"
    );

    // Errors come in Confluent's format.
    let (status, body) = get(
        &http,
        format!("{}/subjects/missing-value/versions/1", c.url),
    )
    .await;
    assert_eq!((status, body["error_code"].as_u64()), (404, Some(40401)));
    let (status, body) = get(&http, format!("{}/subjects/shared-value/versions/0", c.url)).await;
    assert_eq!((status, body["error_code"].as_u64()), (422, Some(42202)));
    let (status, body) = register(&http, &c.url, "other-value", "{not avro").await;
    assert_eq!((status, body["error_code"].as_u64()), (422, Some(42201)));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn schema_registry_converter_round_trips_through_the_registry() {
    let stack = Stack::from_env();
    let r = start_registry(&stack, &unique("registry-test-")).await;
    let schema = r#"{"type":"record","name":"Reading","fields":[{"name":"device","type":"string"},{"name":"value","type":"double"}]}"#;
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        "readings".into(),
        false,
        SuppliedSchema::new(None, SchemaType::Avro, schema.into()),
    );
    let encoder = AvroEncoder::new(SrSettings::new(r.url.clone()));
    let record = Value::Record(vec![
        ("device".into(), Value::String("d-1".into())),
        ("value".into(), Value::Double(2.5)),
    ]);
    let bytes = encoder
        .encode_value(record.clone(), &strategy)
        .await
        .expect("encodes");
    assert_eq!(bytes[..5], [0, 0, 0, 0, 1], "magic byte and schema id 1");

    let decoder = AvroDecoder::new(SrSettings::new(r.url.clone()));
    let decoded = decoder.decode(Some(&bytes)).await.expect("decodes");
    assert_eq!(decoded.value, record);

    // An incompatible change to the subject is refused with Confluent's code.
    let breaking = SubjectNameStrategy::TopicNameStrategyWithSchema(
        "readings".into(),
        false,
        SuppliedSchema::new(
            None,
            SchemaType::Avro,
            r#"{"type":"record","name":"Reading","fields":[{"name":"device","type":"long"}]}"#
                .into(),
        ),
    );
    let err = AvroEncoder::new(SrSettings::new(r.url.clone()))
        .encode_value(
            Value::Record(vec![("device".into(), Value::Long(1))]),
            &breaking,
        )
        .await
        .expect_err("incompatible");
    assert!(err.to_string().contains("409"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_schema_id_lists_the_subjects_and_versions_that_use_it() {
    let stack = Stack::from_env();
    let r = start_registry(&stack, &unique("registry-ids-")).await;
    let http = reqwest::Client::new();
    let schema = record_schema(1);
    let (_, first) = register(&http, &r.url, "b-value", &schema).await;
    let (_, second) = register(&http, &r.url, "a-value", &schema).await;
    assert_eq!(first["id"], second["id"], "one id for one schema");
    let id = first["id"].as_u64().expect("an id");

    let (status, versions) = get(&http, format!("{}/schemas/ids/{id}/versions", r.url)).await;
    assert_eq!(status, 200, "{versions}");
    assert_eq!(
        versions,
        json!([{"subject": "a-value", "version": 1}, {"subject": "b-value", "version": 1}])
    );
    let (status, subjects) = get(&http, format!("{}/schemas/ids/{id}/subjects", r.url)).await;
    assert_eq!((status, subjects), (200, json!(["a-value", "b-value"])));
    for route in ["versions", "subjects"] {
        let (status, body) = get(&http, format!("{}/schemas/ids/999/{route}", r.url)).await;
        assert_eq!(
            (status, &body["error_code"]),
            (404, &json!(40403)),
            "{route}"
        );
    }
}

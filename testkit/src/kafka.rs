//! Kafka as the tests use it: events produced the way ingest writes them,
//! records read back, and records made by hand in the wire format.

use std::process::Command;
use std::time::Duration;

use crate::stack::{unique, Stack};

/// Produces `count` simulated telemetry events straight to Kafka, as ingest
/// would write them, and returns pulse-simulate's summary.
pub fn produce_events(
    stack: &Stack,
    prefix: &str,
    registry_url: &str,
    count: u64,
    seed: u64,
) -> serde_json::Value {
    produce_events_with_retries(stack, prefix, registry_url, count, seed, 0.0)
}

/// As [`produce_events`], with a share of the events sent twice under the
/// same id, as retrying clients do.
pub fn produce_events_with_retries(
    stack: &Stack,
    prefix: &str,
    registry_url: &str,
    count: u64,
    seed: u64,
    retry_rate: f64,
) -> serde_json::Value {
    let out = Command::new(stack.bin_dir.join("pulse-simulate"))
        .args([
            "--transport",
            "kafka",
            "--rate",
            "0",
            "--batch",
            "1000",
            "--concurrency",
            "4",
        ])
        .args([
            "--devices",
            "1000",
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
            "--retry-rate",
            &retry_rate.to_string(),
        ])
        .env("PULSE_KAFKA_BOOTSTRAP", &stack.kafka_bootstrap)
        .env("PULSE_TOPIC_PREFIX", prefix)
        .env("PULSE_REGISTRY_URL", registry_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("pulse-simulate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    assert_eq!(summary["summary"]["events"], count);
    assert_eq!(summary["summary"]["failures"], 0);
    summary
}

/// Every record of `topic`, waiting up to 30 s for `n`, then 2 s for extras.
pub async fn records(
    bootstrap: &str,
    topic: &str,
    n: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let mut cfg = pulse_common::kafka::client_config(
        &pulse_common::config::KafkaClient::plaintext(bootstrap),
    );
    cfg.set("group.id", unique("test-reader"))
        .set("auto.offset.reset", "earliest");
    let consumer: StreamConsumer = cfg.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    loop {
        let wait = if out.len() < n {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(2)
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => panic!("consumer error: {e}"),
            Err(_) => return out,
        }
    }
}

/// The value of header `key` of `m`, as text.
pub fn header<'a>(m: &'a rdkafka::message::OwnedMessage, key: &str) -> Option<&'a str> {
    use rdkafka::message::{Headers, Message};
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// A record of `kind` `version` with `fields`, in the Confluent wire format
/// under `schema_id`, as a producer writing to Kafka directly would make it.
pub fn wire_record(
    schema_id: u32,
    kind: pulse_common::schemas::EventKind,
    version: u32,
    fields: Vec<(&str, apache_avro::types::Value)>,
) -> Vec<u8> {
    use apache_avro::writer::datum::GenericDatumWriter;
    let schema = kind.schema(version).expect("a shipped schema version");
    let record = apache_avro::types::Value::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    );
    let datum = GenericDatumWriter::builder(&schema)
        .build()
        .and_then(|w| w.write_value_to_vec(record))
        .expect("the record fits its schema");
    let mut out = vec![0];
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend(datum);
    out
}

/// The id the registry at `registry_url` gave version `version` of the
/// value schema of `topic`.
pub async fn schema_id(registry_url: &str, topic: &str, version: u32) -> u32 {
    let answer: serde_json::Value = reqwest::get(format!(
        "{registry_url}/subjects/{topic}-value/versions/{version}"
    ))
    .await
    .expect("the registry answers")
    .json()
    .await
    .expect("a JSON answer");
    answer["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .unwrap_or_else(|| panic!("no schema id in {answer}"))
}

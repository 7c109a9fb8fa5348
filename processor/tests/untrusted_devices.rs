//! What devices can do to the processor's state, and cannot.
//!
//! One device sends extreme and non-finite readings over every path; none
//! of them may stop its partition. Over HTTP (JSON and Confluent Avro)
//! ingest refuses them with 422; over MQTT the bridge dead-letters them
//! with the contract's reason (JSON has no NaN or infinity: those are
//! malformed JSON); produced straight to Kafka, the processor dead-letters
//! them with the contract's reason. Then the processor is
//! SIGKILLed, an unreadable state of that device (as a processor before the
//! input contract wrote it: a null mean) is left in the changelog, and a
//! marker event of another device on the same partition must still be
//! stored within 30 s of the restart. Run through `./dev test`.

use std::collections::HashMap;
use std::time::Duration;

use apache_avro::types::Value;
use pulse_common::clock::now_ms;
use pulse_common::config::{KafkaClient, Topics};
use pulse_common::kafka::client_config;
use pulse_common::schemas::EventKind;
use pulse_testkit::{
    clickhouse, free_port, header, poll_until, produce_events, publish_mqtt, records, schema_id,
    start_ingest, start_processor, start_registry, unique, wire_record, Stack,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use serde_json::json;

const WARM_UP: u64 = 12;
const EXTREMES: [f64; 4] = [1.7e308, -1.7e308, f64::NAN, f64::INFINITY];

fn id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// A telemetry v2 record of `source` in the Confluent wire format.
fn record(schema_id: u32, n: u64, source: &str, value: f64) -> Vec<u8> {
    record_of(schema_id, n, ("acme", source), now_ms(), value)
}

fn record_of(
    schema_id: u32,
    n: u64,
    (tenant, source): (&str, &str),
    event_time_ms: i64,
    value: f64,
) -> Vec<u8> {
    let fields = vec![
        (
            "event_id",
            Value::Uuid(uuid::Uuid::parse_str(&id(n)).expect("uuid")),
        ),
        ("tenant_id", Value::String(tenant.into())),
        ("source_id", Value::String(source.into())),
        ("event_time", Value::TimestampMillis(event_time_ms)),
        (
            "readings",
            Value::Map(HashMap::from([(
                "temperature_c".to_string(),
                Value::Double(value),
            )])),
        ),
        ("firmware_version", Value::Union(0, Box::new(Value::Null))),
    ];
    wire_record(schema_id, EventKind::Telemetry, 2, fields)
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .partition(0),
            Duration::from_secs(10),
        )
        .await
        .expect("record written");
}

/// Whether the events table holds event `n`.
async fn stored(client: &clickhouse::Client, n: u64) -> Option<()> {
    let count = client
        .query("SELECT count() FROM events WHERE event_id = ?")
        .bind(id(n))
        .fetch_one::<u64>()
        .await
        .ok()?;
    (count == 1).then_some(())
}

/// The processor's dead letters (those of the MQTT bridge carry the MQTT
/// topic), once at least `n` are there.
async fn processor_dead_letters(
    stack: &Stack,
    topics: &Topics,
    n: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    // The bridge's four come first: wait for them too.
    records(&stack.kafka_bootstrap, &topics.dead_letter(), n + 4)
        .await
        .into_iter()
        .filter(|m| header(m, "pulse-mqtt-topic").is_none())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn extreme_readings_never_stall_a_partition_nor_survive_a_restart() {
    let stack = Stack::from_env();
    let prefix = unique("extreme") + ".";
    let database = unique("extreme_");
    let topics = Topics::new(prefix.clone());
    let telemetry = topics.events(EventKind::Telemetry);
    let registry = start_registry(&stack, &prefix).await;
    // Registers the schemas and creates the topics.
    produce_events(&stack, &prefix, &registry.url, 100, 41);
    let http = reqwest::Client::new();
    let schema_id = schema_id(&registry.url, &telemetry, 2).await;

    // Over HTTP, ingest refuses each extreme reading, as JSON and as Avro.
    let root = unique("fleet");
    let bridge = [
        ("PULSE_MQTT_URL", stack.mqtt_url.clone()),
        ("PULSE_MQTT_TOPIC_ROOT", root.clone()),
        ("PULSE_MQTT_CLIENT_ID", unique("bridge")),
    ];
    let ingest = start_ingest(&stack, &prefix, &registry.url, &bridge).await;
    for (i, value) in EXTREMES.into_iter().enumerate() {
        let n = 900 + i as u64;
        let avro = http
            .post(format!("{}/v1/events", ingest.url))
            .header("Content-Type", "application/vnd.confluent.avro")
            .body(record(schema_id, n, "poison-dev", value))
            .send()
            .await
            .expect("ingest answers");
        assert_eq!(avro.status().as_u16(), 422, "Avro reading {value}");
        let body: serde_json::Value = avro.json().await.expect("json");
        assert_eq!(body["errors"][0]["field"], "readings.temperature_c");
        if value.is_finite() {
            let event = json!({
                "kind": "telemetry", "event_id": id(n), "tenant_id": "acme",
                "source_id": "poison-dev", "event_time": now_ms(),
                "readings": {"temperature_c": value}
            });
            let r = http
                .post(format!("{}/v1/events", ingest.url))
                .json(&event)
                .send()
                .await
                .expect("ingest answers");
            assert_eq!(r.status().as_u16(), 422, "JSON reading {value}");
        }
    }
    // Over MQTT, the bridge dead-letters each, and acknowledges it.
    let device_topic = format!("{root}/acme/poison-dev/telemetry");
    let messages: Vec<(String, Vec<u8>)> = ["1.7e308", "-1.7e308", "NaN", "Infinity"]
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let n = 910 + i as u64;
            let body = format!(
                r#"{{"event_id":"{}","event_time":{},"readings":{{"temperature_c":{value}}}}}"#,
                id(n),
                now_ms()
            );
            (device_topic.clone(), body.into_bytes())
        })
        .collect();
    publish_mqtt(&stack, &messages).await;
    let bridged: Vec<(String, String)> = records(&stack.kafka_bootstrap, &topics.dead_letter(), 4)
        .await
        .iter()
        .filter(|m| header(m, "pulse-mqtt-topic") == Some(device_topic.as_str()))
        .map(|m| {
            let payload = String::from_utf8_lossy(m.payload().unwrap_or_default());
            let reason = header(m, "pulse-error").unwrap_or_default();
            (payload.into_owned(), reason.to_string())
        })
        .collect();
    assert_eq!(bridged.len(), 4, "{bridged:?}");
    for (payload, reason) in &bridged {
        let expected = if payload.contains("e308") {
            "readings.temperature_c: "
        } else {
            "malformed JSON"
        };
        assert!(reason.starts_with(expected), "{payload}: {reason}");
    }
    drop(ingest);

    // Straight to Kafka, on one partition: the device warms up, then sends
    // the extremes, then another device's marker follows them.
    let producer: FutureProducer = client_config(&KafkaClient::plaintext(&stack.kafka_bootstrap))
        .create()
        .expect("producer");
    for n in 0..WARM_UP {
        let payload = record(schema_id, n, "poison-dev", 20.0 + n as f64 % 3.0);
        send(&producer, &telemetry, "acme/poison-dev", &payload).await;
    }
    for (i, value) in EXTREMES.into_iter().enumerate() {
        let payload = record(schema_id, 100 + i as u64, "poison-dev", value);
        send(&producer, &telemetry, "acme/poison-dev", &payload).await;
    }
    let marker = record(schema_id, 200, "marker-dev", 21.0);
    send(&producer, &telemetry, "acme/marker-dev", &marker).await;

    let client = clickhouse(&stack.clickhouse_url, &database);
    let port = free_port();
    let group = format!("{prefix}processor");
    // A static member, as deployed: the restarted instance takes its
    // partitions back at once instead of after the session timeout.
    let settings = [("PULSE_PROCESSOR_INSTANCE_ID", "extreme-test".to_string())];
    let mut processor =
        start_processor(&stack, &prefix, &registry.url, &database, port, &settings).await;
    poll_until("the first marker stored", Duration::from_secs(60), || {
        stored(&client, 200)
    })
    .await;
    let dead = processor_dead_letters(&stack, &topics, EXTREMES.len()).await;
    let reasons: Vec<&str> = dead
        .iter()
        .map(|m| header(m, "pulse-error").unwrap_or_default())
        .collect();
    assert_eq!(reasons.len(), EXTREMES.len(), "{reasons:?}");
    for (reason, value) in reasons.iter().zip(EXTREMES) {
        assert!(
            reason.starts_with("breaks the input contract: readings.temperature_c: "),
            "{value}: {reason}"
        );
    }

    // Killed only once that batch committed, so that the restart resumes
    // after it rather than consuming it again.
    poll_until("the batch committed", Duration::from_secs(30), || async {
        let stored = processor
            .metric(r#"pulse_processor_events_total{outcome="stored"}"#)
            .await?;
        (stored >= 100.0 + WARM_UP as f64 + 1.0).then_some(())
    })
    .await;

    // What a processor before the contract left for this device: readings
    // of +-1.7e308 overflowed its statistics, written as null.
    processor.kill();
    let changelog = format!("{group}-state-telemetry");
    let null_mean = br#"{"seq":16,"last_event_ms":1,"readings":{"temperature_c":{"mean":null,"var":null,"last":1.7e308,"count":16}},"recent_ids":[]}"#;
    let key = serde_json::to_vec(&("acme", "poison-dev")).expect("key");
    producer
        .send(
            FutureRecord::to(&changelog)
                .key(&key)
                .payload(&null_mean[..])
                .partition(0),
            Duration::from_secs(10),
        )
        .await
        .expect("changelog record written");
    for (i, value) in EXTREMES.into_iter().enumerate() {
        let payload = record(schema_id, 300 + i as u64, "poison-dev", value);
        send(&producer, &telemetry, "acme/poison-dev", &payload).await;
    }
    send(
        &producer,
        &telemetry,
        "acme/poison-dev",
        &record(schema_id, 400, "poison-dev", 22.0),
    )
    .await;
    send(
        &producer,
        &telemetry,
        "acme/marker-dev",
        &record(schema_id, 401, "marker-dev", 21.0),
    )
    .await;

    let processor =
        start_processor(&stack, &prefix, &registry.url, &database, port, &settings).await;
    poll_until(
        "the marker after the restart stored",
        Duration::from_secs(30),
        || stored(&client, 401),
    )
    .await;
    poll_until(
        "the poisoned device's next event stored",
        Duration::from_secs(30),
        || stored(&client, 400),
    )
    .await;
    let skipped = processor
        .metric("pulse_processor_state_records_skipped_total")
        .await;
    assert_eq!(skipped, Some(1.0), "the unreadable state was skipped");
    // The poisoned device started afresh: its next event is its first.
    let seq = client
        .query("SELECT device_seq FROM events WHERE event_id = ?")
        .bind(id(400))
        .fetch_one::<u64>()
        .await
        .expect("device_seq");
    assert_eq!(seq, 1);

    let extremes: Vec<String> = (100..104)
        .chain(300..304)
        .chain(900..904)
        .chain(910..914)
        .map(id)
        .collect();
    let (leaked, bad_scores) = client
        .query("SELECT countIf(has(?, event_id)), countIf(NOT isFinite(score)) FROM events")
        .bind(&extremes)
        .fetch_one::<(u64, u64)>()
        .await
        .expect("counts");
    assert_eq!(
        (leaked, bad_scores),
        (0, 0),
        "extreme events stored, or scores not finite"
    );
    let dead = processor_dead_letters(&stack, &topics, 2 * EXTREMES.len()).await;
    assert_eq!(
        dead.len(),
        2 * EXTREMES.len(),
        "each extreme dead-lettered once"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_tenant_beyond_its_device_quota_is_dead_lettered_and_idle_devices_are_tombstoned() {
    let stack = Stack::from_env();
    let prefix = unique("quota") + ".";
    let database = unique("quota_");
    let topics = Topics::new(prefix.clone());
    let telemetry = topics.events(EventKind::Telemetry);
    let registry = start_registry(&stack, &prefix).await;
    produce_events(&stack, &prefix, &registry.url, 10, 43);
    let schema_id = schema_id(&registry.url, &telemetry, 2).await;
    let producer: FutureProducer = client_config(&KafkaClient::plaintext(&stack.kafka_bootstrap))
        .create()
        .expect("producer");
    let two_days_ago = now_ms() - 2 * 86_400_000;
    // Tenant "crowd" fills its quota of 3 on partition 0, one of them idle
    // for two days; its fourth device is refused, another tenant's is not.
    let sent = [
        (1, ("crowd", "idle"), two_days_ago),
        (2, ("crowd", "a"), now_ms()),
        (3, ("crowd", "b"), now_ms()),
        (4, ("crowd", "c"), now_ms()),
        (5, ("other", "a"), now_ms()),
    ];
    for (n, device, t) in sent {
        let key = format!("{}/{}", device.0, device.1);
        send(
            &producer,
            &telemetry,
            &key,
            &record_of(schema_id, n, device, t, 20.0),
        )
        .await;
    }
    let client = clickhouse(&stack.clickhouse_url, &database);
    let settings = [
        ("PULSE_MAX_DEVICES_PER_TENANT", "3".to_string()),
        ("PULSE_DEVICE_IDLE_TTL_S", "86400".to_string()),
    ];
    let port = free_port();
    let processor =
        start_processor(&stack, &prefix, &registry.url, &database, port, &settings).await;
    // Polled together: one insert's rows of two days (two monthly parts
    // around a month's end) become visible one part after the other.
    poll_until(
        "the events of the three devices and the other tenant's stored",
        Duration::from_secs(60),
        || async {
            let mut all = Some(());
            for n in [1, 2, 3, 5] {
                all = all.and(stored(&client, n).await);
            }
            all
        },
    )
    .await;
    assert_eq!(stored(&client, 4).await, None, "the fourth device");
    let dead = records(&stack.kafka_bootstrap, &topics.dead_letter(), 1).await;
    // The simulated fleet that registered the schemas is over its quota
    // too: only the test's tenant is looked at.
    let reasons: Vec<&str> = dead
        .iter()
        .map(|m| header(m, "pulse-error").unwrap_or_default())
        .filter(|r| r.contains("crowd"))
        .collect();
    assert_eq!(
        reasons,
        ["tenant crowd already has 3 devices in partition 0, its quota"]
    );
    drop(processor);

    // A new instance reads the idle device back, and its first look for
    // idle devices forgets it: a tombstone in the changelog frees its slot.
    let _processor =
        start_processor(&stack, &prefix, &registry.url, &database, port, &settings).await;
    let newcomer = record_of(schema_id, 6, ("crowd", "d"), now_ms(), 20.0);
    send(&producer, &telemetry, "crowd/d", &newcomer).await;
    poll_until(
        "the newcomer stored in the freed slot",
        Duration::from_secs(60),
        || stored(&client, 6),
    )
    .await;
    let changelog = format!("{prefix}processor-state-telemetry");
    let states = records(&stack.kafka_bootstrap, &changelog, 6).await;
    let idle_key = serde_json::to_vec(&("crowd", "idle")).expect("key");
    let idle: Vec<bool> = states
        .iter()
        .filter(|m| m.key() == Some(&idle_key[..]))
        .map(|m| m.payload().is_none())
        .collect();
    assert_eq!(idle, [false, true], "its state, then its tombstone");
}

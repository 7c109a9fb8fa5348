//! The MQTT bridge against the real Mosquitto and Kafka: valid messages
//! reach Kafka with tenant and device from the topic, undecodable or
//! forbidden ones reach the dead-letter topic with the reason in headers,
//! and every message is acknowledged to the broker; messages over the
//! maximum size and hostile payloads are dead-lettered without dropping the
//! connection. Run through `./dev test`.

use std::collections::HashMap;
use std::time::Duration;

use pulse_common::config::KafkaClient;
use pulse_common::kafka::client_config;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;

use pulse_common::clock::now_ms;
use pulse_common::config::Topics;
use pulse_common::event::Event;
use pulse_common::schemas::EventKind;
use pulse_testkit::{
    header, mqtt_device, publish_mqtt, records, start_ingest, start_registry, unique, Service,
    Stack,
};
use rdkafka::Message;
use rumqttc::{AsyncClient, QoS};
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use serde_json::json;

/// An ingest gateway bridging devices' messages under `root` on the
/// stack's broker to the topics under `prefix`, with `settings` on top.
async fn start_bridge(
    stack: &Stack,
    prefix: &str,
    registry_url: &str,
    root: &str,
    settings: &[(&str, String)],
) -> Service {
    let mut env = vec![
        ("PULSE_EVENT_PARTITIONS", "1".into()),
        ("PULSE_MQTT_URL", stack.mqtt_url.clone()),
        ("PULSE_MQTT_TOPIC_ROOT", root.to_string()),
        ("PULSE_MQTT_CLIENT_ID", unique("bridge")),
    ];
    env.extend(settings.iter().cloned());
    start_ingest(stack, prefix, registry_url, &env).await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn mqtt_messages_reach_kafka_or_the_dead_letter_topic_and_are_acknowledged() {
    let stack = Stack::from_env();
    let prefix = unique("mqtt") + ".";
    let root = unique("fleet");
    let registry = start_registry(&stack, &prefix).await;
    let _ingest = start_bridge(&stack, &prefix, &registry.url, &root, &[]).await;

    let good_id = uuid::Uuid::new_v4().to_string();
    let app_id = uuid::Uuid::new_v4().to_string();
    let telemetry_topic = format!("{root}/acme/dev-1/telemetry");
    let messages = vec![
        (telemetry_topic.clone(), json!({"event_id": good_id, "event_time": now_ms(), "readings": {"temperature_c": 20.5}}).to_string()),
        (telemetry_topic.clone(), "{not json".to_string()),
        (telemetry_topic.clone(), json!({"event_id": uuid::Uuid::new_v4().to_string(), "tenant_id": "globex", "event_time": now_ms(), "readings": {}}).to_string()),
        (format!("{root}/acme/shop-app/app"), json!({"event_id": app_id, "event_time": now_ms(), "event_type": "opened"}).to_string()),
    ];
    // Every message is acknowledged by the broker once the bridge handled it.
    let messages: Vec<(String, Vec<u8>)> = messages
        .into_iter()
        .map(|(topic, payload)| (topic, payload.into_bytes()))
        .collect();
    publish_mqtt(&stack, &messages).await;

    let topics = Topics::new(prefix);
    let decoder = AvroDecoder::new(SrSettings::new(registry.url.clone()));
    let telemetry = records(
        &stack.kafka_bootstrap,
        &topics.events(EventKind::Telemetry),
        1,
    )
    .await;
    assert_eq!(
        telemetry.len(),
        1,
        "only the valid telemetry message reaches Kafka"
    );
    let value = decoder
        .decode(telemetry[0].payload())
        .await
        .expect("decodes")
        .value;
    let event = Event::from_avro(EventKind::Telemetry, value).expect("an event");
    assert_eq!(
        (
            event.event_id.as_str(),
            event.tenant_id.as_str(),
            event.source_id.as_str()
        ),
        (good_id.as_str(), "acme", "dev-1"),
        "tenant and device come from the topic"
    );
    assert_eq!(telemetry[0].key(), Some("acme/dev-1".as_bytes()));

    let apps = records(&stack.kafka_bootstrap, &topics.events(EventKind::App), 1).await;
    assert_eq!(apps.len(), 1);
    let value = decoder
        .decode(apps[0].payload())
        .await
        .expect("decodes")
        .value;
    assert_eq!(
        Event::from_avro(EventKind::App, value)
            .expect("an event")
            .event_id,
        app_id
    );

    let dead = records(&stack.kafka_bootstrap, &topics.dead_letter(), 2).await;
    assert_eq!(dead.len(), 2, "the two bad messages are dead-lettered");
    let reasons: HashMap<String, String> = dead
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string(),
                header(m, "pulse-error").unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        reasons["{not json"].starts_with("malformed JSON"),
        "{reasons:?}"
    );
    let forbidden = reasons
        .iter()
        .find(|(p, _)| p.contains("globex"))
        .expect("globex message")
        .1;
    assert!(
        forbidden.starts_with("tenant_id: 'globex' is not 'acme'"),
        "{forbidden}"
    );
    assert!(dead
        .iter()
        .all(|m| header(m, "pulse-mqtt-topic") == Some(telemetry_topic.as_str())));
}

/// The bridge's maximum message size in the size test; not the default, so
/// the test also shows the setting is read.
const MAX_MESSAGE: usize = 200_000;

/// What a dead letter of an oversized message keeps of it.
const DEAD_LETTER_PAYLOAD: usize = 64 * 1024;

/// A valid telemetry event padded with spaces to exactly `size` bytes.
fn padded_event(event_id: &str, size: usize) -> Vec<u8> {
    let mut body =
        json!({"event_id": event_id, "event_time": now_ms(), "readings": {"temperature_c": 20.5}})
            .to_string()
            .into_bytes();
    assert!(body.len() <= size, "the event fits in {size} bytes");
    body.resize(size, b' ');
    body
}

/// A consumer of one topic from its start, keeping what it has read.
struct Reader {
    consumer: StreamConsumer,
    seen: Vec<OwnedMessage>,
}

impl Reader {
    fn new(bootstrap: &str, topic: &str) -> Self {
        let mut cfg = client_config(&KafkaClient::plaintext(bootstrap));
        cfg.set("group.id", unique("test-reader"))
            .set("auto.offset.reset", "earliest");
        let consumer: StreamConsumer = cfg.create().expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        Self {
            consumer,
            seen: Vec::new(),
        }
    }

    /// Reads until a record with `key` or header `pulse-mqtt-topic` equal to
    /// `id` has arrived, failing after `within`.
    async fn wait_for(&mut self, id: &str, within: Duration) -> OwnedMessage {
        let matches = |m: &OwnedMessage| {
            m.key() == Some(id.as_bytes()) || header(m, "pulse-mqtt-topic") == Some(id)
        };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(m) = self.seen.iter().find(|m| matches(m)) {
                return m.clone();
            }
            let m = tokio::time::timeout_at(deadline, self.consumer.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out after {within:?} waiting for {id}"))
                .expect("consumer");
            self.seen.push(m.detach());
        }
    }
}

/// What the bridge must do with a message.
enum Outcome {
    /// Dead-lettered with this reason, keeping this many payload bytes.
    DeadLetter(&'static str, usize),
    /// Produced to Kafka.
    Accepted,
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn oversized_and_hostile_mqtt_messages_are_dead_lettered_and_the_bridge_goes_on() {
    let stack = Stack::from_env();
    let prefix = unique("mqttsize") + ".";
    let root = unique("fleet");
    let registry = start_registry(&stack, &prefix).await;
    let ingest = start_bridge(
        &stack,
        &prefix,
        &registry.url,
        &root,
        &[("PULSE_MQTT_MAX_MESSAGE_BYTES", MAX_MESSAGE.to_string())],
    )
    .await;

    let mut options = mqtt_device(&stack);
    // The device's own client must be able to send the oversized message.
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (device, mut eventloop) = AsyncClient::new(options, 16);
    // The device's connection must not drop either: that would hide what
    // the bridge does behind a publisher's retry.
    let device_loop = tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                return e.to_string();
            }
        }
    });

    let exact_id = uuid::Uuid::new_v4().to_string();
    let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
        (
            "one byte over the maximum",
            padded_event(&uuid::Uuid::new_v4().to_string(), MAX_MESSAGE + 1),
            Outcome::DeadLetter(
                "message of 200001 bytes exceeds the maximum of 200000",
                DEAD_LETTER_PAYLOAD,
            ),
        ),
        (
            "exactly the maximum",
            padded_event(&exact_id, MAX_MESSAGE),
            Outcome::Accepted,
        ),
        ("empty", Vec::new(), Outcome::DeadLetter("empty message", 0)),
        (
            "a NUL byte",
            vec![0],
            Outcome::DeadLetter("malformed JSON: expected value at line 1 column 1", 1),
        ),
        (
            "10,000 levels of nesting",
            vec![b'['; 10_000],
            Outcome::DeadLetter(
                "malformed JSON: recursion limit exceeded at line 1 column 128",
                10_000,
            ),
        ),
    ];

    let topics = Topics::new(prefix);
    let mut events = Reader::new(&stack.kafka_bootstrap, &topics.events(EventKind::Telemetry));
    let mut dead = Reader::new(&stack.kafka_bootstrap, &topics.dead_letter());
    let mut marker_ids = Vec::new();
    for (i, (name, payload, outcome)) in cases.iter().enumerate() {
        // Each case on a device of its own, so its record is found by the
        // Kafka key (accepted) or the MQTT topic header (dead-lettered).
        let case_topic = format!("{root}/acme/case-{i}/telemetry");
        device
            .publish(&case_topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("queued");
        // A marker after every case: the bridge is still reading.
        let marker_id = uuid::Uuid::new_v4().to_string();
        let marker = json!({"event_id": marker_id, "event_time": now_ms(), "readings": {}});
        device
            .publish(
                format!("{root}/acme/marker-{i}/telemetry"),
                QoS::AtLeastOnce,
                false,
                marker.to_string(),
            )
            .await
            .expect("queued");
        marker_ids.push(marker_id);
        events
            .wait_for(&format!("acme/marker-{i}"), Duration::from_secs(30))
            .await;
        match outcome {
            Outcome::DeadLetter(reason, kept) => {
                let m = dead.wait_for(&case_topic, Duration::from_secs(30)).await;
                assert_eq!(header(&m, "pulse-error"), Some(*reason), "{name}");
                assert_eq!(
                    header(&m, "pulse-mqtt-payload-bytes"),
                    Some(payload.len().to_string().as_str()),
                    "{name}"
                );
                assert_eq!(
                    m.payload().unwrap_or_default(),
                    &payload[..*kept],
                    "{name}: the dead letter keeps a prefix"
                );
            }
            Outcome::Accepted => {
                events
                    .wait_for(&format!("acme/case-{i}"), Duration::from_secs(30))
                    .await;
            }
        }
    }
    assert!(!device_loop.is_finished(), "the device stayed connected");

    // Exactly once each, and nothing else: read the topics afresh.
    let dead_letters = records(&stack.kafka_bootstrap, &topics.dead_letter(), 4).await;
    let mut dead_topics: Vec<&str> = dead_letters
        .iter()
        .filter_map(|m| header(m, "pulse-mqtt-topic"))
        .collect();
    dead_topics.sort_unstable();
    let mut expected_dead: Vec<String> = cases
        .iter()
        .enumerate()
        .filter(|(_, (_, _, o))| matches!(o, Outcome::DeadLetter(..)))
        .map(|(i, _)| format!("{root}/acme/case-{i}/telemetry"))
        .collect();
    expected_dead.sort_unstable();
    assert_eq!(
        dead_topics, expected_dead,
        "each bad message dead-lettered once"
    );

    let telemetry = records(
        &stack.kafka_bootstrap,
        &topics.events(EventKind::Telemetry),
        1 + marker_ids.len(),
    )
    .await;
    let decoder = AvroDecoder::new(SrSettings::new(registry.url.clone()));
    let mut ids = Vec::new();
    for m in &telemetry {
        let value = decoder.decode(m.payload()).await.expect("decodes").value;
        ids.push(
            Event::from_avro(EventKind::Telemetry, value)
                .expect("an event")
                .event_id,
        );
    }
    let mut expected_ids: Vec<String> = marker_ids;
    expected_ids.push(exact_id);
    ids.sort_unstable();
    expected_ids.sort_unstable();
    assert_eq!(
        ids, expected_ids,
        "the markers and the message at the maximum, once each"
    );

    // One connection all along: no message made the bridge reconnect.
    assert_eq!(
        ingest.metric("pulse_ingest_mqtt_connections_total").await,
        Some(1.0)
    );
    assert_eq!(
        ingest
            .metric("pulse_ingest_mqtt_connection_errors_total")
            .await,
        Some(0.0)
    );
    device_loop.abort();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn an_event_over_its_topics_record_limit_is_refused_or_dead_lettered_not_retried() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let stack = Stack::from_env();
    let prefix = unique("mqttbig") + ".";
    let root = unique("fleet");
    let topics = Topics::new(prefix.clone());
    let telemetry_topic = topics.events(EventKind::Telemetry);
    // A topic configured below what the contract allows an event: the
    // gateway learns the limit only from the broker's refusal.
    let admin: AdminClient<DefaultClientContext> =
        client_config(&KafkaClient::plaintext(&stack.kafka_bootstrap))
            .create()
            .expect("admin");
    let topic = NewTopic::new(&telemetry_topic, 1, TopicReplication::Fixed(1))
        .set("max.message.bytes", "2048");
    let created = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("create topics");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let registry = start_registry(&stack, &prefix).await;
    let ingest = start_bridge(&stack, &prefix, &registry.url, &root, &[]).await;
    // 100 readings with 60-character names: about 7 KB of Avro.
    let big = |id: &str| {
        let readings: serde_json::Map<String, serde_json::Value> = (0..100)
            .map(|i| (format!("r{i:03}_{}", "x".repeat(55)), json!(i)))
            .collect();
        json!({"kind": "telemetry", "event_id": id, "tenant_id": "acme", "source_id": "big-1",
               "event_time": now_ms(), "readings": readings})
    };
    let http = reqwest::Client::new();
    // A request of a small event and a big one is refused whole, naming
    // the big one, before anything of it is produced.
    let (small_id, big_id) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let small = json!({"kind": "telemetry", "event_id": small_id, "tenant_id": "acme",
                       "source_id": "small-1", "event_time": now_ms(), "readings": {"temperature_c": 20.5}});
    let refused = http
        .post(format!("{}/v1/events", ingest.url))
        .json(&json!([small, big(&big_id)]))
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(refused.status().as_u16(), 413);
    assert!(refused.headers().get("retry-after").is_none());
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "record_too_large", "{body}");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["errors"][0]["index"], 1, "{body}");
    assert_eq!(body["errors"][0]["event_id"], big_id.as_str(), "{body}");
    assert!(
        body["errors"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("limit of 2048 (max.message.bytes)")),
        "{body}"
    );

    let big_topic = format!("{root}/acme/big-1/telemetry");
    let marker = json!({"event_id": uuid::Uuid::new_v4().to_string(), "event_time": now_ms(), "readings": {}});
    publish_mqtt(
        &stack,
        &[
            (
                big_topic.clone(),
                big(&uuid::Uuid::new_v4().to_string())
                    .to_string()
                    .into_bytes(),
            ),
            (
                format!("{root}/acme/marker-1/telemetry"),
                marker.to_string().into_bytes(),
            ),
        ],
    )
    .await;

    let mut dead = Reader::new(&stack.kafka_bootstrap, &topics.dead_letter());
    let m = dead.wait_for(&big_topic, Duration::from_secs(30)).await;
    let reason = header(&m, "pulse-error").unwrap_or_default();
    assert!(
        reason.contains("limit of 2048 (max.message.bytes)"),
        "{reason}"
    );
    // The message after it is not held behind a retry.
    let mut events = Reader::new(&stack.kafka_bootstrap, &telemetry_topic);
    events
        .wait_for("acme/marker-1", Duration::from_secs(30))
        .await;
    let http_marker = http
        .post(format!("{}/v1/events", ingest.url))
        .json(
            &json!({"kind": "telemetry", "event_id": uuid::Uuid::new_v4().to_string(),
                      "tenant_id": "acme", "source_id": "marker-2", "event_time": now_ms(),
                      "readings": {"temperature_c": 21.0}}),
        )
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(http_marker.status().as_u16(), 202);
    events
        .wait_for("acme/marker-2", Duration::from_secs(30))
        .await;
    let keys: Vec<&[u8]> = events.seen.iter().filter_map(|m| m.key()).collect();
    assert_eq!(
        keys,
        [&b"acme/marker-1"[..], b"acme/marker-2"],
        "the markers alone: nothing of the refused request"
    );
}

//! The MQTT bridge against the real Mosquitto and Kafka: valid messages
//! reach Kafka with tenant and device from the topic, undecodable or
//! forbidden ones reach the dead-letter topic with the reason in headers,
//! and every message is acknowledged to the broker. Run through `./dev test`.

use std::collections::HashMap;
use std::time::Duration;

use pulse_common::clock::now_ms;
use pulse_common::config::Topics;
use pulse_common::event::Event;
use pulse_common::schemas::EventKind;
use pulse_common::testkit::{header, records, start_ingest, start_registry, unique, Stack};
use rdkafka::Message;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn mqtt_messages_reach_kafka_or_the_dead_letter_topic_and_are_acknowledged() {
    let stack = Stack::from_env();
    let prefix = unique("mqtt") + ".";
    let root = unique("fleet");
    let registry = start_registry(&stack, &prefix).await;
    let _ingest = start_ingest(
        &stack,
        &prefix,
        &registry.url,
        &[
            ("PULSE_EVENT_PARTITIONS", "1".into()),
            ("PULSE_MQTT_URL", stack.mqtt_url.clone()),
            ("PULSE_MQTT_TOPIC_ROOT", root.clone()),
            ("PULSE_MQTT_CLIENT_ID", unique("bridge")),
        ],
    )
    .await;

    let (host, mqtt_port) = stack
        .mqtt_url
        .trim_start_matches("mqtt://")
        .rsplit_once(':')
        .expect("host:port");
    let mut options = MqttOptions::new(unique("device"), host, mqtt_port.parse().expect("port"));
    options.set_keep_alive(Duration::from_secs(5));
    let (device, mut eventloop) = AsyncClient::new(options, 16);

    let good_id = uuid::Uuid::new_v4().to_string();
    let app_id = uuid::Uuid::new_v4().to_string();
    let telemetry_topic = format!("{root}/acme/dev-1/telemetry");
    let messages = vec![
        (telemetry_topic.clone(), json!({"event_id": good_id, "event_time": now_ms(), "readings": {"temperature_c": 20.5}}).to_string()),
        (telemetry_topic.clone(), "{not json".to_string()),
        (telemetry_topic.clone(), json!({"event_id": uuid::Uuid::new_v4().to_string(), "tenant_id": "globex", "event_time": now_ms(), "readings": {}}).to_string()),
        (format!("{root}/acme/shop-app/app"), json!({"event_id": app_id, "event_time": now_ms(), "event_type": "opened"}).to_string()),
    ];
    for (topic, payload) in &messages {
        device
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("queued");
    }
    // Every message is acknowledged by the broker once the bridge handled it.
    let mut pubacks = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while pubacks < messages.len() {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("all messages acknowledged in time")
            .expect("MQTT connection");
        if let MqttEvent::Incoming(Packet::PubAck(_)) = event {
            pubacks += 1;
        }
    }

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

//! The stack's MQTT broker, as a device uses it.

use std::time::Duration;

use crate::stack::{unique, Stack};

/// The options of a device of its own on the stack's MQTT broker.
pub fn mqtt_device(stack: &Stack) -> rumqttc::MqttOptions {
    let (host, port) = stack
        .mqtt_url
        .trim_start_matches("mqtt://")
        .rsplit_once(':')
        .expect("host:port");
    let mut options =
        rumqttc::MqttOptions::new(unique("device"), host, port.parse().expect("port"));
    options.set_keep_alive(Duration::from_secs(5));
    options
}

/// Publishes each `(topic, payload)` to the stack's MQTT broker at QoS 1,
/// as a device would, and returns once the broker acknowledged them all:
/// the bridge acknowledges a message only once it is in Kafka or
/// dead-lettered.
pub async fn publish_mqtt(stack: &Stack, messages: &[(String, Vec<u8>)]) {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let (device, mut eventloop) = AsyncClient::new(mqtt_device(stack), messages.len().max(1));
    for (topic, payload) in messages {
        device
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("queued");
    }
    let mut acknowledged = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acknowledged < messages.len() {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("every message acknowledged within 30 s")
            .expect("MQTT connection");
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acknowledged += 1;
        }
    }
}

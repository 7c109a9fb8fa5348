//! The MQTT bridge: devices publish JSON events at QoS 1 to
//! `{root}/{tenant}/{device}/{kind}` on the MQTT broker; the bridge validates
//! each one, produces it to Kafka and acknowledges it to the broker only
//! after Kafka acknowledged. Until then the broker keeps the message (a
//! persistent session), so a crash or a Kafka outage loses nothing.
//! Messages that can never be accepted go to the dead-letter topic with the
//! reason in headers, and are then acknowledged.
//!
//! The tenant and device come from the topic; which client may publish to
//! which topic is the broker's access control (Mosquitto: `pattern write
//! pulse/+/%u/#` style ACLs with per-device credentials).
//!
//! No message may stop the bridge: a packet the client refuses to read
//! drops the connection, the broker redelivers it on reconnect, and the
//! bridge would loop on it forever. So the client reads packets up to
//! `read_ceiling`, well above the configured maximum message size:
//! messages between the two are read, dead-lettered and acknowledged like
//! any other bad message. Beyond the ceiling the broker must refuse them
//! (Mosquitto's `max_packet_size`, at most the ceiling), which is the
//! operator's side of this promise.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{register_int_counter, IntCounter};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use tokio::task::JoinSet;

use pulse_common::ops::Readiness;
use pulse_common::shutdown::Shutdown;

use super::http::{produce, Gateway};
use super::parse::{parse_body, Claims, Layout};

#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// `mqtt://host:port`.
    pub url: String,
    /// First level of the topics the bridge subscribes to.
    pub topic_root: String,
    /// Client id; the broker keeps this session's unacknowledged messages.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Sizes the client's queues (the broker bounds messages in flight).
    pub max_in_flight: u16,
    /// Largest accepted message payload, in bytes; larger ones are
    /// dead-lettered.
    pub max_message_bytes: usize,
}

/// Room above the maximum message for the rest of a PUBLISH packet: the
/// topic (at most 65,535 bytes plus its length) and the packet id.
const PACKET_OVERHEAD: usize = 64 * 1024;

/// The bridge itself only sends SUBSCRIBE and PUBACK: rumqttc's default
/// outgoing limit is plenty.
const OUTGOING_PACKET: usize = 10 * 1024;

/// The largest packet MQTT can frame (the remaining length's maximum).
const PROTOCOL_MAX_PACKET: usize = 268_435_455;

/// The largest payload a dead letter carries. Kafka refuses records over
/// its `message.max.bytes` (about 1 MB by default), and a dead letter that
/// cannot be written is never acknowledged, so the broker would redeliver
/// it forever; a prefix is enough to see what a device sent. The
/// `pulse-mqtt-payload-bytes` header keeps the full size.
const DEAD_LETTER_PAYLOAD_BYTES: usize = 64 * 1024;

/// Packets up to this size are read whole. Twice the maximum, so that a
/// broker limit set a little loose (or to the maximum plus the topic) still
/// lands below it; capped at what MQTT can frame.
fn read_ceiling(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(2)
        .saturating_add(PACKET_OVERHEAD)
        .min(PROTOCOL_MAX_PACKET)
}

/// Connections the broker accepted (CONNACKs). More than one per run means
/// the bridge reconnected: a broker restart, or a packet it could not read.
static CONNECTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "pulse_ingest_mqtt_connections_total",
        "MQTT connections the broker accepted; a rising count is a reconnect loop"
    )
    .expect("metric registers once")
});

/// Errors that dropped the MQTT connection (broker down, unreadable packet).
static CONNECTION_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "pulse_ingest_mqtt_connection_errors_total",
        "Errors that dropped the MQTT connection"
    )
    .expect("metric registers once")
});

/// Where a message came from and what it may contain.
#[derive(Debug, PartialEq, Eq)]
struct Route<'a> {
    tenant: &'a str,
    device: &'a str,
    kind: &'a str,
}

fn route<'a>(root: &str, topic: &'a str) -> Option<Route<'a>> {
    let rest = topic.strip_prefix(root)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (tenant, device, kind) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || tenant.is_empty() || device.is_empty() {
        return None;
    }
    Some(Route {
        tenant,
        device,
        kind,
    })
}

fn options(config: &MqttConfig) -> anyhow::Result<MqttOptions> {
    let address = config
        .url
        .strip_prefix("mqtt://")
        .ok_or_else(|| anyhow::anyhow!("MQTT URL must start with mqtt://: {}", config.url))?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("MQTT URL needs host:port: {}", config.url))?;
    let port: u16 = port
        .trim_end_matches('/')
        .parse()
        .map_err(|e| anyhow::anyhow!("MQTT port in {}: {e}", config.url))?;
    if config.max_message_bytes == 0 || config.max_message_bytes >= PROTOCOL_MAX_PACKET {
        anyhow::bail!(
            "the maximum MQTT message size must be between 1 and {} bytes, not {}",
            PROTOCOL_MAX_PACKET - 1,
            config.max_message_bytes
        );
    }
    let mut o = MqttOptions::new(&config.client_id, host, port);
    o.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(config.max_in_flight)
        .set_max_packet_size(read_ceiling(config.max_message_bytes), OUTGOING_PACKET);
    if let (Some(u), Some(p)) = (&config.username, &config.password) {
        o.set_credentials(u, p);
    }
    Ok(o)
}

/// Runs the bridge until shutdown; reconnects after broker outages.
/// `subscribed` is set once the broker confirmed the subscription.
pub async fn run(
    gw: Arc<Gateway>,
    config: MqttConfig,
    subscribed: Readiness,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // The event loop never waits for the handlers, or their acknowledgements
    // could not get through; the broker's in-flight window (Mosquitto's
    // max_inflight_messages) bounds how many are handled at once.
    let (client, mut events) =
        AsyncClient::new(options(&config)?, 4 * usize::from(config.max_in_flight));
    let filter = format!("{}/+/+/+", config.topic_root);
    let mut handlers = JoinSet::new();
    // Both counters are on /metrics from the start, so a flat zero is visible.
    LazyLock::force(&CONNECTIONS);
    LazyLock::force(&CONNECTION_ERRORS);
    tracing::info!(
        url = %config.url,
        %filter,
        max_message_bytes = config.max_message_bytes,
        read_ceiling = read_ceiling(config.max_message_bytes),
        "MQTT bridge starting"
    );
    loop {
        let event = tokio::select! {
            _ = shutdown.requested() => break,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                CONNECTIONS.inc();
                // Subscribing again on every connection is harmless and
                // covers a broker that lost the session.
                client.subscribe(&filter, QoS::AtLeastOnce).await?;
                tracing::info!(%filter, "MQTT bridge subscribed");
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => subscribed.set(true),
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let (gw, client, root) = (gw.clone(), client.clone(), config.topic_root.clone());
                let (shutdown, max) = (shutdown.clone(), config.max_message_bytes);
                handlers.spawn(async move {
                    if handle(&gw, &root, max, &publish, &shutdown).await {
                        if let Err(e) = client.ack(&publish).await {
                            tracing::warn!(error = %e, "cannot acknowledge MQTT message");
                        }
                    }
                });
                while handlers.try_join_next().is_some() {}
            }
            Ok(_) => {}
            Err(e) => {
                CONNECTION_ERRORS.inc();
                tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                tokio::select! {
                    _ = shutdown.requested() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    drain(&mut handlers, &mut events).await;
    Ok(())
}

/// Lets the messages being processed finish and their acknowledgements go out.
async fn drain(handlers: &mut JoinSet<()>, events: &mut EventLoop) {
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    while !handlers.is_empty() {
        tokio::select! {
            _ = handlers.join_next() => {}
            _ = &mut deadline => break,
            _ = events.poll() => {}
        }
    }
    // Flush the acknowledgements queued last.
    let _ = tokio::time::timeout(Duration::from_millis(500), events.poll()).await;
}

/// Processes one message; true when it may be acknowledged: Kafka has it,
/// or it went to the dead-letter topic.
async fn handle(
    gw: &Gateway,
    root: &str,
    max_message_bytes: usize,
    publish: &Publish,
    shutdown: &Shutdown,
) -> bool {
    let dead = gw.topics.dead_letter();
    if let Some(reason) = unacceptable_size(publish.payload.len(), max_message_bytes) {
        return dead_letter(gw, &dead, publish, &reason).await;
    }
    let Some(route) = route(root, &publish.topic) else {
        let reason = format!("topic is not {root}/<tenant>/<device>/<kind>");
        return dead_letter(gw, &dead, publish, &reason).await;
    };
    let claims = Claims {
        tenant: route.tenant,
        device: Some(route.device),
    };
    // serde_json's nesting limit (128 levels) is what keeps a payload of
    // thousands of `[` from overflowing the stack: it stays on.
    let mut body: serde_json::Value = match serde_json::from_slice(&publish.payload) {
        Ok(v) => v,
        Err(e) => return dead_letter(gw, &dead, publish, &format!("malformed JSON: {e}")).await,
    };
    if let Some(obj) = body.as_object_mut() {
        obj.entry("kind")
            .or_insert_with(|| serde_json::Value::String(route.kind.to_string()));
    }
    let events = match parse_body(
        body.to_string().as_bytes(),
        Layout::Json,
        gw.time_bounds(),
        Some(claims),
    ) {
        Ok(events) => events,
        Err(errors) => {
            let reason = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.reason))
                .collect::<Vec<_>>()
                .join("; ");
            return dead_letter(gw, &dead, publish, &reason).await;
        }
    };
    // Kafka is down or slow: keep trying; the broker holds the message meanwhile.
    loop {
        match produce(gw, &events, publish.payload.len()).await {
            Ok(()) => {
                super::metrics::EVENTS_ACCEPTED.inc_by(events.len() as u64);
                return true;
            }
            // Permanent (a record over its topic's size limit): retrying
            // would hold the device's messages forever.
            Err(r) if r.retry_after.is_none() => {
                let reason = r
                    .errors
                    .iter()
                    .map(|e| e.reason.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                return dead_letter(gw, &dead, publish, &reason).await;
            }
            Err(r) => {
                tracing::warn!(reason = r.reason, topic = %publish.topic, "MQTT message not yet in Kafka; retrying");
                tokio::select! {
                    _ = shutdown.requested() => return false,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Why a payload of `len` bytes is refused before it is read, if it is.
fn unacceptable_size(len: usize, max_message_bytes: usize) -> Option<String> {
    if len == 0 {
        Some("empty message".to_string())
    } else if len > max_message_bytes {
        Some(format!(
            "message of {len} bytes exceeds the maximum of {max_message_bytes}"
        ))
    } else {
        None
    }
}

async fn dead_letter(gw: &Gateway, topic: &str, publish: &Publish, reason: &str) -> bool {
    super::metrics::EVENTS_REJECTED
        .with_label_values(&["mqtt_dead_lettered"])
        .inc();
    let size = publish.payload.len().to_string();
    let kept = publish.payload.len().min(DEAD_LETTER_PAYLOAD_BYTES);
    match gw
        .producer
        .dead_letter(
            topic,
            &publish.payload[..kept],
            reason,
            &[
                ("pulse-mqtt-topic", &publish.topic),
                ("pulse-mqtt-payload-bytes", &size),
            ],
        )
        .await
    {
        Ok(()) => {
            tracing::warn!(topic = %publish.topic, %reason, "MQTT message dead-lettered");
            true
        }
        Err(e) => {
            // Not acknowledged: the broker redelivers it later.
            tracing::warn!(error = %e, "cannot dead-letter MQTT message");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_route_to_tenant_device_and_kind() {
        assert_eq!(
            route("pulse", "pulse/acme/dev-1/telemetry"),
            Some(Route {
                tenant: "acme",
                device: "dev-1",
                kind: "telemetry"
            })
        );
        assert_eq!(route("pulse", "pulse/acme/dev-1"), None);
        assert_eq!(route("pulse", "pulse/acme/dev-1/telemetry/extra"), None);
        assert_eq!(route("pulse", "other/acme/dev-1/telemetry"), None);
        assert_eq!(route("pulse", "pulse//dev-1/telemetry"), None);
    }

    fn config() -> MqttConfig {
        MqttConfig {
            url: "mqtt://127.0.0.1:11883".into(),
            topic_root: "pulse".into(),
            client_id: "c".into(),
            username: None,
            password: None,
            max_in_flight: 10,
            max_message_bytes: 1 << 20,
        }
    }

    #[test]
    fn urls_parse_to_host_and_port() {
        let config = config();
        assert_eq!(
            options(&config).expect("valid").broker_address(),
            ("127.0.0.1".to_string(), 11883)
        );
        let bad = MqttConfig {
            url: "127.0.0.1:11883".into(),
            ..config.clone()
        };
        assert!(options(&bad).is_err());
        for max_message_bytes in [0, PROTOCOL_MAX_PACKET] {
            let bad = MqttConfig {
                max_message_bytes,
                ..config.clone()
            };
            assert!(options(&bad).is_err(), "{max_message_bytes}");
        }
    }

    #[test]
    fn the_client_reads_packets_well_above_the_maximum_message() {
        let config = config();
        let o = options(&config).expect("valid");
        assert_eq!(o.max_packet_size(), (2 << 20) + 64 * 1024);
        // The largest message plus the longest topic still fits.
        assert!(o.max_packet_size() >= (1 << 20) + 2 + 65_535 + 2);
        assert_eq!(read_ceiling(200 << 20), PROTOCOL_MAX_PACKET);
    }

    #[test]
    fn sizes_are_checked_before_the_payload_is_read() {
        assert_eq!(unacceptable_size(0, 10), Some("empty message".into()));
        assert_eq!(unacceptable_size(1, 10), None);
        assert_eq!(unacceptable_size(10, 10), None);
        assert_eq!(
            unacceptable_size(11, 10),
            Some("message of 11 bytes exceeds the maximum of 10".into())
        );
    }
}

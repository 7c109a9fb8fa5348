//! `pulse-ingest`: the HTTP gateway for device and app events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pulse_common::config::{KafkaArgs, LogArgs, RegistryArgs};
use pulse_common::files::{FileStore, StorageArgs, UploadLimits};
use pulse_common::kafka::{ensure_topics, max_message_bytes, TopicSpec};
use pulse_common::ops;
use pulse_common::retry::until_done;
use pulse_common::schemas::EventKind;
use pulse_ingest::gateway::auth::Credentials;
use pulse_ingest::gateway::encode::Encoders;
use pulse_ingest::gateway::files::{self, Uploads};
use pulse_ingest::gateway::http::{self, Gateway, RecordLimits, Slot};
use pulse_ingest::gateway::mqtt::{self, MqttConfig};
use pulse_ingest::gateway::openapi::TimeWindow;
use pulse_ingest::gateway::produce::EventProducer;
use tokio::sync::Semaphore;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "HTTP gateway: validates events and produces them to Kafka as Avro"
)]
struct Args {
    /// Address to serve the API, /metrics, /healthz and /readyz on.
    #[arg(long, env = "PULSE_INGEST_LISTEN", default_value = "127.0.0.1:18080")]
    listen: SocketAddr,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Partitions of the event topics when ingest creates them.
    #[arg(long, env = "PULSE_EVENT_PARTITIONS", default_value_t = 6)]
    partitions: i32,
    /// Replication factor of the event topics when ingest creates them (3 in production).
    #[arg(long, env = "PULSE_TOPIC_REPLICATION", default_value_t = 1)]
    replication: i32,
    /// Largest accepted request body, in bytes; larger ones get 413.
    #[arg(long, env = "PULSE_INGEST_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Oldest accepted event time, in seconds before now; 0 accepts any
    /// (for backfills).
    #[arg(long, env = "PULSE_INGEST_MAX_EVENT_AGE_S", default_value_t = 7 * 86_400)]
    max_event_age_s: u64,
    /// Furthest accepted event time, in seconds after now (device clock
    /// skew); 0 accepts any.
    #[arg(long, env = "PULSE_INGEST_MAX_CLOCK_SKEW_S", default_value_t = 300)]
    max_clock_skew_s: u64,
    /// How long a request waits for Kafka's acknowledgement before 503, in milliseconds.
    #[arg(
        long,
        env = "PULSE_INGEST_DELIVERY_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    delivery_timeout_ms: u64,
    /// Credentials file (TOML) of API keys and device tokens; without one,
    /// authentication is off and events name their own tenant.
    #[arg(long, env = "PULSE_INGEST_CREDENTIALS")]
    credentials: Option<std::path::PathBuf>,
    /// Most events waiting for Kafka at once; beyond it requests wait, then get 503.
    #[arg(
        long,
        env = "PULSE_INGEST_MAX_EVENTS_IN_FLIGHT",
        default_value_t = 100_000
    )]
    max_events_in_flight: usize,
    /// MQTT broker to bridge device messages from (mqtt://host:port); off when unset.
    #[arg(long, env = "PULSE_MQTT_URL")]
    mqtt_url: Option<String>,
    /// Devices publish to <root>/<tenant>/<device>/<kind>.
    #[arg(long, env = "PULSE_MQTT_TOPIC_ROOT", default_value = "pulse")]
    mqtt_topic_root: String,
    /// MQTT client id; the broker keeps unacknowledged messages for it. Unique per instance.
    #[arg(long, env = "PULSE_MQTT_CLIENT_ID", default_value = "pulse-ingest")]
    mqtt_client_id: String,
    #[arg(long, env = "PULSE_MQTT_USERNAME")]
    mqtt_username: Option<String>,
    #[arg(long, env = "PULSE_MQTT_PASSWORD", hide_env_values = true)]
    mqtt_password: Option<String>,
    /// Sizes the MQTT client's queues; how many messages the bridge handles at
    /// once is the broker's `max_inflight_messages`.
    #[arg(long, env = "PULSE_MQTT_MAX_IN_FLIGHT", default_value_t = 200)]
    mqtt_max_in_flight: u16,
    /// Largest accepted MQTT message payload, in bytes (as the HTTP body
    /// limit); larger ones are dead-lettered. Set the broker's
    /// max_packet_size to at most twice this plus 64 KiB.
    #[arg(long, env = "PULSE_MQTT_MAX_MESSAGE_BYTES", default_value_t = 1 << 20)]
    mqtt_max_message_bytes: usize,
    #[command(flatten)]
    storage: StorageArgs,
    /// Largest file `POST /v1/files` takes, in bytes; a larger one gets 413.
    #[arg(long, env = "PULSE_INGEST_MAX_FILE_BYTES", default_value_t = 2 << 30)]
    max_file_bytes: u64,
    /// Most bytes one tenant's files may take together; an upload beyond it gets 507.
    #[arg(long, env = "PULSE_INGEST_TENANT_QUOTA_BYTES", default_value_t = 100 << 30)]
    tenant_quota_bytes: u64,
    /// How long the part URLs of an upload `POST /v1/uploads` grants work,
    /// in seconds (S3 stores only).
    #[arg(long, env = "PULSE_INGEST_UPLOAD_URL_TTL_S", default_value_t = 3600)]
    upload_url_ttl_s: u64,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (shutdown, readiness) = ops::start_service(&args.log);
    let topics = args.kafka.topics();
    // The MQTT bridge dead-letters undecodable messages too.
    let specs: Vec<TopicSpec> = EventKind::ALL
        .iter()
        .map(|k| topics.events(*k))
        .chain([topics.dead_letter()])
        .map(|name| TopicSpec::new(name, args.partitions, args.replication))
        .collect();
    let credentials = match &args.credentials {
        Some(path) => Some(Arc::new(Credentials::load(path)?)),
        None => {
            tracing::warn!(
                "no credentials file: authentication is off, events name their own tenant"
            );
            None
        }
    };
    // Served before the dependencies answer: /readyz says what start-up
    // waits for, and events are refused with 503 until it is done.
    let listener = ops::bind(args.listen).await?;
    let slot = Slot::new(readiness.clone());
    let window = TimeWindow {
        max_age: Duration::from_secs(args.max_event_age_s),
        max_skew: Duration::from_secs(args.max_clock_skew_s),
        authenticated: args.credentials.is_some(),
    };
    let uploads = Arc::new(Uploads {
        store: FileStore::open(&args.storage)?,
        limits: UploadLimits {
            max_bytes: args.max_file_bytes,
            tenant_quota_bytes: args.tenant_quota_bytes,
        },
        url_ttl: Duration::from_secs(args.upload_url_ttl_s),
        credentials: credentials.clone(),
    });
    let app = http::router(slot.clone(), args.max_body_bytes, window)
        .merge(files::router(uploads))
        .layer(ops::request_tracing())
        .merge(ops::router(readiness.clone()));
    let server = tokio::spawn(ops::serve_on(listener, app, shutdown.clone()));

    let ensured = until_done("Kafka topics", &readiness, &shutdown, || {
        ensure_topics(&args.kafka.client, &specs, Duration::from_secs(30))
    })
    .await;
    let event_topics: Vec<String> = specs.iter().map(|t| t.name.clone()).collect();
    let limits = match ensured {
        Some(()) => {
            until_done("Kafka topic limits", &readiness, &shutdown, || {
                max_message_bytes(&args.kafka.client, &event_topics, Duration::from_secs(30))
            })
            .await
        }
        None => None,
    };
    let mut encoders = Encoders::new(&args.registry.url()?, &topics)?;
    let registered = match limits {
        Some(_) => {
            until_done("schema registry", &readiness, &shutdown, || {
                encoders.register_all()
            })
            .await
        }
        None => None,
    };
    let (Some(registered), Some(limits)) = (registered, limits) else {
        tracing::info!("shutdown requested during start-up");
        return server.await?;
    };
    for r in &registered {
        tracing::info!(
            subject = r.subject,
            version = r.version,
            id = r.id,
            "schema registered"
        );
    }
    encoders.accept(&registered);
    let delivery_timeout = Duration::from_millis(args.delivery_timeout_ms);
    let gateway = Arc::new(Gateway {
        topics,
        encoders,
        producer: EventProducer::new(&args.kafka.client, delivery_timeout)?,
        credentials,
        in_flight: Semaphore::new(args.max_events_in_flight),
        admission_timeout: delivery_timeout,
        max_event_age: window.max_age,
        max_clock_skew: window.max_skew,
        retry_after: Duration::from_secs(1),
        record_limits: RecordLimits::new(limits),
    });
    slot.fill(gateway.clone());
    // With the MQTT bridge on, ready means subscribed too.
    if args.mqtt_url.is_none() {
        readiness.set(true);
    } else {
        readiness.wait_for("the MQTT broker");
    }
    let bridge = args.mqtt_url.clone().map(|url| {
        let config = MqttConfig {
            url,
            topic_root: args.mqtt_topic_root.clone(),
            client_id: args.mqtt_client_id.clone(),
            username: args.mqtt_username.clone(),
            password: args.mqtt_password.clone(),
            max_in_flight: args.mqtt_max_in_flight,
            max_message_bytes: args.mqtt_max_message_bytes,
        };
        tokio::spawn(mqtt::run(
            gateway.clone(),
            config,
            readiness.clone(),
            shutdown.clone(),
        ))
    });
    server.await??;
    if let Some(bridge) = bridge {
        bridge.await??;
    }
    // Requests still in flight were answered; flush anything left queued.
    gateway.producer.flush(delivery_timeout);
    Ok(())
}

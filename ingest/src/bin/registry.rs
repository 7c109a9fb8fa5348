//! `pulse-registry`: a Confluent-compatible schema registry stored in Kafka.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use pulse_common::config::{KafkaClient, LogArgs};
use pulse_common::ops;
use pulse_ingest::registry::api;
use pulse_ingest::registry::compat::CompatibilityLevel;
use pulse_ingest::registry::state::RegistryState;
use pulse_ingest::registry::store::{KafkaStore, StoreConfig};
use tower_http::trace::TraceLayer;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Confluent-compatible schema registry backed by a compacted Kafka topic"
)]
struct Args {
    /// Address to serve the REST API, /metrics, /healthz and /readyz on.
    #[arg(long, env = "PULSE_REGISTRY_LISTEN", default_value = "127.0.0.1:18081")]
    listen: SocketAddr,
    #[command(flatten)]
    kafka: KafkaClient,
    /// Compacted topic holding the registry's state; instances sharing it form one registry.
    #[arg(long, env = "PULSE_REGISTRY_TOPIC", default_value = "_pulse_schemas")]
    topic: String,
    /// Replication factor used when the registry creates its topic (3 in production).
    #[arg(long, env = "PULSE_REGISTRY_TOPIC_REPLICATION", default_value_t = 1)]
    topic_replication: i32,
    /// Compatibility level of subjects without one of their own, until changed through PUT /config.
    #[arg(long, env = "PULSE_REGISTRY_COMPATIBILITY", default_value = "BACKWARD")]
    compatibility: CompatibilityLevel,
    /// Bound on each Kafka operation of a request, in milliseconds.
    #[arg(long, env = "PULSE_REGISTRY_TIMEOUT_MS", default_value_t = 10_000)]
    timeout_ms: u64,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (shutdown, readiness) = ops::start_service(&args.log);
    let store = KafkaStore::open(
        StoreConfig {
            kafka: args.kafka.clone(),
            topic: args.topic.clone(),
            replication_factor: args.topic_replication,
            timeout: Duration::from_millis(args.timeout_ms),
        },
        RegistryState::new(args.compatibility),
        shutdown.clone(),
    )
    .await?;
    readiness.set(true);
    tracing::info!(topic = %args.topic, "registry state loaded");
    let app = api::router(store)
        .merge(ops::router(readiness.clone()))
        .layer(TraceLayer::new_for_http());
    ops::serve(args.listen, app, shutdown).await
}

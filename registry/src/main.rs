//! `pulse-registry`: a Confluent-compatible schema registry stored in Kafka.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pulse_common::config::{KafkaClient, LogArgs};
use pulse_common::ops;
use pulse_common::retry::until_done;
use pulse_registry::access::{self, Users};
use pulse_registry::api;
use pulse_registry::compat::CompatibilityLevel;
use pulse_registry::limits::{
    Limits, DEFAULT_MAX_SCHEMA_BYTES, DEFAULT_MAX_SUBJECTS, DEFAULT_MAX_VERSIONS_PER_SUBJECT,
};
use pulse_registry::state::RegistryState;
use pulse_registry::store::{KafkaStore, StoreConfig};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Confluent-compatible schema registry backed by a compacted Kafka topic"
)]
struct Args {
    /// Address to serve the REST API, /healthz and /readyz on.
    #[arg(long, env = "PULSE_REGISTRY_LISTEN", default_value = "127.0.0.1:18081")]
    listen: SocketAddr,
    /// Address to serve /metrics (and /healthz, /readyz) on, apart from the API
    /// so scrapers need no registry credentials.
    #[arg(
        long,
        env = "PULSE_REGISTRY_METRICS_LISTEN",
        default_value = "127.0.0.1:18083"
    )]
    metrics_listen: SocketAddr,
    /// Credentials file (TOML) of users with the read or write role; without
    /// one the registry is open to anyone who can reach it.
    #[arg(long, env = "PULSE_REGISTRY_CREDENTIALS")]
    credentials: Option<PathBuf>,
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
    /// Largest schema text accepted, in bytes (larger: 413; on replay: skipped).
    #[arg(long, env = "PULSE_REGISTRY_MAX_SCHEMA_BYTES", default_value_t = DEFAULT_MAX_SCHEMA_BYTES)]
    max_schema_bytes: usize,
    /// Most subjects held, soft-deleted ones included (more: 429).
    #[arg(long, env = "PULSE_REGISTRY_MAX_SUBJECTS", default_value_t = DEFAULT_MAX_SUBJECTS)]
    max_subjects: usize,
    /// Most versions of one subject, soft-deleted ones included (more: 429).
    #[arg(
        long,
        env = "PULSE_REGISTRY_MAX_VERSIONS_PER_SUBJECT",
        default_value_t = DEFAULT_MAX_VERSIONS_PER_SUBJECT
    )]
    max_versions_per_subject: usize,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (shutdown, readiness) = ops::start_service(&args.log);
    // Read before Kafka is touched: a bad file fails the start at once.
    let users = match &args.credentials {
        Some(path) => Some(Arc::new(Users::load(path)?)),
        None => {
            tracing::warn!(
                "no credentials file (PULSE_REGISTRY_CREDENTIALS): anyone who can reach the registry may change its schemas"
            );
            None
        }
    };
    let limits = Limits {
        max_schema_bytes: args.max_schema_bytes,
        max_subjects: args.max_subjects,
        max_versions_per_subject: args.max_versions_per_subject,
    };
    let api_listener = ops::bind(args.listen).await?;
    let metrics_listener = ops::bind(args.metrics_listen).await?;
    // Metrics and probes answer from the start, so that the metrics port's
    // /readyz says what start-up waits for; the API port is served once
    // the log is read.
    let metrics = tokio::spawn(ops::serve_on(
        metrics_listener,
        ops::router(readiness.clone()),
        shutdown.clone(),
    ));
    let config = StoreConfig {
        kafka: args.kafka.clone(),
        topic: args.topic.clone(),
        replication_factor: args.topic_replication,
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let opened = until_done("Kafka (the schemas topic)", &readiness, &shutdown, || {
        let state = RegistryState::new(args.compatibility).with_limits(limits);
        KafkaStore::open(config.clone(), state, shutdown.clone())
    })
    .await;
    let Some(store) = opened else {
        tracing::info!("shutdown requested during start-up");
        return metrics.await?;
    };
    readiness.set(true);
    tracing::info!(topic = %args.topic, "registry state loaded");
    let api = match users {
        Some(users) => access::protect(api::router(store), users),
        None => api::router(store),
    };
    let app = api
        .layer(ops::request_tracing())
        .merge(ops::probes(readiness));
    ops::serve_on(api_listener, app, shutdown).await?;
    metrics.await??;
    Ok(())
}

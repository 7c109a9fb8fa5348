//! `pulse-query-api`: HTTP queries over ClickHouse and live WebSocket streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use pulse_common::config::{ClickHouseArgs, KafkaArgs, LogArgs};
use pulse_common::kafka::{ensure_topics, TopicSpec};
use pulse_common::ops::{self, Readiness};
use pulse_common::shutdown::Shutdown;
use pulse_query_api::audit::{self, AuditLog, AuditState};
use pulse_query_api::auth::{AuthArgs, Authenticator};
use pulse_query_api::budget::{self, BudgetArgs};
use pulse_query_api::cache::{self, CacheArgs, ResponseCache};
use pulse_query_api::fanout::{self, Feed};
use pulse_query_api::limits::{self, LimitArgs, Limiter};
use pulse_query_api::state::AppState;
use pulse_query_api::store::EventStore;
use pulse_query_api::stream::Live;
use pulse_query_api::{admin, aggregates, dashboard, export, openapi, routes, stream};
use tower_http::trace::TraceLayer;

#[derive(Parser, Debug)]
#[command(version, about = "HTTP and WebSocket API over scored events")]
struct Args {
    /// Address to serve the API, /metrics, /healthz and /readyz on.
    #[arg(long, env = "PULSE_QUERY_LISTEN", default_value = "127.0.0.1:18090")]
    listen: SocketAddr,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Partitions and replication of the results topic, if the API is first to create it.
    #[arg(long, env = "PULSE_RESULT_PARTITIONS", default_value_t = 6)]
    result_partitions: i32,
    #[arg(long, env = "PULSE_TOPIC_REPLICATION", default_value_t = 1)]
    replication: i32,
    /// Results buffered per WebSocket client; a client further behind skips ahead and is told how many it missed.
    #[arg(long, env = "PULSE_WS_BUFFER", default_value_t = 4096)]
    ws_buffer: usize,
    /// Recent results kept for clients that reconnect with `resume`; one from further back is told of the gap.
    #[arg(long, env = "PULSE_WS_RESUME_WINDOW", default_value_t = 100_000)]
    ws_resume_window: usize,
    /// Seconds between pings to each WebSocket client; one silent for three is dropped.
    #[arg(long, env = "PULSE_WS_HEARTBEAT_S", default_value_t = 15)]
    ws_heartbeat_s: u64,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    budget: BudgetArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (shutdown, readiness) = ops::start_service(&args.log);
    let auth = Arc::new(Authenticator::from_args(&args.auth)?);
    if let Some(remote) = auth.remote_keys() {
        remote.fetch_first(Duration::from_secs(30)).await?;
        let refresh = Duration::from_secs(args.auth.jwt_jwks_refresh_s.max(1));
        tokio::spawn(remote.keep_fresh(refresh, shutdown.clone()));
    }

    let clickhouse = pulse_common::clickhouse::client(&args.clickhouse);
    let store = EventStore::new(
        args.budget.reads(clickhouse.clone()),
        args.budget.exports(clickhouse),
        args.budget.export_idle(),
    );
    tokio::spawn(become_ready(
        store.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));

    let results_topic = args.kafka.topics().results();
    ensure_topics(
        &args.kafka.client,
        &[TopicSpec::new(
            results_topic.clone(),
            args.result_partitions,
            args.replication,
        )],
        Duration::from_secs(30),
    )
    .await?;
    let (consumer, start) = fanout::consumer_from_now(&args.kafka.client, &results_topic).await?;
    let feed = Feed::new(args.ws_buffer, args.ws_resume_window, &start);
    tokio::spawn(fanout::fan_out(consumer, feed.clone(), shutdown.clone()));

    let (audit_log, audit_writer) =
        AuditLog::start(pulse_common::clickhouse::client(&args.clickhouse));
    let api = Router::new()
        .route("/v1/events", get(routes::events))
        .route("/v1/events/{event_id}", get(routes::event))
        .route("/v1/anomalies", get(routes::anomalies))
        .route("/v1/devices", get(routes::devices))
        .route("/v1/devices/{source_id}/series", get(routes::series))
        .route("/v1/aggregates", get(aggregates::aggregates))
        // The hot reads dashboards repeat; inside the rate limits, so
        // answers from the cache count too.
        .route_layer(middleware::from_fn_with_state(
            ResponseCache::new(&args.cache),
            cache::middleware,
        ))
        .route("/v1/audit", get(admin::audit))
        // Reads only: streams and exports run as long as they need.
        .route_layer(middleware::from_fn_with_state(
            args.budget.deadline(),
            budget::deadline,
        ))
        .route("/v1/stream", get(stream::upgrade))
        .route("/v1/export", get(export::export))
        // Inside the audit layer, so refusals are recorded too.
        .route_layer(middleware::from_fn_with_state(
            Limiter::new(&args.limits)?,
            limits::middleware,
        ))
        .route_layer(middleware::from_fn_with_state(
            AuditState {
                auth: auth.clone(),
                log: audit_log,
            },
            audit::middleware,
        ))
        .with_state(AppState {
            store,
            live: Live {
                feed,
                heartbeat: Duration::from_secs(args.ws_heartbeat_s.max(1)),
            },
            auth,
        });
    let docs = Router::new()
        .route("/openapi.json", get(openapi::json))
        .route("/docs", get(openapi::docs));
    let app = api
        .merge(docs)
        .merge(dashboard::router())
        .merge(ops::router(readiness))
        .layer(TraceLayer::new_for_http());
    let served = ops::serve(args.listen, app, shutdown).await;
    // The router, and with it every audit sender, is gone: the writer
    // writes what is queued and stops.
    if let Err(e) = audit_writer.await {
        tracing::error!(error = %e, "audit writer failed");
    }
    served
}

/// Marks the API ready once its table answers, checking every second.
async fn become_ready(store: EventStore, readiness: Readiness, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.requested() => return,
            _ = tick.tick() => {}
        }
        if store.ready().await {
            readiness.set(true);
            tracing::info!("ClickHouse table found; ready");
            return;
        }
    }
}

//! `pulse-query-api`: HTTP queries over ClickHouse and live WebSocket streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pulse_common::config::{ClickHouseArgs, KafkaArgs, LogArgs};
use pulse_common::files::{FileStore, StorageArgs};
use pulse_common::jobs::{self, JobLedger, ReadLedger};
use pulse_common::kafka::TopicSpec;
use pulse_common::ops;
use pulse_query_api::app::{app, Layers};
use pulse_query_api::audit::AuditLog;
use pulse_query_api::auth::{AuthArgs, Authenticator};
use pulse_query_api::budget::BudgetArgs;
use pulse_query_api::cache::{CacheArgs, ResponseCache};
use pulse_query_api::fanout::Feed;
use pulse_query_api::files::Redirects;
use pulse_query_api::job_feed::JobFeed;
use pulse_query_api::jobs::JobDesk;
use pulse_query_api::limits::{LimitArgs, Limiter};
use pulse_query_api::redact;
use pulse_query_api::scheduler::Scheduler;
use pulse_query_api::startup::{JobsStartUp, StartUp};
use pulse_query_api::state::AppState;
use pulse_query_api::store::EventStore;
use pulse_query_api::stream::Live;
use pulse_query_api::stream_slots::StreamSlots;

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
    /// ClickHouse user that writes the audit trail, when it is not the
    /// reader: in production an insert-only user, so that the reader can
    /// stay read-only.
    #[arg(long, env = "PULSE_AUDIT_CLICKHOUSE_USER")]
    audit_clickhouse_user: Option<String>,
    #[arg(long, env = "PULSE_AUDIT_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    audit_clickhouse_password: Option<String>,
    /// Partitions and replication of the results topic, if the API is first to create it.
    #[arg(long, env = "PULSE_RESULT_PARTITIONS", default_value_t = 6)]
    result_partitions: i32,
    #[arg(long, env = "PULSE_TOPIC_REPLICATION", default_value_t = 1)]
    replication: i32,
    /// Partitions of the job topics, if the API is first to create them: the most workers that share the jobs.
    #[arg(long, env = "PULSE_JOB_PARTITIONS", default_value_t = 12)]
    job_partitions: i32,
    /// Results buffered per WebSocket client; a client further behind skips ahead and is told how many it missed.
    #[arg(long, env = "PULSE_WS_BUFFER", default_value_t = 4096)]
    ws_buffer: usize,
    /// Recent results kept for clients that reconnect with `resume`; one from further back is told of the gap.
    #[arg(long, env = "PULSE_WS_RESUME_WINDOW", default_value_t = 100_000)]
    ws_resume_window: usize,
    /// Seconds between pings to each WebSocket client; one silent for three is dropped.
    #[arg(long, env = "PULSE_WS_HEARTBEAT_S", default_value_t = 15)]
    ws_heartbeat_s: u64,
    /// Largest message (and frame) a WebSocket client may send, in bytes; a larger one ends its connection.
    #[arg(long, env = "PULSE_WS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    ws_max_message_bytes: usize,
    /// Most live streams a tenant may have open on this instance; one more is refused with 429.
    #[arg(long, env = "PULSE_WS_MAX_STREAMS_PER_TENANT", default_value_t = 100)]
    ws_max_streams_per_tenant: usize,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    budget: BudgetArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    storage: StorageArgs,
    /// With an S3 store: answer a download with a redirect to a presigned
    /// URL that works this many seconds, so the bytes come from the store
    /// itself; 0 streams them through the API.
    #[arg(long, env = "PULSE_FILES_REDIRECT_TTL_S", default_value_t = 0)]
    files_redirect_ttl_s: u64,
    /// How often report schedules are read and their due jobs queued, in seconds.
    #[arg(long, env = "PULSE_SCHEDULE_TICK_S", default_value_t = 30)]
    schedule_tick_s: u64,
    /// Closest two occurrences of one report schedule may be, in seconds.
    #[arg(long, env = "PULSE_SCHEDULE_MIN_INTERVAL_S", default_value_t = 3600)]
    schedule_min_interval_s: u64,
    #[command(flatten)]
    log: LogArgs,
}

/// The ClickHouse user that writes the audit trail and job transitions.
fn writer_args(args: &Args) -> ClickHouseArgs {
    match &args.audit_clickhouse_user {
        Some(user) => ClickHouseArgs {
            user: user.clone(),
            password: args.audit_clickhouse_password.clone().unwrap_or_default(),
            ..args.clickhouse.clone()
        },
        None => args.clickhouse.clone(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (shutdown, readiness) = ops::start_service(&args.log);
    let auth = Arc::new(Authenticator::from_args(&args.auth)?);

    // Bound first, so a taken port fails the start; served while start-up
    // waits, so /readyz can say what for.
    let listener = ops::bind(args.listen).await?;
    let clickhouse = pulse_common::clickhouse::client(&args.clickhouse);
    let store = EventStore::new(
        args.budget.reads(clickhouse.clone()),
        args.budget.exports(clickhouse.clone()),
        args.budget.export_idle(),
    );
    let feed = Feed::new(args.ws_buffer, args.ws_resume_window);
    let job_feed = JobFeed::new(args.ws_buffer);
    let files = FileStore::open(&args.storage)?;
    let topics = args.kafka.topics();
    let ledger = JobLedger::new(
        args.budget.reads(clickhouse),
        pulse_common::clickhouse::client(&writer_args(&args)),
        &args.kafka.client,
        topics.clone(),
    )?;
    let reads = ReadLedger::new(
        args.budget
            .reads(pulse_common::clickhouse::client(&args.clickhouse)),
        pulse_common::clickhouse::client(&writer_args(&args)),
    );
    let desk = JobDesk {
        ledger: ledger.clone(),
        reads: reads.clone(),
        files: files.clone(),
        schedule_min_interval_ms: i64::try_from(args.schedule_min_interval_s.saturating_mul(1000))
            .unwrap_or(i64::MAX),
    };
    tokio::spawn(
        Scheduler {
            desk: desk.clone(),
            tick: Duration::from_secs(args.schedule_tick_s.max(1)),
            shutdown: shutdown.clone(),
        }
        .run(),
    );
    let job_topics = jobs::topic_specs(&topics, args.job_partitions, args.replication);
    tokio::spawn(
        StartUp {
            jwks: auth.remote_keys().map(|keys| {
                (
                    keys,
                    Duration::from_secs(args.auth.jwt_jwks_refresh_s.max(1)),
                )
            }),
            kafka: args.kafka.client.clone(),
            jobs: Some(JobsStartUp {
                topics: job_topics,
                ledger: ledger.clone(),
                reads,
                clickhouse: args.clickhouse.clone(),
                events: topics.job_events(),
                feed: job_feed.clone(),
            }),
            results: TopicSpec::new(
                args.kafka.topics().results(),
                args.result_partitions,
                args.replication,
            ),
            store: store.clone(),
            feed: feed.clone(),
            readiness: readiness.clone(),
            shutdown: shutdown.clone(),
        }
        .run(),
    );

    let (audit_log, audit_writer) = AuditLog::start(&writer_args(&args), shutdown.clone());
    let state = AppState {
        store,
        live: Live {
            feed,
            jobs: job_feed,
            heartbeat: Duration::from_secs(args.ws_heartbeat_s.max(1)),
            max_message_bytes: args.ws_max_message_bytes.max(1),
            slots: StreamSlots::new(args.ws_max_streams_per_tenant),
        },
        auth: auth.clone(),
        files: files.clone(),
        redirects: Redirects(
            (args.files_redirect_ttl_s > 0).then(|| Duration::from_secs(args.files_redirect_ttl_s)),
        ),
        jobs: Some(desk.clone()),
    };
    let layers = Layers {
        cache: ResponseCache::new(&args.cache),
        deadline: args.budget.deadline(),
        limiter: Limiter::new(&args.limits)?,
        auth,
        audit: audit_log,
    };
    let app = app(state, layers)
        // The default span logs the URI, which may hold a stream's token.
        .layer(ops::request_tracing().make_span_with(redact::request_span))
        .merge(ops::router(readiness));
    let served = ops::serve_on(listener, app, shutdown).await;
    // The router, and with it every audit sender, is gone: the writer
    // writes what is queued and stops.
    if let Err(e) = audit_writer.await {
        tracing::error!(error = %e, "audit writer failed");
    }
    served
}

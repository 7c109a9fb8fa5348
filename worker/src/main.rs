//! `pulse-worker`: runs background jobs from the jobs topic.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use pulse_common::config::{ClickHouseArgs, KafkaArgs, LogArgs, RegistryArgs};
use pulse_common::files::{FileStore, StorageArgs};
use pulse_common::jobs::{self, JobKind, JobLedger, ReadLedger};
use pulse_common::kafka::ensure_topics;
use pulse_common::ops;
use pulse_common::retry::until_done;
use pulse_query_api::store::EventStore;
use pulse_worker::cancels::{self, Cancels};
use pulse_worker::consume;
use pulse_worker::ocr::{Engine, OcrArgs};
use pulse_worker::report::Reports;
use pulse_worker::run::Runner;
use pulse_worker::telemetry::Telemetry;
use pulse_worker::vision::Vision;

#[derive(Parser, Debug)]
#[command(version, about = "Runs Pulse's background jobs")]
struct Args {
    /// Address to serve /metrics, /healthz and /readyz on.
    #[arg(long, env = "PULSE_WORKER_LISTEN", default_value = "127.0.0.1:18095")]
    listen: SocketAddr,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    ocr: OcrArgs,
    #[command(flatten)]
    archive: pulse_worker::archive::Limits,
    /// Snapshots of one OCR job read at once.
    #[arg(long, env = "PULSE_OCR_IN_FLIGHT", default_value_t = 4)]
    ocr_in_flight: usize,
    /// Kinds of job this worker takes, each from its own requests topic
    /// (`report`, `ocr`): GPU workers may take only `ocr`.
    #[arg(
        long,
        env = "PULSE_WORKER_KINDS",
        value_delimiter = ',',
        default_value = "report,ocr"
    )]
    kinds: Vec<String>,
    /// Jobs run at once (their snapshots share the OCR models' batches).
    #[arg(long, env = "PULSE_WORKER_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,
    /// Consumer group of the workers that share the jobs.
    #[arg(long, env = "PULSE_WORKER_GROUP", default_value = "pulse-worker")]
    group: String,
    /// Attempts a job may start before it fails; a worker crash counts as one.
    #[arg(long, env = "PULSE_WORKER_MAX_ATTEMPTS", default_value_t = 5)]
    max_attempts: u32,
    /// How soon the group hands a dead worker's job to another, in milliseconds.
    #[arg(
        long,
        env = "PULSE_WORKER_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    session_timeout_ms: u32,
    /// Seconds a running job may go on after SIGTERM before it is left to the next worker.
    #[arg(long, env = "PULSE_WORKER_DRAIN_S", default_value_t = 30)]
    drain_s: u64,
    /// Longest a report may go without a byte from ClickHouse, in seconds.
    #[arg(long, env = "PULSE_WORKER_EXPORT_IDLE_TIMEOUT_S", default_value_t = 60)]
    export_idle_timeout_s: u64,
    /// Partitions of the job topics, if the worker is first to create them.
    #[arg(long, env = "PULSE_JOB_PARTITIONS", default_value_t = 12)]
    job_partitions: i32,
    #[arg(long, env = "PULSE_TOPIC_REPLICATION", default_value_t = 1)]
    replication: i32,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kinds = args
        .kinds
        .iter()
        .map(|k| {
            JobKind::parse(k.trim()).ok_or_else(|| {
                anyhow::anyhow!("PULSE_WORKER_KINDS: unknown job kind '{k}' (report, ocr)")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (shutdown, readiness) = ops::start_service(&args.log);
    let listener = ops::bind(args.listen).await?;
    let served = tokio::spawn(ops::serve_on(
        listener,
        ops::router(readiness.clone()),
        shutdown.clone(),
    ));

    let engine = match args.ocr.ocr_model_dir.is_some() {
        true => {
            let ocr = args.ocr.clone();
            Some(tokio::task::spawn_blocking(move || Engine::load(&ocr)).await??)
        }
        false => {
            tracing::warn!("PULSE_OCR_MODEL_DIR is not set: OCR jobs fail on this worker");
            None
        }
    };
    let clickhouse = pulse_common::clickhouse::client(&args.clickhouse);
    let reads = ReadLedger::new(clickhouse.clone(), clickhouse.clone());
    let topics = args.kafka.topics();
    let ledger = JobLedger::new(
        clickhouse.clone(),
        clickhouse.clone(),
        &args.kafka.client,
        topics.clone(),
    )?;
    let specs = jobs::topic_specs(&topics, args.job_partitions, args.replication);
    let kafka = args.kafka.client.clone();
    let cluster = args.clickhouse.cluster.clone();
    let made = until_done(
        "the job topics and table",
        &readiness,
        &shutdown,
        || async {
            ensure_topics(&kafka, &specs, Duration::from_secs(10)).await?;
            ledger
                .create_table(&args.clickhouse.database, cluster.as_deref())
                .await?;
            reads
                .create_table(&args.clickhouse.database, cluster.as_deref())
                .await?;
            anyhow::Ok(())
        },
    )
    .await;
    let telemetry = Telemetry::new(&args.registry.url()?, &kafka, &topics)?;
    let control = match made {
        Some(_) => {
            until_done("the control topic", &readiness, &shutdown, || async {
                cancels::consumer(&kafka, &topics.job_control())
            })
            .await
        }
        None => None,
    };
    let jobs = match control {
        Some(_) => {
            until_done("the jobs topic", &readiness, &shutdown, || async {
                let requests: Vec<String> = kinds
                    .iter()
                    .map(|&k| jobs::requests_topic(&topics, k))
                    .collect();
                consume::consumer(&kafka, &args.group, &requests, args.session_timeout_ms)
            })
            .await
        }
        None => None,
    };
    if let (Some(control), Some(jobs)) = (control, jobs) {
        let files = FileStore::open(&args.storage)?;
        let (cancels, orders) = Cancels::new();
        tokio::spawn(cancels::follow(control, orders, shutdown.clone()));
        let exports = clickhouse.clone().with_setting("max_execution_time", "0");
        let runner = Runner {
            ledger,
            reports: Reports {
                events: EventStore::new(
                    clickhouse.clone(),
                    exports,
                    Duration::from_secs(args.export_idle_timeout_s.max(1)),
                ),
                counts: clickhouse,
                files: files.clone(),
            },
            vision: Vision {
                engine,
                files,
                reads,
                telemetry: std::sync::Arc::new(telemetry),
                in_flight: args.ocr_in_flight.max(1),
                archive_limits: args.archive,
            },
            cancels,
            max_attempts: args.max_attempts.max(1),
            drain: Duration::from_secs(args.drain_s),
            shutdown: shutdown.clone(),
        };
        readiness.set(true);
        tracing::info!(group = %args.group, ?kinds, concurrency = args.concurrency, "taking jobs");
        consume::run(jobs, runner, args.concurrency).await;
    }
    shutdown.requested().await;
    served.await?
}

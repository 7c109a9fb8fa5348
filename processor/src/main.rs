//! `pulse-processor`: Kafka -> ONNX scoring -> ClickHouse and results topic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pulse_common::config::{ClickHouseArgs, KafkaArgs, LogArgs, RegistryArgs};
use pulse_common::kafka::{client_config, durable_producer_config};
use pulse_common::ops;
use pulse_common::retry::until_done;
use pulse_common::schemas::EventKind;
use pulse_processor::decode::records::Decoder;
use pulse_processor::pipeline::{Batching, Pipeline, Source, StateSettings};
use pulse_processor::score::scorer::{ExecutionProvider, Scorer};
use pulse_processor::sink::delivery::{Delivery, TRANSACTION_TIMEOUT};
use pulse_processor::sink::migrations;
use pulse_processor::sink::stored::Watermarks;
use pulse_processor::source::assignment::{Assignment, RebalanceAware};
use pulse_processor::source::in_flight::InFlight;
use pulse_processor::source::topics;
use pulse_processor::state::device::FeatureSettings;
use pulse_processor::state::store::StateLimits;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, Producer};
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;

// Every event allocates a few dozen small strings (readings, feature names,
// result JSON) that live for one batch; mimalloc serves that pattern with
// markedly less time in the allocator than glibc's malloc. Its `override`
// feature also takes malloc/free for the C libraries: librdkafka copies each
// produced record into a malloc'd buffer, and glibc gave those pages back and
// faulted them in again every batch.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Scores events with an ONNX model and stores them in ClickHouse"
)]
struct Args {
    /// Address to serve /metrics, /healthz and /readyz on.
    #[arg(
        long,
        env = "PULSE_PROCESSOR_LISTEN",
        default_value = "127.0.0.1:18082"
    )]
    listen: SocketAddr,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Static group membership (e.g. the pod name): a restarted instance takes
    /// its partitions straight back instead of waiting out its old session.
    #[arg(long, env = "PULSE_PROCESSOR_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Consumer group shared by all processor instances.
    #[arg(long, env = "PULSE_PROCESSOR_GROUP", default_value = "pulse-processor")]
    group: String,
    /// ONNX model to score telemetry with.
    #[arg(
        long,
        env = "PULSE_MODEL_PATH",
        default_value = "processor/model/anomaly.onnx"
    )]
    model: PathBuf,
    /// ONNX Runtime shared library (libonnxruntime.so).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_dylib: PathBuf,
    /// ONNX Runtime's execution provider: where the model runs.
    #[arg(long, env = "PULSE_EXECUTION_PROVIDER", default_value = "cpu")]
    execution_provider: ExecutionProvider,
    /// Threads ONNX Runtime may use.
    #[arg(long, env = "PULSE_INFERENCE_THREADS", default_value_t = 1)]
    inference_threads: usize,
    /// Most events per batch: the size batches reach while there is a
    /// backlog. ClickHouse favours few large inserts (each one makes parts
    /// that it merges later), and every batch is one Kafka transaction; a
    /// lower maximum shortens the latency tail after a stall and holds less
    /// memory (two batches at most), a higher one clears a backlog faster.
    #[arg(long, env = "PULSE_MAX_BATCH", default_value_t = 50000)]
    max_batch: usize,
    /// Longest wait to fill a batch, in milliseconds.
    #[arg(long, env = "PULSE_MAX_WAIT_MS", default_value_t = 50)]
    max_wait_ms: u64,
    /// Weight of the newest reading in each device's moving mean and variance.
    #[arg(long, env = "PULSE_EWMA_ALPHA", default_value_t = 0.1)]
    ewma_alpha: f64,
    /// Readings a device must have sent before its z-scores count.
    #[arg(long, env = "PULSE_ZSCORE_WARMUP", default_value_t = 10)]
    zscore_warmup: u64,
    /// Recent event ids remembered per device to drop clients' retries.
    #[arg(long, env = "PULSE_DEDUP_WINDOW", default_value_t = 16)]
    dedup_window: usize,
    /// Most devices of one tenant in one partition: events of further
    /// devices are dead-lettered. Bounds what a partition's restore reads.
    #[arg(long, env = "PULSE_MAX_DEVICES_PER_TENANT", default_value_t = 100_000)]
    max_devices_per_tenant: usize,
    /// Devices whose latest event is older than this are forgotten (a
    /// tombstone in the changelog), in seconds; 0 keeps them forever.
    #[arg(long, env = "PULSE_DEVICE_IDLE_TTL_S", default_value_t = 30 * 86_400)]
    device_idle_ttl_s: i64,
    /// Longest time to read a partition's device state back from its changelog, in seconds.
    #[arg(long, env = "PULSE_RESTORE_TIMEOUT_S", default_value_t = 120)]
    restore_timeout_s: u64,
    /// Partitions of the event topics when created here (ingest normally creates them).
    #[arg(long, env = "PULSE_EVENT_PARTITIONS", default_value_t = 6)]
    event_partitions: i32,
    /// Partitions of the results and dead-letter topics when created here.
    #[arg(long, env = "PULSE_RESULT_PARTITIONS", default_value_t = 6)]
    result_partitions: i32,
    /// Replication factor of the topics created here (3 in production).
    #[arg(long, env = "PULSE_TOPIC_REPLICATION", default_value_t = 1)]
    replication: i32,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (shutdown, readiness) = ops::start_service(&args.log);
    without_transparent_huge_pages();
    keep_freed_memory_for_later_batches();
    // Bound before anything else: a processor whose port is taken stops
    // at once rather than run without metrics or health checks.
    let listener = ops::bind(args.listen).await?;
    let ops_task = tokio::spawn(ops::serve_on(
        listener,
        ops::router(readiness.clone()),
        shutdown.clone(),
    ));

    let topics = args.kafka.topics();
    let changelogs = topics::Changelogs::new(&args.group)?;
    let clickhouse = pulse_common::clickhouse::client(&args.clickhouse);
    // The start-up steps wait on different servers: taken together, they
    // cost the slowest of them rather than their sum.
    let layout = topics::Layout {
        event_partitions: args.event_partitions,
        result_partitions: args.result_partitions,
        replication: args.replication,
    };
    // A task of its own: looking up topics blocks its thread, which would
    // stall the steps awaited beside it.
    let ensuring = {
        let (kafka, topics, changelogs) = (
            args.kafka.client.clone(),
            topics.clone(),
            changelogs.clone(),
        );
        let (readiness, shutdown) = (readiness.clone(), shutdown.clone());
        tokio::spawn(async move {
            until_done("Kafka topics", &readiness, &shutdown, || {
                topics::ensure(&kafka, &topics, &changelogs, &layout)
            })
            .await
        })
    };
    let loading = {
        let (dylib, model) = (args.ort_dylib.clone(), args.model.clone());
        let (provider, threads) = (args.execution_provider, args.inference_threads);
        tokio::task::spawn_blocking(move || Scorer::load(&dylib, &model, provider, threads))
    };
    let initialising = until_done("Kafka transactions", &readiness, &shutdown, || {
        let (kafka, group) = (args.kafka.client.clone(), args.group.clone());
        let instance_id = args.instance_id.clone();
        let max_batch = args.max_batch;
        async move {
            tokio::task::spawn_blocking(move || {
                transactional_producer(&kafka, &group, instance_id.as_deref(), max_batch)
            })
            .await?
        }
    });
    // Creating the clients costs tens of milliseconds (the registry client
    // loads the system's certificates): done beside the other steps.
    let watermarks = Watermarks::default();
    let assignment = Assignment::default();
    let in_flight = InFlight::default();
    let creating = {
        let (kafka, group) = (args.kafka.client.clone(), args.group.clone());
        let instance_id = args.instance_id.clone();
        let registry_url = args.registry.url()?;
        let context = RebalanceAware {
            assignment: assignment.clone(),
            on_move: {
                let forget = watermarks.clone();
                Box::new(move || forget.forget_all())
            },
            in_flight: in_flight.clone(),
        };
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let consumer = group_consumer(&kafka, &group, instance_id.as_deref(), context)?;
            let registry = SrSettings::new_builder(registry_url).no_proxy().build()?;
            Ok((consumer, Decoder::new(AvroDecoder::new(registry))))
        })
    };
    let (ensured, migrated, loaded, initialised, created) = tokio::join!(
        timed("topics ensured", ensuring),
        timed(
            "ClickHouse migrated",
            until_done("ClickHouse migrations", &readiness, &shutdown, || {
                migrations::apply(
                    &clickhouse,
                    &args.clickhouse.database,
                    args.clickhouse.cluster.as_deref(),
                )
            })
        ),
        timed("model loaded", loading),
        timed("transactions initialised", initialising),
        timed("clients created", creating),
    );
    let scorer = Arc::new(loaded??);
    let (consumer, decoder) = created??;
    // Each dependency step gives up only when shutdown was requested.
    let (Some(()), Some(()), Some(producer)) = (ensured?, migrated, initialised) else {
        tracing::info!("shutdown requested during start-up");
        return ops_task.await?;
    };

    let threshold = scorer.threshold;
    let event_topics: Vec<String> = EventKind::ALL.iter().map(|k| topics.events(*k)).collect();
    let names: Vec<&str> = event_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;

    let delivery = Delivery {
        clickhouse,
        producer,
        watermarks,
        results_topic: topics.results(),
        alerts_topic: topics.alerts(),
        threshold,
        dead_letter_topic: topics.dead_letter(),
        timeout: Duration::from_secs(30),
    };
    let state = StateSettings {
        features: FeatureSettings {
            alpha: args.ewma_alpha,
            warmup: args.zscore_warmup,
            dedup_window: args.dedup_window,
        },
        limits: StateLimits {
            max_devices_per_tenant: args.max_devices_per_tenant,
            idle_ttl_ms: args.device_idle_ttl_s.saturating_mul(1000),
        },
        changelogs,
        restore_config: client_config(&args.kafka.client),
        restore_timeout: Duration::from_secs(args.restore_timeout_s),
    };
    let batching = Batching {
        max_batch: args.max_batch,
        max_wait: Duration::from_millis(args.max_wait_ms),
    };
    let source = Source {
        consumer,
        assignment,
        in_flight,
    };
    let pipeline = Pipeline::new(source, decoder, state, scorer, delivery, topics, batching);
    readiness.set(true);
    tracing::info!(group = %args.group, topics = ?event_topics, "processing");
    let result = pipeline.run(shutdown).await;
    readiness.set(false);
    if let Err(e) = result {
        // The ops server would otherwise keep the process alive, and
        // answering /healthz, until SIGTERM: exit so it is restarted.
        ops_task.abort();
        tracing::error!(error = format!("{e:#}"), "processing stopped");
        return Err(e);
    }
    ops_task.await??;
    Ok(())
}

/// Runs a start-up step, logging how long it took: start-up is on the path
/// of every restart and rebalance.
async fn timed<T>(step: &'static str, f: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = f.await;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "start-up: {step}"
    );
    out
}

/// Every batch allocates and frees tens of megabytes of rows. With
/// transparent huge pages, memory the allocator takes back from the kernel
/// comes as 2 MiB pages zeroed whole on first touch, which cost the
/// processor about a tenth of its CPU time; 4 KiB pages are zeroed as used.
fn without_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sets a flag of this process's memory map; no pointer passed.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::info!(
                error = %std::io::Error::last_os_error(),
                "transparent huge pages stay on"
            );
        }
    }
}

/// How long memory freed by one batch stays with the allocator before it is
/// given back to the kernel. mimalloc's default, one second, gave back
/// memory a later batch then asked for again: half the processor's page
/// faults (each a page zeroed anew), about 0.5 s of system time per
/// 1,000,000 events. Held a little longer, it serves the next batches; an
/// instance that goes idle still gives it back.
const ALLOCATOR_PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// `mi_option_purge_delay` in mimalloc.h, which libmimalloc-sys names no
/// constant for; a test checks the index by the option's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn keep_freed_memory_for_later_batches() {
    // Set here unless the operator chose a value (MIMALLOC_PURGE_DELAY).
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of the allocator's options; no pointer passed.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS) }
    }
}

/// The consumer of the event topics, not subscribed yet. Offsets are
/// committed inside the producer's transactions, never by the consumer.
fn group_consumer(
    kafka: &pulse_common::config::KafkaClient,
    group: &str,
    instance_id: Option<&str>,
    context: RebalanceAware,
) -> anyhow::Result<StreamConsumer<RebalanceAware>> {
    let mut config = client_config(kafka);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // Bounds what is prefetched while the sink is down and nothing is consumed.
        .set("queued.max.messages.kbytes", "16384")
        .set("partition.assignment.strategy", "cooperative-sticky");
    if let Some(id) = instance_id {
        config.set("group.instance.id", id);
    }
    Ok(config.create_with_context(context)?)
}

/// A producer whose transactions carry results, dead letters and offsets.
/// Zombies are fenced through the consumer group's generation (KIP-447).
/// With a stable instance id, a restarted instance reuses its transactional
/// id, which aborts the transaction its predecessor left open at once;
/// without one, that transaction holds back the partitions' offsets until it
/// times out, so the timeout is kept short.
fn transactional_producer(
    kafka: &pulse_common::config::KafkaClient,
    group: &str,
    instance_id: Option<&str>,
    max_batch: usize,
) -> anyhow::Result<FutureProducer> {
    let id = match instance_id {
        Some(i) => format!("{group}-{i}"),
        None => format!("{group}-{}-{}", std::process::id(), now_nanos()),
    };
    let mut cfg = durable_producer_config(kafka);
    cfg.set("transactional.id", id)
        .set(
            "transaction.timeout.ms",
            TRANSACTION_TIMEOUT.as_millis().to_string(),
        )
        .set(
            "queue.buffering.max.messages",
            queued_records(max_batch).to_string(),
        );
    let producer: FutureProducer = cfg.create()?;
    // Connected first: without a broker connection up yet, the client's
    // first look for the transaction coordinator often finds none and the
    // next comes half a second later (start-up 0.5 s instead of 0.07 s).
    producer
        .client()
        .fetch_metadata(None, Duration::from_secs(30))?;
    producer.init_transactions(Duration::from_secs(30))?;
    Ok(producer)
}

/// Room in the producer's queue for every record of one batch's
/// transaction, which are all handed over before any is awaited: a result,
/// an alert and a device state per event at most (a dead letter replaces
/// all three). The client's default, 100,000, is kept as the least, and
/// its own limit as the most.
fn queued_records(max_batch: usize) -> usize {
    max_batch
        .saturating_mul(3)
        .clamp(100_000, i32::MAX as usize)
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{
        keep_freed_memory_for_later_batches, queued_records, ALLOCATOR_PURGE_DELAY_MS,
        MI_OPTION_PURGE_DELAY,
    };

    #[test]
    fn the_allocator_option_set_is_its_purge_delay() {
        // SAFETY: reads one of the allocator's options; no pointer passed.
        let delay = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // mimalloc's documented default for its purge delay, in ms.
            assert_eq!(delay(), 1000, "not the purge delay's index");
            keep_freed_memory_for_later_batches();
            assert_eq!(delay(), ALLOCATOR_PURGE_DELAY_MS);
        }
    }

    #[test]
    fn the_producer_queue_holds_a_whole_batch() {
        assert_eq!(queued_records(200), 100_000);
        assert_eq!(queued_records(50_000), 150_000);
        assert_eq!(queued_records(usize::MAX), i32::MAX as usize);
    }
}

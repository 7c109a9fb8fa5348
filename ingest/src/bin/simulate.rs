//! `pulse-simulate`: a device fleet sending telemetry with labelled anomalies
//! over HTTP, MQTT or straight to Kafka, at a target rate or as fast as the
//! path allows, and cameras uploading meter snapshots for OCR jobs; prints a
//! JSON summary (events/s, p50/p99 latency, snapshots) at the end.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pulse_common::clock::now_ms;
use pulse_common::config::{KafkaArgs, LogArgs, RegistryArgs};
use pulse_ingest::simulate::camera::{CameraSettings, CameraStats, Cameras};
use pulse_ingest::simulate::fleet::with_retries;
use pulse_ingest::simulate::send::{Sender, Transport};
use pulse_ingest::simulate::snapshots::Renderer;
use pulse_ingest::simulate::stats::Stats;
use pulse_ingest::simulate::Fleet;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(version, about = "Simulated device fleet for demos and load runs")]
struct Args {
    /// How events travel: ingest's HTTP API, MQTT (through the bridge), or straight to Kafka.
    #[arg(long, env = "PULSE_SIM_TRANSPORT", default_value = "http")]
    transport: Transport,
    /// Ingest's base URL (http transport).
    #[arg(
        long,
        env = "PULSE_INGEST_URL",
        default_value = "http://127.0.0.1:18080"
    )]
    ingest_url: String,
    /// MQTT broker (mqtt transport).
    #[arg(long, env = "PULSE_MQTT_URL", default_value = "mqtt://127.0.0.1:11883")]
    mqtt_url: String,
    #[arg(long, env = "PULSE_MQTT_TOPIC_ROOT", default_value = "pulse")]
    mqtt_topic_root: String,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[arg(long, env = "PULSE_SIM_TENANT", default_value = "demo")]
    tenant: String,
    /// Telemetry devices (0: cameras only).
    #[arg(long, env = "PULSE_SIM_DEVICES", default_value_t = 50)]
    devices: usize,
    /// Cameras uploading a meter snapshot each period and queueing its OCR
    /// job (needs --query-token).
    #[arg(long, env = "PULSE_SIM_CAMERAS", default_value_t = 0)]
    cameras: usize,
    /// Seconds between one camera's snapshots.
    #[arg(long, env = "PULSE_SIM_CAMERA_PERIOD_S", default_value_t = 30.0)]
    camera_period_s: f64,
    /// Snapshots each camera takes (0: until the run ends).
    #[arg(long, env = "PULSE_SIM_CAMERA_SNAPSHOTS", default_value_t = 0)]
    camera_snapshots: u64,
    /// Snapshot size in pixels, width x height.
    #[arg(long, env = "PULSE_SIM_CAMERA_WIDTH", default_value_t = 1280)]
    camera_width: u32,
    #[arg(long, env = "PULSE_SIM_CAMERA_HEIGHT", default_value_t = 720)]
    camera_height: u32,
    /// The query API's base URL, where cameras queue OCR jobs.
    #[arg(
        long,
        env = "PULSE_QUERY_URL",
        default_value = "http://127.0.0.1:18090"
    )]
    query_url: String,
    /// The query API's bearer token for the tenant (a role that may submit jobs).
    #[arg(long, env = "PULSE_QUERY_TOKEN", hide_env_values = true)]
    query_token: Option<String>,
    /// Events per second across the fleet; 0 sends as fast as the path allows.
    #[arg(long, env = "PULSE_SIM_RATE", default_value_t = 100)]
    rate: u32,
    /// Share of events carrying an injected, labelled anomaly.
    #[arg(long, env = "PULSE_SIM_ANOMALY_RATE", default_value_t = 0.01)]
    anomaly_rate: f64,
    /// Share of events sent twice with the same id, as retrying clients do.
    #[arg(long, env = "PULSE_SIM_RETRY_RATE", default_value_t = 0.0)]
    retry_rate: f64,
    /// Events per send (one HTTP request, or one Kafka round).
    #[arg(long, env = "PULSE_SIM_BATCH", default_value_t = 50)]
    batch: usize,
    /// Senders working at once.
    #[arg(long, env = "PULSE_SIM_CONCURRENCY", default_value_t = 1)]
    concurrency: usize,
    /// Stop after this many events (0: no limit).
    #[arg(long, env = "PULSE_SIM_COUNT", default_value_t = 0)]
    count: u64,
    /// Stop after this many seconds (0: no limit).
    #[arg(long, env = "PULSE_SIM_DURATION_S", default_value_t = 0)]
    duration_s: u64,
    #[arg(long, env = "PULSE_SIM_SEED", default_value_t = 42)]
    seed: u64,
    /// Write each sent event's id, label (normal, heat_spike, vibration_burst)
    /// and readings to this CSV file, to score detection against.
    #[arg(long, env = "PULSE_SIM_LABELS_OUT")]
    labels_out: Option<std::path::PathBuf>,
    /// API key sent as a bearer token, when ingest requires credentials.
    #[arg(long, env = "PULSE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (shutdown, _) = pulse_common::ops::start_service(&args.log);
    anyhow::ensure!(
        args.batch > 0 && args.concurrency > 0,
        "batch and concurrency must be positive"
    );
    anyhow::ensure!(
        args.devices > 0 || args.cameras > 0,
        "nothing to simulate: no devices and no cameras"
    );
    let cameras = cameras(&args)?;
    let sender = Arc::new(match args.transport {
        Transport::None => Sender::None,
        Transport::Http => Sender::http(&args.ingest_url, args.api_key.clone()),
        Transport::Mqtt => Sender::mqtt(
            &args.mqtt_url,
            &args.mqtt_topic_root,
            &format!("pulse-simulate-{}", std::process::id()),
            &args.kafka.client,
            &args.kafka.topics(),
        )?,
        Transport::Kafka => {
            Sender::kafka(
                &args.kafka.client,
                &args.registry.url()?,
                args.kafka.topics(),
            )
            .await?
        }
    });
    let fleet = Arc::new(Mutex::new(Fleet::new(
        &args.tenant,
        args.devices,
        args.anomaly_rate,
        args.seed,
    )));
    let labels = match &args.labels_out {
        Some(path) => {
            let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
            writeln!(
                file,
                "event_id,source_id,label,temperature_c,humidity_pct,vibration_g,battery_v"
            )?;
            Some(Arc::new(std::sync::Mutex::new(file)))
        }
        None => None,
    };
    let claimed = Arc::new(AtomicU64::new(0));
    let next_device = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = (args.duration_s > 0).then(|| started + Duration::from_secs(args.duration_s));
    // Each sender paces itself to its share of the rate.
    let period = (args.rate > 0).then(|| {
        Duration::from_secs_f64(args.batch as f64 * args.concurrency as f64 / f64::from(args.rate))
    });
    let filming = cameras.map(|c| tokio::spawn(c.run(shutdown.clone(), deadline)));
    let senders = if args.devices > 0 {
        args.concurrency
    } else {
        0
    };
    let workers: Vec<_> = (0..senders)
        .map(|worker| {
            let mut retry_rng = StdRng::seed_from_u64(args.seed ^ (worker as u64 + 1));
            let retry_rate = args.retry_rate;
            let (sender, fleet, claimed, next_device) = (
                sender.clone(),
                fleet.clone(),
                claimed.clone(),
                next_device.clone(),
            );
            let labels = labels.clone();
            let shutdown = shutdown.clone();
            let (batch, count) = (args.batch as u64, args.count);
            tokio::spawn(async move {
                let mut stats = Stats::default();
                let mut tick = period.map(tokio::time::interval);
                loop {
                    if let Some(t) = tick.as_mut() {
                        tokio::select! {
                            _ = shutdown.requested() => break,
                            _ = t.tick() => {}
                        }
                    }
                    if shutdown.is_requested() || deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let n = if count > 0 {
                        let before = claimed.fetch_add(batch, Ordering::SeqCst);
                        if before >= count {
                            break;
                        }
                        batch.min(count - before)
                    } else {
                        batch
                    };
                    let now = now_ms();
                    let generated: Vec<_> = {
                        let mut f = fleet.lock().await;
                        (0..n)
                            .map(|_| {
                                f.next(next_device.fetch_add(1, Ordering::Relaxed) as usize, now)
                            })
                            .collect()
                    };
                    let anomalies = generated.iter().filter(|g| g.anomaly.is_some()).count() as u64;
                    let label_rows: Vec<String> = generated
                        .iter()
                        .map(|g| {
                            let r = &g.event["readings"];
                            format!(
                                "{},{},{},{},{},{},{}",
                                g.event["event_id"].as_str().unwrap_or_default(),
                                g.event["source_id"].as_str().unwrap_or_default(),
                                g.anomaly.map_or("normal", |a| a.label()),
                                r["temperature_c"],
                                r["humidity_pct"],
                                r["vibration_g"],
                                r["battery_v"]
                            )
                        })
                        .collect();
                    let mut events: Vec<_> = generated.into_iter().map(|g| g.event).collect();
                    let retries = with_retries(&mut events, retry_rate, &mut retry_rng);
                    let sent_at = Instant::now();
                    match sender.send(&events).await {
                        Ok(bytes) => {
                            stats.record(n, anomalies, bytes, sent_at.elapsed());
                            stats.retries += retries;
                            if let Some(l) = &labels {
                                let mut file = l.lock().unwrap_or_else(|p| p.into_inner());
                                for row in &label_rows {
                                    if let Err(e) = writeln!(file, "{row}") {
                                        tracing::warn!(error = %e, "cannot write labels");
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            stats.failures += 1;
                            tracing::warn!(error = %e, "send failed");
                        }
                    }
                }
                stats
            })
        })
        .collect();
    let mut total = Stats::default();
    for w in workers {
        total.merge(w.await?);
    }
    let filmed = match filming {
        Some(c) => c.await?,
        None => CameraStats::default(),
    };
    sender
        .settle(total.events + total.retries, Duration::from_secs(60))
        .await?;
    if let Some(l) = labels {
        l.lock().unwrap_or_else(|p| p.into_inner()).flush()?;
    }
    let summary = total.summary(started.elapsed());
    tracing::info!(
        events = summary.events,
        anomalies = summary.anomalies,
        "fleet stopped"
    );
    println!(
        "{}",
        serde_json::json!({"transport": format!("{:?}", args.transport).to_lowercase(), "batch": args.batch, "concurrency": args.concurrency, "summary": summary, "cameras": filmed})
    );
    Ok(())
}

fn cameras(args: &Args) -> anyhow::Result<Option<Cameras>> {
    if args.cameras == 0 {
        return Ok(None);
    }
    let token = args
        .query_token
        .clone()
        .ok_or_else(|| anyhow::anyhow!("cameras need --query-token (PULSE_QUERY_TOKEN)"))?;
    anyhow::ensure!(
        args.camera_period_s.is_finite() && args.camera_period_s >= 0.1,
        "--camera-period-s must be at least 0.1"
    );
    anyhow::ensure!(
        (32..=8192).contains(&args.camera_width) && (32..=8192).contains(&args.camera_height),
        "camera width and height must be 32 to 8192 pixels"
    );
    let settings = CameraSettings {
        ingest_url: args.ingest_url.clone(),
        query_url: args.query_url.clone(),
        api_key: args.api_key.clone(),
        token,
        cameras: args.cameras,
        period: Duration::from_secs_f64(args.camera_period_s),
        snapshots: args.camera_snapshots,
        width: args.camera_width,
        height: args.camera_height,
        seed: args.seed,
    };
    Ok(Some(Cameras::new(settings, Renderer::from_env()?)))
}

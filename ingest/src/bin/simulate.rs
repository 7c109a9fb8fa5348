//! `pulse-simulate`: a device fleet posting telemetry to ingest over HTTP at
//! a target rate, with labelled anomalies.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use pulse_common::config::LogArgs;
use pulse_ingest::simulate::Fleet;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Simulated device fleet posting telemetry to pulse-ingest"
)]
struct Args {
    /// Ingest's base URL.
    #[arg(
        long,
        env = "PULSE_INGEST_URL",
        default_value = "http://127.0.0.1:18080"
    )]
    ingest_url: String,
    #[arg(long, env = "PULSE_SIM_TENANT", default_value = "demo")]
    tenant: String,
    #[arg(long, env = "PULSE_SIM_DEVICES", default_value_t = 50)]
    devices: usize,
    /// Events per second across the fleet.
    #[arg(long, env = "PULSE_SIM_RATE", default_value_t = 100)]
    rate: u32,
    /// Share of events carrying an injected anomaly.
    #[arg(long, env = "PULSE_SIM_ANOMALY_RATE", default_value_t = 0.01)]
    anomaly_rate: f64,
    /// Events per HTTP request.
    #[arg(long, env = "PULSE_SIM_BATCH", default_value_t = 50)]
    batch: usize,
    /// Stop after this many events (0: run until stopped).
    #[arg(long, env = "PULSE_SIM_COUNT", default_value_t = 0)]
    count: u64,
    #[arg(long, env = "PULSE_SIM_SEED", default_value_t = 42)]
    seed: u64,
    /// API key sent as a bearer token, when ingest requires credentials.
    #[arg(long, env = "PULSE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(flatten)]
    log: LogArgs,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (shutdown, _) = pulse_common::ops::start_service(&args.log);
    anyhow::ensure!(
        args.devices > 0 && args.rate > 0 && args.batch > 0,
        "devices, rate and batch must be positive"
    );
    let mut fleet = Fleet::new(&args.tenant, args.devices, args.anomaly_rate, args.seed);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events", args.ingest_url);
    let interval = Duration::from_secs_f64(args.batch as f64 / f64::from(args.rate));
    let mut tick = tokio::time::interval(interval);
    let (mut sent, mut anomalies, mut i) = (0u64, 0u64, 0usize);
    let started = Instant::now();
    while args.count == 0 || sent < args.count {
        tokio::select! {
            _ = shutdown.requested() => break,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let batch: Vec<_> = (0..args.batch)
            .map(|_| {
                i += 1;
                fleet.next(i, now)
            })
            .collect();
        let labelled = batch.iter().filter(|g| g.anomaly.is_some()).count() as u64;
        let body: Vec<_> = batch.into_iter().map(|g| g.event).collect();
        let mut request = http.post(&url).json(&body);
        if let Some(key) = &args.api_key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                sent += body.len() as u64;
                anomalies += labelled;
            }
            Ok(r) => {
                tracing::warn!(status = %r.status(), body = %r.text().await.unwrap_or_default(), "batch refused")
            }
            Err(e) => tracing::warn!(error = %e, "ingest unreachable"),
        }
        if sent > 0 && sent % (u64::from(args.rate) * 10) < args.batch as u64 {
            tracing::info!(
                sent,
                anomalies,
                elapsed_s = started.elapsed().as_secs(),
                "fleet progress"
            );
        }
    }
    tracing::info!(sent, anomalies, "fleet stopped");
    Ok(())
}

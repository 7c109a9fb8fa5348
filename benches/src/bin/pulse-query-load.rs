//! Load generator for the query API's benchmarks (`benches/query_api.sh`).
//!
//! `http`: each hot read for a fixed time at a fixed concurrency, through
//! the API (cache on and off) and, as the baseline, the same statement sent
//! straight to ClickHouse's HTTP interface; req/s, p50 and p99 side by side.
//!
//! `ws-fanout`: many WebSocket clients subscribed to one API while results
//! are published to the results topic at a steady rate; the delay from
//! publishing to each client's receipt (p50/p99), next to the same delay
//! for one plain Kafka consumer of the topic.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::{SinkExt, StreamExt};
use pulse_common::scored::ScoredEvent;
use pulse_query_api::sql;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Http(HttpArgs),
    WsFanout(FanoutArgs),
}

#[derive(clap::Args)]
struct HttpArgs {
    /// The API with its read cache on.
    #[arg(long)]
    api: String,
    /// The same API with its read cache off.
    #[arg(long)]
    api_nocache: String,
    #[arg(long)]
    token: String,
    #[arg(long)]
    clickhouse: String,
    #[arg(long)]
    database: String,
    #[arg(long)]
    tenant: String,
    /// A device of the tenant, for the series read.
    #[arg(long)]
    device: String,
    /// The reads' time range, milliseconds since the epoch.
    #[arg(long)]
    from_ms: i64,
    #[arg(long)]
    to_ms: i64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

#[derive(clap::Args)]
struct FanoutArgs {
    /// `ws://.../v1/stream?access_token=...`
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    #[arg(long)]
    tenant: String,
    /// Results published per second.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Http(a) => http(a).await,
        Command::WsFanout(a) => ws_fanout(a).await,
    }
}

/// A value bound into a statement sent straight to ClickHouse.
enum Lit {
    Str(String),
    Int(i64),
}

/// `statement` with its `?` holes filled with literals and its `?fields`
/// with the columns the API fetches, as the API's client does.
fn bind(statement: &str, values: &[Lit]) -> String {
    let body: String = statement
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let body = body.replace(
        "?fields",
        &<ScoredEvent as clickhouse::Row>::COLUMN_NAMES.join(", "),
    );
    let mut out = String::new();
    let mut values = values.iter();
    for (i, part) in body.split('?').enumerate() {
        if i > 0 {
            match values.next() {
                Some(Lit::Str(s)) => {
                    out.push('\'');
                    out.push_str(&s.replace('\\', "\\\\").replace('\'', "\\'"));
                    out.push('\'');
                }
                Some(Lit::Int(n)) => out.push_str(&n.to_string()),
                None => panic!("fewer values than holes in: {statement}"),
            }
        }
        out.push_str(part);
    }
    assert!(
        values.next().is_none(),
        "more values than holes in: {statement}"
    );
    out + "\nFORMAT JSON"
}

/// One way to make a read: an HTTP request to build, again and again.
#[derive(Clone)]
struct Target {
    label: &'static str,
    request: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>,
}

struct Outcome {
    requests: usize,
    errors: usize,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

async fn hammer(target: &Target, seconds: u64, concurrency: usize) -> Outcome {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, request) = (client.clone(), target.request.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let ok = match request(&client).send().await {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    latencies.push(t.elapsed().as_micros() as u64);
                    errors += usize::from(!ok);
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut outcome = Outcome {
        requests: 0,
        errors: 0,
        latencies_us: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for w in workers {
        if let Ok((l, e)) = w.await {
            outcome.requests += l.len();
            outcome.errors += e;
            outcome.latencies_us.extend(l);
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies_us.sort_unstable();
    outcome
}

fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}

async fn http(a: HttpArgs) -> anyhow::Result<()> {
    let range = format!("from_ms={}&to_ms={}", a.from_ms, a.to_ms);
    let (from_s, to_s) = (a.from_ms / 1000, a.to_ms / 1000);
    let t = || Lit::Str(a.tenant.clone());
    let reads: Vec<(&str, String, String)> = vec![
        (
            "devices",
            "/v1/devices".into(),
            bind(sql::DEVICES, &[t(), Lit::Int(1000)]),
        ),
        (
            "series (1 h buckets)",
            format!("/v1/devices/{}/series?{range}&resolution_s=3600", a.device),
            bind(
                sql::DEVICE_SERIES,
                &[
                    Lit::Int(3600),
                    Lit::Int(3600),
                    t(),
                    Lit::Str(a.device.clone()),
                    Lit::Int(from_s),
                    Lit::Int(to_s),
                ],
            ),
        ),
        (
            "events page (100)",
            format!("/v1/events?{range}&limit=100"),
            bind(
                sql::EVENTS_PAGE,
                &[
                    t(),
                    t(),
                    Lit::Int(a.from_ms),
                    Lit::Int(a.to_ms),
                    Lit::Int(a.to_ms),
                    Lit::Int(a.to_ms),
                    Lit::Str(String::new()),
                    Lit::Int(100),
                    Lit::Int(100),
                ],
            ),
        ),
        (
            "aggregates (per device)",
            format!("/v1/aggregates?{range}&metric=temperature_c"),
            bind(
                sql::AGGREGATES,
                &[
                    Lit::Str("device".into()),
                    Lit::Str("device".into()),
                    Lit::Str("device".into()),
                    Lit::Str("temperature_c".into()),
                    Lit::Str("temperature_c".into()),
                    t(),
                    Lit::Int(a.from_ms),
                    Lit::Int(a.to_ms),
                    Lit::Str(String::new()),
                    Lit::Str(String::new()),
                    Lit::Str("temperature_c".into()),
                    Lit::Str("temperature_c".into()),
                    Lit::Int(1000),
                ],
            ),
        ),
    ];
    println!(
        "{} s per target, {} concurrent requests\n",
        a.seconds, a.concurrency
    );
    println!(
        "{:<26} {:<22} {:>9} {:>8} {:>8} {:>7} {:>10}",
        "read", "through", "req/s", "p50 ms", "p99 ms", "errors", "vs CH req/s"
    );
    for (name, path, statement) in reads {
        let ch_url = format!(
            "{}/?database={}",
            a.clickhouse.trim_end_matches('/'),
            a.database
        );
        let token = a.token.clone();
        let api = |label, base: &str| {
            let (url, token) = (format!("{base}{path}"), token.clone());
            Target {
                label,
                request: Arc::new(move |c: &reqwest::Client| c.get(&url).bearer_auth(&token)),
            }
        };
        let direct = Target {
            label: "ClickHouse HTTP",
            request: Arc::new(move |c: &reqwest::Client| c.post(&ch_url).body(statement.clone())),
        };
        let mut baseline = f64::NAN;
        for target in [
            direct,
            api("API, cache off", &a.api_nocache),
            api("API, cache on (2 s)", &a.api),
        ] {
            let o = hammer(&target, a.seconds, a.concurrency).await;
            let rate = o.requests as f64 / o.elapsed.as_secs_f64();
            if baseline.is_nan() {
                baseline = rate;
            }
            println!(
                "{:<26} {:<22} {:>9.0} {:>8.1} {:>8.1} {:>7} {:>9.2}x",
                name,
                target.label,
                rate,
                percentile_ms(&o.latencies_us, 0.50),
                percentile_ms(&o.latencies_us, 0.99),
                o.errors,
                rate / baseline
            );
        }
    }
    Ok(())
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// The publish time a bench result carries in its event id, `b<micros>-<n>`.
fn sent_us(event_id: &str) -> Option<u64> {
    event_id.strip_prefix('b')?.split('-').next()?.parse().ok()
}

#[derive(serde::Deserialize)]
struct IdOnly {
    event_id: Option<String>,
}

async fn ws_fanout(a: FanoutArgs) -> anyhow::Result<()> {
    let expected = a.rate * a.seconds;
    // Connect every client first, a hundred at a time.
    let mut sockets = Vec::with_capacity(a.clients);
    for chunk in (0..a.clients).collect::<Vec<_>>().chunks(100) {
        let connects = chunk
            .iter()
            .map(|_| tokio_tungstenite::connect_async(a.url.as_str()));
        for c in futures::future::join_all(connects).await {
            sockets.push(c.context("WebSocket connect")?.0);
        }
    }
    eprintln!("{} clients connected", sockets.len());
    let quiet = Duration::from_secs(10);
    let clients: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(expected as usize);
                while latencies.len() < expected as usize {
                    let msg = match tokio::time::timeout(quiet, socket.next()).await {
                        Ok(Some(Ok(m))) => m,
                        _ => break,
                    };
                    match msg {
                        Message::Text(t) => {
                            let now = now_us();
                            if let Ok(IdOnly { event_id: Some(id) }) = serde_json::from_str(&t) {
                                if let Some(sent) = sent_us(&id) {
                                    latencies.push(now.saturating_sub(sent));
                                }
                            }
                        }
                        Message::Ping(p) => {
                            let _ = socket.send(Message::Pong(p)).await;
                        }
                        _ => {}
                    }
                }
                latencies
            })
        })
        .collect();

    let consumer = direct_consumer(&a.bootstrap, &a.topic)?;
    let direct = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(expected as usize);
        while latencies.len() < expected as usize {
            match tokio::time::timeout(quiet, consumer.recv()).await {
                Ok(Ok(m)) => {
                    let now = now_us();
                    let id = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<IdOnly>(p).ok())
                        .and_then(|e| e.event_id);
                    if let Some(sent) = id.as_deref().and_then(sent_us) {
                        latencies.push(now.saturating_sub(sent));
                    }
                }
                Ok(Err(_)) => {}
                Err(_) => break,
            }
        }
        latencies
    });

    publish(&a, expected).await?;

    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap_or_default());
    }
    all.sort_unstable();
    let mut base = direct.await.unwrap_or_default();
    base.sort_unstable();
    let delivered = all.len() as u64;
    println!(
        "\n{} results at {}/s for {} s to {} WebSocket clients: {} of {} deliveries",
        expected,
        a.rate,
        a.seconds,
        a.clients,
        delivered,
        expected * a.clients as u64
    );
    println!(
        "{:<34} {:>10} {:>8} {:>8} {:>8}",
        "publish -> received by", "messages", "p50 ms", "p99 ms", "max ms"
    );
    for (label, l) in [
        ("one Kafka consumer (baseline)", &base),
        ("each WebSocket client via the API", &all),
    ] {
        println!(
            "{:<34} {:>10} {:>8.1} {:>8.1} {:>8.1}",
            label,
            l.len(),
            percentile_ms(l, 0.50),
            percentile_ms(l, 0.99),
            l.last().map_or(f64::NAN, |&m| m as f64 / 1000.0)
        );
    }
    anyhow::ensure!(
        delivered == expected * a.clients as u64,
        "deliveries were lost"
    );
    Ok(())
}

/// A consumer of every partition of `topic` from its current end.
fn direct_consumer(bootstrap: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "pulse-query-load")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(high))?;
        }
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Publishes `count` results at `a.rate` per second, in ticks of 10 ms.
async fn publish(a: &FanoutArgs, count: u64) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &a.bootstrap)
        .set("linger.ms", "0")
        .create()?;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0u64;
    let started = Instant::now();
    while sent < count {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * a.rate as f64) as u64 + 1).min(count);
        let mut deliveries = Vec::new();
        while sent < due {
            let event = ScoredEvent {
                tenant_id: a.tenant.clone(),
                source_id: format!("device-{:03}", sent % 100),
                event_id: format!("b{}-{sent}", now_us()),
                kind: "telemetry".into(),
                reading_names: vec!["temperature_c".into()],
                reading_values: vec![21.5],
                score: 0.2,
                model_version: "bench".into(),
                ..ScoredEvent::default()
            };
            let json = serde_json::to_string(&event)?;
            let key = event.source_id.clone();
            let delivery = producer
                .send_result(FutureRecord::to(&a.topic).key(&key).payload(&json))
                .map_err(|(e, _)| anyhow::anyhow!("cannot publish: {e}"))?;
            deliveries.push(delivery);
            sent += 1;
        }
        for d in deliveries {
            d.await
                .map_err(|_| anyhow::anyhow!("producer gone"))?
                .map_err(|(e, _)| anyhow::anyhow!("not delivered: {e}"))?;
        }
    }
    Ok(())
}

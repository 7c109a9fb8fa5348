//! Helpers for integration tests that run Pulse's binaries against the real
//! local stack (`./dev test` starts it and exports its addresses). A
//! dev-dependency of every service crate, never a dependency. Beside the
//! helpers here: the query API started over a database of its own, with
//! tokens for it ([`query_api`]), and the whole pipeline of one test
//! ([`pipeline`]).

pub mod pipeline;
pub mod query_api;

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Addresses of the running stack, from the environment `./dev test` sets.
#[derive(Debug, Clone)]
pub struct Stack {
    pub kafka_bootstrap: String,
    pub clickhouse_url: String,
    pub mqtt_url: String,
    pub bin_dir: PathBuf,
    pub ort_dylib: String,
    pub model_path: String,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run integration tests through `./dev test`, which starts the stack"
        )
    })
}

impl Stack {
    pub fn from_env() -> Self {
        Self {
            kafka_bootstrap: env("PULSE_KAFKA_BOOTSTRAP"),
            clickhouse_url: env("PULSE_CLICKHOUSE_URL"),
            mqtt_url: env("PULSE_MQTT_URL"),
            bin_dir: PathBuf::from(env("PULSE_BIN_DIR")),
            ort_dylib: env("ORT_DYLIB_PATH"),
            model_path: env("PULSE_MODEL_PATH"),
        }
    }
}

/// A name no earlier test run used, for topics, groups and databases.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A Pulse binary running for the length of a test; stopped with SIGTERM
/// (then killed) when dropped.
pub struct Service {
    pub name: String,
    pub url: String,
    child: Child,
}

impl Service {
    /// Starts `bin` from the build directory with `args` and `envs`, serving
    /// its ops endpoints on `port`, and waits until /readyz answers 200.
    pub async fn start(
        stack: &Stack,
        bin: &str,
        port: u16,
        args: &[String],
        envs: &[(&str, String)],
    ) -> Self {
        let mut service = Self::spawn(stack, bin, port, args, envs);
        service.wait_ready(Duration::from_secs(60)).await;
        service
    }

    /// As [`Service::start`], without waiting for it to be ready: for a test
    /// of what it does while its dependencies are not.
    pub fn spawn(
        stack: &Stack,
        bin: &str,
        port: u16,
        args: &[String],
        envs: &[(&str, String)],
    ) -> Self {
        let path = stack.bin_dir.join(bin);
        let mut cmd = Command::new(&path);
        cmd.args(args)
            .env("PULSE_KAFKA_BOOTSTRAP", &stack.kafka_bootstrap)
            .env("PULSE_CLICKHOUSE_URL", &stack.clickhouse_url)
            .env("ORT_DYLIB_PATH", &stack.ort_dylib)
            .env("PULSE_MODEL_PATH", &stack.model_path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        Self {
            name: bin.to_string(),
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// As [`Service::spawn`], its output (stdout and stderr) written to
    /// `log`, for a test of what it logs. Through a shell that redirects
    /// the output and then becomes the service (exec), so that signals
    /// still reach the service itself.
    pub fn spawn_logged(
        stack: &Stack,
        bin: &str,
        port: u16,
        envs: &[(&str, String)],
        log: &std::path::Path,
    ) -> Self {
        let mut envs = envs.to_vec();
        envs.push(("PULSE_TEST_LOG", log.display().to_string()));
        let args = [
            "-c".to_string(),
            "exec \"$0\" >\"$PULSE_TEST_LOG\" 2>&1".to_string(),
            stack.bin_dir.join(bin).display().to_string(),
        ];
        let mut service = Self::spawn(stack, "/bin/sh", port, &args, &envs);
        service.name = bin.to_string();
        service
    }

    /// The status and body of its `/readyz`, once it answers at all.
    pub async fn readyz(&self) -> Option<(u16, String)> {
        let r = reqwest::get(format!("{}/readyz", self.url)).await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    }

    /// Waits until `/readyz` answers 200; panics if the process exits first.
    pub async fn wait_ready(&mut self, within: Duration) {
        let client = reqwest::Client::new();
        let ready_url = format!("{}/readyz", self.url);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited before becoming ready: {status}", self.name);
            }
            if let Ok(r) = client.get(&ready_url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {within:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The exit status, once the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The process id, e.g. to read its memory use from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of a Prometheus sample from the service's /metrics, e.g.
    /// `pulse_processor_events_total{outcome="stored"}`; None if absent.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let body = reqwest::get(format!("{}/metrics", self.url))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on a pid this process spawned and has not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok();
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// Polls `f` until it returns Some, failing the test after `within`.
pub async fn poll_until<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A schema registry of a test's own, on a topic no other test uses.
pub async fn start_registry(stack: &Stack, prefix: &str) -> Service {
    let port = free_port();
    Service::start(
        stack,
        "pulse-registry",
        port,
        &[],
        &[
            ("PULSE_REGISTRY_LISTEN", format!("127.0.0.1:{port}")),
            ("PULSE_REGISTRY_TOPIC", format!("{prefix}_schemas")),
            // Its /metrics on a port of the OS's choosing: several run at once.
            ("PULSE_REGISTRY_METRICS_LISTEN", "127.0.0.1:0".into()),
        ],
    )
    .await
}

/// A ClickHouse client of `database` on the server at `url`.
pub fn clickhouse(url: &str, database: &str) -> clickhouse::Client {
    pulse_common::clickhouse::client(&pulse_common::config::ClickHouseArgs {
        url: url.to_string(),
        database: database.to_string(),
        user: "default".into(),
        password: String::new(),
        cluster: None,
    })
}

/// Produces `count` simulated telemetry events straight to Kafka, as ingest
/// would write them, and returns pulse-simulate's summary.
pub fn produce_events(
    stack: &Stack,
    prefix: &str,
    registry_url: &str,
    count: u64,
    seed: u64,
) -> serde_json::Value {
    produce_events_with_retries(stack, prefix, registry_url, count, seed, 0.0)
}

/// As [`produce_events`], with a share of the events sent twice under the
/// same id, as retrying clients do.
pub fn produce_events_with_retries(
    stack: &Stack,
    prefix: &str,
    registry_url: &str,
    count: u64,
    seed: u64,
    retry_rate: f64,
) -> serde_json::Value {
    let out = Command::new(stack.bin_dir.join("pulse-simulate"))
        .args([
            "--transport",
            "kafka",
            "--rate",
            "0",
            "--batch",
            "1000",
            "--concurrency",
            "4",
        ])
        .args([
            "--devices",
            "1000",
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
            "--retry-rate",
            &retry_rate.to_string(),
        ])
        .env("PULSE_KAFKA_BOOTSTRAP", &stack.kafka_bootstrap)
        .env("PULSE_TOPIC_PREFIX", prefix)
        .env("PULSE_REGISTRY_URL", registry_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("pulse-simulate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    assert_eq!(summary["summary"]["events"], count);
    assert_eq!(summary["summary"]["failures"], 0);
    summary
}

/// A server of a test's own, run by one of the project's scripts
/// (`scripts/kafka-node.sh`, `scripts/clickhouse-node.sh`), so that a fault
/// test can stop or kill it without disturbing others; removed with its
/// data when dropped.
pub struct ScriptedServer {
    script: PathBuf,
    name: String,
    ports: [u16; 2],
}

impl ScriptedServer {
    fn new(script: &str, name: &str) -> Self {
        Self {
            script: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../scripts")
                .join(script),
            name: unique(name),
            ports: [free_port(), free_port()],
        }
    }

    /// A single-node Kafka (KRaft); `port()` is its listener.
    pub fn kafka() -> Self {
        Self::new("kafka-node.sh", "kafka-test-")
    }

    /// A ClickHouse server; `port()` is its HTTP interface.
    pub fn clickhouse() -> Self {
        Self::new("clickhouse-node.sh", "clickhouse-test-")
    }

    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    fn run(&self, args: &[&str]) {
        let status = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .status()
            .expect("the script runs");
        assert!(
            status.success(),
            "{} {args:?} failed",
            self.script.display()
        );
    }

    /// Starts the server and waits until it answers.
    pub fn start(&self) {
        let ports = self.ports.map(|p| p.to_string());
        self.run(&["start", &self.name, &ports[0], &ports[1]]);
    }

    /// Stops it cleanly (SIGTERM).
    pub fn stop(&self) {
        self.run(&["stop", &self.name]);
    }

    /// Freezes it (SIGSTOP): connections are accepted but never answered,
    /// as from a server that hangs; ClickHouse only.
    pub fn freeze(&self) {
        self.run(&["freeze", &self.name]);
    }

    /// Lets a frozen server go on (SIGCONT); ClickHouse only.
    pub fn thaw(&self) {
        self.run(&["thaw", &self.name]);
    }

    /// Kills it as a crash would (SIGKILL); Kafka only.
    pub fn kill(&self) {
        self.run(&["kill", &self.name]);
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["remove", &self.name])
            .status();
    }
}

/// An ingest gateway of a test's own: topics under `prefix`, schemas in the
/// registry at `registry_url`, plus the test's own settings.
pub async fn start_ingest(
    stack: &Stack,
    prefix: &str,
    registry_url: &str,
    settings: &[(&str, String)],
) -> Service {
    let port = free_port();
    let env = ingest_settings(prefix, registry_url, port, settings);
    Service::start(stack, "pulse-ingest", port, &[], &env).await
}

/// The environment [`start_ingest`] gives a gateway serving on `port`.
pub fn ingest_settings<'a>(
    prefix: &str,
    registry_url: &str,
    port: u16,
    settings: &[(&'a str, String)],
) -> Vec<(&'a str, String)> {
    let mut env = vec![
        ("PULSE_INGEST_LISTEN", format!("127.0.0.1:{port}")),
        ("PULSE_TOPIC_PREFIX", prefix.to_string()),
        ("PULSE_REGISTRY_URL", registry_url.to_string()),
    ];
    env.extend(settings.iter().cloned());
    env
}

/// A process's peak resident memory so far in KiB (`VmHWM` in /proc).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Starts a processor of the events under `prefix`, storing into
/// `database`, serving its ops endpoints on `port` (a restarted instance
/// may keep its port); `settings` add to or override the defaults.
pub async fn start_processor(
    stack: &Stack,
    prefix: &str,
    registry_url: &str,
    database: &str,
    port: u16,
    settings: &[(&str, String)],
) -> Service {
    let env = processor_settings(prefix, registry_url, database, port, settings);
    Service::start(stack, "pulse-processor", port, &[], &env).await
}

/// The environment [`start_processor`] gives a processor.
pub fn processor_settings<'a>(
    prefix: &str,
    registry_url: &str,
    database: &str,
    port: u16,
    settings: &[(&'a str, String)],
) -> Vec<(&'a str, String)> {
    let mut env = vec![
        ("PULSE_PROCESSOR_LISTEN", format!("127.0.0.1:{port}")),
        ("PULSE_TOPIC_PREFIX", prefix.to_string()),
        ("PULSE_REGISTRY_URL", registry_url.to_string()),
        ("PULSE_CLICKHOUSE_DATABASE", database.to_string()),
        ("PULSE_PROCESSOR_GROUP", format!("{prefix}processor")),
    ];
    env.extend(settings.iter().cloned());
    env
}

/// `count()` and `uniqExact(event_id)` of the events table.
pub async fn event_counts(client: &clickhouse::Client) -> Option<(u64, u64)> {
    client
        .query("SELECT count(), uniqExact(event_id) FROM events")
        .fetch_one::<(u64, u64)>()
        .await
        .ok()
}

/// Devices in the events table, and how many of them have a sequence that
/// is not exactly 1..n (a number repeated or skipped: state lost or an
/// event counted twice).
pub async fn device_sequences(client: &clickhouse::Client) -> Option<(u64, u64)> {
    client
        .query(
            "SELECT count(), countIf(top != n OR distinct_seqs != n) FROM \
             (SELECT tenant_id, source_id, max(device_seq) AS top, count() AS n, \
                     uniqExact(device_seq) AS distinct_seqs \
              FROM events GROUP BY tenant_id, source_id)",
        )
        .fetch_one::<(u64, u64)>()
        .await
        .ok()
}

/// The options of a device of its own on the stack's MQTT broker.
pub fn mqtt_device(stack: &Stack) -> rumqttc::MqttOptions {
    let (host, port) = stack
        .mqtt_url
        .trim_start_matches("mqtt://")
        .rsplit_once(':')
        .expect("host:port");
    let mut options =
        rumqttc::MqttOptions::new(unique("device"), host, port.parse().expect("port"));
    options.set_keep_alive(Duration::from_secs(5));
    options
}

/// Publishes each `(topic, payload)` to the stack's MQTT broker at QoS 1,
/// as a device would, and returns once the broker acknowledged them all:
/// the bridge acknowledges a message only once it is in Kafka or
/// dead-lettered.
pub async fn publish_mqtt(stack: &Stack, messages: &[(String, Vec<u8>)]) {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let (device, mut eventloop) = AsyncClient::new(mqtt_device(stack), messages.len().max(1));
    for (topic, payload) in messages {
        device
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("queued");
    }
    let mut acknowledged = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acknowledged < messages.len() {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("every message acknowledged within 30 s")
            .expect("MQTT connection");
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acknowledged += 1;
        }
    }
}

/// Every record of `topic`, waiting up to 30 s for `n`, then 2 s for extras.
pub async fn records(
    bootstrap: &str,
    topic: &str,
    n: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let mut cfg = pulse_common::kafka::client_config(
        &pulse_common::config::KafkaClient::plaintext(bootstrap),
    );
    cfg.set("group.id", unique("test-reader"))
        .set("auto.offset.reset", "earliest");
    let consumer: StreamConsumer = cfg.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    loop {
        let wait = if out.len() < n {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(2)
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => panic!("consumer error: {e}"),
            Err(_) => return out,
        }
    }
}

/// The value of header `key` of `m`, as text.
pub fn header<'a>(m: &'a rdkafka::message::OwnedMessage, key: &str) -> Option<&'a str> {
    use rdkafka::message::{Headers, Message};
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// A record of `kind` `version` with `fields`, in the Confluent wire format
/// under `schema_id`, as a producer writing to Kafka directly would make it.
pub fn wire_record(
    schema_id: u32,
    kind: pulse_common::schemas::EventKind,
    version: u32,
    fields: Vec<(&str, apache_avro::types::Value)>,
) -> Vec<u8> {
    use apache_avro::writer::datum::GenericDatumWriter;
    let schema = kind.schema(version).expect("a shipped schema version");
    let record = apache_avro::types::Value::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    );
    let datum = GenericDatumWriter::builder(&schema)
        .build()
        .and_then(|w| w.write_value_to_vec(record))
        .expect("the record fits its schema");
    let mut out = vec![0];
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend(datum);
    out
}

/// The id the registry at `registry_url` gave version `version` of the
/// value schema of `topic`.
pub async fn schema_id(registry_url: &str, topic: &str, version: u32) -> u32 {
    let answer: serde_json::Value = reqwest::get(format!(
        "{registry_url}/subjects/{topic}-value/versions/{version}"
    ))
    .await
    .expect("the registry answers")
    .json()
    .await
    .expect("a JSON answer");
    answer["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .unwrap_or_else(|| panic!("no schema id in {answer}"))
}

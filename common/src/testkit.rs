//! Helpers for integration tests that run Pulse's binaries against the real
//! local stack (`./dev test` starts it and exports its addresses). Only
//! compiled with the `testkit` feature.

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
        let mut service = Self {
            name: bin.to_string(),
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        service.wait_ready(Duration::from_secs(60)).await;
        service
    }

    async fn wait_ready(&mut self, within: Duration) {
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

    /// The process id, e.g. to read its memory use from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

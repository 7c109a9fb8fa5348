//! Where the running stack is, and names and ports of a test's own.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

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

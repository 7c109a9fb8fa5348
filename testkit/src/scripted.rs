//! Servers of a test's own, run by the project's scripts, for fault tests.

use std::path::PathBuf;
use std::process::Command;

use crate::stack::{free_port, unique};

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

//! A Pulse binary run for the length of a test, and polling with a deadline.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::stack::Stack;

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

//! Start-up: a processor that cannot serve its metrics and health checks
//! stops at once instead of processing unobserved.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_taken_port_stops_the_processor_before_it_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("its address");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulse-processor"))
        .env("PULSE_PROCESSOR_LISTEN", addr.to_string())
        // Nothing listens on port 9: had it gone on, it would wait for them.
        .env("PULSE_KAFKA_BOOTSTRAP", "127.0.0.1:9")
        .env("PULSE_CLICKHOUSE_URL", "http://127.0.0.1:9")
        .env("PULSE_REGISTRY_URL", "http://127.0.0.1:9")
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the processor starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("its status") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the processor kept running with its port taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("its output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "exit status {status}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "stderr: {stderr}"
    );
}

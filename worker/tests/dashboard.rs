//! The dashboard in a real browser (Debian's headless Chromium through
//! playwright-core, query-api/dashboard/e2e/): a report requested on
//! screen goes from queued to succeeded, downloads, and the download is
//! found in the audit view (jobs.mjs); a simulated camera's snapshots are
//! read by OCR and shown with their boxes, text and value (cameras.mjs).
//! Run through `./dev test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use pulse_common::credentials::digest_of;
use pulse_testkit::query_api as support;
use pulse_testkit::{free_port, start_ingest, start_registry, unique, Service, Stack};

mod shared;

/// Runs `script` in Chromium against `dashboard_url` signed in with
/// `token`; asserts that it passed and left a PNG screenshot.
async fn in_browser(
    script: &str,
    dashboard_url: String,
    token: String,
    env: Vec<(&'static str, String)>,
) {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../query-api/dashboard/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run ./dev install"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let screenshot = dir.path().join("screen.png");
    let status = tokio::task::spawn_blocking({
        let (script, screenshot) = (e2e.join(script), screenshot.clone());
        move || {
            Command::new("node")
                .arg(script)
                .current_dir(&e2e)
                .env("DASHBOARD_URL", dashboard_url)
                .env("TOKEN", token)
                .env("SCREENSHOT", &screenshot)
                .envs(env)
                .status()
        }
    })
    .await
    .expect("browser run joins")
    .expect("node starts");
    assert!(
        status.success(),
        "the browser check {script} failed: {status}"
    );
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack and Chromium: run through ./dev test"]
async fn a_report_requested_on_the_dashboard_succeeds_and_its_download_is_audited() {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = dir.path().join("objects").display().to_string();
    let api = support::start_api_with(&[], &[("PULSE_OBJECT_STORE_URL", &objects)]).await;
    api.generate_events("acme", 2_000, pulse_common::clock::now_ms(), 20)
        .await;
    let port = free_port();
    let _worker = Service::start(
        &Stack::from_env(),
        "pulse-worker",
        port,
        &[],
        &[
            ("PULSE_WORKER_LISTEN", format!("127.0.0.1:{port}")),
            ("PULSE_TOPIC_PREFIX", api.topic_prefix.clone()),
            ("PULSE_CLICKHOUSE_DATABASE", api.database.clone()),
            ("PULSE_OBJECT_STORE_URL", objects),
            ("PULSE_JOB_PARTITIONS", "1".into()),
        ],
    )
    .await;
    in_browser(
        "jobs.mjs",
        format!("{}/dashboard/", api.url),
        support::hs256("acme", "admin"),
        Vec::new(),
    )
    .await;
}

/// An ingest credentials file giving `key` to tenant `tenant`.
fn ingest_credentials(dir: &Path, tenant: &str, key: &str) -> PathBuf {
    let path = dir.join("ingest-credentials.toml");
    let text = format!(
        "[[api_keys]]\nname = \"cameras\"\ntenant = \"{tenant}\"\nsha256 = \"{}\"\n",
        hex::encode(digest_of(key))
    );
    std::fs::write(&path, text).expect("credentials written");
    path
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack and Chromium: run through ./dev test"]
async fn a_simulated_cameras_snapshots_are_shown_with_their_boxes_text_and_values() {
    let stack = Stack::from_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = dir.path().join("objects");
    let api = shared::api_over(&objects).await;
    let registry = start_registry(&stack, &api.topic_prefix).await;
    let key = "camera-fleet-key-0123456789";
    let credentials = ingest_credentials(dir.path(), "acme", key);
    let ingest = start_ingest(
        &stack,
        &api.topic_prefix,
        &registry.url,
        &[
            (
                "PULSE_INGEST_CREDENTIALS",
                credentials.display().to_string(),
            ),
            ("PULSE_OBJECT_STORE_URL", objects.display().to_string()),
        ],
    )
    .await;
    let _worker = shared::worker_with(
        &api,
        &unique("worker"),
        vec![
            ("PULSE_OBJECT_STORE_URL", objects.display().to_string()),
            ("PULSE_REGISTRY_URL", registry.url.clone()),
        ],
    )
    .await;
    // Two snapshots a second apart from one camera, as `./dev up` runs it.
    let simulate = Command::new(stack.bin_dir.join("pulse-simulate"))
        .args([
            "--devices",
            "0",
            "--cameras",
            "1",
            "--camera-snapshots",
            "2",
        ])
        .args([
            "--camera-period-s",
            "1",
            "--camera-width",
            "640",
            "--camera-height",
            "360",
        ])
        .args([
            "--seed",
            "20261203",
            "--ingest-url",
            &ingest.url,
            "--query-url",
            &api.url,
        ])
        .env("PULSE_API_KEY", key)
        .env("PULSE_QUERY_TOKEN", support::hs256("acme", "analyst"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("pulse-simulate runs");
    let stderr = String::from_utf8_lossy(&simulate.stderr);
    assert!(simulate.status.success(), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&simulate.stdout).expect("a JSON summary");
    assert_eq!(
        summary["cameras"],
        serde_json::json!({"snapshots": 2, "jobs": 2, "failures": 0}),
        "{stderr}"
    );
    in_browser(
        "cameras.mjs",
        format!("{}/dashboard/", api.url),
        support::hs256("acme", "dashboard"),
        vec![("CAMERA", "camera-1".into()), ("READS", "2".into())],
    )
    .await;
}

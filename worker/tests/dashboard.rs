//! The dashboard's Jobs and Audit views in a real browser (Debian's headless
//! Chromium through playwright-core, query-api/dashboard/e2e/jobs.mjs): a
//! report requested on screen goes from queued to succeeded, downloads,
//! and the download is found in the audit view. Run through `./dev test`.

use std::path::PathBuf;
use std::process::Command;

use pulse_testkit::query_api as support;
use pulse_testkit::{free_port, Service, Stack};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack and Chromium: run through ./dev test"]
async fn a_report_requested_on_the_dashboard_succeeds_and_its_download_is_audited() {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../query-api/dashboard/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run ./dev install"
    );
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
    let screenshot = dir.path().join("jobs.png");
    let status = tokio::task::spawn_blocking({
        let (e2e, screenshot) = (e2e.clone(), screenshot.clone());
        let url = format!("{}/dashboard/", api.url);
        move || {
            Command::new("node")
                .arg(e2e.join("jobs.mjs"))
                .current_dir(&e2e)
                .env("DASHBOARD_URL", url)
                .env("TOKEN", support::hs256("acme", "admin"))
                .env("SCREENSHOT", &screenshot)
                .status()
        }
    })
    .await
    .expect("browser run joins")
    .expect("node starts");
    assert!(status.success(), "the browser check failed: {status}");
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
}

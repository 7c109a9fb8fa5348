//! The dashboard in a real browser against the whole pipeline: Debian's
//! headless Chromium, driven by playwright-core (query-api/dashboard/e2e),
//! signs in, sees live events arrive, sees an injected anomaly flagged, opens
//! a device's history and takes a screenshot. Run through `./dev test`
//! (`./dev install` installs Chromium and playwright-core).

use pulse_testkit::query_api as support;
use std::path::PathBuf;
use std::process::Command;

use pulse_testkit::pipeline::start_pipeline;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack and Chromium: run through ./dev test"]
async fn a_dashboard_user_sees_live_events_and_an_injected_anomaly() {
    let p = start_pipeline().await;
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboard/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run ./dev install"
    );
    let screenshot = std::env::var("PULSE_DASHBOARD_SCREENSHOT").map_or_else(
        |_| std::env::temp_dir().join(format!("pulse-dashboard-{}.png", std::process::id())),
        PathBuf::from,
    );
    let _ = std::fs::remove_file(&screenshot);
    let tenant = "acme";
    let status = tokio::task::spawn_blocking({
        let (e2e, screenshot) = (e2e.clone(), screenshot.clone());
        let (url, ingest) = (format!("{}/dashboard/", p.query.url), p.ingest.url.clone());
        move || {
            Command::new("node")
                .arg(e2e.join("dashboard.mjs"))
                .current_dir(&e2e)
                .env("DASHBOARD_URL", url)
                .env("TOKEN", support::hs256(tenant, "dashboard"))
                .env("INGEST_URL", ingest)
                .env("TENANT", tenant)
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
    assert!(
        png.len() > 20_000,
        "a {} byte screenshot is blank",
        png.len()
    );
}

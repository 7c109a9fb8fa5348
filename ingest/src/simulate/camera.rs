//! Camera devices: each photographs its meter every period, uploads the
//! snapshot to ingest (`POST /v1/files`) and asks the query API to read it
//! (`POST /v1/jobs`, kind `ocr`, for the camera's source), as cameras on
//! site do. The worker then publishes each value read as the camera's
//! `meter_value` telemetry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::ImageFormat;
use pulse_common::shutdown::Shutdown;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::snapshots::{encode, Renderer};

/// Where cameras send, and what they look like.
pub struct CameraSettings {
    pub ingest_url: String,
    pub query_url: String,
    /// Ingest's API key (files).
    pub api_key: Option<String>,
    /// The query API's bearer token (jobs).
    pub token: String,
    pub cameras: usize,
    pub period: Duration,
    /// Snapshots each camera takes (0: no limit).
    pub snapshots: u64,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
}

/// What the cameras did, for the run's summary.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CameraStats {
    pub snapshots: u64,
    pub jobs: u64,
    pub failures: u64,
}

pub struct Cameras {
    settings: CameraSettings,
    renderer: Renderer,
    client: reqwest::Client,
}

/// The source id of camera `index` (from 0).
pub fn source_id(index: usize) -> String {
    format!("camera-{}", index + 1)
}

impl Cameras {
    pub fn new(settings: CameraSettings, renderer: Renderer) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self {
            settings,
            renderer,
            client,
        }
    }

    /// Camera `index`'s `n`th snapshot as JPEG bytes, and the reading it
    /// shows: the same for the same seed. The counter grows by a random
    /// amount each time, so the device's chart climbs as a meter's does.
    pub fn snapshot(&self, index: usize, n: u64) -> anyhow::Result<(Vec<u8>, String)> {
        let s = &self.settings;
        let camera_seed = s.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut meter = StdRng::seed_from_u64(camera_seed);
        let start = meter.random_range(1_000.0..500_000.0);
        let rate = meter.random_range(0.5..20.0);
        let meter_id = format!(
            "{:02}-{:04}",
            meter.random_range(0..100),
            meter.random_range(0..10_000)
        );
        let mut shot =
            StdRng::seed_from_u64(camera_seed.wrapping_add(n.wrapping_mul(0xD1B5_4A32_D192_ED03)));
        let reading = start + rate * n as f64 + shot.random_range(0.0..rate);
        let snapshot = self
            .renderer
            .meter(&mut shot, &meter_id, reading, s.width, s.height);
        let bytes = encode(&snapshot.image, ImageFormat::Jpeg)?;
        Ok((bytes, snapshot.reading.unwrap_or_default()))
    }

    /// Uploads one snapshot and queues its OCR job; the job's id. The
    /// file's id is the job's Idempotency-Key, so a retried submit queues
    /// no second job.
    pub async fn send(&self, index: usize, jpeg: Vec<u8>) -> anyhow::Result<String> {
        let s = &self.settings;
        let mut upload = self
            .client
            .post(format!("{}/v1/files", s.ingest_url))
            .header("content-type", "image/jpeg")
            .body(jpeg);
        if let Some(key) = &s.api_key {
            upload = upload.bearer_auth(key);
        }
        let file: serde_json::Value = answer(upload.send().await?).await?;
        let file_id = file["file_id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("ingest answered no file_id: {file}"))?;
        let job = serde_json::json!({
            "kind": "ocr",
            "params": {"source_id": source_id(index)},
            "inputs": [file_id],
        });
        let submit = self
            .client
            .post(format!("{}/v1/jobs", s.query_url))
            .bearer_auth(&s.token)
            .header("idempotency-key", format!("camera:{file_id}"))
            .json(&job);
        let queued: serde_json::Value = answer(submit.send().await?).await?;
        queued["job_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("the query API answered no job_id: {queued}"))
    }

    /// Runs every camera until each took its snapshots, `deadline` passed
    /// or shutdown was asked for. Cameras start spread over one period, so
    /// that their uploads do not all arrive at once.
    pub async fn run(self, shutdown: Shutdown, deadline: Option<Instant>) -> CameraStats {
        let cameras = Arc::new(self);
        let count = cameras.settings.cameras;
        let tasks: Vec<_> = (0..count)
            .map(|index| {
                let (cameras, shutdown) = (cameras.clone(), shutdown.clone());
                tokio::spawn(async move { cameras.watch(index, shutdown, deadline).await })
            })
            .collect();
        let mut total = CameraStats::default();
        for task in tasks {
            if let Ok(stats) = task.await {
                total.snapshots += stats.snapshots;
                total.jobs += stats.jobs;
                total.failures += stats.failures;
            }
        }
        total
    }

    async fn watch(
        self: Arc<Self>,
        index: usize,
        shutdown: Shutdown,
        deadline: Option<Instant>,
    ) -> CameraStats {
        let s = &self.settings;
        let offset = s.period.mul_f64(index as f64 / s.cameras.max(1) as f64);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, s.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stats = CameraStats::default();
        for n in 0.. {
            if s.snapshots > 0 && n >= s.snapshots {
                break;
            }
            tokio::select! {
                _ = shutdown.requested() => break,
                _ = tick.tick() => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            // Drawing a snapshot takes tens of milliseconds of CPU.
            let this = self.clone();
            let drawn = tokio::task::spawn_blocking(move || this.snapshot(index, n)).await;
            let sent = match drawn {
                Ok(Ok((jpeg, reading))) => {
                    stats.snapshots += 1;
                    self.send(index, jpeg).await.map(|job| (job, reading))
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.into()),
            };
            match sent {
                Ok((job_id, reading)) => {
                    stats.jobs += 1;
                    tracing::info!(camera = %source_id(index), %job_id, %reading, "snapshot queued for OCR");
                }
                Err(e) => {
                    stats.failures += 1;
                    tracing::warn!(camera = %source_id(index), error = %e, "snapshot not sent");
                }
            }
        }
        stats
    }
}

/// The body of a 2xx answer as JSON, or the answer's status and body as
/// the error.
async fn answer(response: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "{status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cameras(seed: u64) -> Cameras {
        let settings = CameraSettings {
            ingest_url: String::new(),
            query_url: String::new(),
            api_key: None,
            token: String::new(),
            cameras: 2,
            period: Duration::from_secs(1),
            snapshots: 0,
            width: 320,
            height: 180,
            seed,
        };
        Cameras::new(
            settings,
            Renderer::from_env().expect("the font install.sh installs"),
        )
    }

    /// Ingest and the query API as a camera sees them: ingest stores every
    /// upload under the next id; the query API refuses `refused` of the
    /// submits (by their place, from 0) with 401. Answers their address
    /// and the submits' (Idempotency-Key, body) as they came.
    async fn fake_services(
        refused: &'static [usize],
    ) -> (
        String,
        Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
    ) {
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::post;
        use axum::Json;
        let submits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let uploads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = submits.clone();
        let app = axum::Router::new()
            .route(
                "/v1/files",
                post(move |body: axum::body::Bytes| async move {
                    assert!(body.starts_with(&[0xFF, 0xD8]), "a JPEG uploaded");
                    let n = uploads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Json(serde_json::json!({"file_id": format!("file-{n}")}))
                }),
            )
            .route(
                "/v1/jobs",
                post(
                    move |headers: HeaderMap, Json(job): Json<serde_json::Value>| async move {
                        let key = headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let mut submits = seen.lock().unwrap();
                        let place = submits.len();
                        submits.push((key, job));
                        if refused.contains(&place) {
                            (
                                StatusCode::UNAUTHORIZED,
                                Json(serde_json::json!({"error": "bad token"})),
                            )
                        } else {
                            let id = format!("job-{place}");
                            (
                                StatusCode::ACCEPTED,
                                Json(serde_json::json!({"job_id": id})),
                            )
                        }
                    },
                ),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, submits)
    }

    #[tokio::test]
    async fn a_refused_submit_is_counted_and_the_camera_goes_on() {
        let (url, submits) = fake_services(&[1]).await;
        let mut camera = cameras(7);
        camera.settings = CameraSettings {
            ingest_url: url.clone(),
            query_url: url,
            cameras: 1,
            period: Duration::from_millis(10),
            snapshots: 3,
            ..camera.settings
        };
        let (shutdown, _stop) = Shutdown::new();
        let stats = camera.run(shutdown, None).await;
        assert_eq!((stats.snapshots, stats.jobs, stats.failures), (3, 2, 1));
        // Each snapshot was submitted once, for the camera, keyed by its file.
        let submits = submits.lock().unwrap().clone();
        let keys: Vec<&str> = submits.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["camera:file-0", "camera:file-1", "camera:file-2"]);
        for (i, (_, job)) in submits.iter().enumerate() {
            assert_eq!(
                job,
                &serde_json::json!({"kind": "ocr", "params": {"source_id": "camera-1"},
                                    "inputs": [format!("file-{i}")]})
            );
        }
    }

    #[test]
    fn a_cameras_snapshots_repeat_with_its_seed_and_its_meter_climbs() {
        let (a, b) = (cameras(7), cameras(7));
        let first = a.snapshot(0, 0).expect("drawn");
        assert_eq!(
            first,
            b.snapshot(0, 0).expect("drawn"),
            "same seed, same snapshot"
        );
        assert!(first.0.starts_with(&[0xFF, 0xD8]), "a JPEG");
        let readings: Vec<f64> = (0..5)
            .map(|n| {
                a.snapshot(0, n)
                    .expect("drawn")
                    .1
                    .parse()
                    .expect("a number")
            })
            .collect();
        assert!(readings.windows(2).all(|w| w[1] > w[0]), "{readings:?}");
        let other = a.snapshot(1, 0).expect("drawn").1;
        assert_ne!(other, first.1, "each camera has its own meter");
        assert_ne!(cameras(8).snapshot(0, 0).expect("drawn").1, first.1);
    }
}

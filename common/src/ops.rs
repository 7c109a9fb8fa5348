//! The operational endpoints every service serves: liveness, readiness and
//! Prometheus metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{register_histogram_vec, Encoder, HistogramVec, TextEncoder};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

/// Whether the service can take traffic: set once its dependencies answered,
/// cleared when it starts draining. While it is not ready, it may say what
/// it waits for, which `/readyz` reports.
#[derive(Clone, Default)]
pub struct Readiness(Arc<ReadinessState>);

#[derive(Default)]
struct ReadinessState {
    ready: AtomicBool,
    waiting_for: Mutex<Option<String>>,
}

impl Readiness {
    pub fn set(&self, ready: bool) {
        if ready {
            *self.waiting() = None;
        }
        self.0.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::SeqCst)
    }

    /// Not ready, and why: the dependency start-up waits for.
    pub fn wait_for(&self, reason: impl Into<String>) {
        self.0.ready.store(false, Ordering::SeqCst);
        *self.waiting() = Some(reason.into());
    }

    pub fn waiting_for(&self) -> Option<String> {
        self.waiting().clone()
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // Only ever replaced whole: a panic cannot leave it half written.
        self.0
            .waiting_for
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What every service sets up first: logging, the shutdown flag tied to
/// SIGTERM, and a readiness flag that starts unset.
pub fn start_service(log: &crate::config::LogArgs) -> (crate::shutdown::Shutdown, Readiness) {
    crate::logging::init(log.format);
    (crate::shutdown::Shutdown::on_signal(), Readiness::default())
}

static HTTP_REQUESTS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "pulse_http_request_seconds",
        "HTTP requests served, by route, method and status, with their latency",
        &["route", "method", "status"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registers once")
});

/// Records every request's route, status and latency in Prometheus.
async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    HTTP_REQUESTS
        .with_label_values(&[&route, &method, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The request tracing of a service's own routes: a span per request, and
/// answers of 5xx logged at WARN rather than ERROR. A 503 while a
/// dependency is down (or while start-up waits) is expected, told to the
/// client with a reason and retried; what is a fault is logged at ERROR
/// where it happens. Applied before the probes are merged, so that the
/// orchestrator's polling of `/readyz` stays out of the log.
pub fn request_tracing() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>> {
    TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(tracing::Level::WARN))
}

/// `/healthz`, `/readyz` and `/metrics`, to merge into a service's router.
pub fn router(readiness: Readiness) -> Router {
    probes(readiness).route("/metrics", get(metrics))
}

/// `/healthz` and `/readyz` alone, for a port that does not serve metrics.
pub fn probes(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let answer = if readiness.is_ready() {
                    (StatusCode::OK, "ready".to_string())
                } else {
                    let body = match readiness.waiting_for() {
                        Some(reason) => format!("not ready: waiting for {reason}"),
                        None => "not ready".to_string(),
                    };
                    (StatusCode::SERVICE_UNAVAILABLE, body)
                };
                async move { answer }
            }),
        )
}

async fn metrics() -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&prometheus::gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_string())],
            e.to_string().into_bytes(),
        ),
    }
}

/// Serves `app` on `addr` until `shutdown` resolves, then lets in-flight
/// requests finish.
pub async fn serve(
    addr: std::net::SocketAddr,
    app: Router,
    shutdown: crate::shutdown::Shutdown,
) -> anyhow::Result<()> {
    serve_on(bind(addr).await?, app, shutdown).await
}

/// Takes `addr`, for a service that must fail at start, not later, when its
/// port is taken.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// [`serve`] on a listener already bound.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: crate::shutdown::Shutdown,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    let app = app.layer(middleware::from_fn(track));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.requested().await })
        .await?;
    Ok(())
}

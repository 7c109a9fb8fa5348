//! The API as one router. Each group of routes is declared with the layers
//! that cover it, so what applies to a route is read beside it:
//!
//! - reads that dashboards repeat: cache, then the read deadline;
//! - the audit trail and jobs: the read deadline;
//! - the stream, exports and files, which run as long as they need: neither;
//! - all of them: authentication first, then the audit trail, then the
//!   tenant's rate limit (so refusals are recorded and counted too);
//! - the OpenAPI document, its page and the dashboard's files: none.
//!
//! `main` adds request tracing and the probes.

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

use crate::audit::{self, AuditLog};
use crate::auth::{self, Authenticator};
use crate::budget::{self, Deadline};
use crate::cache::{self, ResponseCache};
use crate::limits::{self, Limiter};
use crate::state::AppState;
use crate::{
    admin, aggregates, dashboard, export, files, jobs, openapi, reads, routes, schedules, stream,
};

/// The layers of the API's routes.
pub struct Layers {
    pub cache: ResponseCache,
    pub deadline: Deadline,
    pub limiter: Limiter,
    pub auth: std::sync::Arc<Authenticator>,
    pub audit: AuditLog,
}

pub fn app(state: AppState, layers: Layers) -> Router {
    let cached_reads = Router::new()
        .route("/v1/events", get(routes::events))
        .route("/v1/events/{event_id}", get(routes::event))
        .route("/v1/anomalies", get(routes::anomalies))
        .route("/v1/devices", get(routes::devices))
        .route("/v1/devices/{source_id}/series", get(routes::series))
        .route("/v1/aggregates", get(aggregates::aggregates))
        .route_layer(middleware::from_fn_with_state(
            layers.cache,
            cache::middleware,
        ));
    let bounded = cached_reads
        .route("/v1/audit", get(admin::audit))
        .route("/v1/jobs", get(jobs::list).post(jobs::submit))
        .route("/v1/jobs/{job_id}", get(jobs::job))
        .route("/v1/jobs/{job_id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{job_id}/reads", get(reads::of_job))
        .route("/v1/snapshots", get(reads::snapshots))
        .route("/v1/schedules", get(schedules::list))
        .route(
            "/v1/schedules/{name}",
            axum::routing::put(schedules::set).delete(schedules::remove),
        )
        .route_layer(middleware::from_fn_with_state(
            layers.deadline,
            budget::deadline,
        ));
    let unbounded = Router::new()
        .route("/v1/stream", get(stream::upgrade))
        .route("/v1/export", get(export::export))
        .route("/v1/files/{file_id}", get(files::file));
    let api = bounded
        .merge(unbounded)
        .route_layer(middleware::from_fn_with_state(
            layers.limiter,
            limits::middleware,
        ))
        .route_layer(middleware::from_fn_with_state(
            layers.audit,
            audit::middleware,
        ))
        .route_layer(middleware::from_fn_with_state(
            layers.auth,
            auth::middleware,
        ))
        .with_state(state);
    let public = Router::new()
        .route("/openapi.json", get(openapi::json))
        .route("/docs", get(openapi::docs))
        .merge(dashboard::router());
    api.merge(public)
}

/// Authentication, roles, parameters and the rate limit on the router
/// itself, through `oneshot`: no server and no storage.
#[cfg(test)]
mod tests;

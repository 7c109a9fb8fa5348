//! Per-caller rate limits: each credential (token subject or API key, per
//! tenant) gets its own allowance of requests per second with a burst; a
//! request beyond it gets 429 with `Retry-After`.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::Authenticated;
use crate::error::ApiError;

#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Requests per second each caller may make.
    #[arg(long, env = "PULSE_QUERY_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,
    /// Requests a caller may make at once above its rate.
    #[arg(long, env = "PULSE_QUERY_RATE_BURST", default_value_t = 2000)]
    pub rate_burst: u32,
}

#[derive(Clone)]
pub struct Limiter(Arc<DefaultKeyedRateLimiter<(String, String)>>);

impl Limiter {
    pub fn new(args: &LimitArgs) -> anyhow::Result<Self> {
        let rate = NonZeroU32::new(args.rate_limit)
            .ok_or_else(|| anyhow::anyhow!("--rate-limit must be positive"))?;
        let burst = NonZeroU32::new(args.rate_burst)
            .ok_or_else(|| anyhow::anyhow!("--rate-burst must be positive"))?;
        Ok(Self(Arc::new(RateLimiter::keyed(
            Quota::per_second(rate).allow_burst(burst),
        ))))
    }
}

/// Takes one request from the caller's allowance; requests without a valid
/// credential are refused later, by the route.
pub async fn middleware(State(limiter): State<Limiter>, request: Request, next: Next) -> Response {
    if let Some(Authenticated(Ok(caller))) = request.extensions().get::<Authenticated>() {
        let key = (caller.tenant.clone(), caller.name.clone());
        if let Err(not_until) = limiter.0.check_key(&key) {
            return ApiError::RateLimited {
                reason: format!("rate limit of '{}' exceeded", caller.name),
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }
            .into_response();
        }
    }
    next.run(request).await
}

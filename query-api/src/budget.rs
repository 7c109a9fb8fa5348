//! What one query may cost ClickHouse: a time limit and a limit on rows
//! read, enforced by ClickHouse itself (so a runaway query stops there, not
//! only in the API), and turned into clear answers for the caller. A read
//! that ClickHouse does not answer at all (a server that hangs) is given up
//! by the API a little after the same time limit.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clickhouse::Client;

use crate::error::ApiError;

#[derive(clap::Args, Debug, Clone)]
pub struct BudgetArgs {
    /// Longest one read may run in ClickHouse, in seconds; a longer one is stopped and answered 504.
    #[arg(long, env = "PULSE_QUERY_TIMEOUT_S", default_value_t = 10)]
    pub query_timeout_s: u64,
    /// Most rows one read may scan in ClickHouse; a larger one is refused with 422.
    #[arg(long, env = "PULSE_QUERY_MAX_ROWS", default_value_t = 500_000_000)]
    pub query_max_rows: u64,
    /// Longest one export may run in ClickHouse, in seconds (exports have no row limit).
    #[arg(long, env = "PULSE_EXPORT_TIMEOUT_S", default_value_t = 3600)]
    pub export_timeout_s: u64,
    /// Longest an export may go without a byte from ClickHouse, in seconds; past it the export ends as failed.
    #[arg(long, env = "PULSE_EXPORT_IDLE_TIMEOUT_S", default_value_t = 60)]
    pub export_idle_timeout_s: u64,
}

impl BudgetArgs {
    /// `client` limited as a read is.
    pub fn reads(&self, client: Client) -> Client {
        client
            .with_setting("max_execution_time", self.query_timeout_s.to_string())
            .with_setting("timeout_overflow_mode", "throw")
            .with_setting("max_rows_to_read", self.query_max_rows.to_string())
            .with_setting("read_overflow_mode", "throw")
    }

    /// How long an export may wait for its next bytes from ClickHouse.
    pub fn export_idle(&self) -> Duration {
        Duration::from_secs(self.export_idle_timeout_s.max(1))
    }

    /// `client` limited as an export is.
    pub fn exports(&self, client: Client) -> Client {
        client
            .with_setting("max_execution_time", self.export_timeout_s.to_string())
            .with_setting("timeout_overflow_mode", "throw")
    }
}

/// How long after ClickHouse's own time limit the API stops waiting for a
/// read: enough for ClickHouse to report its limit itself.
const GRACE: Duration = Duration::from_secs(2);

/// The longest the API waits for a read's answer.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Duration);

impl BudgetArgs {
    pub fn deadline(&self) -> Deadline {
        Deadline(Duration::from_secs(self.query_timeout_s) + GRACE)
    }
}

/// Answers 504 for a read not answered by its deadline; dropping the
/// handler closes its ClickHouse request.
pub async fn deadline(
    State(Deadline(limit)): State<Deadline>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?limit, "ClickHouse did not answer a read in time");
            ApiError::StorageTimeout.into_response()
        }
    }
}

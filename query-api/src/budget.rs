//! What one query may cost ClickHouse: a time limit and a limit on rows
//! read, enforced by ClickHouse itself (so a runaway query stops there, not
//! only in the API), and turned into clear answers for the caller. A read
//! that ClickHouse does not answer at all (a server that hangs) is given up
//! by the API a little after the same time limit.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use clickhouse::Client;

use crate::routes::error;

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
            error(
                StatusCode::GATEWAY_TIMEOUT,
                "query",
                "storage did not answer within the API's time limit; try again later",
            )
        }
    }
}

/// Which limit a failed query ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Time,
    Rows,
}

/// The limit behind a ClickHouse error, if any: code 159 (TIMEOUT_EXCEEDED)
/// or 158 (TOO_MANY_ROWS), on old and current servers alike.
pub fn exceeded(e: &clickhouse::error::Error) -> Option<Exceeded> {
    let text = e.to_string();
    if text.contains("Code: 159") {
        Some(Exceeded::Time)
    } else if text.contains("Code: 158") {
        Some(Exceeded::Rows)
    } else {
        None
    }
}

/// The answer to a query ClickHouse refused or could not run.
pub fn storage_error(e: clickhouse::error::Error) -> Response {
    match exceeded(&e) {
        Some(Exceeded::Time) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "query",
            "the query ran past the API's time limit; narrow the time range or name a source_id",
        ),
        Some(Exceeded::Rows) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query",
            "the query would read more rows than the API's limit allows; narrow the time range or name a source_id",
        ),
        None => {
            tracing::warn!(error = %e, "ClickHouse query failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "", "storage unavailable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{exceeded, Exceeded};

    fn bad(text: &str) -> clickhouse::error::Error {
        clickhouse::error::Error::BadResponse(text.into())
    }

    #[test]
    fn limits_are_told_apart_from_other_failures() {
        // As ClickHouse 18.16 words them.
        let time = "Code: 159, e.displayText() = DB::Exception: Timeout exceeded: elapsed 1.2 seconds, maximum: 1";
        let rows = "Code: 158, e.displayText() = DB::Exception: Limit for rows to read exceeded: 65536 rows read (or to read), maximum: 10";
        assert_eq!(exceeded(&bad(time)), Some(Exceeded::Time));
        assert_eq!(exceeded(&bad(rows)), Some(Exceeded::Rows));
        assert_eq!(
            exceeded(&bad(
                "Code: 60, e.displayText() = DB::Exception: Table x doesn't exist"
            )),
            None
        );
        assert_eq!(exceeded(&clickhouse::error::Error::TimedOut), None);
    }
}

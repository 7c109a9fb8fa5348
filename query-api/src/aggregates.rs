//! Aggregates for analysts: count, mean, extremes and quantiles of the
//! score or of one reading, per device, event type or kind, over a range.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Params, Reader};
use crate::routes::{limit_of, range_of, with_rows};
use crate::store::{AggregateRow, AggregateSpec, EventStore};

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// One group per source (device).
    #[default]
    Device,
    /// One group per application event type.
    EventType,
    /// One group per kind: `telemetry` or `app`.
    Kind,
    /// One group of everything.
    None,
}

impl GroupBy {
    fn as_str(self) -> &'static str {
        match self {
            GroupBy::Device => "device",
            GroupBy::EventType => "event_type",
            GroupBy::Kind => "kind",
            GroupBy::None => "none",
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AggregatesQuery {
    /// `score` (default) or a reading's name, such as `temperature_c`.
    #[param(pattern = r"^[A-Za-z0-9_.]{1,64}$")]
    metric: Option<String>,
    /// `device` (default), `event_type`, `kind` or `none`.
    group_by: Option<GroupBy>,
    /// Only this source (device).
    source_id: Option<String>,
    /// Start of the range, milliseconds since the epoch (default: 24 hours before its end).
    #[param(minimum = 0, maximum = 4294967295999_i64)]
    from_ms: Option<i64>,
    /// End of the range, exclusive (default: now). A range that ends before it starts is empty.
    #[param(minimum = 0, maximum = 4294967295999_i64)]
    to_ms: Option<i64>,
    /// Most groups, 1..10000 (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u64>,
}

/// One group's statistics.
#[derive(Debug, Serialize, ToSchema)]
pub struct Group {
    /// The device, event type or kind; empty for `group_by=none`.
    pub key: String,
    pub count: u64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl From<AggregateRow> for Group {
    fn from(r: AggregateRow) -> Self {
        let q = |i: usize| r.quantiles.get(i).copied().unwrap_or(f64::NAN);
        Self {
            p50: q(0),
            p90: q(1),
            p99: q(2),
            key: r.key,
            count: r.count,
            avg: r.avg,
            min: r.min,
            max: r.max,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Aggregates {
    pub metric: String,
    pub group_by: GroupBy,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Groups in key order; a group without events is absent.
    pub groups: Vec<Group>,
}

/// A metric name: `score` or a reading's name as the schemas allow it.
fn metric_of(metric: Option<String>) -> Result<String, ApiError> {
    let metric = metric.unwrap_or_else(|| "score".into());
    let valid = (1..=64).contains(&metric.len())
        && metric
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if valid {
        Ok(metric)
    } else {
        Err(ApiError::bad_param(
            "metric",
            "must be `score` or a reading's name (letters, digits, '_' and '.', up to 64)",
        ))
    }
}

/// Count, mean, min, max and p50/p90/p99 of a measure per group, over a
/// time range of the caller's tenant's events. Quantiles are estimated from
/// a sample of up to 8192 values per group; exact below that.
#[utoipa::path(get, path = "/v1/aggregates", tag = "events", params(AggregatesQuery),
    responses(
        (status = 200, body = Aggregates),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, description = "The query would read more rows than allowed", body = ErrorBody),
        (status = 504, description = "The query ran past the time limit", body = ErrorBody),
    ))]
pub async fn aggregates(
    State(store): State<EventStore>,
    Reader(caller): Reader,
    Params(q): Params<AggregatesQuery>,
) -> Result<Response, ApiError> {
    let metric = metric_of(q.metric)?;
    let group_by = q.group_by.unwrap_or_default();
    let range = range_of(q.from_ms, q.to_ms)?;
    let spec = AggregateSpec {
        group_by: group_by.as_str(),
        metric: &metric,
        source: q.source_id.as_deref(),
        range,
        limit: limit_of(q.limit, 1000)?,
    };
    let groups: Vec<Group> = store
        .aggregates(&caller.tenant, &spec)
        .await?
        .into_iter()
        .map(Group::from)
        .collect();
    let rows = groups.len();
    let body = Aggregates {
        metric,
        group_by,
        from_ms: range.0,
        to_ms: range.1,
        groups,
    };
    Ok(with_rows(body, rows))
}

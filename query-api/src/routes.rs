//! HTTP routes for analysts and dashboards. Each is annotated for the
//! OpenAPI document (`crate::openapi`).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pulse_common::scored::ScoredEvent;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use pulse_common::contract::MAX_EVENT_TIME_MS;

use crate::audit::RowsReturned;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Params, Reader};
use crate::store::{Bucket, Cursor, Device, EventStore, Page, PageKind};

pub const MAX_LIMIT: u64 = 10_000;

/// A page of events, newest first.
#[derive(Serialize, ToSchema)]
pub struct EventsPage {
    pub events: Vec<ScoredEvent>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<Device>,
}

#[derive(Serialize, ToSchema)]
pub struct Series {
    pub source_id: String,
    /// Where the series starts: the request's `from_ms`, or later when the
    /// range holds more than 10000 buckets at this resolution (then the
    /// series is the last 10000).
    pub from_ms: i64,
    pub resolution_s: u32,
    pub buckets: Vec<Bucket>,
}

/// `body` as JSON, noting for the audit trail how many rows it holds.
pub fn with_rows(body: impl Serialize, rows: usize) -> Response {
    let mut response = Json(body).into_response();
    response.extensions_mut().insert(RowsReturned(rows as u64));
    response
}

/// One event of the caller's tenant, with its score and features.
#[utoipa::path(get, path = "/v1/events/{event_id}", tag = "events",
    params(("event_id" = String, Path, description = "The event's id")),
    responses(
        (status = 200, body = ScoredEvent),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "The tenant has no such event", body = ErrorBody),
    ))]
pub async fn event(
    State(store): State<EventStore>,
    Reader(caller): Reader,
    Path(event_id): Path<String>,
) -> Result<Response, ApiError> {
    match store.event(&caller.tenant, &event_id).await? {
        Some(e) => Ok(with_rows(e, 1)),
        None => Err(ApiError::NotFound {
            field: "event_id",
            reason: "no such event",
        }),
    }
}

/// Default span of a range without `from_ms`: one day before its end.
const DEFAULT_SPAN_MS: i64 = 86_400_000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this source (device).
    source_id: Option<String>,
    /// Start of the range, milliseconds since the epoch (default: 24 hours before its end).
    #[param(minimum = 0, maximum = 4294967295999_i64)]
    from_ms: Option<i64>,
    /// End of the range, exclusive (default: now). A range that ends before it starts is empty.
    #[param(minimum = 0, maximum = 4294967295999_i64)]
    to_ms: Option<i64>,
    /// Events per page, 1..10000 (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^(0|[1-9][0-9]{0,12})\.([0-9a-f]{2}){0,128}$")]
    cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// Start of the range, milliseconds since the epoch (default: 24 hours before its end).
    #[param(minimum = 0, maximum = 4294967295999_i64)]
    from_ms: Option<i64>,
    /// End of the range, exclusive (default: now). A range that ends before it starts is empty.
    #[param(minimum = 0, maximum = 4294967295999_i64)]
    to_ms: Option<i64>,
    /// Events per page, 1..10000 (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^(0|[1-9][0-9]{0,12})\.([0-9a-f]{2}){0,128}$")]
    cursor: Option<String>,
}

/// `limit`, or `default` when absent, checked against `MAX_LIMIT`.
pub fn limit_of(limit: Option<u64>, default: u64) -> Result<u64, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_param(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ))
    }
}

/// The range `[from_ms, to_ms)` a request asks for: by default the 24
/// hours up to now. Both ends lie where event times can (the input
/// contract's range); a range that ends before it starts is empty, not an
/// error, so that every pair of valid bounds is a valid request.
pub fn range_of(from_ms: Option<i64>, to_ms: Option<i64>) -> Result<(i64, i64), ApiError> {
    let within = |field: &'static str, ms: i64| {
        if (0..=MAX_EVENT_TIME_MS).contains(&ms) {
            Ok(ms)
        } else {
            Err(ApiError::bad_param(
                field,
                format!("must be between 0 and {MAX_EVENT_TIME_MS} (milliseconds since the epoch)"),
            ))
        }
    };
    let to_ms = match to_ms {
        Some(ms) => within("to_ms", ms)?,
        None => pulse_common::clock::now_ms() + 1,
    };
    let from_ms = match from_ms {
        Some(ms) => within("from_ms", ms)?,
        None => to_ms.saturating_sub(DEFAULT_SPAN_MS).max(0),
    };
    Ok((from_ms, to_ms.max(from_ms)))
}

/// The page a request asks for, or the parameter that is wrong.
fn page_of(
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    limit: Option<u64>,
    cursor: Option<&str>,
) -> Result<Page, ApiError> {
    let limit = limit_of(limit, 100)?;
    let (from_ms, to_ms) = range_of(from_ms, to_ms)?;
    let after = match cursor {
        None => Cursor {
            time_ms: to_ms,
            event_id: String::new(),
        },
        Some(c) => Cursor::decode(c)
            .ok_or_else(|| ApiError::bad_param("cursor", "not a cursor returned by this API"))?,
    };
    Ok(Page {
        from_ms,
        to_ms,
        after,
        limit,
    })
}

/// A page of events as JSON, with the cursor of the next page when this
/// one is full.
async fn page_response(
    store: &EventStore,
    tenant: &str,
    kind: PageKind<'_>,
    page: Page,
) -> Result<Response, ApiError> {
    let events = store.page(tenant, kind, &page).await?;
    let next = (events.len() as u64 == page.limit)
        .then(|| events.last())
        .flatten()
        .map(|e| {
            Cursor {
                time_ms: e.event_time_ms,
                event_id: e.event_id.clone(),
            }
            .encode()
        });
    let rows = events.len();
    Ok(with_rows(
        EventsPage {
            events,
            next_cursor: next,
        },
        rows,
    ))
}

/// The caller's tenant's events in a time range, newest first, in pages.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, body = EventsPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn events(
    State(store): State<EventStore>,
    Reader(caller): Reader,
    Params(q): Params<EventsQuery>,
) -> Result<Response, ApiError> {
    let page = page_of(q.from_ms, q.to_ms, q.limit, q.cursor.as_deref())?;
    let kind = PageKind::Events {
        source: q.source_id.as_deref(),
    };
    page_response(&store, &caller.tenant, kind, page).await
}

/// The events the model flagged, newest first, in pages.
#[utoipa::path(get, path = "/v1/anomalies", tag = "events", params(RangeQuery),
    responses(
        (status = 200, body = EventsPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn anomalies(
    State(store): State<EventStore>,
    Reader(caller): Reader,
    Params(q): Params<RangeQuery>,
) -> Result<Response, ApiError> {
    let page = page_of(q.from_ms, q.to_ms, q.limit, q.cursor.as_deref())?;
    page_response(&store, &caller.tenant, PageKind::Anomalies, page).await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DevicesQuery {
    /// Most devices to list, 1..10000 (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u64>,
}

/// The caller's tenant's devices with their totals, from the rollup.
#[utoipa::path(get, path = "/v1/devices", tag = "devices", params(DevicesQuery),
    responses(
        (status = 200, body = DeviceList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn devices(
    State(store): State<EventStore>,
    Reader(caller): Reader,
    Params(q): Params<DevicesQuery>,
) -> Result<Response, ApiError> {
    let limit = limit_of(q.limit, 1000)?;
    let devices = store.devices(&caller.tenant, limit).await?;
    let rows = devices.len();
    Ok(with_rows(DeviceList { devices }, rows))
}

/// Most buckets one series answers: the last of a longer range.
const MAX_BUCKETS: i64 = 10_000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Start of the range, milliseconds since the epoch (default: 24 hours before its end).
    #[param(minimum = 0, maximum = 4294967295999_i64)]
    from_ms: Option<i64>,
    /// End of the range, exclusive (default: now). A range that ends before it starts is empty.
    #[param(minimum = 0, maximum = 4294967295999_i64)]
    to_ms: Option<i64>,
    /// Bucket width in seconds: whole minutes, from 60 to 86400 (default 60).
    #[param(minimum = 60, maximum = 86400, multiple_of = 60)]
    resolution_s: Option<u32>,
}

/// A device's counts and scores per time bucket, from the rollup.
#[utoipa::path(get, path = "/v1/devices/{source_id}/series", tag = "devices",
    params(("source_id" = String, Path, description = "The device"), SeriesQuery),
    responses(
        (status = 200, body = Series),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn series(
    State(store): State<EventStore>,
    Reader(caller): Reader,
    Path(source_id): Path<String>,
    Params(q): Params<SeriesQuery>,
) -> Result<Response, ApiError> {
    let step = q.resolution_s.unwrap_or(60);
    if !(60..=86_400).contains(&step) || step % 60 != 0 {
        let reason = "must be whole minutes from 60 to 86400";
        return Err(ApiError::bad_param("resolution_s", reason));
    }
    let (from_ms, to_ms) = range_of(q.from_ms, q.to_ms)?;
    let from_ms = from_ms.max(to_ms - MAX_BUCKETS * i64::from(step) * 1000);
    let seconds = |ms: i64| u32::try_from(ms.div_euclid(1000).max(0)).unwrap_or(u32::MAX);
    let buckets = store
        .series(
            &caller.tenant,
            &source_id,
            step,
            seconds(from_ms),
            seconds(to_ms),
        )
        .await?;
    let rows = buckets.len();
    let series = Series {
        source_id,
        from_ms,
        resolution_s: step,
        buckets,
    };
    Ok(with_rows(series, rows))
}

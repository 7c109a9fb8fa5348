//! Streaming export of a tenant's events as CSV or NDJSON. ClickHouse
//! formats the rows and the API passes its response through chunk by chunk,
//! so an export of any size holds only a few chunks in the API's memory.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::extract::{Params, Reader};
use crate::routes::{range_of, unavailable, ErrorBody};
use crate::store::EventStore;

#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated, with a header row.
    #[default]
    Csv,
    /// One JSON object per line.
    Ndjson,
}

impl Format {
    /// ClickHouse's name for the format.
    fn clickhouse(self) -> &'static str {
        match self {
            Format::Csv => "CSVWithNames",
            Format::Ndjson => "JSONEachRow",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Start of the range, milliseconds since the epoch (default: 24 hours before its end).
    from_ms: Option<i64>,
    /// End of the range, exclusive (default: now).
    to_ms: Option<i64>,
    /// Only this source (device).
    source_id: Option<String>,
    /// `csv` (default) or `ndjson`.
    format: Option<Format>,
}

/// The caller's tenant's events in a time range, oldest first, streamed as
/// CSV or NDJSON however large.
#[utoipa::path(get, path = "/v1/export", tag = "events", params(ExportQuery),
    responses(
        (status = 200, description = "The events, streamed", content_type = "text/csv"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn export(
    State(store): State<EventStore>,
    Reader(caller): Reader,
    Params(q): Params<ExportQuery>,
) -> Result<Response, Response> {
    let range = range_of(q.from_ms, q.to_ms)?;
    let format = q.format.unwrap_or_default();
    let rows = store
        .export(
            &caller.tenant,
            q.source_id.as_deref(),
            range,
            format.clickhouse(),
        )
        .map_err(unavailable)?;
    let filename = format!(
        "attachment; filename=\"events-{}-{}.{}\"",
        range.0,
        range.1,
        format.extension()
    );
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (header::CONTENT_DISPOSITION, filename),
        ],
        Body::from_stream(rows),
    )
        .into_response())
}

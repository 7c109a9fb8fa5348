//! What OCR jobs read: a job's reads in pages, and the newest read of each
//! camera (what the dashboard draws over its snapshot). A tenant sees only
//! its own; another tenant's job is 404 like a job that does not exist.

use axum::extract::{Path, State};
use axum::Json;
use pulse_common::jobs::{Line, Read};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Params, Reader};
use crate::jobs::{desk, find, JobDesk};

/// One snapshot's read.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadView {
    /// The snapshot's place among the job's inputs, from 0.
    pub item: u32,
    pub job_id: String,
    /// The snapshot (`GET /v1/files/{file_id}`).
    pub file_id: String,
    /// When the snapshot was taken (uploaded), ms since the epoch.
    pub taken_ms: i64,
    /// Every line read, top first.
    pub lines: Vec<Line>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// The meter value read, if a line matched the job's pattern.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The telemetry event the value was published as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Why the snapshot could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&Read> for ReadView {
    fn from(r: &Read) -> Self {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Self {
            item: r.item,
            job_id: r.job_id.clone(),
            file_id: r.file_id.clone(),
            taken_ms: r.taken_ms,
            lines: serde_json::from_str(&r.lines).unwrap_or_default(),
            source_id: some(&r.source_id),
            value: (r.has_value == 1).then_some(r.value),
            event_id: some(&r.event_id),
            error: some(&r.error),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadsQuery {
    /// The `next` of the page before.
    #[param(minimum = 0, maximum = 4294967295_i64)]
    after: Option<u32>,
    /// Reads per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// A page of reads, in input order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadList {
    pub reads: Vec<ReadView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<u32>,
}

fn limit_of(limit: Option<u64>) -> Result<u64, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_param("limit", "must be 1 to 1000"));
    }
    Ok(limit)
}

/// The reads of the caller's tenant's OCR job so far, as they are stored
/// (a running job's grow while it runs).
#[utoipa::path(get, path = "/v1/jobs/{job_id}/reads", tag = "jobs", params(
        ("job_id" = String, Path, description = "As `POST /v1/jobs` answered it"), ReadsQuery),
    responses(
        (status = 200, body = ReadList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "The tenant has no such job", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn of_job(
    State(jobs): State<Option<JobDesk>>,
    Reader(caller): Reader,
    Path(job_id): Path<String>,
    Params(q): Params<ReadsQuery>,
) -> Result<Json<ReadList>, ApiError> {
    let jobs = desk(jobs)?;
    let limit = limit_of(q.limit)?;
    let job = find(&jobs.ledger, &caller.tenant, &job_id).await?;
    let after = q.after.map_or(-1, i64::from);
    let found = jobs
        .reads
        .page(&caller.tenant, &job.job_id, after, limit)
        .await?;
    let next = (found.len() as u64 == limit)
        .then(|| found.last().map(|r| r.item))
        .flatten();
    Ok(Json(ReadList {
        reads: found.iter().map(ReadView::from).collect(),
        next,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SnapshotsQuery {
    /// Only this source's newest read.
    #[param(min_length = 1, max_length = 256)]
    source_id: Option<String>,
    /// Sources, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// The newest snapshot read of each of the caller's tenant's sources.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    pub snapshots: Vec<ReadView>,
}

/// The newest successful read of each source (device) an OCR job named,
/// newest first: each camera's latest snapshot and what was read off it.
#[utoipa::path(get, path = "/v1/snapshots", tag = "jobs", params(SnapshotsQuery),
    responses(
        (status = 200, body = SnapshotList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn snapshots(
    State(jobs): State<Option<JobDesk>>,
    Reader(caller): Reader,
    Params(q): Params<SnapshotsQuery>,
) -> Result<Json<SnapshotList>, ApiError> {
    let jobs = desk(jobs)?;
    let limit = limit_of(q.limit)?;
    let given_empty = q.source_id.as_deref() == Some("");
    let source = q.source_id.unwrap_or_default();
    if given_empty || source.len() > 256 {
        return Err(ApiError::bad_param("source_id", "must be 1 to 256 bytes"));
    }
    let found = jobs.reads.latest(&caller.tenant, &source, limit).await?;
    Ok(Json(SnapshotList {
        snapshots: found.iter().map(ReadView::from).collect(),
    }))
}

//! Jobs: `POST /v1/jobs` queues one for the workers, `GET /v1/jobs` and
//! `GET /v1/jobs/{job_id}` read their state, `POST /v1/jobs/{job_id}/cancel`
//! stops one (`pulse_common::jobs` has the lifecycle).
//!
//! A submit is checked whole before anything is written: the kind, its
//! parameters and every input file (which must be the caller's tenant's).
//! Then the request goes to the jobs topic, and only then is the job
//! stored as queued, so a job never reads as queued without a request a
//! worker will see (live streams are told first, so that they see it
//! queued before any worker's transition). An `Idempotency-Key` names the job: the same key again
//! answers the job it made (and sends its request again while it is still
//! queued, in case the first answer was lost with it), and the same key
//! with another request is refused with 409.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use pulse_common::files::sniff::Kind as FileKind;
use pulse_common::files::{FileId, FileMeta, FileStore};
use pulse_common::jobs::{
    Control, ControlAction, Job, JobKind, JobLedger, JobPage, JobRequest, JobState, OcrParams,
    ReadLedger, ReportParams,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Params, Reader};

/// Input files whose metadata a submit reads at once.
const INPUT_CHECKS_IN_FLIGHT: usize = 16;
/// Longest `Idempotency-Key`.
const MAX_KEY_BYTES: usize = 256;

/// What the job routes need: where jobs are recorded, and the files that
/// inputs name. None where the API runs without Kafka for jobs.
#[derive(Clone)]
pub struct JobDesk {
    pub ledger: JobLedger,
    /// What OCR jobs read.
    pub reads: ReadLedger,
    pub files: FileStore,
    /// Closest two occurrences of one report schedule may be, in ms.
    pub schedule_min_interval_ms: i64,
}

/// The kinds of job, as the document names them.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A tenant's events over a range as one CSV or Parquet file.
    Report,
    /// The text on JPEG and PNG snapshots (the inputs, or the entries of
    /// one zip archive), with each meter value read published as the
    /// source's telemetry.
    Ocr,
}

/// A job to queue, as the document states it: `kind` decides what
/// `params` and `inputs` must be. The handler reads a [`Submit`] instead,
/// so that a wrong kind is 400 `kind` and a wrong parameter names itself,
/// where serde's tagged enum would say only that the body is bad.
#[derive(ToSchema)]
#[serde(untagged)]
// Never built: it exists for the document alone.
#[allow(dead_code)]
pub enum SubmitDoc {
    Report(SubmitReport),
    Ocr(SubmitOcr),
}

/// A report: a tenant's events over a range as one CSV or Parquet file.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SubmitReport {
    #[schema(inline)]
    kind: ReportKind,
    params: ReportParams,
    /// A report reads no input files.
    #[serde(default)]
    #[schema(max_items = 0)]
    inputs: Vec<String>,
}

/// An OCR job: the text on JPEG and PNG snapshots, with each meter value
/// read published as the source's telemetry.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SubmitOcr {
    #[schema(inline)]
    kind: OcrKind,
    /// May be left out: then nothing is published.
    #[serde(default)]
    params: Option<OcrParams>,
    /// Ids of the tenant's snapshots (`POST /v1/files` on ingest), or of
    /// one zip archive of them, whose entries are then the snapshots.
    #[schema(min_items = 1, max_items = 1000)]
    inputs: Vec<String>,
}

#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum ReportKind {
    Report,
}

#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum OcrKind {
    Ocr,
}

/// A job to queue, as the handler reads it (see [`SubmitDoc`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    /// The job's kind; any other is 400 `kind`.
    pub kind: String,
    #[serde(default)]
    pub params: serde_json::Value,
    #[serde(default)]
    pub inputs: Vec<String>,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub job_id: String,
    pub kind: String,
    pub state: JobState,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    pub inputs: Vec<String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// From 0 to 1.
    pub progress: f32,
    /// Why the job (or its last attempt) failed.
    pub error: Option<String>,
    /// The file the job made: `GET /v1/files/{result_file_id}`.
    pub result_file_id: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        let state = j.state();
        let params = serde_json::from_str(&j.params).unwrap_or(serde_json::Value::Null);
        let some = |s: String| (!s.is_empty()).then_some(s);
        JobView {
            job_id: j.job_id,
            kind: j.kind,
            state,
            params,
            inputs: j.inputs,
            attempts: j.attempts,
            progress: j.progress,
            error: some(j.error),
            result_file_id: some(j.result_file_id),
            created_ms: j.created_ms,
            updated_ms: j.updated_ms,
        }
    }
}

pub(crate) fn desk(jobs: Option<JobDesk>) -> Result<JobDesk, ApiError> {
    jobs.ok_or(ApiError::Unavailable("jobs are not enabled on this API"))
}

fn queueing_failed(e: anyhow::Error) -> ApiError {
    tracing::warn!(error = %e, "cannot queue a job");
    ApiError::Unavailable("the job queue is unavailable; retry with the same Idempotency-Key")
}

/// Queues a job for the workers.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = SubmitDoc,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~][ -~]{0,255}$",
        description = "Names the job: a retry with the same key answers the same job")),
    responses(
        (status = 202, description = "Queued", body = JobView),
        (status = 200, description = "The job this Idempotency-Key made before", body = JobView),
        (status = 400, description = "A bad kind, parameter or input (`field` names it)", body = ErrorBody),
        (status = 404, description = "An input is not a file of the tenant's (`field`: `inputs`)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "The Idempotency-Key made a different job", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn submit(
    State(jobs): State<Option<JobDesk>>,
    Reader(caller): Reader,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let jobs = desk(jobs)?;
    let submit: Submit = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_param("body", format!("not a job request: {e}")))?;
    let kind = JobKind::parse(&submit.kind).ok_or_else(|| {
        ApiError::bad_param(
            "kind",
            format!("unknown job kind '{}': use report or ocr", submit.kind),
        )
    })?;
    let encode = |v: Result<serde_json::Value, _>| v.map_err(|_| ApiError::Unavailable("encoding"));
    let params = match kind {
        JobKind::Report => ReportParams::parse(&submit.params)
            .map_err(|e| ApiError::bad_param(e.field, e.reason))
            .and_then(|p| encode(serde_json::to_value(p)))?,
        JobKind::Ocr => OcrParams::parse(&submit.params)
            .map_err(|e| ApiError::bad_param(e.field, e.reason))
            .and_then(|p| encode(serde_json::to_value(p)))?,
    };
    check_inputs(&jobs.files, &caller.tenant, kind, &submit.inputs).await?;
    let key = idempotency_key(&headers)?;
    let job_id = match &key {
        Some(key) => FileId::for_key(&caller.tenant, &format!("job:{key}")),
        None => FileId::random(),
    };
    let request = JobRequest {
        job_id: job_id.as_str().to_string(),
        tenant_id: caller.tenant.clone(),
        kind: kind.as_str().to_string(),
        params,
        inputs: submit.inputs,
        created_ms: pulse_common::clock::now_ms(),
    };
    let (status, job) = jobs.queue(request).await?;
    let location = format!("/v1/jobs/{}", job.job_id);
    Ok((status, [(header::LOCATION, location)], Json(job)).into_response())
}

impl JobDesk {
    /// Queues `request`, checked already, unless its job exists: 202 with
    /// the job queued now, 200 with the one queued before under the same
    /// id, 409 if that one is another request.
    pub async fn queue(&self, request: JobRequest) -> Result<(StatusCode, JobView), ApiError> {
        let tenant = request.tenant_id.clone();
        if let Some(existing) = self.ledger.current(&tenant, &request.job_id).await? {
            let same = existing.kind == request.kind
                && serde_json::from_str::<serde_json::Value>(&existing.params)
                    .ok()
                    .as_ref()
                    == Some(&request.params)
                && existing.inputs == request.inputs;
            if !same {
                return Err(ApiError::Conflict {
                    field: "idempotency-key",
                    reason:
                        "this Idempotency-Key made a job with another kind, parameters or inputs"
                            .into(),
                });
            }
            if existing.state() == JobState::Queued {
                let again = JobRequest {
                    created_ms: existing.created_ms,
                    ..request
                };
                self.ledger.request(&again).await.map_err(queueing_failed)?;
            }
            return Ok((StatusCode::OK, JobView::from(existing)));
        }
        // Announced before the request exists, so that live streams see it
        // queued before any worker's transition; stored once the request is
        // on Kafka, so that a stored job always has a request.
        let queued = Job::queued(&request);
        self.ledger.announce(&queued).await;
        self.ledger
            .request(&request)
            .await
            .map_err(queueing_failed)?;
        self.ledger.store(&queued).await.map_err(queueing_failed)?;
        crate::metrics::JOBS_SUBMITTED
            .with_label_values(&[request.kind.as_str()])
            .inc();
        Ok((StatusCode::ACCEPTED, JobView::from(queued)))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_param(
            "idempotency-key",
            format!("must be 1 to {MAX_KEY_BYTES} visible ASCII characters"),
        )
    };
    let key = value.to_str().map_err(|_| bad())?;
    let visible = key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if key.trim().is_empty() || key.len() > MAX_KEY_BYTES || !visible {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// Every input must be a file of the caller's tenant (404 otherwise:
/// another tenant's id reads as no file at all), and the kind must read
/// files.
async fn check_inputs(
    files: &FileStore,
    tenant: &str,
    kind: JobKind,
    inputs: &[String],
) -> Result<(), ApiError> {
    if !kind.takes_inputs() && !inputs.is_empty() {
        let reason = format!("a {} job reads no input files", kind.as_str());
        return Err(ApiError::bad_param("inputs", reason));
    }
    if kind.takes_inputs() && inputs.is_empty() {
        let reason = format!("a {} job reads at least one input file", kind.as_str());
        return Err(ApiError::bad_param("inputs", reason));
    }
    let most = kind.max_inputs();
    if inputs.len() > most {
        let reason = format!("at most {most} input files");
        return Err(ApiError::bad_param("inputs", reason));
    }
    // Owned, so that the stream of checks is Send for any borrow.
    let checks = inputs.iter().cloned().map(|input| {
        let (files, tenant) = (files.clone(), tenant.to_string());
        async move { check_input(&files, &tenant, &input).await }
    });
    let mut checks = futures::stream::iter(checks).buffer_unordered(INPUT_CHECKS_IN_FLIGHT);
    let mut archives = 0;
    while let Some(checked) = checks.next().await {
        if FileKind::of_content_type(&checked?.content_type) == Some(FileKind::Zip) {
            archives += 1;
        }
    }
    // An archive's entries are the job's items, numbered in it: a job
    // reads one archive or files, not both.
    if archives > 0 && inputs.len() > 1 {
        let reason = "an archive (application/zip) must be the job's only input";
        return Err(ApiError::bad_param("inputs", reason.to_string()));
    }
    Ok(())
}

async fn check_input(files: &FileStore, tenant: &str, input: &str) -> Result<FileMeta, ApiError> {
    let missing = || ApiError::NotFound {
        field: "inputs",
        reason: "an input is not one of the tenant's files",
    };
    let id = FileId::parse(input).ok_or_else(missing)?;
    let found = files.meta(tenant, &id).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read a job input's metadata");
        ApiError::Unavailable("object storage unavailable")
    })?;
    found.ok_or_else(missing)
}

/// The caller's tenant's job.
#[utoipa::path(get, path = "/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "As `POST /v1/jobs` answered it")),
    responses(
        (status = 200, body = JobView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "The tenant has no such job", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn job(
    State(jobs): State<Option<JobDesk>>,
    Reader(caller): Reader,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let jobs = desk(jobs)?;
    Ok(Json(
        find(&jobs.ledger, &caller.tenant, &job_id).await?.into(),
    ))
}

pub(crate) async fn find(ledger: &JobLedger, tenant: &str, job_id: &str) -> Result<Job, ApiError> {
    let not_found = ApiError::NotFound {
        field: "job_id",
        reason: "no such job",
    };
    if FileId::parse(job_id).is_none() {
        return Err(not_found);
    }
    ledger.current(tenant, job_id).await?.ok_or(not_found)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state.
    state: Option<JobState>,
    /// Only jobs of this kind.
    #[param(value_type = Option<Kind>)]
    kind: Option<String>,
    /// The `next` of the page before.
    #[param(pattern = r"^[0-9]{1,19}\.[0-9a-f]{32}$")]
    after: Option<String>,
    /// Jobs per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

/// The caller's tenant's jobs, newest first, in pages.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, body = JobList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn list(
    State(jobs): State<Option<JobDesk>>,
    Reader(caller): Reader,
    Params(q): Params<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let jobs = desk(jobs)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_param("limit", "must be 1 to 1000"));
    }
    let after = match q.after.as_deref() {
        None => None,
        Some(a) => Some(
            parse_after(a)
                .ok_or_else(|| ApiError::bad_param("after", "not a `next` this API sent"))?,
        ),
    };
    if let Some(kind) = q.kind.as_deref() {
        if JobKind::parse(kind).is_none() {
            return Err(ApiError::bad_param(
                "kind",
                format!("unknown job kind '{kind}'"),
            ));
        }
    }
    let page = JobPage {
        state: q.state.map(|s| s.as_str().to_string()).unwrap_or_default(),
        kind: q.kind.unwrap_or_default(),
        after,
        limit,
    };
    let found = jobs.ledger.page(&caller.tenant, &page).await?;
    let next = (found.len() as u64 == limit)
        .then(|| {
            found
                .last()
                .map(|j| format!("{}.{}", j.created_ms, j.job_id))
        })
        .flatten();
    Ok(Json(JobList {
        jobs: found.into_iter().map(JobView::from).collect(),
        next,
    }))
}

fn parse_after(a: &str) -> Option<(i64, String)> {
    let (ms, id) = a.split_once('.')?;
    let ms = ms.parse().ok().filter(|ms| *ms >= 0)?;
    FileId::parse(id).map(|id| (ms, id.as_str().to_string()))
}

/// Stops a job. A queued one is canceled at once; a running one is told to
/// stop, and its worker removes what it had written and records it
/// canceled within seconds (follow `GET /v1/jobs/{job_id}` or the stream).
#[utoipa::path(post, path = "/v1/jobs/{job_id}/cancel", tag = "jobs",
    params(("job_id" = String, Path, description = "As `POST /v1/jobs` answered it")),
    responses(
        (status = 202, description = "Canceled, or being canceled", body = JobView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "The tenant has no such job", body = ErrorBody),
        (status = 409, description = "The job has ended already", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn cancel(
    State(jobs): State<Option<JobDesk>>,
    Reader(caller): Reader,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let jobs = desk(jobs)?;
    let job = find(&jobs.ledger, &caller.tenant, &job_id).await?;
    let state = job.state();
    if state.is_terminal() {
        return Err(ApiError::Conflict {
            field: "job_id",
            reason: format!("the job has ended: {}", state.as_str()),
        });
    }
    let control = Control {
        job_id: job.job_id.clone(),
        tenant_id: job.tenant_id.clone(),
        action: ControlAction::Cancel,
        at_ms: pulse_common::clock::now_ms(),
    };
    // The order first: a worker that takes the job from now on finds it.
    jobs.ledger
        .control(&control)
        .await
        .map_err(queueing_failed)?;
    let shown = if state == JobState::Queued {
        let canceled = Job {
            error: "canceled before it started".into(),
            ..job.moved_to(JobState::Canceled)
        };
        jobs.ledger
            .record(&canceled)
            .await
            .map_err(queueing_failed)?;
        canceled
    } else {
        job
    };
    Ok((StatusCode::ACCEPTED, Json(JobView::from(shown))).into_response())
}

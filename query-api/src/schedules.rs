//! Report schedules: `PUT /v1/schedules/{name}` (admins) sets a standing
//! order for a report at the times a crontab expression names, in UTC;
//! `GET /v1/schedules` lists the tenant's, with each one's next time;
//! `DELETE /v1/schedules/{name}` ends one. `scheduler` queues the jobs.
//! The expression and what each report covers are in
//! `pulse_common::jobs::Cadence`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pulse_common::jobs::{Cadence, JobKind, ReportParams, Schedule};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Admin, Reader};
use crate::jobs::{desk, JobDesk};

/// The kinds of job a schedule may queue.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScheduledKind {
    /// A tenant's events over the range before each occurrence.
    Report,
}

/// Most schedules of one tenant.
pub const MAX_SCHEDULES: u64 = 100;

/// A schedule to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSchedule {
    /// The kind of job each occurrence queues; `report` only.
    #[schema(value_type = ScheduledKind)]
    pub kind: String,
    /// Five crontab fields (minute hour day-of-month month day-of-week) in
    /// UTC, or a nickname (`@monthly`, `@weekly`, `@daily`); at most one
    /// occurrence an hour (`PULSE_SCHEDULE_MIN_INTERVAL_S`).
    #[schema(example = "0 0 1 * *", min_length = 1, max_length = 100)]
    pub cron: String,
    /// A report's parameters without its range: each report covers the
    /// time since the occurrence before.
    #[schema(value_type = ScheduleParams)]
    pub params: serde_json::Value,
}

/// A scheduled report's parameters.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ScheduleParams {
    pub format: pulse_common::jobs::ReportFormat,
    /// Only this source (device); no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub source_id: Option<String>,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    pub name: String,
    pub kind: String,
    pub cron: String,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// When its next job is queued, ms since the epoch.
    pub next_ms: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

impl From<Schedule> for ScheduleView {
    fn from(s: Schedule) -> Self {
        let next_ms = Cadence::parse(&s.cron, 0)
            .ok()
            .and_then(|c| c.next_after(pulse_common::clock::now_ms()));
        ScheduleView {
            params: serde_json::from_str(&s.params).unwrap_or(serde_json::Value::Null),
            name: s.name,
            kind: s.kind,
            cron: s.cron,
            created_ms: s.created_ms,
            updated_ms: s.updated_ms,
            next_ms,
        }
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let fits = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fits {
        Ok(())
    } else {
        Err(ApiError::bad_param(
            "name",
            "must be 1 to 64 letters, digits, '-', '_' or '.'",
        ))
    }
}

/// A scheduled report's parameters, checked as a report's would be.
pub fn report_params(params: &serde_json::Value) -> Result<ReportParams, ApiError> {
    let mut ranged = params.clone();
    let Some(fields) = ranged.as_object_mut() else {
        return Err(ApiError::bad_param("params", "must be an object"));
    };
    for key in ["from_ms", "to_ms"] {
        if fields.contains_key(key) {
            return Err(ApiError::bad_param(
                if key == "from_ms" {
                    "params.from_ms"
                } else {
                    "params.to_ms"
                },
                "a schedule's reports each cover the time since the occurrence before",
            ));
        }
        fields.insert(key.into(), 0.into());
    }
    ReportParams::parse(&ranged).map_err(|e| ApiError::bad_param(e.field, e.reason))
}

/// Sets the tenant's schedule `name` (admins only).
#[utoipa::path(put, path = "/v1/schedules/{name}", tag = "jobs", request_body = SetSchedule,
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,64}$",
        description = "The schedule's name, the tenant's own")),
    responses(
        (status = 201, description = "Set", body = ScheduleView),
        (status = 200, description = "Changed: occurrences from now on follow the new settings", body = ScheduleView),
        (status = 400, description = "A bad name, expression, kind or parameter (`field` names it)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, description = "Rate limited, or the tenant has 100 schedules already", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn set(
    State(jobs): State<Option<JobDesk>>,
    Admin(caller): Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let jobs = desk(jobs)?;
    check_name(&name)?;
    let set: SetSchedule = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_param("body", format!("not a schedule: {e}")))?;
    let kind = JobKind::parse(&set.kind).ok_or_else(|| {
        ApiError::bad_param(
            "kind",
            format!("unknown job kind '{}': use report", set.kind),
        )
    })?;
    Cadence::parse(&set.cron, jobs.schedule_min_interval_ms)
        .map_err(|e| ApiError::bad_param("cron", e))?;
    let params = match kind {
        JobKind::Report => {
            let p = report_params(&set.params)?;
            serde_json::json!({"format": p.format, "source_id": p.source_id})
        }
        JobKind::Ocr => {
            let reason = "only report jobs are scheduled: an OCR job reads the files it is given";
            return Err(ApiError::bad_param("kind", reason));
        }
    };
    let existing = jobs
        .ledger
        .schedules_of(&caller.tenant, "", MAX_SCHEDULES + 1)
        .await?;
    let before = existing.iter().find(|s| s.name == name);
    if before.is_none() && existing.len() as u64 >= MAX_SCHEDULES {
        return Err(ApiError::TooMany(format!(
            "a tenant may have at most {MAX_SCHEDULES} schedules"
        )));
    }
    let now = pulse_common::clock::now_ms();
    let schedule = Schedule {
        tenant_id: caller.tenant.clone(),
        name,
        kind: kind.as_str().to_string(),
        cron: set.cron.trim().to_string(),
        params: params.to_string(),
        created_ms: before.map_or(now, |b| b.created_ms),
        updated_ms: now,
        deleted: 0,
        version: version(before),
    };
    store(&jobs, &schedule).await?;
    let status = if before.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(ScheduleView::from(schedule))).into_response())
}

/// The tenant's schedules, by name.
#[utoipa::path(get, path = "/v1/schedules", tag = "jobs",
    responses(
        (status = 200, body = ScheduleList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn list(
    State(jobs): State<Option<JobDesk>>,
    Reader(caller): Reader,
) -> Result<Json<ScheduleList>, ApiError> {
    let jobs = desk(jobs)?;
    let schedules = jobs
        .ledger
        .schedules_of(&caller.tenant, "", MAX_SCHEDULES)
        .await?;
    Ok(Json(ScheduleList {
        schedules: schedules.into_iter().map(ScheduleView::from).collect(),
    }))
}

/// Ends the tenant's schedule `name` (admins only); its jobs stay.
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "jobs",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "The tenant has no such schedule", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn remove(
    State(jobs): State<Option<JobDesk>>,
    Admin(caller): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let jobs = desk(jobs)?;
    let not_found = ApiError::NotFound {
        field: "name",
        reason: "no such schedule",
    };
    if check_name(&name).is_err() {
        return Err(not_found);
    }
    let found = jobs.ledger.schedules_of(&caller.tenant, &name, 1).await?;
    let Some(before) = found.into_iter().next() else {
        return Err(not_found);
    };
    let ended = Schedule {
        deleted: 1,
        updated_ms: pulse_common::clock::now_ms(),
        version: version(Some(&before)),
        ..before
    };
    store(&jobs, &ended).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A change's version: above the one it replaces, even when two changes
/// fall in one millisecond.
fn version(before: Option<&Schedule>) -> u64 {
    let now = u64::try_from(pulse_common::clock::now_ms()).unwrap_or(0);
    now.max(before.map_or(0, |b| b.version + 1))
}

async fn store(jobs: &JobDesk, schedule: &Schedule) -> Result<(), ApiError> {
    jobs.ledger.store_schedule(schedule).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot store a schedule");
        ApiError::Unavailable("schedules cannot be stored now; retry")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_scheduled_reports_parameters_leave_the_range_to_the_schedule() {
        let p = report_params(&json!({"format": "parquet", "source_id": "dev-1"})).expect("ok");
        assert_eq!(p.source_id.as_deref(), Some("dev-1"));
        for (params, field) in [
            (json!({"format": "csv", "from_ms": 1}), "params.from_ms"),
            (json!({"format": "csv", "to_ms": 1}), "params.to_ms"),
            (json!({"format": "xml"}), "params"),
            (
                json!({"format": "csv", "source_id": ""}),
                "params.source_id",
            ),
            (json!([1]), "params"),
        ] {
            match report_params(&params) {
                Err(ApiError::BadParam { field: f, .. }) => assert_eq!(f, field, "{params}"),
                other => panic!("{params}: {other:?}"),
            }
        }
        for bad in ["", "a/b", "x y", &"n".repeat(65), "nul\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("monthly-csv_2.0").is_ok());
    }
}

//! Queues the jobs of report schedules when they fall due.
//!
//! Every query API instance runs it: the web tier is always up, while the
//! workers may be scaled to zero. An occurrence's job id is made from the
//! tenant, the schedule's name and the occurrence's time, so instances
//! that see it due together queue one job (a second request of a job is
//! skipped by the worker, and a second queue finds the first). An instance
//! that was down catches up with the latest few occurrences it missed.

use std::time::Duration;

use pulse_common::files::FileId;
use pulse_common::jobs::{Cadence, JobRequest, Schedule};
use pulse_common::shutdown::Shutdown;

use crate::jobs::JobDesk;
use crate::schedules::report_params;

/// Missed occurrences of one schedule queued when catching up.
const CATCH_UP: usize = 3;

pub struct Scheduler {
    pub desk: JobDesk,
    /// How often schedules are read and their due occurrences queued.
    pub tick: Duration,
    pub shutdown: Shutdown,
}

impl Scheduler {
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(self.tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.shutdown.requested() => return,
            }
            match self.desk.ledger.all_schedules().await {
                Ok(schedules) => {
                    for schedule in &schedules {
                        self.fire(schedule).await;
                    }
                }
                // The table appears with the job start-up; until then, or
                // while ClickHouse is away, the next tick tries again.
                Err(e) => tracing::debug!(error = %e, "cannot read schedules"),
            }
        }
    }

    /// Queues `schedule`'s due occurrences whose jobs do not exist yet.
    async fn fire(&self, schedule: &Schedule) {
        let Ok(cadence) = Cadence::parse(&schedule.cron, 0) else {
            tracing::warn!(
                tenant = schedule.tenant_id,
                name = schedule.name,
                "a stored schedule does not parse"
            );
            return;
        };
        let now = pulse_common::clock::now_ms();
        for due in cadence.due(schedule.updated_ms, now, CATCH_UP) {
            let key = format!("job:schedule:{}:{}", schedule.name, due.to_ms);
            let job_id = FileId::for_key(&schedule.tenant_id, &key);
            let Some(request) = request_of(schedule, job_id, due.from_ms, due.to_ms) else {
                continue;
            };
            match self.desk.queue(request).await {
                Ok((status, job)) if status == axum::http::StatusCode::ACCEPTED => {
                    crate::metrics::SCHEDULED_JOBS.inc();
                    tracing::info!(
                        tenant = schedule.tenant_id,
                        name = schedule.name,
                        job_id = job.job_id,
                        to_ms = due.to_ms,
                        "scheduled job queued"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(tenant = schedule.tenant_id, name = schedule.name,
                    error = ?e, "cannot queue a scheduled job; the next tick retries"),
            }
        }
    }
}

/// The job of `schedule`'s occurrence covering `[from_ms, to_ms)`.
fn request_of(schedule: &Schedule, job_id: FileId, from_ms: i64, to_ms: i64) -> Option<JobRequest> {
    let stored: serde_json::Value = serde_json::from_str(&schedule.params).ok()?;
    let mut params = report_params(&stored).ok()?;
    params.from_ms = from_ms;
    params.to_ms = to_ms;
    Some(JobRequest {
        job_id: job_id.as_str().to_string(),
        tenant_id: schedule.tenant_id.clone(),
        kind: schedule.kind.clone(),
        params: serde_json::to_value(params).ok()?,
        inputs: Vec::new(),
        created_ms: pulse_common::clock::now_ms(),
    })
}

//! One job's attempts, from the request to its end.
//!
//! A job that ended is never run again, which is what makes a request read
//! twice (a retried submit, or a redelivery after a crash) harmless. Each
//! attempt is recorded before it starts, so that after a crash the next
//! worker counts on from the last attempt; a failed attempt is retried
//! with backoff until `max_attempts` have started, and a job whose
//! attempts are spent fails with the last attempt's reason. While an
//! attempt runs, its progress is recorded every second, and a cancel order
//! stops it at once: its staged parts are removed and the job ends
//! canceled.

use std::sync::Arc;
use std::time::Duration;

use pulse_common::jobs::{Job, JobKind, JobLedger, JobRequest, JobState};
use pulse_common::retry::backoff;
use pulse_common::shutdown::Shutdown;

use crate::cancels::Cancels;
use crate::failure::Failure;
use crate::metrics;
use crate::progress::Progress;
use crate::report::{self, Reports};
use crate::vision::{self, Vision};

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The job ended (now or before): the request is done with.
    Ended,
    /// Shutdown came first: the request stays for the next worker.
    Left,
}

#[derive(Clone)]
pub struct Runner {
    pub ledger: JobLedger,
    pub reports: Reports,
    pub vision: Vision,
    pub cancels: Cancels,
    pub max_attempts: u32,
    /// How long a running attempt may go on after SIGTERM.
    pub drain: Duration,
    pub shutdown: Shutdown,
}

/// How an attempt ended.
enum Ended {
    Finished(Result<String, Failure>),
    Canceled,
    Abandoned,
}

impl Runner {
    pub async fn handle(&self, request: &JobRequest) -> Handled {
        let Some(current) = self.read(request).await else {
            return Handled::Left;
        };
        let mut job = current.unwrap_or_else(|| Job::queued(request));
        if job.state().is_terminal() {
            tracing::info!(job_id = %job.job_id, state = job.state().as_str(), "job ended before; skipped");
            return Handled::Ended;
        }
        let kind = JobKind::parse(&job.kind);
        loop {
            if self.cancels.contains(&job.job_id) {
                return self.cancel(&job).await;
            }
            if job.attempts >= self.max_attempts {
                let reason = format!(
                    "gave up after {} attempts: {}",
                    job.attempts,
                    if job.error.is_empty() {
                        "the worker stopped during each"
                    } else {
                        &job.error
                    }
                );
                return self
                    .end(Job {
                        error: reason,
                        ..job.moved_to(JobState::Failed)
                    })
                    .await;
            }
            job = Job {
                attempts: job.attempts + 1,
                progress: 0.0,
                ..job.moved_to(JobState::Running)
            };
            if !self.record(&job).await {
                return Handled::Left;
            }
            tracing::info!(job_id = %job.job_id, attempt = job.attempts, "attempt started");
            let ended = match kind {
                Some(kind) => self.attempt(&mut job, kind).await,
                None => Ended::Finished(Err(Failure::Permanent(format!(
                    "unknown job kind '{}'",
                    job.kind
                )))),
            };
            let outcome = match &ended {
                Ended::Finished(Ok(_)) => "ok",
                Ended::Finished(Err(_)) => "error",
                Ended::Canceled => "canceled",
                Ended::Abandoned => "abandoned",
            };
            metrics::ATTEMPTS
                .with_label_values(&[&job.kind, outcome])
                .inc();
            match ended {
                Ended::Finished(Ok(file_id)) => {
                    let done = Job {
                        progress: 1.0,
                        error: String::new(),
                        result_file_id: file_id,
                        ..job.moved_to(JobState::Succeeded)
                    };
                    return self.end(done).await;
                }
                Ended::Finished(Err(Failure::Permanent(reason))) => {
                    return self
                        .end(Job {
                            error: reason,
                            ..job.moved_to(JobState::Failed)
                        })
                        .await;
                }
                Ended::Finished(Err(Failure::Transient(reason))) => {
                    tracing::warn!(job_id = %job.job_id, attempt = job.attempts, error = %reason, "attempt failed");
                    job.error = reason;
                    if !backoff(&self.shutdown, job.attempts).await {
                        return Handled::Left;
                    }
                }
                Ended::Canceled => return self.cancel(&job).await,
                Ended::Abandoned => return Handled::Left,
            }
        }
    }

    /// Runs one attempt, recording its progress each second.
    async fn attempt(&self, job: &mut Job, kind: JobKind) -> Ended {
        let progress = Arc::new(Progress::default());
        let running = job.clone();
        let work: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>> = match kind {
            JobKind::Report => Box::pin(self.reports.run(&running, &progress)),
            JobKind::Ocr => Box::pin(self.vision.run(&running, &progress)),
        };
        tokio::pin!(work);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let drain = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(drain);
        let mut draining = false;
        metrics::JOBS_RUNNING.inc();
        let ended = loop {
            tokio::select! {
                done = &mut work => break Ended::Finished(done),
                _ = self.cancels.wait(&job.job_id) => break Ended::Canceled,
                _ = self.shutdown.requested(), if !draining => {
                    draining = true;
                    drain.as_mut().reset(tokio::time::Instant::now() + self.drain);
                    tracing::info!(job_id = %job.job_id, drain_s = self.drain.as_secs(), "shutdown: letting the attempt finish");
                }
                _ = &mut drain, if draining => {
                    tracing::warn!(job_id = %job.job_id, "shutdown: attempt left for the next worker");
                    break Ended::Abandoned;
                }
                _ = tick.tick() => {
                    let fraction = progress.fraction();
                    if fraction > job.progress {
                        let moved = Job { progress: fraction, ..job.moved_to(JobState::Running) };
                        // Progress is for watchers: a lost update waits for the next.
                        if let Err(e) = self.ledger.record(&moved).await {
                            tracing::warn!(error = %e, "job progress not recorded");
                        } else {
                            *job = moved;
                        }
                    }
                }
            }
        };
        metrics::JOBS_RUNNING.dec();
        ended
    }

    async fn cancel(&self, job: &Job) -> Handled {
        if let Err(e) = self
            .reports
            .files
            .discard_staged(&job.tenant_id, &result_file_of(job))
            .await
        {
            tracing::warn!(error = %e, "staged parts of a canceled job not removed");
        }
        self.end(Job {
            error: "canceled".into(),
            ..job.moved_to(JobState::Canceled)
        })
        .await
    }

    async fn end(&self, job: Job) -> Handled {
        if job.state() == JobState::Failed {
            tracing::warn!(job_id = %job.job_id, error = %job.error, "job failed");
        }
        if !self.record(&job).await {
            return Handled::Left;
        }
        tracing::info!(job_id = %job.job_id, state = job.state().as_str(), attempts = job.attempts, "job ended");
        metrics::JOBS_ENDED
            .with_label_values(&[&job.kind, job.state().as_str()])
            .inc();
        Handled::Ended
    }

    /// The job's state as recorded, waiting out ClickHouse outages; None
    /// on shutdown.
    async fn read(&self, request: &JobRequest) -> Option<Option<Job>> {
        let mut attempt = 0;
        loop {
            match self
                .ledger
                .current(&request.tenant_id, &request.job_id)
                .await
            {
                Ok(found) => return Some(found),
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "cannot read a job's state; retrying");
                    if !backoff(&self.shutdown, attempt).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Records a transition, waiting out outages; false on shutdown.
    async fn record(&self, job: &Job) -> bool {
        let mut attempt = 0;
        loop {
            match self.ledger.record(job).await {
                Ok(()) => return true,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "cannot record a job transition; retrying");
                    if !backoff(&self.shutdown, attempt).await {
                        return false;
                    }
                }
            }
        }
    }
}

/// The file `job` makes, by its kind.
fn result_file_of(job: &Job) -> pulse_common::files::FileId {
    match JobKind::parse(&job.kind) {
        Some(JobKind::Ocr) => vision::file_of(job),
        _ => report::file_of(job),
    }
}

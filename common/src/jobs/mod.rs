//! Background jobs: one lifecycle for every kind.
//!
//! A job is requested on its kind's requests topic (`JobRequest`, keyed by
//! its id, so that every record of one job goes to one partition and one
//! worker at a time), canceled on the control topic (`Control`, read by every worker),
//! and each of its transitions is a row of ClickHouse's `jobs` table (the
//! newest row stands) and a record on the job-events topic, which the query
//! API pushes to WebSocket clients. States run
//! `queued -> running -> succeeded | failed | canceled`; a job that ended
//! never changes again.

mod kinds;
mod ledger;
mod reads;
mod schedule;

use serde::{Deserialize, Serialize};

use crate::config::Topics;
use crate::kafka::TopicSpec;

pub use kinds::{
    meter_value, Invalid, JobKind, OcrParams, ReportFormat, ReportParams, MAX_OCR_INPUTS,
    MAX_TIME_MS,
};
pub use ledger::{JobLedger, JobPage};
pub use reads::{Line, Read, ReadLedger};
pub use schedule::{Cadence, Occurrence, Schedule};

/// The topic `kind`'s requests are queued on.
pub fn requests_topic(topics: &Topics, kind: JobKind) -> String {
    match kind {
        JobKind::Report => topics.jobs(),
        JobKind::Ocr => topics.ocr_jobs(),
    }
}

/// The job topics: each kind's requests in `partitions` (the most workers
/// that share the work), cancel orders in one (every worker reads them
/// all), and transitions in `partitions`.
pub fn topic_specs(topics: &Topics, partitions: i32, replication: i32) -> Vec<TopicSpec> {
    vec![
        TopicSpec::new(topics.jobs(), partitions, replication),
        TopicSpec::new(topics.ocr_jobs(), partitions, replication),
        TopicSpec::new(topics.job_control(), 1, replication),
        TopicSpec::new(topics.job_events(), partitions, replication),
    ]
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the job has ended: an ended job never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Canceled
        )
    }
}

/// One transition of a job, as stored in ClickHouse and sent on the
/// job-events topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct Job {
    pub tenant_id: String,
    pub job_id: String,
    pub kind: String,
    /// The kind's parameters, as JSON text.
    pub params: String,
    /// Ids of the tenant's files the job reads.
    pub inputs: Vec<String>,
    /// A `JobState`'s name.
    pub state: String,
    /// Attempts started so far.
    pub attempts: u32,
    /// From 0 to 1.
    pub progress: f32,
    /// Why the job failed (or the last attempt did); empty otherwise.
    pub error: String,
    /// The file the job made, once it succeeded; empty otherwise.
    pub result_file_id: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Orders transitions: each is higher than the one it follows.
    pub version: u64,
}

impl Job {
    /// The job of `request`, queued.
    pub fn queued(request: &JobRequest) -> Self {
        Job {
            tenant_id: request.tenant_id.clone(),
            job_id: request.job_id.clone(),
            kind: request.kind.clone(),
            params: request.params.to_string(),
            inputs: request.inputs.clone(),
            state: JobState::Queued.as_str().into(),
            attempts: 0,
            progress: 0.0,
            error: String::new(),
            result_file_id: String::new(),
            created_ms: request.created_ms,
            updated_ms: request.created_ms,
            // Below any transition a worker writes later.
            version: u64::try_from(request.created_ms).unwrap_or(0) * 1000,
        }
    }

    /// The state; a row of another release's state reads as failed.
    pub fn state(&self) -> JobState {
        JobState::parse(&self.state).unwrap_or(JobState::Failed)
    }

    /// This job moved to `state` now, its version above this one's.
    pub fn moved_to(&self, state: JobState) -> Self {
        let now_ms = crate::clock::now_ms();
        let now_us = u64::try_from(now_ms).unwrap_or(0) * 1000;
        Job {
            state: state.as_str().into(),
            updated_ms: now_ms,
            version: now_us.max(self.version + 1),
            ..self.clone()
        }
    }
}

/// A job to run, as sent on the jobs topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    pub job_id: String,
    pub tenant_id: String,
    pub kind: String,
    pub params: serde_json::Value,
    #[serde(default)]
    pub inputs: Vec<String>,
    pub created_ms: i64,
}

/// An order about a running job, as sent on the control topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    pub job_id: String,
    pub tenant_id: String,
    pub action: ControlAction,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlAction {
    Cancel,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> JobRequest {
        JobRequest {
            job_id: "j1".into(),
            tenant_id: "acme".into(),
            kind: "report".into(),
            params: serde_json::json!({"format": "csv"}),
            inputs: vec![],
            created_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn each_transition_outranks_the_one_before() {
        let queued = Job::queued(&request());
        assert_eq!(queued.state(), JobState::Queued);
        assert_eq!(queued.params, r#"{"format":"csv"}"#);
        let running = queued.moved_to(JobState::Running);
        assert!(running.version > queued.version);
        // Written within the same microsecond, or by a clock behind.
        let mut ahead = running.clone();
        ahead.version = u64::MAX / 2;
        let done = ahead.moved_to(JobState::Succeeded);
        assert_eq!(done.version, u64::MAX / 2 + 1);
        assert!(done.state().is_terminal() && !running.state().is_terminal());
    }

    #[test]
    fn states_read_back_by_name() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert_eq!(JobState::parse("paused"), None);
    }
}

//! Where jobs are written and read: requests and cancel orders onto their
//! topics, transitions into ClickHouse and onto the job-events topic.

use std::time::Duration;

use clickhouse::Client;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

use super::{Control, Job, JobKind, JobRequest, Schedule};
use crate::clickhouse::{for_cluster, in_database};
use crate::config::{KafkaClient, Topics};
use crate::kafka::durable_producer_config;

/// The job table, created by whichever service starts first.
const JOBS_TABLE: &str = include_str!("../../../schemas/clickhouse/jobs.sql");
/// Report schedules, created by the query API.
const SCHEDULES_TABLE: &str = include_str!("../../../schemas/clickhouse/schedules.sql");

const JOB_BY_ID: &str = statement!("job_by_id");
const JOBS_PAGE: &str = statement!("jobs_page");
const SCHEDULES_OF_TENANT: &str = statement!("schedules_of_tenant");
const SCHEDULES_ALL: &str = statement!("schedules_all");

/// How long a produce may wait for the brokers before it fails.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct JobLedger {
    /// Reads job state (the query API's reader).
    reads: Client,
    /// Writes transitions and creates the table.
    writes: Client,
    producer: FutureProducer,
    topics: Topics,
}

/// Which jobs a page holds: the tenant's, newest first, after a key.
#[derive(Debug, Clone, Default)]
pub struct JobPage {
    /// Only this state (empty: any).
    pub state: String,
    /// Only this kind (empty: any).
    pub kind: String,
    /// The page key of the last job of the page before: (created_ms, job_id).
    pub after: Option<(i64, String)>,
    pub limit: u64,
}

impl JobLedger {
    pub fn new(
        reads: Client,
        writes: Client,
        kafka: &KafkaClient,
        topics: Topics,
    ) -> anyhow::Result<Self> {
        let producer = durable_producer_config(kafka)
            .set("message.timeout.ms", "10000")
            .create()?;
        Ok(Self {
            reads,
            writes,
            producer,
            topics,
        })
    }

    /// Creates the job table unless it exists.
    pub async fn create_table(
        &self,
        database: &str,
        cluster: Option<&str>,
    ) -> clickhouse::error::Result<()> {
        let ddl = for_cluster(&in_database(JOBS_TABLE, database), cluster);
        self.writes.query(&ddl).execute().await
    }

    /// Creates the schedule table unless it exists (the query API's alone).
    pub async fn create_schedule_table(
        &self,
        database: &str,
        cluster: Option<&str>,
    ) -> clickhouse::error::Result<()> {
        let ddl = for_cluster(&in_database(SCHEDULES_TABLE, database), cluster);
        self.writes.query(&ddl).execute().await
    }

    /// `tenant`'s schedules by name (only `name`'s, if not empty), at most `limit`.
    pub async fn schedules_of(
        &self,
        tenant: &str,
        name: &str,
        limit: u64,
    ) -> clickhouse::error::Result<Vec<Schedule>> {
        self.reads
            .query(SCHEDULES_OF_TENANT)
            .bind(tenant)
            .bind(name)
            .bind(name)
            .bind(limit)
            .fetch_all()
            .await
    }

    /// Every tenant's schedules.
    pub async fn all_schedules(&self) -> clickhouse::error::Result<Vec<Schedule>> {
        self.reads.query(SCHEDULES_ALL).fetch_all().await
    }

    /// Stores a change of a schedule (a deletion too).
    pub async fn store_schedule(&self, schedule: &Schedule) -> anyhow::Result<()> {
        let mut insert = self.writes.insert::<Schedule>("schedules").await?;
        insert.write(schedule).await?;
        insert.end().await?;
        Ok(())
    }

    /// The newest transition of `tenant`'s job `job_id`.
    pub async fn current(
        &self,
        tenant: &str,
        job_id: &str,
    ) -> clickhouse::error::Result<Option<Job>> {
        self.reads
            .query(JOB_BY_ID)
            .bind(tenant)
            .bind(job_id)
            .fetch_optional()
            .await
    }

    /// A page of `tenant`'s jobs.
    pub async fn page(&self, tenant: &str, page: &JobPage) -> clickhouse::error::Result<Vec<Job>> {
        let (after_ms, after_id) = page.after.clone().unwrap_or((i64::MAX, String::new()));
        self.reads
            .query(JOBS_PAGE)
            .bind(tenant)
            .bind(&page.state)
            .bind(&page.state)
            .bind(&page.kind)
            .bind(&page.kind)
            .bind(after_ms)
            .bind(after_ms)
            .bind(&after_id)
            .bind(page.limit)
            .fetch_all()
            .await
    }

    /// Records `job`'s transition: in ClickHouse first, which is what
    /// readers trust, then on the job-events topic for live streams.
    pub async fn record(&self, job: &Job) -> anyhow::Result<()> {
        self.store(job).await?;
        self.announce(job).await;
        Ok(())
    }

    /// Stores `job`'s transition in ClickHouse only.
    pub async fn store(&self, job: &Job) -> anyhow::Result<()> {
        let mut insert = self.writes.insert::<Job>("jobs").await?;
        insert.write(job).await?;
        insert.end().await?;
        Ok(())
    }

    /// Sends `job`'s transition to live streams only.
    pub async fn announce(&self, job: &Job) {
        if let Err(e) = self.send(&self.topics.job_events(), &job.job_id, job).await {
            // The state is stored; only live viewers miss this transition.
            tracing::warn!(job_id = %job.job_id, error = %e, "job transition not sent to live streams");
        }
    }

    /// Queues `request` for the workers of its kind.
    pub async fn request(&self, request: &JobRequest) -> anyhow::Result<()> {
        // An unknown kind cannot be submitted; were one queued, a worker
        // would fail it saying so.
        let kind = JobKind::parse(&request.kind).unwrap_or(JobKind::Report);
        let topic = super::requests_topic(&self.topics, kind);
        self.send(&topic, &request.job_id, request).await
    }

    /// Tells every worker to stop the job `control` names.
    pub async fn control(&self, control: &Control) -> anyhow::Result<()> {
        self.send(&self.topics.job_control(), &control.job_id, control)
            .await
    }

    async fn send(&self, topic: &str, key: &str, value: &impl Serialize) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(value)?;
        let record = FutureRecord::to(topic).key(key).payload(&payload);
        self.producer
            .send(record, PRODUCE_TIMEOUT)
            .await
            .map_err(|(e, _)| anyhow::anyhow!("cannot send to {topic}: {e}"))?;
        Ok(())
    }
}

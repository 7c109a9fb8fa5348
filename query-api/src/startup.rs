//! What the API waits for before it is ready: the identity provider's
//! JWKS when one is configured (then kept fresh), the results topic (created if
//! missing, every partition with a leader), its consumer positioned at the
//! end, and the ClickHouse tables the processor's migrations create.
//!
//! None of them is a reason to exit: on a fresh machine Kafka, ClickHouse,
//! the topic's leaders or the identity provider come up after the API. The API serves from the start,
//! `/readyz` answers 503 saying which step it waits for and why, and each
//! step is retried with `pulse_common::retry`'s backoff. A shutdown request
//! ends the wait at once, also in the middle of a step.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pulse_common::config::{ClickHouseArgs, KafkaClient};
use pulse_common::jobs::{JobLedger, ReadLedger};
use pulse_common::kafka::{ensure_topics, TopicSpec};
use pulse_common::ops::Readiness;
use pulse_common::retry::until_done;
use pulse_common::shutdown::Shutdown;

use crate::fanout::{self, Feed};
use crate::job_feed::{self, JobFeed};
use crate::jwks::RemoteKeys;
use crate::store::EventStore;

/// What start-up needs.
pub struct StartUp {
    /// The JWKS to load first, and how often to refetch it.
    pub jwks: Option<(Arc<RemoteKeys>, Duration)>,
    pub kafka: KafkaClient,
    pub results: TopicSpec,
    /// What jobs need; None without jobs.
    pub jobs: Option<JobsStartUp>,
    pub store: EventStore,
    pub feed: Feed,
    pub readiness: Readiness,
    pub shutdown: Shutdown,
}

/// The job topics and table, created if missing, and the live feed of
/// transitions read from the job-events topic's end.
pub struct JobsStartUp {
    pub topics: Vec<TopicSpec>,
    pub ledger: JobLedger,
    pub reads: ReadLedger,
    /// The database and cluster of the job table.
    pub clickhouse: ClickHouseArgs,
    pub events: String,
    pub feed: JobFeed,
}

/// `step`, or an error as soon as shutdown is requested, after which
/// `until_done` stops retrying.
async fn or_shutdown<T>(
    shutdown: &Shutdown,
    step: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        done = step => done,
        _ = shutdown.requested() => Err(anyhow::anyhow!("shutdown requested")),
    }
}

impl StartUp {
    /// Runs the steps in turn, starts the fan-out and marks the API ready;
    /// returns early, not ready, when shutdown is requested.
    pub async fn run(self) {
        let Self {
            jwks,
            kafka,
            results,
            jobs,
            store,
            feed,
            readiness,
            shutdown,
        } = self;
        if let Some((keys, refresh)) = jwks {
            let loaded = until_done("the JWKS", &readiness, &shutdown, || {
                or_shutdown(&shutdown, keys.fetch())
            })
            .await;
            let Some(count) = loaded else { return };
            tracing::info!(keys = count, "JWKS loaded");
            tokio::spawn(keys.keep_fresh(refresh, shutdown.clone()));
        }
        let topic = results.name.clone();
        let specs = [results];
        let created = until_done("the results topic", &readiness, &shutdown, || {
            or_shutdown(
                &shutdown,
                ensure_topics(&kafka, &specs, Duration::from_secs(10)),
            )
        })
        .await;
        if created.is_none() {
            return;
        }
        let consuming = until_done("the results topic's leaders", &readiness, &shutdown, || {
            or_shutdown(&shutdown, fanout::consumer_from_now(&kafka, &topic))
        })
        .await;
        let Some((consumer, start)) = consuming else {
            return;
        };
        feed.begin(&start);
        tokio::spawn(fanout::fan_out(consumer, feed, shutdown.clone()));
        let tables = until_done("the ClickHouse tables", &readiness, &shutdown, || {
            or_shutdown(&shutdown, async {
                if store.ready().await {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!(
                        "ClickHouse does not answer or the events, devices and audit tables are not there yet"
                    ))
                }
            })
        })
        .await;
        if tables.is_none() {
            return;
        }
        if let Some(jobs) = jobs {
            let made = until_done("the job topics and tables", &readiness, &shutdown, || {
                or_shutdown(&shutdown, async {
                    ensure_topics(&kafka, &jobs.topics, Duration::from_secs(10)).await?;
                    let cluster = jobs.clickhouse.cluster.as_deref();
                    let database = &jobs.clickhouse.database;
                    jobs.ledger.create_table(database, cluster).await?;
                    jobs.reads.create_table(database, cluster).await?;
                    Ok(jobs.ledger.create_schedule_table(database, cluster).await?)
                })
            })
            .await;
            if made.is_none() {
                return;
            }
            let following = until_done(
                "the job-events topic's leaders",
                &readiness,
                &shutdown,
                || or_shutdown(&shutdown, fanout::consumer_from_now(&kafka, &jobs.events)),
            )
            .await;
            let Some((consumer, _)) = following else {
                return;
            };
            tokio::spawn(job_feed::follow(consumer, jobs.feed, shutdown.clone()));
        }
        readiness.set(true);
        tracing::info!(
            topic,
            "results topic read and ClickHouse tables found; ready"
        );
    }
}

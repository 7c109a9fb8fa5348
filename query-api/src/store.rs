//! Reads of scored events from ClickHouse. User input reaches SQL only as
//! bound values.

use clickhouse::Client;
use pulse_common::scored::ScoredEvent;
use pulse_common::sql;

#[derive(Clone)]
pub struct EventStore {
    client: Client,
}

impl EventStore {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Whether the events table exists and answers; the processor creates it.
    pub async fn ready(&self) -> bool {
        matches!(
            self.client
                .query(sql::EVENTS_TABLE_EXISTS)
                .fetch_one::<u8>()
                .await,
            Ok(1)
        )
    }

    /// One event of a tenant. FINAL collapses redelivered copies.
    pub async fn event(
        &self,
        tenant: &str,
        event_id: &str,
    ) -> clickhouse::error::Result<Option<ScoredEvent>> {
        self.client
            .query(sql::EVENT_BY_ID)
            .bind(tenant)
            .bind(event_id)
            .fetch_optional()
            .await
    }

    /// A tenant's most recent events, newest first, optionally of one source.
    pub async fn recent(
        &self,
        tenant: &str,
        source: Option<&str>,
        limit: u64,
    ) -> clickhouse::error::Result<Vec<ScoredEvent>> {
        let q = match source {
            Some(s) => self
                .client
                .query(sql::RECENT_EVENTS_OF_SOURCE)
                .bind(tenant)
                .bind(s),
            None => self.client.query(sql::RECENT_EVENTS).bind(tenant),
        };
        q.bind(limit).fetch_all().await
    }
}

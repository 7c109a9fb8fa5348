//! Reads of scored events from ClickHouse. User input reaches SQL only as
//! bound values.

use clickhouse::Client;
use pulse_common::scored::{ScoredEvent, EVENTS_TABLE};

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
                .query(&format!("EXISTS TABLE {EVENTS_TABLE}"))
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
            .query(&format!(
                "SELECT ?fields FROM {EVENTS_TABLE} FINAL WHERE tenant_id = ? AND event_id = ? LIMIT 1"
            ))
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
        let source_filter = if source.is_some() {
            "AND source_id = ?"
        } else {
            ""
        };
        let mut q = self
            .client
            .query(&format!(
                "SELECT ?fields FROM {EVENTS_TABLE} FINAL WHERE tenant_id = ? {source_filter} \
                 ORDER BY event_time_ms DESC, event_id LIMIT ?"
            ))
            .bind(tenant);
        if let Some(s) = source {
            q = q.bind(s);
        }
        q.bind(limit).fetch_all().await
    }
}

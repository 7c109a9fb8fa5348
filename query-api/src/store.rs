//! Reads of scored events from ClickHouse. User input reaches SQL only as
//! bound values.

use std::pin::Pin;
use std::time::Duration;

use crate::sql;
use axum::body::Bytes;
use clickhouse::Client;
use futures::{Stream, StreamExt};
use pulse_common::scored::ScoredEvent;

use crate::audit::AuditRecord;
use serde::{Deserialize, Serialize};

#[derive(Clone)]
pub struct EventStore {
    /// For reads, under the read limits (`crate::budget`).
    client: Client,
    /// For exports, which may run long and read every row of their range.
    exports: Client,
    /// How long an export may wait for its next bytes.
    export_idle: Duration,
}

/// An export's bytes as ClickHouse sends them.
pub type ExportBytes = Pin<Box<dyn Stream<Item = clickhouse::error::Result<Bytes>> + Send>>;

impl EventStore {
    pub fn new(client: Client, exports: Client, export_idle: Duration) -> Self {
        Self {
            client,
            exports,
            export_idle,
        }
    }

    /// Whether the tables the API uses exist and answer; the processor's
    /// migrations create them.
    pub async fn ready(&self) -> bool {
        matches!(
            self.client
                .query(sql::API_TABLES_EXIST)
                .fetch_one::<u64>()
                .await,
            Ok(3)
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

    /// A page of a tenant's events (or only its anomalies) in `page.range`,
    /// newest first, after `page.after`.
    pub async fn page(
        &self,
        tenant: &str,
        kind: PageKind<'_>,
        page: &Page,
    ) -> clickhouse::error::Result<Vec<ScoredEvent>> {
        // The statements name the tenant (and source) twice: for the rows,
        // and for the keys of the page.
        let q = match kind {
            PageKind::Events { source: Some(s) } => self
                .client
                .query(sql::EVENTS_PAGE_OF_SOURCE)
                .bind(tenant)
                .bind(s)
                .bind(tenant)
                .bind(s),
            PageKind::Events { source: None } => self
                .client
                .query(sql::EVENTS_PAGE)
                .bind(tenant)
                .bind(tenant),
            PageKind::Anomalies => self
                .client
                .query(sql::ANOMALIES_PAGE)
                .bind(tenant)
                .bind(tenant),
        };
        q.bind(page.from_ms)
            .bind(page.to_ms)
            .bind(page.after.time_ms)
            .bind(page.after.time_ms)
            .bind(&page.after.event_id)
            .bind(page.limit)
            .bind(page.limit)
            .fetch_all()
            .await
    }

    /// A tenant's devices with their totals.
    pub async fn devices(
        &self,
        tenant: &str,
        limit: u64,
    ) -> clickhouse::error::Result<Vec<Device>> {
        self.client
            .query(sql::DEVICES)
            .bind(tenant)
            .bind(limit)
            .fetch_all()
            .await
    }

    /// One device's rollup in buckets of `step_s` seconds over `[from_s, to_s)`.
    pub async fn series(
        &self,
        tenant: &str,
        source: &str,
        step_s: u32,
        from_s: u32,
        to_s: u32,
    ) -> clickhouse::error::Result<Vec<Bucket>> {
        self.client
            .query(sql::DEVICE_SERIES)
            .bind(step_s)
            .bind(step_s)
            .bind(tenant)
            .bind(source)
            .bind(from_s)
            .bind(to_s)
            .fetch_all()
            .await
    }
}

/// Which audit records a search returns (empty, 0: any).
pub struct AuditFilter<'a> {
    pub caller: &'a str,
    pub route: &'a str,
    pub status: u16,
}

/// What an aggregates request measures and how it groups.
pub struct AggregateSpec<'a> {
    /// `device`, `event_type`, `kind` or `none`.
    pub group_by: &'a str,
    /// `score` or a reading's name.
    pub metric: &'a str,
    /// Only this source when set.
    pub source: Option<&'a str>,
    pub range: (i64, i64),
    pub limit: u64,
}

impl EventStore {
    /// Count, mean, extremes and quantiles of `spec.metric` per group.
    pub async fn aggregates(
        &self,
        tenant: &str,
        spec: &AggregateSpec<'_>,
    ) -> clickhouse::error::Result<Vec<AggregateRow>> {
        let source = spec.source.unwrap_or_default();
        self.client
            .query(sql::AGGREGATES)
            .bind(spec.group_by)
            .bind(spec.group_by)
            .bind(spec.group_by)
            .bind(spec.metric)
            .bind(spec.metric)
            .bind(tenant)
            .bind(spec.range.0)
            .bind(spec.range.1)
            .bind(source)
            .bind(source)
            .bind(spec.metric)
            .bind(spec.metric)
            .bind(spec.limit)
            .fetch_all()
            .await
    }
}

impl EventStore {
    /// A tenant's audit records in `[from_ms, to_ms)`, newest first,
    /// optionally of one caller, route and status (empty, 0: all).
    pub async fn audit(
        &self,
        tenant: &str,
        (from_ms, to_ms): (i64, i64),
        filter: &AuditFilter<'_>,
        limit: u64,
    ) -> clickhouse::error::Result<Vec<AuditRecord>> {
        self.client
            .query(sql::AUDIT_SEARCH)
            .bind(tenant)
            .bind(from_ms)
            .bind(to_ms)
            .bind(filter.caller)
            .bind(filter.caller)
            .bind(filter.route)
            .bind(filter.route)
            .bind(filter.status)
            .bind(filter.status)
            .bind(limit)
            .fetch_all()
            .await
    }
}

impl EventStore {
    /// A tenant's events in `[from_ms, to_ms)` as a stream of `format`
    /// bytes, straight from ClickHouse.
    pub fn export(
        &self,
        tenant: &str,
        source: Option<&str>,
        (from_ms, to_ms): (i64, i64),
        format: &str,
    ) -> clickhouse::error::Result<ExportBytes> {
        let q = match source {
            Some(s) => self
                .exports
                .query(sql::EXPORT_EVENTS_OF_SOURCE)
                .bind(tenant)
                .bind(s),
            None => self.exports.query(sql::EXPORT_EVENTS).bind(tenant),
        };
        // 64-bit integers as JSON numbers, not strings (NDJSON and Parquet).
        let bytes = q
            .bind(from_ms)
            .bind(to_ms)
            .with_setting("output_format_json_quote_64bit_integers", "0")
            .fetch_bytes(format)?;
        Ok(idle_bounded(bytes, self.export_idle))
    }
}

/// `bytes`, ended with `TimedOut` once `idle` passes without any: a
/// ClickHouse that stops sending must not hold an export open for ever.
fn idle_bounded<S>(bytes: S, idle: Duration) -> ExportBytes
where
    S: Stream<Item = clickhouse::error::Result<Bytes>> + Send + Unpin + 'static,
{
    Box::pin(futures::stream::unfold(
        Some(bytes),
        move |bytes| async move {
            let mut bytes = bytes?;
            match tokio::time::timeout(idle, bytes.next()).await {
                Ok(Some(item)) => Some((item, Some(bytes))),
                Ok(None) => None,
                Err(_) => {
                    tracing::warn!(?idle, "ClickHouse stopped sending an export");
                    Some((Err(clickhouse::error::Error::TimedOut), None))
                }
            }
        },
    ))
}

/// Which events a page holds.
pub enum PageKind<'a> {
    Events { source: Option<&'a str> },
    Anomalies,
}

/// Where a page ends: the last event it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub time_ms: i64,
    pub event_id: String,
}

impl Cursor {
    /// The opaque form clients pass back: time, '.', the id in hex.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.time_ms, hex::encode(&self.event_id))
    }

    /// Any string of the documented form is a position, also one this
    /// API never sent: an id that is not UTF-8 sorts where its bytes do.
    pub fn decode(s: &str) -> Option<Self> {
        let (time, id) = s.split_once('.')?;
        Some(Self {
            time_ms: time.parse().ok()?,
            event_id: String::from_utf8_lossy(&hex::decode(id).ok()?).into_owned(),
        })
    }
}

/// A page request: the time range `[from_ms, to_ms)`, and the position to
/// continue after (the range's end for a first page).
pub struct Page {
    pub from_ms: i64,
    pub to_ms: i64,
    pub after: Cursor,
    pub limit: u64,
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Device {
    pub source_id: String,
    /// Start of the last minute with events, seconds since the epoch.
    pub last_minute: u32,
    pub events: u64,
    pub anomalies: u64,
    pub score_max: f32,
}

/// One group's statistics as ClickHouse returns them.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct AggregateRow {
    pub key: String,
    pub count: u64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    /// p50, p90 and p99.
    pub quantiles: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bucket {
    /// Start of the bucket, seconds since the epoch.
    pub bucket: u32,
    pub events: u64,
    pub anomalies: u64,
    pub score_max: f32,
    pub score_avg: f64,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Bytes;
    use futures::StreamExt;

    use super::{idle_bounded, Cursor};

    #[tokio::test]
    async fn an_export_that_stops_receiving_ends_with_one_error() {
        let first: clickhouse::error::Result<Bytes> = Ok(Bytes::from_static(b"a,b\n"));
        let stalls = futures::stream::iter([first]).chain(futures::stream::pending());
        let mut bytes = idle_bounded(stalls, Duration::from_millis(20));
        assert_eq!(
            bytes.next().await.map(|b| b.ok()),
            Some(Some(Bytes::from_static(b"a,b\n")))
        );
        assert!(matches!(
            bytes.next().await,
            Some(Err(clickhouse::error::Error::TimedOut))
        ));
        assert!(bytes.next().await.is_none());
    }

    #[tokio::test]
    async fn an_export_that_finishes_ends_without_error() {
        let chunks: Vec<clickhouse::error::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"1\n")),
            Ok(Bytes::from_static(b"2\n")),
        ];
        let bytes = idle_bounded(futures::stream::iter(chunks), Duration::from_secs(60));
        let got: Vec<_> = bytes.map(|b| b.ok()).collect().await;
        assert_eq!(
            got,
            [
                Some(Bytes::from_static(b"1\n")),
                Some(Bytes::from_static(b"2\n"))
            ]
        );
    }

    #[test]
    fn cursors_round_trip_any_id() {
        for id in ["", "6f1c4c1e-1d8c", "a.b/c' OR 1=1"] {
            let c = Cursor {
                time_ms: 1_763_856_000_123,
                event_id: id.into(),
            };
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
        assert_eq!(Cursor::decode("nope"), None);
        assert_eq!(Cursor::decode("12.zz"), None);
    }
}

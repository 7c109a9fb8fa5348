//! The audit trail: every request to the API, whether it was allowed or
//! not, recorded in ClickHouse's `audit` table.
//!
//! The writer creates the table first: it is the API's own.
//!
//! A middleware authenticates the request once (handlers find the result in
//! the request's extensions), times it, and hands a record to a writer task
//! that inserts in batches (up to `BATCH` records or every second). When
//! ClickHouse is down the writer keeps its batch and retries, and requests
//! wait for room in the bounded queue rather than go unrecorded. Records are
//! written within about a second; those still queued when the process is
//! killed outright are lost, while SIGTERM flushes them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use clickhouse::Client;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use pulse_common::clickhouse::{
    classify, error_code, for_cluster, in_database, Failure, UNKNOWN_DATABASE,
};
use pulse_common::config::ClickHouseArgs;
use pulse_common::retry::backoff;
use pulse_common::shutdown::Shutdown;

use crate::auth::Authenticated;
use crate::{redact, sql};

/// Most records per insert.
const BATCH: usize = 1000;
/// Records waiting to be written before requests wait.
const QUEUE: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row, utoipa::ToSchema)]
pub struct AuditRecord {
    pub time: u32,
    pub time_ms: i64,
    /// The credential's subject or API key name; empty when refused.
    pub caller: String,
    pub role: String,
    pub tenant: String,
    pub method: String,
    pub route: String,
    /// The query string as sent.
    pub params: String,
    pub rows: u64,
    pub status: u16,
    pub latency_ms: f32,
}

/// Rows a handler returned, for the audit record.
#[derive(Debug, Clone, Copy)]
pub struct RowsReturned(pub u64);

/// How a streamed answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every row was sent.
    Complete,
    /// The source failed part way; the client got a cut-off body.
    Failed,
    /// The client stopped reading (went away) before the end.
    ClientGone,
}

impl Ending {
    /// The status an audit record shows for a stream that began with 200:
    /// 500 for one cut off by a failure, 499 for one the client left.
    fn status(self, sent: u16) -> u16 {
        match self {
            Ending::Complete => sent,
            Ending::Failed => 500,
            Ending::ClientGone => 499,
        }
    }
}

/// What a streamed answer returned, told when its stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streamed {
    pub rows: u64,
    pub ending: Ending,
}

/// Rows a streamed answer will have returned once its stream ends; its
/// audit record waits for them.
#[derive(Debug, Clone)]
pub struct RowsLater(Arc<std::sync::Mutex<Option<oneshot::Receiver<Streamed>>>>);

impl RowsLater {
    pub fn new(rx: oneshot::Receiver<Streamed>) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(rx))))
    }

    fn take(&self) -> Option<oneshot::Receiver<Streamed>> {
        self.0.lock().ok().and_then(|mut rx| rx.take())
    }

    #[cfg(test)]
    pub async fn take_for_test(&self) -> Option<Streamed> {
        self.take()?.await.ok()
    }
}

#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<AuditRecord>,
}

impl AuditLog {
    /// Starts the writer, which first creates the audit table (the API's
    /// own) in `clickhouse`'s database; it stops once every `AuditLog` is
    /// dropped and the queue is written, or, after `shutdown`, at the first
    /// write that fails.
    pub fn start(
        clickhouse: &ClickHouseArgs,
        shutdown: Shutdown,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = pulse_common::clickhouse::client(clickhouse);
        let ddl = for_cluster(
            &in_database(sql::AUDIT_TABLE, &clickhouse.database),
            clickhouse.cluster.as_deref(),
        );
        let writer = async move {
            if create_table(&client, &ddl, &shutdown).await {
                write(client, rx, shutdown).await;
            } else {
                crate::metrics::AUDIT_RECORDS_LOST.inc_by(rx.len() as u64);
            }
        };
        (Self { tx }, tokio::spawn(writer))
    }

    async fn record(&self, r: AuditRecord) {
        if self.tx.send(r).await.is_err() {
            tracing::error!("audit writer stopped; record lost");
        }
    }
}

/// Creates the audit table unless it exists; false if shutdown came first.
/// Waits while ClickHouse is down or the processor has not created the
/// database yet. A refusal for good (an audit user that may only insert,
/// into a table an operator created) is logged, and the writer goes on to
/// insert into the table as it is.
async fn create_table(client: &Client, ddl: &str, shutdown: &Shutdown) -> bool {
    let mut attempt = 0u32;
    loop {
        let e = match client.query(ddl).execute().await {
            Ok(()) => return true,
            Err(e) => e,
        };
        let not_yet = error_code(&e) == Some(UNKNOWN_DATABASE);
        if !not_yet && classify(&e) == Failure::Permanent {
            tracing::warn!(error = %e, "cannot create the audit table; writing into it as it is");
            return true;
        }
        attempt += 1;
        tracing::warn!(error = %e, attempt, "cannot create the audit table yet; retrying");
        if !backoff(shutdown, attempt).await {
            return false;
        }
    }
}

async fn write(client: Client, mut rx: mpsc::Receiver<AuditRecord>, shutdown: Shutdown) {
    let mut batch = Vec::with_capacity(BATCH);
    // recv_many answers 0 only once the queue is closed and empty.
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // Gather what arrives within a second, up to a batch.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let mut attempt = 0u32;
        while let Err(e) = insert(&client, &batch).await {
            if classify(&e) == Failure::Permanent {
                // No retry can write them (the table is gone or not what
                // this release expects); holding them would fill the queue
                // and stall every request behind it.
                crate::metrics::AUDIT_RECORDS_LOST.inc_by(batch.len() as u64);
                tracing::error!(records = batch.len(), error = %e, "ClickHouse refused audit records for good; dropped");
                break;
            }
            attempt += 1;
            tracing::warn!(error = %e, attempt, records = batch.len(), "cannot write audit records; retrying");
            // While ClickHouse is down the records wait in memory; once
            // SIGTERM came, they are given up rather than holding the
            // shutdown for as long as the outage lasts.
            if !backoff(&shutdown, attempt).await {
                let lost = batch.len() + rx.len();
                crate::metrics::AUDIT_RECORDS_LOST.inc_by(lost as u64);
                tracing::error!(records = lost, error = %e, "shutting down with audit records ClickHouse did not take");
                return;
            }
        }
        batch.clear();
    }
}

async fn insert(client: &Client, records: &[AuditRecord]) -> clickhouse::error::Result<()> {
    let mut insert = client.insert::<AuditRecord>("audit").await?;
    for r in records {
        insert.write(r).await?;
    }
    insert.end().await
}

/// Runs the request and records it, with the caller that
/// `auth::middleware` found (none for a refused credential).
pub async fn middleware(
    State(log): State<AuditLog>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let caller = match request.extensions().get::<Authenticated>() {
        Some(Authenticated(Ok(caller))) => Some(caller.clone()),
        _ => None,
    };
    let method = request.method().to_string();
    let route = matched.map_or_else(
        || request.uri().path().to_string(),
        |m| m.as_str().to_string(),
    );
    let params = redact::query(request.uri().query().unwrap_or_default());
    let mut response = next.run(request).await;
    let mut record = AuditRecord {
        time: 0,
        time_ms: 0,
        caller: caller.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
        role: caller
            .as_ref()
            .map(|c| c.role.as_str().to_string())
            .unwrap_or_default(),
        tenant: caller.map(|c| c.tenant).unwrap_or_default(),
        method,
        route,
        params,
        rows: response
            .extensions()
            .get::<RowsReturned>()
            .map_or(0, |r| r.0),
        status: response.status().as_u16(),
        latency_ms: 0.0,
    };
    match response
        .extensions_mut()
        .remove::<RowsLater>()
        .and_then(|r| r.take())
    {
        // A streamed answer is recorded when its stream ends, with its rows,
        // how it ended and the time it took.
        Some(streamed) => {
            tokio::spawn(async move {
                let streamed = streamed.await.unwrap_or(Streamed {
                    rows: 0,
                    ending: Ending::ClientGone,
                });
                record.rows = streamed.rows;
                record.status = streamed.ending.status(record.status);
                log.record(record.done(started)).await;
            });
        }
        None => log.record(record.done(started)).await,
    }
    response
}

impl AuditRecord {
    /// The record of a request that finished now, having started at `started`.
    fn done(mut self, started: Instant) -> Self {
        let now = pulse_common::clock::now_ms();
        self.time = u32::try_from(now / 1000).unwrap_or_default();
        self.time_ms = now;
        self.latency_ms = started.elapsed().as_secs_f32() * 1000.0;
        self
    }
}

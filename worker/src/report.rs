//! The report kind: a tenant's events over a range as one CSV or Parquet
//! file, the bytes of `/v1/export` for the same range. ClickHouse's rows
//! stream through the export's CSV guard or Parquet encoder into a
//! multipart upload, so the worker holds a few parts whatever the size.
//!
//! The file's id is made from the job's, so every attempt writes the same
//! file: one that finished before a crash is found and kept, and the
//! staged parts of one cut short are removed before the next begins.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use pulse_common::files::{FileId, FileStore, UploadError, UploadLimits};
use pulse_common::jobs::{Job, ReportFormat, ReportParams};
use pulse_query_api::store::EventStore;
use pulse_query_api::{csv_guard, parquet_export};

use crate::failure::Failure;
use crate::progress::Progress;

const EXPORT_COUNT: &str = include_str!("../../schemas/clickhouse/queries/export_count.sql");

/// A report is the tenant's own data: no size limit or quota refuses it.
const UNLIMITED: UploadLimits = UploadLimits {
    max_bytes: u64::MAX,
    tenant_quota_bytes: u64::MAX,
};

#[derive(Clone)]
pub struct Reports {
    pub events: EventStore,
    pub counts: clickhouse::Client,
    pub files: FileStore,
}

/// The id of the file that `job` makes.
pub fn file_of(job: &Job) -> FileId {
    FileId::for_key(&job.tenant_id, &format!("report:{}", job.job_id))
}

impl Reports {
    /// Writes `job`'s report; answers its file's id.
    pub async fn run(&self, job: &Job, progress: &Arc<Progress>) -> Result<String, Failure> {
        let raw: serde_json::Value = serde_json::from_str(&job.params)
            .map_err(|e| Failure::Permanent(format!("params: {e}")))?;
        let params = ReportParams::parse(&raw)
            .map_err(|e| Failure::Permanent(format!("{}: {}", e.field, e.reason)))?;
        let tenant = &job.tenant_id;
        let source = params.source_id.clone().unwrap_or_default();
        let total: u64 = self
            .counts
            .query(EXPORT_COUNT)
            .bind(tenant)
            .bind(params.from_ms)
            .bind(params.to_ms)
            .bind(&source)
            .bind(&source)
            .fetch_one()
            .await
            .map_err(transient)?;
        progress.set_total(total);
        let id = file_of(job);
        self.files
            .discard_staged(tenant, &id)
            .await
            .map_err(|e| Failure::Transient(format!("object storage: {e}")))?;
        let clickhouse_format = match params.format {
            ReportFormat::Csv => "CSVWithNames",
            ReportFormat::Parquet => "JSONEachRow",
        };
        let rows = self
            .events
            .export(
                tenant,
                params.source_id.as_deref(),
                (params.from_ms, params.to_ms),
                clickhouse_format,
            )
            .map_err(transient)?;
        let counted = Counted {
            inner: rows,
            header: params.format == ReportFormat::Csv,
            progress: progress.clone(),
        };
        let body: Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>> = match params.format {
            ReportFormat::Csv => Box::pin(csv_guard::guarded(counted)),
            ReportFormat::Parquet => Box::pin(futures::StreamExt::map(
                parquet_export::from_ndjson(counted),
                |c| c.map_err(|e| e.to_string()),
            )),
        };
        let upload = self
            .files
            .upload(tenant, &id, params.format.content_type(), body, UNLIMITED)
            .await;
        match upload {
            Ok((meta, _)) => Ok(meta.file_id),
            Err(UploadError::Storage(e)) => Err(Failure::Transient(format!("object storage: {e}"))),
            Err(UploadError::Body(e)) => {
                Err(Failure::Transient(format!("reading the events: {e}")))
            }
            Err(e) => Err(Failure::Permanent(e.to_string())),
        }
    }
}

fn transient(e: clickhouse::error::Error) -> Failure {
    Failure::Transient(format!("ClickHouse: {e}"))
}

/// ClickHouse's bytes, counting rows (line ends) as they pass.
struct Counted<S> {
    inner: S,
    /// CSV's first line is its header.
    header: bool,
    progress: Arc<Progress>,
}

/// Rows (line ends) in `chunk`, less the CSV header while `header` is due.
fn count_rows(chunk: &[u8], header: &mut bool) -> u64 {
    let mut lines = chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    if *header && lines > 0 {
        *header = false;
        lines -= 1;
    }
    lines
}

impl<S> Stream for Counted<S>
where
    S: Stream<Item = clickhouse::error::Result<Bytes>> + Unpin,
{
    type Item = Result<Bytes, String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = &mut *self;
        match Pin::new(&mut me.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                me.progress.advance(count_rows(&chunk, &mut me.header));
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.to_string()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_counted_without_the_csv_header() {
        let mut header = true;
        let rows =
            count_rows(b"\"a\",\"b\"\n1,", &mut header) + count_rows(b"2\n3,4\n", &mut header);
        assert_eq!(rows, 2);
    }
}

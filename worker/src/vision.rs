//! The OCR kind: the text on each of a job's snapshots, and the meter
//! value in it published as the camera's telemetry.
//!
//! Each snapshot's read is stored as soon as a few are done, so that an
//! attempt after a crash skips every snapshot already stored instead of
//! reading it again. A snapshot that is no sound image is a read with its
//! reason and the job goes on; storage, the models or Kafka failing ends
//! the attempt (another may succeed). Snapshots are read `in_flight` at a
//! time, and the models batch them with those of every other job running
//! on this worker. At the end, the job's file holds every read.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pulse_common::files::{FileId, FileStore, UploadError, UploadLimits};
use pulse_common::jobs::{meter_value, Job, OcrParams, Read, ReadLedger};
use pulse_query_api::reads::ReadView;

use crate::failure::Failure;
use crate::ocr::{Engine, ReadError};
use crate::progress::Progress;
use crate::telemetry::{self, Reading, Telemetry};

/// Reads are stored once this many are waiting, or this long after the
/// first of them.
const STORE_EVERY: usize = 16;
const STORE_AFTER: Duration = Duration::from_secs(1);
/// Reads fetched a page at a time for the job's file.
const PAGE: u64 = 1000;

/// A job's own data: no size limit or quota refuses its result.
const UNLIMITED: UploadLimits = UploadLimits {
    max_bytes: u64::MAX,
    tenant_quota_bytes: u64::MAX,
};

#[derive(Clone)]
pub struct Vision {
    /// None where the worker has no models: OCR jobs then fail saying so.
    pub engine: Option<Engine>,
    pub files: FileStore,
    pub reads: ReadLedger,
    pub telemetry: Arc<Telemetry>,
    /// Snapshots of one job read at once.
    pub in_flight: usize,
}

/// The id of the file that `job` makes.
pub fn file_of(job: &Job) -> FileId {
    FileId::for_key(&job.tenant_id, &format!("ocr:{}", job.job_id))
}

fn storage(e: impl std::fmt::Display) -> Failure {
    Failure::Transient(format!("object storage: {e}"))
}

fn clickhouse(e: clickhouse::error::Error) -> Failure {
    Failure::Transient(format!("ClickHouse: {e}"))
}

impl Vision {
    /// Reads `job`'s snapshots; answers its file's id.
    pub async fn run(&self, job: &Job, progress: &Arc<Progress>) -> Result<String, Failure> {
        let engine = self.engine.as_ref().ok_or_else(|| {
            Failure::Permanent("this worker has no OCR models (PULSE_OCR_MODEL_DIR)".into())
        })?;
        let raw: serde_json::Value = serde_json::from_str(&job.params)
            .map_err(|e| Failure::Permanent(format!("params: {e}")))?;
        let params = OcrParams::parse(&raw)
            .map_err(|e| Failure::Permanent(format!("{}: {}", e.field, e.reason)))?;
        let pattern = params
            .pattern()
            .map_err(|e| Failure::Permanent(format!("params.value_pattern: {e}")))?;
        let done: HashSet<u32> = self
            .reads
            .done_items(&job.tenant_id, &job.job_id)
            .await
            .map_err(clickhouse)?
            .into_iter()
            .collect();
        progress.set_total(job.inputs.len() as u64);
        progress.advance(done.len() as u64);
        if !done.is_empty() {
            tracing::info!(job_id = %job.job_id, skipped = done.len(), "resuming: snapshots read before are skipped");
        }
        // Owned, so that the stream of reads is Send for any borrow.
        let todo: Vec<(u32, String)> = (0u32..)
            .zip(job.inputs.iter().cloned())
            .filter(|(i, _)| !done.contains(i))
            .collect();
        let item = Item {
            vision: self,
            engine,
            job,
            params: &params,
            pattern: &pattern,
        };
        let mut reads = futures::stream::iter(todo)
            .map(|(i, file)| item.read(i, file))
            .buffer_unordered(self.in_flight.max(1));
        let mut waiting: Vec<Read> = Vec::new();
        let mut since = Instant::now();
        while let Some(read) = reads.next().await {
            let read = match read {
                Ok(read) => read,
                Err(failure) => {
                    // What was read stays read for the next attempt.
                    drop(reads);
                    self.reads.store(&waiting).await.map_err(clickhouse)?;
                    return Err(failure);
                }
            };
            if waiting.is_empty() {
                since = Instant::now();
            }
            waiting.push(read);
            progress.advance(1);
            if waiting.len() >= STORE_EVERY || since.elapsed() >= STORE_AFTER {
                self.reads.store(&waiting).await.map_err(clickhouse)?;
                waiting.clear();
            }
        }
        self.reads.store(&waiting).await.map_err(clickhouse)?;
        self.result(job).await
    }

    /// Writes the job's file from its stored reads: every snapshot's, in
    /// input order. A job none of whose snapshots could be read fails with
    /// the first one's reason.
    async fn result(&self, job: &Job) -> Result<String, Failure> {
        let mut all = Vec::with_capacity(job.inputs.len());
        let mut after = -1i64;
        loop {
            let page = self
                .reads
                .page(&job.tenant_id, &job.job_id, after, PAGE)
                .await
                .map_err(clickhouse)?;
            let Some(last) = page.last() else { break };
            after = i64::from(last.item);
            let full = page.len() as u64 == PAGE;
            all.extend(page);
            if !full {
                break;
            }
        }
        let failed = all.iter().filter(|r| !r.error.is_empty()).count();
        if !all.is_empty() && failed == all.len() {
            let first = &all[0];
            let reason = if all.len() == 1 {
                format!("file {}: {}", first.file_id, first.error)
            } else {
                format!(
                    "none of the {} snapshots could be read; the first, file {}: {}",
                    all.len(),
                    first.file_id,
                    first.error
                )
            };
            return Err(Failure::Permanent(reason));
        }
        let reads: Vec<ReadView> = all.iter().map(ReadView::from).collect();
        let document = serde_json::json!({
            "job_id": job.job_id,
            "snapshots": all.len(),
            "failed": failed,
            "reads": reads,
        });
        let body = serde_json::to_vec(&document)
            .map_err(|e| Failure::Permanent(format!("encoding the result: {e}")))?;
        let stream = futures::stream::iter([Ok::<_, String>(bytes::Bytes::from(body))]);
        let id = file_of(job);
        self.files
            .discard_staged(&job.tenant_id, &id)
            .await
            .map_err(storage)?;
        match self
            .files
            .upload(&job.tenant_id, &id, "application/json", stream, UNLIMITED)
            .await
        {
            Ok((meta, _)) => Ok(meta.file_id),
            Err(UploadError::Storage(e)) => Err(storage(e)),
            Err(e) => Err(Failure::Permanent(e.to_string())),
        }
    }
}

/// What reading one snapshot needs.
struct Item<'a> {
    vision: &'a Vision,
    engine: &'a Engine,
    job: &'a Job,
    params: &'a OcrParams,
    pattern: &'a regex::Regex,
}

impl Item<'_> {
    async fn read(&self, item: u32, file_id: String) -> Result<Read, Failure> {
        let job = self.job;
        let mut read = Read {
            tenant_id: job.tenant_id.clone(),
            job_id: job.job_id.clone(),
            item,
            file_id: file_id.clone(),
            source_id: self.params.source_id.clone().unwrap_or_default(),
            lines: "[]".into(),
            has_value: 0,
            value: 0.0,
            event_id: String::new(),
            error: String::new(),
            taken_ms: 0,
            read_ms: 0,
        };
        let refused = |mut read: Read, why: String| {
            read.error = why;
            read.read_ms = pulse_common::clock::now_ms();
            Ok(read)
        };
        let files = &self.vision.files;
        let Some(id) = FileId::parse(&file_id) else {
            return refused(read, "not a file id".into());
        };
        let Some(meta) = files.meta(&job.tenant_id, &id).await.map_err(storage)? else {
            return refused(
                read,
                "no such file: it was deleted after the job was queued".into(),
            );
        };
        read.taken_ms = meta.created_ms;
        if !matches!(meta.content_type.as_str(), "image/jpeg" | "image/png") {
            let why = format!("the file is {}, not a JPEG or PNG image", meta.content_type);
            return refused(read, why);
        }
        let bytes = files
            .get(&meta, None)
            .await
            .map_err(storage)?
            .bytes()
            .await
            .map_err(storage)?;
        let lines = match self.engine.read(bytes).await {
            Ok(lines) => lines,
            Err(ReadError::Image(bad)) => return refused(read, bad.0),
            Err(ReadError::Model(e)) => return Err(Failure::Transient(format!("OCR model: {e}"))),
        };
        read.lines = serde_json::to_string(&lines)
            .map_err(|e| Failure::Permanent(format!("encoding the lines: {e}")))?;
        if let Some(value) = meter_value(self.pattern, lines.iter().map(|l| l.text.as_str())) {
            read.has_value = 1;
            read.value = value;
            if let Some(source) = self.params.source_id.as_deref() {
                let event_id = telemetry::event_id(&job.job_id, item);
                let reading = Reading {
                    tenant: &job.tenant_id,
                    source,
                    name: self.params.reading(),
                    value,
                    event_id: &event_id,
                    time_ms: meta.created_ms,
                };
                self.vision.telemetry.publish(&reading).await?;
                read.event_id = event_id;
            }
        }
        read.read_ms = pulse_common::clock::now_ms();
        crate::metrics::OCR_SNAPSHOTS.inc();
        Ok(read)
    }
}

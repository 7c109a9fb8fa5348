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
//!
//! A job whose one input is a zip archive reads each of its entries: each
//! is stored as a file of its own (under an id made from the job and the
//! entry, so a second attempt stores the same file again), which is the
//! file its read names.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use pulse_common::files::sniff::{Kind, SNIFF_BYTES};
use pulse_common::files::{FileId, FileMeta, FileStore, UploadError, UploadLimits};
use pulse_common::jobs::{meter_value, Job, OcrParams, Read, ReadLedger};
use pulse_query_api::reads::ReadView;
use tokio::io::AsyncWriteExt;

use crate::archive::{self, Archive};
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
    pub archive_limits: archive::Limits,
}

/// Where a job's snapshots come from.
enum Snapshots {
    /// Files of the tenant's, by id.
    Files(Vec<String>),
    /// The entries of one archive.
    Archive {
        archive: Arc<Mutex<Archive<std::fs::File>>>,
        uploaded_ms: i64,
    },
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
        let snapshots = self.snapshots(job).await?;
        let total = match &snapshots {
            Snapshots::Files(files) => files.len(),
            Snapshots::Archive { archive, .. } => lock(archive).entries().len(),
        };
        progress.set_total(total as u64);
        progress.advance(done.len() as u64);
        if !done.is_empty() {
            tracing::info!(job_id = %job.job_id, skipped = done.len(), "resuming: snapshots read before are skipped");
        }
        let todo: Vec<u32> = (0u32..).take(total).filter(|i| !done.contains(i)).collect();
        let item = Item {
            vision: self,
            engine,
            job,
            params: &params,
            pattern: &pattern,
            snapshots: &snapshots,
        };
        let mut reads = futures::stream::iter(todo)
            .map(|i| item.read(i))
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

    /// The job's snapshots: its files, or the entries of its one input
    /// where that is a zip archive (downloaded to a temporary file, which
    /// goes when the job ends).
    async fn snapshots(&self, job: &Job) -> Result<Snapshots, Failure> {
        let files = || Snapshots::Files(job.inputs.clone());
        let [only] = job.inputs.as_slice() else {
            return Ok(files());
        };
        let Some(id) = FileId::parse(only) else {
            return Ok(files());
        };
        let meta = match self
            .files
            .meta(&job.tenant_id, &id)
            .await
            .map_err(storage)?
        {
            Some(meta) if Kind::of_content_type(&meta.content_type) == Some(Kind::Zip) => meta,
            _ => return Ok(files()),
        };
        let file = self.download(&meta).await?;
        let limits = self.archive_limits;
        let archive = tokio::task::spawn_blocking(move || Archive::open(file, &limits))
            .await
            .map_err(|e| Failure::Transient(format!("opening the archive: {e}")))?
            .map_err(|why| Failure::Permanent(format!("file {only}: {why}")))?;
        Ok(Snapshots::Archive {
            archive: Arc::new(Mutex::new(archive)),
            uploaded_ms: meta.created_ms,
        })
    }

    /// The file's bytes in a temporary file, which is removed once closed.
    async fn download(&self, meta: &FileMeta) -> Result<std::fs::File, Failure> {
        let local = |e: std::io::Error| Failure::Transient(format!("a temporary file: {e}"));
        let file = tokio::task::spawn_blocking(tempfile::tempfile)
            .await
            .map_err(|e| Failure::Transient(format!("a temporary file: {e}")))?
            .map_err(local)?;
        let mut file = tokio::fs::File::from_std(file);
        let mut chunks = self
            .files
            .get(meta, None)
            .await
            .map_err(storage)?
            .into_stream();
        while let Some(chunk) = chunks.next().await {
            file.write_all(&chunk.map_err(storage)?)
                .await
                .map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        Ok(file.into_std().await)
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
    snapshots: &'a Snapshots,
}

fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn refused(mut read: Read, why: String) -> Result<Read, Failure> {
    read.error = why;
    read.read_ms = pulse_common::clock::now_ms();
    Ok(read)
}

impl Item<'_> {
    async fn read(&self, item: u32) -> Result<Read, Failure> {
        let job = self.job;
        let read = Read {
            tenant_id: job.tenant_id.clone(),
            job_id: job.job_id.clone(),
            item,
            file_id: String::new(),
            source_id: self.params.source_id.clone().unwrap_or_default(),
            lines: "[]".into(),
            has_value: 0,
            value: 0.0,
            event_id: String::new(),
            error: String::new(),
            taken_ms: 0,
            read_ms: 0,
        };
        match self.snapshots {
            Snapshots::Files(files) => {
                let file_id = files.get(item as usize).cloned().unwrap_or_default();
                self.read_file(read, file_id).await
            }
            Snapshots::Archive {
                archive,
                uploaded_ms,
            } => self.read_entry(read, archive, *uploaded_ms).await,
        }
    }

    async fn read_file(&self, mut read: Read, file_id: String) -> Result<Read, Failure> {
        let job = self.job;
        read.file_id = file_id;
        let files = &self.vision.files;
        let Some(id) = FileId::parse(&read.file_id) else {
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
        self.recognised(read, bytes).await
    }

    /// Unpacks the archive's entry `read.item`, stores it as a file, and
    /// reads it.
    async fn read_entry(
        &self,
        mut read: Read,
        archive: &Arc<Mutex<Archive<std::fs::File>>>,
        uploaded_ms: i64,
    ) -> Result<Read, Failure> {
        let job = self.job;
        let item = read.item as usize;
        let (entry, unpacked) = {
            let archive = archive.clone();
            tokio::task::spawn_blocking(move || {
                let mut archive = lock(&archive);
                let entry = archive.entries().get(item).cloned();
                (entry, archive.unpack(item))
            })
            .await
            .map_err(|e| Failure::Transient(format!("unpacking the archive: {e}")))?
        };
        let Some(entry) = entry else {
            return refused(read, format!("the archive has no entry {item}"));
        };
        read.taken_ms = entry.modified_ms.unwrap_or(uploaded_ms);
        let bytes = match unpacked {
            Ok(bytes) => bytes,
            Err(why) => return refused(read, why),
        };
        let kind = Kind::of_bytes(&bytes[..bytes.len().min(SNIFF_BYTES)]);
        let content_type = match kind {
            Some(k @ (Kind::Jpeg | Kind::Png)) => k.content_type(),
            _ => {
                let why = format!("entry {} is not a JPEG or PNG image", entry.name);
                return refused(read, why);
            }
        };
        let bytes = bytes::Bytes::from(bytes);
        let id = FileId::for_key(&job.tenant_id, &format!("ocr:{}:entry:{item}", job.job_id));
        let body = futures::stream::iter([Ok::<_, String>(bytes.clone())]);
        let files = &self.vision.files;
        read.file_id = match files
            .upload(&job.tenant_id, &id, content_type, body, UNLIMITED)
            .await
        {
            Ok((meta, _)) => meta.file_id,
            Err(UploadError::Storage(e)) => return Err(storage(e)),
            Err(e) => return refused(read, format!("entry {}: {e}", entry.name)),
        };
        self.recognised(read, bytes).await
    }

    /// Reads the snapshot's text, and publishes its meter value.
    async fn recognised(&self, mut read: Read, bytes: bytes::Bytes) -> Result<Read, Failure> {
        let job = self.job;
        let item = read.item;
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
                    time_ms: read.taken_ms,
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

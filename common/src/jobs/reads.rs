//! What OCR jobs read, one row per snapshot: written by the worker as it
//! goes, which is what lets a resumed job skip what it did, and read by
//! the query API.

use clickhouse::Client;
use serde::{Deserialize, Serialize};

use crate::clickhouse::{for_cluster, in_database};

const READS_TABLE: &str = include_str!("../../../schemas/clickhouse/ocr_reads.sql");
const DONE_ITEMS: &str = statement!("ocr_done_items");
const READS_PAGE: &str = statement!("ocr_reads_page");
const LATEST_OF_SOURCE: &str = statement!("ocr_latest_of_source");

/// One snapshot's read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct Read {
    pub tenant_id: String,
    pub job_id: String,
    /// The snapshot's place among the job's inputs.
    pub item: u32,
    pub file_id: String,
    pub source_id: String,
    /// The lines read, as a JSON array.
    pub lines: String,
    pub has_value: u8,
    pub value: f64,
    /// The telemetry event the value was published as; empty for none.
    pub event_id: String,
    /// Why the snapshot could not be read; empty when it was.
    pub error: String,
    /// When the snapshot was taken (its file's upload time).
    pub taken_ms: i64,
    pub read_ms: i64,
}

/// One line of text read off an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    pub text: String,
    /// From 0 to 1: the mean probability of its characters.
    pub confidence: f32,
    /// Corners in the image's pixels: top-left, top-right, bottom-right,
    /// bottom-left.
    #[serde(rename = "box")]
    pub quad: [[f32; 2]; 4],
}

#[derive(Clone)]
pub struct ReadLedger {
    /// Reads (the query API's reader).
    reads: Client,
    /// Writes reads and creates the table.
    writes: Client,
}

impl ReadLedger {
    pub fn new(reads: Client, writes: Client) -> Self {
        Self { reads, writes }
    }

    pub async fn create_table(
        &self,
        database: &str,
        cluster: Option<&str>,
    ) -> clickhouse::error::Result<()> {
        let ddl = for_cluster(&in_database(READS_TABLE, database), cluster);
        self.writes.query(&ddl).execute().await
    }

    pub async fn store(&self, reads: &[Read]) -> clickhouse::error::Result<()> {
        if reads.is_empty() {
            return Ok(());
        }
        let mut insert = self.writes.insert::<Read>("ocr_reads").await?;
        for read in reads {
            insert.write(read).await?;
        }
        insert.end().await
    }

    /// The items of `tenant`'s job read so far.
    pub async fn done_items(
        &self,
        tenant: &str,
        job_id: &str,
    ) -> clickhouse::error::Result<Vec<u32>> {
        self.reads
            .query(DONE_ITEMS)
            .bind(tenant)
            .bind(job_id)
            .fetch_all()
            .await
    }

    /// Up to `limit` reads of `tenant`'s job after item `after` (-1: from the first).
    pub async fn page(
        &self,
        tenant: &str,
        job_id: &str,
        after: i64,
        limit: u64,
    ) -> clickhouse::error::Result<Vec<Read>> {
        self.reads
            .query(READS_PAGE)
            .bind(tenant)
            .bind(job_id)
            .bind(after)
            .bind(limit)
            .fetch_all()
            .await
    }

    /// The newest successful read of each of `tenant`'s sources (only
    /// `source`'s, if not empty).
    pub async fn latest(
        &self,
        tenant: &str,
        source: &str,
        limit: u64,
    ) -> clickhouse::error::Result<Vec<Read>> {
        self.reads
            .query(LATEST_OF_SOURCE)
            .bind(tenant)
            .bind(source)
            .bind(source)
            .bind(limit)
            .fetch_all()
            .await
    }
}

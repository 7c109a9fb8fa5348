//! Load generator for the upload benchmark (`benches/upload_throughput.sh`).
//!
//! The same bytes (CSV, the same every run) go to the same S3 server four
//! ways, round after round so that noise falls on all alike:
//! - `direct PUT`: one signed PUT of the whole body, straight to the store
//!   (the baseline);
//! - `direct multipart`: the store's multipart upload, 8 MiB parts, two in
//!   flight, as Pulse's gateway writes;
//! - `POST /v1/files`: through ingest, which checks, hashes and streams the
//!   body into a multipart upload, then moves it to its content's key;
//! - `POST /v1/uploads`: presigned parts sent by the client, then the
//!   completion, which reads the bytes back to check them.
//!
//! Prints each way's median MB/s and its ratio to the direct PUT.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use pulse_testkit::Objects;
use tokio::io::AsyncWriteExt;

#[derive(Parser)]
struct Args {
    /// Ingest, with authentication off and an S3 store in the stack's
    /// bucket (`PULSE_S3_*`), whose objects are removed after each round.
    #[arg(long)]
    ingest: String,
    /// The prefix of ingest's store in the bucket.
    #[arg(long)]
    prefix: String,
    /// Size of each upload in MiB.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const WAYS: [&str; 4] = [
    "direct PUT",
    "direct multipart",
    "POST /v1/files",
    "POST /v1/uploads",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The direct ways write beside ingest's objects, under the same prefix.
    let s3 = Objects::at_s3_prefix(&args.prefix).store();
    let body = Bytes::from(pulse_testkit::sample_csv(args.mib << 20));
    let http = reqwest::Client::new();
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); WAYS.len()];
    for round in 0..args.rounds {
        for (way, times) in seconds.iter_mut().enumerate() {
            let key = Path::from(format!("direct/{round}-{way}"));
            let started = Instant::now();
            match way {
                0 => {
                    s3.put(&key, body.clone().into()).await?;
                }
                1 => {
                    let mut writer =
                        BufWriter::with_capacity(s3.clone(), key, 8 << 20).with_max_concurrency(2);
                    for chunk in body.chunks(1 << 20) {
                        writer.put(body.slice_ref(chunk)).await?;
                    }
                    writer.shutdown().await?;
                }
                2 => through_gateway(&http, &args.ingest, body.clone()).await?,
                _ => presigned(&http, &args.ingest, &body).await?,
            }
            times.push(started.elapsed().as_secs_f64());
        }
        clear(&s3).await?;
        eprintln!("round {} of {} done", round + 1, args.rounds);
    }
    let mb = body.len() as f64 / 1e6;
    let median = |t: &[f64]| {
        let mut t = t.to_vec();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let baseline = mb / median(&seconds[0]);
    println!(
        "| way ({} MiB, median of {}) | MB/s | x direct PUT |",
        args.mib, args.rounds
    );
    println!("|---|---:|---:|");
    for (way, times) in WAYS.iter().zip(&seconds) {
        let rate = mb / median(times);
        println!("| {way} | {rate:.0} | {:.2} |", rate / baseline);
    }
    Ok(())
}

async fn through_gateway(http: &reqwest::Client, ingest: &str, body: Bytes) -> anyhow::Result<()> {
    let response = http
        .post(format!("{ingest}/v1/files?tenant_id=bench"))
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await?;
    if response.status() != reqwest::StatusCode::CREATED {
        bail!("POST /v1/files: {}", response.text().await?);
    }
    Ok(())
}

async fn presigned(http: &reqwest::Client, ingest: &str, body: &Bytes) -> anyhow::Result<()> {
    let grant: serde_json::Value = http
        .post(format!("{ingest}/v1/uploads?tenant_id=bench"))
        .json(&serde_json::json!({"content_type": "text/csv", "size": body.len()}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let part_bytes = grant["part_bytes"].as_u64().context("part_bytes")? as usize;
    let urls: Vec<String> = grant["parts"]
        .as_array()
        .context("parts")?
        .iter()
        .filter_map(|p| p["url"].as_str().map(str::to_string))
        .collect();
    let parts = urls
        .into_iter()
        .zip(body.chunks(part_bytes))
        .map(|(url, chunk)| {
            let part = body.slice_ref(chunk);
            async move {
                let response = http.put(url).body(part).send().await?.error_for_status()?;
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .context("an ETag")?;
                anyhow::Ok(etag.to_string())
            }
        });
    let etags: Vec<String> = futures::stream::iter(parts)
        .buffered(2)
        .try_collect()
        .await?;
    let upload_id = grant["upload_id"].as_str().context("upload_id")?;
    let response = http
        .post(format!(
            "{ingest}/v1/uploads/{upload_id}/complete?tenant_id=bench"
        ))
        .json(&serde_json::json!({ "parts": etags }))
        .send()
        .await?;
    if response.status() != reqwest::StatusCode::CREATED {
        bail!("completion: {}", response.text().await?);
    }
    Ok(())
}

/// Removes every object of the run.
async fn clear(s3: &Arc<dyn ObjectStore>) -> anyhow::Result<()> {
    let keys: Vec<Path> = s3.list(None).map_ok(|o| o.location).try_collect().await?;
    for key in keys {
        s3.delete(&key).await?;
    }
    Ok(())
}

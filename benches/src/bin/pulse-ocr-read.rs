//! `pulse-ocr-read`: reads a labelled image set (`pulse-meter-images`)
//! with the worker's OCR engine, with `--concurrency` images in flight
//! (the images of concurrent jobs, batched as the worker batches them).
//! Writes one JSON line per image (`file`, `lines`) in the set's order,
//! the format `benches/ocr/rapidocr_run.py` writes, and prints the
//! throughput and per-image latency as JSON.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use futures::StreamExt;
use pulse_worker::ocr::{Engine, OcrArgs};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    images: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Images read at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[command(flatten)]
    ocr: OcrArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let engine = Engine::load(&args.ocr)?;
    let labels = std::fs::read_to_string(args.images.join("labels.jsonl"))?;
    let mut files = Vec::new();
    for line in labels.lines() {
        let row: serde_json::Value = serde_json::from_str(line)?;
        let file = row["file"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("a label without its file"))?;
        files.push(file.to_string());
    }
    let mut inputs = Vec::with_capacity(files.len());
    for f in &files {
        inputs.push(bytes::Bytes::from(std::fs::read(args.images.join(f))?));
    }
    let started = Instant::now();
    let reads: Vec<_> = futures::stream::iter(inputs.into_iter().enumerate())
        .map(|(i, bytes)| {
            let engine = engine.clone();
            async move {
                let t0 = Instant::now();
                let read = engine.read(bytes).await;
                (i, read, t0.elapsed())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut ordered = reads;
    ordered.sort_by_key(|r| r.0);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args.out)?);
    let mut latencies = Vec::new();
    let mut failed = 0;
    for (i, read, took) in ordered {
        latencies.push(took.as_secs_f64());
        let lines = match read {
            Ok(lines) => serde_json::to_value(lines)?,
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", files[i]);
                serde_json::json!([])
            }
        };
        writeln!(
            out,
            "{}",
            serde_json::json!({"file": files[i], "lines": lines})
        )?;
    }
    out.flush()?;
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        latencies
            .get(((q * latencies.len() as f64) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
            * 1000.0
    };
    let report = serde_json::json!({
        "images": files.len(), "failed": failed, "seconds": (elapsed * 1000.0).round() / 1000.0,
        "images_per_s": ((files.len() as f64 / elapsed) * 1000.0).round() / 1000.0,
        "p50_ms": (pick(0.5) * 10.0).round() / 10.0, "p99_ms": (pick(0.99) * 10.0).round() / 10.0,
        "providers": engine.providers.iter().map(|(m, p)| format!("{m}={p}")).collect::<Vec<_>>(),
    });
    println!("{report}");
    Ok(())
}

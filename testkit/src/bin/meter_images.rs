//! `pulse-meter-images`: writes a labelled set of meter and nameplate
//! snapshots, the same set for a seed, for OCR accuracy and speed runs.
//!
//! Writes `<out>/NNNNN.jpg` (meters) or `.png` (nameplates) and
//! `<out>/labels.jsonl`, one line per image: `{"file", "kind", "lines",
//! "reading"}`.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use image::ImageFormat;
use pulse_testkit::meters::{encode, Kind, Renderer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    /// Directory to write into (made if missing).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 500)]
    count: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    /// Share of meters (the rest are nameplates).
    #[arg(long, default_value_t = 0.7)]
    meters: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let renderer = Renderer::from_env()?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut labels = std::io::BufWriter::new(std::fs::File::create(args.out.join("labels.jsonl"))?);
    for i in 0..args.count {
        let kind = if rng.random_bool(args.meters.clamp(0.0, 1.0)) {
            Kind::Meter
        } else {
            Kind::Nameplate
        };
        let shot = renderer.render(&mut rng, kind, args.width, args.height);
        let (format, ext) = match kind {
            Kind::Meter => (ImageFormat::Jpeg, "jpg"),
            Kind::Nameplate => (ImageFormat::Png, "png"),
        };
        let file = format!("{i:05}.{ext}");
        std::fs::write(args.out.join(&file), encode(&shot.image, format)?)?;
        let label = serde_json::json!({
            "file": file, "kind": shot.kind, "lines": shot.lines, "reading": shot.reading,
        });
        writeln!(labels, "{label}")?;
    }
    labels.flush()?;
    Ok(())
}

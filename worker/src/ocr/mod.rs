//! Reading text off images: PP-OCR's detector, orientation classifier and
//! recogniser (the models RapidOCR ships) run through ONNX Runtime, with
//! the pre- and post-processing RapidOCR does, so both read alike.
//!
//! - `decode`: the bytes to pixels, refusing what is not a sound JPEG or
//!   PNG within the pixel limit;
//! - `detect`: text regions from the detector's probability map;
//! - `recognize`: each region cut out, turned upright and read;
//! - `batch`: the queue in front of each model, which batches the images
//!   and crops of every job this worker runs.
//!
//! CPU-heavy steps (decoding, resizing, contours) run on blocking threads
//! and the models on threads of their own, so the async runtime only
//! passes work along.

pub mod batch;
pub mod decode;
pub mod detect;
pub mod recognize;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;
use ort::session::Session;
use ort::value::Tensor;
pub use pulse_common::jobs::Line;
use pulse_common::onnx::{self, ExecutionProvider};

use crate::metrics;
use batch::{Batcher, Observed, Policy, Slots};
use decode::BadImage;
use detect::Quad;
use recognize::{Alphabet, Steps};

pub const DETECTOR: &str = "PP-OCRv6_det_small.onnx";
pub const RECOGNIZER: &str = "PP-OCRv6_rec_small.onnx";
pub const CLASSIFIER: &str = "ch_ppocr_mobile_v2.0_cls_mobile.onnx";

/// Lines read with less confidence are dropped (RapidOCR's `text_score`).
const MIN_CONFIDENCE: f32 = 0.5;
/// An upside-down verdict below this is not acted on (RapidOCR's `cls_thresh`).
const FLIP_CONFIDENCE: f32 = 0.9;
/// Larger images are scaled down before detection (RapidOCR's `max_side_len`).
const MAX_SIDE: u32 = 2000;

#[derive(Debug, Clone, clap::Args)]
pub struct OcrArgs {
    /// Directory of the OCR models (scripts/install.sh puts them in the cache).
    #[arg(long, env = "PULSE_OCR_MODEL_DIR")]
    pub ocr_model_dir: Option<PathBuf>,
    /// ONNX Runtime's shared library.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,
    #[arg(
        long,
        env = "PULSE_OCR_EXECUTION_PROVIDER",
        value_enum,
        default_value = "cpu"
    )]
    pub ocr_execution_provider: ExecutionProvider,
    /// Threads the three models run on in all (0: one per core).
    #[arg(long, env = "PULSE_OCR_THREADS", default_value_t = 0)]
    pub ocr_threads: usize,
    /// Copies of each model that run side by side, the threads split
    /// among them (0: one a thread, at most 4, on the CPU; one on CUDA).
    #[arg(long, env = "PULSE_OCR_INSTANCES", default_value_t = 0)]
    pub ocr_instances: usize,
    /// Largest image read, in pixels; larger ones fail before decoding.
    #[arg(long, env = "PULSE_OCR_MAX_PIXELS", default_value_t = 40_000_000)]
    pub ocr_max_pixels: u64,
    /// Short side the detector sees.
    #[arg(long, env = "PULSE_OCR_DET_SIDE", default_value_t = 736)]
    pub ocr_det_side: u32,
    /// Most images in one detector batch (images of one size batch together).
    #[arg(long, env = "PULSE_OCR_DET_MAX_BATCH", default_value_t = 8)]
    pub ocr_det_max_batch: usize,
    /// Longest an image waits for others to batch with, in milliseconds.
    #[arg(long, env = "PULSE_OCR_DET_MAX_DELAY_MS", default_value_t = 4)]
    pub ocr_det_max_delay_ms: u64,
    /// Most text crops in one recogniser batch, from any images.
    #[arg(long, env = "PULSE_OCR_REC_MAX_BATCH", default_value_t = 32)]
    pub ocr_rec_max_batch: usize,
    /// Longest a crop waits for others to batch with, in milliseconds.
    #[arg(long, env = "PULSE_OCR_REC_MAX_DELAY_MS", default_value_t = 4)]
    pub ocr_rec_max_delay_ms: u64,
}

/// Why an image was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The image itself: no other attempt reads it.
    #[error("{0}")]
    Image(#[from] BadImage),
    /// The models failed: another attempt may succeed.
    #[error("OCR model: {0}")]
    Model(String),
}

/// The three models, each behind its batcher.
#[derive(Clone)]
pub struct Engine {
    detector: Batcher<(u32, u32), Vec<f32>, Vec<f32>>,
    classifier: Batcher<(), Vec<f32>, (usize, f32)>,
    recognizer: Batcher<u32, Vec<f32>, Steps>,
    alphabet: Arc<Alphabet>,
    det: detect::Settings,
    max_pixels: u64,
    /// The provider each model runs on, as loaded.
    pub providers: [(&'static str, &'static str); 3],
}

impl Engine {
    /// Loads the models; fails when a model or ONNX Runtime is missing.
    pub fn load(args: &OcrArgs) -> anyhow::Result<Self> {
        let dir = args
            .ocr_model_dir
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("PULSE_OCR_MODEL_DIR is not set"))?;
        let dylib = args
            .ort_dylib
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("ORT_DYLIB_PATH is not set"))?;
        let threads = match args.ocr_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let provider = args.ocr_execution_provider;
        // On the CPU, single-threaded copies side by side get more from
        // the cores than one copy spread over them (a convolution's
        // threads wait on each other); copies cost memory, hence the cap.
        let instances = match (args.ocr_instances, provider) {
            (0, ExecutionProvider::Cpu) => threads.min(4),
            (0, _) => 1,
            (n, _) => n,
        };
        let per_instance = (threads / instances).max(1);
        let env = onnx::environment(dylib, "pulse-worker")?;
        let open = |file: &str| -> anyhow::Result<Vec<onnx::Loaded>> {
            (0..instances)
                .map(|_| onnx::load(&env, &dir.join(file), provider, per_instance))
                .collect()
        };
        let det = open(DETECTOR)?;
        let cls = open(CLASSIFIER)?;
        let rec = open(RECOGNIZER)?;
        let first = |loaded: &[onnx::Loaded]| loaded.first().map_or("cpu", |l| l.provider);
        let list = rec
            .first()
            .ok_or_else(|| anyhow::anyhow!("no recogniser loaded"))?
            .session
            .metadata()?
            .custom("character")
            .ok_or_else(|| anyhow::anyhow!("{RECOGNIZER} has no 'character' metadata"))?;
        let alphabet = Alphabet::from_metadata(&list);
        let providers = [
            ("detector", first(&det)),
            ("classifier", first(&cls)),
            ("recognizer", first(&rec)),
        ];
        for (model, provider) in providers {
            metrics::OCR_PROVIDER
                .with_label_values(&[model, provider])
                .set(1);
            metrics::OCR_INSTANCES
                .with_label_values(&[model])
                .set(instances as i64);
        }
        // However many copies, at most `instances` models run at once, so
        // that they never take more than `threads` threads.
        let slots = Slots::new(instances);
        let policy = |model: &'static str, max_batch: usize, delay_ms: u64| {
            metrics::OCR_MAX_BATCH
                .with_label_values(&[model])
                .set(max_batch as i64);
            metrics::OCR_MAX_DELAY
                .with_label_values(&[model])
                .set(delay_ms as f64 / 1000.0);
            (
                Policy {
                    max_batch,
                    max_delay: Duration::from_millis(delay_ms),
                },
                Observed {
                    model,
                    batch_sizes: metrics::OCR_BATCH_SIZE.clone(),
                    queue_seconds: metrics::OCR_QUEUE_SECONDS.clone(),
                },
            )
        };
        let (p, o) = policy(
            "detector",
            args.ocr_det_max_batch,
            args.ocr_det_max_delay_ms,
        );
        let copies = det.into_iter().map(|loaded| {
            let mut session = loaded.session;
            move |&(h, w): &(u32, u32), inputs: Vec<Vec<f32>>| {
                let out = run(&mut session, [3, h as usize, w as usize], inputs)?;
                let plane = (h * w) as usize;
                Ok(out.chunks_exact(plane).map(<[f32]>::to_vec).collect())
            }
        });
        let detector = Batcher::start(p, o, slots.clone(), copies.collect())?;
        let (p, o) = policy(
            "classifier",
            args.ocr_rec_max_batch,
            args.ocr_rec_max_delay_ms,
        );
        let copies = cls.into_iter().map(|loaded| {
            let mut session = loaded.session;
            move |_: &(), inputs: Vec<Vec<f32>>| {
                let shape = [3, recognize::HEIGHT as usize, recognize::CLS_WIDTH as usize];
                let out = run(&mut session, shape, inputs)?;
                Ok(out
                    .chunks_exact(2)
                    .map(|p| if p[1] > p[0] { (1, p[1]) } else { (0, p[0]) })
                    .collect())
            }
        });
        let classifier = Batcher::start(p, o, slots.clone(), copies.collect())?;
        let (p, o) = policy(
            "recognizer",
            args.ocr_rec_max_batch,
            args.ocr_rec_max_delay_ms,
        );
        let classes = alphabet.len();
        let copies = rec.into_iter().map(|loaded| {
            let mut session = loaded.session;
            move |&w: &u32, inputs: Vec<Vec<f32>>| {
                let n = inputs.len();
                let out = run(
                    &mut session,
                    [3, recognize::HEIGHT as usize, w as usize],
                    inputs,
                )?;
                let per = out.len() / n.max(1);
                if !per.is_multiple_of(classes) {
                    return Err(format!(
                        "the recogniser's output does not divide into {classes} classes"
                    ));
                }
                Ok(out
                    .chunks_exact(per.max(1))
                    .map(|o| Steps::of(o, classes))
                    .collect())
            }
        });
        let recognizer = Batcher::start(p, o, slots, copies.collect())?;
        tracing::info!(dir = %dir.display(), threads, instances, ?providers, "OCR models loaded");
        Ok(Self {
            detector,
            classifier,
            recognizer,
            alphabet: Arc::new(alphabet),
            det: detect::Settings {
                side: args.ocr_det_side.max(32),
                ..detect::Settings::default()
            },
            max_pixels: args.ocr_max_pixels,
            providers,
        })
    }

    /// Whether the models are in `dir`.
    pub fn models_in(dir: &Path) -> bool {
        [DETECTOR, RECOGNIZER, CLASSIFIER]
            .iter()
            .all(|m| dir.join(m).is_file())
    }

    /// Reads the lines of text off an encoded image, top line first.
    pub async fn read(&self, bytes: bytes::Bytes) -> Result<Vec<Line>, ReadError> {
        let (max_pixels, side) = (self.max_pixels, self.det.side);
        let (image, scale, input) = blocking(move || {
            let image = decode::decode(&bytes, max_pixels)?;
            let (image, scale) = within_max_side(image);
            let input = detect::prepare(&image, side);
            Ok::<_, ReadError>((image, scale, input))
        })
        .await??;
        let Some(input) = input else {
            return Ok(Vec::new());
        };
        let (h, w) = (input.height, input.width);
        let map = self
            .detector
            .infer((h, w), input.data)
            .await
            .map_err(ReadError::Model)?;
        let settings = self.det;
        let image = Arc::new(image);
        let source = image.clone();
        let (quads, crops) = blocking(move || {
            let dest = source.dimensions();
            let mut quads = Vec::new();
            let mut crops = Vec::new();
            for (quad, _) in detect::regions(&map, (w, h), dest, &settings) {
                if let Some(crop) = recognize::crop(&source, &quad) {
                    quads.push(quad);
                    crops.push(crop);
                }
            }
            (quads, crops)
        })
        .await?;
        drop(image);
        let crops = self.upright(crops).await?;
        let reads = futures::future::join_all(crops.into_iter().map(|crop| async move {
            let width = recognize::rec_width(&crop);
            let input = blocking(move || recognize::rec_input(&crop, width)).await?;
            self.recognizer
                .infer(width, input)
                .await
                .map_err(ReadError::Model)
        }))
        .await;
        let mut lines = Vec::new();
        for (quad, steps) in quads.into_iter().zip(reads) {
            let (text, confidence) = self.alphabet.decode(&steps?);
            if text.trim().is_empty() || confidence < MIN_CONFIDENCE {
                continue;
            }
            lines.push(Line {
                text,
                confidence,
                quad: scaled(quad, scale),
            });
        }
        Ok(lines)
    }

    /// The crops, each turned the right way up where the classifier is
    /// sure it is upside down.
    async fn upright(&self, crops: Vec<RgbImage>) -> Result<Vec<RgbImage>, ReadError> {
        let verdicts = futures::future::join_all(crops.into_iter().map(|crop| async move {
            let crop = Arc::new(crop);
            let source = crop.clone();
            let input = blocking(move || recognize::cls_input(&source)).await?;
            let (label, p) = self
                .classifier
                .infer((), input)
                .await
                .map_err(ReadError::Model)?;
            let crop = Arc::try_unwrap(crop).unwrap_or_else(|shared| (*shared).clone());
            Ok::<_, ReadError>(if label == 1 && p > FLIP_CONFIDENCE {
                image::imageops::rotate180(&crop)
            } else {
                crop
            })
        }))
        .await;
        verdicts.into_iter().collect()
    }
}

/// Runs a batch of same-shaped inputs as one `[n, ..shape]` tensor and
/// answers the first output's data.
fn run(
    session: &mut Session,
    shape: [usize; 3],
    inputs: Vec<Vec<f32>>,
) -> Result<Vec<f32>, String> {
    let n = inputs.len();
    let mut data = Vec::with_capacity(n * shape.iter().product::<usize>());
    for input in inputs {
        data.extend_from_slice(&input);
    }
    let tensor =
        Tensor::from_array(([n, shape[0], shape[1], shape[2]], data)).map_err(|e| e.to_string())?;
    let outputs = session
        .run(ort::inputs![tensor])
        .map_err(|e| e.to_string())?;
    let (_, values) = outputs[0]
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    Ok(values.to_vec())
}

/// An image larger than `MAX_SIDE` scaled down (multiples of 32), and the
/// factor back to its own pixels.
fn within_max_side(image: RgbImage) -> (RgbImage, f32) {
    let (w, h) = image.dimensions();
    let long = w.max(h);
    if long <= MAX_SIDE {
        return (image, 1.0);
    }
    let ratio = MAX_SIDE as f32 / long as f32;
    let round32 = |v: u32| ((((v as f32 * ratio).trunc() / 32.0).round() * 32.0) as u32).max(32);
    let (rw, rh) = (round32(w), round32(h));
    let resized = image::imageops::resize(&image, rw, rh, image::imageops::FilterType::Triangle);
    (resized, w as f32 / rw as f32)
}

fn scaled(quad: Quad, scale: f32) -> Quad {
    quad.map(|[x, y]| [x * scale, y * scale])
}

/// Runs CPU-heavy work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ReadError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ReadError::Model(format!("an OCR step stopped: {e}")))
}

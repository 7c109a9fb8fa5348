//! Anomaly scoring with the ONNX model through ONNX Runtime.
//!
//! The model names its input features and its alert threshold in its own
//! metadata, so a retrained model with other features needs no code change.

use std::path::Path;
use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;
use pulse_common::event::Event;

use crate::score::model_input::Columns;
use crate::state::device::Features;

pub use pulse_common::onnx::ExecutionProvider;

pub struct Scorer {
    session: Mutex<Session>,
    columns: Columns,
    pub threshold: f32,
    pub model_version: std::sync::Arc<str>,
}

/// One event's score and verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub score: f32,
    pub is_anomaly: bool,
}

impl Scorer {
    /// Loads ONNX Runtime from `dylib` and the model from `model`.
    pub fn load(
        dylib: &Path,
        model: &Path,
        provider: ExecutionProvider,
        threads: usize,
    ) -> anyhow::Result<Self> {
        let env = pulse_common::onnx::environment(dylib, "pulse-processor")?;
        let loaded = pulse_common::onnx::load(&env, model, provider, threads)?;
        let session = loaded.session;
        let meta = session.metadata()?;
        let features: Vec<String> = meta
            .custom("features")
            .ok_or_else(|| anyhow::anyhow!("model metadata lacks 'features'"))?
            .split(',')
            .map(str::to_string)
            .collect();
        let threshold: f32 = meta
            .custom("threshold")
            .ok_or_else(|| anyhow::anyhow!("model metadata lacks 'threshold'"))?
            .parse()
            .map_err(|e| anyhow::anyhow!("model threshold: {e}"))?;
        let model_version = meta
            .custom("model_version")
            .unwrap_or_else(|| "unknown".into());
        drop(meta);
        tracing::info!(?features, threshold, %model_version, provider = loaded.provider, "model loaded");
        Ok(Self {
            session: Mutex::new(session),
            columns: Columns::new(&features),
            threshold,
            model_version: model_version.into(),
        })
    }

    /// Scores a batch of telemetry events, each with its device-history
    /// features, in one model run.
    pub fn score(&self, events: &[(&Event, &Features)]) -> anyhow::Result<Vec<Score>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut data = Vec::with_capacity(events.len() * self.columns.len());
        for (e, history) in events {
            self.columns.fill(e, history, &mut data);
        }
        let input = Tensor::from_array(([events.len(), self.columns.len()], data))?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| anyhow::anyhow!("model session poisoned"))?;
        let outputs = session.run(ort::inputs!["features" => input])?;
        let (_, scores) = outputs["score"].try_extract_tensor::<f32>()?;
        Ok(scores
            .iter()
            .map(|&score| Score {
                score,
                is_anomaly: score > self.threshold,
            })
            .collect())
    }
}

//! ONNX Runtime for every service that runs a model: one environment per
//! process, and each session on the execution provider asked for, with the
//! provider it really got said aloud rather than guessed.

use std::path::Path;

use ort::environment::Environment;
use ort::ep::ExecutionProvider as _;
use ort::session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutionProvider {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// The CUDA provider when it loads, else the CPU provider with a warning.
    Cuda,
    /// The CUDA provider or nothing: start-up fails when it cannot load, for
    /// deployments that would rather stop than run on the CPU unnoticed.
    CudaRequired,
}

/// Loads ONNX Runtime from `dylib`.
pub fn environment(dylib: &Path, name: &str) -> anyhow::Result<Environment> {
    let builder = ort::init_from(dylib)
        .map_err(|e| anyhow::anyhow!("cannot load ONNX Runtime from {}: {e}", dylib.display()))?
        .with_name(name);
    Ok(builder.build()?)
}

/// A session and the provider it runs on: `"cuda"` or `"cpu"`.
pub struct Loaded {
    pub session: Session,
    pub provider: &'static str,
}

/// Loads `model`, to run on `threads` threads of its own.
pub fn load(
    env: &Environment,
    model: &Path,
    provider: ExecutionProvider,
    threads: usize,
) -> anyhow::Result<Loaded> {
    let build = |cuda: bool| -> anyhow::Result<Session> {
        let mut builder = Session::builder(env)?
            .with_intra_threads(threads.max(1))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if cuda {
            let cuda = ort::ep::CUDA::default().build().error_on_failure();
            builder = builder
                .with_execution_providers([cuda])
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        builder
            .commit_from_file(model)
            .map_err(|e| anyhow::anyhow!("cannot load model {}: {e}", model.display()))
    };
    let (session, provider) = match provider {
        ExecutionProvider::Cpu => (build(false)?, "cpu"),
        ExecutionProvider::CudaRequired => (build(true)?, "cuda"),
        ExecutionProvider::Cuda => {
            let compiled = ort::ep::CUDA::is_available().unwrap_or(false);
            match compiled.then(|| build(true)) {
                Some(Ok(session)) => (session, "cuda"),
                failed => {
                    let why = match failed {
                        Some(Err(e)) => e.to_string(),
                        _ => "this ONNX Runtime was built without it".into(),
                    };
                    tracing::warn!(model = %model.display(), reason = %why, "CUDA provider unavailable; running on the CPU");
                    (build(false)?, "cpu")
                }
            }
        }
    };
    Ok(Loaded { session, provider })
}

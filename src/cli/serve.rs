//! `proctor serve-reference`: a model folder served as an OpenAI-compatible
//! `/v1/completions` endpoint for a reference host.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{load_rules, secret};

#[derive(clap::Args)]
pub struct Args {
    /// Model folder: config.json, *.safetensors, tokenizer.json, tokenizer_config.json.
    pub model: PathBuf,
    /// Where to listen: host (or address) and port, such as localhost:8000 or
    /// 0.0.0.0:8000.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub bind: String,
    /// Requests scored at once; more wait their turn.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Requests that may wait beyond those; one more is answered 503 at once.
    #[arg(long, default_value_t = 8)]
    pub queue: usize,
    /// A file holding the bearer token every /v1 request must carry (`-`: standard
    /// input; without it, $PROCTOR_REFERENCE_TOKEN; neither: no token asked, for a
    /// host on a private network only).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A request that takes longer than this many seconds is answered 503.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// cpu, or cuda:<n> in a build with the cuda feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Rules whose suspect panel (`[llm.panel]`) to score beside the model, from the
    /// folders beside the model's; the rules compiled into this binary by default.
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args {
        model,
        bind,
        concurrency,
        queue,
        token_file,
        timeout_secs,
        dtype,
        device,
        rules,
    } = args;
    proctor::telemetry::init_logging();
    let token = secret::read(token_file.as_deref(), "PROCTOR_REFERENCE_TOKEN")?;
    let numerics = proctor::llm::model::Numerics::parse(&dtype, "f32")
        .map_err(|e| anyhow::anyhow!("--dtype {dtype}: {e}"))?;
    let device = proctor::llm::device(&device)?;
    let mut scorer = proctor::llm::Scorer::load(&model, numerics, &device)
        .with_context(|| format!("cannot load the model in {}", model.display()))?;
    let rules = load_rules(rules.as_deref())?;
    scorer.panel = proctor::llm::panel::Panel::beside(
        &scorer,
        &rules.checks.llm.panel,
        &model,
        numerics,
        &device,
    );
    let opts = proctor::llm::serve::ServeOptions {
        concurrency,
        queue,
        timeout: std::time::Duration::from_secs(timeout_secs),
        token,
    };
    tokio::runtime::Runtime::new()?.block_on(proctor::llm::serve::serve(scorer, &bind, &opts))?;
    Ok(ExitCode::SUCCESS)
}

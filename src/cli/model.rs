//! The model-file commands: `proctor challenge` (a byte-range challenge answered from a
//! file), `convert-gguf`, `derive-model` and `verify-model`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use proctor::checks::model_file;
use proctor::hashing;
use proctor::outcome::Outcome;

use super::{finding_if, load_rules};

#[derive(clap::Args)]
pub struct ChallengeArgs {
    /// The model file on disk.
    pub file: PathBuf,
    /// The file name as the registry and the challenge name it.
    #[arg(long)]
    pub name: String,
    /// The challenge nonce, hex.
    #[arg(long)]
    pub nonce: String,
    /// Rules folder; the rules compiled into this binary by default.
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

pub fn challenge(args: ChallengeArgs) -> Result<ExitCode> {
    let ChallengeArgs {
        file,
        name,
        nonce,
        rules,
    } = args;
    let rules = load_rules(rules.as_deref())?;
    let exp = model_file::answer_file(&file, &name, &nonce, &rules.checks.challenge)
        .with_context(|| format!("cannot answer from {}", file.display()))?;
    println!("{}", serde_json::to_string_pretty(&exp)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct ConvertGgufArgs {
    /// The .gguf file.
    pub gguf: PathBuf,
    /// The folder to write; its name is the model id the scorer reports.
    pub out: PathBuf,
}

pub fn convert_gguf(args: ConvertGgufArgs) -> Result<ExitCode> {
    let ConvertGgufArgs { gguf, out } = args;
    let c = proctor::llm::gguf::convert(&gguf, &out)?;
    println!(
        "{}: {} layers, {} tokens, {} parameters{}",
        out.display(),
        c.layers,
        c.vocab,
        c.parameters,
        if c.tied { ", tied embedding" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct DeriveModelArgs {
    /// The reference model's folder.
    pub reference: PathBuf,
    /// The folder to write; its name is the model id the scorer reports.
    pub out: PathBuf,
    /// A smaller model: this many decoder layers removed, evenly over the interior.
    #[arg(long, conflicts_with_all = ["quantize", "perturb"])]
    pub drop_layers: Option<usize>,
    /// Every weight matrix quantized to this many bits (per-row absmax).
    #[arg(long, conflicts_with = "perturb")]
    pub quantize: Option<u32>,
    /// Another finetune: noise of this share of each matrix's RMS on every matrix.
    #[arg(long)]
    pub perturb: Option<f64>,
    /// The perturbation's seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn derive_model(args: DeriveModelArgs) -> Result<ExitCode> {
    let DeriveModelArgs {
        reference,
        out,
        drop_layers,
        quantize,
        perturb,
        seed,
    } = args;
    use proctor::llm::derive::{Derivation, derive};
    let how = match (drop_layers, quantize, perturb) {
        (Some(layers), None, None) => Derivation::DropLayers { layers },
        (None, Some(bits), None) => Derivation::Quantize { bits },
        (None, None, Some(scale)) => Derivation::Perturb { scale, seed },
        _ => bail!("give one of --drop-layers, --quantize or --perturb"),
    };
    let d = derive(&reference, &out, how)?;
    println!(
        "{}: {} layers, {} parameters",
        out.display(),
        d.layers,
        d.parameters
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct VerifyModelArgs {
    /// The model id in rules/models.toml.
    #[arg(long)]
    pub model: String,
    /// The model's files on disk, named as the registry names them.
    pub files: Vec<PathBuf>,
    /// Rules folder; the rules compiled into this binary by default.
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

pub fn verify_model(args: VerifyModelArgs) -> Result<ExitCode> {
    let VerifyModelArgs {
        model,
        files,
        rules,
    } = args;
    let rules = load_rules(rules.as_deref())?;
    if rules.model(&model).is_none() {
        bail!("model {model} is not in the registry");
    }
    let registered = rules.model_files(&model);
    let mut all_ok = true;
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(entry) = registered.iter().find(|e| e.name == name) else {
            println!("{}: not a registered file of {model}", f.display());
            all_ok = false;
            continue;
        };
        let digests =
            hashing::digest_file(f).with_context(|| format!("cannot hash {}", f.display()))?;
        match model_file::check_file(&digests, entry) {
            Outcome::Pass { .. } => println!("{}: OK", f.display()),
            Outcome::Fail { evidence } => {
                println!("{}: FAILED: {}", f.display(), evidence.summary);
                all_ok = false;
            }
            Outcome::Inconclusive { reason } => println!("{}: {reason}", f.display()),
        }
    }
    if registered.is_empty() {
        eprintln!("proctor: the registry lists no files for {model} yet");
        all_ok = false;
    }
    Ok(finding_if(!all_ok))
}

//! `proctor calibrate`: thresholds from labelled pairs, with the rates they measure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use proctor::calibrate;

use super::load_rules;

#[derive(clap::Args)]
pub struct Args {
    /// Rules to calibrate against (target rate, fixed limits); embedded by default.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Write the thresholds and measured false-positive bounds into this rules folder.
    #[arg(long)]
    pub write_rules: Option<PathBuf>,
    /// With --write-rules: keep, of each LLM threshold and drift allowance, the more
    /// lenient of the rules' value and this run's (a second reference model's run,
    /// while one set of thresholds serves every model). Rates are this run's.
    #[arg(long, requires = "write_rules")]
    pub lenient: bool,
    /// Where to write detection.md, calibration.json and roc.png.
    #[arg(long, default_value = "calibration-out")]
    pub out: PathBuf,
    /// Calibrate only this check family (all three by default).
    #[arg(long, value_parser = ["image", "llm", "latency"])]
    pub only: Option<String>,
    /// Photos the image pairs are cut from.
    #[arg(long, default_value = "../shared/images")]
    pub images: PathBuf,
    /// The network's models (ids or categories) whose honest outputs --images
    /// holds, comma-separated: the image rate slashes on these only. None by
    /// default: photographs are no model's outputs, and a rate measured on them
    /// can only flag.
    #[arg(long, value_delimiter = ',')]
    pub image_models: Vec<String>,
    /// Side of each reference image, in pixels.
    #[arg(long, default_value_t = 256)]
    pub image_side: u32,
    /// Image jobs; each gives one pair per cheat.
    #[arg(long, default_value_t = 1000)]
    pub image_jobs: usize,
    /// Honest pairs per image job.
    #[arg(long, default_value_t = 4)]
    pub image_honest_per_job: usize,
    /// The reference LLM's folder.
    #[arg(long, default_value = "fixtures/models/tiny-alice")]
    pub llm_reference: PathBuf,
    /// The network's models (ids or categories) --llm-reference is, comma-separated:
    /// the LLM rates slash on these only. By default the reference folder's name,
    /// which slashes on no network model unless it is one's id.
    #[arg(long, value_delimiter = ',')]
    pub llm_models: Vec<String>,
    /// A model of the same architecture, for the substitution cheats.
    #[arg(long, default_value = "fixtures/models/tiny-alice-alt")]
    pub llm_substitute: PathBuf,
    /// A smaller model of the same family (`proctor derive-model --drop-layers`),
    /// for the smaller-model cheat; none by default.
    #[arg(long)]
    pub llm_smaller: Option<PathBuf>,
    /// Plain text the prompts and canned answers come from.
    #[arg(long, default_value = "fixtures/text/alice29.txt")]
    pub corpus: PathBuf,
    /// Honest texts at the sampled temperatures (0.5, 0.7, 1.0).
    #[arg(long, default_value_t = 4000)]
    pub llm_honest: usize,
    /// Honest texts at greedy and near-greedy temperatures (0, 0.2).
    #[arg(long, default_value_t = 1000)]
    pub llm_honest_greedy: usize,
    /// Cheating texts per LLM cheat (substitute, spoof, quantized, hotter, canned).
    #[arg(long, default_value_t = 400)]
    pub llm_per_cheat: usize,
    /// Output tokens per LLM job: the detection window.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// A JSON-lines file of the LLM pairs, written as each batch of 16 is scored
    /// and read back on the next run with the same options: an interrupted
    /// calibration resumes where it stopped.
    #[arg(long)]
    pub llm_records: Option<PathBuf>,
    /// Seed of every random draw: the same seed gives the same tables.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Published honest GPU timings, for the latency checks.
    #[arg(long, default_value = "fixtures/gpu-timings.toml")]
    pub timings: PathBuf,
    /// Simulated miners per LLM variant in the suspect panel's per-miner table.
    #[arg(long, default_value_t = 1000)]
    pub panel_miners: usize,
    /// The most sampled jobs each simulated miner is followed for.
    #[arg(long, default_value_t = 100)]
    pub panel_max_jobs: usize,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args {
        rules,
        write_rules,
        lenient,
        out,
        only,
        images,
        image_models,
        image_side,
        image_jobs,
        image_honest_per_job,
        llm_reference,
        llm_models,
        llm_substitute,
        llm_smaller,
        corpus,
        llm_honest,
        llm_honest_greedy,
        llm_per_cheat,
        max_tokens,
        llm_records,
        seed,
        timings,
        panel_miners,
        panel_max_jobs,
    } = args;
    let rules = load_rules(rules.as_deref())?;
    let wants = |what: &str| only.as_deref().is_none_or(|o| o == what);
    let opts = calibrate::Options {
        image: wants("image").then_some(calibrate::image::ImageOptions {
            dir: images,
            side: image_side,
            references: image_jobs,
            honest_per_reference: image_honest_per_job,
            seed,
            models: image_models,
        }),
        llm: wants("llm").then_some(calibrate::llm::LlmOptions {
            models: if llm_models.is_empty() {
                calibrate::llm::models_of(&llm_reference)
            } else {
                llm_models
            },
            reference: llm_reference,
            substitute: llm_substitute,
            smaller: llm_smaller,
            corpus,
            honest: llm_honest,
            honest_greedy: llm_honest_greedy,
            per_cheat: llm_per_cheat,
            max_tokens,
            seed,
            panel: rules.checks.llm.panel.clone(),
            records: llm_records,
        }),
        latency: wants("latency").then_some(timings),
        miners: panel_miners,
        max_jobs: panel_max_jobs,
    };
    let result = calibrate::run(&opts, &rules, &|msg| eprintln!("calibrate: {msg}"))?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let table = result.markdown();
    std::fs::write(out.join("detection.md"), &table)?;
    std::fs::write(
        out.join("calibration.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    let reports: Vec<&calibrate::CheckReport> = result.checks.iter().collect();
    if !calibrate::plot::roc_png(&out.join("roc.png"), &reports)? {
        eprintln!("calibrate: no TrueType font found (set PROCTOR_FONT); roc.png has no text");
    }
    print!("{table}");
    eprintln!(
        "calibrate: wrote detection.md, calibration.json and roc.png to {}",
        out.display()
    );
    if let Some(dir) = write_rules {
        let provenance = calibrate::Provenance::of_this_run();
        calibrate::write_rules(&dir, &result, &provenance, lenient)?;
        eprintln!("calibrate: updated {}", dir.join("checks.toml").display());
    }
    Ok(ExitCode::SUCCESS)
}

//! `proctor image-diff`: the image check on one pair of files, as JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use proctor::checks::image;
use proctor::outcome::Outcome;

use super::{finding_if, load_rules};

#[derive(clap::Args)]
pub struct Args {
    /// The image under test (the miner's).
    pub candidate: PathBuf,
    /// The reference image.
    pub reference: PathBuf,
    /// Rules folder; the rules compiled into this binary by default.
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args {
        candidate,
        reference,
        rules,
    } = args;
    let rules = load_rules(rules.as_deref())?;
    let im = &rules.checks.image;
    let read = |p: &Path| -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
        std::io::Read::read_to_end(
            &mut std::io::Read::take(f, im.max_object_bytes + 1),
            &mut buf,
        )?;
        Ok(buf)
    };
    let (a, b) = (read(&candidate)?, read(&reference)?);
    let report = match (image::decode(&a, im), image::decode(&b, im)) {
        (Err(e), _) => {
            serde_json::json!({"verdict": "invalid", "invalid": "candidate", "error": e.to_string()})
        }
        (_, Err(e)) => {
            serde_json::json!({"verdict": "invalid", "invalid": "reference", "error": e.to_string()})
        }
        (Ok(ca), Ok(re)) => {
            let sim = image::measure(&ca, &re, im);
            let outcome = image::apply_thresholds(&sim, im);
            let mut v = serde_json::to_value(&sim)?;
            v["verdict"] = if outcome.is_fail() { "fail" } else { "pass" }.into();
            v["thresholds"] = serde_json::json!({
                "phash_max_distance": im.phash_max_distance,
                "dhash_max_distance": im.dhash_max_distance,
                "ssim_min": im.ssim_min,
                "detail_ratio_min": im.detail_ratio_min,
            });
            if let Outcome::Fail { evidence } = outcome {
                v["reason"] = evidence.summary.into();
            }
            v
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(finding_if(report["verdict"] != "pass"))
}

//! Reading an audit folder (docs/audit-folder.md): records' objects, references and
//! wallets, every read bounded by the rules' size limits.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::checks::{Fetched, Object};
use crate::ids::JobId;
use crate::record::{Job, JobRecord};
use crate::report;
use crate::rules::Rules;

/// `DIR/wallets.json`, optional: `{"0x<address>": <NFTs held>}`. Without it no GPU is
/// boosted.
pub fn read_wallets(dir: &Path) -> Result<BTreeMap<String, u32>> {
    let path = dir.join("wallets.json");
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let raw: BTreeMap<String, u32> = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("{} must map wallet addresses to NFT counts", path.display()))?;
    // Addresses compare case-insensitively, like miner ids.
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect())
}

/// Reads at most `limit + 1` bytes, so an oversized object costs bounded memory and is
/// still recognisable as oversized.
fn read_bounded(path: &Path, limit: u64) -> Object {
    match File::open(path) {
        Err(e) => Object::Missing(format!("{}: {e}", path.display())),
        Ok(f) => {
            let mut buf = Vec::new();
            match f.take(limit + 1).read_to_end(&mut buf) {
                Ok(_) => Object::Found(buf),
                Err(e) => Object::Missing(format!("{}: {e}", path.display())),
            }
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    // A reference file that is absent means "not re-run"; one that does not parse is our
    // own reference host's bug. Either way the comparison is simply not made.
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("warning: ignoring {}: {e}", path.display());
            None
        }
    }
}

/// An audit folder as the report's source.
pub struct Folder<'a>(pub &'a Path);

impl report::Source for Folder<'_> {
    fn output(&self, key: &str) -> Option<PathBuf> {
        Some(self.0.join("objects").join(key))
    }

    fn reference_image(&self, job: &JobId) -> Option<PathBuf> {
        reference_image_path(self.0, job.as_str())
    }

    fn scores(&self, job: &JobId) -> Option<crate::checks::llm::TokenScores> {
        read_json(
            &self
                .0
                .join("reference")
                .join(job.as_str())
                .join("scores.json"),
        )
    }
}

/// Where the reference image of a job lies, if there is one.
pub fn reference_image_path(dir: &Path, job_id: &str) -> Option<PathBuf> {
    ["image.png", "image.jpg"]
        .iter()
        .map(|n| dir.join("reference").join(job_id).join(n))
        .find(|p| p.is_file())
}

/// Reads what `Checker::evaluate` needs for one job from an audit folder.
pub fn fetch(dir: &Path, record: &JobRecord, rules: &Rules) -> Fetched {
    let objects = dir.join("objects");
    let reference = dir.join("reference").join(record.job_id.as_str());
    let output = match &record.job {
        Job::Sd { output, .. } => Some(read_bounded(
            &objects.join(output.image_key.as_str()),
            rules.checks.image.max_object_bytes,
        )),
        Job::Llm { output, .. } => output
            .text_key
            .as_ref()
            .map(|k| read_bounded(&objects.join(k.as_str()), rules.checks.llm.max_text_bytes)),
    };
    let reference_image = reference_image_path(dir, record.job_id.as_str()).and_then(|p| {
        match read_bounded(&p, rules.checks.image.max_object_bytes) {
            Object::Found(b) => Some(b),
            Object::Missing(_) => None,
        }
    });
    Fetched {
        output,
        reference_image,
        scores: read_json(&reference.join("scores.json")),
        challenge: read_json(&reference.join("challenge.json")),
        reference_note: None,
        decoded: None,
    }
}

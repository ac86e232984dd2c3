//! The offline judgement: `proctor audit DIR` runs every check and the decision engine
//! over a folder, with no services around it.
//!
//! ```text
//! DIR/jobs.jsonl                      one job record per line, in the order sent
//! DIR/objects/<s3 key>                miner outputs, laid out by S3 key
//! DIR/reference/<job_id>/image.png    the reference GPU's image (or image.jpg)
//! DIR/reference/<job_id>/scores.json  the reference model's token scores
//! DIR/reference/<job_id>/challenge.json  the reference host's challenge answer
//! DIR/wallets.json                    optional: NFTs held per wallet, for slash amounts
//! ```
//!
//! This module is the edge: it reads files (every read bounded by the rules' size
//! limits), hands bytes to the pure checks, and writes `verdicts.jsonl`,
//! `decisions.jsonl`, `slashes.jsonl`, `rejected.jsonl` and `report.html`. The pipeline
//! workers do the same with S3 and Kafka around the same library, and both decide
//! through `case::decide` (the window, stage precedence), so the two agree.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::case::Reruns;
use crate::checks::{JobVerdict, Verdict};
use crate::decide::{Action, Decision};
use crate::ids::MinerId;
use crate::record::JobRecord;
use crate::report;
use crate::rules::Rules;
use crate::sampling::SamplingSecret;

mod folder;
mod shown;
mod spill;
mod stream;
mod summary;

pub use folder::{Folder, fetch, read_wallets, reference_image_path};
pub use shown::REPORT_JOBS_PER_MINER;
use shown::shown_jobs;
pub use stream::{judge_dir, judge_streaming};
pub use summary::summary;

pub struct AuditOptions {
    pub dir: PathBuf,
    pub out: PathBuf,
    pub sampling_secret: SamplingSecret,
    /// Which references count: those of drawn jobs, or every one in the folder.
    pub reruns: Reruns,
    /// When set, slashes are also written as signed ledger events (`events.jsonl`).
    pub signing_key: Option<ed25519_dalek::SigningKey>,
    pub progress: bool,
    /// The most jobs of one miner the report shows ([`REPORT_JOBS_PER_MINER`]).
    pub report_jobs_per_miner: usize,
}

/// A line of `jobs.jsonl` that is not a valid record: the job service's fault, kept
/// with its reason (the pipeline sends these to the dead-letter topic).
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub line: usize,
    pub error: String,
}

#[derive(Debug)]
pub struct AuditResult {
    pub rules_digest: String,
    pub verdicts: Vec<JobVerdict>,
    pub rejected: Vec<Rejected>,
    pub decisions: Vec<Decision>,
    /// The signed ledger events of the slashes, when a signing key was given.
    pub events: Vec<crate::events::SignedEvent>,
    /// The valid records, in the file's order (`verdicts` is in the same order).
    pub records: Vec<JobRecord>,
    /// NFTs held per wallet (`wallets.json`).
    pub nfts: BTreeMap<String, u32>,
    /// Each miner's points factor (NFT boost).
    pub factors: BTreeMap<String, f64>,
    /// The honest probability at or below which a miner is slashed automatically, and
    /// the one below which it is flagged for review (the rules').
    pub slash_threshold: f64,
    pub review_threshold: f64,
}

impl AuditResult {
    pub fn decision(&self, miner: &MinerId) -> Option<&Decision> {
        self.decisions.iter().find(|d| &d.miner_id == miner)
    }
}

/// What an audit found, without its verdicts: they went to the sink as they were
/// judged.
#[derive(Debug, Default)]
pub struct Findings {
    pub rules_digest: String,
    pub rejected: Vec<Rejected>,
    pub decisions: Vec<Decision>,
    /// The signed ledger events of the slashes, when a signing key was given.
    pub events: Vec<crate::events::SignedEvent>,
    /// NFTs held per wallet (`wallets.json`).
    pub nfts: BTreeMap<String, u32>,
    /// Each miner's points factor (NFT boost).
    pub factors: BTreeMap<String, f64>,
    pub slash_threshold: f64,
    pub review_threshold: f64,
    /// Jobs judged, per verdict.
    pub verdict_counts: BTreeMap<Verdict, u64>,
    /// Per miner: jobs judged, and of them failed or invalid.
    pub miner_counts: BTreeMap<MinerId, (u64, u64)>,
}

impl Findings {
    pub fn jobs(&self) -> u64 {
        self.verdict_counts.values().sum()
    }

    pub fn count(&self, verdict: Verdict) -> u64 {
        self.verdict_counts.get(&verdict).copied().unwrap_or(0)
    }
}

fn write_jsonl<T: Serialize>(path: &Path, items: impl IntoIterator<Item = T>) -> Result<()> {
    let mut w = BufWriter::new(
        File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    for item in items {
        serde_json::to_writer(&mut w, &item)?;
        w.write_all(b"\n")?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Runs the audit and writes its outputs as it goes; returns what the summary needs.
/// `verdicts.jsonl` is written as jobs are judged; the report reads back only the jobs
/// of the miners it shows.
pub fn run(opts: &AuditOptions, rules: Rules) -> Result<Findings> {
    let report_rules = rules.clone();
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let verdicts_path = opts.out.join("verdicts.jsonl");
    let mut verdicts = BufWriter::new(
        File::create(&verdicts_path)
            .with_context(|| format!("cannot create {}", verdicts_path.display()))?,
    );
    let judged = judge_streaming(
        &opts.dir,
        rules,
        &opts.sampling_secret,
        opts.reruns,
        opts.signing_key.as_ref(),
        opts.progress,
        |_, v, _| {
            serde_json::to_writer(&mut verdicts, v)?;
            verdicts.write_all(b"\n")?;
            Ok(())
        },
    )?;
    verdicts
        .flush()
        .with_context(|| format!("cannot write {}", verdicts_path.display()))?;
    drop(verdicts);
    write_jsonl(&opts.out.join("rejected.jsonl"), &judged.rejected)?;
    write_jsonl(
        &opts.out.join("decisions.jsonl"),
        judged.decisions.iter().filter(|d| d.action != Action::None),
    )?;
    write_jsonl(
        &opts.out.join("slashes.jsonl"),
        judged.decisions.iter().filter_map(|d| d.slash.as_ref()),
    )?;
    if opts.signing_key.is_some() {
        write_jsonl(&opts.out.join("events.jsonl"), &judged.events)?;
    }
    let shown = shown_jobs(
        &opts.dir,
        &verdicts_path,
        &judged,
        opts.report_jobs_per_miner,
    )?;
    let page = report::Page {
        rules_digest: &judged.rules_digest,
        jobs: shown.jobs.iter().map(|(r, v)| (r, v.as_ref())).collect(),
        total_jobs: judged.jobs(),
        total_miners: judged.miner_counts.len(),
        omitted: &shown.omitted,
        decisions: &judged.decisions,
        nfts: &judged.nfts,
        factors: &judged.factors,
        rejected: judged
            .rejected
            .iter()
            .map(|r| (r.line, r.error.as_str()))
            .collect(),
    };
    report::write(&opts.out, &page, &Folder(&opts.dir), &report_rules)?;
    Ok(judged)
}

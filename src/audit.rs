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
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::case::Reruns;
use crate::case::{self, History, Stage, StagedVerdict};
use crate::checks::{Checker, Fetched, JobVerdict, Object, Stream, StreamState, Verdict};
use crate::decide::{Action, Decision};
use crate::ids::{JobId, MinerId};
use crate::record::{Job, JobRecord};
use crate::report;
use crate::rules::Rules;
use crate::sampling::SamplingSecret;

pub struct AuditOptions {
    pub dir: PathBuf,
    pub out: PathBuf,
    pub sampling_secret: SamplingSecret,
    /// Which references count: those of drawn jobs, or every one in the folder.
    pub reruns: Reruns,
    /// When set, slashes are also written as signed ledger events (`events.jsonl`).
    pub signing_key: Option<ed25519_dalek::SigningKey>,
    pub progress: bool,
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

/// The audit's evidence and ledger: the folder's verdicts, judged in memory, and the
/// entries decided over them. No earlier slash covers any job of a folder.
#[derive(Default)]
struct Ledger {
    verdicts: BTreeMap<MinerId, Vec<StagedVerdict>>,
    factors: BTreeMap<MinerId, f64>,
    entries: std::sync::Mutex<Vec<case::Entry>>,
}

impl case::Evidence for Ledger {
    type Error = std::convert::Infallible;

    async fn history(&self, miner: &MinerId, _: &Rules) -> Result<History, Self::Error> {
        Ok(History {
            verdicts: self.verdicts.get(miner).cloned().unwrap_or_default(),
            slashed_jobs: Default::default(),
            points_factor: self.factors.get(miner).copied().unwrap_or(1.0),
        })
    }
}

impl case::Ledger for Ledger {
    type Error = serde_json::Error;

    async fn decide<F>(
        &self,
        miner: &MinerId,
        rules: &Rules,
        points_factor: f64,
        decide: F,
    ) -> Result<case::MinerCase, serde_json::Error>
    where
        F: FnOnce(History) -> Result<case::Entry, serde_json::Error> + Send,
    {
        let Ok(mut history) = case::Evidence::history(self, miner, rules).await;
        history.points_factor = points_factor;
        let entry = decide(history)?;
        let case = entry.case.clone();
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(entry);
        Ok(case)
    }
}

impl AuditResult {
    pub fn decision(&self, miner: &MinerId) -> Option<&Decision> {
        self.decisions.iter().find(|d| &d.miner_id == miner)
    }
}

/// Reads the folder, judges every job and decides on every miner. Writes nothing.
pub fn judge_dir(
    dir: &Path,
    rules: Rules,
    secret: &SamplingSecret,
    reruns: Reruns,
    key: Option<&ed25519_dalek::SigningKey>,
    progress: bool,
) -> Result<AuditResult> {
    let jobs_path = dir.join("jobs.jsonl");
    let file =
        File::open(&jobs_path).with_context(|| format!("cannot open {}", jobs_path.display()))?;
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.with_context(|| format!("cannot read {}", jobs_path.display()))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match JobRecord::from_json(&line) {
            Ok(r) => records.push(r),
            Err(e) => rejected.push(Rejected {
                line: i + 1,
                error: e.to_string(),
            }),
        }
    }
    // Judge in the file's order, the order the job service sent the records: the
    // screen worker sees each miner's jobs in that order, and the draw (which rises
    // with the miner's earlier screen failures) and the reuse index depend on it.

    let checker = Checker::new(rules)?;
    let mut stream = StreamState::new();
    let bar = if progress {
        indicatif::ProgressBar::new(records.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} judging jobs {bar:40} {pos}/{len} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut sampler = case::Sampler::new(checker.rules(), secret, BTreeMap::new());
    let mut verdicts = Vec::with_capacity(records.len());
    let mut stages = Vec::with_capacity(records.len());
    for record in &records {
        // The two stages, as the workers run them: screen without any reference, the
        // draw, then the re-run with the reference where it counts.
        let mut fetched = fetch(dir, record, checker.rules());
        crate::checks::prepare(checker.rules(), record, &mut fetched);
        let has_reference = fetched.reference_image.is_some()
            || fetched.scores.is_some()
            || fetched.challenge.is_some();
        // Screen sees no reference: set them aside, and back for the re-run.
        let references = (
            fetched.reference_image.take(),
            fetched.scores.take(),
            fetched.challenge.take(),
        );
        let mut screen = checker.evaluate(record, &fetched, Stream::Live(&mut stream));
        screen.sampled = sampler.draw(&screen);
        (fetched.reference_image, fetched.scores, fetched.challenge) = references;
        if reruns.counts(screen.sampled, has_reference) {
            let mut v = checker.evaluate(record, &fetched, Stream::Keep(&screen));
            // Re-run means sampled, whichever rule chose it.
            v.sampled = true;
            verdicts.push(v);
            stages.push(Stage::Rerun);
        } else {
            verdicts.push(screen);
            stages.push(Stage::Screen);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut ledger = Ledger::default();
    for (v, stage) in verdicts.iter().zip(stages) {
        ledger
            .verdicts
            .entry(v.miner_id.clone())
            .or_default()
            .push(StagedVerdict {
                stage,
                verdict: v.clone(),
            });
    }
    let nfts = read_wallets(dir)?;
    let miners: Vec<MinerId> = ledger.verdicts.keys().cloned().collect();
    for miner in &miners {
        let factor = crate::points::wallet_boost(
            checker.rules(),
            miner,
            &miners,
            nfts.get(miner.wallet()).copied(),
        );
        ledger.factors.insert(miner.clone(), factor);
    }
    let factors = ledger
        .factors
        .iter()
        .map(|(m, f)| (m.to_string(), *f))
        .collect();
    let rules = checker.rules();
    let mut decisions = Vec::with_capacity(miners.len());
    for miner in &miners {
        // The ledger answers at once: the future is ready when first polled.
        let case = futures::executor::block_on(case::Ledger::decide(
            &ledger,
            miner,
            rules,
            ledger.factors[miner],
            |history| case::entry(miner, history, rules, key),
        ))
        .context("cannot sign a slash event")?;
        decisions.push(case.decision);
    }
    let events = ledger
        .entries
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .filter_map(|e| e.event)
        .collect();
    Ok(AuditResult {
        slash_threshold: rules.auto_slash_threshold(),
        review_threshold: rules.slashing.review_max_honest_probability,
        rules_digest: checker.rules_digest().to_owned(),
        verdicts,
        rejected,
        decisions,
        events,
        records,
        nfts,
        factors,
    })
}

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

/// Runs the audit and writes its outputs; returns the result for the summary.
pub fn run(opts: &AuditOptions, rules: Rules) -> Result<AuditResult> {
    let report_rules = rules.clone();
    let result = judge_dir(
        &opts.dir,
        rules,
        &opts.sampling_secret,
        opts.reruns,
        opts.signing_key.as_ref(),
        opts.progress,
    )?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    write_jsonl(&opts.out.join("verdicts.jsonl"), &result.verdicts)?;
    write_jsonl(&opts.out.join("rejected.jsonl"), &result.rejected)?;
    write_jsonl(
        &opts.out.join("decisions.jsonl"),
        result.decisions.iter().filter(|d| d.action != Action::None),
    )?;
    write_jsonl(
        &opts.out.join("slashes.jsonl"),
        result.decisions.iter().filter_map(|d| d.slash.as_ref()),
    )?;
    if opts.signing_key.is_some() {
        write_jsonl(&opts.out.join("events.jsonl"), &result.events)?;
    }
    let page = report::Page {
        rules_digest: &result.rules_digest,
        jobs: result
            .records
            .iter()
            .zip(&result.verdicts)
            .map(|(r, v)| (r, Some(v)))
            .collect(),
        decisions: &result.decisions,
        nfts: &result.nfts,
        factors: &result.factors,
        rejected: result
            .rejected
            .iter()
            .map(|r| (r.line, r.error.as_str()))
            .collect(),
    };
    report::write(&opts.out, &page, &Folder(&opts.dir), &report_rules)?;
    Ok(result)
}

/// The stdout summary: verdict counts and one row per miner with an action.
pub fn summary(result: &AuditResult) -> String {
    let mut s = String::new();
    let count = |v: Verdict| result.verdicts.iter().filter(|x| x.verdict == v).count();
    s.push_str(&format!(
        "proctor audit: {} jobs judged, {} records rejected, rules {}\n",
        result.verdicts.len(),
        result.rejected.len(),
        &result.rules_digest[..16]
    ));
    s.push_str(&format!(
        "verdicts: {} pass, {} fail, {} invalid, {} inconclusive\n",
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Invalid),
        count(Verdict::Inconclusive)
    ));
    // Why records were rejected: they are the job service's fault, not a miner's.
    const SHOWN: usize = 5;
    for r in result.rejected.iter().take(SHOWN) {
        s.push_str(&format!(
            "  rejected line {}: {}\n",
            r.line,
            clip(&r.error, SUMMARY_WIDTH - 20)
        ));
    }
    if result.rejected.len() > SHOWN {
        s.push_str(&format!(
            "  … and {} more (rejected.jsonl)\n",
            result.rejected.len() - SHOWN
        ));
    }
    s.push_str(&format!(
        "\n{:<22} {:>4} {:>6}  {:<7} {:>12}  failed checks\n",
        "miner", "jobs", "failed", "action", "if honest"
    ));
    let mut rows: Vec<&Decision> = result.decisions.iter().collect();
    rows.sort_by_key(|d| {
        (
            d.action != Action::Slash,
            d.action != Action::FlagForReview,
            d.miner_id.to_string(),
        )
    });
    for d in rows {
        let jobs: Vec<&JobVerdict> = result
            .verdicts
            .iter()
            .filter(|v| v.miner_id == d.miner_id)
            .collect();
        let failed = jobs
            .iter()
            .filter(|v| matches!(v.verdict, Verdict::Fail | Verdict::Invalid))
            .count();
        let (action, p) = match d.action {
            Action::None => ("-", None),
            Action::FlagForReview => ("flag", Some(d.review_probability)),
            Action::Slash => ("SLASH", Some(d.honest_probability)),
        };
        let checks: Vec<&str> = d.tallies.iter().map(|t| t.check.as_str()).collect();
        let line = format!(
            "{:<22} {:>4} {:>6}  {:<7} {:>12}  {}",
            short_miner(&d.miner_id.to_string()),
            jobs.len(),
            failed,
            action,
            p.map_or("-".to_owned(), odds),
            checks.join(", ")
        );
        s.push_str(&clip(&line, SUMMARY_WIDTH));
        s.push('\n');
    }
    s.push_str(&format!(
        "\nif honest: how rarely an honest miner shows evidence this strong. A slash needs rarer\n\
         than {} (from checks whose false-positive rate was measured), a flag for staff\n\
         review rarer than {} (from any check). Miner ids are shortened; decisions.jsonl,\n\
         slashes.jsonl and report.html have them whole, with the amounts and the evidence.\n",
        odds(result.slash_threshold),
        odds(result.review_threshold)
    ));
    s
}

/// The summary's width: it fits a 100-column terminal.
const SUMMARY_WIDTH: usize = 100;

/// A probability as odds a reader can compare: `1 in 1.5e12`, `1 in 350`.
fn odds(p: f64) -> String {
    if p.is_nan() || p <= 0.0 {
        return "1 in ∞".into();
    }
    if p >= 1.0 {
        return "always".into();
    }
    let n = 1.0 / p;
    if n < 1e4 {
        format!("1 in {n:.0}")
    } else {
        format!("1 in {n:.1e}")
    }
}

/// `0xe82a3a…46bd6dc-gpu0`: a wallet miner id shortened for a table; others as they are
/// when short.
fn short_miner(id: &str) -> String {
    let (wallet, gpu) = id.split_once('-').unwrap_or((id, ""));
    let short = if wallet.len() > 14
        && wallet.is_char_boundary(8)
        && wallet.is_char_boundary(wallet.len() - 6)
    {
        format!("{}…{}", &wallet[..8], &wallet[wallet.len() - 6..])
    } else {
        wallet.to_owned()
    };
    let whole = if gpu.is_empty() {
        short
    } else {
        format!("{short}-{gpu}")
    };
    clip(&whole, 22)
}

/// At most `n` characters, the last an ellipsis when cut.
fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

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
use crate::outcome::{CheckId, Outcome};
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

/// What the audit holds of a judged job until every miner is decided: where the
/// job's verdict, cut to what a decision reads, lies in the spill file. A million jobs
/// keep 16 MB of these; their verdicts wait on disk.
struct Spilled {
    offset: u64,
    len: u32,
    stage: Stage,
}

/// The verdicts of every miner, grouped by miner on disk: an unnamed temporary file
/// written as jobs are judged, read back one miner at a time when deciding.
struct Spill {
    file: BufWriter<File>,
    end: u64,
    by_miner: BTreeMap<MinerId, Vec<Spilled>>,
}

impl Spill {
    fn new() -> Result<Spill> {
        let file = tempfile::tempfile().context("cannot create the audit's spill file")?;
        Ok(Spill {
            file: BufWriter::with_capacity(1 << 20, file),
            end: 0,
            by_miner: BTreeMap::new(),
        })
    }

    fn push(&mut self, verdict: &JobVerdict, stage: Stage) -> Result<()> {
        let line = serde_json::to_vec(&for_decision(verdict))?;
        self.file
            .write_all(&line)
            .context("cannot write the audit's spill file")?;
        self.by_miner
            .entry(verdict.miner_id.clone())
            .or_default()
            .push(Spilled {
                offset: self.end,
                len: u32::try_from(line.len()).context("a verdict over 4 GiB")?,
                stage,
            });
        self.end += line.len() as u64;
        Ok(())
    }

    /// The ledger to decide from: the spill file, flushed, and its index.
    fn into_ledger(self, factors: BTreeMap<MinerId, f64>) -> Result<Ledger> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| e.into_error())
            .context("cannot write the audit's spill file")?;
        Ok(Ledger {
            file,
            by_miner: self.by_miner,
            factors,
            entries: std::sync::Mutex::new(Vec::new()),
        })
    }
}

/// A verdict cut to what `case::decide` reads: outcomes, evidence summaries, points,
/// ids and the rules digest (slash records carry it). The measured numbers of passing checks and the details of failures are for the
/// reader of `verdicts.jsonl` and the report; the suspect panel's, which a decision sums
/// across jobs, stay.
fn for_decision(v: &JobVerdict) -> JobVerdict {
    let mut v = v.clone();
    for c in &mut v.checks {
        if c.check == CheckId::LlmSuspect {
            continue;
        }
        match &mut c.outcome {
            Outcome::Pass { measured } => *measured = serde_json::Value::Null,
            Outcome::Fail { evidence } => evidence.details = serde_json::Value::Null,
            Outcome::Inconclusive { .. } => {}
        }
    }
    v
}

/// The audit's evidence and ledger: the folder's verdicts, read back from the spill
/// file a miner at a time, and the entries decided over them. No earlier slash covers
/// any job of a folder.
struct Ledger {
    file: File,
    by_miner: BTreeMap<MinerId, Vec<Spilled>>,
    factors: BTreeMap<MinerId, f64>,
    entries: std::sync::Mutex<Vec<case::Entry>>,
}

impl Ledger {
    fn verdicts(&self, miner: &MinerId) -> std::io::Result<Vec<StagedVerdict>> {
        use std::os::unix::fs::FileExt;
        let spilled = self.by_miner.get(miner).map_or(&[][..], Vec::as_slice);
        let mut buf = Vec::new();
        spilled
            .iter()
            .map(|s| {
                buf.resize(s.len as usize, 0);
                self.file.read_exact_at(&mut buf, s.offset)?;
                Ok(StagedVerdict {
                    stage: s.stage,
                    verdict: serde_json::from_slice(&buf)?,
                })
            })
            .collect()
    }
}

impl case::Evidence for Ledger {
    type Error = std::io::Error;

    async fn history(&self, miner: &MinerId, _: &Rules) -> Result<History, Self::Error> {
        Ok(History {
            verdicts: self.verdicts(miner)?,
            slashed_jobs: Default::default(),
            points_factor: self.factors.get(miner).copied().unwrap_or(1.0),
        })
    }
}

impl case::Ledger for Ledger {
    type Error = anyhow::Error;

    async fn decide<F>(
        &self,
        miner: &MinerId,
        rules: &Rules,
        points_factor: f64,
        decide: F,
    ) -> Result<case::MinerCase, anyhow::Error>
    where
        F: FnOnce(History) -> Result<case::Entry, serde_json::Error> + Send,
    {
        let mut history = case::Evidence::history(self, miner, rules)
            .await
            .context("cannot read the audit's spill file")?;
        history.points_factor = points_factor;
        let entry = decide(history).context("cannot sign a slash event")?;
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

/// What an audit found, without its verdicts: they went to the sink as they were
/// judged.
#[derive(Debug, Default)]
pub struct Judged {
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

impl Judged {
    pub fn jobs(&self) -> u64 {
        self.verdict_counts.values().sum()
    }

    pub fn count(&self, verdict: Verdict) -> u64 {
        self.verdict_counts.get(&verdict).copied().unwrap_or(0)
    }
}

/// Jobs read, fetched and judged together: enough to keep both cores busy, few enough
/// that their decoded images stay small (64 outputs of 2048² RGB are 800 MB at most,
/// 64 of the usual 1024² are 200 MB).
const CHUNK: usize = 64;

/// Reads the folder, judges every job and decides on every miner. Writes nothing.
/// Every verdict stays in memory: for tests and small folders. [`run`] streams.
pub fn judge_dir(
    dir: &Path,
    rules: Rules,
    secret: &SamplingSecret,
    reruns: Reruns,
    key: Option<&ed25519_dalek::SigningKey>,
    progress: bool,
) -> Result<AuditResult> {
    let mut records = Vec::new();
    let mut verdicts = Vec::new();
    let judged = judge_streaming(dir, rules, secret, reruns, key, progress, |r, v, _| {
        records.push(r.clone());
        verdicts.push(v.clone());
        Ok(())
    })?;
    Ok(AuditResult {
        rules_digest: judged.rules_digest,
        verdicts,
        rejected: judged.rejected,
        decisions: judged.decisions,
        events: judged.events,
        records,
        nfts: judged.nfts,
        factors: judged.factors,
        slash_threshold: judged.slash_threshold,
        review_threshold: judged.review_threshold,
    })
}

/// Judges every job of the folder in the file's order, handing each record and its
/// verdict to `sink` as soon as it is judged, then decides on every miner. Memory is
/// bounded by a chunk of jobs, the checks' bounded stream state and an index entry
/// per job; the verdicts a decision reads wait in a temporary file.
///
/// Reading and decoding outputs and comparing them with their references are
/// independent per job and run on every core; the screen checks that see the stream
/// (reuse, peer latencies) and the draw run in order, as the screen worker runs them.
pub fn judge_streaming(
    dir: &Path,
    rules: Rules,
    secret: &SamplingSecret,
    reruns: Reruns,
    key: Option<&ed25519_dalek::SigningKey>,
    progress: bool,
    mut sink: impl FnMut(&JobRecord, &JobVerdict, Stage) -> Result<()>,
) -> Result<Judged> {
    use rayon::prelude::*;

    let jobs_path = dir.join("jobs.jsonl");
    let file =
        File::open(&jobs_path).with_context(|| format!("cannot open {}", jobs_path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let checker = Checker::new(rules)?;
    let rules = checker.rules();
    let mut stream = StreamState::new();
    let bar = if progress {
        indicatif::ProgressBar::new(size)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} judging jobs {bar:40} {percent}% {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Judge in the file's order, the order the job service sent the records: the
    // screen worker sees each miner's jobs in that order, and the draw (which rises
    // with the miner's earlier screen failures) and the reuse index depend on it.
    let mut sampler = case::Sampler::new(rules, secret, BTreeMap::new());
    let mut spill = Spill::new()?;
    let mut judged = Judged {
        rules_digest: checker.rules_digest().to_owned(),
        slash_threshold: rules.auto_slash_threshold(),
        review_threshold: rules.slashing.review_max_honest_probability,
        ..Judged::default()
    };
    let mut lines = BufReader::new(file).split(b'\n').enumerate();
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        for (i, line) in lines.by_ref() {
            let line = line.with_context(|| format!("cannot read {}", jobs_path.display()))?;
            bar.inc(line.len() as u64 + 1);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match JobRecord::from_json(&line) {
                Ok(r) => chunk.push(r),
                Err(e) => judged.rejected.push(Rejected {
                    line: i + 1,
                    error: e.to_string(),
                }),
            }
            if chunk.len() == CHUNK {
                break;
            }
        }
        if chunk.is_empty() {
            break;
        }
        // The two stages, as the workers run them: screen without any reference, the
        // draw, then the re-run with the reference where it counts.
        let mut fetched: Vec<Fetched> = chunk
            .par_iter()
            .map(|record| {
                let mut f = fetch(dir, record, rules);
                crate::checks::prepare(rules, record, &mut f);
                f
            })
            .collect();
        let mut staged = Vec::with_capacity(chunk.len());
        for (record, f) in chunk.iter().zip(&mut fetched) {
            let has_reference =
                f.reference_image.is_some() || f.scores.is_some() || f.challenge.is_some();
            // Screen sees no reference: set them aside, and back for the re-run.
            let references = (
                f.reference_image.take(),
                f.scores.take(),
                f.challenge.take(),
            );
            let mut screen = checker.evaluate(record, f, Stream::Live(&mut stream));
            sampler.draw(&mut screen);
            (f.reference_image, f.scores, f.challenge) = references;
            let rerun = reruns.counts(screen.sampled, has_reference);
            staged.push((screen, rerun));
        }
        let verdicts: Vec<(JobVerdict, Stage)> = staged
            .into_par_iter()
            .zip(chunk.par_iter().zip(&fetched))
            .map(|((screen, rerun), (record, f))| {
                if rerun {
                    let mut v = checker.evaluate(record, f, Stream::Keep(&screen));
                    // Re-run means sampled, whichever rule chose it. The allowance is
                    // the screen's: only that stage moves the draw.
                    v.sampled = true;
                    v.screen_allowance = screen.screen_allowance;
                    (v, Stage::Rerun)
                } else {
                    (screen, Stage::Screen)
                }
            })
            .collect();
        drop(fetched);
        for (record, (v, stage)) in chunk.iter().zip(&verdicts) {
            *judged.verdict_counts.entry(v.verdict).or_default() += 1;
            let counts = judged.miner_counts.entry(v.miner_id.clone()).or_default();
            counts.0 += 1;
            counts.1 += u64::from(matches!(v.verdict, Verdict::Fail | Verdict::Invalid));
            spill.push(v, *stage)?;
            sink(record, v, *stage)?;
        }
    }
    bar.finish_and_clear();

    let nfts = read_wallets(dir)?;
    let miners: Vec<MinerId> = spill.by_miner.keys().cloned().collect();
    let factors: BTreeMap<MinerId, f64> = miners
        .iter()
        .map(|miner| {
            let factor = crate::points::wallet_boost(
                rules,
                miner,
                &miners,
                nfts.get(miner.wallet()).copied(),
            );
            (miner.clone(), factor)
        })
        .collect();
    judged.factors = factors.iter().map(|(m, f)| (m.to_string(), *f)).collect();
    judged.nfts = nfts;
    let ledger = spill.into_ledger(factors)?;
    for miner in &miners {
        // The ledger answers at once: the future is ready when first polled.
        let case = futures::executor::block_on(case::Ledger::decide(
            &ledger,
            miner,
            rules,
            ledger.factors[miner],
            |history| case::entry(miner, history, rules, key),
        ))?;
        judged.decisions.push(case.decision);
        // Entries are kept only for their events.
        ledger
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|e| e.event.is_some());
    }
    judged.events = ledger
        .entries
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .filter_map(|e| e.event)
        .collect();
    Ok(judged)
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

/// Runs the audit and writes its outputs as it goes; returns what the summary needs.
/// `verdicts.jsonl` is written as jobs are judged; the report reads back only the jobs
/// of the miners it shows.
pub fn run(opts: &AuditOptions, rules: Rules) -> Result<Judged> {
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

/// The most jobs of one miner the report shows (its newest, and as many of the jobs
/// its decision cites); older ones are counted on its case page.
pub const REPORT_JOBS_PER_MINER: usize = 500;
/// The most other jobs the report keeps for the evidence pages: jobs that returned an
/// output seen before (for the "same output" lists) and peers' latencies, per model
/// and GPU name.
const REPORT_REUSE_JOBS: usize = 2000;
const REPORT_PEER_JOBS: usize = 2000;

/// The jobs the report shows, read back from `jobs.jsonl` and `verdicts.jsonl`.
struct Shown {
    jobs: Vec<(JobRecord, Option<JobVerdict>)>,
    /// Jobs of a miner with a case that the report leaves out.
    omitted: BTreeMap<String, u64>,
}

/// Reads the folder's records beside their verdicts and keeps what the report shows:
/// the newest jobs of each miner with a case and the jobs its decision cites (each up
/// to `per_miner`), jobs whose `reuse` check failed, and records of other
/// miners as latency peers. Memory is bounded by those limits, not by the folder.
fn shown_jobs(dir: &Path, verdicts: &Path, judged: &Judged, per_miner: usize) -> Result<Shown> {
    use std::collections::{BTreeSet, VecDeque};
    let cases: BTreeMap<&MinerId, BTreeSet<&str>> = judged
        .decisions
        .iter()
        .filter(|d| d.action != Action::None)
        .map(|d| {
            let cited = d.evidence.iter().map(|e| e.job_id.as_str()).collect();
            (&d.miner_id, cited)
        })
        .collect();
    let jobs_path = dir.join("jobs.jsonl");
    let records = BufReader::new(
        File::open(&jobs_path).with_context(|| format!("cannot open {}", jobs_path.display()))?,
    );
    let mut verdict_lines = BufReader::new(
        File::open(verdicts).with_context(|| format!("cannot open {}", verdicts.display()))?,
    )
    .split(b'\n');
    let mut newest: BTreeMap<&MinerId, VecDeque<(JobRecord, Option<JobVerdict>)>> = BTreeMap::new();
    let mut cited: BTreeMap<&MinerId, Vec<(JobRecord, Option<JobVerdict>)>> = BTreeMap::new();
    let mut others = Vec::new();
    let mut peers: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut reused = 0;
    for line in records.split(b'\n') {
        let line = line.with_context(|| format!("cannot read {}", jobs_path.display()))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // Rejected lines have no verdict line; the judged ones have one each, in order.
        let Ok(record) = JobRecord::from_json(&line) else {
            continue;
        };
        let verdict_line = verdict_lines
            .next()
            .context("verdicts.jsonl ends before jobs.jsonl")?
            .with_context(|| format!("cannot read {}", verdicts.display()))?;
        let parse = || -> Result<JobVerdict> {
            serde_json::from_slice(&verdict_line)
                .with_context(|| format!("{} does not parse", verdicts.display()))
        };
        if let Some((miner, cites)) = cases.get_key_value(&record.miner_id) {
            let verdict = parse()?;
            if cites.contains(record.job_id.as_str())
                && cited.get(miner).map_or(0, Vec::len) < per_miner
            {
                cited
                    .entry(miner)
                    .or_default()
                    .push((record, Some(verdict)));
                continue;
            }
            let list = newest.entry(miner).or_default();
            if list.len() >= per_miner {
                list.pop_front();
            }
            list.push_back((record, Some(verdict)));
            continue;
        }
        // Cheap test first: only a failed reuse check names the check in its line.
        if reused < REPORT_REUSE_JOBS && contains(&verdict_line, b"\"reuse\"") {
            let verdict = parse()?;
            if verdict
                .outcome(CheckId::Reuse)
                .is_some_and(Outcome::is_fail)
            {
                reused += 1;
                others.push((record, Some(verdict)));
                continue;
            }
        }
        let bucket = peers
            .entry((record.model_id.to_string(), record.metrics.hardware.clone()))
            .or_default();
        if *bucket < REPORT_PEER_JOBS {
            *bucket += 1;
            others.push((record, None));
        }
    }
    let mut omitted = BTreeMap::new();
    let mut jobs = others;
    for miner in cases.keys() {
        let kept = cited.remove(miner).unwrap_or_default();
        let mut newest = newest.remove(miner).unwrap_or_default();
        let ids: BTreeSet<String> = kept
            .iter()
            .map(|(r, _)| r.job_id.as_str().to_owned())
            .collect();
        newest.retain(|(r, _)| !ids.contains(r.job_id.as_str()));
        let shown = (kept.len() + newest.len()) as u64;
        let total = judged.miner_counts.get(*miner).map_or(0, |(jobs, _)| *jobs);
        if total > shown {
            omitted.insert(miner.to_string(), total - shown);
        }
        jobs.extend(kept);
        jobs.extend(newest);
    }
    Ok(Shown { jobs, omitted })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The stdout summary: verdict counts and one row per miner with an action.
pub fn summary(result: &Judged) -> String {
    let mut s = String::new();
    let count = |v: Verdict| result.count(v);
    s.push_str(&format!(
        "proctor audit: {} jobs judged, {} records rejected, rules {}\n",
        result.jobs(),
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
        let (jobs, failed) = result
            .miner_counts
            .get(&d.miner_id)
            .copied()
            .unwrap_or_default();
        let (action, p) = match d.action {
            Action::None => ("-", None),
            Action::FlagForReview => ("flag", Some(d.review_probability)),
            Action::Slash => ("SLASH", Some(d.honest_probability)),
        };
        let checks: Vec<&str> = d.tallies.iter().map(|t| t.check.as_str()).collect();
        let line = format!(
            "{:<22} {:>4} {:>6}  {:<7} {:>12}  {}",
            short_miner(&d.miner_id.to_string()),
            jobs,
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
         than {} (from checks whose false-positive rate was measured on the job's model:\n\
         `proctor rules check` lists them), a flag for staff review rarer than {} (from any\n\
         check). Miner ids are shortened; decisions.jsonl, slashes.jsonl and report.html\n\
         have them whole, with the amounts and the evidence.\n",
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

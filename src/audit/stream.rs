//! The streaming judgement: every job of the folder in the file's order, fetched and
//! compared on every core, screened and drawn in order, then every miner decided.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};

use super::spill::Spill;
use super::{AuditResult, Findings, Rejected, fetch, read_wallets};
use crate::case::Reruns;
use crate::case::{self, History, Stage};
use crate::checks::{Checker, Fetched, JobVerdict, Stream, StreamState, Verdict};
use crate::ids::MinerId;
use crate::record::JobRecord;
use crate::rules::Rules;
use crate::sampling::SamplingSecret;

/// Jobs read, fetched and judged together: enough to keep both cores busy, few enough
/// that their decoded images stay small (64 outputs of 2048² RGB are 800 MB at most,
/// 64 of the usual 1024² are 200 MB).
const CHUNK: usize = 64;

/// Reads the folder, judges every job and decides on every miner. Writes nothing.
/// Every verdict stays in memory: for tests and small folders. [`super::run`] streams.
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
) -> Result<Findings> {
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
    let mut judged = Findings {
        rules_digest: checker.rules_digest().to_owned(),
        slash_threshold: rules.auto_slash_threshold(),
        review_threshold: rules.slashing.review_max_honest_probability,
        ..Findings::default()
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
                    let v = checker.evaluate(record, f, Stream::Keep(&screen));
                    (case::rerun_verdict(v, &screen), Stage::Rerun)
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
    // Each miner is decided by the pure core, as the judge worker decides: the same
    // `case::entry` over the same history. No earlier slash covers any job of a
    // folder, and nothing needs a lock: the folder is this process's alone.
    let spill = spill.finish()?;
    for miner in &miners {
        let history = History {
            verdicts: spill
                .verdicts(miner)
                .context("cannot read the audit's spill file")?,
            slashed_jobs: Default::default(),
            points_factor: factors[miner],
        };
        let entry = case::entry(miner, history, rules, key).context("cannot sign a slash event")?;
        judged.decisions.push(entry.case.decision);
        judged.events.extend(entry.event);
    }
    Ok(judged)
}

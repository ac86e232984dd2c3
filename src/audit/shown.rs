//! What the report shows, read back from `jobs.jsonl` and `verdicts.jsonl` within
//! bounds: the jobs of the miners with a case, reused outputs and latency peers.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};

use super::Findings;
use crate::checks::JobVerdict;
use crate::decide::Action;
use crate::ids::MinerId;
use crate::outcome::{CheckId, Outcome};
use crate::record::JobRecord;

/// The most jobs of one miner the report shows (its newest, and as many of the jobs
/// its decision cites); older ones are counted on its case page.
pub const REPORT_JOBS_PER_MINER: usize = 500;
/// The most other jobs the report keeps for the evidence pages: jobs that returned an
/// output seen before (for the "same output" lists) and peers' latencies, per model
/// and GPU name.
const REPORT_REUSE_JOBS: usize = 2000;
const REPORT_PEER_JOBS: usize = 2000;

/// The jobs the report shows, read back from `jobs.jsonl` and `verdicts.jsonl`.
pub(super) struct Shown {
    pub(super) jobs: Vec<(JobRecord, Option<JobVerdict>)>,
    /// Jobs of a miner with a case that the report leaves out.
    pub(super) omitted: BTreeMap<String, u64>,
}

/// Reads the folder's records beside their verdicts and keeps what the report shows:
/// the newest jobs of each miner with a case and the jobs its decision cites (each up
/// to `per_miner`), jobs whose `reuse` check failed, and records of other
/// miners as latency peers. Memory is bounded by those limits, not by the folder.
pub(super) fn shown_jobs(
    dir: &Path,
    verdicts: &Path,
    judged: &Findings,
    per_miner: usize,
) -> Result<Shown> {
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

//! The offline report of `proctor audit`: the review app's own pages, rendered from its
//! own templates (`view`), read-only, as files.
//!
//! ```text
//! OUT/report.html                       the queue: every slashed or flagged miner
//! OUT/report/case-<n>.html              one miner's case, as the app shows it
//! OUT/report/evidence-<job>-<check>.html  one failed check of one job
//! OUT/report/img/<job>-output.png|jpg   the miner's and the reference's images
//! OUT/report/static/app.css, app.js     the app's stylesheet and script
//! ```
//!
//! Each page carries only its own evidence and links to the images beside it, so no page
//! grows with the audit: the queue has a row per case, a case a row per job of its
//! miner. Images are copied only when our own decoder accepted them and they are a PNG
//! or JPEG within the image check's size bound: a browser is no safer a decoder than
//! ours. What the report has no file for is shown as text, never as a broken link.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use minijinja::context;

use crate::checks::JobVerdict;
use crate::checks::llm::TokenScores;
use crate::decide::{Action, Decision};
use crate::ids::JobId;
use crate::outcome::{CheckId, Outcome};
use crate::record::{Job, JobRecord};
use crate::review::CaseRow;
use crate::review::CaseStatus;
use crate::rules::Rules;
use crate::view::{self, Links, Need, ReportFiles};

/// The most peers' latencies a latency chart plots, as in the app.
const MAX_PEERS: usize = 2000;

/// What the report shows.
pub struct Page<'a> {
    pub rules_digest: &'a str,
    /// The records the report shows, with their verdicts: the jobs of the miners with a
    /// case (up to a bound each), and other miners' jobs the evidence pages compare
    /// with (a record without a verdict is only a latency peer).
    pub jobs: Vec<(&'a JobRecord, Option<&'a JobVerdict>)>,
    /// Jobs judged in all, and the miners they came from.
    pub total_jobs: u64,
    pub total_miners: usize,
    /// Per miner with a case: its jobs left out of the report.
    pub omitted: &'a BTreeMap<String, u64>,
    pub decisions: &'a [Decision],
    /// NFTs held per wallet, as the audit read them.
    pub nfts: &'a BTreeMap<String, u32>,
    /// The points factor (NFT boost) of each miner.
    pub factors: &'a BTreeMap<String, f64>,
    /// Records that were not valid: their line and the reason.
    pub rejected: Vec<(usize, &'a str)>,
}

/// Where the report finds what it shows besides the records and verdicts.
pub trait Source {
    /// The file of the miner's output, by its object key.
    fn output(&self, key: &str) -> Option<PathBuf>;
    /// The file of the reference GPU's image of a job.
    fn reference_image(&self, job: &JobId) -> Option<PathBuf>;
    /// The reference model's token scores of a job.
    fn scores(&self, job: &JobId) -> Option<TokenScores>;
}

type Jobs<'a> = BTreeMap<&'a str, (&'a JobRecord, Option<&'a JobVerdict>)>;

fn decodes(verdict: Option<&JobVerdict>) -> bool {
    !verdict
        .and_then(|v| v.outcome(CheckId::OutputDecode))
        .is_some_and(Outcome::is_fail)
}

/// A copy of an image under `img/`, when it is one a browser may be shown
/// ([`view::browser_image`]) within `limit` bytes; its file name.
fn copy_image(from: &Path, dir: &Path, stem: &str, limit: u64) -> Result<Option<String>> {
    let Ok(meta) = std::fs::metadata(from) else {
        return Ok(None);
    };
    if !meta.is_file() || meta.len() > limit {
        return Ok(None);
    }
    let Ok(bytes) = std::fs::read(from) else {
        return Ok(None);
    };
    let Some((_, ext)) = view::browser_image(&bytes) else {
        return Ok(None);
    };
    let name = format!("{stem}.{ext}");
    let to = dir.join(&name);
    std::fs::write(&to, &bytes).with_context(|| format!("cannot write {}", to.display()))?;
    Ok(Some(name))
}

/// Every job that returned the output `original` first returned: the job itself and each
/// job whose `reuse` check matched it, oldest first (the app's `Store::same_output`).
fn same_output(jobs: &Jobs<'_>, original: &str) -> Vec<(String, String, DateTime<Utc>)> {
    let mut group: Vec<(String, String, DateTime<Utc>)> = jobs
        .values()
        .filter(|(r, v)| {
            r.job_id.as_str() == original
                || v.and_then(|v| v.checks.iter().find(|c| c.check == CheckId::Reuse))
                    .and_then(|c| match &c.outcome {
                        Outcome::Fail { evidence } => evidence
                            .details
                            .pointer("/matched/job_id")
                            .and_then(|m| m.as_str()),
                        _ => None,
                    })
                    == Some(original)
        })
        .map(|(r, _)| {
            (
                r.job_id.as_str().to_owned(),
                r.miner_id.to_string(),
                r.submitted_at,
            )
        })
        .collect();
    group.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
    group
}

/// The case the app would hold for an audit decision: an automatic slash is `slashed`,
/// a flag `open`. Numbered in the queue's order.
fn case_row(case_id: i64, d: &Decision, latest: DateTime<Utc>) -> CaseRow {
    let slash = d.action == Action::Slash;
    CaseRow {
        case_id,
        miner_id: d.miner_id.to_string(),
        opened_by: if slash { "slash" } else { "flag" }.into(),
        status: if slash {
            CaseStatus::Slashed
        } else {
            CaseStatus::Open
        },
        flag_id: None,
        slash_id: d.slash.as_ref().map(|s| s.slash_id.clone()),
        evidence_probability: if slash {
            d.honest_probability
        } else {
            d.review_probability
        },
        at_stake: d
            .slash
            .as_ref()
            .or(d.confirmation.as_ref())
            .map(|s| s.amount)
            .unwrap_or_default(),
        confirmed_by: None,
        opened_at: latest,
        updated_at: latest,
        decision: d.clone(),
        dismiss_proposed_by: None,
        pending_slash_id: None,
    }
}

/// Writes `report.html` and `report/` under `out`, replacing an earlier `report/`.
pub fn write(out: &Path, page: &Page<'_>, source: &dyn Source, rules: &Rules) -> Result<()> {
    let dir = out.join("report");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    let img_dir = dir.join("img");
    std::fs::create_dir_all(dir.join("static"))
        .and_then(|()| std::fs::create_dir_all(&img_dir))
        .with_context(|| format!("cannot create {}", dir.display()))?;

    let jobs: Jobs<'_> = page
        .jobs
        .iter()
        .map(|(r, v)| (r.job_id.as_str(), (*r, *v)))
        .collect();
    let mut by_miner: BTreeMap<String, Vec<(&JobRecord, Option<&JobVerdict>)>> = BTreeMap::new();
    for (r, v) in jobs.values() {
        by_miner
            .entry(r.miner_id.to_string())
            .or_default()
            .push((r, *v));
    }
    for list in by_miner.values_mut() {
        // Newest first, as the app's timeline.
        list.sort_by(|a, b| {
            (b.0.submitted_at, b.0.job_id.as_str()).cmp(&(a.0.submitted_at, a.0.job_id.as_str()))
        });
    }

    // The queue's order: automatic slashes, then flags; strongest evidence first.
    let mut acted: Vec<&Decision> = page
        .decisions
        .iter()
        .filter(|d| d.action != Action::None)
        .collect();
    acted.sort_by(|a, b| {
        let key = |d: &Decision| {
            (
                d.action != Action::Slash,
                if d.action == Action::Slash {
                    d.honest_probability
                } else {
                    d.review_probability
                },
            )
        };
        let (sa, pa) = key(a);
        let (sb, pb) = key(b);
        sa.cmp(&sb)
            .then(pa.total_cmp(&pb))
            .then_with(|| a.miner_id.to_string().cmp(&b.miner_id.to_string()))
    });
    let cases: Vec<CaseRow> = acted
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let latest = by_miner
                .get(&d.miner_id.to_string())
                .and_then(|l| l.first())
                .map_or(DateTime::UNIX_EPOCH, |(r, _)| r.submitted_at);
            case_row(i as i64 + 1, d, latest)
        })
        .collect();

    // The evidence pages: every failed check of every job of a case's miner, and the
    // `reuse` failures of every job that returned the same output as one of them.
    let mut evidence: BTreeSet<(String, String)> = BTreeSet::new();
    for c in &cases {
        for (r, v) in by_miner.get(&c.miner_id).into_iter().flatten() {
            for check in v.iter().flat_map(|v| v.failed_checks()) {
                evidence.insert((r.job_id.as_str().to_owned(), check.as_str().to_owned()));
            }
        }
    }
    let mut groups: BTreeMap<String, Vec<(String, String, DateTime<Utc>)>> = BTreeMap::new();
    for (job, check) in evidence.clone() {
        let (r, v) = jobs[job.as_str()];
        if let Need::SameOutput(original) = view::need(r, v, &check) {
            let group = groups
                .entry(original.clone())
                .or_insert_with(|| same_output(&jobs, &original));
            for (other, _, _) in group.iter() {
                let (_, ov) = jobs[other.as_str()];
                if ov
                    .and_then(|v| v.outcome(CheckId::Reuse))
                    .is_some_and(Outcome::is_fail)
                {
                    evidence.insert((other.clone(), CheckId::Reuse.as_str().to_owned()));
                }
            }
        }
    }

    // The images those pages show.
    let mut shown: BTreeSet<&str> = evidence.iter().map(|(j, _)| j.as_str()).collect();
    for group in groups.values() {
        shown.extend(group.iter().map(|(j, _, _)| j.as_str()));
    }
    let limit = rules.checks.image.max_object_bytes;
    let mut files = ReportFiles::default();
    for job in shown {
        let (r, v) = jobs[job];
        let Job::Sd { output, .. } = &r.job else {
            continue;
        };
        let stem = view::file_stem(job);
        let copies = [
            (
                "output",
                source
                    .output(output.image_key.as_str())
                    .filter(|_| decodes(v)),
            ),
            ("reference", source.reference_image(&r.job_id)),
        ];
        for (which, from) in copies {
            if let Some(from) = from
                && let Some(name) = copy_image(&from, &img_dir, &format!("{stem}-{which}"), limit)?
            {
                files
                    .images
                    .insert((job.to_owned(), which.to_owned()), name);
            }
        }
    }
    files.cases = cases.iter().map(|c| c.case_id).collect();
    files.evidence = evidence.clone();
    let env = view::templates(Links::Report(Arc::new(files)));

    let offline = context! {
        rules_digest => page.rules_digest,
        jobs => page.total_jobs,
        miners => page.total_miners,
        slashed => cases.iter().filter(|c| c.opened_by == "slash").count(),
        flagged => cases.iter().filter(|c| c.opened_by == "flag").count(),
        rejected => page.rejected.iter().map(|(line, error)| context! { line => *line, error => *error }).collect::<Vec<_>>(),
    };
    let emit = |path: PathBuf, name: &str, ctx: minijinja::Value| -> Result<()> {
        let html = env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .with_context(|| format!("cannot render {name}"))?;
        std::fs::write(&path, &html).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    };

    emit(
        out.join("report.html"),
        "queue.html",
        context! {
            offline => offline.clone(),
            depth => 0,
            rows => cases.iter().map(view::queue_row).collect::<Vec<_>>(),
            total => cases.len(),
            page => 1,
            pages => 1,
            checks => CheckId::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        },
    )?;
    for c in &cases {
        let list = by_miner.get(&c.miner_id).map_or(&[][..], Vec::as_slice);
        let wallet = crate::ids::MinerId::parse(&c.miner_id)
            .map(|m| m.wallet().to_owned())
            .unwrap_or_default();
        let owner = view::Owner {
            nfts: page
                .nfts
                .get(&wallet)
                .map(|n| i32::try_from(*n).unwrap_or(i32::MAX)),
            wallet,
            factor: page.factors.get(&c.miner_id).copied().unwrap_or(1.0),
        };
        let shown = view::case_context(c, list, &owner, rules);
        emit(
            dir.join(ReportFiles::case_file(c.case_id)),
            "case.html",
            context! {
                offline => offline.clone(),
                depth => 1,
                omitted => page.omitted.get(&c.miner_id).copied().unwrap_or(0),
                ..shown
            },
        )?;
    }
    for (job, check) in &evidence {
        let (r, v) = jobs[job.as_str()];
        let mut fetched = view::Related::default();
        match view::need(r, v, check) {
            Need::Nothing => {}
            Need::SameOutput(original) => {
                fetched.same_output = groups
                    .get(&original)
                    .cloned()
                    .unwrap_or_else(|| same_output(&jobs, &original));
            }
            Need::Scores => fetched.scores = source.scores(&r.job_id),
            Need::Latencies => {
                for (o, _) in jobs.values() {
                    if o.model_id != r.model_id {
                        continue;
                    }
                    if o.miner_id == r.miner_id {
                        fetched.own_latencies.push(o.metrics.inference_latency);
                    } else if o.metrics.hardware == r.metrics.hardware
                        && fetched.peer_latencies.len() < MAX_PEERS
                    {
                        fetched.peer_latencies.push(o.metrics.inference_latency);
                    }
                }
            }
        }
        let ctx = view::evidence_context(r, v, check, rules, &fetched);
        emit(
            dir.join(ReportFiles::evidence_file(job, check)),
            "evidence.html",
            context! { offline => offline.clone(), depth => 1, ..ctx },
        )?;
    }
    for (name, text) in [("app.css", view::STYLESHEET), ("app.js", view::SCRIPT)] {
        let path = dir.join("static").join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

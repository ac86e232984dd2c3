//! Calibrating the suspect panel (`llm_suspect`) and the per-miner evidence it feeds,
//! and the seed-replay study.
//!
//! - **Drift.** Each honest text is scored again by the model its miner ran, at the
//!   miner's numerics; per suspect and token, `ln E_{p'}[q/p]`
//!   ([`crate::llm::panel::drift`]) is how much the suspect's ratio would gain on
//!   average from the miner's numerics alone. Each suspect's allowance
//!   (`drift_nats_per_token`) is the largest per-text mean of it over every honest
//!   text, rounded up.
//! - **Per job.** The panel statistic with those allowances, on honest and cheating
//!   texts, sets `llr_max` at the target rate like every calibrated threshold.
//! - **Per miner.** Simulated miners draw their jobs from one variant's texts (with
//!   replacement) and the decision engine judges them after every job, as the judge
//!   does: the jobs until a slash, for each cheat, and whether any honest miner is
//!   slashed.
//! - **Seed replay.** Every simulated job has a seed, and the simulated miners sample
//!   with the reference code's own sampler (`llm::sample`). The reference
//!   replays the draw at each position from the seed and its own distribution, and
//!   counts where it picks the miner's token.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::llm::{LlmPair, PREFILL_SPOOF, QUANTIZED_4, QUANTIZED_8, Replay, SMALLER, SUBSTITUTE};
use super::{Label, Pair};
use crate::checks::llm;
use crate::decide::{self, Action};
use crate::llm::{ScoreJob, Scorer, panel};
use crate::outcome::{CheckId, Status};
use crate::rules::{LlmRules, Rules};

/// Below this temperature the panel does not judge.
const MIN_TEMPERATURE: f64 = super::llm::MIN_PANEL_TEMPERATURE;

/// One variant's row of the per-job table.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub label: Label,
    pub variant: String,
    /// Sampled texts the panel judged.
    pub n: usize,
    /// Of those, how many `llm_suspect` and `llm_likelihood` failed, and either.
    pub suspect: usize,
    pub likelihood: usize,
    pub either: usize,
    /// The suspect that fits its texts best most often.
    pub best: String,
    /// With the suspect this variant is drawn from left out of the panel (its own
    /// threshold recalibrated on the honest texts): how many the panel still catches.
    pub held_out: Option<usize>,
}

/// One variant's simulated miners.
#[derive(Debug, Clone, Serialize)]
pub struct MinerRow {
    pub label: Label,
    pub variant: String,
    pub miners: usize,
    pub slashed: usize,
    pub flagged: usize,
    /// Jobs until the slash: the median and the 99th percentile over the miners, `None`
    /// where fewer than half (or 99 %) were slashed within `max_jobs`.
    pub median: Option<usize>,
    pub p99: Option<usize>,
    /// The suspect the per-miner evidence names most often at the slash.
    pub best: String,
}

/// One variant's seed replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayRow {
    pub label: Label,
    pub variant: String,
    pub texts: usize,
    pub tokens: u64,
    pub agree: u64,
    /// Texts whose disagreements exceed what the target rate of honest texts show.
    pub caught: usize,
    /// The same over the generated token ids.
    pub id_tokens: u64,
    pub id_agree: u64,
    pub id_caught: usize,
}

/// What the panel's calibration measured.
#[derive(Debug, Clone, Serialize)]
pub struct PanelCalibration {
    pub target_fpr: f64,
    pub llr_max: f64,
    /// Per suspect: the allowance written (nats per token), and the largest single
    /// token's drift seen.
    pub drift: Vec<(String, f64, f64)>,
    pub jobs: Vec<JobRow>,
    pub max_jobs: usize,
    pub miners: Vec<MinerRow>,
    /// The per-decision slash threshold and the Bonferroni factor the simulated
    /// engine applied.
    pub slash_threshold: f64,
    pub replay: Vec<ReplayRow>,
    /// The replay's honest limits: a text with more disagreeing tokens is flagged, over
    /// the re-tokenized text and over the generated ids.
    pub replay_max_disagree: u32,
    pub replay_max_disagree_ids: u32,
    /// What the panel costs, where it was timed.
    pub cost: Option<Cost>,
}

/// The suspect this cheat variant is drawn from, if the panel holds it: the panel's
/// model suspects are named after their reference with the derivation as a suffix
/// (`tiny-alice-alt`, `smollm2-135m-instruct-q4`; `scripts/real-model`).
fn source_suspect<'a>(variant: &str, panel: &'a [String]) -> Option<&'a str> {
    let suffix = match variant {
        SUBSTITUTE | PREFILL_SPOOF => "-alt",
        QUANTIZED_4 => "-q4",
        QUANTIZED_8 => "-q8",
        SMALLER => "-small",
        _ => return None,
    };
    panel
        .iter()
        .find(|n| n.ends_with(suffix))
        .map(String::as_str)
}

/// Whether a pair is a sampled job the panel judges.
fn sampled(p: &LlmPair) -> bool {
    p.input.temperature >= MIN_TEMPERATURE
}

/// Sets each suspect's drift allowance and the per-job threshold in `rules` from the
/// measured pairs. Returns the drift table.
pub fn calibrate_rules(
    measured: &[LlmPair],
    rules: &mut LlmRules,
    target: f64,
) -> anyhow::Result<Vec<(String, f64, f64)>> {
    // The suspects in the order the reference scored them.
    let names: Vec<String> = measured
        .iter()
        .find_map(|p| p.scores.as_ref().filter(|s| !s.panel.is_empty()))
        .map(|s| s.panel.iter().map(|x| x.name.clone()).collect())
        .unwrap_or_default();
    let mut table = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let (mut mean, mut max) = (0.0f64, 0.0f64);
        for d in measured.iter().filter_map(|p| p.drift.as_ref()) {
            if let Some((m, x)) = d.get(k) {
                mean = mean.max(*m);
                max = max.max(*x);
            }
        }
        // Rounded up: an allowance is a bound.
        let allowance = (mean * 1e4).ceil() / 1e4;
        if let Some(rule) = rules.panel.suspects.iter_mut().find(|s| &s.name == name) {
            rule.drift_nats_per_token = Some(allowance);
        }
        table.push((name.clone(), allowance, max));
    }
    let pairs = statistic_pairs(measured, rules, None);
    if pairs.iter().any(|p| p.label == Label::Honest) {
        let sweep = super::sweep(&pairs, &[0.0], target)?;
        // Rounded up: lenient.
        rules.panel.llr_max = (sweep.thresholds[0] * 100.0).ceil() / 100.0;
    }
    Ok(table)
}

/// `llm_suspect`'s report at the calibrated `rules`: the per-variant rates of the
/// sampled pairs it judged (a pair it could not judge counts as passed) and the ROC
/// of its statistic.
pub fn check_report(
    measured: &[LlmPair],
    rules: &LlmRules,
    target: f64,
) -> anyhow::Result<super::CheckReport> {
    let pairs = statistic_pairs(measured, rules, None);
    let sweep = super::sweep(&pairs, &[0.0], target)?;
    let verdicts: Vec<(Label, String, bool)> = pairs
        .iter()
        .map(|p| {
            (
                p.label,
                p.variant.clone(),
                p.suspicion[0] > rules.panel.llr_max,
            )
        })
        .collect();
    let mut rows = super::rate_rows(&verdicts);
    for r in rows.iter_mut() {
        if r.variant == SUBSTITUTE || r.variant == PREFILL_SPOOF {
            r.target = Some(super::llm::DETECTION_TARGET);
            r.met = Some(r.rate >= super::llm::DETECTION_TARGET);
        }
    }
    Ok(super::CheckReport {
        check: CheckId::LlmSuspect,
        target_fpr: target,
        thresholds: vec![("panel.llr_max".into(), rules.panel.llr_max)],
        rows,
        roc: sweep.roc,
    })
}

/// The panel statistic of every sampled pair the panel judged, as calibration pairs;
/// with `leave_out`, over the panel without that suspect.
fn statistic_pairs(measured: &[LlmPair], rules: &LlmRules, leave_out: Option<&str>) -> Vec<Pair> {
    measured
        .iter()
        .filter(|p| sampled(p))
        .filter_map(|p| {
            let (_, suspects, _) =
                llm::panel_evidence(p.scores.as_ref()?, p.input.temperature, rules).ok()?;
            let kept = suspects
                .iter()
                .filter(|s| Some(s.name.as_str()) != leave_out)
                .map(|s| s.evidence);
            Some(Pair {
                label: p.label,
                variant: p.variant.to_string(),
                suspicion: vec![llm::log_mean_exp(kept)],
            })
        })
        .collect()
}

/// A pair's scored tokens and each suspect's evidence on it.
type PairEvidence = (u64, Vec<(String, f64)>);

/// The per-job table, the per-miner simulation and the seed replay, at the calibrated
/// `rules` (thresholds and measured rates in place).
pub fn report(
    measured: &[LlmPair],
    rules: &Rules,
    drift: Vec<(String, f64, f64)>,
    miners: usize,
    max_jobs: usize,
    seed: u64,
) -> anyhow::Result<PanelCalibration> {
    let lr = &rules.checks.llm;
    let target = rules.checks.calibration.target_false_positive_rate;
    let outcomes: Vec<Vec<(CheckId, Status)>> = measured
        .iter()
        .map(|p| match &p.scores {
            Some(s) => llm::check(s, &p.input, p.reported.as_deref(), lr)
                .into_iter()
                .map(|(id, o)| (id, o.status()))
                .collect(),
            None => Vec::new(),
        })
        .collect();
    let evidence: Vec<Option<PairEvidence>> = measured
        .iter()
        .map(|p| {
            let (_, s, tokens) =
                llm::panel_evidence(p.scores.as_ref()?, p.input.temperature, lr).ok()?;
            Some((
                u64::from(tokens),
                s.into_iter().map(|s| (s.name, s.evidence)).collect(),
            ))
        })
        .collect();
    let failed = |i: usize, id: CheckId| {
        outcomes[i]
            .iter()
            .any(|(c, st)| *c == id && *st == Status::Fail)
    };
    let mut variants: Vec<(Label, String)> = Vec::new();
    for p in measured.iter().filter(|p| sampled(p)) {
        if !variants.iter().any(|(_, v)| v == p.variant) {
            variants.push((p.label, p.variant.to_string()));
        }
    }
    // Held-out thresholds, one per suspect left out.
    let names: Vec<String> = measured
        .iter()
        .find_map(|p| p.scores.as_ref().filter(|s| !s.panel.is_empty()))
        .map(|s| s.panel.iter().map(|x| x.name.clone()).collect())
        .unwrap_or_default();
    let held_out = |variant: &str| -> anyhow::Result<Option<usize>> {
        let Some(name) = source_suspect(variant, &names) else {
            return Ok(None);
        };
        let pairs = statistic_pairs(measured, lr, Some(name));
        let sweep = super::sweep(&pairs, &[0.0], target)?;
        Ok(Some(
            pairs
                .iter()
                .filter(|p| p.variant == variant && p.suspicion[0] > sweep.thresholds[0])
                .count(),
        ))
    };
    let mut jobs = Vec::new();
    for (label, variant) in &variants {
        let idx: Vec<usize> = (0..measured.len())
            .filter(|&i| measured[i].variant == variant && evidence[i].is_some())
            .collect();
        let mut best: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in &idx {
            if let Some(b) = evidence[i]
                .as_ref()
                .and_then(|(_, e)| e.iter().max_by(|a, b| a.1.total_cmp(&b.1)))
            {
                *best.entry(b.0.as_str()).or_default() += 1;
            }
        }
        jobs.push(JobRow {
            label: *label,
            variant: variant.clone(),
            n: idx.len(),
            suspect: idx
                .iter()
                .filter(|&&i| failed(i, CheckId::LlmSuspect))
                .count(),
            likelihood: idx
                .iter()
                .filter(|&&i| failed(i, CheckId::LlmLikelihood))
                .count(),
            either: idx
                .iter()
                .filter(|&&i| failed(i, CheckId::LlmSuspect) || failed(i, CheckId::LlmLikelihood))
                .count(),
            best: most(&best),
            held_out: held_out(variant)?,
        });
    }

    // Per-miner simulation.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut miner_rows = Vec::new();
    for (label, variant) in &variants {
        let idx: Vec<usize> = (0..measured.len())
            .filter(|&i| measured[i].variant == variant && measured[i].scores.is_some())
            .collect();
        if idx.is_empty() {
            continue;
        }
        let (mut slashed_at, mut flagged) = (Vec::new(), 0);
        let mut best: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..miners {
            let mut counts: BTreeMap<CheckId, (u64, u64)> = BTreeMap::new();
            let mut panel = decide::PanelTally::default();
            let mut was_flagged = false;
            for j in 1..=max_jobs {
                let i = idx[rng.random_range(0..idx.len())];
                for (c, st) in &outcomes[i] {
                    let e = counts.entry(*c).or_default();
                    match st {
                        Status::Pass => e.0 += 1,
                        Status::Fail => {
                            e.0 += 1;
                            e.1 += 1;
                        }
                        Status::Inconclusive => {}
                    }
                }
                if let Some((tokens, ev)) = &evidence[i] {
                    panel.add_job(*tokens, ev.iter().map(|(n, x)| (n.as_str(), *x)));
                }
                let sequence = panel.evidence(rules);
                // The simulated miners serve the model the rates were measured on.
                let (_, assessment) = decide::assess(
                    decide::in_scope(counts.iter().map(|(c, (n, k))| (*c, *n, *k))),
                    sequence.as_ref(),
                    rules,
                );
                match assessment.action {
                    Action::Slash => {
                        slashed_at.push(j);
                        if let Some(s) = &sequence {
                            *best.entry(s.best().to_string()).or_default() += 1;
                        }
                        break;
                    }
                    Action::FlagForReview => was_flagged = true,
                    Action::None => {}
                }
            }
            flagged += usize::from(was_flagged);
        }
        slashed_at.sort_unstable();
        let quantile = |q: f64| -> Option<usize> {
            let k = ((q * miners as f64).ceil() as usize).max(1);
            slashed_at.get(k - 1).copied()
        };
        let best_ref: BTreeMap<&str, usize> = best.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        miner_rows.push(MinerRow {
            label: *label,
            variant: variant.clone(),
            miners,
            slashed: slashed_at.len(),
            flagged,
            median: quantile(0.5),
            p99: quantile(0.99),
            best: most(&best_ref),
        });
    }

    // Seed replay: the honest limit on disagreeing tokens, then each variant's share.
    let limit = |disagree: &dyn Fn(&Replay) -> u32| -> u32 {
        let mut honest: Vec<u32> = measured
            .iter()
            .filter(|p| p.label == Label::Honest && sampled(p))
            .filter_map(|p| p.replay.as_ref().map(disagree))
            .collect();
        honest.sort_unstable();
        let allowed = (target * honest.len() as f64).floor() as usize;
        honest
            .len()
            .checked_sub(allowed + 1)
            .and_then(|i| honest.get(i))
            .copied()
            .unwrap_or(0)
    };
    let replay_max_disagree = limit(&|r| r.tokens - r.agree);
    let replay_max_disagree_ids = limit(&|r| r.id_tokens - r.id_agree);
    let replay = variants
        .iter()
        .map(|(label, variant)| {
            let rs: Vec<Replay> = measured
                .iter()
                .filter(|p| p.variant == variant)
                .filter_map(|p| p.replay)
                .collect();
            ReplayRow {
                label: *label,
                variant: variant.clone(),
                texts: rs.len(),
                tokens: rs.iter().map(|r| u64::from(r.tokens)).sum(),
                agree: rs.iter().map(|r| u64::from(r.agree)).sum(),
                caught: rs
                    .iter()
                    .filter(|r| r.tokens - r.agree > replay_max_disagree)
                    .count(),
                id_tokens: rs.iter().map(|r| u64::from(r.id_tokens)).sum(),
                id_agree: rs.iter().map(|r| u64::from(r.id_agree)).sum(),
                id_caught: rs
                    .iter()
                    .filter(|r| r.id_tokens - r.id_agree > replay_max_disagree_ids)
                    .count(),
            }
        })
        .collect();
    Ok(PanelCalibration {
        target_fpr: target,
        llr_max: lr.panel.llr_max,
        drift,
        jobs,
        max_jobs,
        miners: miner_rows,
        slash_threshold: rules.auto_slash_threshold(),
        replay,
        replay_max_disagree,
        replay_max_disagree_ids,
        cost: None,
    })
}

/// The key counted most often (ties: the first by name).
fn most(counts: &BTreeMap<&str, usize>) -> String {
    counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map_or_else(|| "—".to_string(), |(k, _)| (*k).to_string())
}

impl PanelCalibration {
    pub fn markdown(&self) -> String {
        let pct = |k: usize, n: usize| super::percent(k as f64 / n.max(1) as f64);
        let mut s = format!(
            "### `llm_suspect`: the suspect panel (target false-positive rate {})\n\nThresholds: `llr_max = {}`; drift allowances (nats per token; the largest single token's drift in brackets): {}\n\n",
            super::percent(self.target_fpr),
            self.llr_max,
            self.drift
                .iter()
                .map(|(n, a, m)| format!("`{n}` {a} ({m:.3})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        s += "| pairs | variant | n | `llm_suspect` | `llm_likelihood` | either | best fit | panel without its source |\n|---|---|---:|---:|---:|---:|---|---:|\n";
        for r in &self.jobs {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                match r.label {
                    Label::Honest => "honest",
                    Label::Cheat => "cheat",
                },
                r.variant,
                r.n,
                pct(r.suspect, r.n),
                pct(r.likelihood, r.n),
                pct(r.either, r.n),
                r.best,
                r.held_out.map_or("—".into(), |k| pct(k, r.n)),
            );
        }
        s += &format!(
            "\n### Per miner: sampled jobs until the decision engine slashes ({} simulated miners per row, at most {} jobs each; slash at {:.1e} per decision)\n\n| miners | variant | slashed | flagged at least once | median jobs to slash | 99th percentile | best fit at the slash |\n|---|---|---:|---:|---:|---:|---|\n",
            self.miners.first().map_or(0, |m| m.miners),
            self.max_jobs,
            self.slash_threshold
        );
        let jobs = |j: Option<usize>| j.map_or(format!("> {}", self.max_jobs), |j| j.to_string());
        for m in &self.miners {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                match m.label {
                    Label::Honest => "honest",
                    Label::Cheat => "cheat",
                },
                m.variant,
                m.slashed,
                m.flagged,
                jobs(m.median),
                jobs(m.p99),
                m.best
            );
        }
        s += &format!(
            "\n### Seed replay: the reference redraws each token from the job's seed\n\nHonest limits at the target rate: at most {} disagreeing tokens per text over the re-tokenized text, {} over the generated token ids.\n\n| pairs | variant | texts | re-tokenized: replay agrees | texts caught | generated ids: replay agrees | texts caught |\n|---|---|---:|---:|---:|---:|---:|\n",
            self.replay_max_disagree, self.replay_max_disagree_ids
        );
        for r in &self.replay {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                match r.label {
                    Label::Honest => "honest",
                    Label::Cheat => "cheat",
                },
                r.variant,
                r.texts,
                super::percent(r.agree as f64 / r.tokens.max(1) as f64),
                pct(r.caught, r.texts),
                super::percent(r.id_agree as f64 / r.id_tokens.max(1) as f64),
                pct(r.id_caught, r.texts)
            );
        }
        if let Some(c) = &self.cost {
            s += "\n";
            s += &c.markdown();
        }
        s
    }
}

/// What the panel costs on the reference host, measured on the fixture models.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// Texts timed, and the seconds scoring them alone took (the reference's forward
    /// pass and log-softmax, best of three).
    pub texts: usize,
    pub scoring_seconds: f64,
    /// Per suspect: its extra seconds over the same texts (best of three), and its
    /// parameters over the reference's (what a forward pass costs in proportion on a
    /// GPU; 0 for a sampler suspect).
    pub suspects: Vec<(String, f64, f64)>,
}

/// Times scoring `jobs` with the reference alone and each suspect's extra work.
pub fn cost(reference: &Scorer, jobs: &[ScoreJob<'_>], batch: usize) -> anyhow::Result<Cost> {
    let seqs: Vec<(Vec<u32>, usize)> = jobs
        .iter()
        .filter_map(|j| {
            let prompt = reference.prompter.prompt_ids(j.input).ok()?;
            let p = prompt.len();
            let seq: Vec<u32> = prompt
                .into_iter()
                .chain(reference.prompter.encode(j.text, false).ok()?)
                .collect();
            (seq.len() <= reference.model.config.max_position_embeddings).then_some((seq, p))
        })
        .collect();
    let chunks: Vec<Vec<(&[u32], usize)>> = seqs
        .chunks(batch.max(1))
        .map(|c| c.iter().map(|(s, p)| (s.as_slice(), *p)).collect())
        .collect();
    let best_of_three = |f: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let start = std::time::Instant::now();
            f()?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    let scoring_seconds = best_of_three(&|| {
        for c in &chunks {
            reference.log_prob_rows(c)?;
        }
        Ok(())
    })?;
    let params = |s: &Scorer| {
        let c = &s.model.config;
        let layers = c.num_hidden_layers as f64;
        let h = c.hidden_size as f64;
        let kv = (c.hidden_size / c.num_attention_heads
            * c.num_key_value_heads.unwrap_or(c.num_attention_heads)) as f64;
        layers * (2.0 * h * h + 2.0 * h * kv + 3.0 * h * c.intermediate_size as f64)
            + c.vocab_size as f64 * h
    };
    let reference_params = params(reference);
    let mut suspects = Vec::new();
    for s in &reference.panel.suspects {
        let (seconds, share) = match &s.kind {
            panel::Kind::Model(m) => (
                best_of_three(&|| {
                    for c in &chunks {
                        m.log_prob_rows(c)?;
                    }
                    Ok(())
                })?,
                params(m) / reference_params,
            ),
            panel::Kind::OffPrompt => {
                let all: Vec<(&[u32], usize)> = chunks.iter().flatten().copied().collect();
                let one = |c: &[(&[u32], usize)]| -> anyhow::Result<()> {
                    let empty = panel::empty_request(reference);
                    let moved: Vec<Vec<u32>> = c
                        .iter()
                        .map(|(s, p)| empty.iter().chain(&s[*p..]).copied().collect())
                        .collect();
                    let refs: Vec<(&[u32], usize)> =
                        moved.iter().map(|s| (s.as_slice(), empty.len())).collect();
                    reference.log_prob_rows(&refs)?;
                    Ok(())
                };
                (
                    best_of_three(&|| {
                        for c in all.chunks(batch.max(1)) {
                            one(c)?;
                        }
                        Ok(())
                    })?,
                    1.0,
                )
            }
            panel::Kind::Hotter(f) => {
                let rows: Vec<Vec<Vec<Vec<f32>>>> = chunks
                    .iter()
                    .map(|c| reference.log_prob_rows(c))
                    .collect::<candle_core::Result<_>>()?;
                let eos = reference.prompter.eos_id;
                (
                    best_of_three(&|| {
                        for chunk in &rows {
                            for job in chunk {
                                for row in job {
                                    std::hint::black_box(panel::log_tempered(row, 0.7 * f, eos));
                                }
                            }
                        }
                        Ok(())
                    })?,
                    0.0,
                )
            }
        };
        suspects.push((s.name.clone(), seconds, share));
    }
    Ok(Cost {
        texts: seqs.len(),
        scoring_seconds,
        suspects,
    })
}

impl Cost {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "### What the panel costs on the reference host ({} texts, the run's reference and its panel, CPU)\n\nScoring alone (forward pass and log-softmax): {:.3} s.\n\n| suspect | extra seconds | × scoring alone | parameters × the reference's |\n|---|---:|---:|---:|\n",
            self.texts, self.scoring_seconds
        );
        for (name, secs, share) in &self.suspects {
            s += &format!(
                "| `{name}` | {secs:.3} | {:.2} | {share:.2} |\n",
                secs / self.scoring_seconds.max(1e-12)
            );
        }
        s
    }
}

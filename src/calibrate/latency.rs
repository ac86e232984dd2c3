//! The latency checks against published honest runs (`fixtures/gpu-timings.toml`).
//!
//! Each run is one honest engine on one GPU: its published time against the physical
//! bound `checks::device::bound` gives for that job and card. Three things follow:
//!
//! - **The physical bound's measured rate.** No honest run may beat the bound; the runs
//!   that do are `latency`'s false positives, out of the runs (a per-miner rate: one
//!   engine on one card repeats its speed on every job).
//! - **The envelope.** Each run's efficiency is the bound's time over its time: the
//!   share of the bound's speed it reached. The fastest run of each category on each GPU
//!   becomes a row of `[latency] envelope` (`latency_envelope`).
//! - **The margin.** On a GPU where several engines were published, the fastest beat the
//!   next by some ratio. The largest such ratio, rounded up, is how much faster than the
//!   fastest published run an unpublished engine could plausibly be: `envelope_margin`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::checks::device::{self, LlmCost, TokenCounts, Workload};
use crate::rules::{EnvelopeRun, Rules};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    pub runs: Vec<TimingRun>,
}

/// One published honest run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingRun {
    pub id: String,
    pub gpu: String,
    pub categories: Vec<String>,
    pub engine: String,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub steps: Option<u32>,
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    pub rate: f64,
    pub unit: Unit,
    #[serde(default)]
    pub model: Option<RunModel>,
    pub source: String,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Unit {
    /// Denoising steps a second.
    #[serde(rename = "it/s")]
    StepsPerSecond,
    /// Seconds for the whole job.
    #[serde(rename = "s")]
    Seconds,
    /// Decode tokens a second.
    #[serde(rename = "tok/s")]
    TokensPerSecond,
}

/// An LLM run's own model.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunModel {
    pub active_params_b: f64,
    pub weight_bytes_per_token_gb: f64,
    pub embedding_bytes_gb: f64,
}

pub fn load(path: &Path) -> anyhow::Result<Timings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

impl TimingRun {
    /// The run's job and the seconds it took.
    fn job(&self) -> anyhow::Result<(Workload, f64)> {
        let bad = |what: &str| anyhow::anyhow!("run {}: {what}", self.id);
        anyhow::ensure!(
            self.rate.is_finite() && self.rate > 0.0,
            bad("rate must be > 0")
        );
        match (self.width, self.height, self.steps, self.output_tokens) {
            (Some(width), Some(height), Some(steps), None) => {
                let seconds = match self.unit {
                    Unit::StepsPerSecond => f64::from(steps) / self.rate,
                    Unit::Seconds => self.rate,
                    Unit::TokensPerSecond => return Err(bad("an image run's rate is it/s or s")),
                };
                Ok((
                    Workload::Sd {
                        width,
                        height,
                        steps,
                    },
                    seconds,
                ))
            }
            (None, None, None, Some(output)) => {
                anyhow::ensure!(
                    self.unit == Unit::TokensPerSecond,
                    bad("an LLM run's rate is tok/s")
                );
                Ok((
                    Workload::Llm(TokenCounts {
                        input: self.input_tokens.unwrap_or(0),
                        output,
                        exact: true,
                    }),
                    output as f64 / self.rate,
                ))
            }
            _ => Err(bad(
                "needs width, height and steps (an image) or output_tokens (an LLM)",
            )),
        }
    }
}

/// One run measured for one category.
#[derive(Debug, Clone, Serialize)]
pub struct RunMeasure {
    pub run: String,
    pub gpu: String,
    pub category: String,
    pub engine: String,
    pub seconds: f64,
    pub bound_s: f64,
    /// `bound_s / seconds`: the share of the physical bound's speed the run reached.
    pub efficiency: f64,
}

/// Every run against the physical bound of `rules`.
pub fn measure(rules: &Rules, timings: &Timings) -> anyhow::Result<Vec<RunMeasure>> {
    let mut out = Vec::new();
    for run in &timings.runs {
        let gpu = rules.gpus.gpus.get(&run.gpu).with_context(|| {
            format!("run {}: gpu {} is not in rules/gpus.toml", run.id, run.gpu)
        })?;
        let (work, seconds) = run.job()?;
        for cat_id in &run.categories {
            let category = rules
                .category(cat_id)
                .with_context(|| format!("run {}: unknown category {cat_id}", run.id))?;
            let llm = run.model.map(|m| LlmCost {
                active_params_b: m.active_params_b,
                weight_bytes_per_token_gb: m.weight_bytes_per_token_gb,
                embedding_bytes_gb: m.embedding_bytes_gb,
            });
            let bound = device::bound(rules, work, category, llm, &run.gpu, gpu)
                .with_context(|| format!("run {}: no physical bound for {cat_id}", run.id))?;
            out.push(RunMeasure {
                run: run.id.clone(),
                gpu: run.gpu.clone(),
                category: cat_id.clone(),
                engine: run.engine.clone(),
                seconds,
                bound_s: bound.bound_s,
                efficiency: bound.bound_s / seconds,
            });
        }
    }
    Ok(out)
}

/// On one GPU and category, the fastest engine against the next.
#[derive(Debug, Clone, Serialize)]
pub struct EngineGap {
    pub gpu: String,
    pub category: String,
    pub fastest: String,
    pub next: String,
    pub ratio: f64,
}

/// What `proctor calibrate --only latency` measured.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyCalibration {
    pub measures: Vec<RunMeasure>,
    pub gaps: Vec<EngineGap>,
    pub margin: f64,
    pub envelope: Vec<EnvelopeRun>,
    /// Published runs, and how many beat the physical bound.
    pub runs: usize,
    pub failures: usize,
}

pub fn calibrate(rules: &Rules, timings: &Timings) -> anyhow::Result<LatencyCalibration> {
    let measures = measure(rules, timings)?;
    // Per GPU and category, each engine's best.
    let mut by_group: BTreeMap<(&str, &str), BTreeMap<&str, f64>> = BTreeMap::new();
    for m in &measures {
        let e = by_group
            .entry((m.gpu.as_str(), m.category.as_str()))
            .or_default()
            .entry(m.engine.as_str())
            .or_insert(0.0);
        *e = e.max(m.efficiency);
    }
    let mut gaps = Vec::new();
    for ((gpu, category), engines) in &by_group {
        let mut ranked: Vec<(&str, f64)> = engines.iter().map(|(e, v)| (*e, *v)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        if let [(fastest, a), (next, b), ..] = ranked[..] {
            gaps.push(EngineGap {
                gpu: gpu.to_string(),
                category: category.to_string(),
                fastest: fastest.to_string(),
                next: next.to_string(),
                ratio: a / b,
            });
        }
    }
    let widest = gaps.iter().map(|g| g.ratio).fold(1.0, f64::max);
    // Rounded up to a tenth: a margin stays a margin.
    let margin = (widest * 10.0 - 1e-9).ceil() / 10.0;
    let mut best: BTreeMap<(&str, &str), &RunMeasure> = BTreeMap::new();
    for m in &measures {
        let slot = best
            .entry((m.category.as_str(), m.gpu.as_str()))
            .or_insert(m);
        if m.efficiency > slot.efficiency {
            *slot = m;
        }
    }
    let envelope = best
        .values()
        .map(|m| EnvelopeRun {
            category: m.category.clone(),
            gpu: m.gpu.clone(),
            // Rounded up: a faster envelope is the lenient one.
            efficiency: ((m.efficiency * 1e4).ceil() / 1e4).min(1.0),
            run: m.run.clone(),
        })
        .collect();
    let failures = timings
        .runs
        .iter()
        .filter(|r| measures.iter().any(|m| m.run == r.id && m.efficiency > 1.0))
        .count();
    Ok(LatencyCalibration {
        measures,
        gaps,
        margin,
        envelope,
        runs: timings.runs.len(),
        failures,
    })
}

impl LatencyCalibration {
    /// The 95 % bound of the physical bound's per-miner false-positive rate.
    pub fn upper_95(&self) -> f64 {
        crate::stats::upper_bound_95(self.failures, self.runs)
    }

    /// Every run's margin over the physical bound and its envelope, as markdown.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "### `latency` and `latency_envelope` (published honest runs)\n\n{} runs, {} faster than the physical bound (95 % bound of the per-miner rate {}). Envelope margin {} (the widest gap between two engines on one GPU: {}).\n\n| run | GPU | category | engine | published | physical bound | margin over the bound | fastest the envelope allows |\n|---|---|---|---|---:|---:|---:|---:|\n",
            self.runs,
            self.failures,
            super::percent(self.upper_95()),
            self.margin,
            self.gaps
                .iter()
                .max_by(|a, b| a.ratio.total_cmp(&b.ratio))
                .map_or("none".into(), |g| format!(
                    "{} over {} on {} for {}, {:.2}x",
                    g.fastest, g.next, g.gpu, g.category, g.ratio
                )),
        );
        for m in &self.measures {
            let envelope = self
                .envelope
                .iter()
                .find(|e| e.category == m.category && e.gpu == m.gpu)
                .map_or(f64::NAN, |e| {
                    m.bound_s / (e.efficiency * self.margin).min(1.0)
                });
            s += &format!(
                "| {} | {} | {} | {} | {:.4} s | {:.4} s | {:.2}x | {:.4} s |\n",
                m.run,
                m.gpu,
                m.category,
                m.engine,
                m.seconds,
                m.bound_s,
                m.seconds / m.bound_s,
                envelope
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings() -> Timings {
        load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gpu-timings.toml")).unwrap()
    }

    #[test]
    fn no_published_honest_run_beats_the_physical_bound() {
        let rules = Rules::embedded().unwrap();
        let c = calibrate(&rules, &timings()).unwrap();
        assert_eq!(c.failures, 0);
        for m in &c.measures {
            assert!(m.efficiency < 1.0, "{} beats the bound: {m:?}", m.run);
        }
    }

    #[test]
    fn the_margin_is_the_widest_engine_gap_rounded_up_and_the_envelope_the_fastest_run() {
        let rules = Rules::embedded().unwrap();
        let c = calibrate(&rules, &timings()).unwrap();
        let widest = c.gaps.iter().map(|g| g.ratio).fold(1.0, f64::max);
        assert!(
            c.margin >= widest && c.margin < widest + 0.1,
            "{}",
            c.margin
        );
        for e in &c.envelope {
            let fastest = c
                .measures
                .iter()
                .filter(|m| m.category == e.category && m.gpu == e.gpu)
                .map(|m| m.efficiency)
                .fold(0.0, f64::max);
            assert!(
                e.efficiency >= fastest && e.efficiency - fastest < 1e-4,
                "{e:?}"
            );
        }
    }

    #[test]
    fn the_shipped_envelope_is_this_calibration_s() {
        // rules/checks.toml holds what `proctor calibrate --only latency --write-rules`
        // wrote from the fixture: if either changes alone, this fails.
        let rules = Rules::embedded().unwrap();
        let c = calibrate(&rules, &timings()).unwrap();
        assert_eq!(rules.checks.latency.envelope, c.envelope);
        assert_eq!(rules.checks.latency.envelope_margin, c.margin);
    }
}

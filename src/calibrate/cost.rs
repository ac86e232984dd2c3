//! What verification costs in reference GPUs: the cost model of `proctor rules check`
//! (docs/PERFORMANCE.md, "What verification costs").
//!
//! A verified image job is re-run on the reference GPU; a verified LLM job is scored
//! there, teacher-forced: one prefill over the prompt and the miner's answer. Each
//! category's reference GPU-seconds a job come from the published timings
//! (`fixtures/gpu-timings.toml`, compiled in) and the physical bound
//! (`checks::device::bound`): the typical job's bound on the reference GPU over the
//! *least* efficient published engine of the category, because a reference host runs a
//! stock engine (a PyTorch pipeline), not the fastest one. The GPUs needed are then the
//! sampled jobs' GPU-seconds an hour over 3,600, at each sampling rate.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use super::latency::{self, Timings};
use crate::checks::device::{self, LlmCost, TokenCounts, Workload};
use crate::record::JobKind;
use crate::rules::Rules;

/// The published timings this binary was built with.
pub const TIMINGS: &str = include_str!("../../fixtures/gpu-timings.toml");

/// The GPU the cost model prices a reference re-run on: the slower H100 of the
/// published SD runs (their variant is not stated; see `fixtures/gpu-timings.toml`).
pub const REFERENCE_GPU: &str = "h100_pcie";

/// The sampling rates the table prices: the rules' base rate is 5 %; 100 % is where
/// every honest miner's rate would end if risk never decayed.
pub const RATES: [f64; 4] = [0.02, 0.05, 0.20, 1.0];

/// The typical job of each category the table prices, and where it comes from.
/// Images: the model list's defaults (`fixtures/heurist-models/models.json`,
/// `defaults`: width, height, num_inference_steps), the size a job gets when it does
/// not set one. LLMs: one Mixtral point of tokens, half prompt and half answer
/// (assumed: miners report no token counts).
pub fn typical_jobs() -> Vec<(&'static str, Workload)> {
    let sd = |width, height, steps| Workload::Sd {
        width,
        height,
        steps,
    };
    let llm = Workload::Llm(TokenCounts {
        input: 500,
        output: 500,
        exact: false,
    });
    vec![
        // The defaults of every sd15 model, of every sdxl10 model, and of FLUX.1-dev.
        ("sd15", sd(512, 768, 25)),
        ("sdxl", sd(680, 1024, 25)),
        ("flux", sd(680, 1024, 22)),
        // Assumed: 1,000 tokens, 500 in and 500 out.
        ("llama3_8b", llm),
    ]
}

/// One category's row.
#[derive(Debug, Clone, Serialize)]
pub struct CostRow {
    pub category: String,
    /// The typical job, in words.
    pub job: String,
    /// Reference GPU-seconds one verified job takes.
    pub gpu_seconds: f64,
    /// The published run whose efficiency priced it, or what was assumed.
    pub basis: String,
    /// Jobs an hour the network sends (settings), or `None`: the GPUs are then per
    /// 1,000 jobs an hour.
    pub demand_per_hour: Option<f64>,
    /// Reference GPUs needed at each of [`RATES`].
    pub gpus: Vec<f64>,
}

/// The cost table for the rules' categories above, at `demand_per_hour` (category →
/// jobs an hour; a category without one is priced per 1,000 jobs an hour).
pub fn cost_table(
    rules: &Rules,
    timings: &Timings,
    demand_per_hour: &BTreeMap<String, f64>,
) -> anyhow::Result<Vec<CostRow>> {
    let measures = latency::measure(rules, timings)?;
    let gpu = rules
        .gpus
        .gpus
        .get(REFERENCE_GPU)
        .with_context(|| format!("{REFERENCE_GPU} is not in rules/gpus.toml"))?;
    // The least efficient published engine of a category (a stock pipeline), and of
    // every image category for a prefill, which is compute-bound like a denoising step.
    let least = |pick: &dyn Fn(&latency::RunMeasure) -> bool| {
        measures
            .iter()
            .filter(|m| pick(m))
            .min_by(|a, b| a.efficiency.total_cmp(&b.efficiency))
    };
    let mut rows = Vec::new();
    for (cat_id, work) in typical_jobs() {
        let category = rules
            .category(cat_id)
            .with_context(|| format!("unknown category {cat_id}"))?;
        let (seconds, basis, job) = match (category.kind, work) {
            (
                JobKind::Sd,
                Workload::Sd {
                    width,
                    height,
                    steps,
                },
            ) => {
                let run = least(&|m| m.category == cat_id)
                    .with_context(|| format!("no published run of {cat_id}"))?;
                let bound = device::bound(rules, work, category, None, REFERENCE_GPU, gpu)
                    .with_context(|| format!("no physical bound for {cat_id}"))?;
                (
                    bound.bound_s / run.efficiency,
                    format!(
                        "{} ({}), {:.1} % of the bound",
                        run.run,
                        run.engine,
                        run.efficiency * 100.0
                    ),
                    format!("{width}x{height}, {steps} steps"),
                )
            }
            (JobKind::Llm, Workload::Llm(t)) => {
                let llm = rules
                    .models
                    .models
                    .values()
                    .filter(|m| m.category.as_str() == cat_id)
                    .find_map(LlmCost::of)
                    .with_context(|| format!("no model of {cat_id} has its size in the rules"))?;
                let run = least(&|m| {
                    rules
                        .category(&m.category)
                        .is_some_and(|c| c.kind == JobKind::Sd)
                })
                .context("no published image run")?;
                // Teacher forcing: every token in one forward pass, no decode step.
                let prefill = Workload::Llm(TokenCounts {
                    input: t.input + t.output,
                    output: 1,
                    exact: t.exact,
                });
                let bound = device::bound(rules, prefill, category, Some(llm), REFERENCE_GPU, gpu)
                    .with_context(|| format!("no physical bound for {cat_id}"))?;
                (
                    bound.bound_s / run.efficiency,
                    format!(
                        "a prefill at the least image engine's compute efficiency ({}, {:.1} %): assumed, no prefill timing is published",
                        run.run,
                        run.efficiency * 100.0
                    ),
                    format!(
                        "{} tokens scored ({} in, {} out)",
                        t.input + t.output,
                        t.input,
                        t.output
                    ),
                )
            }
            _ => anyhow::bail!("{cat_id}: the typical job is not of the category's kind"),
        };
        let demand = demand_per_hour.get(cat_id).copied();
        let jobs = demand.unwrap_or(1000.0);
        rows.push(CostRow {
            category: cat_id.to_owned(),
            job,
            gpu_seconds: seconds,
            basis,
            demand_per_hour: demand,
            gpus: RATES
                .iter()
                .map(|r| gpus_needed(jobs, *r, seconds))
                .collect(),
        });
    }
    Ok(rows)
}

/// Reference GPUs kept busy by `jobs_per_hour` jobs sampled at `rate`, each taking
/// `gpu_seconds`.
pub fn gpus_needed(jobs_per_hour: f64, rate: f64, gpu_seconds: f64) -> f64 {
    jobs_per_hour * rate * gpu_seconds / 3600.0
}

/// The timings compiled into this binary.
pub fn embedded_timings() -> anyhow::Result<Timings> {
    toml::from_str(TIMINGS).context("parsing the compiled-in fixtures/gpu-timings.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(demand: &[(&str, f64)]) -> Vec<CostRow> {
        let demand = demand.iter().map(|(c, d)| (c.to_string(), *d)).collect();
        cost_table(
            &Rules::embedded().unwrap(),
            &embedded_timings().unwrap(),
            &demand,
        )
        .unwrap()
    }

    #[test]
    fn gpus_scale_with_demand_rate_and_seconds() {
        assert_eq!(gpus_needed(3600.0, 0.05, 2.0), 0.05 * 2.0 * 3600.0 / 3600.0);
        assert_eq!(gpus_needed(7200.0, 1.0, 1.0), 2.0);
    }

    #[test]
    fn every_category_is_priced_from_a_published_run() {
        let rows = table(&[]);
        assert_eq!(rows.len(), typical_jobs().len());
        for r in &rows {
            assert!(r.gpu_seconds.is_finite() && r.gpu_seconds > 0.0, "{r:?}");
            assert_eq!(r.gpus.len(), RATES.len());
            assert!(r.gpus.windows(2).all(|w| w[0] < w[1]), "{r:?}");
        }
        let secs = |c: &str| rows.iter().find(|r| r.category == c).unwrap().gpu_seconds;
        // An SDXL image is more work than an SD1.5 one, and scoring 1,000 tokens on an
        // 8B model is less than either.
        assert!(secs("sdxl") > secs("sd15"));
        assert!(secs("llama3_8b") < secs("sd15"));
    }

    #[test]
    fn the_stock_engine_prices_a_re_run() {
        // SD1.5 at 512x768 and 25 steps, at the slowest published engine: H100 PCIe
        // PyTorch ran 54.5 steps/s at 512x512, so about 25 / 54.5 x 1.5 = 0.69 s; the
        // least efficient run of any card may be slower still, never faster.
        let r = &table(&[])[0];
        assert_eq!(r.category, "sd15");
        assert!(r.gpu_seconds >= 25.0 / 54.5 * 1.5 * 0.999, "{r:?}");
    }

    #[test]
    fn demand_replaces_the_per_thousand_default() {
        let per_thousand = table(&[]);
        let busy = table(&[("sdxl", 10_000.0)]);
        let (a, b) = (&per_thousand[1], &busy[1]);
        assert_eq!(a.category, "sdxl");
        assert_eq!(b.demand_per_hour, Some(10_000.0));
        for (x, y) in a.gpus.iter().zip(&b.gpus) {
            assert!((y / x - 10.0).abs() < 1e-9);
        }
    }
}

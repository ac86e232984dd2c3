//! `sampling.toml`: re-run rates and the deterrence cases `proctor rules check` verifies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::record::JobKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingRules {
    pub version: u32,
    pub base_rate: f64,
    pub floor: f64,
    pub ceiling: f64,
    /// The rate grows by `base_rate × weight` for each screen failure in excess of the
    /// allowance (see `sampling::MinerRisk`) and each flag staff confirmed.
    pub failed_check_weight: f64,
    pub flag_weight: f64,
    /// Each screened job takes `allowance_margin` times the honest failures expected
    /// of it (the sum of the per-job rates of the screen checks that judged it) off the
    /// miner's excess failures, and at least `min_allowance`: an honest miner's failures
    /// are paid off as they come, and a miner whose failures stop returns to the base
    /// rate after `excess / allowance` jobs.
    pub allowance_margin: f64,
    pub min_allowance: f64,
    /// The least rate of a miner staff asked more evidence of, for `evidence_days`.
    pub evidence_rate: f64,
    pub evidence_days: u32,
    pub deterrence: Deterrence,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deterrence {
    /// The fewest jobs a miner is assumed to hold in a slashing window.
    pub window_jobs_min: u32,
    pub categories: BTreeMap<CategoryId, DeterrenceCase>,
    /// The compute-saving cheats of each job kind, with the per-job detection
    /// calibration measured for each: every category of the kind is checked against
    /// each, unless the category lists its own.
    pub cheats: CheatsByKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheatsByKind {
    pub sd: Vec<CheatCase>,
    pub llm: Vec<CheatCase>,
}

/// A typical job of a category.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeterrenceCase {
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub steps: Option<u32>,
    #[serde(default)]
    pub tokens: Option<u32>,
    /// This category's own cheats, in place of its kind's.
    #[serde(default)]
    pub cheats: Option<Vec<CheatCase>>,
}

/// A cheat that saves compute, and how often it is caught.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheatCase {
    pub name: String,
    /// Share of the job's reward the cheat saves in compute.
    pub compute_saved_fraction: f64,
    /// Probability that a cheated job is caught where `detected_at` says: the share of
    /// cheated jobs calibration saw fail a check.
    pub detection_rate: f64,
    /// Where it is caught: on the re-run (of the sampled jobs only) or at screen (every
    /// job).
    #[serde(default)]
    pub detected_at: DetectedAt,
    /// Where `detection_rate` was measured.
    pub source: String,
    /// Why no check can catch it, where none can: `proctor rules check` names it as
    /// paying, and does not fail on it.
    #[serde(default)]
    pub out_of_reach: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectedAt {
    #[default]
    Rerun,
    Screen,
}

impl Deterrence {
    /// The cheats `category` (of `kind`) is checked against.
    pub fn cheats_of(&self, category: &str, kind: JobKind) -> &[CheatCase] {
        match self
            .categories
            .get(category)
            .and_then(|c| c.cheats.as_ref())
        {
            Some(own) => own,
            None => match kind {
                JobKind::Sd => &self.cheats.sd,
                JobKind::Llm => &self.cheats.llm,
            },
        }
    }
}

/// What `proctor calibrate` aims for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationRules {
    /// The per-job false-positive rate each calibrated check's thresholds must keep to
    /// on honest pairs.
    pub target_false_positive_rate: f64,
}

/// Validates what `sampling.toml` promises, against the rest of the set where it
/// refers to it; pushes each problem through `need`.
pub(super) fn validate(rules: &Rules, need: &mut impl FnMut(bool, String)) {
    let s = &rules.sampling;
    need(
        prob(s.floor) && s.floor <= s.base_rate && s.base_rate <= s.ceiling && s.ceiling <= 1.0,
        "sampling: need 0 < floor <= base_rate <= ceiling <= 1".into(),
    );
    need(
        s.failed_check_weight >= 0.0 && s.flag_weight >= 0.0,
        "sampling: weights must be >= 0".into(),
    );
    need(
        s.allowance_margin >= 1.0 && s.min_allowance > 0.0 && s.min_allowance < 1.0,
        "sampling: allowance_margin must be >= 1 and min_allowance in (0, 1)".into(),
    );
    need(
        prob(s.evidence_rate) && s.evidence_rate <= s.ceiling && s.evidence_days > 0,
        "sampling: need 0 < evidence_rate <= ceiling and evidence_days > 0".into(),
    );
    for (cat, d) in &s.deterrence.categories {
        let Some(category) = rules.models.categories.get(cat) else {
            need(
                false,
                format!("sampling.deterrence.categories.{cat}: unknown category"),
            );
            continue;
        };
        let shaped = match category.kind {
            JobKind::Sd => d.width.is_some() && d.height.is_some() && d.steps.is_some(),
            JobKind::Llm => d.tokens.is_some(),
        };
        need(
            shaped,
            format!(
                "sampling.deterrence.categories.{cat}: sd needs width, height, steps; llm needs tokens"
            ),
        );
        let cheats = s.deterrence.cheats_of(cat, category.kind);
        need(
            !cheats.is_empty(),
            format!("sampling.deterrence: no cheat to check {cat} against"),
        );
        for c in cheats {
            need(
                (0.0..=1.0).contains(&c.compute_saved_fraction)
                    && (0.0..=1.0).contains(&c.detection_rate),
                format!(
                    "sampling.deterrence: {cat}, {}: fractions must be in [0, 1]",
                    c.name
                ),
            );
        }
    }
    for (cat, c) in &rules.models.categories {
        need(
            !c.priced || s.deterrence.categories.contains_key(cat),
            format!("category {cat} has no sampling.deterrence case"),
        );
    }
}

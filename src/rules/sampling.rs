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
    /// The rate grows by `base_rate × weight` for each failed screen check and each
    /// flag staff confirmed.
    pub failed_check_weight: f64,
    pub flag_weight: f64,
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
}

/// A typical job of a category, and what cheating on it saves.
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
    /// Share of the job's reward the cheapest known cheat saves in compute.
    pub compute_saved_fraction: f64,
    /// Probability that a re-run of a cheated job is detected (from calibration).
    pub detection_rate: f64,
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
        need(
            (0.0..=1.0).contains(&d.compute_saved_fraction)
                && (0.0..=1.0).contains(&d.detection_rate),
            format!("sampling.deterrence.categories.{cat}: fractions must be in [0, 1]"),
        );
    }
    for (cat, c) in &rules.models.categories {
        need(
            !c.priced || s.deterrence.categories.contains_key(cat),
            format!("category {cat} has no sampling.deterrence case"),
        );
    }
}

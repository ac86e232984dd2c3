//! `slashing.toml`: the decision thresholds, the lifetime budget and what a slash takes.

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlashingRules {
    pub version: u32,
    /// Named in every slash id, so a policy change cannot collide with an old slash.
    pub rule_id: String,
    /// The probability that an honest miner is ever slashed automatically, per
    /// miner-year of `decisions_per_miner_year`.
    pub lifetime_false_slash_budget: f64,
    /// The most decisions the judge takes on one miner in a year: a bound on the looks
    /// the budget is spread over (see [`Rules::auto_slash_threshold`]).
    pub decisions_per_miner_year: f64,
    pub review_max_honest_probability: f64,
    /// A check carries a slash only where the miner failed it on at least this many
    /// times its worst honest configuration's measured rate
    /// ([`super::CheckPolicy::effect_floor`]).
    pub effect_margin: f64,
    /// The tail a slash reads is computed at this many times a check's worst measured
    /// rate ([`super::CheckPolicy::slash_rate`]): the one-decision p-value, and with it
    /// the lifetime budget, holds for honest miners whose true rate is up to this
    /// multiple of the measured one.
    pub tail_margin: f64,
    pub fraction: f64,
    pub scope: SlashScope,
    pub window_days: u32,
    /// A flag putting more than this many points at stake (waifu and llama together)
    /// is dismissed only by two reviewers ([`crate::review::Dismissal`]).
    pub second_reviewer_dismiss_above: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlashScope {
    /// Every job of the miner in the window that no earlier slash covered.
    MinerWindow,
    /// Only the jobs that failed a check.
    FailedJobs,
}

/// Validates what `slashing.toml` promises, against the rest of the set where it
/// refers to it; pushes each problem through `need`.
pub(super) fn validate(rules: &Rules, need: &mut impl FnMut(bool, String)) {
    let sl = &rules.slashing;
    need(!sl.rule_id.is_empty(), "slashing.rule_id is empty".into());
    need(
        prob(sl.lifetime_false_slash_budget)
            && sl.decisions_per_miner_year >= 1.0
            && sl.decisions_per_miner_year.is_finite()
            && rules.auto_slash_threshold() < sl.review_max_honest_probability
            && sl.review_max_honest_probability < 1.0,
        "slashing: need 0 < lifetime_false_slash_budget < 1, decisions_per_miner_year >= 1, and review_max_honest_probability in (budget / decisions, 1)".into(),
    );
    need(
        sl.effect_margin >= 1.0 && sl.effect_margin.is_finite(),
        "slashing.effect_margin must be at least 1: below it, honest miners at their measured rate would reach the floor".into(),
    );
    need(
        sl.tail_margin >= 1.0 && sl.tail_margin <= sl.effect_margin,
        "slashing.tail_margin must be at least 1 (below it, the tail would be priced under the measured rate) and at most effect_margin (the floor's share must stay above the rate the tail is priced at)".into(),
    );
    need(
        sl.second_reviewer_dismiss_above >= 0.0 && sl.second_reviewer_dismiss_above.is_finite(),
        "slashing.second_reviewer_dismiss_above must be a finite number of points, at least 0"
            .into(),
    );
    need(
        sl.fraction > 0.0 && sl.fraction <= 1.0,
        "slashing.fraction must be in (0, 1]".into(),
    );
}

//! Which jobs get a reference re-run, and whether the configured rates deter cheating.
//!
//! The draw is `BLAKE3.keyed_hash(secret, "proctor sample v1\0" || job_id)`, read as a
//! uniform number in [0, 1): miners cannot predict it without the secret, and every
//! replay of the same job (a redelivered message, an `audit` re-run) draws the same.

use serde::Serialize;

use crate::points;
use crate::record::JobKind;
use crate::rules::{Rules, SlashScope};

/// The sampling secret: a deployment setting, never a rule.
#[derive(Clone)]
pub struct SamplingSecret([u8; 32]);

impl SamplingSecret {
    /// Derives a key from any passphrase. Use a long random one in production.
    pub fn from_passphrase(passphrase: &str) -> SamplingSecret {
        SamplingSecret(blake3::derive_key(
            "heurist proctor 2026-11 sampling secret v1",
            passphrase.as_bytes(),
        ))
    }
}

impl std::fmt::Debug for SamplingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SamplingSecret(..)")
    }
}

/// What the sampler knows about a miner so far.
///
/// The judge's own flags do not count: when a flag is raised depends on when the judge
/// ran, and the draw must stay a function of the job stream, so that `proctor audit`
/// replays it. Staff decisions count: each flag they confirmed raises the rate, a
/// dismissal takes back the screen failures the flag cited, and "more evidence" holds
/// the rate at `evidence_rate` or above for a while.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MinerRisk {
    pub failed_checks: u32,
    /// Flags staff confirmed.
    pub review_flags: u32,
    /// Staff asked for more evidence, and the period has not ended.
    pub evidence_requested: bool,
}

/// The re-run probability for a miner's next job.
pub fn rate(rules: &Rules, risk: MinerRisk) -> f64 {
    let s = &rules.sampling;
    let raised = s.base_rate
        * (1.0
            + s.failed_check_weight * f64::from(risk.failed_checks)
            + s.flag_weight * f64::from(risk.review_flags));
    let raised = if risk.evidence_requested {
        raised.max(s.evidence_rate)
    } else {
        raised
    };
    raised.clamp(s.floor, s.ceiling)
}

/// The job's uniform draw in [0, 1).
pub fn draw(secret: &SamplingSecret, job_id: &str) -> f64 {
    let mut h = blake3::Hasher::new_keyed(&secret.0);
    h.update(b"proctor sample v1\0");
    h.update(job_id.as_bytes());
    let bytes = h.finalize();
    let word = u64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or([0; 8]));
    // The top 53 bits give every representable f64 step in [0, 1) equal weight.
    (word >> 11) as f64 / (1u64 << 53) as f64
}

pub fn is_sampled(secret: &SamplingSecret, job_id: &str, rate: f64) -> bool {
    draw(secret, job_id) < rate
}

/// One row of `proctor rules check`.
#[derive(Debug, Clone, Serialize)]
pub struct DeterrenceRow {
    pub category: String,
    /// Probability that a cheated job is re-run and caught: sampling floor × detection.
    pub p_caught: f64,
    /// Points of a typical job (R).
    pub reward: f64,
    /// Points a slash takes when caught (S).
    pub slash: f64,
    /// Compute saved by cheating, in points (C).
    pub saved: f64,
    /// p·(R+S): the expected loss per cheated job.
    pub expected_loss: f64,
    pub deters: bool,
}

/// For each category: does p·(R+S) ≥ C hold at the sampling floor?
pub fn deterrence_table(rules: &Rules) -> Vec<DeterrenceRow> {
    let d = &rules.sampling.deterrence;
    d.categories
        .iter()
        .filter_map(|(cat, case)| {
            let category = rules.category(cat)?;
            let reward = match category.kind {
                JobKind::Sd => points::image_points(
                    rules,
                    cat,
                    case.width.unwrap_or(0),
                    case.height.unwrap_or(0),
                    case.steps.unwrap_or(0),
                ),
                JobKind::Llm => points::llm_points(rules, cat, u64::from(case.tokens.unwrap_or(0))),
            };
            let jobs_slashed = match rules.slashing.scope {
                SlashScope::MinerWindow => f64::from(d.window_jobs_min),
                SlashScope::FailedJobs => 1.0,
            };
            let slash = rules.slashing.fraction * jobs_slashed * reward;
            let saved = case.compute_saved_fraction * reward;
            let p_caught = rules.sampling.floor * case.detection_rate;
            let expected_loss = p_caught * (reward + slash);
            Some(DeterrenceRow {
                category: cat.clone(),
                p_caught,
                reward,
                slash,
                saved,
                expected_loss,
                deters: expected_loss >= saved * (1.0 - 1e-12),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::embedded().unwrap()
    }

    #[test]
    fn the_draw_is_stable_and_secret_dependent() {
        let a = SamplingSecret::from_passphrase("a");
        let b = SamplingSecret::from_passphrase("b");
        assert_eq!(draw(&a, "job-1"), draw(&a, "job-1"));
        assert_ne!(draw(&a, "job-1"), draw(&b, "job-1"));
    }

    #[test]
    fn the_draw_is_uniform_enough() {
        let s = SamplingSecret::from_passphrase("uniformity");
        let n = 20_000;
        let hits = (0..n)
            .filter(|i| is_sampled(&s, &format!("job-{i}"), 0.05))
            .count();
        // 5% of 20,000 = 1,000, sd ≈ 31: six sigma either side.
        assert!((814..=1186).contains(&hits), "{hits}");
        let mean: f64 = (0..n).map(|i| draw(&s, &format!("j{i}"))).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }

    #[test]
    fn risk_raises_the_rate_within_floor_and_ceiling() {
        let r = rules();
        let base = rate(&r, MinerRisk::default());
        assert_eq!(base, r.sampling.base_rate);
        let risky = rate(
            &r,
            MinerRisk {
                failed_checks: 2,
                ..MinerRisk::default()
            },
        );
        assert!(risky > base);
        let very = rate(
            &r,
            MinerRisk {
                failed_checks: 1000,
                review_flags: 1000,
                evidence_requested: false,
            },
        );
        assert_eq!(very, r.sampling.ceiling);
        // Staff asking for more evidence holds the rate at evidence_rate or above.
        let asked = rate(
            &r,
            MinerRisk {
                evidence_requested: true,
                ..MinerRisk::default()
            },
        );
        assert_eq!(asked, r.sampling.evidence_rate.max(base));
    }

    #[test]
    fn the_shipped_rules_deter_every_category() {
        for row in deterrence_table(&rules()) {
            assert!(row.deters, "{row:?}");
        }
    }

    #[test]
    fn slashing_only_failed_jobs_makes_cheating_pay() {
        let mut r = rules();
        r.slashing.scope = SlashScope::FailedJobs;
        let failing: Vec<_> = deterrence_table(&r)
            .into_iter()
            .filter(|row| !row.deters)
            .collect();
        assert!(
            failing.iter().any(|row| row.category == "sdxl"),
            "{failing:?}"
        );
        // A disabled category earns nothing, so cheating on it gains nothing either.
        assert!(!failing.iter().any(|row| row.category == "flux"));
    }
}

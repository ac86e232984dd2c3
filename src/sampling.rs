//! Which jobs get a reference re-run, and whether the configured rates deter cheating.
//!
//! The draw is `BLAKE3.keyed_hash(secret, "proctor sample v1\0" || job_id)`, read as a
//! uniform number in [0, 1): miners cannot predict it without the secret, and every
//! replay of the same job (a redelivered message, an `audit` re-run) draws the same.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::points;
use crate::record::JobKind;
use crate::rules::{DetectedAt, Rules, SlashScope};

/// The sampling secret: a deployment setting, never a rule.
#[derive(Clone)]
pub struct SamplingSecret([u8; 32]);

/// BLAKE3's key-derivation context for the sampling key: public, like every KDF
/// context (the leak tests derive the key from their own passphrase with it).
pub const SAMPLING_KEY_CONTEXT: &str = "heurist proctor 2026-11 sampling secret v1";

impl SamplingSecret {
    /// Derives a key from any passphrase. Use a long random one in production.
    pub fn from_passphrase(passphrase: &str) -> SamplingSecret {
        SamplingSecret(blake3::derive_key(
            SAMPLING_KEY_CONTEXT,
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
/// **Screen failures decay.** `excess_failures` is a one-sided cumulative sum (CUSUM)
/// over the miner's screened jobs in order: each job adds its screen failures and takes
/// off its allowance ([`allowance`]: `allowance_margin` times the failures the screen
/// checks' priced rates expect of an honest job, at least `min_allowance`), never going
/// below zero. An honest miner failing at its priced rate drifts back to zero and stays
/// near the base rate; a miner failing far above it climbs, and returns to the base
/// rate once its failures stop. Each failure used to raise the rate for good, so every
/// honest miner drifted to re-running every job.
///
/// The judge's own flags do not count: when a flag is raised depends on when the judge
/// ran, and the draw must stay a function of the job stream, so that `proctor audit`
/// replays it. Staff decisions count: each flag they confirmed raises the rate, a
/// dismissal takes back the screen failures the flag cited, and "more evidence" holds
/// the rate at `evidence_rate` or above for a while.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MinerRisk {
    /// Screen failures in excess of the allowances of the miner's jobs so far.
    pub excess_failures: f64,
    /// Flags staff confirmed.
    pub confirmed_flags: u32,
    /// Staff asked for more evidence, and the period has not ended.
    pub evidence_requested: bool,
}

/// The re-run probability for a miner's next job.
pub fn rate(rules: &Rules, risk: MinerRisk) -> f64 {
    let s = &rules.sampling;
    let raised = s.base_rate
        * (1.0
            + s.failed_check_weight * risk.excess_failures.max(0.0)
            + s.flag_weight * f64::from(risk.confirmed_flags));
    let raised = if risk.evidence_requested {
        raised.max(s.evidence_rate)
    } else {
        raised
    };
    raised.clamp(s.floor, s.ceiling)
}

impl MinerRisk {
    /// The risk after one more screened job with `failures` screen failures and the
    /// allowance `allowance`.
    pub fn after(self, failures: u32, allowance: f64) -> MinerRisk {
        MinerRisk {
            excess_failures: step(self.excess_failures, failures, allowance),
            ..self
        }
    }
}

/// One step of the excess: `max(0, excess + failures − allowance)`. A non-finite
/// allowance counts as none.
pub fn step(excess: f64, failures: u32, allowance: f64) -> f64 {
    let allowance = if allowance.is_finite() {
        allowance.max(0.0)
    } else {
        0.0
    };
    (excess.max(0.0) + f64::from(failures) - allowance).max(0.0)
}

/// The failures a screened job may show before they raise its miner's rate:
/// `allowance_margin` times the sum of the per-job rates (at the largest honest
/// configuration's) of the screen checks that judged it, at least `min_allowance`.
/// Per-miner checks add nothing: their rate is per miner, not per job.
pub fn allowance(rules: &Rules, checks: &[crate::outcome::CheckResult]) -> f64 {
    let expected: f64 = checks
        .iter()
        .filter(|c| {
            !c.check.needs_reference() && c.outcome.status() != crate::outcome::Status::Inconclusive
        })
        .map(|c| expected_failures(rules, c.check))
        .sum();
    allowance_for(rules, expected)
}

/// The honest failures one judged job is expected to show on `check`: its priced
/// per-job rate, or nothing for a per-miner check. The one rule [`allowance`] and the
/// lifetime simulation both sum.
pub fn expected_failures(rules: &Rules, check: crate::outcome::CheckId) -> f64 {
    let p = rules.policy(check);
    if p.independent_across_jobs {
        p.worst_config_rate()
    } else {
        0.0
    }
}

/// The allowance of a job whose screen checks expect `expected` honest failures.
pub fn allowance_for(rules: &Rules, expected: f64) -> f64 {
    let s = &rules.sampling;
    (s.allowance_margin * expected).max(s.min_allowance)
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

/// One row of `proctor rules check`: one cheat on one category.
#[derive(Debug, Clone, Serialize)]
pub struct DeterrenceRow {
    pub category: String,
    pub cheat: String,
    /// Probability that a cheated job is caught: the re-run rate × its measured
    /// detection on a re-run, or the detection alone for a cheat caught at screen.
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
    /// Why no check catches it, where the rules say none can.
    pub out_of_reach: Option<String>,
}

impl DeterrenceRow {
    /// Whether `proctor rules check` fails on this row: the cheat pays, and the rules
    /// do not record it as out of reach.
    pub fn fails(&self) -> bool {
        !self.deters && self.out_of_reach.is_none()
    }

    /// What deterrence is left: `p(R+S) − C` (negative where the cheat pays).
    pub fn margin(&self) -> f64 {
        self.expected_loss - self.saved
    }

    /// The row's verdict as `proctor rules check` prints it, in agreement with
    /// [`DeterrenceRow::fails`].
    pub fn verdict(&self) -> String {
        match (&self.out_of_reach, self.deters) {
            (_, true) => "deters".to_owned(),
            (Some(why), false) => format!("pays, out of reach: {why}"),
            (None, false) => "CHEATING PAYS".to_owned(),
        }
    }
}

/// For each category and each of its cheats: does p·(R+S) ≥ C hold at the sampling
/// floor?
pub fn deterrence_table(rules: &Rules) -> Vec<DeterrenceRow> {
    rules
        .sampling
        .deterrence
        .categories
        .keys()
        .flat_map(|cat| deterrence_rows(rules, cat, rules.sampling.floor))
        .collect()
}

/// One category's cheats when a job is re-run with probability `rate`.
fn deterrence_rows(rules: &Rules, cat: &str, rate: f64) -> Vec<DeterrenceRow> {
    let d = &rules.sampling.deterrence;
    let (Some(case), Some(category)) = (d.categories.get(cat), rules.category(cat)) else {
        return Vec::new();
    };
    let reward = match category.kind {
        JobKind::Sd => points::image_points(
            rules,
            &cat.to_owned(),
            case.width.unwrap_or(0),
            case.height.unwrap_or(0),
            case.steps.unwrap_or(0),
        ),
        JobKind::Llm => {
            points::llm_points(rules, &cat.to_owned(), u64::from(case.tokens.unwrap_or(0)))
        }
    };
    let jobs_slashed = match rules.slashing.scope {
        SlashScope::MinerWindow => f64::from(d.window_jobs_min),
        SlashScope::FailedJobs => 1.0,
    };
    let slash = rules.slashing.fraction * jobs_slashed * reward;
    d.cheats_of(cat, category.kind)
        .iter()
        .map(|cheat| {
            let saved = cheat.compute_saved_fraction * reward;
            let p_caught = match cheat.detected_at {
                DetectedAt::Rerun => rate * cheat.detection_rate,
                DetectedAt::Screen => cheat.detection_rate,
            };
            let expected_loss = p_caught * (reward + slash);
            DeterrenceRow {
                category: cat.to_owned(),
                cheat: cheat.name.clone(),
                p_caught,
                reward,
                slash,
                saved,
                expected_loss,
                deters: expected_loss >= saved * (1.0 - 1e-12),
                out_of_reach: cheat.out_of_reach.clone(),
            }
        })
        .collect()
}

/// One row of the capacity table of `proctor rules check`.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityRow {
    /// The hosts that run the category's jobs.
    pub hosts: Vec<String>,
    /// Jobs per hour the network sends (settings).
    pub demand_per_hour: f64,
    /// Re-runs per hour the sampling policy asks for at the base rate.
    pub wanted_per_hour: f64,
    /// Re-runs per hour the hosts can do (concurrency × 3600 / seconds_per_job, a host
    /// serving several categories split by what each asks of it).
    pub capacity_per_hour: f64,
    /// The share of wanted re-runs that happen: the rest are shed.
    pub served_share: f64,
    /// Deterrence at the sampling floor times `served_share`: the row of the cheat
    /// with the least margin left (of those a check can catch).
    pub deterrence: DeterrenceRow,
}

/// What the capacity table needs to know of a reference host (the deployment's
/// `[[reference.hosts]]`, taken apart by the caller: the policy reads no settings).
#[derive(Debug, Clone, PartialEq)]
pub struct HostCapacity {
    pub name: String,
    /// The kind of job it runs: images (a txt2img server) or LLM scoring.
    pub runs: JobKind,
    /// The model ids or category names whose jobs it runs.
    pub models: Vec<String>,
    /// Jobs it runs at once.
    pub concurrency: usize,
    /// The reference GPU-seconds one job is expected to take.
    pub seconds_per_job: f64,
}

/// For each category with a demand (jobs per hour the network sends, by category): the
/// re-runs its sampling asks for, what the reference hosts can do, and whether
/// deterrence holds at the rate that capacity leaves (the floor, scaled down by the
/// share of re-runs served; canaries and at-risk miners go first, so an ordinary
/// cheater is the one shed).
pub fn capacity_table(
    rules: &Rules,
    demand_per_hour: &BTreeMap<String, f64>,
    reference_hosts: &[HostCapacity],
) -> Vec<CapacityRow> {
    // Without hosts the references come from the bucket, from another system.
    if reference_hosts.is_empty() {
        return Vec::new();
    }
    let wanted: BTreeMap<&str, f64> = demand_per_hour
        .iter()
        .map(|(c, d)| (c.as_str(), d * rules.sampling.base_rate))
        .collect();
    let categories_of = |h: &HostCapacity| -> Vec<&str> {
        wanted
            .keys()
            .copied()
            .filter(|c| {
                let kind_fits = rules.category(c).is_some_and(|cat| cat.kind == h.runs);
                kind_fits
                    && h.models.iter().any(|m| {
                        m == c || rules.model(m).is_some_and(|x| x.category.as_str() == *c)
                    })
            })
            .collect()
    };
    let mut capacity: BTreeMap<&str, f64> = BTreeMap::new();
    let mut hosts: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for h in reference_hosts {
        let cats = categories_of(h);
        let total: f64 = cats.iter().map(|c| wanted[c]).sum();
        let per_hour = h.concurrency as f64 * 3600.0 / h.seconds_per_job;
        for c in cats {
            let share = if total > 0.0 { wanted[c] / total } else { 0.0 };
            *capacity.entry(c).or_default() += per_hour * share;
            hosts.entry(c).or_default().push(h.name.clone());
        }
    }
    wanted
        .iter()
        .filter_map(|(&c, &want)| {
            let cap = capacity.get(c).copied().unwrap_or(0.0);
            let served_share = if want > 0.0 {
                (cap / want).min(1.0)
            } else {
                1.0
            };
            Some(CapacityRow {
                hosts: hosts.remove(c).unwrap_or_default(),
                demand_per_hour: demand_per_hour[c],
                wanted_per_hour: want,
                capacity_per_hour: cap,
                served_share,
                deterrence: deterrence_rows(rules, c, rules.sampling.floor * served_share)
                    .into_iter()
                    .filter(|r| r.out_of_reach.is_none())
                    .min_by(|a, b| a.margin().total_cmp(&b.margin()))?,
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
                excess_failures: 2.0,
                ..MinerRisk::default()
            },
        );
        assert!(risky > base);
        let very = rate(
            &r,
            MinerRisk {
                excess_failures: 1000.0,
                confirmed_flags: 1000,
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
    fn the_shipped_rules_deter_every_cheat_a_check_can_catch() {
        let table = deterrence_table(&rules());
        for row in &table {
            assert!(!row.fails(), "{row:?}");
        }
        // 8-bit weights pay, and the table names them.
        let paying: Vec<&DeterrenceRow> = table.iter().filter(|r| !r.deters).collect();
        assert!(
            !paying.is_empty() && paying.iter().all(|r| r.cheat == "8-bit weights"),
            "{paying:?}"
        );
        assert!(paying.iter().all(|r| r.out_of_reach.is_some()));
    }

    #[test]
    fn deterrence_uses_each_cheat_s_measured_detection() {
        // At a floor of 2 %, the reused LLM answer (caught on a third of its re-runs)
        // pays: 0.02 x 0.333 x 101 R = 0.67 R < R. The old table's assumed 90 %
        // detection said every category deterred.
        let mut r = rules();
        r.sampling.floor = 0.02;
        let bad: Vec<DeterrenceRow> = deterrence_table(&r)
            .into_iter()
            .filter(|x| x.fails())
            .collect();
        assert!(!bad.is_empty(), "nothing pays at 2 %");
        assert!(
            bad.iter().all(|x| x.cheat.starts_with("reused answer")),
            "{bad:?}"
        );
        let row = &bad[0];
        assert!((row.p_caught - 0.02 * 0.333).abs() < 1e-12, "{row:?}");
        // A cheat caught at screen is caught on every job, whatever the re-run rate.
        let mut r = rules();
        r.sampling.floor = 1e-6;
        for c in &mut r.sampling.deterrence.cheats.llm {
            c.detected_at = crate::rules::DetectedAt::Screen;
        }
        for row in deterrence_table(&r)
            .iter()
            .filter(|x| x.category == "llama3_8b")
        {
            assert!(!row.fails(), "{row:?}");
        }
    }

    #[test]
    fn an_honest_miner_s_failures_are_paid_off_and_a_cheater_s_climb_then_come_down() {
        let r = rules();
        let allowance = 3.0 * 1e-3;
        // Honest: one screen failure in 1,000 jobs, a third of the allowance. The count
        // this replaced reached the ceiling after 19 failures (19,000 jobs).
        let mut risk = MinerRisk::default();
        let mut highest: f64 = 0.0;
        for j in 0..200_000u32 {
            risk = risk.after(u32::from(j % 1000 == 999), allowance);
            highest = highest.max(rate(&r, risk));
        }
        assert!(
            highest <= r.sampling.base_rate * 2.0 + 1e-12,
            "an honest miner's rate reached {highest}"
        );
        // A cheater failing one job in five climbs to the ceiling within 200 jobs ...
        let mut risk = MinerRisk::default();
        for j in 0..200u32 {
            risk = risk.after(u32::from(j % 5 == 0), allowance);
        }
        assert_eq!(rate(&r, risk), r.sampling.ceiling);
        // ... and once its failures stop, it is back at the base rate after
        // excess / allowance jobs.
        let jobs = (risk.excess_failures / allowance).ceil() as u32;
        for _ in 0..jobs {
            risk = risk.after(0, allowance);
        }
        assert_eq!(rate(&r, risk), r.sampling.base_rate);
        assert_eq!(risk.excess_failures, 0.0);
    }

    #[test]
    fn a_job_s_allowance_is_the_margin_times_its_screen_checks_rates() {
        use crate::outcome::{CheckId, CheckResult, Outcome};
        let r = rules();
        let judged = |check| CheckResult {
            check,
            outcome: Outcome::pass(()),
        };
        // No independent screen check: the least allowance.
        assert_eq!(allowance(&r, &[]), r.sampling.min_allowance);
        // device_known (0.05 per job, assumed) counts; a per-miner check and a
        // reference check do not; an inconclusive one did not judge.
        let checks = [
            judged(CheckId::DeviceKnown),
            judged(CheckId::Latency),
            judged(CheckId::ImageSimilarity),
            CheckResult {
                check: CheckId::OutputDecode,
                outcome: Outcome::inconclusive("no object"),
            },
        ];
        let want = r.sampling.allowance_margin * r.policy(CheckId::DeviceKnown).worst_config_rate();
        assert!((allowance(&r, &checks) - want).abs() < 1e-15);
        assert_eq!(
            step(0.5, 0, f64::NAN),
            0.5,
            "a non-finite allowance pays nothing"
        );
        assert_eq!(step(0.5, 0, 1.0), 0.0, "never below zero");
        assert_eq!(step(0.0, 2, 0.5), 1.5);
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

    fn host(name: &str, models: &[&str], concurrency: usize, seconds: f64) -> HostCapacity {
        HostCapacity {
            name: name.into(),
            runs: JobKind::Sd,
            models: models.iter().map(|m| m.to_string()).collect(),
            concurrency,
            seconds_per_job: seconds,
        }
    }

    #[test]
    fn capacity_below_demand_lowers_the_rate_until_cheating_pays() {
        let rules = rules();
        // sd15 wants 100,000 x 0.05 = 5,000 re-runs an hour.
        let demand = BTreeMap::from([("sd15".to_owned(), 100_000.0)]);
        assert!(
            capacity_table(&rules, &demand, &[]).is_empty(),
            "no hosts, no table"
        );
        // One host by model id, one by category, the second shared with sdxl (no
        // demand): 2 x 3600 / 6 + 1 x 3600 / 4 = 2,100 an hour.
        let mut hosts = vec![
            host("a", &["ChilloutMix"], 2, 6.0),
            host("b", &["sd15", "sdxl"], 1, 4.0),
        ];
        let rows = capacity_table(&rules, &demand, &hosts);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.hosts, ["a", "b"]);
        assert!((r.wanted_per_hour - 5_000.0).abs() < 1e-9);
        assert!((r.capacity_per_hour - 2_100.0).abs() < 1e-9);
        assert!((r.served_share - 0.42).abs() < 1e-12);
        let full = deterrence_table(&rules)
            .into_iter()
            .find(|d| d.category == "sd15")
            .unwrap();
        assert!((r.deterrence.p_caught - full.p_caught * 0.42).abs() < 1e-12);
        // Enough hosts: the whole floor again.
        hosts.push(host("c", &["sd15"], 8, 4.0));
        let r = &capacity_table(&rules, &demand, &hosts)[0];
        assert_eq!(r.served_share, 1.0);
        assert_eq!(r.deterrence.deters, full.deters);
        // A host that is a scorer does not run SD jobs.
        let scorer = HostCapacity {
            runs: JobKind::Llm,
            ..host("llm", &["sd15"], 8, 1.0)
        };
        let r = &capacity_table(&rules, &demand, &[scorer])[0];
        assert!(r.hosts.is_empty() && r.served_share == 0.0 && !r.deterrence.deters);
    }
}

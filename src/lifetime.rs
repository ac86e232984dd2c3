//! The lifetime false-slash bound: how likely an honest miner is to be slashed, ever,
//! over a year of traffic, through every decision the judge takes.
//!
//! **The guarantee is a union bound.** Each decision slashes only when the miner's
//! honest probability is at most `Rules::auto_slash_threshold`, the lifetime budget
//! spread over `decisions_per_miner_year`. That probability is a valid p-value (the
//! strongest slashing check's binomial tail, Bonferroni-corrected for how many such
//! checks judged the miner, each at a rate no lower than its measured 95 % bound), so
//! each decision slashes an honest miner with probability at most the threshold, and a
//! year of decisions at most the budget, however the decisions overlap.
//!
//! **The simulation checks it,** and shows how loose it is. An honest miner of the
//! stated traffic fails each slashing check at that check's rate (the worst an honest
//! miner may do under the rules' promise), with checks that judge the same output
//! failing together through a shared cause; its re-run sampling rises with its screen
//! failures and decays as its jobs pay them off, as `case::Sampler` moves it (the decay
//! followed at least daily); and after every failure the judge decides on the
//! last `window_days` of evidence with [`crate::decide::assess_counts`], the rule
//! `decide` applies. Between failures the evidence only weakens (more judged jobs, the
//! same failures), so the decisions right after failures are the ones that can slash.
//!
//! Failures are drawn as Poisson processes over continuous time (job-level draws at
//! 2,000 jobs a day would cost 100x more for the same answer); a check's judged jobs in
//! the window are the expected count under the sampling rate in force, not a draw.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::decide::{self, Action};
use crate::outcome::CheckId;
use crate::rules::Rules;
use crate::sampling::{self, MinerRisk};

/// Which stage judges a check: every job (screen), or the re-run (sampled) jobs only.
pub use crate::case::Stage;

/// A check the simulated miner can fail.
#[derive(Debug, Clone, Serialize)]
pub struct SimCheck {
    pub check: CheckId,
    pub stage: Stage,
    /// The share of the miner's jobs (of the stage) the check judges.
    pub share: f64,
    /// Its honest failure rate: per judged job, or per miner for a check that counts
    /// once.
    pub rate: f64,
}

/// A cause that fails several checks on the same job at once (an odd text fails the
/// rank and unlikely-token checks together). Its failures are part of each member's
/// rate, not on top of it: a member fails on its own only at what is left.
#[derive(Debug, Clone, Serialize)]
pub struct SharedCause {
    pub checks: Vec<CheckId>,
    pub stage: Stage,
    /// The share of the miner's jobs it can strike: jobs every member judges.
    pub share: f64,
    /// Per job it can strike.
    pub rate: f64,
}

/// A miner's year: honest, unless `cheat` says otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub jobs_per_day: f64,
    pub days: f64,
    pub checks: Vec<SimCheck>,
    pub shared: Vec<SharedCause>,
    /// Honest failures that cluster by miner: this share of the miners (one GPU model,
    /// one driver) fails every check `factor` times as often as the others, for the
    /// whole year.
    #[serde(default)]
    pub drifting: Option<Drifting>,
    /// A cheater: the share of its jobs it cheats on, and the check that catches them.
    #[serde(default)]
    pub cheat: Option<Cheat>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Drifting {
    pub share: f64,
    pub factor: f64,
}

/// A miner that cheats on `share` of its jobs; `check` fails a cheated job with
/// probability `detection` (per judged job, as calibration measured it), on top of its
/// honest failures on the others.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cheat {
    pub check: CheckId,
    pub share: f64,
    pub detection: f64,
}

/// The traffic the rules' budget is stated for: 2,000 jobs a day for a year.
pub const JOBS_PER_DAY: f64 = 2000.0;

impl Scenario {
    /// An image miner: every check an SD job meets that can slash, or that raises its
    /// sampling rate, at the rates the rules promise. Its one slashing check per job is
    /// the image comparison.
    pub fn sd(rules: &Rules) -> Scenario {
        Scenario {
            name: "image miner".into(),
            jobs_per_day: JOBS_PER_DAY,
            days: 365.0,
            checks: slashing(
                rules,
                vec![
                    (CheckId::ImageSimilarity, Stage::Rerun, 1.0),
                    (CheckId::OutputSize, Stage::Screen, 1.0),
                    (CheckId::OutputDecode, Stage::Screen, 1.0),
                    (CheckId::Latency, Stage::Screen, 1.0),
                ],
            ),
            shared: Vec::new(),
            drifting: None,
            cheat: None,
        }
    }

    /// An LLM miner with `greedy_share` of its jobs below the likelihood check's
    /// temperature. The token checks that judge the same job fail together as often as
    /// the rarest of them can (the most dependence their rates allow): on sampled jobs
    /// the likelihood, argmax-share, EOS and early-end checks; on greedy ones the rank,
    /// unlikely-token, EOS and early-end checks.
    pub fn llm(rules: &Rules, greedy_share: f64) -> Scenario {
        let sampled = 1.0 - greedy_share;
        let wanted = vec![
            (CheckId::LlmLikelihood, Stage::Rerun, sampled),
            (CheckId::LlmSuspect, Stage::Rerun, sampled),
            (CheckId::LlmGreedyShare, Stage::Rerun, sampled),
            (CheckId::LlmEosSkipped, Stage::Rerun, 1.0),
            (CheckId::LlmEarlyEnd, Stage::Rerun, 1.0),
            (CheckId::LlmRank, Stage::Rerun, greedy_share),
            (CheckId::LlmUnlikelyTokens, Stage::Rerun, greedy_share),
            (CheckId::Latency, Stage::Screen, 1.0),
        ];
        let checks = slashing(rules, wanted);
        let rate = |c: CheckId| checks.iter().find(|x| x.check == c).map_or(0.0, |x| x.rate);
        let cause = |members: [CheckId; 4], share: f64| {
            // A cause may strike a job at most as often as its rarest member fails;
            // the EOS and early-end checks belong to both causes, whose strikes together
            // stay within their rate (checked in `one_year`, which never runs a
            // member's own process below zero).
            let rarest = members.iter().map(|c| rate(*c)).fold(1.0, f64::min);
            SharedCause {
                checks: members.to_vec(),
                stage: Stage::Rerun,
                share,
                rate: rarest,
            }
        };
        let shared = [
            cause(
                [
                    CheckId::LlmLikelihood,
                    CheckId::LlmGreedyShare,
                    CheckId::LlmEosSkipped,
                    CheckId::LlmEarlyEnd,
                ],
                sampled,
            ),
            cause(
                [
                    CheckId::LlmRank,
                    CheckId::LlmUnlikelyTokens,
                    CheckId::LlmEosSkipped,
                    CheckId::LlmEarlyEnd,
                ],
                greedy_share,
            ),
        ]
        .into_iter()
        .filter(|c| c.share > 0.0)
        .collect();
        Scenario {
            name: format!("LLM miner, {:.0} % greedy jobs", greedy_share * 100.0),
            jobs_per_day: JOBS_PER_DAY,
            days: 365.0,
            checks,
            shared,
            drifting: None,
            cheat: None,
        }
    }
}

impl Scenario {
    /// The same miner, honest, failing every check `factor` times as often as the
    /// rules price it (at most every job): a calibration that measured its rates that
    /// many times too low, or one GPU's systematic drift that the calibration's engines
    /// did not show.
    pub fn miscalibrated(mut self, factor: f64) -> Scenario {
        for c in &mut self.checks {
            c.rate = (c.rate * factor).min(1.0);
        }
        for c in &mut self.shared {
            c.rate = (c.rate * factor).min(1.0);
        }
        self.name = format!("{}, true rates {factor}x the priced", self.name);
        self
    }

    /// The same miners, `share` of them failing every check `factor` times as often
    /// as the rules price it, for the whole year: honest failures clustered by miner.
    pub fn drifting(mut self, share: f64, factor: f64) -> Scenario {
        self.drifting = Some(Drifting { share, factor });
        self.name = format!(
            "{}, {:.0} % of miners at {factor}x the priced rates",
            self.name,
            share * 100.0
        );
        self
    }

    /// The same miner, cheating on `share` of its jobs, each caught by `check` with
    /// probability `detection`. The check must be one the scenario judges.
    pub fn cheating(mut self, check: CheckId, share: f64, detection: f64) -> Scenario {
        self.cheat = Some(Cheat {
            check,
            share,
            detection,
        });
        for c in self.checks.iter_mut().filter(|c| c.check == check) {
            c.rate = share * detection + (1.0 - share) * c.rate;
        }
        self.name = format!(
            "{}, cheating on {:.0} % of jobs ({} catches {:.0} %)",
            self.name,
            share * 100.0,
            check.as_str(),
            detection * 100.0
        );
        self
    }

    /// The failures a screened job may show before they raise the miner's sampling
    /// rate (`sampling::allowance` for the checks this miner meets at screen).
    fn screen_allowance(&self, rules: &Rules) -> f64 {
        let expected = self
            .checks
            .iter()
            .filter(|c| c.stage == Stage::Screen)
            .map(|c| c.share * sampling::expected_failures(rules, c.check))
            .sum();
        sampling::allowance_for(rules, expected)
    }
}

/// The checks of `wanted`, each at the rate the engine prices it at. Checks that cannot slash are
/// kept too: screen failures raise the sampling rate, so they shape the evidence.
fn slashing(rules: &Rules, wanted: Vec<(CheckId, Stage, f64)>) -> Vec<SimCheck> {
    wanted
        .into_iter()
        .filter(|(_, _, share)| *share > 0.0)
        .map(|(check, stage, share)| SimCheck {
            check,
            stage,
            share,
            rate: rules.policy(check).worst_config_rate(),
        })
        .collect()
}

/// The outcome of simulating many honest miner-years.
#[derive(Debug, Clone, Serialize)]
pub struct Simulated {
    pub scenario: String,
    pub miners: u64,
    /// Miners slashed at least once.
    pub slashed: u64,
    /// Miners flagged for review at least once.
    pub flagged: u64,
    /// Decisions taken (one after every failure).
    pub decisions: u64,
    /// The per-decision slash threshold the run used.
    pub threshold: f64,
    /// The day of each slash, in the order simulated.
    pub slash_days: Vec<f64>,
    /// The check whose tail carried each slash (the strongest slashing one), in the
    /// same order.
    pub slashed_by: Vec<CheckId>,
    /// The share of its jobs a miner had re-run, averaged over the miner-years: what
    /// the sampling policy costs in reference GPUs for such miners.
    pub mean_sampling_rate: f64,
    /// The same over the miners that fail no per-miner screen check (those that do fail
    /// it on every job, and are re-run on every job under any rule).
    pub mean_sampling_rate_clean: f64,
}

impl Simulated {
    /// The share of miner-years with a slash, and its one-sided 95 % upper bound.
    pub fn rate(&self) -> (f64, f64) {
        (
            self.slashed as f64 / self.miners.max(1) as f64,
            crate::stats::upper_bound_95(self.slashed as usize, self.miners as usize),
        )
    }

    /// The day by which a share `q` of all the miners simulated was slashed; `None`
    /// when fewer were.
    pub fn days_to_slash(&self, q: f64) -> Option<f64> {
        let mut days = self.slash_days.clone();
        days.sort_by(f64::total_cmp);
        let k = ((q * self.miners as f64).ceil() as usize).max(1);
        days.get(k - 1).copied()
    }
}

/// When the judge decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decisions {
    /// After every failure, as the pipeline does: the lifetime question.
    AfterEveryFailure,
    /// Once, on the window ending at this day: whether one decision's honest probability
    /// is a valid p-value (slashes an honest miner with at most the threshold's chance),
    /// which the union bound rests on.
    OnceAt(f64),
}

/// Simulates `miners` honest miner-years of `scenario` under `rules`, from `seed`,
/// deciding after every failure.
pub fn simulate(rules: &Rules, scenario: &Scenario, miners: u64, seed: u64) -> Simulated {
    simulate_deciding(rules, scenario, miners, seed, Decisions::AfterEveryFailure)
}

/// [`simulate`], deciding as `when` says.
pub fn simulate_deciding(
    rules: &Rules,
    scenario: &Scenario,
    miners: u64,
    seed: u64,
    when: Decisions,
) -> Simulated {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut slashed, mut flagged, mut decisions) = (0, 0, 0);
    let (mut slash_days, mut slashed_by, mut rate_sum) = (Vec::new(), Vec::new(), 0.0);
    let (mut clean_sum, mut clean) = (0.0, 0u64);
    let drifted = scenario
        .drifting
        .map(|d| (d.share, scenario.clone().miscalibrated(d.factor)));
    for _ in 0..miners {
        let this = match &drifted {
            Some((share, drifted)) if rng.random::<f64>() < *share => drifted,
            _ => scenario,
        };
        let year = one_year(rules, this, &mut rng, when);
        slashed += u64::from(year.slashed_at.is_some());
        slash_days.extend(year.slashed_at);
        slashed_by.extend(year.slashed_by);
        flagged += u64::from(year.flagged);
        decisions += year.decisions;
        rate_sum += year.mean_rate;
        if !year.fails_per_miner_screen {
            clean_sum += year.mean_rate;
            clean += 1;
        }
    }
    Simulated {
        scenario: scenario.name.clone(),
        miners,
        slashed,
        flagged,
        decisions,
        threshold: rules.auto_slash_threshold(),
        slash_days,
        slashed_by,
        mean_sampling_rate: rate_sum / miners.max(1) as f64,
        mean_sampling_rate_clean: clean_sum / clean.max(1) as f64,
    }
}

struct Year {
    /// The day of the slash, if there was one.
    slashed_at: Option<f64>,
    /// The check that carried it.
    slashed_by: Option<CheckId>,
    flagged: bool,
    decisions: u64,
    /// The re-run rate averaged over the days simulated.
    mean_rate: f64,
    /// Whether the miner fails a per-miner screen check (on every job).
    fails_per_miner_screen: bool,
}

/// A failure process: the checks it fails, where and how often.
struct Process {
    checks: Vec<usize>,
    stage: Stage,
    /// Failures per day at a sampling rate of 1 (re-run) or always (screen).
    per_day: f64,
}

fn one_year(rules: &Rules, s: &Scenario, rng: &mut ChaCha8Rng, when: Decisions) -> Year {
    let end = match when {
        Decisions::AfterEveryFailure => s.days,
        Decisions::OnceAt(day) => day.min(s.days),
    };
    let window = f64::from(rules.slashing.window_days);
    let n = s.checks.len();
    let index = |c: CheckId| s.checks.iter().position(|x| x.check == c);
    // Checks that count once: the miner either always fails them or never does.
    let mut always_fails = vec![false; n];
    let mut processes = Vec::new();
    // Failures a check gets from shared causes, per day at a sampling rate of 1: they
    // are part of its rate, so its own process runs at what is left.
    let mut from_causes = vec![0.0; n];
    for cause in &s.shared {
        let members: Vec<usize> = cause.checks.iter().filter_map(|c| index(*c)).collect();
        let per_day = s.jobs_per_day * cause.share * cause.rate;
        for &i in &members {
            from_causes[i] += per_day;
        }
        if members.len() > 1 {
            processes.push(Process {
                checks: members,
                stage: cause.stage,
                per_day,
            });
        }
    }
    for (i, c) in s.checks.iter().enumerate() {
        if rules.policy(c.check).independent_across_jobs {
            processes.push(Process {
                checks: vec![i],
                stage: c.stage,
                per_day: (s.jobs_per_day * c.share * c.rate - from_causes[i]).max(0.0),
            });
        } else {
            always_fails[i] = rng.random::<f64>() < c.rate;
        }
    }
    // A per-miner failure at screen fails every job from the first: it raises the
    // sampling rate to its ceiling at once, and keeps it there. Only screen failures
    // raise it (`case::screen_failures`).
    let screen_always_fails = always_fails
        .iter()
        .zip(&s.checks)
        .any(|(f, c)| *f && c.stage == Stage::Screen);
    let mut risk = MinerRisk {
        excess_failures: if screen_always_fails { 1e12 } else { 0.0 },
        ..MinerRisk::default()
    };
    // The excess decays as jobs are screened: each pays its allowance.
    let paid_per_day = s.jobs_per_day * s.screen_allowance(rules);
    let (mut paid_until, mut next_tick) = (0.0, 1.0);
    let mut rate = sampling::rate(rules, risk);
    // Sampling-rate history: (since when, rate), for the window's expected re-runs.
    let mut history: Vec<(f64, f64)> = vec![(0.0, rate)];
    let mut failures: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut year = Year {
        slashed_at: None,
        slashed_by: None,
        flagged: false,
        decisions: 0,
        mean_rate: 0.0,
        fails_per_miner_screen: screen_always_fails,
    };
    let mut t = 0.0;
    // The judge decides on the window ending at `at`; true once it slashes.
    let decide_at = |at: f64, year: &mut Year, failures: &[Vec<f64>], history: &[(f64, f64)]| {
        let from = (at - window).max(0.0);
        let reruns = s.jobs_per_day * integral(history, from, at);
        let screened = s.jobs_per_day * (at - from);
        let counts = s.checks.iter().enumerate().map(|(i, c)| {
            let judged = match c.stage {
                Stage::Screen => screened,
                Stage::Rerun => reruns,
            } * c.share;
            let failed = if always_fails[i] {
                1
            } else {
                failures[i]
                    .iter()
                    .rev()
                    .take_while(|&&when| when > from && when <= at)
                    .count() as u64
            };
            (c.check, (judged.round() as u64).max(failed), failed)
        });
        let (tallies, assessment) = decide::assess_counts(counts, rules);
        year.decisions += 1;
        match assessment.action {
            Action::Slash => {
                year.slashed_at = Some(at);
                year.slashed_by = tallies
                    .iter()
                    .filter(|t| t.can_slash)
                    .min_by(|a, b| a.slash_tail().total_cmp(&b.slash_tail()))
                    .map(|t| t.check);
                year.flagged = true;
            }
            Action::FlagForReview => year.flagged = true,
            Action::None => {}
        }
        year.slashed_at.is_some()
    };
    loop {
        let intensity = |p: &Process| match p.stage {
            Stage::Screen => p.per_day,
            Stage::Rerun => p.per_day * rate,
        };
        let total: f64 = processes.iter().map(intensity).sum();
        if total <= 0.0 {
            break;
        }
        let next = t + -(1.0 - rng.random::<f64>()).ln() / total;
        // The excess decays between failures: at least once a day, the rate follows
        // it (the failure processes are memoryless, so the draw starts afresh there).
        if next > next_tick && next_tick < end && risk.excess_failures > 0.0 {
            t = next_tick;
            next_tick += 1.0;
            risk.excess_failures =
                (risk.excess_failures - (t - paid_until) * paid_per_day).max(0.0);
            paid_until = t;
            let new_rate = sampling::rate(rules, risk);
            if new_rate != rate {
                rate = new_rate;
                history.push((t, rate));
            }
            continue;
        }
        t = next;
        while next_tick <= t {
            next_tick += 1.0;
        }
        if t > end {
            break;
        }
        let mut pick = rng.random::<f64>() * total;
        let process = processes
            .iter()
            .find(|p| {
                pick -= intensity(p);
                pick <= 0.0
            })
            .unwrap_or(&processes[processes.len() - 1]);
        for &i in &process.checks {
            failures[i].push(t);
        }
        if process.stage == Stage::Screen {
            risk.excess_failures = (risk.excess_failures - (t - paid_until) * paid_per_day)
                .max(0.0)
                + process.checks.len() as f64;
            paid_until = t;
        }
        let new_rate = sampling::rate(rules, risk);
        if new_rate != rate {
            rate = new_rate;
            history.push((t, rate));
        }
        if when == Decisions::AfterEveryFailure && decide_at(t, &mut year, &failures, &history) {
            break;
        }
    }
    if let Decisions::OnceAt(_) = when {
        decide_at(end, &mut year, &failures, &history);
    }
    let lived = year.slashed_at.unwrap_or(end).min(end);
    year.mean_rate = if lived > 0.0 {
        integral(&history, 0.0, lived) / lived
    } else {
        rate
    };
    year
}

/// ∫ rate dt over [from, to] for a piecewise-constant rate history, read from its end
/// (the window is the history's last days).
fn integral(history: &[(f64, f64)], from: f64, to: f64) -> f64 {
    let mut sum = 0.0;
    let mut end = f64::INFINITY;
    for &(start, rate) in history.iter().rev() {
        let (a, b) = (start.max(from), end.min(to));
        if b > a {
            sum += rate * (b - a);
        }
        if start <= from {
            break;
        }
        end = start;
    }
    sum
}

/// How long the count of screen failures that never decayed (each failure raised the
/// rate by `base_rate × failed_check_weight` for good) took to put an honest miner of
/// `s` at the ceiling, failing at the priced rates: the per-job screen failures it
/// expects, over the failures the ceiling needed. `None` when it never got there.
pub fn days_to_ceiling_without_decay(rules: &Rules, s: &Scenario) -> Option<f64> {
    let r = &rules.sampling;
    let per_day: f64 = s
        .checks
        .iter()
        .filter(|c| c.stage == Stage::Screen && rules.policy(c.check).independent_across_jobs)
        .map(|c| s.jobs_per_day * c.share * c.rate)
        .sum();
    let needed = (r.ceiling / r.base_rate - 1.0) / r.failed_check_weight;
    (per_day > 0.0 && r.failed_check_weight > 0.0).then(|| needed / per_day)
}

/// The same rules with the count of screen failures that never came down (an
/// allowance of 0: each failure raises the rate for good), as before the excess
/// decayed. For comparison only; the rules' own validation refuses it.
pub fn without_decay(rules: &Rules) -> Rules {
    let mut r = rules.clone();
    r.sampling.allowance_margin = 0.0;
    r.sampling.min_allowance = 0.0;
    r
}

/// The same rules with the tail priced at the measured rate itself
/// (`slashing.tail_margin` 1): the rule before the margin.
pub fn without_tail_margin(rules: &Rules) -> Rules {
    let mut r = rules.clone();
    r.slashing.tail_margin = 1.0;
    r
}

/// The same rules without the effect-size floor (`slashing.effect_margin` 0): every
/// failure share can carry a slash, as before the floor. For comparison only; the
/// rules' own validation refuses a margin below 1.
pub fn without_effect_floor(rules: &Rules) -> Rules {
    let mut r = rules.clone();
    r.slashing.effect_margin = 0.0;
    r
}

/// The same rules with the per-decision slash threshold set to `threshold` (the budget
/// kept, the decisions it is spread over changed): large enough, slashes happen and can
/// be counted.
pub fn with_threshold(rules: &Rules, threshold: f64) -> Rules {
    let mut r = rules.clone();
    r.slashing.decisions_per_miner_year = r.slashing.lifetime_false_slash_budget / threshold;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_integral_of_a_step_rate_is_exact() {
        let h = [(0.0, 0.05), (2.0, 0.1), (5.0, 1.0)];
        assert!((integral(&h, 0.0, 7.0) - (0.1 + 0.3 + 2.0)).abs() < 1e-12);
        assert!((integral(&h, 3.0, 6.0) - (0.2 + 1.0)).abs() < 1e-12);
    }

    #[test]
    fn a_shared_cause_is_part_of_its_members_rates_not_on_top_of_them() {
        let rules = Rules::embedded().unwrap();
        let s = Scenario::llm(&rules, 0.2);
        for c in &s.checks {
            let from_causes: f64 = s
                .shared
                .iter()
                .filter(|k| k.checks.contains(&c.check))
                .map(|k| k.share * k.rate)
                .sum();
            assert!(
                from_causes <= c.share * c.rate * (1.0 + 1e-12),
                "{:?}: causes strike {from_causes}, its rate allows {}",
                c.check,
                c.share * c.rate
            );
        }
    }

    #[test]
    fn honest_miners_failing_at_three_times_the_priced_rate_are_slashed_only_without_both_guards() {
        let rules = Rules::embedded().unwrap();
        let bare = without_tail_margin(&without_effect_floor(&rules));
        let s = Scenario::sd(&rules).miscalibrated(3.0);
        let with_floor = simulate(&rules, &s, 40, 3);
        let without = simulate(&bare, &s, 40, 3);
        assert!(
            without.slashed > 0,
            "without the floor and the margin no honest miner was slashed: the scenario shows nothing"
        );
        assert_eq!(
            without.slashed_by,
            vec![CheckId::ImageSimilarity; without.slashed as usize]
        );
        assert_eq!(with_floor.slashed, 0, "{with_floor:?}");
        // Each guard alone: the floor (the tail at the rate itself), and the margin
        // (every share may slash, but its tail is priced at the true rate).
        for alone in [without_tail_margin(&rules), without_effect_floor(&rules)] {
            assert_eq!(simulate(&alone, &s, 40, 3).slashed, 0);
        }
        // The floor changes nothing at the priced rates' own strength: those miners
        // are still judged, and evidence still flags them.
        assert!(
            with_floor.decisions > 0 && with_floor.flagged > 0,
            "{with_floor:?}"
        );
    }

    #[test]
    fn the_simulation_is_reproducible_from_its_seed() {
        let rules = Rules::embedded().unwrap();
        let loose = with_threshold(&rules, 1e-4);
        let s = Scenario::sd(&loose);
        let a = simulate(&loose, &s, 30, 7);
        let b = simulate(&loose, &s, 30, 7);
        assert_eq!(
            (a.slashed, a.flagged, a.decisions),
            (b.slashed, b.flagged, b.decisions)
        );
        assert!(a.decisions > 0);
    }
}

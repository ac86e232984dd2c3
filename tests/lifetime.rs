//! The lifetime false-slash bound at a scale CI affords (scripts/simulate-lifetime runs
//! it at full scale): honest miners simulated through every decision of a year of
//! stated traffic (src/lifetime.rs).

use proctor::lifetime::{self, Scenario};
use proctor::rules::Rules;

/// Miner-years per scenario here.
const MINERS: u64 = 200;

fn scenarios(rules: &Rules) -> Vec<Scenario> {
    vec![Scenario::sd(rules), Scenario::llm(rules, 0.2)]
}

#[test]
fn no_honest_miner_is_slashed_in_a_year_at_the_shipped_threshold() {
    let rules = Rules::embedded().unwrap();
    for s in scenarios(&rules) {
        let sim = lifetime::simulate(&rules, &s, MINERS, 1);
        println!(
            "{}: {} miner-years, {} decisions, {} flagged, {} slashed (threshold {:.1e})",
            sim.scenario, sim.miners, sim.decisions, sim.flagged, sim.slashed, sim.threshold
        );
        assert!(
            sim.decisions > MINERS,
            "{sim:?}: the simulation decided nothing"
        );
        assert_eq!(sim.slashed, 0, "{sim:?}");
    }
}

#[test]
fn one_decision_slashes_an_honest_miner_with_at_most_its_threshold_s_chance() {
    // The union bound rests on this: at any fixed moment, the honest probability a
    // decision computes is a valid p-value, so a decision slashes an honest miner with
    // probability at most the threshold. Checked where slashes are common enough to
    // count. It fails when the evidence is not what the rates promise: a first version
    // of the simulation, whose shared causes came on top of the checks' own rates,
    // slashed 3.4 % of LLM miners at a 1 % threshold.
    let rules = Rules::embedded().unwrap();
    for threshold in [0.01, 0.05] {
        let loose = lifetime::with_threshold(&rules, threshold);
        for s in scenarios(&loose) {
            let miners = 4000;
            let sim = lifetime::simulate_deciding(
                &loose,
                &s,
                miners,
                3,
                lifetime::Decisions::OnceAt(30.0),
            );
            let (rate, _) = sim.rate();
            let sigma = (threshold * (1.0 - threshold) / miners as f64).sqrt();
            println!(
                "{}: one decision at day 30, threshold {threshold}: {} of {miners} slashed ({rate:.4})",
                sim.scenario, sim.slashed
            );
            assert!(rate <= threshold + 3.0 * sigma, "{sim:?}");
        }
    }
}

#[test]
fn partial_cheaters_at_thirty_percent_are_slashed_within_a_week() {
    // Each cheated job fails the check at its measured per-job detection: every
    // stand-in image cheat (1,000 of 1,000), the real model's substitute on the panel
    // (22 of 24). The honest jobs in between fail at the priced rates.
    let rules = Rules::embedded().unwrap();
    for s in [
        Scenario::sd(&rules).cheating(proctor::outcome::CheckId::ImageSimilarity, 0.3, 1.0),
        Scenario::llm(&rules, 0.2).cheating(
            proctor::outcome::CheckId::LlmSuspect,
            0.3,
            22.0 / 24.0,
        ),
    ] {
        let sim = lifetime::simulate(&rules, &s, 100, 5);
        let p99 = sim.days_to_slash(0.99);
        println!(
            "{}: {} of 100 slashed, median day {:?}, 99th percentile {p99:?}",
            s.name,
            sim.slashed,
            sim.days_to_slash(0.5)
        );
        assert_eq!(sim.slashed, 100, "{}", s.name);
        assert!(p99.is_some_and(|d| d <= 7.0), "{}: {p99:?}", s.name);
    }
}

#[test]
fn honest_failures_clustered_on_a_tenth_of_the_miners_at_five_times_never_slash() {
    let rules = Rules::embedded().unwrap();
    for s in scenarios(&rules) {
        let s = s.drifting(0.1, 5.0);
        let sim = lifetime::simulate(&rules, &s, MINERS, 6);
        println!(
            "{}: {} flagged, {} slashed",
            s.name, sim.flagged, sim.slashed
        );
        assert!(sim.decisions > MINERS, "{sim:?}");
        assert_eq!(sim.slashed, 0, "{sim:?}");
    }
}

#[test]
fn an_honest_miner_s_reruns_come_back_down_to_the_base_rate() {
    // Screen failures at the priced rates are paid off as they come: a miner's year
    // averages the base rate, except for the miners failing a per-miner screen check
    // (on every job, at its per-miner rate), which are at the ceiling all year.
    let rules = Rules::embedded().unwrap();
    let (base, ceiling) = (rules.sampling.base_rate, rules.sampling.ceiling);
    let s = Scenario::sd(&rules);
    let always: f64 = 1.0
        - s.checks
            .iter()
            .filter(|c| {
                c.stage == lifetime::Stage::Screen && !rules.policy(c.check).independent_across_jobs
            })
            .map(|c| 1.0 - c.rate)
            .product::<f64>();
    let want = (1.0 - always) * base + always * ceiling;
    let sim = lifetime::simulate(&rules, &s, MINERS, 8);
    println!(
        "{}: mean re-run rate {:.4} (expected {want:.4})",
        s.name, sim.mean_sampling_rate
    );
    assert!((sim.mean_sampling_rate - want).abs() < 0.05, "{sim:?}");
    // The count that never decayed put the same miner at the ceiling within the year.
    let days = lifetime::days_to_ceiling_without_decay(&rules, &s).unwrap();
    assert!(days < 365.0, "{days}");
}

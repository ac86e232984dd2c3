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

//! The lifetime false-slash bound at scale (`scripts/simulate-lifetime`): honest
//! miners of the stated traffic through every decision of a year, at the shipped
//! per-decision threshold and at larger ones, where slashes happen often enough to
//! count and the union bound's slack shows. See src/lifetime.rs and docs/DETECTION.md.
//!
//! ```sh
//! cargo run --example simulate_lifetime -- [MINER_YEARS] [SEED] [MISCALIBRATED] [CHEATERS]   (default 20000 1 20000 200)
//! cargo run --example simulate_lifetime -- row image|llm FACTOR MINER_YEARS SEED [shipped|before]
//! cargo run --example simulate_lifetime -- cheaters [CHEATERS] [SEED]
//! ```
//!
//! `row` runs one cell of the miscalibrated table alone (honest miners failing at
//! FACTOR times the priced rates), under the shipped rules or under the rule before
//! the tail margin, and names the check that carried each slash: the long LLM rows
//! split over seeds and cores that way. `cheaters` prints the partial cheaters' table
//! alone.
//!
//! MISCALIBRATED is the miner-years per row of honest miners failing at a multiple of
//! the priced rates; CHEATERS those of the partial cheaters and of the re-run table,
//! whose rows under the rate that never decayed re-run most jobs and are slow.

use proctor::lifetime::{self, Decisions, Scenario};
use proctor::outcome::CheckId;
use proctor::rules::Rules;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("row") => return row(&args[2..]),
        Some("cheaters") => {
            let cheaters: u64 = args.get(2).map_or(Ok(200), |a| a.parse())?;
            let seed: u64 = args.get(3).map_or(Ok(1), |a| a.parse())?;
            partial_cheaters(&Rules::embedded()?, cheaters, seed);
            return Ok(());
        }
        _ => {}
    }
    let miners: u64 = args.get(1).map_or(Ok(20_000), |a| a.parse())?;
    let seed: u64 = args.get(2).map_or(Ok(1), |a| a.parse())?;
    let rules = Rules::embedded()?;
    let shipped = rules.auto_slash_threshold();
    let decisions = rules.slashing.decisions_per_miner_year;
    println!(
        "Honest miners, {} jobs a day for a year, {miners} miner-years per row (seed {seed}).",
        lifetime::JOBS_PER_DAY
    );
    println!(
        "Shipped: budget {:.0e} per miner-year over {decisions} decisions, a per-decision threshold of {shipped:.2e}.\n",
        rules.slashing.lifetime_false_slash_budget
    );
    println!(
        "| scenario | per-decision threshold | decisions taken | flagged | slashed | slashed share (95 % bound) | union bound | mean re-run rate |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for threshold in [shipped, shipped * 1e3, shipped * 1e5, 1e-6] {
        let r = lifetime::with_threshold(&rules, threshold);
        for s in [Scenario::sd(&r), Scenario::llm(&r, 0.2)] {
            let started = std::time::Instant::now();
            let sim = lifetime::simulate(&r, &s, miners, seed);
            let (share, upper) = sim.rate();
            println!(
                "| {} | {threshold:.1e} | {} | {} | {} | {share:.2e} ({upper:.2e}) | {:.1e} | {:.2} % |",
                sim.scenario,
                sim.decisions,
                sim.flagged,
                sim.slashed,
                (decisions * threshold).min(1.0),
                sim.mean_sampling_rate * 100.0
            );
            eprintln!("  ({:.1} s)", started.elapsed().as_secs_f64());
        }
    }
    // Miners failing at a multiple of the priced rates are never slashed in a year with
    // the floor, so each runs its whole year: the LLM rows at 5x take minutes per 200.
    let miscalibrated: u64 = args.get(3).map_or(Ok(20_000), |a| a.parse())?;
    println!(
        "\nHonest miners whose true rates are a multiple of the priced ones (a calibration that many times too low), {miscalibrated} miner-years per row, at the shipped threshold: the shipped rules (effect floor at margin {}, tail at margin {}), the tail at the rate itself (the rule before the tail margin), and neither guard:\n",
        rules.slashing.effect_margin, rules.slashing.tail_margin
    );
    println!("| scenario | slashed (shipped) | tail at the rate itself | neither guard |");
    println!("|---|---:|---:|---:|");
    let before = lifetime::without_tail_margin(&rules);
    let bare = lifetime::without_effect_floor(&before);
    for factor in [2.0, 3.0, 5.0] {
        for s in [Scenario::sd(&rules), Scenario::llm(&rules, 0.2)] {
            let s = s.miscalibrated(factor);
            let shipped = lifetime::simulate(&rules, &s, miscalibrated, seed);
            let floor = lifetime::simulate(&before, &s, miscalibrated, seed);
            let neither = lifetime::simulate(&bare, &s, miscalibrated, seed);
            println!(
                "| {} | {} | {} | {} |",
                s.name,
                by(&shipped),
                by(&floor),
                neither.slashed
            );
        }
    }
    println!(
        "\nHonest failures clustered by miner (one GPU model's drift), {miscalibrated} miner-years per row, at the shipped threshold:\n"
    );
    println!("| scenario | flagged | slashed |");
    println!("|---|---:|---:|");
    for factor in [3.0, 5.0] {
        for s in [Scenario::sd(&rules), Scenario::llm(&rules, 0.2)] {
            let s = s.drifting(0.1, factor);
            let sim = lifetime::simulate(&rules, &s, miscalibrated, seed);
            println!("| {} | {} | {} |", s.name, sim.flagged, sim.slashed);
        }
    }
    let cheaters: u64 = args.get(4).map_or(Ok(200), |a| a.parse())?;
    partial_cheaters(&rules, cheaters, seed);
    let day = |d: Option<f64>| d.map_or("never".to_owned(), |d| format!("{d:.2}"));
    println!(
        "\nRe-runs of honest miners, {cheaters} miner-years per row: the share of jobs re-run over the year, with the decaying excess (`sampling::MinerRisk`) and with the count it replaced, which never came down; of all miners, and of those that fail no per-miner screen check (a miner failing one fails it on every job and is re-run on every job either way):\n"
    );
    println!(
        "| scenario | decaying: all miners | decaying: no per-miner failure | never decaying: all | never decaying: no per-miner failure | days to the ceiling, never decaying |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let ratchet = lifetime::without_decay(&rules);
    for s in [Scenario::sd(&rules), Scenario::llm(&rules, 0.2)] {
        let decaying = lifetime::simulate(&rules, &s, cheaters, seed);
        let never = lifetime::simulate(&ratchet, &s, cheaters, seed);
        println!(
            "| {} | {:.2} % | {:.2} % | {:.2} % | {:.2} % | {} |",
            s.name,
            decaying.mean_sampling_rate * 100.0,
            decaying.mean_sampling_rate_clean * 100.0,
            never.mean_sampling_rate * 100.0,
            never.mean_sampling_rate_clean * 100.0,
            day(lifetime::days_to_ceiling_without_decay(&rules, &s))
        );
    }
    println!("\nOne decision at day 30 (the p-value the union bound rests on):\n");
    println!("| scenario | threshold | slashed | share |");
    println!("|---|---:|---:|---:|");
    for threshold in [0.001, 0.01, 0.05] {
        let r = lifetime::with_threshold(&rules, threshold);
        for s in [Scenario::sd(&r), Scenario::llm(&r, 0.2)] {
            let sim = lifetime::simulate_deciding(&r, &s, miners, seed, Decisions::OnceAt(30.0));
            println!(
                "| {} | {threshold} | {} | {:.4} |",
                sim.scenario,
                sim.slashed,
                sim.rate().0
            );
        }
    }
    Ok(())
}

/// A slash count, with the checks that carried the slashes where there were any.
fn by(sim: &lifetime::Simulated) -> String {
    if sim.slashed == 0 {
        return "0".into();
    }
    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    for c in &sim.slashed_by {
        *counts.entry(c.as_str()).or_default() += 1;
    }
    let named: Vec<String> = counts.iter().map(|(c, n)| format!("{n} {c}")).collect();
    format!("{} ({})", sim.slashed, named.join(", "))
}

/// `row image|llm FACTOR MINER_YEARS SEED [shipped|before]`: one cell of the
/// miscalibrated table.
fn row(args: &[String]) -> anyhow::Result<()> {
    let rules = Rules::embedded()?;
    let arg = |i: usize, name: &str| {
        args.get(i).ok_or_else(|| {
            anyhow::anyhow!("row image|llm FACTOR MINER_YEARS SEED [shipped|before]: no {name}")
        })
    };
    let scenario = match arg(0, "miner")?.as_str() {
        "image" => Scenario::sd(&rules),
        "llm" => Scenario::llm(&rules, 0.2),
        other => anyhow::bail!("row: a miner is image or llm, not {other}"),
    };
    let factor: f64 = arg(1, "factor")?.parse()?;
    let miners: u64 = arg(2, "miner-years")?.parse()?;
    let seed: u64 = arg(3, "seed")?.parse()?;
    let s = scenario.miscalibrated(factor);
    println!(
        "| scenario | rules | miner-years | seed | decisions | flagged | slashed | mean re-run rate | seconds |"
    );
    println!("|---|---|---:|---:|---:|---:|---|---:|---:|");
    let (name, r) = match args.get(4).map_or("shipped", String::as_str) {
        "shipped" => ("shipped", rules),
        "before" => (
            "tail at the rate itself",
            lifetime::without_tail_margin(&rules),
        ),
        other => anyhow::bail!("row: rules are shipped or before, not {other}"),
    };
    let started = std::time::Instant::now();
    let sim = lifetime::simulate(&r, &s, miners, seed);
    println!(
        "| {} | {name} | {miners} | {seed} | {} | {} | {} | {:.2} % | {:.0} |",
        s.name,
        sim.decisions,
        sim.flagged,
        by(&sim),
        sim.mean_sampling_rate * 100.0,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The partial cheaters' table: days until the slash.
fn partial_cheaters(rules: &Rules, cheaters: u64, seed: u64) {
    println!(
        "\nPartial cheaters, {cheaters} per row, at the shipped threshold: each cheated job fails the check at its measured per-job detection (image: every stand-in cheat, 1,000 of 1,000; LLM: the substituted model on `llm_suspect`, 22 of 24 of the real model's). Days until the slash; a day is 2,000 jobs, 100 of them re-run at the base rate:\n"
    );
    println!("| scenario | slashed | median day | 99th percentile day |");
    println!("|---|---:|---:|---:|");
    let day = |d: Option<f64>| d.map_or("never".to_owned(), |d| format!("{d:.2}"));
    for share in [0.1, 0.3, 1.0] {
        for s in [
            Scenario::sd(rules).cheating(CheckId::ImageSimilarity, share, 1.0),
            Scenario::llm(rules, 0.2).cheating(CheckId::LlmSuspect, share, 22.0 / 24.0),
        ] {
            let sim = lifetime::simulate(rules, &s, cheaters, seed);
            println!(
                "| {} | {} of {cheaters} | {} | {} |",
                s.name,
                sim.slashed,
                day(sim.days_to_slash(0.5)),
                day(sim.days_to_slash(0.99))
            );
        }
    }
}

//! `proctor rules check`: the rules validated, the rates and what each may slash, the
//! deterrence table at the sampling floor and at the settings' reference capacity.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use proctor::sampling;

use super::{finding_if, load_rules};

#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Validate the rules and print the deterrence table; fails when cheating pays,
    /// also at the reference capacity the settings describe.
    Check {
        /// Rules folder; the rules compiled into this binary by default.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Settings file whose reference hosts and demand_per_hour give the capacity
        /// table (the built-in settings and PROCTOR_* variables apply as for a worker).
        #[arg(long, env = "PROCTOR_CONFIG")]
        settings: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: RulesCommand,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args {
        command: RulesCommand::Check { rules, settings },
    } = args;
    let rules = load_rules(rules.as_deref())?;
    let settings = proctor::settings::Settings::load(settings.as_deref())?;
    println!("rules valid, digest {}", rules.digest()?);
    println!(
        "\nfalse-positive rates: a slash needs a measured rate, and no declaration below its measurement\n"
    );
    println!(
        "{:<20} {:>10} {:<9} {:>8} {:>9} {:>10} {:>10} {:<11} {:>12} {:>10}  can slash",
        "check",
        "declared",
        "basis",
        "n",
        "failures",
        "95% bound",
        "priced at",
        "measured",
        "effect floor",
        "cal. risk"
    );
    let margin = rules.slashing.effect_margin;
    for (id, p) in &rules.checks.policy {
        let m = p.measured.as_ref();
        let floor = p.effect_floor(margin);
        println!(
            "{:<20} {:>10.2e} {:<9} {:>8} {:>9} {:>10} {:>10.2e} {:<11} {:>11.1}% {:>10}  {}",
            id.as_str(),
            p.false_positive_rate,
            match p.basis {
                proctor::rules::Basis::Measured => "measured",
                proctor::rules::Basis::Assumed => "assumed",
            },
            m.map_or(String::new(), |m| m.n.to_string()),
            m.map_or(String::new(), |m| m.failures.to_string()),
            m.map_or(String::new(), |m| format!("{:.2e}", m.upper_95)),
            p.worst_config_rate(),
            m.map_or("", |m| m.date.as_str()),
            100.0 * floor,
            p.calibration_risk(margin)
                .map_or(String::new(), |r| format!("{r:.1e}")),
            match rules.slash_scope(*id) {
                Some(_) if p.independent_across_jobs && floor > 1.0 => {
                    "no (its effect floor is above every job)".to_owned()
                }
                Some(scope) => format!("on {scope}"),
                None if p.can_slash() => {
                    "no (its sample was no model's: flag only)".to_owned()
                }
                None if p.flag_only => "no (flag only)".to_owned(),
                None => "no (assumed)".to_owned(),
            }
        );
    }
    println!(
        "\nslashing checks by model category: a check slashes only on the models its honest rate was measured on, and flags elsewhere\n"
    );
    for (category, checks) in rules.slashing_by_category() {
        println!(
            "{:<20} {}",
            category,
            if checks.is_empty() {
                "none: every failure is for review".to_owned()
            } else {
                checks.join(", ")
            }
        );
    }
    println!(
        "\nan automatic slash needs an honest probability of at most {:.2e}: a lifetime budget of {:.0e} over {} decisions a miner-year",
        rules.auto_slash_threshold(),
        rules.slashing.lifetime_false_slash_budget,
        rules.slashing.decisions_per_miner_year
    );
    println!(
        "with each check's tail computed at {} times the rate it is priced at (at most 1): valid for honest miners whose true rate is up to that multiple of the measured one",
        rules.slashing.tail_margin
    );
    println!(
        "and a failure share of at least the check's effect floor: {margin} times the largest rate an honest configuration was measured at"
    );
    println!(
        "lifetime false-slash risk per miner-year: {:.2e} (the budget, plus each slashing check's calibration risk: the chance its honest sample showed so few failures were its rate at the floor)",
        rules.lifetime_risk()
    );
    let broken = rules.broken_promises();
    for b in &broken {
        eprintln!("proctor: {b}");
    }
    println!(
        "\ndeterrence at the sampling floor: p(R+S) >= C must hold for each cheat (points per job; p = floor x the cheat's measured detection on a re-run)\n"
    );
    println!(
        "{:<20} {:<38} {:>9} {:>10} {:>12} {:>10} {:>10}  verdict",
        "category", "cheat", "p", "R", "S", "C", "p(R+S)"
    );
    let table = sampling::deterrence_table(&rules);
    for r in &table {
        println!(
            "{:<20} {:<38} {:>9.5} {:>10.3} {:>12.3} {:>10.3} {:>10.3}  {}",
            r.category,
            r.cheat,
            r.p_caught,
            r.reward,
            r.slash,
            r.saved,
            r.expected_loss,
            r.verdict()
        );
    }
    let paying: BTreeSet<&str> = table
        .iter()
        .filter(|r| !r.deters)
        .map(|r| r.cheat.as_str())
        .collect();
    if !paying.is_empty() {
        println!(
            "\ncheats that pay at the sampling floor: {}",
            paying.into_iter().collect::<Vec<_>>().join("; ")
        );
    }
    let capacity = sampling::capacity_table(
        &rules,
        &settings.reference.demand_per_hour,
        &settings.reference.capacity(),
    );
    if capacity.is_empty() {
        println!(
            "\nreference capacity: no reference hosts or no demand_per_hour in the settings' [reference], so no capacity check"
        );
    } else {
        println!(
            "\ndeterrence at the reference capacity of the settings (re-runs per hour; the floor times the share served)\n"
        );
        println!(
            "{:<20} {:>10} {:>10} {:>10} {:>7} {:<34} {:>9} {:>10} {:>10}  verdict",
            "category",
            "demand",
            "wanted",
            "capacity",
            "served",
            "least deterred cheat",
            "p",
            "p(R+S)",
            "C"
        );
        for r in &capacity {
            let d = &r.deterrence;
            println!(
                "{:<20} {:>10.0} {:>10.0} {:>10.0} {:>6.0}% {:<34} {:>9.5} {:>10.3} {:>10.3}  {}",
                d.category,
                r.demand_per_hour,
                r.wanted_per_hour,
                r.capacity_per_hour,
                r.served_share * 100.0,
                d.cheat,
                d.p_caught,
                d.expected_loss,
                d.saved,
                if r.hosts.is_empty() {
                    "NO REFERENCE HOST".to_owned()
                } else {
                    d.verdict()
                }
            );
        }
    }
    print_cost(&rules, &settings.reference.demand_per_hour)?;
    let bad: BTreeSet<&str> = table
        .iter()
        .chain(capacity.iter().map(|c| &c.deterrence))
        .filter(|r| r.fails())
        .map(|r| r.category.as_str())
        .collect();
    let bad: Vec<&str> = bad.into_iter().collect();
    if !bad.is_empty() {
        eprintln!("proctor: cheating is profitable in: {}", bad.join(", "));
    }
    Ok(finding_if(!bad.is_empty() || !broken.is_empty()))
}

/// The cost model: reference GPU-seconds a verified job and the GPUs each sampling rate
/// keeps busy (`calibrate::cost`).
fn print_cost(
    rules: &proctor::rules::Rules,
    demand: &std::collections::BTreeMap<String, f64>,
) -> Result<()> {
    use proctor::calibrate::cost;
    let rows = cost::cost_table(rules, &cost::embedded_timings()?, demand)?;
    println!(
        "\nwhat verification costs on the reference GPU ({}): GPUs kept busy at each sampling rate{}\n",
        cost::REFERENCE_GPU,
        if demand.is_empty() {
            ", per 1,000 jobs an hour (no demand_per_hour in the settings' [reference])"
        } else {
            ""
        }
    );
    let rates: Vec<String> = cost::RATES
        .iter()
        .map(|r| format!("{:>7}", format!("@{}%", r * 100.0)))
        .collect();
    println!(
        "{:<10} {:<34} {:>9} {:>10} {}  priced by",
        "category",
        "typical job",
        "GPU-s/job",
        "jobs/hour",
        rates.join(" ")
    );
    for r in &rows {
        let gpus: Vec<String> = r.gpus.iter().map(|g| format!("{g:>7.3}")).collect();
        println!(
            "{:<10} {:<34} {:>9.3} {:>10} {}  {}",
            r.category,
            r.job,
            r.gpu_seconds,
            r.demand_per_hour
                .map_or("1,000 (per)".to_owned(), |d| format!("{d:.0}")),
            gpus.join(" "),
            r.basis
        );
    }
    Ok(())
}

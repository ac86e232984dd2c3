//! `proctor calibrate`: thresholds from labelled pairs, with the false-positive and
//! detection rates they measure.
//!
//! A check is calibrated on pairs labelled honest (the reference against an honest
//! re-run: another dtype or batch, a re-encode, drift) or cheat (the reference against
//! one cheat). Every pair gets the check's measures, each oriented so that larger is
//! more suspicious, and the check flags a pair when any measure exceeds its threshold.
//!
//! The thresholds are swept together: candidate `r` puts each measure's threshold at
//! its `r`-th most suspicious honest value, so `r = 1` flags no honest pair and larger
//! `r` flags more of both. The chosen thresholds are those of the largest `r` whose
//! measured honest flag rate stays at or below the target per-job false-positive rate
//! of `rules/checks.toml` (`[calibration] target_false_positive_rate`), never tighter
//! than a check's own floor, then rounded towards the honest side. The final table is
//! measured by the production check code with the rounded thresholds, not by the
//! sweep.
//!
//! What the rules' decision engine gets is the measured rate's one-sided 95 % upper
//! bound (Clopper-Pearson), not the point estimate: zero false positives in 3,000
//! honest pairs bounds the rate at 1e-3, not at 0.
//!
//! [`image`] builds image pairs from photos, [`llm`] simulates miners with the fixture
//! models, [`plot`] draws the ROC curves, and [`write_rules`] writes the thresholds and
//! rates back into a rules folder.

pub mod cost;
pub mod image;
pub mod latency;
pub mod llm;
pub mod panel;
pub mod plot;

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::outcome::CheckId;

/// Whether a pair is an honest re-run or a cheat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    Honest,
    Cheat,
}

/// One labelled pair's measures, larger is more suspicious. `-inf` is "not judged"
/// (a text too short for the check): never flagged.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub label: Label,
    pub variant: String,
    pub suspicion: Vec<f64>,
}

pub(crate) fn flagged(suspicion: &[f64], thresholds: &[f64]) -> bool {
    suspicion.iter().zip(thresholds).any(|(v, t)| v > t)
}

/// The result of a threshold sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    /// Per measure, before rounding.
    pub thresholds: Vec<f64>,
    /// The honest flag rate the sweep measured at them.
    pub fpr: f64,
    pub roc: Vec<RocCurve>,
}

/// Detection against false-positive rate for one cheat, as the thresholds sweep.
#[derive(Debug, Clone, Serialize)]
pub struct RocCurve {
    pub cheat: String,
    /// `(false-positive rate, detection rate)`, from the strictest thresholds on.
    pub points: Vec<(f64, f64)>,
}

/// Sweeps thresholds over `pairs` (see the module docs). `floor` holds the lowest value
/// each measure's threshold may take, its strictest allowed setting (`-inf` for none).
pub fn sweep(pairs: &[Pair], floor: &[f64], target: f64) -> anyhow::Result<Sweep> {
    let honest: Vec<&Pair> = pairs.iter().filter(|p| p.label == Label::Honest).collect();
    anyhow::ensure!(!honest.is_empty(), "calibration needs honest pairs");
    let measures = floor.len();
    let sorted: Vec<Vec<f64>> = (0..measures)
        .map(|m| {
            let mut v: Vec<f64> = honest.iter().map(|p| p.suspicion[m]).collect();
            v.sort_by(|a, b| b.total_cmp(a));
            v
        })
        .collect();
    // The ROC shows the whole trade-off; the floor only bounds the chosen thresholds.
    let unfloored = |r: usize| -> Vec<f64> {
        (0..measures)
            .map(|m| sorted[m].get(r - 1).copied().unwrap_or(f64::NEG_INFINITY))
            .collect()
    };
    let at = |r: usize| -> Vec<f64> {
        unfloored(r)
            .iter()
            .zip(floor)
            .map(|(t, f)| t.max(*f))
            .collect()
    };
    let rate = |t: &[f64], label: Label, variant: Option<&str>| -> f64 {
        let chosen: Vec<&Pair> = pairs
            .iter()
            .filter(|p| p.label == label && variant.is_none_or(|v| p.variant == v))
            .collect();
        let hits = chosen.iter().filter(|p| flagged(&p.suspicion, t)).count();
        hits as f64 / chosen.len().max(1) as f64
    };
    // The honest rate only grows with r: the last r within the target.
    let n = honest.len();
    let (mut lo, mut hi) = (1, n);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if rate(&at(mid), Label::Honest, None) <= target {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let thresholds = at(lo);
    let fpr = rate(&thresholds, Label::Honest, None);
    let mut grid: Vec<usize> = Vec::new();
    let mut r = 1.0f64;
    while (r as usize) <= n {
        if grid.last() != Some(&(r as usize)) {
            grid.push(r as usize);
        }
        r *= 1.15;
    }
    grid.push(n);
    let mut cheats: Vec<&str> = pairs
        .iter()
        .filter(|p| p.label == Label::Cheat)
        .map(|p| p.variant.as_str())
        .collect();
    cheats.sort_unstable();
    cheats.dedup();
    let roc = cheats
        .iter()
        .map(|c| RocCurve {
            cheat: (*c).to_string(),
            points: grid
                .iter()
                .map(|&r| {
                    let t = unfloored(r);
                    (
                        rate(&t, Label::Honest, None),
                        rate(&t, Label::Cheat, Some(c)),
                    )
                })
                .collect(),
        })
        .collect();
    Ok(Sweep {
        thresholds,
        fpr,
        roc,
    })
}

/// One row of a rate table: how many pairs of a variant the check flagged.
#[derive(Debug, Clone, Serialize)]
pub struct RateRow {
    pub label: Label,
    pub variant: String,
    pub pairs: usize,
    pub flagged: usize,
    pub rate: f64,
    /// For honest rows, the rate's one-sided 95 % upper bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper_95: Option<f64>,
    /// The detection target, where the issue sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
    /// Why a cheat escapes, where it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Rate rows per variant (in first-seen order) and a total for the honest pairs.
pub fn rate_rows(verdicts: &[(Label, String, bool)]) -> Vec<RateRow> {
    let mut variants: Vec<(Label, &str)> = Vec::new();
    for (l, v, _) in verdicts {
        if !variants.iter().any(|(l2, v2)| l2 == l && v2 == v) {
            variants.push((*l, v));
        }
    }
    variants.sort_by_key(|(l, _)| *l == Label::Cheat);
    let row = |label: Label, variant: Option<&str>, name: &str| {
        let chosen: Vec<bool> = verdicts
            .iter()
            .filter(|(l, v, _)| *l == label && variant.is_none_or(|x| v == x))
            .map(|(_, _, f)| *f)
            .collect();
        let flagged = chosen.iter().filter(|f| **f).count();
        RateRow {
            label,
            variant: name.to_string(),
            pairs: chosen.len(),
            flagged,
            rate: flagged as f64 / chosen.len().max(1) as f64,
            upper_95: (label == Label::Honest)
                .then(|| crate::stats::upper_bound_95(flagged, chosen.len())),
            target: None,
            met: None,
            note: None,
        }
    };
    let mut rows: Vec<RateRow> = variants.iter().map(|(l, v)| row(*l, Some(v), v)).collect();
    let at = rows.iter().take_while(|r| r.label == Label::Honest).count();
    rows.insert(at, row(Label::Honest, None, "all honest"));
    rows
}

/// Per sub-check (by name, plus `any`), its rate rows.
pub type SubcheckRates = Vec<(String, Vec<RateRow>)>;

/// A calibrated check: its thresholds (rule name and value), rate table and ROC.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub check: CheckId,
    pub target_fpr: f64,
    pub thresholds: Vec<(String, f64)>,
    pub rows: Vec<RateRow>,
    pub roc: Vec<RocCurve>,
}

impl CheckReport {
    /// The honest total row.
    pub fn honest(&self) -> &RateRow {
        self.rows
            .iter()
            .find(|r| r.label == Label::Honest && r.variant == "all honest")
            .expect("rate_rows always adds the honest total")
    }

    /// The markdown table of this check.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "### `{}` (target false-positive rate {})\n\nThresholds: {}\n\n| pairs | variant | n | flagged | rate | target | met | notes |\n|---|---|---:|---:|---:|---:|---|---|\n",
            self.check,
            percent(self.target_fpr),
            self.thresholds
                .iter()
                .map(|(k, v)| format!("`{k} = {v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for r in &self.rows {
            let (label, target, met) = match r.label {
                Label::Honest if r.variant == "all honest" => (
                    "honest",
                    format!("≤ {}", percent(self.target_fpr)),
                    format!(
                        "{} (95 % bound {})",
                        yes_no(r.rate <= self.target_fpr),
                        percent(r.upper_95.unwrap_or(1.0))
                    ),
                ),
                Label::Honest => ("honest", String::new(), String::new()),
                Label::Cheat => (
                    "cheat",
                    r.target.map_or("—".into(), |t| format!("≥ {}", percent(t))),
                    match r.met {
                        Some(true) => "yes".into(),
                        Some(false) => "**missed**".into(),
                        None => String::new(),
                    },
                ),
            };
            s += &format!(
                "| {label} | {} | {} | {} | {} | {target} | {met} | {} |\n",
                r.variant,
                r.pairs,
                r.flagged,
                percent(r.rate),
                r.note.as_deref().unwrap_or("")
            );
        }
        s
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "**no**" }
}

/// `0.1 %`, `99.5 %`, `100 %`: enough digits for a rate near a target.
pub fn percent(rate: f64) -> String {
    let p = rate * 100.0;
    if p == 0.0 || p == 100.0 {
        format!("{p:.0} %")
    } else if p < 1.0 {
        format!("{p:.2} %")
    } else {
        format!("{p:.1} %")
    }
}

/// Rounds `v` down to `decimals` places: a lower bound kept lenient.
pub fn floor_to(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).floor() / scale
}

/// A check's honest false-positive rate as one run counted it: over the honest jobs it
/// judged (passed or failed), how many it failed.
#[derive(Debug, Clone, Serialize)]
pub struct MeasuredRate {
    pub check: CheckId,
    /// What the honest sample was.
    pub sample: String,
    pub n: u64,
    pub failures: u64,
    /// The models the sample was drawn from ([`crate::rules::Measurement::models`]).
    pub models: Vec<String>,
}

impl MeasuredRate {
    /// The one-sided 95 % upper bound, rounded up to two significant digits: what the
    /// rules declare.
    pub fn upper_95(&self) -> f64 {
        significant(
            crate::stats::upper_bound_95(self.failures as usize, self.n as usize),
            2,
        )
    }
}

/// Where a calibration run's measurements come from, for the rules' provenance.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    /// The command line that ran the calibration.
    pub command: String,
}

impl Provenance {
    /// Today, and this process's own command line.
    pub fn of_this_run() -> Provenance {
        let args: Vec<String> = std::env::args().collect();
        let command = match args.first() {
            Some(first) => std::iter::once(
                Path::new(first)
                    .file_name()
                    .map_or(first.clone(), |n| n.to_string_lossy().into_owned()),
            )
            .chain(args[1..].iter().cloned())
            .collect::<Vec<_>>()
            .join(" "),
            None => "proctor calibrate".into(),
        };
        Provenance {
            date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
            command,
        }
    }
}

/// Everything one `proctor calibrate` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub target_fpr: f64,
    pub checks: Vec<CheckReport>,
    /// Every LLM sub-check's flag rate per variant at the calibrated thresholds.
    pub llm_subchecks: SubcheckRates,
    /// Every check's measured honest rate: written into the rules with its provenance.
    pub rates: Vec<MeasuredRate>,
    /// The honest rates per honest configuration, at the calibrated thresholds: the
    /// image check's per variant (PNG, JPEG q98), the LLM checks' per numerics, batch
    /// size and generation loop.
    pub by_config: Vec<(String, Vec<MeasuredRate>)>,
    /// The latency checks against published runs.
    pub latency: Option<latency::LatencyCalibration>,
    /// The suspect panel: its calibrated rules and the per-miner simulation.
    pub panel: Option<panel::PanelCalibration>,
    /// The LLM rules as calibrated (thresholds and the panel's allowances), for
    /// [`write_rules`].
    #[serde(skip)]
    pub llm_rules: Option<crate::rules::LlmRules>,
}

impl Calibration {
    /// The detection tables as markdown (what `scripts/bench-detection` prints).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        if !self.rates.is_empty() {
            s += "### Measured honest false-positive rates (written into the rules)\n\n| check | honest judged | failed | rate | 95 % bound |\n|---|---:|---:|---:|---:|\n";
            for r in &self.rates {
                s += &format!(
                    "| `{}` | {} | {} | {} | {} |\n",
                    r.check,
                    r.n,
                    r.failures,
                    percent(r.failures as f64 / r.n as f64),
                    percent(r.upper_95())
                );
            }
            s += "\n";
        }
        if !self.by_config.is_empty() {
            s += &by_config_markdown(&self.by_config);
            s += "\n";
        }
        for c in &self.checks {
            s += &c.markdown();
            s += "\n";
        }
        if !self.llm_subchecks.is_empty() {
            let variants: Vec<&str> = self.llm_subchecks[0]
                .1
                .iter()
                .map(|r| r.variant.as_str())
                .collect();
            s += "### Every LLM check at these thresholds (share of pairs each flags)\n\n| variant |";
            for (name, _) in &self.llm_subchecks {
                s += &format!(" `{name}` |");
            }
            s += "\n|---|";
            s += &"---:|".repeat(self.llm_subchecks.len());
            s += "\n";
            for (i, v) in variants.iter().enumerate() {
                s += &format!("| {v} |");
                for (_, rows) in &self.llm_subchecks {
                    s += &format!(" {} |", percent(rows[i].rate));
                }
                s += "\n";
            }
        }
        if let Some(p) = &self.panel {
            s += "\n";
            s += &p.markdown();
        }
        if let Some(l) = &self.latency {
            s += "\n";
            s += &l.markdown();
        }
        s
    }
}

/// The largest 95 % bound of `check` over the honest configurations, where the run split
/// its sample into them and any judged the check.
pub fn largest_config_bound(
    by_config: &[(String, Vec<MeasuredRate>)],
    check: CheckId,
) -> Option<f64> {
    by_config
        .iter()
        .flat_map(|(_, rates)| rates.iter().filter(|r| r.check == check))
        .map(MeasuredRate::upper_95)
        .reduce(f64::max)
}

/// The per-configuration table: one row per honest configuration, one column per check
/// that judged any of them, each cell "failures / judged (95 % bound)".
fn by_config_markdown(by_config: &[(String, Vec<MeasuredRate>)]) -> String {
    let mut checks: Vec<CheckId> = Vec::new();
    for (_, rates) in by_config {
        for r in rates {
            if !checks.contains(&r.check) {
                checks.push(r.check);
            }
        }
    }
    let mut s = String::from(
        "### Honest rates per configuration (failures / judged, 95 % bound)\n\n| configuration |",
    );
    for c in &checks {
        s += &format!(" `{c}` |");
    }
    s += "\n|---|";
    s += &"---:|".repeat(checks.len());
    s += "\n";
    let mut worst: Vec<f64> = vec![0.0; checks.len()];
    for (config, rates) in by_config {
        s += &format!("| {config} |");
        for (k, c) in checks.iter().enumerate() {
            match rates.iter().find(|r| r.check == *c) {
                Some(r) => {
                    worst[k] = worst[k].max(r.upper_95());
                    s += &format!(" {} / {} ({}) |", r.failures, r.n, percent(r.upper_95()));
                }
                None => s += " — |",
            }
        }
        s += "\n";
    }
    s += "| **largest bound** |";
    for w in &worst {
        s += &format!(" **{}** |", percent(*w));
    }
    s += "\n";
    s
}

/// What one run calibrates; a part left `None` is skipped.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub image: Option<image::ImageOptions>,
    pub llm: Option<llm::LlmOptions>,
    /// The published timings file (`fixtures/gpu-timings.toml`).
    pub latency: Option<std::path::PathBuf>,
    /// Simulated miners per variant for the panel's per-miner table, and the most jobs
    /// each is followed for.
    pub miners: usize,
    pub max_jobs: usize,
}

/// Honest texts the panel's cost is timed on (each timed three times, best kept): one
/// scoring batch, whose time the ratios of the panel's cost need; the real model's
/// panel then takes about 290 text passes (minutes on 2 cores), not 1,150.
const COST_TEXTS: usize = 16;

/// Builds the pairs and calibrates every check asked for, against `rules`' target.
/// `progress` hears what is being done.
pub fn run(
    opts: &Options,
    rules: &crate::rules::Rules,
    progress: &dyn Fn(&str),
) -> anyhow::Result<Calibration> {
    let target = rules.checks.calibration.target_false_positive_rate;
    let mut checks = Vec::new();
    let mut llm_subchecks = Vec::new();
    let mut rates = Vec::new();
    let mut by_config = Vec::new();
    let (mut panel, mut calibrated_llm) = (None, None);
    if let Some(o) = &opts.image {
        progress(&format!(
            "image: {} jobs from {}, {} honest pairs each",
            o.references,
            o.dir.display(),
            o.honest_per_reference
        ));
        let pairs = image::pairs(o, &rules.checks.image)?;
        let report = image::calibrate(&pairs, &rules.checks.image, target)?.0;
        let honest = report.honest();
        rates.push(MeasuredRate {
            check: CheckId::ImageSimilarity,
            sample: image::describe(o),
            n: honest.pairs as u64,
            failures: honest.flagged as u64,
            models: o.models.clone(),
        });
        // Each honest variant (PNG, JPEG q98) is a configuration: the check is priced
        // at the largest one's bound.
        for row in report
            .rows
            .iter()
            .filter(|r| r.label == Label::Honest && r.variant != "all honest")
        {
            by_config.push((
                format!("image: {}", row.variant),
                vec![MeasuredRate {
                    check: CheckId::ImageSimilarity,
                    sample: row.variant.clone(),
                    n: row.pairs as u64,
                    failures: row.flagged as u64,
                    models: o.models.clone(),
                }],
            ));
        }
        checks.push(report);
    }
    if let Some(o) = &opts.llm {
        progress(&format!(
            "llm: {} honest ({} greedy) and {} per cheat, {} tokens, reference {}",
            o.honest + o.honest_greedy,
            o.honest_greedy,
            o.per_cheat,
            o.max_tokens,
            o.reference.display()
        ));
        let pairs = llm::pairs(o, progress)?;
        // The panel's allowances and threshold first: llm_suspect's outcomes use them.
        let mut llm_rules = rules.checks.llm.clone();
        let drift = panel::calibrate_rules(&pairs, &mut llm_rules, target)?;
        let (report, calibrated, subchecks, measured) = llm::calibrate(&pairs, &llm_rules, target)?;
        checks.push(report);
        checks.push(panel::check_report(&pairs, &calibrated, target)?);
        llm_subchecks = subchecks;
        by_config.extend(llm::rates_by_config(&pairs, &calibrated));
        let measured: Vec<MeasuredRate> = measured
            .into_iter()
            .map(|r| MeasuredRate {
                sample: llm::describe(o),
                models: o.models.clone(),
                ..r
            })
            .collect();
        progress(&format!(
            "llm: the suspect panel's per-miner simulation, {} miners per variant",
            opts.miners
        ));
        let mut simulated = rules.clone();
        simulated.checks.llm = calibrated.clone();
        apply_measured(
            &mut simulated,
            &measured,
            &by_config,
            &Provenance::of_this_run(),
        );
        let mut report = panel::report(
            &pairs,
            &simulated,
            drift,
            opts.miners,
            opts.max_jobs,
            o.seed,
        )?;
        let timed: Vec<crate::llm::ScoreJob<'_>> = pairs
            .iter()
            .filter(|p| p.label == Label::Honest && p.input.temperature > 0.3)
            .take(COST_TEXTS)
            .map(|p| crate::llm::ScoreJob {
                input: &p.input,
                text: &p.text,
            })
            .collect();
        report.cost = Some(panel::cost(&llm::reference_with_panel(o)?, &timed, 16)?);
        panel = Some(report);
        calibrated_llm = Some(calibrated);
        rates.extend(measured);
    }
    let latency = match &opts.latency {
        Some(path) => {
            progress(&format!("latency: published runs of {}", path.display()));
            let timings = latency::load(path)?;
            let l = latency::calibrate(rules, &timings)?;
            // The published runs cover these categories; a job of another is timed
            // against no honest run, so there the rate promises nothing.
            let categories: BTreeSet<String> = timings
                .runs
                .iter()
                .flat_map(|r| r.categories.iter().cloned())
                .collect();
            rates.push(MeasuredRate {
                check: CheckId::Latency,
                sample: format!(
                    "{} published honest runs of {} (one engine on one GPU each: a per-miner rate)",
                    l.runs,
                    path.display()
                ),
                n: l.runs as u64,
                failures: l.failures as u64,
                models: categories.into_iter().collect(),
            });
            Some(l)
        }
        None => None,
    };
    Ok(Calibration {
        target_fpr: target,
        checks,
        llm_subchecks,
        rates,
        by_config,
        latency,
        panel,
        llm_rules: calibrated_llm,
    })
}

/// `rules` with every measured rate in place, as `write_rules` writes them: the rate
/// its 95 % bound, the basis measured.
pub fn apply_measured(
    rules: &mut crate::rules::Rules,
    rates: &[MeasuredRate],
    by_config: &[(String, Vec<MeasuredRate>)],
    provenance: &Provenance,
) {
    for r in rates {
        if let Some(p) = rules.checks.policy.get_mut(&r.check) {
            p.false_positive_rate = r.upper_95();
            p.basis = crate::rules::Basis::Measured;
            p.measured = Some(crate::rules::Measurement {
                date: provenance.date.clone(),
                command: provenance.command.clone(),
                sample: r.sample.clone(),
                n: r.n,
                failures: r.failures,
                upper_95: r.upper_95(),
                max_config_upper_95: largest_config_bound(by_config, r.check),
                models: r.models.clone(),
            });
        }
    }
}

/// Writes into `<rules>/checks.toml`, keeping its comments and layout: each calibrated
/// check's thresholds; each measured check's rate (its honest 95 % bound) with
/// `basis = "measured"` and the measurement's provenance; and the latency envelope.
///
/// `lenient` keeps, of each LLM threshold and allowance, the more lenient of the rules'
/// value and this run's: for a run on a second reference model while one set of
/// thresholds serves every model. The rates are this run's, measured at its own
/// thresholds, so at the lenient ones they are bounds still.
pub fn write_rules(
    rules_dir: &Path,
    calibration: &Calibration,
    provenance: &Provenance,
    lenient: bool,
) -> anyhow::Result<()> {
    let path = rules_dir.join("checks.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    for c in &calibration.checks {
        let section = match c.check {
            CheckId::ImageSimilarity => "image",
            CheckId::LlmLikelihood => "llm",
            // The panel's threshold and allowances are written below.
            CheckId::LlmSuspect => continue,
            other => anyhow::bail!("no rules section for calibrated check {other}"),
        };
        for (key, value) in &c.thresholds {
            let item = &mut doc[section][key.as_str()];
            let value = &if lenient {
                let old = item.as_float();
                match (section, key.as_str(), old) {
                    // A failure is a z-score below it: lower is more lenient.
                    ("llm", "likelihood_z_min", Some(old)) => value.min(old),
                    _ => anyhow::bail!("no lenient merge for {section}.{key}"),
                }
            } else {
                *value
            };
            let v = if item.as_integer().is_some() {
                toml_edit::Value::from(*value as i64)
            } else {
                toml_edit::Value::from(*value)
            };
            replace_value(item, v, &format!("{section}.{key}"))?;
        }
    }
    for r in &calibration.rates {
        let policy = &mut doc["policy"][r.check.as_str()];
        let bound = r.upper_95();
        replace_value(
            &mut policy["false_positive_rate"],
            toml_edit::Value::from(bound),
            &format!("policy.{}.false_positive_rate", r.check),
        )?;
        policy["basis"] = toml_edit::value("measured");
        let mut m = toml_edit::InlineTable::new();
        m.insert("date", provenance.date.as_str().into());
        m.insert("command", provenance.command.as_str().into());
        m.insert("sample", r.sample.as_str().into());
        m.insert("n", (r.n as i64).into());
        m.insert("failures", (r.failures as i64).into());
        m.insert("upper_95", bound.into());
        if let Some(worst) = largest_config_bound(&calibration.by_config, r.check) {
            m.insert("max_config_upper_95", worst.into());
        }
        m.insert(
            "models",
            toml_edit::Value::Array(r.models.iter().map(String::as_str).collect()),
        );
        policy["measured"] = toml_edit::value(m);
    }
    if let Some(llm) = &calibration.llm_rules {
        let panel = &mut doc["llm"]["panel"];
        let llr_max = match panel["llr_max"].as_float() {
            Some(old) if lenient => llm.panel.llr_max.max(old),
            _ => llm.panel.llr_max,
        };
        replace_value(
            &mut panel["llr_max"],
            toml_edit::Value::from(llr_max),
            "llm.panel.llr_max",
        )?;
        let suspects = panel["suspects"]
            .as_array_mut()
            .context("llm.panel.suspects is missing from checks.toml")?;
        for s in suspects.iter_mut() {
            let Some(t) = s.as_inline_table_mut() else {
                continue;
            };
            let name = t.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            if let Some(d) = llm
                .panel
                .suspects
                .iter()
                .find(|r| r.name == name)
                .and_then(|r| r.drift_nats_per_token)
            {
                let old = t.get("drift_nats_per_token").and_then(|d| d.as_float());
                let d = match old {
                    Some(old) if lenient => d.max(old),
                    _ => d,
                };
                t.insert("drift_nats_per_token", d.into());
            }
        }
    }
    if let Some(l) = &calibration.latency {
        replace_value(
            &mut doc["latency"]["envelope_margin"],
            toml_edit::Value::from(l.margin),
            "latency.envelope_margin",
        )?;
        let mut rows = toml_edit::Array::new();
        for e in &l.envelope {
            let mut t = toml_edit::InlineTable::new();
            t.insert("category", e.category.as_str().into());
            t.insert("gpu", e.gpu.as_str().into());
            t.insert("efficiency", e.efficiency.into());
            t.insert("run", e.run.as_str().into());
            t.decor_mut().set_prefix("\n  ");
            rows.push_formatted(toml_edit::Value::InlineTable(t));
        }
        rows.set_trailing("\n");
        rows.set_trailing_comma(true);
        doc["latency"]["envelope"] = toml_edit::value(rows);
    }
    std::fs::write(&path, doc.to_string()).with_context(|| format!("writing {}", path.display()))
}

/// Puts `value` where `item` is, keeping the item's spacing and trailing comment.
fn replace_value(
    item: &mut toml_edit::Item,
    mut value: toml_edit::Value,
    name: &str,
) -> anyhow::Result<()> {
    let decor = item
        .as_value()
        .with_context(|| format!("{name} is missing from checks.toml"))?
        .decor()
        .clone();
    *value.decor_mut() = decor;
    *item = toml_edit::Item::Value(value);
    Ok(())
}

/// `v` rounded up to `digits` significant digits (a rate bound stays a bound).
fn significant(v: f64, digits: i32) -> f64 {
    if v <= 0.0 {
        return v;
    }
    let scale = 10f64.powi(digits - 1 - v.log10().floor() as i32);
    let r = (v * scale).ceil() / scale;
    // Through the decimal text, so 0.0026 is written as 0.0026.
    format!("{r:.*e}", (digits - 1) as usize)
        .parse()
        .unwrap_or(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(label: Label, variant: &str, s: &[f64]) -> Pair {
        Pair {
            label,
            variant: variant.into(),
            suspicion: s.to_vec(),
        }
    }

    #[test]
    fn the_sweep_keeps_the_honest_rate_within_the_target() {
        // 100 honest pairs with values 0..99 on measure 0 and 0 on measure 1.
        let mut pairs: Vec<Pair> = (0..100)
            .map(|i| pair(Label::Honest, "h", &[f64::from(i), 0.0]))
            .collect();
        pairs.extend((0..10).map(|i| pair(Label::Cheat, "far", &[200.0 + f64::from(i), 0.0])));
        pairs.extend((0..10).map(|i| pair(Label::Cheat, "near", &[90.0 + f64::from(i), 0.0])));
        let s = sweep(&pairs, &[f64::NEG_INFINITY; 2], 0.02).unwrap();
        // Two honest pairs (98, 99) may be flagged: the threshold is the third largest.
        assert_eq!(s.thresholds[0], 97.0);
        assert!((s.fpr - 0.02).abs() < 1e-12);
        // A floor overrides the data.
        let s = sweep(&pairs, &[150.0, f64::NEG_INFINITY], 0.02).unwrap();
        assert_eq!(s.thresholds[0], 150.0);
        assert_eq!(s.fpr, 0.0);
        let far = s.roc.iter().find(|c| c.cheat == "far").unwrap();
        assert_eq!(far.points.first(), Some(&(0.0, 1.0)));
        // The curve ignores the floor: it runs on to flagging every honest pair.
        assert_eq!(far.points.last(), Some(&(0.99, 1.0)));
    }

    #[test]
    fn rate_rows_total_the_honest_pairs_and_bound_them() {
        let v = vec![
            (Label::Honest, "a".to_string(), false),
            (Label::Cheat, "x".to_string(), true),
            (Label::Honest, "b".to_string(), true),
            (Label::Cheat, "x".to_string(), false),
        ];
        let rows = rate_rows(&v);
        let names: Vec<&str> = rows.iter().map(|r| r.variant.as_str()).collect();
        assert_eq!(names, ["a", "b", "all honest", "x"]);
        assert_eq!((rows[2].pairs, rows[2].flagged), (2, 1));
        assert!(rows[2].upper_95.unwrap() > 0.5);
        assert_eq!(rows[3].rate, 0.5);
    }

    #[test]
    fn rates_round_up_to_two_significant_digits() {
        assert_eq!(significant(0.002_513, 2), 0.0026);
        assert_eq!(significant(0.000_998_6, 2), 0.001);
        assert_eq!(floor_to(0.8129, 3), 0.812);
        assert_eq!(floor_to(-3.091, 2), -3.1);
    }

    #[test]
    fn the_largest_configuration_bound_is_the_worst_configuration_s() {
        let rate = |check, failures, n| MeasuredRate {
            check,
            n,
            failures,
            sample: String::new(),
            models: Vec::new(),
        };
        let by_config = vec![
            ("a".to_string(), vec![rate(CheckId::LlmRank, 0, 100)]),
            (
                "b".to_string(),
                vec![
                    rate(CheckId::LlmRank, 2, 100),
                    rate(CheckId::LlmLikelihood, 0, 50),
                ],
            ),
        ];
        let worst = largest_config_bound(&by_config, CheckId::LlmRank).unwrap();
        assert_eq!(worst, rate(CheckId::LlmRank, 2, 100).upper_95());
        assert!(worst > rate(CheckId::LlmRank, 0, 100).upper_95());
        assert_eq!(largest_config_bound(&by_config, CheckId::LlmEarlyEnd), None);
    }
}

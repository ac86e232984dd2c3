//! The decision engine: from a miner's judged jobs to `none`, `flag for review` or `slash`.
//!
//! Only `Fail` outcomes are evidence. For each check, the number of the miner's judged
//! jobs `n` and failed jobs `k` give the probability that an honest miner fails at least
//! that often: a binomial tail under the check's false-positive rate from the rules (the
//! largest of its declared rate, its measured 95 % bound and the largest 95 % bound of
//! any honest configuration the calibration split the sample into). Checks whose honest
//! failures would repeat on every job (a hardware string, a miner build) have a rate per
//! miner and count once.
//!
//! **No two checks are assumed independent.** Checks that fail together for one cause
//! (an image too small fails `output_size` and `image_similarity`; a strange token fails
//! `llm_rank` and `llm_unlikely_tokens`) must not multiply, and no list of causes is
//! complete, so the evidence is the strongest single check's tail. It is a valid
//! probability whatever the checks' dependence: one bad job never slashes unless one
//! check's own rate allows it.
//!
//! - **Slash.** Only checks whose rate was measured and that are not flag-only count,
//!   and each only where the miner failed it on a share of its judged jobs of at least
//!   the check's effect floor ([`crate::rules::CheckPolicy::effect_floor`]: a margin
//!   times the largest rate an honest configuration was measured at). The tail alone
//!   grows without limit with the jobs judged, so a rate a few times too low would
//!   slash an honest miner almost surely; the floor keeps such an error from ever
//!   slashing, while cheats fail 20–100 % of their jobs.
//!   Each such check's tail is computed at its slash rate
//!   ([`crate::rules::CheckPolicy::slash_rate`]: `tail_margin` times that worst rate),
//!   so that it stays a valid p-value for an honest miner whose true rate is up to that
//!   multiple of the measured one. The strongest one's tail, times the number of such
//!   checks that judged the miner (Bonferroni: the engine looked at each of them), is
//!   the miner's `honest_probability`.
//!   A slash is automatic at or below `Rules::auto_slash_threshold`: the lifetime
//!   false-slash budget spread over every decision of a miner-year, so that an honest
//!   miner is ever slashed with at most that probability per year (union bound; see
//!   docs/DETECTION.md and [`crate::lifetime`]).
//! - **Flag.** Every check counts, assumed rates included: the strongest tail at the
//!   rate itself (no margin: a review is cheap, and sooner is better), as
//!   `review_probability`, flags the miner for staff review at or below
//!   `review_max_honest_probability`.
//!
//! - **The suspect panel's per-miner evidence** ([`SequenceEvidence`]) is where jobs
//!   are combined by their continuous statistic rather than counted: each sampled LLM
//!   job's `llm_suspect` outcome carries every suspect's drift-corrected
//!   log-likelihood ratio (a log e-value: its exponential has mean at most 1 for an
//!   honest miner), and the window's sums, averaged over suspects, are the miner's
//!   e-value `E` (a product of independent e-values, mixed over suspects and over the
//!   share of jobs a partial cheater substitutes, [`PanelTally`], is one).
//!   `1/E` is then a valid honest probability by Markov's inequality at every
//!   decision, and it enters the decision beside the check tails: it counts in the
//!   Bonferroni factor and in the lifetime budget like them, and it can slash only when
//!   `llm_suspect`'s rate and every suspect's drift were measured, and only where `ln E`
//!   per scored token reaches `panel.min_log_evidence_per_token` (its effect floor).
//!
//! A slash id is a hash of the miner, the sorted ids of the jobs it covers and the rule:
//! deciding twice on the same evidence yields the same slash, and jobs already covered by
//! a slash are never counted again.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::checks::{JobVerdict, Verdict};
use crate::ids::{JobId, MinerId};
use crate::outcome::{CheckId, Outcome};
use crate::points::{MicroPoints, Points};
use crate::rules::{Rules, SlashScope};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    None,
    FlagForReview,
    Slash,
}

impl Action {
    /// The name the store, the metrics and the pages use (serde's name too).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::FlagForReview => "flag_for_review",
            Action::Slash => "slash",
        }
    }
}

/// A pointer to one piece of evidence: addressable by job and check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRef {
    pub job_id: JobId,
    pub check: CheckId,
    pub summary: String,
    /// The S3 key of the miner output that was judged, where there is one.
    pub output_key: Option<String>,
}

/// Per-check tally behind a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckTally {
    pub check: CheckId,
    pub judged: u64,
    pub failed: u64,
    /// The rate the engine used: the largest an honest configuration was measured at
    /// (`CheckPolicy::worst_config_rate`), never a pooled rate below it.
    pub false_positive_rate: f64,
    /// The probability that an honest miner fails this check at least this often, at
    /// `false_positive_rate`: the evidence a flag for review reads.
    pub honest_probability: f64,
    /// The same tail at `slashing.tail_margin` times `false_positive_rate` (at most 1,
    /// [`crate::rules::CheckPolicy::slash_rate`]): the evidence a slash reads, valid for
    /// honest miners whose true rate is up to that multiple of the measured one. Absent
    /// in decisions taken before the margin, whose slash read `honest_probability`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slash_probability: Option<f64>,
    /// Whether this check's evidence can count toward an automatic slash: its rate was
    /// measured, it is not flag-only, and the miner's failure share reaches
    /// `effect_floor`.
    pub can_slash: bool,
    /// The failure share below which this check cannot carry a slash, however long
    /// the tail ([`crate::rules::CheckPolicy::effect_floor`]); absent in decisions
    /// taken before the floor existed.
    #[serde(default)]
    pub effect_floor: f64,
    /// Whether these are the jobs of models the check's honest rate was measured on
    /// ([`crate::rules::Rules::slashes_on`]). A check judging both kinds of job has a
    /// tally for each; the other one's failures can only flag. True in decisions taken
    /// before rates were scoped to models.
    #[serde(default = "yes")]
    pub in_scope: bool,
}

fn yes() -> bool {
    true
}

impl CheckTally {
    /// The tail the slash rule reads: `slash_probability`, or in an older decision
    /// `honest_probability`.
    pub fn slash_tail(&self) -> f64 {
        self.slash_probability.unwrap_or(self.honest_probability)
    }

    /// Whether this tally can carry a slash, and if not why: what a reviewer reads.
    pub fn slash_note(&self, rules: &Rules) -> &'static str {
        let p = rules.policy(self.check);
        if self.can_slash {
            "yes"
        } else if p.flag_only {
            "no (flag only)"
        } else if !p.can_slash() {
            "no (assumed rate)"
        } else if !self.in_scope {
            "no (rate measured on other models)"
        } else {
            "no (below the effect floor)"
        }
    }
}

/// How often one check judged and failed a miner's jobs in the window: the jobs of the
/// models its rate was measured on (`in_scope`), or the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub check: CheckId,
    pub judged: u64,
    pub failed: u64,
    pub in_scope: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slash {
    pub slash_id: String,
    pub miner_id: MinerId,
    /// What the slash takes, exactly (`points::MicroPoints`).
    pub amount: MicroPoints,
    pub jobs: Vec<JobId>,
    pub rule_id: String,
    pub reason: String,
    pub honest_probability: f64,
    pub rules_digest: String,
    pub evidence: Vec<EvidenceRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub miner_id: MinerId,
    pub action: Action,
    /// The probability that an honest miner shows evidence this strong from the checks
    /// that can slash: the strongest one's tail at its slash rate
    /// (`CheckTally::slash_tail`) times how many of them judged the miner (1 when none
    /// failed). Compared with `Rules::auto_slash_threshold`.
    pub honest_probability: f64,
    /// The strongest tail of any failing check, assumed rates included (1 when none
    /// failed). Compared with `review_max_honest_probability`.
    pub review_probability: f64,
    pub tallies: Vec<CheckTally>,
    pub evidence: Vec<EvidenceRef>,
    pub slash: Option<Slash>,
    /// For a flag: the slash staff confirming it would write (rule `STAFF_RULE_ID`),
    /// which is what the flag puts at stake.
    #[serde(default)]
    pub confirmation: Option<Slash>,
    /// The suspect panel's evidence over the window, where any job carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceEvidence>,
}

/// The shares of its sampled LLM jobs a partial cheater may serve from a suspect, over
/// which the panel's per-miner evidence is mixed ([`PanelTally`]). 1 is the miner that
/// cheats on every job; the smaller shares let a miner that substitutes on some of its
/// jobs build evidence too, where the product over all jobs would let its honest jobs
/// cancel its cheated ones. The mixture costs at most `ln 5` = 1.6 nats against the
/// share that fits best.
pub const SUBSTITUTED_SHARES: [f64; 5] = [0.1, 0.2, 0.3, 0.5, 1.0];

/// The suspect panel's evidence over a miner's jobs, job by job: for each suspect `s`
/// and each share `λ` of [`SUBSTITUTED_SHARES`], `Σ_j ln(1 − λ + λ·e_sj)`, where
/// `e_sj` is the suspect's drift-corrected likelihood ratio on job `j` (mean at most 1
/// for an honest miner). For a fixed `λ` each factor `1 − λ + λ·e_sj` has mean at most 1
/// too, so the product over jobs is an e-value, and so is the mean over suspects and
/// shares: `E`.
#[derive(Debug, Clone, Default)]
pub struct PanelTally {
    jobs: u64,
    tokens: u64,
    /// Jobs of models `llm_suspect`'s rate and the suspects' drift were not measured on.
    off_scope_jobs: u64,
    /// Per suspect: its plain sum `Σ_j ln e_sj` and the mixed sums, one per share.
    suspects: BTreeMap<String, (f64, [f64; SUBSTITUTED_SHARES.len()])>,
}

impl PanelTally {
    /// Adds one job: its scored tokens and each suspect's log evidence. A job whose
    /// evidence is not finite adds nothing.
    pub fn add_job<'a>(
        &mut self,
        tokens: u64,
        suspects: impl IntoIterator<Item = (&'a str, f64)> + Clone,
    ) -> bool {
        let mut any = false;
        for (_, x) in suspects.clone() {
            if !x.is_finite() {
                return false;
            }
            any = true;
        }
        if !any {
            return false;
        }
        self.jobs += 1;
        self.tokens += tokens;
        for (name, x) in suspects {
            let (plain, mixed) = self.suspects.entry(name.to_owned()).or_default();
            *plain += x;
            for (sum, lambda) in mixed.iter_mut().zip(SUBSTITUTED_SHARES) {
                *sum += ln_mixture(lambda, x);
            }
        }
        true
    }

    /// Adds a job's `llm_suspect` outcome where it carried the panel's ratios.
    pub fn add_outcome(&mut self, outcome: &Outcome) -> bool {
        let details = match outcome {
            Outcome::Pass { measured } => measured,
            Outcome::Fail { evidence } => &evidence.details,
            Outcome::Inconclusive { .. } => return false,
        };
        let Ok(suspects) = serde_json::from_value::<Vec<crate::checks::llm::SuspectEvidence>>(
            details["suspects"].clone(),
        ) else {
            return false;
        };
        let tokens = details["tokens"].as_u64().unwrap_or(0);
        self.add_job(
            tokens,
            suspects.iter().map(|s| (s.name.as_str(), s.evidence)),
        )
    }

    /// [`PanelTally::add_outcome`] for a job of a model `llm_suspect` does not slash on
    /// (`in_scope` false): its ratio's mean was never measured to be at most 1 there, so
    /// the evidence it joins can only flag.
    pub fn add_scoped_outcome(&mut self, outcome: &Outcome, in_scope: bool) -> bool {
        let added = self.add_outcome(outcome);
        if added && !in_scope {
            self.off_scope_jobs += 1;
        }
        added
    }

    /// The miner's evidence so far; `None` when no job carried any.
    pub fn evidence(&self, rules: &Rules) -> Option<SequenceEvidence> {
        if self.jobs == 0 || self.suspects.is_empty() {
            return None;
        }
        let mixed = || self.suspects.values().flat_map(|(_, m)| m.iter().copied());
        let log_e_value = crate::checks::llm::log_mean_exp(mixed());
        // The share whose sums (over suspects) weigh most in the mixture.
        let substituted_share = (0..SUBSTITUTED_SHARES.len())
            .map(|i| {
                let l = crate::checks::llm::log_mean_exp(self.suspects.values().map(|(_, m)| m[i]));
                (SUBSTITUTED_SHARES[i], l)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(1.0, |(share, _)| share);
        let mut suspects: Vec<SuspectTotal> = self
            .suspects
            .iter()
            .map(|(name, (plain, _))| SuspectTotal {
                name: name.clone(),
                evidence: *plain,
            })
            .collect();
        suspects.sort_by(|a, b| b.evidence.total_cmp(&a.evidence));
        let panel = &rules.checks.llm.panel;
        let per_token = log_e_value / self.tokens.max(1) as f64;
        Some(SequenceEvidence {
            jobs: self.jobs,
            tokens: self.tokens,
            suspects,
            log_e_value,
            substituted_share,
            honest_probability: (-log_e_value).exp().min(1.0),
            off_scope_jobs: self.off_scope_jobs,
            can_slash: panel_measured(rules)
                && self.off_scope_jobs == 0
                && per_token >= panel.min_log_evidence_per_token,
        })
    }
}

/// Whether the panel's per-miner evidence can slash at all: `llm_suspect`'s rate and
/// every suspect's drift were measured.
fn panel_measured(rules: &Rules) -> bool {
    rules.policy(CheckId::LlmSuspect).can_slash() && rules.checks.llm.panel.drift_measured()
}

/// `ln(1 − λ + λ·e^x)`, stable for any `x`.
fn ln_mixture(lambda: f64, x: f64) -> f64 {
    if lambda >= 1.0 {
        return x;
    }
    let (a, b) = ((1.0 - lambda).ln(), lambda.ln() + x);
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// The suspect panel's evidence accumulated over a miner's jobs in the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceEvidence {
    /// Sampled jobs whose `llm_suspect` outcome carried the panel's ratios.
    pub jobs: u64,
    /// The tokens the panel scored over those jobs.
    #[serde(default)]
    pub tokens: u64,
    /// Each suspect's summed evidence (log e-value, nats) over those jobs, best first:
    /// the first is the suspect that fits the miner's texts best.
    pub suspects: Vec<SuspectTotal>,
    /// `ln E`: the log of the mean, over suspects and substituted shares, of each
    /// one's product over jobs ([`PanelTally`]).
    pub log_e_value: f64,
    /// The share of [`SUBSTITUTED_SHARES`] that fits the miner best.
    #[serde(default = "one")]
    pub substituted_share: f64,
    /// `min(1, 1/E)`: how likely an honest miner shows evidence this strong.
    pub honest_probability: f64,
    /// Of `jobs`, those of models `llm_suspect`'s rate was not measured on.
    #[serde(default)]
    pub off_scope_jobs: u64,
    /// Whether it can count toward an automatic slash: `llm_suspect`'s rate and every
    /// suspect's drift were measured, every job it covers is of a model they were
    /// measured on, and `ln E` per token scored reaches
    /// `panel.min_log_evidence_per_token`.
    pub can_slash: bool,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuspectTotal {
    pub name: String,
    pub evidence: f64,
}

impl SequenceEvidence {
    /// The panel's evidence over `outcomes` (each a job's `llm_suspect` outcome, and
    /// whether its model is one `llm_suspect` slashes on). `None` when no job carried
    /// any.
    pub fn from_outcomes<'a>(
        outcomes: impl IntoIterator<Item = (&'a Outcome, bool)>,
        rules: &Rules,
    ) -> Option<SequenceEvidence> {
        let mut tally = PanelTally::default();
        for (o, in_scope) in outcomes {
            tally.add_scoped_outcome(o, in_scope);
        }
        tally.evidence(rules)
    }

    /// The suspect that fits best.
    pub fn best(&self) -> &str {
        self.suspects.first().map_or("", |s| s.name.as_str())
    }
}

/// What one decision makes of the evidence: the two probabilities and the action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    pub honest_probability: f64,
    pub review_probability: f64,
    pub action: Action,
}

/// The decision rule on per-check counts alone: for each check, how many of the
/// miner's jobs in the window it judged and failed. [`decide`] applies it to verdicts;
/// the lifetime simulation applies it to simulated counts. Returns the tallies of the
/// failing checks and the assessment.
pub fn assess_counts(
    counts: impl IntoIterator<Item = (CheckId, u64, u64)>,
    rules: &Rules,
) -> (Vec<CheckTally>, Assessment) {
    assess(in_scope(counts), None, rules)
}

/// Counts of jobs whose models every check's rate was measured on.
pub fn in_scope(
    counts: impl IntoIterator<Item = (CheckId, u64, u64)>,
) -> impl Iterator<Item = Count> {
    counts.into_iter().map(|(check, judged, failed)| Count {
        check,
        judged,
        failed,
        in_scope: true,
    })
}

/// [`assess_counts`] with each count scoped to the models its check's rate was measured
/// on (a count off them can only flag), and the suspect panel's per-miner evidence
/// beside the counts: its honest probability competes with the checks' tails, and it
/// counts as one more slashing test judged when it can slash.
pub fn assess(
    counts: impl IntoIterator<Item = Count>,
    sequence: Option<&SequenceEvidence>,
    rules: &Rules,
) -> (Vec<CheckTally>, Assessment) {
    // The panel is a slashing test wherever it could slash, whether or not this
    // miner's evidence reached its floor: the floor only narrows where it rejects.
    let mut slash_checks_judged = u64::from(sequence.is_some() && panel_measured(rules));
    let mut tallies = Vec::new();
    for Count {
        check,
        judged: n,
        failed: k,
        in_scope,
    } in counts
    {
        let policy = rules.policy(check);
        // A check's jobs off its measured models are not a slashing test: only its
        // in-scope count (one per check) adds to the Bonferroni factor.
        let slashing = policy.can_slash() && in_scope;
        if n > 0 && slashing {
            slash_checks_judged += 1;
        }
        if k == 0 {
            continue;
        }
        let (n, k) = if policy.independent_across_jobs {
            (n, k)
        } else {
            (1, 1)
        };
        let rate = policy.worst_config_rate();
        let effect_floor = policy.effect_floor(rules.slashing.effect_margin);
        let slash_rate = policy.slash_rate(rules.slashing.tail_margin);
        tallies.push(CheckTally {
            check,
            judged: n,
            failed: k,
            false_positive_rate: rate,
            honest_probability: crate::stats::binomial_tail(k, n, rate),
            slash_probability: Some(crate::stats::binomial_tail(k, n, slash_rate)),
            can_slash: slashing && k as f64 >= effect_floor * n as f64,
            effect_floor,
            in_scope,
        });
    }
    // A slash reads each check's tail at its slash rate (the tail margin); a flag
    // reads it at the measured rate itself.
    let slash_tail = sequence
        .filter(|s| s.can_slash)
        .map_or(1.0, |s| s.honest_probability);
    let slash_tail = tallies
        .iter()
        .filter(|t| t.can_slash)
        .map(CheckTally::slash_tail)
        .fold(slash_tail, f64::min);
    let review_probability = tallies
        .iter()
        .map(|t| t.honest_probability)
        .fold(sequence.map_or(1.0, |s| s.honest_probability), f64::min);
    let honest_probability = (slash_checks_judged.max(1) as f64 * slash_tail).min(1.0);
    let action = if tallies.is_empty() && review_probability >= 1.0 {
        Action::None
    } else if honest_probability <= rules.auto_slash_threshold() {
        Action::Slash
    } else if review_probability <= rules.slashing.review_max_honest_probability {
        Action::FlagForReview
    } else {
        Action::None
    };
    (
        tallies,
        Assessment {
            honest_probability,
            review_probability,
            action,
        },
    )
}

/// The slash id: BLAKE3 over the miner, the sorted covered job ids and the rule id.
pub fn slash_id(miner: &MinerId, jobs: &[JobId], rule_id: &str) -> String {
    let mut sorted: Vec<&str> = jobs.iter().map(JobId::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut h = blake3::Hasher::new_derive_key("heurist proctor 2026-11 slash id v1");
    h.update(miner.to_string().as_bytes());
    h.update(b"\0");
    for j in sorted {
        h.update(j.as_bytes());
        h.update(b"\n");
    }
    h.update(b"\0");
    h.update(rule_id.as_bytes());
    h.finalize().to_hex().to_string()
}

/// Decides on a miner from the verdicts a decision counts (`case::counted`: of each
/// job its latest stage, inside the window), leaving out the jobs an earlier slash
/// covers. `points_factor` is the factor the ledger applied to this GPU's points (its
/// NFT boost, see `points::nft_boost_factor`), so that a slash takes what was actually
/// credited. `case::decide` is the one caller that reads a history; this is the rule.
pub fn decide(
    miner: &MinerId,
    counted: &[JobVerdict],
    slashed_jobs: &BTreeSet<JobId>,
    points_factor: f64,
    rules: &Rules,
) -> Decision {
    let window: Vec<&JobVerdict> = counted
        .iter()
        .filter(|v| &v.miner_id == miner && !slashed_jobs.contains(&v.job_id))
        .collect();

    // Per check and scope: whether the job's model is one the check's rate covers.
    let mut judged: BTreeMap<(CheckId, bool), (u64, u64)> = BTreeMap::new();
    let mut evidence = Vec::new();
    // Jobs whose passing `llm_suspect` outcome still adds to the panel's evidence:
    // cited when that evidence carries the decision.
    let mut panel_passes = Vec::new();
    for v in &window {
        for c in &v.checks {
            let e = judged
                .entry((c.check, rules.slashes_on(c.check, v.model_id.as_str())))
                .or_default();
            match &c.outcome {
                Outcome::Pass { measured } => {
                    e.0 += 1;
                    if c.check == CheckId::LlmSuspect && measured["suspects"].is_array() {
                        panel_passes.push(EvidenceRef {
                            job_id: v.job_id.clone(),
                            check: c.check,
                            summary: format!(
                                "within the per-job limit; the suspect panel's statistic is {:.2} over {} tokens, best fit {}",
                                measured["statistic"].as_f64().unwrap_or(f64::NAN),
                                measured["tokens"],
                                measured["best"].as_str().unwrap_or("?")
                            ),
                            output_key: v.output_key.clone(),
                        });
                    }
                }
                Outcome::Fail { evidence: ev } => {
                    e.0 += 1;
                    e.1 += 1;
                    evidence.push(EvidenceRef {
                        job_id: v.job_id.clone(),
                        check: c.check,
                        summary: ev.summary.clone(),
                        output_key: v.output_key.clone(),
                    });
                }
                Outcome::Inconclusive { .. } => {}
            }
        }
    }
    let sequence = SequenceEvidence::from_outcomes(
        window.iter().flat_map(|v| {
            let in_scope = rules.slashes_on(CheckId::LlmSuspect, v.model_id.as_str());
            v.checks
                .iter()
                .filter(|c| c.check == CheckId::LlmSuspect)
                .map(move |c| (&c.outcome, in_scope))
        }),
        rules,
    );
    let (tallies, assessment) = assess(
        judged
            .into_iter()
            .map(|((check, in_scope), (judged, failed))| Count {
                check,
                judged,
                failed,
                in_scope,
            }),
        sequence.as_ref(),
        rules,
    );
    // Whether the panel's evidence is (one of) the strongest behind a probability.
    let carried = |slashing_only: bool, p: f64| {
        sequence
            .as_ref()
            .filter(|s| (s.can_slash || !slashing_only) && s.honest_probability <= p)
    };
    let Assessment {
        honest_probability,
        review_probability,
        action,
    } = assessment;
    let threshold = match action {
        Action::Slash => Some((true, honest_probability)),
        Action::FlagForReview => Some((false, review_probability)),
        Action::None => None,
    };
    if threshold.is_some_and(|(slashing, p)| carried(slashing, p).is_some()) {
        evidence.extend(panel_passes);
    }
    let note = |s: &SequenceEvidence| {
        format!(
            "; the suspect panel over {} sampled jobs fits {} best (e-value {:.2e})",
            s.jobs,
            s.best(),
            s.log_e_value.exp()
        )
    };
    let slash = (action == Action::Slash).then(|| {
        // The reason names the checks that carried the slash; the evidence keeps
        // every failure, for the reviewers and the appeal.
        let mut checks: BTreeSet<CheckId> = tallies
            .iter()
            .filter(|t| t.can_slash)
            .map(|t| t.check)
            .collect();
        let panel = carried(true, honest_probability);
        if panel.is_some() {
            checks.insert(CheckId::LlmSuspect);
        }
        build_slash(
            miner,
            &window,
            &evidence,
            points_factor,
            &rules.slashing.rule_id,
            format!(
                "failed {}: an honest miner shows this evidence with probability {honest_probability:.2e}{}",
                checks.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
                panel.map(note).unwrap_or_default()
            ),
            honest_probability,
            rules,
        )
    });
    // What staff confirming a flag would write: every failing check counts, at the
    // strength the reviewer saw.
    let confirmation = (action == Action::FlagForReview).then(|| {
        let mut checks: BTreeSet<CheckId> = tallies.iter().map(|t| t.check).collect();
        let panel = carried(false, review_probability);
        if panel.is_some() {
            checks.insert(CheckId::LlmSuspect);
        }
        build_slash(
            miner,
            &window,
            &evidence,
            points_factor,
            STAFF_RULE_ID,
            format!(
                "confirmed by staff: failed {}: an honest miner fails this often with probability {review_probability:.2e}{}",
                checks.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
                panel.map(note).unwrap_or_default()
            ),
            review_probability,
            rules,
        )
    });

    Decision {
        miner_id: miner.clone(),
        action,
        honest_probability,
        review_probability,
        tallies,
        evidence,
        slash,
        confirmation,
        sequence,
    }
}

/// The rule id of a slash staff confirmed from a flag.
pub const STAFF_RULE_ID: &str = "staff-confirmed-v1";

/// A slash of `window`'s jobs that `slashing.scope` covers, given its failures.
#[allow(clippy::too_many_arguments)]
fn build_slash(
    miner: &MinerId,
    window: &[&JobVerdict],
    evidence: &[EvidenceRef],
    points_factor: f64,
    rule_id: &str,
    reason: String,
    honest_probability: f64,
    rules: &Rules,
) -> Slash {
    let sl = &rules.slashing;
    let failed_jobs: BTreeSet<&JobId> = evidence.iter().map(|e| &e.job_id).collect();
    let covered: Vec<&JobVerdict> = window
        .iter()
        .copied()
        .filter(|v| match sl.scope {
            SlashScope::MinerWindow => {
                v.verdict != Verdict::Inconclusive || failed_jobs.contains(&v.job_id)
            }
            SlashScope::FailedJobs => failed_jobs.contains(&v.job_id),
        })
        .collect();
    let jobs: Vec<JobId> = covered.iter().map(|v| v.job_id.clone()).collect();
    let amount = MicroPoints::from_points(
        covered
            .iter()
            .map(|v| v.points)
            .sum::<Points>()
            .scaled(sl.fraction * points_factor),
    );
    Slash {
        slash_id: slash_id(miner, &jobs, rule_id),
        miner_id: miner.clone(),
        amount,
        jobs,
        rule_id: rule_id.to_owned(),
        reason,
        honest_probability,
        rules_digest: window
            .first()
            .map(|v| v.rules_digest.clone())
            .unwrap_or_default(),
        evidence: evidence.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::CheckResult;
    use crate::record::JobKind;

    /// The rule on fresh jobs: no earlier slash, no boost.
    fn decide(miner: &MinerId, jobs: &[JobVerdict], r: &Rules) -> Decision {
        super::decide(miner, jobs, &BTreeSet::new(), 1.0, r)
    }

    /// The names the store, the metrics and the pages write are serde's: one spelling.
    #[test]
    fn action_and_verdict_names_are_their_serde_names() {
        use crate::checks::Verdict;
        let json = |s: &str| format!("\"{s}\"");
        for a in [Action::None, Action::FlagForReview, Action::Slash] {
            assert_eq!(serde_json::to_string(&a).unwrap(), json(a.as_str()));
        }
        for v in [
            Verdict::Pass,
            Verdict::Fail,
            Verdict::Invalid,
            Verdict::Inconclusive,
        ] {
            assert_eq!(serde_json::to_string(&v).unwrap(), json(v.as_str()));
        }
        for r in [
            crate::record::Role::System,
            crate::record::Role::User,
            crate::record::Role::Assistant,
        ] {
            assert_eq!(serde_json::to_string(&r).unwrap(), json(r.as_str()));
        }
        for b in [crate::rules::Basis::Measured, crate::rules::Basis::Assumed] {
            assert_eq!(serde_json::to_string(&b).unwrap(), json(b.as_str()));
        }
    }

    /// The embedded rules with every measured rate holding on every model: most of
    /// these tests are about counts, not about where a rate holds (which the scope
    /// tests below take up with the shipped scopes).
    fn rules() -> Rules {
        Rules::measured_everywhere()
    }

    fn on_model(mut v: JobVerdict, model: &str) -> JobVerdict {
        v.model_id = crate::ids::ModelId::parse(model).unwrap();
        v
    }

    #[test]
    fn a_check_slashes_only_on_the_models_its_rate_was_measured_on() {
        // The image rate measured on SD 1.5 outputs: Aurora is an SD 1.5 checkpoint,
        // SDXL is not.
        let mut r = rules();
        let image = CheckId::ImageSimilarity;
        r.checks
            .policy
            .get_mut(&image)
            .unwrap()
            .measured
            .as_mut()
            .unwrap()
            .models = vec!["sd15".into()];
        assert!(r.slashes_on(image, "Aurora") && !r.slashes_on(image, "SDXL"));
        let jobs = |model: &str, from: usize| -> Vec<JobVerdict> {
            (from..from + 7)
                .map(|i| on_model(verdict(&format!("j{i}"), &[(image, false)]), model))
                .collect()
        };
        let decide_on = |v: &[JobVerdict]| decide(&miner(), v, &r);

        let covered = decide_on(&jobs("Aurora", 0));
        assert_eq!(covered.action, Action::Slash, "{:?}", covered.tallies);
        let other = decide_on(&jobs("SDXL", 0));
        assert_eq!(other.action, Action::FlagForReview, "{:?}", other.tallies);
        let t = &other.tallies[0];
        assert!(!t.in_scope && !t.can_slash, "{t:?}");
        assert_eq!(t.slash_note(&r), "no (rate measured on other models)");
        // A miner on both: one tally each; the covered one slashes, and only it is a
        // slashing test (the Bonferroni factor stays 1).
        let mut both = jobs("Aurora", 0);
        both.extend(jobs("SDXL", 7));
        let d = decide_on(&both);
        assert_eq!(d.action, Action::Slash);
        assert_eq!(d.tallies.len(), 2);
        let in_scope: Vec<_> = d.tallies.iter().filter(|t| t.in_scope).collect();
        assert_eq!((in_scope.len(), in_scope[0].judged), (1, 7));
        assert_eq!(d.honest_probability, in_scope[0].slash_tail());
        // An unmeasured model (not in the registry) is covered by `*` only.
        assert!(!r.slashes_on(image, "MysteryDiffusion"));
        assert!(rules().slashes_on(image, "MysteryDiffusion"));
    }

    #[test]
    fn the_shipped_rates_slash_on_no_network_model_but_latency_s_categories() {
        // Measured on photographs and on SmolLM2: every image and LLM failure on the
        // network's models is for review.
        let r = Rules::embedded().unwrap();
        for model in r.models.models.keys() {
            for check in CheckId::ALL {
                if r.slashes_on(check, model) {
                    assert_eq!(check, CheckId::Latency, "{check} slashes on {model}");
                }
            }
        }
        // Latency's published runs cover the SD categories, not the API-served LLMs.
        assert!(r.slashes_on(CheckId::Latency, "Aurora") && r.slashes_on(CheckId::Latency, "SDXL"));
        assert!(!r.slashes_on(CheckId::Latency, "google/gemini-2.5-flash"));
        assert!(r.slashes_on(CheckId::LlmSuspect, "smollm2-135m-instruct"));
        assert_eq!(r.slash_scope(CheckId::ImageSimilarity), None);
        let jobs: Vec<JobVerdict> = (0..12)
            .map(|i| {
                on_model(
                    verdict(&format!("j{i}"), &[(CheckId::ImageSimilarity, false)]),
                    "ChilloutMix",
                )
            })
            .collect();
        let d = decide(&miner(), &jobs, &r);
        assert_eq!(d.action, Action::FlagForReview, "{:?}", d.tallies);
        assert!(d.slash.is_none() && d.confirmation.is_some());
        assert_eq!(d.honest_probability, 1.0);
        // Every category lists its slashing checks: latency at most.
        for (category, checks) in r.slashing_by_category() {
            assert!(
                checks.iter().all(|c| c == "latency"),
                "{category}: {checks:?}"
            );
        }
    }

    fn miner() -> MinerId {
        MinerId::parse("0x00000000000000000000000000000000000000aa").unwrap()
    }

    fn verdict(job: &str, checks: &[(CheckId, bool)]) -> JobVerdict {
        JobVerdict {
            job_id: JobId::parse(job).unwrap(),
            miner_id: miner(),
            model_id: crate::ids::ModelId::parse("SDXL").unwrap(),
            kind: JobKind::Sd,
            submitted_at: chrono::DateTime::UNIX_EPOCH,
            verdict: if checks.iter().any(|c| !c.1) {
                Verdict::Fail
            } else {
                Verdict::Pass
            },
            points: Points {
                waifu: 10.0,
                llama: 0.0,
            },
            points_estimated: false,
            sampled: true,
            output_key: Some(format!("jobs/{job}.png")),
            screen_allowance: 0.0,
            reference_seconds: None,
            checks: checks
                .iter()
                .map(|&(check, ok)| CheckResult {
                    check,
                    outcome: if ok {
                        Outcome::pass(())
                    } else {
                        Outcome::fail("bad", ())
                    },
                })
                .collect(),
            rules_digest: "d".into(),
        }
    }

    #[test]
    fn a_clean_miner_gets_no_action() {
        let new = vec![verdict("a", &[(CheckId::ImageSimilarity, true)])];
        let d = decide(&miner(), &new, &rules());
        assert_eq!(d.action, Action::None);
        assert!(d.slash.is_none());
    }

    fn failing(jobs: usize, check: CheckId) -> Vec<JobVerdict> {
        (0..jobs)
            .map(|i| verdict(&format!("j{i}"), &[(check, false)]))
            .collect()
    }

    #[test]
    fn one_weak_failure_flags_and_enough_repeated_failures_slash() {
        let r = rules();
        let decide_on = |v: &[JobVerdict]| decide(&miner(), v, &r);
        assert_eq!(
            decide_on(&failing(1, CheckId::ImageSimilarity)).action,
            Action::FlagForReview
        );
        // Priced at the JPEG pairs' 0.0038 times the tail margin 3, 0.0114:
        // 0.0114^6 = 2.2e-12 is above the per-decision threshold (budget 1e-6 over
        // 1.46 million decisions a year = 6.8e-13); 0.0114^7 = 2.5e-14 is below it. At
        // the rate itself six slashed, and at the pooled 0.0023 five.
        assert_eq!(
            r.policy(CheckId::ImageSimilarity).worst_config_rate(),
            0.0038
        );
        assert_eq!(r.slashing.tail_margin, 3.0);
        assert_eq!(
            decide_on(&failing(6, CheckId::ImageSimilarity)).action,
            Action::FlagForReview
        );
        let d = decide_on(&failing(7, CheckId::ImageSimilarity));
        assert_eq!(d.action, Action::Slash);
        assert!(d.honest_probability <= r.auto_slash_threshold());
    }

    #[test]
    fn a_slash_reads_the_tail_at_the_margin_and_a_flag_at_the_rate_itself() {
        let r = rules();
        let p = r.policy(CheckId::ImageSimilarity);
        let rate = p.worst_config_rate();
        let priced = p.slash_rate(r.slashing.tail_margin);
        assert!((priced - r.slashing.tail_margin * rate).abs() < 1e-15);
        // The fewest failures, every judged job failed, that slash at a price.
        let fewest = |at: f64| {
            (1..100)
                .find(|&k| crate::stats::binomial_tail(k, k, at) <= r.auto_slash_threshold())
                .unwrap()
        };
        let (at_rate, at_margin) = (fewest(rate), fewest(priced));
        assert!(at_margin > at_rate, "{at_rate} {at_margin}");
        // Enough at the rate itself, not at the margin: a flag, whose evidence is
        // the tail at the rate; the tail at the margin is what kept it from slashing.
        let (t, j) = assess_counts([(CheckId::ImageSimilarity, at_rate, at_rate)], &r);
        assert_eq!(j.action, Action::FlagForReview);
        let tail = crate::stats::binomial_tail(at_rate, at_rate, rate);
        assert_eq!(t[0].honest_probability, tail);
        assert_eq!(j.review_probability, tail);
        assert!(tail <= r.auto_slash_threshold());
        assert_eq!(
            t[0].slash_probability,
            Some(crate::stats::binomial_tail(at_rate, at_rate, priced))
        );
        assert_eq!(j.honest_probability, t[0].slash_tail());
        // The rule before the margin slashed it.
        let before = crate::lifetime::without_tail_margin(&r);
        let (_, j) = assess_counts([(CheckId::ImageSimilarity, at_rate, at_rate)], &before);
        assert_eq!(j.action, Action::Slash);
        let (_, j) = assess_counts([(CheckId::ImageSimilarity, at_margin, at_margin)], &r);
        assert_eq!(j.action, Action::Slash);
        // A rate the margin lifts to 1 or above can never slash: its tail is 1.
        let mut huge = r.clone();
        huge.slashing.tail_margin = 2.0 / rate;
        let (t, j) = assess_counts([(CheckId::ImageSimilarity, 50, 50)], &huge);
        assert_eq!(t[0].slash_probability, Some(1.0));
        assert_ne!(j.action, Action::Slash);
    }

    #[test]
    fn a_decision_from_before_the_margin_reads_as_it_was_taken() {
        let r = rules();
        let (t, _) = assess_counts([(CheckId::ImageSimilarity, 10, 7)], &r);
        let mut json = serde_json::to_value(&t[0]).unwrap();
        json.as_object_mut().unwrap().remove("slash_probability");
        let old: CheckTally = serde_json::from_value(json).unwrap();
        assert_eq!(old.slash_probability, None);
        assert_eq!(old.slash_tail(), t[0].honest_probability);
        assert!(t[0].slash_tail() > t[0].honest_probability);
    }

    #[test]
    fn rare_failures_among_many_honest_jobs_do_not_flag() {
        let mut many: Vec<_> = (0..2000)
            .map(|i| verdict(&format!("j{i}"), &[(CheckId::ImageSimilarity, true)]))
            .collect();
        many.push(verdict("bad", &[(CheckId::ImageSimilarity, false)]));
        let d = decide(&miner(), &many, &rules());
        assert_eq!(d.action, Action::None, "{:?}", d.tallies);
    }

    #[test]
    fn a_check_with_an_assumed_rate_flags_but_never_slashes_however_often_it_fails() {
        let r = rules();
        for check in [
            CheckId::ModelChallenge,
            CheckId::Canary,
            CheckId::Reuse,
            CheckId::OutputDecode,
            CheckId::DeviceKnown,
        ] {
            assert!(!r.policy(check).can_slash(), "{check}");
            let d = decide(&miner(), &failing(100, check), &r);
            assert_eq!(d.action, Action::FlagForReview, "{check}");
            assert!(d.slash.is_none());
            assert_eq!(d.honest_probability, 1.0, "{check}: not slash evidence");
        }
    }

    #[test]
    fn repeated_failures_of_a_per_miner_check_count_once() {
        let d = decide(&miner(), &failing(4, CheckId::DeviceSpec), &rules());
        assert_eq!(d.action, Action::FlagForReview);
        assert_eq!((d.tallies[0].judged, d.tallies[0].failed), (1, 1));
    }

    #[test]
    fn dependent_failures_on_one_job_count_once() {
        // An image too small fails its size and its similarity: one cause, and the
        // old product (1e-5 x 3.8e-3 < 1e-6) slashed on it.
        let r = rules();
        let job = vec![verdict(
            "small",
            &[
                (CheckId::OutputSize, false),
                (CheckId::ImageSimilarity, false),
            ],
        )];
        let d = decide(&miner(), &job, &r);
        assert_eq!(d.action, Action::FlagForReview);
        // The slash evidence is the similarity check's alone, at its slash rate
        // (0.0038 times the tail margin 3); the flag evidence is the strongest of the
        // two, at their rates.
        assert!((d.honest_probability - 0.0114).abs() < 1e-12, "{d:?}");
        assert!((d.review_probability - 1e-5).abs() < 1e-12, "{d:?}");
    }

    #[test]
    fn one_bad_job_never_slashes_unless_one_checks_own_measured_rate_allows_it() {
        // Every check failing on one job, with the shipped rules: a flag at most.
        let all: Vec<(CheckId, bool)> = CheckId::ALL.iter().map(|c| (*c, false)).collect();
        let one = vec![verdict("everything", &all)];
        let r = rules();
        assert_eq!(decide(&miner(), &one, &r).action, Action::FlagForReview);
        // A check whose measured rate alone is below the threshold does slash on one job.
        let mut strict = r.clone();
        let p = strict
            .checks
            .policy
            .get_mut(&CheckId::ImageSimilarity)
            .unwrap();
        p.false_positive_rate = 1e-15;
        p.measured.as_mut().unwrap().upper_95 = 1e-15;
        p.measured.as_mut().unwrap().max_config_upper_95 = None;
        let single = failing(1, CheckId::ImageSimilarity);
        assert_eq!(decide(&miner(), &single, &strict).action, Action::Slash);
    }

    #[test]
    fn a_declaration_below_its_measurement_is_priced_at_the_measurement() {
        let mut r = rules();
        let p = r.checks.policy.get_mut(&CheckId::ImageSimilarity).unwrap();
        p.false_positive_rate = 1e-9;
        assert_eq!(r.broken_promises().len(), 1);
        let d = decide(&miner(), &failing(4, CheckId::ImageSimilarity), &r);
        // At the declared 1e-9, four failures would be 1e-36: a slash. The engine
        // prices them at the largest measured configuration's bound.
        assert_eq!(d.action, Action::FlagForReview);
        assert_eq!(d.tallies[0].false_positive_rate, 0.0038);
        // Without a per-configuration bound, at the pooled one.
        let p = r.checks.policy.get_mut(&CheckId::ImageSimilarity).unwrap();
        p.measured.as_mut().unwrap().max_config_upper_95 = None;
        let d = decide(&miner(), &failing(4, CheckId::ImageSimilarity), &r);
        assert_eq!(d.tallies[0].false_positive_rate, 0.0023);
    }

    #[test]
    fn a_failure_share_below_the_effect_floor_never_slashes_however_long_the_tail() {
        let r = rules();
        let rate = r.policy(CheckId::ImageSimilarity).effective_rate();
        let floor = r
            .policy(CheckId::ImageSimilarity)
            .effect_floor(r.slashing.effect_margin);
        assert!(floor > rate && floor < 0.2, "{floor}");
        // A miner at 100 % re-runs failing at half the floor: thousands of jobs make
        // the tail astronomically small, yet the share stays what an honest miner
        // whose rate was measured a few times too low would show.
        let n = 14_000u64;
        let k = (n as f64 * floor / 2.0) as u64;
        let (tallies, j) = assess_counts([(CheckId::ImageSimilarity, n, k)], &r);
        assert!(tallies[0].honest_probability < 1e-30, "{tallies:?}");
        assert!(!tallies[0].can_slash);
        assert_eq!(tallies[0].effect_floor, floor);
        assert_eq!(j.action, Action::FlagForReview);
        // The same tail from a share above the floor slashes, as a cheat's does.
        let k = (n as f64 * floor * 1.5) as u64;
        let (tallies, j) = assess_counts([(CheckId::ImageSimilarity, n, k)], &r);
        assert!(tallies[0].can_slash);
        assert_eq!(j.action, Action::Slash);
        // Without the floor the first miner would have been slashed.
        let mut bare = r.clone();
        bare.slashing.effect_margin = 0.0;
        let k = (n as f64 * floor / 2.0) as u64;
        let (_, j) = assess_counts([(CheckId::ImageSimilarity, n, k)], &bare);
        assert_eq!(j.action, Action::Slash);
    }

    #[test]
    fn each_slashing_check_that_judged_the_miner_is_a_look_the_evidence_pays_for() {
        let r = rules();
        let mut jobs = failing(3, CheckId::ImageSimilarity);
        let alone = decide(&miner(), &jobs, &r);
        jobs.push(verdict("llm", &[(CheckId::LlmLikelihood, true)]));
        let two = decide(&miner(), &jobs, &r);
        assert!((two.honest_probability - 2.0 * alone.honest_probability).abs() < 1e-20);
    }

    #[test]
    fn deciding_twice_gives_the_same_slash_and_redelivery_does_not_double_count() {
        let r = rules();
        let new = failing(7, CheckId::ImageSimilarity);
        let once = decide(&miner(), &new, &r);
        // A redelivered job is stored twice; `case::counted` keeps one verdict a job,
        // before the rule sees them.
        let staged = |v: &JobVerdict| crate::case::StagedVerdict {
            stage: crate::case::Stage::Rerun,
            verdict: v.clone(),
        };
        let history = crate::case::History {
            verdicts: new.iter().chain(&new).map(staged).collect(),
            slashed_jobs: BTreeSet::new(),
            points_factor: 1.0,
        };
        let twice = crate::case::decide(&miner(), history, &r).decision;
        assert_eq!(once.slash, twice.slash);
        let s = once.slash.unwrap();
        assert_eq!(s.amount.waifu_micro, 70_000_000);
        assert_eq!(s.jobs.len(), 7);
    }

    #[test]
    fn a_boosted_gpu_is_slashed_its_boosted_points() {
        let r = rules();
        let s = super::decide(
            &miner(),
            &failing(7, CheckId::ImageSimilarity),
            &BTreeSet::new(),
            crate::points::nft_boost_factor(&r, 0, 1),
            &r,
        )
        .slash
        .unwrap();
        assert_eq!(s.amount.waifu_micro, 84_000_000, "{:?}", s.amount);
    }

    #[test]
    fn jobs_under_an_earlier_slash_are_not_slashed_again() {
        let r = rules();
        let new = failing(5, CheckId::ImageSimilarity);
        let slashed = new.iter().map(|v| v.job_id.clone()).collect();
        assert_eq!(
            super::decide(&miner(), &new, &slashed, 1.0, &r).action,
            Action::None
        );
    }

    #[test]
    fn the_slash_id_ignores_job_order_but_not_the_rule() {
        let m = miner();
        let ab = [JobId::parse("a").unwrap(), JobId::parse("b").unwrap()];
        let ba = [ab[1].clone(), ab[0].clone()];
        assert_eq!(slash_id(&m, &ab, "r1"), slash_id(&m, &ba, "r1"));
        assert_ne!(slash_id(&m, &ab, "r1"), slash_id(&m, &ab, "r2"));
        assert_ne!(slash_id(&m, &ab, "r1"), slash_id(&m, &ab[..1], "r1"));
    }

    /// A job whose `llm_suspect` outcome passed with these suspects' evidence over 64
    /// tokens.
    fn panel_job(job: &str, evidence: &[(&str, f64)]) -> JobVerdict {
        panel_job_of(job, 64, evidence)
    }

    fn panel_job_of(job: &str, tokens: u64, evidence: &[(&str, f64)]) -> JobVerdict {
        let mut v = verdict(job, &[]);
        let suspects: Vec<_> = evidence
            .iter()
            .map(|(name, e)| {
                serde_json::json!({"name": name, "llr": e, "allowance": 0.0, "evidence": e})
            })
            .collect();
        v.checks.push(CheckResult {
            check: CheckId::LlmSuspect,
            outcome: Outcome::pass(serde_json::json!({
                "statistic": 0.0, "tokens": tokens, "best": evidence[0].0, "suspects": suspects,
            })),
        });
        v
    }

    /// The embedded rules with the panel's rate and drift measured (or not).
    fn panel_rules(measured: bool) -> Rules {
        let mut r = rules();
        let p = r.checks.policy.get_mut(&CheckId::LlmSuspect).unwrap();
        p.basis = if measured {
            crate::rules::Basis::Measured
        } else {
            crate::rules::Basis::Assumed
        };
        p.measured = measured.then(|| crate::rules::Measurement {
            date: "2026-11-29".into(),
            command: "test".into(),
            sample: "test".into(),
            n: 4000,
            failures: 4,
            upper_95: 0.0023,
            max_config_upper_95: None,
            models: vec!["*".into()],
        });
        for s in &mut r.checks.llm.panel.suspects {
            s.drift_nats_per_token = measured.then_some(0.01);
        }
        r
    }

    #[test]
    fn the_panels_evidence_adds_up_over_jobs_and_slashes_only_when_measured() {
        // Each job: 9 nats for the substitute, -20 for the other suspect. No job fails
        // the per-job check; the evidence crosses ln(2 / 6.8e-13) = 28.7 nats at the
        // fourth job (ln of the mean over 2 suspects and 5 shares: about 36 - ln 10 =
        // 33.7 > 28.7; at three jobs about 27 - ln 10 < 28.7).
        let r = panel_rules(true);
        let jobs = |n: usize| -> Vec<JobVerdict> {
            (0..n)
                .map(|i| panel_job(&format!("p{i}"), &[("alt", 9.0), ("q4", -20.0)]))
                .collect()
        };
        let d3 = decide(&miner(), &jobs(3), &r);
        assert_eq!(d3.action, Action::FlagForReview, "{:?}", d3.sequence);
        let d4 = decide(&miner(), &jobs(4), &r);
        assert_eq!(d4.action, Action::Slash, "{:?}", d4.sequence);
        let seq = d4.sequence.as_ref().unwrap();
        assert_eq!(seq.jobs, 4);
        assert_eq!(seq.best(), "alt");
        let mixed = SUBSTITUTED_SHARES
            .iter()
            .flat_map(|&l| [9.0, -20.0].map(|x: f64| 4.0 * (1.0 - l + l * x.exp()).ln()));
        let want = crate::checks::llm::log_mean_exp(mixed);
        assert!((seq.log_e_value - want).abs() < 1e-6, "{seq:?} {want}");
        assert!((seq.log_e_value - (36.0 - 10f64.ln())).abs() < 0.1);
        assert_eq!(seq.substituted_share, 1.0);
        assert_eq!(seq.tokens, 256);
        // Bonferroni: the sequence and llm_suspect are the two slashing tests judged.
        assert!((d4.honest_probability - 2.0 * seq.honest_probability).abs() < 1e-20);
        let slash = d4.slash.unwrap();
        assert!(slash.reason.contains("fits alt best"), "{}", slash.reason);
        assert_eq!(slash.jobs.len(), 4);
        assert_eq!(
            slash.evidence.len(),
            4,
            "every job the panel's evidence came from"
        );
        // Unmeasured drift or rate: the same evidence flags, never slashes.
        let d = decide(&miner(), &jobs(40), &panel_rules(false));
        assert_eq!(d.action, Action::FlagForReview);
        assert_eq!(d.honest_probability, 1.0);
        // Honest-looking evidence (every suspect below the reference) is no evidence.
        let honest: Vec<JobVerdict> = (0..50)
            .map(|i| panel_job(&format!("h{i}"), &[("alt", -6.0), ("q4", -9.0)]))
            .collect();
        let d = decide(&miner(), &honest, &r);
        assert_eq!(d.action, Action::None);
        assert!(d.sequence.unwrap().honest_probability == 1.0);

        // Measured on one model only: one job of another model among the same forty
        // makes the whole evidence flag-only (its factor's honest mean was never
        // measured), while the jobs of the measured model alone still slash.
        let mut scoped = panel_rules(true);
        scoped
            .checks
            .policy
            .get_mut(&CheckId::LlmSuspect)
            .unwrap()
            .measured
            .as_mut()
            .unwrap()
            .models = vec!["SDXL".into()];
        let mut mixed = jobs(40);
        assert_eq!(decide(&miner(), &mixed, &scoped).action, Action::Slash);
        mixed[0] = on_model(mixed[0].clone(), "AnimagineXL");
        let d = decide(&miner(), &mixed, &scoped);
        assert_eq!(d.action, Action::FlagForReview);
        let seq = d.sequence.unwrap();
        assert_eq!((seq.off_scope_jobs, seq.can_slash), (1, false));
    }

    /// Each job's evidence under the other λ: `ln(1 − λ + λ·e^x)`, checked against the
    /// plain formula where it does not overflow, and finite where it would.
    #[test]
    fn the_mixture_of_one_job_is_stable_and_exact() {
        for &l in &SUBSTITUTED_SHARES {
            for x in [-50.0, -3.0, 0.0, 2.5, 30.0] {
                let want = (1.0 - l + l * f64::exp(x)).ln();
                assert!((ln_mixture(l, x) - want).abs() < 1e-12, "{l} {x}");
            }
            let big = ln_mixture(l, 1000.0);
            assert!((big - (l.ln() + 1000.0)).abs() < 1e-9, "{l}: {big}");
        }
        assert_eq!(ln_mixture(1.0, -1000.0), -1000.0);
    }

    #[test]
    fn a_miner_substituting_on_a_third_of_its_jobs_builds_evidence() {
        // Every third job is the substitute's (9 nats), the others honest-looking
        // (-6 nats: the substitute fits them worse than the reference). The product over
        // all jobs loses 3 nats per three jobs; under the mixture at λ = 0.3 the miner
        // gains ln(0.3) + 9 - 2 * 0.36 = 7.1 nats per three jobs.
        let r = panel_rules(true);
        let jobs: Vec<JobVerdict> = (0..60)
            .map(|i| {
                let x = if i % 3 == 0 { 9.0 } else { -6.0 };
                panel_job(&format!("m{i}"), &[("alt", x)])
            })
            .collect();
        let slashed_at = (1..=jobs.len())
            .find(|&n| decide(&miner(), &jobs[..n], &r).action == Action::Slash)
            .expect("a third substituted builds evidence");
        assert!(slashed_at <= 20, "slashed after {slashed_at} jobs");
        let d = decide(&miner(), &jobs, &r);
        let seq = d.sequence.unwrap();
        assert!((0.2..=0.5).contains(&seq.substituted_share), "{seq:?}");
        assert!(
            seq.suspects[0].evidence < 0.0,
            "the product over all jobs shows no evidence: {seq:?}"
        );
        // Honest-looking jobs alone never do.
        let honest: Vec<JobVerdict> = (0..200)
            .map(|i| panel_job(&format!("h{i}"), &[("alt", -6.0)]))
            .collect();
        let d = decide(&miner(), &honest, &r);
        assert_eq!(d.action, Action::None, "{:?}", d.sequence);
    }

    #[test]
    fn panel_evidence_thin_per_token_flags_but_never_slashes() {
        // The evidence of the four jobs above, spread over 20,000 tokens each: ln E is
        // 33.7 nats, 4e-4 per token, under the rules' 0.01.
        let r = panel_rules(true);
        assert!(r.checks.llm.panel.min_log_evidence_per_token >= 0.01);
        let jobs: Vec<JobVerdict> = (0..4)
            .map(|i| panel_job_of(&format!("t{i}"), 20_000, &[("alt", 9.0), ("q4", -20.0)]))
            .collect();
        let d = decide(&miner(), &jobs, &r);
        let seq = d.sequence.as_ref().unwrap();
        assert!(!seq.can_slash, "{seq:?}");
        assert!(seq.honest_probability < r.auto_slash_threshold());
        assert_eq!(d.action, Action::FlagForReview);
        assert_eq!(d.honest_probability, 1.0);
    }
}

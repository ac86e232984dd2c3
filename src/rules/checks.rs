//! `checks.toml`: each check's thresholds and its false-positive rate with the rate's basis.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::outcome::CheckId;
use crate::record::JobKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRules {
    pub version: u32,
    pub image: ImageRules,
    pub llm: LlmRules,
    pub latency: LatencyRules,
    pub reuse: ReuseRules,
    pub challenge: ChallengeRules,
    pub calibration: CalibrationRules,
    /// Per-check policy: the assumed per-job false-positive rate the decision engine uses.
    pub policy: BTreeMap<CheckId, CheckPolicy>,
    #[serde(default)]
    pub canaries: Vec<Canary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckPolicy {
    /// Probability that an honest miner's job fails this check (per miner, when
    /// `independent_across_jobs` is false).
    pub false_positive_rate: f64,
    /// False when a failure repeats for every job of a miner regardless of its honesty
    /// (a hardware string, a miner build): then the rate is per miner, and repeated
    /// failures count once.
    pub independent_across_jobs: bool,
    /// Where the rate comes from. Only a measured rate can count toward an automatic
    /// slash; an assumed one may flag a miner for review.
    pub basis: Basis,
    /// The measurement behind a `measured` rate, as `proctor calibrate` wrote it.
    #[serde(default)]
    pub measured: Option<Measurement>,
    /// Evidence for review by design, whatever its basis: never counts toward a slash.
    #[serde(default)]
    pub flag_only: bool,
}

impl CheckPolicy {
    /// Whether this check's failures can count toward an automatic slash.
    pub fn can_slash(&self) -> bool {
        self.basis == Basis::Measured && !self.flag_only
    }

    /// The rate the decision engine uses: the declared one, or the measured 95 % bound
    /// where that is higher, so that a declaration below its own measurement (which
    /// `proctor rules check` reports) can never price honest evidence as rarer than it
    /// was measured to be.
    pub fn effective_rate(&self) -> f64 {
        match &self.measured {
            Some(m) => self.false_positive_rate.max(m.upper_95),
            None => self.false_positive_rate,
        }
    }

    /// The largest rate an honest configuration was measured at: the largest
    /// per-configuration 95 % bound where the calibration recorded one, and never below
    /// [`CheckPolicy::effective_rate`].
    pub fn worst_config_rate(&self) -> f64 {
        let per_config = self
            .measured
            .as_ref()
            .and_then(|m| m.max_config_upper_95)
            .unwrap_or(0.0);
        self.effective_rate().max(per_config)
    }

    /// The rate the tail of a slash is computed at: `tail_margin` times
    /// [`CheckPolicy::worst_config_rate`], at most 1. An honest miner whose true rate
    /// is up to `tail_margin` times the worst measured one fails at most this often, so
    /// the tail is a valid p-value for it.
    pub fn slash_rate(&self, tail_margin: f64) -> f64 {
        (tail_margin * self.worst_config_rate()).min(1.0)
    }

    /// The calibration's own risk: the chance that its honest sample showed as few
    /// failures as it did (or fewer) were the honest rate as high as this check's
    /// effect floor, below which no share can slash. A measurement of `k` failures in
    /// `n` promises the rate is below the floor with confidence `1 −` this; the
    /// lifetime budget counts it ([`crate::rules::Rules::lifetime_risk`]). `None` for
    /// a check that cannot slash, or whose sample covers no model.
    pub fn calibration_risk(&self, margin: f64) -> Option<f64> {
        let m = self
            .measured
            .as_ref()
            .filter(|m| self.can_slash() && !m.models.is_empty())?;
        let floor = self.effect_floor(margin);
        Some(if floor >= 1.0 {
            0.0
        } else {
            crate::stats::binomial_cdf(m.failures, m.n, floor)
        })
    }

    /// The failure share a miner must reach on this check before it can carry a slash:
    /// `margin` times [`CheckPolicy::worst_config_rate`], at most 1 for a per-miner
    /// check (whose single failure is its whole share). An honest miner whose true rate
    /// is up to `margin` times the worst measured one stays below it in expectation.
    pub fn effect_floor(&self, margin: f64) -> f64 {
        let floor = margin * self.worst_config_rate();
        if self.independent_across_jobs {
            floor
        } else {
            floor.min(1.0)
        }
    }
}

/// Where a check's false-positive rate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Counted on honest samples by `proctor calibrate` (or a documented experiment):
    /// see `measured`.
    Measured,
    /// Not measured. The check can flag a miner for review, never slash one.
    Assumed,
}

impl Basis {
    /// The name the rules file and the pages use.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Measured => "measured",
            Basis::Assumed => "assumed",
        }
    }
}

/// A measured false-positive rate's provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurement {
    /// The day of the calibration run (UTC, `YYYY-MM-DD`).
    pub date: String,
    /// The command that measured it.
    pub command: String,
    /// The honest sample: what it was drawn from and how it varied.
    pub sample: String,
    /// Honest jobs (or miners, for a per-miner rate) the check judged.
    pub n: u64,
    /// How many of them it failed.
    pub failures: u64,
    /// The one-sided 95 % Clopper-Pearson upper bound of `failures / n`.
    pub upper_95: f64,
    /// The largest such bound over the honest configurations the sample was split
    /// into (engines, dtypes, batch sizes), where the calibration split it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_config_upper_95: Option<f64>,
    /// The models the honest sample was drawn from: model ids, category ids, or `*` for
    /// a check whose honest failures do not depend on the model. The rate promises
    /// nothing for any other model, so there the check can only flag
    /// ([`crate::rules::Rules::slashes_on`]). Empty: the sample was no model's (a
    /// stand-in), and the check slashes on none.
    #[serde(default)]
    pub models: Vec<String>,
}

impl Measurement {
    /// Whether the sample covers a job of `model` (of `category`, where the registry
    /// knows the model).
    pub fn covers(&self, model: &str, category: Option<&str>) -> bool {
        self.models
            .iter()
            .any(|m| m == "*" || m == model || Some(m.as_str()) == category)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRules {
    pub max_object_bytes: u64,
    pub max_decoded_side: u32,
    pub max_decode_alloc_bytes: u64,
    pub clamp_multiple: u32,
    pub clamp_max_side: u32,
    pub clamp_max_steps: u32,
    /// Hashes are `hash_side`×`hash_side` bits.
    pub hash_side: u32,
    pub phash_max_distance: u32,
    pub dhash_max_distance: u32,
    /// SSIM is computed on luma downscaled so that its longer side is at most this.
    pub ssim_max_side: u32,
    pub ssim_min: f64,
    /// Fine-detail energy (mean squared Laplacian of luma at native size) of the miner's
    /// image over the reference's. Blur and low-resolution generation lower it.
    pub detail_ratio_min: f64,
    pub detail_max_side: u32,
    /// Detail is measured at the image's size divided by this (then capped at
    /// `detail_max_side`).
    pub detail_downscale: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmRules {
    pub max_text_bytes: u64,
    /// Ascending by `max_temperature`; the first band whose bound covers the job applies.
    pub rank_limits: Vec<RankLimit>,
    pub unlikely_logprob: f64,
    pub unlikely_min_count: u32,
    pub unlikely_bands: Vec<UnlikelyBand>,
    pub eos_min_prob: f64,
    pub eos_skip_max_probability: f64,
    pub early_end_max_probability: f64,
    /// The share of `max_tokens` a text may fall short of it and still count as cut at
    /// `max_tokens`: the miner reports no token count, and re-tokenizing its text can
    /// merge tokens its sampler drew apart. Only ever excuses, so it cannot slash.
    pub early_end_length_slack: f64,
    pub greedy_min_temperature: f64,
    pub greedy_min_tokens: u32,
    pub greedy_max_p_value: f64,
    pub max_mean_abs_delta_p: f64,
    /// The likelihood check judges sampled jobs at or above this temperature ...
    pub likelihood_min_temperature: f64,
    /// ... with at least this many tokens, and fails a z-score below `likelihood_z_min`.
    pub likelihood_min_tokens: u32,
    pub likelihood_z_min: f64,
    /// For points when no tokenizer count is known.
    pub chars_per_token_estimate: f64,
    /// The most characters one token can hold, for latency lower bounds.
    pub max_chars_per_token: f64,
    /// The suspect-model panel (`llm_suspect` and the per-miner sequential evidence).
    #[serde(default)]
    pub panel: PanelRules,
}

/// The models (and samplers) a cheater would serve instead of a reference model,
/// scored beside it on sampled jobs (`crate::llm::panel`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanelRules {
    /// The most suspects scored per job, in the order listed: each model suspect costs
    /// one forward pass of its own size per sampled job on the reference host, a
    /// sampler suspect next to nothing. Operators trade cost for power here.
    pub max_suspects: usize,
    /// `llm_suspect` fails a job whose panel statistic (the log of the mean of the
    /// suspects' drift-corrected likelihood ratios) exceeds this. `proctor calibrate`
    /// sets it.
    pub llr_max: f64,
    /// The per-miner evidence can carry a slash only where its log e-value per token
    /// the panel scored reaches this (nats): a bias in the drift allowances of a few
    /// hundredths of this per token, which no calibration of a few hundred texts can
    /// rule out, would otherwise add up over thousands of an honest miner's jobs.
    #[serde(default)]
    pub min_log_evidence_per_token: f64,
    #[serde(default)]
    pub suspects: Vec<SuspectRule>,
}

impl PanelRules {
    /// The suspects of `reference` (those naming it, then those for every model), at
    /// most `max_suspects`.
    pub fn suspects_of(&self, reference: &str) -> Vec<&SuspectRule> {
        let own = self.suspects.iter().filter(|s| s.reference == reference);
        let any = self.suspects.iter().filter(|s| s.reference == "*");
        own.chain(any).take(self.max_suspects).collect()
    }

    /// Whether every suspect's honest drift was measured: only then does the panel's
    /// per-miner evidence keep its bound, and only then can it slash.
    pub fn drift_measured(&self) -> bool {
        !self.suspects.is_empty()
            && self
                .suspects
                .iter()
                .all(|s| s.drift_nats_per_token.is_some())
    }
}

/// One suspect of a reference model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspectRule {
    /// The reference model's id, or `*` for every reference.
    pub reference: String,
    /// A model suspect's folder name under the reference models' folder; a name for a
    /// sampler suspect.
    pub name: String,
    pub kind: SuspectKind,
    /// For a `hotter` suspect: the factor on the job's temperature.
    #[serde(default)]
    pub factor: Option<f64>,
    /// The most an honest miner on other numerics moved this suspect's per-token ratio
    /// (`ln E[q/p]`, nats per token), as `proctor calibrate` measured it; taken off every
    /// token. Absent: not measured, and the panel's per-miner evidence can only flag.
    #[serde(default)]
    pub drift_nats_per_token: Option<f64>,
    /// Why a cheater would serve it.
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspectKind {
    /// Another model: a smaller size, another finetune of the same base, a quantization.
    Model,
    /// The reference itself sampled hotter than the job asked (`factor`).
    Hotter,
    /// The reference itself, answering an empty request instead of the job's: text
    /// that does not answer the prompt.
    OffPrompt,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankLimit {
    pub max_temperature: f64,
    pub max_rank: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlikelyBand {
    pub max_temperature: f64,
    pub max_fraction: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyRules {
    /// The physical bound's compute rate, as a share of the datasheet peak (above 1 to
    /// allow for overclocked cards).
    pub max_compute_efficiency: f64,
    /// The physical bound's memory rate, likewise.
    pub max_bandwidth_efficiency: f64,
    /// Tolerance for clock skew when comparing one latency against another.
    pub consistency_slack_s: f64,
    /// How much faster than the fastest published run a claim may be before
    /// `latency_envelope` flags it (`proctor calibrate --only latency`).
    pub envelope_margin: f64,
    /// The fastest published run of each category per GPU, as the share of the physical
    /// bound's speed it reached (`proctor calibrate --only latency` writes them).
    #[serde(default)]
    pub envelope: Vec<EnvelopeRun>,
    /// `latency_peers` judges a claim against at least this many other miners ...
    pub peer_min_miners: usize,
    /// ... flagging it above this quantile of their speeds times `envelope_margin` ...
    pub peer_quantile: f64,
    /// ... and remembers this many miners per GPU and category.
    pub peer_capacity: usize,
}

/// The fastest published honest run of a category on one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeRun {
    pub category: CategoryId,
    pub gpu: GpuId,
    /// The physical bound's time over the published time: the share of the bound's
    /// speed the run reached.
    pub efficiency: f64,
    /// The run in fixtures/gpu-timings.toml.
    pub run: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReuseRules {
    pub capacity: usize,
    /// pHash bits.
    pub image_max_distance: u32,
    /// dHash bits; both hashes must be within their distance for a match.
    pub image_max_dhash_distance: u32,
    pub text_min_chars: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRules {
    pub min_len_bytes: u64,
    pub max_len_bytes: u64,
}

/// A known-answer probe. A job whose prompt equals `prompt` exactly is a canary.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub id: String,
    pub kind: JobKind,
    pub prompt: String,
    /// LLM: the answer must contain one of these, case-insensitively.
    #[serde(default)]
    pub require_any: Vec<String>,
    /// SD: base64 DCT hash (`image_hasher` format) of the known answer.
    #[serde(default)]
    pub reference_phash: Option<String>,
    #[serde(default)]
    pub max_distance: Option<u32>,
}

/// Validates what `checks.toml` promises, against the rest of the set where it
/// refers to it; pushes each problem through `need`.
pub(super) fn validate(rules: &Rules, need: &mut impl FnMut(bool, String)) {
    let c = &rules.checks;
    for id in CheckId::ALL {
        match c.policy.get(&id) {
            None => need(false, format!("checks.policy.{id} is missing")),
            Some(pol) => {
                need(
                    prob(pol.false_positive_rate),
                    format!("checks.policy.{id}.false_positive_rate must be in (0, 1)"),
                );
                need(
                    (pol.basis == Basis::Measured) == pol.measured.is_some(),
                    format!(
                        "checks.policy.{id}: basis = \"measured\" needs a `measured` table, and only it may have one"
                    ),
                );
                if let Some(m) = &pol.measured {
                    need(
                        m.n > 0
                            && m.failures <= m.n
                            && m.upper_95 > 0.0
                            && m.upper_95 <= 1.0
                            && !m.date.is_empty()
                            && !m.command.is_empty(),
                        format!(
                            "checks.policy.{id}.measured: need n > 0, failures <= n, upper_95 in (0, 1], a date and a command"
                        ),
                    );
                    need(
                        m.models
                            .iter()
                            .all(|s| !s.is_empty() && !s.contains(char::is_whitespace)),
                        format!(
                            "checks.policy.{id}.measured.models: each is a model id, a category id or \"*\""
                        ),
                    );
                }
            }
        }
    }
    let im = &c.image;
    need(
        im.clamp_multiple > 0
            && im.clamp_max_side >= im.clamp_multiple
            && im.max_decoded_side >= im.clamp_max_side,
        "checks.image: need 0 < clamp_multiple <= clamp_max_side <= max_decoded_side".into(),
    );
    need(
        (2..=32).contains(&im.hash_side),
        "checks.image.hash_side must be 2 to 32".into(),
    );
    need(
        (0.0..=1.0).contains(&im.ssim_min)
            && (0.0..=1.0).contains(&im.detail_ratio_min)
            && im.detail_downscale >= 1,
        "checks.image: ssim_min and detail_ratio_min must be in [0, 1], detail_downscale >= 1"
            .into(),
    );
    need(
        im.ssim_max_side >= 16 && im.detail_max_side >= 16,
        "checks.image: ssim_max_side and detail_max_side must be >= 16".into(),
    );
    let l = &c.llm;
    let ascending = |xs: &[f64]| xs.windows(2).all(|w| w[0] < w[1]);
    let rank_t: Vec<f64> = l.rank_limits.iter().map(|r| r.max_temperature).collect();
    let unl_t: Vec<f64> = l.unlikely_bands.iter().map(|r| r.max_temperature).collect();
    need(
        !rank_t.is_empty() && ascending(&rank_t) && rank_t.last() >= Some(&2.0),
        "checks.llm.rank_limits must ascend by max_temperature and cover 2.0".into(),
    );
    need(
        !unl_t.is_empty() && ascending(&unl_t) && unl_t.last() >= Some(&2.0),
        "checks.llm.unlikely_bands must ascend by max_temperature and cover 2.0".into(),
    );
    need(
        l.rank_limits.iter().all(|r| r.max_rank >= 1),
        "checks.llm.rank_limits: max_rank must be >= 1".into(),
    );
    need(
        l.unlikely_logprob < 0.0,
        "checks.llm.unlikely_logprob must be < 0".into(),
    );
    need(
        l.eos_min_prob >= 0.5 && l.eos_min_prob < 1.0,
        "checks.llm.eos_min_prob must be in [0.5, 1): the skip bound is only conservative there"
            .into(),
    );
    for (what, v) in [
        ("eos_skip_max_probability", l.eos_skip_max_probability),
        ("early_end_max_probability", l.early_end_max_probability),
        ("greedy_max_p_value", l.greedy_max_p_value),
        ("max_mean_abs_delta_p", l.max_mean_abs_delta_p),
    ] {
        need(prob(v), format!("checks.llm.{what} must be in (0, 1)"));
    }
    need(
        (0.0..0.5).contains(&l.early_end_length_slack),
        "checks.llm.early_end_length_slack must be in [0, 0.5)".into(),
    );
    need(
        positive(l.chars_per_token_estimate) && l.max_chars_per_token >= l.chars_per_token_estimate,
        "checks.llm: max_chars_per_token must be >= chars_per_token_estimate > 0".into(),
    );
    need(
        l.likelihood_z_min.is_finite()
            && l.likelihood_z_min < 0.0
            && l.likelihood_min_temperature > 0.0
            && l.likelihood_min_tokens >= 1,
        "checks.llm: likelihood_z_min must be < 0, likelihood_min_temperature > 0 and likelihood_min_tokens >= 1".into(),
    );
    let pa = &l.panel;
    need(
        pa.llr_max.is_finite() && pa.llr_max >= 0.0,
        "checks.llm.panel.llr_max must be a number >= 0".into(),
    );
    let mut names = std::collections::BTreeSet::new();
    for s in &pa.suspects {
        need(
            names.insert(s.name.as_str()),
            format!("checks.llm.panel: suspect {} is listed twice", s.name),
        );
        need(
            match s.kind {
                SuspectKind::Hotter => s.factor.is_some_and(|f| f.is_finite() && f > 1.0),
                SuspectKind::Model | SuspectKind::OffPrompt => s.factor.is_none(),
            },
            format!(
                "checks.llm.panel suspect {}: a hotter suspect needs a factor > 1, the others none",
                s.name
            ),
        );
        need(
            s.drift_nats_per_token
                .is_none_or(|d| d.is_finite() && d >= 0.0),
            format!(
                "checks.llm.panel suspect {}: drift_nats_per_token must be >= 0",
                s.name
            ),
        );
    }
    need(
        prob(c.calibration.target_false_positive_rate),
        "checks.calibration.target_false_positive_rate must be in (0, 1)".into(),
    );
    let lat = &c.latency;
    need(
        (0.1..=1.5).contains(&lat.max_compute_efficiency)
            && (0.1..=1.5).contains(&lat.max_bandwidth_efficiency),
        "checks.latency: max_compute_efficiency and max_bandwidth_efficiency must be in [0.1, 1.5]"
            .into(),
    );
    need(
        lat.envelope_margin >= 1.0
            && lat.envelope_margin.is_finite()
            && lat.peer_min_miners >= 1
            && prob(lat.peer_quantile)
            && lat.peer_capacity > lat.peer_min_miners,
        "checks.latency: need envelope_margin >= 1, peer_min_miners >= 1, peer_quantile in (0, 1), peer_capacity > peer_min_miners".into(),
    );
    for e in &lat.envelope {
        need(
            rules.models.categories.contains_key(&e.category)
                && rules.gpus.gpus.contains_key(&e.gpu)
                && e.efficiency > 0.0
                && e.efficiency <= 1.0,
            format!(
                "checks.latency.envelope {}: needs a known category and gpu, and an efficiency in (0, 1]",
                e.run
            ),
        );
    }
    need(
        c.reuse.capacity > 0,
        "checks.reuse.capacity must be > 0".into(),
    );
    need(
        c.challenge.min_len_bytes > 0 && c.challenge.min_len_bytes <= c.challenge.max_len_bytes,
        "checks.challenge: need 0 < min_len_bytes <= max_len_bytes".into(),
    );
    for canary in &c.canaries {
        let ok = match canary.kind {
            JobKind::Llm => !canary.require_any.is_empty(),
            JobKind::Sd => {
                canary.max_distance.is_some()
                    && canary.reference_phash.as_deref().is_some_and(|h| {
                        image_hasher::ImageHash::<Box<[u8]>>::from_base64(h).is_ok()
                    })
            }
        };
        need(
            ok,
            format!(
                "canary {}: llm canaries need require_any, sd canaries a base64 reference_phash and max_distance",
                canary.id
            ),
        );
    }
}

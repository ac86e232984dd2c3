//! Versioned policy: points, models, GPUs, check thresholds, sampling and slashing, read
//! from `rules/*.toml`.
//!
//! Rules are data. Each file is parsed with `deny_unknown_fields`, carries a `version`, and
//! the whole set is validated (ranges, and every reference between files) before anything
//! uses it. The set's digest, BLAKE3 over its canonical JSON form, is recorded in every
//! verdict, so any verdict can be traced to the exact policy that produced it; comments
//! and formatting in the TOML do not change the digest.
//!
//! Deployment settings (brokers, buckets, secrets) are not rules and never live here.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::outcome::CheckId;
use crate::record::JobKind;

/// The rules format version this build reads.
pub const RULES_VERSION: u32 = 1;

/// The file names that make up a rules set, in load order.
pub const RULE_FILES: [&str; 6] = [
    "points.toml",
    "models.toml",
    "gpus.toml",
    "checks.toml",
    "sampling.toml",
    "slashing.toml",
];

/// The shipped rules, compiled in so that `proctor` runs with no files around it.
const EMBEDDED: [(&str, &str); 6] = [
    ("points.toml", include_str!("../rules/points.toml")),
    ("models.toml", include_str!("../rules/models.toml")),
    ("gpus.toml", include_str!("../rules/gpus.toml")),
    ("checks.toml", include_str!("../rules/checks.toml")),
    ("sampling.toml", include_str!("../rules/sampling.toml")),
    ("slashing.toml", include_str!("../rules/slashing.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules file {file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("rules file {file}: {message}")]
    Parse { file: String, message: String },
    #[error("rules are inconsistent: {0}")]
    Invalid(String),
}

/// A points category: the unit that multipliers, minimum hardware and compute cost attach to.
pub type CategoryId = String;
pub type GpuId = String;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub points: PointsRules,
    pub models: ModelRules,
    pub gpus: GpuRules,
    pub checks: CheckRules,
    pub sampling: SamplingRules,
    pub slashing: SlashingRules,
}

// ---- points.toml -------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsRules {
    pub version: u32,
    pub waifu_unit: WaifuUnit,
    pub llama_unit: LlamaUnit,
    pub nft: NftBoost,
    /// Points multiplier per category.
    pub multipliers: BTreeMap<CategoryId, f64>,
}

/// 1 Waifu point = one `width`×`height` image at `steps` steps in `category`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaifuUnit {
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub category: CategoryId,
}

/// 1 Llama point = `tokens` input+output tokens in `category`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaUnit {
    pub tokens: u32,
    pub category: CategoryId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NftBoost {
    /// How many GPUs of a wallet one NFT boosts.
    pub gpus_per_nft: u32,
    /// The points factor on a boosted GPU.
    pub boost_factor: f64,
}

// ---- models.toml -------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRules {
    pub version: u32,
    pub categories: BTreeMap<CategoryId, Category>,
    pub models: BTreeMap<String, Model>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub kind: JobKind,
    /// False for the network's models the points rules do not price yet: known (their
    /// jobs are judged), but worth no points, with no hardware minimum or work estimate
    /// required.
    #[serde(default = "priced_by_default")]
    pub priced: bool,
    /// SD: the GPU meets the minimum if it matches or beats one of these cards on both
    /// VRAM and FP16 tensor throughput.
    #[serde(default)]
    pub min_gpus: Vec<GpuId>,
    /// LLM: the minimum VRAM.
    #[serde(default)]
    pub min_vram_gb: Option<f64>,
    /// SD: a lower bound on the compute of one denoising step (both CFG branches) per
    /// megapixel of output, in TFLOP.
    #[serde(default)]
    pub tflop_per_megapixel_step: Option<f64>,
}

fn priced_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub category: CategoryId,
    /// For a LoRA: the checkpoint it is applied to.
    #[serde(default)]
    pub base: Option<String>,
    /// LLM: parameters touched per generated token (all of them for a dense model, the
    /// active experts for a mixture), for the prefill FLOP bound.
    #[serde(default)]
    pub active_params_b: Option<f64>,
    /// LLM: bytes of weights read per decode step at batch size 1, for the bandwidth
    /// bound, counting the whole input-embedding table ...
    #[serde(default)]
    pub weight_bytes_per_token_gb: Option<f64>,
    /// ... of which a decode step reads one row only: the bound leaves the table out.
    #[serde(default)]
    pub embedding_bytes_gb: Option<f64>,
    #[serde(default)]
    pub files: Vec<ModelFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub name: String,
    /// The exact size in bytes, where known: checked when present.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// The size the network's list publishes, in MB: rounded there, so never checked.
    #[serde(default)]
    pub published_size_mb: Option<f64>,
    /// Hex SHA-256 as the network's models list publishes it (Hugging Face's LFS oid).
    pub sha256: String,
    /// Hex BLAKE3, where known (Civitai publishes it).
    #[serde(default)]
    pub blake3: Option<String>,
    /// Where the network's miners download it.
    #[serde(default)]
    pub url: Option<String>,
}

// ---- gpus.toml ---------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuRules {
    pub version: u32,
    pub gpus: BTreeMap<GpuId, Gpu>,
    /// Normalized name → GPU id, built once at load (not part of the rules' data).
    #[serde(skip)]
    by_name: BTreeMap<String, GpuId>,
}

/// The words a hardware string may carry or omit without naming another card.
const VENDOR_WORDS: [&str; 6] = ["nvidia", "geforce", "tesla", "amd", "radeon", "instinct"];

impl GpuRules {
    /// `"NVIDIA GeForce RTX 4090"` → `"rtx4090"`: lower case, punctuation and the vendor
    /// words dropped, so cosmetic differences in driver strings do not matter but model
    /// suffixes ("Ti", "SUPER", "Laptop GPU", "D") do.
    pub fn normalize_name(name: &str) -> String {
        name.to_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty() && !VENDOR_WORDS.contains(w))
            .collect()
    }

    /// The GPU a hardware string names, if the table knows it.
    pub fn find(&self, hardware: &str) -> Option<(&str, &Gpu)> {
        let id = self.by_name.get(&GpuRules::normalize_name(hardware))?;
        self.gpus.get_key_value(id).map(|(id, g)| (id.as_str(), g))
    }

    /// A card as fast as the fastest in the table on every resource: what a hardware
    /// string the table does not know is judged against, so that a claim no listed GPU
    /// could make still fails.
    pub fn fastest(&self) -> Gpu {
        let max = |f: fn(&Gpu) -> f64| self.gpus.values().map(f).fold(0.0, f64::max);
        Gpu {
            names: Vec::new(),
            vram_gb: max(|g| g.vram_gb),
            fp16_tensor_tflops: max(|g| g.fp16_tensor_tflops),
            memory_bandwidth_gbs: max(|g| g.memory_bandwidth_gbs),
            source: "the fastest figures of rules/gpus.toml".into(),
        }
    }

    fn build_index(&mut self) -> Vec<String> {
        let mut clashes = Vec::new();
        self.by_name.clear();
        for (id, g) in &self.gpus {
            for n in &g.names {
                let key = GpuRules::normalize_name(n);
                if key.is_empty() {
                    clashes.push(format!("gpu {id}: name {n:?} is only vendor words"));
                } else if let Some(other) = self.by_name.insert(key, id.clone())
                    && &other != id
                {
                    clashes.push(format!("gpu name {n:?} belongs to both {other} and {id}"));
                }
            }
        }
        clashes
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// Names as drivers report them (`nvidia-smi --query-gpu=name`); matched after
    /// normalization, see [`GpuRules::normalize_name`].
    pub names: Vec<String>,
    pub vram_gb: f64,
    /// Dense FP16 tensor throughput with FP16 accumulate (without tensor cores, the
    /// faster of the FP16 and FP32 rates): the highest rate a miner's kernels could
    /// reach, which keeps latency bounds on the honest side.
    pub fp16_tensor_tflops: f64,
    pub memory_bandwidth_gbs: f64,
    /// Where the figures come from.
    pub source: String,
}

// ---- checks.toml -------------------------------------------------------------------------

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

// ---- sampling.toml -----------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingRules {
    pub version: u32,
    pub base_rate: f64,
    pub floor: f64,
    pub ceiling: f64,
    /// The rate grows by `base_rate × weight` for each failed check and each review flag.
    pub failed_check_weight: f64,
    pub flag_weight: f64,
    pub deterrence: Deterrence,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deterrence {
    /// The fewest jobs a miner is assumed to hold in a slashing window.
    pub window_jobs_min: u32,
    pub categories: BTreeMap<CategoryId, DeterrenceCase>,
}

/// A typical job of a category, and what cheating on it saves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeterrenceCase {
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub steps: Option<u32>,
    #[serde(default)]
    pub tokens: Option<u32>,
    /// Share of the job's reward the cheapest known cheat saves in compute.
    pub compute_saved_fraction: f64,
    /// Probability that a re-run of a cheated job is detected (from calibration).
    pub detection_rate: f64,
}

/// What `proctor calibrate` aims for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationRules {
    /// The per-job false-positive rate each calibrated check's thresholds must keep to
    /// on honest pairs.
    pub target_false_positive_rate: f64,
}

// ---- slashing.toml -----------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlashingRules {
    pub version: u32,
    /// Named in every slash id, so a policy change cannot collide with an old slash.
    pub rule_id: String,
    /// The probability that an honest miner is ever slashed automatically, per
    /// miner-year of `decisions_per_miner_year`.
    pub lifetime_false_slash_budget: f64,
    /// The most decisions the judge takes on one miner in a year: a bound on the looks
    /// the budget is spread over (see [`Rules::auto_slash_threshold`]).
    pub decisions_per_miner_year: f64,
    pub review_max_honest_probability: f64,
    pub fraction: f64,
    pub scope: SlashScope,
    pub window_days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlashScope {
    /// Every job of the miner in the window that no earlier slash covered.
    MinerWindow,
    /// Only the jobs that failed a check.
    FailedJobs,
}

// ---- loading -----------------------------------------------------------------------------

impl Rules {
    /// The rules compiled into this binary.
    pub fn embedded() -> Result<Rules, RulesError> {
        Rules::from_sources(|name| {
            EMBEDDED
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| (*s).to_owned())
                .ok_or_else(|| RulesError::Invalid(format!("no embedded {name}")))
        })
    }

    /// Reads `points.toml`, `models.toml`, … from `dir`.
    pub fn load_dir(dir: &Path) -> Result<Rules, RulesError> {
        Rules::from_sources(|name| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| RulesError::Io {
                file: path.display().to_string(),
                source,
            })
        })
    }

    fn from_sources(
        mut read: impl FnMut(&str) -> Result<String, RulesError>,
    ) -> Result<Rules, RulesError> {
        fn parse<T: serde::de::DeserializeOwned>(name: &str, text: &str) -> Result<T, RulesError> {
            toml::from_str(text).map_err(|e| RulesError::Parse {
                file: name.to_owned(),
                message: e.to_string(),
            })
        }
        let mut rules = Rules {
            points: parse("points.toml", &read("points.toml")?)?,
            models: parse("models.toml", &read("models.toml")?)?,
            gpus: parse("gpus.toml", &read("gpus.toml")?)?,
            checks: parse("checks.toml", &read("checks.toml")?)?,
            sampling: parse("sampling.toml", &read("sampling.toml")?)?,
            slashing: parse("slashing.toml", &read("slashing.toml")?)?,
        };
        let clashes = rules.gpus.build_index();
        if !clashes.is_empty() {
            return Err(RulesError::Invalid(clashes.join("; ")));
        }
        rules.validate()?;
        Ok(rules)
    }

    /// BLAKE3 of the canonical JSON form, hex. Recorded in every verdict. An error
    /// where the rules have no JSON form (never with the shipped types): a digest of
    /// nothing would name every such rule set alike.
    pub fn digest(&self) -> Result<String, RulesError> {
        let canonical = serde_json::to_vec(self)
            .map_err(|e| RulesError::Invalid(format!("rules have no canonical JSON form: {e}")))?;
        Ok(blake3::hash(&canonical).to_hex().to_string())
    }

    pub fn model(&self, id: &str) -> Option<&Model> {
        self.models.models.get(id)
    }

    pub fn category(&self, id: &str) -> Option<&Category> {
        self.models.categories.get(id)
    }

    /// A model's files: its own, then (for a LoRA) its base checkpoint's.
    pub fn model_files(&self, id: &str) -> Vec<&ModelFile> {
        let Some(m) = self.model(id) else {
            return Vec::new();
        };
        let base = m.base.as_deref().and_then(|b| self.model(b));
        m.files
            .iter()
            .chain(base.into_iter().flat_map(|b| &b.files))
            .collect()
    }

    pub fn policy(&self, check: CheckId) -> &CheckPolicy {
        // `validate` guarantees every check has a policy.
        &self.checks.policy[&check]
    }

    /// The honest probability at or below which one decision slashes automatically:
    /// the lifetime budget spread evenly over every decision of a miner-year. By the
    /// union bound, an honest miner is then slashed in a year with probability at most
    /// `lifetime_false_slash_budget`, however the decisions overlap (docs/DETECTION.md).
    pub fn auto_slash_threshold(&self) -> f64 {
        let sl = &self.slashing;
        sl.lifetime_false_slash_budget / sl.decisions_per_miner_year
    }

    /// Declared rates below their own measurement: promises the measurement does not
    /// keep. `proctor rules check` fails on any.
    pub fn broken_promises(&self) -> Vec<String> {
        self.checks
            .policy
            .iter()
            .filter_map(|(id, p)| {
                let m = p.measured.as_ref()?;
                (p.false_positive_rate < m.upper_95).then(|| {
                    format!(
                        "{id}: declared false-positive rate {:.2e} is below its measured 95 % bound {:.2e} ({} of {} honest, {})",
                        p.false_positive_rate, m.upper_95, m.failures, m.n, m.date
                    )
                })
            })
            .collect()
    }

    fn validate(&self) -> Result<(), RulesError> {
        let mut errors = Vec::new();
        let mut need = |ok: bool, what: String| {
            if !ok {
                errors.push(what);
            }
        };
        for (file, v) in [
            ("points.toml", self.points.version),
            ("models.toml", self.models.version),
            ("gpus.toml", self.gpus.version),
            ("checks.toml", self.checks.version),
            ("sampling.toml", self.sampling.version),
            ("slashing.toml", self.slashing.version),
        ] {
            need(
                v == RULES_VERSION,
                format!("{file}: version {v} is not {RULES_VERSION}"),
            );
        }
        let prob = |p: f64| p > 0.0 && p < 1.0;
        let positive = |x: f64| x.is_finite() && x > 0.0;

        // points
        let p = &self.points;
        for (cat, m) in &p.multipliers {
            need(
                m.is_finite() && *m >= 0.0,
                format!("points.multipliers.{cat} must be >= 0"),
            );
            need(
                self.models.categories.get(cat).is_some_and(|c| c.priced),
                format!("points.multipliers.{cat} names no priced category in models.toml"),
            );
        }
        for (cat, c) in &self.models.categories {
            need(
                !c.priced || p.multipliers.contains_key(cat),
                format!("category {cat} has no points multiplier"),
            );
        }
        for (what, cat, kind) in [
            ("waifu_unit", &p.waifu_unit.category, JobKind::Sd),
            ("llama_unit", &p.llama_unit.category, JobKind::Llm),
        ] {
            let ok = self.models.categories.get(cat).map(|c| c.kind) == Some(kind)
                && p.multipliers.get(cat).is_some_and(|m| *m > 0.0);
            need(
                ok,
                format!(
                    "points.{what}.category {cat} must be a {kind:?} category with a multiplier > 0"
                ),
            );
        }
        need(
            p.waifu_unit.width > 0 && p.waifu_unit.height > 0 && p.waifu_unit.steps > 0,
            "points.waifu_unit sizes must be > 0".into(),
        );
        need(
            p.llama_unit.tokens > 0,
            "points.llama_unit.tokens must be > 0".into(),
        );
        need(
            p.nft.boost_factor.is_finite() && p.nft.boost_factor >= 1.0,
            "points.nft.boost_factor must be >= 1".into(),
        );

        // models
        for (id, c) in self.models.categories.iter().filter(|(_, c)| c.priced) {
            match c.kind {
                JobKind::Sd => {
                    need(
                        !c.min_gpus.is_empty(),
                        format!("category {id}: sd needs min_gpus"),
                    );
                    need(
                        c.tflop_per_megapixel_step.is_some_and(positive),
                        format!("category {id}: sd needs tflop_per_megapixel_step > 0"),
                    );
                }
                JobKind::Llm => need(
                    c.min_vram_gb.is_some_and(positive),
                    format!("category {id}: llm needs min_vram_gb > 0"),
                ),
            }
            for g in &c.min_gpus {
                need(
                    self.gpus.gpus.contains_key(g),
                    format!("category {id}: min_gpus names unknown gpu {g}"),
                );
            }
        }
        for (id, m) in &self.models.models {
            let Some(cat) = self.models.categories.get(&m.category) else {
                need(
                    false,
                    format!("model {id}: unknown category {}", m.category),
                );
                continue;
            };
            if cat.kind == JobKind::Llm && cat.priced {
                need(
                    m.active_params_b.is_some_and(positive)
                        && m.weight_bytes_per_token_gb.is_some_and(positive)
                        && m.embedding_bytes_gb.is_some_and(|e| {
                            e >= 0.0 && m.weight_bytes_per_token_gb.is_some_and(|w| e < w)
                        }),
                    format!(
                        "model {id}: llm needs active_params_b, weight_bytes_per_token_gb and embedding_bytes_gb below it"
                    ),
                );
            }
            need(
                m.base.as_ref().is_none_or(|b| {
                    self.models
                        .models
                        .get(b)
                        .is_some_and(|base| base.base.is_none())
                }),
                format!(
                    "model {id}: base {:?} is not a checkpoint of the registry",
                    m.base
                ),
            );
            for f in &m.files {
                need(
                    f.sha256.len() == 64 && hex::decode(&f.sha256).is_ok(),
                    format!("model {id} file {}: sha256 must be 64 hex digits", f.name),
                );
                need(
                    f.blake3
                        .as_ref()
                        .is_none_or(|b| b.len() == 64 && hex::decode(b).is_ok()),
                    format!("model {id} file {}: blake3 must be 64 hex digits", f.name),
                );
            }
        }

        // gpus (name clashes are found when the index is built)
        for (id, g) in &self.gpus.gpus {
            need(!g.names.is_empty(), format!("gpu {id}: no names"));
            need(!g.source.is_empty(), format!("gpu {id}: no source"));
            need(
                positive(g.vram_gb)
                    && positive(g.fp16_tensor_tflops)
                    && positive(g.memory_bandwidth_gbs),
                format!("gpu {id}: specs must be > 0"),
            );
        }

        // checks
        let c = &self.checks;
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
            "checks.llm.eos_min_prob must be in [0.5, 1): the skip bound is only conservative there".into(),
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
            positive(l.chars_per_token_estimate)
                && l.max_chars_per_token >= l.chars_per_token_estimate,
            "checks.llm: max_chars_per_token must be >= chars_per_token_estimate > 0".into(),
        );
        need(
            l.likelihood_z_min.is_finite()
                && l.likelihood_z_min < 0.0
                && l.likelihood_min_temperature > 0.0
                && l.likelihood_min_tokens >= 1,
            "checks.llm: likelihood_z_min must be < 0, likelihood_min_temperature > 0 and likelihood_min_tokens >= 1".into(),
        );
        need(
            prob(c.calibration.target_false_positive_rate),
            "checks.calibration.target_false_positive_rate must be in (0, 1)".into(),
        );
        let lat = &c.latency;
        need(
            (0.1..=1.5).contains(&lat.max_compute_efficiency)
                && (0.1..=1.5).contains(&lat.max_bandwidth_efficiency),
            "checks.latency: max_compute_efficiency and max_bandwidth_efficiency must be in [0.1, 1.5]".into(),
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
                self.models.categories.contains_key(&e.category)
                    && self.gpus.gpus.contains_key(&e.gpu)
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

        // sampling
        let s = &self.sampling;
        need(
            prob(s.floor) && s.floor <= s.base_rate && s.base_rate <= s.ceiling && s.ceiling <= 1.0,
            "sampling: need 0 < floor <= base_rate <= ceiling <= 1".into(),
        );
        need(
            s.failed_check_weight >= 0.0 && s.flag_weight >= 0.0,
            "sampling: weights must be >= 0".into(),
        );
        for (cat, d) in &s.deterrence.categories {
            let Some(category) = self.models.categories.get(cat) else {
                need(
                    false,
                    format!("sampling.deterrence.categories.{cat}: unknown category"),
                );
                continue;
            };
            let shaped = match category.kind {
                JobKind::Sd => d.width.is_some() && d.height.is_some() && d.steps.is_some(),
                JobKind::Llm => d.tokens.is_some(),
            };
            need(
                shaped,
                format!(
                    "sampling.deterrence.categories.{cat}: sd needs width, height, steps; llm needs tokens"
                ),
            );
            need(
                (0.0..=1.0).contains(&d.compute_saved_fraction)
                    && (0.0..=1.0).contains(&d.detection_rate),
                format!("sampling.deterrence.categories.{cat}: fractions must be in [0, 1]"),
            );
        }
        for (cat, c) in &self.models.categories {
            need(
                !c.priced || s.deterrence.categories.contains_key(cat),
                format!("category {cat} has no sampling.deterrence case"),
            );
        }

        // slashing
        let sl = &self.slashing;
        need(!sl.rule_id.is_empty(), "slashing.rule_id is empty".into());
        need(
            prob(sl.lifetime_false_slash_budget)
                && sl.decisions_per_miner_year >= 1.0
                && sl.decisions_per_miner_year.is_finite()
                && self.auto_slash_threshold() < sl.review_max_honest_probability
                && sl.review_max_honest_probability < 1.0,
            "slashing: need 0 < lifetime_false_slash_budget < 1, decisions_per_miner_year >= 1, and review_max_honest_probability in (budget / decisions, 1)".into(),
        );
        need(
            sl.fraction > 0.0 && sl.fraction <= 1.0,
            "slashing.fraction must be in (0, 1]".into(),
        );

        if errors.is_empty() {
            Ok(())
        } else {
            Err(RulesError::Invalid(errors.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> BTreeMap<&'static str, String> {
        EMBEDDED
            .iter()
            .map(|(n, s)| (*n, (*s).to_owned()))
            .collect()
    }

    fn load(src: &BTreeMap<&'static str, String>) -> Result<Rules, RulesError> {
        Rules::from_sources(|n| Ok(src[n].clone()))
    }

    #[test]
    fn the_shipped_rules_load() {
        let rules = Rules::embedded().unwrap();
        assert!(rules.model("AnimagineXL").is_some());
        assert!(rules.model("openhermes-mixtral-8x7b-gptq").is_some());
    }

    #[test]
    fn the_shipped_rules_on_disk_are_the_embedded_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let disk = Rules::load_dir(&dir).unwrap();
        assert_eq!(
            disk.digest().unwrap(),
            Rules::embedded().unwrap().digest().unwrap()
        );
    }

    #[test]
    fn comments_do_not_change_the_digest_but_values_do() {
        let mut src = sources();
        let base = load(&src).unwrap().digest().unwrap();
        src.get_mut("slashing.toml")
            .unwrap()
            .push_str("\n# a comment\n");
        assert_eq!(load(&src).unwrap().digest().unwrap(), base);
        let s = src["slashing.toml"].replace("fraction = 1.0", "fraction = 0.5");
        assert_ne!(s, src["slashing.toml"], "fixture edit did not apply");
        src.insert("slashing.toml", s);
        assert_ne!(load(&src).unwrap().digest().unwrap(), base);
    }

    #[test]
    fn an_unknown_key_is_rejected_with_its_file() {
        let mut src = sources();
        src.get_mut("sampling.toml")
            .unwrap()
            .push_str("\nsurprise = 1\n");
        let err = load(&src).unwrap_err().to_string();
        assert!(
            err.contains("sampling.toml") && err.contains("surprise"),
            "{err}"
        );
    }

    #[test]
    fn a_dangling_gpu_reference_is_rejected() {
        let mut src = sources();
        let m = src["models.toml"].replacen("\"rtx3070\"", "\"rtx9999\"", 1);
        assert_ne!(m, src["models.toml"], "fixture edit did not apply");
        src.insert("models.toml", m);
        let err = load(&src).unwrap_err().to_string();
        assert!(err.contains("rtx9999"), "{err}");
    }

    #[test]
    fn a_clamp_smaller_than_its_multiple_is_rejected() {
        // expected_size would otherwise panic on every SD job.
        let mut src = sources();
        let c = src["checks.toml"].replacen("clamp_max_side = 2048", "clamp_max_side = 4", 1);
        assert_ne!(c, src["checks.toml"], "fixture edit did not apply");
        src.insert("checks.toml", c);
        let err = load(&src).unwrap_err().to_string();
        assert!(err.contains("clamp_multiple"), "{err}");
    }

    #[test]
    fn an_out_of_range_rate_is_rejected() {
        let mut src = sources();
        let s = src["sampling.toml"].replacen("floor = ", "floor = 2.0 #", 1);
        src.insert("sampling.toml", s);
        let err = load(&src).unwrap_err().to_string();
        assert!(err.contains("sampling"), "{err}");
    }
}

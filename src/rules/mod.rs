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

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::outcome::CheckId;

mod checks;
mod gpus;
mod models;
mod points;
mod sampling;
mod slashing;

pub use checks::*;
pub use gpus::*;
pub use models::*;
pub use points::*;
pub use sampling::*;
pub use slashing::*;

/// A probability strictly between 0 and 1.
fn prob(p: f64) -> bool {
    p > 0.0 && p < 1.0
}

/// A finite number above 0.
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

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
    ("points.toml", include_str!("../../rules/points.toml")),
    ("models.toml", include_str!("../../rules/models.toml")),
    ("gpus.toml", include_str!("../../rules/gpus.toml")),
    ("checks.toml", include_str!("../../rules/checks.toml")),
    ("sampling.toml", include_str!("../../rules/sampling.toml")),
    ("slashing.toml", include_str!("../../rules/slashing.toml")),
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

    /// The embedded rules with one file's text replaced: how a single edited file
    /// loads, and the fuzzer's way into the rules parser.
    pub fn embedded_with(file: &str, text: &str) -> Result<Rules, RulesError> {
        Rules::from_sources(|name| {
            if name == file {
                return Ok(text.to_owned());
            }
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

    /// Whether `check`'s failures on a job of `model` can count toward an automatic
    /// slash: the check can slash at all ([`CheckPolicy::can_slash`]) and its honest
    /// rate was measured on that model, its category, or every model
    /// ([`Measurement::covers`]). Anywhere else the rate is a stand-in's, and the
    /// check's failures can only flag.
    pub fn slashes_on(&self, check: CheckId, model: &str) -> bool {
        let p = self.policy(check);
        p.can_slash()
            && p.measured
                .as_ref()
                .is_some_and(|m| m.covers(model, self.model(model).map(|m| m.category.as_str())))
    }

    /// Where `check` can slash, for `proctor rules check`: `*`, or the models and
    /// categories its rate was measured on, each marked where the registry lacks it
    /// (a stand-in the network does not serve). `None` where it cannot slash anywhere.
    pub fn slash_scope(&self, check: CheckId) -> Option<String> {
        let p = self.policy(check);
        let m = p.measured.as_ref().filter(|_| p.can_slash())?;
        if m.models.is_empty() {
            return None;
        }
        Some(
            m.models
                .iter()
                .map(|s| {
                    if s == "*" || self.model(s).is_some() || self.category(s).is_some() {
                        s.clone()
                    } else {
                        format!("{s} (not a network model)")
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    /// For each model category: the checks that can slash on its models, each named
    /// with the models it covers where it covers only some.
    pub fn slashing_by_category(&self) -> Vec<(String, Vec<String>)> {
        self.models
            .categories
            .keys()
            .map(|category| {
                let models: Vec<&str> = self
                    .models
                    .models
                    .iter()
                    .filter(|(_, m)| &m.category == category)
                    .map(|(id, _)| id.as_str())
                    .collect();
                let checks = CheckId::ALL
                    .iter()
                    .filter_map(|&check| {
                        let covered: Vec<&str> = models
                            .iter()
                            .copied()
                            .filter(|m| self.slashes_on(check, m))
                            .collect();
                        // The whole category: `*` or the category's own id.
                        let p = self.policy(check);
                        let whole = p.can_slash()
                            && p.measured
                                .as_ref()
                                .is_some_and(|m| m.covers("", Some(category)));
                        if whole {
                            Some(check.as_str().to_owned())
                        } else if covered.is_empty() {
                            None
                        } else {
                            Some(format!("{check} (only {})", covered.join(", ")))
                        }
                    })
                    .collect();
                (category.clone(), checks)
            })
            .collect()
    }

    /// The honest probability at or below which one decision slashes automatically:
    /// the lifetime budget spread evenly over every decision of a miner-year. By the
    /// union bound, an honest miner is then slashed in a year with probability at most
    /// `lifetime_false_slash_budget`, however the decisions overlap (docs/DETECTION.md).
    pub fn auto_slash_threshold(&self) -> f64 {
        let sl = &self.slashing;
        sl.lifetime_false_slash_budget / sl.decisions_per_miner_year
    }

    /// The lifetime false-slash risk the rules promise: the budget the decisions spend
    /// (the union bound over a miner-year's decisions), plus each slashing check's
    /// calibration risk ([`CheckPolicy::calibration_risk`]): the chance its honest
    /// sample understated its rate by the effect margin. Union bound again.
    pub fn lifetime_risk(&self) -> f64 {
        let margin = self.slashing.effect_margin;
        self.slashing.lifetime_false_slash_budget
            + self
                .checks
                .policy
                .values()
                .filter_map(|p| p.calibration_risk(margin))
                .sum::<f64>()
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
    /// The embedded rules with every measured rate holding on every model (`models =
    /// ["*"]`): for tests of what a slash does on the network models the shipped rates
    /// were not measured on.
    #[cfg(test)]
    pub(crate) fn measured_everywhere() -> Rules {
        let mut r = Rules::embedded().unwrap();
        for p in r.checks.policy.values_mut() {
            if let Some(m) = &mut p.measured {
                m.models = vec!["*".into()];
            }
        }
        r
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

        points::validate(self, &mut need);
        models::validate(self, &mut need);
        gpus::validate(self, &mut need);
        checks::validate(self, &mut need);
        sampling::validate(self, &mut need);
        slashing::validate(self, &mut need);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RulesError::Invalid(errors.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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
    fn the_calibration_s_confidence_counts_in_the_lifetime_risk() {
        let rules = Rules::embedded().unwrap();
        let budget = rules.slashing.lifetime_false_slash_budget;
        // At margin 10 every measured sample all but rules out a rate at the floor.
        let risk = rules.lifetime_risk();
        assert!(risk >= budget && risk < budget * 1.001, "{risk}");
        // At margin 1 the floor is the 95 % bound itself: each slashing check's sample
        // shows its failures with at most 5 % chance, and the sum counts them all.
        let mut at_bound = rules.clone();
        at_bound.slashing.effect_margin = 1.0;
        let risks: Vec<f64> = at_bound
            .checks
            .policy
            .values()
            .filter_map(|p| p.calibration_risk(1.0))
            .collect();
        assert!(risks.len() >= 5, "{risks:?}");
        for r in &risks {
            assert!(*r <= 0.05 + 1e-9, "{risks:?}");
        }
        assert!(risks.iter().any(|r| *r > 0.01), "{risks:?}");
        assert!(
            at_bound.lifetime_risk() > budget + 0.05,
            "{}",
            at_bound.lifetime_risk()
        );
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
    fn a_tail_margin_below_1_or_above_the_effect_margin_is_rejected() {
        for bad in ["0.5", "11.0"] {
            let mut src = sources();
            let s = src["slashing.toml"].replacen(
                "tail_margin = 3.0",
                &format!("tail_margin = {bad}"),
                1,
            );
            assert_ne!(s, src["slashing.toml"], "fixture edit did not apply");
            src.insert("slashing.toml", s);
            let err = load(&src).unwrap_err().to_string();
            assert!(err.contains("tail_margin"), "{bad}: {err}");
        }
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

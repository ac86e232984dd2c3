//! The suspect-model panel: the models (and samplers) a cheater would serve instead of
//! the reference, scored on the miner's tokens beside it.
//!
//! For a sampled job at temperature `T`, an honest miner draws each token from the
//! reference's `p = softmax(logits / T)` without EOS (an emitted token is not EOS). A
//! suspect `s` is another such distribution `q_s`: another model's at `T`, or the
//! reference's own at `T × factor` (a hotter sampler; the limit of many factors is the
//! uniform distribution, which canned text from elsewhere resembles). Over a text,
//!
//! ```text
//! llr_s = Σ_t log q_s(x_t) − log p(x_t)
//! ```
//!
//! is the log-likelihood ratio of the suspect against the reference: the statistic of
//! the most powerful test against that suspect (Neyman-Pearson), and `exp(llr_s)` has
//! mean exactly 1 over texts the reference samples (each factor `q/p` has mean
//! `Σ_x p·q/p = 1` given the prefix, whatever the prompt). That makes it an e-value:
//! a product of them over a miner's jobs is still one, so evidence adds up across jobs
//! without a normal approximation (`crate::checks::llm::panel` and
//! `crate::decide`).
//!
//! An honest miner on other numerics (bf16, another batch size) draws from `p' ≈ p`,
//! under which a factor's mean is `Σ_x p'·q/p`, a little off 1. [`drift`] measures its
//! logarithm per token; `proctor calibrate` writes the largest it saw per suspect into
//! the rules (`drift_nats_per_token`), and the check takes that much off every token's
//! ratio, so that the corrected e-value keeps mean at most 1 for those honest miners too.
//!
//! Every suspect model must share the reference's tokenizer: the ratio compares two
//! distributions over the same token ids.

use candle_core::Device;

use super::Scorer;
use super::model::Numerics;
use crate::checks::llm::SuspectLlr;
use crate::rules::{SuspectKind, SuspectRule};

/// One job's log-prob rows, one per output position.
pub type Rows = Vec<Vec<f32>>;

/// One suspect, ready to score.
pub struct Suspect {
    pub name: String,
    pub kind: Kind,
}

pub enum Kind {
    /// Another model's distribution at the job's temperature.
    Model(Box<Scorer>),
    /// The reference's own at the job's temperature times this.
    Hotter(f64),
    /// The reference's own, with the job's request replaced by an empty one: text that
    /// does not answer the prompt (canned, reused from another job, from elsewhere)
    /// fits it about as well as the reference, an honest answer far worse.
    OffPrompt,
}

/// The suspects of one reference model, in the rules' order.
#[derive(Default)]
pub struct Panel {
    pub suspects: Vec<Suspect>,
}

impl Panel {
    /// The panel the rules list for `reference`, at most `max` suspects, with model
    /// suspects loaded from `<models_dir>/<name>`. A model suspect whose folder is
    /// missing or whose tokenizer differs from the reference's is left out with a
    /// warning: the panel then judges with the suspects it has.
    pub fn load(
        reference: &Scorer,
        rules: &[&SuspectRule],
        max: usize,
        models_dir: &std::path::Path,
        numerics: Numerics,
        device: &Device,
    ) -> Panel {
        let mut suspects = Vec::new();
        for r in rules.iter().take(max) {
            let kind = match r.kind {
                SuspectKind::Hotter => Kind::Hotter(r.factor.unwrap_or(1.0)),
                SuspectKind::OffPrompt => Kind::OffPrompt,
                SuspectKind::Model => {
                    let dir = models_dir.join(&r.name);
                    match Scorer::load(&dir, numerics, device) {
                        Ok(s) if same_tokens(reference, &s) => Kind::Model(Box::new(s)),
                        Ok(_) => {
                            tracing::warn!(suspect = %r.name, "suspect model left out: its tokenizer is not the reference's");
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(suspect = %r.name, dir = %dir.display(), error = %format!("{e:#}"), "suspect model left out");
                            continue;
                        }
                    }
                }
            };
            suspects.push(Suspect {
                name: r.name.clone(),
                kind,
            });
        }
        Panel { suspects }
    }

    /// The panel `rules` list for the model in `reference_dir`, with model suspects
    /// from the folders beside it; logs which suspects it holds.
    pub fn beside(
        reference: &Scorer,
        rules: &crate::rules::PanelRules,
        reference_dir: &std::path::Path,
        numerics: Numerics,
        device: &Device,
    ) -> Panel {
        let panel = Panel::load(
            reference,
            &rules.suspects_of(&reference.model_id),
            rules.max_suspects,
            reference_dir.parent().unwrap_or(std::path::Path::new(".")),
            numerics,
            device,
        );
        let names: Vec<&str> = panel.suspects.iter().map(|s| s.name.as_str()).collect();
        tracing::info!(model = %reference.model_id, suspects = ?names, "suspect panel");
        panel
    }

    pub fn is_empty(&self) -> bool {
        self.suspects.is_empty()
    }

    /// Each suspect's ratio over the tokens of one job, given the reference's log-prob
    /// rows at those positions (`rows[i]` predicts `tokens[i]`; a row past the tokens
    /// is ignored), each suspect model's rows likewise (`None` for a sampler suspect),
    /// and which tokens count (`counted[i]`: not EOS, not an undecodable byte).
    pub fn llrs(
        &self,
        reference_rows: &[Vec<f32>],
        suspect_rows: &[Option<&[Vec<f32>]>],
        tokens: &[u32],
        counted: &[bool],
        temperature: f64,
        eos: u32,
    ) -> Vec<SuspectLlr> {
        let mut sums = vec![0.0f64; self.suspects.len()];
        let mut n = 0u32;
        for (i, (&id, &count)) in tokens.iter().zip(counted).enumerate() {
            if !count || id == eos {
                continue;
            }
            let Some(lp) = tempered_log_prob(&reference_rows[i], temperature, id, eos) else {
                continue;
            };
            n += 1;
            for (k, s) in self.suspects.iter().enumerate() {
                let lq = match (&s.kind, &suspect_rows[k]) {
                    (Kind::Hotter(f), _) => {
                        tempered_log_prob(&reference_rows[i], temperature * f, id, eos)
                    }
                    (Kind::Model(_) | Kind::OffPrompt, Some(rows)) => {
                        tempered_log_prob(&rows[i], temperature, id, eos)
                    }
                    (Kind::Model(_) | Kind::OffPrompt, None) => None,
                };
                sums[k] += lq.map_or(0.0, |lq| lq - lp);
            }
        }
        self.suspects
            .iter()
            .zip(sums)
            .map(|(s, llr)| SuspectLlr {
                name: s.name.clone(),
                llr,
                tokens: n,
            })
            .collect()
    }
}

/// Whether two scorers encode text to the same token ids.
fn same_tokens(a: &Scorer, b: &Scorer) -> bool {
    a.model.config.vocab_size == b.model.config.vocab_size
        && a.prompter.eos_id == b.prompter.eos_id
        && a.prompter.tokenizer.get_vocab(true) == b.prompter.tokenizer.get_vocab(true)
}

/// The log normalizer of [`log_tempered`]: `ln Σ exp(row / temperature)` over every
/// token but `eos`. `None` for a temperature that is not a positive number.
fn log_z(row: &[f32], temperature: f64, eos: u32) -> Option<f64> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return None;
    }
    let scaled = |x: f32| f64::from(x) / temperature;
    let keep = |i: usize| i != eos as usize;
    let max = row
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, &x)| scaled(x))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = row
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, &x)| (scaled(x) - max).exp())
        .sum();
    Some(max + sum.ln())
}

/// `log softmax(row / temperature)` over every token but `eos`, with `eos` at −∞:
/// the distribution an honest sampler at `temperature` draws a non-final token from.
/// `None` for a temperature that is not a positive number.
pub fn log_tempered(row: &[f32], temperature: f64, eos: u32) -> Option<Vec<f64>> {
    let log_z = log_z(row, temperature, eos)?;
    Some(
        row.iter()
            .enumerate()
            .map(|(i, &x)| {
                if i != eos as usize {
                    f64::from(x) / temperature - log_z
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect(),
    )
}

/// Token `id`'s log-probability under [`log_tempered`], unfloored (the same number,
/// without writing out the whole distribution).
pub fn tempered_log_prob(row: &[f32], temperature: f64, id: u32, eos: u32) -> Option<f64> {
    if id == eos || id as usize >= row.len() {
        return None;
    }
    let lp = f64::from(row[id as usize]) / temperature - log_z(row, temperature, eos)?;
    lp.is_finite().then_some(lp)
}

/// `ln Σ_x p'(x)·q(x)/p(x)`: the log of the mean of one token's ratio `q/p` when the
/// token is drawn from `p'` instead of `p` (0 when `p' = p`). All three are log
/// distributions over the same ids ([`log_tempered`]).
pub fn drift(miner: &[f64], reference: &[f64], suspect: &[f64]) -> f64 {
    // Two passes over the terms rather than one collected vector: this runs for every
    // token of every suspect in a calibration.
    let terms = || {
        miner
            .iter()
            .zip(reference)
            .zip(suspect)
            .filter(|((m, r), _)| m.is_finite() && r.is_finite())
            .map(|((m, r), s)| m + s - r)
    };
    let max = terms().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return 0.0;
    }
    max + terms().map(|t| (t - max).exp()).sum::<f64>().ln()
}

/// The per-token drift of each suspect over one honest text: `miner_rows` are the
/// log-prob rows of the model the honest miner ran (at its numerics),
/// `reference_rows` and `suspect_rows` as in [`Panel::llrs`]. Per suspect, the mean
/// over the text's tokens and the largest single token's.
pub fn text_drift(
    panel: &Panel,
    miner_rows: &[Vec<f32>],
    reference_rows: &[Vec<f32>],
    suspect_rows: &[Option<&[Vec<f32>]>],
    tokens: &[u32],
    temperature: f64,
    eos: u32,
) -> Vec<(f64, f64)> {
    let k = panel.suspects.len();
    let (mut sum, mut max, mut n) = (vec![0.0f64; k], vec![0.0f64; k], 0usize);
    for (i, &id) in tokens.iter().enumerate() {
        if id == eos {
            continue;
        }
        let (Some(m), Some(r)) = (
            log_tempered(&miner_rows[i], temperature, eos),
            log_tempered(&reference_rows[i], temperature, eos),
        ) else {
            continue;
        };
        n += 1;
        for (k, s) in panel.suspects.iter().enumerate() {
            let q = match (&s.kind, &suspect_rows[k]) {
                (Kind::Hotter(f), _) => log_tempered(&reference_rows[i], temperature * f, eos),
                (Kind::Model(_) | Kind::OffPrompt, Some(rows)) => {
                    log_tempered(&rows[i], temperature, eos)
                }
                (Kind::Model(_) | Kind::OffPrompt, None) => None,
            };
            if let Some(q) = q {
                let d = drift(&m, &r, &q);
                sum[k] += d;
                max[k] = max[k].max(d);
            }
        }
    }
    sum.into_iter()
        .zip(max)
        .map(|(s, m)| (s / n.max(1) as f64, m))
        .collect()
}

/// The suspects' log-prob rows for a batch of `reference`'s panel, each model suspect
/// one forward pass over the same sequences as the reference, the off-prompt suspect
/// one pass of the reference over the outputs behind an empty request:
/// `[suspect][job]` rows from each job's first output position, `None` for a sampler.
pub fn suspect_rows(
    reference: &Scorer,
    seqs: &[(&[u32], usize)],
) -> candle_core::Result<Vec<Option<Vec<Rows>>>> {
    reference
        .panel
        .suspects
        .iter()
        .map(|s| match &s.kind {
            Kind::Hotter(_) => Ok(None),
            Kind::Model(m) => m.log_prob_rows(seqs).map(Some),
            Kind::OffPrompt => {
                let empty = empty_request(reference);
                let moved: Vec<(Vec<u32>, usize)> = seqs
                    .iter()
                    .map(|(seq, p)| {
                        let seq: Vec<u32> = empty.iter().chain(&seq[*p..]).copied().collect();
                        (seq, empty.len())
                    })
                    .collect();
                let max = reference.model.config.max_position_embeddings;
                if empty.is_empty() || moved.iter().any(|(s, _)| s.len() > max) {
                    return Ok(None);
                }
                let refs: Vec<(&[u32], usize)> =
                    moved.iter().map(|(s, p)| (s.as_slice(), *p)).collect();
                reference.log_prob_rows(&refs).map(Some)
            }
        })
        .collect()
}

/// The prompt of an empty chat request (or, without a chat template, the tokenizer's
/// own start of text): the off-prompt suspect's context.
pub fn empty_request(reference: &Scorer) -> Vec<u32> {
    let empty = crate::record::LlmInput {
        messages: Some(vec![crate::record::Message {
            role: crate::record::Role::User,
            content: String::new(),
        }]),
        prompt: None,
        temperature: 1.0,
        max_tokens: 1,
        seed: None,
        ..Default::default()
    };
    reference
        .prompter
        .prompt_ids(&empty)
        .or_else(|_| reference.prompter.encode("", true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suspect_ratio_has_mean_one_under_the_reference() {
        // p (no EOS) and q over three tokens, EOS at index 3.
        let p_row = [1.0f32, 0.0, -1.0, 5.0];
        let q_row = [-1.0f32, 0.5, 1.0, 5.0];
        let p = log_tempered(&p_row, 0.7, 3).unwrap();
        let q = log_tempered(&q_row, 0.7, 3).unwrap();
        let mean: f64 = (0..3).map(|i| p[i].exp() * (q[i] - p[i]).exp()).sum();
        assert!((mean - 1.0).abs() < 1e-12, "{mean}");
        assert_eq!(p[3], f64::NEG_INFINITY);
        // drift: 0 when the miner is the reference, and the log mean otherwise.
        assert!(drift(&p, &p, &q).abs() < 1e-12);
        let m = log_tempered(&[1.1f32, 0.0, -1.0, 5.0], 0.7, 3).unwrap();
        let want: f64 = (0..3).map(|i| m[i].exp() * (q[i] - p[i]).exp()).sum();
        assert!((drift(&m, &p, &q) - want.ln()).abs() < 1e-12);
    }

    #[test]
    fn a_hotter_suspect_is_the_reference_at_a_higher_temperature() {
        let row = [2.0f32, 0.0, -3.0, 0.0];
        let cold = tempered_log_prob(&row, 0.5, 2, 3).unwrap();
        let hot = tempered_log_prob(&row, 1.0, 2, 3).unwrap();
        // The unlikely token gains under the hotter sampler.
        assert!(hot > cold);
        assert_eq!(tempered_log_prob(&row, 1.0, 3, 3), None);
        assert_eq!(tempered_log_prob(&row, 0.0, 1, 3), None);
    }
}

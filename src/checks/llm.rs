//! LLM output checks against the reference model's teacher-forced scores.
//!
//! Miners return text only. The reference scorer (the reference re-execution work) runs
//! the job's prompt plus the miner's text through the true model in one forward pass and
//! reports, for every miner token, its logprob, its rank, the top-k alternatives and the
//! probability of end-of-sequence at that position: [`TokenScores`]. These checks are
//! the Targon/SN19 family of rules over those scores, each a named sub-check with its own
//! evidence.
//!
//! Every bound here is written to err towards the honest miner: where the temperature
//! changes a probability in a way the top-k scores cannot pin down, the check uses the
//! bound that makes an honest output look *more* plausible, or declines to judge.

use serde::{Deserialize, Serialize};

use crate::outcome::{CheckId, Outcome};
use crate::record::LlmInput;
use crate::rules::LlmRules;

/// The reference scorer's output for one job: `reference/<job_id>/scores.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenScores {
    pub model_id: String,
    pub eos_token_id: u32,
    /// Tokens in the prompt after the chat template, for points and latency.
    pub prompt_tokens: u32,
    /// Hex BLAKE3 of the miner text these scores are for.
    pub output_text_blake3: String,
    pub tokens: Vec<TokenScore>,
    /// Log-probability of EOS at the position after the last token.
    pub end_eos_logprob: f64,
    /// Log-probability of the likeliest token at that position.
    pub end_top_logprob: f64,
    /// Log-probability, under the job's sampling distribution (the reference at the
    /// job's temperature; untempered for greedy jobs), that the token after the text
    /// begins one of the job's stop words ([`crate::llm::miner::could_start_stop`]):
    /// the server would then have cut the text there, an honest end. Absent where the
    /// job has no stop words, or the scorer cannot give it (vLLM's top-k logprobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_stop_logprob: Option<f64>,
    /// Each suspect of the panel against the reference over the text
    /// ([`crate::llm::panel`]): sampled jobs scored in process only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub panel: Vec<SuspectLlr>,
}

/// One suspect's log-likelihood ratio against the reference over a text: `Σ log q(x) −
/// log p(x)` over its tokens at the job's temperature, EOS removed from both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspectLlr {
    pub name: String,
    pub llr: f64,
    /// The tokens counted (those with sampling moments).
    pub tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenScore {
    pub id: u32,
    pub text: String,
    pub logprob: f64,
    /// 1 = the reference's argmax.
    pub rank: u32,
    /// The reference's most likely tokens at this position, best first.
    pub top: Vec<Alternative>,
    /// Log-probability that the reference would have ended here instead.
    pub eos_logprob: f64,
    /// The token under the job's own sampling distribution, where the scorer can give it
    /// (the candle scorer can; vLLM's top-k logprobs cannot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tempered: Option<Tempered>,
}

/// A token's log-probability under the distribution an honest sampler drew it from
/// (the reference's `softmax(logits / temperature)` without EOS, truncated where the
/// served model's server truncates: [`crate::llm::defaults`]), floored at three
/// standard deviations below its mean so that one freak token weighs little, and the
/// floored value's mean and variance over the distribution. Summed over a text they
/// give the likelihood check's z-score, which is close to standard normal for any
/// honest text whatever the prompt, and falls for text drawn from another
/// distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tempered {
    pub logprob: f64,
    pub mean: f64,
    pub variance: f64,
    /// How many tokens the server's sampler kept at this position (its top-k, top-p
    /// and min-p); absent where it keeps every token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alternative {
    pub id: u32,
    pub logprob: f64,
}

impl TokenScores {
    /// Scores come from our own reference hosts, but a bug there must never become a
    /// miner's failure: malformed scores make every LLM sub-check inconclusive.
    pub fn problem(&self, miner_text: &str) -> Option<String> {
        if self.output_text_blake3 != blake3::hash(miner_text.as_bytes()).to_hex().as_str() {
            return Some(
                "reference scores are for a different text than the miner returned".into(),
            );
        }
        let lp_ok = |lp: f64| lp.is_finite() && lp <= 1e-9;
        if !lp_ok(self.end_eos_logprob)
            || !lp_ok(self.end_top_logprob)
            || !self.end_stop_logprob.is_none_or(lp_ok)
        {
            return Some("reference scores have an invalid end logprob".into());
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let alts_ok = t.top.iter().all(|a| lp_ok(a.logprob))
                && t.top.windows(2).all(|w| w[0].logprob >= w[1].logprob);
            let tempered_ok = t.tempered.is_none_or(|q| {
                lp_ok(q.logprob)
                    && lp_ok(q.mean)
                    && q.variance.is_finite()
                    && q.variance >= 0.0
                    && q.kept != Some(0)
            });
            if !lp_ok(t.logprob)
                || !lp_ok(t.eos_logprob)
                || !tempered_ok
                || t.rank == 0
                || t.top.is_empty()
                || !alts_ok
            {
                return Some(format!("reference scores are malformed at token {i}"));
            }
        }
        for s in &self.panel {
            if !s.llr.is_finite() || s.tokens as usize > self.tokens.len() {
                return Some(format!(
                    "reference scores have a malformed suspect {:?}",
                    s.name
                ));
            }
        }
        None
    }
}

/// Runs every LLM sub-check. `miner_logprobs` are the miner's own, where it sent them.
///
/// On sampled jobs (at or above `likelihood_min_temperature`) the rank and
/// unlikely-token checks stand down: `llm_likelihood` measures what they approximate
/// there, with a calibrated rate, while their fixed limits flagged 11.6 % of honest
/// sampled texts (docs/DETECTION.md). They judge greedy and near-greedy jobs, where
/// their rates are measured.
pub fn check(
    scores: &TokenScores,
    input: &LlmInput,
    miner_logprobs: Option<&[f64]>,
    rules: &LlmRules,
) -> Vec<(CheckId, Outcome)> {
    let t = input.temperature;
    let (rank, unlikely) = if t >= rules.likelihood_min_temperature {
        let why = || {
            Outcome::inconclusive(format!(
                "sampled jobs (temperature >= {}) are judged by llm_likelihood",
                rules.likelihood_min_temperature
            ))
        };
        (why(), why())
    } else {
        (rank(scores, t, rules), unlikely(scores, t, rules))
    };
    let mut out = vec![
        (CheckId::LlmRank, rank),
        (CheckId::LlmUnlikelyTokens, unlikely),
        (CheckId::LlmEosSkipped, eos_skipped(scores, t, rules)),
        (CheckId::LlmEarlyEnd, early_end(scores, input, rules)),
        (CheckId::LlmGreedyShare, greedy_share(scores, t, rules)),
        (CheckId::LlmLikelihood, likelihood(scores, t, rules)),
        (CheckId::LlmSuspect, suspect(scores, t, rules)),
    ];
    if let Some(lps) = miner_logprobs {
        out.push((CheckId::LlmLogprobDelta, logprob_delta(scores, lps, rules)));
    }
    out
}

/// Up to this many offending positions are listed in evidence.
const MAX_LISTED: usize = 20;

#[derive(Serialize)]
struct Position<'a> {
    index: usize,
    text: &'a str,
    rank: u32,
    logprob: f64,
}

/// A token holding bytes the miner's server could not decode (U+FFFD): its text is not
/// what the model emitted, so no check judges it (re-encoding the replacement character
/// scores it far below the bytes the model chose).
pub fn undecodable(t: &TokenScore) -> bool {
    t.text.contains('\u{FFFD}')
}

/// The tokens the rank checks judge, with their positions.
fn judged(scores: &TokenScores) -> impl Iterator<Item = (usize, &TokenScore)> {
    scores
        .tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !undecodable(t))
}

fn positions<'a>(scores: &'a TokenScores, pick: impl Fn(&TokenScore) -> bool) -> Vec<Position<'a>> {
    judged(scores)
        .filter(|(_, t)| pick(t))
        .map(|(index, t)| Position {
            index,
            text: &t.text,
            rank: t.rank,
            logprob: t.logprob,
        })
        .collect()
}

fn rank(scores: &TokenScores, temperature: f64, rules: &LlmRules) -> Outcome {
    let limit = rules
        .rank_limits
        .iter()
        .find(|b| temperature <= b.max_temperature)
        .map_or(u32::MAX, |b| b.max_rank);
    let bad = positions(scores, |t| t.rank > limit);
    let max_rank = judged(scores).map(|(_, t)| t.rank).max().unwrap_or(0);
    let n = judged(scores).count();
    if bad.is_empty() {
        return Outcome::pass(serde_json::json!({
            "max_rank": max_rank,
            "rank_limit": limit,
            "tokens": n,
            "tokens_left_out": scores.tokens.len() - n,
        }));
    }
    Outcome::fail(
        format!(
            "{} of {n} tokens rank beyond {limit} under the reference model at temperature {temperature} (worst rank {max_rank})",
            bad.len(),
        ),
        serde_json::json!({
            "temperature": temperature,
            "rank_limit": limit,
            "count": bad.len(),
            "positions": &bad[..bad.len().min(MAX_LISTED)],
        }),
    )
}

fn unlikely(scores: &TokenScores, temperature: f64, rules: &LlmRules) -> Outcome {
    let n = judged(scores).count();
    let bad = positions(scores, |t| t.logprob < rules.unlikely_logprob);
    let max_fraction = rules
        .unlikely_bands
        .iter()
        .find(|b| temperature <= b.max_temperature)
        .map_or(1.0, |b| b.max_fraction);
    let fraction = if n == 0 {
        0.0
    } else {
        bad.len() as f64 / n as f64
    };
    let details = serde_json::json!({
        "tokens": n,
        "unlikely": bad.len(),
        "fraction": fraction,
        "max_fraction": max_fraction,
        "unlikely_logprob": rules.unlikely_logprob,
        "positions": &bad[..bad.len().min(MAX_LISTED)],
    });
    if bad.len() >= rules.unlikely_min_count as usize && fraction > max_fraction {
        Outcome::fail(
            format!(
                "{} of {n} tokens ({:.1}%) have logprob below {} under the reference model; at most {:.1}% are plausible at temperature {temperature}",
                bad.len(),
                fraction * 100.0,
                rules.unlikely_logprob,
                max_fraction * 100.0
            ),
            details,
        )
    } else {
        Outcome::pass(details)
    }
}

/// Where EOS held at least `eos_min_prob` (so it was the argmax) and the miner went on,
/// an honest sampler at temperature ≤ 1 continues with probability at most `1 - p_eos`:
/// sharpening never lowers the share of a token holding half the mass or more.
fn eos_skipped(scores: &TokenScores, temperature: f64, rules: &LlmRules) -> Outcome {
    if temperature > 1.0 {
        return Outcome::inconclusive("the EOS-skip bound holds only at temperature <= 1");
    }
    let floor = rules.eos_min_prob.ln();
    let skipped: Vec<(usize, f64)> = scores
        .tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| t.eos_logprob >= floor)
        .map(|(i, t)| (i, t.eos_logprob.exp()))
        .collect();
    let log_p: f64 = skipped
        .iter()
        .map(|(_, p)| (1.0 - p).max(1e-300).ln())
        .sum();
    let details = serde_json::json!({
        "skipped_positions": skipped.iter().take(MAX_LISTED)
            .map(|(i, p)| serde_json::json!({"index": i, "eos_prob": p})).collect::<Vec<_>>(),
        "skipped_count": skipped.len(),
        "honest_probability_bound": log_p.exp(),
        "max_probability": rules.eos_skip_max_probability,
    });
    if log_p < rules.eos_skip_max_probability.ln() {
        Outcome::fail(
            format!(
                "the text runs on past {} positions where the reference model would have ended; an honest sampler does that with probability at most {:.2e}",
                skipped.len(),
                log_p.exp()
            ),
            details,
        )
    } else {
        Outcome::pass(details)
    }
}

/// Re-tokenizing a text can merge tokens its sampler drew apart: a text cut at
/// `max_tokens` comes back at least this many tokens short of it (besides the rules'
/// share), and is still a length end.
const MIN_RETOKENIZE_SLACK: usize = 2;

/// When the text ended before `max_tokens`, ending must have been plausible there:
/// EOS, or a stop word the server cuts off. The miner reports neither its token count
/// nor its finish reason, so "before `max_tokens`" allows for re-tokenization, and an
/// end where a stop word may have begun inside a token is not judged.
fn early_end(scores: &TokenScores, input: &LlmInput, rules: &LlmRules) -> Outcome {
    let n = scores.tokens.len();
    let max = input.max_tokens as usize;
    let slack =
        ((max as f64 * rules.early_end_length_slack).ceil() as usize).max(MIN_RETOKENIZE_SLACK);
    if n + slack >= max {
        return Outcome::pass(serde_json::json!({
            "finish": "length",
            "tokens": n,
            "max_tokens": max,
            "retokenize_slack": slack,
        }));
    }
    let stop = input.stop.as_deref().unwrap_or_default();
    let p_stop = match (stop.is_empty(), scores.end_stop_logprob) {
        (true, _) => 0.0,
        (false, Some(lp)) => lp.exp(),
        (false, None) => {
            return Outcome::inconclusive(
                "the job has stop words and the reference gives no probability of one at the text's end",
            );
        }
    };
    // " [End]" is cut to " ": the reference's last row follows a token the model never
    // chose, and says nothing about how likely the cut was.
    if !stop.is_empty()
        && scores
            .tokens
            .last()
            .is_some_and(|t| t.text.ends_with(char::is_whitespace))
    {
        return Outcome::inconclusive(
            "the text ends in whitespace, where a stop word may have begun inside a token",
        );
    }
    let t = input.temperature;
    let p_eos = scores.end_eos_logprob.exp();
    // An upper bound on the probability of sampling EOS there at temperature t, with or
    // without the server's truncation (the likeliest token is always kept, so EOS's
    // share is at most (p_eos / p_top)^(1/t), and at most p_eos / p_top for t <= 1);
    // the stop-word probability is already at the job's temperature.
    let eos_bound = ((scores.end_eos_logprob - scores.end_top_logprob) / t.max(1.0))
        .exp()
        .min(1.0);
    let bound = (eos_bound + p_stop).min(1.0);
    let details = serde_json::json!({
        "finish": "stop",
        "tokens": n,
        "max_tokens": input.max_tokens,
        "eos_prob": p_eos,
        "stop_word_prob": p_stop,
        "end_prob_bound_at_temperature": bound,
        "max_probability": rules.early_end_max_probability,
    });
    if bound < rules.early_end_max_probability {
        Outcome::fail(
            format!(
                "the text stops after {n} of {} tokens where the reference model gives ending at most {bound:.2e}",
                input.max_tokens
            ),
            details,
        )
    } else {
        Outcome::pass(details)
    }
}

/// At temperature > 0, how often the miner picked the reference's argmax. The chance of an
/// argmax pick at each position is bounded above by its share among the top-k only (the
/// rest of the vocabulary would only lower it), so the expected count is an overestimate
/// and the tail probability errs towards the miner. Where the server kept fewer tokens
/// than the top-k ([`Tempered::kept`]), the share is among those it kept.
fn greedy_share(scores: &TokenScores, temperature: f64, rules: &LlmRules) -> Outcome {
    let n = scores.tokens.len();
    if temperature < rules.greedy_min_temperature {
        return Outcome::inconclusive(format!(
            "argmax share is only judged at temperature >= {}",
            rules.greedy_min_temperature
        ));
    }
    if n < rules.greedy_min_tokens as usize {
        return Outcome::inconclusive(format!(
            "argmax share needs at least {} tokens, got {n}",
            rules.greedy_min_tokens
        ));
    }
    let q: Vec<f64> = scores
        .tokens
        .iter()
        .map(|tok| {
            let best = tok.top[0].logprob / temperature;
            let kept = tok
                .tempered
                .and_then(|q| q.kept)
                .map_or(usize::MAX, |k| k as usize);
            let z: f64 = tok
                .top
                .iter()
                .take(kept.max(1))
                .map(|a| (a.logprob / temperature - best).exp())
                .sum();
            1.0 / z
        })
        .collect();
    let observed = scores.tokens.iter().filter(|t| t.rank == 1).count();
    let expected: f64 = q.iter().sum();
    let p_value = crate::stats::poisson_binomial_tail(&q, observed);
    let details = serde_json::json!({
        "tokens": n,
        "argmax_picks": observed,
        "expected_at_most": expected,
        "p_value": p_value,
        "max_p_value": rules.greedy_max_p_value,
        "temperature": temperature,
    });
    if p_value < rules.greedy_max_p_value {
        Outcome::fail(
            format!(
                "{observed} of {n} tokens are the reference's argmax; sampling at temperature {temperature} gives at most {expected:.1} on average (p = {p_value:.2e})"
            ),
            details,
        )
    } else {
        Outcome::pass(details)
    }
}

/// The likelihood z-score of a text under the job's sampling distribution, over its
/// first `max_tokens` tokens: `Σ (logprob - mean) / sqrt(Σ variance)` over the tokens
/// with [`Tempered`] scores, and how many those were. Tokens without (bytes the miner's
/// server could not decode) are left out. `None` when no token has them or they have
/// no spread.
pub fn likelihood_z(scores: &TokenScores, max_tokens: usize) -> Option<(f64, usize)> {
    let tempered: Vec<Tempered> = scores
        .tokens
        .iter()
        .take(max_tokens)
        .filter(|t| !undecodable(t))
        .filter_map(|t| t.tempered)
        .collect();
    let excess: f64 = tempered.iter().map(|q| q.logprob - q.mean).sum();
    let variance: f64 = tempered.iter().map(|q| q.variance).sum();
    (variance > 1e-12).then(|| (excess / variance.sqrt(), tempered.len()))
}

/// The likelihood z-score and the tokens it covers, where the rules judge it: a
/// temperature of at least `likelihood_min_temperature` and `likelihood_min_tokens`
/// scored tokens. Otherwise why not.
pub fn judged_likelihood_z(
    scores: &TokenScores,
    temperature: f64,
    rules: &LlmRules,
) -> Result<(f64, usize), String> {
    if temperature < rules.likelihood_min_temperature {
        return Err(format!(
            "the likelihood score is only judged at temperature >= {}",
            rules.likelihood_min_temperature
        ));
    }
    let Some((z, used)) = likelihood_z(scores, usize::MAX) else {
        return Err(
            "the reference scores carry no sampling-distribution moments: a plain vLLM host cannot give them (proctor serve-reference and the in-process scorer do)".into(),
        );
    };
    if used < rules.likelihood_min_tokens as usize {
        return Err(format!(
            "the likelihood score needs at least {} scored tokens, got {used}",
            rules.likelihood_min_tokens
        ));
    }
    Ok((z, used))
}

/// Sampled text must be as likely under the job's sampling distribution as samples of
/// it are. Each token's logprob is compared with its expectation at that position, so
/// a prompt with a flat or a peaked continuation needs no threshold of its own; text
/// from another model, a quantized one, a hotter sampler or a canned answer scores
/// lower than the reference's own samples on average, and the sum over many tokens
/// separates the two. Calibrated by `proctor calibrate` (docs/DETECTION.md).
fn likelihood(scores: &TokenScores, temperature: f64, rules: &LlmRules) -> Outcome {
    let (z, used) = match judged_likelihood_z(scores, temperature, rules) {
        Ok(judged) => judged,
        Err(reason) => return Outcome::inconclusive(reason),
    };
    let details = serde_json::json!({
        "tokens": used,
        "tokens_left_out": scores.tokens.len() - used,
        "z": z,
        "z_min": rules.likelihood_z_min,
        "temperature": temperature,
    });
    if z < rules.likelihood_z_min {
        Outcome::fail(
            format!(
                "the text is less likely under the reference model at temperature {temperature} than its own samples are: z = {z:.2} over {used} tokens (limit {})",
                rules.likelihood_z_min
            ),
            details,
        )
    } else {
        Outcome::pass(details)
    }
}

/// One suspect's evidence in a job: its ratio, the honest-drift allowance taken off it,
/// and what is left (`evidence`, a log e-value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuspectEvidence {
    pub name: String,
    pub llr: f64,
    pub allowance: f64,
    pub evidence: f64,
}

/// The panel's statistic for one job, where the rules judge it: each listed suspect's
/// ratio less its drift allowance, and `ln mean_s exp(evidence_s)`, the log of the
/// panel's e-value (mean at most 1 for an honest miner). Otherwise why not.
pub fn panel_evidence(
    scores: &TokenScores,
    temperature: f64,
    rules: &LlmRules,
) -> Result<(f64, Vec<SuspectEvidence>, u32), String> {
    if temperature < rules.likelihood_min_temperature {
        return Err(format!(
            "the suspect panel only judges sampled jobs (temperature >= {})",
            rules.likelihood_min_temperature
        ));
    }
    let listed: Vec<SuspectEvidence> = scores
        .panel
        .iter()
        .filter_map(|s| {
            let rule = rules.panel.suspects.iter().find(|r| r.name == s.name)?;
            let allowance = rule.drift_nats_per_token.unwrap_or(0.0) * f64::from(s.tokens);
            Some(SuspectEvidence {
                name: s.name.clone(),
                llr: s.llr,
                allowance,
                evidence: s.llr - allowance,
            })
        })
        .collect();
    let tokens = scores.panel.iter().map(|s| s.tokens).max().unwrap_or(0);
    if listed.is_empty() || tokens == 0 {
        return Err(
            "no suspect of the rules' panel scored this job (the panel runs where the reference scores in process, on models their servers sample at plain temperature)".into(),
        );
    }
    Ok((
        log_mean_exp(listed.iter().map(|s| s.evidence)),
        listed,
        tokens,
    ))
}

/// `ln (1/n) Σ exp(x)`, stable.
pub fn log_mean_exp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let n = xs.clone().count();
    let max = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if n == 0 || !max.is_finite() {
        return max;
    }
    max + (xs.map(|x| (x - max).exp()).sum::<f64>() / n as f64).ln()
}

/// The text fits a suspect model (or sampler) of the panel better than the reference,
/// by more than an honest text does at the calibrated rate.
fn suspect(scores: &TokenScores, temperature: f64, rules: &LlmRules) -> Outcome {
    let (statistic, suspects, tokens) = match panel_evidence(scores, temperature, rules) {
        Ok(e) => e,
        Err(reason) => return Outcome::inconclusive(reason),
    };
    let best = suspects
        .iter()
        .max_by(|a, b| a.evidence.total_cmp(&b.evidence))
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let details = serde_json::json!({
        "statistic": statistic,
        "llr_max": rules.panel.llr_max,
        "tokens": tokens,
        "temperature": temperature,
        "best": best,
        "suspects": suspects,
    });
    if statistic > rules.panel.llr_max {
        Outcome::fail(
            format!(
                "the text fits a suspect better than the reference model: panel log-likelihood ratio {statistic:.2} over {tokens} tokens (limit {}), best fit {best}",
                rules.panel.llr_max
            ),
            details,
        )
    } else {
        Outcome::pass(details)
    }
}

fn logprob_delta(scores: &TokenScores, miner: &[f64], rules: &LlmRules) -> Outcome {
    if miner.len() != scores.tokens.len() {
        return Outcome::inconclusive(format!(
            "miner sent {} logprobs for {} reference tokens",
            miner.len(),
            scores.tokens.len()
        ));
    }
    if miner.is_empty() {
        return Outcome::inconclusive("no tokens to compare");
    }
    let mean = scores
        .tokens
        .iter()
        .zip(miner)
        .map(|(t, m)| (m.exp() - t.logprob.exp()).abs())
        .sum::<f64>()
        / miner.len() as f64;
    let details = serde_json::json!({"mean_abs_delta_p": mean, "max": rules.max_mean_abs_delta_p});
    if mean > rules.max_mean_abs_delta_p {
        Outcome::fail(
            format!(
                "the miner's reported token probabilities differ from the reference's by {mean:.3} on average (limit {})",
                rules.max_mean_abs_delta_p
            ),
            details,
        )
    } else {
        Outcome::pass(details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Rules;

    fn rules() -> LlmRules {
        Rules::embedded().unwrap().checks.llm
    }

    fn input(temperature: f64, max_tokens: u32) -> LlmInput {
        LlmInput {
            messages: None,
            prompt: Some("p".into()),
            temperature,
            max_tokens,
            seed: None,
            ..Default::default()
        }
    }

    /// Scores where every token has the given (rank, logprob, eos_logprob) and the top-k
    /// puts `top1` first.
    fn scores(tokens: &[(u32, f64, f64)], top1: f64) -> TokenScores {
        TokenScores {
            model_id: "m".into(),
            eos_token_id: 2,
            prompt_tokens: 5,
            output_text_blake3: blake3::hash(b"text").to_hex().to_string(),
            tokens: tokens
                .iter()
                .enumerate()
                .map(|(i, &(rank, logprob, eos))| TokenScore {
                    id: i as u32,
                    text: format!("t{i}"),
                    logprob,
                    rank,
                    top: vec![
                        Alternative {
                            id: 1,
                            logprob: top1,
                        },
                        Alternative {
                            id: 3,
                            logprob: (1.0 - top1.exp()).max(1e-9).ln(),
                        },
                    ],
                    eos_logprob: eos,
                    tempered: None,
                })
                .collect(),
            end_eos_logprob: -0.1,
            end_top_logprob: -0.1,
            end_stop_logprob: None,
            panel: Vec::new(),
        }
    }

    fn status(out: &[(CheckId, Outcome)], id: CheckId) -> crate::outcome::Status {
        out.iter().find(|(c, _)| *c == id).unwrap().1.status()
    }

    use crate::outcome::Status;

    #[test]
    fn an_honest_greedy_answer_passes_everything() {
        let s = scores(&[(1, -0.05, -12.0); 40], -0.05);
        assert_eq!(s.problem("text"), None);
        let out = check(&s, &input(0.0, 100), None, &rules());
        for (id, o) in &out {
            assert!(!o.is_fail(), "{id} failed: {o:?}");
        }
    }

    #[test]
    fn a_high_rank_token_fails_a_greedy_job_but_not_a_hot_one() {
        let mut toks = vec![(1, -0.1, -12.0); 30];
        toks[7] = (50, -6.0, -12.0);
        let s = scores(&toks, -0.1);
        assert_eq!(
            status(
                &check(&s, &input(0.0, 100), None, &rules()),
                CheckId::LlmRank
            ),
            Status::Fail
        );
        // A sampled job is the likelihood check's: the rank check stands down.
        assert_eq!(
            status(
                &check(&s, &input(1.0, 100), None, &rules()),
                CheckId::LlmRank
            ),
            Status::Inconclusive
        );
        // Near-greedy, the band's limit (40 at temperature 0.5 or below) allows rank 30.
        toks[7] = (30, -6.0, -12.0);
        assert_eq!(
            status(
                &check(&scores(&toks, -0.1), &input(0.2, 100), None, &rules()),
                CheckId::LlmRank
            ),
            Status::Pass
        );
    }

    #[test]
    fn tokens_the_miner_s_server_could_not_decode_are_judged_by_no_check() {
        // The honest miner slashed at stop 11 failed llm_rank on U+FFFD tokens only.
        let mut toks = vec![(1, -0.1, -12.0); 30];
        toks[7] = (450, -11.0, -12.0);
        let mut s = scores(&toks, -0.1);
        s.tokens[7].text = "\u{FFFD}".into();
        let out = check(&s, &input(0.0, 100), None, &rules());
        assert_eq!(status(&out, CheckId::LlmRank), Status::Pass);
        s.tokens[7].text = "x".into();
        let out = check(&s, &input(0.0, 100), None, &rules());
        assert_eq!(status(&out, CheckId::LlmRank), Status::Fail);
    }

    #[test]
    fn many_unlikely_tokens_fail_a_near_greedy_job() {
        let mut toks = vec![(1, -0.5, -12.0); 50];
        for t in toks.iter_mut().step_by(5) {
            *t = (90, -11.0, -12.0);
        }
        let s = scores(&toks, -0.5);
        let out = check(&s, &input(0.2, 100), None, &rules());
        assert_eq!(status(&out, CheckId::LlmUnlikelyTokens), Status::Fail);
        let out = check(&s, &input(0.7, 100), None, &rules());
        assert_eq!(
            status(&out, CheckId::LlmUnlikelyTokens),
            Status::Inconclusive
        );
    }

    #[test]
    fn skipping_a_near_certain_eos_fails() {
        let mut toks = vec![(1, -0.1, -12.0); 30];
        toks[20].2 = (0.99999f64).ln();
        let s = scores(&toks, -0.1);
        let out = check(&s, &input(0.7, 100), None, &rules());
        assert_eq!(status(&out, CheckId::LlmEosSkipped), Status::Fail);
        // A coin-flip EOS skipped once is ordinary.
        toks[20].2 = (0.6f64).ln();
        let out = check(&scores(&toks, -0.1), &input(0.7, 100), None, &rules());
        assert_eq!(status(&out, CheckId::LlmEosSkipped), Status::Pass);
    }

    #[test]
    fn stopping_where_eos_was_implausible_fails_but_hitting_max_tokens_does_not() {
        let mut s = scores(&[(1, -0.1, -12.0); 30], -0.1);
        s.end_eos_logprob = -15.0;
        s.end_top_logprob = -0.05;
        let out = check(&s, &input(0.7, 100), None, &rules());
        assert_eq!(status(&out, CheckId::LlmEarlyEnd), Status::Fail);
        let out = check(&s, &input(0.7, 30), None, &rules());
        assert_eq!(status(&out, CheckId::LlmEarlyEnd), Status::Pass);
    }

    #[test]
    fn a_text_a_few_tokens_short_of_max_tokens_may_have_been_cut_there() {
        // Re-tokenized, a text cut at max_tokens can come back a token or two shorter:
        // the miner reports no token count, so that is a length end, not an early one.
        let mut s = scores(&[(1, -0.1, -12.0); 98], -0.1);
        s.end_eos_logprob = -15.0;
        for (max_tokens, want) in [
            (100, Status::Pass),
            (104, Status::Pass),
            (105, Status::Fail),
        ] {
            let out = check(&s, &input(0.7, max_tokens), None, &rules());
            assert_eq!(status(&out, CheckId::LlmEarlyEnd), want, "{max_tokens}");
        }
        // At least 2 tokens, however small max_tokens is.
        let mut short = scores(&[(1, -0.1, -12.0); 8], -0.1);
        short.end_eos_logprob = -15.0;
        assert_eq!(
            status(
                &check(&short, &input(0.7, 10), None, &rules()),
                CheckId::LlmEarlyEnd
            ),
            Status::Pass
        );
        assert_eq!(
            status(
                &check(&short, &input(0.7, 11), None, &rules()),
                CheckId::LlmEarlyEnd
            ),
            Status::Fail
        );
    }

    fn with_stop(mut input: LlmInput) -> LlmInput {
        input.stop = Some(vec!["[End]".into(), "<|im_end|>".into()]);
        input
    }

    #[test]
    fn a_text_cut_at_a_stop_word_is_an_honest_end() {
        let mut s = scores(&[(1, -0.1, -12.0); 30], -0.1);
        s.end_eos_logprob = -15.0;
        s.end_top_logprob = -0.05;
        // Where the next token was likely to begin a stop word, the server cut there.
        s.end_stop_logprob = Some((0.3f64).ln());
        let out = check(&s, &with_stop(input(0.7, 100)), None, &rules());
        assert_eq!(status(&out, CheckId::LlmEarlyEnd), Status::Pass);
        // Where it was not, the text still stops where ending was implausible.
        s.end_stop_logprob = Some(-20.0);
        let out = check(&s, &with_stop(input(0.7, 100)), None, &rules());
        assert_eq!(status(&out, CheckId::LlmEarlyEnd), Status::Fail);
        // A job with stop words and no stop-word probability (vLLM's top-k answer) is
        // not judged: the stop words could have ended it.
        s.end_stop_logprob = None;
        let out = check(&s, &with_stop(input(0.7, 100)), None, &rules());
        assert_eq!(status(&out, CheckId::LlmEarlyEnd), Status::Inconclusive);
    }

    #[test]
    fn a_text_ending_in_whitespace_may_have_been_cut_inside_a_token() {
        // " [End]" is cut to " ": the last row follows a token the model never chose.
        let mut s = scores(&[(1, -0.1, -12.0); 30], -0.1);
        s.end_eos_logprob = -15.0;
        s.end_stop_logprob = Some(-20.0);
        s.tokens.last_mut().unwrap().text = " ".into();
        let out = check(&s, &with_stop(input(0.7, 100)), None, &rules());
        assert_eq!(status(&out, CheckId::LlmEarlyEnd), Status::Inconclusive);
        // Without stop words there is nothing to cut at, and it is judged.
        let out = check(&s, &input(0.7, 100), None, &rules());
        assert_eq!(status(&out, CheckId::LlmEarlyEnd), Status::Fail);
    }

    #[test]
    fn a_malformed_stop_word_probability_is_a_problem() {
        let mut s = scores(&[(1, -0.1, -12.0); 3], -0.1);
        s.end_stop_logprob = Some(-3.0);
        assert_eq!(s.problem("text"), None);
        for bad in [f64::NAN, 0.5, f64::NEG_INFINITY] {
            s.end_stop_logprob = Some(bad);
            assert!(s.problem("text").is_some(), "{bad}");
        }
    }

    #[test]
    fn all_argmax_picks_at_temperature_one_fail_when_the_model_was_unsure() {
        // The argmax holds only 40% of the mass at each position: 64 argmax picks in a
        // row is (at most) 0.4^64-ish likely for an honest sampler.
        let s = scores(&[(1, (0.4f64).ln(), -12.0); 64], (0.4f64).ln());
        let out = check(&s, &input(1.0, 100), None, &rules());
        assert_eq!(status(&out, CheckId::LlmGreedyShare), Status::Fail);
        // The same text is fine for a greedy job.
        let out = check(&s, &input(0.0, 100), None, &rules());
        assert_eq!(status(&out, CheckId::LlmGreedyShare), Status::Inconclusive);
    }

    #[test]
    fn argmax_picks_are_expected_where_the_server_kept_only_the_argmax() {
        // Every token the argmax with four near-ties: too many picks for plain sampling.
        let mut s = scores(&[(1, -1.5, -12.0); 64], -1.5);
        for t in &mut s.tokens {
            t.top = (0..5)
                .map(|i| Alternative {
                    id: i,
                    logprob: -1.5 - 0.01 * f64::from(i),
                })
                .collect();
        }
        let out = check(&s, &input(1.0, 100), None, &rules());
        assert_eq!(status(&out, CheckId::LlmGreedyShare), Status::Fail);
        // A server whose top-k kept the argmax alone could pick nothing else.
        for t in &mut s.tokens {
            t.tempered = Some(Tempered {
                logprob: 0.0,
                mean: 0.0,
                variance: 0.0,
                kept: Some(1),
            });
        }
        let out = check(&s, &input(1.0, 100), None, &rules());
        assert_eq!(status(&out, CheckId::LlmGreedyShare), Status::Pass);
    }

    #[test]
    fn confident_argmax_picks_are_expected_even_when_sampling() {
        let s = scores(&[(1, -0.001, -12.0); 64], -0.001);
        let out = check(&s, &input(1.0, 100), None, &rules());
        assert_eq!(status(&out, CheckId::LlmGreedyShare), Status::Pass);
    }

    /// Scores whose tokens sit `excess` nats off their expected tempered logprob, at
    /// positions with unit variance.
    fn tempered_scores(n: usize, excess: f64) -> TokenScores {
        let mut s = scores(&vec![(2, -1.5, -12.0); n], -0.9);
        for t in &mut s.tokens {
            t.tempered = Some(Tempered {
                kept: None,
                logprob: -2.0 + excess,
                mean: -2.0,
                variance: 1.0,
            });
        }
        s
    }

    #[test]
    fn text_much_less_likely_than_samples_fails_the_likelihood_check() {
        let r = rules();
        // 64 tokens each 1 nat below expectation: z = -64 / 8 = -8.
        let out = check(&tempered_scores(64, -1.0), &input(0.7, 100), None, &r);
        assert_eq!(status(&out, CheckId::LlmLikelihood), Status::Fail);
        // A quarter nat below is within an honest sample's spread (z = -2).
        let out = check(&tempered_scores(64, -0.25), &input(0.7, 100), None, &r);
        assert_eq!(status(&out, CheckId::LlmLikelihood), Status::Pass);
        // Greedy jobs, short texts and scores without moments are not judged.
        let out = check(&tempered_scores(64, -1.0), &input(0.0, 100), None, &r);
        assert_eq!(status(&out, CheckId::LlmLikelihood), Status::Inconclusive);
        let out = check(&tempered_scores(8, -3.0), &input(0.7, 100), None, &r);
        assert_eq!(status(&out, CheckId::LlmLikelihood), Status::Inconclusive);
        let out = check(
            &scores(&[(2, -9.0, -12.0); 64], -0.1),
            &input(0.7, 100),
            None,
            &r,
        );
        assert_eq!(status(&out, CheckId::LlmLikelihood), Status::Inconclusive);
    }

    #[test]
    fn likelihood_z_counts_only_the_first_tokens_asked_for() {
        let mut s = tempered_scores(100, 0.0);
        for t in &mut s.tokens[50..] {
            t.tempered.as_mut().unwrap().logprob = -10.0;
        }
        assert_eq!(likelihood_z(&s, 50), Some((0.0, 50)));
        assert!(likelihood_z(&s, 100).unwrap().0 < -30.0);
        // Tokens without moments are left out of the sum and the count.
        s.tokens[3].tempered = None;
        assert_eq!(likelihood_z(&s, 50), Some((0.0, 49)));
        for t in &mut s.tokens {
            t.tempered = None;
        }
        assert_eq!(likelihood_z(&s, 100), None);
    }

    #[test]
    fn reported_logprobs_far_from_the_reference_fail() {
        let s = scores(&[(1, -0.1, -12.0); 10], -0.1);
        let near = vec![-0.11; 10];
        let far = vec![-3.0; 10];
        let r = rules();
        assert_eq!(
            status(
                &check(&s, &input(0.0, 100), Some(&near), &r),
                CheckId::LlmLogprobDelta
            ),
            Status::Pass
        );
        assert_eq!(
            status(
                &check(&s, &input(0.0, 100), Some(&far), &r),
                CheckId::LlmLogprobDelta
            ),
            Status::Fail
        );
        assert_eq!(
            status(
                &check(&s, &input(0.0, 100), Some(&far[..3]), &r),
                CheckId::LlmLogprobDelta
            ),
            Status::Inconclusive
        );
    }

    #[test]
    fn scores_for_another_text_are_a_problem() {
        let s = scores(&[(1, -0.1, -12.0); 3], -0.1);
        assert!(s.problem("other").is_some());
    }

    #[test]
    fn the_suspect_check_takes_off_the_drift_allowance_and_fails_above_its_limit() {
        let mut r = rules();
        r.panel.llr_max = 3.0;
        for s in &mut r.panel.suspects {
            s.drift_nats_per_token = Some(0.01);
        }
        let mut s = tempered_scores(64, 0.0);
        let with = |s: &mut TokenScores, alt: f64, q4: f64| {
            s.panel = vec![
                SuspectLlr {
                    name: "tiny-alice-alt".into(),
                    llr: alt,
                    tokens: 64,
                },
                SuspectLlr {
                    name: "tiny-alice-q4".into(),
                    llr: q4,
                    tokens: 64,
                },
                // Not in the rules' panel: ignored.
                SuspectLlr {
                    name: "unlisted".into(),
                    llr: 99.0,
                    tokens: 64,
                },
            ];
        };
        // 10 nats for one suspect, less 0.64 allowance, mean with a suspect far below:
        // ln((e^9.36 + e^-30) / 2) = 8.67 > 3.
        with(&mut s, 10.0, -29.36);
        let (stat, ev, tokens) = panel_evidence(&s, 0.7, &r).unwrap();
        assert_eq!(tokens, 64);
        assert_eq!(ev.len(), 2);
        assert!((ev[0].allowance - 0.64).abs() < 1e-9);
        assert!((stat - (9.36 - 2f64.ln())).abs() < 1e-6, "{stat}");
        let out = check(&s, &input(0.7, 100), None, &r);
        assert_eq!(status(&out, CheckId::LlmSuspect), Status::Fail);
        // Below the limit: a pass that still carries the evidence.
        with(&mut s, 2.0, -5.0);
        let out = check(&s, &input(0.7, 100), None, &r);
        assert_eq!(status(&out, CheckId::LlmSuspect), Status::Pass);
        let Some((_, Outcome::Pass { measured })) =
            out.iter().find(|(c, _)| *c == CheckId::LlmSuspect)
        else {
            panic!()
        };
        assert_eq!(measured["suspects"].as_array().unwrap().len(), 2);
        // Greedy jobs, and scores without the panel, are not judged.
        let out = check(&s, &input(0.0, 100), None, &r);
        assert_eq!(status(&out, CheckId::LlmSuspect), Status::Inconclusive);
        s.panel.clear();
        let out = check(&s, &input(0.7, 100), None, &r);
        assert_eq!(status(&out, CheckId::LlmSuspect), Status::Inconclusive);
        // A malformed suspect makes the scores unusable: a ratio that is not a number,
        // or over more tokens than the text has.
        s.output_text_blake3 = blake3::hash(b"t").to_hex().to_string();
        s.tokens.clear();
        let suspect = |llr: f64, tokens: u32| SuspectLlr {
            name: "tiny-alice-alt".into(),
            llr,
            tokens,
        };
        s.panel = vec![suspect(1.0, 0)];
        assert_eq!(s.problem("t"), None);
        for bad in [suspect(f64::NAN, 0), suspect(1.0, 1)] {
            s.panel = vec![bad];
            let p = s.problem("t");
            assert!(p.as_deref().is_some_and(|p| p.contains("suspect")), "{p:?}");
        }
    }
}

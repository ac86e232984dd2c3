//! The reference LLM: teacher-forced scoring of a miner's text, and generation.
//!
//! Miners return text only. [`Scorer::score`] tokenizes the job's prompt exactly as
//! the miner's vLLM server did ([`template::Prompter`]), appends the tokens of the
//! miner's text, and runs prompt + output through the reference model in one forward
//! pass ([`model::Llama::forward`], logits at every position). The log-softmax at the
//! position before each output token scores that token: its logprob, its rank, the
//! top-k alternatives and the probability of EOS there. That is [`TokenScores`], the
//! input of the LLM checks (`crate::checks::llm`).
//!
//! [`Scorer::generate`] samples as vLLM does (temperature, seed), for `proctor
//! serve-reference` and for simulating miners against the fixture model.

pub mod defaults;
pub mod derive;
pub mod gguf;
pub mod miner;
pub mod model;
pub mod panel;
pub mod serve;
pub mod service;
pub mod template;

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};

use crate::checks::llm::{Alternative, Tempered, TokenScore, TokenScores, log_mean_exp};
use crate::record::LlmInput;
use defaults::ServerDefaults;
use model::{Llama, Numerics};
use template::Prompter;

/// `cpu`, or `cuda:<n>` in a build with the `cuda` feature.
pub fn device(name: &str) -> anyhow::Result<Device> {
    match parse_device(name)? {
        None => Ok(Device::Cpu),
        Some(_) if !cfg!(feature = "cuda") => anyhow::bail!(
            "{name:?}: this build has no CUDA; build with `cargo build --release --features cuda` on a host with the CUDA toolkit"
        ),
        Some(n) => Ok(Device::new_cuda(n)?),
    }
}

/// A device name's meaning, checked without opening the device: `cpu` is `None`,
/// `cuda:<n>` is `Some(n)`.
pub fn parse_device(name: &str) -> anyhow::Result<Option<usize>> {
    match name.split_once(':') {
        None if name == "cpu" => Ok(None),
        Some(("cuda", n)) => n
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{name:?}: expected cuda:<n>, n a GPU's index")),
        _ => anyhow::bail!("{name:?}: expected cpu or cuda:<n>"),
    }
}

/// Why a job has no scores.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    /// The job itself cannot be scored by this model (a prompt + output longer than
    /// its context, a prompt the template rejects). Retrying will not help; the LLM
    /// checks have no reference and say so.
    #[error("unscorable: {0}")]
    Unscorable(String),
    /// The scorer failed (the forward pass, a panic, the thread gone): an
    /// infrastructure failure that delays the verdict.
    #[error("scorer failed: {0}")]
    Failed(String),
}

/// A reference model with its tokenizer.
pub struct Scorer {
    pub model: Llama,
    pub prompter: Prompter,
    /// Named in every [`TokenScores`] this scorer writes.
    pub model_id: String,
    /// Alternatives kept per position.
    pub top_k: usize,
    /// The suspects scored beside the reference on sampled jobs ([`panel`]); empty by
    /// default.
    pub panel: panel::Panel,
    /// What the miner's server applies on its own: the model folder's
    /// `generation_config.json` ([`defaults`]). Scoring and generation both follow it.
    pub served: ServerDefaults,
    /// The ids of the tokens that could begin a stop word, per stop list seen: nearly
    /// every job carries the miner's own four, and finding them reads the vocabulary.
    stop_starters: std::sync::Mutex<Vec<StopStarters>>,
}

/// A stop list and the ids of the tokens that could begin one of its words.
type StopStarters = (Vec<String>, std::sync::Arc<[u32]>);

/// One job to score: its input and the miner's text.
#[derive(Debug, Clone, Copy)]
pub struct ScoreJob<'a> {
    pub input: &'a LlmInput,
    pub text: &'a str,
}

/// What [`Scorer::score_batch_with_rows`] computed for a batch.
pub struct ScoredBatch {
    /// One result per job, in order.
    pub scores: Vec<Result<TokenScores, ScoreError>>,
    /// Per job, its prompt + output ids and prompt length; `None` where it could not
    /// be scored. Empty when a forward pass failed.
    pub seqs: Vec<Option<(Vec<u32>, usize)>>,
    /// The reference's log-probability rows ([`Scorer::log_prob_rows`]), one block per
    /// job with a sequence, in order.
    pub rows: Vec<panel::Rows>,
    /// Each suspect's rows over the same jobs ([`panel::suspect_rows`]); empty where
    /// the panel did not run (no panel, or no sampled job).
    pub suspect_rows: Vec<Option<Vec<panel::Rows>>>,
}

/// What [`Scorer::generate`] produced for one prompt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    pub ids: Vec<u32>,
    pub text: String,
    /// The sampled token's logprob under the (temperature-free) model, and the
    /// `top_logprobs` alternatives, at every generated position.
    pub logprobs: Vec<f64>,
    pub top: Vec<Vec<Alternative>>,
    /// Ended on EOS rather than `max_tokens`.
    pub finished: bool,
}

/// How to sample, as in an OpenAI-compatible request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub max_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    pub seed: u64,
    pub top_logprobs: usize,
}

impl Scorer {
    /// Loads a model folder: `config.json`, `*.safetensors`, `tokenizer.json`,
    /// `tokenizer_config.json`. The model id is the folder's name.
    pub fn load(dir: &Path, numerics: Numerics, device: &Device) -> anyhow::Result<Self> {
        Self::with_model(dir, Llama::load(dir, numerics, device)?)
    }

    /// `model` with the tokenizer files of `dir`, named by the folder.
    fn with_model(dir: &Path, model: Llama) -> anyhow::Result<Self> {
        Ok(Scorer {
            model,
            prompter: Prompter::load(dir)?,
            model_id: dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            top_k: 5,
            panel: panel::Panel::default(),
            served: ServerDefaults::load(dir)?,
            stop_starters: std::sync::Mutex::default(),
        })
    }

    /// A miner that serves the model of `dir` with its weight matrices quantized to
    /// `bits` bits ([`model::quantize_rows`]): the quantized-model cheat, for
    /// simulations and calibration.
    pub fn load_quantized(
        dir: &Path,
        bits: u32,
        numerics: Numerics,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let model = Llama::load_with(dir, numerics, device, |_, t| model::quantize_rows(t, bits))?;
        Self::with_model(dir, model)
    }

    /// Whether the suspect panel scores sampled jobs: it has suspects, and the served
    /// model samples plainly. The panel's drift allowances are measured on pure
    /// temperature sampling; under a server's penalty or truncation they are not, and
    /// an unmeasured allowance must never become evidence.
    pub fn panel_runs(&self) -> bool {
        !self.panel.is_empty() && self.served.is_plain()
    }

    /// Scores one job.
    pub fn score(&self, job: ScoreJob<'_>) -> Result<TokenScores, ScoreError> {
        self.score_batch(&[job]).pop().expect("one result per job")
    }

    /// Scores several jobs in one forward pass (right-padded: attention is causal, so
    /// the padding changes no real position). One result per job, in order; a job the
    /// model cannot hold fails alone.
    pub fn score_batch(&self, jobs: &[ScoreJob<'_>]) -> Vec<Result<TokenScores, ScoreError>> {
        self.score_batch_with_rows(jobs).scores
    }

    /// [`Scorer::score_batch`], with the rows its forward passes computed: for callers
    /// that measure more over the same passes (calibration's drift and replay), where
    /// computing them again would double the work.
    pub fn score_batch_with_rows(&self, jobs: &[ScoreJob<'_>]) -> ScoredBatch {
        let max = self.model.config.max_position_embeddings;
        let unscorable = |e: anyhow::Error| ScoreError::Unscorable(format!("{e:#}"));
        let seqs: Vec<Result<(Vec<u32>, usize), ScoreError>> = jobs
            .iter()
            .map(|j| {
                let prompt = self.prompter.prompt_ids(j.input).map_err(unscorable)?;
                let output = self.prompter.encode(j.text, false).map_err(unscorable)?;
                let p = prompt.len();
                let seq: Vec<u32> = prompt.into_iter().chain(output).collect();
                if p == 0 || seq.len() > max {
                    return Err(ScoreError::Unscorable(format!(
                        "prompt + output are {p} + {} tokens; the model holds 1 to {max}",
                        seq.len() - p
                    )));
                }
                Ok((seq, p))
            })
            .collect();
        let failed = |what: &str, e: candle_core::Error| {
            let msg = e.to_string();
            ScoredBatch {
                scores: jobs
                    .iter()
                    .map(|_| Err(ScoreError::Failed(format!("{what}: {msg}"))))
                    .collect(),
                seqs: Vec::new(),
                rows: Vec::new(),
                suspect_rows: Vec::new(),
            }
        };
        let ok: Vec<(&[u32], usize)> = seqs
            .iter()
            .filter_map(|s| s.as_ref().ok().map(|(seq, p)| (seq.as_slice(), *p)))
            .collect();
        let rows = match self.log_prob_rows(&ok) {
            Ok(rows) => rows,
            Err(e) => return failed("forward pass", e),
        };
        // The panel's models run over the same batch, when any job is sampled.
        let sampled = jobs.iter().any(|j| j.input.temperature > 0.0);
        let suspect_rows = if !self.panel_runs() || !sampled {
            Vec::new()
        } else {
            match panel::suspect_rows(self, &ok) {
                Ok(rows) => rows,
                Err(e) => return failed("suspect forward pass", e),
            }
        };
        let mut scored = 0;
        let scores = seqs
            .iter()
            .zip(jobs)
            .map(|(s, j)| {
                let (seq, p) = s.as_ref().map_err(Clone::clone)?;
                let rows = &rows[scored];
                let mut scores = self.token_scores(seq, *p, rows, j);
                if !suspect_rows.is_empty() && j.input.temperature > 0.0 {
                    let mine: Vec<Option<&[Vec<f32>]>> = suspect_rows
                        .iter()
                        .map(|r| r.as_ref().map(|r| r[scored].as_slice()))
                        .collect();
                    let counted: Vec<bool> =
                        scores.tokens.iter().map(|t| t.tempered.is_some()).collect();
                    scores.panel = self.panel.llrs(
                        rows,
                        &mine,
                        &seq[*p..],
                        &counted,
                        j.input.temperature,
                        self.prompter.eos_id,
                    );
                }
                scored += 1;
                Ok(scores)
            })
            .collect();
        ScoredBatch {
            scores,
            seqs: seqs.into_iter().map(Result::ok).collect(),
            rows,
            suspect_rows,
        }
    }

    /// For each `(tokens, p)`, the log-probability rows (over the vocabulary) from
    /// position `p - 1` to the end, in one padded forward pass: row `i` predicts token
    /// `p + i`, the last row what follows the sequence. `p` is at least 1. Where the
    /// served model has a repetition penalty ([`Scorer::served`]), each row
    /// is the penalized distribution the miner's server sampled from, before
    /// temperature: every token before the predicted one counts as seen.
    pub fn log_prob_rows(
        &self,
        seqs: &[(&[u32], usize)],
    ) -> candle_core::Result<Vec<Vec<Vec<f32>>>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let hidden = self.hidden_padded(seqs.iter().map(|(s, _)| *s))?;
        seqs.iter()
            .enumerate()
            .map(|(b, (s, p))| {
                let h = hidden.get(b)?.narrow(0, p - 1, s.len() - p + 1)?;
                let logits = self.model.logits(&h)?;
                let mut rows = candle_nn::ops::log_softmax(&logits, D::Minus1)?
                    .to_dtype(DType::F32)?
                    .to_vec2::<f32>()?;
                if self.served.penalizes() {
                    let max_logits: Vec<f32> =
                        logits.max(D::Minus1)?.to_dtype(DType::F32)?.to_vec1()?;
                    penalize_rows(&self.served, &mut rows, &max_logits, s, *p);
                }
                Ok(rows)
            })
            .collect()
    }

    /// One forward pass over sequences right-padded (with EOS) to the longest:
    /// the final hidden states, `[sequences, longest, hidden]`.
    fn hidden_padded<'a>(
        &self,
        seqs: impl Iterator<Item = &'a [u32]> + Clone,
    ) -> candle_core::Result<Tensor> {
        let t = seqs.clone().map(<[u32]>::len).max().unwrap_or(0);
        let pad = self.prompter.eos_id;
        let flat: Vec<u32> = seqs
            .clone()
            .flat_map(|s| {
                s.iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, t - s.len()))
            })
            .collect();
        let tokens = Tensor::from_vec(flat, (seqs.count(), t), self.model.device())?;
        self.model.hidden(&tokens)
    }

    fn token_scores(
        &self,
        seq: &[u32],
        p: usize,
        rows: &[Vec<f32>],
        job: &ScoreJob<'_>,
    ) -> TokenScores {
        let eos = self.prompter.eos_id;
        let text = job.text;
        let temperature = job.input.temperature;
        let tokens = seq[p..]
            .iter()
            .zip(rows)
            .map(|(&id, row)| {
                let lp = row[id as usize];
                let token_text = self.prompter.token_text(id);
                // A U+FFFD in the miner's text is a byte sequence its server could not
                // decode: the bytes it sampled are lost, and the reference scores the
                // replacement character's bytes instead. Such tokens carry no evidence
                // about the miner's sampler, so they get no sampling moments.
                let lossy = token_text.contains(char::REPLACEMENT_CHARACTER);
                TokenScore {
                    id,
                    text: token_text,
                    logprob: f64::from(lp),
                    rank: rank(row, lp),
                    top: top_k(row, self.top_k),
                    eos_logprob: f64::from(row[eos as usize]),
                    tempered: if lossy {
                        None
                    } else {
                        tempered(row, temperature, id, eos, &self.served)
                    },
                }
            })
            .collect();
        let end = rows.last().expect("at least the end row");
        let end_stop_logprob = self.end_stop_logprob(end, job.input.stop.as_deref(), temperature);
        TokenScores {
            model_id: self.model_id.clone(),
            eos_token_id: eos,
            prompt_tokens: p as u32,
            output_text_blake3: blake3::hash(text.as_bytes()).to_hex().to_string(),
            tokens,
            end_eos_logprob: f64::from(end[eos as usize]),
            end_top_logprob: f64::from(end.iter().copied().fold(f32::NEG_INFINITY, f32::max)),
            end_stop_logprob,
            panel: Vec::new(),
        }
    }

    /// [`TokenScores::end_stop_logprob`] from the row after the text: `None` without
    /// stop words.
    pub fn end_stop_logprob(
        &self,
        end: &[f32],
        stop: Option<&[String]>,
        temperature: f64,
    ) -> Option<f64> {
        let stop = stop.filter(|s| !s.is_empty())?;
        Some(mass_logprob(
            end,
            &self.stop_starters(stop),
            temperature,
            &self.served,
        ))
    }

    /// The tokens that could begin one of `stop` ([`miner::could_start_stop`]).
    fn stop_starters(&self, stop: &[String]) -> std::sync::Arc<[u32]> {
        // A poisoned lock only means another scoring panicked mid-lookup: the list is
        // still whole, as entries are pushed complete.
        let mut cache = self
            .stop_starters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, ids)) = cache.iter().find(|(s, _)| s.as_slice() == stop) {
            return ids.clone();
        }
        let vocab = self.prompter.tokenizer.get_vocab_size(true) as u32;
        // EOS is counted on its own; where it is a stop word's text (`<|im_end|>`),
        // counting it again would only loosen the bound.
        let eos = self.prompter.eos_id;
        let ids: std::sync::Arc<[u32]> = (0..vocab)
            .filter(|&id| id != eos && miner::could_start_stop(&self.prompter.token_text(id), stop))
            .collect();
        // Jobs name a handful of stop lists; a hostile stream of distinct ones must not
        // grow this without bound.
        if cache.len() >= 16 {
            cache.remove(0);
        }
        cache.push((stop.to_vec(), ids.clone()));
        ids
    }

    /// One sampling step from the logits `row` after `prompt` and `g`'s tokens, as the
    /// served model's server samples ([`Scorer::served`]): EOS finishes `g`; any other
    /// token is appended with its logprob (and alternatives) and returned.
    fn step(&self, row: &[f32], prompt: &[u32], s: &Sampling, g: &mut Generated) -> Option<u32> {
        let mut penalized;
        let row = if self.served.penalizes() {
            let mut seen = vec![false; row.len()];
            mark_seen(&mut seen, prompt);
            mark_seen(&mut seen, &g.ids);
            penalized = row.to_vec();
            self.served.penalize(&mut penalized, &seen);
            &penalized[..]
        } else {
            row
        };
        let next = sample(row, s.temperature, s.seed, g.ids.len(), &self.served);
        if next == self.prompter.eos_id {
            g.finished = true;
            return None;
        }
        let lps = log_softmax(row);
        g.logprobs.push(f64::from(lps[next as usize]));
        if s.top_logprobs > 0 {
            g.top.push(top_k(&lps, s.top_logprobs));
        }
        g.ids.push(next);
        Some(next)
    }

    /// Samples one continuation as a serving engine does: keys and values kept
    /// ([`model::Llama::hidden_cached`]), one new token a step, and the text stopped at
    /// the first of `stop` and cut before it, as vLLM stops and cuts. The same sampler
    /// and seed stream as [`Scorer::generate`], but another order of arithmetic: one
    /// of the honest ways two engines differ. `finished` holds for EOS and for a stop
    /// word.
    pub fn generate_cached(
        &self,
        prompt: &[u32],
        sampling: &Sampling,
        stop: &[String],
    ) -> anyhow::Result<Generated> {
        let max_pos = self.model.config.max_position_embeddings;
        let tokens = |ids: &[u32]| Tensor::new(ids, self.model.device())?.unsqueeze(0);
        let mut cache = model::KvCache::new();
        let mut last = self
            .model
            .hidden_cached(&tokens(prompt)?, &mut cache)?
            .narrow(1, prompt.len() - 1, 1)?;
        let mut g = Generated::default();
        while g.ids.len() < sampling.max_tokens && prompt.len() + g.ids.len() < max_pos {
            let row: Vec<f32> = self.model.logits(&last)?.flatten_all()?.to_vec1()?;
            let Some(next) = self.step(&row, prompt, sampling, &mut g) else {
                break;
            };
            if !stop.is_empty() {
                let text = self.prompter.decode(&g.ids)?;
                if let Some(at) = stop.iter().filter_map(|w| text.find(w.as_str())).min() {
                    g.text = text[..at].to_owned();
                    g.finished = true;
                    return Ok(g);
                }
            }
            last = self.model.hidden_cached(&tokens(&[next])?, &mut cache)?;
        }
        g.text = self.prompter.decode(&g.ids)?;
        Ok(g)
    }

    /// Samples continuations of several prompts as a serving engine batches them: each
    /// prompt prefilled alone into its own cache, then one decoding step for every
    /// unfinished sequence together ([`model::Llama::hidden_step`]). The same sampler
    /// and seed streams as [`Scorer::generate`]; the batch size changes the arithmetic
    /// of every projection, as it does in an engine. No stop words: EOS, `max_tokens`
    /// or the model's length end a sequence.
    pub fn generate_cached_batch(
        &self,
        prompts: &[Vec<u32>],
        sampling: &[Sampling],
    ) -> anyhow::Result<Vec<Generated>> {
        anyhow::ensure!(prompts.len() == sampling.len(), "one sampling per prompt");
        let max_pos = self.model.config.max_position_embeddings;
        let mut caches: Vec<model::KvCache> = Vec::with_capacity(prompts.len());
        let mut out = vec![Generated::default(); prompts.len()];
        // The token each live sequence feeds next.
        let mut next: Vec<Option<u32>> = Vec::with_capacity(prompts.len());
        for (i, prompt) in prompts.iter().enumerate() {
            anyhow::ensure!(!prompt.is_empty(), "an empty prompt");
            let mut cache = model::KvCache::new();
            let tokens = Tensor::new(prompt.as_slice(), self.model.device())?.unsqueeze(0)?;
            let last =
                self.model
                    .hidden_cached(&tokens, &mut cache)?
                    .narrow(1, prompt.len() - 1, 1)?;
            let row: Vec<f32> = self.model.logits(&last)?.flatten_all()?.to_vec1()?;
            let open = sampling[i].max_tokens > 0 && prompt.len() < max_pos;
            next.push(if open {
                self.step(&row, prompt, &sampling[i], &mut out[i])
            } else {
                None
            });
            caches.push(cache);
        }
        let live = |i: usize, next: &[Option<u32>], out: &[Generated]| {
            next[i].is_some()
                && out[i].ids.len() < sampling[i].max_tokens
                && prompts[i].len() + out[i].ids.len() < max_pos
        };
        loop {
            let ids: Vec<usize> = (0..prompts.len())
                .filter(|&i| live(i, &next, &out))
                .collect();
            if ids.is_empty() {
                break;
            }
            let tokens: Vec<u32> = ids.iter().map(|&i| next[i].expect("live")).collect();
            let mut live_caches: Vec<&mut model::KvCache> = caches
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| ids.contains(i))
                .map(|(_, c)| c)
                .collect();
            let hidden = self.model.hidden_step(&tokens, &mut live_caches)?;
            let rows = self.model.logits(&hidden)?.squeeze(1)?;
            for (b, &i) in ids.iter().enumerate() {
                let row: Vec<f32> = rows.get(b)?.to_vec1()?;
                next[i] = self.step(&row, &prompts[i], &sampling[i], &mut out[i]);
            }
        }
        for g in &mut out {
            g.text = self.prompter.decode(&g.ids)?;
        }
        Ok(out)
    }

    /// Samples continuations of several prompts together (batch size is one of the
    /// honest variations between miners). Greedy at temperature 0; otherwise from
    /// `softmax(logits / temperature)` with a per-prompt seeded stream, so a job's
    /// `seed` reproduces its text on the same numerics.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        sampling: &[Sampling],
    ) -> anyhow::Result<Vec<Generated>> {
        anyhow::ensure!(prompts.len() == sampling.len(), "one sampling per prompt");
        let max_pos = self.model.config.max_position_embeddings;
        let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
        let mut out = vec![Generated::default(); prompts.len()];
        let done = |g: &Generated, s: &Sampling, seq: &Vec<u32>| {
            g.finished || g.ids.len() >= s.max_tokens || seq.len() >= max_pos
        };
        loop {
            let live: Vec<usize> = (0..seqs.len())
                .filter(|&i| !done(&out[i], &sampling[i], &seqs[i]))
                .collect();
            if live.is_empty() {
                break;
            }
            let hidden = self.hidden_padded(live.iter().map(|&i| seqs[i].as_slice()))?;
            for (b, &i) in live.iter().enumerate() {
                let last = hidden.get(b)?.narrow(0, seqs[i].len() - 1, 1)?;
                let row: Vec<f32> = self.model.logits(&last)?.squeeze(0)?.to_vec1()?;
                if let Some(next) = self.step(&row, &prompts[i], &sampling[i], &mut out[i]) {
                    seqs[i].push(next);
                }
            }
        }
        for g in &mut out {
            g.text = self.prompter.decode(&g.ids)?;
        }
        Ok(out)
    }
}

/// Token `id`'s log-probability under the distribution an honest sampler at
/// `temperature` draws a non-final token from (`softmax(row / temperature)` with EOS
/// removed: a token that was emitted is, by construction, not EOS), floored at
/// [`FLOOR_SD`] standard deviations below its mean, and the floored value's mean and
/// variance over that distribution. `None` for greedy jobs, a temperature that is not
/// a positive number, or an EOS token in the text.
///
/// Where the server truncates (`served`: top-k, top-p, min-p) the distribution is the
/// truncated one, renormalized; a token outside the reference's kept set (an honest
/// engine's arithmetic can keep a boundary token the reference drops) scores the
/// floor, like any freak token.
pub(crate) fn tempered(
    row: &[f32],
    temperature: f64,
    id: u32,
    eos: u32,
    served: &ServerDefaults,
) -> Option<Tempered> {
    if id == eos {
        return None;
    }
    // EOS at −∞: it counts for neither moment.
    let mut lqs = panel::log_tempered(row, temperature, eos)?;
    let kept = served.kept_floor(row, temperature);
    if let Some(f) = kept {
        let in_kept: Vec<f64> = lqs
            .iter()
            .zip(row)
            .filter(|(_, x)| **x >= f)
            .map(|(lq, _)| *lq)
            .collect();
        let log_kept = log_sum_exp(&in_kept);
        if !log_kept.is_finite() {
            // Only EOS was kept, yet a token followed: nothing to score it against.
            return None;
        }
        for (lq, x) in lqs.iter_mut().zip(row) {
            *lq = if *x >= f {
                *lq - log_kept
            } else {
                f64::NEG_INFINITY
            };
        }
    }
    let (mut mean, mut second) = (0.0, 0.0);
    for &lq in &lqs {
        let q = lq.exp();
        if q > 0.0 {
            mean += q * lq;
            second += q * lq * lq;
        }
    }
    // Floor each log-probability at FLOOR_SD standard deviations below its mean, and
    // take the floored value's exact moments: one freak token then moves a text's
    // z-score by a bounded amount, while the score stays exactly centred for honest
    // samples.
    let floor = mean - FLOOR_SD * (second - mean * mean).max(0.0).sqrt();
    let (mut mean_f, mut second_f) = (0.0, 0.0);
    for &lq in &lqs {
        let q = lq.exp();
        if q > 0.0 {
            let v = lq.max(floor);
            mean_f += q * v;
            second_f += q * v * v;
        }
    }
    let logprob = lqs.get(id as usize)?.max(floor);
    logprob.is_finite().then(|| Tempered {
        logprob,
        mean: mean_f,
        variance: (second_f - mean_f * mean_f).max(0.0),
        kept: kept.map(|f| row.iter().filter(|&&x| x >= f).count() as u32),
    })
}

/// How far below its mean a token's tempered log-probability counts in the likelihood
/// z-score, in standard deviations of that position.
const FLOOR_SD: f64 = 3.0;

/// The log-probability of the tokens `ids` together under `softmax(row / temperature)`
/// (`row` a log-softmax row; temperature 0 reads as 1, the greedy job's plain
/// distribution), floored at -1000 so that an empty set stays a finite number. Where
/// the server truncates, the larger of the truncated and the whole distribution's
/// mass: truncation raises a kept token's share and zeroes a dropped one, and an honest
/// engine may keep what the reference drops, so the larger errs towards the miner.
fn mass_logprob(row: &[f32], ids: &[u32], temperature: f64, served: &ServerDefaults) -> f64 {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let floor = served.kept_floor(row, temperature);
    let scaled = |lp: &f32| f64::from(*lp) / t;
    let mass = |keep: &dyn Fn(f32) -> bool| {
        let some: Vec<f64> = ids
            .iter()
            .filter_map(|&i| row.get(i as usize))
            .filter(|&&x| keep(x))
            .map(scaled)
            .collect();
        let all: Vec<f64> = row.iter().filter(|&&x| keep(x)).map(scaled).collect();
        log_sum_exp(&some) - log_sum_exp(&all)
    };
    let whole = mass(&|_| true);
    let truncated = floor.map_or(f64::NEG_INFINITY, |f| mass(&|x| x >= f));
    let lp = whole.max(truncated);
    if lp.is_nan() {
        return -1000.0;
    }
    lp.clamp(-1000.0, 0.0)
}

/// `ln Σ exp(x)` over `xs`, stable: `−∞` for none.
fn log_sum_exp(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NEG_INFINITY;
    }
    log_mean_exp(xs.iter().copied()) + (xs.len() as f64).ln()
}

/// Marks `ids` in `seen`, the repetition penalty's mask; ids past its end are not
/// tokens of the model and are left out.
fn mark_seen(seen: &mut [bool], ids: &[u32]) {
    for &id in ids {
        if let Some(s) = seen.get_mut(id as usize) {
            *s = true;
        }
    }
}

/// Rows as the miner's server sampled from them: each log-softmax row shifted back to
/// logits (its largest logit is `max_logits[i]`), penalized for every token before the
/// one it predicts (`seq[..p + i]`), and normalized again.
fn penalize_rows(
    served: &ServerDefaults,
    rows: &mut [Vec<f32>],
    max_logits: &[f32],
    seq: &[u32],
    p: usize,
) {
    let Some(width) = rows.first().map(Vec::len) else {
        return;
    };
    let mut seen = vec![false; width];
    mark_seen(&mut seen, &seq[..p.min(seq.len())]);
    for (i, (row, &max_logit)) in rows.iter_mut().zip(max_logits).enumerate() {
        let shift = max_logit - row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for x in row.iter_mut() {
            *x += shift;
        }
        served.penalize(row, &seen);
        *row = log_softmax(row);
        if let Some(&id) = seq.get(p + i) {
            mark_seen(&mut seen, &[id]);
        }
    }
}

/// 1 + how many entries of `row` are above `value`: 1 for the argmax.
pub(crate) fn rank(row: &[f32], value: f32) -> u32 {
    1 + row.iter().filter(|&&x| x > value).count() as u32
}

/// The `k` largest entries of `row`, best first.
fn top_k(row: &[f32], k: usize) -> Vec<Alternative> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    let by_value = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]);
    idx.select_nth_unstable_by(k - 1, by_value);
    idx.truncate(k);
    idx.sort_by(by_value);
    idx.into_iter()
        .map(|id| Alternative {
            id,
            logprob: f64::from(row[id as usize]),
        })
        .collect()
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
    let log_z = max + sum.ln() as f32;
    row.iter().map(|&x| x - log_z).collect()
}

/// One draw from `softmax(row / temperature)` over the tokens `served` keeps
/// ([`ServerDefaults::kept_floor`]), or the argmax at temperature 0. The uniform comes
/// from BLAKE3 keyed by the seed and the position, so every prompt has its own
/// reproducible stream whatever else is in the batch.
pub(crate) fn sample(
    row: &[f32],
    temperature: f64,
    seed: u64,
    position: usize,
    served: &ServerDefaults,
) -> u32 {
    let argmax = || {
        row.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    if temperature <= 0.0 {
        return argmax();
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let floor = served
        .kept_floor(row, temperature)
        .unwrap_or(f32::NEG_INFINITY);
    let weights: Vec<f64> = row
        .iter()
        .map(|&x| {
            if x >= floor {
                (f64::from(x - max) / temperature).exp()
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut h = blake3::Hasher::new_derive_key("proctor llm sampling v1");
    h.update(&seed.to_le_bytes());
    h.update(&(position as u64).to_le_bytes());
    let bytes: [u8; 8] = h.finalize().as_bytes()[..8].try_into().expect("8 bytes");
    let u = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64 * total;
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if u < acc {
            return i as u32;
        }
    }
    argmax()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_sorted_and_picks_the_largest() {
        let row = [0.1, 3.0, -1.0, 2.0, 2.5];
        let top = top_k(&row, 3);
        let ids: Vec<u32> = top.iter().map(|a| a.id).collect();
        assert_eq!(ids, [1, 4, 3]);
        assert!(top_k(&row, 10).len() == 5);
    }

    #[test]
    fn sampling_follows_the_temperature() {
        // Two tokens, logits 0 and ln 3: p = 1/4, 3/4 at T = 1.
        let row = [0.0, 3f32.ln()];
        let n = 4000;
        let ones = (0..n)
            .filter(|&s| sample(&row, 1.0, s, 0, &ServerDefaults::default()) == 1)
            .count();
        let p = ones as f64 / n as f64;
        assert!((p - 0.75).abs() < 0.03, "p(token 1) = {p}");
        // Very hot: close to uniform. Greedy: always the argmax.
        let hot = (0..n)
            .filter(|&s| sample(&row, 100.0, s, 0, &ServerDefaults::default()) == 1)
            .count() as f64
            / n as f64;
        assert!((hot - 0.5).abs() < 0.04, "p at T=100: {hot}");
        assert!((0..50).all(|s| sample(&row, 0.0, s, 0, &ServerDefaults::default()) == 1));
        // Reproducible per (seed, position).
        assert_eq!(
            sample(&row, 1.0, 7, 3, &ServerDefaults::default()),
            sample(&row, 1.0, 7, 3, &ServerDefaults::default())
        );
    }

    #[test]
    fn tempered_moments_are_those_of_the_sharpened_distribution_without_eos() {
        // p = 1/2, 1/4 and EOS 1/4. Without EOS at T = 1: 2/3, 1/3; at T = 1/2 (p²,
        // renormalized): 4/5, 1/5.
        let row = [0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        for (t, q) in [(1.0, [2.0 / 3.0, 1.0 / 3.0]), (0.5, [0.8, 0.2])] {
            let got = tempered(&row, t, 1, 2, &ServerDefaults::default()).unwrap();
            let (l0, l1) = (f64::ln(q[0]), f64::ln(q[1]));
            let mean = q[0] * l0 + q[1] * l1;
            let var = q[0] * l0 * l0 + q[1] * l1 * l1 - mean * mean;
            assert!(close(got.logprob, l1), "{t}: {got:?}");
            assert!(
                close(got.mean, mean) && close(got.variance, var),
                "{t}: {got:?}"
            );
        }
        // A token far in the tail counts only down to 3 standard deviations below the
        // mean, and the moments are those of the floored value.
        let mut row = vec![0.0f32; 11];
        row[10] = -20.0;
        let got = tempered(&row, 1.0, 10, 99, &ServerDefaults::default()).unwrap();
        let q_tail = (-20f64).exp() / (10.0 + (-20f64).exp());
        let (l_top, l_tail) = ((1.0 - q_tail) / 10.0, q_tail);
        let (l_top, l_tail) = (l_top.ln(), l_tail.ln());
        let mean = 10.0 * ((1.0 - q_tail) / 10.0) * l_top + q_tail * l_tail;
        let sd = (10.0 * ((1.0 - q_tail) / 10.0) * l_top * l_top + q_tail * l_tail * l_tail
            - mean * mean)
            .sqrt();
        assert!(close(got.logprob, mean - 3.0 * sd), "{got:?}");
        assert!(got.logprob > l_tail + 10.0);
        let row = [0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
        assert_eq!(tempered(&row, 0.0, 1, 2, &ServerDefaults::default()), None);
        assert_eq!(
            tempered(&row, f64::NAN, 1, 2, &ServerDefaults::default()),
            None
        );
        assert_eq!(tempered(&row, 1.0, 2, 2, &ServerDefaults::default()), None);
    }

    #[test]
    fn truncated_sampling_draws_and_scores_only_what_the_server_keeps() {
        // Probabilities 0.5, 0.3, 0.15, 0.05; EOS is id 3.
        let row: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let served = ServerDefaults {
            top_p: 0.75,
            ..ServerDefaults::default()
        };
        // top_p 0.75 keeps the first two: no draw is ever the third or the fourth.
        assert!((0..2000).all(|s| sample(&row, 1.0, s, 0, &served) < 2));
        let got = tempered(&row, 1.0, 1, 3, &served).unwrap();
        let (q0, q1) = (0.5f64 / 0.8, 0.3f64 / 0.8);
        let mean = q0 * q0.ln() + q1 * q1.ln();
        assert!((got.logprob - q1.ln()).abs() < 1e-6, "{got:?}");
        assert!((got.mean - mean).abs() < 1e-6, "{got:?}");
        assert_eq!(got.kept, Some(2));
        // A token the reference drops scores the floor, a finite number below the mean.
        let dropped = tempered(&row, 1.0, 2, 3, &served).unwrap();
        assert!(dropped.logprob.is_finite() && dropped.logprob < got.mean);
        // The stop mass takes the larger of the truncated and the whole distribution.
        let whole = mass_logprob(&row, &[1], 1.0, &ServerDefaults::default());
        let truncated = mass_logprob(&row, &[1], 1.0, &served);
        assert!((whole - 0.3f64.ln()).abs() < 1e-6);
        assert!((truncated - q1.ln()).abs() < 1e-6);
        assert!((mass_logprob(&row, &[2], 1.0, &served) - 0.15f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn penalized_rows_are_the_penalized_logits_normalized() {
        let served = ServerDefaults {
            repetition_penalty: 1.5,
            ..ServerDefaults::default()
        };
        let logits = [[2.0f32, -1.0, 0.5, 1.0], [1.0, 3.0, -2.0, 0.0]];
        let mut rows: Vec<Vec<f32>> = logits.iter().map(|l| log_softmax(l)).collect();
        // Prompt [0], then the text [1, 2]: row 0 predicts token 1 having seen 0; row 1
        // predicts token 2 having seen 0 and 1.
        penalize_rows(&served, &mut rows, &[2.0, 3.0], &[0, 1, 2], 1);
        let want = [
            log_softmax(&[2.0 / 1.5, -1.0, 0.5, 1.0]),
            log_softmax(&[1.0 / 1.5, 3.0 / 1.5, -2.0, 0.0]),
        ];
        for (got, want) in rows.iter().zip(&want) {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-5, "{got:?} against {want:?}");
            }
        }
    }

    #[test]
    fn log_softmax_normalizes() {
        let lps = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f32 = lps.iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert!(lps[2] > lps[1] && lps[1] > lps[0]);
    }
}

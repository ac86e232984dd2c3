//! LLM pairs for calibrating `llm_likelihood` and every other LLM check, simulated with
//! a reference model (the real one, SmolLM2-135M-Instruct, for the shipped rates; the
//! fixture for fast tests) and the real generation code.
//!
//! Jobs are chat prompts "Continue: \<the first eight words of a paragraph\>" over a
//! public-domain book, each with a temperature of 0.5, 0.7 or 1.0, a seed, and
//! `max_tokens` (64: the detection window). The reference scores every text
//! with the reference model in f32.
//!
//! - **honest**: the reference model's weights generating in f32, bf16 or f16, in
//!   batches of 1 to 16, KV-cached as serving engines generate and with full passes
//!   (the scorer's own arithmetic), at the job's temperature and seed; and the same
//!   miners on greedy and near-greedy jobs (temperature 0 and 0.2), which
//!   `llm_likelihood` does not judge and the rank and unlikely-token checks do.
//! - **cheats**: a substituted model (another finetune: the fixture's other training
//!   seed, or a perturbation of the real model), a prefill spoof (the substitute's
//!   tokens, with the reference's own logprobs of them reported as the miner's), the
//!   reference's weights quantized to 4 and to 3 bits per weight (per-row absmax), a
//!   sampler 1.5× hotter than the job asked, and canned text (a passage of the book,
//!   whatever the prompt); then the 8-bit quantization, a reused answer (the
//!   reference's own text for another job) and, where one is given, a smaller model of
//!   the family (layers removed), after every pair before them.
//!
//! The reference scores every text with the rules' suspect panel as well
//! ([`crate::llm::panel`]), whose folders sit beside the reference's; for the honest
//! texts it also measures each suspect's drift under the honest miner's own numerics,
//! and replays the miner's sampler from the job's seed ([`super::panel`]).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{CheckReport, Label, Pair, SubcheckRates};
use crate::checks::llm::{self, TokenScores};
use crate::llm::model::{AttentionPrecision, Numerics};
use crate::llm::{Sampling, ScoreJob, Scorer, panel};
use crate::outcome::{CheckId, Status};
use crate::record::{LlmInput, Message, Role};
use crate::rules::LlmRules;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct LlmOptions {
    /// The reference model's folder.
    pub reference: PathBuf,
    /// The network's models (ids or categories) the reference is: the measured rates'
    /// scope ([`crate::rules::Measurement::models`]); [`models_of`] by default.
    pub models: Vec<String>,
    /// Another model of the same architecture: the substitution cheat.
    pub substitute: PathBuf,
    /// A smaller model of the same family (layers removed), if there is one: a cheat.
    pub smaller: Option<PathBuf>,
    /// A plain-text book: prompts and canned answers.
    pub corpus: PathBuf,
    pub honest: usize,
    /// Honest greedy and near-greedy texts, on top of `honest`.
    pub honest_greedy: usize,
    pub per_cheat: usize,
    pub max_tokens: u32,
    pub seed: u64,
    /// The suspect panel to score beside the reference (the rules'), its model
    /// suspects read from the folder the reference's sits in.
    pub panel: crate::rules::PanelRules,
    /// Where the pairs are kept as they are scored ([`Records`]): a run over the same
    /// file resumes where the last one stopped.
    pub records: Option<PathBuf>,
}

/// The models a reference folder's measurement covers by default: its own name, the
/// network model id it would be were the folder named after one.
pub fn models_of(reference: &Path) -> Vec<String> {
    reference
        .file_name()
        .map(|n| vec![n.to_string_lossy().into_owned()])
        .unwrap_or_default()
}

/// One simulated job and the reference's scores of the miner's text.
#[derive(Debug, Clone)]
pub struct LlmPair {
    pub label: Label,
    pub variant: &'static str,
    pub input: LlmInput,
    pub text: String,
    /// `None` when the reference could not score the text (counted as not flagged).
    pub scores: Option<TokenScores>,
    /// The logprobs the miner reported (only the prefill spoof reports any).
    pub reported: Option<Vec<f64>>,
    /// The likelihood ratio of the text, substitute over reference, summed over its
    /// tokens at the job's temperature: the statistic of a test that knows the
    /// substitute (Neyman-Pearson's optimal one against it). Measured for the honest
    /// and the substitute's texts only, as a bound on what any check could catch.
    pub oracle_llr: Option<f64>,
    /// For an honest sampled text: each suspect's drift (`ln E_{p'}[q/p]` per token,
    /// [`crate::llm::panel::text_drift`]) under the numerics of the miner that wrote
    /// it, as the mean over the text's tokens and the largest single token's.
    pub drift: Option<Vec<(f64, f64)>>,
    /// The reference's replay of the miner's sampler from the job's seed.
    pub replay: Option<Replay>,
}

/// The target for a substituted model.
pub const DETECTION_TARGET: f64 = 0.99;

/// How a miner's generation loop runs.
#[derive(Clone, Copy)]
enum Generator {
    /// Every step a full forward pass over prompt and text, this many prompts
    /// together: the scorer's own arithmetic (and about 40 times the work of a cached
    /// step at 64 tokens).
    FullPass(usize),
    /// Keys and values cached, this many sequences decoded together
    /// ([`Scorer::generate_cached_batch`]): how serving engines generate.
    Cached(usize),
}

/// One honest miner's configuration.
struct HonestMiner {
    /// Its name in the tables, on sampled jobs and on greedy ones.
    name: &'static str,
    greedy: &'static str,
    dtype: DType,
    attention: AttentionPrecision,
    generator: Generator,
    /// Its share of the honest texts, relative to the others' 4: the full-pass miner
    /// writes a quarter as many, for its cost.
    share: usize,
}

/// Honest miners: the reference's weights at the numerics, batch sizes (1, 4, 8 and
/// 16) and generation loops real miners differ by. The KV-cached ones reach each
/// logit by another order of arithmetic than the scorer's full pass, and their batch
/// size changes the shape of every projection.
const HONEST: [HonestMiner; 6] = [
    HonestMiner {
        name: "f32, full passes, batch 16",
        greedy: "greedy, f32 full passes batch 16",
        dtype: DType::F32,
        attention: AttentionPrecision::F32,
        generator: Generator::FullPass(16),
        share: 1,
    },
    HonestMiner {
        name: "f32, KV-cached, batch 1",
        greedy: "greedy, f32 KV-cached batch 1",
        dtype: DType::F32,
        attention: AttentionPrecision::F32,
        generator: Generator::Cached(1),
        share: 4,
    },
    HonestMiner {
        name: "f32, KV-cached, batch 16",
        greedy: "greedy, f32 KV-cached batch 16",
        dtype: DType::F32,
        attention: AttentionPrecision::F32,
        generator: Generator::Cached(16),
        share: 4,
    },
    HonestMiner {
        name: "bf16, KV-cached, batch 4",
        greedy: "greedy, bf16 KV-cached batch 4",
        dtype: DType::BF16,
        attention: AttentionPrecision::F32,
        generator: Generator::Cached(4),
        share: 4,
    },
    HonestMiner {
        name: "bf16, KV-cached, batch 16",
        greedy: "greedy, bf16 KV-cached batch 16",
        dtype: DType::BF16,
        attention: AttentionPrecision::F32,
        generator: Generator::Cached(16),
        share: 4,
    },
    HonestMiner {
        name: "f16 with f16 attention, KV-cached, batch 8",
        greedy: "greedy, f16 with f16 attention KV-cached batch 8",
        dtype: DType::F16,
        attention: AttentionPrecision::Model,
        generator: Generator::Cached(8),
        share: 4,
    },
];

/// How cheaters generate: KV-cached, 8 sequences together. What they serve is the
/// cheat, not the loop.
const CHEAT: Generator = Generator::Cached(8);

/// Honest texts per configuration: `total` split by the configurations' shares,
/// rounded down, and what rounding left over given one each in the list's order, so
/// that the counts add up to `total` exactly.
fn per_config(total: usize) -> [usize; HONEST.len()] {
    let shares: usize = HONEST.iter().map(|h| h.share).sum();
    let mut counts = HONEST.map(|h| total * h.share / shares);
    let left = total - counts.iter().sum::<usize>();
    for c in counts.iter_mut().take(left) {
        *c += 1;
    }
    counts
}

pub const SUBSTITUTE: &str = "substituted model";
pub const PREFILL_SPOOF: &str = "prefill spoof (substitute's tokens, reference logprobs)";
pub const QUANTIZED_4: &str = "quantized weights, 4-bit";
pub const QUANTIZED_3: &str = "quantized weights, 3-bit";
pub const HOTTER: &str = "sampler 1.5× hotter than asked";
pub const CANNED: &str = "canned text (a passage of the book)";
pub const QUANTIZED_8: &str = "quantized weights, 8-bit";
pub const SMALLER: &str = "smaller model (layers removed)";
pub const REUSED: &str = "reused answer (the reference's answer to another job)";

fn numerics(dtype: DType, attention: AttentionPrecision) -> Numerics {
    Numerics { dtype, attention }
}

/// Paragraphs of the book, whitespace-normalized, at least 80 characters.
fn paragraphs(corpus: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(corpus)
        .with_context(|| format!("reading corpus {}", corpus.display()))?;
    let paras: Vec<String> = text
        .replace("\r\n", "\n")
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| p.len() >= 80)
        .collect();
    anyhow::ensure!(
        paras.len() >= 10,
        "{}: too few paragraphs",
        corpus.display()
    );
    Ok(paras)
}

/// The temperatures of sampled jobs, which `llm_likelihood` judges.
const SAMPLED: [f64; 3] = [0.5, 0.7, 1.0];
/// Greedy and near-greedy jobs: the rank and unlikely-token checks' own.
const GREEDY: [f64; 2] = [0.0, 0.2];

/// `n` jobs drawn from the paragraphs, each at one of `temperatures`.
fn jobs(
    paras: &[String],
    n: usize,
    max_tokens: u32,
    temperatures: &[f64],
    rng: &mut ChaCha8Rng,
) -> Vec<LlmInput> {
    (0..n)
        .map(|_| {
            let p = &paras[rng.random_range(0..paras.len())];
            let words: Vec<&str> = p.split(' ').take(8).collect();
            LlmInput {
                messages: Some(vec![Message {
                    role: Role::User,
                    content: format!("Continue: {}", words.join(" ")),
                }]),
                prompt: None,
                temperature: temperatures[rng.random_range(0..temperatures.len())],
                max_tokens,
                seed: Some(rng.random_range(0..i64::MAX)),
                ..Default::default()
            }
        })
        .collect()
}

/// What `miner` answers to `inputs` with the generation loop `generator`, sampling at
/// the job's temperature times `heat`.
fn generate(
    miner: &Scorer,
    inputs: &[LlmInput],
    generator: Generator,
    heat: f64,
) -> anyhow::Result<(Vec<String>, Vec<Vec<u32>>)> {
    let (mut texts, mut ids) = (Vec::with_capacity(inputs.len()), Vec::new());
    let batch = match generator {
        Generator::FullPass(b) | Generator::Cached(b) => b.max(1),
    };
    for chunk in inputs.chunks(batch) {
        let prompts = chunk
            .iter()
            .map(|i| miner.prompter.prompt_ids(i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sampling: Vec<Sampling> = chunk
            .iter()
            .map(|i| Sampling {
                max_tokens: i.max_tokens as usize,
                temperature: i.temperature * heat,
                seed: i.seed.unwrap_or(0) as u64,
                top_logprobs: 0,
            })
            .collect();
        let generated = match generator {
            Generator::FullPass(_) => miner.generate(&prompts, &sampling)?,
            Generator::Cached(_) => miner.generate_cached_batch(&prompts, &sampling)?,
        };
        for g in generated {
            texts.push(g.text);
            ids.push(g.ids);
        }
    }
    Ok((texts, ids))
}

/// The reference model in f32 on the CPU with the options' suspect panel, whose model
/// suspects sit in the folder the reference's does.
pub fn reference_with_panel(opts: &LlmOptions) -> anyhow::Result<Scorer> {
    let (device, f32) = (Device::Cpu, numerics(DType::F32, AttentionPrecision::F32));
    let mut reference = Scorer::load(&opts.reference, f32, &device)?;
    reference.panel =
        crate::llm::panel::Panel::beside(&reference, &opts.panel, &opts.reference, f32, &device);
    Ok(reference)
}

/// Pairs are generated and scored this many jobs at a time, and kept in the records
/// file as each batch is done. Every generation batch size (1, 4, 8, 16) divides it,
/// so a batch's texts are the same whether the jobs before it were generated in this
/// run or read back.
const CHUNK: usize = 16;

/// Builds, generates and scores every pair; reads back the pairs a records file holds
/// and adds the rest to it. `progress` hears each batch.
pub fn pairs(opts: &LlmOptions, progress: &dyn Fn(&str)) -> anyhow::Result<Vec<LlmPair>> {
    let device = Device::Cpu;
    let f32 = numerics(DType::F32, AttentionPrecision::F32);
    let reference = reference_with_panel(opts)?;
    let substitute = Scorer::load(&opts.substitute, f32, &device)?;
    let paras = paragraphs(&opts.corpus)?;
    let mut records = Records::open(opts.records.as_deref(), &run_key(opts, &reference))?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut out: Vec<LlmPair> = Vec::new();
    let started = std::time::Instant::now();
    let mut add = |label,
                   variant: &'static str,
                   inputs: Vec<LlmInput>,
                   produce: &mut dyn FnMut(usize, &[LlmInput]) -> Texts,
                   reported: bool,
                   oracle: bool,
                   miner: Option<&Scorer>|
     -> anyhow::Result<()> {
        for (c, chunk) in inputs.chunks(CHUNK).enumerate() {
            let from = c * CHUNK;
            let kept: Option<Vec<LlmPair>> = chunk
                .iter()
                .enumerate()
                .map(|(i, input)| records.take(label, variant, from + i, input))
                .collect();
            if let Some(kept) = kept {
                out.extend(kept);
                continue;
            }
            let (texts, ids) = produce(from, chunk)?;
            let scored = score_chunk(
                &reference,
                oracle.then_some(&substitute),
                miner,
                chunk,
                &texts,
                &ids,
            )?;
            for (i, ((input, text), (scores, alt, drift, replay))) in
                chunk.iter().zip(texts).zip(scored).enumerate()
            {
                let reported = if reported {
                    scores
                        .as_ref()
                        .map(|s| s.tokens.iter().map(|t| t.logprob).collect())
                } else {
                    None
                };
                let pair = LlmPair {
                    label,
                    variant,
                    input: input.clone(),
                    text,
                    oracle_llr: scores
                        .as_ref()
                        .zip(alt.as_ref())
                        .and_then(|(r, s)| likelihood_ratio(r, s)),
                    scores,
                    reported,
                    drift,
                    replay,
                };
                records.keep(from + i, &pair)?;
                out.push(pair);
            }
            progress(&format!(
                "llm: {variant}: {} of {} ({} pairs in {:.0} s)",
                from + chunk.len(),
                inputs.len(),
                out.len(),
                started.elapsed().as_secs_f64()
            ));
        }
        Ok(())
    };
    for (h, n) in HONEST.iter().zip(per_config(opts.honest)) {
        let miner = Scorer::load(&opts.reference, numerics(h.dtype, h.attention), &device)?;
        let inputs = jobs(&paras, n, opts.max_tokens, &SAMPLED, &mut rng);
        let mut produce = |_: usize, chunk: &[LlmInput]| generate(&miner, chunk, h.generator, 1.0);
        let honest = Label::Honest;
        add(
            honest,
            h.name,
            inputs,
            &mut produce,
            false,
            true,
            Some(&miner),
        )?;
    }
    let n = opts.per_cheat;
    // A cheat that serves `$model` on sampled jobs, at `$heat` times each job's
    // temperature; `$spoof` and `$drift` as `add` takes them. A macro, not a closure:
    // `add` and `rng` are borrowed again between these cheats.
    macro_rules! model_cheat {
        ($variant:expr, $model:expr, $heat:expr, $spoof:expr, $drift:expr) => {{
            let inputs = jobs(&paras, n, opts.max_tokens, &SAMPLED, &mut rng);
            let mut produce = |_: usize, chunk: &[LlmInput]| generate($model, chunk, CHEAT, $heat);
            add(
                Label::Cheat,
                $variant,
                inputs,
                &mut produce,
                $spoof,
                $drift,
                None,
            )?;
        }};
    }
    model_cheat!(SUBSTITUTE, &substitute, 1.0, false, true);
    model_cheat!(PREFILL_SPOOF, &substitute, 1.0, true, false);
    for (variant, bits) in [(QUANTIZED_4, 4), (QUANTIZED_3, 3)] {
        let miner = Scorer::load_quantized(&opts.reference, bits, f32, &device)?;
        model_cheat!(variant, &miner, 1.0, false, false);
    }
    model_cheat!(HOTTER, &reference, 1.5, false, false);
    let inputs = jobs(&paras, n, opts.max_tokens, &SAMPLED, &mut rng);
    let (mut texts, mut canned_ids) = (Vec::new(), Vec::new());
    for input in &inputs {
        let p = &paras[rng.random_range(0..paras.len())];
        let mut ids = reference.prompter.encode(p, false)?;
        ids.truncate(input.max_tokens as usize);
        texts.push(reference.prompter.decode(&ids)?);
        canned_ids.push(ids);
    }
    let mut produce = |from: usize, chunk: &[LlmInput]| -> Texts {
        let to = from + chunk.len();
        Ok((texts[from..to].to_vec(), canned_ids[from..to].to_vec()))
    };
    add(
        Label::Cheat,
        CANNED,
        inputs,
        &mut produce,
        false,
        false,
        None,
    )?;
    // Greedy honest miners next, so that every pair before is what it was without them.
    for (h, n) in HONEST.iter().zip(per_config(opts.honest_greedy)) {
        let miner = Scorer::load(&opts.reference, numerics(h.dtype, h.attention), &device)?;
        let inputs = jobs(&paras, n, opts.max_tokens, &GREEDY, &mut rng);
        let mut produce = |_: usize, chunk: &[LlmInput]| generate(&miner, chunk, h.generator, 1.0);
        let honest = Label::Honest;
        add(
            honest,
            h.greedy,
            inputs,
            &mut produce,
            false,
            false,
            Some(&miner),
        )?;
    }
    // The cheats added later, after every pair before, so that those stay what they were.
    let miner = Scorer::load_quantized(&opts.reference, 8, f32, &device)?;
    model_cheat!(QUANTIZED_8, &miner, 1.0, false, false);
    // A reused answer: the reference's own text for another job of the same kind.
    let inputs = jobs(&paras, n, opts.max_tokens, &SAMPLED, &mut rng);
    let others = jobs(&paras, n, opts.max_tokens, &SAMPLED, &mut rng);
    let mut produce = |from: usize, chunk: &[LlmInput]| {
        generate(&reference, &others[from..from + chunk.len()], CHEAT, 1.0)
    };
    add(
        Label::Cheat,
        REUSED,
        inputs,
        &mut produce,
        false,
        false,
        None,
    )?;
    if let Some(dir) = &opts.smaller {
        let miner = Scorer::load(dir, f32, &device)?;
        model_cheat!(SMALLER, &miner, 1.0, false, false);
    }
    Ok(out)
}

/// Miners' texts and the token ids they generated, one each per job.
type Texts = anyhow::Result<(Vec<String>, Vec<Vec<u32>>)>;

/// What the reference measured of one job: its scores, the substitute's scores of the
/// same text (for the oracle), the suspects' drift and the seed replay.
type Measured = (
    Option<TokenScores>,
    Option<TokenScores>,
    Option<Vec<(f64, f64)>>,
    Option<Replay>,
);

/// Scores one chunk of miners' texts with the reference (and its panel), the
/// substitute where given, and measures drift under `miner`'s numerics and the replay.
fn score_chunk(
    reference: &Scorer,
    substitute: Option<&Scorer>,
    miner: Option<&Scorer>,
    inputs: &[LlmInput],
    texts: &[String],
    ids: &[Vec<u32>],
) -> anyhow::Result<Vec<Measured>> {
    let jobs: Vec<ScoreJob<'_>> = inputs
        .iter()
        .zip(texts)
        .map(|(input, text)| ScoreJob { input, text })
        .collect();
    let batch = reference.score_batch_with_rows(&jobs);
    let by_substitute: Vec<Option<TokenScores>> = match substitute {
        Some(s) => s.score_batch(&jobs).into_iter().map(Result::ok).collect(),
        None => vec![None; jobs.len()],
    };
    let (drifts, replays) = measure(reference, miner, &jobs, ids, &batch)?;
    let measured = batch.scores.into_iter().zip(by_substitute).zip(drifts);
    measured
        .zip(replays)
        .map(|(((scores, alt), drift), replay)| {
            if let Err(crate::llm::ScoreError::Failed(e)) = &scores {
                anyhow::bail!("scoring failed: {e}");
            }
            Ok((scores.ok(), alt, drift, replay))
        })
        .collect()
}

/// What must be the same for a records file's pairs to be this run's: the models, the
/// panel, the corpus, the window and the seed. (The jobs themselves are compared one by
/// one as they are read back.)
fn run_key(opts: &LlmOptions, reference: &Scorer) -> String {
    let name = |p: &Path| model_id(p);
    let suspects: Vec<&str> = reference
        .panel
        .suspects
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    format!(
        "reference {}; substitute {}; smaller {}; panel [{}]; corpus {}; {} tokens; seed {}",
        name(&opts.reference),
        name(&opts.substitute),
        opts.smaller.as_deref().map_or("none".into(), name),
        suspects.join(", "),
        name(&opts.corpus),
        opts.max_tokens,
        opts.seed
    )
}

/// One pair as a records file keeps it: a line of JSON. Written from a borrowed pair,
/// read back owned.
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    variant: Cow<'a, str>,
    index: usize,
    label: Label,
    input: Cow<'a, LlmInput>,
    text: Cow<'a, str>,
    scores: Cow<'a, Option<TokenScores>>,
    reported: Cow<'a, Option<Vec<f64>>>,
    oracle_llr: Option<f64>,
    drift: Cow<'a, Option<Vec<(f64, f64)>>>,
    replay: Option<Replay>,
}

/// The pairs of a calibration as they are scored, one JSON line each after a header
/// line with the run's key: what a run over the same file reads back instead of
/// generating and scoring again. A pair is read back only where its job is the one
/// this run drew at its place; a file of another run is refused.
#[derive(Default)]
pub struct Records {
    file: Option<std::fs::File>,
    kept: std::collections::HashMap<(String, usize), Record<'static>>,
}

impl Records {
    fn open(path: Option<&Path>, key: &str) -> anyhow::Result<Self> {
        use std::io::{BufRead, Write};
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let mut kept = std::collections::HashMap::new();
        let exists = path.exists();
        if exists {
            let file =
                std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
            let mut lines = std::io::BufReader::new(file).lines();
            let header: serde_json::Value = match lines.next() {
                Some(line) => serde_json::from_str(&line?)?,
                None => serde_json::Value::Null,
            };
            let theirs = header.get("run").and_then(|r| r.as_str()).unwrap_or("");
            anyhow::ensure!(
                theirs == key,
                "{} holds the pairs of another run ({theirs}); this one is {key}: \
                 give another --llm-records file",
                path.display()
            );
            for line in lines {
                let line = line?;
                // A line cut short by a run killed mid-write is the only one that
                // may not parse: its pair is scored again.
                if let Ok(r) = serde_json::from_str::<Record>(&line) {
                    kept.insert((r.variant.to_string(), r.index), r);
                }
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        if !exists {
            writeln!(file, "{}", serde_json::json!({ "run": key }))?;
        } else if !ends_in_newline(path)? {
            // The line a killed run left unfinished ends here, not in the next record.
            writeln!(file)?;
        }
        Ok(Self {
            file: Some(file),
            kept,
        })
    }

    /// The pair kept for `variant`'s job `index`, if its job is `input`.
    fn take(
        &mut self,
        label: Label,
        variant: &'static str,
        index: usize,
        input: &LlmInput,
    ) -> Option<LlmPair> {
        let key = (variant.to_string(), index);
        let r = self.kept.get(&key)?;
        if r.label != label || r.input.as_ref() != input {
            return None;
        }
        let r = self.kept.remove(&key)?;
        Some(LlmPair {
            label,
            variant,
            input: r.input.into_owned(),
            text: r.text.into_owned(),
            scores: r.scores.into_owned(),
            reported: r.reported.into_owned(),
            oracle_llr: r.oracle_llr,
            drift: r.drift.into_owned(),
            replay: r.replay,
        })
    }

    /// Writes `pair`, `variant`'s job `index`, to the file.
    fn keep(&mut self, index: usize, pair: &LlmPair) -> anyhow::Result<()> {
        use std::io::Write;
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let record = Record {
            variant: Cow::Borrowed(pair.variant),
            index,
            label: pair.label,
            input: Cow::Borrowed(&pair.input),
            text: Cow::Borrowed(&pair.text),
            scores: Cow::Borrowed(&pair.scores),
            reported: Cow::Borrowed(&pair.reported),
            oracle_llr: pair.oracle_llr,
            drift: Cow::Borrowed(&pair.drift),
            replay: pair.replay,
        };
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        file.write_all(&line)?;
        Ok(())
    }
}

/// Whether the file at `path` is empty or ends in a newline: its last byte only.
fn ends_in_newline(path: &Path) -> anyhow::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// What the honest sample was, for the rules' provenance.
pub fn describe(opts: &LlmOptions) -> String {
    let configs: Vec<&str> = HONEST.iter().map(|h| h.name).collect();
    format!(
        "{} honest texts of {} ({}) at temperatures 0.5, 0.7 and 1.0, and {} at 0 and 0.2; {} tokens; seed {}",
        opts.honest,
        model_id(&opts.reference),
        configs.join("; "),
        opts.honest_greedy,
        opts.max_tokens,
        opts.seed
    )
}

/// A model folder's name: the model id the scorer reports.
pub fn model_id(dir: &Path) -> String {
    dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// `Σ log q_substitute(token) − log q_reference(token)` over a text's tokens, each `q`
/// the model's distribution at the job's temperature (as floored for the likelihood
/// check, which changes only tokens far in either model's tail). `None` unless both
/// models scored the same tokens.
fn likelihood_ratio(reference: &TokenScores, substitute: &TokenScores) -> Option<f64> {
    if reference.tokens.len() != substitute.tokens.len() {
        return None;
    }
    reference
        .tokens
        .iter()
        .zip(&substitute.tokens)
        .map(|(r, s)| (r.id == s.id).then_some((r.tempered, s.tempered)))
        .map(|pair| match pair? {
            (Some(r), Some(s)) => Some(s.logprob - r.logprob),
            // Tokens without moments (EOS, U+FFFD) count for neither model.
            _ => Some(0.0),
        })
        .sum()
}

/// The oracle's detection of the substituted model at the honest rate `target`: the
/// share of the substitute's texts flagged at the threshold [`super::sweep`] chooses
/// on the honest texts' likelihood ratios. `None` without both sides measured.
pub fn oracle_detection(measured: &[LlmPair], target: f64) -> Option<(f64, usize)> {
    let pairs: Vec<Pair> = measured
        .iter()
        .filter(|p| p.label == Label::Honest || p.variant == SUBSTITUTE)
        .filter_map(|p| {
            Some(Pair {
                label: p.label,
                variant: p.variant.to_string(),
                suspicion: vec![p.oracle_llr?],
            })
        })
        .collect();
    let cheats: Vec<&Pair> = pairs.iter().filter(|p| p.label == Label::Cheat).collect();
    if cheats.is_empty() {
        return None;
    }
    let sweep = super::sweep(&pairs, &[f64::NEG_INFINITY], target).ok()?;
    let caught = cheats
        .iter()
        .filter(|p| super::flagged(&p.suspicion, &sweep.thresholds))
        .count();
    Some((caught as f64 / cheats.len() as f64, cheats.len()))
}

/// The likelihood z-score of a pair, `None` where the check does not judge it.
fn z(p: &LlmPair, rules: &LlmRules) -> Option<f64> {
    let s = p.scores.as_ref()?;
    llm::judged_likelihood_z(s, p.input.temperature, rules)
        .ok()
        .map(|(z, _)| z)
}

/// Calibrates `llm_likelihood` on scored pairs: the report, the rules with the
/// calibrated threshold, and every LLM sub-check's flag rates at it.
pub fn calibrate(
    measured: &[LlmPair],
    rules: &LlmRules,
    target: f64,
) -> anyhow::Result<(
    CheckReport,
    LlmRules,
    SubcheckRates,
    Vec<super::MeasuredRate>,
)> {
    // The likelihood threshold and its table come from the jobs it judges: sampled
    // ones. Greedy jobs are the rank checks'.
    let sampled = |p: &&LlmPair| p.input.temperature >= rules.likelihood_min_temperature;
    let pairs: Vec<Pair> = measured
        .iter()
        .filter(sampled)
        .map(|p| Pair {
            label: p.label,
            variant: p.variant.to_string(),
            suspicion: vec![z(p, rules).map_or(f64::NEG_INFINITY, |z| -z)],
        })
        .collect();
    // Never stricter than the normal approximation the z-score is built on.
    let floor = crate::stats::normal_upper_quantile(target);
    let sweep = super::sweep(&pairs, &[floor], target)?;
    let mut calibrated = rules.clone();
    calibrated.likelihood_z_min = super::floor_to(-sweep.thresholds[0], 2);
    let outcomes: Vec<Vec<(CheckId, Status)>> = measured
        .iter()
        .map(|p| match &p.scores {
            Some(s) => llm::check(s, &p.input, p.reported.as_deref(), &calibrated)
                .into_iter()
                .map(|(id, o)| (id, o.status()))
                .collect(),
            None => Vec::new(),
        })
        .collect();
    let failed = |o: &[(CheckId, Status)], id: Option<CheckId>| {
        o.iter()
            .any(|(c, st)| *st == Status::Fail && id.is_none_or(|id| *c == id))
    };
    let verdicts = |id: Option<CheckId>, only_sampled: bool| -> Vec<(Label, String, bool)> {
        measured
            .iter()
            .zip(&outcomes)
            .filter(|(p, _)| !only_sampled || sampled(p))
            .map(|(p, o)| (p.label, p.variant.to_string(), failed(o, id)))
            .collect()
    };
    let mut rows = super::rate_rows(&verdicts(Some(CheckId::LlmLikelihood), true));
    for r in rows.iter_mut() {
        if r.variant == SUBSTITUTE || r.variant == PREFILL_SPOOF {
            r.target = Some(DETECTION_TARGET);
            r.met = Some(r.rate >= DETECTION_TARGET);
        }
        if r.label == Label::Cheat {
            let mut note = evidence_per_token(measured, &r.variant, &calibrated);
            if r.variant == SUBSTITUTE
                && let Some((rate, _)) = oracle_detection(measured, target)
            {
                note += &format!(
                    "; a test that knew the substitute (likelihood ratio) would catch {:.1} %",
                    100.0 * rate
                );
            }
            r.note = Some(note);
        }
    }
    let llm_checks = || {
        CheckId::ALL
            .into_iter()
            .filter(|id| id.as_str().starts_with("llm_"))
    };
    let mut subchecks: SubcheckRates = llm_checks()
        .map(|id| {
            (
                id.as_str().to_string(),
                super::rate_rows(&verdicts(Some(id), false)),
            )
        })
        .collect();
    subchecks.push(("any".into(), super::rate_rows(&verdicts(None, false))));
    // Each check's honest rate over the honest jobs it judged (passed or failed).
    let rates = honest_rates(
        measured
            .iter()
            .zip(&outcomes)
            .filter(|(p, _)| p.label == Label::Honest)
            .map(|(_, o)| o.as_slice()),
    );
    Ok((
        CheckReport {
            check: CheckId::LlmLikelihood,
            target_fpr: target,
            thresholds: vec![("likelihood_z_min".into(), calibrated.likelihood_z_min)],
            rows,
            roc: sweep.roc,
        },
        calibrated,
        subchecks,
        rates,
    ))
}

/// Each LLM check's honest rate over the outcomes of honest jobs: the jobs it judged
/// (passed or failed) and those it failed. A check that judged none is left out.
fn honest_rates<'a>(
    outcomes: impl Iterator<Item = &'a [(CheckId, Status)]> + Clone,
) -> Vec<super::MeasuredRate> {
    CheckId::ALL
        .into_iter()
        .filter(|id| id.as_str().starts_with("llm_"))
        .filter_map(|id| {
            let (mut n, mut failures) = (0, 0);
            for o in outcomes.clone() {
                match o.iter().find(|(c, _)| *c == id).map(|(_, st)| *st) {
                    Some(Status::Pass) => n += 1,
                    Some(Status::Fail) => {
                        n += 1;
                        failures += 1;
                    }
                    _ => {}
                }
            }
            (n > 0).then(|| super::MeasuredRate {
                check: id,
                sample: String::new(),
                n,
                failures,
                models: Vec::new(),
            })
        })
        .collect()
}

/// Each honest configuration's own rates at `rules` (the calibrated ones): how far
/// apart honest miners that differ only in numerics, batching and generation loop
/// fail. One entry per honest variant, in the order the pairs hold them.
pub fn rates_by_config(
    measured: &[LlmPair],
    rules: &LlmRules,
) -> Vec<(String, Vec<super::MeasuredRate>)> {
    let honest: Vec<(&LlmPair, Vec<(CheckId, Status)>)> = measured
        .iter()
        .filter(|p| p.label == Label::Honest)
        .map(|p| {
            let o = match &p.scores {
                Some(s) => llm::check(s, &p.input, p.reported.as_deref(), rules)
                    .into_iter()
                    .map(|(id, o)| (id, o.status()))
                    .collect(),
                None => Vec::new(),
            };
            (p, o)
        })
        .collect();
    let mut variants: Vec<&str> = Vec::new();
    for (p, _) in &honest {
        if !variants.contains(&p.variant) {
            variants.push(p.variant);
        }
    }
    variants
        .into_iter()
        .map(|v| {
            let rates = honest_rates(
                honest
                    .iter()
                    .filter(|(p, _)| p.variant == v)
                    .map(|(_, o)| o.as_slice()),
            );
            (v.to_string(), rates)
        })
        .collect()
}

/// How fast a cheat's z-score falls: its tokens' mean excess logprob (below the
/// reference's own samples, in nats per token) and, from that and the spread, the
/// number of tokens at which 99 % of its texts would fall below the limit (a normal
/// projection from the pooled tokens, not a measurement).
fn evidence_per_token(measured: &[LlmPair], variant: &str, rules: &LlmRules) -> String {
    let pairs: Vec<&LlmPair> = measured.iter().filter(|p| p.variant == variant).collect();
    let mut zs: Vec<f64> = pairs.iter().filter_map(|p| z(p, rules)).collect();
    zs.sort_by(f64::total_cmp);
    let median = zs.get(zs.len() / 2).copied().unwrap_or(f64::NAN);
    let tokens: Vec<(f64, f64)> = pairs
        .iter()
        .filter_map(|p| p.scores.as_ref())
        .flat_map(|s| s.tokens.iter().filter_map(|t| t.tempered))
        .map(|q| (q.logprob - q.mean, q.variance))
        .collect();
    let n = tokens.len().max(1) as f64;
    let excess = tokens.iter().map(|(e, _)| e).sum::<f64>() / n;
    let spread = (tokens
        .iter()
        .map(|(e, _)| (e - excess).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let honest_var = tokens.iter().map(|(_, v)| v).sum::<f64>() / n;
    let mut s = format!("median z {median:.2}; {excess:+.3} nats/token");
    if excess < 0.0 {
        let needed =
            ((-rules.likelihood_z_min * honest_var.sqrt() + 2.326 * spread) / -excess).powi(2);
        s += &format!(", ≈ {needed:.0} tokens for 99 % (projected)");
    }
    let unjudged = pairs.len() - zs.len();
    if unjudged > 0 {
        s += &format!("; {unjudged} texts too short to judge");
    }
    s
}

/// Below this temperature the panel does not judge, and no drift is measured.
pub const MIN_PANEL_TEMPERATURE: f64 = 0.3;

/// The reference's replay of one text's draws from its job's seed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Replay {
    /// Output tokens replayed, over the miner's text as the reference tokenizes it
    /// (all a miner that returns text gives) ...
    pub tokens: u32,
    /// ... and those where the replay drew the miner's token.
    pub agree: u32,
    /// The same over the token ids the miner generated (what a miner returning its
    /// token ids would give).
    pub id_tokens: u32,
    pub id_agree: u32,
}

/// Per job of `chunk`: each suspect's (mean, max) per-token drift where `miner` is the
/// honest miner's model (`None` otherwise), and the replay of its sampler. `scored` is
/// the reference's scoring of `chunk` ([`Scorer::score_batch_with_rows`]), whose rows
/// both reuse: only the miner's own rows, and the replay's over generated ids that are
/// not the text's, take forward passes of their own.
#[allow(clippy::type_complexity)]
pub fn measure(
    reference: &Scorer,
    miner: Option<&Scorer>,
    chunk: &[ScoreJob<'_>],
    generated: &[Vec<u32>],
    scored: &crate::llm::ScoredBatch,
) -> anyhow::Result<(Vec<Option<Vec<(f64, f64)>>>, Vec<Option<Replay>>)> {
    let seqs = &scored.seqs;
    anyhow::ensure!(
        seqs.len() == chunk.len(),
        "the reference's forward pass failed"
    );
    let reference_rows = &scored.rows;
    let ok: Vec<(&[u32], usize)> = seqs
        .iter()
        .flatten()
        .map(|(s, p)| (s.as_slice(), *p))
        .collect();
    // The replay over the generated ids: prompt + ids, where both exist and the ids
    // are not the re-tokenized text's own (those replay as the text does).
    let same_ids: Vec<bool> = seqs
        .iter()
        .zip(generated)
        .map(|(s, ids)| s.as_ref().is_some_and(|(seq, p)| seq[*p..] == ids[..]))
        .collect();
    let by_ids: Vec<Option<(Vec<u32>, usize)>> = seqs
        .iter()
        .zip(generated)
        .zip(&same_ids)
        .map(|((s, ids), &same)| {
            let (seq, p) = s.as_ref().filter(|_| !same)?;
            let out: Vec<u32> = seq[..*p].iter().chain(ids).copied().collect();
            (!ids.is_empty() && out.len() <= reference.model.config.max_position_embeddings)
                .then_some((out, *p))
        })
        .collect();
    let id_ok: Vec<(&[u32], usize)> = by_ids
        .iter()
        .flatten()
        .map(|(s, p)| (s.as_slice(), *p))
        .collect();
    let id_rows = reference.log_prob_rows(&id_ok)?;
    let mut id_rows = id_rows.into_iter();
    let replay = |rows: &[Vec<f32>], tokens: &[u32], t: f64, seed: u64| -> (u32, u32) {
        let agree = tokens
            .iter()
            .enumerate()
            .filter(|&(i, &id)| crate::llm::sample(&rows[i], t, seed, i, &reference.served) == id)
            .count();
        (tokens.len() as u32, agree as u32)
    };
    // The miner's own rows only where a drift is measured: a sampled job the panel
    // judges, with a panel to judge it.
    let drifts_wanted = !scored.suspect_rows.is_empty()
        && chunk
            .iter()
            .any(|j| j.input.temperature >= MIN_PANEL_TEMPERATURE);
    let miner_rows = match miner {
        Some(m) if drifts_wanted => Some(m.log_prob_rows(&ok)?),
        _ => None,
    };
    let eos = reference.prompter.eos_id;
    let (mut drifts, mut replays) = (Vec::new(), Vec::new());
    let mut k = 0;
    for (((job, seq), by_id), &same) in chunk.iter().zip(seqs).zip(&by_ids).zip(&same_ids) {
        let own_rows = by_id
            .as_ref()
            .map(|_| id_rows.next().expect("one row block per id sequence"));
        let Some((seq, p)) = seq else {
            drifts.push(None);
            replays.push(None);
            continue;
        };
        let rows = &reference_rows[k];
        let tokens = &seq[*p..];
        let t = job.input.temperature;
        replays.push(job.input.seed.filter(|_| t > 0.0).map(|seed| {
            let (tokens, agree) = replay(rows, tokens, t, seed as u64);
            let (id_tokens, id_agree) = match (by_id, &own_rows) {
                (Some((s, p)), Some(r)) => replay(r, &s[*p..], t, seed as u64),
                _ if same => (tokens, agree),
                _ => (0, 0),
            };
            Replay {
                tokens,
                agree,
                id_tokens,
                id_agree,
            }
        }));
        drifts.push(match &miner_rows {
            Some(m) if t >= MIN_PANEL_TEMPERATURE => {
                let mine: Vec<Option<&[Vec<f32>]>> = scored
                    .suspect_rows
                    .iter()
                    .map(|r| r.as_ref().map(|r| r[k].as_slice()))
                    .collect();
                Some(panel::text_drift(
                    &reference.panel,
                    &m[k],
                    rows,
                    &mine,
                    tokens,
                    t,
                    eos,
                ))
            }
            _ => None,
        });
        k += 1;
    }
    Ok((drifts, replays))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(label: Label, variant: &'static str, llr: f64) -> LlmPair {
        LlmPair {
            label,
            variant,
            input: LlmInput {
                messages: None,
                prompt: Some("p".into()),
                temperature: 1.0,
                max_tokens: 4,
                seed: None,
                ..Default::default()
            },
            text: String::new(),
            scores: None,
            reported: None,
            oracle_llr: Some(llr),
            drift: None,
            replay: None,
        }
    }

    #[test]
    fn honest_texts_split_by_share_and_add_up_to_the_total() {
        for total in [0, 1, 6, 21, 60, 96, 252, 600] {
            let counts = per_config(total);
            assert_eq!(counts.iter().sum::<usize>(), total, "{total}: {counts:?}");
        }
        // The full-pass miner writes a quarter of what each other writes.
        assert_eq!(per_config(210), [10, 40, 40, 40, 40, 40]);
        assert_eq!(per_config(60), [3, 12, 12, 11, 11, 11]);
    }

    #[test]
    fn the_oracle_threshold_passes_over_at_most_the_target_share_of_honest_texts() {
        // 100 honest ratios 0..99; at 2 % the threshold is the third highest (97), so
        // 98 and 99 are the honest texts it flags.
        let mut pairs: Vec<LlmPair> = (0..100)
            .map(|i| pair(Label::Honest, "honest", f64::from(i)))
            .collect();
        for l in [96.0, 97.0, 97.5, 150.0] {
            pairs.push(pair(Label::Cheat, SUBSTITUTE, l));
        }
        pairs.push(pair(Label::Cheat, HOTTER, 1e9));
        let (rate, n) = oracle_detection(&pairs, 0.02).unwrap();
        assert_eq!(n, 4);
        assert_eq!(rate, 0.5);
        // At 0 %, only what exceeds every honest text.
        assert_eq!(oracle_detection(&pairs, 0.0).unwrap().0, 0.25);
        pairs.retain(|p| p.variant != SUBSTITUTE);
        assert_eq!(oracle_detection(&pairs, 0.02), None);
    }
}

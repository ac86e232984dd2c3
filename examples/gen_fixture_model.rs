//! Writes the tiny reference LLMs under `fixtures/models/`, deterministically, from
//! `fixtures/text/alice29.txt` (Alice's Adventures in Wonderland, Project Gutenberg):
//!
//! - a byte-level BPE tokenizer (512 tokens, Llama-3's special tokens and chat
//!   template), trained with the `tokenizers` crate;
//! - `tiny-alice`: a 2-layer Llama (hidden 64, grouped-query attention) trained with
//!   candle on chat-formatted continuations of the book's paragraphs;
//! - `tiny-alice-alt`: the same architecture, tokenizer, data and steps from another
//!   seed: the "different model" a cheating miner might serve, as close to the
//!   reference as a retrained model gets.
//!
//! With the argument `suspects`, it writes the suspect panel's other fixture models
//! instead, leaving the two above as they are (the calibrated rates are theirs):
//!
//! - `tiny-alice-small`: half the width (hidden 32), the same tokenizer, data and
//!   steps, seed 3: a smaller model of the same family;
//! - `tiny-alice-q4` and `tiny-alice-q8`: `tiny-alice`'s weights round-tripped through
//!   4-bit and 8-bit per-row absmax quantization (`proctor::llm::model::quantize_rows`),
//!   stored dequantized in f32, as a miner serving a quantized model computes with.
//!
//! A random-weight model's next-token distributions are nearly uniform and would make
//! every logprob check trivially weak; these are trained until their distributions are
//! peaked (600 steps, about where the held-out loss stops falling; longer only
//! memorizes the book), and the mean top-1 probability on held-out paragraphs is
//! written to each model's `training.json`.
//!
//!   cargo run --release --example gen_fixture_model [steps]
//!   cargo run --release --example gen_fixture_model suspects

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use proctor::llm::model::{Llama, LlamaConfig, Numerics};
use proctor::llm::template::Prompter;
use proctor::record::{Message, Role};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, NormalizerWrapper, Tokenizer, TokenizerImpl};

const SPECIALS: [&str; 5] = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
];

/// Llama-3 Instruct's prompt format, written as a Jinja chat template.
const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

const SEQ: usize = 128;
const BATCH: usize = 16;

/// The book's paragraphs, whitespace collapsed, without headings.
/// (The Canterbury corpus copy has CRLF line ends.)
fn paragraphs(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| p.len() >= 80)
        .collect()
}

fn train_tokenizer(paras: &[String], dir: &Path) {
    type Bpe = TokenizerImpl<BPE, NormalizerWrapper, ByteLevel, TemplateProcessing, ByteLevel>;
    let mut tk: Bpe = TokenizerImpl::new(BPE::default());
    tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tk.with_decoder(Some(ByteLevel::default()));
    let mut trainer: BpeTrainer = BpeTrainer::builder()
        .vocab_size(512)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(
            SPECIALS
                .iter()
                .map(|s| AddedToken::from(*s, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    tk.train(&mut trainer, paras.iter()).unwrap();
    let bos = tk.token_to_id(SPECIALS[0]).unwrap();
    tk.with_post_processor(Some(
        TemplateProcessing::builder()
            .try_single(format!("{} $A", SPECIALS[0]))
            .unwrap()
            .special_tokens(vec![(SPECIALS[0], bos)])
            .build()
            .unwrap(),
    ));
    let tk: Tokenizer = tk.into();
    tk.save(dir.join("tokenizer.json"), true).unwrap();
    let config = serde_json::json!({
        "bos_token": SPECIALS[0],
        "eos_token": "<|eot_id|>",
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": 256,
    });
    write_json(&dir.join("tokenizer_config.json"), &config);
}

fn write_json(path: &Path, v: &impl serde::Serialize) {
    let mut s = serde_json::to_string_pretty(v).unwrap();
    s.push('\n');
    std::fs::write(path, s).unwrap();
}

/// One chat example's token ids (at most SEQ) and where the answer starts.
struct Example {
    ids: Vec<u32>,
    answer_from: usize,
}

/// Chat examples: the paragraph's first words as the user's request to continue,
/// the rest as the assistant's answer, ended by `<|eot_id|>`.
fn examples(paras: &[String], prompter: &Prompter) -> Vec<Example> {
    paras
        .iter()
        .map(|p| {
            let words: Vec<&str> = p.split(' ').collect();
            let cut = 8.min(words.len() / 2);
            let messages = [Message {
                role: Role::User,
                content: format!("Continue: {}", words[..cut].join(" ")),
            }];
            let mut ids = prompter
                .encode(&prompter.render(&messages).unwrap(), false)
                .unwrap();
            let answer_from = ids.len();
            ids.extend(prompter.encode(&words[cut..].join(" "), false).unwrap());
            ids.truncate(SEQ - 1);
            ids.push(prompter.eos_id);
            Example { ids, answer_from }
        })
        .collect()
}

fn config(vocab: usize, hidden: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: hidden * 11 / 4,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 256,
        tie_word_embeddings: true,
        rope_scaling: None,
    }
}

/// `[b, SEQ-1]` inputs, targets and a mask of the target positions to count: every
/// real one, or with `answers_only` those of the assistant's answer.
fn batch(
    seqs: &[&Example],
    answers_only: bool,
    pad: u32,
    dev: &Device,
) -> (Tensor, Tensor, Tensor) {
    let (mut x, mut y, mut m) = (Vec::new(), Vec::new(), Vec::new());
    for e in seqs {
        let s = &e.ids;
        for i in 0..SEQ - 1 {
            x.push(s.get(i).copied().unwrap_or(pad));
            y.push(s.get(i + 1).copied().unwrap_or(pad));
            let counted = i + 1 < s.len() && (!answers_only || i + 1 >= e.answer_from);
            m.push(if counted { 1f32 } else { 0.0 });
        }
    }
    let shape = (seqs.len(), SEQ - 1);
    (
        Tensor::from_vec(x, shape, dev).unwrap(),
        Tensor::from_vec(y, shape, dev).unwrap(),
        Tensor::from_vec(m, shape, dev).unwrap(),
    )
}

/// Mean negative log-likelihood of the answer tokens, and the mean top-1 probability
/// at their positions.
fn evaluate(model: &Llama, seqs: &[&Example], pad: u32, dev: &Device) -> (f32, f32) {
    let (x, y, m) = batch(seqs, true, pad, dev);
    let lp = model.log_probs(&x).unwrap();
    let nll = masked_nll(&lp, &y, &m).to_scalar::<f32>().unwrap();
    let top1 = lp.max(D::Minus1).unwrap().exp().unwrap();
    let top1 = ((top1 * &m).unwrap().sum_all().unwrap() / m.sum_all().unwrap())
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    (nll, top1)
}

fn masked_nll(lp: &Tensor, y: &Tensor, m: &Tensor) -> Tensor {
    let picked = lp
        .gather(&y.unsqueeze(2).unwrap(), 2)
        .unwrap()
        .squeeze(2)
        .unwrap();
    ((picked * m).unwrap().sum_all().unwrap() / m.sum_all().unwrap())
        .unwrap()
        .neg()
        .unwrap()
}

struct Trained {
    nll: f32,
    top1: f32,
}

#[allow(clippy::too_many_arguments)]
fn train(
    dir: &Path,
    data: &[Example],
    held_out: &[Example],
    vocab: usize,
    pad: u32,
    seed: u64,
    steps: usize,
    hidden: usize,
) -> Trained {
    let dev = Device::Cpu;
    let cfg = config(vocab, hidden);
    let mut varmap = VarMap::new();
    let model = Llama::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        cfg.clone(),
        Numerics::default(),
        true,
    )
    .unwrap();
    // Seeded initialization: norms at 1, the rest uniform with standard deviation 0.02.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut names: Vec<(String, Vec<usize>)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    names.sort();
    let a = 0.02 * 3f32.sqrt();
    for (name, dims) in &names {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else {
            (0..n).map(|_| rng.random_range(-a..a)).collect()
        };
        varmap
            .set_one(
                name,
                Tensor::from_vec(values, dims.as_slice(), &dev).unwrap(),
            )
            .unwrap();
    }
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: 3e-3,
            weight_decay: 0.01,
            ..Default::default()
        },
    )
    .unwrap();
    let held: Vec<&Example> = held_out.iter().collect();
    let mut order: Vec<usize> = (0..data.len()).collect();
    let start = std::time::Instant::now();
    for step in 0..steps {
        if step % (data.len() / BATCH) == 0 {
            order.shuffle(&mut rng);
        }
        let k = (step % (data.len() / BATCH)) * BATCH;
        let seqs: Vec<&Example> = order[k..k + BATCH].iter().map(|&i| &data[i]).collect();
        let (x, y, m) = batch(&seqs, false, pad, &dev);
        // Linear decay to a tenth of the rate by the end.
        let lr = 3e-3 * (1.0 - 0.9 * step as f64 / steps as f64);
        opt.set_learning_rate(lr);
        let loss = masked_nll(&model.log_probs(&x).unwrap(), &y, &m);
        opt.backward_step(&loss).unwrap();
        if step % 200 == 0 || step + 1 == steps {
            let (nll, top1) = evaluate(&model, &held, pad, &dev);
            eprintln!(
                "{}: step {step}: train {:.3}, held-out answers: nll {nll:.3}, mean top-1 p {top1:.3} ({:.0} s)",
                dir.display(),
                loss.to_scalar::<f32>().unwrap(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    let (nll, top1) = evaluate(&model, &held, pad, &dev);
    std::fs::create_dir_all(dir).unwrap();
    write_json(&dir.join("config.json"), &cfg);
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    write_json(
        &dir.join("training.json"),
        &serde_json::json!({
            "text": "fixtures/text/alice29.txt",
            "seed": seed,
            "steps": steps,
            "hidden_size": hidden,
            "batch": BATCH,
            "train_examples": data.len(),
            "held_out_examples": held_out.len(),
            "held_out_answer_nll": (f64::from(nll) * 1000.0).round() / 1000.0,
            "held_out_answer_mean_top1_prob": (f64::from(top1) * 1000.0).round() / 1000.0,
        }),
    );
    Trained { nll, top1 }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("fixtures/text/alice29.txt")).unwrap();
    let paras = paragraphs(&text);
    let models = root.join("fixtures/models");
    let main_dir = models.join("tiny-alice");
    let alt_dir = models.join("tiny-alice-alt");
    let suspects = std::env::args().nth(1).as_deref() == Some("suspects");
    for d in [&main_dir, &alt_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    if !suspects {
        train_tokenizer(&paras, &main_dir);
    }
    let prompter = Prompter::load(&main_dir).unwrap();
    let vocab = prompter.tokenizer.get_vocab_size(true);
    let all = examples(&paras, &prompter);
    // Every tenth paragraph is held out for evaluation (and for the tests' prompts).
    let (mut data, mut held) = (Vec::new(), Vec::new());
    for (i, e) in all.into_iter().enumerate() {
        if i % 10 == 0 {
            held.push(e)
        } else {
            data.push(e)
        }
    }
    eprintln!(
        "{} paragraphs: {} training and {} held-out examples; vocabulary {vocab}",
        paras.len(),
        data.len(),
        held.len()
    );
    let pad = prompter.eos_id;
    let copy_tokenizer = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(main_dir.join(f), to.join(f)).unwrap();
        }
    };
    if suspects {
        let small_dir = models.join("tiny-alice-small");
        copy_tokenizer(&small_dir);
        let small = train(&small_dir, &data, &held, vocab, pad, 3, 600, 32);
        println!(
            "tiny-alice-small: held-out nll {:.3}, mean top-1 p {:.3}",
            small.nll, small.top1
        );
        for bits in [4, 8] {
            let dir = models.join(format!("tiny-alice-q{bits}"));
            copy_tokenizer(&dir);
            quantized(&main_dir, &dir, bits);
        }
        return;
    }
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(600);
    let main = train(&main_dir, &data, &held, vocab, pad, 1, steps, 64);
    copy_tokenizer(&alt_dir);
    let alt = train(&alt_dir, &data, &held, vocab, pad, 2, steps, 64);
    println!(
        "tiny-alice: held-out nll {:.3}, mean top-1 p {:.3}; tiny-alice-alt: nll {:.3}, top-1 p {:.3}",
        main.nll, main.top1, alt.nll, alt.top1
    );
}

/// `from`'s weights round-tripped through `bits`-bit per-row quantization, written
/// dequantized to `to` with `from`'s config.
fn quantized(from: &Path, to: &Path, bits: u32) {
    let dev = Device::Cpu;
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(from.join("model.safetensors"), &dev)
            .unwrap()
            .into_iter()
            .map(|(name, t)| {
                let q = proctor::llm::model::quantize_rows(t, bits).unwrap();
                (name, q)
            })
            .collect();
    std::fs::copy(from.join("config.json"), to.join("config.json")).unwrap();
    candle_core::safetensors::save(&tensors, to.join("model.safetensors")).unwrap();
    write_json(
        &to.join("training.json"),
        &serde_json::json!({
            "quantized_from": from.file_name().unwrap().to_string_lossy(),
            "bits": bits,
            "method": "symmetric per-row absmax, round to nearest (proctor::llm::model::quantize_rows), every matrix; stored dequantized in f32",
        }),
    );
    eprintln!("{}: {bits}-bit weights of {}", to.display(), from.display());
}

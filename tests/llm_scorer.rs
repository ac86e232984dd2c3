//! The candle scorer on the committed fixture model (fixtures/models/tiny-alice): it
//! scores exactly what it generates, batching and padding change nothing, the model is
//! peaked like a language model, and honest and cheating miners simulated with the
//! real generation code are told apart by the LLM checks.

use std::path::PathBuf;

use candle_core::{DType, Device};
use proctor::checks::llm::{self, TokenScores};
use proctor::llm::model::{AttentionPrecision, Numerics};
use proctor::llm::{Sampling, ScoreJob, Scorer};
use proctor::record::{LlmInput, Message, Role};
use proctor::rules::Rules;

fn model_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models")
        .join(name)
}

fn scorer(name: &str, dtype: DType) -> Scorer {
    let numerics = Numerics {
        dtype,
        attention: AttentionPrecision::F32,
    };
    Scorer::load(&model_dir(name), numerics, &Device::Cpu).unwrap()
}

/// Held-out paragraph openings of the book as chat jobs (the generator trains on
/// every paragraph but each tenth).
fn jobs(temperature: f64) -> Vec<LlmInput> {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/text/alice29.txt"),
    )
    .unwrap();
    text.replace("\r\n", "\n")
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| p.len() >= 80)
        .step_by(10)
        .take(12)
        .enumerate()
        .map(|(i, p)| {
            let words: Vec<&str> = p.split(' ').take(8).collect();
            LlmInput {
                messages: Some(vec![Message {
                    role: Role::User,
                    content: format!("Continue: {}", words.join(" ")),
                }]),
                prompt: None,
                temperature,
                max_tokens: 48,
                seed: Some(1000 + i as i64),
                ..Default::default()
            }
        })
        .collect()
}

fn sampling(input: &LlmInput, temperature: f64) -> Sampling {
    Sampling {
        max_tokens: input.max_tokens as usize,
        temperature,
        seed: input.seed.unwrap_or(0) as u64,
        top_logprobs: 0,
    }
}

/// Texts `miner` generates for `inputs` at `temperature`, `batch` prompts per pass.
fn generate(miner: &Scorer, inputs: &[LlmInput], temperature: f64, batch: usize) -> Vec<String> {
    let mut texts = Vec::new();
    for chunk in inputs.chunks(batch) {
        let prompts: Vec<Vec<u32>> = chunk
            .iter()
            .map(|i| miner.prompter.prompt_ids(i).unwrap())
            .collect();
        let s: Vec<Sampling> = chunk.iter().map(|i| sampling(i, temperature)).collect();
        texts.extend(
            miner
                .generate(&prompts, &s)
                .unwrap()
                .into_iter()
                .map(|g| g.text),
        );
    }
    texts
}

fn score_all(reference: &Scorer, inputs: &[LlmInput], texts: &[String]) -> Vec<TokenScores> {
    let jobs: Vec<ScoreJob<'_>> = inputs
        .iter()
        .zip(texts)
        .map(|(input, text)| ScoreJob { input, text })
        .collect();
    reference
        .score_batch(&jobs)
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

fn mean_logprob(scores: &[TokenScores]) -> f64 {
    let lps: Vec<f64> = scores
        .iter()
        .flat_map(|s| s.tokens.iter().map(|t| t.logprob))
        .collect();
    lps.iter().sum::<f64>() / lps.len() as f64
}

/// Jobs with at least one failing LLM check under the shipped rules. (Their LLM
/// thresholds were set for a 128k-token vocabulary; calibrating them per model is the
/// `proctor calibrate` work, so only the honest side is asserted on them here.)
fn flagged(inputs: &[LlmInput], texts: &[String], scores: &[TokenScores]) -> usize {
    let rules = Rules::embedded().unwrap();
    inputs
        .iter()
        .zip(texts)
        .zip(scores)
        .filter(|((input, text), s)| {
            assert_eq!(s.problem(text), None, "scores must be well formed");
            llm::check(s, input, None, &rules.checks.llm)
                .iter()
                .any(|(_, o)| o.is_fail())
        })
        .count()
}

#[test]
fn greedy_output_scores_rank_one_with_the_generation_logprobs() {
    let s = scorer("tiny-alice", DType::F32);
    let inputs = jobs(0.0);
    let prompts: Vec<Vec<u32>> = inputs[..3]
        .iter()
        .map(|i| s.prompter.prompt_ids(i).unwrap())
        .collect();
    let sampled = s
        .generate(
            &prompts,
            &inputs[..3]
                .iter()
                .map(|i| Sampling {
                    top_logprobs: 3,
                    ..sampling(i, 0.0)
                })
                .collect::<Vec<_>>(),
        )
        .unwrap();
    for (input, g) in inputs.iter().zip(&sampled) {
        assert!(!g.ids.is_empty());
        let scores = s
            .score(ScoreJob {
                input,
                text: &g.text,
            })
            .unwrap();
        assert_eq!(scores.problem(&g.text), None);
        let ids: Vec<u32> = scores.tokens.iter().map(|t| t.id).collect();
        assert_eq!(
            ids, g.ids,
            "re-tokenizing the text gives the generated tokens"
        );
        for (i, (t, lp)) in scores.tokens.iter().zip(&g.logprobs).enumerate() {
            assert_eq!(t.rank, 1, "greedy token {i} must be the argmax");
            assert_eq!(t.top[0].id, t.id);
            assert!(
                (t.logprob - lp).abs() < 1e-4,
                "token {i}: {} vs {lp}",
                t.logprob
            );
            assert_eq!(g.top[i][0].id, t.id);
        }
        if g.finished {
            // It stopped because EOS was the argmax after the last token.
            assert!((scores.end_eos_logprob - scores.end_top_logprob).abs() < 1e-6);
        }
    }
}

#[test]
fn batching_and_padding_do_not_change_scores() {
    let s = scorer("tiny-alice", DType::F32);
    let inputs = jobs(0.8);
    let texts = generate(&s, &inputs[..4], 0.8, 1);
    let together = score_all(&s, &inputs[..4], &texts);
    for (i, (input, text)) in inputs.iter().zip(&texts).enumerate() {
        let alone = s.score(ScoreJob { input, text }).unwrap();
        assert_eq!(alone.tokens.len(), together[i].tokens.len());
        for (a, b) in alone.tokens.iter().zip(&together[i].tokens) {
            assert_eq!((a.id, a.rank), (b.id, b.rank));
            assert!((a.logprob - b.logprob).abs() < 1e-4);
        }
    }
}

#[test]
fn the_fixture_model_is_peaked_like_a_language_model() {
    let s = scorer("tiny-alice", DType::F32);
    let inputs = jobs(0.7);
    let texts = generate(&s, &inputs, 0.7, 4);
    let scores = score_all(&s, &inputs, &texts);
    let top1: Vec<f64> = scores
        .iter()
        .flat_map(|s| s.tokens.iter().map(|t| t.top[0].logprob.exp()))
        .collect();
    let mean = top1.iter().sum::<f64>() / top1.len() as f64;
    eprintln!(
        "mean top-1 probability over {} answer tokens: {mean:.3}",
        top1.len()
    );
    // A uniform model over 512 tokens gives 0.002; a random-weight one about that.
    assert!(mean > 0.15, "mean top-1 probability {mean:.3}");
}

#[test]
fn honest_variation_passes_and_cheats_score_lower() {
    let reference = scorer("tiny-alice", DType::F32);
    let inputs = jobs(0.7);
    // Honest: the same weights, in bf16, four prompts per batch.
    let honest_miner = scorer("tiny-alice", DType::BF16);
    let honest = generate(&honest_miner, &inputs, 0.7, 4);
    let honest_scores = score_all(&reference, &inputs, &honest);
    assert_eq!(flagged(&inputs, &honest, &honest_scores), 0);
    let h = mean_logprob(&honest_scores);
    // Cheats: another model trained on the same book; a hotter sampler than asked;
    // canned text that never came from a model.
    let other = generate(&scorer("tiny-alice-alt", DType::F32), &inputs, 0.7, 1);
    let hot = generate(&reference, &inputs, 1.5, 4);
    let canned: Vec<String> = inputs
        .iter()
        .map(|_| {
            "I'm sorry, but as an AI language model I cannot help with that request.".to_owned()
        })
        .collect();
    let mut lowest = Vec::new();
    for (name, texts) in [
        ("another model", &other),
        ("temperature 1.5", &hot),
        ("canned", &canned),
    ] {
        let scores = score_all(&reference, &inputs, texts);
        let m = mean_logprob(&scores);
        let flags = flagged(&inputs, texts, &scores);
        eprintln!(
            "{name}: mean logprob {m:.3} vs honest {h:.3}; flagged by the shipped rules: {flags} of {}",
            inputs.len()
        );
        lowest.push((name, m));
    }
    for (name, m) in lowest {
        assert!(m < h - 0.3, "{name}: mean logprob {m:.3} vs honest {h:.3}");
    }
}

#[test]
fn bf16_scores_stay_close_to_f32() {
    let (f32s, bf16s) = (
        scorer("tiny-alice", DType::F32),
        scorer("tiny-alice", DType::BF16),
    );
    let inputs = jobs(0.7);
    let texts = generate(&f32s, &inputs[..4], 0.7, 4);
    let (a, b) = (
        score_all(&f32s, &inputs[..4], &texts),
        score_all(&bf16s, &inputs[..4], &texts),
    );
    let diffs: Vec<f64> = a
        .iter()
        .zip(&b)
        .flat_map(|(x, y)| {
            x.tokens
                .iter()
                .zip(&y.tokens)
                .map(|(p, q)| (p.logprob - q.logprob).abs())
        })
        .collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    assert!(mean < 0.1, "mean |Δ logprob| bf16 vs f32 = {mean:.4}");
    assert!(mean > 0.0, "bf16 must actually run in another precision");
}

#[test]
fn quantized_weights_score_lower_the_fewer_bits_they_keep() {
    let reference = scorer("tiny-alice", DType::F32);
    let inputs = jobs(0.7);
    let honest = generate(&reference, &inputs, 0.7, 4);
    let h = mean_logprob(&score_all(&reference, &inputs, &honest));
    let dir = model_dir("tiny-alice");
    let mut by_bits = Vec::new();
    for bits in [8, 4, 3] {
        let miner = Scorer::load_quantized(&dir, bits, Numerics::default(), &Device::Cpu).unwrap();
        let texts = generate(&miner, &inputs, 0.7, 4);
        let m = mean_logprob(&score_all(&reference, &inputs, &texts));
        eprintln!("int{bits} weights: mean logprob {m:.3} vs honest {h:.3}");
        by_bits.push(m);
    }
    // 8 bits is within sampling noise of honest; 3 bits is well below it.
    assert!(
        (by_bits[0] - h).abs() < 0.3,
        "int8 {:.3} vs {h:.3}",
        by_bits[0]
    );
    assert!(by_bits[2] < h - 0.3, "int3 {:.3} vs {h:.3}", by_bits[2]);
}

/// The prefill spoof: text from another model, with the reference's own probabilities
/// of those tokens (one cheap prefill pass of the reference) reported as the miner's.
/// Comparing reported logprobs cannot catch it, by construction; what catches it is the
/// same as for any substituted model: how likely the reference finds the tokens chosen.
/// Teacher forcing cannot tell apart texts whose tokens the reference itself would have
/// sampled, however they were produced (speculative decoding with the reference as
/// verifier is one honest way); it can only judge the tokens, never the compute.
#[test]
fn a_prefill_spoof_passes_the_logprob_comparison_and_is_judged_on_its_tokens() {
    let reference = scorer("tiny-alice", DType::F32);
    let rules = Rules::embedded().unwrap();
    let inputs = jobs(0.7);
    let other = generate(&scorer("tiny-alice-alt", DType::F32), &inputs, 0.7, 1);
    let scores = score_all(&reference, &inputs, &other);
    for ((input, _), s) in inputs.iter().zip(&other).zip(&scores) {
        let spoofed: Vec<f64> = s.tokens.iter().map(|t| t.logprob).collect();
        let outcomes = llm::check(s, input, Some(&spoofed), &rules.checks.llm);
        let delta = outcomes
            .iter()
            .find(|(c, _)| *c == proctor::outcome::CheckId::LlmLogprobDelta)
            .unwrap();
        assert!(
            !delta.1.is_fail(),
            "spoofed logprobs match the reference exactly"
        );
    }
    let honest = generate(&reference, &inputs, 0.7, 4);
    let h = mean_logprob(&score_all(&reference, &inputs, &honest));
    assert!(mean_logprob(&scores) < h - 0.3);
}

#[test]
fn a_kv_cache_gives_the_hidden_states_of_the_whole_sequence() {
    // The generation baseline of examples/bench_scoring.rs keeps keys and values
    // between steps; it must compute what the full forward pass computes.
    let s = scorer("tiny-alice", DType::F32);
    let ids: Vec<u32> = s
        .prompter
        .encode(
            "Alice was beginning to get very tired of sitting by her sister",
            false,
        )
        .unwrap();
    assert!(ids.len() > 8, "{ids:?}");
    let tokens = |ids: &[u32]| {
        candle_core::Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
    };
    let full = s.model.hidden(&tokens(&ids)).unwrap().squeeze(0).unwrap();
    let mut cache = proctor::llm::model::KvCache::new();
    let prefill = 5;
    let mut rows = vec![
        s.model
            .hidden_cached(&tokens(&ids[..prefill]), &mut cache)
            .unwrap()
            .squeeze(0)
            .unwrap(),
    ];
    for &id in &ids[prefill..] {
        rows.push(
            s.model
                .hidden_cached(&tokens(&[id]), &mut cache)
                .unwrap()
                .squeeze(0)
                .unwrap(),
        );
    }
    assert_eq!(cache.len(), ids.len());
    let cached = candle_core::Tensor::cat(&rows, 0).unwrap();
    let worst = (full - cached)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(worst < 1e-4, "cached hidden states differ by {worst}");
}

/// The token count's limit: prompt and output together may be as long as the model
/// holds (its `max_position_embeddings`). A job of exactly that length is scored; one
/// token more is `unscorable`, which the LLM checks report as inconclusive, never as a
/// failure of the miner.
#[test]
fn a_job_as_long_as_the_model_holds_is_scored_and_one_token_more_is_not() {
    let s = scorer("tiny-alice", DType::F32);
    let max = s.model.config.max_position_embeddings;
    let input = &jobs(0.7)[0];
    let prompt = s.prompter.prompt_ids(input).unwrap().len();
    let book = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/text/alice29.txt"),
    )
    .unwrap();
    let ids = s.prompter.encode(&book[..20_000], false).unwrap();
    // A text that encodes to exactly `n` tokens: a decoded prefix of the book's tokens
    // (a cut can merge with its neighbour, so try a few).
    let text_of = |n: usize| -> String {
        (n..n + 8)
            .map(|cut| s.prompter.decode(&ids[..cut]).unwrap())
            .find(|t| s.prompter.encode(t, false).unwrap().len() == n)
            .unwrap_or_else(|| panic!("no text of {n} tokens"))
    };
    let at = text_of(max - prompt);
    let scores = s.score(ScoreJob { input, text: &at }).unwrap();
    assert_eq!(scores.prompt_tokens as usize, prompt);
    assert_eq!(prompt + scores.tokens.len(), max);
    let past = text_of(max - prompt + 1);
    let e = s.score(ScoreJob { input, text: &past }).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "{prompt} + {} tokens; the model holds 1 to {max}",
            max - prompt + 1
        )),
        "{e}"
    );
}

/// The engine-like batched generator: one prompt alone is exactly the KV-cached
/// generator (the same arithmetic), and in a batch of prompts of different lengths each
/// sequence gets its own continuation, with logprobs within float noise of its own
/// alone and the same greedy tokens.
#[test]
fn batched_kv_cached_generation_matches_one_sequence_at_a_time() {
    let s = scorer("tiny-alice", DType::F32);
    let sampled = jobs(0.7);
    let greedy = jobs(0.0);
    let prompts: Vec<Vec<u32>> = sampled
        .iter()
        .take(5)
        .map(|i| s.prompter.prompt_ids(i).unwrap())
        .collect();
    assert!(
        prompts.iter().any(|p| p.len() != prompts[0].len()),
        "the batch needs prompts of different lengths"
    );
    for inputs in [&sampled, &greedy] {
        let t = inputs[0].temperature;
        let samplings: Vec<Sampling> = inputs.iter().take(5).map(|i| sampling(i, t)).collect();
        let alone: Vec<_> = prompts
            .iter()
            .zip(&samplings)
            .map(|(p, sm)| s.generate_cached(p, sm, &[]).unwrap())
            .collect();
        let one = s
            .generate_cached_batch(&prompts[..1], &samplings[..1])
            .unwrap();
        assert_eq!(one[0].ids, alone[0].ids, "T={t}");
        assert_eq!(
            one[0].logprobs, alone[0].logprobs,
            "T={t}: batch 1 is the same arithmetic"
        );
        let batch = s.generate_cached_batch(&prompts, &samplings).unwrap();
        assert_eq!(batch.len(), 5);
        for (b, a) in batch.iter().zip(&alone) {
            assert!(!b.ids.is_empty());
            assert_eq!(b.finished, a.finished);
            let n = b.ids.len().min(a.ids.len());
            if t == 0.0 {
                assert_eq!(b.ids, a.ids, "greedy tokens differ in a batch");
            }
            // The first tokens agree (a sampled text may part at a near-tie later).
            assert_eq!(b.ids[..n.min(8)], a.ids[..n.min(8)]);
            for (x, y) in b.logprobs[..n.min(8)].iter().zip(&a.logprobs[..n.min(8)]) {
                assert!((x - y).abs() < 1e-3, "{x} vs {y}");
            }
            assert_eq!(b.text, s.prompter.decode(&b.ids).unwrap());
        }
    }
    // Nothing to generate: no tokens, and no error.
    let none = Sampling {
        max_tokens: 0,
        ..sampling(&sampled[0], 0.7)
    };
    let got = s.generate_cached_batch(&prompts[..1], &[none]).unwrap();
    assert!(got[0].ids.is_empty() && got[0].text.is_empty());
}

/// A model folder's `generation_config.json` is what its server samples with
/// (`proctor::llm::defaults`): the scorer loads it, generates with it and scores with it.
/// `top_k = 1` leaves a sampler at temperature 1 nothing but the argmax.
#[test]
fn the_folder_s_generation_config_is_how_the_scorer_samples_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir("tiny-alice")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let numerics = Numerics {
        dtype: DType::F32,
        attention: AttentionPrecision::F32,
    };
    let plain = Scorer::load(dir.path(), numerics, &Device::Cpu).unwrap();
    assert!(plain.served.is_plain());
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"bos_token_id": 1, "top_k": 1}"#,
    )
    .unwrap();
    let served = Scorer::load(dir.path(), numerics, &Device::Cpu).unwrap();
    assert_eq!(served.served.top_k, Some(1));
    let inputs = &jobs(1.0)[..4];
    let greedy = generate(&plain, inputs, 0.0, 4);
    let sampled_plain = generate(&plain, inputs, 1.0, 4);
    let sampled_served = generate(&served, inputs, 1.0, 4);
    assert_eq!(sampled_served, greedy, "top_k = 1 samples the argmax");
    assert_ne!(
        sampled_plain, greedy,
        "plain sampling at temperature 1 does not"
    );
    // Scored under the folder's defaults, every sampled token is the one token kept.
    for (input, text) in inputs.iter().zip(&sampled_served) {
        let scores = served.score(ScoreJob { input, text }).unwrap();
        let tempered: Vec<_> = scores.tokens.iter().filter_map(|t| t.tempered).collect();
        assert!(!tempered.is_empty());
        for q in tempered {
            assert_eq!(q.kept, Some(1), "{q:?}");
            assert!(q.logprob.abs() < 1e-9 && q.variance < 1e-12, "{q:?}");
        }
    }
    // A value vLLM would refuse stops the scorer from loading.
    std::fs::write(dir.path().join("generation_config.json"), r#"{"top_p": 0}"#).unwrap();
    assert!(Scorer::load(dir.path(), numerics, &Device::Cpu).is_err());
}

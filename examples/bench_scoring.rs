//! `scripts/bench-scoring`: teacher-forced scoring of an LLM output against generating
//! the same text, with the same model on the same core (the fixture model, CPU, f32).
//!
//! - **generate, KV cache** (the target's baseline): the same tokens generated as a
//!   serving engine does, the prompt in one pass and then one token a step over the
//!   cached keys and values (`Llama::hidden_cached`), each step's logits turned into
//!   the sampling distribution;
//! - **serve-reference's generation**: `Scorer::generate_cached`, the cached generator
//!   with the sampler, logprobs and top-k a completion returns;
//! - **generate, no cache**: `Scorer::generate`, what `serve-reference` ran until
//!   2026-12-07: every step runs the whole sequence again;
//! - **score**: `Scorer::score` on the generated text: one forward pass over prompt and
//!   output, then each output position's rank, top-k, EOS and tempered moments;
//! - **forward only**: the forward pass inside scoring (`Scorer::log_prob_rows`),
//!   to show which half of scoring costs what.
//!
//! Prints the best of `ROUNDS` runs of each and the ratios generate / score (the
//! target: at least 20 against the cached generator). `BENCH_SCORING_MODEL` names
//! another model folder (the real model of `scripts/real-model`); the fixture model by
//! default.
//!
//!   cargo run --release --example bench_scoring -- [TOKENS] [ROUNDS]

use std::time::{Duration, Instant};

use candle_core::Tensor;
use proctor::llm::model::KvCache;
use proctor::llm::{Sampling, ScoreJob, Scorer};
use proctor::record::LlmInput;

fn best<T>(rounds: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..rounds {
        let start = Instant::now();
        let out = f();
        best = best.min(start.elapsed());
        last = Some(out);
    }
    (best, last.expect("at least one round"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let tokens: usize = args.next().map_or(94, |t| t.parse().expect("TOKENS"));
    let rounds: usize = args.next().map_or(5, |r| r.parse().expect("ROUNDS"));
    let dir = std::env::var_os("BENCH_SCORING_MODEL").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny-alice"),
        std::path::PathBuf::from,
    );
    let scorer = Scorer::load(
        &dir,
        Default::default(),
        &proctor::llm::device("cpu").unwrap(),
    )
    .unwrap();
    let input: LlmInput = serde_json::from_value(serde_json::json!({
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Tell me what Alice saw when she fell down the rabbit hole."}
        ],
        "temperature": 1.0,
        "max_tokens": tokens,
        "seed": 7
    }))
    .unwrap();
    let prompt = scorer.prompter.prompt_ids(&input).unwrap();
    // The first seed whose text runs to TOKENS tokens without drawing EOS (searched with
    // the cached generator: the uncached one takes a minute a try on a real model).
    let sampling = (0..200)
        .map(|seed| Sampling {
            max_tokens: tokens,
            temperature: 1.0,
            seed,
            top_logprobs: 0,
        })
        .find(|s| scorer.generate_cached(&prompt, s, &[]).unwrap().ids.len() == tokens)
        .expect("no seed in 200 runs to TOKENS tokens");
    let (t_generate, generated) = best(rounds, || {
        scorer
            .generate(
                std::slice::from_ref(&prompt),
                std::slice::from_ref(&sampling),
            )
            .unwrap()
            .pop()
            .unwrap()
    });
    let (t_serve, _) = best(rounds, || {
        scorer.generate_cached(&prompt, &sampling, &[]).unwrap()
    });
    let tokens = |ids: &[u32]| {
        Tensor::new(ids, scorer.model.device())
            .unwrap()
            .unsqueeze(0)
            .unwrap()
    };
    let (t_cached, _) = best(rounds, || {
        let mut cache = KvCache::new();
        let mut last = scorer
            .model
            .hidden_cached(&tokens(&prompt), &mut cache)
            .unwrap()
            .narrow(1, prompt.len() - 1, 1)
            .unwrap();
        for &id in &generated.ids {
            let logits: Vec<f32> = scorer
                .model
                .logits(&last)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // What a sampler reads: the distribution's normalizer.
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            std::hint::black_box(logits.iter().map(|l| (l - max).exp()).sum::<f32>());
            last = scorer
                .model
                .hidden_cached(&tokens(&[id]), &mut cache)
                .unwrap();
        }
        cache.len()
    });
    let job = ScoreJob {
        input: &input,
        text: &generated.text,
    };
    let (t_score, scores) = best(rounds, || scorer.score(job).unwrap());
    let seq: Vec<u32> = prompt
        .iter()
        .copied()
        .chain(scorer.prompter.encode(&generated.text, false).unwrap())
        .collect();
    let (t_forward, _) = best(rounds, || {
        scorer
            .log_prob_rows(&[(seq.as_slice(), prompt.len())])
            .unwrap()
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "model {}, CPU f32; prompt {} tokens, {} generated, {} positions scored; best of {rounds}",
        dir.display(),
        prompt.len(),
        generated.ids.len(),
        scores.tokens.len()
    );
    println!(
        "{:<44} {:>10.2} ms",
        "generate, KV cache (Llama::hidden_cached)",
        ms(t_cached)
    );
    println!(
        "{:<44} {:>10.2} ms",
        "serve-reference (Scorer::generate_cached)",
        ms(t_serve)
    );
    println!(
        "{:<44} {:>10.2} ms",
        "generate, no cache (Scorer::generate)",
        ms(t_generate)
    );
    println!("{:<44} {:>10.2} ms", "score (Scorer::score)", ms(t_score));
    println!(
        "{:<44} {:>10.2} ms",
        "  of which the forward pass",
        ms(t_forward)
    );
    println!(
        "speed ratio score / generate with a KV cache: {:.1} (target >= 20); / generate without one: {:.1}",
        t_cached.as_secs_f64() / t_score.as_secs_f64(),
        t_generate.as_secs_f64() / t_score.as_secs_f64()
    );
    println!(
        "serve-reference's generation, cached against uncached: {:.1}x faster",
        t_generate.as_secs_f64() / t_serve.as_secs_f64()
    );
}

//! What a reference host sends back, which a compromised or broken host controls: a
//! stored `scores.json`, an OpenAI-compatible completion answer with prompt logprobs,
//! and a txt2img answer. The first byte picks which. Never a panic; whatever scores are
//! accepted, the LLM checks judge an honest demo job with them without a panic, and a
//! txt2img answer yields bytes the image decoder then takes under its limits.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use proctor::checks::llm::TokenScores;
use proctor::checks::{Checker, Fetched, Stream, StreamState};
use proctor::llm::template::Prompter;
use proctor::record::{Job, JobRecord};
use proctor::reference::{HttpScorer, Txt2Img};
use proctor::rules::Rules;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct World {
    checker: Checker,
    record: JobRecord,
    text: String,
    scorer: HttpScorer,
    ids: Vec<u32>,
    prompt_len: usize,
    txt2img: Txt2Img,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let rules = Rules::embedded().unwrap();
    let jobs = std::fs::read_to_string(repo().join("fixtures/audit-demo/jobs.jsonl")).unwrap();
    let record = jobs
        .lines()
        .map(|l| JobRecord::from_json(l.as_bytes()).unwrap())
        .find(|r| r.job_id.as_str().starts_with("llm-honest"))
        .unwrap();
    let Job::Llm { input, output } = &record.job else {
        unreachable!()
    };
    let text = output.text.clone().unwrap_or_default();
    let prompter = Prompter::load(&repo().join("fixtures/models/tiny-alice")).unwrap();
    let prompt = prompter.prompt_ids(input).unwrap();
    let prompt_len = prompt.len();
    let ids = prompt
        .into_iter()
        .chain(prompter.encode(&text, false).unwrap())
        .collect();
    World {
        checker: Checker::new(rules.clone()).unwrap(),
        scorer: HttpScorer::new(
            "http://127.0.0.1:9",
            "tiny-alice",
            prompter,
            Duration::from_secs(1),
        ),
        txt2img: Txt2Img::new(
            "http://127.0.0.1:9",
            Duration::from_secs(1),
            rules.checks.image.max_object_bytes as usize,
        ),
        record,
        text,
        ids,
        prompt_len,
    }
});

fn judge(w: &World, scores: TokenScores) {
    let fetched = Fetched {
        scores: Some(scores),
        ..Fetched::default()
    };
    let mut stream = StreamState::new();
    let _ = w
        .checker
        .evaluate(&w.record, &fetched, Stream::Live(&mut stream));
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let w = &*WORLD;
    match pick % 3 {
        0 => {
            if let Ok(scores) = serde_json::from_slice::<TokenScores>(rest) {
                let _ = scores.problem(&w.text);
                judge(w, scores);
            }
        }
        1 => {
            if let Ok(scores) = w
                .scorer
                .scores_from_answer(&w.ids, w.prompt_len, &w.text, rest)
            {
                assert_eq!(
                    scores.problem(&w.text),
                    None,
                    "the scores are for the text sent"
                );
                judge(w, scores);
            }
        }
        _ => {
            if let Ok(bytes) = w.txt2img.image_from_answer(rest) {
                assert!(bytes.len() <= w.txt2img.max_image_bytes + 3);
                let rules = &w.checker.rules().checks.image;
                let _ = proctor::checks::image::decode(&bytes, rules);
            }
        }
    }
});

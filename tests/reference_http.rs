//! The HTTP reference runners over loopback: the HTTP scorer against `proctor
//! serve-reference` (the candle scorer behind vLLM's wire format) must give the scores
//! the in-process scorer gives; generation over HTTP reproduces a seeded sample; a host
//! that is down fails as infrastructure and opens the breaker; the txt2img client
//! sends the clamped job and returns the replayed image.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use base64::Engine;
use candle_core::Device;
use proctor::llm::model::Numerics;
use proctor::llm::serve::{CompletionRequest, CompletionResponse, Prompt};
use proctor::llm::template::Prompter;
use proctor::llm::{Sampling, ScoreError, ScoreJob, Scorer};
use proctor::record::{LlmInput, Message, Role, SdInput};
use proctor::reference::{Breaker, HttpScorer, Txt2Img, Txt2ImgRequest};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny-alice")
}

fn scorer() -> Scorer {
    Scorer::load(&model_dir(), Numerics::default(), &Device::Cpu).unwrap()
}

/// Serves `router` on a free loopback port; returns its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn job(words: &str) -> LlmInput {
    LlmInput {
        messages: Some(vec![Message {
            role: Role::User,
            content: format!("Continue: {words}"),
        }]),
        prompt: None,
        temperature: 0.7,
        max_tokens: 40,
        seed: Some(11),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_scorer_matches_the_in_process_scorer() {
    let local = scorer();
    let url = serve(proctor::llm::serve::router(scorer())).await;
    let http = HttpScorer::new(
        &url,
        "tiny-alice",
        Prompter::load(&model_dir()).unwrap(),
        Duration::from_secs(30),
    );
    for words in [
        "Alice was beginning to get very tired",
        "The Queen turned crimson with fury",
    ] {
        let input = job(words);
        let prompt = local.prompter.prompt_ids(&input).unwrap();
        let text = local
            .generate(
                &[prompt],
                &[Sampling {
                    max_tokens: 40,
                    temperature: 0.7,
                    seed: 11,
                    top_logprobs: 0,
                }],
            )
            .unwrap()
            .pop()
            .unwrap()
            .text;
        let want = local
            .score(ScoreJob {
                input: &input,
                text: &text,
            })
            .unwrap();
        let got = http.score(&input, &text).await.unwrap();
        assert_eq!(got.problem(&text), None);
        assert_eq!(got.prompt_tokens, want.prompt_tokens);
        assert_eq!(got.tokens.len(), want.tokens.len());
        for (i, (g, w)) in got.tokens.iter().zip(&want.tokens).enumerate() {
            assert_eq!((g.id, g.rank), (w.id, w.rank), "token {i}");
            assert!((g.logprob - w.logprob).abs() < 1e-5, "token {i}");
            let (gt, wt): (Vec<u32>, Vec<u32>) = (
                g.top.iter().map(|a| a.id).collect(),
                w.top.iter().map(|a| a.id).collect(),
            );
            assert_eq!(gt, wt, "token {i} alternatives");
            // Exact where EOS is in the top-k, an upper bound elsewhere.
            if w.top.iter().any(|a| a.id == want.eos_token_id) {
                assert!((g.eos_logprob - w.eos_logprob).abs() < 1e-5);
            } else {
                assert!(g.eos_logprob >= w.eos_logprob);
            }
        }
        assert!((got.end_top_logprob - want.end_top_logprob).abs() < 1e-5);
        assert!(got.end_eos_logprob >= want.end_eos_logprob - 1e-5);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn generation_over_http_reproduces_a_seeded_sample() {
    let local = scorer();
    let url = serve(proctor::llm::serve::router(scorer())).await;
    let prompt = local
        .prompter
        .prompt_ids(&job("Down the Rabbit-Hole she went"))
        .unwrap();
    let want = local
        .generate(
            std::slice::from_ref(&prompt),
            &[Sampling {
                max_tokens: 24,
                temperature: 0.9,
                seed: 5,
                top_logprobs: 3,
            }],
        )
        .unwrap()
        .pop()
        .unwrap();
    let req = CompletionRequest {
        model: None,
        prompt: Prompt::Ids(prompt),
        max_tokens: 24,
        temperature: Some(0.9),
        seed: Some(5),
        logprobs: Some(3),
        echo: false,
        prompt_logprobs: None,
    };
    let resp: CompletionResponse = reqwest::Client::new()
        .post(format!("{url}/v1/completions"))
        .json(&req)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let choice = &resp.choices[0];
    assert_eq!(choice.text, want.text);
    let lp = choice.logprobs.as_ref().unwrap();
    assert_eq!(lp.token_ids, want.ids);
    assert_eq!(lp.top_logprobs.len(), want.ids.len());
    assert!(
        lp.top_logprobs
            .iter()
            .all(|m| !m.is_empty() && m.len() <= 3)
    );
    assert_eq!(resp.usage.completion_tokens, want.ids.len());

    // max_tokens 0 is refused as a bad request, with OpenAI's error shape.
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/completions"))
        .json(&serde_json::json!({"prompt": "Alice", "max_tokens": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_is_down_fails_as_infrastructure_and_opens_the_breaker() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = HttpScorer::new(
        &format!("http://127.0.0.1:{port}"),
        "tiny-alice",
        Prompter::load(&model_dir()).unwrap(),
        Duration::from_secs(2),
    )
    .with_breaker(Breaker::new(2, Duration::from_secs(60)));
    let input = job("Alice");
    for _ in 0..2 {
        let e = http.score(&input, "said the Hatter").await.unwrap_err();
        assert!(matches!(e, ScoreError::Failed(_)), "{e}");
    }
    let e = http.score(&input, "said the Hatter").await.unwrap_err();
    match e {
        ScoreError::Failed(m) => assert!(m.contains("circuit open"), "{m}"),
        other => panic!("expected an open circuit, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn txt2img_sends_the_clamped_job_and_returns_the_replayed_image() {
    let png =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/base/coffee.png"))
            .unwrap();
    let seen: Arc<Mutex<Vec<Txt2ImgRequest>>> = Arc::default();
    let router = {
        let (png, seen) = (png.clone(), seen.clone());
        axum::Router::new().route(
            "/sdapi/v1/txt2img",
            post(move |Json(req): Json<Txt2ImgRequest>| {
                let (png, seen) = (png.clone(), seen.clone());
                async move {
                    seen.lock().unwrap().push(req);
                    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
                    Json(serde_json::json!({"images": [b64], "parameters": {}, "info": "{}"}))
                }
            }),
        )
    };
    let url = serve(router).await;
    let runner = Txt2Img::new(&url, Duration::from_secs(10), 10 << 20);
    let input = SdInput {
        prompt: "a cup of coffee".into(),
        neg_prompt: "blurry".into(),
        width: 1030,
        height: 3000,
        num_iterations: 60,
        guidance_scale: 7.0,
        seed: 1234,
    };
    let got = runner.image(&input).await.unwrap().unwrap();
    assert_eq!(got, png);
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(
        (req.width, req.height, req.steps, req.seed),
        (1024, 2048, 35, 1234)
    );
    assert_eq!(
        (req.prompt.as_str(), req.negative_prompt.as_str()),
        ("a cup of coffee", "blurry")
    );

    // An answer larger than the bound is refused as a failure, not decoded.
    let tiny = Txt2Img::new(&url, Duration::from_secs(10), 1000);
    assert!(tiny.image(&input).await.is_err());
}

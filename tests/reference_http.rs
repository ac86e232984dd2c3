//! The HTTP reference runners over loopback: the HTTP scorer against `proctor
//! serve-reference` (the candle scorer behind vLLM's wire format) must give the scores
//! the in-process scorer gives; generation over HTTP reproduces a seeded sample; a host
//! that is down fails as infrastructure and opens the breaker; the txt2img client
//! sends the clamped job and returns the replayed image.
//!
//! The reference pool over stand-in hosts (tests/support/hosts.rs): faults (a killed
//! host, garbage, HTTP 500, a 4xx) end as an inconclusive reference check and never as
//! a failure; a drifting host is quarantined; full queues shed ordinary jobs while
//! canaries wait; serve-reference's extension gives the in-process sampling moments,
//! and a plain vLLM host leaves `llm_likelihood` inconclusive and says why.

#[path = "support/scope.rs"]
mod scope;
mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use base64::Engine;
use candle_core::Device;
use proctor::checks::{Checker, Fetched, JobVerdict, Stream, StreamState};
use proctor::llm::model::Numerics;
use proctor::llm::serve::{CompletionRequest, CompletionResponse, Prompt};
use proctor::llm::template::Prompter;
use proctor::llm::{Sampling, ScoreError, ScoreJob, Scorer};
use proctor::outcome::{CheckId, Status};
use proctor::record::JobRecord;
use proctor::record::{LlmInput, Message, Role, SdInput};
use proctor::reference::pool::{Output, Pool, Priority, Ran, Work};
use proctor::reference::{Breaker, HttpScorer, Txt2Img, Txt2ImgRequest};
use proctor::rules::Rules;
use proctor::settings::{HostKind, HostSettings, Settings};
use support::hosts::{self, Behaviour, Replay, StandIn};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny-alice")
}

fn scorer() -> Scorer {
    Scorer::load(&model_dir(), Numerics::default(), &Device::Cpu).unwrap()
}

/// The fixture model with the shipped rules' suspect panel for it.
fn scorer_with_panel() -> Scorer {
    let mut s = scorer();
    let panel = proctor::rules::Rules::embedded().unwrap().checks.llm.panel;
    s.panel = proctor::llm::panel::Panel::load(
        &s,
        &panel.suspects_of("tiny-alice"),
        panel.max_suspects,
        model_dir().parent().unwrap(),
        Numerics::default(),
        &Device::Cpu,
    );
    s
}

/// Serves `router` on a free loopback port; returns its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// The fixture model's own sample for `input`, at the job's temperature.
fn sample(scorer: &Scorer, input: &LlmInput, seed: u64) -> String {
    let prompt = scorer.prompter.prompt_ids(input).unwrap();
    let sampling = Sampling {
        max_tokens: input.max_tokens as usize,
        temperature: input.temperature,
        seed,
        top_logprobs: 0,
    };
    let mut out = scorer.generate(&[prompt], &[sampling]).unwrap();
    out.pop().unwrap().text
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
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_scorer_matches_the_in_process_scorer() {
    let local = scorer_with_panel();
    assert_eq!(local.panel.suspects.len(), 7, "the whole panel loaded");
    let url = serve(proctor::llm::serve::router(scorer_with_panel())).await;
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
        let text = sample(&local, &input, 11);
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
        // The suspect panel, over the same tokens: serve-reference's extension.
        assert_eq!(got.panel.len(), want.panel.len());
        for (g, w) in got.panel.iter().zip(&want.panel) {
            assert_eq!((&g.name, g.tokens), (&w.name, w.tokens));
            assert!((g.llr - w.llr).abs() < 1e-3, "{g:?} vs {w:?}");
        }
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
    // The server generates with a KV cache, as a serving engine does.
    let want = local
        .generate_cached(
            &prompt,
            &Sampling {
                max_tokens: 24,
                temperature: 0.9,
                seed: 5,
                top_logprobs: 3,
            },
            &[],
        )
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
        proctor_temperature: None,
        proctor_panel_from: None,
        proctor_stop: None,
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
    // A port nothing listens on. The socket stays bound, without listening,
    // for the whole test: connecting to it is refused, and no other test in
    // this binary can be handed the port for its own server (a freed port
    // was, once, and answered 404).
    let down = tokio::net::TcpSocket::new_v4().unwrap();
    down.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = down.local_addr().unwrap().port();
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

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_over_its_bound_is_refused_before_it_is_read_whole() {
    // A host that streams far more than any image, with and without a length.
    let huge = Arc::new(vec![b'A'; 8 << 20]);
    let router = axum::Router::new()
        .route(
            "/sized/sdapi/v1/txt2img",
            post({
                let huge = huge.clone();
                move || {
                    let huge = huge.clone();
                    async move { axum::body::Body::from(huge.as_ref().clone()) }
                }
            }),
        )
        .route(
            "/streamed/sdapi/v1/txt2img",
            post(move || {
                let chunks = (0..128).map(|_| Ok::<_, std::io::Error>(vec![b'A'; 64 << 10]));
                async move { axum::body::Body::from_stream(futures::stream::iter(chunks)) }
            }),
        );
    let url = serve(router).await;
    let input = SdInput {
        prompt: "a cup of coffee".into(),
        neg_prompt: String::new(),
        width: 512,
        height: 512,
        num_iterations: 20,
        guidance_scale: 7.0,
        seed: 1,
    };
    for (path, says) in [("sized", "over"), ("streamed", "over")] {
        let runner = Txt2Img::new(&format!("{url}/{path}"), Duration::from_secs(10), 1 << 20);
        let e = runner.image(&input).await.unwrap_err();
        assert!(e.contains(says), "{path}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_reference_asks_for_its_token_and_answers_a_full_queue_at_once() {
    let opts = proctor::llm::serve::ServeOptions {
        concurrency: 1,
        queue: 0,
        token: Some("hunter2-but-longer".into()),
        ..Default::default()
    };
    let router = proctor::llm::serve::router_with(
        scorer(),
        &opts,
        proctor::telemetry::Metrics::new("serve-reference"),
        proctor::telemetry::Health::new("serve-reference"),
    );
    let url = serve(router).await;
    let http = |token: Option<&str>| {
        HttpScorer::new(
            &url,
            "tiny-alice",
            Prompter::load(&model_dir()).unwrap(),
            Duration::from_secs(30),
        )
        .with_token(token.map(str::to_owned))
    };
    let input = job("Alice");
    // Without the token, or with another: refused (a 4xx: the request, not the host).
    for token in [None, Some("hunter2")] {
        let e = http(token)
            .score(&input, "said the Hatter")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("401"), "{token:?}: {e}");
    }
    let ok = http(Some("hunter2-but-longer"))
        .score(&input, "said the Hatter")
        .await
        .unwrap();
    assert!(!ok.tokens.is_empty());
    // Health needs no token: the pool's health poll and the metrics scraper.
    for path in ["/health", "/healthz"] {
        let r = reqwest::get(format!("{url}{path}")).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }

    // One slot, no queue: of eight long generations sent at once, those that find the
    // slot taken are answered 503 (with a queue they would wait for it).
    let generate = |client: reqwest::Client| {
        let url = url.clone();
        async move {
            let r = client
                .post(format!("{url}/v1/completions"))
                .bearer_auth("hunter2-but-longer")
                .json(&serde_json::json!({"prompt": "Alice", "max_tokens": 200, "temperature": 1.0, "seed": 3}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    let client = reqwest::Client::new();
    let answers = futures::future::join_all((0..8).map(|_| generate(client.clone()))).await;
    let served = answers.iter().filter(|s| **s == 200).count();
    let shed = answers.iter().filter(|s| **s == 503).count();
    assert_eq!(served + shed, 8, "{answers:?}");
    assert!(served >= 1 && shed >= 1, "{answers:?}");
}

fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/audit-demo")
}

fn demo_record(job_id: &str) -> JobRecord {
    let jobs = std::fs::read_to_string(demo_dir().join("jobs.jsonl")).unwrap();
    let line = jobs
        .lines()
        .find(|l| l.contains(&format!("\"job_id\":\"{job_id}\"")))
        .unwrap();
    JobRecord::from_json(line.as_bytes()).unwrap()
}

fn sd_input(record: &JobRecord) -> &SdInput {
    match &record.job {
        proctor::record::Job::Sd { input, .. } => input,
        _ => panic!("{} is not an SD job", record.job_id),
    }
}

/// The reference settings of a test pool: these hosts, retries bounded at `max_wait`.
fn pool(hosts: Vec<HostSettings>, max_wait_secs: u64, dual_share: f64) -> Pool {
    let mut settings = Settings::load_from(None, Vec::new()).unwrap().reference;
    settings.hosts = hosts;
    settings.max_wait_secs = max_wait_secs;
    settings.dual_share = dual_share;
    settings.quarantine_after = 2;
    settings.validate().unwrap();
    Pool::new(&settings, &Rules::embedded().unwrap(), None)
        .unwrap()
        .with_max_backoff(Duration::from_millis(200))
}

/// The job judged as the re-run stage judges it, with what the pool gave.
fn judge_sd(record: &JobRecord, ran: &Ran) -> JobVerdict {
    let rules = Rules::embedded().unwrap();
    let fetched = Fetched {
        reference_image: match &ran.output {
            Some(Output::Image(b)) => Some(b.clone()),
            _ => None,
        },
        reference_note: ran.note.clone(),
        // The miner's image as the audit reads it from the demo folder.
        ..proctor::audit::fetch(&demo_dir(), record, &rules)
    };
    Checker::new(rules)
        .unwrap()
        .evaluate(record, &fetched, Stream::Live(&mut StreamState::new()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_host_delays_the_job_then_leaves_it_inconclusive_and_never_failed() {
    let replay = Arc::new(Replay::from_audit_folder(&demo_dir()));
    let mut host = hosts::txt2img(replay, Behaviour::Honest).await;
    let p = pool(vec![hosts::sd_host("sd-1", &host.url)], 2, 0.0);
    let record = demo_record("sd-honest-a-0");
    let work = Work::Image(sd_input(&record));
    let up = p.run(&record, work, Priority::Normal).await.unwrap();
    assert_eq!(up.result, "rerun", "{up:?}");
    assert!(
        judge_sd(&record, &up)
            .outcome(CheckId::ImageSimilarity)
            .unwrap()
            .status()
            == Status::Pass
    );

    host.kill().await;
    let start = std::time::Instant::now();
    let down = p.run(&record, work, Priority::High).await.unwrap();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(2), "gave up after {waited:?}");
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    assert_eq!(
        (down.result, down.output.is_none()),
        ("unavailable", true),
        "{down:?}"
    );
    let note = down.note.clone().unwrap();
    assert!(note.contains("no reference host answered"), "{note}");
    let v = judge_sd(&record, &down);
    let similarity = v.outcome(CheckId::ImageSimilarity).unwrap();
    assert_eq!(similarity.status(), Status::Inconclusive, "{similarity:?}");
    assert!(v.failed_checks().next().is_none(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_http_500_and_a_4xx_are_contained_and_a_healthy_host_takes_over() {
    let replay = Arc::new(Replay::from_audit_folder(&demo_dir()));
    let record = demo_record("sd-honest-a-1");
    let work = Work::Image(sd_input(&record));
    for (behaviour, says) in [
        (Behaviour::Garbage, "not an image"),
        (Behaviour::Error, "500"),
    ] {
        let bad = hosts::txt2img(replay.clone(), behaviour).await;
        let p = pool(vec![hosts::sd_host("bad", &bad.url)], 1, 0.0);
        let ran = p.run(&record, work, Priority::Normal).await.unwrap();
        assert_eq!(ran.result, "unavailable", "{behaviour:?}: {ran:?}");
        assert!(
            ran.note.as_deref().unwrap().contains(says),
            "{behaviour:?}: {ran:?}"
        );
        let v = judge_sd(&record, &ran);
        assert_eq!(
            v.outcome(CheckId::ImageSimilarity).unwrap().status(),
            Status::Inconclusive
        );
        assert!(v.failed_checks().next().is_none(), "{behaviour:?}: {v:?}");
        assert!(bad.requests() >= 2, "{behaviour:?} was retried");

        // Beside a healthy host, the job ends there.
        let good = hosts::txt2img(replay.clone(), Behaviour::Honest).await;
        let p = pool(
            vec![
                hosts::sd_host("bad", &bad.url),
                hosts::sd_host("good", &good.url),
            ],
            5,
            0.0,
        );
        let ran = p.run(&record, work, Priority::Normal).await.unwrap();
        assert_eq!(
            (ran.result, ran.hosts.clone()),
            ("rerun", vec!["good".to_owned()]),
            "{ran:?}"
        );
    }

    // A job the host refuses (422) is final at once: one request, no waiting.
    let host = hosts::txt2img(Arc::new(Replay::default()), Behaviour::Honest).await;
    let p = pool(vec![hosts::sd_host("sd-1", &host.url)], 30, 0.0);
    let start = std::time::Instant::now();
    let ran = p.run(&record, work, Priority::High).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!((ran.result, host.requests()), ("refused", 1), "{ran:?}");
    assert!(ran.note.as_deref().unwrap().contains("422"), "{ran:?}");
    let v = judge_sd(&record, &ran);
    assert_eq!(
        v.outcome(CheckId::ImageSimilarity).unwrap().status(),
        Status::Inconclusive
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drifting_host_is_quarantined_and_never_decides_a_reference() {
    let replay = Arc::new(Replay::from_audit_folder(&demo_dir()));
    // Listed first, so it is picked first while loads are equal.
    let drift = hosts::txt2img(replay.clone(), Behaviour::Drifting).await;
    let a = hosts::txt2img(replay.clone(), Behaviour::Honest).await;
    let b = hosts::txt2img(replay.clone(), Behaviour::Honest).await;
    let p = pool(
        vec![
            hosts::sd_host("drift", &drift.url),
            hosts::sd_host("a", &a.url),
            hosts::sd_host("b", &b.url),
        ],
        10,
        1.0,
    );
    let mut drifts = Vec::new();
    for i in 0..4 {
        let record = demo_record(&format!("sd-honest-a-{i}"));
        let ran = p
            .run(&record, Work::Image(sd_input(&record)), Priority::Normal)
            .await
            .unwrap();
        let want = replay
            .get(&sd_input(&record).prompt, sd_input(&record).seed)
            .unwrap();
        assert!(
            ran.output == Some(Output::Image(want.clone())),
            "job {i}: {:?} {:?} {:?}",
            ran.hosts,
            ran.note,
            ran.drift
        );
        assert!(
            judge_sd(&record, &ran)
                .outcome(CheckId::ImageSimilarity)
                .unwrap()
                .status()
                == Status::Pass
        );
        assert!(ran.seconds > 0.0);
        drifts.extend(ran.drift);
    }
    let host = |name: &str| p.hosts().iter().find(|h| h.name == name).unwrap().clone();
    assert!(host("drift").is_quarantined());
    assert!(!host("a").is_quarantined() && !host("b").is_quarantined());
    // Honest pairs agree; every pair with the drifting host is beyond the envelope.
    for d in &drifts {
        let with_drift = d.host_a == "drift" || d.host_b == "drift";
        assert_eq!(d.within, !with_drift, "{d:?}");
    }
    assert!(
        drifts.iter().any(|d| d.within),
        "an honest pair was compared"
    );
    // Quarantined after two strikes: the later jobs never reach it.
    assert_eq!(drift.requests(), 2, "requests to the drifting host");
}

#[tokio::test(flavor = "multi_thread")]
async fn full_queues_shed_ordinary_jobs_while_canaries_wait() {
    let replay = Arc::new(Replay::from_audit_folder(&demo_dir()));
    let slow = hosts::txt2img(replay, Behaviour::Slow(Duration::from_millis(400))).await;
    let mut host = hosts::sd_host("slow", &slow.url);
    (host.concurrency, host.queue) = (1, 1);
    let p = pool(vec![host], 30, 0.0);
    let records: Vec<JobRecord> = (0..4)
        .map(|i| demo_record(&format!("sd-honest-a-{i}")))
        .collect();
    let run_all = |priority| {
        futures::future::join_all(
            records
                .iter()
                .map(|r| p.run(r, Work::Image(sd_input(r)), priority)),
        )
    };
    let ordinary: Vec<&str> = run_all(Priority::Normal)
        .await
        .into_iter()
        .map(|r| r.unwrap().result)
        .collect();
    assert_eq!(
        ordinary.iter().filter(|r| **r == "shed").count(),
        2,
        "{ordinary:?}"
    );
    assert_eq!(
        ordinary.iter().filter(|r| **r == "rerun").count(),
        2,
        "{ordinary:?}"
    );
    let high: Vec<&str> = run_all(Priority::High)
        .await
        .into_iter()
        .map(|r| r.unwrap().result)
        .collect();
    assert!(high.iter().all(|r| *r == "rerun"), "{high:?}");
}

fn scorer_host(name: &str, url: &str) -> HostSettings {
    HostSettings {
        name: name.to_owned(),
        kind: HostKind::Scorer,
        url: url.to_owned(),
        models: vec!["hermes-3-llama3.1-8b".into()],
        concurrency: 2,
        queue: 8,
        timeout_secs: 30,
        seconds_per_job: 0.5,
        tokenizer: model_dir().display().to_string(),
        served_model: "tiny-alice".into(),
        health_path: String::new(),
        token: Default::default(),
    }
}

/// A plain vLLM: serve-reference's answers without proctor's extension.
async fn plain_vllm() -> StandIn {
    let scorer = Arc::new(Mutex::new(scorer()));
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = requests.clone();
    let router = axum::Router::new()
        .route(
            "/v1/completions",
            post(move |Json(mut req): Json<CompletionRequest>| {
                let (scorer, count) = (scorer.clone(), count.clone());
                async move {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    req.proctor_temperature = None;
                    let s = scorer.lock().unwrap();
                    Json(proctor::llm::serve::complete(&s, &req).unwrap())
                }
            }),
        )
        .route("/health", axum::routing::get(|| async { "ok" }));
    hosts::serve(router, requests).await
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_reference_gives_the_sampling_moments_and_a_plain_vllm_says_it_cannot() {
    let local = scorer();
    let mut input = job("Alice was beginning to get very tired");
    // The network miner's stop words: the end's stop-word probability comes back too.
    input.stop = Some(
        proctor::llm::miner::STOP_WORDS
            .iter()
            .map(|w| (*w).to_owned())
            .collect(),
    );
    let text = sample(&local, &input, 3);
    let want = local
        .score(ScoreJob {
            input: &input,
            text: &text,
        })
        .unwrap();

    let extended = hosts::serve(proctor::llm::serve::router(scorer()), Arc::default()).await;
    let vllm = plain_vllm().await;
    let jobs = std::fs::read_to_string(demo_dir().join("jobs.jsonl")).unwrap();
    let line = jobs
        .lines()
        .find(|l| l.contains("\"llm-honest-a-0\""))
        .unwrap();
    let mut record_json: serde_json::Value = serde_json::from_str(line).unwrap();
    record_json["model_id"] = "hermes-3-llama3.1-8b".into();
    record_json["input"] = serde_json::to_value(&input).unwrap();
    record_json["output"] = serde_json::json!({ "text": text });
    let record = JobRecord::from_json(&serde_json::to_vec(&record_json).unwrap()).unwrap();
    let checker = Checker::new(Rules::embedded().unwrap()).unwrap();
    let mut verdicts = Vec::new();
    for url in [&extended.url, &vllm.url] {
        let p = pool(vec![scorer_host("llm", url)], 5, 0.0);
        let ran = p
            .run(
                &record,
                Work::Scores {
                    input: &input,
                    text: &text,
                },
                Priority::Normal,
            )
            .await
            .unwrap();
        let Some(Output::Scores(got)) = ran.output else {
            panic!("{ran:?}")
        };
        verdicts.push((
            got.clone(),
            checker.evaluate(
                &record,
                &Fetched {
                    scores: Some(got),
                    ..Fetched::default()
                },
                Stream::Live(&mut StreamState::new()),
            ),
        ));
    }
    // serve-reference: the in-process moments and exact EOS logprobs.
    let (got, v) = &verdicts[0];
    for (i, (g, w)) in got.tokens.iter().zip(&want.tokens).enumerate() {
        let (g, w) = (g.tempered.unwrap(), w.tempered.unwrap());
        assert!(
            (g.logprob - w.logprob).abs() < 1e-5 && (g.mean - w.mean).abs() < 1e-5,
            "token {i}"
        );
        assert!((g.variance - w.variance).abs() < 1e-5, "token {i}");
    }
    for (g, w) in got.tokens.iter().zip(&want.tokens) {
        assert!((g.eos_logprob - w.eos_logprob).abs() < 1e-5);
    }
    assert!((got.end_eos_logprob - want.end_eos_logprob).abs() < 1e-5);
    let (g, w) = (
        got.end_stop_logprob.unwrap(),
        want.end_stop_logprob.unwrap(),
    );
    assert!((g - w).abs() < 1e-5, "{g} against {w}");
    let likelihood = v.outcome(CheckId::LlmLikelihood).unwrap();
    assert_ne!(likelihood.status(), Status::Inconclusive, "{likelihood:?}");
    // vLLM: no moments, and the check says so instead of judging.
    let (got, v) = &verdicts[1];
    assert!(got.tokens.iter().all(|t| t.tempered.is_none()));
    assert_eq!(got.end_stop_logprob, None);
    let likelihood = v.outcome(CheckId::LlmLikelihood).unwrap();
    assert_eq!(likelihood.status(), Status::Inconclusive);
    assert!(
        format!("{likelihood:?}").contains("plain vLLM"),
        "{likelihood:?}"
    );
    assert_eq!(vllm.requests(), 1);
}

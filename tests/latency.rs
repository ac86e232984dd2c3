//! The latency checks against every published honest run of fixtures/gpu-timings.toml:
//! each passes the physical bound and the envelope (its margin printed), twice its
//! speed is flagged for images, and a miner whose engine beats the bound on every job is
//! flagged, never slashed.

use std::path::{Path, PathBuf};

use proctor::calibrate::latency::{self, Unit};
use proctor::checks::device::{self, LlmCost, TokenCounts, Workload};
use proctor::checks::{Checker, JobVerdict, Stream, StreamState};
use proctor::decide::{self, Action};
use proctor::outcome::{CheckId, Status};
use proctor::record::JobRecord;
use proctor::rules::Rules;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn demo_record(job: &str) -> serde_json::Value {
    std::fs::read_to_string(root().join("fixtures/audit-demo/jobs.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["job_id"] == job)
        .unwrap()
}

/// A job record claiming `inference_s` on the GPU named `hardware`.
fn claiming(hardware: &str, inference_s: f64) -> JobRecord {
    let mut v = demo_record("sd-honest-a-1");
    v["metrics"]["hardware"] = hardware.into();
    v["metrics"]["inference_latency"] = inference_s.into();
    v["metrics"]["request_latency"] = (inference_s + 1.0).into();
    JobRecord::from_json(v.to_string().as_bytes()).unwrap()
}

#[test]
fn every_fastest_published_run_passes_and_twice_its_speed_on_images_is_flagged() {
    let rules = Rules::embedded().unwrap();
    let timings = latency::load(&root().join("fixtures/gpu-timings.toml")).unwrap();
    let mut flagged_doubles = 0;
    println!(
        "run | GPU | category | published s | bound s | margin over bound | envelope allows s"
    );
    for run in &timings.runs {
        let gpu = &rules.gpus.gpus[&run.gpu];
        let category_id = &run.categories[0];
        let category = rules.category(category_id).unwrap();
        let (work, seconds) = match run.unit {
            Unit::TokensPerSecond => {
                let out = run.output_tokens.unwrap();
                (
                    Workload::Llm(TokenCounts {
                        input: run.input_tokens.unwrap_or(0),
                        output: out,
                        exact: true,
                    }),
                    out as f64 / run.rate,
                )
            }
            unit => {
                let steps = run.steps.unwrap();
                let s = if unit == Unit::Seconds {
                    run.rate
                } else {
                    f64::from(steps) / run.rate
                };
                (
                    Workload::Sd {
                        width: run.width.unwrap(),
                        height: run.height.unwrap(),
                        steps,
                    },
                    s,
                )
            }
        };
        let cost = run.model.map(|m| LlmCost {
            active_params_b: m.active_params_b,
            weight_bytes_per_token_gb: m.weight_bytes_per_token_gb,
            embedding_bytes_gb: m.embedding_bytes_gb,
        });
        let bound = device::bound(&rules, work, category, cost, &run.gpu, gpu).unwrap();
        let record = claiming(&gpu.names[0], seconds);
        let physical = device::check_latency(&rules, &record, Some(&bound));
        let envelope = device::check_envelope(
            &rules,
            &record,
            Some(&bound),
            category_id,
            category,
            Some(&run.gpu),
        );
        let allows = device::envelope_run(&rules, category_id, category, Some(&run.gpu))
            .map(|e| bound.bound_s / (e.efficiency * rules.checks.latency.envelope_margin).min(1.0))
            .unwrap();
        println!(
            "{} | {} | {category_id} | {seconds:.4} | {:.4} | {:.2}x | {allows:.4}",
            run.id,
            run.gpu,
            bound.bound_s,
            seconds / bound.bound_s
        );
        assert_eq!(physical.status(), Status::Pass, "{}: {physical:?}", run.id);
        assert_eq!(envelope.status(), Status::Pass, "{}: {envelope:?}", run.id);
        // Twice the fastest published speed on an image GPU is evidence for review.
        let fastest = device::envelope_run(&rules, category_id, category, Some(&run.gpu)).unwrap();
        if category.kind == proctor::record::JobKind::Sd && fastest.run == run.id {
            let double = claiming(&gpu.names[0], seconds / 2.0);
            let o = device::check_envelope(
                &rules,
                &double,
                Some(&bound),
                category_id,
                category,
                Some(&run.gpu),
            );
            assert_eq!(
                o.status(),
                Status::Fail,
                "{} at twice its speed: {o:?}",
                run.id
            );
            flagged_doubles += 1;
        }
    }
    assert!(
        flagged_doubles >= 8,
        "{flagged_doubles} image GPUs tested at twice their speed"
    );
}

#[test]
fn an_h100s_published_image_speed_claimed_on_a_4060_ti_is_flagged() {
    let rules = Rules::embedded().unwrap();
    let category = rules.category("sd15").unwrap();
    let work = Workload::Sd {
        width: 512,
        height: 512,
        steps: 25,
    };
    let (id, gpu) = device::find_gpu(&rules, "NVIDIA GeForce RTX 4060 Ti").unwrap();
    let bound = device::bound(&rules, work, category, None, id, gpu).unwrap();
    // stable-fast's 104.6 it/s on an H100.
    let record = claiming("NVIDIA GeForce RTX 4060 Ti", 25.0 / 104.6);
    let o = device::check_envelope(&rules, &record, Some(&bound), "sd15", category, Some(id));
    assert_eq!(o.status(), Status::Fail, "{o:?}");
}

#[test]
fn a_stream_of_jobs_from_an_engine_faster_than_the_bound_is_flagged_never_slashed() {
    // An honest miner on an engine the physical bound does not foresee (speculative
    // decoding, a card clocked past the datasheet) fails `latency` on every job. The
    // bound's rate is per miner: the stream counts once, and alone it cannot slash.
    let rules = Rules::embedded().unwrap();
    let checker = Checker::new(rules.clone()).unwrap();
    let mut stream = StreamState::new();
    let template = demo_record("sd-honest-a-1");
    let first = JobRecord::from_json(template.to_string().as_bytes()).unwrap();
    let fetched = proctor::audit::fetch(&root().join("fixtures/audit-demo"), &first, &rules);
    let verdicts: Vec<JobVerdict> = (0..60)
        .map(|i| {
            let mut v = template.clone();
            v["job_id"] = format!("fast-{i}").into();
            v["metrics"]["inference_latency"] = 0.002.into();
            let r = JobRecord::from_json(v.to_string().as_bytes()).unwrap();
            checker.evaluate(&r, &fetched, Stream::Live(&mut stream))
        })
        .collect();
    assert!(
        verdicts
            .iter()
            .all(|v| v.outcome(CheckId::Latency).is_some_and(|o| o.is_fail()))
    );
    let d = decide::decide(&first.miner_id, &verdicts, &Default::default(), 1.0, &rules);
    assert_eq!(d.action, Action::FlagForReview, "{:?}", d.tallies);
    assert!(d.slash.is_none());
    let latency = d
        .tallies
        .iter()
        .find(|t| t.check == CheckId::Latency)
        .unwrap();
    assert_eq!((latency.judged, latency.failed), (1, 1));
}

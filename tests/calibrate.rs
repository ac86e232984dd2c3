//! `proctor calibrate` on small samples: the thresholds keep the honest rate within the
//! target, the rates in the table are what the production checks give at those
//! thresholds, honest texts' likelihood z-scores are standard normal, and the rules
//! write-back round-trips.

use std::path::PathBuf;

use proctor::calibrate::image::{self as cal_image, ImageOptions};
use proctor::calibrate::llm::{self as cal_llm, LlmOptions};
use proctor::calibrate::{self, Label};
use proctor::checks::image::apply_thresholds;
use proctor::checks::llm;
use proctor::outcome::CheckId;
use proctor::rules::Rules;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed base photos (cut from the shared photos; fixtures/README.md).
fn photos() -> PathBuf {
    root().join("fixtures/base")
}

fn rate(rows: &[calibrate::RateRow], variant: &str) -> f64 {
    rows.iter()
        .find(|r| r.variant == variant)
        .unwrap_or_else(|| panic!("no row {variant}"))
        .rate
}

#[test]
fn image_thresholds_hold_the_honest_rate_and_catch_gross_cheats() {
    let rules = Rules::embedded().unwrap();
    let opts = ImageOptions {
        dir: photos(),
        side: 128,
        references: 60,
        honest_per_reference: 4,
        seed: 7,
        models: Vec::new(),
    };
    let pairs = cal_image::pairs(&opts, &rules.checks.image).unwrap();
    assert_eq!(pairs.len(), 60 * (4 + cal_image::CHEATS.len()));
    // Same seed, same pairs.
    let again = cal_image::pairs(&opts, &rules.checks.image).unwrap();
    assert!(
        pairs
            .iter()
            .zip(&again)
            .all(|(a, b)| a.similarity == b.similarity)
    );
    let target = 0.01;
    let (report, calibrated) = cal_image::calibrate(&pairs, &rules.checks.image, target).unwrap();
    let honest = report.honest();
    assert_eq!(honest.pairs, 240);
    assert!(honest.rate <= target, "{honest:?}");
    // The table is what the production judge says at the written thresholds.
    let recount = pairs
        .iter()
        .filter(|p| {
            p.label == Label::Honest && apply_thresholds(&p.similarity, &calibrated).is_fail()
        })
        .count();
    assert_eq!(recount, honest.flagged);
    let thresholds: std::collections::BTreeMap<_, _> = report.thresholds.iter().cloned().collect();
    assert_eq!(thresholds["ssim_min"], calibrated.ssim_min);
    assert!(calibrated.phash_max_distance < 32 && calibrated.ssim_min > 0.3);
    // Whole other images are never mistaken for re-runs.
    assert!(
        rate(&report.rows, cal_image::CHEATS[3]) >= 0.95,
        "{:#?}",
        report.rows
    );
    assert!(
        rate(&report.rows, cal_image::CHEATS[4]) >= 0.95,
        "{:#?}",
        report.rows
    );
    // Missed cheats say why.
    for r in report.rows.iter().filter(|r| r.met == Some(false)) {
        assert!(
            r.note.as_deref().is_some_and(|n| n.contains("median")),
            "{r:?}"
        );
    }
}

fn llm_options(honest: usize, per_cheat: usize) -> LlmOptions {
    LlmOptions {
        reference: root().join("fixtures/models/tiny-alice"),
        models: vec!["tiny-alice".into()],
        substitute: root().join("fixtures/models/tiny-alice-alt"),
        smaller: Some(root().join("fixtures/models/tiny-alice-small")),
        corpus: root().join("fixtures/text/alice29.txt"),
        honest,
        honest_greedy: honest / 4,
        per_cheat,
        max_tokens: 64,
        seed: 3,
        panel: Rules::embedded().unwrap().checks.llm.panel,
        records: None,
    }
}

#[test]
fn an_interrupted_llm_calibration_resumes_from_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pairs.jsonl");
    let mut opts = llm_options(20, 3);
    opts.records = Some(file.clone());
    let batches = std::cell::Cell::new(0);
    let count = |_: &str| batches.set(batches.get() + 1);
    let first = cal_llm::pairs(&opts, &count).unwrap();
    // 20 honest texts in six configurations, 5 greedy ones in five (one has none),
    // and 3 of each of 9 cheats: one batch each.
    assert_eq!(batches.get(), 6 + 5 + 9);
    // A run killed while writing the last pair: the file ends mid-line.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, &text[..text.len() - 100]).unwrap();
    batches.set(0);
    let second = cal_llm::pairs(&opts, &count).unwrap();
    assert_eq!(
        batches.get(),
        1,
        "only the cut pair's batch is scored again"
    );
    let json = |p: &cal_llm::LlmPair| {
        serde_json::json!([
            p.label,
            p.variant,
            p.input,
            p.text,
            p.scores,
            p.reported,
            p.oracle_llr,
            p.drift,
            p.replay
        ])
    };
    assert_eq!(first.len(), second.len());
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(json(a), json(b));
    }
    // A third run reads every pair back, the rescored batch included.
    batches.set(0);
    let third = cal_llm::pairs(&opts, &count).unwrap();
    assert_eq!((batches.get(), third.len()), (0, first.len()));
    // Another seed draws other jobs: its run refuses the file.
    opts.seed += 1;
    let err = cal_llm::pairs(&opts, &count).err().unwrap();
    assert!(format!("{err:#}").contains("another run"), "{err:#}");
}

#[test]
fn honest_likelihood_scores_are_standard_normal_and_cheats_score_lower() {
    let rules = Rules::embedded().unwrap();
    let pairs = cal_llm::pairs(&llm_options(96, 24), &|_| {}).unwrap();
    let z_of = |variant: Option<&str>, label: Label| -> Vec<f64> {
        pairs
            .iter()
            .filter(|p| p.label == label && variant.is_none_or(|v| p.variant == v))
            .filter_map(|p| llm::likelihood_z(p.scores.as_ref().unwrap(), usize::MAX))
            .filter(|(_, n)| *n >= 16)
            .map(|(z, _)| z)
            .collect()
    };
    let honest = z_of(None, Label::Honest);
    assert!(honest.len() >= 80, "{} honest texts judged", honest.len());
    let mean = honest.iter().sum::<f64>() / honest.len() as f64;
    let sd = (honest.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / honest.len() as f64).sqrt();
    // Mean 0 and unit spread, within what 80-odd samples allow.
    assert!(mean.abs() < 0.45, "honest z mean {mean}");
    assert!((0.6..1.5).contains(&sd), "honest z sd {sd}");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // The substitute is close to the reference (the same data and recipe, another
    // seed): it shifts z by about 3 in 64 tokens. A hotter sampler and canned text
    // shift it further.
    let m = median(z_of(Some(cal_llm::SUBSTITUTE), Label::Cheat));
    assert!(m < -1.5, "substitute: median z {m}");
    for cheat in [cal_llm::HOTTER, cal_llm::CANNED] {
        let m = median(z_of(Some(cheat), Label::Cheat));
        assert!(m < -3.0, "{cheat}: median z {m}");
    }
    // A smaller model of the family and another job's answer reused: both fit the
    // reference worse than its own samples for the job do.
    let honest_median = median(honest.clone());
    for cheat in [cal_llm::SMALLER, cal_llm::REUSED] {
        let z = z_of(Some(cheat), Label::Cheat);
        assert!(z.len() >= 16, "{cheat}: {} judged", z.len());
        let m = median(z);
        assert!(
            m < honest_median - 1.0,
            "{cheat}: median z {m}, honest {honest_median}"
        );
    }
    // The likelihood ratio of the substitute over the reference is, in expectation,
    // -KL(reference || substitute) < 0 on honest texts and KL(substitute || reference) > 0
    // on the substitute's own: the oracle that bounds what any check could catch.
    let llr = |variant: Option<&str>, label: Label| -> Vec<f64> {
        pairs
            .iter()
            .filter(|p| p.label == label && variant.is_none_or(|v| p.variant == v))
            .filter_map(|p| p.oracle_llr)
            .collect()
    };
    let honest_llr = llr(None, Label::Honest);
    let substitute_llr = llr(Some(cal_llm::SUBSTITUTE), Label::Cheat);
    assert!(honest_llr.len() >= 90 && substitute_llr.len() >= 20);
    assert!(median(honest_llr.clone()) < 0.0, "{honest_llr:?}");
    assert!(median(substitute_llr.clone()) > 0.0, "{substitute_llr:?}");
    assert!(llr(Some(cal_llm::HOTTER), Label::Cheat).is_empty());
    let (oracle, n) = cal_llm::oracle_detection(&pairs, 0.05).unwrap();
    assert_eq!(n, substitute_llr.len());
    assert!(oracle > 0.0, "the oracle catches none at 5 %");
    let target = 0.01;
    let (report, calibrated, subchecks, rates) =
        cal_llm::calibrate(&pairs, &rules.checks.llm, target).unwrap();
    // Per honest configuration: each sampled and each greedy one has its own rates,
    // and they add up to the pooled ones.
    let by_config = cal_llm::rates_by_config(&pairs, &calibrated);
    assert_eq!(
        by_config.len(),
        12,
        "{:?}",
        by_config.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    assert!(
        by_config
            .iter()
            .any(|(c, _)| c == "bf16, KV-cached, batch 16")
    );
    for pooled in &rates {
        let (n, failures) = by_config
            .iter()
            .flat_map(|(_, r)| r.iter().filter(|r| r.check == pooled.check))
            .fold((0, 0), |(n, f), r| (n + r.n, f + r.failures));
        assert_eq!(
            (n, failures),
            (pooled.n, pooled.failures),
            "{}",
            pooled.check
        );
    }
    // Every LLM check is measured on the honest jobs it judges: the rank checks on the
    // greedy ones only, the likelihood check on the sampled ones only.
    let rate_of = |c: CheckId| rates.iter().find(|r| r.check == c).unwrap();
    let greedy = pairs
        .iter()
        .filter(|p| p.label == Label::Honest && p.input.temperature < 0.3)
        .count() as u64;
    assert!(greedy > 0 && rate_of(CheckId::LlmRank).n <= greedy);
    assert!(rate_of(CheckId::LlmLikelihood).n <= 96);
    // Never stricter than the normal approximation's 1 % quantile.
    assert!(
        calibrated.likelihood_z_min <= -2.32,
        "{}",
        calibrated.likelihood_z_min
    );
    assert!(report.honest().rate <= target);
    assert!(
        rate(&report.rows, cal_llm::HOTTER) >= report.honest().rate + 0.3,
        "{:#?}",
        report.rows
    );
    // The prefill spoof's reported logprobs are the reference's own: that sub-check
    // passes it, and only its tokens give it away.
    let delta = &subchecks
        .iter()
        .find(|(name, _)| name == "llm_logprob_delta")
        .unwrap()
        .1;
    assert_eq!(rate(delta, cal_llm::PREFILL_SPOOF), 0.0);
}

#[test]
fn calibrated_thresholds_write_back_into_rules_and_load() {
    let rules = Rules::embedded().unwrap();
    let pairs = cal_image::pairs(
        &ImageOptions {
            dir: photos(),
            side: 96,
            references: 20,
            honest_per_reference: 2,
            seed: 1,
            models: vec!["sd15".into()],
        },
        &rules.checks.image,
    )
    .unwrap();
    let (report, calibrated) = cal_image::calibrate(&pairs, &rules.checks.image, 0.05).unwrap();
    let honest = report.honest();
    let result = calibrate::Calibration {
        target_fpr: 0.05,
        rates: vec![calibrate::MeasuredRate {
            check: CheckId::ImageSimilarity,
            sample: "the test's pairs".into(),
            n: honest.pairs as u64,
            failures: honest.flagged as u64,
            // The pairs stand for SD 1.5 outputs: the rate slashes on those only.
            models: vec!["sd15".into()],
        }],
        checks: vec![report],
        llm_subchecks: Vec::new(),
        // The writer records the largest per-configuration bound of any check it is
        // given one for: here two configurations of 20 pairs, one with a failure.
        by_config: ["a", "b"]
            .into_iter()
            .zip([0, 1])
            .map(|(name, failures)| {
                let rate = calibrate::MeasuredRate {
                    check: CheckId::ImageSimilarity,
                    sample: format!("configuration {name}"),
                    n: 20,
                    failures,
                    models: Vec::new(),
                };
                (name.to_string(), vec![rate])
            })
            .collect(),
        latency: None,
        panel: None,
        llm_rules: None,
    };
    let worst = result.by_config[1].1[0].upper_95();
    assert!(worst > result.by_config[0].1[0].upper_95());
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(root().join("rules")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let provenance = calibrate::Provenance {
        date: "2026-11-28".into(),
        command: "proctor calibrate --write-rules rules".into(),
    };
    calibrate::write_rules(dir.path(), &result, &provenance, false).unwrap();
    let text = std::fs::read_to_string(dir.path().join("checks.toml")).unwrap();
    assert!(text.contains("# 8x8 = 64-bit pHash"), "comments are kept");
    let loaded = Rules::load_dir(dir.path()).unwrap();
    let im = &loaded.checks.image;
    assert_eq!(im.phash_max_distance, calibrated.phash_max_distance);
    assert_eq!(im.dhash_max_distance, calibrated.dhash_max_distance);
    assert_eq!(im.ssim_min, calibrated.ssim_min);
    assert_eq!(im.detail_ratio_min, calibrated.detail_ratio_min);
    let policy = &loaded.checks.policy[&CheckId::ImageSimilarity];
    // 40 honest pairs bound the rate at no better than 1 - 0.05^(1/40) ≈ 7.2 %.
    assert!(
        (0.072..=1.0).contains(&policy.false_positive_rate),
        "{policy:?}"
    );
    assert_eq!(policy.basis, proctor::rules::Basis::Measured);
    let m = policy.measured.as_ref().unwrap();
    assert_eq!((m.n, m.date.as_str()), (40, "2026-11-28"));
    assert_eq!(m.upper_95, policy.false_positive_rate);
    // The effect floor rests on the worst configuration, not on the pooled bound.
    assert_eq!(m.max_config_upper_95, Some(worst));
    assert_eq!(policy.worst_config_rate(), worst.max(m.upper_95));
    assert!(loaded.broken_promises().is_empty());
    assert_ne!(loaded.digest().unwrap(), rules.digest().unwrap());
    // Where the rate was measured is written and read back: an SD 1.5 model's jobs
    // can be slashed on it, an SDXL model's only flagged.
    assert_eq!(m.models, ["sd15"]);
    assert!(loaded.slashes_on(CheckId::ImageSimilarity, "Aurora"));
    assert!(!loaded.slashes_on(CheckId::ImageSimilarity, "AnimagineXL"));

    let png = dir.path().join("roc.png");
    calibrate::plot::roc_png(&png, &[&result.checks[0]]).unwrap();
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (720, 560));
}

#[test]
fn a_lenient_write_keeps_the_more_lenient_llm_threshold_of_rules_and_run() {
    let shipped = Rules::embedded().unwrap();
    let (z, llr) = (
        shipped.checks.llm.likelihood_z_min,
        shipped.checks.llm.panel.llr_max,
    );
    let alt = "tiny-alice-alt";
    let drift = |r: &Rules| {
        r.checks
            .llm
            .panel
            .suspects
            .iter()
            .find(|s| s.name == alt)
            .unwrap()
            .drift_nats_per_token
    };
    let shipped_drift = drift(&shipped).unwrap();
    // A run whose z threshold and llr_max are stricter than the rules' and whose drift
    // allowance is larger, then one whose z threshold is more lenient.
    let run = |z_run: f64, llr_run: f64, drift_run: f64| {
        let mut llm = shipped.checks.llm.clone();
        llm.panel.llr_max = llr_run;
        for s in llm.panel.suspects.iter_mut().filter(|s| s.name == alt) {
            s.drift_nats_per_token = Some(drift_run);
        }
        calibrate::Calibration {
            target_fpr: 0.001,
            rates: Vec::new(),
            checks: vec![calibrate::CheckReport {
                check: CheckId::LlmLikelihood,
                target_fpr: 0.001,
                thresholds: vec![("likelihood_z_min".into(), z_run)],
                rows: Vec::new(),
                roc: Vec::new(),
            }],
            llm_subchecks: Vec::new(),
            by_config: Vec::new(),
            latency: None,
            panel: None,
            llm_rules: Some(llm),
        }
    };
    let provenance = calibrate::Provenance {
        date: "2026-12-06".into(),
        command: "proctor calibrate --write-rules rules --lenient".into(),
    };
    let write = |c: &calibrate::Calibration, lenient: bool| {
        let dir = rules_copy();
        calibrate::write_rules(dir.path(), c, &provenance, lenient).unwrap();
        Rules::load_dir(dir.path()).unwrap()
    };
    let strict = run(z + 0.5, llr - 1.0, shipped_drift * 2.0);
    let kept = write(&strict, true);
    assert_eq!(kept.checks.llm.likelihood_z_min, z);
    assert_eq!(kept.checks.llm.panel.llr_max, llr);
    assert_eq!(drift(&kept), Some(shipped_drift * 2.0));
    // Without --lenient, the run's own values.
    let replaced = write(&strict, false);
    assert_eq!(replaced.checks.llm.likelihood_z_min, z + 0.5);
    assert_eq!(replaced.checks.llm.panel.llr_max, llr - 1.0);
    // A more lenient run wins either way.
    let loose = write(&run(z - 0.5, llr + 1.0, shipped_drift / 2.0), true);
    assert_eq!(loose.checks.llm.likelihood_z_min, z - 0.5);
    assert_eq!(loose.checks.llm.panel.llr_max, llr + 1.0);
    assert_eq!(drift(&loose), Some(shipped_drift));
}

/// A copy of the shipped rules in a temporary folder.
fn rules_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(root().join("rules")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    dir
}

fn proctor(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_proctor"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn rules_check_fails_on_stop_11s_llm_rank_promise_and_passes_after_calibration() {
    let dir = rules_copy();
    let path = dir.path().join("checks.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // The declaration that slashed an honest miner: 1e-3, where docs/DETECTION.md had
    // measured 464 failures in 4,000 honest texts (11.6 %).
    let start = text.find("[policy.llm_rank]").unwrap();
    let end = start
        + text[start..]
            .find("\n[policy.llm_unlikely_tokens]")
            .unwrap();
    let old = "[policy.llm_rank]\nfalse_positive_rate = 1e-3\nindependent_across_jobs = true\nbasis = \"measured\"\nmeasured = { date = \"2026-11-26\", command = \"proctor calibrate\", sample = \"4000 honest texts of tiny-alice\", n = 4000, failures = 464, upper_95 = 0.125 }";
    std::fs::write(&path, format!("{}{old}{}", &text[..start], &text[end..])).unwrap();
    let rules = dir.path().to_str().unwrap();
    let check = proctor(&["rules", "check", "--rules", rules]);
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{err}");
    assert!(
        err.contains("llm_rank") && err.contains("below its measured"),
        "{err}"
    );

    let out = tempfile::tempdir().unwrap();
    let cal = proctor(&[
        "calibrate",
        "--only",
        "llm",
        "--rules",
        rules,
        "--write-rules",
        rules,
        "--out",
        out.path().to_str().unwrap(),
        "--llm-honest",
        "60",
        "--llm-honest-greedy",
        "60",
        "--llm-per-cheat",
        "4",
    ]);
    assert!(
        cal.status.success(),
        "{}",
        String::from_utf8_lossy(&cal.stderr)
    );
    let check = proctor(&["rules", "check", "--rules", rules]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let loaded = Rules::load_dir(dir.path()).unwrap();
    let m = loaded.checks.policy[&CheckId::LlmRank]
        .measured
        .clone()
        .unwrap();
    assert!(
        m.command.contains("calibrate") && m.n > 0 && m.n <= 60,
        "{m:?}"
    );
}

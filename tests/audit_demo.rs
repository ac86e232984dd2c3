//! End to end: `audit` of the bundled demo slashes or flags every cheating miner and no
//! honest one, through the library and through the `proctor` binary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use proctor::audit;
use proctor::checks::Verdict;
use proctor::decide::Action;
use proctor::ids::MinerId;
use proctor::outcome::CheckId;
use proctor::rules::Rules;
use proctor::sampling::SamplingSecret;

#[path = "support/scope.rs"]
mod scope;

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audit-demo")
}

struct Expected {
    name: String,
    miner: MinerId,
    /// Under the shipped rules.
    action: Action,
    /// Under rules whose measured rates hold on the demo's models.
    calibrated: Action,
}

fn expected() -> Vec<Expected> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(demo().join("miners.json")).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| Expected {
            name: m["name"].as_str().unwrap().to_owned(),
            miner: MinerId::parse(m["miner_id"].as_str().unwrap()).unwrap(),
            action: serde_json::from_value(m["expected_action"].clone()).unwrap(),
            calibrated: serde_json::from_value(m["expected_action_calibrated"].clone()).unwrap(),
        })
        .collect()
}

fn judge_fresh() -> audit::AuditResult {
    judge_with(Rules::embedded().unwrap())
}

/// The shipped rules with every measured rate holding on the demo's models.
fn calibrated() -> Rules {
    scope::calibrated_everywhere(Rules::embedded().unwrap())
}

fn judge_with(rules: Rules) -> audit::AuditResult {
    audit::judge_dir(
        &demo(),
        rules,
        &SamplingSecret::from_passphrase("t"),
        proctor::case::Reruns::Present,
        None,
        false,
    )
    .unwrap()
}

/// One judgement of the demo, shared by the tests that only read it.
fn judge() -> &'static audit::AuditResult {
    static RESULT: std::sync::OnceLock<audit::AuditResult> = std::sync::OnceLock::new();
    RESULT.get_or_init(judge_fresh)
}

/// [`judge`] under [`calibrated`] rules.
fn judge_calibrated() -> &'static audit::AuditResult {
    static RESULT: std::sync::OnceLock<audit::AuditResult> = std::sync::OnceLock::new();
    RESULT.get_or_init(|| judge_with(calibrated()))
}

#[test]
fn the_demo_audit_slashes_or_flags_every_cheater_and_no_honest_miner() {
    let exp = expected();
    assert!(exp.iter().filter(|e| e.action == Action::None).count() >= 5);
    // The shipped rates were measured off the demo's models: nothing slashes. Where
    // they hold, the re-run cheats are slashed.
    assert!(exp.iter().all(|e| e.action != Action::Slash));
    assert!(exp.iter().filter(|e| e.calibrated == Action::Slash).count() >= 4);
    for (result, calibrated) in [(judge(), false), (judge_calibrated(), true)] {
        for e in &exp {
            let want = if calibrated { e.calibrated } else { e.action };
            let d = result
                .decision(&e.miner)
                .unwrap_or_else(|| panic!("{} has no decision", e.name));
            assert_eq!(d.action, want, "{} ({calibrated}): {:?}", e.name, d.tallies);
            assert_eq!(d.slash.is_some(), want == Action::Slash, "{}", e.name);
            // Off the models, each would-be slash is a flag whose tallies say why.
            if want != e.calibrated {
                let shipped = Rules::embedded().unwrap();
                assert!(
                    d.tallies
                        .iter()
                        .any(|t| !t.in_scope && shipped.policy(t.check).can_slash())
                        || d.sequence.as_ref().is_some_and(|s| s.off_scope_jobs > 0),
                    "{}: {:?}",
                    e.name,
                    d.tallies
                );
            }
        }
    }
    let result = judge();
    // No decision for a miner the demo does not describe.
    let known: BTreeSet<&MinerId> = exp.iter().map(|e| &e.miner).collect();
    for d in &result.decisions {
        assert!(
            known.contains(&d.miner_id),
            "unexpected miner {}",
            d.miner_id
        );
    }
}

#[test]
fn every_check_fails_somewhere_in_the_demo() {
    let result = judge();
    let failed: BTreeSet<CheckId> = result
        .verdicts
        .iter()
        .flat_map(|v| v.failed_checks())
        .collect();
    for check in [
        CheckId::OutputDecode,
        CheckId::OutputSize,
        CheckId::ImageSimilarity,
        CheckId::LlmRank,
        CheckId::LlmUnlikelyTokens,
        CheckId::LlmEosSkipped,
        CheckId::ModelChallenge,
        CheckId::DeviceSpec,
        CheckId::Latency,
        CheckId::Reuse,
        CheckId::Canary,
    ] {
        assert!(failed.contains(&check), "no demo job fails {check}");
    }
}

#[test]
fn no_honest_job_fails_any_check() {
    let result = judge();
    let honest: BTreeSet<MinerId> = expected()
        .into_iter()
        .filter(|e| e.action == Action::None)
        .map(|e| e.miner)
        .collect();
    for v in result
        .verdicts
        .iter()
        .filter(|v| honest.contains(&v.miner_id))
    {
        assert!(
            matches!(v.verdict, Verdict::Pass | Verdict::Inconclusive),
            "{} failed {:?}",
            v.job_id,
            v.failed_checks().collect::<Vec<_>>()
        );
    }
}

#[test]
fn slashes_are_deterministic_and_cover_each_cheaters_jobs() {
    let (a, b) = (judge_calibrated(), &judge_with(calibrated()));
    let slashes = |r: &audit::AuditResult| {
        r.decisions
            .iter()
            .filter_map(|d| d.slash.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(slashes(a), slashes(b));
    assert!(!slashes(a).is_empty());
    for s in slashes(a) {
        assert!(!s.jobs.is_empty() && !s.amount.is_zero(), "{s:?}");
        assert!(s.honest_probability <= 1e-6);
        assert_eq!(s.rules_digest, a.rules_digest);
        assert!(s.evidence.iter().all(|e| s.jobs.contains(&e.job_id)));
    }
}

#[test]
fn a_slash_takes_the_nft_boosted_points_of_its_gpu() {
    let result = judge_calibrated();
    let rules = calibrated();
    let base_points = |name: &str| {
        let e = expected().into_iter().find(|e| e.name == name).unwrap();
        let base: f64 = result
            .verdicts
            .iter()
            .filter(|v| v.miner_id == e.miner)
            .map(|v| v.points.waifu)
            .sum();
        let slash = result.decision(&e.miner).unwrap().slash.clone().unwrap();
        (base, slash.amount.points().waifu)
    };
    let (base, slashed) = base_points("cheat-fewer-steps");
    let want = base * rules.points.nft.boost_factor;
    assert!(
        // Rounded to the ledger's micro-points.
        base > 0.0 && (slashed - want).abs() <= 0.5e-6,
        "{slashed} != {want}"
    );
    // A cheat whose wallet holds no NFT is slashed its base points.
    let (base, slashed) = base_points("cheat-low-resolution");
    assert!(
        base > 0.0 && (slashed - base).abs() <= 0.5e-6,
        "{slashed} != {base}"
    );
}

#[test]
fn malformed_records_are_rejected_with_their_reason() {
    let result = judge();
    assert_eq!(result.rejected.len(), 2, "{:?}", result.rejected);
    assert!(
        result.rejected.iter().any(|r| r.error.contains("sampler")),
        "{:?}",
        result.rejected
    );
}

#[test]
fn the_cli_writes_every_output_and_exits_one_for_its_findings() {
    let out = tempfile::tempdir().unwrap();
    // Rules whose rates hold on the demo's models, so that the run slashes too.
    let rules = scope::calibrated_everywhere_dir();
    let run = Command::new(env!("CARGO_BIN_EXE_proctor"))
        .args([
            "audit",
            demo().to_str().unwrap(),
            "--rules",
            rules.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    // The demo holds cheaters and rejected records: findings, exit 1.
    assert_eq!(
        run.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("SLASH") && stdout.contains(" flag "),
        "{stdout}"
    );
    let widest = stdout.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(
        widest <= 100,
        "the summary is {widest} columns wide:\n{stdout}"
    );
    assert!(
        stdout.contains("rejected line ") && stdout.contains("if honest: "),
        "the summary says why records were rejected and what its numbers mean:\n{stdout}"
    );
    assert!(!stdout.contains("?:"), "no cryptic paths:\n{stdout}");
    let read = |n: &str| std::fs::read_to_string(out.path().join(n)).unwrap();
    let slashes = read("slashes.jsonl");
    let expected_slashes = expected()
        .iter()
        .filter(|e| e.calibrated == Action::Slash)
        .count();
    assert_eq!(slashes.lines().count(), expected_slashes);
    assert_eq!(
        read("verdicts.jsonl").lines().count(),
        judge().verdicts.len()
    );
    let report = read("report.html");
    for e in expected().iter().filter(|e| e.action != Action::None) {
        assert!(
            report.contains(&e.miner.to_string()),
            "report lacks {}",
            e.name
        );
    }
    for e in expected().iter().filter(|e| e.action == Action::None) {
        assert!(
            !report.contains(&e.miner.to_string()),
            "report names honest {}",
            e.name
        );
    }
    check_report_site(out.path());
}

/// Every `href` and `src` of every page of the offline report.
fn links(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attr in ["href=\"", "src=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let end = rest.find('"').unwrap();
            found.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    found
}

/// The offline report is the review app's view, read-only: a queue that tells a slash
/// from a flag, case and evidence pages whose every link and image is a file beside
/// them, the jobs' inputs, readable numbers, and no page that grows with the audit.
fn check_report_links(out: &Path) -> Vec<(PathBuf, String)> {
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        report.contains("<table class=\"queue\">"),
        "no summary table"
    );
    assert!(report.contains("badge slash") && report.contains("badge flag"));
    assert!(report.contains("data-filter=\"checks\""), "no filter");
    // Read-only: no form posts anywhere.
    assert!(!report.contains("method=\"post\""));
    let dir = out.join("report");
    let mut pages: Vec<(PathBuf, String)> = vec![(out.join("report.html"), report.clone())];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "html") {
            let text = std::fs::read_to_string(&path).unwrap();
            pages.push((path, text));
        }
    }
    let cases = pages
        .iter()
        .filter(|(p, _)| p.to_string_lossy().contains("/case-"))
        .count();
    let acted = expected()
        .iter()
        .filter(|e| e.action != Action::None)
        .count();
    assert_eq!(cases, acted);
    let long_decimal = |s: &str| {
        s.as_bytes()
            .windows(9)
            .any(|w| w[0].is_ascii_digit() && w[1] == b'.' && w[2..].iter().all(u8::is_ascii_digit))
    };
    let mut images = 0;
    for (path, html) in &pages {
        let base = path.parent().unwrap();
        for link in links(html) {
            assert!(!link.is_empty(), "{}: an empty link", path.display());
            assert!(
                !link.starts_with('/') && !link.contains("://") && !link.starts_with("data:"),
                "{}: {link} is not a file of the report",
                path.display()
            );
            assert!(
                base.join(&link).is_file(),
                "{}: {link} is missing",
                path.display()
            );
            images += usize::from(link.starts_with("img/"));
        }
        assert!(
            !long_decimal(html),
            "{}: an unreadable number",
            path.display()
        );
        assert!(
            html.len() < 512 << 10,
            "{}: {} bytes",
            path.display(),
            html.len()
        );
    }
    assert!(images > 0, "no page shows an image");
    pages
}

/// [`check_report_links`], and the demo's own evidence pages: an SD job's, an LLM job's,
/// a challenge's, and no refused output shown.
fn check_report_site(out: &Path) {
    let pages = check_report_links(out);
    let dir = out.join("report");
    let page = |needle: &str| {
        pages
            .iter()
            .find(|(p, _)| p.to_string_lossy().contains(needle))
            .unwrap_or_else(|| panic!("no page {needle}"))
            .1
            .as_str()
    };
    // An SD job's evidence: the job's parameters and both images.
    let sd = page("evidence-sd-blur-0-image_similarity");
    for needle in [
        "Seed",
        "Steps",
        "Size",
        "img/sd-blur-0-output.",
        "img/sd-blur-0-reference.",
    ] {
        assert!(sd.contains(needle), "SD evidence lacks {needle}");
    }
    // An LLM job's evidence: the prompt, the miner's text and the token chart.
    let llm = pages
        .iter()
        .find(|(p, _)| p.to_string_lossy().contains("evidence-llm-substitute-"))
        .expect("no LLM evidence page")
        .1
        .as_str();
    assert!(llm.contains("Miner&#x27;s text") || llm.contains("Miner's text"));
    assert!(llm.contains("<svg"), "no token chart");
    // A model-file challenge: the range, and the expected and received answers.
    let challenge = page("evidence-sd-tampered-0-model_challenge");
    for needle in [
        "Model-file challenge",
        "Expected (reference)",
        "Received (miner)",
        "dreamshaper-xl.safetensors",
    ] {
        assert!(
            challenge.contains(needle),
            "challenge evidence lacks {needle}"
        );
    }
    // An output our decoder refused is never put in front of a browser.
    let verdicts = &judge().verdicts;
    let refused: Vec<&str> = verdicts
        .iter()
        .filter(|v| {
            v.outcome(CheckId::OutputDecode)
                .is_some_and(|o| o.is_fail())
        })
        .map(|v| v.job_id.as_str())
        .collect();
    assert!(!refused.is_empty());
    for job in refused {
        for ext in ["png", "jpg"] {
            assert!(
                !dir.join(format!("img/{job}-output.{ext}")).exists(),
                "{job}"
            );
        }
    }
}

#[test]
fn the_cli_fails_when_it_cannot_run() {
    let run = Command::new(env!("CARGO_BIN_EXE_proctor"))
        .args([
            "audit",
            "/nonexistent/folder",
            "--out",
            "/tmp/never-written",
        ])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("jobs.jsonl"));
}

/// The screen and rerun workers decode and hash on every core before judging in order
/// (`pipeline::prepare_all`); that must give the verdicts judging alone gives.
#[test]
fn decoding_ahead_on_every_core_changes_no_verdict() {
    let rules = Rules::embedded().unwrap();
    let records: Vec<proctor::record::JobRecord> =
        std::fs::read_to_string(demo().join("jobs.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| proctor::record::JobRecord::from_json(l.as_bytes()).ok())
            .collect();
    let mut jobs: Vec<_> = records
        .iter()
        .map(|r| (r, audit::fetch(&demo(), r, &rules)))
        .collect();
    let plain = proctor::checks::Checker::new(rules.clone()).unwrap();
    let mut stream = proctor::checks::StreamState::new();
    let want: Vec<_> = jobs
        .iter()
        .map(|(r, f)| plain.evaluate(r, f, proctor::checks::Stream::Live(&mut stream)))
        .collect();

    proctor::pipeline::prepare_all(&rules, jobs.iter_mut().map(|(r, f)| (*r, f)));
    let decoded = jobs.iter().filter(|(_, f)| f.decoded.is_some()).count();
    let sd = records
        .iter()
        .filter(|r| r.kind() == proctor::record::JobKind::Sd)
        .count();
    assert!(decoded > 10, "only {decoded} outputs were decoded ahead");
    assert!(decoded <= sd, "{decoded} decoded, but only {sd} SD jobs");
    let ahead = proctor::checks::Checker::new(rules).unwrap();
    let mut stream = proctor::checks::StreamState::new();
    for ((r, f), want) in jobs.iter().zip(&want) {
        assert_eq!(
            &ahead.evaluate(r, f, proctor::checks::Stream::Live(&mut stream)),
            want,
            "job {}",
            r.job_id
        );
    }
    // Both reach the demo's verdicts of every kind, so the comparison covers them.
    let kinds: BTreeSet<_> = want.iter().map(|v| format!("{:?}", v.verdict)).collect();
    assert!(kinds.len() >= 3, "{kinds:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_audit_decides_over_the_window_the_judge_worker_decides_over() {
    // The same rule as the pipeline's (`case::counted`): a decision counts the jobs of
    // the `window_days` before the miner's newest job. Move every job of the
    // fewer-steps cheater but its newest out of that window: one failed re-run is left,
    // which flags. Before, the audit counted every job in the folder and slashed.
    let rules = calibrated();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&demo(), dir.path());
    let cheater = expected()
        .into_iter()
        .find(|e| e.name == "cheat-fewer-steps")
        .unwrap()
        .miner;
    let jobs = std::fs::read_to_string(demo().join("jobs.jsonl")).unwrap();
    let mut records: Vec<(String, Option<serde_json::Value>)> = jobs
        .lines()
        .map(|l| (l.to_owned(), serde_json::from_str(l).ok()))
        .collect();
    let theirs = |v: &serde_json::Value| {
        v["miner_id"]
            .as_str()
            .is_some_and(|m| MinerId::parse(m).ok().as_ref() == Some(&cheater))
    };
    let newest = records
        .iter()
        .filter_map(|(_, v)| v.as_ref().filter(|v| theirs(v)))
        .filter_map(|v| v["submitted_at"].as_str().map(str::to_owned))
        .max()
        .unwrap();
    let mut moved = 0;
    for (line, v) in &mut records {
        let Some(v) = v.as_mut().filter(|v| theirs(v)) else {
            continue;
        };
        let at = v["submitted_at"].as_str().unwrap().to_owned();
        if at == newest {
            continue;
        }
        let at: chrono::DateTime<chrono::Utc> = at.parse().unwrap();
        let earlier = at - chrono::Duration::days(i64::from(rules.slashing.window_days) + 1);
        v["submitted_at"] = earlier.to_rfc3339().into();
        *line = v.to_string();
        moved += 1;
    }
    assert!(moved >= 2, "the cheater has {moved} older jobs");
    let text: Vec<String> = records.into_iter().map(|(l, _)| l).collect();
    std::fs::write(dir.path().join("jobs.jsonl"), text.join("\n") + "\n").unwrap();

    let before = judge_calibrated().decision(&cheater).unwrap();
    assert_eq!(before.action, Action::Slash);
    let result = audit::judge_dir(
        dir.path(),
        rules,
        &SamplingSecret::from_passphrase("t"),
        proctor::case::Reruns::Present,
        None,
        false,
    )
    .unwrap();
    let after = result.decision(&cheater).unwrap();
    assert_eq!(after.action, Action::FlagForReview, "{:?}", after.tallies);
    let jobs: BTreeSet<_> = after.evidence.iter().map(|e| &e.job_id).collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
}

#[test]
fn an_empty_or_garbage_folder_is_not_a_clean_audit() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = |jsonl: &str| {
        std::fs::write(dir.path().join("jobs.jsonl"), jsonl).unwrap();
        Command::new(env!("CARGO_BIN_EXE_proctor"))
            .args([
                "audit",
                dir.path().to_str().unwrap(),
                "--out",
                out.path().to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let empty = run("");
    assert_eq!(empty.status.code(), Some(3), "nothing to judge is an error");
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no job records"));
    let garbage = run("garbage\n{\"job_id\": 1\n");
    assert_eq!(
        garbage.status.code(),
        Some(1),
        "rejected records are a finding: {}",
        String::from_utf8_lossy(&garbage.stdout)
    );
    assert!(String::from_utf8_lossy(&garbage.stdout).contains("not valid JSON"));
}

/// The demo's records `rounds` times over, each copy with new job ids (`<id>.r<round>`),
/// its reference folders and objects linked to the demo's.
fn repeated_demo(rounds: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let lines = std::fs::read_to_string(demo().join("jobs.jsonl")).unwrap();
    let mut out = String::new();
    std::fs::create_dir(dir.path().join("reference")).unwrap();
    for round in 0..rounds {
        for line in lines.lines() {
            let Ok(mut v) = serde_json::from_str::<serde_json::Value>(line) else {
                out.push_str(line);
                out.push('\n');
                continue;
            };
            let Some(id) = v["job_id"].as_str().map(str::to_owned) else {
                out.push_str(line);
                out.push('\n');
                continue;
            };
            let copy = format!("{id}.r{round}");
            v["job_id"] = copy.clone().into();
            out.push_str(&v.to_string());
            out.push('\n');
            let reference = demo().join("reference").join(&id);
            if reference.is_dir() {
                std::os::unix::fs::symlink(reference, dir.path().join("reference").join(copy))
                    .unwrap();
            }
        }
    }
    std::fs::write(dir.path().join("jobs.jsonl"), out).unwrap();
    for name in ["objects", "wallets.json"] {
        std::os::unix::fs::symlink(demo().join(name), dir.path().join(name)).unwrap();
    }
    dir
}

#[test]
fn the_streaming_audit_writes_what_the_in_memory_one_judges_and_bounds_its_report() {
    let folder = repeated_demo(3);
    let out = tempfile::tempdir().unwrap();
    let secret = SamplingSecret::from_passphrase("t");
    let want = audit::judge_dir(
        folder.path(),
        Rules::embedded().unwrap(),
        &secret,
        proctor::case::Reruns::Present,
        None,
        false,
    )
    .unwrap();
    let opts = audit::AuditOptions {
        dir: folder.path().to_owned(),
        out: out.path().to_owned(),
        sampling_secret: secret,
        reruns: proctor::case::Reruns::Present,
        signing_key: None,
        progress: false,
        report_jobs_per_miner: 4,
    };
    let got = audit::run(&opts, Rules::embedded().unwrap()).unwrap();

    // The verdicts, streamed to the file, are the in-memory audit's, in order.
    let written: Vec<proctor::checks::JobVerdict> =
        std::fs::read_to_string(out.path().join("verdicts.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(written.len(), 3 * judge().verdicts.len());
    assert_eq!(written, want.verdicts);
    // Decisions made from the verdicts cut down on disk are the ones made from whole
    // verdicts in memory.
    assert_eq!(
        serde_json::to_value(&got.decisions).unwrap(),
        serde_json::to_value(&want.decisions).unwrap()
    );
    assert_eq!(got.rejected.len(), want.rejected.len());
    assert_eq!(got.jobs(), want.verdicts.len() as u64);
    for (miner, (jobs, failed)) in &got.miner_counts {
        let mine: Vec<_> = want
            .verdicts
            .iter()
            .filter(|v| &v.miner_id == miner)
            .collect();
        assert_eq!(*jobs, mine.len() as u64);
        let bad = mine
            .iter()
            .filter(|v| matches!(v.verdict, Verdict::Fail | Verdict::Invalid))
            .count();
        assert_eq!(*failed, bad as u64);
    }

    // Each case page shows at most 4 newest jobs and 4 cited ones, and says how many
    // it leaves out; every link of the report still resolves.
    // A re-run cheater: flagged here, slashed where the rates hold, many jobs either way.
    let slashed = expected()
        .into_iter()
        .find(|e| e.calibrated == Action::Slash)
        .unwrap();
    let jobs = got.miner_counts[&slashed.miner].0;
    assert!(jobs > 8, "{jobs}");
    let case = std::fs::read_dir(out.path().join("report"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("case-")
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .find(|html| html.contains(&slashed.miner.to_string()))
        .unwrap();
    let rows = case.matches("<tr class=\"verdict-").count() as u64;
    assert!((1..=8).contains(&rows), "{rows} timeline rows");
    assert!(
        case.contains(&format!(
            "{} older jobs of this miner are not shown",
            jobs - rows
        )),
        "the case page does not count the {} jobs it leaves out",
        jobs - rows
    );
    check_report_links(out.path());
}

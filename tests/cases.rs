//! The table-driven harness: each `fixtures/cases/*.toml` names a job record (from the
//! demo folder), optional changes to it, and the outcome each check must have.
//!
//! ```toml
//! name = "..."                 # a sentence: what the case proves
//! job = "sd-blur-0"            # a job of fixtures/audit-demo/jobs.jsonl
//! before = ["sd-reuse-0"]      # jobs judged first, in order (state for the reuse check)
//! output_text_bytes = 300000   # LLM: replace the inline text with this many bytes
//! [patch]                      # a JSON merge patch (RFC 7396) applied to the record
//! metrics = { inference_latency = 0.01 }
//! [expect]
//! verdict = "fail"
//! checks = { latency = "fail", image_similarity = "absent" }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proctor::audit;
use proctor::checks::{Checker, Stream, StreamState, Verdict};
use proctor::outcome::{CheckId, Status};
use proctor::record::JobRecord;
use proctor::rules::Rules;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    job: String,
    #[serde(default)]
    before: Vec<String>,
    #[serde(default)]
    output_text_bytes: Option<usize>,
    #[serde(default)]
    patch: Option<toml::Value>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    verdict: Option<Verdict>,
    #[serde(default)]
    checks: BTreeMap<CheckId, Expected>,
}

#[derive(Deserialize, PartialEq, Debug, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Expected {
    Pass,
    Fail,
    Inconclusive,
    /// The check must not have run at all.
    Absent,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn demo_records() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(fixtures().join("audit-demo/jobs.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v["job_id"].as_str()?.to_owned(), v)))
        .collect()
}

/// Runs one case; returns the mismatches.
fn run_case(case: &Case, records: &BTreeMap<String, Value>) -> Vec<String> {
    let demo = fixtures().join("audit-demo");
    let checker = Checker::new(Rules::embedded().unwrap()).unwrap();
    let mut stream = StreamState::new();
    let parse = |v: &Value| JobRecord::from_json(v.to_string().as_bytes());
    for id in &case.before {
        let rec = parse(&records[id]).unwrap();
        let fetched = audit::fetch(&demo, &rec, checker.rules());
        checker.evaluate(&rec, &fetched, Stream::Live(&mut stream));
    }
    let Some(raw) = records.get(&case.job) else {
        return vec![format!("no demo job {}", case.job)];
    };
    let mut raw = raw.clone();
    if let Some(p) = &case.patch {
        merge_patch(&mut raw, &serde_json::to_value(p).unwrap());
    }
    if let Some(n) = case.output_text_bytes {
        raw["output"] = serde_json::json!({ "text": "a".repeat(n) });
    }
    let rec = match parse(&raw) {
        Ok(r) => r,
        Err(e) => return vec![format!("record does not parse: {e}")],
    };
    let fetched = audit::fetch(&demo, &rec, checker.rules());
    let verdict = checker.evaluate(&rec, &fetched, Stream::Live(&mut stream));
    let mut problems = Vec::new();
    if let Some(want) = case.expect.verdict
        && verdict.verdict != want
    {
        problems.push(format!("verdict {:?}, expected {want:?}", verdict.verdict));
    }
    for (check, want) in &case.expect.checks {
        let got = match verdict.outcome(*check).map(|o| o.status()) {
            None => Expected::Absent,
            Some(Status::Pass) => Expected::Pass,
            Some(Status::Fail) => Expected::Fail,
            Some(Status::Inconclusive) => Expected::Inconclusive,
        };
        if got != *want {
            problems.push(format!(
                "{check}: {got:?}, expected {want:?} ({:?})",
                verdict.outcome(*check)
            ));
        }
    }
    problems
}

#[test]
fn every_case_in_fixtures_cases_holds() {
    let records = demo_records();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "only {} cases", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let case: Case = toml::from_str(&std::fs::read_to_string(f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(
            !case.expect.checks.is_empty() || case.expect.verdict.is_some(),
            "{}: a case must expect something",
            f.display()
        );
        for p in run_case(&case, &records) {
            failures.push(format!(
                "{} ({}): {p}",
                f.file_name().unwrap().to_string_lossy(),
                case.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_harness_reports_a_wrong_expectation() {
    // Guards the harness itself: a case that expects the opposite must be reported.
    let case: Case = toml::from_str(
        "name = 'inverted'\njob = 'sd-blur-0'\n[expect]\nverdict = 'pass'\nchecks = { image_similarity = 'pass' }\n",
    )
    .unwrap();
    let problems = run_case(&case, &demo_records());
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn the_rerun_stage_keeps_the_screens_stream_checks_and_runs_none() {
    // The screen stage judges `sd-reuse-1` after `sd-reuse-0` and finds the image reused.
    // The re-run stage sees no stream: it keeps the screen's `reuse` and `latency_peers`
    // as they are, so a fresh judge with no index still reports the reuse, and a screen
    // verdict without them gives a re-run verdict without them (never a fresh, empty
    // index's pass).
    let demo = fixtures().join("audit-demo");
    let records = demo_records();
    let parse = |id: &str| JobRecord::from_json(records[id].to_string().as_bytes()).unwrap();
    let checker = Checker::new(Rules::embedded().unwrap()).unwrap();
    let (first, reused) = (parse("sd-reuse-0"), parse("sd-reuse-1"));
    let mut stream = StreamState::new();
    let fetch = |r: &JobRecord| audit::fetch(&demo, r, checker.rules());
    checker.evaluate(&first, &fetch(&first), Stream::Live(&mut stream));
    let screen = checker.evaluate(&reused, &fetch(&reused), Stream::Live(&mut stream));
    let status = |v: &proctor::checks::JobVerdict, c| v.outcome(c).map(|o| o.status());
    assert_eq!(status(&screen, CheckId::Reuse), Some(Status::Fail));
    assert!(status(&screen, CheckId::LatencyPeers).is_some());

    let rerun = checker.evaluate(&reused, &fetch(&reused), Stream::Keep(&screen));
    assert_eq!(
        rerun.outcome(CheckId::Reuse),
        screen.outcome(CheckId::Reuse)
    );
    assert_eq!(
        rerun.outcome(CheckId::LatencyPeers),
        screen.outcome(CheckId::LatencyPeers)
    );
    assert_eq!(rerun.verdict, Verdict::Fail);

    let mut without = screen.clone();
    without
        .checks
        .retain(|c| !matches!(c.check, CheckId::Reuse | CheckId::LatencyPeers));
    let rerun = checker.evaluate(&reused, &fetch(&reused), Stream::Keep(&without));
    assert_eq!(status(&rerun, CheckId::Reuse), None);
    assert_eq!(status(&rerun, CheckId::LatencyPeers), None);
}

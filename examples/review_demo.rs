//! `scripts/review-demo load`: the audit demo's population through the real pipeline
//! (its objects and reference outputs into S3, its job records onto the jobs topic,
//! the four workers run in this process until every job is judged and every event
//! published), into a database of its own, for the review app to show.
//!
//! Writes the settings of that database and those topics to the file named by its
//! one argument, as `PROCTOR_…` lines `scripts/review-demo` sources before running
//! `proctor staff add` or `proctor review serve`.
//!
//!   cargo run --example review_demo -- ~/.cache/proctor/review-demo/env

#[path = "../tests/support/scope.rs"]
mod scope;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use proctor::audit;
use support::Harness;

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: review_demo ENV_FILE");
    let h = Harness::new("demo").await;
    let demo = support::repo().join("fixtures/audit-demo");
    let s3 = &h.settings.s3;
    let objects = h
        .upload_dir(&demo.join("objects"), &s3.jobs_bucket, "")
        .await;
    let references = h
        .upload_dir(&demo.join("reference"), &s3.reference_bucket, "reference/")
        .await;
    for (wallet, nfts) in audit::read_wallets(&demo).unwrap() {
        h.store.set_wallet_nfts(&wallet, nfts).await.unwrap();
    }
    let lines: Vec<Vec<u8>> = std::fs::read_to_string(demo.join("jobs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    eprintln!(
        "review-demo: {objects} objects and {references} reference files in S3; producing {} job records",
        lines.len()
    );
    h.produce_jobs(&lines).await;
    // Every job re-run, so each case has its reference evidence to show.
    let rules = support::rerun_everything();
    let mut workers = Vec::new();
    for w in ["screen", "rerun", "judge", "publish"] {
        workers.push(h.start_worker(w, rules.clone()).await);
    }
    // As many re-runs as the audit judges jobs of the same folder under these rules.
    let jobs = audit::judge_dir(
        &demo,
        rules.clone(),
        &proctor::sampling::SamplingSecret::from_passphrase("pipeline tests"),
        proctor::case::Reruns::Drawn,
        None,
        false,
    )
    .expect("the demo folder judges")
    .verdicts
    .len() as i64;
    h.wait_for("every job re-run", Duration::from_secs(300), || async {
        h.count("SELECT count(*) FROM verdicts WHERE stage = 'rerun'")
            .await
            >= jobs
    })
    .await;
    h.wait_judged_and_published().await;
    for w in workers {
        w.stop().await;
    }
    let cases = h.count("SELECT count(*) FROM review_cases").await;
    let open = h
        .count("SELECT count(*) FROM review_cases WHERE status = 'open'")
        .await;
    let env: String = h
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("PROCTOR_"))
        .map(|(k, v)| format!("export {k}={v}\n"))
        .collect();
    std::fs::create_dir_all(std::path::Path::new(&out).parent().unwrap()).unwrap();
    std::fs::write(&out, env).unwrap();
    println!(
        "review-demo: database {} holds {cases} cases ({open} open flags); settings in {out}",
        h.db_name
    );
}

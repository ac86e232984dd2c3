//! The pipeline against the real services (PostgreSQL, garage S3, tansu Kafka), as
//! `scripts/services.sh up` starts them. Each test has its own database, topics and
//! consumer groups. The tests run one at a time: the back-pressure test stops S3, which
//! the broker's log lives in too.

#[path = "support/scope.rs"]
mod scope;
mod support;

#[allow(dead_code)]
#[path = "../examples/gen_audit_demo.rs"]
mod demo_gen;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use proctor::audit;
use proctor::checks::{JobVerdict, Verdict};
use proctor::decide::Action;
use proctor::events;
use proctor::kafka;
use proctor::sampling::SamplingSecret;
use sqlx::Row;
use support::{Harness, Population, rerun_everything};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn demo() -> std::path::PathBuf {
    support::repo().join("fixtures/audit-demo")
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(<[u8]>::to_vec)
        .collect()
}

/// The latest-stage verdict of every job in the database.
async fn final_verdicts(h: &Harness) -> BTreeMap<String, JobVerdict> {
    let rows = sqlx::query(
        "SELECT DISTINCT ON (job_id) job_id, body FROM verdicts
         ORDER BY job_id, (stage = 'rerun') DESC",
    )
    .fetch_all(h.store.pool())
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            let sqlx::types::Json(v): sqlx::types::Json<JobVerdict> = r.get(1);
            (r.get::<String, _>(0), v)
        })
        .collect()
}

/// Validates a message against one of the documented schemas (docs/*.schema.json).
fn assert_schema(schema: &str, value: &serde_json::Value) {
    let text = std::fs::read(support::repo().join("docs").join(schema)).unwrap();
    let validator = jsonschema::validator_for(&serde_json::from_slice(&text).unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{schema}: {errors:?} in {value}");
}

/// What the harness's sampling secret could leak as: the passphrase, and the key
/// derived from it in hex. Neither may appear in a log, a metric, an event or a letter:
/// a miner who had the key would know which of its jobs are re-run.
fn sampling_secret_forms() -> [String; 2] {
    let passphrase = "pipeline tests";
    let key = blake3::derive_key(
        proctor::sampling::SAMPLING_KEY_CONTEXT,
        passphrase.as_bytes(),
    );
    [passphrase.to_owned(), hex::encode(key)]
}

fn assert_no_sampling_secret(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    for form in sampling_secret_forms() {
        assert!(!text.contains(&form), "{what} holds the sampling secret");
    }
}

fn failed_checks(v: &JobVerdict) -> BTreeSet<&'static str> {
    v.failed_checks().map(|c| c.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_the_pipeline_agrees_with_the_audit_and_slashes_each_cheat_once() {
    let _serial = SERIAL.lock().await;
    let h = Harness::new("e2e").await;
    let rules = rerun_everything();
    let secret = SamplingSecret::from_passphrase("pipeline tests");
    let expected = audit::judge_dir(
        &demo(),
        rules.clone(),
        &secret,
        proctor::case::Reruns::Drawn,
        None,
        false,
    )
    .unwrap();

    // The population: objects and reference outputs in S3, wallets in Postgres, job
    // records on the jobs topic, keyed by miner.
    let s3 = &h.settings.s3;
    // Every miner output of the demo, and every reference.
    assert_eq!(
        h.upload_dir(&demo().join("objects"), &s3.jobs_bucket, "")
            .await,
        47
    );
    assert!(
        h.upload_dir(
            &demo().join("reference"),
            &s3.reference_bucket,
            "reference/"
        )
        .await
            == 46
    );
    for (wallet, nfts) in audit::read_wallets(&demo()).unwrap() {
        h.store.set_wallet_nfts(&wallet, nfts).await.unwrap();
    }
    let records = lines(&demo().join("jobs.jsonl"));
    h.produce_jobs(&records).await;

    let mut workers = Vec::new();
    for w in ["screen", "rerun", "judge", "publish"] {
        workers.push(h.start_worker(w, rules.clone()).await);
    }
    let jobs = expected.verdicts.len() as i64;
    h.wait_for(
        "every job screened and re-run",
        Duration::from_secs(180),
        || async {
            h.count("SELECT count(*) FROM verdicts WHERE stage = 'rerun'")
                .await
                == jobs
        },
    )
    .await;
    h.wait_judged_and_published().await;

    // Verdicts: the same as the audit's, job by job, with the same failed checks.
    assert_eq!(
        h.count("SELECT count(*) FROM verdicts WHERE stage = 'screen'")
            .await,
        jobs
    );
    let got = final_verdicts(&h).await;
    assert_eq!(got.len(), expected.verdicts.len());
    for want in &expected.verdicts {
        let v = &got[want.job_id.as_str()];
        assert_eq!(v.verdict, want.verdict, "job {}", want.job_id);
        assert_eq!(failed_checks(v), failed_checks(want), "job {}", want.job_id);
        assert_eq!(v.points, want.points, "job {}", want.job_id);
    }

    // Slashes: exactly one per cheating miner, none for an honest one, equal to the
    // audit's (same deterministic slash id, same amounts).
    let miners: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(demo().join("miners.json")).unwrap()).unwrap();
    let slashes = sqlx::query(
        "SELECT slash_id, miner_id, amount_waifu_micro, amount_llama_micro FROM slashes",
    )
    .fetch_all(h.store.pool())
    .await
    .unwrap();
    let by_miner: BTreeMap<String, Vec<(String, i64, i64)>> =
        slashes.iter().fold(BTreeMap::new(), |mut m, r| {
            m.entry(r.get::<String, _>(1))
                .or_default()
                .push((r.get(0), r.get(2), r.get(3)));
            m
        });
    let mut cheats = 0;
    for m in &miners {
        let id = m["miner_id"].as_str().unwrap();
        let action = m["expected_action_calibrated"].as_str().unwrap();
        let audit_slash = expected
            .decisions
            .iter()
            .find(|d| d.miner_id.to_string() == id)
            .and_then(|d| d.slash.as_ref());
        match action {
            "slash" => {
                cheats += 1;
                let s = by_miner
                    .get(id)
                    .unwrap_or_else(|| panic!("{} was not slashed", m["name"]));
                assert_eq!(s.len(), 1, "{} slashed {} times", m["name"], s.len());
                let a = audit_slash.expect("the audit slashes it too");
                assert_eq!(s[0].0, a.slash_id, "{}", m["name"]);
                assert_eq!(
                    (s[0].1, s[0].2),
                    (a.amount.waifu_micro, a.amount.llama_micro),
                    "the same amounts, exactly"
                );
            }
            _ => assert!(
                !by_miner.contains_key(id),
                "{} ({action}) was slashed",
                m["name"]
            ),
        }
    }
    assert_eq!(by_miner.len(), cheats);
    let flagged: BTreeSet<String> = sqlx::query_scalar("SELECT miner_id FROM review_flags")
        .fetch_all(h.store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let want_flagged: BTreeSet<String> = expected
        .decisions
        .iter()
        .filter(|d| d.action == Action::FlagForReview)
        .map(|d| d.miner_id.to_string())
        .collect();
    assert_eq!(flagged, want_flagged);

    // The ledger's view: a separate consumer group reads signed events, one per slash.
    let received = h
        .read_topic(
            &h.settings.kafka.slashes_topic,
            "ledger",
            Duration::from_secs(3),
        )
        .await;
    let trusted = events::signing_key_from_hex(support::SIGNING_KEY)
        .unwrap()
        .verifying_key();
    let mut ids = BTreeSet::new();
    for m in &received {
        let ev = events::verify(&m.payload, &trusted).expect("a valid signature");
        assert_schema(
            "signed-event.schema.json",
            &serde_json::from_slice(&m.payload).unwrap(),
        );
        assert_eq!(m.key.as_deref(), Some(ev.miner_id.to_string().as_str()));
        ids.insert(ev.slash_id.clone());
    }
    let pg_ids: BTreeSet<String> = by_miner.values().flatten().map(|s| s.0.clone()).collect();
    assert_eq!(ids, pg_ids);
    println!(
        "e2e: {} jobs, {} slashes, {} events received ({} duplicates)",
        jobs,
        pg_ids.len(),
        received.len(),
        received.len() - ids.len()
    );

    // The two records the audit rejects are dead letters, with their reasons.
    let dlq = h
        .read_topic(&h.settings.kafka.dlq_topic, "dlq", Duration::from_secs(2))
        .await;
    assert_eq!(dlq.len(), expected.rejected.len());
    let reruns = h
        .read_topic(
            &h.settings.kafka.rerun_topic,
            "reruns",
            Duration::from_secs(2),
        )
        .await;
    assert!(reruns.len() >= expected.verdicts.len());
    for m in &reruns {
        assert_schema(
            "job-record.schema.json",
            &serde_json::from_slice(&m.payload).unwrap(),
        );
    }
    for d in &dlq {
        assert_schema(
            "dead-letter-headers.schema.json",
            &serde_json::to_value(&d.headers).unwrap(),
        );
        assert_eq!(d.headers[kafka::DLQ_REASON], "invalid_record");
        assert_eq!(d.headers[kafka::DLQ_TOPIC], h.settings.kafka.jobs_topic);
        assert!(d.headers[kafka::DLQ_OFFSET].parse::<i64>().is_ok());
        assert!(!d.headers[kafka::DLQ_ERROR].is_empty());
    }

    // The sampling secret is in no message any process wrote, nor in any metric.
    for m in received.iter().chain(&dlq).chain(&reruns) {
        assert_no_sampling_secret("a message", &m.payload);
        assert_no_sampling_secret("a message's headers", format!("{:?}", m.headers).as_bytes());
    }
    for w in &workers {
        assert_no_sampling_secret("the metrics", w.ctx.metrics.render().as_bytes());
    }

    for w in workers {
        w.stop().await;
    }
    h.drop_db().await;
}

fn demo_record(job_id: &str) -> serde_json::Value {
    let line = lines(&demo().join("jobs.jsonl"))
        .into_iter()
        .find(|l| String::from_utf8_lossy(l).contains(&format!("\"job_id\":\"{job_id}\"")))
        .unwrap();
    serde_json::from_slice(&line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_ends_as_a_dead_letter_or_an_invalid_verdict_and_never_stops_the_worker() {
    let _serial = SERIAL.lock().await;
    let h = Harness::new("bad").await;
    let rules = proctor::rules::Rules::embedded().unwrap();
    let bucket = h.settings.s3.jobs_bucket.clone();
    let run = &h.run_id;

    let template = demo_record("sd-honest-a-0");
    let key = template["output"]["image_key"].as_str().unwrap().to_owned();
    h.objects
        .put(
            &bucket,
            &key,
            std::fs::read(demo().join("objects").join(&key)).unwrap(),
        )
        .await
        .unwrap();
    let with = |job: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut r = template.clone();
        r["job_id"] = job.into();
        edit(&mut r);
        serde_json::to_vec(&r).unwrap()
    };
    let bomb_key = format!("jobs/bomb-{run}.png");
    h.objects
        .put(&bucket, &bomb_key, demo_gen::png_bomb(60000, 60000, 8, 64))
        .await
        .unwrap();
    let mut llm = demo_record("llm-honest-a-0");
    llm["job_id"] = "bad-oversized-text".into();
    llm["output"] =
        serde_json::json!({"text": "y".repeat(rules.checks.llm.max_text_bytes as usize + 1)});
    let llm_with = |job: &str, text: String| {
        let mut r = demo_record("llm-honest-a-0");
        r["job_id"] = job.into();
        r["output"] = serde_json::json!({ "text": text });
        serde_json::to_vec(&r).unwrap()
    };
    // A lone surrogate, escaped and as raw (WTF-8) bytes: neither is a Unicode string.
    let escaped_surrogate = String::from_utf8(with("bad-lone-surrogate", &|_| {}))
        .unwrap()
        .replacen("\"hardware\":\"", "\"hardware\":\"\\ud800", 1)
        .into_bytes();
    let mut raw_surrogate = with("bad-raw-surrogate", &|r| {
        r["metrics"]["hardware"] = "SURROGATE".into()
    });
    let at = raw_surrogate
        .windows(9)
        .position(|w| w == b"SURROGATE")
        .unwrap();
    raw_surrogate.splice(at..at + 9, [0xED, 0xA0, 0x80]);
    let records = vec![
        b"{\"job_id\": \"bad-json\", ".to_vec(),
        with("bad-unknown-field", &|r| r["surprise"] = 1.into()),
        String::from_utf8(with("bad-huge-number", &|_| {}))
            .unwrap()
            .replacen(
                "\"inference_latency\":1.4",
                "\"inference_latency\":1e999",
                1,
            )
            .into_bytes(),
        with("bad-missing-object", &|r| {
            r["output"]["image_key"] = format!("jobs/missing-{run}.png").into();
        }),
        with("bad-bomb", &|r| {
            r["output"]["image_key"] = bomb_key.clone().into()
        }),
        serde_json::to_vec(&llm).unwrap(),
        // Values Postgres refuses for what they are (`jsonb` cannot hold U+0000): once
        // retried forever, stalling every miner behind them on the partition.
        llm_with("bad-nul-text", "an answer\u{0} with a NUL".into()),
        with("bad-nul-hardware", &|r| {
            r["metrics"]["hardware"] = "NVIDIA GeForce RTX\u{0}4090".into()
        }),
        escaped_surrogate,
        raw_surrogate,
    ];
    h.produce_jobs(&records).await;
    // Then the next jobs of the same miners, on the same partitions.
    h.produce_jobs(&[
        with("good-after-the-bad", &|_| {}),
        llm_with(
            "good-after-the-nul",
            "Paris is the capital of France.".into(),
        ),
    ])
    .await;
    let screen = h.start_worker("screen", rules.clone()).await;

    h.wait_for("four verdicts", Duration::from_secs(90), || async {
        h.count("SELECT count(*) FROM verdicts").await == 4
    })
    .await;
    let dlq = h
        .read_topic(&h.settings.kafka.dlq_topic, "dlq", Duration::from_secs(3))
        .await;
    let mut reasons: BTreeMap<String, String> = BTreeMap::new();
    for d in &dlq {
        assert_schema(
            "dead-letter-headers.schema.json",
            &serde_json::to_value(&d.headers).unwrap(),
        );
        let payload = String::from_utf8_lossy(&d.payload);
        let job = [
            "bad-json",
            "bad-unknown-field",
            "bad-huge-number",
            "bad-missing-object",
            "bad-nul-text",
            "bad-nul-hardware",
            "bad-lone-surrogate",
            "bad-raw-surrogate",
        ]
        .into_iter()
        .find(|j| payload.contains(j))
        .unwrap_or_else(|| panic!("unexpected dead letter {payload:.200}"));
        reasons.insert(
            job.to_owned(),
            format!(
                "{}: {}",
                d.headers[kafka::DLQ_REASON],
                d.headers[kafka::DLQ_ERROR]
            ),
        );
    }
    assert_eq!(reasons.len(), 8, "{reasons:#?}");
    assert!(reasons["bad-json"].starts_with("invalid_record: "));
    assert!(
        reasons["bad-unknown-field"].contains("surprise"),
        "{}",
        reasons["bad-unknown-field"]
    );
    assert!(
        reasons["bad-huge-number"].contains("inference_latency"),
        "{}",
        reasons["bad-huge-number"]
    );
    assert!(reasons["bad-missing-object"].starts_with("object_missing: "));
    assert!(reasons["bad-missing-object"].contains(&format!("missing-{run}.png")));
    for job in ["bad-nul-text", "bad-nul-hardware"] {
        assert!(
            reasons[job].starts_with("unstorable: ") && reasons[job].contains("Postgres refused"),
            "{job}: {}",
            reasons[job]
        );
    }
    for job in ["bad-lone-surrogate", "bad-raw-surrogate"] {
        assert!(
            reasons[job].starts_with("invalid_record: "),
            "{job}: {}",
            reasons[job]
        );
    }

    let got = final_verdicts(&h).await;
    for job in ["bad-bomb", "bad-oversized-text"] {
        let v = &got[job];
        assert_eq!(v.verdict, Verdict::Invalid, "{job}");
        let decode =
            serde_json::to_string(v.outcome(proctor::outcome::CheckId::OutputDecode).unwrap())
                .unwrap();
        assert!(decode.contains("invalid output"), "{job}: {decode}");
    }
    assert_eq!(got["good-after-the-bad"].verdict, Verdict::Pass);
    // The miner behind the refused record was judged: its partition moved on.
    assert!(got.contains_key("good-after-the-nul"), "{:?}", got.keys());
    assert!(
        h.count("SELECT count(*) FROM jobs WHERE job_id LIKE 'bad-nul-%'")
            .await
            == 0,
        "a refused job left a partial write"
    );
    assert!(!screen.handle.is_finished(), "the worker is still running");
    screen.stop().await;
    h.drop_db().await;
}

/// A broker restarted under a running screen worker, with records written after the
/// restart in two bursts: every one of them is screened, with the plain consumer. On
/// tansu 0.6's S3 engine, which started its log again below the group's position on a
/// restart (docs/OPERATIONS.md, "The stand-in broker"), it failed 3 of 5 runs without
/// the recovery the workers then needed; on its SQLite engine it passes without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_under_a_running_screen_loses_no_record_written_after_it() {
    let _serial = SERIAL.lock().await;
    // The in-process worker's logs, when asked for (`PROCTOR_LOG=info`).
    if std::env::var_os("PROCTOR_LOG").is_some() {
        proctor::telemetry::init_logging();
    }
    let h = Harness::new("restart").await;
    let per_round = Population::generate(1).lines.len();
    let pop = Population::generate(8);
    pop.upload(&h).await;
    let total = pop.lines.len() as i64;
    let screen = h
        .start_worker("screen", proctor::rules::Rules::embedded().unwrap())
        .await;
    let screened = |n: i64| {
        let h = &h;
        move || async move {
            count_retrying(h, "SELECT count(*) FROM verdicts WHERE stage = 'screen'").await == n
        }
    };
    // Three rounds read: the group's positions sit about three quarters of a round
    // into each partition.
    let before = 3 * per_round;
    h.produce_jobs(&pop.lines[..before]).await;
    h.wait_for(
        "the first rounds screened",
        Duration::from_secs(90),
        screened(before as i64),
    )
    .await;
    services_async("stop-kafka").await;
    services_async("up").await;
    // One round after the restart: were the log to start again from 0, each
    // partition's end would be back below the group's position.
    h.produce_jobs(&pop.lines[before..before + per_round]).await;
    // A pause between the bursts, so that the worker reads the first on its own.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Four more: past the old position.
    h.produce_jobs(&pop.lines[before + per_round..]).await;
    h.wait_for(
        "every job screened, those written after the restart too",
        Duration::from_secs(120),
        screened(total),
    )
    .await;
    screen.stop().await;
    h.drop_db().await;
}

/// A rules folder like [`support::rerun_everything`]'s (for child processes).
fn rerun_everything_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(support::repo().join("rules")).unwrap() {
        let p = e.unwrap().path();
        let mut text = std::fs::read_to_string(&p).unwrap();
        if p.file_name().unwrap() == "sampling.toml" {
            let mut out = String::new();
            for line in text.lines() {
                let key = line.split('=').next().unwrap_or("").trim();
                // A base rate of 1 re-runs every job (a floor must stay below 1).
                if ["base_rate", "ceiling"].contains(&key) {
                    out.push_str(&format!("{key} = 1.0\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            text = out;
        }
        if p.file_name().unwrap() == "checks.toml" {
            text = scope::calibrated_everywhere_toml(&text);
        }
        std::fs::write(dir.path().join(p.file_name().unwrap()), text).unwrap();
    }
    let loaded = proctor::rules::Rules::load_dir(dir.path()).unwrap();
    assert_eq!(loaded.sampling.base_rate, 1.0);
    scope::assert_calibrated_everywhere(dir.path());
    dir
}

/// A worker binary run as a child process, restartable.
struct Child {
    name: &'static str,
    child: std::process::Child,
    starts: u32,
}

impl Drop for Child {
    /// A failed assertion must not leave workers running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(h: &Harness, name: &'static str, rules: &Path, logs: &Path) -> std::process::Child {
    spawn_env(&h.env, name, rules, logs, &[], None)
}

/// How a worker is starved: its address space capped (`ulimit -v`, in MiB), and pinned
/// to one core at the lowest priority (`taskset -c 0 nice -n 19`).
#[derive(Debug, Clone, Copy)]
struct Starved {
    vmem_mib: u64,
}

/// A worker process with the harness's environment `base`, plus `env`.
fn spawn_env(
    base: &BTreeMap<String, String>,
    name: &'static str,
    rules: &Path,
    logs: &Path,
    env: &[(String, String)],
    starved: Option<Starved>,
) -> std::process::Child {
    let exe = match name {
        "screen" => env!("CARGO_BIN_EXE_proctor-screen"),
        "rerun" => env!("CARGO_BIN_EXE_proctor-rerun"),
        "judge" => env!("CARGO_BIN_EXE_proctor-judge"),
        _ => env!("CARGO_BIN_EXE_proctor-publish"),
    };
    // One file per process started, so that the lines of two workers of a kind (or of
    // a killed one and its successor) are told apart in a post-mortem.
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.{n}.log")))
        .unwrap();
    let mut cmd = match starved {
        None => std::process::Command::new(exe),
        Some(s) => {
            let mut c = std::process::Command::new("bash");
            c.arg("-c")
                .arg(format!(
                    "ulimit -v {}; exec taskset -c 0 nice -n 19 \"$0\"",
                    s.vmem_mib * 1024
                ))
                .arg(exe);
            c
        }
    };
    cmd.envs(base)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("PROCTOR_RULES", rules)
        // Info, not debug: every decision and recovery, and what the leak check reads.
        .env("PROCTOR_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_kill_9_workers_at_random_and_every_job_counts_exactly_once() {
    use rand::{Rng, SeedableRng};
    let _serial = SERIAL.lock().await;
    let h = Harness::new("crash").await;
    let rules_dir = rerun_everything_dir();
    let per_round = Population::generate(1).lines.len();
    let pop = Population::generate(2000usize.div_ceil(per_round));
    let total = pop.lines.len();
    assert!(total >= 2000);
    pop.upload(&h).await;
    for (wallet, nfts) in audit::read_wallets(pop.dir.path()).unwrap() {
        h.store.set_wallet_nfts(&wallet, nfts).await.unwrap();
    }
    assert_eq!(pop.expected.len(), total);

    // Kept after the run for post-mortems: target/crash-logs/<run id>/<worker>.<n>.log,
    // one per process started.
    let logs = support::repo().join("target/crash-logs").join(&h.run_id);
    std::fs::create_dir_all(&logs).unwrap();
    let mut children: Vec<Child> = ["screen", "screen", "rerun", "judge", "publish"]
        .into_iter()
        .map(|name| Child {
            name,
            child: spawn(&h, name, rules_dir.path(), &logs),
            starts: 1,
        })
        .collect();

    // Produce in chunks while killing a random worker every 0.4-1.2 s.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
    let chunks: Vec<&[Vec<u8>]> = pop.lines.chunks(100).collect();
    let (mut produced, mut kills) = (0, 0);
    let reruns_done = || async {
        h.count("SELECT count(*) FROM verdicts WHERE stage = 'rerun'")
            .await
            == total as i64
    };
    // Keep killing until the re-run stage is well under way too (it starts last), so
    // kills land in every stage's work; bounded, so a stalled stage fails below.
    let reruns = || h.count("SELECT count(*) FROM verdicts WHERE stage = 'rerun'");
    while produced < chunks.len() || kills < 12 || (reruns().await < total as i64 / 3 && kills < 60)
    {
        if produced < chunks.len() {
            h.produce_jobs(chunks[produced]).await;
            produced += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(400..1200))).await;
        let i = rng.random_range(0..children.len());
        let c = &mut children[i];
        c.child.kill().unwrap(); // SIGKILL
        c.child.wait().unwrap();
        c.child = spawn(&h, c.name, rules_dir.path(), &logs);
        c.starts += 1;
        kills += 1;
    }
    let reruns_at_last_kill = reruns().await;
    h.wait_for(
        "every job screened and re-run",
        Duration::from_secs(300),
        reruns_done,
    )
    .await;
    h.wait_judged_and_published().await;

    // Every job exactly once, with the audit's verdict.
    assert_eq!(h.count("SELECT count(*) FROM jobs").await, total as i64);
    assert_eq!(
        h.count("SELECT count(*) FROM verdicts WHERE stage = 'screen'")
            .await,
        total as i64
    );
    let got = final_verdicts(&h).await;
    let mut mismatches = Vec::new();
    for (job, want) in &pop.expected {
        let v = &got[job.as_str()];
        if v.verdict != want.verdict || failed_checks(v) != failed_checks(want) {
            mismatches.push(job.clone());
        }
    }
    assert!(
        mismatches.is_empty(),
        "verdicts differ from the audit's: {mismatches:?}"
    );

    // Slashes: every cheat at least once, no honest miner, no job in two slashes, and
    // every slash's event on the topic (duplicates counted, not hidden).
    let slashed: BTreeMap<String, i64> =
        sqlx::query("SELECT miner_id, count(*) FROM slashes GROUP BY miner_id")
            .fetch_all(h.store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    for m in &pop.cheats {
        assert!(slashed.contains_key(m), "cheat {m} was not slashed");
    }
    for m in &pop.honest {
        assert!(!slashed.contains_key(m), "honest {m} was slashed");
    }
    let covered = h.count("SELECT count(*) FROM slashed_jobs").await;
    let distinct = h
        .count("SELECT count(DISTINCT job_id) FROM slashed_jobs")
        .await;
    assert_eq!(covered, distinct);
    let received = h
        .read_topic(
            &h.settings.kafka.slashes_topic,
            "ledger",
            Duration::from_secs(3),
        )
        .await;
    let trusted = events::signing_key_from_hex(support::SIGNING_KEY)
        .unwrap()
        .verifying_key();
    let ids: BTreeSet<String> = received
        .iter()
        .map(|m| {
            events::verify(&m.payload, &trusted)
                .expect("signed")
                .slash_id
        })
        .collect();
    let pg: BTreeSet<String> = sqlx::query_scalar("SELECT slash_id FROM slashes")
        .fetch_all(h.store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ids, pg);
    let reruns = h
        .read_topic(
            &h.settings.kafka.rerun_topic,
            "count-reruns",
            Duration::from_secs(3),
        )
        .await;
    let rerun_ids: BTreeSet<String> = reruns
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["job_id"].to_string()
        })
        .collect();
    assert_eq!(rerun_ids.len(), total);
    println!(
        "crash: {total} jobs, {kills} kill -9s ({}; {reruns_at_last_kill} jobs re-run at the last kill), {} slashes ({} events delivered, {} duplicate), \
         {} re-run requests for {} jobs ({} duplicate deliveries of job records to screen)",
        children
            .iter()
            .map(|c| format!("{} started {}x", c.name, c.starts))
            .collect::<Vec<_>>()
            .join(", "),
        pg.len(),
        received.len(),
        received.len() - ids.len(),
        reruns.len(),
        rerun_ids.len(),
        reruns.len() - rerun_ids.len(),
    );

    let rejoins: usize = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap_or_default()
                .matches("rejoining the group")
                .count()
        })
        .sum();
    println!("crash: the workers rejoined their group {rejoins} times over an orphaned partition");
    for e in std::fs::read_dir(&logs).unwrap() {
        let path = e.unwrap().path();
        assert_no_sampling_secret(
            &path.display().to_string(),
            &std::fs::read(&path).unwrap_or_default(),
        );
    }

    // A graceful stop: SIGTERM, and every worker exits cleanly.
    for c in &mut children {
        std::process::Command::new("kill")
            .args(["-TERM", &c.child.id().to_string()])
            .status()
            .unwrap();
    }
    for c in &mut children {
        let status = c.child.wait().unwrap();
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM",
            c.name
        );
    }
    h.drop_db().await;
}

fn services(arg: &str) {
    let status = std::process::Command::new(support::repo().join("scripts/services.sh"))
        .arg(arg)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/services.sh {arg} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn back_pressure_s3_stopped_for_20_seconds_delays_the_run_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let h = Harness::new("s3down").await;
    let pop = Population::generate(20);
    let total = pop.lines.len() as i64;
    pop.upload(&h).await;
    for (wallet, nfts) in audit::read_wallets(pop.dir.path()).unwrap() {
        h.store.set_wallet_nfts(&wallet, nfts).await.unwrap();
    }
    // Half the jobs now, half once S3 is down: however fast the workers are, the
    // outage falls in the middle of the run (a faster machine once finished all of
    // them before S3 had stopped).
    let (first, second) = pop.lines.split_at(pop.lines.len() / 2);
    h.produce_jobs(first).await;

    let mut workers = Vec::new();
    for w in ["screen", "rerun", "judge", "publish"] {
        workers.push(h.start_worker(w, rerun_everything()).await);
    }
    h.wait_for("the first verdicts", Duration::from_secs(60), || async {
        h.count("SELECT count(*) FROM verdicts").await >= 20
    })
    .await;
    services("stop-s3");
    let at_stop = h.count("SELECT count(*) FROM verdicts").await;
    h.produce_jobs(second).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = h.count("SELECT count(*) FROM verdicts").await;
    services("up");
    assert!(
        at_stop < 2 * total,
        "the run ended before S3 stopped; make the population larger"
    );

    h.wait_for(
        "every job screened and re-run",
        Duration::from_secs(300),
        || async {
            h.count("SELECT count(*) FROM verdicts WHERE stage = 'rerun'")
                .await
                == total
        },
    )
    .await;
    h.wait_judged_and_published().await;
    let got = final_verdicts(&h).await;
    assert_eq!(got.len() as i64, total);
    for (job, want) in &pop.expected {
        let v = &got[job.as_str()];
        assert_eq!(v.verdict, want.verdict, "job {job}");
        assert_eq!(failed_checks(v), failed_checks(want), "job {job}");
    }
    // The outage was seen and retried, not turned into outcomes.
    let metrics: String = workers.iter().map(|w| w.ctx.metrics.render()).collect();
    let retried = metrics
        .lines()
        .filter(|l| l.starts_with("proctor_retries_total"))
        .collect::<Vec<_>>();
    assert!(
        !retried.is_empty(),
        "no retries were counted during the outage:\n{metrics}"
    );
    let dlq = h
        .read_topic(&h.settings.kafka.dlq_topic, "dlq", Duration::from_secs(2))
        .await;
    assert!(
        dlq.is_empty(),
        "the outage sent {} records to the DLQ",
        dlq.len()
    );
    println!(
        "back-pressure: {total} jobs; {at_stop} verdicts when S3 stopped, {during} after 20 s down; retries: {retried:?}"
    );
    for w in workers {
        w.stop().await;
    }
    h.drop_db().await;
}

/// The rerun worker with reference models in process and over HTTP: LLM jobs answered
/// by the fixture model are scored for real by candle, under one registry model id in
/// the worker's own process and under another by `proctor serve-reference` as an HTTP
/// scorer host. Both paths give each job the same verdict, check by check; honest
/// answers pass every LLM check and score far above canned text; every scored job's
/// scores are in S3 for the reviewer, for the miner's exact text; each verdict carries
/// the reference GPU-seconds it cost. (Whether the shipped thresholds
/// fail canned text on a 512-token model is `proctor calibrate`'s question: they were
/// set for a 128k-token vocabulary.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rerun_scores_llm_jobs_in_process_and_over_http_alike() {
    use proctor::checks::llm::TokenScores;
    use proctor::llm::model::Numerics;
    use proctor::llm::{Sampling, Scorer};
    use proctor::objects::{Got, ObjectStore};
    use proctor::record::{LlmInput, Message, Role};

    let _serial = SERIAL.lock().await;
    let h = Harness::new("candle").await;
    let rules = rerun_everything();
    let models = tempfile::tempdir().unwrap();
    let model_id = "hermes-3-llama3.1-8b";
    std::os::unix::fs::symlink(
        support::repo().join("fixtures/models/tiny-alice"),
        models.path().join(model_id),
    )
    .unwrap();
    let http_model = "theia-llama-3.1-8b";
    let mut served = Scorer::load(
        &support::repo().join("fixtures/models/tiny-alice"),
        Numerics::default(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    // The panel the candle host has for its model: the samplers every model gets.
    served.panel = proctor::llm::panel::Panel::load(
        &served,
        &rules.checks.llm.panel.suspects_of(model_id),
        rules.checks.llm.panel.max_suspects,
        models.path(),
        Numerics::default(),
        &candle_core::Device::Cpu,
    );
    assert!(!served.panel.is_empty());
    let server =
        support::hosts::serve(proctor::llm::serve::router(served), Default::default()).await;
    let mut settings = h.settings.clone();
    settings.reference.llm_models_dir = models.path().display().to_string();
    settings.reference.hosts = vec![proctor::settings::HostSettings {
        name: "llm-http".into(),
        kind: proctor::settings::HostKind::Scorer,
        url: server.url.clone(),
        models: vec![http_model.into()],
        concurrency: 4,
        queue: 64,
        timeout_secs: 60,
        seconds_per_job: 1.0,
        tokenizer: support::repo()
            .join("fixtures/models/tiny-alice")
            .display()
            .to_string(),
        served_model: String::new(),
        health_path: String::new(),
        token: Default::default(),
    }];

    let miner = Scorer::load(
        &support::repo().join("fixtures/models/tiny-alice"),
        Numerics::default(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let openings = [
        "Alice was beginning to get very tired",
        "The Rabbit started violently, dropped the",
        "There was a table set out under",
    ];
    let mut records = Vec::new();
    let mut texts = BTreeMap::new();
    for (i, words) in openings.iter().enumerate() {
        let input = LlmInput {
            messages: Some(vec![Message {
                role: Role::User,
                content: format!("Continue: {words}"),
            }]),
            prompt: None,
            temperature: 0.7,
            max_tokens: 48,
            seed: Some(i as i64),
            ..Default::default()
        };
        let honest = miner
            .generate(
                &[miner.prompter.prompt_ids(&input).unwrap()],
                &[Sampling {
                    max_tokens: 48,
                    temperature: 0.7,
                    seed: i as u64,
                    top_logprobs: 0,
                }],
            )
            .unwrap()
            .pop()
            .unwrap()
            .text;
        let canned = "I'm sorry, but as an AI language model I cannot help with that request.";
        for (path, model, offset) in [("candle", model_id, 0), ("http", http_model, 2)] {
            for (kind, who, text) in [("honest", 1, &honest), ("canned", 2, &canned.to_owned())] {
                let mut r = demo_record("llm-honest-a-0");
                let id = format!("{path}-{kind}-{i}");
                r["job_id"] = id.clone().into();
                r["model_id"] = model.into();
                r["miner_id"] = format!("0x{}-gpu0", (who + offset).to_string().repeat(40)).into();
                r["input"] = serde_json::to_value(&input).unwrap();
                r["output"] = serde_json::json!({ "text": text });
                texts.insert(id, text.clone());
                records.push(serde_json::to_vec(&r).unwrap());
            }
        }
    }
    h.produce_jobs(&records).await;
    let screen = h.start_worker("screen", rules.clone()).await;
    let rerun = h.start_worker_with("rerun", rules, settings).await;
    let n = records.len() as i64;
    h.wait_for("every job re-run", Duration::from_secs(180), || async {
        h.count("SELECT count(*) FROM verdicts WHERE stage = 'rerun'")
            .await
            == n
    })
    .await;
    let rerun_ctx = rerun.ctx.clone();
    rerun.stop().await;
    screen.stop().await;
    let metrics = rerun_ctx.metrics.render();
    // Every job ran on a host: 6 in process, 6 over HTTP.
    assert_eq!(
        rerun_ctx.metrics.reference.jobs("rerun"),
        n as u64,
        "{metrics}"
    );
    for host in ["llm-http", "candle:hermes-3-llama3.1-8b"] {
        let line = format!(
            "proctor_reference_requests_total{{worker=\"rerun\",host=\"{host}\",result=\"ok\"}} 6"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    let verdicts = final_verdicts(&h).await;
    let objects = ObjectStore::new(&h.settings.s3);
    let mut mean_logprob: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (id, text) in &texts {
        let v = &verdicts[id];
        // The LLM checks ran on the reference's scores, not without them.
        let end = v.outcome(proctor::outcome::CheckId::LlmEarlyEnd).unwrap();
        assert_ne!(
            end.status(),
            proctor::outcome::Status::Inconclusive,
            "{id}: {end:?}"
        );
        assert!(
            v.reference_seconds.is_some_and(|s| s > 0.0),
            "{id}: {:?}",
            v.reference_seconds
        );
        if let Some(twin) = id.strip_prefix("http-") {
            // The same job scored in process: the same outcome for every check but the
            // stream checks, which depend on the order the screen saw the copies in.
            let local = &verdicts[&format!("candle-{twin}")];
            let statuses = |v: &JobVerdict| -> Vec<(String, proctor::outcome::Status)> {
                v.checks
                    .iter()
                    .filter(|c| !["reuse", "latency_peers"].contains(&c.check.as_str()))
                    .map(|c| (c.check.to_string(), c.outcome.status()))
                    .collect()
            };
            assert_eq!(statuses(v), statuses(local), "{id}");
        }
        if id.contains("-honest") {
            let llm_failures: Vec<&str> = failed_checks(v)
                .into_iter()
                .filter(|c| c.starts_with("llm_"))
                .collect();
            assert!(llm_failures.is_empty(), "{id}: {llm_failures:?}");
        } else {
            // A stock refusal is far less likely under the reference at the job's
            // temperature than its own samples are.
            let likelihood = v.outcome(proctor::outcome::CheckId::LlmLikelihood).unwrap();
            assert!(likelihood.is_fail(), "{id}: {likelihood:?}");
        }
        let key = format!("reference/{id}/scores.json");
        let Got::Found(bytes) = objects
            .get_bounded(&h.settings.s3.reference_bucket, &key, 1 << 20)
            .await
            .unwrap()
        else {
            panic!("{key} was not stored");
        };
        let scores: TokenScores = serde_json::from_slice(&bytes).unwrap();
        let want_model = if id.starts_with("http-") {
            http_model
        } else {
            model_id
        };
        assert_eq!(scores.model_id, want_model);
        assert_eq!(scores.problem(text), None, "{key}");
        let kind = if id.contains("-honest") {
            "honest"
        } else {
            "canned"
        };
        let lps: f64 = scores.tokens.iter().map(|t| t.logprob).sum();
        mean_logprob
            .entry(kind)
            .or_default()
            .push(lps / scores.tokens.len() as f64);
    }
    for path in ["candle", "http"] {
        let seconds: Vec<f64> = verdicts
            .iter()
            .filter(|(id, _)| id.starts_with(path))
            .filter_map(|(_, v)| v.reference_seconds)
            .collect();
        eprintln!(
            "figures: {path}: {} jobs re-run, {:.4} reference seconds per verdict (mean)",
            seconds.len(),
            seconds.iter().sum::<f64>() / seconds.len() as f64
        );
    }
    let worst_honest = mean_logprob["honest"]
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let best_canned = mean_logprob["canned"]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(
        best_canned < worst_honest - 1.0,
        "canned {best_canned:.2} vs honest {worst_honest:.2} nats per token"
    );
    h.drop_db().await;
}

/// A miner serving a substituted model (the fixture `tiny-alice-alt`, another
/// finetune of the same base) instead of the reference (`tiny-alice`) is slashed
/// through the suspect panel: the rerun worker scores every sampled text with the
/// panel's suspects beside the reference, in process, and the judge adds up the
/// panel's per-job evidence over the miner's jobs. Two honest miners, one in f32 and
/// one in bf16 with a batch of 4, are neither slashed nor flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_substituted_model_is_slashed_through_the_suspect_panel_and_honest_miners_are_not() {
    use candle_core::DType;
    use proctor::llm::model::{AttentionPrecision, Numerics};
    use proctor::llm::{Sampling, Scorer};
    use proctor::outcome::CheckId;
    use proctor::record::{LlmInput, Message, Role};

    let _serial = SERIAL.lock().await;
    let h = Harness::new("panel").await;
    let mut rules = rerun_everything();
    // The reference is served under a registry model's id; its suspects follow it.
    let model_id = "hermes-3-llama3.1-8b";
    for s in &mut rules.checks.llm.panel.suspects {
        if s.reference == "tiny-alice" {
            s.reference = model_id.into();
        }
    }
    assert!(
        rules.checks.llm.panel.drift_measured() && rules.policy(CheckId::LlmSuspect).can_slash(),
        "the shipped panel is calibrated"
    );
    let fixtures = support::repo().join("fixtures/models");
    let models = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(fixtures.join("tiny-alice"), models.path().join(model_id)).unwrap();
    for suspect in [
        "tiny-alice-alt",
        "tiny-alice-small",
        "tiny-alice-q4",
        "tiny-alice-q8",
    ] {
        std::os::unix::fs::symlink(fixtures.join(suspect), models.path().join(suspect)).unwrap();
    }
    let mut settings = h.settings.clone();
    settings.reference.llm_models_dir = models.path().display().to_string();

    let load = |name: &str, dtype: DType| {
        Scorer::load(
            &fixtures.join(name),
            Numerics {
                dtype,
                attention: AttentionPrecision::F32,
            },
            &candle_core::Device::Cpu,
        )
        .unwrap()
    };
    // (miner, its model and numerics, batch size)
    let miners = [
        ("honest-f32", load("tiny-alice", DType::F32), 1),
        ("honest-bf16", load("tiny-alice", DType::BF16), 4),
        ("substitute", load("tiny-alice-alt", DType::F32), 4),
    ];
    let paragraphs: Vec<String> =
        std::fs::read_to_string(support::repo().join("fixtures/text/alice29.txt"))
            .unwrap()
            .replace("\r\n", "\n")
            .split("\n\n")
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| p.len() >= 80)
            .collect();
    let jobs_per_miner = 10;
    let mut records = Vec::new();
    for (m, (name, scorer, batch)) in miners.iter().enumerate() {
        let inputs: Vec<LlmInput> = (0..jobs_per_miner)
            .map(|j| {
                let words: Vec<&str> = paragraphs[(7 * j + 31 * m) % paragraphs.len()]
                    .split(' ')
                    .take(8)
                    .collect();
                LlmInput {
                    messages: Some(vec![Message {
                        role: Role::User,
                        content: format!("Continue: {}", words.join(" ")),
                    }]),
                    prompt: None,
                    temperature: [0.5, 0.7, 1.0][j % 3],
                    max_tokens: 64,
                    seed: Some((100 * m + j) as i64),
                    ..Default::default()
                }
            })
            .collect();
        for (c, chunk) in inputs.chunks(*batch).enumerate() {
            let prompts: Vec<Vec<u32>> = chunk
                .iter()
                .map(|i| scorer.prompter.prompt_ids(i).unwrap())
                .collect();
            let sampling: Vec<Sampling> = chunk
                .iter()
                .map(|i| Sampling {
                    max_tokens: 64,
                    temperature: i.temperature,
                    seed: i.seed.unwrap() as u64,
                    top_logprobs: 0,
                })
                .collect();
            for (k, g) in scorer
                .generate(&prompts, &sampling)
                .unwrap()
                .into_iter()
                .enumerate()
            {
                let mut r = demo_record("llm-honest-a-0");
                r["job_id"] = format!("{name}-{}", c * batch + k).into();
                r["model_id"] = model_id.into();
                r["miner_id"] = format!("0x{}-gpu0", (m + 1).to_string().repeat(40)).into();
                r["input"] = serde_json::to_value(&chunk[k]).unwrap();
                r["output"] = serde_json::json!({ "text": g.text });
                records.push(serde_json::to_vec(&r).unwrap());
            }
        }
    }
    h.produce_jobs(&records).await;
    let mut workers = Vec::new();
    workers.push(h.start_worker("screen", rules.clone()).await);
    workers.push(h.start_worker_with("rerun", rules.clone(), settings).await);
    let n = records.len() as i64;
    h.wait_for("every job re-run", Duration::from_secs(240), || async {
        h.count("SELECT count(*) FROM verdicts WHERE stage = 'rerun'")
            .await
            == n
    })
    .await;
    // The judge decides once on all of each miner's jobs.
    workers.push(h.start_worker("judge", rules.clone()).await);
    let substitute = proctor::ids::MinerId::parse(&format!("0x{}-gpu0", "3".repeat(40))).unwrap();
    h.wait_for(
        "the substitute slashed",
        Duration::from_secs(120),
        || async {
            h.count(&format!(
                "SELECT count(*) FROM slashes WHERE miner_id = '{substitute}'"
            ))
            .await
                > 0
        },
    )
    .await;
    for w in workers {
        w.stop().await;
    }

    let verdicts = final_verdicts(&h).await;
    // Every sampled job was judged by the panel, in process.
    for (id, v) in &verdicts {
        let o = v.outcome(CheckId::LlmSuspect).unwrap();
        assert_ne!(
            o.status(),
            proctor::outcome::Status::Inconclusive,
            "{id}: {o:?}"
        );
    }
    let slashes: Vec<proctor::decide::Slash> = sqlx::query_scalar::<
        _,
        sqlx::types::Json<proctor::decide::Slash>,
    >("SELECT body FROM slashes")
    .fetch_all(h.store.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|sqlx::types::Json(s)| s)
    .collect();
    assert_eq!(slashes.len(), 1, "{slashes:#?}");
    let slash = &slashes[0];
    assert_eq!(slash.miner_id, substitute);
    assert!(
        slash.reason.contains("llm_suspect") && slash.reason.contains("fits tiny-alice-alt best"),
        "{}",
        slash.reason
    );
    assert!(slash.honest_probability <= rules.auto_slash_threshold());
    let flagged: i64 = h
        .count(&format!(
            "SELECT count(*) FROM review_flags WHERE miner_id <> '{substitute}'"
        ))
        .await;
    assert_eq!(flagged, 0, "an honest miner was flagged");
    assert!(
        slash
            .evidence
            .iter()
            .any(|e| e.check == CheckId::LlmSuspect),
        "{:?}",
        slash.evidence
    );
    // The decision on all of the substitute's jobs: the panel's evidence over them
    // names the substituted model.
    let mine: Vec<JobVerdict> = verdicts
        .values()
        .filter(|v| v.miner_id == substitute)
        .cloned()
        .collect();
    let d = proctor::decide::decide(&substitute, &mine, &Default::default(), 1.0, &rules);
    let seq = d.sequence.expect("the panel's evidence");
    assert_eq!(seq.best(), "tiny-alice-alt", "{seq:?}");
    assert_eq!(d.action, Action::Slash);
    eprintln!(
        "figures: substitute: {} sampled jobs, ln E = {:.1}, slashed at {:.2e}; honest miners untouched",
        seq.jobs, seq.log_e_value, slash.honest_probability
    );
    h.drop_db().await;
}

/// The rerun worker re-runs the demo's SD jobs on txt2img reference hosts
/// (tests/support/hosts.rs: stand-ins that replay the demo's reference image for the
/// job's prompt and seed, and refuse other inputs with a 422), every job on two hosts,
/// one of the three hosts drifting. The LLM jobs, whose models no host serves, read
/// their scores from S3 as before. The workers reach the audit's verdicts, slashes and
/// flags; the hosts' images land in S3 before the jobs are judged; the drifting host
/// is the odd one out until it is quarantined, and never decides a reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sd_jobs_rerun_on_txt2img_hosts_agree_with_the_audit_and_a_drifting_host_is_quarantined() {
    use support::hosts::{self, Behaviour, Replay};

    let _serial = SERIAL.lock().await;
    let h = Harness::new("hosts").await;
    let rules = rerun_everything();
    let expected = audit_drawn(&demo(), &rules);

    // Objects, and of the reference outputs only what no txt2img host makes.
    let s3 = &h.settings.s3;
    h.upload_dir(&demo().join("objects"), &s3.jobs_bucket, "")
        .await;
    let refs = tempfile::tempdir().unwrap();
    for job in std::fs::read_dir(demo().join("reference")).unwrap() {
        let job = job.unwrap().path();
        for f in std::fs::read_dir(&job).unwrap() {
            let f = f.unwrap().path();
            if !f
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("image.")
            {
                let to = refs.path().join(job.file_name().unwrap());
                std::fs::create_dir_all(&to).unwrap();
                std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    h.upload_dir(refs.path(), &s3.reference_bucket, "reference/")
        .await;
    for (wallet, nfts) in audit::read_wallets(&demo()).unwrap() {
        h.store.set_wallet_nfts(&wallet, nfts).await.unwrap();
    }

    let replay = std::sync::Arc::new(Replay::from_audit_folder(&demo()));
    // Listed first, so it is picked first while loads are equal.
    let drift = hosts::txt2img(replay.clone(), Behaviour::Drifting).await;
    let a = hosts::txt2img(replay.clone(), Behaviour::Honest).await;
    let b = hosts::txt2img(replay.clone(), Behaviour::Honest).await;
    let mut settings = h.settings.clone();
    settings.reference.hosts = vec![
        hosts::sd_host("sd-drift", &drift.url),
        hosts::sd_host("sd-a", &a.url),
        hosts::sd_host("sd-b", &b.url),
    ];
    settings.reference.dual_share = 1.0;
    settings.reference.quarantine_after = 2;

    h.produce_jobs(&lines(&demo().join("jobs.jsonl"))).await;
    let mut workers = vec![h.start_worker("screen", rules.clone()).await];
    workers.push(h.start_worker_with("rerun", rules.clone(), settings).await);
    let rerun_ctx = workers[1].ctx.clone();
    for w in ["judge", "publish"] {
        workers.push(h.start_worker(w, rules.clone()).await);
    }
    let jobs = expected.verdicts.len() as i64;
    h.wait_for("every job re-run", Duration::from_secs(180), || async {
        h.count("SELECT count(*) FROM verdicts WHERE stage = 'rerun'")
            .await
            == jobs
    })
    .await;
    h.wait_judged_and_published().await;
    for w in workers {
        w.stop().await;
    }

    let flags = assert_parity(&h, &expected, "txt2img hosts").await;
    assert_eq!(flags, audit_flags(&expected));

    // The hosts' images are in S3, byte for byte the replayed ones.
    let objects = proctor::objects::ObjectStore::new(s3);
    let verdicts = final_verdicts(&h).await;
    let mut rerun_sd = 0;
    for (id, v) in &verdicts {
        let Some(want) = ["image.jpg", "image.png"]
            .iter()
            .find_map(|n| std::fs::read(demo().join("reference").join(id).join(n)).ok())
        else {
            continue;
        };
        let key = format!("reference/{id}/image.jpg");
        let got = objects
            .get_bounded(&s3.reference_bucket, &key, 10 << 20)
            .await
            .unwrap();
        assert!(
            matches!(&got, proctor::objects::Got::Found(b) if *b == want),
            "{key}"
        );
        assert!(v.reference_seconds.is_some_and(|s| s > 0.0), "{id}");
        rerun_sd += 1;
    }
    assert_eq!(rerun_sd, replay.len());
    let seconds: Vec<f64> = verdicts
        .values()
        .filter_map(|v| v.reference_seconds)
        .collect();
    eprintln!(
        "figures: {} SD verdicts with reference seconds, {:.4} per verdict (mean), {:.4} (max)",
        seconds.len(),
        seconds.iter().sum::<f64>() / seconds.len().max(1) as f64,
        seconds.iter().copied().fold(0.0, f64::max)
    );

    // Drift: honest pairs within the envelope, every pair with the drifting host
    // beyond it, and the drifting host quarantined after its second strike.
    let rows: Vec<(String, String, bool)> =
        sqlx::query_as("SELECT host_a, host_b, within FROM reference_drift")
            .fetch_all(h.store.pool())
            .await
            .unwrap();
    assert!(rows.iter().any(|r| r.2), "{rows:?}");
    for (x, y, within) in &rows {
        assert_eq!(*within, x != "sd-drift" && y != "sd-drift", "{x} {y}");
    }
    let metrics = rerun_ctx.metrics.render();
    assert!(
        metrics.contains(r#"proctor_reference_host_quarantined{worker="rerun",host="sd-drift"} 1"#),
        "{metrics}"
    );
    // Jobs in flight together may each meet it before the second strike lands.
    assert!(
        drift.requests() >= 2 && drift.requests() < a.requests().min(b.requests()),
        "requests: sd-drift {}, sd-a {}, sd-b {}",
        drift.requests(),
        a.requests(),
        b.requests()
    );
    let m = &rerun_ctx.metrics.reference;
    eprintln!(
        "figures: SD jobs re-run {} (refused {}), requests sd-a {} sd-b {} sd-drift {}, drift rows {}",
        m.jobs("rerun"),
        m.jobs("refused"),
        a.requests(),
        b.requests(),
        drift.requests(),
        rows.len()
    );
    h.drop_db().await;
}

/// What `assert_parity` compares: a slash by its id, a flag by its id, each with the
/// evidence it cites.
type Cited = BTreeSet<(String, String)>;

fn cited(evidence: &[proctor::decide::EvidenceRef]) -> Cited {
    evidence
        .iter()
        .map(|e| (e.job_id.to_string(), e.check.to_string()))
        .collect()
}

/// Asserts that the workers reached the audit's verdicts (the same draws, the same
/// final verdicts) and its slashes, and returns the review flags the workers raised.
async fn assert_parity(
    h: &Harness,
    want: &audit::AuditResult,
    phase: &str,
) -> BTreeMap<String, Cited> {
    let got = final_verdicts(h).await;
    assert_eq!(got.len(), want.verdicts.len(), "{phase}: jobs");
    for w in &want.verdicts {
        let v = &got[w.job_id.as_str()];
        let job = format!("{phase}: job {}", w.job_id);
        assert_eq!(v.sampled, w.sampled, "{job}: the draw");
        assert_eq!(v.verdict, w.verdict, "{job}");
        assert_eq!(failed_checks(v), failed_checks(w), "{job}");
        assert_eq!(v.points, w.points, "{job}");
    }
    let slashes: BTreeMap<String, proctor::decide::Slash> = sqlx::query_scalar::<
        _,
        sqlx::types::Json<proctor::decide::Slash>,
    >("SELECT body FROM slashes")
    .fetch_all(h.store.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|sqlx::types::Json(s)| (s.slash_id.clone(), s))
    .collect();
    let want_slashes: BTreeMap<&str, &proctor::decide::Slash> = want
        .decisions
        .iter()
        .filter_map(|d| d.slash.as_ref())
        .map(|s| (s.slash_id.as_str(), s))
        .collect();
    assert_eq!(
        slashes.keys().map(String::as_str).collect::<Vec<_>>(),
        want_slashes.keys().copied().collect::<Vec<_>>(),
        "{phase}: slash ids"
    );
    for (id, s) in &slashes {
        let w = want_slashes[id.as_str()];
        assert_eq!(s.jobs, w.jobs, "{phase}: slash {id}");
        assert_eq!(
            cited(&s.evidence),
            cited(&w.evidence),
            "{phase}: slash {id}"
        );
        assert_eq!(s.amount, w.amount, "{phase}: {id}");
    }
    sqlx::query("SELECT flag_id, body FROM review_flags")
        .fetch_all(h.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let sqlx::types::Json(d): sqlx::types::Json<proctor::decide::Decision> = r.get(1);
            (r.get::<String, _>(0), cited(&d.evidence))
        })
        .collect()
}

/// The audit's review flags, as the judge would name them.
fn audit_flags(want: &audit::AuditResult) -> BTreeMap<String, Cited> {
    want.decisions
        .iter()
        .filter(|d| d.action == Action::FlagForReview)
        .map(|d| {
            (
                proctor::case::flag_id(&d.miner_id, &d.evidence),
                cited(&d.evidence),
            )
        })
        .collect()
}

fn audit_drawn(dir: &Path, rules: &proctor::rules::Rules) -> audit::AuditResult {
    audit::judge_dir(
        dir,
        rules.clone(),
        &SamplingSecret::from_passphrase("pipeline tests"),
        proctor::case::Reruns::Drawn,
        None,
        false,
    )
    .unwrap()
}

/// Every job the workers drew has its re-run verdict. (The workers' own draws: where
/// they differ from the audit's, `assert_parity` names the job.)
async fn all_rerun(h: &Harness) -> bool {
    h.count("SELECT count(*) FROM verdicts WHERE stage = 'screen' AND sampled")
        .await
        == h.count("SELECT count(*) FROM verdicts WHERE stage = 'rerun'")
            .await
}

/// Gives job `to` the reference outputs of job `from`, where it has any.
fn copy_reference(dir: &Path, from: &str, to: &str) {
    let reference = dir.join("reference");
    if reference.join(from).is_dir() {
        std::fs::create_dir_all(reference.join(to)).unwrap();
        for f in std::fs::read_dir(reference.join(from)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, reference.join(to).join(f.file_name().unwrap())).unwrap();
        }
    }
}

fn write_jobs(dir: &Path, lines: &[Vec<u8>]) {
    let mut jsonl = lines.join(&b'\n');
    jsonl.push(b'\n');
    std::fs::write(dir.join("jobs.jsonl"), jsonl).unwrap();
}

/// The issue's parity test: the shipped rules and rates (holding on the demo's models,
/// [`scope::calibrated_everywhere`]), the workers' sampling secret,
/// a reference in S3 for every job that has one, and two phases:
///
/// - **A**, three rounds of the demo. The re-run worker starts only after screen has
///   drawn every job and the judge has had time to decide: the judge must wait for
///   the late re-runs, not decide on the screen's evidence alone.
/// - **B**, after A's re-runs: a miner A flagged returns `window_days + 1` later with
///   an honest miner's jobs. Its sampling rate still carries A's screen failures; its
///   window no longer holds them, so neither the audit nor the judge flags it again.
///
/// After each phase the workers and `proctor audit --reruns drawn` over the same
/// records agree on every draw, every final verdict, every slash (id, jobs, amount,
/// evidence) and every review flag (id, evidence); the workers' flags after B are the
/// audit's and A's, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parity_at_the_shipped_rates_through_late_reruns_late_jobs_and_a_moving_window() {
    let _serial = SERIAL.lock().await;
    let h = Harness::new("parity").await;
    // The shipped rates and sampling, holding on the demo's models (the shipped
    // scope holds on none of them, so there would be no slash to compare).
    let rules = scope::calibrated_everywhere(proctor::rules::Rules::embedded().unwrap());
    let mut pop = Population::generate(3);
    let dir = pop.dir.path().to_owned();
    let dir = dir.as_path();
    // An escalating cheater: the blurring miner's jobs again, now reporting a GPU no
    // rules know. Every job fails `device_known` at screen, so its rate climbs to 1 and
    // the blur is caught on enough re-runs to slash at the shipped rates.
    let blur: Vec<serde_json::Value> = pop
        .lines
        .iter()
        .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap())
        .filter(|r| r["job_id"].as_str().unwrap().starts_with("sd-blur-"))
        .collect();
    assert!(!blur.is_empty());
    for i in 0..30 {
        let mut r = blur[i % blur.len()].clone();
        let id = r["job_id"].as_str().unwrap().to_owned();
        let esc = format!("{id}-esc{i}");
        r["job_id"] = esc.clone().into();
        r["metrics"]["hardware"] = "NVIDIA GeForce RTX 9999".into();
        let at = chrono::DateTime::parse_from_rfc3339(r["submitted_at"].as_str().unwrap())
            .unwrap()
            .to_utc()
            + chrono::Duration::hours(1)
            + chrono::Duration::minutes(i as i64);
        r["submitted_at"] = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into();
        copy_reference(dir, &id, &esc);
        pop.lines.push(serde_json::to_vec(&r).unwrap());
    }
    write_jobs(dir, &pop.lines);

    // Phase A, judged by the audit first to choose the miner whose window moves.
    let audit_a = audit_drawn(dir, &rules);
    let sampled_a = audit_a.verdicts.iter().filter(|v| v.sampled).count();
    assert!(
        sampled_a > 0 && sampled_a < audit_a.verdicts.len() / 2,
        "{sampled_a} of {} drawn at the shipped rates",
        audit_a.verdicts.len()
    );
    let flags_a = audit_flags(&audit_a);
    assert!(
        audit_a.decisions.iter().any(|d| d.slash.is_some()),
        "phase A slashes nobody at the shipped rates: parity of slashes would be empty"
    );
    // The flagged miner with the most screen failures: its raised rate carries over.
    let screen_failures = |miner: &proctor::ids::MinerId| -> u32 {
        audit_a
            .verdicts
            .iter()
            .filter(|v| &v.miner_id == miner)
            .map(proctor::case::screen_failures)
            .sum()
    };
    let returning = audit_a
        .decisions
        .iter()
        .filter(|d| d.action == Action::FlagForReview)
        .max_by_key(|d| screen_failures(&d.miner_id))
        .map(|d| d.miner_id.to_string())
        .expect("phase A flags a miner");
    let honest = pop.honest.first().expect("an honest miner").clone();
    let window = i64::from(rules.slashing.window_days);
    let mut lines_b = Vec::new();
    for line in &pop.lines {
        let mut r: serde_json::Value = serde_json::from_slice(line).unwrap();
        let id = r["job_id"].as_str().unwrap().to_owned();
        if r["miner_id"] != honest.as_str() {
            continue;
        }
        let late = format!("{id}-late");
        r["job_id"] = late.clone().into();
        r["miner_id"] = returning.clone().into();
        let at = chrono::DateTime::parse_from_rfc3339(r["submitted_at"].as_str().unwrap())
            .unwrap()
            .to_utc()
            + chrono::Duration::days(window + 1);
        r["submitted_at"] = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into();
        copy_reference(dir, &id, &late);
        lines_b.push(serde_json::to_vec(&r).unwrap());
    }
    assert!(!lines_b.is_empty());

    pop.upload(&h).await;
    for (wallet, nfts) in audit::read_wallets(dir).unwrap() {
        h.store.set_wallet_nfts(&wallet, nfts).await.unwrap();
    }
    h.produce_jobs(&pop.lines).await;
    let mut workers = Vec::new();
    for w in ["screen", "judge", "publish"] {
        workers.push(h.start_worker(w, rules.clone()).await);
    }
    let jobs_a = audit_a.verdicts.len() as i64;
    h.wait_for("phase A screened", Duration::from_secs(180), || async {
        h.count("SELECT count(*) FROM verdicts WHERE stage = 'screen'")
            .await
            == jobs_a
    })
    .await;
    // Well past the judge's settle time: a miner with a drawn job still waiting for its
    // re-run is not decided.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let premature = h
        .count(
            "SELECT count(*) FROM (SELECT miner_id FROM slashes UNION SELECT miner_id FROM review_flags) d
             WHERE miner_id IN (SELECT miner_id FROM verdicts WHERE stage = 'screen' AND sampled)",
        )
        .await;
    assert_eq!(premature, 0, "decided before the re-runs arrived");
    workers.push(h.start_worker("rerun", rules.clone()).await);
    h.wait_for("phase A re-run", Duration::from_secs(180), || all_rerun(&h))
        .await;
    h.wait_judged_and_published().await;
    let got_a = assert_parity(&h, &audit_a, "phase A").await;
    assert_eq!(got_a, flags_a, "phase A: review flags");

    // Phase B: the returning miner's later jobs, after A's re-runs.
    let mut all = pop.lines.clone();
    all.extend(lines_b.iter().cloned());
    write_jobs(dir, &all);
    let audit_ab = audit_drawn(dir, &rules);
    h.upload_dir(
        &dir.join("reference"),
        &h.settings.s3.reference_bucket,
        "reference/",
    )
    .await;
    h.produce_jobs(&lines_b).await;
    let (jobs_ab, sampled_ab) = (
        audit_ab.verdicts.len() as i64,
        audit_ab.verdicts.iter().filter(|v| v.sampled).count() as i64,
    );
    assert!(sampled_ab > sampled_a as i64, "phase B draws none");
    h.wait_for(
        "phase B screened and re-run",
        Duration::from_secs(180),
        || async {
            h.count("SELECT count(*) FROM verdicts WHERE stage = 'screen'")
                .await
                == jobs_ab
                && all_rerun(&h).await
        },
    )
    .await;
    h.wait_judged_and_published().await;
    let got_ab = assert_parity(&h, &audit_ab, "phase B").await;
    let returning_id = proctor::ids::MinerId::parse(&returning).unwrap();
    assert_eq!(
        audit_ab.decision(&returning_id).map(|d| d.action),
        Some(Action::None),
        "the window moved past the returning miner's failures"
    );
    let mut want_ab = audit_flags(&audit_ab);
    want_ab.extend(flags_a);
    assert_eq!(got_ab, want_ab, "phase B: review flags");
    println!(
        "parity: {jobs_ab} jobs, {sampled_ab} drawn, {} slashes, {} flags",
        audit_ab
            .decisions
            .iter()
            .filter(|d| d.slash.is_some())
            .count(),
        got_ab.len()
    );

    for w in workers {
        w.stop().await;
    }
    h.drop_db().await;
}

/// A worker is steppable: `judge::step` decides on every settled miner and returns
/// how many, so a test drives the judge to completion with no worker running and no
/// wait on timing. Over the demo's verdicts it reaches the audit's slashes, and a
/// second step finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_judge_steps_to_the_audits_slashes_without_a_running_worker() {
    let _serial = SERIAL.lock().await;
    let h = Harness::new("step").await;
    // The shipped rates and sampling, holding on the demo's models (the shipped
    // scope holds on none of them, so there would be no slash to compare).
    let rules = scope::calibrated_everywhere(proctor::rules::Rules::embedded().unwrap());
    let want = audit::judge_dir(
        &demo(),
        rules.clone(),
        &SamplingSecret::from_passphrase("pipeline tests"),
        proctor::case::Reruns::Present,
        None,
        false,
    )
    .unwrap();
    let records: Vec<proctor::record::JobRecord> = lines(&demo().join("jobs.jsonl"))
        .iter()
        .filter_map(|l| proctor::record::JobRecord::from_json(l).ok())
        .collect();
    let pairs: Vec<_> = want
        .verdicts
        .iter()
        .map(|v| (records.iter().find(|r| r.job_id == v.job_id).unwrap(), v))
        .collect();
    h.store
        .record_verdicts(&pairs, proctor::store::Stage::Rerun)
        .await
        .unwrap();
    for (wallet, nfts) in audit::read_wallets(&demo()).unwrap() {
        h.store.set_wallet_nfts(&wallet, nfts).await.unwrap();
    }

    let mut settings = h.settings.clone();
    settings.pipeline.judge_settle_ms = 0;
    let (_trigger, shutdown) = proctor::pipeline::Shutdown::new();
    let ctx = proctor::pipeline::Context::start("judge", settings, rules, shutdown)
        .await
        .unwrap();
    let key = events::signing_key_from_hex(support::SIGNING_KEY).unwrap();
    let miners: BTreeSet<&proctor::ids::MinerId> =
        want.verdicts.iter().map(|v| &v.miner_id).collect();
    assert_eq!(
        proctor::pipeline::judge::step(&ctx, &key).await.unwrap(),
        miners.len()
    );
    assert_eq!(proctor::pipeline::judge::step(&ctx, &key).await.unwrap(), 0);
    let got: BTreeSet<String> = sqlx::query_scalar("SELECT slash_id FROM slashes")
        .fetch_all(h.store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let slashes: BTreeSet<String> = want
        .decisions
        .iter()
        .filter_map(|d| d.slash.as_ref().map(|s| s.slash_id.clone()))
        .collect();
    assert!(!slashes.is_empty());
    assert_eq!(got, slashes);
    assert_eq!(
        h.count("SELECT count(*) FROM outbox").await as usize,
        slashes.len()
    );
    drop(ctx);
    h.drop_db().await;
}

/// A fault the chaos run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Injected {
    /// kill -9 of a worker of this kind; it is started again at once.
    Kill(&'static str),
    /// tansu stopped and started again at once.
    BrokerRestart,
    /// tansu stopped for the plan's outage.
    BrokerStopped,
    /// garage stopped for the plan's outage.
    S3Stopped,
    /// The machine's PostgreSQL restarted.
    PostgresRestart,
    /// Every reference host (SD and LLM) answering with this fault for the outage.
    Reference(support::hosts::Fault),
    /// A worker of this kind restarted under `ulimit -v` and `taskset -c 0 nice -n 19`
    /// for the outage, then restarted normally.
    Starved(&'static str),
}

impl Injected {
    fn name(self) -> String {
        match self {
            Injected::Kill(w) => format!("kill -9 {w}"),
            Injected::BrokerRestart => "broker (tansu) restarted".into(),
            Injected::BrokerStopped => "broker (tansu) stopped".into(),
            Injected::S3Stopped => "S3 (garage) stopped".into(),
            Injected::PostgresRestart => "PostgreSQL restarted".into(),
            Injected::Reference(f) => format!("reference hosts: {f:?}"),
            Injected::Starved(w) => format!("{w} starved (ulimit -v, taskset)"),
        }
    }

    fn all() -> Vec<Injected> {
        use support::hosts::Fault;
        let mut all: Vec<Injected> = ["screen", "rerun", "judge", "publish"]
            .into_iter()
            .map(Injected::Kill)
            .collect();
        all.extend([
            Injected::BrokerRestart,
            Injected::BrokerStopped,
            Injected::S3Stopped,
            Injected::PostgresRestart,
            Injected::Reference(Fault::Timeout),
            Injected::Reference(Fault::Error),
            Injected::Reference(Fault::Malformed),
            Injected::Reference(Fault::Truncated),
            Injected::Starved("screen"),
            Injected::Starved("rerun"),
        ]);
        all
    }
}

/// How long and how hard a chaos run is. `scripts/chaos` sets `CHAOS_JOBS`,
/// `CHAOS_REPEATS` and `CHAOS_OUTAGE_SECS` for the long run.
struct ChaosPlan {
    jobs: usize,
    repeats: usize,
    outage: Duration,
    /// The address space a starved worker gets.
    vmem_mib: u64,
    /// How long the whole run may take before it fails as not drained.
    limit: Duration,
}

impl ChaosPlan {
    fn from_env(jobs: usize, repeats: usize, outage_secs: u64) -> ChaosPlan {
        let var = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        ChaosPlan {
            jobs: var("CHAOS_JOBS", jobs as u64) as usize,
            repeats: var("CHAOS_REPEATS", repeats as u64) as usize,
            outage: Duration::from_secs(var("CHAOS_OUTAGE_SECS", outage_secs)),
            vmem_mib: var("CHAOS_STARVED_VMEM_MIB", 4096),
            // scripts/chaos kills the run at CHAOS_LIMIT_SECS: fail with the counts
            // two minutes before.
            limit: Duration::from_secs(var("CHAOS_LIMIT_SECS", 3720).saturating_sub(120)),
        }
    }
}

/// [`services`] off the runtime's threads.
async fn services_async(verb: &'static str) {
    tokio::task::spawn_blocking(move || services(verb))
        .await
        .unwrap();
}

/// A count that survives the database restarting under it: retried for up to a minute.
async fn count_retrying(h: &Harness, sql: &'static str) -> i64 {
    for _ in 0..120 {
        match sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(h.store.pool())
            .await
        {
            Ok(n) => return n,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    panic!("{sql} failed for a minute");
}

/// The job ids a query selects.
async fn job_ids(h: &Harness, sql: &'static str) -> BTreeSet<String> {
    let ids: Vec<String> = sqlx::query_scalar(sql)
        .fetch_all(h.store.pool())
        .await
        .unwrap();
    ids.into_iter().collect()
}

/// A worker process under the chaos run's supervisor.
struct Supervised {
    name: &'static str,
    child: std::process::Child,
    starved: Option<Starved>,
    starts: u32,
    /// Exits the supervisor saw and restarted (not the run's own kills).
    exits: u32,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Fleet {
    procs: std::sync::Mutex<Vec<Supervised>>,
    spawn: Box<dyn Fn(&'static str, Option<Starved>) -> std::process::Child + Send + Sync>,
}

impl Fleet {
    /// Restarts whatever exited, as systemd would.
    fn supervise(&self) {
        let mut procs = self.procs.lock().unwrap();
        for p in procs.iter_mut() {
            if let Ok(Some(_)) = p.child.try_wait() {
                p.exits += 1;
                p.starts += 1;
                p.child = (self.spawn)(p.name, p.starved);
            }
        }
    }

    /// SIGTERM to every worker, and waits for each to exit.
    fn stop_all(&self) {
        let mut procs = self.procs.lock().unwrap();
        for p in procs.iter_mut() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &p.child.id().to_string()])
                .status();
        }
        for p in procs.iter_mut() {
            let _ = p.child.wait();
        }
    }

    /// kill -9 of one worker of `name` (the `pick`-th), started again in `starved` mode.
    fn kill_and_start(&self, name: &'static str, pick: usize, starved: Option<Starved>) {
        let mut procs = self.procs.lock().unwrap();
        let mine: Vec<&mut Supervised> = procs.iter_mut().filter(|p| p.name == name).collect();
        let n = mine.len();
        let p = mine.into_iter().nth(pick % n).unwrap();
        let _ = p.child.kill();
        let _ = p.child.wait();
        p.starved = starved;
        p.starts += 1;
        p.child = (self.spawn)(p.name, starved);
    }
}

/// The chaos run (`scripts/chaos` for the long one, this suite for the short one): the
/// demo mix with live reference hosts (an SD txt2img stand-in, the fixture model over
/// `serve-reference`) behind fault proxies, every job re-run, and every fault of
/// [`Injected::all`] injected `repeats` times at random moments while jobs are produced
/// and processed. Then the reconciliation: every job in exactly one final state, no
/// duplicate slash, no slash a fault caused, every published event's slash in the
/// database, and the time to drain after the last fault.
async fn chaos(plan: ChaosPlan) {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use support::hosts::{Fault, FaultSwitch};

    let h = Harness::new("chaos").await;
    let rules_dir = rerun_everything_dir();
    let rules = proctor::rules::Rules::load_dir(rules_dir.path()).unwrap();
    let per_round = Population::generate(1).lines.len();
    // Job ids of this run only: the re-run stage writes what the live hosts return to
    // reference/<job_id>/ in S3, which a later run with the same ids would read back.
    let tag = h.run_id.rsplit('_').next().unwrap_or("").to_owned();
    let pop = Population::generate_tagged(plan.jobs.div_ceil(per_round), &tag);
    let total = pop.lines.len();
    pop.upload(&h).await;
    for (wallet, nfts) in audit::read_wallets(pop.dir.path()).unwrap() {
        h.store.set_wallet_nfts(&wallet, nfts).await.unwrap();
    }

    // The reference hosts, each behind a proxy that injects the switch's fault.
    let switch = FaultSwitch::default();
    let host_timeout = Duration::from_secs(5);
    let replay = std::sync::Arc::new(support::hosts::Replay::from_audit_folder(pop.dir.path()));
    let sd = support::hosts::txt2img(replay, support::hosts::Behaviour::Honest).await;
    let model = support::repo().join("fixtures/models/tiny-alice");
    let mut served = proctor::llm::Scorer::load(
        &model,
        proctor::llm::model::Numerics::default(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let models = tempfile::tempdir().unwrap();
    // The demo's LLM references are synthetic token scores (gen_audit_demo), not the
    // fixture model's: a live host scoring those texts would judge them on another
    // model than the audit did. The live host serves the model of the demo's one LLM
    // job without a stored reference (the failed canary); the others read theirs from
    // the reference bucket as the audit does.
    let llm_models = ["dolphin-2.9-llama3-8b"];
    for m in llm_models {
        std::os::unix::fs::symlink(&model, models.path().join(m)).unwrap();
    }
    served.panel = proctor::llm::panel::Panel::load(
        &served,
        &rules.checks.llm.panel.suspects_of(llm_models[0]),
        rules.checks.llm.panel.max_suspects,
        models.path(),
        proctor::llm::model::Numerics::default(),
        &candle_core::Device::Cpu,
    );
    let llm = support::hosts::serve(proctor::llm::serve::router(served), Default::default()).await;
    let slow = host_timeout + Duration::from_secs(3);
    let sd_proxy = support::hosts::fault_proxy(&sd.url, switch.clone(), slow).await;
    let llm_proxy = support::hosts::fault_proxy(&llm.url, switch.clone(), slow).await;
    let hosts = format!(
        r#"[{{name = "sd-1", kind = "txt2img", url = "{}", models = ["sd15", "sd15_lora", "sdxl", "sdxl_lora", "flux"], concurrency = 2, queue = 256, timeout_secs = {}, seconds_per_job = 1.0}}, {{name = "llm-1", kind = "scorer", url = "{}", models = [{}], concurrency = 2, queue = 256, timeout_secs = {}, seconds_per_job = 1.0, tokenizer = "{}"}}]"#,
        sd_proxy.url,
        host_timeout.as_secs(),
        llm_proxy.url,
        llm_models.map(|m| format!("\"{m}\"")).join(", "),
        host_timeout.as_secs(),
        model.display(),
    );
    let env: Vec<(String, String)> = [
        ("PROCTOR_REFERENCE__HOSTS", hosts),
        ("PROCTOR_REFERENCE__DUAL_SHARE", "0".into()),
        // Past every outage of the plan: a job waits for its host rather than being
        // left inconclusive by a fault.
        (
            "PROCTOR_REFERENCE__MAX_WAIT_SECS",
            (plan.outage.as_secs() * 4 + 60).to_string(),
        ),
        ("PROCTOR_REFERENCE__HEALTH_INTERVAL_SECS", "2".into()),
        // A re-run request is owed once its job could have waited out the hosts' worst
        // outage: then the publisher sends it again (the harness never does).
        (
            "PROCTOR_PIPELINE__RERUN_OWED_AFTER_SECS",
            (plan.outage.as_secs() * 4 + 90).to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    let logs = support::repo().join("target/chaos-logs").join(&h.run_id);
    std::fs::create_dir_all(&logs).unwrap();
    let spawn = {
        let (base, rules_path, logs) =
            (h.env.clone(), rules_dir.path().to_path_buf(), logs.clone());
        move |name: &'static str, starved: Option<Starved>| {
            spawn_env(&base, name, &rules_path, &logs, &env, starved)
        }
    };
    let fleet = std::sync::Arc::new(Fleet {
        procs: std::sync::Mutex::new(
            ["screen", "screen", "rerun", "judge", "publish"]
                .into_iter()
                .map(|name| Supervised {
                    name,
                    child: spawn(name, None),
                    starved: None,
                    starts: 1,
                    exits: 0,
                })
                .collect(),
        ),
        spawn: Box::new(spawn),
    });
    let supervisor = {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                fleet.supervise();
            }
        })
    };

    // The faults, each `repeats` times, in a random order at random moments.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xc4a05);
    let mut schedule: Vec<Injected> = Injected::all()
        .into_iter()
        .flat_map(|f| std::iter::repeat_n(f, plan.repeats))
        .collect();
    schedule.shuffle(&mut rng);
    let schedule_len = schedule.len();
    let started = std::time::Instant::now();
    let injector = {
        let (fleet, switch) = (fleet.clone(), switch.clone());
        let (outage, vmem_mib) = (plan.outage, plan.vmem_mib);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
        tokio::spawn(async move {
            let mut done: Vec<(Injected, Duration, Duration)> = Vec::new();
            for fault in schedule {
                tokio::time::sleep(Duration::from_millis(rng.random_range(1000..6000))).await;
                let at = started.elapsed();
                match fault {
                    Injected::Kill(w) => fleet.kill_and_start(w, rng.random_range(0..1000), None),
                    Injected::BrokerRestart => {
                        services_async("stop-kafka").await;
                        services_async("up").await;
                    }
                    Injected::BrokerStopped => {
                        services_async("stop-kafka").await;
                        tokio::time::sleep(outage).await;
                        services_async("up").await;
                    }
                    Injected::S3Stopped => {
                        services_async("stop-s3").await;
                        tokio::time::sleep(outage).await;
                        services_async("up").await;
                    }
                    Injected::PostgresRestart => services_async("restart-postgres").await,
                    Injected::Reference(f) => {
                        switch.set(f);
                        tokio::time::sleep(outage).await;
                        switch.set(Fault::None);
                    }
                    Injected::Starved(w) => {
                        let pick = rng.random_range(0..1000);
                        fleet.kill_and_start(w, pick, Some(Starved { vmem_mib }));
                        tokio::time::sleep(outage).await;
                        fleet.kill_and_start(w, pick, None);
                    }
                }
                done.push((fault, at, started.elapsed()));
            }
            done
        })
    };

    // The job service: chunks spread over the fault schedule's expected length, so that
    // faults land while jobs arrive as well as while they are processed; a send is
    // retried until the broker takes it.
    let timed = Injected::all()
        .iter()
        .filter(|f| {
            matches!(
                f,
                Injected::BrokerStopped
                    | Injected::S3Stopped
                    | Injected::Reference(_)
                    | Injected::Starved(_)
            )
        })
        .count()
        * plan.repeats;
    let expected_schedule =
        Duration::from_millis(3500 * schedule_len as u64) + plan.outage * timed as u32;
    let chunk = if total > 2000 { 100 } else { 25 };
    let pause = (expected_schedule / total.div_ceil(chunk) as u32)
        .clamp(Duration::from_millis(200), Duration::from_secs(5));
    for part in pop.lines.chunks(chunk) {
        h.produce_jobs(part).await;
        tokio::time::sleep(pause).await;
    }
    let produced_at = started.elapsed();
    let injected = injector.await.unwrap();
    let last_fault = started.elapsed();

    // Drain. Nothing is sent again by the harness: a job record the broker acknowledged
    // must stay on the topic (tansu's SQLite engine keeps it across a restart), and a
    // re-run request that never arrived is sent again by the publisher from Postgres
    // (`rerun_owed_after_secs`, set short above). Without progress for a minute the
    // run says which jobs it waits for, and fails at the limit.
    let mut last_progress = (0i64, std::time::Instant::now());
    loop {
        let reruns =
            count_retrying(&h, "SELECT count(*) FROM verdicts WHERE stage = 'rerun'").await;
        let queued = count_retrying(&h, "SELECT count(*) FROM judge_queue").await;
        let unpublished =
            count_retrying(&h, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await;
        if reruns == total as i64 && queued == 0 && unpublished == 0 {
            break;
        }
        if reruns != last_progress.0 {
            last_progress = (reruns, std::time::Instant::now());
        } else if reruns < total as i64 && last_progress.1.elapsed() > Duration::from_secs(60) {
            let (screened, rerun) = (
                job_ids(&h, "SELECT job_id FROM verdicts WHERE stage = 'screen'").await,
                job_ids(&h, "SELECT job_id FROM verdicts WHERE stage = 'rerun'").await,
            );
            let (mut unscreened, mut unrerun) = (Vec::new(), Vec::new());
            for line in &pop.lines {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                let id = v["job_id"].as_str().unwrap();
                if !screened.contains(id) {
                    unscreened.push(id.to_owned());
                } else if !rerun.contains(id) {
                    unrerun.push(id.to_owned());
                }
            }
            eprintln!(
                "chaos: a minute without progress; not screened: {} (first: {:?}); screened, not re-run: {} (first: {:?})",
                unscreened.len(),
                &unscreened[..unscreened.len().min(5)],
                unrerun.len(),
                &unrerun[..unrerun.len().min(5)],
            );
            last_progress.1 = std::time::Instant::now();
        }
        assert!(
            started.elapsed() < plan.limit,
            "the run did not drain within {:?}: {reruns}/{total} re-run, {queued} queued, {unpublished} unpublished",
            plan.limit
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let drained = started.elapsed() - last_fault;
    supervisor.abort();
    let _ = supervisor.await;

    // Reconciliation.
    let mut held: Vec<(String, bool, String)> = Vec::new();
    let jobs = count_retrying(&h, "SELECT count(*) FROM jobs").await;
    let screened = count_retrying(&h, "SELECT count(*) FROM verdicts WHERE stage = 'screen'").await;
    let reruns = count_retrying(&h, "SELECT count(*) FROM verdicts WHERE stage = 'rerun'").await;
    let dlq = h
        .read_topic(
            &h.settings.kafka.dlq_topic,
            "chaos-dlq",
            Duration::from_secs(3),
        )
        .await;
    held.push((
        "every job in exactly one final state (a re-run verdict; none dead-lettered)".into(),
        jobs == total as i64 && screened == total as i64 && reruns == total as i64 && dlq.is_empty(),
        format!("{total} produced, {jobs} jobs, {screened} screen and {reruns} re-run verdicts, {} dead letters", dlq.len()),
    ));
    let slashes = count_retrying(&h, "SELECT count(*) FROM slashes").await;
    let distinct_slashes = count_retrying(&h, "SELECT count(DISTINCT slash_id) FROM slashes").await;
    let covered = count_retrying(&h, "SELECT count(*) FROM slashed_jobs").await;
    let distinct_covered =
        count_retrying(&h, "SELECT count(DISTINCT job_id) FROM slashed_jobs").await;
    held.push((
        "zero duplicate slash rows".into(),
        slashes == distinct_slashes && covered == distinct_covered,
        format!("{slashes} slashes ({distinct_slashes} ids), {covered} covered jobs ({distinct_covered} distinct)"),
    ));
    // A slash a fault caused would name an honest miner, or cite as evidence a check
    // that the audit, judging the same job with no fault, passed. (Over many rounds a
    // miner the demo only flags gathers the evidence of a slash; with live hosts, a job
    // the demo has no reference for is judged on one: neither contradicts the audit.)
    let slash_rows: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT miner_id, body FROM slashes")
            .fetch_all(h.store.pool())
            .await
            .unwrap();
    let mut wrongly = Vec::new();
    for (miner, body) in &slash_rows {
        if pop.honest.contains(miner) {
            wrongly.push(format!("{miner}: an honest miner"));
        }
        for e in body["evidence"].as_array().into_iter().flatten() {
            let (job, check) = (
                e["job_id"].as_str().unwrap_or(""),
                e["check"].as_str().unwrap_or(""),
            );
            let audit_passed = pop.expected.get(job).is_none_or(|v| {
                v.checks.iter().any(|r| {
                    r.check.as_str() == check
                        && r.outcome.status() == proctor::outcome::Status::Pass
                })
            });
            if audit_passed {
                wrongly.push(format!("{miner}: {job} {check}"));
            }
        }
    }
    let slashed_miners: BTreeSet<&String> = slash_rows.iter().map(|(m, _)| m).collect();
    held.push((
        "zero slashes caused by a fault (no honest miner; no evidence the audit passed)".into(),
        wrongly.is_empty(),
        format!(
            "{} miners slashed ({} of them cheats the demo slashes, {} honest miners); wrong: {wrongly:?}",
            slashed_miners.len(),
            slashed_miners.iter().filter(|m| pop.cheats.contains(**m)).count(),
            pop.honest.len()
        ),
    ));
    held.push((
        "every cheat slashed".into(),
        pop.cheats.iter().all(|c| slashed_miners.contains(c)),
        format!(
            "{:?} not slashed",
            pop.cheats
                .iter()
                .filter(|c| !slashed_miners.contains(c))
                .collect::<Vec<_>>()
        ),
    ));
    let received = h
        .read_topic(
            &h.settings.kafka.slashes_topic,
            "chaos-ledger",
            Duration::from_secs(3),
        )
        .await;
    let trusted = events::signing_key_from_hex(support::SIGNING_KEY)
        .unwrap()
        .verifying_key();
    let pg: BTreeSet<String> = sqlx::query_scalar("SELECT slash_id FROM slashes")
        .fetch_all(h.store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let ids: Vec<String> = received
        .iter()
        .filter_map(|m| {
            events::verify(&m.payload, &trusted)
                .ok()
                .map(|e| e.slash_id)
        })
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    let slash_events = count_retrying(
        &h,
        "SELECT count(*) FROM outbox WHERE kind = 'slash' AND published_at IS NOT NULL",
    )
    .await;
    held.push((
        "every slash's event acknowledged by the broker, once in the outbox".into(),
        slash_events == pg.len() as i64,
        format!(
            "{slash_events} slash events published for {} slashes",
            pg.len()
        ),
    ));
    held.push((
        "every event on the topic verifies and names an existing slash_id".into(),
        ids.len() == received.len() && ids.iter().all(|id| pg.contains(id)),
        format!(
            "{} events read back for {} slashes: {} duplicate deliveries",
            received.len(),
            pg.len(),
            received.len() - distinct.len(),
        ),
    ));
    held.push((
        "every published slash event still on the ledger topic".into(),
        distinct.len() == pg.len(),
        format!("{} of {} slashes on the topic", distinct.len(), pg.len()),
    ));
    let restarts: Vec<String> = fleet
        .procs
        .lock()
        .unwrap()
        .iter()
        .map(|p| format!("{} started {}x ({} exits)", p.name, p.starts, p.exits))
        .collect();

    println!(
        "\nchaos: {total} jobs of the demo mix, {} s producing, drained {:.0} s after the last fault ({:.0} s in all)",
        produced_at.as_secs(),
        drained.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let resent = count_retrying(
        &h,
        "SELECT coalesce(sum(resends), 0)::bigint FROM rerun_resends",
    )
    .await;
    println!("chaos: re-run requests the publisher sent again from Postgres: {resent}");
    println!("chaos: {}", restarts.join(", "));
    println!("\n| fault | injected | at (s) |\n|---|---|---|");
    let mut by_kind: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (f, at, end) in &injected {
        by_kind.entry(f.name()).or_default().push(format!(
            "{:.0}-{:.0}",
            at.as_secs_f64(),
            end.as_secs_f64()
        ));
    }
    for (name, at) in &by_kind {
        println!("| {name} | {} | {} |", at.len(), at.join(", "));
    }
    println!("\n| invariant | held | measured |\n|---|---|---|");
    for (what, ok, measured) in &held {
        println!(
            "| {what} | {} | {measured} |",
            if *ok { "yes" } else { "NO" }
        );
    }
    assert_eq!(by_kind.len(), Injected::all().len(), "every fault injected");
    for (what, ok, measured) in &held {
        assert!(ok, "{what}: {measured}");
    }
    fleet.stop_all();
    h.drop_db().await;
}

/// The short chaos run, in the suite: each fault once, short outages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_every_fault_once_and_every_job_reconciles() {
    let _serial = SERIAL.lock().await;
    chaos(ChaosPlan::from_env(300, 1, 8)).await;
}

/// The long chaos run: `scripts/chaos` (10,000 jobs, each fault three times, 30 s
/// outages).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "scripts/chaos runs it"]
async fn chaos_long_run() {
    let _serial = SERIAL.lock().await;
    chaos(ChaosPlan::from_env(10_000, 3, 30)).await;
}

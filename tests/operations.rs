//! What operators run: the alert rules and the dashboard against the metrics the
//! processes export, `proctor submit` sending a demo population through the running
//! pipeline (with S3 credentials from the AWS default chain), shadow mode, and the
//! dead-letter tools.

#[path = "support/scope.rs"]
mod scope;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::Duration;

use proctor::rules::Rules;
use support::Harness;

/// Every metric name the processes register, from their own exposition.
fn exported() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for worker in [
        "screen",
        "rerun",
        "judge",
        "publish",
        "serve-reference",
        "review",
    ] {
        names.extend(
            proctor::telemetry::Metrics::new(worker)
                .names()
                .iter()
                .cloned(),
        );
    }
    names
}

/// The metric names an expression text mentions, without the series suffixes.
fn mentioned(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("proctor_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let mut name = &text[start..end];
        for suffix in ["_total", "_bucket", "_sum", "_count"] {
            name = name.strip_suffix(suffix).unwrap_or(name);
        }
        out.insert(name.to_owned());
        i = end;
    }
    out
}

#[test]
fn the_alerts_and_the_dashboard_name_only_metrics_the_processes_export() {
    let docs = support::repo().join("docs/ops");
    let alerts = std::fs::read_to_string(docs.join("alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(docs.join("dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let exported = exported();
    for (file, text) in [("alerts.yml", &alerts), ("dashboard.json", &dashboard)] {
        let names = mentioned(text);
        assert!(names.len() >= 8, "{file} names {names:?}");
        let unknown: Vec<&String> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics no process exports: {unknown:?}"
        );
    }
    // Every alert says where its runbook is, and the runbook has that section.
    let runbook = std::fs::read_to_string(support::repo().join("docs/OPERATIONS.md")).unwrap();
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
                .collect::<String>()
                .replace(' ', "-")
        })
        .collect();
    let mut alerts_seen = 0;
    for line in alerts.lines() {
        if line.trim_start().starts_with("- alert:") {
            alerts_seen += 1;
        }
        if let Some(link) = line.trim().strip_prefix("runbook: docs/OPERATIONS.md#") {
            assert!(
                anchors.contains(link),
                "no runbook section #{link}: {anchors:?}"
            );
        }
    }
    assert_eq!(
        alerts_seen,
        alerts.matches("runbook: ").count(),
        "every alert has a runbook link"
    );
}

fn proctor(h: &Harness, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_proctor"));
    cmd.args(args).current_dir(support::repo());
    for (k, v) in &h.env {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `proctor submit` sends the demo, twice over, through the four workers: every valid
/// record gets its verdicts, the invalid lines become dead letters that `proctor dlq`
/// lists and replays, and the cheaters are slashed and published. The S3 keys come
/// from the AWS default chain (the environment), not from the settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_demo_population_goes_through_the_running_pipeline_with_one_command() {
    let h = Harness::new("submit").await;
    let rules = support::rerun_everything();
    let workers = [
        h.start_worker("screen", rules.clone()).await,
        h.start_worker("rerun", rules.clone()).await,
        h.start_worker("judge", rules.clone()).await,
        h.start_worker("publish", rules.clone()).await,
    ];
    let key_id = h.env["PROCTOR_S3__ACCESS_KEY_ID"].clone();
    let secret = h.env["PROCTOR_S3__SECRET_ACCESS_KEY"].clone();
    let submit = proctor(
        &h,
        &["submit", "fixtures/audit-demo", "--rounds", "2"],
        &[
            ("PROCTOR_S3__ACCESS_KEY_ID", ""),
            ("PROCTOR_S3__SECRET_ACCESS_KEY", ""),
            ("AWS_ACCESS_KEY_ID", &key_id),
            ("AWS_SECRET_ACCESS_KEY", &secret),
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    assert!(submit.status.success(), "{}", text(&submit));
    let demo =
        std::fs::read_to_string(support::repo().join("fixtures/audit-demo/jobs.jsonl")).unwrap();
    let (messages, invalid) = proctor::submit::messages(&demo, 2);
    let valid = (messages.len() - invalid) as i64;
    assert!(
        text(&submit).contains(&format!(
            "sent {valid} job records and {invalid} invalid lines"
        )),
        "{}",
        text(&submit)
    );
    h.wait_for(
        "every submitted job's screen and re-run verdicts",
        Duration::from_secs(300),
        || async {
            h.count("SELECT count(*) FROM verdicts WHERE stage = 'screen'")
                .await
                == valid
                && h.count("SELECT count(*) FROM verdicts WHERE stage = 'rerun'")
                    .await
                    == valid
        },
    )
    .await;
    h.wait_judged_and_published().await;
    assert!(h.count("SELECT count(*) FROM slashes").await > 0);
    assert_eq!(
        h.count("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
            .await,
        h.count("SELECT count(*) FROM outbox").await
    );

    // The invalid lines are dead letters, listed with their reason.
    let list = |args: &[&str]| proctor(&h, &[&["dlq", "list"], args].concat(), &[]);
    let mut letters = Vec::new();
    for _ in 0..20 {
        let o = list(&["--json", "--idle-secs", "3"]);
        assert!(o.status.success(), "{}", text(&o));
        letters = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        if letters.len() >= invalid {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(letters.len(), invalid, "{letters:?}");
    assert!(
        letters.iter().all(|l| l["reason"] == "invalid_record"
            && l["original_topic"] == h.settings.kafka.jobs_topic.as_str()),
        "{letters:?}"
    );
    let table = list(&[]);
    assert!(
        text(&table).contains(&format!("{invalid} of {invalid} letters")),
        "{}",
        text(&table)
    );

    // A dry run sends nothing; a replay sends them back, and screen dead-letters them
    // again (they are still not job records).
    let dry = proctor(&h, &["dlq", "replay", "--dry-run", "--idle-secs", "3"], &[]);
    assert!(
        text(&dry).contains(&format!("would replay {invalid} letters")),
        "{}",
        text(&dry)
    );
    let replay = proctor(
        &h,
        &[
            "dlq",
            "replay",
            "--reason",
            "invalid_record",
            "--idle-secs",
            "3",
        ],
        &[],
    );
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains(&format!("replayed {invalid} letters")),
        "{}",
        text(&replay)
    );
    let last = letters
        .iter()
        .map(|l| l["offset"].as_i64().unwrap())
        .max()
        .unwrap();
    let after = last.to_string();
    h.wait_for(
        "the replayed records dead-lettered again",
        Duration::from_secs(60),
        || async {
            let o = proctor(
                &h,
                &[
                    "dlq",
                    "list",
                    "--json",
                    "--idle-secs",
                    "3",
                    "--after-offset",
                    &after,
                ],
                &[],
            );
            String::from_utf8_lossy(&o.stdout).lines().count() == invalid
        },
    )
    .await;
    for w in workers {
        w.stop().await;
    }
    h.drop_db().await;
}

/// In shadow mode the judge records what it would decide and slashes, flags and
/// publishes nothing; the same evidence judged live slashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_mode_decides_without_slashing_flagging_or_publishing() {
    let h = Harness::new("shadow").await;
    let rules = support::rerun_everything();
    let population = support::Population::generate(1);
    population.upload(&h).await;
    let screen = h.start_worker("screen", rules.clone()).await;
    let rerun = h.start_worker("rerun", rules.clone()).await;
    let mut shadow = h.settings.clone();
    shadow.pipeline.shadow = true;
    let judge = h.start_worker_with("judge", rules.clone(), shadow).await;
    h.produce_jobs(&population.lines).await;
    let n = population.lines.len() as i64;
    h.wait_for("the re-run verdicts", Duration::from_secs(300), || async {
        h.count("SELECT count(*) FROM verdicts WHERE stage = 'rerun'")
            .await
            == n
    })
    .await;
    h.wait_for(
        "the shadow judge to decide",
        Duration::from_secs(120),
        || async { h.count("SELECT count(*) FROM judge_queue").await == 0 },
    )
    .await;
    let shadow_slashes = h
        .count("SELECT count(*) FROM shadow_decisions WHERE action = 'slash'")
        .await;
    assert!(
        shadow_slashes as usize >= population.cheats.len(),
        "{shadow_slashes} shadow slashes for {} cheaters",
        population.cheats.len()
    );
    for table in ["slashes", "review_flags", "outbox", "review_cases"] {
        assert_eq!(
            h.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "shadow mode wrote to {table}"
        );
    }
    let shadowed: BTreeSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT miner_id FROM shadow_decisions WHERE action = 'slash'",
    )
    .fetch_all(h.store.pool())
    .await
    .unwrap()
    .into_iter()
    .collect();
    judge.stop().await;

    // The same evidence, live: the same miners are slashed.
    sqlx::query("INSERT INTO judge_queue (miner_id) SELECT DISTINCT miner_id FROM verdicts")
        .execute(h.store.pool())
        .await
        .unwrap();
    let live = h.start_worker("judge", rules.clone()).await;
    h.wait_for(
        "the live judge to decide",
        Duration::from_secs(120),
        || async { h.count("SELECT count(*) FROM judge_queue").await == 0 },
    )
    .await;
    let slashed: BTreeSet<String> =
        sqlx::query_scalar::<_, String>("SELECT DISTINCT miner_id FROM slashes")
            .fetch_all(h.store.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(slashed, shadowed, "shadow and live decide alike");
    for w in [screen, rerun, live] {
        w.stop().await;
    }
    h.drop_db().await;
}

/// A worker stopped while it still waits for a service exits at once and cleanly: the
/// attempt in flight is abandoned. Here Postgres is a port that accepts connections and
/// never answers, so each attempt would wait out its 10 s timeout (as an admin request
/// to a broker that is down waited out its 30 s).
#[test]
fn a_worker_stopped_while_starting_exits_at_once_and_cleanly() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db = format!("postgres://postgres@{}/never", silent.local_addr().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_proctor-screen"))
        .env("PROCTOR_KAFKA__BROKERS", "127.0.0.1:1")
        .env("PROCTOR_SECRETS__SAMPLING_SECRET", "s")
        .env("PROCTOR_HTTP__BIND", "127.0.0.1:0")
        .env("PROCTOR_DATABASE__URL", &db)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let asked = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopped while starting"), "{log}");
    drop(silent);
}

/// `pipeline.publish = false` holds every event in the outbox, with the gauges saying
/// so; a publisher with it on publishes the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishing_off_holds_the_outbox_until_it_is_turned_on() {
    let h = Harness::new("hold").await;
    let rules = support::rerun_everything();
    let population = support::Population::generate(1);
    population.upload(&h).await;
    let mut held = h.settings.clone();
    held.pipeline.publish = false;
    let workers = [
        h.start_worker("screen", rules.clone()).await,
        h.start_worker("rerun", rules.clone()).await,
        h.start_worker("judge", rules.clone()).await,
    ];
    let off = h.start_worker_with("publish", rules.clone(), held).await;
    h.produce_jobs(&population.lines).await;
    h.wait_for("the judge's slashes", Duration::from_secs(300), || async {
        h.count("SELECT count(*) FROM slashes").await as usize >= population.cheats.len()
            && h.count("SELECT count(*) FROM judge_queue").await == 0
    })
    .await;
    let events = h.count("SELECT count(*) FROM outbox").await;
    assert!(events > 0);
    let gauges = &off.ctx.metrics.backlog;
    h.wait_for("the backlog gauges", Duration::from_secs(30), || async {
        gauges.outbox_unpublished.get() == events
    })
    .await;
    assert_eq!(gauges.publishing.get(), 0);
    assert_eq!(
        h.count("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
            .await,
        0,
        "nothing is published while publishing is off"
    );
    off.stop().await;
    let on = h.start_worker("publish", rules.clone()).await;
    h.wait_judged_and_published().await;
    let sent = h
        .read_topic(
            &h.settings.kafka.slashes_topic,
            "ledger",
            Duration::from_secs(3),
        )
        .await;
    let ids: BTreeSet<String> = sent.iter().filter_map(|m| m.key.clone()).collect();
    assert!(
        sent.len() as i64 >= events,
        "{} of {events} events",
        sent.len()
    );
    // Every slashed miner's event went out, keyed by the miner.
    let slashed: BTreeSet<String> =
        sqlx::query_scalar::<_, String>("SELECT DISTINCT miner_id FROM slashes")
            .fetch_all(h.store.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(ids, slashed);
    for w in workers.into_iter().chain([on]) {
        w.stop().await;
    }
    h.drop_db().await;
}

/// Work owed is driven from Postgres: a sampled job with no re-run verdict has its
/// re-run request sent again by the publisher, keyed by its miner, whatever the broker
/// kept of the first. Here the screen worker's requests stay unread (no rerun worker),
/// as if the broker had lost them, and the publisher sends each once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_publisher_sends_again_the_rerun_requests_that_are_owed() {
    let h = Harness::new("owed").await;
    let rules = support::rerun_everything();
    let population = support::Population::generate(1);
    population.upload(&h).await;
    let screen = h.start_worker("screen", rules.clone()).await;
    h.produce_jobs(&population.lines).await;
    let sampled = "SELECT count(*) FROM verdicts WHERE stage = 'screen' AND sampled";
    h.wait_for("the screen verdicts", Duration::from_secs(120), || async {
        h.count(sampled).await > 0
            && h.count("SELECT count(*) FROM verdicts").await as usize >= population.expected.len()
    })
    .await;
    screen.stop().await;
    let owed = h.count(sampled).await;
    let mut eager = h.settings.clone();
    eager.pipeline.rerun_owed_after_secs = 0;
    eager.pipeline.rerun_resends = 1;
    let publish = h.start_worker_with("publish", rules.clone(), eager).await;
    h.wait_for(
        "the owed re-runs sent again",
        Duration::from_secs(60),
        || async { h.count("SELECT count(*) FROM rerun_resends").await == owed },
    )
    .await;
    assert_eq!(publish.ctx.metrics.reruns_resent.get(), owed as u64);
    let requests = h
        .read_topic(
            &h.settings.kafka.rerun_topic,
            "owed",
            Duration::from_secs(3),
        )
        .await;
    // Each sampled job twice: the screen worker's request and the publisher's.
    let mut per_job: BTreeMap<String, usize> = BTreeMap::new();
    for m in &requests {
        let record = proctor::record::JobRecord::from_json(&m.payload)
            .expect("a re-run request is a job record");
        assert_eq!(m.key.as_deref(), Some(record.miner_id.to_string().as_str()));
        *per_job
            .entry(record.job_id.as_str().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_job.len() as i64, owed);
    assert!(per_job.values().all(|n| *n == 2), "{per_job:?}");
    publish.stop().await;
    h.drop_db().await;
}

/// The stand-in S3 store (garage 2.5.0) accepts a PutObject with `If-None-Match: *` over
/// an existing object, and one with an `If-Match` etag that is no longer current: it has
/// no conditional writes, which tansu 0.6's S3 store relies on once restarted: why the
/// services run tansu on SQLite (docs/OPERATIONS.md, "The stand-in broker"). Amazon S3
/// answers both with 412. When this test fails, garage has gained them: revisit that
/// section.
#[tokio::test]
async fn the_s3_stand_in_ignores_conditional_writes() {
    let settings = proctor::settings::Settings::load_from(None, support::service_env())
        .expect("the services' settings");
    let store = proctor::objects::ObjectStore::new(&settings.s3);
    let bucket = settings.s3.jobs_bucket.clone();
    let key = format!(
        "tests/conditional-{}",
        blake3::hash(format!("{:?}", std::time::SystemTime::now()).as_bytes()).to_hex()
    );
    let body = |s: &str| aws_sdk_s3::primitives::ByteStream::from(s.as_bytes().to_vec());
    let client = store.client();
    let first = client
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .if_none_match("*")
        .body(body("first"))
        .send()
        .await
        .expect("a conditional create of a new object succeeds");
    let first_etag = first.e_tag().expect("an etag").to_owned();
    // A create over the existing object: S3 refuses it (412); garage overwrites.
    let create_again = client
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .if_none_match("*")
        .body(body("second"))
        .send()
        .await;
    // A replace against the first etag, now stale: S3 refuses it; garage overwrites.
    let stale = client
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .if_match(&first_etag)
        .body(body("third"))
        .send()
        .await;
    let read = |key: String| async move {
        let got = client
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        String::from_utf8(got.body.collect().await.unwrap().to_vec()).unwrap()
    };
    let now = read(key.clone()).await;
    assert!(
        create_again.is_ok(),
        "garage now refuses a create over an existing object: {create_again:?}"
    );
    assert!(
        stale.is_ok(),
        "garage now refuses a stale If-Match: {stale:?}"
    );
    assert_eq!(now, "third", "each unconditional overwrite took effect");
}

/// The publisher signs the audit log's head with the checkpoint key, which the database
/// never holds, and sends each checkpoint to the audit topic whenever the log grew.
/// `proctor audit-log checkpoints` reads them back and `verify --checkpoint` holds them
/// against the log. A broken chain is never signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_exports_signed_audit_checkpoints_and_never_signs_a_broken_log() {
    let h = Harness::new("auditcp").await;
    let seed = [7u8; 32];
    let public = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes(),
    );
    let mut env = h.env.clone();
    env.insert(
        "PROCTOR_SECRETS__AUDIT_CHECKPOINT_KEY".into(),
        hex::encode(seed),
    );
    env.insert(
        "PROCTOR_PIPELINE__AUDIT_CHECKPOINT_SECONDS".into(),
        "1".into(),
    );
    let settings = proctor::settings::Settings::load_from(None, env).unwrap();
    for lock in 1..=3 {
        h.store.log_login_locked("ann", 5, lock).await.unwrap();
    }
    let publish = h
        .start_worker_with("publish", Rules::embedded().unwrap(), settings)
        .await;
    let signed = || publish.ctx.metrics.audit_checkpoints.get();
    h.wait_for("the first checkpoint", Duration::from_secs(30), || async {
        signed() >= 1
    })
    .await;
    h.store.log_login_locked("bob", 5, 1).await.unwrap();
    h.store.log_login_locked("bob", 6, 2).await.unwrap();
    h.wait_for(
        "a checkpoint of the grown log",
        Duration::from_secs(30),
        || async { signed() >= 2 && publish.ctx.metrics.audit_log_broken.get() == 0 },
    )
    .await;
    // Once the head is signed, an unchanged log is not signed again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = signed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(signed(), before, "an unchanged head was signed again");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checkpoints.jsonl");
    let file_s = file.to_str().unwrap();
    let out = proctor(&h, &["audit-log", "checkpoints", "--out", file_s], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<proctor::review::trail::Checkpoint> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, before, "{lines:?}");
    assert_eq!(lines.last().unwrap().entries, 5);
    let verify = [
        "audit-log",
        "verify",
        "--checkpoint",
        file_s,
        "--public-key",
        &public,
    ];
    let out = proctor(&h, &verify, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{before} checkpoints hold")),
        "{}",
        text(&out)
    );

    // The table's owner edits entry 2: the publisher stops signing, and says so.
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER USER")
        .execute(h.store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
        .execute(h.store.pool())
        .await
        .unwrap();
    h.store.log_login_locked("carol", 5, 1).await.unwrap();
    // Seen at the next round that reads the whole log (every 12th: 12 s here).
    h.wait_for(
        "the broken chain to be seen",
        Duration::from_secs(40),
        || async { publish.ctx.metrics.audit_log_broken.get() == 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(signed(), before, "a broken log was signed");
    let out = proctor(&h, &verify, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    publish.stop().await;
    h.drop_db().await;
}

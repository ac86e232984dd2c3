//! The real services for the pipeline tests: PostgreSQL, garage (S3) and tansu
//! (Kafka), as `scripts/services.sh up` starts them. A test that finds one down fails
//! with the command that starts it; none skips.
//!
//! Every [`Harness`] gets its own database, its own topics and its own consumer groups,
//! named after a random run id, so runs never see each other's data.

#![allow(dead_code)]

pub mod hosts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proctor::kafka;
use proctor::objects::ObjectStore;
use proctor::pipeline::{self, Context, Shutdown, Trigger};
use proctor::rules::Rules;
use proctor::settings::Settings;
use proctor::store::Store;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

/// A fixed test key: its public key is what the tests verify events against.
pub const SIGNING_KEY: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
/// The review app's reversal key in tests: never the slash key.
pub const REVERSAL_KEY: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";

/// The slash key of [`SIGNING_KEY`], for the judge's part in a test.
pub fn slash_key() -> ed25519_dalek::SigningKey {
    proctor::events::signing_key_from_hex(SIGNING_KEY).unwrap()
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The services' settings: the environment when it names them, else the file that
/// `scripts/services.sh up` writes.
pub fn service_env() -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let file = std::env::var("PROCTOR_SERVICES_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            let cache = std::env::var("PROCTOR_CACHE").unwrap_or(format!("{home}/.cache/proctor"));
            PathBuf::from(cache).join("services/env")
        });
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "the pipeline tests need the real services, and {} is unreadable ({e}): run scripts/services.sh up",
            file.display()
        )
    });
    for line in text.lines() {
        if let Some((k, v)) = line.trim().trim_start_matches("export ").split_once('=') {
            vars.insert(k.to_owned(), v.to_owned());
        }
    }
    for (k, v) in std::env::vars() {
        if k.starts_with("PROCTOR_S3__") || k.starts_with("PROCTOR_KAFKA__BROKERS") {
            vars.insert(k, v);
        }
    }
    vars
}

fn require_port(addr: &str, what: &str) {
    let sock: std::net::SocketAddr = addr.parse().expect("service address");
    if std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_err() {
        panic!("{what} is not listening on {addr}: run scripts/services.sh up");
    }
}

fn admin_url() -> String {
    std::env::var("PROCTOR_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub struct Harness {
    pub run_id: String,
    pub db_name: String,
    pub db_url: String,
    pub env: BTreeMap<String, String>,
    pub settings: Settings,
    pub store: Store,
    pub objects: ObjectStore,
    pub producer: kafka::Producer,
}

impl Harness {
    pub async fn new(tag: &str) -> Harness {
        require_port("127.0.0.1:5432", "PostgreSQL");
        let mut env = service_env();
        let brokers = env
            .get("PROCTOR_KAFKA__BROKERS")
            .cloned()
            .unwrap_or_default();
        require_port(&brokers, "tansu (Kafka)");
        let s3 = env.get("PROCTOR_S3__ENDPOINT").cloned().unwrap_or_default();
        require_port(s3.trim_start_matches("http://"), "garage (S3)");

        let run_id = format!(
            "{tag}_{}",
            &blake3::hash(
                format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes()
            )
            .to_hex()[..10]
        );
        let db_name = format!("proctor_test_{run_id}");
        let admin = sqlx::PgPool::connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is not reachable: {e}", admin_url()));
        // Safe: the name is a tag and hex digits.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let db_url = admin_url()
            .rsplit_once('/')
            .map(|(base, _)| format!("{base}/{db_name}"))
            .unwrap();
        let t = |name: &str| format!("test.{run_id}.{name}");
        for (k, v) in [
            ("PROCTOR_DATABASE__URL", db_url.clone()),
            ("PROCTOR_KAFKA__GROUP_ID", format!("proctor-{run_id}")),
            ("PROCTOR_KAFKA__JOBS_TOPIC", t("jobs")),
            ("PROCTOR_KAFKA__RERUN_TOPIC", t("rerun")),
            ("PROCTOR_KAFKA__DLQ_TOPIC", t("dlq")),
            ("PROCTOR_KAFKA__SLASHES_TOPIC", t("slashes")),
            ("PROCTOR_KAFKA__AUDIT_TOPIC", t("audit")),
            ("PROCTOR_HTTP__BIND", "127.0.0.1:0".into()),
            ("PROCTOR_SECRETS__SAMPLING_SECRET", "pipeline tests".into()),
            ("PROCTOR_SECRETS__SIGNING_KEY", SIGNING_KEY.into()),
            ("PROCTOR_SECRETS__REVERSAL_KEY", REVERSAL_KEY.into()),
            (
                "PROCTOR_REVIEW__SLASH_PUBLIC_KEY",
                hex::encode(slash_key().verifying_key().as_bytes()),
            ),
            ("PROCTOR_PIPELINE__JUDGE_SETTLE_MS", "1500".into()),
            ("PROCTOR_PIPELINE__MAX_BACKOFF_MS", "2000".into()),
            ("PROCTOR_PIPELINE__POLL_MS", "100".into()),
        ] {
            env.insert(k.to_owned(), v);
        }
        let settings = Settings::load_from(None, env.clone()).expect("test settings");
        let store = Store::connect(&db_url).await.unwrap();
        store.migrate().await.unwrap();
        let k = &settings.kafka;
        kafka::ensure_topics(
            k,
            &[
                (k.jobs_topic.as_str(), 4),
                (k.rerun_topic.as_str(), 4),
                (k.dlq_topic.as_str(), 1),
                (k.slashes_topic.as_str(), 4),
                (k.audit_topic.as_str(), 1),
            ],
        )
        .await
        .expect("cannot create the test topics");
        let producer = kafka::producer(k).unwrap();
        let objects = ObjectStore::new(&settings.s3);
        Harness {
            run_id,
            db_name,
            db_url,
            env,
            settings,
            store,
            objects,
            producer,
        }
    }

    /// Uploads every file under `dir` to `bucket`, keyed by `prefix` + its relative path.
    /// Puts an object a test sets up, retrying a transient refusal: a store that an
    /// earlier chaos test just restarted can answer 503 ("database is locked") for a
    /// moment, and that is no part of what any test checks.
    pub async fn put_retrying(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let mut wait = std::time::Duration::from_millis(200);
        for attempt in 1.. {
            match self.objects.put(bucket, key, bytes.clone()).await {
                Ok(()) => return,
                Err(e) if attempt < 6 => {
                    eprintln!("upload {key}: {e}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => panic!("upload {key}: {e}"),
            }
        }
    }

    pub async fn upload_dir(&self, dir: &Path, bucket: &str, prefix: &str) -> usize {
        let mut n = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    self.put_retrying(
                        bucket,
                        &format!("{prefix}{rel}"),
                        std::fs::read(&p).unwrap(),
                    )
                    .await;
                    n += 1;
                }
            }
        }
        n
    }

    /// Produces job records keyed by miner id (or `unparsable` when the line has none).
    pub async fn produce_jobs(&self, lines: &[Vec<u8>]) {
        self.produce_jobs_via(&self.producer, lines).await
    }

    /// [`Harness::produce_jobs`] through another producer, as a job service with its
    /// own producer settings would send them.
    pub async fn produce_jobs_via(&self, producer: &kafka::Producer, lines: &[Vec<u8>]) {
        let topic = &self.settings.kafka.jobs_topic;
        let sends = lines.iter().map(|line| {
            let key = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| {
                    v.get("miner_id")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "unparsable".into());
            // Like a real job service: retry a failed send. A duplicate record is
            // harmless (every write is idempotent on job_id).
            async move {
                let mut last = None;
                for attempt in 0..10u64 {
                    match kafka::send(producer, topic, &key, line, None).await {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            eprintln!("produce attempt {attempt} failed: {e}");
                            last = Some(e);
                            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                        }
                    }
                }
                Err(last)
            }
        });
        for r in futures::future::join_all(sends).await {
            r.expect("produce a job record within 10 attempts");
        }
    }

    /// Starts a worker in this process.
    pub async fn start_worker(&self, name: &'static str, rules: Rules) -> Worker {
        self.start_worker_with(name, rules, self.settings.clone())
            .await
    }

    /// Starts a worker in this process with other settings than the harness's.
    pub async fn start_worker_with(
        &self,
        name: &'static str,
        rules: Rules,
        settings: Settings,
    ) -> Worker {
        let (trigger, shutdown) = Shutdown::new();
        let ctx: Arc<Context> = Context::start(name, settings, rules, shutdown)
            .await
            .unwrap_or_else(|e| panic!("worker {name} did not start: {e:#}"));
        let context = ctx.clone();
        let task = pipeline::spawn(name, ctx).unwrap_or_else(|| panic!("no worker {name}"));
        let handle = tokio::spawn(async move {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("worker {name} failed: {e:#}"),
                Err(e) => panic!("worker {name} panicked: {e}"),
            }
        });
        Worker {
            trigger,
            handle,
            ctx: context,
        }
    }

    /// Polls `probe` until it returns true or `limit` passes; panics with `what`.
    pub async fn wait_for<F, Fut>(&self, what: &str, limit: Duration, mut probe: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !probe().await {
            if start.elapsed() > limit {
                panic!("timed out after {limit:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the judge has no miner queued and the outbox is drained.
    pub async fn wait_judged_and_published(&self) {
        self.wait_for(
            "the judge and the publisher to finish",
            Duration::from_secs(120),
            || async {
                self.count("SELECT count(*) FROM judge_queue").await == 0
                    && self
                        .count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                        .await
                        == 0
            },
        )
        .await;
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(self.store.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Reads every message of `topic` from the beginning with a consumer group of its
    /// own, until `idle` passes without a new one.
    pub async fn read_topic(&self, topic: &str, group: &str, idle: Duration) -> Vec<Received> {
        let consumer: StreamConsumer = kafka::client(&self.settings.kafka)
            .set("group.id", format!("{group}-{}", self.run_id))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let mut out = Vec::new();
        let mut deadline = Instant::now() + idle.max(Duration::from_secs(10));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, consumer.recv()).await {
                Ok(Ok(m)) => {
                    use rdkafka::message::Headers;
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|x| {
                                    (
                                        x.key.to_owned(),
                                        String::from_utf8_lossy(x.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(Received {
                        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        headers,
                    });
                    deadline = Instant::now() + idle;
                }
                Ok(Err(e)) => panic!("reading {topic}: {e}"),
                Err(_) => break,
            }
        }
        out
    }

    pub async fn drop_db(self) {
        self.store.pool().close().await;
        let admin = sqlx::PgPool::connect(&admin_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.db_name
        )))
        .execute(&admin)
        .await
        .unwrap();
    }
}

/// A worker running in this process.
pub struct Worker {
    pub trigger: Trigger,
    pub handle: tokio::task::JoinHandle<()>,
    pub ctx: Arc<Context>,
}

impl Worker {
    /// Stops it the way SIGTERM does and waits for it to finish.
    pub async fn stop(self) {
        self.trigger.stop();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the worker stops within 30 s")
            .expect("the worker's task ends without a panic");
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// The shipped rules with every job re-run, so that the pipeline's verdicts can be
/// compared one for one with `proctor audit`, which uses every reference it has, and
/// with rates that hold on the demo's models ([`crate::scope::calibrated_everywhere`]), so
/// that its cheaters are slashed.
pub fn rerun_everything() -> Rules {
    let mut rules = crate::scope::calibrated_everywhere(Rules::embedded().unwrap());
    // The rate is clamp(base × (1 + …), floor, ceiling): a base and ceiling of 1
    // re-run every job.
    rules.sampling.base_rate = 1.0;
    rules.sampling.ceiling = 1.0;
    rules
}

/// A generated population: `rounds` copies of the audit demo's jobs (new job ids, the
/// same inputs and outputs, later submission times), with an audit folder holding the
/// same jobs, objects and reference outputs, so `proctor audit` can judge it too.
///
/// Jobs whose verdict depends on the reuse index (the demo's replayed image and canned
/// answer) are left out: a copy of such a job repeats an input whose original the index
/// has seen, and a restarted worker's index starts empty, so the two would differ for
/// reasons that are not the crash under test.
pub struct Population {
    pub dir: tempfile::TempDir,
    pub lines: Vec<Vec<u8>>,
    /// Each job's expected verdict: the audit's verdict of the demo job it copies
    /// (judging the copies again would only repeat the same work).
    pub expected: BTreeMap<String, proctor::checks::JobVerdict>,
    /// Miner ids the demo expects to be slashed / left alone.
    pub cheats: std::collections::BTreeSet<String>,
    pub honest: std::collections::BTreeSet<String>,
}

impl Population {
    pub fn generate(rounds: usize) -> Population {
        Population::generate_tagged(rounds, "")
    }

    /// [`Population::generate`] with `tag` in every job id (`<demo id>-<tag>-r<round>`):
    /// for a run whose re-run stage writes reference outputs to S3, where another run's
    /// outputs for the same job ids would otherwise be read back.
    pub fn generate_tagged(rounds: usize, tag: &str) -> Population {
        let demo = repo().join("fixtures/audit-demo");
        let rules = rerun_everything();
        let secret = proctor::sampling::SamplingSecret::from_passphrase("pipeline tests");
        let judged = proctor::audit::judge_dir(
            &demo,
            rules,
            &secret,
            proctor::case::Reruns::Drawn,
            None,
            false,
        )
        .unwrap();
        let reuse_dependent: std::collections::BTreeSet<String> = judged
            .verdicts
            .iter()
            .filter(|v| {
                v.outcome(proctor::outcome::CheckId::Reuse)
                    .is_some_and(|o| o.is_fail())
            })
            .map(|v| v.miner_id.to_string())
            .collect();
        let miners: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(demo.join("miners.json")).unwrap()).unwrap();
        let (mut cheats, mut honest) = (
            std::collections::BTreeSet::new(),
            std::collections::BTreeSet::new(),
        );
        for m in &miners {
            let id = m["miner_id"].as_str().unwrap().to_owned();
            if reuse_dependent.contains(&id) {
                continue;
            }
            match m["expected_action_calibrated"].as_str().unwrap() {
                "slash" => cheats.insert(id),
                "none" => honest.insert(id),
                _ => false,
            };
        }
        let records: Vec<serde_json::Value> = std::fs::read_to_string(demo.join("jobs.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| proctor::record::JobRecord::from_json(l.as_bytes()).ok())
            .filter(|r| !reuse_dependent.contains(&r.miner_id.to_string()))
            .map(|r| r.to_json())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&demo.join("objects"), &dir.path().join("objects"));
        std::fs::copy(demo.join("wallets.json"), dir.path().join("wallets.json")).unwrap();
        let mut lines = Vec::new();
        let mut expected = BTreeMap::new();
        for round in 0..rounds {
            for r in &records {
                let orig = r["job_id"].as_str().unwrap();
                let id = if tag.is_empty() {
                    format!("{orig}-r{round}")
                } else {
                    format!("{orig}-{tag}-r{round}")
                };
                let mut c = r.clone();
                c["job_id"] = id.clone().into();
                let at = chrono::DateTime::parse_from_rfc3339(c["submitted_at"].as_str().unwrap())
                    .unwrap()
                    .to_utc()
                    + chrono::Duration::minutes(10 * round as i64);
                c["submitted_at"] = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into();
                let src = demo.join("reference").join(orig);
                if src.is_dir() {
                    copy_tree(&src, &dir.path().join("reference").join(&id));
                }
                lines.push(serde_json::to_vec(&c).unwrap());
                let v = judged
                    .verdicts
                    .iter()
                    .find(|v| v.job_id.as_str() == orig)
                    .unwrap();
                expected.insert(id, v.clone());
            }
        }
        let mut jsonl = lines.join(&b'\n');
        jsonl.push(b'\n');
        std::fs::write(dir.path().join("jobs.jsonl"), jsonl).unwrap();
        Population {
            dir,
            lines,
            expected,
            cheats,
            honest,
        }
    }

    /// Uploads the objects and reference outputs, `concurrency` at a time.
    pub async fn upload(&self, h: &Harness) {
        let s3 = &h.settings.s3;
        h.upload_dir(&self.dir.path().join("objects"), &s3.jobs_bucket, "")
            .await;
        let refs = self.dir.path().join("reference");
        let mut files = Vec::new();
        for job in std::fs::read_dir(&refs).unwrap() {
            let job = job.unwrap().path();
            for f in std::fs::read_dir(&job).unwrap() {
                let f = f.unwrap().path();
                let key = format!(
                    "reference/{}/{}",
                    job.file_name().unwrap().to_string_lossy(),
                    f.file_name().unwrap().to_string_lossy()
                );
                files.push((key, f));
            }
        }
        use futures::StreamExt;
        let puts = files.iter().map(|(key, path)| async move {
            h.put_retrying(&s3.reference_bucket, key, std::fs::read(path).unwrap())
                .await
        });
        futures::stream::iter(puts)
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

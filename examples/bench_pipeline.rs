//! `scripts/bench-pipeline`: job records through the screen worker against the real
//! services, with two baselines measured in the same run on the same machine:
//!
//! - the broker's own rate: the same records produced with the workers' producer
//!   settings and consumed by a fresh consumer group, nothing else done;
//! - the image check's own throughput: `Checker::evaluate` on the same SD records and
//!   image bytes held in memory, with no Kafka, S3 or Postgres around it.
//!
//! Prints sustained jobs/s for a backlog of LLM jobs (inline text) and of SD jobs
//! (fetched from S3, decoded, hashed), each against its baseline, and the p50/p99
//! record-to-verdict latency of jobs produced at a steady rate below saturation, once
//! through a producer lingering 5 ms and once through one lingering 50 ms. Each phase
//! also prints the S3 requests garage served, which include the broker's own.
//!
//!   cargo run --release --example bench_pipeline -- [LLM_JOBS] [SD_JOBS]

#[path = "../tests/support/scope.rs"]
mod scope;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use proctor::checks::{Checker, Fetched, Object, Stream, StreamState};
use proctor::record::{Job, JobRecord};
use proctor::rules::Rules;
use proctor::{kafka, pipeline};
use rdkafka::consumer::{Consumer, StreamConsumer};
use support::Harness;

fn demo_records() -> Vec<JobRecord> {
    std::fs::read_to_string(support::repo().join("fixtures/audit-demo/jobs.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| JobRecord::from_json(l.as_bytes()).ok())
        .collect()
}

/// `n` honest jobs of `kind`, cloned from the demo with fresh job ids (same inputs, so
/// the reuse index sees honest repeats).
fn clones(kind: &str, n: usize, tag: &str) -> Vec<Vec<u8>> {
    let honest: Vec<serde_json::Value> = demo_records()
        .into_iter()
        .filter(|r| r.job_id.as_str().starts_with(&format!("{kind}-honest")))
        .filter(|r| match &r.job {
            Job::Llm { output, .. } => output.text.is_some(),
            Job::Sd { .. } => true,
        })
        .map(|r| r.to_json())
        .collect();
    (0..n)
        .map(|i| {
            let mut r = honest[i % honest.len()].clone();
            r["job_id"] = format!("bench-{tag}-{i}").into();
            serde_json::to_vec(&r).unwrap()
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn broker_rate(h: &Harness, records: &[Vec<u8>]) -> (f64, f64) {
    let topic = format!("bench.{}.broker", h.run_id);
    kafka::ensure_topics(&h.settings.kafka, &[(topic.as_str(), 4)])
        .await
        .unwrap();
    let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
    let start = Instant::now();
    let sends = records
        .iter()
        .enumerate()
        .map(|(i, r)| kafka::send(&h.producer, &topic, &keys[i % 64], r, None));
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    let produce = records.len() as f64 / start.elapsed().as_secs_f64();
    let consumer: StreamConsumer = proctor::kafka::client(&h.settings.kafka)
        .set("group.id", format!("bench-{}", h.run_id))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let first = consumer.recv().await.unwrap().detach();
    drop(first);
    let start = Instant::now();
    for _ in 1..records.len() {
        consumer.recv().await.unwrap();
    }
    let consume = (records.len() - 1) as f64 / start.elapsed().as_secs_f64();
    (produce, consume)
}

/// Jobs/s of the image check alone: decode, hash, compare, on in-memory bytes. With
/// `parallel`, decoding and hashing run on every core first ([`pipeline::prepare_all`]),
/// as the screen worker runs them; the checks then run in order on one thread.
fn image_check_rate(records: &[Vec<u8>], rules: &Rules, parallel: bool) -> f64 {
    let objects = support::repo().join("fixtures/audit-demo/objects");
    let parsed: Vec<JobRecord> = records
        .iter()
        .map(|r| JobRecord::from_json(r).unwrap())
        .collect();
    let mut bytes: HashMap<String, Vec<u8>> = HashMap::new();
    for r in &parsed {
        if let Job::Sd { output, .. } = &r.job {
            let k = output.image_key.as_str().to_owned();
            bytes
                .entry(k.clone())
                .or_insert_with(|| std::fs::read(objects.join(&k)).unwrap());
        }
    }
    let checker = Checker::new(rules.clone()).expect("rules with a digest");
    let mut stream = StreamState::new();
    let start = Instant::now();
    // In batches of the worker's size, so memory stays bounded as in the worker.
    for chunk in parsed.chunks(500) {
        let mut jobs: Vec<(&JobRecord, Fetched)> = chunk
            .iter()
            .filter_map(|r| match &r.job {
                Job::Sd { output, .. } => Some((
                    r,
                    Fetched {
                        output: Some(Object::Found(bytes[output.image_key.as_str()].clone())),
                        ..Fetched::default()
                    },
                )),
                Job::Llm { .. } => None,
            })
            .collect();
        if parallel {
            pipeline::prepare_all(rules, jobs.iter_mut().map(|(r, f)| (*r, f)));
        }
        for (r, fetched) in &jobs {
            std::hint::black_box(checker.evaluate(r, fetched, Stream::Live(&mut stream)));
        }
    }
    parsed.len() as f64 / start.elapsed().as_secs_f64()
}

/// CPU seconds used so far by the processes of each service and by this process
/// (which runs the worker), from `/proc` (Linux).
fn cpu_seconds() -> BTreeMap<&'static str, f64> {
    let tick = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    let me = std::process::id().to_string();
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... utime stime: fields 14 and 15, counted after the comm.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let comm = head.split_once(" (").map_or("", |(_, c)| c);
        let who = match comm {
            _ if pid == me => "worker",
            c if c.starts_with("tansu") => "tansu",
            c if c.starts_with("garage") => "garage",
            c if c.starts_with("postgres") => "postgres",
            _ => continue,
        };
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
        *out.entry(who).or_default() += ticks / tick;
    }
    out
}

/// S3 requests garage has served so far, by API endpoint, from its Prometheus endpoint
/// on the admin port (open: `scripts/services.sh` sets no metrics token). Both the
/// worker's object reads and the broker's log (tansu keeps it in garage) count here.
async fn garage_requests() -> BTreeMap<String, f64> {
    let port = std::env::var("PROCTOR_GARAGE_ADMIN_PORT").unwrap_or_else(|_| "3903".into());
    let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return BTreeMap::new();
    };
    let text = resp.text().await.unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("api_s3_request_counter{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let endpoint = labels
            .split(',')
            .find_map(|l| l.strip_prefix("api_endpoint=\""))
            .map_or("?", |e| e.trim_end_matches('"'));
        *out.entry(endpoint.to_owned()).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// garage's S3 requests since `before`, by endpoint, leaving out those with none.
async fn garage_requests_since(before: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    garage_requests()
        .await
        .into_iter()
        .map(|(e, n)| {
            let since = n - before.get(&e).copied().unwrap_or(0.0);
            (e, since)
        })
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

fn format_requests(requests: &[(String, f64)]) -> String {
    let each: Vec<String> = requests
        .iter()
        .map(|(e, n)| format!("{e} {n:.0}"))
        .collect();
    each.join(", ")
}

/// What one backlog run measured.
struct Backlog {
    /// Jobs over the time from the worker's start to the last verdict's commit.
    overall: f64,
    /// The middle 90 % of the verdicts over the time between their commits: the rate
    /// once the worker has joined its group and before the backlog runs dry.
    sustained: f64,
    /// Wall seconds per stage of the worker's batches.
    stages: Vec<(&'static str, f64)>,
    /// CPU seconds per process over the run.
    cpu: Vec<(&'static str, f64)>,
    /// garage's S3 requests over the run, by endpoint.
    s3: Vec<(String, f64)>,
    wall: f64,
}

impl std::fmt::Display for Backlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|(s, t)| format!("{s} {:.0}%", 100.0 * t / self.wall))
            .collect();
        let cpu: Vec<String> = self
            .cpu
            .iter()
            .map(|(p, t)| format!("{p} {:.2}", t / self.wall))
            .collect();
        write!(
            f,
            "          worker wall time by stage: {}\n          cores busy per process: {}\n          garage S3 requests: {}",
            stages.join(", "),
            cpu.join(", "),
            format_requests(&self.s3)
        )
    }
}

const STAGES: [&str; 7] = [
    "consume", "parse", "lookup", "fetch", "judge", "write", "produce",
];

/// Starts a screen worker on a backlog of `records` (job ids `bench-<tag>-*`) and
/// measures it until the last verdict is committed.
async fn screen_backlog(h: &Harness, records: &[Vec<u8>], tag: &str, rules: &Rules) -> Backlog {
    h.produce_jobs(records).await;
    let before = h.count("SELECT count(*) FROM verdicts").await;
    let cpu_before = cpu_seconds();
    let s3_before = garage_requests().await;
    let start = Instant::now();
    let worker = h.start_worker("screen", rules.clone()).await;
    let want = before + records.len() as i64;
    h.wait_for("the backlog", Duration::from_secs(600), || async {
        h.count("SELECT count(*) FROM verdicts").await >= want
    })
    .await;
    let wall = start.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds();
    let s3 = garage_requests_since(&s3_before).await;
    let stages = STAGES
        .iter()
        .map(|s| (*s, worker.ctx.metrics.stage(s)))
        .collect();
    worker.stop().await;
    let (t5, t95): (f64, f64) = sqlx::query_as(
        "SELECT extract(epoch FROM percentile_disc(0.05) WITHIN GROUP (ORDER BY judged_at))::float8,
                extract(epoch FROM percentile_disc(0.95) WITHIN GROUP (ORDER BY judged_at))::float8
         FROM verdicts WHERE job_id LIKE $1",
    )
    .bind(format!("bench-{tag}-%"))
    .fetch_one(h.store.pool())
    .await
    .unwrap();
    Backlog {
        overall: records.len() as f64 / wall,
        sustained: 0.9 * records.len() as f64 / (t95 - t5),
        stages,
        cpu: cpu_after
            .iter()
            .map(|(p, t)| (*p, t - cpu_before.get(p).copied().unwrap_or(0.0)))
            .collect(),
        s3,
        wall,
    }
}

/// Produces `n` jobs at `rate`/s through `producer` (the job service's) to a running
/// worker; returns sorted latencies in ms from the broker's acknowledgement of each
/// record to its verdict's commit.
async fn latencies(
    h: &Harness,
    producer: &kafka::Producer,
    records: &[Vec<u8>],
    tag: &str,
    rate: f64,
    rules: &Rules,
) -> Vec<f64> {
    let worker = h.start_worker("screen", rules.clone()).await;
    // Wait until the worker holds its partitions and has judged a first job: the
    // latency of a running worker, not of the group join (which took the stopped
    // worker's session timeout on tansu 0.6, seconds that a fixed sleep missed).
    let joining = Instant::now();
    let tag = format!("warm-{tag}");
    let warm = clones("llm", 1, &tag);
    h.produce_jobs(&warm).await;
    let query = format!("SELECT count(*) FROM verdicts WHERE job_id = 'bench-{tag}-0'");
    h.wait_for("a first verdict", Duration::from_secs(120), || async {
        h.count(&query).await == 1
    })
    .await;
    println!(
        "          the paced worker judged its first job {:.1} s after its start",
        joining.elapsed().as_secs_f64()
    );
    let mut acked: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let s3_before = garage_requests().await;
    let start = Instant::now();
    let first_send = chrono::Utc::now();
    let per_tick = (rate / 100.0).max(1.0) as usize;
    // Every tick sends on time, whether or not earlier ticks' acknowledgements are in:
    // a job service does not wait for one send before the next.
    let ticks = records
        .chunks(per_tick)
        .enumerate()
        .map(|(tick, chunk)| async move {
            let due = start + Duration::from_millis(10 * tick as u64);
            tokio::time::sleep_until(due.into()).await;
            h.produce_jobs_via(producer, chunk).await;
            (chunk, chrono::Utc::now())
        });
    for (chunk, now) in futures::future::join_all(ticks).await {
        for r in chunk {
            let v: serde_json::Value = serde_json::from_slice(r).unwrap();
            acked.insert(v["job_id"].as_str().unwrap().to_owned(), now);
        }
    }
    let produced = start.elapsed().as_secs_f64();
    let ids: Vec<String> = acked.keys().cloned().collect();
    h.wait_for("the paced jobs", Duration::from_secs(120), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM verdicts WHERE job_id = ANY($1)")
            .bind(&ids)
            .fetch_one(h.store.pool())
            .await
            .unwrap();
        n == ids.len() as i64
    })
    .await;
    println!(
        "          garage S3 requests while paced: {}",
        format_requests(&garage_requests_since(&s3_before).await)
    );
    let stages: Vec<String> = STAGES
        .iter()
        .map(|s| format!("{s} {:.1}s", worker.ctx.metrics.stage(s)))
        .collect();
    println!(
        "          paced worker stage seconds: {}",
        stages.join(", ")
    );
    worker.stop().await;
    let rows: Vec<(String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT job_id, judged_at FROM verdicts WHERE job_id = ANY($1)")
            .bind(&ids)
            .fetch_all(h.store.pool())
            .await
            .unwrap();
    let since =
        |at: &chrono::DateTime<chrono::Utc>| (*at - first_send).num_milliseconds() as f64 / 1000.0;
    let (first, last) = rows
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, at)| {
            (a.min(since(at)), b.max(since(at)))
        });
    println!(
        "          paced jobs acknowledged over {produced:.1} s; verdicts committed from {first:.1} s to {last:.1} s after the first send"
    );
    let mut ms: Vec<f64> = rows
        .iter()
        .map(|(id, at)| (*at - acked[id]).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // The pipeline's warnings (a broker that skipped offsets, a stalled partition) on
    // stderr: they explain a slow run.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n_llm, n_sd) = (
        args.first().copied().unwrap_or(50_000),
        args.get(1).copied().unwrap_or(2_000),
    );
    let rules = Rules::embedded().unwrap();
    let h = Harness::new("bench").await;
    let objects = support::repo().join("fixtures/audit-demo/objects");
    h.upload_dir(&objects, &h.settings.s3.jobs_bucket, "").await;

    let llm = clones("llm", n_llm, "llm");
    let sd = clones("sd", n_sd, "sd");
    println!(
        "bench-pipeline: {n_llm} LLM jobs (inline text), {n_sd} SD jobs (S3 images); one screen worker"
    );
    let (produce, consume) = broker_rate(&h, &llm).await;
    println!(
        "baseline  broker alone (same records, the workers' producer): produce {produce:.0}/s, consume {consume:.0}/s"
    );
    let check_one = image_check_rate(&sd, &rules, false);
    println!(
        "baseline  image check alone (in memory, one thread):        {check_one:.0} SD jobs/s"
    );
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // The parallel baseline moved by a quarter between runs on this machine: it is
    // measured three times, twice before the pipeline runs and once after, and the
    // median is the one compared.
    let mut checks = vec![
        image_check_rate(&sd, &rules, true),
        image_check_rate(&sd, &rules, true),
    ];

    let b = screen_backlog(&h, &llm, "llm", &rules).await;
    let llm_rate = b.sustained;
    println!(
        "pipeline  LLM jobs, backlog through screen:                 {llm_rate:.0} jobs/s sustained, {:.0}/s from the worker's start ({:.2}x broker consume; target >= 5000/s: {})\n{b}",
        b.overall,
        llm_rate / consume,
        if llm_rate >= 5000.0 { "met" } else { "MISSED" }
    );
    let b = screen_backlog(&h, &sd, "sd", &rules).await;
    let sd_rate = b.sustained;
    checks.push(image_check_rate(&sd, &rules, true));
    let runs: Vec<String> = checks.iter().map(|c| format!("{c:.0}")).collect();
    checks.sort_by(f64::total_cmp);
    let check = checks[1];
    println!(
        "baseline  image check alone (in memory, decoding on {cores} cores): {check:.0} SD jobs/s (median of {}/s)",
        runs.join(", ")
    );
    println!(
        "pipeline  SD jobs, backlog through screen:                  {sd_rate:.0} jobs/s sustained, {:.0}/s from the worker's start ({:.2}x the check alone on {cores} cores, target >= 0.80x: {}; {:.2}x on one thread)\n{b}",
        b.overall,
        sd_rate / check,
        if sd_rate >= 0.8 * check {
            "met"
        } else {
            "MISSED"
        },
        sd_rate / check_one,
    );
    let paced_rate = (llm_rate * 0.5).min(2000.0);
    // Twice: with the workers' own producer settings (5 ms linger), and as a job
    // service that lingers 50 ms. tansu 0.6 stores each produced batch as one S3
    // object and reads them back one at a time, and garage answers a GET of an object
    // between about 3 and 64 KB only after a 40 ms delayed ACK (its S3 server does not
    // set TCP_NODELAY): the batch size the job service writes bounds how fast a worker
    // can read.
    for (name, linger) in [
        ("the workers' producer, linger 5 ms", 5),
        ("a job service lingering 50 ms", 50),
    ] {
        let producer =
            kafka::producer_lingering(&h.settings.kafka, Duration::from_millis(linger)).unwrap();
        let tag = format!("paced{linger}");
        let paced = clones("llm", (paced_rate * 5.0) as usize, &tag);
        let ms = latencies(&h, &producer, &paced, &tag, paced_rate, &rules).await;
        println!(
            "latency   LLM jobs paced at {paced_rate:.0}/s for 5 s through {name}, broker ack -> verdict commit: p50 {:.1} ms, p99 {:.1} ms ({} jobs; min {:.1}, p10 {:.1}, p90 {:.1}, max {:.1})",
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms.len(),
            percentile(&ms, 0.0),
            percentile(&ms, 0.1),
            percentile(&ms, 0.9),
            percentile(&ms, 1.0),
        );
    }
    h.drop_db().await;
}

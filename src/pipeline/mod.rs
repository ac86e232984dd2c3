//! The pipeline workers around the judging library: `screen`, `rerun`, `judge` and
//! `publish`. Each is a function here and a thin binary in `workers/`, so tests run
//! the same code in-process or as child processes.
//!
//! ```text
//! proctor.jobs ─▶ screen ─▶ Postgres (screen verdicts) ─▶ judge ─▶ slashes + outbox ─▶ publish ─▶ ledger.slashes
//!                   │  └──▶ proctor.dlq (broken records, missing objects)        ▲
//!                   └─────▶ proctor.rerun ─▶ rerun ─▶ Postgres (rerun verdicts) ──┘
//! ```
//!
//! Delivery semantics are written at the top of [`crate::kafka`].

pub mod judge;
pub mod publish;
pub mod rerun;
pub mod screen;

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{BorrowedMessage, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;

use crate::checks::{self, Judge};
use crate::kafka::{self, Backoff};
use crate::objects::ObjectStore;
use crate::record::JobRecord;
use crate::rules::Rules;
use crate::settings::Settings;
use crate::store::Store;
use crate::telemetry::{Health, Metrics};

/// Set once the worker must stop. Cloned into every task that waits.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Stops the workers holding the matching [`Shutdown`].
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Shutdown(rx))
    }

    /// A shutdown set by SIGTERM or SIGINT.
    pub fn on_signals() -> Shutdown {
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => tracing::info!("SIGTERM: finishing the batch in flight, then stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing the batch in flight, then stopping"),
            }
            trigger.stop();
        });
        shutdown
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// The worker was asked to stop while it waited; the batch in hand is abandoned and
/// will be redelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// What every worker holds.
pub struct Context {
    pub worker: &'static str,
    pub settings: Settings,
    pub rules: Rules,
    pub store: Store,
    pub objects: ObjectStore,
    producer: std::sync::Mutex<FutureProducer>,
    pub metrics: Metrics,
    pub health: Health,
    pub shutdown: Shutdown,
}

impl Context {
    /// Connects to Postgres (retrying until it answers or the worker is stopped), runs
    /// the migrations, creates missing topics, and starts `/metrics` and `/healthz`.
    pub async fn start(
        worker: &'static str,
        settings: Settings,
        rules: Rules,
        shutdown: Shutdown,
    ) -> anyhow::Result<Arc<Context>> {
        settings.require_secrets()?;
        let metrics = Metrics::new(worker);
        let health = Health::new(worker);
        let addr = crate::telemetry::serve(settings.http.bind, metrics.clone(), health.clone())
            .await
            .with_context(|| format!("cannot listen on {}", settings.http.bind))?;
        tracing::info!(worker, %addr, "serving /metrics and /healthz");
        let url = settings.database.url.expose().to_owned();
        let max = settings.database.max_connections;
        let mut stop = shutdown.clone();
        let store = retry_until(
            &health,
            &metrics,
            &mut stop,
            max_backoff(&settings),
            "postgres",
            || Store::connect_with(&url, max),
        )
        .await
        .map_err(|_| anyhow::anyhow!("stopped before Postgres answered"))?;
        store
            .migrate()
            .await
            .context("database migrations failed")?;
        let k = &settings.kafka;
        let topics = [
            (k.jobs_topic.as_str(), 4),
            (k.rerun_topic.as_str(), 4),
            (k.dlq_topic.as_str(), 1),
            (k.slashes_topic.as_str(), 4),
        ];
        retry_until(
            &health,
            &metrics,
            &mut stop,
            max_backoff(&settings),
            "kafka-admin",
            || kafka::ensure_topics(&k.brokers, &topics),
        )
        .await
        .map_err(|_| anyhow::anyhow!("stopped before the broker answered"))?;
        let producer = kafka::producer(k).context("cannot create the Kafka producer")?;
        let objects = ObjectStore::new(&settings.s3);
        Ok(Arc::new(Context {
            worker,
            settings,
            rules,
            store,
            objects,
            producer: std::sync::Mutex::new(producer),
            metrics,
            health,
            shutdown,
        }))
    }

    /// The producer. After a fatal producer error (the idempotent producer gives up
    /// on a partition's sequence; seen with tansu 0.6 under load) it is replaced, so a
    /// retried send goes through a fresh producer.
    pub fn producer(&self) -> FutureProducer {
        let mut p = self
            .producer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(fatal) = rdkafka::producer::Producer::client(&*p).fatal_error() {
            tracing::warn!(error = ?fatal, "producer failed fatally; creating a new one");
            match kafka::producer(&self.settings.kafka) {
                Ok(fresh) => *p = fresh,
                Err(e) => tracing::error!(error = %e, "cannot create a producer"),
            }
        }
        p.clone()
    }

    pub fn max_backoff(&self) -> Duration {
        max_backoff(&self.settings)
    }

    /// Runs `op` until it succeeds, backing off on every failure; gives up only when the
    /// worker is stopped.
    pub async fn retry<T, E, F, Fut>(&self, what: &'static str, op: F) -> Result<T, Stopped>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut stop = self.shutdown.clone();
        retry_until(
            &self.health,
            &self.metrics,
            &mut stop,
            self.max_backoff(),
            what,
            op,
        )
        .await
    }

    /// Sleeps, or returns early when the worker is stopped.
    pub async fn idle(&self, d: Duration) -> Result<(), Stopped> {
        let mut stop = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = stop.wait() => Err(Stopped),
        }
    }
}

fn max_backoff(settings: &Settings) -> Duration {
    Duration::from_millis(settings.pipeline.max_backoff_ms)
}

async fn retry_until<T, E, F, Fut>(
    health: &Health,
    metrics: &Metrics,
    stop: &mut Shutdown,
    max: Duration,
    what: &'static str,
    mut op: F,
) -> Result<T, Stopped>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(max);
    loop {
        match op().await {
            Ok(v) => {
                if backoff.attempts > 0 {
                    tracing::info!(what, attempts = backoff.attempts, "recovered");
                    health.ok();
                }
                return Ok(v);
            }
            Err(e) => {
                let delay = backoff.delay();
                tracing::warn!(what, error = %e, retry_in_ms = delay.as_millis() as u64, "transient failure");
                health.degraded(&format!("{what}: {e}"));
                metrics
                    .retries
                    .get_or_create(&vec![("what", what.to_owned())])
                    .inc();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait() => return Err(Stopped),
                }
            }
        }
    }
}

/// Guards against a broker that skips offsets. Measured with tansu 0.6 in the crash
/// test: a consumer resuming at a committed offset inside a produced record batch is
/// handed the *next* batch (Kafka returns the batch containing the offset), so the rest
/// of the containing batch (23 acknowledged records there) is never delivered. Job
/// topics have no transactions and no compaction, so every offset holds a message and
/// a jump is the broker's error. The partition is sought back before the missing
/// offset (64, then 128, 256, ... earlier, until a fetch covers it), messages before
/// the expected offset are dropped as already processed, and the jump is logged.
#[derive(Debug, Default)]
pub struct Continuity {
    expected: std::collections::HashMap<(String, i32), i64>,
    /// Consecutive jumps per partition: how far back the next seek goes.
    retreats: std::collections::HashMap<(String, i32), u32>,
    /// Gaps found so far (for logs and tests).
    pub gaps: u64,
}

impl Continuity {
    /// The offset the partition should continue at: the next after the last message
    /// seen, or, for a partition not seen yet, its committed offset.
    fn expected(&mut self, consumer: &StreamConsumer, topic: &str, partition: i32) -> Option<i64> {
        let key = (topic.to_owned(), partition);
        if let Some(e) = self.expected.get(&key) {
            return Some(*e);
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let committed = tokio::task::block_in_place(|| {
            rdkafka::consumer::Consumer::committed_offsets(consumer, tpl, Duration::from_secs(10))
        })
        .ok()?;
        let offset = committed.find_partition(topic, partition)?.offset();
        match offset {
            rdkafka::Offset::Offset(n) => {
                self.expected.insert(key, n);
                Some(n)
            }
            _ => None,
        }
    }

    /// Keeps the messages that continue their partitions without a jump.
    pub fn filter(
        &mut self,
        consumer: &StreamConsumer,
        batch: Vec<OwnedMessage>,
    ) -> Vec<OwnedMessage> {
        use rdkafka::Message;
        let mut halted: std::collections::HashSet<(String, i32)> = std::collections::HashSet::new();
        let mut kept = Vec::with_capacity(batch.len());
        for m in batch {
            let key = (m.topic().to_owned(), m.partition());
            if halted.contains(&key) {
                continue;
            }
            match self.expected(consumer, m.topic(), m.partition()) {
                Some(want) if m.offset() > want => {
                    self.gaps += 1;
                    let n = self.retreats.entry(key.clone()).or_default();
                    let back = 64i64 << (*n).min(20);
                    *n += 1;
                    let to = (want - back).max(0);
                    tracing::warn!(
                        topic = m.topic(),
                        partition = m.partition(),
                        expected = want,
                        got = m.offset(),
                        seek_to = to,
                        "the broker skipped offsets; seeking back"
                    );
                    if let Err(e) = rdkafka::consumer::Consumer::seek(
                        consumer,
                        m.topic(),
                        m.partition(),
                        rdkafka::Offset::Offset(to),
                        Duration::from_secs(10),
                    ) {
                        tracing::warn!(error = %e, "seek failed; the partition's next owner resumes from its commit");
                    }
                    halted.insert(key);
                }
                // Processed already: by this worker, or by the group before the commit.
                Some(want) if m.offset() < want => {}
                _ => {
                    self.retreats.remove(&key);
                    self.expected.insert(key, m.offset() + 1);
                    kept.push(m);
                }
            }
        }
        kept
    }
}

/// Waits for a first message, then takes more for up to `wait` or until `max` are held.
/// Consumer errors (a broker that is down) are logged and waited out.
pub async fn next_batch(
    ctx: &Context,
    consumer: &StreamConsumer,
    max: usize,
) -> Result<Vec<OwnedMessage>, Stopped> {
    let p = &ctx.settings.pipeline;
    let mut stop = ctx.shutdown.clone();
    let mut backoff = Backoff::new(ctx.max_backoff());
    let first = loop {
        let got: Result<BorrowedMessage<'_>, _> = tokio::select! {
            m = consumer.recv() => m,
            _ = stop.wait() => return Err(Stopped),
        };
        match got {
            Ok(m) => break m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                ctx.health.degraded(&format!("kafka: {e}"));
                ctx.idle(backoff.delay()).await?;
            }
        }
    };
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(p.batch_wait_ms);
    while batch.len() < max.max(1) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                break;
            }
            Err(_) => break,
        }
    }
    Ok(batch)
}

/// Command-line arguments every worker takes.
#[derive(Debug, clap::Parser)]
pub struct WorkerArgs {
    /// A settings file layered over the defaults (config/default.toml).
    #[arg(long, env = "PROCTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// A rules folder instead of the rules compiled in.
    #[arg(long, env = "PROCTOR_RULES")]
    pub rules: Option<PathBuf>,
}

/// The body of every worker binary: logs, settings, rules, signals, then `work`.
pub async fn main<F, Fut>(worker: &'static str, work: F) -> std::process::ExitCode
where
    F: FnOnce(Arc<Context>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use clap::Parser;
    crate::telemetry::init_logging();
    let args = WorkerArgs::parse();
    let result = async {
        let settings = Settings::load(args.config.as_deref())?;
        let rules = match &args.rules {
            Some(dir) => Rules::load_dir(dir)?,
            None => Rules::embedded()?,
        };
        tracing::info!(worker, rules = &rules.digest()[..16], "starting");
        let ctx = Context::start(worker, settings, rules, Shutdown::on_signals()).await?;
        let outcome = work(ctx.clone()).await;
        ctx.health.stopping();
        outcome
    }
    .await;
    match result {
        Ok(()) => {
            tracing::info!(worker, "stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(worker, error = format!("{e:#}"), "failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the named worker on the runtime (tests run several in one process).
pub fn spawn(name: &str, ctx: Arc<Context>) -> Option<tokio::task::JoinHandle<anyhow::Result<()>>> {
    Some(match name {
        "screen" => tokio::spawn(screen::run(ctx)),
        "rerun" => tokio::spawn(rerun::run(ctx)),
        "judge" => tokio::spawn(judge::run(ctx)),
        "publish" => tokio::spawn(publish::run(ctx)),
        _ => return None,
    })
}

/// Decodes and fingerprints the jobs' outputs on every core ([`checks::prepare`]): the
/// costly part of judging, which does not depend on order. A panic here leaves that
/// output undecoded; [`evaluate_guarded`] then decodes it again under its own guard.
pub fn prepare_all<'a>(
    rules: &crate::rules::Rules,
    jobs: impl Iterator<Item = (&'a JobRecord, &'a mut checks::Fetched)> + Send,
) {
    use rayon::iter::{ParallelBridge, ParallelIterator};
    jobs.par_bridge().for_each(|(record, fetched)| {
        let _ = catch_unwind(AssertUnwindSafe(|| checks::prepare(rules, record, fetched)));
    });
}

/// [`Judge::evaluate`], with a panic turned into its message. Checks are written never
/// to panic on miner data; should one still do so, that job becomes a `judge_panicked`
/// dead letter instead of a dead worker or a job silently dropped from its batch. The
/// judge's only state is the bounded reuse index, which a panic can at worst leave
/// without this job's entry.
pub fn evaluate_guarded(
    judge: &mut Judge,
    record: &JobRecord,
    fetched: &checks::Fetched,
) -> Result<checks::JobVerdict, String> {
    catch_unwind(AssertUnwindSafe(|| judge.evaluate(record, fetched))).map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        tracing::error!(job_id = %record.job_id, panic = %why, "a check panicked");
        format!("a check panicked: {why}")
    })
}

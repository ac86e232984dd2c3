//! What every worker holds ([`Context`]), and the retry loop around each service call.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::{Shutdown, Stopped};
use crate::checks::Object;
use crate::kafka::{self, Backoff, DeadLetter};
use crate::objects::ObjectStore;
use crate::record::{Job, JobRecord};
use crate::rules::Rules;
use crate::settings::{KafkaCompat, Settings};
use crate::store::Store;
use crate::telemetry::{Health, Metrics};

/// What every worker holds.
pub struct Context {
    pub worker: &'static str,
    pub settings: Settings,
    pub rules: Rules,
    pub store: Store,
    pub objects: ObjectStore,
    producer: std::sync::Mutex<kafka::Producer>,
    pub metrics: Metrics,
    pub health: Health,
    pub shutdown: Shutdown,
}

impl Context {
    /// Fetches the job's output object, if it has one, under the rules' size bound.
    /// `Err(Ok(letter))`: the object is missing for good; `Err(Err(Stopped))`: stopping.
    pub async fn fetch_output(
        &self,
        record: &JobRecord,
    ) -> Result<Option<Object>, Result<DeadLetter, Stopped>> {
        let ctx = self;
        let rules = &ctx.rules;
        let (key, limit) = match &record.job {
            Job::Sd { output, .. } => {
                (Some(&output.image_key), rules.checks.image.max_object_bytes)
            }
            Job::Llm { output, .. } => (output.text_key.as_ref(), rules.checks.llm.max_text_bytes),
        };
        let Some(key) = key else {
            return Ok(None);
        };
        let bucket = &ctx.settings.s3.jobs_bucket;
        let mut backoff = kafka::Backoff::new(ctx.max_backoff());
        loop {
            let got = ctx
                .retry_refusable(
                    "s3",
                    |e: &crate::objects::ObjectError| e.refused,
                    || ctx.objects.get_bounded(bucket, key.as_str(), limit),
                )
                .await
                .map_err(Err)?;
            let got = match got {
                Ok(got) => got,
                Err(e) => {
                    return Err(Ok(DeadLetter {
                        reason: "object_refused",
                        error: e.to_string(),
                    }));
                }
            };
            match got {
                crate::objects::Got::Found(bytes) => return Ok(Some(Object::Found(bytes))),
                crate::objects::Got::NotFound => {
                    if backoff.attempts + 1 >= ctx.settings.pipeline.missing_object_attempts {
                        return Err(Ok(DeadLetter {
                            reason: "object_missing",
                            error: format!(
                                "s3://{bucket}/{key} does not exist ({} reads)",
                                backoff.attempts + 1
                            ),
                        }));
                    }
                    ctx.idle(backoff.delay()).await.map_err(Err)?;
                }
            }
        }
    }

    /// Connects to Postgres (retrying until it answers or the worker is stopped), runs
    /// the migrations, creates missing topics, and starts `/metrics` and `/healthz`.
    pub async fn start(
        worker: &'static str,
        settings: Settings,
        rules: Rules,
        shutdown: Shutdown,
    ) -> anyhow::Result<Arc<Context>> {
        settings.require_secrets(worker)?;
        if !settings.kafka.authenticates() && settings.kafka.compat == KafkaCompat::None {
            tracing::warn!(
                worker,
                security_protocol = settings.kafka.security_protocol.name(),
                "the broker does not know who this worker is: anyone who reaches it can produce job records and slash events (docs/OPERATIONS.md, Kafka security)"
            );
        }
        let metrics = Metrics::new(worker);
        let health = Health::new(worker);
        let addr = crate::telemetry::serve(settings.http.bind, metrics.clone(), health.clone())
            .await
            .with_context(|| format!("cannot listen on {}", settings.http.bind))?;
        tracing::info!(worker, %addr, "serving /metrics and /healthz");
        let url = settings.database.url.expose().to_owned();
        let max = settings.database.max_connections;
        let mut stop = shutdown.clone();
        // A stop while starting ends the start at once, the attempt in flight too
        // (nothing is held yet): the worker exits as stopped, not failed.
        let mut interrupt = shutdown.clone();
        let store = tokio::select! {
            r = retry_until(
                &health,
                &metrics,
                &mut stop,
                max_backoff(&settings),
                "postgres",
                |_| false,
                || Store::connect_with(&url, max),
            ) => r,
            _ = interrupt.wait() => Err(Stopped),
        }?
        .map_err(anyhow::Error::from)?;
        store
            .migrate()
            .await
            .context("database migrations failed")?;
        let store = if settings.pipeline.shadow {
            tracing::warn!(
                worker,
                "shadow mode: decisions go to shadow_decisions; nothing is slashed, flagged or published"
            );
            store.shadow()
        } else {
            store
        };
        let k = &settings.kafka;
        let topics = [
            (k.jobs_topic.as_str(), 4),
            (k.rerun_topic.as_str(), 4),
            (k.dlq_topic.as_str(), 1),
            (k.slashes_topic.as_str(), 4),
            (k.audit_topic.as_str(), 1),
        ];
        tokio::select! {
            r = retry_until(
                &health,
                &metrics,
                &mut stop,
                max_backoff(&settings),
                "kafka-admin",
                |_| false,
                || kafka::ensure_topics(k, &topics),
            ) => r,
            _ = interrupt.wait() => Err(Stopped),
        }?
        .map_err(anyhow::Error::from)?;
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
    pub fn producer(&self) -> kafka::Producer {
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
        // Nothing is refused here, so the inner error never comes back.
        self.retry_refusable(what, |_| false, op)
            .await?
            .map_err(|_| Stopped)
    }

    /// Like [`Context::retry`], but an error `refused` says no retry can ever fix (the
    /// service refuses the input itself) comes back at once as `Ok(Err(e))`.
    pub async fn retry_refusable<T, E, F, Fut>(
        &self,
        what: &'static str,
        refused: impl Fn(&E) -> bool,
        op: F,
    ) -> Result<Result<T, E>, Stopped>
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
            refused,
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

/// Runs `op` until it succeeds or fails in a way `refused` says no retry can fix
/// (`Ok(Err(e))`); `Err(Stopped)` once the worker is stopped.
#[allow(clippy::too_many_arguments)]
async fn retry_until<T, E, F, Fut>(
    health: &Health,
    metrics: &Metrics,
    stop: &mut Shutdown,
    max: Duration,
    what: &'static str,
    refused: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<Result<T, E>, Stopped>
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
                return Ok(Ok(v));
            }
            Err(e) if refused(&e) => {
                tracing::warn!(what, error = %e, "refused: the input itself can never succeed");
                metrics
                    .refusals
                    .get_or_create(&vec![("what", what.to_owned())])
                    .inc();
                return Ok(Err(e));
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

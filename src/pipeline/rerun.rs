//! `rerun`: consumes `proctor.rerun`, obtains the reference output for each job,
//! judges the job again with every check, and records the `rerun` verdict, which
//! supersedes the screen verdict when the judge decides.
//!
//! The reference comes from a [`ReferenceRunner`]: [`HostRunner`] dispatches each job
//! to the reference hosts of the settings ([`crate::reference::pool`]): SD jobs to a
//! txt2img host, LLM jobs to a scorer (vLLM, `proctor serve-reference`) or to the candle
//! scorer in this process. It writes what a host returned to
//! `reference/<job_id>/{image.png|image.jpg, scores.json}` in the reference bucket before
//! the job is judged, so audit, review and replay read the same bytes. A job whose model
//! no host serves reads those files as another system left them ([`S3Reference`]), and
//! so does every challenge answer (`challenge.json`).
//!
//! Jobs of a batch are dispatched canaries and at-risk miners first.
//!
//! The `reuse` outcome is the screen stage's: only the screen worker sees the stream of
//! outputs in order, so the re-run keeps its answer instead of judging reuse again.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tracing::Instrument;

use super::screen::fetch_output;
use super::{Context, Stopped};
use crate::checks::llm::TokenScores;
use crate::checks::model_file::ChallengeExpectation;
use crate::checks::{Checker, Fetched, JobVerdict, Object, Stream, Verdict, output_text};
use crate::kafka::{self, DeadLetter, Offsets, Origin};
use crate::llm::Scorer;
use crate::llm::miner;
use crate::llm::panel::Panel;
use crate::llm::service::ScoringService;
use crate::objects::{Got, ObjectError, ObjectStore};
use crate::record::{Job, JobRecord};
use crate::reference::pool::{Drift, Output, Pool, Priority, Work};
use crate::rules::Rules;
use crate::settings::{HostKind, HostSettings};
use crate::store::Stage;

/// What a reference run produced for one job. Every part is optional: a job without a
/// fixed seed has no comparable image, an SD job has no token scores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reference {
    pub image: Option<Vec<u8>>,
    pub scores: Option<TokenScores>,
    pub challenge: Option<ChallengeExpectation>,
    /// Why a job sent to reference hosts has no image or scores.
    pub note: Option<String>,
    /// Reference GPU-seconds the hosts spent on the job.
    pub seconds: Option<f64>,
    /// Reference-vs-reference comparisons made on the job.
    pub drift: Vec<Drift>,
}

/// Why a reference output could not be had.
#[derive(Debug, Clone, PartialEq)]
pub enum ReferenceError {
    /// The reference side is down or failing (a reference GPU, the object store): retried;
    /// it delays the verdict and never produces one.
    Unavailable(String),
    /// The reference side refuses this job's request for what it is (an object store's
    /// 400-class answer): no retry can help, so the job becomes a `reference_refused`
    /// dead letter and the partition moves on.
    Refused(String),
}

impl std::fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReferenceError::Unavailable(e) => write!(f, "reference unavailable: {e}"),
            ReferenceError::Refused(e) => write!(f, "reference refused: {e}"),
        }
    }
}

impl From<ObjectError> for ReferenceError {
    fn from(e: ObjectError) -> Self {
        if e.refused {
            ReferenceError::Refused(e.to_string())
        } else {
            ReferenceError::Unavailable(e.to_string())
        }
    }
}

/// Produces reference outputs.
pub trait ReferenceRunner: Send + Sync + 'static {
    /// `output` is the miner's output as fetched from S3, where the record points to
    /// one (an LLM job's text when it is not inline).
    fn reference(
        &self,
        record: &JobRecord,
        output: Option<&Object>,
        priority: Priority,
    ) -> impl Future<Output = Result<Reference, ReferenceError>> + Send;
}

/// Reference outputs a reference host uploaded to S3.
pub struct S3Reference {
    pub objects: ObjectStore,
    pub bucket: String,
    pub max_image_bytes: u64,
}

/// Token-score and challenge files are small; anything larger is not ours.
const MAX_REFERENCE_JSON_BYTES: u64 = 64 << 20;

impl S3Reference {
    async fn get(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, ObjectError> {
        Ok(
            match self.objects.get_bounded(&self.bucket, key, limit).await? {
                Got::Found(b) if b.len() as u64 <= limit => Some(b),
                Got::Found(_) => {
                    tracing::warn!(key, "reference object over its size bound, ignored");
                    None
                }
                Got::NotFound => None,
            },
        )
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, ObjectError> {
        Ok(self.get(key, MAX_REFERENCE_JSON_BYTES).await?.and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| tracing::warn!(key, error = %e, "reference file does not parse, ignored"))
                .ok()
        }))
    }

    fn prefix(record: &JobRecord) -> String {
        format!("reference/{}", record.job_id.as_str())
    }

    /// The reference answer to the job's challenge, for any kind of job; none is
    /// looked for when the miner answered no challenge (the check runs only then).
    async fn challenge(
        &self,
        record: &JobRecord,
    ) -> Result<Option<ChallengeExpectation>, ReferenceError> {
        if record.challenge.is_none() {
            return Ok(None);
        }
        Ok(self
            .json(&format!("{}/challenge.json", Self::prefix(record)))
            .await?)
    }
}

impl ReferenceRunner for S3Reference {
    /// What the job's kind compares: the image for SD, the scores for LLM.
    async fn reference(
        &self,
        record: &JobRecord,
        _: Option<&Object>,
        _: Priority,
    ) -> Result<Reference, ReferenceError> {
        let prefix = Self::prefix(record);
        let mut reference = Reference {
            challenge: self.challenge(record).await?,
            ..Reference::default()
        };
        match &record.job {
            Job::Sd { .. } => {
                for name in ["image.png", "image.jpg"] {
                    reference.image = self
                        .get(&format!("{prefix}/{name}"), self.max_image_bytes)
                        .await?;
                    if reference.image.is_some() {
                        break;
                    }
                }
            }
            Job::Llm { .. } => {
                reference.scores = self.json(&format!("{prefix}/scores.json")).await?;
            }
        }
        Ok(reference)
    }
}

/// Jobs re-run on the reference hosts ([`Pool`]); those whose model no host serves,
/// and every challenge answer, from the reference bucket ([`S3Reference`]).
pub struct HostRunner {
    pub pool: Arc<Pool>,
    pub s3: S3Reference,
    pub rules: Rules,
}

impl HostRunner {
    /// Stores a host's output where audit, review and replay read it.
    async fn keep(
        &self,
        record: &JobRecord,
        name: &str,
        body: Vec<u8>,
    ) -> Result<(), ReferenceError> {
        let key = format!("reference/{}/{name}", record.job_id.as_str());
        self.s3.objects.put(&self.s3.bucket, &key, body).await?;
        Ok(())
    }
}

impl ReferenceRunner for HostRunner {
    async fn reference(
        &self,
        record: &JobRecord,
        output: Option<&Object>,
        priority: Priority,
    ) -> Result<Reference, ReferenceError> {
        let scored;
        let work = match &record.job {
            // A random seed cannot be reproduced: no GPU time is spent on it.
            Job::Sd { input, .. } if input.seed < 0 => None,
            Job::Sd { input, .. } => Some(Work::Image(input)),
            Job::Llm {
                input,
                output: llm_output,
            } => {
                // No text to score (missing, not UTF-8, too long), or a job the miner's
                // server never ran as written: the checks say so.
                let text = output_text(llm_output, output, &self.rules.checks.llm).ok();
                scored = text.and_then(|t| {
                    let (served, generated) = miner::as_generated(
                        record.model_id.as_str(),
                        &record.metrics.miner_version,
                        input,
                        &t,
                    )
                    .ok()?;
                    Some((served, generated.to_owned()))
                });
                scored
                    .as_ref()
                    .map(|(input, text)| Work::Scores { input, text })
            }
        };
        // Not for a host: what the reference bucket holds, as another system left it.
        let Some(work) = work.filter(|w| self.pool.serves(record, w)) else {
            return self.s3.reference(record, output, priority).await;
        };
        let mut reference = Reference {
            challenge: self.s3.challenge(record).await?,
            ..Reference::default()
        };
        let Some(ran) = self.pool.run(record, work, priority).await else {
            return self.s3.reference(record, output, priority).await;
        };
        match ran.output {
            Some(Output::Image(bytes)) => {
                let name = match ::image::guess_format(&bytes) {
                    Ok(::image::ImageFormat::Jpeg) => "image.jpg",
                    _ => "image.png",
                };
                self.keep(record, name, bytes.clone()).await?;
                reference.image = Some(bytes);
            }
            Some(Output::Scores(scores)) => {
                // Scores always serialize; should they not, the scorer is at fault.
                let body = serde_json::to_vec(&scores)
                    .map_err(|e| ReferenceError::Unavailable(e.to_string()))?;
                self.keep(record, "scores.json", body).await?;
                reference.scores = Some(scores);
            }
            None => {
                tracing::warn!(job_id = %record.job_id, note = ?ran.note, "no reference for a re-run job");
            }
        }
        reference.note = ran.note;
        reference.seconds = Some(ran.seconds);
        reference.drift = ran.drift;
        Ok(reference)
    }
}

/// The pool of the settings: its HTTP hosts, its candle hosts, and a candle host for
/// each model folder of `reference.llm_models_dir`.
pub fn pool(ctx: &Context) -> anyhow::Result<Pool> {
    let r = &ctx.settings.reference;
    let mut pool = Pool::new(r, &ctx.rules, Some(ctx.metrics.reference.clone()))?;
    let mut candle: Vec<(HostSettings, PathBuf)> = r
        .hosts
        .iter()
        .filter(|h| h.kind == HostKind::Candle)
        .map(|h| (h.clone(), PathBuf::from(&h.url)))
        .collect();
    if !r.llm_models_dir.is_empty() {
        for dir in model_dirs(Path::new(&r.llm_models_dir))? {
            let id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let host = HostSettings {
                name: format!("candle:{id}"),
                kind: HostKind::Candle,
                url: dir.display().to_string(),
                models: vec![id],
                concurrency: r.max_batch.max(1),
                queue: 1024,
                timeout_secs: 600,
                seconds_per_job: 1.0,
                tokenizer: String::new(),
                served_model: String::new(),
                health_path: String::new(),
                token: Default::default(),
            };
            candle.push((host, dir));
        }
    }
    if !candle.is_empty() {
        let (numerics, device) = (r.numerics()?, r.device()?);
        for (host, dir) in candle {
            let mut scorer = Scorer::load(&dir, numerics, &device)?;
            scorer.top_k = r.top_k;
            // The suspects of the rules' panel, from the folders beside the reference's.
            scorer.panel = Panel::beside(
                &scorer,
                &ctx.rules.checks.llm.panel,
                &dir,
                numerics,
                &device,
            );
            tracing::info!(host = %host.name, model = %scorer.model_id, dir = %dir.display(), "reference LLM loaded");
            pool = pool.with_candle(&host, ScoringService::start(scorer, r.max_batch));
        }
    }
    for h in pool.hosts() {
        tracing::info!(host = %h.name, kind = ?h.kind, "reference host");
    }
    Ok(pool)
}

/// Runs the worker on the reference hosts of the settings.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let s3 = S3Reference {
        objects: ctx.objects.clone(),
        bucket: ctx.settings.s3.reference_bucket.clone(),
        max_image_bytes: ctx.rules.checks.image.max_object_bytes,
    };
    let pool = Arc::new(pool(&ctx)?);
    pool.watch_health(std::time::Duration::from_secs(
        ctx.settings.reference.health_interval_secs.max(1),
    ));
    let runner = HostRunner {
        pool,
        s3,
        rules: ctx.rules.clone(),
    };
    run_with(ctx, Arc::new(runner)).await
}

/// How long one batch may take: the consumer's `max.poll.interval.ms`. With reference
/// hosts a job may wait `reference.max_wait_secs` for them, then one more call, then
/// be judged; without, the default.
fn batch_bound(ctx: &Context) -> Duration {
    let r = &ctx.settings.reference;
    let longest_call = r.hosts.iter().map(|h| h.timeout_secs).max();
    let uses_hosts = longest_call.is_some() || !r.llm_models_dir.is_empty();
    if !uses_hosts {
        return crate::kafka::MAX_POLL_INTERVAL;
    }
    let hosts = Duration::from_secs(r.max_wait_secs + longest_call.unwrap_or(600) + 30);
    hosts.max(crate::kafka::MAX_POLL_INTERVAL)
}

pub async fn run_with<R: ReferenceRunner>(ctx: Arc<Context>, runner: Arc<R>) -> anyhow::Result<()> {
    let k = &ctx.settings.kafka;
    let checker = Arc::new(Checker::new(ctx.rules.clone())?);
    let bound = batch_bound(&ctx);
    tracing::info!(topic = %k.rerun_topic, batch_bound = ?bound, "rerun worker consuming");
    let mut feed = super::Feed::with_max_poll(k, "-rerun", &k.rerun_topic, bound)?;
    while let Ok(batch) = feed
        .next(&ctx, ctx.settings.pipeline.rerun_batch_size)
        .await
    {
        let span = super::batch_span("rerun", &batch);
        match rerun_batch(&ctx, runner.as_ref(), &checker, &batch)
            .instrument(span)
            .await
        {
            Ok(offsets) => feed.store(&offsets),
            Err(Stopped) => break,
        }
    }
    // Dropping the consumer closes it, and librdkafka's close commits the stored
    // offsets one last time (never the position of fetched but unprocessed messages).
    drop(feed);
    Ok(())
}

/// What a job's reference run adds beside what the checks read.
struct Extra {
    seconds: Option<f64>,
    drift: Vec<Drift>,
}

type FetchResult = Result<Option<Result<(Fetched, Extra), DeadLetter>>, Stopped>;

/// The job's output again, and its reference output.
async fn fetch_with_reference<R: ReferenceRunner>(
    ctx: &Context,
    runner: &R,
    record: &JobRecord,
    priority: Priority,
) -> FetchResult {
    let output = match fetch_output(ctx, record).await {
        Ok(o) => o,
        Err(Ok(letter)) => return Ok(Some(Err(letter))),
        Err(Err(Stopped)) => return Err(Stopped),
    };
    let reference = match ctx
        .retry_refusable(
            "reference",
            |e| matches!(e, ReferenceError::Refused(_)),
            || runner.reference(record, output.as_ref(), priority),
        )
        .await?
    {
        Ok(reference) => reference,
        Err(e) => {
            return Ok(Some(Err(DeadLetter {
                reason: "reference_refused",
                error: e.to_string(),
            })));
        }
    };
    let extra = Extra {
        seconds: reference.seconds,
        drift: reference.drift,
    };
    Ok(Some(Ok((
        Fetched {
            output,
            reference_image: reference.image,
            scores: reference.scores,
            challenge: reference.challenge,
            reference_note: reference.note,
            decoded: None,
        },
        extra,
    ))))
}

// One per message of a batch, never stored: boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
enum Task {
    Dead(DeadLetter),
    Skip,
    Judge(JobRecord, Box<JobVerdict>),
}

async fn rerun_batch<R: ReferenceRunner>(
    ctx: &Arc<Context>,
    runner: &R,
    checker: &Arc<Checker>,
    batch: &[OwnedMessage],
) -> Result<Offsets, Stopped> {
    let parsed: Vec<(Origin, &OwnedMessage, Result<JobRecord, String>)> = batch
        .iter()
        .map(|m| {
            let r =
                JobRecord::from_json(m.payload().unwrap_or_default()).map_err(|e| e.to_string());
            (Origin::of(m), m, r)
        })
        .collect();
    let ids: Vec<&str> = parsed
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().ok().map(|r| r.job_id.as_str()))
        .collect();
    let screened = ctx
        .retry("postgres", || ctx.store.verdicts(&ids, Stage::Screen))
        .await?;
    let done = ctx
        .retry("postgres", || ctx.store.verdicts(&ids, Stage::Rerun))
        .await?;
    let mut seen = std::collections::HashSet::new();
    let tasks: Vec<Task> = parsed
        .iter()
        .map(|(_, _, r)| match r {
            Err(e) => Task::Dead(DeadLetter {
                reason: "invalid_record",
                error: e.clone(),
            }),
            Ok(r) if done.contains_key(r.job_id.as_str()) || !seen.insert(r.job_id.clone()) => {
                Task::Skip
            }
            Ok(r) => match screened.get(r.job_id.as_str()) {
                Some(v) => Task::Judge(r.clone(), Box::new(v.clone())),
                // The screen worker records before it requests a re-run, so this is a
                // request that did not come from it.
                None => Task::Dead(DeadLetter {
                    reason: "not_screened",
                    error: format!("job {} has no screen verdict", r.job_id),
                }),
            },
        })
        .collect();

    // Fetch the output again and run the reference, concurrently, canaries and at-risk
    // miners first: they take the hosts' capacity before the rest of the batch.
    let priority = |t: &Task| match t {
        Task::Judge(record, screen) => {
            let at_risk = screen.verdict != Verdict::Pass
                || screen.failed_checks().next().is_some()
                || crate::checks::canary::find(&ctx.rules, record).is_some();
            if at_risk {
                Priority::High
            } else {
                Priority::Normal
            }
        }
        _ => Priority::Normal,
    };
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(priority(&tasks[i])));
    // Collected first: a lazy `map` here trips rustc's higher-ranked `Send` check.
    let work: Vec<_> = order
        .iter()
        .map(|&i| match &tasks[i] {
            Task::Judge(record, _) => futures::future::Either::Left(fetch_with_reference(
                ctx,
                runner,
                record,
                priority(&tasks[i]),
            )),
            _ => futures::future::Either::Right(std::future::ready(Ok(None))),
        })
        .collect();
    let mut fetched: Vec<(usize, FetchResult)> = order
        .iter()
        .copied()
        .zip(
            futures::stream::iter(work)
                .buffered(ctx.settings.pipeline.fetch_concurrency.max(1))
                .collect::<Vec<_>>()
                .await,
        )
        .collect();
    fetched.sort_by_key(|(i, _)| *i);
    let fetched = fetched.into_iter().map(|(_, f)| f);

    let mut to_judge = Vec::new();
    let mut letters = Vec::new();
    let (mut drift, mut seconds) = (Vec::new(), HashMap::new());
    for ((origin, msg, _), (task, f)) in parsed.iter().zip(tasks.into_iter().zip(fetched)) {
        match (task, f?) {
            (Task::Dead(letter), _) | (_, Some(Err(letter))) => {
                letters.push((origin, *msg, letter))
            }
            (Task::Judge(record, screen), Some(Ok((fetched, extra)))) => {
                drift.extend(extra.drift);
                seconds.insert(record.job_id.clone(), extra.seconds);
                to_judge.push((record, *screen, fetched))
            }
            _ => {}
        }
    }
    let results = {
        let (checker, rules) = (checker.clone(), ctx.rules.clone());
        let mut jobs = std::mem::take(&mut to_judge);
        super::judge_off_thread(move || {
            super::prepare_all(&rules, jobs.iter_mut().map(|(r, _, f)| (&*r, f)));
            jobs.into_iter()
                .map(|(record, screen, fetched)| {
                    // The stream checks are the screen's: only that stage sees the
                    // jobs in order, and they are not run again here.
                    let v =
                        super::evaluate_guarded(&checker, &record, &fetched, Stream::Keep(&screen))
                            .map(|mut v| {
                                v.sampled = screen.sampled;
                                v.screen_allowance = screen.screen_allowance;
                                v
                            });
                    (record, v)
                })
                .collect::<Vec<_>>()
        })
        .await?
    };
    // The message a judged job came from, for its dead letter.
    let message_of = |record: &JobRecord| {
        parsed
            .iter()
            .find(|(_, _, r)| r.as_ref().is_ok_and(|r| r.job_id == record.job_id))
            .map(|(origin, msg, _)| (origin, *msg))
    };
    // A job whose checks panicked is a dead letter (see `evaluate_guarded`).
    let mut judged = Vec::with_capacity(results.len());
    for (record, v) in results {
        match v {
            Ok(mut v) => {
                v.reference_seconds = seconds.get(&record.job_id).copied().flatten();
                judged.push((record, v))
            }
            Err(error) => {
                if let Some((origin, msg)) = message_of(&record) {
                    let reason = "judge_panicked";
                    letters.push((origin, msg, DeadLetter { reason, error }));
                }
            }
        }
    }
    if !drift.is_empty() {
        ctx.retry("postgres", || ctx.store.record_drift(&drift))
            .await?;
    }
    let pairs: Vec<(&JobRecord, &JobVerdict)> = judged.iter().map(|(r, v)| (r, v)).collect();
    let written = super::record_verdicts_isolating(ctx, &pairs, Stage::Rerun).await?;
    // A verdict Postgres refuses for its content is a dead letter, never a retry loop.
    for ((record, _), w) in judged.iter().zip(&written) {
        let Err(error) = w else { continue };
        if let Some((origin, msg)) = message_of(record) {
            let (reason, error) = ("unstorable", error.clone());
            letters.push((origin, msg, DeadLetter { reason, error }));
        }
    }
    for ((r, v), _) in judged.iter().zip(&written).filter(|(_, w)| w.is_ok()) {
        tracing::debug!(
            job_id = %r.job_id,
            miner_id = %r.miner_id,
            verdict = ?v.verdict,
            "re-run verdict recorded"
        );
        ctx.metrics
            .verdicts
            .get_or_create(&vec![
                ("stage", "rerun".to_owned()),
                ("verdict", format!("{:?}", v.verdict).to_lowercase()),
            ])
            .inc();
    }
    let k = &ctx.settings.kafka;
    // Rare: sent one at a time.
    for (origin, msg, letter) in &letters {
        ctx.metrics
            .dead_letters
            .get_or_create(&vec![("reason", letter.reason.to_owned())])
            .inc();
        let (key, payload) = (msg.key(), msg.payload().unwrap_or_default());
        let (job_id, miner_id) = kafka::ids_of(key, payload);
        tracing::warn!(reason = letter.reason, error = %kafka::dlq_error(&letter.error), job_id, miner_id,
            topic = %origin.topic, partition = origin.partition, offset = origin.offset,
            "dead letter");
        ctx.retry("kafka-produce", || {
            let producer = ctx.producer();
            async move {
                kafka::dead_letter(&producer, &k.dlq_topic, origin, key, payload, letter).await
            }
        })
        .await?;
    }
    let mut offsets = Offsets::default();
    for (origin, _, _) in &parsed {
        offsets.processed(origin);
    }
    ctx.metrics
        .messages
        .get_or_create(&vec![("result", "processed".to_owned())])
        .inc_by(parsed.len() as u64);
    Ok(offsets)
}

/// The model folders under `root`: each subfolder (or link to one) holding a
/// `config.json`, named by the model id of the jobs it scores.
fn model_dirs(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| anyhow::anyhow!("reference.llm_models_dir {}: {e}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        anyhow::bail!(
            "reference.llm_models_dir {}: no model folders",
            root.display()
        );
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object_error(refused: bool) -> ObjectError {
        ObjectError {
            op: "get",
            bucket: "proctor-reference".into(),
            key: "reference/j/image.png".into(),
            message: "HTTP 400".into(),
            refused,
        }
    }

    #[test]
    fn only_a_refused_request_ends_the_retries_for_a_reference() {
        // A refusal is a dead letter at once; an outage (or a 401/403, which the object
        // store does not mark refused) is retried until the reference side is back.
        assert!(matches!(
            ReferenceError::from(object_error(true)),
            ReferenceError::Refused(m) if m.contains("reference/j/image.png")
        ));
        assert!(matches!(
            ReferenceError::from(object_error(false)),
            ReferenceError::Unavailable(_)
        ));
    }
}

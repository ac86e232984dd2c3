//! `rerun`: consumes `proctor.rerun`, obtains the reference output for each job,
//! judges the job again with every check, and records the `rerun` verdict, which
//! supersedes the screen verdict when the judge decides.
//!
//! The reference comes from a [`ReferenceRunner`] (`reference::runner`): in production
//! [`HostRunner`], the reference hosts of the settings, and the reference bucket for
//! the jobs no host serves. This module is the worker's batch loop around it.
//!
//! Jobs of a batch are dispatched canaries and at-risk miners first.
//!
//! The `reuse` outcome is the screen stage's: only the screen worker sees the stream of
//! outputs in order, so the re-run keeps its answer instead of judging reuse again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tracing::Instrument;

use super::{Context, Stopped};
use crate::checks::{Checker, Fetched, JobVerdict, Stream, Verdict};
use crate::kafka::{self, DeadLetter, Offsets, Origin};
use crate::record::JobRecord;
use crate::reference::pool::{Drift, Priority};
use crate::reference::runner::{HostRunner, ReferenceError, ReferenceRunner, S3Reference, pool};
use crate::store::Stage;

/// Runs the worker on the reference hosts of the settings.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let s3 = S3Reference {
        objects: ctx.objects.clone(),
        bucket: ctx.settings.s3.reference_bucket.clone(),
        max_image_bytes: ctx.rules.checks.image.max_object_bytes,
    };
    let pool = Arc::new(pool(
        &ctx.settings.reference,
        &ctx.rules,
        Some(ctx.metrics.reference.clone()),
    )?);
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
    let output = match ctx.fetch_output(record).await {
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
                            .map(|v| crate::case::rerun_verdict(v, &screen));
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
                ("verdict", v.verdict.as_str().to_owned()),
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

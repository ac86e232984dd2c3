//! `screen`: consumes `proctor.jobs`, runs every check that needs no reference run,
//! records the verdict, and asks the sampling policy which jobs to re-run.
//!
//! One batch of messages is one Postgres transaction. Per batch:
//! 1. parse each record; a broken one is dead-lettered (`invalid_record`);
//! 2. skip jobs that already have a screen verdict (redelivery), re-requesting their
//!    re-run when they were sampled;
//! 3. fetch outputs from S3 under the rules' size bounds, concurrently; an object still
//!    missing after the retries is dead-lettered (`object_missing`);
//! 4. judge the jobs in order (the reuse index needs the order) on a blocking thread;
//! 5. write every verdict in one transaction, produce re-run requests and dead letters,
//!    and only then store the offsets.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use super::{Context, Stopped};
use crate::checks::{Fetched, JobVerdict, Judge, Object};
use crate::kafka::{self, DeadLetter, Offsets, Origin};
use crate::record::{Job, JobRecord};
use crate::sampling::{self, MinerRisk, SamplingSecret};
use crate::store::{Stage, Written};

/// A consumed message and what became of it.
struct Item {
    origin: Origin,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    /// The broker timestamp, in ms since the epoch.
    timestamp: Option<i64>,
    state: State,
}

// One per message of a batch, never stored: boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
enum State {
    Dead(DeadLetter),
    /// Already screened (a redelivery); re-run requested again when it was sampled.
    Known {
        record: JobRecord,
        sampled: bool,
    },
    /// The same job earlier in this batch.
    Repeat,
    New {
        record: JobRecord,
        fetched: Fetched,
    },
}

impl Item {
    fn from_message(m: &OwnedMessage, max_record_bytes: usize) -> (Item, Option<JobRecord>) {
        let payload = m.payload().unwrap_or_default().to_vec();
        let mut item = Item {
            origin: Origin::of(m),
            key: m.key().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis(),
            state: State::Repeat,
            payload,
        };
        let parsed = if item.payload.len() > max_record_bytes {
            Err(format!(
                "record is {} bytes, over the {max_record_bytes}-byte limit",
                item.payload.len()
            ))
        } else {
            JobRecord::from_json(&item.payload).map_err(|e| e.to_string())
        };
        match parsed {
            Ok(r) => (item, Some(r)),
            Err(error) => {
                item.state = State::Dead(DeadLetter {
                    reason: "invalid_record",
                    error,
                });
                (item, None)
            }
        }
    }
}

/// Job records larger than this are refused before parsing. An inline LLM text over
/// the rules' limit is still judged (an `invalid` verdict): this bound is far above it.
pub const MAX_RECORD_BYTES: usize = 4 << 20;

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let k = &ctx.settings.kafka;
    let secret = SamplingSecret::from_passphrase(ctx.settings.secrets.sampling_secret.expose());
    let judge = Arc::new(Mutex::new(Judge::new(ctx.rules.clone())));
    tracing::info!(topic = %k.jobs_topic, "screen worker consuming");
    let mut feed = super::Feed::new(k, "-screen", &k.jobs_topic)?;
    while let Ok(batch) = feed.next(&ctx, ctx.settings.pipeline.batch_size).await {
        match screen_batch(&ctx, &judge, &secret, &batch).await {
            Ok(offsets) => feed.store(&offsets),
            Err(Stopped) => break,
        }
    }
    // Dropping the consumer closes it, and librdkafka's close commits the stored
    // offsets one last time (never the position of fetched but unprocessed messages).
    drop(feed);
    Ok(())
}

/// Fetches the job's output object, if it has one, under the rules' size bound.
/// `Err(Ok(letter))`: the object is missing for good; `Err(Err(Stopped))`: stopping.
pub async fn fetch_output(
    ctx: &Context,
    record: &JobRecord,
) -> Result<Option<Object>, Result<DeadLetter, Stopped>> {
    let rules = &ctx.rules;
    let (key, limit) = match &record.job {
        Job::Sd { output, .. } => (Some(&output.image_key), rules.checks.image.max_object_bytes),
        Job::Llm { output, .. } => (output.text_key.as_ref(), rules.checks.llm.max_text_bytes),
    };
    let Some(key) = key else {
        return Ok(None);
    };
    let bucket = &ctx.settings.s3.jobs_bucket;
    let mut backoff = kafka::Backoff::new(ctx.max_backoff());
    loop {
        let got = ctx
            .retry("s3", || {
                ctx.objects.get_bounded(bucket, key.as_str(), limit)
            })
            .await
            .map_err(Err)?;
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

async fn screen_batch(
    ctx: &Arc<Context>,
    judge: &Arc<Mutex<Judge>>,
    secret: &SamplingSecret,
    batch: &[OwnedMessage],
) -> Result<Offsets, Stopped> {
    let mut items = Vec::with_capacity(batch.len());
    let mut records = Vec::with_capacity(batch.len());
    for m in batch {
        let (item, record) = Item::from_message(m, MAX_RECORD_BYTES);
        items.push(item);
        records.push(record);
    }
    // Redeliveries: jobs that already have a screen verdict.
    let ids: Vec<&str> = records
        .iter()
        .flatten()
        .map(|r| r.job_id.as_str())
        .collect();
    let known = ctx
        .retry("postgres", || ctx.store.verdicts(&ids, Stage::Screen))
        .await?;

    // Fetch the outputs of new jobs, concurrently, in batch order.
    let mut seen = HashSet::new();
    let fetches: Vec<_> = records
        .iter()
        .map(|r| {
            let new = r.as_ref().filter(|r| {
                !known.contains_key(r.job_id.as_str()) && seen.insert(r.job_id.clone())
            });
            async move {
                match new {
                    Some(r) => Some(fetch_output(ctx, r).await),
                    None => None,
                }
            }
        })
        .collect();
    let fetched: Vec<_> = futures::stream::iter(fetches)
        .buffered(ctx.settings.pipeline.fetch_concurrency.max(1))
        .collect()
        .await;

    let mut seen = HashSet::new();
    for ((item, record), fetch) in items.iter_mut().zip(records).zip(fetched) {
        let Some(record) = record else { continue };
        item.state = if let Some(v) = known.get(record.job_id.as_str()) {
            State::Known {
                sampled: v.sampled,
                record,
            }
        } else if !seen.insert(record.job_id.clone()) {
            State::Repeat
        } else {
            match fetch {
                Some(Ok(output)) => State::New {
                    record,
                    fetched: Fetched {
                        output,
                        ..Fetched::default()
                    },
                },
                Some(Err(Ok(letter))) => State::Dead(letter),
                Some(Err(Err(Stopped))) => return Err(Stopped),
                None => State::Repeat,
            }
        };
    }

    // Sampling risk: failed checks recorded so far per miner.
    let mut miners: Vec<String> = items
        .iter()
        .filter_map(|i| match &i.state {
            State::New { record, .. } => Some(record.miner_id.to_string()),
            _ => None,
        })
        .collect();
    miners.sort_unstable();
    miners.dedup();
    let risk = ctx
        .retry("postgres", || ctx.store.failed_checks(&miners))
        .await?;

    // Judge off the async threads: decode and hash on every core, then run the checks
    // in batch order (the reuse index needs the order).
    let jobs: Vec<(JobRecord, Fetched)> = items
        .iter_mut()
        .filter_map(|i| match &mut i.state {
            State::New { record, fetched } => Some((record.clone(), std::mem::take(fetched))),
            _ => None,
        })
        .collect();
    let results = {
        let (judge, secret, rules) = (judge.clone(), secret.clone(), ctx.rules.clone());
        super::judge_off_thread(move || {
            let mut jobs = jobs;
            super::prepare_all(&rules, jobs.iter_mut().map(|(r, f)| (&*r, f)));
            judge_jobs(&judge, &secret, &rules, &jobs, risk)
        })
        .await?
    };
    // A job whose judging panicked is a dead letter: never retried forever, never a
    // verdict, and it does not hold up the rest of its batch.
    let mut verdicts = Vec::with_capacity(results.len());
    let new_items = items
        .iter_mut()
        .filter(|i| matches!(i.state, State::New { .. }));
    for (item, result) in new_items.zip(results) {
        match result {
            Ok(v) => verdicts.push(v),
            Err(error) => {
                item.state = State::Dead(DeadLetter {
                    reason: "judge_panicked",
                    error,
                })
            }
        }
    }
    let new_records: Vec<&JobRecord> = items
        .iter()
        .filter_map(|i| match &i.state {
            State::New { record, .. } => Some(record),
            _ => None,
        })
        .collect();
    let pairs: Vec<(&JobRecord, &JobVerdict)> =
        new_records.iter().copied().zip(&verdicts).collect();
    let written = ctx
        .retry("postgres", || {
            ctx.store.record_verdicts(&pairs, Stage::Screen)
        })
        .await?;
    let committed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);

    // Re-run requests and dead letters, acknowledged before the offsets move.
    let k = &ctx.settings.kafka;
    let mut sampled: BTreeMap<&str, &JobRecord> = BTreeMap::new();
    for (r, v) in &pairs {
        if v.sampled {
            sampled.insert(r.job_id.as_str(), r);
        }
    }
    let mut sends = Vec::new();
    let mut offsets = Offsets::default();
    let m = &ctx.metrics;
    for item in &items {
        offsets.processed(&item.origin);
        let result = match &item.state {
            State::Dead(letter) => {
                tracing::warn!(reason = letter.reason, error = %letter.error,
                    partition = item.origin.partition, offset = item.origin.offset, "dead letter");
                m.dead_letters
                    .get_or_create(&vec![("reason", letter.reason.to_owned())])
                    .inc();
                sends.push(Send::Dead(item, letter));
                "dead_letter"
            }
            State::Known { record, sampled: s } => {
                if *s {
                    sampled.insert(record.job_id.as_str(), record);
                }
                "duplicate"
            }
            State::Repeat => "duplicate",
            State::New { .. } => {
                if let Some(ts) = item.timestamp {
                    m.record_to_verdict
                        .observe((committed - ts).max(0) as f64 / 1000.0);
                }
                "processed"
            }
        };
        m.messages
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }
    for r in sampled.values() {
        sends.push(Send::Rerun(r));
    }
    for (v, w) in verdicts.iter().zip(&written) {
        if *w == Written::New {
            m.verdicts
                .get_or_create(&vec![
                    ("stage", "screen".to_owned()),
                    ("verdict", format!("{:?}", v.verdict).to_lowercase()),
                ])
                .inc();
        }
    }
    let results: Vec<Result<(), Stopped>> = futures::future::join_all(sends.iter().map(|s| {
        ctx.retry("kafka-produce", move || async move {
            match s {
                Send::Dead(item, letter) => {
                    kafka::dead_letter(
                        &ctx.producer(),
                        &k.dlq_topic,
                        &item.origin,
                        item.key.as_deref(),
                        &item.payload,
                        letter,
                    )
                    .await
                }
                Send::Rerun(r) => {
                    let payload = r.to_json().to_string();
                    kafka::send(
                        &ctx.producer(),
                        &k.rerun_topic,
                        &r.miner_id.to_string(),
                        payload.as_bytes(),
                        None,
                    )
                    .await
                }
            }
        })
    }))
    .await;
    if results.iter().any(Result::is_err) {
        return Err(Stopped);
    }
    Ok(offsets)
}

enum Send<'a> {
    Dead(&'a Item, &'a DeadLetter),
    Rerun(&'a JobRecord),
}

/// Judges new jobs in order and draws which to re-run, raising a miner's rate with
/// every failed check (recorded before the batch, then within it). A job whose checks
/// panic gets the panic message instead of a verdict.
fn judge_jobs(
    judge: &Mutex<Judge>,
    secret: &SamplingSecret,
    rules: &crate::rules::Rules,
    jobs: &[(JobRecord, Fetched)],
    mut failed: BTreeMap<String, u32>,
) -> Vec<Result<JobVerdict, String>> {
    let mut judge = judge
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    jobs.iter()
        .map(|(record, fetched)| {
            // The judge's only state is the bounded reuse index, which a panic can at
            // worst leave without this job's entry.
            let mut v = super::evaluate_guarded(&mut judge, record, fetched)?;
            let count = failed.entry(record.miner_id.to_string()).or_default();
            let risk = MinerRisk {
                failed_checks: *count,
                review_flags: 0,
            };
            v.sampled =
                sampling::is_sampled(secret, record.job_id.as_str(), sampling::rate(rules, risk));
            *count += v.failed_checks().count() as u32;
            Ok(v)
        })
        .collect()
}

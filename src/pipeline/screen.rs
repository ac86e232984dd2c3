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
//! 5. on a task of its own: draw the re-runs from the miners' recorded risk, write
//!    every verdict in one transaction, produce re-run requests and dead letters; and
//!    only then store the offsets.
//!
//! Steps 1-4 of a batch overlap step 5 of the batch before it, so Postgres and the
//! checks work at the same time. Step 5 runs for one batch at a time, in order: the
//! risk it reads includes every earlier batch, exactly as without the overlap.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{Context, Stopped, batch_span};
use crate::checks::{Checker, Fetched, JobVerdict, Stream, StreamState};
use crate::kafka::{self, DeadLetter, Offsets, Origin};
use crate::record::{Job, JobRecord};
use crate::sampling::SamplingSecret;
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
    /// The message as a batch item: its record, or a dead letter saying why it is not
    /// one (the parser refuses a record over [`crate::record::MAX_RECORD_BYTES`] before reading it).
    fn from_message(m: &OwnedMessage) -> (Item, Option<JobRecord>) {
        let payload = m.payload().unwrap_or_default().to_vec();
        let mut item = Item {
            origin: Origin::of(m),
            key: m.key().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis(),
            state: State::Repeat,
            payload,
        };
        match JobRecord::from_json(&item.payload).map_err(|e| e.to_string()) {
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

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let k = &ctx.settings.kafka;
    let p = &ctx.settings.pipeline;
    let secret = SamplingSecret::from_passphrase(ctx.settings.secrets.sampling_secret.expose());
    let checker = Arc::new(Mutex::new(Screening {
        checker: Checker::new(ctx.rules.clone())?,
        stream: StreamState::new(),
    }));
    tracing::info!(topic = %k.jobs_topic, "screen worker consuming");
    let mut feed = super::Feed::new(k, "-screen", &k.jobs_topic)?;
    // Batches overlap: while one is recorded (Postgres, then the broker), the next is
    // parsed, fetched and judged. Writes happen one batch at a time, in order; a batch's
    // re-run requests may still be in flight while the next batch writes. Offsets are
    // stored in batch order, each only once its batch is wholly recorded.
    let mut recordings: VecDeque<Recording> = VecDeque::new();
    let mut lap = std::time::Instant::now();
    loop {
        let batch = if recordings.is_empty() {
            feed.next(&ctx, p.batch_size).await
        } else {
            // Something to finish: look for the next batch only briefly.
            feed.try_next(&ctx, p.batch_size, Duration::from_millis(p.batch_wait_ms))
                .await
        };
        ctx.metrics.lap("consume", &mut lap);
        let Ok(batch) = batch else { break };
        if batch.is_empty() {
            if finish_oldest(&mut recordings, &feed).await.is_err() {
                break;
            }
            continue;
        }
        let span = batch_span("screen", &batch);
        let in_flight = |id: &str| recordings.iter().any(|r| r.jobs.contains(id));
        let judged = screen_batch(&ctx, &checker, &batch, &in_flight, &mut lap)
            .instrument(span.clone())
            .await;
        if recordings.len() >= MAX_RECORDING && finish_oldest(&mut recordings, &feed).await.is_err()
        {
            break;
        }
        let Ok(judged) = judged else { break };
        let after = recordings.back_mut().and_then(|r| r.committed.take());
        recordings.push_back(Recording::start(&ctx, &secret, judged, after, span));
    }
    // Stopping: finish what is being recorded, in order. A batch after one that failed
    // fails too (it waits for that one's commit), so no later offsets are stored and the
    // failed batch is redelivered.
    while !recordings.is_empty() {
        if finish_oldest(&mut recordings, &feed).await.is_err() {
            break;
        }
    }
    for r in recordings {
        r.task.abort();
    }
    // Dropping the consumer closes it, and librdkafka's close commits the stored
    // offsets one last time (never the position of fetched but unprocessed messages).
    drop(feed);
    Ok(())
}

/// Waits for the oldest batch being recorded, if any, and stores its offsets.
async fn finish_oldest(
    recordings: &mut VecDeque<Recording>,
    feed: &super::Feed,
) -> Result<(), Stopped> {
    if let Some(r) = recordings.pop_front() {
        feed.store(&r.finish().await?);
    }
    Ok(())
}

/// Batches being recorded at once: one writing to Postgres, one producing its re-run
/// requests.
const MAX_RECORDING: usize = 2;

/// A judged batch being recorded on its own task.
struct Recording {
    /// The new jobs of the batch: later batches treat them as already screened.
    jobs: HashSet<String>,
    /// Fires once the batch's verdicts are committed: the next batch's write waits for
    /// it, so the risk that batch reads includes this one.
    committed: Option<oneshot::Receiver<()>>,
    task: tokio::task::JoinHandle<Result<Offsets, Stopped>>,
}

impl Recording {
    /// `after`: the commit of the batch before, if it is still being recorded.
    fn start(
        ctx: &Arc<Context>,
        secret: &SamplingSecret,
        judged: Screened,
        after: Option<oneshot::Receiver<()>>,
        span: tracing::Span,
    ) -> Recording {
        let jobs = judged
            .items
            .iter()
            .filter_map(|i| match &i.state {
                State::New { record, .. } => Some(record.job_id.as_str().to_owned()),
                _ => None,
            })
            .collect();
        let (ctx, secret) = (ctx.clone(), secret.clone());
        let (done, committed) = oneshot::channel();
        let task = tokio::spawn(
            async move {
                // The batch before failed (its sender dropped unsent): so does this one.
                if let Some(after) = after {
                    after.await.map_err(|_| Stopped)?;
                }
                record_batch(&ctx, &secret, judged, done).await
            }
            .instrument(span),
        );
        Recording {
            jobs,
            committed: Some(committed),
            task,
        }
    }

    /// The batch's offsets, once its effects are durable.
    async fn finish(self) -> Result<Offsets, Stopped> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => {
                // A panic while recording: stop the worker rather than store offsets
                // of work that may not be recorded. The batch is redelivered.
                tracing::error!(error = %e, "recording a batch failed; stopping");
                Err(Stopped)
            }
        }
    }
}

/// A batch parsed, fetched and judged, not yet recorded.
struct Screened {
    items: Vec<Item>,
    /// One per item in `State::New`, in order.
    verdicts: Vec<JobVerdict>,
}

/// Parses, fetches and judges a batch. `in_flight` tells the new jobs of batches still
/// being recorded: they count as already screened.
async fn screen_batch(
    ctx: &Arc<Context>,
    checker: &Arc<Mutex<Screening>>,
    batch: &[OwnedMessage],
    in_flight: &(dyn Fn(&str) -> bool + Sync),
    lap: &mut std::time::Instant,
) -> Result<Screened, Stopped> {
    let m = &ctx.metrics;
    let mut items = Vec::with_capacity(batch.len());
    let mut records = Vec::with_capacity(batch.len());
    for m in batch {
        let (item, record) = Item::from_message(m);
        items.push(item);
        records.push(record);
    }
    m.lap("parse", lap);
    // Redeliveries: jobs that already have a screen verdict. One in a batch still being
    // recorded gets its re-run requested by that batch, if sampled.
    let ids: Vec<&str> = records
        .iter()
        .flatten()
        .map(|r| r.job_id.as_str())
        .collect();
    let mut known: BTreeMap<String, bool> = ctx
        .retry("postgres", || ctx.store.verdicts(&ids, Stage::Screen))
        .await?
        .into_iter()
        .map(|(id, v)| (id, v.sampled))
        .collect();
    for id in ids.iter().filter(|id| in_flight(id)) {
        known.entry((*id).to_owned()).or_insert(false);
    }
    m.lap("lookup", lap);

    // Fetch the outputs of new jobs, concurrently, in batch order, and decode each SD
    // output on the rayon pool as soon as it arrives.
    let image_rules = Arc::new(ctx.rules.checks.image.clone());
    let mut seen = HashSet::new();
    let fetches: Vec<_> = records
        .iter()
        .map(|r| {
            let new = r.as_ref().filter(|r| {
                !known.contains_key(r.job_id.as_str()) && seen.insert(r.job_id.clone())
            });
            let image_rules = image_rules.clone();
            async move {
                let r = new?;
                let fetched = match ctx.fetch_output(r).await {
                    Ok(output) => Fetched {
                        output,
                        ..Fetched::default()
                    },
                    Err(e) => return Some(Err(e)),
                };
                Some(match r.job {
                    Job::Sd { .. } => super::prepare_image_async(image_rules, fetched)
                        .await
                        .map_err(Err),
                    Job::Llm { .. } => Ok(fetched),
                })
            }
        })
        .collect();
    let fetched: Vec<_> = futures::stream::iter(fetches)
        .buffered(ctx.settings.pipeline.fetch_concurrency.max(1))
        .collect()
        .await;
    m.lap("fetch", lap);

    let mut seen = HashSet::new();
    for ((item, record), fetch) in items.iter_mut().zip(records).zip(fetched) {
        let Some(record) = record else { continue };
        item.state = if let Some(sampled) = known.get(record.job_id.as_str()) {
            State::Known {
                sampled: *sampled,
                record,
            }
        } else if !seen.insert(record.job_id.clone()) {
            State::Repeat
        } else {
            match fetch {
                Some(Ok(fetched)) => State::New { record, fetched },
                Some(Err(Ok(letter))) => State::Dead(letter),
                Some(Err(Err(Stopped))) => return Err(Stopped),
                None => State::Repeat,
            }
        };
    }

    // Judge off the async threads, in batch order (the reuse index needs the order).
    // The outputs were decoded as they arrived.
    let jobs: Vec<(JobRecord, Fetched)> = items
        .iter_mut()
        .filter_map(|i| match &mut i.state {
            State::New { record, fetched } => Some((record.clone(), std::mem::take(fetched))),
            _ => None,
        })
        .collect();
    let results = {
        let checker = checker.clone();
        super::judge_off_thread(move || check_jobs(&checker, &jobs)).await?
    };
    m.lap("judge", lap);
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
    Ok(Screened { items, verdicts })
}

/// Draws which new jobs to re-run, writes every verdict in one transaction, produces
/// re-run requests and dead letters, and returns the offsets to store.
async fn record_batch(
    ctx: &Context,
    secret: &SamplingSecret,
    judged: Screened,
    write_done: oneshot::Sender<()>,
) -> Result<Offsets, Stopped> {
    let m = &ctx.metrics;
    let mut lap = std::time::Instant::now();
    let Screened {
        items,
        mut verdicts,
    } = judged;
    let new_records: Vec<&JobRecord> = items
        .iter()
        .filter_map(|i| match &i.state {
            State::New { record, .. } => Some(record),
            _ => None,
        })
        .collect();
    // Sampling risk: screen failures recorded so far per miner, and staff decisions. The batch before this
    // one is committed by now, so this reads exactly what a one-batch-at-a-time worker
    // would.
    let mut miners: Vec<String> = new_records.iter().map(|r| r.miner_id.to_string()).collect();
    miners.sort_unstable();
    miners.dedup();
    let prior = ctx.retry("postgres", || ctx.store.risks(&miners)).await?;
    let mut sampler = crate::case::Sampler::new(&ctx.rules, secret, prior);
    for v in &mut verdicts {
        sampler.draw(v);
    }
    m.lap("lookup", &mut lap);

    let pairs: Vec<(&JobRecord, &JobVerdict)> =
        new_records.iter().copied().zip(&verdicts).collect();
    let written = super::record_verdicts_isolating(ctx, &pairs, Stage::Screen).await?;
    // Jobs whose verdict Postgres refused (see `store::refuses_input`) are dead letters:
    // never retried, never re-run, and the partition moves on.
    let refusals: BTreeMap<&str, DeadLetter> = pairs
        .iter()
        .zip(&written)
        .filter_map(|((r, _), w)| {
            let error = w.as_ref().err()?.clone();
            Some((
                r.job_id.as_str(),
                DeadLetter {
                    reason: "unstorable",
                    error,
                },
            ))
        })
        .collect();
    let committed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    m.lap("write", &mut lap);
    // The next batch may write now; a dropped receiver means it is gone.
    let _ = write_done.send(());

    // Re-run requests and dead letters, acknowledged before the offsets move.
    let k = &ctx.settings.kafka;
    let mut sampled: BTreeMap<&str, &JobRecord> = BTreeMap::new();
    for (r, v) in &pairs {
        if v.sampled && !refusals.contains_key(r.job_id.as_str()) {
            sampled.insert(r.job_id.as_str(), r);
        }
    }
    let mut sends = Vec::new();
    let mut offsets = Offsets::default();
    for item in &items {
        offsets.processed(&item.origin);
        let dead = match &item.state {
            State::Dead(letter) => Some(letter),
            State::New { record, .. } => refusals.get(record.job_id.as_str()),
            _ => None,
        };
        let result = if let Some(letter) = dead {
            let (job_id, miner_id) = kafka::ids_of(item.key.as_deref(), &item.payload);
            tracing::warn!(reason = letter.reason, error = %kafka::dlq_error(&letter.error), job_id, miner_id,
                topic = %item.origin.topic, partition = item.origin.partition,
                offset = item.origin.offset, "dead letter");
            m.dead_letters
                .get_or_create(&vec![("reason", letter.reason.to_owned())])
                .inc();
            sends.push(Outgoing::Dead(item, letter));
            "dead_letter"
        } else {
            match &item.state {
                State::Known { record, sampled: s } => {
                    if *s {
                        sampled.insert(record.job_id.as_str(), record);
                    }
                    "duplicate"
                }
                State::New { .. } => {
                    if let Some(ts) = item.timestamp {
                        m.record_to_verdict
                            .observe((committed - ts).max(0) as f64 / 1000.0);
                    }
                    "processed"
                }
                State::Repeat | State::Dead(_) => "duplicate",
            }
        };
        m.messages
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }
    for r in sampled.values() {
        sends.push(Outgoing::Rerun(r));
    }
    for ((r, v), w) in pairs.iter().zip(&written) {
        if *w == Ok(Written::New) {
            tracing::debug!(
                job_id = %r.job_id,
                miner_id = %r.miner_id,
                verdict = ?v.verdict,
                sampled = v.sampled,
                "screen verdict recorded"
            );
            m.verdicts
                .get_or_create(&vec![
                    ("stage", "screen".to_owned()),
                    ("verdict", v.verdict.as_str().to_owned()),
                ])
                .inc();
        }
    }
    let results: Vec<Result<(), Stopped>> = futures::future::join_all(sends.iter().map(|s| {
        ctx.retry("kafka-produce", move || async move {
            match s {
                Outgoing::Dead(item, letter) => {
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
                Outgoing::Rerun(r) => {
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
    m.lap("produce", &mut lap);
    Ok(offsets)
}

/// A message the screen stage sends for a batch: a dead letter, or a re-run request.
enum Outgoing<'a> {
    Dead(&'a Item, &'a DeadLetter),
    Rerun(&'a JobRecord),
}

/// Runs the screen checks on new jobs in order. A job whose checks panic gets the panic message instead
/// of a verdict.
fn check_jobs(
    screening: &Mutex<Screening>,
    jobs: &[(JobRecord, Fetched)],
) -> Vec<Result<JobVerdict, String>> {
    let mut guard = screening
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The only state judging touches is the bounded stream state, which a panic can at
    // worst leave without this job's entry.
    let Screening { checker, stream } = &mut *guard;
    jobs.iter()
        .map(|(record, fetched)| {
            super::evaluate_guarded(checker, record, fetched, Stream::Live(stream))
        })
        .collect()
}

/// The screen stage's checker, and the stream state (reuse index, peers' speeds) that
/// this stage alone owns: it sees each partition's jobs in order.
struct Screening {
    checker: Checker,
    stream: StreamState,
}

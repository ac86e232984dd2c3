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

mod context;
mod feed;
mod shutdown;
mod worker;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::checks::{self, Checker};
use crate::record::JobRecord;

pub use context::Context;
pub use feed::Feed;
pub use shutdown::{Shutdown, Stopped, Trigger};
pub use worker::{WorkerArgs, main, spawn};

/// Runs judging work on a blocking thread. Its panics are caught per job inside
/// ([`evaluate_guarded`]), so a failed join is a bug outside the checks: the worker
/// stops rather than drop the batch's jobs.
pub async fn judge_off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Stopped> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "the judging thread failed");
        Stopped
    })
}

/// Records verdicts at one stage. When Postgres refuses the batch for one of its
/// inputs ([`crate::store::refuses_input`]: a NUL character, an oversized row), the batch is
/// written again one job at a time, so that only the refused jobs fail: each comes back
/// as `Err(why)` for the caller to dead-letter, and every other job is written. An
/// outage is retried as always; nothing here turns one into a refusal.
pub async fn record_verdicts_isolating(
    ctx: &Context,
    pairs: &[(&JobRecord, &checks::JobVerdict)],
    stage: crate::store::Stage,
) -> Result<Vec<Result<crate::store::Written, String>>, Stopped> {
    let refused = crate::store::refuses_input;
    let batch = ctx
        .retry_refusable("postgres", refused, || {
            ctx.store.record_verdicts(pairs, stage)
        })
        .await?;
    let error = match batch {
        Ok(written) => return Ok(written.into_iter().map(Ok).collect()),
        Err(e) => e,
    };
    tracing::warn!(error = %error, jobs = pairs.len(),
        "Postgres refused a batch of verdicts; writing its jobs one at a time");
    let mut out = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let one = ctx
            .retry_refusable("postgres", refused, || {
                ctx.store.record_verdicts(std::slice::from_ref(pair), stage)
            })
            .await?;
        out.push(match one {
            Ok(w) => Ok(w
                .first()
                .copied()
                .unwrap_or(crate::store::Written::Duplicate)),
            Err(e) => {
                tracing::warn!(job_id = %pair.0.job_id, miner_id = %pair.0.miner_id, error = %e,
                    "Postgres refused this job's verdict; it goes to the dead-letter topic");
                Err(format!("Postgres refused the job's verdict: {e}"))
            }
        });
    }
    Ok(out)
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

/// Decodes and fingerprints an SD output on the rayon pool ([`checks::prepare_image`])
/// and awaits it without holding a runtime thread: the screen worker decodes each
/// output as soon as it arrives, while the batch's other fetches go on. A panic leaves
/// the output undecoded, as in [`prepare_all`]. `Err(Stopped)` only if the pool lost
/// the job, so that the worker stops and the batch is redelivered rather than judged
/// without its output.
pub async fn prepare_image_async(
    rules: Arc<crate::rules::ImageRules>,
    mut fetched: checks::Fetched,
) -> Result<checks::Fetched, Stopped> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            checks::prepare_image(&rules, &mut fetched);
        }));
        let _ = tx.send(fetched);
    });
    rx.await.map_err(|_| {
        tracing::error!("the decoding thread lost an output");
        Stopped
    })
}

/// [`Checker::evaluate`], with a panic turned into its message. Checks are written never
/// to panic on miner data; should one still do so, that job becomes a `judge_panicked`
/// dead letter instead of a dead worker or a job silently dropped from its batch. The
/// only state judging touches is the bounded stream state, which a panic can at worst
/// leave without this job's entry.
pub fn evaluate_guarded(
    checker: &Checker,
    record: &JobRecord,
    fetched: &checks::Fetched,
    stream: checks::Stream<'_>,
) -> Result<checks::JobVerdict, String> {
    catch_unwind(AssertUnwindSafe(|| {
        checker.evaluate(record, fetched, stream)
    }))
    .map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        tracing::error!(job_id = %record.job_id, panic = %why, "a check panicked");
        format!("a check panicked: {why}")
    })
}

/// The span a batch of messages is handled in: the worker, the batch's size and where
/// it starts, so that every line logged for the batch says which messages it concerns.
pub fn batch_span(worker: &'static str, batch: &[rdkafka::message::OwnedMessage]) -> tracing::Span {
    use rdkafka::Message;
    let first = batch.first();
    tracing::info_span!(
        "batch",
        worker,
        messages = batch.len(),
        partition = first.map(|m| m.partition()),
        first_offset = first.map(|m| m.offset()),
    )
}

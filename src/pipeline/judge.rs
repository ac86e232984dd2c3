//! `judge`: decides on every miner whose evidence changed, with the library's
//! `decide`, once the evidence has settled (`judge_settle_ms` without a new verdict,
//! and no sampled job still waiting for its re-run; at most `judge_max_wait_secs`).
//! Each decision is one Postgres transaction that writes the slash with its outbox
//! event, or the review flag, through the ledger port (`case::Ledger` for `Store`). Several judges can run: a
//! per-miner advisory lock serializes them, and slash ids are deterministic.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;

use super::{Context, Stopped};
use crate::case::{self, Ledger};
use crate::decide::Action;
use crate::events;

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let key = events::signing_key_from_hex(ctx.settings.secrets.signing_key.expose())
        .map_err(anyhow::Error::msg)?;
    let poll = Duration::from_millis(ctx.settings.pipeline.poll_ms);
    tracing::info!(
        public_key = hex::encode(key.verifying_key().as_bytes()),
        "judge deciding; events are signed with this key"
    );
    loop {
        match step(&ctx, &key).await {
            Ok(0) => {
                if ctx.idle(poll).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(Stopped) => break,
        }
    }
    Ok(())
}

/// Most miners one step decides on.
const STEP_MINERS: i64 = 100;

/// One step of the judge: decides on the miners whose evidence has settled (at most
/// `STEP_MINERS`) and returns how many. Zero means there was nothing to do; a
/// test can call this until it returns zero instead of waiting on a running worker.
pub async fn step(ctx: &Context, key: &SigningKey) -> Result<usize, Stopped> {
    let p = &ctx.settings.pipeline;
    let settle = Duration::from_millis(p.judge_settle_ms);
    let max_wait = Duration::from_secs(p.judge_max_wait_secs);
    let miners = ctx
        .retry("postgres", || {
            ctx.store.settled_miners(settle, max_wait, STEP_MINERS)
        })
        .await?;
    for miner in &miners {
        // A decision in flight finishes even when a stop is requested: it is one
        // short transaction.
        let factor = ctx
            .retry("postgres", || ctx.store.points_factor(miner, &ctx.rules))
            .await?;
        let decision = ctx
            .retry("postgres", || {
                ctx.store.decide(miner, &ctx.rules, factor, |history| {
                    case::entry(miner, history, &ctx.rules, Some(key))
                })
            })
            .await?
            .decision;
        let action = decision.action.as_str();
        let mode = if p.shadow { "shadow" } else { "live" };
        ctx.metrics
            .decisions
            .get_or_create(&vec![
                ("action", action.to_owned()),
                ("mode", mode.to_owned()),
            ])
            .inc();
        if decision.action != Action::None {
            tracing::info!(
                miner_id = %miner,
                action,
                mode,
                honest_probability = decision.honest_probability,
                review_probability = decision.review_probability,
                slash_id = decision.slash.as_ref().map(|s| s.slash_id.as_str()),
                jobs = decision.slash.as_ref().map(|s| s.jobs.len()),
                "decision"
            );
            if let Some(slash) = &decision.slash {
                let jobs: Vec<&str> = slash.jobs.iter().map(|j| j.as_str()).collect();
                tracing::debug!(slash_id = %slash.slash_id, jobs = jobs.join(","), "slash covers");
            }
        }
    }
    Ok(miners.len())
}

//! `judge`: decides on every miner whose evidence changed, with the library's
//! `decide`, once the evidence has settled (`judge_settle_ms` without a new verdict,
//! and no sampled job still waiting for its re-run; at most `judge_max_wait_secs`).
//! Each decision is one Postgres transaction that writes the slash with its outbox
//! event, or the review flag, through the ledger port (`case::Ledger` for `Store`). Several judges can run: a
//! per-miner advisory lock serializes them, and slash ids are deterministic.

use std::sync::Arc;
use std::time::Duration;

use super::{Context, Stopped};
use crate::case::{self, Ledger};
use crate::decide::Action;
use crate::events;

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let key = events::signing_key_from_hex(ctx.settings.secrets.signing_key.expose())
        .map_err(anyhow::Error::msg)?;
    let p = &ctx.settings.pipeline;
    let settle = Duration::from_millis(p.judge_settle_ms);
    let max_wait = Duration::from_secs(p.judge_max_wait_secs);
    let poll = Duration::from_millis(p.poll_ms);
    tracing::info!(
        public_key = hex::encode(key.verifying_key().as_bytes()),
        "judge deciding; events are signed with this key"
    );
    loop {
        let Ok(miners) = ctx
            .retry("postgres", || {
                ctx.store.settled_miners(settle, max_wait, 100)
            })
            .await
        else {
            break;
        };
        if miners.is_empty() {
            if ctx.idle(poll).await.is_err() {
                break;
            }
            continue;
        }
        for miner in miners {
            // A decision in flight finishes even when a stop is requested: it is one
            // short transaction.
            let Ok(factor) = ctx
                .retry("postgres", || ctx.store.points_factor(&miner, &ctx.rules))
                .await
            else {
                return Ok(());
            };
            let decision = match ctx
                .retry("postgres", || {
                    ctx.store.decide(&miner, &ctx.rules, factor, |history| {
                        case::entry(&miner, history, &ctx.rules, Some(&key))
                    })
                })
                .await
            {
                Ok(c) => c.decision,
                Err(Stopped) => return Ok(()),
            };
            let action = match decision.action {
                Action::None => "none",
                Action::FlagForReview => "flag_for_review",
                Action::Slash => "slash",
            };
            ctx.metrics
                .decisions
                .get_or_create(&vec![("action", action.to_owned())])
                .inc();
            if decision.action != Action::None {
                tracing::info!(
                    miner = %miner,
                    action,
                    honest_probability = decision.honest_probability,
                    review_probability = decision.review_probability,
                    slash_id = decision.slash.as_ref().map(|s| s.slash_id.as_str()),
                    "decision"
                );
            }
        }
    }
    Ok(())
}

//! `publish`: drains the outbox to `ledger.slashes`. Each round claims up to
//! `publish_batch` unpublished events (`FOR UPDATE SKIP LOCKED`, so several publishers
//! never hold the same event), produces them with the idempotent producer, and marks
//! them published in the same transaction once the broker acknowledged every one. A
//! crash after the acknowledgement and before the commit publishes the events again:
//! the ledger drops duplicates by `slash_id` (the message key's event id).

use std::sync::Arc;
use std::time::Duration;

use super::Context;
use crate::kafka;

/// How often the publisher refreshes the backlog gauges, and how often a held outbox
/// is reported.
const BACKLOG_EVERY: Duration = Duration::from_secs(10);

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let poll = Duration::from_millis(ctx.settings.pipeline.poll_ms);
    let publishing = ctx.settings.pipeline.publish;
    ctx.metrics.backlog.publishing.set(i64::from(publishing));
    if publishing {
        tracing::info!(topic = %ctx.settings.kafka.slashes_topic, "publisher draining the outbox");
    } else {
        tracing::warn!("publishing is off (pipeline.publish = false): events stay in the outbox");
    }
    let mut backlog_at: Option<std::time::Instant> = None;
    let mut warned_at: Option<std::time::Instant> = None;
    loop {
        if backlog_at.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
            backlog_at = Some(std::time::Instant::now());
            let held = report_backlog(&ctx)
                .await
                .filter(|b| !publishing && b.unpublished > 0);
            // Held events are said once a minute; the gauges say it meanwhile.
            if let Some(b) = held
                && warned_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
            {
                warned_at = Some(std::time::Instant::now());
                tracing::warn!(
                    held = b.unpublished,
                    oldest_secs = b.oldest_unpublished_secs.round(),
                    "publishing is off: events held in the outbox"
                );
            }
        }
        if !publishing {
            if ctx.idle(BACKLOG_EVERY).await.is_err() {
                break;
            }
            continue;
        }
        match ctx.retry("publish", || publish_round(&ctx)).await {
            Ok(0) => {
                if ctx.idle(poll).await.is_err() {
                    break;
                }
            }
            Ok(n) => {
                ctx.metrics.events_published.inc_by(n as u64);
                tracing::info!(events = n, "published");
            }
            Err(_) => break,
        }
    }
    Ok(())
}

/// One claim-produce-mark transaction; returns how many events were published.
async fn publish_round(ctx: &Context) -> anyhow::Result<usize> {
    let mut tx = ctx.store.pool().begin().await?;
    let events = ctx
        .store
        .claim_outbox(&mut tx, ctx.settings.pipeline.publish_batch)
        .await?;
    if events.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    // The outbox says what each event is; the settings say where that kind goes. The
    // table's CHECK constraint admits no other kind.
    let topic_for = |kind: &str| match kind {
        crate::store::SLASH_EVENT | crate::store::REVERSAL_EVENT => {
            Ok(ctx.settings.kafka.slashes_topic.clone())
        }
        other => Err(anyhow::anyhow!("outbox event of unknown kind {other:?}")),
    };
    let topics = events
        .iter()
        .map(|e| topic_for(&e.kind))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sends = events.iter().zip(topics).map(|(e, topic)| async move {
        kafka::send(&ctx.producer(), &topic, &e.key, e.envelope.as_bytes(), None).await
    });
    for r in futures::future::join_all(sends).await {
        r?;
    }
    let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    ctx.store.mark_published(&mut tx, &ids).await?;
    tx.commit().await?;
    for e in &events {
        tracing::info!(event_id = %e.event_id, kind = %e.kind, miner_id = %e.key, "event published");
    }
    Ok(events.len())
}

/// Sets the backlog gauges: the unpublished events and the age of the oldest, the open
/// review cases, the judge's queue. A failed read leaves them as they were; the next
/// round tries again.
async fn report_backlog(ctx: &Context) -> Option<crate::store::Backlog> {
    let b = match ctx.store.backlog().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the backlog");
            return None;
        }
    };
    let g = &ctx.metrics.backlog;
    g.outbox_unpublished.set(b.unpublished);
    g.outbox_oldest_unpublished_seconds
        .set(b.oldest_unpublished_secs.round() as i64);
    g.review_open_cases.set(b.open_cases);
    g.judge_queue.set(b.judge_queue);
    Some(b)
}

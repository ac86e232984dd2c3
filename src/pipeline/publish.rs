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

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let poll = Duration::from_millis(ctx.settings.pipeline.poll_ms);
    tracing::info!(topic = %ctx.settings.kafka.slashes_topic, "publisher draining the outbox");
    loop {
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
    Ok(events.len())
}

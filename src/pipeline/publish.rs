//! `publish`: drains the outbox to `ledger.slashes`, and sends again the re-run
//! requests a broker lost ([`resend_owed_reruns`]). Each outbox round claims up to
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

/// How often the publisher looks for owed re-runs.
const OWED_RERUNS_EVERY: Duration = Duration::from_secs(30);

/// Most owed re-run requests one round sends.
const OWED_RERUNS_BATCH: i64 = 500;

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
    let mut audit = AuditWatch::start(&ctx);
    let mut owed_at: Option<std::time::Instant> = None;
    loop {
        if let Some(watch) = audit.as_mut() {
            watch.tick(&ctx).await;
        }
        // Re-run requests are the pipeline's own: they go out whether or not the
        // ledger's events are held.
        if owed_at.is_none_or(|t| t.elapsed() >= OWED_RERUNS_EVERY) {
            owed_at = Some(std::time::Instant::now());
            match resend_owed_reruns(&ctx).await {
                Ok(0) => {}
                Ok(n) => {
                    ctx.metrics.reruns_resent.inc_by(n as u64);
                    tracing::warn!(
                        jobs = n,
                        "sent re-run requests again: sampled jobs had no re-run verdict \
                         pipeline.rerun_owed_after_secs after their screen verdict"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot send owed re-run requests; trying again later")
                }
            }
        }
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

/// The publisher's watch on the staff audit log: it keeps up with the log's hash chain
/// and, every `pipeline.audit_checkpoint_seconds` that the log grew, signs its head
/// with `secrets.audit_checkpoint_key` and sends the checkpoint to `kafka.audit_topic`,
/// outside the database. Each round verifies the whole log (a staff log of 100,000
/// entries is a read of tens of megabytes every five minutes), so an entry edited in
/// place is seen at the next round, and a broken chain is never signed: the watch logs
/// an error and sets `proctor_audit_log_broken` until the log verifies again.
struct AuditWatch {
    key: ed25519_dalek::SigningKey,
    every: Duration,
    due: std::time::Instant,
    /// The head last signed.
    signed: Option<crate::review::trail::Head>,
}

impl AuditWatch {
    /// None (checkpoints off, said once) without a checkpoint key.
    fn start(ctx: &Context) -> Option<AuditWatch> {
        let secret = &ctx.settings.secrets.audit_checkpoint_key;
        if !secret.is_set() {
            tracing::warn!(
                "secrets.audit_checkpoint_key is not set: no audit-log checkpoints are signed"
            );
            return None;
        }
        // `Settings::require_secrets` checked it at start.
        let key = crate::events::signing_key_from_hex(secret.expose()).ok()?;
        tracing::info!(topic = %ctx.settings.kafka.audit_topic, "signing audit-log checkpoints");
        Some(AuditWatch {
            key,
            every: Duration::from_secs(ctx.settings.pipeline.audit_checkpoint_seconds.max(1)),
            due: std::time::Instant::now(),
            signed: None,
        })
    }

    async fn tick(&mut self, ctx: &Context) {
        if std::time::Instant::now() < self.due {
            return;
        }
        self.due = std::time::Instant::now() + self.every;
        if let Err(e) = self.checkpoint(ctx).await {
            tracing::warn!(error = %e, "cannot checkpoint the audit log; trying again later");
        }
    }

    async fn checkpoint(&mut self, ctx: &Context) -> anyhow::Result<()> {
        use crate::review::trail;
        let head = match trail::verify(&ctx.store.audit_log().await?) {
            Ok(head) => {
                ctx.metrics.audit_log_broken.set(0);
                head
            }
            Err(b) => {
                ctx.metrics.audit_log_broken.set(1);
                tracing::error!(error = %b, "the audit log's hash chain is broken: no checkpoint signed");
                return Ok(());
            }
        };
        if self.signed.as_ref() == Some(&head) {
            return Ok(());
        }
        let c = trail::sign_checkpoint(&head, chrono::Utc::now(), &self.key);
        let payload = serde_json::to_vec(&c)?;
        kafka::send(
            &ctx.producer(),
            &ctx.settings.kafka.audit_topic,
            "audit-log",
            &payload,
            None,
        )
        .await?;
        ctx.metrics.audit_checkpoints.inc();
        tracing::info!(entries = c.entries, hash = %c.hash, "audit log checkpoint sent");
        self.signed = Some(head);
        Ok(())
    }
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

/// Sends again, to the rerun topic, the re-run request of each sampled job whose
/// re-run verdict is owed (`Store::claim_owed_reruns`): the broker acknowledged the
/// screen worker's request and may have lost it (a truncated topic), or the rerun
/// worker dead-lettered or never reached it. The
/// claim commits only once the broker acknowledged every request sent. Returns how many.
pub async fn resend_owed_reruns(ctx: &Context) -> anyhow::Result<usize> {
    let p = &ctx.settings.pipeline;
    if p.rerun_resends == 0 {
        return Ok(0);
    }
    let mut tx = ctx.store.pool().begin().await?;
    let owed = ctx
        .store
        .claim_owed_reruns(
            &mut tx,
            Duration::from_secs(p.rerun_owed_after_secs),
            p.rerun_resends,
            OWED_RERUNS_BATCH,
        )
        .await?;
    let sends = owed.iter().map(|r| async move {
        let payload = r.to_json().to_string();
        kafka::send(
            &ctx.producer(),
            &ctx.settings.kafka.rerun_topic,
            &r.miner_id.to_string(),
            payload.as_bytes(),
            None,
        )
        .await
    });
    for r in futures::future::join_all(sends).await {
        r?;
    }
    tx.commit().await?;
    Ok(owed.len())
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
    g.review_oldest_confirming_seconds
        .set(b.oldest_confirming_secs.round() as i64);
    Some(b)
}

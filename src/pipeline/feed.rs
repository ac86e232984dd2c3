//! A Kafka feed of batches: the consumer both consuming workers (`screen`, `rerun`) read
//! through. Against Kafka it is a plain consumer. tansu 0.6 on its SQLite engine neither
//! skips, stalls nor rewrites its log (docs/OPERATIONS.md, "The stand-in broker"), so
//! the recovery its S3 engine needed is gone with that engine; its group coordinator
//! still orphans partitions, which [`orphans`] works around, only under
//! `kafka.compat = "tansu-0.6"`.

mod orphans;

use std::time::Duration;

use rdkafka::message::{BorrowedMessage, OwnedMessage};

use super::{Context, Stopped};
use crate::kafka::{self, Backoff};

/// A consumer of one worker's topic, handing out batches of messages. It waits for a
/// batch, reports the consumer lag, and stores and commits the offsets of each batch
/// processed. A partition's next batch starts where the group's commit is, so a batch
/// not committed (a worker killed, a rebalance) is delivered again.
pub struct Feed {
    consumer: kafka::Consumer,
    topic: String,
    /// When the consumer lag was last reported.
    lag_at: std::time::Instant,
    /// The orphaned-partition watch: `Some` only under `kafka.compat = "tansu-0.6"`.
    orphans: Option<Rejoin>,
}

/// The orphan watch, and what a rejoin needs to make a new consumer.
struct Rejoin {
    watch: orphans::OrphanWatch,
    kafka: crate::settings::KafkaSettings,
    group_suffix: &'static str,
    max_poll: Duration,
}

/// The longest the feed waits for messages at a time, between two looks at whether the
/// consumer lag is due.
const WAIT_AT_MOST: Duration = Duration::from_millis(500);

/// How often the feed reports its consumer lag.
const LAG_EVERY: Duration = Duration::from_secs(10);

impl Feed {
    /// Subscribes to `topic` in the settings' group plus `group_suffix`.
    pub fn new(
        kafka: &crate::settings::KafkaSettings,
        group_suffix: &'static str,
        topic: &str,
    ) -> Result<Feed, rdkafka::error::KafkaError> {
        Feed::with_max_poll(kafka, group_suffix, topic, kafka::MAX_POLL_INTERVAL)
    }

    /// A feed whose batches may take up to `max_poll` each.
    pub fn with_max_poll(
        kafka: &crate::settings::KafkaSettings,
        group_suffix: &'static str,
        topic: &str,
        max_poll: Duration,
    ) -> Result<Feed, rdkafka::error::KafkaError> {
        Ok(Feed {
            consumer: kafka::consumer(kafka, group_suffix, &[topic], max_poll)?,
            topic: topic.to_owned(),
            lag_at: std::time::Instant::now(),
            orphans: (kafka.compat == crate::settings::KafkaCompat::Tansu06).then(|| Rejoin {
                watch: orphans::OrphanWatch::default(),
                kafka: kafka.clone(),
                group_suffix,
                max_poll,
            }),
        })
    }

    /// Whether this feed watches for orphaned partitions (only under
    /// `kafka.compat = "tansu-0.6"`).
    pub fn watches_orphans(&self) -> bool {
        self.orphans.is_some()
    }

    /// Waits for the next batch of up to `max` messages.
    /// `Err(Stopped)` once the worker is asked to stop.
    pub async fn next(&mut self, ctx: &Context, max: usize) -> Result<Vec<OwnedMessage>, Stopped> {
        loop {
            let batch = self.try_next(ctx, max, WAIT_AT_MOST).await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// Like [`Feed::next`], but returns an empty batch when nothing arrives within
    /// `wait`: for a worker that has other work to finish meanwhile.
    pub async fn try_next(
        &mut self,
        ctx: &Context,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<OwnedMessage>, Stopped> {
        if self.lag_at.elapsed() >= LAG_EVERY {
            self.lag_at = std::time::Instant::now();
            self.report_lag(ctx);
        }
        if self
            .orphans
            .as_mut()
            .is_some_and(|r| r.watch.due(std::time::Instant::now()))
        {
            self.watch_orphans();
        }
        next_batch(ctx, &self.consumer, max, wait.min(WAIT_AT_MOST)).await
    }

    /// Sets `consumer_lag` for each assigned partition: the partition's end as the
    /// last fetch saw it, minus the consumer's position. No request to the broker.
    fn report_lag(&self, ctx: &Context) {
        use rdkafka::consumer::Consumer;
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for e in positions.elements_for_topic(&self.topic) {
            let (rdkafka::Offset::Offset(at), Some(end)) = (
                e.offset(),
                cached_high_watermark(&self.consumer, &self.topic, e.partition()),
            ) else {
                continue;
            };
            ctx.metrics
                .consumer_lag
                .get_or_create(&vec![
                    ("topic", self.topic.clone()),
                    ("partition", e.partition().to_string()),
                ])
                .set((end - at).max(0));
        }
    }

    /// Looks at the other members' partitions and, when one is orphaned (see
    /// [`orphans`]), leaves the group and joins it again with a new consumer. Dropping
    /// the old consumer commits its stored offsets and sends LeaveGroup.
    fn watch_orphans(&mut self) {
        let Some(r) = self.orphans.as_mut() else {
            return;
        };
        let Some(others) = orphans::others(&self.consumer, &self.topic) else {
            return;
        };
        let after = orphans::ORPHANED_AFTER.max(r.max_poll * 2);
        let stale = r.watch.stale(std::time::Instant::now(), &others, after);
        let orphan = stale.into_iter().find_map(|p| {
            let committed = others.iter().find(|(o, _)| *o == p)?.1;
            let end = orphans::end(&self.consumer, &self.topic, p)?;
            orphans::orphaned(committed, end).then_some((p, committed, end))
        });
        let Some((partition, committed, end)) = orphan else {
            return;
        };
        tracing::warn!(
            topic = %self.topic,
            partition,
            committed = ?committed,
            end,
            "another member's partition has not moved; rejoining the group (kafka.compat tansu-0.6)"
        );
        match kafka::consumer(&r.kafka, r.group_suffix, &[self.topic.as_str()], r.max_poll) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut self.consumer, fresh);
                orphans::blocking(|| drop(old));
                r.watch.reset();
            }
            Err(e) => tracing::error!(error = %e, "cannot create a consumer to rejoin with"),
        }
    }

    /// Stores the offsets of a processed batch and commits them at once, without
    /// waiting for the answer. librdkafka's auto-commit (every second) commits them too
    /// if this commit is lost. A worker killed between a batch's recording and its
    /// commit has that batch redelivered to the partition's next owner: committing at
    /// once, rather than at the next auto-commit, keeps that to the batches in flight
    /// (the duplicate deliveries the crash test counts).
    pub fn store(&self, offsets: &kafka::Offsets) {
        if offsets.is_empty() {
            return;
        }
        if let Err(e) = offsets.store(&self.consumer) {
            tracing::error!(error = %e, "cannot store offsets; the batch will be redelivered");
            return;
        }
        if let Err(e) = rdkafka::consumer::Consumer::commit_consumer_state(
            &self.consumer,
            rdkafka::consumer::CommitMode::Async,
        ) {
            // Nothing stored to commit (a revoked partition), or the broker is away:
            // the auto-commit retries.
            tracing::debug!(error = %e, "offsets not committed at once");
        }
    }
}

/// The partition's high watermark as the last fetch response gave it, from librdkafka's
/// cache (no request). Not `fetch_watermarks`: tansu 0.6 answers ListOffsets(latest)
/// with the base offset of the most recently written batch object plus one, which is
/// not the end of the log.
fn cached_high_watermark(consumer: &kafka::Consumer, topic: &str, partition: i32) -> Option<i64> {
    use rdkafka::consumer::Consumer;
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` is borrowed, `topic` is a
    // NUL-terminated string that outlives the call, and the call only writes the two
    // out-parameters from librdkafka's own locked cache.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// Waits up to `idle` for a first message, then takes more for up to the batch wait or
/// until `max` are held. Consumer errors (a broker that is down) are logged and waited
/// out.
async fn next_batch(
    ctx: &Context,
    consumer: &kafka::Consumer,
    max: usize,
    idle: Duration,
) -> Result<Vec<OwnedMessage>, Stopped> {
    let p = &ctx.settings.pipeline;
    let mut stop = ctx.shutdown.clone();
    let mut backoff = Backoff::new(ctx.max_backoff());
    let idle_until = tokio::time::Instant::now() + idle;
    let first = loop {
        let got: Result<BorrowedMessage<'_>, _> = tokio::select! {
            m = consumer.recv() => m,
            _ = tokio::time::sleep_until(idle_until) => {
                return Ok(Vec::new());
            }
            _ = stop.wait() => return Err(Stopped),
        };
        match got {
            Ok(m) => break m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                ctx.health.degraded(&format!("kafka: {e}"));
                ctx.idle(backoff.delay()).await?;
            }
        }
    };
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(p.batch_wait_ms);
    while batch.len() < max.max(1) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                break;
            }
            Err(_) => break,
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{KafkaCompat, Settings};

    /// The plain path never runs the tansu workaround: only `kafka.compat = "tansu-0.6"`
    /// gives a feed its orphan watch. (No broker is needed to make a consumer.)
    #[tokio::test]
    async fn only_the_tansu_compat_setting_watches_for_orphans() {
        let mut kafka = Settings::load_from(None, Vec::new()).unwrap().kafka;
        kafka.brokers = "127.0.0.1:1".into();
        assert_eq!(
            kafka.compat,
            KafkaCompat::None,
            "the default is the plain path"
        );
        let plain = Feed::new(&kafka, "-test", "topic").unwrap();
        assert!(!plain.watches_orphans());
        kafka.compat = KafkaCompat::Tansu06;
        let tansu = Feed::new(&kafka, "-test", "topic").unwrap();
        assert!(tansu.watches_orphans());
    }
}

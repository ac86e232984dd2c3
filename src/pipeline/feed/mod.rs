//! A Kafka feed of batches that continue their partitions: a plain consumer, which is
//! all a real Kafka needs, and with `kafka.compat = "tansu-0.6"` the recovery a broker
//! that rewrites its log needs ([`recovery`]), entered only then.

mod recovery;

use std::time::Duration;

use rdkafka::message::{BorrowedMessage, OwnedMessage};

use super::{Context, Stopped};
use crate::kafka::{self, Backoff};

pub use recovery::{ORPHANED_AFTER, STALL_AFTER};

/// A consumer of one worker's topic, handing out batches of messages that continue
/// their partitions. Both consuming workers (`screen`, `rerun`) read through it.
///
/// Against Kafka it is a plain consumer: it waits for a batch, reports the consumer
/// lag, and stores and commits the offsets of each batch processed. With
/// `kafka.compat = "tansu-0.6"` it also runs the recovery (`feed::recovery`): seeks back over
/// skipped offsets, unsticks stalled partitions, rejoins a group that orphaned some,
/// and reads again a partition whose log moved backwards.
pub struct Feed {
    conn: Conn,
    /// When the consumer lag was last reported.
    lag_at: std::time::Instant,
    /// The recovery, with `kafka.compat = "tansu-0.6"` only.
    recovery: Option<recovery::Recovery>,
}

/// The consumer and what it was made from (the recovery makes a new one to rejoin).
struct Conn {
    consumer: kafka::Consumer,
    kafka: crate::settings::KafkaSettings,
    group_suffix: &'static str,
    topic: String,
    /// The consumer's `max.poll.interval.ms`.
    max_poll: Duration,
}

impl Conn {
    /// The partitions of the topic assigned to this consumer (`None` if the client
    /// cannot say).
    fn assigned(&self) -> Option<Vec<i32>> {
        let assignment = rdkafka::consumer::Consumer::assignment(&self.consumer).ok()?;
        Some(
            assignment
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect(),
        )
    }
}

/// The longest the feed waits for messages at a time: with the recovery, between two
/// looks at the partitions' ends.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);

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
            conn: Conn {
                consumer: kafka::consumer(kafka, group_suffix, &[topic], max_poll)?,
                kafka: kafka.clone(),
                group_suffix,
                topic: topic.to_owned(),
                max_poll,
            },
            lag_at: std::time::Instant::now(),
            recovery: (kafka.compat == crate::settings::KafkaCompat::Tansu06)
                .then(recovery::Recovery::new),
        })
    }

    /// Whether this feed runs the recovery for a broker that rewrites its log.
    pub fn recovers(&self) -> bool {
        self.recovery.is_some()
    }

    /// Waits for the next batch of up to `max` messages that continue their partitions.
    /// `Err(Stopped)` once the worker is asked to stop.
    pub async fn next(&mut self, ctx: &Context, max: usize) -> Result<Vec<OwnedMessage>, Stopped> {
        loop {
            let batch = self.try_next(ctx, max, WATCH_EVERY).await?;
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
        let wait = wait.min(WATCH_EVERY);
        match &mut self.recovery {
            Some(recovery) => recovery.try_next(&mut self.conn, ctx, max, wait).await,
            // Against Kafka an outage loses nothing, and a log never moves backwards.
            None => Ok(next_batch(ctx, &self.conn.consumer, max, wait)
                .await?
                .messages),
        }
    }

    /// Sets `consumer_lag` for each assigned partition: the partition's end as the
    /// last fetch saw it, minus the consumer's position. No request to the broker.
    fn report_lag(&self, ctx: &Context) {
        use rdkafka::consumer::Consumer;
        let Ok(positions) = self.conn.consumer.position() else {
            return;
        };
        for e in positions.elements_for_topic(&self.conn.topic) {
            let (rdkafka::Offset::Offset(at), Some(end)) = (
                e.offset(),
                cached_high_watermark(&self.conn.consumer, &self.conn.topic, e.partition()),
            ) else {
                continue;
            };
            ctx.metrics
                .consumer_lag
                .get_or_create(&vec![
                    ("topic", self.conn.topic.clone()),
                    ("partition", e.partition().to_string()),
                ])
                .set((end - at).max(0));
        }
    }

    /// Stores the offsets of a processed batch and commits them at once, without
    /// waiting for the answer. librdkafka's auto-commit (every second) commits them too
    /// if this commit is lost. A worker killed between a batch's recording and its
    /// commit has that batch redelivered to the partition's next owner: committing at
    /// once, rather than at the next auto-commit, keeps that to the batches in flight
    /// (the duplicate deliveries the crash test counts).
    pub fn store(&self, offsets: &kafka::Offsets) {
        let mut offsets = offsets.clone();
        if let Some(recovery) = &self.recovery {
            offsets.retain(|topic, partition, next| {
                topic != self.conn.topic || recovery.may_store(partition, next)
            });
        }
        if offsets.is_empty() {
            return;
        }
        if let Err(e) = offsets.store(&self.conn.consumer) {
            tracing::error!(error = %e, "cannot store offsets; the batch will be redelivered");
            return;
        }
        if let Err(e) = rdkafka::consumer::Consumer::commit_consumer_state(
            &self.conn.consumer,
            rdkafka::consumer::CommitMode::Async,
        ) {
            // Nothing stored to commit (a revoked partition), or the broker is away:
            // the auto-commit retries.
            tracing::debug!(error = %e, "offsets not committed at once");
        }
    }
}

/// The group's committed offsets of the partitions that have one, in one request.
fn committed_offsets(
    consumer: &kafka::Consumer,
    topic: &str,
    partitions: &[i32],
) -> std::collections::HashMap<i32, i64> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = tokio::task::block_in_place(|| {
        rdkafka::consumer::Consumer::committed_offsets(consumer, tpl, Duration::from_secs(10))
    });
    committed
        .map(|tpl| {
            tpl.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    rdkafka::Offset::Offset(n) => Some((e.partition(), n)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
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

/// What one wait on the consumer brought.
struct Polled {
    /// Up to the batch's `max` messages; none when nothing came within the idle wait.
    messages: Vec<OwnedMessage>,
    /// Whether every broker connection went down while waiting.
    broker_lost: bool,
}

/// Waits up to `idle` for a first message, then takes more for up to the batch wait or
/// until `max` are held. Consumer errors (a broker that is down) are logged and waited
/// out.
async fn next_batch(
    ctx: &Context,
    consumer: &kafka::Consumer,
    max: usize,
    idle: Duration,
) -> Result<Polled, Stopped> {
    let p = &ctx.settings.pipeline;
    let mut stop = ctx.shutdown.clone();
    let mut backoff = Backoff::new(ctx.max_backoff());
    let idle_until = tokio::time::Instant::now() + idle;
    let mut broker_lost = false;
    let first = loop {
        let got: Result<BorrowedMessage<'_>, _> = tokio::select! {
            m = consumer.recv() => m,
            _ = tokio::time::sleep_until(idle_until) => {
                return Ok(Polled { messages: Vec::new(), broker_lost });
            }
            _ = stop.wait() => return Err(Stopped),
        };
        match got {
            Ok(m) => break m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                broker_lost |= e.rdkafka_error_code()
                    == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown);
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
    Ok(Polled {
        messages: batch,
        broker_lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{KafkaCompat, Settings};

    /// Against Kafka the feed is a plain consumer: it holds no recovery, and every way
    /// into `recovery` goes through the one it holds. Only `kafka.compat = "tansu-0.6"`
    /// gives it one. (No broker is asked: a consumer connects when it is polled.)
    #[tokio::test]
    async fn only_the_tansu_setting_gives_the_feed_a_recovery() {
        let mut kafka = Settings::load_from(None, [])
            .expect("the built-in settings load")
            .kafka;
        kafka.brokers = "127.0.0.1:9".to_owned();
        assert_eq!(
            kafka.compat,
            KafkaCompat::None,
            "the default is plain Kafka"
        );
        let plain = Feed::new(&kafka, "-feed-test", "jobs").unwrap();
        assert!(!plain.recovers());
        kafka.compat = KafkaCompat::Tansu06;
        let tansu = Feed::new(&kafka, "-feed-test", "jobs").unwrap();
        assert!(tansu.recovers());
    }
}

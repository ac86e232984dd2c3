//! Kafka plumbing for the workers: consumers, the idempotent producer, topic creation,
//! the dead-letter topic, and offset storage.
//!
//! # Delivery semantics
//!
//! - **At least once in, exactly once in effect.** Consumers run with
//!   `enable.auto.offset.store=false`. A worker stores a message's offset only after the
//!   Postgres transaction that records the message's effects has committed (and, for
//!   the screen worker, after the broker acknowledged what it produced for that
//!   message: a re-run request or a dead letter). librdkafka commits stored offsets in
//!   the background and once more on shutdown. A crash between the Postgres commit and
//!   the offset commit redelivers the message. That is harmless, because every write is
//!   idempotent on `job_id` (verdicts) or `slash_id` (slashes, outbox events).
//! - **Transient failures** (S3, Postgres or the broker unreachable, timeouts) are
//!   retried with bounded exponential backoff ([`Backoff`]) and never advance the
//!   offset. A worker asked to stop while it retries abandons the batch; the next owner
//!   of the partition gets it again.
//! - **Permanent failures** are recorded, never retried forever: a record that is not a
//!   valid job record, or whose output object is still missing after the retries, goes
//!   to the dead-letter topic with headers naming the reason, the error, and the
//!   original topic, partition and offset. An output the miner made unusable
//!   (undecodable, a decompression bomb, oversized text) is an `invalid` verdict,
//!   because that is the miner's fault and is evidence.
//! - **Slash events** leave through the transactional outbox (`store`): the slash row
//!   and its event row commit together, and `publish` marks an event published only
//!   after the broker acknowledged it. A crash in between publishes it again, so the
//!   ledger can see an event more than once and must drop duplicates by `slash_id`.
//!   tansu has no Kafka transactions (EndTxn), which is why the outbox exists.
//! - **Producer retries** are at least once too: see [`producer`] for why the
//!   idempotent producer is a setting (`kafka.idempotence`), off for tansu 0.6.
//! - **Broker faults.** tansu 0.6 can skip the rest of a record batch on a fetch that
//!   resumes inside it, stall a partition whose last batch holds the resume point, and
//!   orphan a dead member's partitions. The consuming workers read through
//!   [`crate::pipeline::Feed`], which detects each case, seeks back or rejoins the
//!   group, and drops what it already processed; none of it moves an offset early.
//! - **Ordering.** Job records are keyed by miner id, so one miner's jobs stay in one
//!   partition, in the order the job service produced them.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::settings::KafkaSettings;

/// Headers of a dead letter.
pub const DLQ_REASON: &str = "proctor-reason";
pub const DLQ_ERROR: &str = "proctor-error";
pub const DLQ_TOPIC: &str = "proctor-original-topic";
pub const DLQ_PARTITION: &str = "proctor-original-partition";
pub const DLQ_OFFSET: &str = "proctor-original-offset";

/// How long a produce may wait for the broker's acknowledgement.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// `max.poll.interval.ms` for a worker whose batches are quick (see [`consumer`]).
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// A consumer in the settings' group (plus `group_suffix`, so the screen and rerun
/// workers form separate groups), storing offsets only when told. A batch must finish
/// within `max_poll` ([`MAX_POLL_INTERVAL`] unless the worker's batches wait longer,
/// as the rerun worker's wait for reference hosts).
pub fn consumer(
    kafka: &KafkaSettings,
    group_suffix: &str,
    topics: &[&str],
    max_poll: Duration,
) -> Result<StreamConsumer, KafkaError> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("{}{group_suffix}", kafka.group_id))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // Also the rebalance timeout: tansu 0.6 waited this long for a member killed
        // with -9 before reassigning its partitions (measured: the re-run stage stalled
        // five minutes at the default). A batch must finish within it.
        .set("max.poll.interval.ms", max_poll.as_millis().to_string())
        // tansu 0.6 answers a fetch only once a re-read of the partition finds nothing
        // new or the request's byte budget is spent, and then still sleeps half the
        // remaining wait. With librdkafka's defaults (50 MB, 500 ms) a partition that
        // is being written to steadily was answered only after its producer paused:
        // jobs paced at 2,000/s waited 11 to 16 s for their verdicts (measured with
        // scripts/bench-pipeline and librdkafka's fetch debug log). A 1 MB budget
        // bounds that wait at about a megabyte of records.
        .set("fetch.max.bytes", "1048576")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    consumer.subscribe(topics)?;
    Ok(consumer)
}

/// The producer. With `kafka.idempotence` (a real Kafka cluster) librdkafka's
/// retries never duplicate a message. Without it (the default, for tansu 0.6: its S3
/// store answered OutOfOrderSequenceNumber and then failed the producer fatally when
/// several idempotent producers started at once, measured in the crash test) a retry
/// may duplicate a message but never reorders one, because one request is in flight
/// per connection. Duplicates are harmless: every consumer here is idempotent, and the
/// ledger drops repeated `slash_id`s.
pub fn producer(kafka: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    producer_lingering(kafka, Duration::from_millis(5))
}

/// [`producer`] with another `linger.ms`: how long a batch waits for more records.
/// Larger batches are fewer S3 objects for tansu to write and read back
/// (docs/ARCHITECTURE.md).
pub fn producer_lingering(
    kafka: &KafkaSettings,
    linger: Duration,
) -> Result<FutureProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set(
            "enable.idempotence",
            if kafka.idempotence { "true" } else { "false" },
        )
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", linger.as_millis().to_string())
        .set("message.timeout.ms", "60000")
        .create()
}

/// Creates the topics that do not exist yet (tansu does not create them on first use).
pub async fn ensure_topics(brokers: &str, topics: &[(&str, i32)]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code)).map_err(|e| {
                    tracing::error!(topic, error = %e, "cannot create topic");
                    e
                });
            }
        }
    }
    Ok(())
}

/// Produces one message and waits for the broker's acknowledgement.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<(), KafkaError> {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    if let Some(h) = headers {
        record = record.headers(h);
    }
    producer
        .send(record, PRODUCE_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// Where a consumed message came from, kept after the message itself is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Origin {
    pub fn of<M: Message>(m: &M) -> Origin {
        Origin {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
        }
    }
}

/// Why a message can never be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// A stable, machine-readable reason: `invalid_record`, `object_missing`, ...
    pub reason: &'static str,
    /// The human-readable error.
    pub error: String,
}

/// Sends the original key and payload to the dead-letter topic, with the reason, the
/// error and the origin in headers.
pub async fn dead_letter(
    producer: &FutureProducer,
    dlq_topic: &str,
    origin: &Origin,
    key: Option<&[u8]>,
    payload: &[u8],
    letter: &DeadLetter,
) -> Result<(), KafkaError> {
    let partition = origin.partition.to_string();
    let offset = origin.offset.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: DLQ_REASON,
            value: Some(letter.reason),
        })
        .insert(Header {
            key: DLQ_ERROR,
            value: Some(letter.error.as_str()),
        })
        .insert(Header {
            key: DLQ_TOPIC,
            value: Some(origin.topic.as_str()),
        })
        .insert(Header {
            key: DLQ_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: DLQ_OFFSET,
            value: Some(offset.as_str()),
        });
    let key = String::from_utf8_lossy(key.unwrap_or_default()).into_owned();
    send(producer, dlq_topic, &key, payload, Some(headers)).await
}

/// The next offset to read, per partition, for a batch of processed messages.
#[derive(Debug, Default)]
pub struct Offsets(BTreeMap<(String, i32), i64>);

impl Offsets {
    pub fn processed(&mut self, origin: &Origin) {
        let next = self
            .0
            .entry((origin.topic.clone(), origin.partition))
            .or_insert(origin.offset + 1);
        *next = (*next).max(origin.offset + 1);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Stores the offsets for the next (auto-)commit. Call only once the batch's
    /// effects are durable.
    pub fn store(&self, consumer: &StreamConsumer) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in &self.0 {
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        match consumer.store_offsets(&list) {
            Ok(()) => Ok(()),
            // The partition was revoked by a rebalance while the batch ran: its new
            // owner starts from the last commit and redoes the batch, harmlessly.
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {
                tracing::warn!("partition revoked before its offsets were stored");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Bounded exponential backoff for transient failures: 100 ms doubling to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    pub attempts: u32,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
            max,
            attempts: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn delay(&mut self) -> Duration {
        let d = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        self.attempts += 1;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_keep_the_highest_next_offset_per_partition() {
        let mut o = Offsets::default();
        for (p, off) in [(0, 5), (0, 3), (1, 9), (0, 7)] {
            o.processed(&Origin {
                topic: "t".into(),
                partition: p,
                offset: off,
            });
        }
        assert_eq!(o.0.get(&("t".to_owned(), 0)), Some(&8));
        assert_eq!(o.0.get(&("t".to_owned(), 1)), Some(&10));
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let d: Vec<u128> = (0..5).map(|_| b.delay().as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 500, 500]);
        assert_eq!(b.attempts, 5);
    }
}

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
//! - **Producer retries** are exactly once with the idempotent producer
//!   (`kafka.idempotence`, on by default) and at least once without it: see
//!   [`producer`] for why the local services' settings turn it off for tansu 0.6.
//! - **Broker faults.** None are worked around against Kafka. With
//!   `kafka.compat = "tansu-0.6"` (set by `scripts/services.sh env`, never the
//!   default) fetches are kept small ([`consumer`]) and the feed rejoins a group whose
//!   coordinator orphaned a partition (`pipeline::Feed`); the stand-in runs on tansu's
//!   SQLite engine, which keeps what it acknowledged across restarts. Records a broker
//!   loses anyway are recovered from Postgres where proctor holds them (re-run
//!   requests owed, slash events by id: docs/OPERATIONS.md, "Records the broker lost").
//! - **Ordering.** Job records are keyed by miner id, so one miner's jobs stay in one
//!   partition, in the order the job service produced them.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::settings::{KafkaCompat, KafkaSettings};

/// librdkafka's log and error callbacks, routed through `tracing` (target
/// `librdkafka`) at levels an operator can alert on: an outage the workers ride out
/// (every broker down, a refused connection, a timeout) is a warning, not an error;
/// the workers report the outage themselves, on `/healthz` and in their retries.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogContext;

/// An error librdkafka reports and retries by itself.
fn transient(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::NetworkException
        )
    )
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        use RDKafkaLogLevel::*;
        // FAIL is librdkafka's facility for a broker connection it lost or could not
        // open, which it retries.
        match level {
            Emerg | Alert | Critical | Error if fac != "FAIL" => {
                tracing::error!(target: "librdkafka", facility = fac, "{message}")
            }
            Emerg | Alert | Critical | Error | Warning => {
                tracing::warn!(target: "librdkafka", facility = fac, "{message}")
            }
            Notice | Info => tracing::info!(target: "librdkafka", facility = fac, "{message}"),
            Debug => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if transient(error.rdkafka_error_code()) {
            tracing::warn!(target: "librdkafka", error = %error, reason, "broker unreachable; librdkafka retries");
        } else {
            tracing::error!(target: "librdkafka", error = %error, reason, "librdkafka error");
        }
    }
}

/// Each rebalance is logged at info with the partitions it moved (`partitions assigned`,
/// `partitions revoked`): what a member holds, and how often a group hands its
/// partitions around, is visible in the workers' logs (each hand-over redelivers the
/// batches in flight).
impl ConsumerContext for LogContext {
    fn post_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        let describe = |list: &TopicPartitionList| -> String {
            list.elements()
                .iter()
                .map(|e| format!("{}/{}", e.topic(), e.partition()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(partitions = %describe(list), "partitions assigned")
            }
            Rebalance::Revoke(list) => {
                tracing::info!(partitions = %describe(list), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }
}

/// The consumer every worker reads with.
pub type Consumer = StreamConsumer<LogContext>;
/// The producer every worker writes with.
pub type Producer = FutureProducer<LogContext>;

/// The client settings every client shares: the brokers, how to reach them
/// (TLS, SASL: `KafkaSettings::validate` has checked they fit together), and
/// librdkafka's log level. Every producer, consumer and admin client starts here.
pub fn client(kafka: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    let protocol = kafka.security_protocol;
    c.set("bootstrap.servers", &kafka.brokers)
        .set("security.protocol", protocol.name())
        .set_log_level(RDKafkaLogLevel::Info);
    if protocol.sasl() {
        c.set("sasl.mechanism", kafka.sasl_mechanism.name())
            .set("sasl.username", &kafka.sasl_username)
            .set("sasl.password", kafka.sasl_password.expose());
    }
    if protocol.tls() {
        for (key, value) in [
            ("ssl.ca.location", &kafka.ssl_ca_location),
            ("ssl.certificate.location", &kafka.ssl_certificate_location),
            ("ssl.key.location", &kafka.ssl_key_location),
        ] {
            if !value.is_empty() {
                c.set(key, value);
            }
        }
        if kafka.ssl_key_password.is_set() {
            c.set("ssl.key.password", kafka.ssl_key_password.expose());
        }
    }
    c
}

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
) -> Result<Consumer, KafkaError> {
    let mut config = client(kafka);
    config
        .set("group.id", format!("{}{group_suffix}", kafka.group_id))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // Also the rebalance timeout: a member that stops polling (or was killed with
        // -9) keeps its partitions this long (measured on tansu 0.6: the re-run stage
        // stalled five minutes at the default). A batch must finish within it.
        .set("max.poll.interval.ms", max_poll.as_millis().to_string());
    if kafka.compat == KafkaCompat::Tansu06 {
        // tansu 0.6 answers a fetch only once a re-read of the partition finds nothing
        // new or the request's byte budget is spent, and then still sleeps half the
        // remaining wait. With librdkafka's defaults (50 MB, 500 ms) a partition that
        // is being written to steadily was answered only after its producer paused:
        // jobs paced at 2,000/s waited 11 to 16 s for their verdicts (measured with
        // scripts/bench-pipeline and librdkafka's fetch debug log). A 1 MB budget
        // bounds that wait at about a megabyte of records.
        config
            .set("fetch.max.bytes", "1048576")
            .set("fetch.wait.max.ms", "100");
    }
    let consumer: Consumer = config.create_with_context(LogContext)?;
    consumer.subscribe(topics)?;
    Ok(consumer)
}

/// The producer. With `kafka.idempotence` (the default, for a Kafka cluster)
/// librdkafka's retries never duplicate a message. Without it (the local services'
/// settings turn it off for tansu 0.6: its S3 store answered OutOfOrderSequenceNumber
/// and then failed the producer fatally when several idempotent producers started at
/// once, measured in the crash test) a retry may duplicate a message but never
/// reorders one, because one request is in flight per connection. Duplicates are
/// harmless: every consumer here is idempotent, and the ledger drops repeated
/// `slash_id`s.
pub fn producer(kafka: &KafkaSettings) -> Result<Producer, KafkaError> {
    producer_lingering(kafka, Duration::from_millis(5))
}

/// [`producer`] with another `linger.ms`: how long a batch waits for more records.
/// Larger batches are fewer S3 objects for tansu to write and read back
/// (docs/ARCHITECTURE.md).
pub fn producer_lingering(kafka: &KafkaSettings, linger: Duration) -> Result<Producer, KafkaError> {
    client(kafka)
        .set(
            "enable.idempotence",
            if kafka.idempotence { "true" } else { "false" },
        )
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", linger.as_millis().to_string())
        .set("message.timeout.ms", "60000")
        .create_with_context(LogContext)
}

/// Creates the topics that do not exist yet, with the settings' replication factor
/// (brokers that create topics on first use would give them their defaults; tansu
/// creates none).
pub async fn ensure_topics(
    kafka: &KafkaSettings,
    topics: &[(&str, i32)],
) -> Result<(), KafkaError> {
    let admin: AdminClient<LogContext> = client(kafka).create_with_context(LogContext)?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| {
            NewTopic::new(
                name,
                *partitions,
                TopicReplication::Fixed(kafka.replication_factor),
            )
        })
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

/// Every message of `topic`, from the start of each partition, read until none arrives
/// for `idle`, in partition and offset order: for the tools that read a whole topic
/// (the dead letters, the audit log's checkpoints). The reader's group is the
/// settings' group plus `-{reader}`; nothing is committed under it.
pub async fn read_topic(
    kafka: &KafkaSettings,
    topic: &str,
    reader: &str,
    idle: Duration,
) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    use anyhow::Context as _;
    let consumer: Consumer = client(kafka)
        // librdkafka wants a group id even for assigned partitions.
        .set("group.id", format!("{}-{reader}", kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create_with_context(LogContext)?;
    let meta = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read the metadata of {topic}"))?;
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        anyhow::bail!("the topic {topic} does not exist");
    }
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut messages = Vec::new();
    loop {
        match tokio::time::timeout(idle, consumer.recv()).await {
            Ok(Ok(m)) => messages.push(m.detach()),
            Ok(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
            Err(_) => break,
        }
    }
    messages.sort_by_key(|m| (m.partition(), m.offset()));
    messages.dedup_by_key(|m| (m.partition(), m.offset()));
    Ok(messages)
}

/// Produces one message and waits for the broker's acknowledgement.
pub async fn send(
    producer: &Producer,
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

/// The job id and miner id of a message, as far as they can be read (for logs about a
/// message that may not be a valid job record): the payload's `job_id` and `miner_id`
/// strings, else the message key as the miner id. At most 128 characters each.
pub fn ids_of(key: Option<&[u8]>, payload: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Ids {
        job_id: Option<String>,
        miner_id: Option<String>,
    }
    let clip = |s: String| s.chars().take(128).collect::<String>();
    let ids: Option<Ids> = serde_json::from_slice(payload).ok();
    let (job, miner) = ids.map_or((None, None), |i| (i.job_id, i.miner_id));
    let miner = miner.or_else(|| key.map(|k| String::from_utf8_lossy(k).into_owned()));
    (job.map(clip), miner.map(clip))
}

/// The longest error a dead letter's header carries, in bytes: an error can quote what
/// it refuses (an unknown field's name, a value), and a letter twice the size of the
/// record it carries could be refused by the broker, stalling the partition behind it.
pub const MAX_DLQ_ERROR_BYTES: usize = 2048;

/// `error` cut to [`MAX_DLQ_ERROR_BYTES`] at a character boundary, saying so.
pub fn dlq_error(error: &str) -> std::borrow::Cow<'_, str> {
    if error.len() <= MAX_DLQ_ERROR_BYTES {
        return error.into();
    }
    const MORE: &str = "… (cut)";
    let mut cut = MAX_DLQ_ERROR_BYTES - MORE.len();
    while !error.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{MORE}", &error[..cut]).into()
}

/// Sends the original key and payload to the dead-letter topic, with the reason, the
/// error (cut to [`MAX_DLQ_ERROR_BYTES`]) and the origin in headers.
pub async fn dead_letter(
    producer: &Producer,
    dlq_topic: &str,
    origin: &Origin,
    key: Option<&[u8]>,
    payload: &[u8],
    letter: &DeadLetter,
) -> Result<(), KafkaError> {
    let partition = origin.partition.to_string();
    let offset = origin.offset.to_string();
    let error = dlq_error(&letter.error);
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: DLQ_REASON,
            value: Some(letter.reason),
        })
        .insert(Header {
            key: DLQ_ERROR,
            value: Some(error.as_ref()),
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
#[derive(Debug, Default, Clone)]
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
    pub fn store(&self, consumer: &Consumer) -> Result<(), KafkaError> {
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

/// Bounded exponential backoff for transient failures, with jitter (backon's): 100 ms
/// doubling to `max`, each delay stretched by a random share of itself (up to twice
/// it), so that workers that lost a service together do not retry in step.
#[derive(Debug)]
pub struct Backoff {
    delays: backon::ExponentialBackoff,
    pub attempts: u32,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff::with_builder(Backoff::builder(max))
    }

    fn builder(max: Duration) -> backon::ExponentialBuilder {
        let min = Duration::from_millis(100).min(max);
        backon::ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times()
    }

    fn with_builder(b: backon::ExponentialBuilder) -> Backoff {
        use backon::BackoffBuilder;
        Backoff {
            delays: b.build(),
            attempts: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn delay(&mut self) -> Duration {
        self.attempts += 1;
        self.delays.next().unwrap_or(Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_carries_the_security_settings() {
        use crate::settings::Settings;
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let plain = Settings::load_from(None, vars(&[])).unwrap();
        let c = client(&plain.kafka);
        assert_eq!(c.get("security.protocol"), Some("plaintext"));
        assert_eq!(c.get("sasl.username"), None);
        let s = Settings::load_from(
            None,
            vars(&[
                ("PROCTOR_KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
                ("PROCTOR_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256"),
                ("PROCTOR_KAFKA__SASL_USERNAME", "proctor-screen"),
                ("PROCTOR_KAFKA__SASL_PASSWORD", "hunter2"),
                ("PROCTOR_KAFKA__SSL_CA_LOCATION", "/etc/ssl/kafka-ca.pem"),
            ]),
        )
        .unwrap();
        let c = client(&s.kafka);
        for (key, value) in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", "proctor-screen"),
            ("sasl.password", "hunter2"),
            ("ssl.ca.location", "/etc/ssl/kafka-ca.pem"),
        ] {
            assert_eq!(c.get(key), Some(value), "{key}");
        }
        assert_eq!(c.get("ssl.certificate.location"), None);
    }

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

    /// What `LogContext` logs for librdkafka's lines, captured as text.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn librdkafka_lines_go_through_tracing_and_an_outage_is_a_warning() {
        let ctx = LogContext;
        let refused = logged(|| {
            ctx.log(
                RDKafkaLogLevel::Error,
                "FAIL",
                "Connect to ipv4#127.0.0.1:9092 failed: Connection refused",
            )
        });
        assert!(refused.contains(" WARN librdkafka"), "{refused}");
        let down = logged(|| {
            ctx.error(
                KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
                "1/1 brokers are down",
            )
        });
        assert!(down.contains(" WARN librdkafka"), "{down}");
        let other = logged(|| ctx.log(RDKafkaLogLevel::Error, "SSL", "certificate expired"));
        assert!(other.contains("ERROR librdkafka"), "{other}");
        let fatal = logged(|| {
            ctx.error(
                KafkaError::Global(RDKafkaErrorCode::Fatal),
                "producer fenced",
            )
        });
        assert!(fatal.contains("ERROR librdkafka"), "{fatal}");
    }

    #[test]
    fn a_dead_letters_error_is_kept_to_the_limit_and_cut_past_it() {
        let at = "e".repeat(MAX_DLQ_ERROR_BYTES);
        assert_eq!(dlq_error(&at), at.as_str());
        // One byte more, in multi-byte characters: cut on a boundary, and said so.
        let past = format!("{}é", "e".repeat(MAX_DLQ_ERROR_BYTES - 1));
        let cut = dlq_error(&past);
        assert!(cut.len() <= MAX_DLQ_ERROR_BYTES, "{}", cut.len());
        assert!(cut.ends_with("… (cut)"));
        // An unknown field named by a miner, as large as a record may be.
        let record = format!(
            "{{\"{}\": 1}}",
            "k".repeat(crate::record::MAX_RECORD_BYTES - 10)
        );
        let e = crate::record::JobRecord::from_json(record.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(dlq_error(&e).len() <= MAX_DLQ_ERROR_BYTES);
    }

    #[test]
    fn ids_of_a_message_come_from_its_payload_or_its_key() {
        assert_eq!(
            ids_of(Some(b"k"), br#"{"job_id":"j1","miner_id":"m1","x":1}"#),
            (Some("j1".into()), Some("m1".into()))
        );
        assert_eq!(ids_of(Some(b"m2"), b"garbage"), (None, Some("m2".into())));
        assert_eq!(ids_of(None, br#"{"job_id":7}"#), (None, None));
        let long = format!(r#"{{"job_id":"{}"}}"#, "x".repeat(1000));
        assert_eq!(ids_of(None, long.as_bytes()).0.unwrap().len(), 128);
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_with_jitter_on_top() {
        let base = [100u128, 200, 400, 500, 500, 500];
        let mut spread = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let mut b = Backoff::with_builder(
                Backoff::builder(Duration::from_millis(500)).with_jitter_seed(seed),
            );
            for want in base {
                let d = b.delay().as_millis();
                assert!((want..2 * want).contains(&d), "{d} ms for {want} ms");
                spread.insert(d);
            }
            assert_eq!(b.attempts, base.len() as u32);
        }
        assert!(spread.len() > 20, "the delays are spread: {spread:?}");
    }
}

//! `proctor dlq list` and `proctor dlq replay`: the dead-letter topic for operators.
//!
//! A dead letter is the original message (key and payload) with headers naming why it
//! could never be processed and where it came from (`kafka::dead_letter`). Both
//! commands read the whole topic from the beginning, outside any consumer group, until
//! nothing new arrives for `idle`; they move no offsets. `replay` sends the chosen
//! letters back to their original topic with their original key, for a record whose
//! cause is fixed (an object uploaded late, a bug fixed in a worker). Replaying twice
//! is harmless: every write is idempotent on the job id. A letter that fails again is
//! dead-lettered again, with a new offset.

use std::time::Duration;

use anyhow::{Context as _, Result};
use rdkafka::Message;
use rdkafka::message::Headers;
use serde::Serialize;

use crate::kafka;
use crate::settings::KafkaSettings;

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    pub error: String,
    pub original_topic: String,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    pub job_id: Option<String>,
    pub miner_id: Option<String>,
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// Which letters a command acts on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this reason (`invalid_record`, `object_missing`, ...).
    pub reason: Option<String>,
    /// Only this job.
    pub job_id: Option<String>,
    /// Only letters after this offset of the dead-letter topic (what an earlier replay
    /// printed as its last).
    pub after_offset: Option<i64>,
}

impl Filter {
    pub fn admits(&self, l: &Letter) -> bool {
        self.reason.as_ref().is_none_or(|r| *r == l.reason)
            && self
                .job_id
                .as_ref()
                .is_none_or(|j| l.job_id.as_deref() == Some(j.as_str()))
            && self.after_offset.is_none_or(|o| l.offset > o)
    }
}

fn letter_of<M: Message>(m: &M) -> Letter {
    let header = |name: &str| -> Option<String> {
        m.headers()?
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let payload = m.payload().unwrap_or_default().to_vec();
    let key = m.key().map(<[u8]>::to_vec);
    let (job_id, miner_id) = kafka::ids_of(key.as_deref(), &payload);
    Letter {
        partition: m.partition(),
        offset: m.offset(),
        reason: header(kafka::DLQ_REASON).unwrap_or_default(),
        error: header(kafka::DLQ_ERROR).unwrap_or_default(),
        original_topic: header(kafka::DLQ_TOPIC).unwrap_or_default(),
        original_partition: header(kafka::DLQ_PARTITION).and_then(|p| p.parse().ok()),
        original_offset: header(kafka::DLQ_OFFSET).and_then(|o| o.parse().ok()),
        job_id,
        miner_id,
        key,
        payload,
    }
}

/// Every letter of the dead-letter topic, in partition and offset order, read until
/// none arrives for `idle`.
pub async fn read(kafka_settings: &KafkaSettings, idle: Duration) -> Result<Vec<Letter>> {
    let messages = kafka::read_topic(
        kafka_settings,
        &kafka_settings.dlq_topic,
        "dlq-reader",
        idle,
    )
    .await?;
    Ok(messages.iter().map(letter_of).collect())
}

/// Sends each letter back to its original topic with its original key; returns how
/// many were sent.
pub async fn replay(kafka_settings: &KafkaSettings, letters: &[&Letter]) -> Result<usize> {
    let producer = kafka::producer(kafka_settings)?;
    for l in letters {
        if l.original_topic.is_empty() {
            anyhow::bail!(
                "dead letter {}:{} names no original topic",
                l.partition,
                l.offset
            );
        }
        let key = String::from_utf8_lossy(l.key.as_deref().unwrap_or_default()).into_owned();
        kafka::send(&producer, &l.original_topic, &key, &l.payload, None)
            .await
            .with_context(|| {
                format!(
                    "cannot send dead letter {}:{} to {}",
                    l.partition, l.offset, l.original_topic
                )
            })?;
    }
    Ok(letters.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(reason: &str, job: Option<&str>, offset: i64) -> Letter {
        Letter {
            partition: 0,
            offset,
            reason: reason.into(),
            error: String::new(),
            original_topic: "proctor.jobs".into(),
            original_partition: Some(0),
            original_offset: Some(1),
            job_id: job.map(str::to_owned),
            miner_id: None,
            key: None,
            payload: Vec::new(),
        }
    }

    #[test]
    fn a_filter_admits_by_reason_job_and_offset() {
        let all = Filter::default();
        let l = letter("object_missing", Some("j1"), 5);
        assert!(all.admits(&l));
        let by_reason = Filter {
            reason: Some("invalid_record".into()),
            ..Filter::default()
        };
        assert!(!by_reason.admits(&l));
        let by_job = Filter {
            job_id: Some("j1".into()),
            ..Filter::default()
        };
        assert!(by_job.admits(&l));
        assert!(!by_job.admits(&letter("object_missing", None, 5)));
        let after = Filter {
            after_offset: Some(5),
            ..Filter::default()
        };
        assert!(!after.admits(&l));
        assert!(after.admits(&letter("x", None, 6)));
    }
}

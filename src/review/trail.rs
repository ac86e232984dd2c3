//! The audit log: a hash chain of every staff decision, note, appeal, login, logout and
//! account change.
//!
//! Entry `n` carries `prev_hash`, the hash of entry `n − 1` (64 zeros for the first),
//! and its own `hash`: BLAKE3 (derive-key mode, context [`CONTEXT`]) over `prev_hash`
//! and each field, every one prefixed with its length in bytes as a little-endian
//! `u64`, in the order `prev_hash, seq, at, actor, action, subject, detail`. `at` is
//! RFC 3339 in UTC with microseconds (`2026-11-28T18:00:00.123456Z`), `seq` in decimal.
//!
//! [`verify`] recomputes the chain: an edited field breaks that entry's hash, a deleted
//! or reordered entry breaks the sequence or the link to the one before. Deleting the
//! newest entries leaves a shorter valid chain: compare the head with one recorded
//! earlier (an export's head, `proctor audit-log verify --head`) to see that.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const CONTEXT: &str = "heurist proctor 2026-11 audit log v1";
/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit log entry, as stored and as exported (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: i64,
    /// Microsecond precision: what Postgres keeps.
    pub at: DateTime<Utc>,
    /// The staff username, `operator` for the CLI's account commands, or `judge:auto`
    /// when an automatic slash settles a miner's open flag (`store::review::JUDGE_ACTOR`).
    pub actor: String,
    pub action: String,
    /// What was acted on: `case:17`, `staff:ann`, `token:…`, `session`.
    pub subject: String,
    /// The exact JSON text hashed.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The time an entry records: `now` cut to the microsecond.
pub fn timestamp(now: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

fn at_text(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The hash an entry with these fields carries.
pub fn hash(
    prev_hash: &str,
    seq: i64,
    at: &DateTime<Utc>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> String {
    let mut h = blake3::Hasher::new_derive_key(CONTEXT);
    for field in [
        prev_hash,
        &seq.to_string(),
        &at_text(at),
        actor,
        action,
        subject,
        detail,
    ] {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The entry that follows `prev` (the newest, or none for an empty log).
pub fn append(
    prev: Option<(i64, &str)>,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> Entry {
    let (seq, prev_hash) = match prev {
        Some((seq, hash)) => (seq + 1, hash.to_owned()),
        None => (1, GENESIS.to_owned()),
    };
    let at = timestamp(at);
    let detail = detail.to_string();
    Entry {
        hash: hash(&prev_hash, seq, &at, actor, action, subject, &detail),
        seq,
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        detail,
        prev_hash,
    }
}

/// A valid chain's length and newest hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    pub entries: i64,
    pub hash: String,
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("entry {seq}: expected sequence number {expected}: an entry was deleted or moved")]
    Sequence { seq: i64, expected: i64 },
    #[error(
        "entry {seq}: does not link to the entry before it: an entry was deleted, moved or edited"
    )]
    Link { seq: i64 },
    #[error("entry {seq}: its hash does not match its fields: the entry was edited")]
    Edited { seq: i64 },
}

/// Recomputes the chain over entries in `seq` order.
pub fn verify(entries: impl IntoIterator<Item = Entry>) -> Result<Head, Break> {
    let mut head = Head {
        entries: 0,
        hash: GENESIS.to_owned(),
    };
    for e in entries {
        let expected = head.entries + 1;
        if e.seq != expected {
            return Err(Break::Sequence {
                seq: e.seq,
                expected,
            });
        }
        if e.prev_hash != head.hash {
            return Err(Break::Link { seq: e.seq });
        }
        let want = hash(
            &e.prev_hash,
            e.seq,
            &e.at,
            &e.actor,
            &e.action,
            &e.subject,
            &e.detail,
        );
        if want != e.hash {
            return Err(Break::Edited { seq: e.seq });
        }
        head = Head {
            entries: e.seq,
            hash: e.hash,
        };
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<Entry> {
        let t0 = DateTime::UNIX_EPOCH + chrono::Duration::microseconds(1_234_567);
        let mut out: Vec<Entry> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
            let e = append(
                prev,
                t0 + chrono::Duration::seconds(i as i64),
                if i % 2 == 0 { "ann" } else { "bob" },
                "note",
                &format!("case:{i}"),
                &serde_json::json!({"reason": format!("note {i}")}),
            );
            out.push(e);
        }
        out
    }

    #[test]
    fn an_untouched_chain_verifies_to_its_head() {
        let c = chain(5);
        let head = verify(c.clone()).unwrap();
        assert_eq!(head.entries, 5);
        assert_eq!(head.hash, c[4].hash);
        assert_eq!(verify(Vec::new()).unwrap().hash, GENESIS);
    }

    /// Each tampering, and the break `verify` reports.
    #[test]
    fn every_edit_deletion_and_reordering_is_found() {
        type Tamper = fn(&mut Vec<Entry>);
        let cases: [(&str, Tamper, Break); 6] = [
            (
                "an edited detail",
                |c| c[2].detail = c[2].detail.replace("note 2", "note two"),
                Break::Edited { seq: 3 },
            ),
            (
                "an edited actor",
                |c| c[1].actor = "mallory".into(),
                Break::Edited { seq: 2 },
            ),
            (
                "an edited time",
                |c| c[0].at += chrono::Duration::microseconds(1),
                Break::Edited { seq: 1 },
            ),
            (
                "a deleted entry",
                |c| {
                    c.remove(2);
                },
                Break::Sequence {
                    seq: 4,
                    expected: 3,
                },
            ),
            (
                "two entries swapped, renumbered",
                |c| {
                    c.swap(1, 2);
                    c[1].seq = 2;
                    c[2].seq = 3;
                },
                Break::Link { seq: 2 },
            ),
            (
                "an entry rewritten with a fresh hash",
                |c| {
                    let e = &mut c[1];
                    e.subject = "case:99".into();
                    e.hash = hash(
                        &e.prev_hash,
                        e.seq,
                        &e.at,
                        &e.actor,
                        &e.action,
                        &e.subject,
                        &e.detail,
                    );
                },
                Break::Link { seq: 3 },
            ),
        ];
        for (name, tamper, want) in cases {
            let mut c = chain(5);
            tamper(&mut c);
            assert_eq!(verify(c), Err(want), "{name}");
        }
    }

    #[test]
    fn fields_cannot_shift_into_each_other() {
        // Without length prefixes, ("ab", "c") and ("a", "bc") would hash alike.
        let at = DateTime::UNIX_EPOCH;
        assert_ne!(
            hash(GENESIS, 1, &at, "ab", "c", "s", "{}"),
            hash(GENESIS, 1, &at, "a", "bc", "s", "{}")
        );
    }
}

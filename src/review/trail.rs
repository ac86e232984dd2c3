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
pub fn verify<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Result<Head, Break> {
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
            hash: e.hash.clone(),
        };
    }
    Ok(head)
}

/// The context a checkpoint is signed under: a checkpoint's signature never verifies
/// as a slash or a reversal event, nor theirs as a checkpoint.
pub const CHECKPOINT_CONTEXT: &[u8] = b"heurist proctor audit log checkpoint v1\n";

/// A signed statement that the log held `entries` entries, the newest with `hash`, at
/// `at`. Signed with a key the database never holds (`secrets.audit_checkpoint_key`)
/// and kept outside it, a checkpoint pins the log's past: a log rewritten and rehashed
/// from any entry it covers no longer matches it, and a log cut below it is shorter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The newest entry's sequence number (0 for an empty log).
    pub entries: i64,
    /// That entry's hash ([`GENESIS`] for an empty log).
    pub hash: String,
    /// When it was signed, in UTC to the microsecond.
    pub at: DateTime<Utc>,
    /// Hex ed25519 over [`CHECKPOINT_CONTEXT`] and `entries`, `hash` and `at` (RFC 3339,
    /// as the chain writes times), one per line.
    pub signature: String,
}

fn checkpoint_message(entries: i64, hash: &str, at: &DateTime<Utc>) -> Vec<u8> {
    let mut msg = CHECKPOINT_CONTEXT.to_vec();
    msg.extend_from_slice(format!("{entries}\n{hash}\n{}", at_text(at)).as_bytes());
    msg
}

/// Signs `head` as of `at`.
pub fn sign_checkpoint(
    head: &Head,
    at: DateTime<Utc>,
    key: &ed25519_dalek::SigningKey,
) -> Checkpoint {
    use ed25519_dalek::Signer as _;
    let at = timestamp(at);
    let signature = key.sign(&checkpoint_message(head.entries, &head.hash, &at));
    Checkpoint {
        entries: head.entries,
        hash: head.hash.clone(),
        at,
        signature: hex::encode(signature.to_bytes()),
    }
}

/// Why a log does not match a checkpoint (`n` counts the checkpoints from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointBreak {
    #[error(
        "checkpoint {n}: its signature does not verify under the checkpoint key: it was forged or edited"
    )]
    Forged { n: usize },
    #[error(
        "checkpoint {n} (signed {at}) saw {entries} entries, the log has {have}: entries were deleted from the end"
    )]
    Cut {
        n: usize,
        at: DateTime<Utc>,
        entries: i64,
        have: i64,
    },
    #[error(
        "checkpoint {n} (signed {at}): entry {entries} had hash {signed}, the log's has {found}: the log was rewritten"
    )]
    Rewritten {
        n: usize,
        at: DateTime<Utc>,
        entries: i64,
        signed: String,
        found: String,
    },
}

/// Checks each checkpoint's signature under `key`, then its position in `chain`: the
/// log's entries in `seq` order, already a valid chain ([`verify`]). Returns how many
/// checkpoints hold.
pub fn check_checkpoints(
    chain: &[Entry],
    checkpoints: &[Checkpoint],
    key: &ed25519_dalek::VerifyingKey,
) -> Result<usize, CheckpointBreak> {
    for (i, c) in checkpoints.iter().enumerate() {
        let n = i + 1;
        let signature = hex::decode(&c.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| ed25519_dalek::Signature::from_bytes(&b));
        let valid = signature.is_some_and(|sig| {
            key.verify_strict(&checkpoint_message(c.entries, &c.hash, &c.at), &sig)
                .is_ok()
        });
        if !valid {
            return Err(CheckpointBreak::Forged { n });
        }
        let have = chain.last().map_or(0, |e| e.seq);
        let found = match c.entries {
            0 => GENESIS,
            seq if seq > 0 && seq <= have => chain[(seq - 1) as usize].hash.as_str(),
            _ => {
                return Err(CheckpointBreak::Cut {
                    n,
                    at: c.at,
                    entries: c.entries,
                    have,
                });
            }
        };
        if !found.eq_ignore_ascii_case(&c.hash) {
            return Err(CheckpointBreak::Rewritten {
                n,
                at: c.at,
                entries: c.entries,
                signed: c.hash.clone(),
                found: found.to_owned(),
            });
        }
    }
    Ok(checkpoints.len())
}

/// A row of `case_actions`, as the cross-check reads it.
#[derive(Debug, Clone)]
pub struct CaseActionRow {
    pub action_id: i64,
    pub case_id: i64,
    pub username: String,
    pub action: String,
    pub reason: String,
    /// None for rows written before the channel was recorded (migration 0012).
    pub via: Option<serde_json::Value>,
}

/// A row of `appeals`.
#[derive(Debug, Clone)]
pub struct AppealRow {
    pub appeal_id: i64,
    pub case_id: i64,
    pub filed_by: String,
    pub decided_by: Option<String>,
    /// `upheld` or `reversed`; None while undecided.
    pub outcome: Option<String>,
}

/// A row of `slash_reversals`.
#[derive(Debug, Clone)]
pub struct ReversalRow {
    pub slash_id: String,
    pub appeal_id: i64,
    pub reversed_by: String,
}

/// Compares the tables that record staff decisions with the log that must record each
/// of them once, in both directions: a row the log lacks was written around the app (or
/// its entry deleted), an entry without its row had the row deleted. Every staff action
/// on a case is one `case_actions` row and one entry on `case:<id>`, with the same
/// actor, action, reason and channel; every appeal's filing and decision, and every
/// reversal, is an entry naming its appeal (and slash). Returns what does not match, in
/// a stable order; empty when everything does.
pub fn cross_check(
    chain: &[Entry],
    actions: &[CaseActionRow],
    appeals: &[AppealRow],
    reversals: &[ReversalRow],
) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut out = Vec::new();
    let details: Vec<serde_json::Value> = chain
        .iter()
        .map(|e| serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::Null))
        .collect();
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);

    // Staff actions on cases: one row, one entry. The judge's entries (an automatic
    // slash settling a case, a confirmation signed or lapsed) have no row.
    type Key = (String, String, String, Option<String>);
    let mut open: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
    for (i, e) in chain.iter().enumerate() {
        if e.subject.starts_with("case:") && details[i]["via"]["channel"] != "judge" {
            let key = (
                e.subject.clone(),
                e.actor.clone(),
                e.action.clone(),
                text(&details[i]["reason"]),
            );
            open.entry(key).or_default().push(i);
        }
    }
    for a in actions {
        let key = (
            format!("case:{}", a.case_id),
            a.username.clone(),
            a.action.clone(),
            Some(a.reason.clone()),
        );
        let hit = open.get_mut(&key).and_then(|entries| {
            let at = entries
                .iter()
                .position(|&i| a.via.as_ref().is_none_or(|via| details[i]["via"] == *via))?;
            Some(entries.remove(at))
        });
        if hit.is_none() {
            out.push(format!(
                "case_actions {}: {} by {} on case {} is not in the audit log",
                a.action_id, a.action, a.username, a.case_id
            ));
        }
    }
    let mut left: Vec<usize> = open.into_values().flatten().collect();
    left.sort_unstable();
    for i in left {
        let e = &chain[i];
        out.push(format!(
            "audit entry {}: {} by {} on {} has no case_actions row",
            e.seq, e.action, e.actor, e.subject
        ));
    }

    // Appeals: the filing and the decision are entries naming the appeal.
    let appeal_of = |i: usize| details[i]["appeal_id"].as_i64();
    let mut by_appeal: BTreeMap<(i64, &str), Vec<usize>> = BTreeMap::new();
    for (i, e) in chain.iter().enumerate() {
        if matches!(e.action.as_str(), "appeal" | "uphold" | "reverse")
            && let Some(id) = appeal_of(i)
        {
            by_appeal
                .entry((id, e.action.as_str()))
                .or_default()
                .push(i);
        }
    }
    let known: std::collections::BTreeSet<i64> = appeals.iter().map(|a| a.appeal_id).collect();
    for a in appeals {
        let subject = format!("case:{}", a.case_id);
        let logged = |action: &str, by: &str| {
            by_appeal.get(&(a.appeal_id, action)).is_some_and(|v| {
                v.iter()
                    .any(|&i| chain[i].actor == by && chain[i].subject == subject)
            })
        };
        if !logged("appeal", &a.filed_by) {
            out.push(format!(
                "appeals {}: filed by {} on case {}, is not in the audit log",
                a.appeal_id, a.filed_by, a.case_id
            ));
        }
        let decided = match a.outcome.as_deref() {
            Some("upheld") => Some("uphold"),
            Some("reversed") => Some("reverse"),
            _ => None,
        };
        match (decided, a.decided_by.as_deref()) {
            (Some(action), Some(by)) if !logged(action, by) => out.push(format!(
                "appeals {}: {} by {}, is not in the audit log",
                a.appeal_id,
                a.outcome.as_deref().unwrap_or_default(),
                by
            )),
            (None, _) => {
                for action in ["uphold", "reverse"] {
                    if by_appeal.contains_key(&(a.appeal_id, action)) {
                        out.push(format!(
                            "appeals {}: undecided, but the audit log has it decided ({action})",
                            a.appeal_id
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    for ((id, action), entries) in &by_appeal {
        if !known.contains(id) {
            for &i in entries {
                out.push(format!(
                    "audit entry {}: {action} of appeal {id}, which has no appeals row",
                    chain[i].seq
                ));
            }
        }
    }

    // Reversals: each is the `reverse` entry that names its slash.
    let mut reversed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, e) in chain.iter().enumerate() {
        if e.action == "reverse"
            && let Some(slash) = text(&details[i]["slash_id"])
        {
            reversed.entry(slash).or_default().push(i);
        }
    }
    for r in reversals {
        let logged = reversed.get(&r.slash_id).is_some_and(|v| {
            v.iter()
                .any(|&i| chain[i].actor == r.reversed_by && appeal_of(i) == Some(r.appeal_id))
        });
        if !logged {
            out.push(format!(
                "slash_reversals {}: reversed by {} for appeal {}, is not in the audit log",
                r.slash_id, r.reversed_by, r.appeal_id
            ));
        }
    }
    let rows: std::collections::BTreeSet<&str> =
        reversals.iter().map(|r| r.slash_id.as_str()).collect();
    for (slash, entries) in &reversed {
        if !rows.contains(slash.as_str()) {
            for &i in entries {
                out.push(format!(
                    "audit entry {}: reversal of slash {slash}, which has no slash_reversals row",
                    chain[i].seq
                ));
            }
        }
    }
    out
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
        let head = verify(&c).unwrap();
        assert_eq!(head.entries, 5);
        assert_eq!(head.hash, c[4].hash);
        assert_eq!(verify(&[]).unwrap().hash, GENESIS);
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
            assert_eq!(verify(&c), Err(want), "{name}");
        }
    }

    fn checkpoint_key(seed: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
    }

    /// Checkpoints at 0, 3 and 5 entries of a 5-entry chain.
    fn checkpoints(c: &[Entry], key: &ed25519_dalek::SigningKey) -> Vec<Checkpoint> {
        let at = DateTime::UNIX_EPOCH + chrono::Duration::days(1);
        [0, 3, 5]
            .iter()
            .map(|&n| {
                let head = verify(&c[..n]).unwrap();
                sign_checkpoint(&head, at + chrono::Duration::minutes(n as i64), key)
            })
            .collect()
    }

    #[test]
    fn checkpoints_pin_the_log_a_rehashed_rewrite_or_a_cut_no_longer_matches() {
        let key = checkpoint_key(7);
        let public = key.verifying_key();
        let c = chain(5);
        let cps = checkpoints(&c, &key);
        assert_eq!(check_checkpoints(&c, &cps, &public), Ok(3));
        // The log grows: old checkpoints still hold.
        let mut longer = c.clone();
        let last = longer.last().unwrap().clone();
        longer.push(append(
            Some((last.seq, &last.hash)),
            last.at,
            "ann",
            "note",
            "case:9",
            &serde_json::json!({}),
        ));
        assert_eq!(check_checkpoints(&longer, &cps, &public), Ok(3));

        // Entry 2 rewritten and the whole chain rehashed after it: a valid chain,
        // which only the checkpoints catch.
        let mut rewritten: Vec<Entry> = c[..1].to_vec();
        for e in &c[1..] {
            let prev = rewritten.last().map(|p| (p.seq, p.hash.as_str()));
            let subject = if e.seq == 2 { "case:99" } else { &e.subject };
            let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
            rewritten.push(append(prev, e.at, &e.actor, &e.action, subject, &detail));
        }
        assert!(verify(&rewritten).is_ok());
        assert!(matches!(
            check_checkpoints(&rewritten, &cps, &public),
            Err(CheckpointBreak::Rewritten {
                n: 2,
                entries: 3,
                ..
            })
        ));
        // The newest two entries cut: a shorter valid chain.
        assert!(matches!(
            check_checkpoints(&c[..3], &cps, &public),
            Err(CheckpointBreak::Cut {
                n: 3,
                entries: 5,
                have: 3,
                ..
            })
        ));
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_or_edited_is_forged() {
        let key = checkpoint_key(7);
        let c = chain(5);
        let mut cps = checkpoints(&c, &key);
        // Signed by another key: the database's holder cannot make checkpoints.
        let other = checkpoints(&c, &checkpoint_key(8));
        assert_eq!(
            check_checkpoints(&c, &other, &key.verifying_key()),
            Err(CheckpointBreak::Forged { n: 1 })
        );
        // A genuine checkpoint moved to fit a rewritten log.
        cps[1].hash = c[1].hash.clone();
        assert_eq!(
            check_checkpoints(&c, &cps, &key.verifying_key()),
            Err(CheckpointBreak::Forged { n: 2 })
        );
        cps[1].signature = "not hex".into();
        assert_eq!(
            check_checkpoints(&c, &cps, &key.verifying_key()),
            Err(CheckpointBreak::Forged { n: 2 })
        );
    }

    /// A log of one case: a note, the judge's entries (which have no rows), an appeal
    /// filed by ann, reversed by bob, with the rows the store keeps beside it.
    fn staff_records() -> (
        Vec<Entry>,
        Vec<CaseActionRow>,
        Vec<AppealRow>,
        Vec<ReversalRow>,
    ) {
        let at = DateTime::UNIX_EPOCH;
        let via = serde_json::json!({"channel": "web", "session": "00ff"});
        let mut log: Vec<Entry> = Vec::new();
        for (actor, action, detail) in [
            ("ann", "note", serde_json::json!({"reason": "looks odd"})),
            (
                "judge:auto",
                "confirmation_signed",
                serde_json::json!({"slash_id": "s1", "via": {"channel": "judge"}}),
            ),
            (
                "judge:auto",
                "auto_slash",
                serde_json::json!({"slash_id": "s2", "via": {"channel": "judge"}}),
            ),
            (
                "ann",
                "appeal",
                serde_json::json!({"reason": "miner says no", "appeal_id": 4}),
            ),
            (
                "bob",
                "reverse",
                serde_json::json!({"reason": "drift", "appeal_id": 4, "slash_id": "s1"}),
            ),
        ] {
            let mut detail = detail;
            if detail["via"].is_null() {
                detail["via"] = via.clone();
            }
            let prev = log.last().map(|e| (e.seq, e.hash.as_str()));
            log.push(append(prev, at, actor, action, "case:9", &detail));
        }
        let row = |id: i64, who: &str, action: &str, reason: &str| CaseActionRow {
            action_id: id,
            case_id: 9,
            username: who.into(),
            action: action.into(),
            reason: reason.into(),
            via: Some(via.clone()),
        };
        (
            log,
            vec![
                row(1, "ann", "note", "looks odd"),
                row(2, "ann", "appeal", "miner says no"),
                row(3, "bob", "reverse", "drift"),
            ],
            vec![AppealRow {
                appeal_id: 4,
                case_id: 9,
                filed_by: "ann".into(),
                decided_by: Some("bob".into()),
                outcome: Some("reversed".into()),
            }],
            vec![ReversalRow {
                slash_id: "s1".into(),
                appeal_id: 4,
                reversed_by: "bob".into(),
            }],
        )
    }

    #[test]
    fn the_staff_tables_and_the_log_are_checked_against_each_other_both_ways() {
        let (log, actions, appeals, reversals) = staff_records();
        assert_eq!(
            cross_check(&log, &actions, &appeals, &reversals),
            Vec::<String>::new()
        );
        type Tamper = fn(
            &mut Vec<Entry>,
            &mut Vec<CaseActionRow>,
            &mut Vec<AppealRow>,
            &mut Vec<ReversalRow>,
        );
        let cases: [(&str, Tamper, &str); 7] = [
            (
                "a case action deleted",
                |_, a, _, _| {
                    a.remove(0);
                },
                "audit entry 1: note by ann on case:9 has no case_actions row",
            ),
            (
                "a case action's reason edited",
                |_, a, _, _| a[0].reason = "fine".into(),
                "case_actions 1: note by ann on case 9 is not in the audit log",
            ),
            (
                "a case action's channel edited",
                |_, a, _, _| a[2].via = Some(serde_json::json!({"channel": "cli"})),
                "case_actions 3: reverse by bob",
            ),
            (
                "a case action written around the app",
                |_, a, _, _| {
                    let mut forged = a[2].clone();
                    forged.action_id = 7;
                    a.push(forged);
                },
                "case_actions 7: reverse by bob on case 9 is not in the audit log",
            ),
            (
                "an appeal's decider edited",
                |_, _, ap, _| ap[0].decided_by = Some("ann".into()),
                "appeals 4: reversed by ann, is not in the audit log",
            ),
            (
                "an appeal deleted",
                |_, _, ap, _| ap.clear(),
                "audit entry 4: appeal of appeal 4, which has no appeals row",
            ),
            (
                "a reversal row deleted",
                |_, _, _, r| r.clear(),
                "audit entry 5: reversal of slash s1, which has no slash_reversals row",
            ),
        ];
        for (name, tamper, says) in cases {
            let (mut log, mut actions, mut appeals, mut reversals) = staff_records();
            tamper(&mut log, &mut actions, &mut appeals, &mut reversals);
            let found = cross_check(&log, &actions, &appeals, &reversals);
            assert!(found.iter().any(|m| m.contains(says)), "{name}: {found:?}");
        }
        // A reversal the log does not name.
        let (log, actions, appeals, mut reversals) = staff_records();
        reversals[0].slash_id = "s3".into();
        let found = cross_check(&log, &actions, &appeals, &reversals);
        assert!(
            found.iter().any(|m| m.starts_with("slash_reversals s3")),
            "{found:?}"
        );
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

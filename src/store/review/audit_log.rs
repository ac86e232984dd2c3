//! The hash-chained audit log: appending under its lock, reading it, and the snapshot
//! it is verified against.

use super::*;

/// Appends one entry to the audit log in the caller's transaction.
pub(super) async fn append_log(
    tx: &mut Transaction<'static, Postgres>,
    by: By<'_>,
    action: &str,
    subject: &str,
    mut detail: serde_json::Value,
) -> Result<Entry, sqlx::Error> {
    // The channel and credential ride in the detail, under the chain's hash.
    let via = serde_json::to_value(by.via).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    match detail.as_object_mut() {
        Some(d) => {
            d.insert("via".into(), via);
        }
        None => detail = serde_json::json!({ "value": detail, "via": via }),
    }
    let actor = by.username;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(AUDIT_LOG_LOCK)
        .execute(&mut **tx)
        .await?;
    let prev: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
    let entry = trail::append(
        prev.as_ref().map(|(seq, hash)| (*seq, hash.as_str())),
        Utc::now(),
        actor,
        action,
        subject,
        &detail,
    );
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(entry.seq)
    .bind(entry.at)
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.subject)
    .bind(&entry.detail)
    .bind(&entry.prev_hash)
    .bind(&entry.hash)
    .execute(&mut **tx)
    .await?;
    Ok(entry)
}

impl Store {
    /// The audit log, oldest first.
    pub async fn audit_log(&self) -> Result<Vec<Entry>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit_log
             ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(entry_of).collect())
    }

    /// The audit log and the rows that record staff decisions beside it, read in one
    /// snapshot (a decision committed between two reads would look like a missing
    /// row), for `trail::cross_check`.
    pub async fn audit_snapshot(&self) -> Result<AuditSnapshot, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let log = sqlx::query(
            "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit_log
             ORDER BY seq",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(entry_of)
        .collect();
        let actions = sqlx::query(
            "SELECT action_id, case_id, username, action, reason, via FROM case_actions
             ORDER BY action_id",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| trail::CaseActionRow {
            action_id: r.get(0),
            case_id: r.get(1),
            username: r.get(2),
            action: r.get(3),
            reason: r.get(4),
            via: r.get(5),
        })
        .collect();
        let appeals = sqlx::query(
            "SELECT appeal_id, case_id, filed_by, decided_by, outcome FROM appeals
             ORDER BY appeal_id",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| trail::AppealRow {
            appeal_id: r.get(0),
            case_id: r.get(1),
            filed_by: r.get(2),
            decided_by: r.get(3),
            outcome: r.get(4),
        })
        .collect();
        let reversals = sqlx::query(
            "SELECT slash_id, appeal_id, reversed_by FROM slash_reversals ORDER BY slash_id",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| trail::ReversalRow {
            slash_id: r.get(0),
            appeal_id: r.get(1),
            reversed_by: r.get(2),
        })
        .collect();
        tx.commit().await?;
        Ok(AuditSnapshot {
            log,
            actions,
            appeals,
            reversals,
        })
    }
}

/// The audit log and the staff tables beside it, as of one moment.
pub struct AuditSnapshot {
    pub log: Vec<Entry>,
    pub actions: Vec<trail::CaseActionRow>,
    pub appeals: Vec<trail::AppealRow>,
    pub reversals: Vec<trail::ReversalRow>,
}

/// An audit log row (`seq, at, actor, action, subject, detail, prev_hash, hash`).
fn entry_of(r: &sqlx::postgres::PgRow) -> Entry {
    Entry {
        seq: r.get(0),
        at: r.get(1),
        actor: r.get(2),
        action: r.get(3),
        subject: r.get(4),
        detail: r.get(5),
        prev_hash: r.get(6),
        hash: r.get(7),
    }
}

//! Staff review in Postgres: accounts, tokens, cases, staff actions with their effects,
//! appeals, reversals and the audit log. The rules of who may do what are
//! `review::next`'s; this module reads the facts, asks it, and writes the outcome in one
//! transaction.
//!
//! Lock order, everywhere: the miner's advisory lock (the judge's), then the case row,
//! then the audit log's advisory lock. The judge takes them in the same order when it
//! settles a reviewer's confirmation or an automatic slash settles a case, so a
//! reviewer and a judge never wait on each other in a cycle.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, Row, Transaction};

use super::{REVERSAL_EVENT, Store, write_slash};
use crate::case;
use crate::checks::JobVerdict;
use crate::decide::{Decision, Slash};
use crate::events::{self, ReversalEvent};
use crate::ids::MinerId;
use crate::points::MicroPoints;
use crate::review::auth::{self, NewToken};
use crate::review::trail::{self, Entry};
use crate::review::{Actor, CaseFacts, CaseStatus, Refusal, Role, StaffAction, Via};
use crate::rules::Rules;

/// The audit log's advisory lock key (any constant no miner hash collides with
/// matters little: a collision only serializes two writers).
const AUDIT_LOG_LOCK: i64 = 0x7072_6f63_746f_7200;

/// The actor name of account commands run from the CLI with database access.
pub const OPERATOR: &str = "operator";

/// Who acts on the store, for the audit log: a staff member as they came in, or (a
/// plain name) someone at the command line with the database's credentials.
#[derive(Debug, Clone, Copy)]
pub struct By<'a> {
    pub username: &'a str,
    pub via: &'a Via,
}

impl<'a> From<&'a Actor> for By<'a> {
    fn from(a: &'a Actor) -> By<'a> {
        By {
            username: &a.username,
            via: &a.via,
        }
    }
}

impl<'a> From<&'a str> for By<'a> {
    fn from(username: &'a str) -> By<'a> {
        By {
            username,
            via: &Via::OPERATOR,
        }
    }
}

/// How long an API token lives unless told otherwise.
pub const DEFAULT_TOKEN_DAYS: u32 = 90;
/// The longest an API token may live.
pub const MAX_TOKEN_DAYS: u32 = 365;

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("no case {0}")]
    NoCase(i64),
    #[error("no staff account {0}")]
    NoStaff(String),
    #[error("a staff account {0} already exists")]
    StaffExists(String),
    #[error("{actor} may not issue a token for {username}: a token is issued only to its holder")]
    NotTheHolder { actor: String, username: String },
    #[error("a token lives 1 to {MAX_TOKEN_DAYS} days, not {0}")]
    TokenLifetime(u32),
    #[error("no unrevoked token {0}")]
    NoToken(String),
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error(
        "nothing left to confirm: the flag's jobs are covered by another slash, or its evidence is gone"
    )]
    NothingToConfirm,
    #[error(
        "no reversal key is set (secrets.reversal_key, with review.slash_public_key): a reversal needs a signed event"
    )]
    NoReversalKey,
    /// The slash under appeal has no signed event that verifies under the slash key:
    /// its outbox row is missing or was edited. No reversal is signed for it.
    #[error("slash {slash_id}: {why}; no reversal is signed without the slash event it undoes")]
    SlashEvent { slash_id: String, why: String },
    #[error("{0}")]
    Credential(#[from] auth::CredentialError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl ReviewError {
    /// Whether the request was refused for what it asked (a client error), not for
    /// the service's state.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ReviewError::Refused(_)
                | ReviewError::NothingToConfirm
                | ReviewError::StaffExists(_)
                | ReviewError::NotTheHolder { .. }
                | ReviewError::TokenLifetime(_)
                | ReviewError::NoToken(_)
                | ReviewError::Credential(_)
        )
    }
}

/// One case as the queue and the report show it.
#[derive(Debug, Clone, Serialize)]
pub struct CaseRow {
    pub case_id: i64,
    pub miner_id: String,
    /// `flag` or `slash`: what opened the case.
    pub opened_by: String,
    pub status: CaseStatus,
    pub flag_id: Option<String>,
    pub slash_id: Option<String>,
    /// The strength of the evidence (lower is stronger).
    pub honest_probability: f64,
    /// What the slash took, or what a confirmation would take (micro-points).
    pub at_stake: MicroPoints,
    pub confirmed_by: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The decision the case was opened or last updated from.
    pub decision: Decision,
    /// The reviewer whose dismissal waits for a second reviewer's
    /// ([`crate::review::Dismissal`]).
    pub dismiss_proposed_by: Option<String>,
    /// A `confirming` case's slash, as its reviewer saw it: the judge signs it if its
    /// own decision yields the same, or reopens the case.
    pub pending_slash_id: Option<String>,
}

/// A staff account, for the admin page.
#[derive(Debug, Clone, Serialize)]
pub struct StaffRow {
    pub username: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Unrevoked, unexpired API tokens.
    pub tokens: i64,
}

/// A live API token, for lists: never its secret.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRow {
    pub token_id: String,
    pub username: String,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A note or decision on a case.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRow {
    pub username: String,
    pub action: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppealRow {
    pub appeal_id: i64,
    pub filed_by: String,
    pub statement: String,
    pub filed_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// A case with its history of actions and appeals.
#[derive(Debug, Clone, Serialize)]
pub struct CaseDetail {
    pub case: CaseRow,
    pub actions: Vec<ActionRow>,
    pub appeals: Vec<AppealRow>,
}

/// The queue's filters; every one optional.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    pub status: Option<CaseStatus>,
    /// A check that failed in the case's decision (`image_similarity`).
    pub check: Option<String>,
    /// A model the miner ran jobs of.
    pub model: Option<String>,
    /// A substring of a GPU name the miner reported (case-insensitive).
    pub gpu: Option<String>,
    pub miner: Option<String>,
    /// Cases updated at or after, and before.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    pub offset: i64,
}

/// A page of the queue, and how many cases the filters match in all.
#[derive(Debug, Clone, Serialize)]
pub struct CasePage {
    pub total: i64,
    pub cases: Vec<CaseRow>,
}

/// A case row's columns, as a literal: every query text below is a `&'static str` made
/// with `concat!`, so no SQL is ever built from a runtime string (values are bound).
macro_rules! case_columns {
    () => {
        "c.case_id, c.miner_id, c.opened_by, c.status, c.flag_id, c.slash_id,
    c.honest_probability, c.at_stake_waifu_micro, c.at_stake_llama_micro, c.confirmed_by, c.opened_at,
    c.updated_at, c.decision, c.dismiss_proposed_by, c.pending_slash_id"
    };
}

/// The queue's filters, binding `$1` to `$7` (each `NULL` for "any").
macro_rules! case_filter {
    () => {
        "($1::text IS NULL OR c.status = $1)
            AND ($2::text IS NULL OR c.decision->'tallies' @> jsonb_build_array(jsonb_build_object('check', $2::text)))
            AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM jobs j WHERE j.miner_id = c.miner_id AND j.model_id = $3))
            AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM jobs j WHERE j.miner_id = c.miner_id
                 AND j.record->'metrics'->>'hardware' ILIKE '%' || $4 || '%'))
            AND ($5::text IS NULL OR c.miner_id = $5)
            AND ($6::timestamptz IS NULL OR c.updated_at >= $6)
            AND ($7::timestamptz IS NULL OR c.updated_at < $7)"
    };
}

/// Jobs matching `$filter` (binding `$1`), newest first, each with its latest verdict.
macro_rules! jobs_where {
    ($filter:literal) => {
        concat!(
            "SELECT j.record::text,
                    (SELECT v.body FROM verdicts v WHERE v.job_id = j.job_id
                     ORDER BY (v.stage = 'rerun') DESC LIMIT 1)
             FROM jobs j WHERE ",
            $filter,
            " ORDER BY j.submitted_at DESC, j.job_id LIMIT $2"
        )
    };
}

fn case_row(r: &sqlx::postgres::PgRow) -> Result<CaseRow, sqlx::Error> {
    let status: String = r.try_get(3)?;
    let sqlx::types::Json(decision): sqlx::types::Json<Decision> = r.try_get(12)?;
    Ok(CaseRow {
        case_id: r.try_get(0)?,
        miner_id: r.try_get(1)?,
        opened_by: r.try_get(2)?,
        status: CaseStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown case status {status:?}").into()))?,
        flag_id: r.try_get(4)?,
        slash_id: r.try_get(5)?,
        honest_probability: r.try_get(6)?,
        at_stake: MicroPoints {
            waifu_micro: r.try_get(7)?,
            llama_micro: r.try_get(8)?,
        },
        confirmed_by: r.try_get(9)?,
        opened_at: r.try_get(10)?,
        updated_at: r.try_get(11)?,
        decision,
        dismiss_proposed_by: r.try_get(13)?,
        pending_slash_id: r.try_get(14)?,
    })
}

/// The judge's flag joins the miner's open case, or opens one.
pub(super) async fn join_open_case(
    tx: &mut Transaction<'static, Postgres>,
    flag_id: Option<&str>,
    decision: &Decision,
) -> Result<(), sqlx::Error> {
    let stake = decision
        .confirmation
        .as_ref()
        .map(|s| s.amount)
        .unwrap_or_default();
    let case_id: i64 = sqlx::query_scalar(
        "INSERT INTO review_cases (miner_id, opened_by, status, flag_id, honest_probability,
                                   at_stake_waifu_micro, at_stake_llama_micro, decision)
         VALUES ($1, 'flag', 'open', $2, $3, $4, $5, $6)
         ON CONFLICT (miner_id) WHERE status = 'open' DO UPDATE
         SET flag_id = EXCLUDED.flag_id, honest_probability = EXCLUDED.honest_probability,
             at_stake_waifu_micro = EXCLUDED.at_stake_waifu_micro,
             at_stake_llama_micro = EXCLUDED.at_stake_llama_micro,
             decision = EXCLUDED.decision, updated_at = now(),
             dismiss_proposed_by = CASE WHEN review_cases.flag_id IS DISTINCT FROM EXCLUDED.flag_id
                                        THEN NULL ELSE review_cases.dismiss_proposed_by END
         RETURNING case_id",
    )
    .bind(decision.miner_id.to_string())
    .bind(flag_id)
    .bind(decision.review_probability)
    .bind(stake.waifu_micro)
    .bind(stake.llama_micro)
    .bind(sqlx::types::Json(decision))
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query("UPDATE review_flags SET case_id = $1 WHERE flag_id = $2")
        .bind(case_id)
        .bind(flag_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What `review::next` needs to know of `case`: its status, who confirmed it, who filed
/// its undecided appeal, and who may dismiss it under `rules`.
pub fn case_facts(case: &CaseRow, appeal_filed_by: Option<String>, rules: &Rules) -> CaseFacts {
    let stake = case.at_stake.points();
    CaseFacts {
        status: case.status,
        confirmed_by: case.confirmed_by.clone(),
        appeal_filed_by,
        dismissal: crate::review::Dismissal::for_stake(
            stake.waifu + stake.llama,
            rules.slashing.second_reviewer_dismiss_above,
            case.dismiss_proposed_by.clone(),
        ),
    }
}

/// The audit log's actor for what the judge does to a case on its own; `:` is never in
/// a staff username.
pub const JUDGE_ACTOR: &str = "judge:auto";

/// An automatic slash gives the miner a `slashed` case for the appeal. A flag the miner
/// already has open is that case: the slash settles it (a reviewer has nothing left to
/// confirm), and the audit log says so. Otherwise the slash opens a case of its own.
pub(super) async fn open_slash_case(
    tx: &mut Transaction<'static, Postgres>,
    decision: &Decision,
    slash: &Slash,
) -> Result<(), sqlx::Error> {
    // One statement: settle the open case if there is one, else open a `slashed` one.
    let settled: Option<i64> = sqlx::query_scalar(
        "WITH settled AS (
             UPDATE review_cases
             SET status = 'slashed', slash_id = $2, honest_probability = $3,
                 at_stake_waifu_micro = $4, at_stake_llama_micro = $5, decision = $6, updated_at = now()
             WHERE miner_id = $1 AND status = 'open'
             RETURNING case_id
         ), opened AS (
             INSERT INTO review_cases (miner_id, opened_by, status, slash_id,
                                       honest_probability, at_stake_waifu_micro, at_stake_llama_micro,
                                       decision)
             SELECT $1, 'slash', 'slashed', $2, $3, $4, $5, $6
             WHERE NOT EXISTS (SELECT 1 FROM settled)
             ON CONFLICT (slash_id) WHERE slash_id IS NOT NULL DO NOTHING
         )
         SELECT case_id FROM settled",
    )
    .bind(slash.miner_id.to_string())
    .bind(&slash.slash_id)
    .bind(slash.honest_probability)
    .bind(slash.amount.waifu_micro)
    .bind(slash.amount.llama_micro)
    .bind(sqlx::types::Json(decision))
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(case_id) = settled {
        append_log(
            tx,
            By {
                username: JUDGE_ACTOR,
                via: &Via::Judge,
            },
            "auto_slash",
            &format!("case:{case_id}"),
            serde_json::json!({
                "miner_id": slash.miner_id.to_string(),
                "slash_id": slash.slash_id,
                "rule_id": slash.rule_id,
                "honest_probability": slash.honest_probability,
            }),
        )
        .await?;
    }
    Ok(())
}

/// A `confirming` case, as the judge settles it.
#[derive(sqlx::FromRow)]
struct Confirming {
    case_id: i64,
    pending_slash_id: Option<String>,
    at_stake_waifu_micro: i64,
    at_stake_llama_micro: i64,
    confirmed_by: Option<String>,
}

/// The judge's half of a reviewer's confirmation, in the judge's transaction under the
/// miner's lock. Each of the miner's `confirming` cases named the slash its reviewer
/// saw (`pending_slash_id`, and the amount at stake). The judge signs it only if its own
/// decision on the evidence now (`decision.confirmation`, signed as `signed`) is that
/// very slash, for that very amount: then the slash, its covered jobs and its event are
/// written, and the case is `confirmed`. Otherwise the case goes back to `open` with
/// the decision of now, and a reviewer looks again; nothing is signed. Without a key
/// (`signed` is none while the decision has a confirmation) a matching confirmation
/// waits for a judge that has one. Returns how many were signed and how many lapsed.
pub(super) async fn settle_confirmations(
    tx: &mut Transaction<'static, Postgres>,
    miner: &str,
    decision: &Decision,
    signed: Option<&events::SignedEvent>,
) -> Result<(u32, u32), sqlx::Error> {
    let pending: Vec<Confirming> = sqlx::query_as(
        "SELECT case_id, pending_slash_id, at_stake_waifu_micro, at_stake_llama_micro,
                confirmed_by
         FROM review_cases WHERE miner_id = $1 AND status = 'confirming'
         ORDER BY case_id FOR UPDATE",
    )
    .bind(miner)
    .fetch_all(&mut **tx)
    .await?;
    let (mut done, mut lapsed) = (0, 0);
    for Confirming {
        case_id,
        pending_slash_id: want,
        at_stake_waifu_micro: waifu,
        at_stake_llama_micro: llama,
        confirmed_by,
    } in pending
    {
        let confirmed = MicroPoints {
            waifu_micro: waifu,
            llama_micro: llama,
        };
        let now = decision.confirmation.as_ref();
        let same = now.is_some_and(|s| Some(&s.slash_id) == want.as_ref() && s.amount == confirmed);
        let why = match (now, signed) {
            (Some(_), None) if same => continue,
            (Some(slash), Some(event)) if same => {
                if write_slash(tx, slash, Some(event)).await? {
                    sqlx::query(
                        "INSERT INTO miner_risk (miner_id, confirmed_flags) VALUES ($1, 1)
                         ON CONFLICT (miner_id) DO UPDATE
                         SET confirmed_flags = miner_risk.confirmed_flags + 1",
                    )
                    .bind(miner)
                    .execute(&mut **tx)
                    .await?;
                    sqlx::query(
                        "UPDATE review_cases SET status = 'confirmed', slash_id = $2,
                                pending_slash_id = NULL, updated_at = now()
                         WHERE case_id = $1",
                    )
                    .bind(case_id)
                    .bind(&slash.slash_id)
                    .execute(&mut **tx)
                    .await?;
                    append_log(
                        tx,
                        By {
                            username: JUDGE_ACTOR,
                            via: &Via::Judge,
                        },
                        "confirmation_signed",
                        &format!("case:{case_id}"),
                        serde_json::json!({
                            "miner_id": miner,
                            "slash_id": slash.slash_id,
                            "confirmed_by": confirmed_by,
                        }),
                    )
                    .await?;
                    done += 1;
                    continue;
                }
                "its slash exists already"
            }
            (None, _)
                if decision
                    .slash
                    .as_ref()
                    .is_some_and(|s| Some(&s.slash_id) == want.as_ref()) =>
            {
                "the judge slashes this evidence on its own: the automatic slash settles the case"
            }
            (None, _) => "the evidence no longer makes a flag to confirm",
            (Some(_), _) => {
                "the evidence changed since the confirmation: the slash it makes now differs"
            }
        };
        // Back to `open` with the decision of now. The miner has no other open case:
        // a confirmation needs the open one, and every judge round settles
        // confirmations before it writes a flag.
        // (Guarded all the same: a stuck confirmation is better than a judge stalled on
        // the one-open-case index.)
        let stake = now.map(|s| s.amount).unwrap_or_default();
        let reopened = sqlx::query(
            "UPDATE review_cases SET status = 'open', pending_slash_id = NULL,
                    confirmed_by = NULL, decision = $2, honest_probability = $3,
                    at_stake_waifu_micro = $4, at_stake_llama_micro = $5, updated_at = now()
             WHERE case_id = $1 AND NOT EXISTS (
                 SELECT 1 FROM review_cases o WHERE o.miner_id = $6 AND o.status = 'open')",
        )
        .bind(case_id)
        .bind(sqlx::types::Json(decision))
        .bind(decision.review_probability)
        .bind(stake.waifu_micro)
        .bind(stake.llama_micro)
        .bind(miner)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if reopened == 0 {
            tracing::warn!(
                case_id,
                miner,
                why,
                "a lapsed confirmation cannot reopen: the miner has another open case"
            );
            continue;
        }
        append_log(
            tx,
            By {
                username: JUDGE_ACTOR,
                via: &Via::Judge,
            },
            "confirmation_lapsed",
            &format!("case:{case_id}"),
            serde_json::json!({
                "miner_id": miner,
                "confirmed_slash_id": want,
                "slash_id_now": now.map(|s| s.slash_id.as_str()),
                "confirmed_by": confirmed_by,
                "why": why,
            }),
        )
        .await?;
        lapsed += 1;
    }
    Ok((done, lapsed))
}

/// Appends one entry to the audit log in the caller's transaction.
async fn append_log(
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

async fn lock_miner(
    tx: &mut Transaction<'static, Postgres>,
    miner: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(miner)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Creates a staff account. `actor` is the admin (or [`OPERATOR`]) who adds it.
    pub async fn add_staff(
        &self,
        actor: impl Into<By<'_>>,
        username: &str,
        role: Role,
        password: &str,
    ) -> Result<(), ReviewError> {
        let by: By<'_> = actor.into();
        let phc = auth::hash_password(password)?;
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO staff (username, role, password_hash) VALUES ($1, $2, $3)
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(username)
        .bind(role.as_str())
        .bind(phc)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if fresh == 0 {
            return Err(ReviewError::StaffExists(username.to_owned()));
        }
        append_log(
            &mut tx,
            by,
            "staff_add",
            &format!("staff:{username}"),
            serde_json::json!({"role": role.as_str()}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables an account and revokes its tokens; its sessions end at their next use.
    pub async fn disable_staff(
        &self,
        actor: impl Into<By<'_>>,
        username: &str,
    ) -> Result<(), ReviewError> {
        let by: By<'_> = actor.into();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE staff SET disabled_at = coalesce(disabled_at, now()) WHERE username = $1",
        )
        .bind(username)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(ReviewError::NoStaff(username.to_owned()));
        }
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = now() WHERE username = $1 AND revoked_at IS NULL",
        )
        .bind(username)
        .execute(&mut *tx)
        .await?;
        append_log(
            &mut tx,
            by,
            "staff_disable",
            &format!("staff:{username}"),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Issues an API token for an enabled account, valid for `days` days. The token
    /// is in the result only. A token is issued only to its holder: `actor` must be
    /// `username`, or the CLI's [`OPERATOR`] (who holds the database, and whom no
    /// rule in it could stop). An admin may disable an account, never act as it.
    pub async fn create_token(
        &self,
        actor: impl Into<By<'_>>,
        username: &str,
        label: &str,
        days: u32,
    ) -> Result<NewToken, ReviewError> {
        let by: By<'_> = actor.into();
        let actor = by.username;
        if actor != username && actor != OPERATOR {
            return Err(ReviewError::NotTheHolder {
                actor: actor.to_owned(),
                username: username.to_owned(),
            });
        }
        if !(1..=MAX_TOKEN_DAYS).contains(&days) {
            return Err(ReviewError::TokenLifetime(days));
        }
        let mut tx = self.pool.begin().await?;
        let enabled: Option<bool> =
            sqlx::query_scalar("SELECT disabled_at IS NULL FROM staff WHERE username = $1")
                .bind(username)
                .fetch_optional(&mut *tx)
                .await?;
        if enabled != Some(true) {
            return Err(ReviewError::NoStaff(username.to_owned()));
        }
        let token = auth::new_token();
        sqlx::query(
            "INSERT INTO api_tokens (token_id, username, token_hash, label, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(days => $5))",
        )
        .bind(&token.token_id)
        .bind(username)
        .bind(&token.token_hash)
        .bind(label)
        .bind(days as i32)
        .execute(&mut *tx)
        .await?;
        append_log(
            &mut tx,
            by,
            "token_create",
            &format!("token:{}", token.token_id),
            serde_json::json!({"username": username, "label": label, "days": days}),
        )
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// Revokes one API token: by its holder, an admin or the CLI's operator (the
    /// caller checks the role). `NoToken` when no such unrevoked token exists, or it
    /// belongs to someone else and `any` is false.
    pub async fn revoke_token(
        &self,
        actor: impl Into<By<'_>>,
        token_id: &str,
        any: bool,
    ) -> Result<(), ReviewError> {
        let by: By<'_> = actor.into();
        let actor = by.username;
        let mut tx = self.pool.begin().await?;
        let holder: Option<String> = sqlx::query_scalar(
            "UPDATE api_tokens SET revoked_at = now()
             WHERE token_id = $1 AND revoked_at IS NULL AND ($2 OR username = $3)
             RETURNING username",
        )
        .bind(token_id.to_ascii_lowercase())
        .bind(any)
        .bind(actor)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(holder) = holder else {
            return Err(ReviewError::NoToken(token_id.to_owned()));
        };
        append_log(
            &mut tx,
            by,
            "token_revoke",
            &format!("token:{}", token_id.to_ascii_lowercase()),
            serde_json::json!({"username": holder}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The unrevoked, unexpired tokens of `username` (all accounts when `None`):
    /// id, holder, label, expiry. Never the secret, which is not kept.
    pub async fn live_tokens(&self, username: Option<&str>) -> Result<Vec<TokenRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT token_id, username, label, created_at, expires_at FROM api_tokens
             WHERE revoked_at IS NULL AND expires_at > now()
               AND ($1::text IS NULL OR username = $1)
             ORDER BY username, created_at",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| TokenRow {
                token_id: r.get(0),
                username: r.get(1),
                label: r.get(2),
                created_at: r.get(3),
                expires_at: r.get(4),
            })
            .collect())
    }

    /// The staff member an API token belongs to, if it is valid, unrevoked, unexpired
    /// and its account enabled; acting through the API with that token (the CLI says
    /// it is the CLI).
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<Actor>, sqlx::Error> {
        let Some((id, secret)) = auth::parse_token(token) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT t.token_hash, s.username, s.role FROM api_tokens t JOIN staff s USING (username)
             WHERE t.token_id = $1 AND t.revoked_at IS NULL AND t.expires_at > now()
               AND s.disabled_at IS NULL",
        )
        .bind(id.to_ascii_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|r| {
            let stored: String = r.get(0);
            let role = Role::parse(r.get::<&str, _>(2))?;
            auth::token_matches(secret, &stored).then(|| Actor {
                username: r.get(1),
                role,
                via: Via::Api {
                    token_id: id.to_ascii_lowercase(),
                },
            })
        }))
    }

    /// The password hash and role of the enabled account `username`, to check a
    /// login against ([`auth::check_login`], off the async threads).
    pub async fn credentials(
        &self,
        username: &str,
    ) -> Result<Option<auth::Credentials>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT password_hash, role FROM staff WHERE username = $1 AND disabled_at IS NULL",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|r| {
            Some(auth::Credentials {
                username: username.to_owned(),
                password_hash: r.get(0),
                role: Role::parse(r.get::<&str, _>(1))?,
            })
        }))
    }

    /// Logs a login.
    pub async fn log_login(&self, actor: &Actor) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        append_log(
            &mut tx,
            actor.into(),
            "login",
            "session",
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Logs that wrong passwords locked an account's logins: one entry per lock, not
    /// one per failure, so that guessing cannot flood the log (the failures
    /// themselves are counted in `proctor_logins_total`). The username tried is in
    /// the detail, never the actor.
    pub async fn log_login_locked(
        &self,
        username: &str,
        failures: u32,
        lock_seconds: u64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        append_log(
            &mut tx,
            By {
                username: OPERATOR,
                via: &Via::Web { session: None },
            },
            "login_locked",
            "session",
            serde_json::json!({
                "username": username.chars().take(64).collect::<String>(),
                "failures": failures,
                "lock_seconds": lock_seconds,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Logs a logout.
    pub async fn logout(&self, actor: &Actor) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        append_log(
            &mut tx,
            actor.into(),
            "logout",
            "session",
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends every login session of `actor`, on every browser: for a session that may
    /// have been copied. Logged; returns how many ended.
    pub async fn logout_everywhere(&self, actor: &Actor) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let ended = sqlx::query("DELETE FROM staff_sessions WHERE data ->> 'user' = $1")
            .bind(&actor.username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        append_log(
            &mut tx,
            actor.into(),
            "logout_everywhere",
            "session",
            serde_json::json!({ "sessions": ended }),
        )
        .await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// The queue: cases matching the filter, strongest evidence first, then the most
    /// points at stake.
    pub async fn cases(&self, f: &CaseFilter) -> Result<CasePage, sqlx::Error> {
        let bind = |q: sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments>| {
            q.bind(f.status.map(CaseStatus::as_str))
                .bind(f.check.clone())
                .bind(f.model.clone())
                .bind(f.gpu.clone())
                .bind(f.miner.clone())
                .bind(f.since)
                .bind(f.until)
        };
        let total: i64 = bind(sqlx::query(concat!(
            "SELECT count(*) FROM review_cases c WHERE ",
            case_filter!()
        )))
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        let rows = bind(sqlx::query(concat!(
            "SELECT ",
            case_columns!(),
            " FROM review_cases c WHERE ",
            case_filter!(),
            " ORDER BY c.honest_probability, c.at_stake_waifu_micro + c.at_stake_llama_micro DESC, c.case_id
             LIMIT $8 OFFSET $9"
        )))
        .bind(f.limit.clamp(1, 1000))
        .bind(f.offset.max(0))
        .fetch_all(&self.pool)
        .await?;
        Ok(CasePage {
            total,
            cases: rows.iter().map(case_row).collect::<Result<_, _>>()?,
        })
    }

    /// One case with its actions and appeals.
    pub async fn case(&self, case_id: i64) -> Result<Option<CaseDetail>, sqlx::Error> {
        let Some(row) = sqlx::query(concat!(
            "SELECT ",
            case_columns!(),
            " FROM review_cases c WHERE c.case_id = $1"
        ))
        .bind(case_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let actions = sqlx::query(
            "SELECT username, action, reason, at FROM case_actions WHERE case_id = $1
             ORDER BY action_id",
        )
        .bind(case_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| ActionRow {
            username: r.get(0),
            action: r.get(1),
            reason: r.get(2),
            at: r.get(3),
        })
        .collect();
        let appeals = sqlx::query(
            "SELECT appeal_id, filed_by, statement, filed_at, decided_by, outcome, reason, decided_at
             FROM appeals WHERE case_id = $1 ORDER BY appeal_id",
        )
        .bind(case_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| AppealRow {
            appeal_id: r.get(0),
            filed_by: r.get(1),
            statement: r.get(2),
            filed_at: r.get(3),
            decided_by: r.get(4),
            outcome: r.get(5),
            reason: r.get(6),
            decided_at: r.get(7),
        })
        .collect();
        Ok(Some(CaseDetail {
            case: case_row(&row)?,
            actions,
            appeals,
        }))
    }

    /// A staff action on a case, with its effects, in one transaction. `reversals`
    /// signs the event of a reversal. A confirmation signs nothing: it records the
    /// slash the reviewer saw and queues the miner for the judge, which holds the slash
    /// key and signs that slash if its own decision agrees (`settle_confirmations`).
    pub async fn act(
        &self,
        actor: &Actor,
        case_id: i64,
        action: StaffAction,
        reason: &str,
        rules: &Rules,
        reversals: Option<&events::ReversalSigner>,
    ) -> Result<CaseDetail, ReviewError> {
        let miner: Option<String> =
            sqlx::query_scalar("SELECT miner_id FROM review_cases WHERE case_id = $1")
                .bind(case_id)
                .fetch_optional(&self.pool)
                .await?;
        let miner = miner.ok_or(ReviewError::NoCase(case_id))?;
        let miner_id = MinerId::parse(&miner).map_err(|e| {
            sqlx::Error::Decode(format!("case {case_id}: miner id {miner:?}: {e}").into())
        })?;
        let points_factor = self.points_factor(&miner_id, rules).await?;
        let mut tx = self.pool.begin().await?;
        lock_miner(&mut tx, &miner).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            case_columns!(),
            " FROM review_cases c WHERE c.case_id = $1 FOR UPDATE"
        ))
        .bind(case_id)
        .fetch_one(&mut *tx)
        .await?;
        let case = case_row(&row)?;
        let appeal: Option<(i64, String)> = sqlx::query_as(
            "SELECT appeal_id, filed_by FROM appeals WHERE case_id = $1 AND outcome IS NULL",
        )
        .bind(case_id)
        .fetch_optional(&mut *tx)
        .await?;
        let facts = case_facts(&case, appeal.as_ref().map(|(_, by)| by.clone()), rules);
        let to = crate::review::next(&facts, action, actor, reason)?;
        let mut detail = serde_json::json!({
            "miner_id": miner,
            "action": action.as_str(),
            "reason": reason,
            "from": case.status.as_str(),
            "to": to.as_str(),
        });
        // The first of two dismissals: a proposal, with no effect but its record.
        let proposal = action == StaffAction::Dismiss && to == CaseStatus::Open;
        match action {
            StaffAction::Dismiss if proposal => {
                sqlx::query("UPDATE review_cases SET dismiss_proposed_by = $2 WHERE case_id = $1")
                    .bind(case_id)
                    .bind(&actor.username)
                    .execute(&mut *tx)
                    .await?;
                detail["proposal"] = true.into();
                detail["second_reviewer_above"] =
                    rules.slashing.second_reviewer_dismiss_above.into();
            }
            StaffAction::Confirm => {
                let history = super::load_history(&mut tx, &miner, rules, points_factor).await?;
                let now = case::decide(&miner_id, history, rules);
                let slash = now
                    .decision
                    .slash
                    .clone()
                    .or(now.decision.confirmation.clone())
                    .ok_or(ReviewError::NothingToConfirm)?;
                let exists: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM slashes WHERE slash_id = $1)")
                        .bind(&slash.slash_id)
                        .fetch_one(&mut *tx)
                        .await?;
                if exists {
                    return Err(ReviewError::NothingToConfirm);
                }
                // The slash the reviewer saw, unsigned: the judge signs it if its own
                // decision yields the same (`settle_confirmations`).
                sqlx::query(
                    "UPDATE review_cases SET status = 'confirming', pending_slash_id = $2,
                            confirmed_by = $3, decision = $4,
                            at_stake_waifu_micro = $5, at_stake_llama_micro = $6
                     WHERE case_id = $1",
                )
                .bind(case_id)
                .bind(&slash.slash_id)
                .bind(&actor.username)
                .bind(sqlx::types::Json(&now.decision))
                .bind(slash.amount.waifu_micro)
                .bind(slash.amount.llama_micro)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO judge_queue (miner_id) VALUES ($1)
                     ON CONFLICT (miner_id) DO UPDATE
                     SET since = now(), version = judge_queue.version + 1",
                )
                .bind(&miner)
                .execute(&mut *tx)
                .await?;
                detail["slash_id"] = slash.slash_id.clone().into();
                detail["signed_by"] = "judge".into();
            }
            StaffAction::Dismiss => {
                // The screen failures the flag cited stop raising the miner's draw.
                let jobs: Vec<String> = case
                    .decision
                    .evidence
                    .iter()
                    .map(|e| e.job_id.as_str().to_owned())
                    .collect();
                let bodies: Vec<sqlx::types::Json<JobVerdict>> = sqlx::query_scalar(
                    "SELECT body FROM verdicts WHERE stage = 'screen' AND job_id = ANY($1)",
                )
                .bind(&jobs)
                .fetch_all(&mut *tx)
                .await?;
                let forgiven: i64 = bodies
                    .iter()
                    .map(|b| i64::from(case::screen_failures(&b.0)))
                    .sum();
                sqlx::query(
                    "UPDATE miner_risk
                     SET excess_failures = greatest(0, excess_failures - $2::float8)
                     WHERE miner_id = $1",
                )
                .bind(&miner)
                .bind(forgiven as f64)
                .execute(&mut *tx)
                .await?;
                detail["forgiven_screen_failures"] = forgiven.into();
            }
            StaffAction::MoreEvidence => {
                let until: DateTime<Utc> = sqlx::query_scalar(
                    "INSERT INTO miner_risk (miner_id, evidence_requested_until)
                     VALUES ($1, now() + make_interval(days => $2))
                     ON CONFLICT (miner_id) DO UPDATE
                     SET evidence_requested_until = EXCLUDED.evidence_requested_until
                     RETURNING evidence_requested_until",
                )
                .bind(&miner)
                .bind(i32::try_from(rules.sampling.evidence_days).unwrap_or(i32::MAX))
                .fetch_one(&mut *tx)
                .await?;
                detail["raised_until"] = until.to_rfc3339().into();
                detail["rate_at_least"] = rules.sampling.evidence_rate.into();
            }
            StaffAction::Note => {}
            StaffAction::Appeal => {
                let appeal_id: i64 = sqlx::query_scalar(
                    "INSERT INTO appeals (case_id, filed_by, statement) VALUES ($1, $2, $3)
                     RETURNING appeal_id",
                )
                .bind(case_id)
                .bind(&actor.username)
                .bind(reason)
                .fetch_one(&mut *tx)
                .await?;
                detail["appeal_id"] = appeal_id.into();
            }
            StaffAction::Uphold | StaffAction::Reverse => {
                let (appeal_id, _) = appeal.ok_or(Refusal::WrongStatus {
                    action: action.as_str(),
                    status: "without an undecided appeal",
                })?;
                let outcome = if action == StaffAction::Uphold {
                    "upheld"
                } else {
                    "reversed"
                };
                sqlx::query(
                    "UPDATE appeals SET decided_by = $2, outcome = $3, reason = $4,
                            decided_at = now()
                     WHERE appeal_id = $1",
                )
                .bind(appeal_id)
                .bind(&actor.username)
                .bind(outcome)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                detail["appeal_id"] = appeal_id.into();
                if action == StaffAction::Reverse {
                    let slash_id = case.slash_id.clone().ok_or_else(|| {
                        sqlx::Error::Decode(format!("case {case_id} has no slash").into())
                    })?;
                    let signer = reversals.ok_or(ReviewError::NoReversalKey)?;
                    let event =
                        reverse_slash(&mut tx, &slash_id, appeal_id, actor, reason, signer).await?;
                    if case.opened_by == "flag" {
                        sqlx::query(
                            "UPDATE miner_risk SET confirmed_flags = greatest(0, confirmed_flags - 1)
                             WHERE miner_id = $1",
                        )
                        .bind(&miner)
                        .execute(&mut *tx)
                        .await?;
                    }
                    detail["slash_id"] = slash_id.into();
                    detail["amount"] = serde_json::to_value(event.amount)
                        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                }
            }
        }
        // Leaving `open` voids a pending dismissal proposal.
        sqlx::query(
            "UPDATE review_cases SET status = $2, updated_at = now(),
                    dismiss_proposed_by = CASE WHEN $2 = 'open' THEN dismiss_proposed_by END
             WHERE case_id = $1",
        )
        .bind(case_id)
        .bind(to.as_str())
        .execute(&mut *tx)
        .await?;
        let recorded = if proposal {
            "dismiss_proposed"
        } else {
            action.as_str()
        };
        sqlx::query(
            "INSERT INTO case_actions (case_id, username, action, reason, via)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(case_id)
        .bind(&actor.username)
        .bind(recorded)
        .bind(reason)
        .bind(sqlx::types::Json(&actor.via))
        .execute(&mut *tx)
        .await?;
        append_log(
            &mut tx,
            actor.into(),
            recorded,
            &format!("case:{case_id}"),
            detail,
        )
        .await?;
        tx.commit().await?;
        self.case(case_id)
            .await?
            .ok_or(ReviewError::NoCase(case_id))
    }

    /// The enabled account of a username (a session's owner, checked on every request).
    /// `via` is how they came (their session).
    pub async fn staff_actor(
        &self,
        username: &str,
        via: Via,
    ) -> Result<Option<Actor>, sqlx::Error> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM staff WHERE username = $1 AND disabled_at IS NULL",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(role.and_then(|r| Role::parse(&r)).map(|role| Actor {
            username: username.to_owned(),
            role,
            via,
        }))
    }

    /// Every account, for the admin page.
    pub async fn staff_list(&self) -> Result<Vec<StaffRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT s.username, s.role, s.created_at, s.disabled_at,
                    (SELECT count(*) FROM api_tokens t WHERE t.username = s.username
                       AND t.revoked_at IS NULL AND t.expires_at > now())
             FROM staff s ORDER BY s.username",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| StaffRow {
                username: r.get(0),
                role: r.get(1),
                created_at: r.get(2),
                disabled_at: r.get(3),
                tokens: r.get(4),
            })
            .collect())
    }

    /// A miner's jobs, newest first, each with its latest verdict (re-run over screen).
    pub async fn miner_jobs(
        &self,
        miner: &str,
        limit: i64,
    ) -> Result<Vec<(crate::record::JobRecord, Option<JobVerdict>)>, sqlx::Error> {
        self.jobs_where(jobs_where!("j.miner_id = $1"), miner, limit)
            .await
    }

    /// One job's record and latest verdict.
    pub async fn job(
        &self,
        job_id: &str,
    ) -> Result<Option<(crate::record::JobRecord, Option<JobVerdict>)>, sqlx::Error> {
        Ok(self
            .jobs_where(jobs_where!("j.job_id = $1"), job_id, 1)
            .await?
            .pop())
    }

    /// The jobs a [`jobs_where!`] query selects, binding `value` and `limit`.
    async fn jobs_where(
        &self,
        query: &'static str,
        value: &str,
        limit: i64,
    ) -> Result<Vec<(crate::record::JobRecord, Option<JobVerdict>)>, sqlx::Error> {
        let rows = sqlx::query(query)
            .bind(value)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let text: String = r.get(0);
            // Stored from a parsed record, so it parses back; one that does not is
            // left out of the report rather than failing it.
            let Ok(record) = crate::record::JobRecord::from_json(text.as_bytes()) else {
                continue;
            };
            let verdict: Option<sqlx::types::Json<JobVerdict>> = r.get(1);
            out.push((record, verdict.map(|v| v.0)));
        }
        Ok(out)
    }

    /// Reported inference latencies of other miners' jobs on the same GPU name and
    /// model: the peers a latency chart shows.
    pub async fn peer_latencies(
        &self,
        hardware: &str,
        model: &str,
        except_miner: &str,
        limit: i64,
    ) -> Result<Vec<f64>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT (record->'metrics'->>'inference_latency')::float8 FROM jobs
             WHERE record->'metrics'->>'hardware' = $1 AND model_id = $2 AND miner_id <> $3
             ORDER BY submitted_at DESC LIMIT $4",
        )
        .bind(hardware)
        .bind(model)
        .bind(except_miner)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Every job that returned the same output as `original`: the job itself and each
    /// job whose `reuse` check matched it, oldest first, with its miner.
    pub async fn same_output(
        &self,
        original: &str,
    ) -> Result<Vec<(String, String, DateTime<Utc>)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT job_id, miner_id, submitted_at FROM jobs WHERE job_id = $1
             UNION
             SELECT j.job_id, j.miner_id, j.submitted_at
             FROM verdicts v JOIN jobs j USING (job_id)
             CROSS JOIN LATERAL jsonb_array_elements(v.body->'checks') AS c
             WHERE c->>'check' = 'reuse' AND c->>'status' = 'fail'
               AND c->'evidence'->'details'->'matched'->>'job_id' = $1
             ORDER BY submitted_at, job_id",
        )
        .bind(original)
        .fetch_all(&self.pool)
        .await
    }

    /// The NFTs a wallet holds, as the wallet service last reported.
    pub async fn wallet_nfts(&self, wallet: &str) -> Result<Option<i32>, sqlx::Error> {
        sqlx::query_scalar("SELECT nfts FROM wallet_nfts WHERE wallet = $1")
            .bind(wallet.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await
    }

    /// Stores a login session under the hash of its id: `create` inserts and refuses
    /// an id in use; otherwise only a session still stored is updated, so that a
    /// request that was in flight when its session ended (a logout everywhere, an
    /// expiry) cannot write the session back.
    pub async fn save_session(
        &self,
        id_hash: &str,
        data: &serde_json::Value,
        expires_at: DateTime<Utc>,
        create: bool,
    ) -> Result<bool, sqlx::Error> {
        let sql = if create {
            "INSERT INTO staff_sessions (id_hash, data, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (id_hash) DO NOTHING"
        } else {
            "UPDATE staff_sessions SET data = $2, expires_at = $3
             WHERE id_hash = $1 AND expires_at > now()"
        };
        let n = sqlx::query(sql)
            .bind(id_hash)
            .bind(data)
            .bind(expires_at)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// An unexpired session's data and expiry.
    pub async fn load_session(
        &self,
        id_hash: &str,
    ) -> Result<Option<(serde_json::Value, DateTime<Utc>)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT data, expires_at FROM staff_sessions WHERE id_hash = $1 AND expires_at > now()",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await
    }

    /// Deletes the sessions past their expiry; how many. The review app runs it every
    /// `review.session_purge_seconds`.
    pub async fn purge_sessions(&self) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM staff_sessions WHERE expires_at <= now()")
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM staff_sessions WHERE id_hash = $1 OR expires_at < now()")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

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

/// Records a reversal and puts its signed event in the outbox. The reversal names the
/// slash's signed event by its payload hash and gives back the amount that event says,
/// read from the outbox's envelope and verified under the slash key: never from the
/// `slashes` row, which anyone with write access to the database could inflate before
/// an honest reviewer reverses it. It is signed with the reversal key.
async fn reverse_slash(
    tx: &mut Transaction<'static, Postgres>,
    slash_id: &str,
    appeal_id: i64,
    actor: &Actor,
    reason: &str,
    signer: &events::ReversalSigner,
) -> Result<ReversalEvent, ReviewError> {
    let refuse = |why: String| ReviewError::SlashEvent {
        slash_id: slash_id.to_owned(),
        why,
    };
    let envelope: Option<String> =
        sqlx::query_scalar("SELECT envelope FROM outbox WHERE event_id = $1 AND kind = $2")
            .bind(slash_id)
            .bind(super::SLASH_EVENT)
            .fetch_optional(&mut **tx)
            .await?;
    let envelope =
        envelope.ok_or_else(|| refuse("its signed event is not in the outbox".into()))?;
    let (slash, slash_sha256) = events::verify_slash(envelope.as_bytes(), signer.slash_key())
        .map_err(|e| refuse(format!("its signed event does not verify: {e}")))?;
    if slash.slash_id != slash_id {
        return Err(refuse(format!(
            "its outbox row holds the event of slash {}",
            slash.slash_id
        )));
    }
    let miner = slash.miner_id.to_string();
    let reversed_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO slash_reversals (slash_id, appeal_id, reversed_by, reason)
         VALUES ($1, $2, $3, $4) RETURNING reversed_at",
    )
    .bind(slash_id)
    .bind(appeal_id)
    .bind(&actor.username)
    .bind(reason)
    .fetch_one(&mut **tx)
    .await?;
    let event = ReversalEvent {
        event_version: events::REVERSAL_EVENT_VERSION,
        event_type: events::REVERSAL_EVENT_TYPE.to_owned(),
        slash_id: slash_id.to_owned(),
        slash_payload_sha256: slash_sha256,
        wallet: slash.wallet,
        miner_id: slash.miner_id,
        amount: slash.amount,
        appeal_id,
        reversed_by: actor.username.clone(),
        reason: reason.to_owned(),
        reversed_at: trail::timestamp(reversed_at),
    };
    let signed = events::sign_reversal(&event, signer.key())
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let envelope = serde_json::to_string(&signed).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO outbox (event_id, kind, key, envelope) VALUES ($1, $2, $3, $4)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(format!("{slash_id}:reversed"))
    .bind(REVERSAL_EVENT)
    .bind(&miner)
    .bind(envelope)
    .execute(&mut **tx)
    .await?;
    Ok(event)
}

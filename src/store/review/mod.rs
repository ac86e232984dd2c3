//! Staff review in Postgres: accounts, tokens, cases, staff actions with their effects,
//! appeals, reversals and the audit log. What an action does is
//! `review::workflow::decide`'s (pure); this module reads what it asks for, calls it,
//! and writes the effects it returns in one transaction.
//!
//! Lock order, everywhere: the miner's advisory lock (the judge's), then the case row,
//! then the audit log's advisory lock. The judge takes them in the same order when it
//! settles a reviewer's confirmation or an automatic slash settles a case, so a
//! reviewer and a judge never wait on each other in a cycle.
//!
//! One file per thing stored: `staff` (accounts, tokens, logins), `sessions` (the app's
//! login sessions), `cases` (the queue, a case, and the staff workflow's effects over
//! it), `jobs` (the jobs and outputs a case page shows) and `audit_log` (the
//! hash-chained log and the tables it is checked against).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, Row, Transaction};

use super::{REVERSAL_EVENT, Store, write_slash};
use crate::checks::JobVerdict;
use crate::decide::{Decision, Slash};
use crate::events::{self};
use crate::ids::MinerId;
use crate::points::MicroPoints;
use crate::review::auth::{self, NewToken};
use crate::review::trail::{self, Entry};
use crate::review::workflow::{ActionError, Appeal, Decided, Effect, Facts, Reads, Wallet};
use crate::review::{Actor, CaseRow, CaseStatus, Refusal, Role, Via};

pub use audit_log::AuditSnapshot;
use audit_log::append_log;
pub use cases::JUDGE_ACTOR;
pub(crate) use cases::{join_open_case, open_slash_case, settle_confirmations};

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
    /// A staff action the workflow could not carry out as asked
    /// (`review::workflow::ActionError`, less its refusals).
    #[error("{0}")]
    Action(ActionError),
    #[error("{0}")]
    Credential(#[from] auth::CredentialError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<ActionError> for ReviewError {
    fn from(e: ActionError) -> ReviewError {
        match e {
            ActionError::Refused(r) => ReviewError::Refused(r),
            ActionError::Inconsistent(why) => ReviewError::Db(sqlx::Error::Decode(why.into())),
            ActionError::Sign(e) => ReviewError::Db(sqlx::Error::Encode(Box::new(e))),
            e => ReviewError::Action(e),
        }
    }
}

impl ReviewError {
    /// Whether the request was refused for what it asked (a client error), not for
    /// the service's state.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ReviewError::Refused(_)
                | ReviewError::Action(ActionError::NothingToConfirm)
                | ReviewError::StaffExists(_)
                | ReviewError::NotTheHolder { .. }
                | ReviewError::TokenLifetime(_)
                | ReviewError::NoToken(_)
                | ReviewError::Credential(_)
        )
    }
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
    c.evidence_probability, c.at_stake_waifu_micro, c.at_stake_llama_micro, c.confirmed_by, c.opened_at,
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
        evidence_probability: r.try_get(6)?,
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

// After the macros above: a `macro_rules!` is seen only by the modules declared after
// it.
mod audit_log;
mod cases;
mod jobs;
mod sessions;
mod staff;

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

//! Cases: the queue and one case with its history, the staff workflow over them
//! ([`Store::act`]), and what the judge writes into them (a flag joins the open case, an
//! automatic slash settles it, a reviewer's confirmation is signed or lapses).

use super::*;

/// The judge's flag joins the miner's open case, or opens one.
pub(crate) async fn join_open_case(
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
        "INSERT INTO review_cases (miner_id, opened_by, status, flag_id, evidence_probability,
                                   at_stake_waifu_micro, at_stake_llama_micro, decision)
         VALUES ($1, 'flag', 'open', $2, $3, $4, $5, $6)
         ON CONFLICT (miner_id) WHERE status = 'open' DO UPDATE
         SET flag_id = EXCLUDED.flag_id, evidence_probability = EXCLUDED.evidence_probability,
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

/// The audit log's actor for what the judge does to a case on its own; `:` is never in
/// a staff username.
pub const JUDGE_ACTOR: &str = "judge:auto";

/// An automatic slash gives the miner a `slashed` case for the appeal. A flag the miner
/// already has open is that case: the slash settles it (a reviewer has nothing left to
/// confirm), and the audit log says so. Otherwise the slash opens a case of its own.
pub(crate) async fn open_slash_case(
    tx: &mut Transaction<'static, Postgres>,
    decision: &Decision,
    slash: &Slash,
) -> Result<(), sqlx::Error> {
    // One statement: settle the open case if there is one, else open a `slashed` one.
    let settled: Option<i64> = sqlx::query_scalar(
        "WITH settled AS (
             UPDATE review_cases
             SET status = 'slashed', slash_id = $2, evidence_probability = $3,
                 at_stake_waifu_micro = $4, at_stake_llama_micro = $5, decision = $6, updated_at = now()
             WHERE miner_id = $1 AND status = 'open'
             RETURNING case_id
         ), opened AS (
             INSERT INTO review_cases (miner_id, opened_by, status, slash_id,
                                       evidence_probability, at_stake_waifu_micro, at_stake_llama_micro,
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
pub(crate) async fn settle_confirmations(
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
                    confirmed_by = NULL, decision = $2, evidence_probability = $3,
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

impl Store {
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
            " ORDER BY c.evidence_probability, c.at_stake_waifu_micro + c.at_stake_llama_micro DESC, c.case_id
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

    /// A staff action on a case, in one transaction under the miner's lock: reads what
    /// `reads` asks for, hands it to `decide` (`review::workflow::decide`, pure: the
    /// store holds no rules of who may do what, and no key), and writes the new status,
    /// each effect, the action row and the audit log entry. A confirmation is signed by
    /// the judge later, if at all (`settle_confirmations`).
    pub async fn act<F>(
        &self,
        actor: &Actor,
        case_id: i64,
        reads: Reads,
        decide: F,
    ) -> Result<CaseDetail, ReviewError>
    where
        F: FnOnce(Facts) -> Result<Decided, ActionError>,
    {
        let miner: Option<String> =
            sqlx::query_scalar("SELECT miner_id FROM review_cases WHERE case_id = $1")
                .bind(case_id)
                .fetch_optional(&self.pool)
                .await?;
        let miner = miner.ok_or(ReviewError::NoCase(case_id))?;
        let wallet = match (reads.history_days, MinerId::parse(&miner)) {
            (Some(_), Ok(id)) => Some(self.wallet(&id).await?),
            (Some(_), Err(_)) => Some(Wallet::default()),
            (None, _) => None,
        };
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
        // The transaction's time (Postgres's `now()` is fixed for the transaction).
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *tx)
            .await?;
        let history = match (reads.history_days, wallet) {
            (Some(days), Some(wallet)) => {
                let history = crate::store::load_history(&mut tx, &miner, days, 1.0).await?;
                let slashes: Vec<String> =
                    sqlx::query_scalar("SELECT slash_id FROM slashes WHERE miner_id = $1")
                        .bind(&miner)
                        .fetch_all(&mut *tx)
                        .await?;
                Some((history, wallet, slashes.into_iter().collect()))
            }
            _ => None,
        };
        let cited_screen_verdicts = if reads.cited_screen_verdicts {
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
            bodies.into_iter().map(|b| b.0).collect()
        } else {
            Vec::new()
        };
        let slash_envelope = match (&case.slash_id, reads.slash_event) {
            (Some(slash_id), true) => {
                sqlx::query_scalar("SELECT envelope FROM outbox WHERE event_id = $1 AND kind = $2")
                    .bind(slash_id)
                    .bind(crate::store::SLASH_EVENT)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            _ => None,
        };
        let decided = decide(Facts {
            case,
            appeal: appeal.map(|(appeal_id, filed_by)| Appeal {
                appeal_id,
                filed_by,
            }),
            now,
            history,
            cited_screen_verdicts,
            slash_envelope,
        })?;
        let Decided {
            to,
            recorded,
            effects,
            mut detail,
        } = decided;
        for effect in effects {
            apply(&mut tx, case_id, &miner, actor, effect, &mut detail).await?;
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
        let reason = detail["reason"].as_str().unwrap_or_default().to_owned();
        sqlx::query(
            "INSERT INTO case_actions (case_id, username, action, reason, via)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(case_id)
        .bind(&actor.username)
        .bind(recorded)
        .bind(&reason)
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
}

/// Writes one effect of a staff action (`review::workflow::Effect`), adding to the
/// audit log entry's detail what only the database gives (an appeal's id).
async fn apply(
    tx: &mut Transaction<'static, Postgres>,
    case_id: i64,
    miner: &str,
    actor: &Actor,
    effect: Effect,
    detail: &mut serde_json::Value,
) -> Result<(), sqlx::Error> {
    match effect {
        Effect::ProposeDismissal => {
            sqlx::query("UPDATE review_cases SET dismiss_proposed_by = $2 WHERE case_id = $1")
                .bind(case_id)
                .bind(&actor.username)
                .execute(&mut **tx)
                .await?;
        }
        Effect::AwaitSignature { slash, decision } => {
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
            .bind(sqlx::types::Json(&decision))
            .bind(slash.amount.waifu_micro)
            .bind(slash.amount.llama_micro)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "INSERT INTO judge_queue (miner_id) VALUES ($1)
                 ON CONFLICT (miner_id) DO UPDATE
                 SET since = now(), version = judge_queue.version + 1",
            )
            .bind(miner)
            .execute(&mut **tx)
            .await?;
        }
        Effect::Forgive { screen_failures } => {
            sqlx::query(
                "UPDATE miner_risk
                 SET excess_failures = greatest(0, excess_failures - $2::float8)
                 WHERE miner_id = $1",
            )
            .bind(miner)
            .bind(f64::from(screen_failures))
            .execute(&mut **tx)
            .await?;
        }
        Effect::RequestEvidence { until } => {
            sqlx::query(
                "INSERT INTO miner_risk (miner_id, evidence_requested_until) VALUES ($1, $2)
                 ON CONFLICT (miner_id) DO UPDATE
                 SET evidence_requested_until = EXCLUDED.evidence_requested_until",
            )
            .bind(miner)
            .bind(until)
            .execute(&mut **tx)
            .await?;
        }
        Effect::FileAppeal => {
            let appeal_id: i64 = sqlx::query_scalar(
                "INSERT INTO appeals (case_id, filed_by, statement) VALUES ($1, $2, $3)
                 RETURNING appeal_id",
            )
            .bind(case_id)
            .bind(&actor.username)
            .bind(detail["reason"].as_str().unwrap_or_default())
            .fetch_one(&mut **tx)
            .await?;
            detail["appeal_id"] = appeal_id.into();
        }
        Effect::DecideAppeal { appeal_id, outcome } => {
            sqlx::query(
                "UPDATE appeals SET decided_by = $2, outcome = $3, reason = $4,
                        decided_at = now()
                 WHERE appeal_id = $1",
            )
            .bind(appeal_id)
            .bind(&actor.username)
            .bind(outcome)
            .bind(detail["reason"].as_str().unwrap_or_default())
            .execute(&mut **tx)
            .await?;
        }
        Effect::Reverse { event, signed } => {
            sqlx::query(
                "INSERT INTO slash_reversals (slash_id, appeal_id, reversed_by, reason, reversed_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&event.slash_id)
            .bind(event.appeal_id)
            .bind(&event.reversed_by)
            .bind(&event.reason)
            .bind(event.reversed_at)
            .execute(&mut **tx)
            .await?;
            let envelope =
                serde_json::to_string(&signed).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            sqlx::query(
                "INSERT INTO outbox (event_id, kind, key, envelope) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(format!("{}:reversed", event.slash_id))
            .bind(REVERSAL_EVENT)
            .bind(event.miner_id.to_string())
            .bind(envelope)
            .execute(&mut **tx)
            .await?;
        }
        Effect::UncountFlag => {
            sqlx::query(
                "UPDATE miner_risk SET confirmed_flags = greatest(0, confirmed_flags - 1)
                 WHERE miner_id = $1",
            )
            .bind(miner)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

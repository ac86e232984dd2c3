//! A staff action on a case, as a pure function: from what the store read under the
//! miner's lock ([`Facts`]) to the case's new status and every effect to write
//! ([`Decided`]). The store reads what [`reads`] asks for, calls [`decide`] in the
//! same transaction, and applies the effects; it decides nothing and signs nothing.
//!
//! The same shape as the judge's: `case::entry` turns a history into a signed entry,
//! and `case::Ledger` writes it.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};

use super::{Actor, CaseFacts, CaseRow, CaseStatus, Dismissal, Refusal, StaffAction, next};
use crate::case::{self, History};
use crate::checks::JobVerdict;
use crate::decide::{Decision, Slash};
use crate::events::{self, ReversalEvent, ReversalSigner, SignedEvent};
use crate::ids::MinerId;
use crate::rules::Rules;

/// What the store reads for an action, beyond the case and its undecided appeal: the
/// history only for a confirmation, the cited screen verdicts only for a dismissal, the
/// slash's signed event only for a reversal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    /// The miner's verdicts of the last this many days before its newest job, its
    /// slashed jobs, its existing slash ids and its wallet: what the judge reads.
    pub history_days: Option<u32>,
    /// The screen verdicts of the jobs the case's decision cites.
    pub cited_screen_verdicts: bool,
    /// The signed event of the case's slash, from the outbox.
    pub slash_event: bool,
}

/// What `action` needs read under `rules`.
pub fn reads(action: StaffAction, rules: &Rules) -> Reads {
    match action {
        StaffAction::Confirm => Reads {
            history_days: Some(rules.slashing.window_days),
            ..Reads::default()
        },
        StaffAction::Dismiss => Reads {
            cited_screen_verdicts: true,
            ..Reads::default()
        },
        StaffAction::Reverse => Reads {
            slash_event: true,
            ..Reads::default()
        },
        StaffAction::MoreEvidence
        | StaffAction::Note
        | StaffAction::Appeal
        | StaffAction::Uphold => Reads::default(),
    }
}

/// The miner's wallet as the points factor needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wallet {
    /// NFTs the wallet holds (`None`: no row, or a count out of range).
    pub nfts: Option<u32>,
    /// The miners of the wallet that ran jobs.
    pub miners: Vec<MinerId>,
}

/// The case's undecided appeal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appeal {
    pub appeal_id: i64,
    pub filed_by: String,
}

/// What the store read, under the miner's lock, for one action.
#[derive(Debug, Clone)]
pub struct Facts {
    pub case: CaseRow,
    pub appeal: Option<Appeal>,
    /// The transaction's time: what every timestamp the action writes says.
    pub now: DateTime<Utc>,
    /// With [`Reads::history_days`]: the history (its points factor is set from
    /// `wallet` here), the wallet, and the ids of the miner's slashes.
    pub history: Option<(History, Wallet, BTreeSet<String>)>,
    /// With [`Reads::cited_screen_verdicts`].
    pub cited_screen_verdicts: Vec<JobVerdict>,
    /// With [`Reads::slash_event`]: the envelope of the case's slash in the outbox.
    pub slash_envelope: Option<String>,
}

/// A write the store makes for an action, besides the case's status, the action row
/// and the audit log entry.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a staff action makes at most three, once: boxing would buy nothing"
)]
pub enum Effect {
    /// The first of two dismissals: its reviewer, on the case.
    ProposeDismissal,
    /// A confirmation: the slash the reviewer saw, unsigned, on the case, and the
    /// miner queued for the judge, which signs it only if its own decision agrees.
    AwaitSignature { slash: Slash, decision: Decision },
    /// The screen failures the dismissed flag cited stop raising the miner's draw.
    Forgive { screen_failures: u32 },
    /// The miner's rate is held up until then.
    RequestEvidence { until: DateTime<Utc> },
    /// An appeal filed with the reason as its statement (the store gives it an id).
    FileAppeal,
    /// The undecided appeal closed.
    DecideAppeal {
        appeal_id: i64,
        outcome: &'static str,
    },
    /// The reversal recorded and its signed event put in the outbox.
    Reverse {
        event: ReversalEvent,
        signed: SignedEvent,
    },
    /// A reversed confirmation's flag no longer counts toward the miner's draw.
    UncountFlag,
}

/// The outcome of an action: the case's new status, what the logs record, the effects,
/// and the audit log entry's detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub to: CaseStatus,
    /// The action as the case's history and the audit log name it (`dismiss_proposed`
    /// for the first of two dismissals).
    pub recorded: &'static str,
    pub effects: Vec<Effect>,
    pub detail: serde_json::Value,
}

/// Why an action is refused, or cannot be carried out as asked.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
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
    /// What the store read cannot be what it should be (a case without its slash).
    #[error("{0}")]
    Inconsistent(String),
    #[error("cannot sign the reversal: {0}")]
    Sign(#[from] serde_json::Error),
}

/// One staff action as asked: what the store reads for it ([`Request::reads`]) and
/// the decision over what it read ([`Request::decide`]).
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub action: StaffAction,
    pub actor: &'a Actor,
    pub reason: &'a str,
    pub rules: &'a Rules,
    /// Signs a reversal's event; none: a reversal is refused.
    pub reversals: Option<&'a ReversalSigner>,
}

impl Request<'_> {
    pub fn reads(&self) -> Reads {
        reads(self.action, self.rules)
    }

    pub fn decide(&self, facts: Facts) -> Result<Decided, ActionError> {
        decide(
            facts,
            self.action,
            self.actor,
            self.reason,
            self.rules,
            self.reversals,
        )
    }
}

/// What `review::next` needs to know of `case`: its status, who confirmed it, who filed
/// its undecided appeal, and who may dismiss it under `rules`.
pub fn case_facts(case: &CaseRow, appeal_filed_by: Option<String>, rules: &Rules) -> CaseFacts {
    let stake = case.at_stake.points();
    CaseFacts {
        status: case.status,
        confirmed_by: case.confirmed_by.clone(),
        appeal_filed_by,
        dismissal: Dismissal::for_stake(
            stake.waifu + stake.llama,
            rules.slashing.second_reviewer_dismiss_above,
            case.dismiss_proposed_by.clone(),
        ),
    }
}

/// Decides `action` by `actor` on the case in `facts`: refuses it ([`next`], and what
/// the evidence allows), or says the new status and every effect. A confirmation
/// recomputes the slash from the evidence as the judge would, and signs nothing; a
/// reversal undoes the amount of the slash's signed event, verified under the slash
/// key, and is signed with the reversal key.
pub fn decide(
    facts: Facts,
    action: StaffAction,
    actor: &Actor,
    reason: &str,
    rules: &Rules,
    reversals: Option<&ReversalSigner>,
) -> Result<Decided, ActionError> {
    let Facts {
        case,
        appeal,
        now,
        history,
        cited_screen_verdicts,
        slash_envelope,
    } = facts;
    let to = next(
        &case_facts(&case, appeal.as_ref().map(|a| a.filed_by.clone()), rules),
        action,
        actor,
        reason,
    )?;
    let mut detail = serde_json::json!({
        "miner_id": case.miner_id,
        "action": action.as_str(),
        "reason": reason,
        "from": case.status.as_str(),
        "to": to.as_str(),
    });
    // The first of two dismissals: a proposal, with no effect but its record.
    let proposal = action == StaffAction::Dismiss && to == CaseStatus::Open;
    let mut effects = Vec::new();
    match action {
        StaffAction::Dismiss if proposal => {
            effects.push(Effect::ProposeDismissal);
            detail["proposal"] = true.into();
            detail["second_reviewer_above"] = rules.slashing.second_reviewer_dismiss_above.into();
        }
        StaffAction::Confirm => {
            let (mut history, wallet, slashes) = history.ok_or_else(|| {
                ActionError::Inconsistent("a confirmation without its history".into())
            })?;
            let miner = MinerId::parse(&case.miner_id).map_err(|e| {
                ActionError::Inconsistent(format!("case {}: miner id: {e}", case.case_id))
            })?;
            history.points_factor =
                crate::points::wallet_boost(rules, &miner, &wallet.miners, wallet.nfts);
            let now_case = case::decide(&miner, history, rules);
            let slash = now_case
                .decision
                .slash
                .clone()
                .or(now_case.decision.confirmation.clone())
                .ok_or(ActionError::NothingToConfirm)?;
            if slashes.contains(&slash.slash_id) {
                return Err(ActionError::NothingToConfirm);
            }
            detail["slash_id"] = slash.slash_id.clone().into();
            detail["signed_by"] = "judge".into();
            effects.push(Effect::AwaitSignature {
                slash,
                decision: now_case.decision,
            });
        }
        StaffAction::Dismiss => {
            let screen_failures: u32 = cited_screen_verdicts
                .iter()
                .filter(|v| case.decision.evidence.iter().any(|e| e.job_id == v.job_id))
                .map(case::screen_failures)
                .sum();
            detail["forgiven_screen_failures"] = screen_failures.into();
            effects.push(Effect::Forgive { screen_failures });
        }
        StaffAction::MoreEvidence => {
            let days = i64::from(rules.sampling.evidence_days);
            let until = now + Duration::days(days);
            detail["raised_until"] = until.to_rfc3339().into();
            detail["rate_at_least"] = rules.sampling.evidence_rate.into();
            effects.push(Effect::RequestEvidence { until });
        }
        StaffAction::Note => {}
        StaffAction::Appeal => effects.push(Effect::FileAppeal),
        StaffAction::Uphold | StaffAction::Reverse => {
            let appeal = appeal.ok_or(Refusal::WrongStatus {
                action: action.as_str(),
                status: "without an undecided appeal",
            })?;
            let outcome = if action == StaffAction::Uphold {
                "upheld"
            } else {
                "reversed"
            };
            detail["appeal_id"] = appeal.appeal_id.into();
            effects.push(Effect::DecideAppeal {
                appeal_id: appeal.appeal_id,
                outcome,
            });
            if action == StaffAction::Reverse {
                let slash_id = case.slash_id.clone().ok_or_else(|| {
                    ActionError::Inconsistent(format!("case {} has no slash", case.case_id))
                })?;
                let signer = reversals.ok_or(ActionError::NoReversalKey)?;
                let event = reversal(
                    &slash_id,
                    slash_envelope.as_deref(),
                    appeal.appeal_id,
                    actor,
                    reason,
                    now,
                    signer,
                )?;
                let signed = events::sign_reversal(&event, signer.key())?;
                detail["slash_id"] = slash_id.into();
                detail["amount"] = serde_json::to_value(event.amount)?;
                effects.push(Effect::Reverse { event, signed });
                if case.opened_by == "flag" {
                    effects.push(Effect::UncountFlag);
                }
            }
        }
    }
    Ok(Decided {
        to,
        recorded: if proposal {
            "dismiss_proposed"
        } else {
            action.as_str()
        },
        effects,
        detail,
    })
}

/// The reversal of slash `slash_id`. It names the slash's signed event by its payload
/// hash and gives back the amount that event says, read from the outbox's envelope and
/// verified under the slash key: never from the `slashes` row, which anyone with write
/// access to the database could inflate before an honest reviewer reverses it.
fn reversal(
    slash_id: &str,
    envelope: Option<&str>,
    appeal_id: i64,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
    signer: &ReversalSigner,
) -> Result<ReversalEvent, ActionError> {
    let refuse = |why: String| ActionError::SlashEvent {
        slash_id: slash_id.to_owned(),
        why,
    };
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
    Ok(ReversalEvent {
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
        reversed_at: super::trail::timestamp(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::points::{MicroPoints, Points};
    use crate::review::{Role, Via};

    fn miner() -> MinerId {
        MinerId::parse("0x00000000000000000000000000000000000000aa-gpu0").unwrap()
    }

    fn rules() -> Rules {
        Rules::embedded().unwrap()
    }

    fn reviewer(name: &str) -> Actor {
        Actor {
            username: name.to_owned(),
            role: Role::Reviewer,
            via: Via::OPERATOR,
        }
    }

    /// A case of the miner with `waifu` points at stake.
    fn case(status: CaseStatus, waifu: f64) -> CaseRow {
        let t = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        CaseRow {
            case_id: 7,
            miner_id: miner().to_string(),
            opened_by: "flag".into(),
            status,
            flag_id: Some("f".into()),
            slash_id: None,
            evidence_probability: 1e-4,
            at_stake: MicroPoints::from_points(Points { waifu, llama: 0.0 }),
            confirmed_by: None,
            opened_at: t,
            updated_at: t,
            decision: crate::decide::decide(&miner(), &[], &BTreeSet::new(), 1.0, &rules()),
            dismiss_proposed_by: None,
            pending_slash_id: None,
        }
    }

    fn facts(case: CaseRow) -> Facts {
        Facts {
            case,
            appeal: None,
            now: DateTime::from_timestamp(1_790_003_600, 0).unwrap(),
            history: None,
            cited_screen_verdicts: Vec::new(),
            slash_envelope: None,
        }
    }

    #[test]
    fn each_action_reads_only_what_it_needs() {
        let r = rules();
        let want = |a| reads(a, &r);
        assert_eq!(
            want(StaffAction::Confirm).history_days,
            Some(r.slashing.window_days)
        );
        assert!(want(StaffAction::Dismiss).cited_screen_verdicts);
        assert!(want(StaffAction::Reverse).slash_event);
        for a in [
            StaffAction::MoreEvidence,
            StaffAction::Note,
            StaffAction::Appeal,
            StaffAction::Uphold,
        ] {
            assert_eq!(want(a), Reads::default(), "{a:?}");
        }
    }

    /// Above the stake threshold, the first reviewer's dismissal is a proposal with no
    /// effect on the draw; the second reviewer's forgives the cited screen failures.
    #[test]
    fn a_dismissal_above_the_stake_is_first_a_proposal_then_forgives() {
        let r = rules();
        let big = r.slashing.second_reviewer_dismiss_above + 1.0;
        let first = decide(
            facts(case(CaseStatus::Open, big)),
            StaffAction::Dismiss,
            &reviewer("ann"),
            "driver difference",
            &r,
            None,
        )
        .unwrap();
        assert_eq!(first.to, CaseStatus::Open);
        assert_eq!(first.recorded, "dismiss_proposed");
        assert_eq!(first.effects, [Effect::ProposeDismissal]);
        let mut proposed = case(CaseStatus::Open, big);
        proposed.dismiss_proposed_by = Some("ann".into());
        let again = decide(
            facts(proposed.clone()),
            StaffAction::Dismiss,
            &reviewer("ann"),
            "driver difference",
            &r,
            None,
        );
        assert!(matches!(
            again,
            Err(ActionError::Refused(Refusal::SecondReviewer { .. }))
        ));
        let second = decide(
            facts(proposed),
            StaffAction::Dismiss,
            &reviewer("bob"),
            "agreed",
            &r,
            None,
        )
        .unwrap();
        assert_eq!(second.to, CaseStatus::Dismissed);
        assert_eq!(second.recorded, "dismiss");
        assert_eq!(second.effects, [Effect::Forgive { screen_failures: 0 }]);
    }

    /// "More evidence" holds the rate up from the transaction's time for the rules'
    /// days, and says so in the log.
    #[test]
    fn more_evidence_holds_the_rate_from_the_transactions_time() {
        let r = rules();
        let f = facts(case(CaseStatus::Open, 1.0));
        let now = f.now;
        let d = decide(f, StaffAction::MoreEvidence, &reviewer("ann"), "", &r, None).unwrap();
        let until = now + Duration::days(i64::from(r.sampling.evidence_days));
        assert_eq!(d.effects, [Effect::RequestEvidence { until }]);
        assert_eq!(d.detail["raised_until"], until.to_rfc3339());
        assert_eq!(d.to, CaseStatus::Open);
    }

    /// A reversal needs the reversal key and the slash's signed event; without either
    /// nothing is signed, and the appeal stays undecided.
    #[test]
    fn a_reversal_without_its_key_or_its_signed_slash_is_refused() {
        let r = rules();
        let mut appealed = case(CaseStatus::Appealed, 10.0);
        appealed.slash_id = Some("s1".into());
        appealed.confirmed_by = Some("ann".into());
        let with_appeal = || Facts {
            appeal: Some(Appeal {
                appeal_id: 3,
                filed_by: "cat".into(),
            }),
            ..facts(appealed.clone())
        };
        let reverse = |f, signer| {
            decide(
                f,
                StaffAction::Reverse,
                &reviewer("bob"),
                "the miner's logs",
                &r,
                signer,
            )
        };
        assert!(matches!(
            reverse(with_appeal(), None),
            Err(ActionError::NoReversalKey)
        ));
        let slash_key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
        let signer = ReversalSigner::new(
            ed25519_dalek::SigningKey::from_bytes(&[43; 32]),
            slash_key.verifying_key(),
        )
        .unwrap();
        assert!(matches!(
            reverse(with_appeal(), Some(&signer)),
            Err(ActionError::SlashEvent { .. })
        ));
        let forged = Facts {
            slash_envelope: Some("{\"payload\":\"e30\",\"signature\":\"00\"}".into()),
            ..with_appeal()
        };
        assert!(matches!(
            reverse(forged, Some(&signer)),
            Err(ActionError::SlashEvent { .. })
        ));
        // Without an undecided appeal there is nothing to reverse.
        assert!(matches!(
            reverse(facts(appealed.clone()), Some(&signer)),
            Err(ActionError::Refused(Refusal::WrongStatus { .. }))
        ));
    }
}

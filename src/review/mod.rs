//! Staff review: who may do what to a case, as data and pure functions.
//!
//! A case is one miner's flag (opened by the judge, `open`) or one automatic slash
//! (`slashed`). Staff act on it:
//!
//! | action | from | to | what else happens ([`workflow::decide`]'s effects) |
//! |---|---|---|---|
//! | confirm | open | confirming | the slash the reviewer saw is recorded, unsigned, and the miner queued for the judge |
//! | (the judge) | confirming | confirmed | the judge recomputes the slash from the evidence; the same slash is signed into the outbox |
//! | (the judge) | confirming | open | the evidence changed since the confirmation: nothing is signed, and a reviewer looks again |
//! | dismiss (reason) | open | dismissed (open: a proposal, above the stake threshold) | the screen failures the flag cited stop raising the draw |
//! | more evidence | any | unchanged | the miner's rate is at least `sampling.evidence_rate` for `evidence_days` |
//! | note (text) | any | unchanged | |
//! | appeal (statement) | confirmed, slashed | appealed | an appeal, filed for the miner |
//! | uphold (reason) | appealed | upheld | the appeal is closed |
//! | reverse (reason) | appealed | reversed | a signed `slash_reversed` event in the outbox |
//!
//! **The second-reviewer rule.** An appeal is decided by neither the reviewer who
//! confirmed the slash nor the one who filed the appeal. A dismissal forgives the
//! flag's screen failures, the same effect as a reversal, so a flag whose stake is
//! above `slashing.second_reviewer_dismiss_above` points is dismissed only by two
//! reviewers: the first one's dismissal is a proposal ([`Dismissal`]), the case stays
//! open, and a second reviewer's dismissal closes it. Every action is appended to the
//! hash-chained audit log ([`trail`]).
//!
//! **Who signs what.** The review app holds no key that can create a slash. A
//! confirmation names the slash the reviewer saw; the judge, which holds the slash key,
//! signs it only if its own decision on the miner's evidence yields that very slash. The
//! review app signs only reversals, with a key of their own (`secrets.reversal_key`),
//! and the ledger refunds at most what the signed slash it names took.

pub mod auth;
pub mod throttle;
pub mod trail;
pub mod workflow;

use serde::{Deserialize, Serialize};

/// A staff account's role. Reviewers decide cases; admins also manage accounts and
/// tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Reviewer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Reviewer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reviewer" => Some(Role::Reviewer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An authenticated staff member, and how they reached proctor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub username: String,
    pub role: Role,
    pub via: Via,
}

/// The channel a staff member acts through, and the credential that let them in:
/// recorded with every case action and audit-log entry, so that two actions under one
/// name can be told apart (two browsers, a token, the CLI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum Via {
    /// The review app's pages, in the login session whose stored id hash begins with
    /// `session` (none at the login itself, before the session exists).
    Web {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// The JSON API, with the API token `token_id`.
    Api { token_id: String },
    /// `proctor` on the command line: `proctor review` with the API token `token_id`,
    /// or the database's operator (`proctor staff`), with none.
    Cli {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_id: Option<String>,
    },
    /// The judge worker.
    Judge,
}

impl Via {
    /// The database's operator at the command line.
    pub const OPERATOR: Via = Via::Cli { token_id: None };
}

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// A flag waiting for a reviewer.
    Open,
    /// Confirmed by a reviewer; the judge has yet to sign its slash.
    Confirming,
    /// Confirmed, and its slash signed.
    Confirmed,
    Dismissed,
    /// An automatic slash.
    Slashed,
    /// A slash under appeal.
    Appealed,
    Upheld,
    Reversed,
}

impl CaseStatus {
    pub const ALL: [CaseStatus; 8] = [
        CaseStatus::Open,
        CaseStatus::Confirming,
        CaseStatus::Confirmed,
        CaseStatus::Dismissed,
        CaseStatus::Slashed,
        CaseStatus::Appealed,
        CaseStatus::Upheld,
        CaseStatus::Reversed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Open => "open",
            CaseStatus::Confirming => "confirming",
            CaseStatus::Confirmed => "confirmed",
            CaseStatus::Dismissed => "dismissed",
            CaseStatus::Slashed => "slashed",
            CaseStatus::Appealed => "appealed",
            CaseStatus::Upheld => "upheld",
            CaseStatus::Reversed => "reversed",
        }
    }

    pub fn parse(s: &str) -> Option<CaseStatus> {
        CaseStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether a slash stands on this case (and so can be appealed or reversed).
    pub fn has_slash(self) -> bool {
        matches!(
            self,
            CaseStatus::Confirmed
                | CaseStatus::Slashed
                | CaseStatus::Appealed
                | CaseStatus::Upheld
                | CaseStatus::Reversed
        )
    }
}

/// What a reviewer does to a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffAction {
    Confirm,
    Dismiss,
    MoreEvidence,
    Note,
    Appeal,
    Uphold,
    Reverse,
}

impl StaffAction {
    pub const ALL: [StaffAction; 7] = [
        StaffAction::Confirm,
        StaffAction::Dismiss,
        StaffAction::MoreEvidence,
        StaffAction::Note,
        StaffAction::Appeal,
        StaffAction::Uphold,
        StaffAction::Reverse,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StaffAction::Confirm => "confirm",
            StaffAction::Dismiss => "dismiss",
            StaffAction::MoreEvidence => "more_evidence",
            StaffAction::Note => "note",
            StaffAction::Appeal => "appeal",
            StaffAction::Uphold => "uphold",
            StaffAction::Reverse => "reverse",
        }
    }

    pub fn parse(s: &str) -> Option<StaffAction> {
        StaffAction::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Whether the action needs a reason (the note's text, the appeal's statement).
    pub fn needs_reason(self) -> bool {
        matches!(
            self,
            StaffAction::Dismiss
                | StaffAction::Note
                | StaffAction::Appeal
                | StaffAction::Uphold
                | StaffAction::Reverse
        )
    }
}

/// What the rules need to know of a case to allow an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFacts {
    pub status: CaseStatus,
    /// The reviewer who confirmed the case's slash (none for an automatic slash).
    pub confirmed_by: Option<String>,
    /// The reviewer who filed the case's undecided appeal.
    pub appeal_filed_by: Option<String>,
    /// Who may dismiss the case's flag.
    pub dismissal: Dismissal,
}

/// Who may dismiss a flag: one reviewer, or (its stake above the rules' threshold) two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dismissal {
    OneReviewer,
    /// The first dismissal is a proposal; a second reviewer's dismissal decides.
    TwoReviewers {
        /// The reviewer whose dismissal is pending, if any.
        proposed_by: Option<String>,
    },
}

impl Dismissal {
    /// The rule for a flag putting `at_stake` points at stake (waifu and llama
    /// together), with `proposed_by`'s dismissal pending.
    pub fn for_stake(at_stake: f64, threshold: f64, proposed_by: Option<String>) -> Dismissal {
        if at_stake > threshold {
            Dismissal::TwoReviewers { proposed_by }
        } else {
            Dismissal::OneReviewer
        }
    }
}

/// Why an action was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{action} needs a reason")]
    ReasonRequired { action: &'static str },
    #[error("the reason is longer than {MAX_REASON_CHARS} characters or holds a NUL")]
    BadReason,
    #[error("cannot {action} a case that is {status}")]
    WrongStatus {
        action: &'static str,
        status: &'static str,
    },
    #[error("{username} {role} this case: a second reviewer decides")]
    SecondReviewer {
        username: String,
        role: &'static str,
    },
}

/// The longest reason, note or statement kept.
pub const MAX_REASON_CHARS: usize = 4000;

/// The status `action` by `actor` moves the case to, or why it may not.
pub fn next(
    facts: &CaseFacts,
    action: StaffAction,
    actor: &Actor,
    reason: &str,
) -> Result<CaseStatus, Refusal> {
    if action.needs_reason() && reason.trim().is_empty() {
        return Err(Refusal::ReasonRequired {
            action: action.as_str(),
        });
    }
    if reason.chars().count() > MAX_REASON_CHARS || reason.contains('\0') {
        return Err(Refusal::BadReason);
    }
    let wrong = || Refusal::WrongStatus {
        action: action.as_str(),
        status: facts.status.as_str(),
    };
    use CaseStatus as S;
    use StaffAction as A;
    match (action, facts.status) {
        // The judge signs the slash (`store::review`'s `settle_confirmations`).
        (A::Confirm, S::Open) => Ok(S::Confirming),
        (A::Dismiss, S::Open) => match &facts.dismissal {
            Dismissal::OneReviewer => Ok(S::Dismissed),
            // The first of two: a proposal, and the case stays open.
            Dismissal::TwoReviewers { proposed_by: None } => Ok(S::Open),
            Dismissal::TwoReviewers {
                proposed_by: Some(by),
            } if *by == actor.username => Err(Refusal::SecondReviewer {
                username: actor.username.clone(),
                role: "proposed the dismissal of",
            }),
            Dismissal::TwoReviewers {
                proposed_by: Some(_),
            } => Ok(S::Dismissed),
        },
        (A::MoreEvidence | A::Note, status) => Ok(status),
        (A::Appeal, S::Confirmed | S::Slashed) => Ok(S::Appealed),
        (A::Uphold | A::Reverse, S::Appealed) => {
            let me = Some(actor.username.as_str());
            if facts.confirmed_by.as_deref() == me {
                return Err(Refusal::SecondReviewer {
                    username: actor.username.clone(),
                    role: "confirmed",
                });
            }
            if facts.appeal_filed_by.as_deref() == me {
                return Err(Refusal::SecondReviewer {
                    username: actor.username.clone(),
                    role: "filed the appeal against",
                });
            }
            Ok(if action == A::Uphold {
                S::Upheld
            } else {
                S::Reversed
            })
        }
        _ => Err(wrong()),
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
    /// The strength of the evidence, lower is stronger: a slash's honest probability,
    /// a flag's review probability.
    pub evidence_probability: f64,
    /// What the slash took, or what a confirmation would take (micro-points).
    pub at_stake: crate::points::MicroPoints,
    pub confirmed_by: Option<String>,
    pub opened_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The decision the case was opened or last updated from.
    pub decision: crate::decide::Decision,
    /// The reviewer whose dismissal waits for a second reviewer's
    /// ([`Dismissal`]).
    pub dismiss_proposed_by: Option<String>,
    /// A `confirming` case's slash, as its reviewer saw it: the judge signs it if its
    /// own decision yields the same, or reopens the case.
    pub pending_slash_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(name: &str) -> Actor {
        Actor {
            via: Via::OPERATOR,
            username: name.into(),
            role: Role::Reviewer,
        }
    }

    fn facts(status: CaseStatus) -> CaseFacts {
        CaseFacts {
            status,
            confirmed_by: None,
            appeal_filed_by: None,
            dismissal: Dismissal::OneReviewer,
        }
    }

    /// Every (action, status) pair: the status it leads to, or a refusal.
    #[test]
    fn each_action_moves_only_the_statuses_the_table_allows() {
        use CaseStatus as S;
        use StaffAction as A;
        let allowed = [
            (A::Confirm, S::Open, S::Confirming),
            (A::Dismiss, S::Open, S::Dismissed),
            (A::Appeal, S::Confirmed, S::Appealed),
            (A::Appeal, S::Slashed, S::Appealed),
            (A::Uphold, S::Appealed, S::Upheld),
            (A::Reverse, S::Appealed, S::Reversed),
        ];
        for action in StaffAction::ALL {
            for status in CaseStatus::ALL {
                let got = next(&facts(status), action, &actor("ann"), "because");
                let want = match action {
                    A::Note | A::MoreEvidence => Some(status),
                    _ => allowed
                        .iter()
                        .find(|(a, s, _)| *a == action && *s == status)
                        .map(|(_, _, to)| *to),
                };
                match want {
                    Some(to) => assert_eq!(got, Ok(to), "{action:?} on {status:?}"),
                    None => assert!(
                        matches!(got, Err(Refusal::WrongStatus { .. })),
                        "{action:?} on {status:?}: {got:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn a_dismissal_a_note_an_appeal_and_a_reversal_need_a_reason() {
        for action in StaffAction::ALL {
            let status = match action {
                StaffAction::Appeal => CaseStatus::Slashed,
                StaffAction::Uphold | StaffAction::Reverse => CaseStatus::Appealed,
                _ => CaseStatus::Open,
            };
            let got = next(&facts(status), action, &actor("ann"), "  \n");
            assert_eq!(got.is_err(), action.needs_reason(), "{action:?}: {got:?}");
        }
        let long = "x".repeat(MAX_REASON_CHARS + 1);
        for bad in [long.as_str(), "nul\0byte"] {
            assert_eq!(
                next(
                    &facts(CaseStatus::Open),
                    StaffAction::Note,
                    &actor("ann"),
                    bad
                ),
                Err(Refusal::BadReason)
            );
        }
    }

    #[test]
    fn an_appeal_is_decided_by_neither_the_confirmer_nor_the_filer() {
        let f = CaseFacts {
            status: CaseStatus::Appealed,
            confirmed_by: Some("ann".into()),
            appeal_filed_by: Some("bob".into()),
            dismissal: Dismissal::OneReviewer,
        };
        for action in [StaffAction::Uphold, StaffAction::Reverse] {
            for who in ["ann", "bob"] {
                assert!(
                    matches!(
                        next(&f, action, &actor(who), "r"),
                        Err(Refusal::SecondReviewer { .. })
                    ),
                    "{who} {action:?}"
                );
            }
            assert!(next(&f, action, &actor("cat"), "r").is_ok());
        }
        // An automatic slash has no confirmer: only the filer is excluded.
        let auto = CaseFacts {
            confirmed_by: None,
            ..f
        };
        assert!(next(&auto, StaffAction::Reverse, &actor("ann"), "r").is_ok());
        assert!(next(&auto, StaffAction::Reverse, &actor("bob"), "r").is_err());
    }

    #[test]
    fn a_dismissal_above_the_stake_threshold_takes_two_reviewers() {
        let open = |dismissal| CaseFacts {
            dismissal,
            ..facts(CaseStatus::Open)
        };
        let dismiss = |f: &CaseFacts, who: &str| next(f, StaffAction::Dismiss, &actor(who), "r");
        // At or below the threshold, one reviewer dismisses.
        assert_eq!(
            Dismissal::for_stake(100.0, 100.0, None),
            Dismissal::OneReviewer
        );
        let small = open(Dismissal::for_stake(100.0, 100.0, None));
        assert_eq!(dismiss(&small, "ann"), Ok(CaseStatus::Dismissed));
        // Above it, the first dismissal is a proposal: the case stays open.
        let big = open(Dismissal::for_stake(100.5, 100.0, None));
        assert_eq!(dismiss(&big, "ann"), Ok(CaseStatus::Open));
        // The proposer cannot second itself; another reviewer decides.
        let proposed = open(Dismissal::for_stake(100.5, 100.0, Some("ann".into())));
        assert!(matches!(
            dismiss(&proposed, "ann"),
            Err(Refusal::SecondReviewer { .. })
        ));
        assert_eq!(dismiss(&proposed, "bob"), Ok(CaseStatus::Dismissed));
        // Confirming stays a one-reviewer act (it is what the flag asked for), even
        // with a dismissal pending.
        assert_eq!(
            next(&proposed, StaffAction::Confirm, &actor("ann"), ""),
            Ok(CaseStatus::Confirming)
        );
        // Only an open case is dismissed, however many reviewers.
        let closed = CaseFacts {
            status: CaseStatus::Confirmed,
            ..proposed
        };
        assert!(matches!(
            dismiss(&closed, "bob"),
            Err(Refusal::WrongStatus { .. })
        ));
    }

    #[test]
    fn names_round_trip() {
        for s in CaseStatus::ALL {
            assert_eq!(CaseStatus::parse(s.as_str()), Some(s));
        }
        for a in StaffAction::ALL {
            assert_eq!(StaffAction::parse(a.as_str()), Some(a));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}

//! Staff review against the real Postgres (127.0.0.1:5432, trust auth): accounts and
//! tokens, each decision's effect on the slash, the outbox, the sampling rate and the
//! audit log, the appeal and reversal with its signed event, the second-reviewer rule,
//! and `proctor audit-log verify` after a row is edited in SQL.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use proctor::case::{Stage, screen_failures};
use proctor::checks::JobVerdict;
use proctor::decide::{Action, STAFF_RULE_ID};
use proctor::events::{self, LedgerEvent};
use proctor::ids::{JobId, MinerId};
use proctor::review::CaseRow;
use proctor::review::workflow::{self, ActionError};
use proctor::review::{Actor, CaseStatus, Refusal, Role, StaffAction};
use proctor::rules::Rules;
use proctor::sampling;
use proctor::store::review::{CaseDetail, CaseFilter, ReviewError};
use sqlx::Row;

#[path = "support/db.rs"]
mod db;
#[path = "support/scope.rs"]
mod scope;
use db::*;

const PASSWORD: &str = "correct horse battery staple";

/// The demo recorded at both stages and judged: open flag cases and slashed cases.
async fn judged_demo() -> (TestDb, Rules, BTreeMap<String, JobVerdict>) {
    let db = TestDb::new().await;
    // Rates that hold on the demo's models, so that its re-run cheaters are slashed.
    let rules = demo_rules();
    let verdicts = load_judged_demo(&db.store, &rules).await;
    (db, rules, verdicts)
}

async fn staff(db: &TestDb, names: &[&str]) -> Vec<Actor> {
    let mut out = Vec::new();
    for name in names {
        db.store
            .add_staff("operator", name, Role::Reviewer, PASSWORD)
            .await
            .unwrap();
        let token = db
            .store
            .create_token("operator", name, "test", 90)
            .await
            .unwrap();
        out.push(
            db.store
                .authenticate_token(&token.token)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    out
}

/// Queues the miner for the judge, as new evidence would, and judges the queue.
async fn rejudge(db: &TestDb, miner: &str, rules: &Rules) {
    sqlx::query("INSERT INTO judge_queue (miner_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(miner)
        .execute(db.store.pool())
        .await
        .unwrap();
    judge_all(db, rules).await;
}

/// `Store::act` with the test's reversal key.
async fn act(
    db: &TestDb,
    who: &Actor,
    case: i64,
    action: StaffAction,
    reason: &str,
    rules: &Rules,
) -> Result<CaseDetail, ReviewError> {
    act_with(
        db,
        who,
        case,
        action,
        reason,
        rules,
        Some(&reversal_signer()),
    )
    .await
}

/// `Store::act` through the pure workflow, as the app and the CLI call it.
async fn act_with(
    db: &TestDb,
    who: &Actor,
    case: i64,
    action: StaffAction,
    reason: &str,
    rules: &Rules,
    reversals: Option<&events::ReversalSigner>,
) -> Result<CaseDetail, ReviewError> {
    let request = workflow::Request {
        action,
        actor: who,
        reason,
        rules,
        reversals,
    };
    db.store
        .act(who, case, request.reads(), |facts| request.decide(facts))
        .await
}

/// A reviewer's confirmation, then the judge's round that signs it: the case as it
/// stands after both.
async fn confirm(
    db: &TestDb,
    who: &Actor,
    case: i64,
    rules: &Rules,
) -> Result<CaseDetail, ReviewError> {
    let d = act(db, who, case, StaffAction::Confirm, "", rules).await?;
    assert_eq!(d.case.status, CaseStatus::Confirming);
    judge_all(db, rules).await;
    Ok(db.store.case(case).await.unwrap().unwrap())
}

async fn cases(db: &TestDb, status: CaseStatus) -> Vec<CaseRow> {
    db.store
        .cases(&CaseFilter {
            status: Some(status),
            limit: 1000,
            ..CaseFilter::default()
        })
        .await
        .unwrap()
        .cases
}

async fn risk(db: &TestDb, miner: &str) -> sampling::MinerRisk {
    db.store
        .risks(&[miner.to_owned()])
        .await
        .unwrap()
        .into_values()
        .next()
        .unwrap_or_default()
}

/// The screen failures a dismissal of `case` forgives: those of the distinct jobs
/// its evidence cites.
fn forgivable(case: &CaseRow, verdicts: &BTreeMap<String, JobVerdict>) -> u32 {
    case.decision
        .evidence
        .iter()
        .map(|e| e.job_id.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .iter()
        .map(|j| screen_failures(&verdicts[*j]))
        .sum()
}

async fn outbox(db: &TestDb, kind: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT envelope FROM outbox WHERE kind = $1 ORDER BY created_at")
        .bind(kind)
        .fetch_all(db.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn accounts_have_no_default_password_and_tokens_die_with_their_account() {
    let db = TestDb::new().await;
    assert_eq!(
        db.count("staff").await,
        0,
        "no account exists before one is added"
    );
    let short = db
        .store
        .add_staff("operator", "ann", Role::Reviewer, "short")
        .await;
    assert!(
        matches!(short, Err(ReviewError::Credential(_))),
        "{short:?}"
    );
    db.store
        .add_staff("operator", "ann", Role::Admin, PASSWORD)
        .await
        .unwrap();
    let again = db
        .store
        .add_staff("operator", "ann", Role::Reviewer, PASSWORD)
        .await;
    assert!(
        matches!(again, Err(ReviewError::StaffExists(_))),
        "{again:?}"
    );
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM staff")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains(PASSWORD));

    let login = |name: &'static str, password: &'static str| {
        let store = db.store.clone();
        async move {
            let account = store.credentials(name).await.unwrap();
            proctor::review::auth::check_login(account.as_ref(), password)
        }
    };
    let ann = login("ann", PASSWORD).await;
    assert_eq!(ann.as_ref().map(|a| a.role), Some(Role::Admin));
    db.store.log_login(&ann.unwrap()).await.unwrap();
    assert_eq!(login("ann", "wrong password!").await, None);
    assert_eq!(login("nobody", PASSWORD).await, None);

    let token = db
        .store
        .create_token("operator", "ann", "cli", 90)
        .await
        .unwrap();
    let stored: String = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert!(!token.token.contains(&stored) && !stored.contains(&token.token));
    let ann = db.store.authenticate_token(&token.token).await.unwrap();
    assert_eq!(ann.map(|a| a.username), Some("ann".to_owned()));
    // A token with the right id and a wrong secret, and garbage, authenticate nobody.
    let forged = format!("proctor_{}_{}", token.token_id, "0".repeat(64));
    assert_eq!(db.store.authenticate_token(&forged).await.unwrap(), None);
    assert_eq!(db.store.authenticate_token("Bearer x").await.unwrap(), None);

    db.store.disable_staff("operator", "ann").await.unwrap();
    assert_eq!(
        db.store.authenticate_token(&token.token).await.unwrap(),
        None
    );
    assert_eq!(login("ann", PASSWORD).await, None);

    // Failed logins are counted by the app, not logged one by one (a guesser would
    // fill the log): the log has the login and the account's changes.
    let log = db.store.audit_log().await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["staff_add", "login", "token_create", "staff_disable"]
    );
    proctor::review::trail::verify(&log).unwrap();
    db.drop_db().await;
}

#[tokio::test]
async fn a_token_is_issued_only_to_its_holder_expires_and_can_be_revoked_alone() {
    let db = TestDb::new().await;
    for (name, role) in [("ada", Role::Admin), ("ann", Role::Reviewer)] {
        db.store
            .add_staff("operator", name, role, PASSWORD)
            .await
            .unwrap();
    }
    // An admin may not mint a token for someone else: it would act as them, and the
    // second-reviewer rule compares who acts.
    let as_ann = db.store.create_token("ada", "ann", "x", 90).await;
    assert!(
        matches!(as_ann, Err(ReviewError::NotTheHolder { .. })),
        "{as_ann:?}"
    );
    assert!(as_ann.unwrap_err().is_refusal());
    // Its holder may, for 1 to 365 days.
    for days in [0, 366] {
        let r = db.store.create_token("ann", "ann", "x", days).await;
        assert!(
            matches!(r, Err(ReviewError::TokenLifetime(d)) if d == days),
            "{r:?}"
        );
    }
    let one = db
        .store
        .create_token("ann", "ann", "one", 30)
        .await
        .unwrap();
    let two = db
        .store
        .create_token("ann", "ann", "two", 30)
        .await
        .unwrap();
    let live = db.store.live_tokens(Some("ann")).await.unwrap();
    assert_eq!(live.len(), 2);
    let days = (live[0].expires_at - live[0].created_at).num_days();
    assert_eq!(days, 30, "{live:?}");

    // Revoking one leaves the other working. Another reviewer cannot revoke it.
    let r = db.store.revoke_token("ada", &one.token_id, false).await;
    assert!(matches!(r, Err(ReviewError::NoToken(_))), "{r:?}");
    db.store
        .revoke_token("ann", &one.token_id, false)
        .await
        .unwrap();
    assert_eq!(db.store.authenticate_token(&one.token).await.unwrap(), None);
    let ann = db.store.authenticate_token(&two.token).await.unwrap();
    assert_eq!(ann.map(|a| a.username), Some("ann".to_owned()));
    let again = db.store.revoke_token("ann", &one.token_id, false).await;
    assert!(matches!(again, Err(ReviewError::NoToken(_))), "{again:?}");

    // An expired token authenticates nobody, and is no longer listed.
    sqlx::query(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE token_id = $1",
    )
    .bind(&two.token_id)
    .execute(db.store.pool())
    .await
    .unwrap();
    assert_eq!(db.store.authenticate_token(&two.token).await.unwrap(), None);
    assert!(db.store.live_tokens(Some("ann")).await.unwrap().is_empty());

    let log = db.store.audit_log().await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "staff_add",
            "staff_add",
            "token_create",
            "token_create",
            "token_revoke"
        ]
    );
    proctor::review::trail::verify(&log).unwrap();
}

#[tokio::test]
async fn the_judge_keeps_one_open_case_per_miner_and_a_case_per_automatic_slash() {
    let (db, rules, _) = judged_demo().await;
    let open = cases(&db, CaseStatus::Open).await;
    assert!(!open.is_empty(), "the demo flags someone");
    let miners: std::collections::BTreeSet<&str> =
        open.iter().map(|c| c.miner_id.as_str()).collect();
    assert_eq!(miners.len(), open.len(), "one open case per miner");
    for c in &open {
        assert_eq!(c.decision.action, Action::FlagForReview);
        let confirmation = c.decision.confirmation.as_ref().unwrap();
        assert_eq!(c.at_stake, confirmation.amount, "case {}", c.case_id);
    }
    let slashes: i64 = db.count("slashes").await;
    assert!(slashes > 0, "the demo slashes someone");
    assert_eq!(cases(&db, CaseStatus::Slashed).await.len() as i64, slashes);

    // New evidence on a flagged miner updates its open case instead of adding one.
    let before = db.count("review_cases").await;
    let flagged = MinerId::parse(&open[0].miner_id).unwrap();
    rejudge(&db, &flagged.to_string(), &rules).await;
    assert_eq!(db.count("review_cases").await, before);

    // The queue orders by the strength of the evidence, and filters.
    let all = db
        .store
        .cases(&CaseFilter {
            limit: 1000,
            ..CaseFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.total, before);
    let p: Vec<f64> = all.cases.iter().map(|c| c.evidence_probability).collect();
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
    let check = open[0].decision.tallies[0].check.as_str().to_owned();
    let by_check = db
        .store
        .cases(&CaseFilter {
            check: Some(check.clone()),
            limit: 1000,
            ..CaseFilter::default()
        })
        .await
        .unwrap();
    assert!(by_check.total >= 1);
    assert!(
        by_check
            .cases
            .iter()
            .all(|c| c.decision.tallies.iter().any(|t| t.check.as_str() == check))
    );
    let page = db
        .store
        .cases(&CaseFilter {
            limit: 1,
            offset: 1,
            ..CaseFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.cases.len(), 1);
    assert_eq!(page.cases[0].case_id, all.cases[1].case_id);
    db.drop_db().await;
}

/// A flag the judge later turns into an automatic slash is settled by it: the miner's
/// open case becomes the slash's case (one case, ready for an appeal), nothing is left
/// for a reviewer to confirm, and the audit log says the judge did it.
#[tokio::test]
async fn an_automatic_slash_settles_the_miners_open_flag() {
    let (db, rules, _) = judged_demo().await;
    let flagged = cases(&db, CaseStatus::Open).await[0].clone();
    let miner = MinerId::parse(&flagged.miner_id).unwrap();
    // The evidence of a miner the demo slashes, as if the flagged miner returned it.
    let (records, result) = demo_judged();
    let slashed = result
        .decisions
        .iter()
        .find(|d| d.action == Action::Slash)
        .unwrap();
    for v in result
        .verdicts
        .iter()
        .filter(|v| v.miner_id == slashed.miner_id)
    {
        let mut record = records
            .iter()
            .find(|r| r.job_id == v.job_id)
            .unwrap()
            .clone();
        let mut verdict = v.clone();
        let job = JobId::parse(&format!("again-{}", v.job_id)).unwrap();
        (record.job_id, record.miner_id) = (job.clone(), miner.clone());
        (verdict.job_id, verdict.miner_id) = (job, miner.clone());
        db.store
            .record_verdict(&record, &verdict, Stage::Rerun)
            .await
            .unwrap();
    }
    rejudge(&db, &miner.to_string(), &rules).await;

    let case = db.store.case(flagged.case_id).await.unwrap().unwrap().case;
    assert_eq!(case.status, CaseStatus::Slashed);
    assert_eq!(case.opened_by, "flag", "the same case, not a new one");
    let slash_id = case.slash_id.clone().expect("the slash is on the case");
    let slash_miner: String =
        sqlx::query_scalar("SELECT miner_id FROM slashes WHERE slash_id = $1")
            .bind(&slash_id)
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!(slash_miner, miner.to_string());
    let of_miner: i64 = sqlx::query_scalar("SELECT count(*) FROM review_cases WHERE miner_id = $1")
        .bind(miner.to_string())
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(of_miner, 1);

    let log = db.store.audit_log().await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(
        (
            last.actor.as_str(),
            last.action.as_str(),
            last.subject.clone()
        ),
        (
            "judge:auto",
            "auto_slash",
            format!("case:{}", flagged.case_id)
        )
    );
    assert!(last.detail.contains(&slash_id));
    proctor::review::trail::verify(&log).unwrap();

    // Nothing is left to confirm; the appeal is open.
    let ann = staff(&db, &["ann"]).await.remove(0);
    let confirm = act(&db, &ann, flagged.case_id, StaffAction::Confirm, "", &rules).await;
    assert!(
        matches!(
            confirm,
            Err(ReviewError::Refused(Refusal::WrongStatus { .. }))
        ),
        "{confirm:?}"
    );
    act(
        &db,
        &ann,
        flagged.case_id,
        StaffAction::Appeal,
        "the miner appeals",
        &rules,
    )
    .await
    .unwrap();
    db.drop_db().await;
}

#[tokio::test]
async fn each_decision_moves_the_slash_the_outbox_the_rate_and_the_log() {
    let (db, rules, verdicts) = judged_demo().await;
    let key = key();
    let ann = staff(&db, &["ann"]).await.remove(0);
    let open = cases(&db, CaseStatus::Open).await;
    // The dismissal must have screen failures to forgive, or it would prove nothing.
    let to_dismiss = open
        .iter()
        .find(|c| forgivable(c, &verdicts) > 0)
        .expect("an open case whose cited jobs failed at screen");
    let to_confirm = open
        .iter()
        .find(|c| c.case_id != to_dismiss.case_id)
        .expect("a second open case");

    // Confirm: the app records the slash the reviewer saw and signs nothing; the
    // judge's next round signs it: a slash under the staff rule, its signed event,
    // and a raised rate.
    let slashes_before = db.count("slashes").await;
    let events_before = outbox(&db, "slash").await.len();
    let rate_before = sampling::rate(&rules, risk(&db, &to_confirm.miner_id).await);
    let pending = act(
        &db,
        &ann,
        to_confirm.case_id,
        StaffAction::Confirm,
        "",
        &rules,
    )
    .await
    .unwrap();
    assert_eq!(pending.case.status, CaseStatus::Confirming);
    assert_eq!(pending.case.slash_id, None);
    assert_eq!(db.count("slashes").await, slashes_before);
    assert_eq!(outbox(&db, "slash").await.len(), events_before);
    judge_all(&db, &rules).await;
    let done = db.store.case(to_confirm.case_id).await.unwrap().unwrap();
    assert_eq!(done.case.status, CaseStatus::Confirmed);
    assert_eq!(done.case.confirmed_by.as_deref(), Some("ann"));
    assert_eq!(done.case.pending_slash_id, None);
    assert_eq!(db.count("slashes").await, slashes_before + 1);
    let slash_id = done.case.slash_id.clone().unwrap();
    assert_eq!(Some(&slash_id), pending.case.pending_slash_id.as_ref());
    let rule: String = sqlx::query_scalar("SELECT rule_id FROM slashes WHERE slash_id = $1")
        .bind(&slash_id)
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(rule, STAFF_RULE_ID);
    let events = outbox(&db, "slash").await;
    assert_eq!(events.len(), events_before + 1);
    let event = events::verify(events.last().unwrap().as_bytes(), &key.verifying_key()).unwrap();
    assert_eq!(event.slash_id, slash_id);
    assert_eq!(event.amount, done.case.at_stake);
    for e in &to_confirm.decision.evidence {
        let covered: Option<String> =
            sqlx::query_scalar("SELECT slash_id FROM slashed_jobs WHERE job_id = $1")
                .bind(e.job_id.as_str())
                .fetch_optional(db.store.pool())
                .await
                .unwrap();
        assert!(covered.is_some(), "job {} is not covered", e.job_id);
    }
    let r = risk(&db, &to_confirm.miner_id).await;
    assert_eq!(r.confirmed_flags, 1);
    assert!(sampling::rate(&rules, r) > rate_before || rate_before == rules.sampling.ceiling);
    // Confirming twice is refused and writes nothing.
    let twice = act(
        &db,
        &ann,
        to_confirm.case_id,
        StaffAction::Confirm,
        "",
        &rules,
    )
    .await;
    assert!(matches!(
        twice,
        Err(ReviewError::Refused(Refusal::WrongStatus { .. }))
    ));
    assert_eq!(db.count("slashes").await, slashes_before + 1);

    // Dismiss: a reason is required; the cited screen failures stop raising the rate.
    let no_reason = act(
        &db,
        &ann,
        to_dismiss.case_id,
        StaffAction::Dismiss,
        " ",
        &rules,
    )
    .await;
    assert!(matches!(
        no_reason,
        Err(ReviewError::Refused(Refusal::ReasonRequired { .. }))
    ));
    let before = risk(&db, &to_dismiss.miner_id).await;
    let forgiven = forgivable(to_dismiss, &verdicts);
    assert!(
        // Some of them may be paid off already: the excess decays job by job.
        forgiven > 0 && before.excess_failures > 0.0,
        "{before:?}"
    );
    let done = act(
        &db,
        &ann,
        to_dismiss.case_id,
        StaffAction::Dismiss,
        "the reference host ran the wrong scheduler",
        &rules,
    )
    .await
    .unwrap();
    assert_eq!(done.case.status, CaseStatus::Dismissed);
    let after = risk(&db, &to_dismiss.miner_id).await;
    assert_eq!(
        after.excess_failures,
        (before.excess_failures - f64::from(forgiven)).max(0.0)
    );
    assert_eq!(
        db.count("slashes").await,
        slashes_before + 1,
        "a dismissal slashes nothing"
    );
    // The same evidence judged again opens no new case.
    let cases_before = db.count("review_cases").await;
    rejudge(&db, &to_dismiss.miner_id, &rules).await;
    assert_eq!(db.count("review_cases").await, cases_before);

    // More evidence: the rate is at least `evidence_rate` for the period.
    let miner = &to_dismiss.miner_id;
    act(
        &db,
        &ann,
        to_dismiss.case_id,
        StaffAction::MoreEvidence,
        "",
        &rules,
    )
    .await
    .unwrap();
    let r = risk(&db, miner).await;
    assert!(r.evidence_requested);
    assert!(sampling::rate(&rules, r) >= rules.sampling.evidence_rate);
    sqlx::query(
        "UPDATE miner_risk SET evidence_requested_until = now() - interval '1 second'
         WHERE miner_id = $1",
    )
    .bind(miner)
    .execute(db.store.pool())
    .await
    .unwrap();
    assert!(
        !risk(&db, miner).await.evidence_requested,
        "the period ends"
    );

    // A note needs text and changes no status.
    let noted = act_with(
        &db,
        &ann,
        to_dismiss.case_id,
        StaffAction::Note,
        "asked the miner for logs",
        &rules,
        None,
    )
    .await
    .unwrap();
    assert_eq!(noted.case.status, CaseStatus::Dismissed);
    let actions: Vec<&str> = noted.actions.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["dismiss", "more_evidence", "note"]);

    // Every decision is in the chained log, with who and which case.
    let log = db.store.audit_log().await.unwrap();
    let decided: Vec<(&str, &str, &str)> = log
        .iter()
        .filter(|e| e.subject.starts_with("case:"))
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.subject.as_str()))
        .collect();
    let c = |id: i64| format!("case:{id}");
    let (confirmed, dismissed) = (c(to_confirm.case_id), c(to_dismiss.case_id));
    assert_eq!(
        decided,
        [
            ("ann", "confirm", confirmed.as_str()),
            ("judge:auto", "confirmation_signed", confirmed.as_str()),
            ("ann", "dismiss", dismissed.as_str()),
            ("ann", "more_evidence", dismissed.as_str()),
            ("ann", "note", dismissed.as_str()),
        ]
    );
    proctor::review::trail::verify(&log).unwrap();
    db.drop_db().await;
}

/// The review app holds no slash key: a confirmation is signed by the judge, and only
/// for the slash its own decision makes, for the amount the reviewer saw. Anything
/// else (the evidence changed, or someone with database access edited the pending
/// slash or its amount) sends the case back to a reviewer, and nothing is signed.
#[tokio::test]
async fn a_confirmation_is_signed_by_the_judge_only_for_the_slash_its_own_decision_makes() {
    let (db, rules, _) = judged_demo().await;
    let ann = staff(&db, &["ann"]).await.remove(0);
    let case_id = cases(&db, CaseStatus::Open).await[0].case_id;
    let slashes = db.count("slashes").await;
    let events = outbox(&db, "slash").await.len();
    let entries = |action: &'static str| {
        let db = &db;
        async move {
            db.store
                .audit_log()
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.action == action && e.subject == format!("case:{case_id}"))
                .count()
        }
    };

    // A judge without the key leaves the confirmation waiting; it never lapses for that.
    let pending = act(&db, &ann, case_id, StaffAction::Confirm, "", &rules)
        .await
        .unwrap();
    let want = pending
        .case
        .pending_slash_id
        .clone()
        .expect("a pending slash");
    db.store.decide_pending(&rules, None).await.unwrap();
    let still = db.store.case(case_id).await.unwrap().unwrap().case;
    assert_eq!(still.status, CaseStatus::Confirming);
    assert_eq!(db.count("slashes").await, slashes);
    // An appeal waits for the signed slash.
    let early = act(&db, &ann, case_id, StaffAction::Appeal, "too soon", &rules).await;
    assert!(
        matches!(
            early,
            Err(ReviewError::Refused(Refusal::WrongStatus { .. }))
        ),
        "{early:?}"
    );

    // Edits made in SQL while it waits: another slash named, or more points at stake.
    let edits = [
        "UPDATE review_cases SET pending_slash_id = 'slash-of-someone-else' WHERE case_id = $1",
        "UPDATE review_cases SET at_stake_waifu_micro = at_stake_waifu_micro * 1000 + 1,
                                 at_stake_llama_micro = at_stake_llama_micro * 1000 + 1
         WHERE case_id = $1",
    ];
    for (i, edit) in edits.into_iter().enumerate() {
        if i > 0 {
            act(&db, &ann, case_id, StaffAction::Confirm, "", &rules)
                .await
                .unwrap();
        }
        sqlx::query(edit)
            .bind(case_id)
            .execute(db.store.pool())
            .await
            .unwrap();
        rejudge(&db, &pending.case.miner_id, &rules).await;
        let lapsed = db.store.case(case_id).await.unwrap().unwrap().case;
        assert_eq!(lapsed.status, CaseStatus::Open, "{edit}");
        assert_eq!(
            (
                lapsed.confirmed_by,
                lapsed.pending_slash_id,
                lapsed.slash_id
            ),
            (None, None, None),
            "{edit}"
        );
        assert_eq!(db.count("slashes").await, slashes, "{edit}");
        assert_eq!(outbox(&db, "slash").await.len(), events, "{edit}");
        assert_eq!(entries("confirmation_lapsed").await, i + 1, "{edit}");
    }

    // Confirmed again with nothing edited: the judge signs exactly the slash the
    // reviewer saw, under the slash key, and says so in the log.
    let done = confirm(&db, &ann, case_id, &rules).await.unwrap();
    assert_eq!(done.case.status, CaseStatus::Confirmed);
    assert_eq!(done.case.slash_id.as_deref(), Some(want.as_str()));
    assert_eq!(db.count("slashes").await, slashes + 1);
    let signed = outbox(&db, "slash").await;
    assert_eq!(signed.len(), events + 1);
    let event = events::verify(signed.last().unwrap().as_bytes(), &key().verifying_key()).unwrap();
    assert_eq!(
        (event.slash_id.as_str(), event.amount),
        (want.as_str(), done.case.at_stake)
    );
    assert_eq!(event.rule_id, STAFF_RULE_ID);
    assert_eq!(entries("confirmation_signed").await, 1);
    // The judge's entries need no case_actions rows: the cross-check stays clean.
    let snapshot = db.store.audit_snapshot().await.unwrap();
    assert_eq!(
        proctor::review::trail::cross_check(
            &snapshot.log,
            &snapshot.actions,
            &snapshot.appeals,
            &snapshot.reversals
        ),
        Vec::<String>::new()
    );
    // Judging again changes nothing: the slash is signed once.
    rejudge(&db, &done.case.miner_id, &rules).await;
    assert_eq!(db.count("slashes").await, slashes + 1);
    assert_eq!(entries("confirmation_signed").await, 1);
    db.drop_db().await;
}

#[tokio::test]
async fn a_dismissal_above_the_stake_threshold_waits_for_a_second_reviewer() {
    let (db, shipped, verdicts) = judged_demo().await;
    // Every flag with anything at stake needs two reviewers to dismiss it.
    let mut rules = shipped.clone();
    rules.slashing.second_reviewer_dismiss_above = 0.0;
    let mut who = staff(&db, &["ann", "bob"]).await;
    let (ann, bob) = (who.remove(0), who.remove(0));
    let open = cases(&db, CaseStatus::Open).await;
    let case = open
        .iter()
        .find(|c| {
            let stake = c.at_stake.points();
            forgivable(c, &verdicts) > 0 && stake.waifu + stake.llama > 0.0
        })
        .expect("an open case with a stake and screen failures to forgive");
    let other = open
        .iter()
        .find(|c| c.case_id != case.case_id)
        .expect("a second open case");
    let before = risk(&db, &case.miner_id).await;

    // The first dismissal is a proposal: the case stays open, nothing is forgiven.
    let proposed = act(
        &db,
        &ann,
        case.case_id,
        StaffAction::Dismiss,
        "drift",
        &rules,
    )
    .await
    .unwrap();
    assert_eq!(proposed.case.status, CaseStatus::Open);
    assert_eq!(proposed.case.dismiss_proposed_by.as_deref(), Some("ann"));
    assert_eq!(risk(&db, &case.miner_id).await, before);
    assert_eq!(
        proposed.actions.last().map(|a| a.action.as_str()),
        Some("dismiss_proposed")
    );
    // Its proposer cannot second it.
    let again = act(
        &db,
        &ann,
        case.case_id,
        StaffAction::Dismiss,
        "drift",
        &rules,
    )
    .await;
    assert!(
        matches!(
            again,
            Err(ReviewError::Refused(Refusal::SecondReviewer { .. }))
        ),
        "{again:?}"
    );
    // A second reviewer's dismissal decides, with the dismissal's effect.
    let done = act(
        &db,
        &bob,
        case.case_id,
        StaffAction::Dismiss,
        "agreed",
        &rules,
    )
    .await
    .unwrap();
    assert_eq!(done.case.status, CaseStatus::Dismissed);
    assert_eq!(done.case.dismiss_proposed_by, None);
    let after = risk(&db, &case.miner_id).await;
    assert!(after.excess_failures <= before.excess_failures);

    // A confirmation is still one reviewer's, and it voids a pending proposal.
    act(
        &db,
        &ann,
        other.case_id,
        StaffAction::Dismiss,
        "drift",
        &rules,
    )
    .await
    .unwrap();
    let confirmed = confirm(&db, &bob, other.case_id, &rules).await.unwrap();
    assert_eq!(confirmed.case.status, CaseStatus::Confirmed);
    assert_eq!(confirmed.case.dismiss_proposed_by, None);

    // Under the shipped threshold (100 points) the demo's small flags take one.
    let third = cases(&db, CaseStatus::Open)
        .await
        .into_iter()
        .next()
        .expect("a third open case");
    let stake = third.at_stake.points();
    assert!(stake.waifu + stake.llama <= shipped.slashing.second_reviewer_dismiss_above);
    let one = act(
        &db,
        &ann,
        third.case_id,
        StaffAction::Dismiss,
        "drift",
        &shipped,
    )
    .await
    .unwrap();
    assert_eq!(one.case.status, CaseStatus::Dismissed);

    let log = db.store.audit_log().await.unwrap();
    let actions: Vec<&str> = log
        .iter()
        .filter(|e| e.action.starts_with("dismiss"))
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        actions,
        ["dismiss_proposed", "dismiss", "dismiss_proposed", "dismiss"]
    );
    // Only the deciding dismissal forgave the cited screen failures.
    let forgiven: Vec<Option<i64>> = log
        .iter()
        .filter(|e| e.action.starts_with("dismiss"))
        .map(|e| {
            let d: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
            d["forgiven_screen_failures"].as_i64()
        })
        .collect();
    assert_eq!(forgiven[0], None);
    assert_eq!(forgiven[1], Some(i64::from(forgivable(case, &verdicts))));
    assert_eq!(forgiven[2], None);
    proctor::review::trail::verify(&log).unwrap();
}

#[tokio::test]
async fn an_appeal_is_decided_by_a_second_reviewer_and_a_reversal_is_signed() {
    let (db, rules, _) = judged_demo().await;
    let key = key();
    let people = staff(&db, &["ann", "bob", "cat"]).await;
    let (ann, bob, cat) = (&people[0], &people[1], &people[2]);
    let open = cases(&db, CaseStatus::Open).await;
    let case_id = open[0].case_id;
    let confirmed = confirm(&db, ann, case_id, &rules).await.unwrap();
    let slash_id = confirmed.case.slash_id.clone().unwrap();
    // The miner appeals through bob.
    let appealed = act(
        &db,
        bob,
        case_id,
        StaffAction::Appeal,
        "the miner says its driver was updated that week",
        &rules,
    )
    .await
    .unwrap();
    assert_eq!(appealed.case.status, CaseStatus::Appealed);
    // Neither the confirmer nor the filer may decide it.
    for who in [ann, bob] {
        let got = act(
            &db,
            who,
            case_id,
            StaffAction::Reverse,
            "looks fine",
            &rules,
        )
        .await;
        assert!(
            matches!(
                got,
                Err(ReviewError::Refused(Refusal::SecondReviewer { .. }))
            ),
            "{}: {got:?}",
            who.username
        );
    }
    assert_eq!(outbox(&db, "slash_reversed").await.len(), 0);
    // Someone with write access to the database inflates the slash under appeal, to
    // have an honest reviewer's reversal mint the difference: the reversal reads the
    // slash's signed event, not this row.
    sqlx::query(
        "UPDATE slashes SET amount_waifu_micro = amount_waifu_micro * 1000 + 1,
                            amount_llama_micro = amount_llama_micro * 1000 + 1
         WHERE slash_id = $1",
    )
    .bind(&slash_id)
    .execute(db.store.pool())
    .await
    .unwrap();
    // An edited slash event in the outbox is found, and no reversal is signed.
    let signed_slash: String =
        sqlx::query_scalar("SELECT envelope FROM outbox WHERE event_id = $1")
            .bind(&slash_id)
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    let at_stake = confirmed.case.at_stake;
    let inflated = signed_slash.replace(
        &format!("\\\"waifu_micro\\\":{}", at_stake.waifu_micro),
        &format!("\\\"waifu_micro\\\":{}", at_stake.waifu_micro * 1000 + 1),
    );
    assert_ne!(inflated, signed_slash, "the edit applies");
    for (envelope, why) in [
        (Some(&inflated), "does not verify"),
        (None, "not in the outbox"),
    ] {
        match envelope {
            Some(e) => sqlx::query("UPDATE outbox SET envelope = $2 WHERE event_id = $1")
                .bind(&slash_id)
                .bind(e),
            None => {
                sqlx::query("UPDATE outbox SET event_id = event_id || ':gone' WHERE event_id = $1")
                    .bind(&slash_id)
            }
        }
        .execute(db.store.pool())
        .await
        .unwrap();
        let got = act(
            &db,
            cat,
            case_id,
            StaffAction::Reverse,
            "looks fine",
            &rules,
        )
        .await;
        assert!(
            matches!(&got, Err(ReviewError::Action(ActionError::SlashEvent { why: w, .. })) if w.contains(why)),
            "{why}: {got:?}"
        );
        assert_eq!(outbox(&db, "slash_reversed").await.len(), 0);
    }
    sqlx::query("UPDATE outbox SET event_id = $1, envelope = $2 WHERE event_id = $1 || ':gone'")
        .bind(&slash_id)
        .bind(&signed_slash)
        .execute(db.store.pool())
        .await
        .unwrap();
    let reversed = act(
        &db,
        cat,
        case_id,
        StaffAction::Reverse,
        "the reference image was generated with the wrong VAE",
        &rules,
    )
    .await
    .unwrap();
    assert_eq!(reversed.case.status, CaseStatus::Reversed);
    assert_eq!(reversed.appeals.len(), 1);
    assert_eq!(reversed.appeals[0].outcome.as_deref(), Some("reversed"));
    assert_eq!(reversed.appeals[0].decided_by.as_deref(), Some("cat"));
    // One reversal event, signed, naming the slash and returning what it took.
    let events = outbox(&db, "slash_reversed").await;
    assert_eq!(events.len(), 1);
    // Both the envelope and the payload keep to their published schemas.
    let schema = |name: &str| -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let envelope: serde_json::Value = serde_json::from_str(&events[0]).unwrap();
    assert!(
        jsonschema::validator_for(&schema("signed-event.schema.json"))
            .unwrap()
            .is_valid(&envelope)
    );
    let payload: serde_json::Value =
        serde_json::from_str(envelope["payload"].as_str().unwrap()).unwrap();
    let reversal_schema = jsonschema::validator_for(&schema("reversal-event.schema.json")).unwrap();
    assert!(reversal_schema.is_valid(&payload), "{payload}");
    let mut bad = payload.clone();
    bad["event_type"] = "slash".into();
    assert!(!reversal_schema.is_valid(&bad), "the schema can fail");
    let confirmed_envelope = outbox(&db, "slash").await;
    let confirmed_payload: serde_json::Value =
        serde_json::from_str(
            serde_json::from_str::<serde_json::Value>(confirmed_envelope.last().unwrap()).unwrap()
                ["payload"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert!(
        jsonschema::validator_for(&schema("slash-event.schema.json"))
            .unwrap()
            .is_valid(&confirmed_payload),
        "a staff-confirmed slash keeps to the slash schema: {confirmed_payload}"
    );
    // Signed with the reversal key, which the ledger trusts for reversals only: the
    // slash key did not sign it, and the review app does not hold that key.
    let reversal_key = reversal_signer().key().verifying_key();
    let keys = events::LedgerKeys {
        slash: &key.verifying_key(),
        reversal: Some(&reversal_key),
    };
    assert!(matches!(
        events::verify_ledger_event(
            events[0].as_bytes(),
            events::LedgerKeys {
                reversal: None,
                ..keys
            }
        ),
        Err(events::VerifyError::UntrustedKey(_))
    ));
    match events::verify_ledger_event(events[0].as_bytes(), keys).unwrap() {
        LedgerEvent::Reversed(r) => {
            assert_eq!(r.slash_id, slash_id);
            // What the signed slash took, not the inflated row; and it names that event.
            assert_eq!(r.amount, confirmed.case.at_stake);
            let (slash, sha) =
                events::verify_slash(signed_slash.as_bytes(), &key.verifying_key()).unwrap();
            assert_eq!(r.slash_payload_sha256, sha);
            assert_eq!(events::check_reversal(&r, Some((&slash, &sha))), Ok(()));
            assert_eq!(r.reversed_by, "cat");
            assert_eq!(r.miner_id.to_string(), confirmed.case.miner_id);
        }
        other => panic!("not a reversal: {other:?}"),
    }
    let key_of: String = sqlx::query_scalar("SELECT key FROM outbox WHERE kind = 'slash_reversed'")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(
        key_of, confirmed.case.miner_id,
        "keyed by the miner, like its slash"
    );
    // A publisher claims, and so sends on the miner's partition, the slash before its
    // reversal: a ledger reading in order never sees the reversal first.
    let mut tx = db.store.pool().begin().await.unwrap();
    let claimed = db.store.claim_outbox(&mut tx, 100_000).await.unwrap();
    tx.rollback().await.unwrap();
    let at = |kind: &str| {
        claimed
            .iter()
            .position(|e| e.kind == kind && e.envelope.contains(&slash_id))
            .unwrap_or_else(|| panic!("no {kind} event for {slash_id}"))
    };
    assert!(at("slash") < at("slash_reversed"));
    assert_eq!(risk(&db, &confirmed.case.miner_id).await.confirmed_flags, 0);
    // Reversed once: nothing more can be done to the slash.
    let again = act(&db, cat, case_id, StaffAction::Reverse, "again", &rules).await;
    assert!(matches!(
        again,
        Err(ReviewError::Refused(Refusal::WrongStatus { .. }))
    ));
    // The reversed jobs never count again: judging the miner once more slashes nothing.
    let slashes = db.count("slashes").await;
    rejudge(&db, &confirmed.case.miner_id, &rules).await;
    assert_eq!(db.count("slashes").await, slashes);

    // An automatic slash can be appealed too, and upheld by a second reviewer.
    let auto = cases(&db, CaseStatus::Slashed).await.remove(0);
    act(
        &db,
        ann,
        auto.case_id,
        StaffAction::Appeal,
        "miner disputes",
        &rules,
    )
    .await
    .unwrap();
    let upheld = act(
        &db,
        bob,
        auto.case_id,
        StaffAction::Uphold,
        "the blur is plain",
        &rules,
    )
    .await
    .unwrap();
    assert_eq!(upheld.case.status, CaseStatus::Upheld);
    assert_eq!(outbox(&db, "slash_reversed").await.len(), 1);
    db.drop_db().await;
}

fn proctor(db: &TestDb, args: &[&str], stdin: &str, token: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_proctor"));
    cmd.args(args)
        .env("PROCTOR_DATABASE__URL", db.url())
        .env(
            "PROCTOR_SECRETS__SIGNING_KEY",
            hex::encode(key().to_bytes()),
        )
        .env_remove("PROCTOR_REVIEW_TOKEN")
        .env_remove("PROCTOR_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("PROCTOR_REVIEW_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn the_cli_reviews_a_case_and_audit_log_verify_catches_an_edit_in_sql() {
    let (db, _, _) = judged_demo().await;
    let (code, out) = proctor(
        &db,
        &["staff", "add", "ann", "--role", "reviewer"],
        &format!("{PASSWORD}\n"),
        None,
    );
    assert_eq!(code, 0, "{out}");
    let (code, token) = proctor(&db, &["staff", "token", "ann"], "", None);
    assert_eq!(code, 0, "{token}");
    let token = token
        .lines()
        .find(|l| l.starts_with("proctor_"))
        .unwrap()
        .to_owned();
    // Without a token the review commands refuse.
    let (code, out) = proctor(&db, &["review", "list"], "", None);
    assert_ne!(code, 0, "{out}");
    let (code, out) = proctor(
        &db,
        &["review", "list", "--status", "open", "--json"],
        "",
        Some(&token),
    );
    assert_eq!(code, 0, "{out}");
    let page: serde_json::Value = serde_json::from_str(&out).unwrap();
    let case_id = page["cases"][0]["case_id"].as_i64().unwrap();
    assert!(page["total"].as_i64().unwrap() >= 1);
    let (code, out) = proctor(
        &db,
        &[
            "review",
            "decide",
            &case_id.to_string(),
            "dismiss",
            "--reason",
            "honest drift on an old driver",
            "--json",
        ],
        "",
        Some(&token),
    );
    assert_eq!(code, 0, "{out}");
    let detail: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(detail["case"]["status"], "dismissed");
    let (code, out) = proctor(
        &db,
        &["review", "show", &case_id.to_string()],
        "",
        Some(&token),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dismiss") && out.contains("honest drift"),
        "{out}"
    );

    // The chain verifies; its export verifies offline against the head it printed.
    let (code, out) = proctor(&db, &["audit-log", "verify"], "", None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid: 3 entries"), "{out}");
    // Each entry says how its actor came: the operator at the command line with no
    // token for the account commands, `proctor review` with ann's token for the
    // decision (the CLI, not the API, though the token is an API token).
    let token_id = token.split('_').nth(1).unwrap();
    let vias: Vec<(String, serde_json::Value)> = db
        .store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
            (e.action, detail["via"].clone())
        })
        .collect();
    let cli = serde_json::json!({"channel": "cli"});
    let with_token = serde_json::json!({"channel": "cli", "token_id": token_id});
    assert_eq!(
        vias,
        [
            ("staff_add".to_owned(), cli.clone()),
            ("token_create".to_owned(), cli),
            ("dismiss".to_owned(), with_token.clone()),
        ]
    );
    let action_via: serde_json::Value =
        sqlx::query_scalar("SELECT via FROM case_actions WHERE action = 'dismiss'")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!(action_via, with_token);
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("audit.jsonl");
    let export_s = export.to_str().unwrap();
    let (code, head) = proctor(&db, &["audit-log", "export", "--out", export_s], "", None);
    assert_eq!(code, 0, "{head}");
    let head = head.lines().next().unwrap().to_owned();
    let (code, out) = proctor(
        &db,
        &["audit-log", "verify", "--file", export_s, "--head", &head],
        "",
        None,
    );
    assert_eq!(code, 0, "{out}");

    // A head checkpoint, signed with a key of its own (never the slash key), kept in a
    // file outside the database.
    let checkpoints = dir.path().join("checkpoints.jsonl");
    let checkpoints_s = checkpoints.to_str().unwrap();
    let checkpoint_seed = hex::encode([43u8; 32]);
    let checkpoint_public = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[43u8; 32])
            .verifying_key()
            .to_bytes(),
    );
    let sign = [
        "audit-log",
        "checkpoint",
        "--key-file",
        "-",
        "--out",
        checkpoints_s,
    ];
    let (code, out) = proctor(&db, &sign, &hex::encode(key().to_bytes()), None);
    assert_eq!(code, 3, "the slash key signed a checkpoint: {out}");
    assert!(out.contains("is the slash signing key"), "{out}");
    let (code, out) = proctor(&db, &sign, &checkpoint_seed, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&checkpoint_public), "{out}");
    let with_checkpoints = [
        "audit-log",
        "verify",
        "--checkpoint",
        checkpoints_s,
        "--public-key",
        &checkpoint_public,
    ];
    let (code, out) = proctor(&db, &with_checkpoints, "", None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 checkpoints hold"), "{out}");

    // The staff tables are checked against the log: a case action deleted, or one
    // written around the app, is found.
    let (code, out) = proctor(&db, &["audit-log", "verify"], "", None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("case actions,") && out.contains("match it"),
        "{out}"
    );
    let dismissal: (i64, i64) =
        sqlx::query_as("SELECT action_id, case_id FROM case_actions WHERE action = 'dismiss'")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    let restore_dismissal =
        sqlx::query("SELECT reason, via, at FROM case_actions WHERE action_id = $1")
            .bind(dismissal.0)
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    sqlx::query("DELETE FROM case_actions WHERE action_id = $1")
        .bind(dismissal.0)
        .execute(db.store.pool())
        .await
        .unwrap();
    let (code, out) = proctor(&db, &["audit-log", "verify"], "", None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "dismiss by ann on case:{} has no case_actions row",
            dismissal.1
        )),
        "{out}"
    );
    sqlx::query(
        "INSERT INTO case_actions (case_id, username, action, reason)
         VALUES ($1, 'ann', 'dismiss', 'forged')",
    )
    .bind(dismissal.1)
    .execute(db.store.pool())
    .await
    .unwrap();
    let (code, out) = proctor(&db, &["audit-log", "verify"], "", None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not in the audit log"), "{out}");
    sqlx::query("DELETE FROM case_actions WHERE reason = 'forged'")
        .execute(db.store.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO case_actions (action_id, case_id, username, action, reason, via, at)
         VALUES ($1, $2, 'ann', 'dismiss', $3, $4, $5)",
    )
    .bind(dismissal.0)
    .bind(dismissal.1)
    .bind(restore_dismissal.get::<String, _>(0))
    .bind(restore_dismissal.get::<serde_json::Value, _>(1))
    .bind(restore_dismissal.get::<chrono::DateTime<chrono::Utc>, _>(2))
    .execute(db.store.pool())
    .await
    .unwrap();
    let (code, out) = proctor(&db, &["audit-log", "verify"], "", None);
    assert_eq!(code, 0, "restored: {out}");

    // The log is append-only: the database refuses an edit, a deletion and a
    // truncation from any role but the table's owner.
    for sql in [
        "UPDATE audit_log SET detail = '{}' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 1",
        "TRUNCATE audit_log",
    ] {
        let refused = sqlx::query(sql).execute(db.store.pool()).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("audit_log is append-only")),
            "{sql}: {refused:?}"
        );
    }
    // The owner can lift that; the chain still finds what it did. An edit made
    // directly in SQL breaks the chain at that entry.
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER USER")
        .execute(db.store.pool())
        .await
        .unwrap();
    // An owner who rewrites an entry (ann made an admin from the start) and recomputes
    // every hash after it leaves a valid chain, with no staff table to contradict it:
    // only the checkpoint, signed outside the database, shows the rewrite.
    let original = db.store.audit_log().await.unwrap();
    let rewrite = |entries: &[proctor::review::trail::Entry], edit: bool| {
        let mut prev = proctor::review::trail::GENESIS.to_owned();
        let mut rows = Vec::new();
        for e in entries {
            let detail = if edit && e.seq == 1 {
                e.detail.replace("reviewer", "admin")
            } else {
                e.detail.clone()
            };
            let hash = proctor::review::trail::hash(
                &prev, e.seq, &e.at, &e.actor, &e.action, &e.subject, &detail,
            );
            rows.push((e.seq, detail, prev.clone(), hash.clone()));
            prev = hash;
        }
        rows
    };
    for (rows, verified, checked) in [
        (rewrite(&original, true), 0, 1),
        (rewrite(&original, false), 0, 0),
    ] {
        for (seq, detail, prev_hash, hash) in rows {
            sqlx::query(
                "UPDATE audit_log SET detail = $2, prev_hash = $3, hash = $4 WHERE seq = $1",
            )
            .bind(seq)
            .bind(detail)
            .bind(prev_hash)
            .bind(hash)
            .execute(db.store.pool())
            .await
            .unwrap();
        }
        let (code, out) = proctor(&db, &["audit-log", "verify"], "", None);
        assert_eq!(code, verified, "{out}");
        let (code, out) = proctor(&db, &with_checkpoints, "", None);
        assert_eq!(code, checked, "{out}");
        if checked == 1 {
            assert!(
                out.contains("checkpoint 1") && out.contains("rewritten"),
                "{out}"
            );
        }
    }
    sqlx::query("UPDATE audit_log SET detail = replace(detail, 'old driver', 'new driver') WHERE action = 'dismiss'")
        .execute(db.store.pool())
        .await
        .unwrap();
    let (code, out) = proctor(&db, &["audit-log", "verify"], "", None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN") && out.contains("entry 3"), "{out}");
    // So does a deleted row, and a truncated end shows against the recorded head.
    let restore = sqlx::query("SELECT detail FROM audit_log WHERE seq = 3")
        .fetch_one(db.store.pool())
        .await
        .unwrap()
        .get::<String, _>(0)
        .replace("new driver", "old driver");
    sqlx::query("UPDATE audit_log SET detail = $1 WHERE seq = 3")
        .bind(restore)
        .execute(db.store.pool())
        .await
        .unwrap();
    let (code, out) = proctor(&db, &["audit-log", "verify", "--head", &head], "", None);
    assert_eq!(code, 0, "restored: {out}");
    sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(db.store.pool())
        .await
        .unwrap();
    let (code, out) = proctor(&db, &["audit-log", "verify"], "", None);
    assert_eq!(code, 1, "{out}");
    sqlx::query("DELETE FROM audit_log WHERE seq >= 2")
        .execute(db.store.pool())
        .await
        .unwrap();
    // A shorter chain is valid on its own; the dismissal's row, whose entry was cut,
    // and the recorded head and checkpoint each show the cut.
    let (code, out) = proctor(&db, &["audit-log", "verify"], "", None);
    assert_eq!(code, 1, "{out}");
    assert!(
        !out.contains("entry")
            && out.contains("dismiss by ann")
            && out.contains("is not in the audit log"),
        "only the cross-check finds it: {out}"
    );
    let (code, out) = proctor(&db, &["audit-log", "verify", "--head", &head], "", None);
    assert_eq!(code, 1, "but not against the recorded head: {out}");
    assert!(out.contains("deleted from the end"), "{out}");
    let (code, out) = proctor(&db, &with_checkpoints, "", None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("checkpoint 1") && out.contains("the log has 1"),
        "{out}"
    );
    db.drop_db().await;
}

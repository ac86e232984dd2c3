//! The Postgres store against the real server (127.0.0.1:5432, trust auth). Each test
//! gets its own database with a random name and runs the migrations into it. When the
//! server is down these tests fail with the reason; they never skip.

use std::collections::BTreeSet;
use std::time::Duration;

use proctor::audit;
use proctor::decide::Action;
use proctor::record::JobRecord;
use proctor::store::{Stage, Written};
use sqlx::Row;

#[path = "support/db.rs"]
mod db;
#[path = "support/scope.rs"]
mod scope;
use db::*;

#[tokio::test]
async fn recording_a_verdict_twice_writes_it_once() {
    let db = TestDb::new().await;
    let (records, result) = demo_judged();
    assert_eq!(
        record_all(&db, &records, &result).await,
        result.verdicts.len()
    );
    assert_eq!(record_all(&db, &records, &result).await, 0);
    assert_eq!(db.count("verdicts").await as usize, result.verdicts.len());
    let checks: usize = result.verdicts.iter().map(|v| v.checks.len()).sum();
    assert_eq!(db.count("check_results").await as usize, checks);
    db.drop_db().await;
}

#[tokio::test]
async fn every_check_outcome_is_addressable_by_job_stage_and_check() {
    let db = TestDb::new().await;
    let (records, result) = demo_judged();
    record_all(&db, &records, &result).await;
    for v in &result.verdicts {
        for c in &v.checks {
            let (status, outcome): (String, serde_json::Value) = sqlx::query_as(
                "SELECT status, outcome FROM check_results
                 WHERE job_id = $1 AND stage = 'rerun' AND check_id = $2",
            )
            .bind(v.job_id.as_str())
            .bind(c.check.as_str())
            .fetch_one(db.store.pool())
            .await
            .unwrap();
            assert_eq!(
                status,
                serde_json::to_value(c.outcome.status()).unwrap(),
                "{} {}",
                v.job_id.as_str(),
                c.check.as_str()
            );
            assert_eq!(outcome, serde_json::to_value(&c.outcome).unwrap());
        }
    }
    db.drop_db().await;
}

#[tokio::test]
async fn judging_in_the_database_agrees_with_the_audit() {
    let db = TestDb::new().await;
    let rules = demo_rules();
    let (records, result) = demo_judged();
    record_all(&db, &records, &result).await;
    judge_all(&db, &rules).await;

    let audit_slashes: BTreeSet<String> = result
        .decisions
        .iter()
        .filter_map(|d| d.slash.as_ref().map(|s| s.slash_id.clone()))
        .collect();
    let rows = sqlx::query("SELECT slash_id FROM slashes")
        .fetch_all(db.store.pool())
        .await
        .unwrap();
    let db_slashes: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(!audit_slashes.is_empty());
    assert_eq!(db_slashes, audit_slashes);

    let flagged = result
        .decisions
        .iter()
        .filter(|d| d.action == Action::FlagForReview)
        .count();
    assert_eq!(db.count("review_flags").await as usize, flagged);
    assert_eq!(db.count("outbox").await as usize, audit_slashes.len());
    let covered: usize = result
        .decisions
        .iter()
        .filter_map(|d| d.slash.as_ref())
        .map(|s| s.jobs.len())
        .sum();
    assert_eq!(db.count("slashed_jobs").await as usize, covered);

    // Every outbox envelope verifies against the signing key.
    let rows = sqlx::query("SELECT envelope FROM outbox")
        .fetch_all(db.store.pool())
        .await
        .unwrap();
    for r in rows {
        let env: String = r.get(0);
        let ev = proctor::events::verify(env.as_bytes(), &key().verifying_key()).unwrap();
        assert!(audit_slashes.contains(&ev.slash_id));
    }
    db.drop_db().await;
}

#[tokio::test]
async fn judging_again_after_redelivery_adds_no_slash_or_event() {
    let db = TestDb::new().await;
    let rules = demo_rules();
    let (records, result) = demo_judged();
    record_all(&db, &records, &result).await;
    judge_all(&db, &rules).await;
    let (slashes, events) = (db.count("slashes").await, db.count("outbox").await);
    // Redelivery: the same verdicts arrive again and every miner is judged again.
    record_all(&db, &records, &result).await;
    for d in &result.decisions {
        judge(&db.store, &d.miner_id, &rules).await;
    }
    assert_eq!(
        (db.count("slashes").await, db.count("outbox").await),
        (slashes, events)
    );
    db.drop_db().await;
}

#[tokio::test]
async fn concurrent_judges_slash_a_miner_once() {
    let db = TestDb::new().await;
    let rules = demo_rules();
    let (records, result) = demo_judged();
    record_all(&db, &records, &result).await;
    let cheat = result
        .decisions
        .iter()
        .find(|d| d.action == Action::Slash)
        .unwrap()
        .miner_id
        .clone();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, rules, cheat) = (db.store.clone(), rules.clone(), cheat.clone());
        tasks.push(tokio::spawn(
            async move { judge(&store, &cheat, &rules).await },
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n: i64 = sqlx::query("SELECT count(*) FROM slashes WHERE miner_id = $1")
        .bind(cheat.to_string())
        .fetch_one(db.store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    db.drop_db().await;
}

#[tokio::test]
async fn two_publishers_never_claim_the_same_event() {
    let db = TestDb::new().await;
    let rules = demo_rules();
    let (records, result) = demo_judged();
    record_all(&db, &records, &result).await;
    judge_all(&db, &rules).await;
    let total = db.count("outbox").await as usize;

    let mut a = db.store.pool().begin().await.unwrap();
    let mut b = db.store.pool().begin().await.unwrap();
    assert!(total > 2, "the demo slashes {total} miners");
    let got_a = db.store.claim_outbox(&mut a, 2).await.unwrap();
    let got_b = db.store.claim_outbox(&mut b, 100).await.unwrap();
    let ids_a: BTreeSet<_> = got_a.iter().map(|e| e.event_id.clone()).collect();
    let ids_b: BTreeSet<_> = got_b.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids_a.len(), 2);
    assert!(ids_a.is_disjoint(&ids_b));
    assert_eq!(ids_a.len() + ids_b.len(), total);
    db.store
        .mark_published(&mut a, &ids_a.iter().cloned().collect::<Vec<_>>())
        .await
        .unwrap();
    a.commit().await.unwrap();
    b.rollback().await.unwrap();

    // What B rolled back is claimable again; what A published is not.
    let mut c = db.store.pool().begin().await.unwrap();
    let again = db.store.claim_outbox(&mut c, 100).await.unwrap();
    assert_eq!(again.len(), total - 2);
    assert!(again.iter().all(|e| !ids_a.contains(&e.event_id)));
    c.rollback().await.unwrap();

    // A published event put back by id (`proctor republish`) is claimed again, once;
    // an unknown id and an unpublished one are not put back.
    let first = ids_a.iter().next().unwrap().clone();
    let unpublished = again[0].event_id.clone();
    let back = db
        .store
        .republish(&[first.clone(), "no-such-event".into(), unpublished])
        .await
        .unwrap();
    assert_eq!(back, vec![first.as_str()]);
    let mut d = db.store.pool().begin().await.unwrap();
    let claimed = db.store.claim_outbox(&mut d, 100).await.unwrap();
    assert_eq!(claimed.len(), total - 1);
    assert!(claimed.iter().any(|e| e.event_id == first));
    d.rollback().await.unwrap();
    db.drop_db().await;
}

#[tokio::test]
async fn a_batch_is_written_once_and_counts_each_miners_failed_checks() {
    let db = TestDb::new().await;
    let (records, result) = demo_judged();
    let pairs: Vec<(&JobRecord, &proctor::checks::JobVerdict)> = result
        .verdicts
        .iter()
        .map(|v| (records.iter().find(|r| r.job_id == v.job_id).unwrap(), v))
        .collect();
    let first = db
        .store
        .record_verdicts(&pairs, Stage::Screen)
        .await
        .unwrap();
    assert!(first.iter().all(|w| *w == Written::New));
    // A redelivered batch, partly overlapping: nothing is written twice.
    let again = db
        .store
        .record_verdicts(&pairs[..10], Stage::Screen)
        .await
        .unwrap();
    assert!(again.iter().all(|w| *w == Written::Duplicate));
    assert_eq!(db.count("verdicts").await as usize, result.verdicts.len());

    let miners: Vec<String> = result
        .verdicts
        .iter()
        .map(|v| v.miner_id.to_string())
        .collect();
    // The sampler's risk steps once per job, in order: its screen failures less its
    // allowance, never below zero; a re-run verdict of the same jobs adds nothing (its
    // reference failures are not the draw's).
    db.store
        .record_verdicts(&pairs, Stage::Rerun)
        .await
        .unwrap();
    let risk = db.store.risks(&miners).await.unwrap();
    let mut raised = 0;
    for v in &result.verdicts {
        let want: f64 = result
            .verdicts
            .iter()
            .filter(|w| w.miner_id == v.miner_id)
            .fold(0.0, |e, w| {
                assert!(w.screen_allowance > 0.0, "the sampler set it");
                proctor::sampling::step(e, proctor::case::screen_failures(w), w.screen_allowance)
            });
        raised += usize::from(want > 0.0);
        let got = risk.get(&v.miner_id).map_or(0.0, |r| r.excess_failures);
        assert!((got - want).abs() < 1e-9, "{}: {got} != {want}", v.miner_id);
    }
    assert!(raised > 0, "no miner has a screen failure to count");
    db.drop_db().await;
}

#[tokio::test]
async fn concurrent_screen_batches_of_one_miner_each_step_its_risk() {
    // 16 batches of one new job each, one screen failure and an allowance of 0.25, all
    // at once for a miner with no row yet: each steps from the one before, 0.75 each.
    let db = TestDb::new().await;
    let (records, result) = demo_judged();
    let template = &result.verdicts[0];
    let record = records
        .iter()
        .find(|r| r.job_id == template.job_id)
        .unwrap();
    let miner =
        proctor::ids::MinerId::parse("0x00000000000000000000000000000000000000aa-gpu0").unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let job = proctor::ids::JobId::parse(&format!("risk-{i}")).unwrap();
        let mut r = record.clone();
        r.job_id = job.clone();
        r.miner_id = miner.clone();
        let mut v = template.clone();
        v.job_id = job;
        v.miner_id = miner.clone();
        v.screen_allowance = 0.25;
        v.checks = vec![proctor::outcome::CheckResult {
            check: proctor::outcome::CheckId::Canary,
            outcome: proctor::outcome::Outcome::fail("test", ()),
        }];
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            store.record_verdict(&r, &v, Stage::Screen).await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Written::New);
    }
    let risk = db.store.risks(&[miner.to_string()]).await.unwrap();
    let got = risk[&miner].excess_failures;
    assert!((got - 16.0 * 0.75).abs() < 1e-9, "{got}: a step was lost");
    db.drop_db().await;
}

#[tokio::test]
async fn the_judge_waits_for_settled_evidence_and_for_sampled_reruns() {
    let db = TestDb::new().await;
    let (records, result) = demo_judged();
    let mut v = result.verdicts[0].clone();
    let rec = records.iter().find(|r| r.job_id == v.job_id).unwrap();
    v.sampled = true;
    db.store
        .record_verdict(rec, &v, Stage::Screen)
        .await
        .unwrap();
    let long = Duration::from_secs(3600);
    // Evidence younger than the settle time waits.
    assert!(
        db.store
            .settled_miners(long, long, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Settled, but its sampled job has no re-run verdict yet: still waits.
    let none = Duration::ZERO;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        db.store
            .settled_miners(none, long, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // ... unless it has waited the maximum.
    assert_eq!(
        db.store.settled_miners(none, none, 10).await.unwrap(),
        vec![v.miner_id.clone()]
    );
    db.store
        .record_verdict(rec, &v, Stage::Rerun)
        .await
        .unwrap();
    assert_eq!(
        db.store.settled_miners(none, long, 10).await.unwrap(),
        vec![v.miner_id.clone()]
    );
    // A judgement removes the entry; new evidence queues the miner again.
    judge(&db.store, &v.miner_id, &demo_rules()).await;
    assert_eq!(db.count("judge_queue").await, 0);
    db.drop_db().await;
}

/// The claim of owed re-runs in one transaction, as the publisher makes it.
async fn owed(db: &TestDb, after: Duration, max: u32) -> Vec<String> {
    let mut tx = db.store.pool().begin().await.unwrap();
    let jobs = db
        .store
        .claim_owed_reruns(&mut tx, after, max, 100)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    jobs.iter().map(|r| r.job_id.as_str().to_owned()).collect()
}

/// A sampled job whose re-run request the broker lost is owed its re-run: the
/// publisher sends the request again once the bound has passed, at most the allowed
/// number of times, and never once the re-run verdict is in. An unsampled job is owed
/// nothing, and an uncommitted claim sends nothing again later.
#[tokio::test]
async fn a_sampled_job_without_its_rerun_is_sent_again_a_bounded_number_of_times() {
    let db = TestDb::new().await;
    let (records, result) = demo_judged();
    let record = |v: &proctor::checks::JobVerdict| {
        records
            .iter()
            .find(|r| r.job_id == v.job_id)
            .unwrap()
            .clone()
    };
    let mut sampled = result.verdicts[0].clone();
    sampled.sampled = true;
    let mut unsampled = result.verdicts[1].clone();
    unsampled.sampled = false;
    for v in [&sampled, &unsampled] {
        db.store
            .record_verdict(&record(v), v, Stage::Screen)
            .await
            .unwrap();
    }
    let long = Duration::from_secs(3600);
    let none = Duration::ZERO;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(owed(&db, long, 3).await.is_empty(), "within the bound");
    // A claim rolled back (the broker did not acknowledge) is no send.
    let mut tx = db.store.pool().begin().await.unwrap();
    let claimed = db
        .store
        .claim_owed_reruns(&mut tx, none, 2, 100)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    tx.rollback().await.unwrap();
    let job = sampled.job_id.as_str().to_owned();
    assert_eq!(owed(&db, none, 2).await, vec![job.as_str()]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(owed(&db, none, 2).await, vec![job.as_str()]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(owed(&db, none, 2).await.is_empty(), "sent twice: no more");
    let resends: i32 = sqlx::query_scalar("SELECT resends FROM rerun_resends WHERE job_id = $1")
        .bind(&job)
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(resends, 2);
    // A third allowed send, until the re-run verdict is in.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(owed(&db, none, 3).await, vec![job.as_str()]);
    db.store
        .record_verdict(&record(&sampled), &sampled, Stage::Rerun)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(owed(&db, none, 9).await.is_empty(), "its re-run is in");
    db.drop_db().await;
}

#[tokio::test]
async fn a_wallets_nfts_boost_its_first_gpus_in_miner_id_order() {
    let db = TestDb::new().await;
    let rules = demo_rules();
    let (records, result) = demo_judged();
    record_all(&db, &records, &result).await;
    let nfts = audit::read_wallets(&demo()).unwrap();
    let (wallet, count) = nfts.iter().next().expect("the demo has a wallet with NFTs");
    db.store.set_wallet_nfts(wallet, *count).await.unwrap();
    let miners: Vec<proctor::ids::MinerId> =
        result.verdicts.iter().map(|v| v.miner_id.clone()).collect();
    for m in &miners {
        let want = proctor::points::wallet_boost(&rules, m, &miners, nfts.get(m.wallet()).copied());
        assert_eq!(
            db.store.points_factor(m, &rules).await.unwrap(),
            want,
            "{m}"
        );
    }
    assert!(miners.iter().any(|m| m.wallet() == wallet.as_str()));
    db.drop_db().await;
}

#[tokio::test]
async fn a_nul_character_is_refused_as_input_and_an_outage_is_not() {
    let db = TestDb::new().await;
    let (records, result) = demo_judged();
    let i = records
        .iter()
        .position(|r| matches!(r.job, proctor::record::Job::Llm { .. }))
        .unwrap();
    let verdict = result
        .verdicts
        .iter()
        .find(|v| v.job_id == records[i].job_id)
        .unwrap();
    let mut json = records[i].to_json();
    json["output"] = serde_json::json!({"text": "an answer\u{0} with a NUL"});
    let record = JobRecord::from_json(json.to_string().as_bytes()).unwrap();
    let err = db
        .store
        .record_verdict(&record, verdict, Stage::Screen)
        .await
        .unwrap_err();
    assert!(proctor::store::refuses_input(&err), "{err}");
    // Nothing of the refused job was written: the transaction rolled back whole.
    assert_eq!(db.count("jobs").await, 0);
    // The same store, closed, is an outage: retried, never dead-lettered.
    db.store.pool().close().await;
    let err = db
        .store
        .record_verdict(&records[i], verdict, Stage::Screen)
        .await
        .unwrap_err();
    assert!(!proctor::store::refuses_input(&err), "{err}");
    db.drop_db().await;
}

/// Migration 0008 turns floating-point amounts into exact micro-points: the columns and
/// the JSON copies that are read back (a slash's body, a case's decision), and it
/// refuses to run while version 1 events wait in the outbox.
#[tokio::test]
async fn the_micro_points_migration_converts_old_amounts_exactly() {
    let db = TestDb::unmigrated().await;
    let url = db.url();
    let store = db.store.clone();
    let mut before = sqlx::migrate!("./migrations");
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < 8)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(store.pool()).await.unwrap();
    let miner = "0x00000000000000000000000000000000000000aa-gpu0";
    let amount = serde_json::json!({"waifu": 13.3333337, "llama": 0.25});
    sqlx::query(
        "INSERT INTO slashes (slash_id, miner_id, amount_waifu, amount_llama, rule_id,
                              honest_probability, rules_digest, body)
         VALUES ('s1', $1, 13.3333337, 0.25, 'auto-slash-v1', 1e-20, 'd', $2)",
    )
    .bind(miner)
    .bind(serde_json::json!({"slash_id": "s1", "amount": amount}))
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO review_cases (miner_id, opened_by, status, slash_id, honest_probability,
                                   at_stake_waifu, at_stake_llama, decision)
         VALUES ($1, 'slash', 'slashed', 's1', 1e-20, 13.3333337, 0.25, $2)",
    )
    .bind(miner)
    .bind(serde_json::json!({"slash": {"amount": amount}, "confirmation": null}))
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_id, kind, key, envelope) VALUES ('s1', 'slash', 'k', '{}')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let refused = store.migrate().await.unwrap_err().to_string();
    assert!(refused.contains("drain"), "{refused}");
    // A failed migration leaves sqlx's migration lock with its connection, as a worker
    // that exits on the error would drop it: reconnect.
    store.pool().close().await;
    let store = proctor::store::Store::connect(&url).await.unwrap();
    sqlx::query("UPDATE outbox SET published_at = now()")
        .execute(store.pool())
        .await
        .unwrap();
    store.migrate().await.unwrap();

    let row = sqlx::query("SELECT amount_waifu_micro, amount_llama_micro, body FROM slashes")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        (row.get::<i64, _>(0), row.get::<i64, _>(1)),
        (13_333_334, 250_000)
    );
    let body: serde_json::Value = row.get(2);
    assert_eq!(
        body["amount"],
        serde_json::json!({"waifu_micro": 13_333_334, "llama_micro": 250_000})
    );
    let row = sqlx::query("SELECT at_stake_waifu_micro, decision FROM review_cases")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>(0), 13_333_334);
    let decision: serde_json::Value = row.get(1);
    assert_eq!(decision["slash"]["amount"]["llama_micro"], 250_000);
    assert!(decision["confirmation"].is_null());
    store.pool().close().await;
    db.drop_db().await;
}

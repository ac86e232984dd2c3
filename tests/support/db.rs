//! The test database and the demo's judged jobs, shared by the tests that need
//! Postgres but not the broker or S3 (`tests/store.rs`, `tests/review.rs`). Included
//! with `#[path]`, so each test crate compiles only this.

#![allow(dead_code)]

use std::path::Path;

use ed25519_dalek::SigningKey;
use proctor::audit;
use proctor::case::Ledger;
use proctor::ids::MinerId;
use proctor::record::JobRecord;
use proctor::rules::Rules;
use proctor::sampling::SamplingSecret;
use proctor::store::{Stage, Store, Written};
use sqlx::Row;

pub fn admin_url() -> String {
    std::env::var("PROCTOR_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database, dropped when the value is.
pub struct TestDb {
    pub name: String,
    pub store: Store,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let db = TestDb::unmigrated().await;
        db.store.migrate().await.unwrap();
        db
    }

    /// A fresh database without the schema (a migration test applies its own).
    pub async fn unmigrated() -> TestDb {
        let name = format!(
            "proctor_test_{}",
            &blake3::hash(format!("{:?}", std::time::SystemTime::now()).as_bytes()).to_hex()[..16]
        );
        let admin = sqlx::PgPool::connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is not reachable: {e}", admin_url()));
        // Safe: `name` is generated from hex digits.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        let url = admin_url()
            .rsplit_once('/')
            .map(|(base, _)| format!("{base}/{name}"))
            .unwrap();
        let store = Store::connect(&url).await.unwrap();
        TestDb { name, store }
    }

    /// The database's URL, for a `proctor` process (`PROCTOR_DATABASE__URL`).
    pub fn url(&self) -> String {
        admin_url()
            .rsplit_once('/')
            .map(|(base, _)| format!("{base}/{}", self.name))
            .unwrap()
    }

    pub async fn drop_db(self) {
        self.store.pool().close().await;
        let admin = sqlx::PgPool::connect(&admin_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&admin)
        .await
        .unwrap();
    }

    pub async fn count(&self, table: &str) -> i64 {
        // Safe: `table` is one of this file's constants.
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(self.store.pool())
            .await
            .unwrap()
            .get(0)
    }
}

/// Decides on a miner as the judge worker does: through the ledger port, with
/// `case::entry`, at no NFT boost.
pub async fn judge(store: &Store, miner: &MinerId, rules: &Rules) -> proctor::decide::Decision {
    store
        .decide(miner, rules, 1.0, |h| {
            proctor::case::entry(miner, h, rules, Some(&key()))
        })
        .await
        .unwrap()
        .decision
}

pub fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// The review app's reversal key in these tests: its own, trusting [`key`]'s slashes.
pub fn reversal_signer() -> proctor::events::ReversalSigner {
    proctor::events::ReversalSigner::new(SigningKey::from_bytes(&[43; 32]), key().verifying_key())
        .unwrap()
}

pub fn demo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audit-demo")
}

/// The shipped rules with every measured rate holding on the demo's models
/// ([`crate::scope::calibrated_everywhere`]): under them the demo's re-run cheaters are
/// slashed, which the store's and the review's tests need.
pub fn demo_rules() -> Rules {
    crate::scope::calibrated_everywhere(Rules::embedded().unwrap())
}

/// The demo's records and their verdicts, as the audit judges them under
/// [`demo_rules`].
pub fn demo_judged() -> (Vec<JobRecord>, audit::AuditResult) {
    let result = audit::judge_dir(
        &demo(),
        demo_rules(),
        &SamplingSecret::from_passphrase("t"),
        proctor::case::Reruns::Present,
        None,
        false,
    )
    .unwrap();
    (result.records.clone(), result)
}

pub async fn record_all(db: &TestDb, records: &[JobRecord], result: &audit::AuditResult) -> usize {
    let mut new = 0;
    for v in &result.verdicts {
        let rec = records.iter().find(|r| r.job_id == v.job_id).unwrap();
        if db.store.record_verdict(rec, v, Stage::Rerun).await.unwrap() == Written::New {
            new += 1;
        }
    }
    new
}

pub async fn judge_all(db: &TestDb, rules: &Rules) {
    judge_store(&db.store, rules).await
}

/// Judges every queued miner, as the judge worker would, until none is queued.
pub async fn judge_store(store: &Store, rules: &Rules) {
    store.decide_pending(rules, Some(&key())).await.unwrap();
}

/// The demo recorded at both stages in `store` and judged: open flag cases and
/// slashed cases. Returns the audit's verdicts by job id.
pub async fn load_judged_demo(
    store: &Store,
    rules: &Rules,
) -> std::collections::BTreeMap<String, proctor::checks::JobVerdict> {
    let (_, result) = demo_judged();
    store
        .record_judged(&result.records, &result.verdicts)
        .await
        .unwrap();
    judge_store(store, rules).await;
    result
        .verdicts
        .into_iter()
        .map(|v| (v.job_id.as_str().to_owned(), v))
        .collect()
}

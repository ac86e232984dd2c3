//! Postgres state: jobs, verdicts with every check's evidence, slashes, review flags and
//! the transactional outbox of ledger events. Schema: `migrations/`.
//!
//! Every write is idempotent on a natural key. Recording a verdict again, or deciding
//! on a miner again, changes nothing. This is why the pipeline can be at-least-once on
//! its message bus and still slash exactly once.
//!
//! - `record_verdict` inserts the job, the verdict and its check results, and queues the
//!   miner for the judge, in one transaction.
//! - `Store` is the workers' [`case::Ledger`]: `decide` takes a per-miner advisory
//!   lock, reads the miner's window, hands it to the caller's pure decision
//!   (`case::entry`), and writes the slash, its covered jobs and its outbox event (or a
//!   review flag), all in one transaction. Two judges can never slash the same job twice, and a
//!   slash never exists without its event.
//! - `claim_outbox` hands out unpublished events with `FOR UPDATE SKIP LOCKED`, so
//!   several publishers never hold the same event at once.
//!
//! Errors are returned, never turned into outcomes: a database that is down delays
//! verdicts and never produces one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use crate::case;
use crate::checks::JobVerdict;
use crate::decide::Action;
use crate::ids::{JobId, MinerId};
use crate::record::JobRecord;
use crate::rules::Rules;

/// The outbox kind of a slash event; the publisher sends it to `kafka.slashes_topic`.
pub const SLASH_EVENT: &str = "slash";
/// The outbox kind of a reversal; it goes to the same topic, keyed by the same miner.
pub const REVERSAL_EVENT: &str = "slash_reversed";

pub use crate::case::Stage;

pub mod review;

/// Whether Postgres refused a write for what the input *is*, so that no retry can ever
/// succeed: a data exception (SQLSTATE class 22: a NUL character `jsonb` cannot hold,
/// a value out of range), a program limit (class 54: a row or index entry too large),
/// an integrity violation (class 23), or a value sqlx could not encode. Every other
/// error (connections, timeouts, a server restarting, serialization conflicts) is the
/// service's and is retried.
///
/// A refused write must not be retried: one miner's unstorable record would stall its
/// partition, and with it the judgement of every miner behind it.
pub fn refuses_input(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            ["22", "23", "54"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}

/// Whether a write was new or repeated one already made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    New,
    Duplicate,
}

/// An unpublished event handed to a publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub event_id: String,
    /// What the event is (`SLASH_EVENT`); the publisher chooses the topic.
    pub kind: String,
    pub key: String,
    pub envelope: String,
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// Shadow mode: decisions go to `shadow_decisions` only (see [`Store::shadow`]).
    shadow: bool,
}

/// What the operators watch on the pipeline's state (`/metrics` of the publisher).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Backlog {
    /// Outbox events not yet acknowledged by the broker.
    pub unpublished: i64,
    /// Seconds since the oldest of them was written (0 when none).
    pub oldest_unpublished_secs: f64,
    /// Review cases waiting for staff.
    pub open_cases: i64,
    /// Miners whose evidence changed and who wait for the judge.
    pub judge_queue: i64,
    /// Seconds since the oldest reviewer's confirmation still waiting for the judge to
    /// sign its slash (0 when none).
    pub oldest_confirming_secs: f64,
}

impl Store {
    pub async fn connect(url: &str) -> Result<Store, sqlx::Error> {
        Store::connect_with(url, 8).await
    }

    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Store, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Store {
            pool,
            shadow: false,
        })
    }

    /// Connects and runs the migrations: what a command or the review app does before it
    /// touches the database (a worker retries the connection first: `Context::start`).
    pub async fn open(url: &str, max_connections: u32) -> anyhow::Result<Store> {
        use anyhow::Context as _;
        let store = Store::connect_with(url, max_connections)
            .await
            .context("cannot connect to the database (settings: database.url)")?;
        store
            .migrate()
            .await
            .context("cannot migrate the database")?;
        Ok(store)
    }

    /// The same database in shadow mode: the judge's decisions are recorded in
    /// `shadow_decisions` and nothing is slashed, flagged or published.
    pub fn shadow(self) -> Store {
        Store {
            shadow: true,
            ..self
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The outbox backlog, the review queue and the judge's queue, in one round trip.
    pub async fn backlog(&self) -> Result<Backlog, sqlx::Error> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL),
                    (SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
                       FROM outbox WHERE published_at IS NULL),
                    (SELECT count(*) FROM review_cases WHERE status IN ('open', 'appealed')),
                    (SELECT count(*) FROM judge_queue),
                    (SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(updated_at)), 0)::float8
                       FROM review_cases WHERE status = 'confirming')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            unpublished: row.get(0),
            oldest_unpublished_secs: row.get(1),
            open_cases: row.get(2),
            judge_queue: row.get(3),
            oldest_confirming_secs: row.get(4),
        })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations").run(&self.pool).await
    }

    /// Records a job's verdict at a stage and queues its miner for judging.
    pub async fn record_verdict(
        &self,
        record: &JobRecord,
        verdict: &JobVerdict,
        stage: Stage,
    ) -> Result<Written, sqlx::Error> {
        let written = self.record_verdicts(&[(record, verdict)], stage).await?;
        Ok(written.first().copied().unwrap_or(Written::Duplicate))
    }

    /// Records a batch of verdicts at one stage in one transaction, and queues their
    /// miners for judging. Returns, per item, whether it was new.
    pub async fn record_verdicts(
        &self,
        items: &[(&JobRecord, &JobVerdict)],
        stage: Stage,
    ) -> Result<Vec<Written>, sqlx::Error> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let col = |f: &dyn Fn(&JobRecord, &JobVerdict) -> String| -> Vec<String> {
            items.iter().map(|(r, v)| f(r, v)).collect()
        };
        sqlx::query(
            "INSERT INTO jobs (job_id, miner_id, model_id, kind, submitted_at, record)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[],
                                  $5::timestamptz[], $6::jsonb[])
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(col(&|r, _| r.job_id.as_str().to_owned()))
        .bind(col(&|r, _| r.miner_id.to_string()))
        .bind(col(&|r, _| r.model_id.as_str().to_owned()))
        .bind(col(&|r, _| {
            match r.kind() {
                crate::record::JobKind::Sd => "sd",
                crate::record::JobKind::Llm => "llm",
            }
            .to_owned()
        }))
        .bind(
            items
                .iter()
                .map(|(r, _)| r.submitted_at)
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|(r, _)| r.to_json()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        // A verdict with no JSON form is refused as input (`refuses_input`), so the
        // batch is retried one job at a time and that job dead-lettered.
        let bodies = items
            .iter()
            .map(|(_, v)| serde_json::to_value(v).map_err(|e| sqlx::Error::Encode(Box::new(e))))
            .collect::<Result<Vec<_>, _>>()?;
        let fresh: Vec<String> = sqlx::query_scalar(
            "INSERT INTO verdicts (job_id, stage, miner_id, verdict, points_waifu, points_llama,
                                   sampled, rules_digest, body, judged_at)
             SELECT j, $2, m, v, w, l, s, d, b, clock_timestamp()
             FROM UNNEST($1::text[], $3::text[], $4::text[], $5::float8[], $6::float8[],
                         $7::bool[], $8::text[], $9::jsonb[]) AS t(j, m, v, w, l, s, d, b)
             ON CONFLICT (job_id, stage) DO NOTHING
             RETURNING job_id",
        )
        .bind(col(&|_, v| v.job_id.as_str().to_owned()))
        .bind(stage.as_str())
        .bind(col(&|_, v| v.miner_id.to_string()))
        .bind(col(&|_, v| v.verdict.as_str().to_owned()))
        .bind(
            items
                .iter()
                .map(|(_, v)| v.points.waifu)
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|(_, v)| v.points.llama)
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|(_, v)| v.sampled).collect::<Vec<_>>())
        .bind(col(&|_, v| v.rules_digest.clone()))
        .bind(bodies)
        .fetch_all(&mut *tx)
        .await?;
        let fresh: std::collections::HashSet<String> = fresh.into_iter().collect();
        let new_items: Vec<&JobVerdict> = items
            .iter()
            .map(|(_, v)| *v)
            .filter(|v| fresh.contains(v.job_id.as_str()))
            .collect();
        // The sampler's risk: the excess of screen failures over allowances
        // (`sampling::MinerRisk`), stepped once per job, in the batch's order, when its
        // screen verdict is first stored. The rows exist, then are locked, before the
        // step: a concurrent writer of the same miner waits and steps from this one's
        // result.
        let mut steps: BTreeMap<String, Vec<(u32, f64)>> = BTreeMap::new();
        for v in &new_items {
            let step = steps.entry(v.miner_id.to_string()).or_default();
            if stage == Stage::Screen {
                step.push((crate::case::screen_failures(v), v.screen_allowance));
            }
        }
        let miners: Vec<String> = steps.keys().cloned().collect();
        if !miners.is_empty() {
            if stage == Stage::Screen {
                sqlx::query(
                    "INSERT INTO miner_risk (miner_id) SELECT * FROM UNNEST($1::text[])
                     ORDER BY 1 ON CONFLICT (miner_id) DO NOTHING",
                )
                .bind(&miners)
                .execute(&mut *tx)
                .await?;
                let rows = sqlx::query(
                    "SELECT miner_id, excess_failures FROM miner_risk
                     WHERE miner_id = ANY($1) ORDER BY miner_id FOR UPDATE",
                )
                .bind(&miners)
                .fetch_all(&mut *tx)
                .await?;
                let mut excess: BTreeMap<String, f64> = BTreeMap::new();
                for r in rows {
                    excess.insert(r.try_get(0)?, r.try_get(1)?);
                }
                let after: Vec<f64> = steps
                    .iter()
                    .map(|(m, jobs)| {
                        jobs.iter()
                            .fold(excess.get(m).copied().unwrap_or(0.0), |e, &(f, a)| {
                                crate::sampling::step(e, f, a)
                            })
                    })
                    .collect();
                sqlx::query(
                    "UPDATE miner_risk SET excess_failures = t.e
                     FROM UNNEST($1::text[], $2::float8[]) AS t(m, e)
                     WHERE miner_risk.miner_id = t.m",
                )
                .bind(&miners)
                .bind(&after)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO judge_queue (miner_id) SELECT * FROM UNNEST($1::text[])
                 ON CONFLICT (miner_id) DO UPDATE
                 SET since = now(), version = judge_queue.version + 1",
            )
            .bind(miners)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(items
            .iter()
            .map(|(_, v)| {
                if fresh.contains(v.job_id.as_str()) {
                    Written::New
                } else {
                    Written::Duplicate
                }
            })
            .collect())
    }

    /// Keeps reference-vs-reference comparisons (`reference_drift`); a pair already kept
    /// for a job is left as it was.
    pub async fn record_drift(
        &self,
        drift: &[crate::reference::pool::Drift],
    ) -> Result<(), sqlx::Error> {
        let col = |f: &dyn Fn(&crate::reference::pool::Drift) -> String| -> Vec<String> {
            drift.iter().map(f).collect()
        };
        sqlx::query(
            "INSERT INTO reference_drift (job_id, model_id, kind, host_a, host_b, within, measures)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::bool[], $7::jsonb[])
             ON CONFLICT DO NOTHING",
        )
        .bind(col(&|d| d.job_id.clone()))
        .bind(col(&|d| d.model_id.clone()))
        .bind(col(&|d| d.kind.to_owned()))
        .bind(col(&|d| d.host_a.clone()))
        .bind(col(&|d| d.host_b.clone()))
        .bind(drift.iter().map(|d| d.within).collect::<Vec<bool>>())
        .bind(
            drift
                .iter()
                .map(|d| sqlx::types::Json(d.measures.clone()))
                .collect::<Vec<_>>(),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored verdicts of these jobs at a stage.
    pub async fn verdicts(
        &self,
        job_ids: &[&str],
        stage: Stage,
    ) -> Result<BTreeMap<String, JobVerdict>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT job_id, body FROM verdicts WHERE stage = $1 AND job_id = ANY($2)")
                .bind(stage.as_str())
                .bind(job_ids)
                .fetch_all(&self.pool)
                .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            let sqlx::types::Json(v): sqlx::types::Json<JobVerdict> = r.try_get(1)?;
            out.insert(r.try_get(0)?, v);
        }
        Ok(out)
    }

    /// What the sampler knows of each miner: the screen failures recorded so far, less
    /// those staff dismissed, the flags staff confirmed, and whether a request for
    /// more evidence is running.
    pub async fn risks(
        &self,
        miners: &[String],
    ) -> Result<BTreeMap<MinerId, crate::sampling::MinerRisk>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT miner_id, excess_failures, confirmed_flags,
                    coalesce(evidence_requested_until > now(), false)
             FROM miner_risk WHERE miner_id = ANY($1)",
        )
        .bind(miners)
        .fetch_all(&self.pool)
        .await?;
        let mut out = BTreeMap::new();
        let count = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        for r in rows {
            // Written from a `MinerId`, so it parses back.
            if let Ok(miner) = MinerId::parse(r.try_get::<&str, _>(0)?) {
                out.insert(
                    miner,
                    crate::sampling::MinerRisk {
                        excess_failures: r.try_get(1)?,
                        confirmed_flags: count(r.try_get(2)?),
                        evidence_requested: r.try_get(3)?,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Miners ready for the judge: their evidence has not changed for `settle`, and no
    /// sampled job of theirs still waits for its re-run, or they have waited `max_wait`.
    pub async fn settled_miners(
        &self,
        settle: std::time::Duration,
        max_wait: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<MinerId>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT q.miner_id FROM judge_queue q
             WHERE q.first_since < now() - $2::interval
                OR (q.since < now() - $1::interval
                    AND NOT EXISTS (
                        SELECT 1 FROM verdicts s
                        WHERE s.miner_id = q.miner_id AND s.stage = 'screen' AND s.sampled
                          AND NOT EXISTS (SELECT 1 FROM verdicts r
                                          WHERE r.job_id = s.job_id AND r.stage = 'rerun')))
             ORDER BY q.first_since LIMIT $3",
        )
        .bind(format!("{} milliseconds", settle.as_millis()))
        .bind(format!("{} milliseconds", max_wait.as_millis()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| MinerId::parse(r.get::<&str, _>(0)).ok())
            .collect())
    }

    /// Sets the NFTs a wallet holds (the wallet service's feed; tests and demos).
    pub async fn set_wallet_nfts(&self, wallet: &str, nfts: u32) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO wallet_nfts (wallet, nfts) VALUES ($1, $2)
             ON CONFLICT (wallet) DO UPDATE SET nfts = $2, updated_at = now()",
        )
        .bind(wallet.to_ascii_lowercase())
        .bind(i32::try_from(nfts).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The NFT boost of a miner's GPU: `points::wallet_boost` over the wallet's NFTs
    /// and every miner id of the wallet that has submitted work.
    pub async fn points_factor(&self, miner: &MinerId, rules: &Rules) -> Result<f64, sqlx::Error> {
        let wallet = self.wallet(miner).await?;
        Ok(crate::points::wallet_boost(
            rules,
            miner,
            &wallet.miners,
            wallet.nfts,
        ))
    }

    /// The miner's wallet as the points factor needs it: its NFTs (none without a
    /// row) and, when it holds some, the wallet's miners that ran jobs.
    pub async fn wallet(
        &self,
        miner: &MinerId,
    ) -> Result<crate::review::workflow::Wallet, sqlx::Error> {
        let Some(nfts) = self.wallet_nfts(miner.wallet()).await? else {
            return Ok(Default::default());
        };
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT miner_id FROM jobs WHERE miner_id LIKE $1 || '%'")
                .bind(miner.wallet())
                .fetch_all(&self.pool)
                .await?;
        Ok(crate::review::workflow::Wallet {
            nfts: u32::try_from(nfts).ok(),
            miners: ids.iter().filter_map(|s| MinerId::parse(s).ok()).collect(),
        })
    }

    /// Records every judged job of an audit at both stages, as the screen and rerun
    /// workers would have, and queues its miners: an audited folder loaded into a
    /// database (the review app's fuzz target and tests read the demo this way).
    /// (`audit::AuditResult`'s records and verdicts, taken apart: the store must not
    /// depend on the audit, which depends on it.)
    pub async fn record_judged(
        &self,
        records: &[JobRecord],
        verdicts: &[JobVerdict],
    ) -> Result<(), sqlx::Error> {
        let records: BTreeMap<&str, &JobRecord> =
            records.iter().map(|r| (r.job_id.as_str(), r)).collect();
        let pairs: Vec<(&JobRecord, &JobVerdict)> = verdicts
            .iter()
            .filter_map(|v| Some((*records.get(v.job_id.as_str())?, v)))
            .collect();
        self.record_verdicts(&pairs, Stage::Screen).await?;
        self.record_verdicts(&pairs, Stage::Rerun).await?;
        Ok(())
    }

    /// Decides on every queued miner as the judge worker does (`case::entry`, events
    /// and reviewers' confirmations signed with `key`), until none is queued. Returns
    /// the decisions made. For loading and tests; the judge worker waits for evidence
    /// to settle.
    pub async fn decide_pending(
        &self,
        rules: &Rules,
        key: Option<&ed25519_dalek::SigningKey>,
    ) -> Result<usize, sqlx::Error> {
        use case::Ledger;
        let mut made = 0;
        loop {
            let pending = self.pending_miners(100).await?;
            if pending.is_empty() {
                return Ok(made);
            }
            for miner in pending {
                let factor = self.points_factor(&miner, rules).await?;
                self.decide(&miner, rules, factor, |h| {
                    case::entry(&miner, h, rules, key)
                })
                .await?;
                made += 1;
            }
        }
    }

    /// Miners waiting for the judge, oldest first.
    pub async fn pending_miners(&self, limit: i64) -> Result<Vec<MinerId>, sqlx::Error> {
        let rows = sqlx::query("SELECT miner_id FROM judge_queue ORDER BY since LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| MinerId::parse(r.get::<&str, _>(0)).ok())
            .collect())
    }

    /// Claims up to `limit` unpublished events for this transaction's lifetime. Call
    /// [`Store::mark_published`] inside the same transaction once the broker acked them.
    pub async fn claim_outbox(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        limit: i64,
    ) -> Result<Vec<OutboxEvent>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT event_id, kind, key, envelope FROM outbox WHERE published_at IS NULL
             ORDER BY created_at, event_id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
        Ok(rows
            .iter()
            .map(|r| OutboxEvent {
                event_id: r.get(0),
                kind: r.get(1),
                key: r.get(2),
                envelope: r.get(3),
            })
            .collect())
    }

    /// Claims the sampled jobs whose re-run verdict is owed, in `tx`: drawn by a screen
    /// verdict at least `after` ago, with no re-run verdict, sent again fewer than
    /// `max_resends` times and not within `after`; oldest first, up to `limit`. Each is
    /// marked sent again now, in `tx`: the caller commits once the broker acknowledged
    /// every request, so a lost send is claimed again on the next round, not a bound
    /// later. Several publishers never claim the same job (`SKIP LOCKED`).
    pub async fn claim_owed_reruns(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        after: std::time::Duration,
        max_resends: u32,
        limit: i64,
    ) -> Result<Vec<JobRecord>, sqlx::Error> {
        let rows: Vec<String> = sqlx::query_scalar(
            "WITH owed AS (
                 SELECT s.job_id, s.judged_at FROM verdicts s
                 LEFT JOIN rerun_resends x USING (job_id)
                 WHERE s.stage = 'screen' AND s.sampled
                   AND s.judged_at < now() - $1::interval
                   AND NOT EXISTS (SELECT 1 FROM verdicts r
                                   WHERE r.job_id = s.job_id AND r.stage = 'rerun')
                   AND (x.job_id IS NULL
                        OR (x.resends < $2 AND x.resent_at < now() - $1::interval))
                 ORDER BY s.judged_at, s.job_id LIMIT $3
                 FOR UPDATE OF s SKIP LOCKED
             ), marked AS (
                 INSERT INTO rerun_resends (job_id, resends, resent_at)
                 SELECT job_id, 1, now() FROM owed
                 ON CONFLICT (job_id) DO UPDATE
                 SET resends = rerun_resends.resends + 1, resent_at = now()
                 RETURNING job_id
             )
             SELECT j.record::text FROM jobs j JOIN marked USING (job_id)
             JOIN owed USING (job_id) ORDER BY owed.judged_at, j.job_id",
        )
        .bind(format!("{} milliseconds", after.as_millis()))
        .bind(i32::try_from(max_resends).unwrap_or(i32::MAX))
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
        // The records were validated when they were stored; one that no longer parses
        // (a stored row edited by hand) is left out, and said.
        Ok(rows
            .iter()
            .filter_map(|text| {
                JobRecord::from_json(text.as_bytes())
                    .map_err(|e| tracing::error!(error = %e, "a stored job record does not parse"))
                    .ok()
            })
            .collect())
    }

    /// Puts published events back in the outbox, by event id (a slash's id, or
    /// `<slash id>:reversed`): the publisher sends them again, signed envelopes
    /// unchanged, and the ledger drops what it already applied by id. For events a
    /// broker acknowledged and then lost (a truncated `ledger.slashes`). Returns the ids
    /// put back; an id that is not in the outbox, or not published yet, is not.
    pub async fn republish(&self, event_ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "UPDATE outbox SET published_at = NULL
             WHERE event_id = ANY($1) AND published_at IS NOT NULL
             RETURNING event_id",
        )
        .bind(event_ids)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn mark_published(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event_ids: &[String],
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE outbox SET published_at = now() WHERE event_id = ANY($1)")
            .bind(event_ids)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// The workers' ledger: one decision is one transaction under a per-miner advisory
/// lock, so two judges cannot both cover the same job.
impl case::Ledger for Store {
    type Error = sqlx::Error;

    async fn decide<F>(
        &self,
        miner: &MinerId,
        rules: &Rules,
        points_factor: f64,
        decide: F,
    ) -> Result<case::MinerCase, sqlx::Error>
    where
        F: FnOnce(case::History) -> Result<case::Entry, serde_json::Error> + Send,
    {
        let miner_s = miner.to_string();
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&miner_s)
            .execute(&mut *tx)
            .await?;
        // The queue entry's version now: if evidence arrives while this judge decides,
        // the entry stays for the next round.
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM judge_queue WHERE miner_id = $1")
                .bind(&miner_s)
                .fetch_optional(&mut *tx)
                .await?;
        let history =
            load_history(&mut tx, &miner_s, rules.slashing.window_days, points_factor).await?;
        // An entry that cannot be signed is not written: the judge retries rather than
        // slash without an event.
        let case::Entry {
            case,
            event,
            confirmation,
        } = decide(history).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let decision = &case.decision;
        // Reviewers' confirmations first, in shadow mode too (they are staff decisions):
        // a lapsed one reopens its case, which the flag or slash below may then join.
        let (signed, lapsed) =
            review::settle_confirmations(&mut tx, &miner_s, decision, confirmation.as_ref())
                .await?;
        if signed + lapsed > 0 {
            tracing::info!(miner_id = %miner, signed, lapsed, "reviewers' confirmations settled");
        }
        let decision_id = match (&decision.action, &decision.slash) {
            (Action::Slash, Some(slash)) => Some(slash.slash_id.as_str()),
            (Action::FlagForReview, _) => case.flag_id.as_deref(),
            _ => None,
        };
        if self.shadow {
            if let Some(id) = decision_id {
                sqlx::query(
                    "INSERT INTO shadow_decisions (decision_id, miner_id, action,
                         honest_probability, review_probability, body)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (decision_id) DO NOTHING",
                )
                .bind(id)
                .bind(&miner_s)
                .bind(decision.action.as_str())
                .bind(decision.honest_probability)
                .bind(decision.review_probability)
                .bind(sqlx::types::Json(decision))
                .execute(&mut *tx)
                .await?;
            }
        } else if decision.action == Action::FlagForReview {
            let fresh = sqlx::query(
                "INSERT INTO review_flags (flag_id, miner_id, review_probability, body)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (flag_id) DO NOTHING",
            )
            .bind(&case.flag_id)
            .bind(&miner_s)
            .bind(decision.review_probability)
            .bind(sqlx::types::Json(decision))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // A flag on evidence already flagged (its case dismissed, say) opens
            // nothing new.
            if fresh == 1 {
                review::join_open_case(&mut tx, case.flag_id.as_deref(), decision).await?;
            }
        } else if let (Action::Slash, Some(slash)) = (&decision.action, &decision.slash)
            && write_slash(&mut tx, slash, event.as_ref()).await?
        {
            review::open_slash_case(&mut tx, decision, slash).await?;
        }
        sqlx::query("DELETE FROM judge_queue WHERE miner_id = $1 AND version = $2")
            .bind(&miner_s)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(case)
    }
}

/// Writes a slash, the jobs it covers and its signed event (when there is one) in the
/// caller's transaction. Returns whether the slash was new; a repeated one writes
/// nothing.
async fn write_slash(
    tx: &mut Transaction<'static, Postgres>,
    slash: &crate::decide::Slash,
    event: Option<&crate::events::SignedEvent>,
) -> Result<bool, sqlx::Error> {
    let miner_s = slash.miner_id.to_string();
    let fresh = sqlx::query(
        "INSERT INTO slashes (slash_id, miner_id, amount_waifu_micro, amount_llama_micro, rule_id,
                              honest_probability, rules_digest, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (slash_id) DO NOTHING",
    )
    .bind(&slash.slash_id)
    .bind(&miner_s)
    .bind(slash.amount.waifu_micro)
    .bind(slash.amount.llama_micro)
    .bind(&slash.rule_id)
    .bind(slash.honest_probability)
    .bind(&slash.rules_digest)
    .bind(sqlx::types::Json(slash))
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(false);
    }
    for job in &slash.jobs {
        sqlx::query("INSERT INTO slashed_jobs (job_id, slash_id) VALUES ($1, $2)")
            .bind(job.as_str())
            .bind(&slash.slash_id)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(event) = event {
        let envelope =
            serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query(
            "INSERT INTO outbox (event_id, kind, key, envelope)
             VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&slash.slash_id)
        .bind(SLASH_EVENT)
        .bind(&miner_s)
        .bind(envelope)
        .execute(&mut **tx)
        .await?;
    }
    Ok(true)
}

/// The miner's stored verdicts from the start of its window (`case::window_start`
/// before its newest job), every stage, and the jobs earlier slashes cover. Which of
/// them count is `case::counted`'s to say.
pub(crate) async fn load_history(
    tx: &mut Transaction<'_, Postgres>,
    miner: &str,
    window_days: u32,
    points_factor: f64,
) -> Result<case::History, sqlx::Error> {
    let newest: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT max(submitted_at) FROM jobs WHERE miner_id = $1")
            .bind(miner)
            .fetch_one(&mut **tx)
            .await?;
    let mut verdicts = Vec::new();
    if let Some(newest) = newest {
        let rows = sqlx::query(
            "SELECT v.stage, v.body FROM verdicts v JOIN jobs j USING (job_id)
             WHERE v.miner_id = $1 AND j.submitted_at >= $2",
        )
        .bind(miner)
        .bind(case::window_start_days(newest, window_days))
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let Some(stage) = Stage::parse(r.get::<&str, _>(0)) else {
                continue;
            };
            let sqlx::types::Json(verdict): sqlx::types::Json<JobVerdict> = r.get(1);
            verdicts.push(case::StagedVerdict { stage, verdict });
        }
    }
    let slashed = sqlx::query(
        "SELECT s.job_id FROM slashed_jobs s JOIN jobs j USING (job_id) WHERE j.miner_id = $1",
    )
    .bind(miner)
    .fetch_all(&mut **tx)
    .await?;
    Ok(case::History {
        verdicts,
        slashed_jobs: slashed
            .iter()
            .filter_map(|r| JobId::parse(r.get::<&str, _>(0)).ok())
            .collect(),
        points_factor,
    })
}

//! The jobs, verdicts and peers a case page and an evidence page show.

use super::*;

impl Store {
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
}

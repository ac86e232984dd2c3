//! The review app's login sessions (tower-sessions' records, by the hash of their id).

use super::*;

impl Store {
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
}

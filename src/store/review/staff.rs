//! Staff accounts, API tokens and logins.

use super::*;

impl Store {
    /// Creates a staff account. `actor` is the admin (or [`OPERATOR`]) who adds it.
    pub async fn add_staff(
        &self,
        actor: impl Into<By<'_>>,
        username: &str,
        role: Role,
        password: &str,
    ) -> Result<(), ReviewError> {
        let by: By<'_> = actor.into();
        let phc = auth::hash_password(password)?;
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO staff (username, role, password_hash) VALUES ($1, $2, $3)
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(username)
        .bind(role.as_str())
        .bind(phc)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if fresh == 0 {
            return Err(ReviewError::StaffExists(username.to_owned()));
        }
        append_log(
            &mut tx,
            by,
            "staff_add",
            &format!("staff:{username}"),
            serde_json::json!({"role": role.as_str()}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables an account and revokes its tokens; its sessions end at their next use.
    pub async fn disable_staff(
        &self,
        actor: impl Into<By<'_>>,
        username: &str,
    ) -> Result<(), ReviewError> {
        let by: By<'_> = actor.into();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE staff SET disabled_at = coalesce(disabled_at, now()) WHERE username = $1",
        )
        .bind(username)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(ReviewError::NoStaff(username.to_owned()));
        }
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = now() WHERE username = $1 AND revoked_at IS NULL",
        )
        .bind(username)
        .execute(&mut *tx)
        .await?;
        append_log(
            &mut tx,
            by,
            "staff_disable",
            &format!("staff:{username}"),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Issues an API token for an enabled account, valid for `days` days. The token
    /// is in the result only. A token is issued only to its holder: `actor` must be
    /// `username`, or the CLI's [`OPERATOR`] (who holds the database, and whom no
    /// rule in it could stop). An admin may disable an account, never act as it.
    pub async fn create_token(
        &self,
        actor: impl Into<By<'_>>,
        username: &str,
        label: &str,
        days: u32,
    ) -> Result<NewToken, ReviewError> {
        let by: By<'_> = actor.into();
        let actor = by.username;
        if actor != username && actor != OPERATOR {
            return Err(ReviewError::NotTheHolder {
                actor: actor.to_owned(),
                username: username.to_owned(),
            });
        }
        if !(1..=MAX_TOKEN_DAYS).contains(&days) {
            return Err(ReviewError::TokenLifetime(days));
        }
        let mut tx = self.pool.begin().await?;
        let enabled: Option<bool> =
            sqlx::query_scalar("SELECT disabled_at IS NULL FROM staff WHERE username = $1")
                .bind(username)
                .fetch_optional(&mut *tx)
                .await?;
        if enabled != Some(true) {
            return Err(ReviewError::NoStaff(username.to_owned()));
        }
        let token = auth::new_token();
        sqlx::query(
            "INSERT INTO api_tokens (token_id, username, token_hash, label, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(days => $5))",
        )
        .bind(&token.token_id)
        .bind(username)
        .bind(&token.token_hash)
        .bind(label)
        .bind(days as i32)
        .execute(&mut *tx)
        .await?;
        append_log(
            &mut tx,
            by,
            "token_create",
            &format!("token:{}", token.token_id),
            serde_json::json!({"username": username, "label": label, "days": days}),
        )
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// Revokes one API token: by its holder, an admin or the CLI's operator (the
    /// caller checks the role). `NoToken` when no such unrevoked token exists, or it
    /// belongs to someone else and `any` is false.
    pub async fn revoke_token(
        &self,
        actor: impl Into<By<'_>>,
        token_id: &str,
        any: bool,
    ) -> Result<(), ReviewError> {
        let by: By<'_> = actor.into();
        let actor = by.username;
        let mut tx = self.pool.begin().await?;
        let holder: Option<String> = sqlx::query_scalar(
            "UPDATE api_tokens SET revoked_at = now()
             WHERE token_id = $1 AND revoked_at IS NULL AND ($2 OR username = $3)
             RETURNING username",
        )
        .bind(token_id.to_ascii_lowercase())
        .bind(any)
        .bind(actor)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(holder) = holder else {
            return Err(ReviewError::NoToken(token_id.to_owned()));
        };
        append_log(
            &mut tx,
            by,
            "token_revoke",
            &format!("token:{}", token_id.to_ascii_lowercase()),
            serde_json::json!({"username": holder}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The unrevoked, unexpired tokens of `username` (all accounts when `None`):
    /// id, holder, label, expiry. Never the secret, which is not kept.
    pub async fn live_tokens(&self, username: Option<&str>) -> Result<Vec<TokenRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT token_id, username, label, created_at, expires_at FROM api_tokens
             WHERE revoked_at IS NULL AND expires_at > now()
               AND ($1::text IS NULL OR username = $1)
             ORDER BY username, created_at",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| TokenRow {
                token_id: r.get(0),
                username: r.get(1),
                label: r.get(2),
                created_at: r.get(3),
                expires_at: r.get(4),
            })
            .collect())
    }

    /// The staff member an API token belongs to, if it is valid, unrevoked, unexpired
    /// and its account enabled; acting through the API with that token (the CLI says
    /// it is the CLI).
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<Actor>, sqlx::Error> {
        let Some((id, secret)) = auth::parse_token(token) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT t.token_hash, s.username, s.role FROM api_tokens t JOIN staff s USING (username)
             WHERE t.token_id = $1 AND t.revoked_at IS NULL AND t.expires_at > now()
               AND s.disabled_at IS NULL",
        )
        .bind(id.to_ascii_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|r| {
            let stored: String = r.get(0);
            let role = Role::parse(r.get::<&str, _>(2))?;
            auth::token_matches(secret, &stored).then(|| Actor {
                username: r.get(1),
                role,
                via: Via::Api {
                    token_id: id.to_ascii_lowercase(),
                },
            })
        }))
    }

    /// The password hash and role of the enabled account `username`, to check a
    /// login against ([`auth::check_login`], off the async threads).
    pub async fn credentials(
        &self,
        username: &str,
    ) -> Result<Option<auth::Credentials>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT password_hash, role FROM staff WHERE username = $1 AND disabled_at IS NULL",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|r| {
            Some(auth::Credentials {
                username: username.to_owned(),
                password_hash: r.get(0),
                role: Role::parse(r.get::<&str, _>(1))?,
            })
        }))
    }

    /// Logs a login.
    pub async fn log_login(&self, actor: &Actor) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        append_log(
            &mut tx,
            actor.into(),
            "login",
            "session",
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Logs that wrong passwords locked an account's logins: one entry per lock, not
    /// one per failure, so that guessing cannot flood the log (the failures
    /// themselves are counted in `proctor_logins_total`). The username tried is in
    /// the detail, never the actor.
    pub async fn log_login_locked(
        &self,
        username: &str,
        failures: u32,
        lock_seconds: u64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        append_log(
            &mut tx,
            By {
                username: OPERATOR,
                via: &Via::Web { session: None },
            },
            "login_locked",
            "session",
            serde_json::json!({
                "username": username.chars().take(64).collect::<String>(),
                "failures": failures,
                "lock_seconds": lock_seconds,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Logs a logout.
    pub async fn logout(&self, actor: &Actor) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        append_log(
            &mut tx,
            actor.into(),
            "logout",
            "session",
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends every login session of `actor`, on every browser: for a session that may
    /// have been copied. Logged; returns how many ended.
    pub async fn logout_everywhere(&self, actor: &Actor) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let ended = sqlx::query("DELETE FROM staff_sessions WHERE data ->> 'user' = $1")
            .bind(&actor.username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        append_log(
            &mut tx,
            actor.into(),
            "logout_everywhere",
            "session",
            serde_json::json!({ "sessions": ended }),
        )
        .await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// The enabled account of a username (a session's owner, checked on every request).
    /// `via` is how they came (their session).
    pub async fn staff_actor(
        &self,
        username: &str,
        via: Via,
    ) -> Result<Option<Actor>, sqlx::Error> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM staff WHERE username = $1 AND disabled_at IS NULL",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(role.and_then(|r| Role::parse(&r)).map(|role| Actor {
            username: username.to_owned(),
            role,
            via,
        }))
    }

    /// Every account, for the admin page.
    pub async fn staff_list(&self) -> Result<Vec<StaffRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT s.username, s.role, s.created_at, s.disabled_at,
                    (SELECT count(*) FROM api_tokens t WHERE t.username = s.username
                       AND t.revoked_at IS NULL AND t.expires_at > now())
             FROM staff s ORDER BY s.username",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| StaffRow {
                username: r.get(0),
                role: r.get(1),
                created_at: r.get(2),
                disabled_at: r.get(3),
                tokens: r.get(4),
            })
            .collect())
    }
}

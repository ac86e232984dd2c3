//! Login sessions in Postgres, for tower-sessions, and the CSRF token each holds.
//!
//! tower-sessions sets the cookie (secure, HTTP-only, SameSite=Strict, see
//! [`super::router`]) and hands records to this store; only the BLAKE3 hash of a session
//! id reaches the table. Each session holds a random CSRF token from its first page;
//! every form posts it back and [`check_csrf`] compares it in constant time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::RngCore;
use tower_sessions::Session;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use crate::store::Store;

/// The session keys.
pub const USER: &str = "user";
pub const CSRF: &str = "csrf";

#[derive(Clone)]
pub struct PgSessions {
    store: Store,
}

impl std::fmt::Debug for PgSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgSessions")
    }
}

impl PgSessions {
    pub fn new(store: Store) -> PgSessions {
        PgSessions { store }
    }
}

fn id_hash(id: &Id) -> String {
    hex::encode(blake3::derive_key(
        "heurist proctor 2026-11 session id v1",
        id.to_string().as_bytes(),
    ))
}

/// The first 16 hex digits of the hash a session is stored under: what the audit log
/// records of the session an action came from, enough to find its row and too little
/// to be its id.
pub fn short_id(id: &Id) -> String {
    id_hash(id)[..16].to_owned()
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn expiry(r: &Record) -> DateTime<Utc> {
    DateTime::from_timestamp(r.expiry_date.unix_timestamp(), 0).unwrap_or_else(Utc::now)
}

#[async_trait]
impl SessionStore for PgSessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        loop {
            let data = serde_json::to_value(&record.data).map_err(backend)?;
            if self
                .store
                .save_session(&id_hash(&record.id), &data, expiry(record), true)
                .await
                .map_err(backend)?
            {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = serde_json::to_value(&record.data).map_err(backend)?;
        self.store
            .save_session(&id_hash(&record.id), &data, expiry(record), false)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some((data, expires)) = self
            .store
            .load_session(&id_hash(id))
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let expiry_date =
            tower_sessions::cookie::time::OffsetDateTime::from_unix_timestamp(expires.timestamp())
                .map_err(backend)?;
        Ok(Some(Record {
            id: *id,
            data: serde_json::from_value(data).map_err(backend)?,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.store
            .delete_session(&id_hash(id))
            .await
            .map_err(backend)
    }
}

/// A new form token: 32 random bytes in hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether a posted form token is the expected one, compared in constant time; an
/// empty expected token matches nothing.
pub fn same_token(want: &str, posted: &str) -> bool {
    // blake3::Hash compares in constant time.
    !want.is_empty() && blake3::hash(want.as_bytes()) == blake3::hash(posted.as_bytes())
}

/// The session's CSRF token, made on first use.
pub async fn csrf_token(session: &Session) -> Result<String, session_store::Error> {
    if let Ok(Some(t)) = session.get::<String>(CSRF).await {
        return Ok(t);
    }
    let t = random_token();
    session
        .insert(CSRF, &t)
        .await
        .map_err(|e| backend(format!("{e}")))?;
    Ok(t)
}

/// Whether a posted token is the session's, compared in constant time.
pub async fn check_csrf(session: &Session, posted: &str) -> bool {
    let Ok(Some(want)) = session.get::<String>(CSRF).await else {
        return false;
    };
    same_token(&want, posted)
}

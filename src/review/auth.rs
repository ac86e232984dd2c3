//! Staff credentials: Argon2id password hashes and API tokens.
//!
//! A password is kept as an Argon2id PHC string (the crate's default parameters, a
//! random 16-byte salt). An API token is `proctor_<id>_<secret>`: `id` (12 hex digits)
//! names it in lists and the audit log; `secret` is 32 random bytes in hex, and only
//! its BLAKE3 hash is stored. A token has 256 bits of entropy, so a fast hash is as safe
//! as a slow one for it; the hashes are compared in constant time.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

/// The shortest password `proctor staff add` accepts.
pub const MIN_PASSWORD_CHARS: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("a password needs at least {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The Argon2id PHC string of a password.
pub fn hash_password(password: &str) -> Result<String, CredentialError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(CredentialError::PasswordTooShort);
    }
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| CredentialError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CredentialError::Hash(e.to_string()))
}

/// Whether `password` matches a stored PHC string. A malformed hash matches nothing.
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash that no password matches, to spend the same time on an unknown username as
/// on a known one.
pub fn dummy_verify(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc =
        DUMMY.get_or_init(|| hash_password("no account has this password").unwrap_or_default());
    let _ = verify_password(phc, password);
}

/// What the store keeps to check a login: an enabled account's password hash and role.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password_hash: String,
    pub role: super::Role,
}

/// The staff member `password` logs in, given the account found for the name tried
/// (`None`: no enabled account has it). Argon2id, about 19 MiB and tens of
/// milliseconds of one core: callers in async code run it on the blocking pool, and
/// an unknown name costs the same time as a known one.
pub fn check_login(account: Option<&Credentials>, password: &str) -> Option<super::Actor> {
    match account {
        Some(c) if verify_password(&c.password_hash, password) => Some(super::Actor {
            username: c.username.clone(),
            role: c.role,
            via: super::Via::Web { session: None },
        }),
        Some(_) => None,
        None => {
            dummy_verify(password);
            None
        }
    }
}

/// A new API token: what is shown once, and what is stored.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token_id: String,
    /// The whole token, `proctor_<id>_<secret>`.
    pub token: String,
    pub token_hash: String,
}

pub fn new_token() -> NewToken {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let (token_id, secret) = (hex::encode(id), hex::encode(secret));
    NewToken {
        token: format!("proctor_{token_id}_{secret}"),
        token_hash: token_hash(&secret),
        token_id,
    }
}

/// The id and secret of a token, when it has the shape of one.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.trim().strip_prefix("proctor_")?;
    let (id, secret) = rest.split_once('_')?;
    let hexes = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexes(id, 12) && hexes(secret, 64)).then_some((id, secret))
}

pub fn token_hash(secret: &str) -> String {
    hex::encode(blake3::derive_key(
        "heurist proctor 2026-11 api token v1",
        secret.as_bytes(),
    ))
}

/// Whether a token's secret matches a stored hash, in constant time.
pub fn token_matches(secret: &str, stored_hash: &str) -> bool {
    let got = token_hash(secret);
    // blake3::Hash's equality is constant-time.
    match (
        blake3::Hash::from_hex(&got),
        blake3::Hash::from_hex(stored_hash),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password(&phc, "correct horse battery"));
        assert!(!verify_password(&phc, "correct horse battery!"));
        assert!(!verify_password(
            "not a phc string",
            "correct horse battery"
        ));
        // Salted: the same password hashes differently twice.
        assert_ne!(phc, hash_password("correct horse battery").unwrap());
        assert_eq!(
            hash_password("short"),
            Err(CredentialError::PasswordTooShort)
        );
    }

    #[test]
    fn a_token_parses_and_matches_its_stored_hash_only() {
        let t = new_token();
        let (id, secret) = parse_token(&t.token).unwrap();
        assert_eq!(id, t.token_id);
        assert!(token_matches(secret, &t.token_hash));
        let other = new_token();
        assert!(!token_matches(secret, &other.token_hash));
        for bad in [
            "",
            "proctor_",
            "proctor_abc_def",
            &t.token.replace("proctor_", "token_"),
            &format!("{}x", t.token),
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }
}

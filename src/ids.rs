//! Validated identifiers. Every id that crosses a trust boundary (a job record, an S3 key,
//! a file name in `audit`) is parsed once into one of these newtypes, so the rest of the
//! crate never re-checks a string.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier. The message names what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(String);

/// A rejected value as an error shows it: quoted, and cut to its first 64 characters
/// with its length when longer, so that an oversized value never makes an oversized
/// error (a dead letter's header, a log line).
pub fn shown(raw: &str) -> String {
    const SHOWN: usize = 64;
    match raw.char_indices().nth(SHOWN) {
        None => format!("{raw:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &raw[..cut], raw.len()),
    }
}

/// The longest per-GPU suffix of a miner id (`gpu0`, `rig3_gpu7`): a miner id is a
/// Kafka key, a Postgres key and a label in every log line.
pub const MAX_MINER_SUFFIX_BYTES: usize = 64;

/// A miner: a wallet address plus an optional per-GPU suffix, e.g. `0xAbC…-gpu1`.
///
/// Addresses compare case-insensitively (EIP-55 checksums mix case), so the address part
/// is stored lower-cased; the suffix is kept as sent because the network treats it as an
/// opaque label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MinerId {
    address: String,
    suffix: Option<String>,
}

impl MinerId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let bad = || {
            IdError(format!(
                "{} is not a miner id: expected 0x followed by 40 hex digits and an optional -suffix of 1 to {MAX_MINER_SUFFIX_BYTES} [A-Za-z0-9_]",
                shown(raw)
            ))
        };
        let rest = raw.strip_prefix("0x").ok_or_else(bad)?;
        if rest.len() < 40 || !rest.is_char_boundary(40) {
            return Err(bad());
        }
        let (hex_part, tail) = rest.split_at(40);
        if !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let suffix = match tail {
            "" => None,
            t => {
                let s = t.strip_prefix('-').ok_or_else(bad)?;
                if s.is_empty()
                    || s.len() > MAX_MINER_SUFFIX_BYTES
                    || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(bad());
                }
                Some(s.to_owned())
            }
        };
        Ok(MinerId {
            address: format!("0x{}", hex_part.to_ascii_lowercase()),
            suffix,
        })
    }

    /// The wallet address, lower-cased: the unit that holds NFTs and receives points.
    pub fn wallet(&self) -> &str {
        &self.address
    }

    pub fn suffix(&self) -> Option<&str> {
        self.suffix.as_deref()
    }
}

impl fmt::Display for MinerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.suffix {
            Some(s) => write!(f, "{}-{}", self.address, s),
            None => f.write_str(&self.address),
        }
    }
}

impl TryFrom<String> for MinerId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        MinerId::parse(&s)
    }
}

impl From<MinerId> for String {
    fn from(id: MinerId) -> String {
        id.to_string()
    }
}

/// Defines a string newtype whose characters are safe in S3 keys and file names.
macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $extra:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                let ok_char = |c: char| c.is_ascii_alphanumeric() || "_-.:".contains(c) || $extra.contains(c);
                if raw.is_empty() || raw.len() > 128 || !raw.chars().all(ok_char) || raw.starts_with('.') {
                    return Err(IdError(format!(
                        "{} is not a {}: expected 1 to 128 characters of [A-Za-z0-9_.:-{}], not starting with '.'",
                        $crate::ids::shown(raw), $what, $extra
                    )));
                }
                Ok($name(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

token_id!(
    /// A job, as assigned by the network's job service. Used as a path component under
    /// `reference/`, so it may not contain `/`.
    JobId,
    "job id",
    ""
);

token_id!(
    /// A model as named in the network's models list (`AnimagineXL`, `hermes-3-llama3.1-8b`).
    ModelId,
    "model id",
    "/"
);

/// An S3 object key for miner output. Relative, no `..` segments, so it can also be
/// resolved safely under an `audit` folder's `objects/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let bad_segment = raw
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
        if raw.is_empty() || raw.len() > 1024 || bad_segment || raw.chars().any(char::is_control) {
            return Err(IdError(format!(
                "{} is not an object key: expected a relative key of at most 1024 bytes with no empty, '.' or '..' segments",
                shown(raw)
            )));
        }
        Ok(ObjectKey(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        ObjectKey::parse(&s)
    }
}

impl From<ObjectKey> for String {
    fn from(k: ObjectKey) -> String {
        k.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "0xAbCdEf0123456789abcdef0123456789ABCDEF01";

    #[test]
    fn miner_addresses_compare_case_insensitively() {
        let a = MinerId::parse(ADDR).unwrap();
        let b = MinerId::parse(&ADDR.to_lowercase()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.wallet(), ADDR.to_lowercase());
    }

    #[test]
    fn a_miner_suffix_is_kept_as_sent() {
        let id = MinerId::parse(&format!("{ADDR}-Gpu_1")).unwrap();
        assert_eq!(id.suffix(), Some("Gpu_1"));
        assert_eq!(id.to_string(), format!("{}-Gpu_1", ADDR.to_lowercase()));
    }

    #[test]
    fn malformed_miner_ids_are_rejected() {
        for bad in [
            "",
            "0x",
            "AbCdEf0123456789abcdef0123456789ABCDEF01",
            "0xAbCdEf0123456789abcdef0123456789ABCDEF0",
            "0xAbCdEf0123456789abcdef0123456789ABCDEF0g",
            "0xAbCdEf0123456789abcdef0123456789ABCDEF01-",
            "0xAbCdEf0123456789abcdef0123456789ABCDEF01-a b",
            "0xAbCdEf0123456789abcdef0123456789ABCDEF01x",
            "0xAbCdEf0123456789abcdef0123456789ABCDEF01-é",
            "0xé€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€",
        ] {
            assert!(MinerId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn job_ids_cannot_escape_a_directory() {
        assert!(JobId::parse("../etc").is_err());
        assert!(JobId::parse("a/b").is_err());
        assert!(JobId::parse("job-1:2.x").is_ok());
    }

    #[test]
    fn object_keys_cannot_escape_a_directory() {
        for bad in ["", "/abs", "a/../b", "a//b", "..", "a/./b", "a\nb"] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(ObjectKey::parse("jobs/2026/x.png").is_ok());
    }
}

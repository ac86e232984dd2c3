//! Model files: whole-file digests against the registry, and byte-range challenges.
//!
//! # The challenge (documented so miner software can implement it)
//!
//! Given a hex `nonce`, a file `name` (as in the models registry) and the file's size in
//! bytes `size`:
//!
//! 1. `seed = BLAKE3.derive_key(CONTEXT, nonce_bytes || 0x00 || utf8(name))`, 32 bytes,
//!    with `CONTEXT` = [`CHALLENGE_CONTEXT`].
//! 2. `length = min(size, min_len + u64_le(seed[0..8]) mod (max_len - min_len + 1))`,
//!    with `min_len`/`max_len` from `rules/checks.toml` `[challenge]`.
//! 3. `offset = u64_le(seed[8..16]) mod (size - length + 1)`.
//! 4. `answer = hex(BLAKE3.keyed_hash(key = seed, data = file[offset .. offset + length]))`.
//!
//! A miner holding the true file answers in one read; one that deleted, truncated, pruned
//! or quantized the file cannot. A truncated file changes `size` and so the range too.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::outcome::Outcome;
use crate::record::ChallengeResponse;
use crate::rules::{ChallengeRules, ModelFile};

/// Key-derivation context; a new protocol version gets a new string.
pub const CHALLENGE_CONTEXT: &str = "heurist proctor 2026-11 model-file challenge v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("nonce is not hex")]
    BadNonce,
    #[error("cannot read the model file: {0}")]
    Io(#[from] std::io::Error),
}

pub fn seed(nonce: &[u8], file_name: &str) -> [u8; 32] {
    let mut material = Vec::with_capacity(nonce.len() + 1 + file_name.len());
    material.extend_from_slice(nonce);
    material.push(0);
    material.extend_from_slice(file_name.as_bytes());
    blake3::derive_key(CHALLENGE_CONTEXT, &material)
}

pub fn derive_range(seed: &[u8; 32], file_size: u64, rules: &ChallengeRules) -> ByteRange {
    let word = |i: usize| u64::from_le_bytes(seed[i..i + 8].try_into().unwrap_or([0; 8]));
    let span = rules.max_len_bytes - rules.min_len_bytes + 1;
    let length = (rules.min_len_bytes + word(0) % span).min(file_size);
    let offset = word(8) % (file_size - length + 1);
    ByteRange { offset, length }
}

pub fn answer(seed: &[u8; 32], range_bytes: &[u8]) -> String {
    blake3::keyed_hash(seed, range_bytes).to_hex().to_string()
}

/// Answers a challenge from a file on disk, reading only the derived range. This is what
/// a reference host runs to produce a [`ChallengeExpectation`], and what miners run too.
pub fn answer_file(
    path: &Path,
    file_name: &str,
    nonce_hex: &str,
    rules: &ChallengeRules,
) -> Result<ChallengeExpectation, ChallengeError> {
    let nonce = hex::decode(nonce_hex).map_err(|_| ChallengeError::BadNonce)?;
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let s = seed(&nonce, file_name);
    let range = derive_range(&s, size, rules);
    file.seek(SeekFrom::Start(range.offset))?;
    // Streamed through a buffer on the stack, which stays in the cache: a fresh 1 MiB
    // buffer cost a page fault a page to zero and fill, the challenge's p99
    // (docs/PERFORMANCE.md). The same digest as [`answer`] over the whole range.
    let mut hasher = blake3::Hasher::new_keyed(&s);
    let mut buf = [0u8; 64 * 1024];
    let mut left = range.length;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(ChallengeExpectation {
        file: file_name.to_owned(),
        nonce: nonce_hex.to_owned(),
        file_size_bytes: size,
        range,
        expected: hasher.finalize().to_hex().to_string(),
    })
}

/// What a trusted reference host computed from its own verified copy of the file:
/// `reference/<job_id>/challenge.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeExpectation {
    pub file: String,
    pub nonce: String,
    pub file_size_bytes: u64,
    pub range: ByteRange,
    pub expected: String,
}

pub fn check_challenge(
    response: &ChallengeResponse,
    expectation: Option<&ChallengeExpectation>,
) -> Outcome {
    let Some(exp) = expectation else {
        return Outcome::inconclusive("no reference answer for this challenge yet");
    };
    if exp.file != response.file || !exp.nonce.eq_ignore_ascii_case(&response.nonce) {
        return Outcome::inconclusive("the reference answer is for a different challenge");
    }
    let details = serde_json::json!({
        "file": exp.file,
        "nonce": exp.nonce,
        "range": exp.range,
        "expected": exp.expected,
        "answer": response.answer,
    });
    if response.answer.eq_ignore_ascii_case(&exp.expected) {
        Outcome::pass(details)
    } else {
        Outcome::fail(
            format!(
                "wrong answer for bytes {}..{} of {}: the miner's copy of the file differs from the published one",
                exp.range.offset,
                exp.range.offset + exp.range.length,
                exp.file
            ),
            details,
        )
    }
}

/// Size and digests of a file, as `hashing::digest_file` computes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigests {
    pub size_bytes: u64,
    pub sha256: String,
    pub blake3: String,
}

/// Compares a file's digests with the registry entry: size and SHA-256 always, BLAKE3
/// where the registry has it.
pub fn check_file(digests: &FileDigests, entry: &ModelFile) -> Outcome {
    let mut problems = Vec::new();
    if let Some(size) = entry.size_bytes
        && digests.size_bytes != size
    {
        problems.push(format!("size {} != {size}", digests.size_bytes));
    }
    if !digests.sha256.eq_ignore_ascii_case(&entry.sha256) {
        problems.push("SHA-256 differs".to_owned());
    }
    if let Some(b3) = &entry.blake3
        && !digests.blake3.eq_ignore_ascii_case(b3)
    {
        problems.push("BLAKE3 differs".to_owned());
    }
    let details = serde_json::json!({"file": entry.name, "registry": entry, "actual": digests});
    if problems.is_empty() {
        Outcome::pass(details)
    } else {
        Outcome::fail(
            format!(
                "{} does not match the registry: {}",
                entry.name,
                problems.join(", ")
            ),
            details,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Rules;
    use std::io::Write;

    fn rules() -> ChallengeRules {
        Rules::embedded().unwrap().checks.challenge
    }

    fn model_file(len: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        f.write_all(&bytes).unwrap();
        f
    }

    #[test]
    fn the_range_is_deterministic_and_inside_the_file() {
        let r = rules();
        for size in [1u64, 1000, 65536, 10_000_000] {
            for n in 0u8..20 {
                let s = seed(&[n, 7], "unet.safetensors");
                let a = derive_range(&s, size, &r);
                assert_eq!(a, derive_range(&s, size, &r));
                assert!(a.offset + a.length <= size, "{a:?} outside {size}");
                assert!(a.length >= r.min_len_bytes.min(size) && a.length <= r.max_len_bytes);
            }
        }
    }

    #[test]
    fn different_nonces_pick_different_ranges() {
        let r = rules();
        let a = derive_range(&seed(b"a", "f"), 1 << 30, &r);
        let b = derive_range(&seed(b"b", "f"), 1 << 30, &r);
        assert_ne!(a, b);
    }

    #[test]
    fn the_derivation_matches_the_documented_steps() {
        // Pins the protocol: a change here breaks every miner's implementation.
        let r = rules();
        let s = seed(&hex::decode("00ff").unwrap(), "model.safetensors");
        let mut material = vec![0x00, 0xff, 0x00];
        material.extend_from_slice(b"model.safetensors");
        assert_eq!(s, blake3::derive_key(CHALLENGE_CONTEXT, &material));
        let size = 5_000_000u64;
        let w0 = u64::from_le_bytes(s[0..8].try_into().unwrap());
        let w1 = u64::from_le_bytes(s[8..16].try_into().unwrap());
        let len = (r.min_len_bytes + w0 % (r.max_len_bytes - r.min_len_bytes + 1)).min(size);
        assert_eq!(
            derive_range(&s, size, &r),
            ByteRange {
                offset: w1 % (size - len + 1),
                length: len
            }
        );
    }

    #[test]
    fn an_honest_answer_passes_and_a_tampered_file_fails() {
        let r = rules();
        let f = model_file(300_000);
        let exp = answer_file(f.path(), "m.safetensors", "abcd", &r).unwrap();
        let honest = ChallengeResponse {
            nonce: "ABCD".into(),
            file: "m.safetensors".into(),
            answer: exp.expected.clone(),
        };
        assert!(matches!(
            check_challenge(&honest, Some(&exp)),
            Outcome::Pass { .. }
        ));

        let mut bytes = std::fs::read(f.path()).unwrap();
        let mid = (exp.range.offset + exp.range.length / 2) as usize;
        bytes[mid] ^= 1;
        let tampered = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tampered.path(), &bytes).unwrap();
        let theirs = answer_file(tampered.path(), "m.safetensors", "abcd", &r).unwrap();
        let cheat = ChallengeResponse {
            answer: theirs.expected,
            ..honest
        };
        assert!(check_challenge(&cheat, Some(&exp)).is_fail());
    }

    #[test]
    fn the_streamed_answer_is_the_keyed_hash_of_the_range() {
        // A range longer than the stream's buffer, so several reads make it up.
        let mut r = rules();
        r.min_len_bytes = 200_000;
        r.max_len_bytes = 200_000;
        let f = model_file(300_000);
        let exp = answer_file(f.path(), "m.safetensors", "abcd", &r).unwrap();
        let bytes = std::fs::read(f.path()).unwrap();
        let range = &bytes[exp.range.offset as usize..][..exp.range.length as usize];
        let s = seed(&hex::decode("abcd").unwrap(), "m.safetensors");
        assert_eq!(exp.expected, answer(&s, range));
    }

    #[test]
    fn a_missing_or_mismatched_expectation_is_inconclusive() {
        let resp = ChallengeResponse {
            nonce: "00".into(),
            file: "a".into(),
            answer: "x".into(),
        };
        assert!(matches!(
            check_challenge(&resp, None),
            Outcome::Inconclusive { .. }
        ));
        let exp = ChallengeExpectation {
            file: "b".into(),
            nonce: "00".into(),
            file_size_bytes: 1,
            range: ByteRange {
                offset: 0,
                length: 1,
            },
            expected: "y".into(),
        };
        assert!(matches!(
            check_challenge(&resp, Some(&exp)),
            Outcome::Inconclusive { .. }
        ));
    }

    #[test]
    fn registry_digests_are_compared_in_full() {
        let entry = ModelFile {
            name: "m".into(),
            size_bytes: Some(3),
            published_size_mb: None,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
            blake3: Some("6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85".into()),
            url: None,
        };
        let good = FileDigests {
            size_bytes: 3,
            sha256: entry.sha256.to_uppercase(),
            blake3: entry.blake3.clone().unwrap(),
        };
        assert!(matches!(check_file(&good, &entry), Outcome::Pass { .. }));
        let bad = FileDigests {
            blake3: "00".repeat(32),
            ..good
        };
        assert!(check_file(&bad, &entry).is_fail());
    }
}

//! Slash events for the ledger service, signed with ed25519.
//!
//! An event travels as a [`SignedEvent`] envelope: `payload` is the exact JSON text that
//! was signed, so a verifier checks bytes and never has to re-serialize JSON the same way
//! proctor did. The signature covers `SIGNING_CONTEXT || payload`, which keeps a proctor
//! signature from ever being valid for another protocol that uses the same key.
//!
//! A reversal travels the same way on the same topic, keyed by the same miner: a
//! [`ReversalEvent`] signed under [`REVERSAL_SIGNING_CONTEXT`], naming the `slash_id` it
//! undoes. [`verify_ledger_event`] accepts either and says which it is. Each kind has
//! its own key: the judge's slash key signs slashes (automatic and staff-confirmed),
//! and the review app's reversal key signs reversals ([`LedgerKeys`]), so the review
//! app holds no key that can create a slash.
//!
//! For the ledger team, verification is: check that `public_key` is the key you trust,
//! hex-decode `signature` (64 bytes), verify it with ed25519 over
//! `b"heurist proctor slash event v1\n" + payload.as_bytes()`, and only then parse
//! `payload`. [`verify`] does exactly that and nothing more. Deduplicate on `slash_id`:
//! the same slash may be delivered more than once, and never differs when it is.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::decide::{EvidenceRef, Slash};
use crate::ids::{JobId, MinerId};
use crate::points::MicroPoints;

/// Version 2: amounts in integer micro-points (`points::MicroPoints`); version 1 had
/// them as floating-point points.
pub const EVENT_VERSION: u32 = 2;
/// Version 3 of a reversal names the signed slash event it undoes by the SHA-256 of
/// that event's payload (`slash_payload_sha256`); version 2 did not, and took its
/// amount from a database row that anyone with write access could edit.
pub const REVERSAL_EVENT_VERSION: u32 = 3;
pub const SIGNING_CONTEXT: &[u8] = b"heurist proctor slash event v1\n";
pub const REVERSAL_SIGNING_CONTEXT: &[u8] = b"heurist proctor slash reversed event v1\n";

/// What the ledger applies when staff reverse a slash on appeal: give `amount` back to
/// `wallet` for `miner_id`. At most one per `slash_id`; deduplicate on it. A ledger that
/// receives a reversal before its slash must hold it until the slash arrives (both are
/// keyed by the miner, so one partition keeps their order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReversalEvent {
    pub event_version: u32,
    /// Always `slash_reversed`.
    pub event_type: String,
    /// The slash this reverses.
    pub slash_id: String,
    /// SHA-256, hex, of the signed payload of the slash event it reverses (the
    /// `payload` string's UTF-8 bytes, as the ledger received them): the reversal
    /// undoes that event and no other text under its id.
    pub slash_payload_sha256: String,
    pub miner_id: MinerId,
    pub wallet: String,
    /// What the slash took, returned, in micro-points: read from the verified slash
    /// event itself, never from a database row.
    pub amount: MicroPoints,
    /// The appeal that reversed it, and the staff reviewer who decided it.
    pub appeal_id: i64,
    pub reversed_by: String,
    pub reason: String,
    pub reversed_at: chrono::DateTime<chrono::Utc>,
}

pub const REVERSAL_EVENT_TYPE: &str = "slash_reversed";

/// A verified event from the ledger topic.
#[derive(Debug, Clone, PartialEq)]
pub enum LedgerEvent {
    Slash(SlashEvent),
    Reversed(ReversalEvent),
}

/// What the ledger applies: take `amount` from `wallet`'s balances for `miner_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlashEvent {
    pub event_version: u32,
    /// Deterministic: the same evidence always yields the same id. Deduplicate on it.
    pub slash_id: String,
    pub miner_id: MinerId,
    pub wallet: String,
    /// What to take, in micro-points.
    pub amount: MicroPoints,
    pub jobs: Vec<JobId>,
    pub rule_id: String,
    pub reason: String,
    pub honest_probability: f64,
    pub rules_digest: String,
    /// Which check failed on which job, with the S3 key of the output that was judged.
    pub evidence: Vec<EvidenceRef>,
}

impl From<&Slash> for SlashEvent {
    fn from(s: &Slash) -> SlashEvent {
        SlashEvent {
            event_version: EVENT_VERSION,
            slash_id: s.slash_id.clone(),
            miner_id: s.miner_id.clone(),
            wallet: s.miner_id.wallet().to_owned(),
            amount: s.amount,
            jobs: s.jobs.clone(),
            rule_id: s.rule_id.clone(),
            reason: s.reason.clone(),
            honest_probability: s.honest_probability,
            rules_digest: s.rules_digest.clone(),
            evidence: s.evidence.clone(),
        }
    }
}

/// The envelope that travels on `ledger.slashes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEvent {
    /// The signed JSON text of a [`SlashEvent`].
    pub payload: String,
    /// Hex ed25519 signature (64 bytes) over `SIGNING_CONTEXT || payload`.
    pub signature: String,
    /// Hex ed25519 public key (32 bytes) of the signer.
    pub public_key: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("not a signed event envelope: {0}")]
    Envelope(String),
    #[error("signed by {0}, which is not the trusted key")]
    UntrustedKey(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the signed payload is not a slash event: {0}")]
    Payload(String),
}

/// A signing key from its 32-byte secret seed in hex (a deployment setting).
pub fn signing_key_from_hex(seed_hex: &str) -> Result<SigningKey, String> {
    let bytes = hex::decode(seed_hex.trim()).map_err(|_| "signing key is not hex".to_owned())?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "signing key must be 32 bytes (64 hex digits)".to_owned())?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn verifying_key_from_hex(key_hex: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(key_hex.trim()).map_err(|_| "public key is not hex".to_owned())?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "public key must be 32 bytes (64 hex digits)".to_owned())?;
    VerifyingKey::from_bytes(&key).map_err(|e| format!("invalid public key: {e}"))
}

/// Signs an event. An error where the event has no JSON form (never with these types):
/// a signature over an empty payload would be a valid event of nothing.
pub fn sign(event: &SlashEvent, key: &SigningKey) -> Result<SignedEvent, serde_json::Error> {
    sign_in(SIGNING_CONTEXT, &serde_json::to_string(event)?, key)
}

/// What the review app signs reversals with: a key of their own, which can sign no
/// slash (the ledger trusts it for reversals only), and the slash key's public half,
/// under which the slash event a reversal undoes must verify.
#[derive(Debug, Clone)]
pub struct ReversalSigner {
    key: SigningKey,
    slash_key: VerifyingKey,
}

impl ReversalSigner {
    /// Refuses a reversal key that is the slash key: the holder of the one would hold
    /// the other.
    pub fn new(key: SigningKey, slash_key: VerifyingKey) -> Result<ReversalSigner, String> {
        if key.verifying_key() == slash_key {
            return Err(
                "the reversal key is the slash signing key: give it a key of its own".into(),
            );
        }
        Ok(ReversalSigner { key, slash_key })
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    pub fn slash_key(&self) -> &VerifyingKey {
        &self.slash_key
    }
}

/// Signs a reversal under its own context, so it can never pass for a slash.
pub fn sign_reversal(
    event: &ReversalEvent,
    key: &SigningKey,
) -> Result<SignedEvent, serde_json::Error> {
    sign_in(
        REVERSAL_SIGNING_CONTEXT,
        &serde_json::to_string(event)?,
        key,
    )
}

fn sign_in(
    context: &[u8],
    payload: &str,
    key: &SigningKey,
) -> Result<SignedEvent, serde_json::Error> {
    let mut msg = context.to_vec();
    msg.extend_from_slice(payload.as_bytes());
    Ok(SignedEvent {
        payload: payload.to_owned(),
        signature: hex::encode(key.sign(&msg).to_bytes()),
        public_key: hex::encode(key.verifying_key().to_bytes()),
    })
}

/// Verifies a slash envelope's bytes against the trusted key, then parses its payload.
pub fn verify(envelope: &[u8], trusted: &VerifyingKey) -> Result<SlashEvent, VerifyError> {
    verify_slash(envelope, trusted).map(|(event, _)| event)
}

/// [`verify`], with the SHA-256 of the signed payload that a reversal of it names.
pub fn verify_slash(
    envelope: &[u8],
    trusted: &VerifyingKey,
) -> Result<(SlashEvent, String), VerifyError> {
    let env = verified_envelope(envelope, trusted, SIGNING_CONTEXT)?;
    Ok((
        parse_payload(&env.payload, EVENT_VERSION)?,
        payload_sha256(&env.payload),
    ))
}

/// The SHA-256, hex, of a signed payload: how a reversal names its slash event.
pub fn payload_sha256(payload: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(payload.as_bytes()))
}

/// Why a ledger must not apply a reversal ([`check_reversal`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReversalError {
    #[error("it names slash {0}, which this ledger has not applied")]
    UnknownSlash(String),
    #[error("it names a slash event whose payload hash is {named}, not the {applied} applied")]
    OtherEvent { named: String, applied: String },
    #[error("it is for miner {named}, the slash for {applied}")]
    OtherMiner { named: String, applied: String },
    #[error("it gives back {named:?}, more than the slash took ({applied:?})")]
    MoreThanTaken {
        named: MicroPoints,
        applied: MicroPoints,
    },
}

/// The ledger's rule for a verified reversal, given the slash event it applied under
/// that `slash_id` and that event's payload hash ([`verify_slash`]): the reversal must
/// name that very event, for the same miner, and give back no more than it took. A
/// reversal whose slash has not arrived is held, not applied (docs/events.md).
pub fn check_reversal(
    reversal: &ReversalEvent,
    applied: Option<(&SlashEvent, &str)>,
) -> Result<(), ReversalError> {
    let Some((slash, sha256)) = applied else {
        return Err(ReversalError::UnknownSlash(reversal.slash_id.clone()));
    };
    if !reversal.slash_payload_sha256.eq_ignore_ascii_case(sha256) {
        return Err(ReversalError::OtherEvent {
            named: reversal.slash_payload_sha256.clone(),
            applied: sha256.to_owned(),
        });
    }
    if reversal.miner_id != slash.miner_id {
        return Err(ReversalError::OtherMiner {
            named: reversal.miner_id.to_string(),
            applied: slash.miner_id.to_string(),
        });
    }
    let (r, t) = (reversal.amount, slash.amount);
    if r.waifu_micro > t.waifu_micro || r.llama_micro > t.llama_micro {
        return Err(ReversalError::MoreThanTaken {
            named: r,
            applied: t,
        });
    }
    Ok(())
}

/// An event's payload of this build's version: another version is named as such, not
/// misread (version 1's amounts were points, version 2's are micro-points).
fn parse_payload<T: serde::de::DeserializeOwned>(
    payload: &str,
    version: u32,
) -> Result<T, VerifyError> {
    #[derive(Deserialize)]
    struct Version {
        event_version: Option<u32>,
    }
    let v: Version =
        serde_json::from_str(payload).map_err(|e| VerifyError::Payload(e.to_string()))?;
    if let Some(other) = v.event_version.filter(|&n| n != version) {
        return Err(VerifyError::Payload(format!(
            "event_version {other}; this build reads version {version} of this event (slashes: amounts in integer micro-points; reversals: naming their slash event's payload hash)"
        )));
    }
    serde_json::from_str(payload).map_err(|e| VerifyError::Payload(e.to_string()))
}

/// The keys a ledger trusts, each for its own kind of event: `slash` (the judge's)
/// for slashes only, `reversal` (the review app's) for reversals only. A reversal key
/// signs no slash the ledger would apply, so the review app, which holds it, cannot
/// create one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerKeys<'a> {
    pub slash: &'a VerifyingKey,
    /// None: this verifier takes no reversals (each is refused as untrusted).
    pub reversal: Option<&'a VerifyingKey>,
}

/// Verifies either kind of event on the ledger topic: a slash under the slash key, or
/// a reversal under the reversal key. Each key is trusted for its own kind only.
pub fn verify_ledger_event(
    envelope: &[u8],
    keys: LedgerKeys<'_>,
) -> Result<LedgerEvent, VerifyError> {
    let env: SignedEvent =
        serde_json::from_slice(envelope).map_err(|e| VerifyError::Envelope(e.to_string()))?;
    let signer = |k: &VerifyingKey| {
        env.public_key
            .eq_ignore_ascii_case(&hex::encode(k.to_bytes()))
    };
    if signer(keys.slash) {
        let env = verified_envelope(envelope, keys.slash, SIGNING_CONTEXT)?;
        return parse_payload(&env.payload, EVENT_VERSION).map(LedgerEvent::Slash);
    }
    let Some(reversal_key) = keys.reversal.filter(|k| signer(k)) else {
        return Err(VerifyError::UntrustedKey(env.public_key));
    };
    let env = verified_envelope(envelope, reversal_key, REVERSAL_SIGNING_CONTEXT)?;
    let event: ReversalEvent = parse_payload(&env.payload, REVERSAL_EVENT_VERSION)?;
    if event.event_type != REVERSAL_EVENT_TYPE {
        return Err(VerifyError::Payload(format!(
            "event_type {:?} is not {REVERSAL_EVENT_TYPE}",
            event.event_type
        )));
    }
    Ok(LedgerEvent::Reversed(event))
}

fn verified_envelope(
    envelope: &[u8],
    trusted: &VerifyingKey,
    context: &[u8],
) -> Result<SignedEvent, VerifyError> {
    let env: SignedEvent =
        serde_json::from_slice(envelope).map_err(|e| VerifyError::Envelope(e.to_string()))?;
    if !env
        .public_key
        .eq_ignore_ascii_case(&hex::encode(trusted.to_bytes()))
    {
        return Err(VerifyError::UntrustedKey(env.public_key));
    }
    let sig_bytes: [u8; 64] = hex::decode(&env.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(VerifyError::BadSignature)?;
    let mut msg = context.to_vec();
    msg.extend_from_slice(env.payload.as_bytes());
    trusted
        .verify(&msg, &Signature::from_bytes(&sig_bytes))
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::CheckId;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn event() -> SlashEvent {
        SlashEvent {
            event_version: EVENT_VERSION,
            slash_id: "abc".into(),
            miner_id: MinerId::parse("0x00000000000000000000000000000000000000aa-gpu0").unwrap(),
            wallet: "0x00000000000000000000000000000000000000aa".into(),
            amount: MicroPoints {
                waifu_micro: 12_500_000,
                llama_micro: 0,
            },
            jobs: vec![JobId::parse("j1").unwrap()],
            rule_id: "auto-slash-v1".into(),
            reason: "failed image_similarity".into(),
            honest_probability: 1e-9,
            rules_digest: "d".into(),
            evidence: vec![EvidenceRef {
                job_id: JobId::parse("j1").unwrap(),
                check: CheckId::ImageSimilarity,
                summary: "blurred".into(),
                output_key: Some("jobs/j1.png".into()),
            }],
        }
    }

    fn bytes(e: &SignedEvent) -> Vec<u8> {
        serde_json::to_vec(e).unwrap()
    }

    #[test]
    fn a_signed_event_verifies_and_round_trips() {
        let k = key(1);
        let signed = sign(&event(), &k).unwrap();
        assert_eq!(
            verify(&bytes(&signed), &k.verifying_key()).unwrap(),
            event()
        );
    }

    #[test]
    fn a_changed_payload_fails() {
        let k = key(1);
        let mut signed = sign(&event(), &k).unwrap();
        signed.payload = signed.payload.replace("12500000", "125000000");
        assert_eq!(
            verify(&bytes(&signed), &k.verifying_key()),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn another_key_is_not_trusted_even_with_a_valid_signature() {
        let signed = sign(&event(), &key(2)).unwrap();
        assert!(matches!(
            verify(&bytes(&signed), &key(1).verifying_key()),
            Err(VerifyError::UntrustedKey(_))
        ));
    }

    #[test]
    fn a_forged_public_key_field_does_not_help() {
        let mut signed = sign(&event(), &key(2)).unwrap();
        signed.public_key = hex::encode(key(1).verifying_key().to_bytes());
        assert_eq!(
            verify(&bytes(&signed), &key(1).verifying_key()),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_an_envelope_error() {
        assert!(matches!(
            verify(b"{", &key(1).verifying_key()),
            Err(VerifyError::Envelope(_))
        ));
        let mut signed = sign(&event(), &key(1)).unwrap();
        signed.signature = "zz".into();
        assert_eq!(
            verify(&bytes(&signed), &key(1).verifying_key()),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn the_signature_covers_the_context() {
        // A bare ed25519 signature over the payload alone must not verify.
        let k = key(3);
        let payload = serde_json::to_string(&event()).unwrap();
        let bare = SignedEvent {
            signature: hex::encode(k.sign(payload.as_bytes()).to_bytes()),
            public_key: hex::encode(k.verifying_key().to_bytes()),
            payload,
        };
        assert_eq!(
            verify(&bytes(&bare), &k.verifying_key()),
            Err(VerifyError::BadSignature)
        );
    }

    fn reversal() -> ReversalEvent {
        let e = event();
        ReversalEvent {
            event_version: REVERSAL_EVENT_VERSION,
            event_type: REVERSAL_EVENT_TYPE.into(),
            slash_payload_sha256: payload_sha256(&sign(&e, &key(5)).unwrap().payload),
            slash_id: e.slash_id,
            miner_id: e.miner_id,
            wallet: e.wallet,
            amount: e.amount,
            appeal_id: 3,
            reversed_by: "bob".into(),
            reason: "the reference host was misconfigured".into(),
            reversed_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_ledger_applies_a_reversal_only_of_the_slash_event_it_names_and_no_more() {
        let k = key(5);
        let slash = sign(&event(), &k).unwrap();
        let (applied, sha) = verify_slash(&bytes(&slash), &k.verifying_key()).unwrap();
        assert_eq!(sha, payload_sha256(&slash.payload));
        let ok = reversal();
        assert_eq!(check_reversal(&ok, Some((&applied, &sha))), Ok(()));
        // Its slash not yet seen: hold it.
        assert!(matches!(
            check_reversal(&ok, None),
            Err(ReversalError::UnknownSlash(_))
        ));
        // An inflated amount, in a reversal validly signed (a database row edited
        // before the reversal was signed): refused, whatever the signature.
        let mut more = reversal();
        more.amount.waifu_micro += 1;
        assert!(matches!(
            check_reversal(&more, Some((&applied, &sha))),
            Err(ReversalError::MoreThanTaken { .. })
        ));
        // Another text under the same slash id.
        let mut other = event();
        other.amount.waifu_micro *= 100;
        let other_sha = payload_sha256(&sign(&other, &k).unwrap().payload);
        assert!(matches!(
            check_reversal(&ok, Some((&other, &other_sha))),
            Err(ReversalError::OtherEvent { .. })
        ));
        // Another miner.
        let mut elsewhere = reversal();
        elsewhere.miner_id =
            MinerId::parse("0x00000000000000000000000000000000000000bb-gpu0").unwrap();
        assert!(matches!(
            check_reversal(&elsewhere, Some((&applied, &sha))),
            Err(ReversalError::OtherMiner { .. })
        ));
    }

    #[test]
    fn a_reversal_verifies_as_a_reversal_and_never_as_a_slash() {
        let (slash_key, reversal_key) = (key(4), key(5));
        let keys = LedgerKeys {
            slash: &slash_key.verifying_key(),
            reversal: Some(&reversal_key.verifying_key()),
        };
        let signed = sign_reversal(&reversal(), &reversal_key).unwrap();
        assert_eq!(
            verify_ledger_event(&bytes(&signed), keys),
            Ok(LedgerEvent::Reversed(reversal()))
        );
        // A slash verifier refuses it: its key is not the slash key.
        assert!(matches!(
            verify(&bytes(&signed), &reversal_key.verifying_key()),
            Err(VerifyError::BadSignature)
        ));
        assert!(matches!(
            verify(&bytes(&signed), &slash_key.verifying_key()),
            Err(VerifyError::UntrustedKey(_))
        ));
        // A verifier that takes no reversals refuses it as untrusted.
        let no_reversals = LedgerKeys {
            reversal: None,
            ..keys
        };
        assert!(matches!(
            verify_ledger_event(&bytes(&signed), no_reversals),
            Err(VerifyError::UntrustedKey(_))
        ));
        // And a slash still reads as a slash.
        let slash = sign(&event(), &slash_key).unwrap();
        assert_eq!(
            verify_ledger_event(&bytes(&slash), keys),
            Ok(LedgerEvent::Slash(event()))
        );
        // The reversal key signs no slash the ledger applies: under either context.
        for context in [SIGNING_CONTEXT, REVERSAL_SIGNING_CONTEXT] {
            let payload = serde_json::to_string(&event()).unwrap();
            let forged = sign_in(context, &payload, &reversal_key).unwrap();
            assert!(
                !matches!(
                    verify_ledger_event(&bytes(&forged), keys),
                    Ok(LedgerEvent::Slash(_))
                ),
                "a slash signed with the reversal key"
            );
        }
        // Nor does the slash key sign a reversal the ledger applies.
        let by_slash_key = sign_reversal(&reversal(), &slash_key).unwrap();
        assert!(verify_ledger_event(&bytes(&by_slash_key), keys).is_err());
        // A reversal's payload re-signed under the slash context is not a slash.
        let mut forged = signed.clone();
        forged.signature = sign_in(SIGNING_CONTEXT, &signed.payload, &reversal_key)
            .unwrap()
            .signature;
        assert_eq!(
            verify_ledger_event(&bytes(&forged), keys),
            Err(VerifyError::BadSignature)
        );
        // An edited amount breaks the signature.
        let mut edited = signed;
        edited.payload = edited.payload.replace("12500000", "1250000000");
        assert_eq!(
            verify_ledger_event(&bytes(&edited), keys),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn a_reversal_signer_never_holds_the_slash_key() {
        let k = key(4);
        assert!(ReversalSigner::new(k.clone(), k.verifying_key()).is_err());
        let signer = ReversalSigner::new(key(5), k.verifying_key()).unwrap();
        assert_eq!(signer.slash_key(), &k.verifying_key());
    }

    #[test]
    fn a_version_1_event_is_named_as_such_not_misread() {
        let k = key(1);
        let mut v = serde_json::to_value(event()).unwrap();
        v["event_version"] = 1.into();
        v["amount"] = serde_json::json!({"waifu": 12.5, "llama": 0.0});
        let signed = sign_in(SIGNING_CONTEXT, &v.to_string(), &k).unwrap();
        match verify(&bytes(&signed), &k.verifying_key()) {
            Err(VerifyError::Payload(why)) => assert!(why.contains("event_version 1"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_parse_from_hex() {
        assert!(signing_key_from_hex(&"11".repeat(32)).is_ok());
        assert!(signing_key_from_hex("11").is_err());
        assert!(verifying_key_from_hex(&hex::encode(key(4).verifying_key().to_bytes())).is_ok());
    }
}

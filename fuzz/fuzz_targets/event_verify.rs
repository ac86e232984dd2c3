//! The slash-event verifier, as the ledger runs it on every message of its topic. The
//! first byte picks the input's shape: raw envelope bytes, or a payload that the
//! fuzzer's keys sign as a slash (the slash key) or a reversal (the reversal key), so
//! that the payload parser is reached past the signature. Never a panic; an event
//! accepted under its keys is refused under others, and a slash is never read as a
//! reversal or the reverse.
#![no_main]

use std::sync::LazyLock;

use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use proctor::events::{self, LedgerEvent, REVERSAL_SIGNING_CONTEXT, SIGNING_CONTEXT, SignedEvent};

static KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&[7; 32]));
static OTHER: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&[8; 32]));
static REVERSAL: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&[9; 32]));

fn envelope(context: &[u8], payload: &str, key: &SigningKey) -> Vec<u8> {
    let mut msg = context.to_vec();
    msg.extend_from_slice(payload.as_bytes());
    serde_json::to_vec(&SignedEvent {
        payload: payload.to_owned(),
        signature: hex::encode(key.sign(&msg).to_bytes()),
        public_key: hex::encode(key.verifying_key().to_bytes()),
    })
    .unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let trusted = KEY.verifying_key();
    let (bytes, signed_as) = match shape % 3 {
        0 => (rest.to_vec(), None),
        n => {
            let Ok(payload) = std::str::from_utf8(rest) else {
                return;
            };
            let (context, key) = if n == 1 {
                (SIGNING_CONTEXT, &*KEY)
            } else {
                (REVERSAL_SIGNING_CONTEXT, &*REVERSAL)
            };
            (envelope(context, payload, key), Some(n))
        }
    };
    let slash = events::verify(&bytes, &trusted);
    let reversal_key = REVERSAL.verifying_key();
    let keys = events::LedgerKeys {
        slash: &trusted,
        reversal: Some(&reversal_key),
    };
    let any = events::verify_ledger_event(&bytes, keys);
    match (&any, signed_as) {
        (Ok(LedgerEvent::Slash(_)), s) => assert!(s != Some(2), "a reversal read as a slash"),
        (Ok(LedgerEvent::Reversed(_)), s) => {
            assert!(s != Some(1), "a slash read as a reversal");
            assert!(slash.is_err(), "a reversal passes the slash verifier");
        }
        (Err(_), _) => assert!(slash.is_err()),
    }
    if slash.is_ok() || any.is_ok() {
        let other = OTHER.verifying_key();
        assert!(events::verify(&bytes, &other).is_err());
        let others = events::LedgerKeys {
            slash: &other,
            reversal: Some(&other),
        };
        assert!(events::verify_ledger_event(&bytes, others).is_err());
    }
});

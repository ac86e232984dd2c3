//! `proctor verify-event` (the ledger's rules on a file of signed events) and
//! `proctor public-key`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use proctor::events;

use super::{finding_if, secret};

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// File of envelopes, one JSON object per line; standard input when absent.
    pub file: Option<PathBuf>,
    /// The slash signer's (the judge's) hex ed25519 public key: trusted for
    /// slashes only.
    #[arg(long)]
    pub public_key: String,
    /// The reversal signer's (the review app's) hex ed25519 public key: trusted
    /// for reversals only. Without it, every reversal is refused.
    #[arg(long)]
    pub reversal_public_key: Option<String>,
}

pub fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let VerifyArgs {
        file,
        public_key,
        reversal_public_key,
    } = args;
    let slash_key = events::verifying_key_from_hex(&public_key).map_err(anyhow::Error::msg)?;
    let reversal_key = reversal_public_key
        .as_deref()
        .map(events::verifying_key_from_hex)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if reversal_key == Some(slash_key) {
        bail!("--reversal-public-key is the slash key: each kind of event has a key of its own");
    }
    let trusted = events::LedgerKeys {
        slash: &slash_key,
        reversal: reversal_key.as_ref(),
    };
    let text = match &file {
        Some(f) => std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
        None => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            buf
        }
    };
    // The ledger's rules, in the file's order: each slash once per id, and a
    // reversal only of a slash event seen before it, named by its payload
    // hash, once, for no more than the slash took.
    let (mut ok, mut bad) = (0, 0);
    let mut slashes = std::collections::HashMap::new();
    let mut reversed = std::collections::HashSet::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let verdict = match events::verify_ledger_event(line, trusted) {
            Err(e) => Err(e.to_string()),
            Ok(events::LedgerEvent::Slash(e)) => {
                // Verified just above: only the payload's hash is left to take.
                let signed: events::SignedEvent = serde_json::from_slice(line)?;
                let sha = events::payload_sha256(&signed.payload);
                let said = format!(
                    "slash {} of {} ({} jobs)",
                    e.slash_id,
                    e.miner_id,
                    e.jobs.len()
                );
                match slashes.get(&e.slash_id) {
                    Some((_, seen)) if *seen != sha => {
                        Err(format!("slash {} again with another payload", e.slash_id))
                    }
                    Some(_) => Ok(format!("{said}, a redelivery")),
                    None => {
                        slashes.insert(e.slash_id.clone(), (e, sha));
                        Ok(said)
                    }
                }
            }
            Ok(events::LedgerEvent::Reversed(r)) => {
                let applied = slashes.get(&r.slash_id).map(|(e, sha)| (e, sha.as_str()));
                match events::check_reversal(&r, applied) {
                    Err(e) => Err(format!("reversal: {e}")),
                    Ok(()) if !reversed.insert(r.slash_id.clone()) => {
                        Err(format!("slash {} is reversed twice", r.slash_id))
                    }
                    Ok(()) => Ok(format!("reversal of slash {}", r.slash_id)),
                }
            }
        };
        match verdict {
            Ok(said) => {
                ok += 1;
                println!("line {}: valid: {said}", i + 1);
            }
            Err(e) => {
                bad += 1;
                println!("line {}: INVALID: {e}", i + 1);
            }
        }
    }
    println!("{ok} valid, {bad} invalid");
    if ok + bad == 0 {
        bail!("no events to verify");
    }
    Ok(finding_if(bad > 0))
}

#[derive(clap::Args)]
pub struct PublicKeyArgs {
    /// A file holding the hex ed25519 secret seed (32 bytes)
    /// (`-`: standard input; without it, $PROCTOR_SECRETS__SIGNING_KEY).
    #[arg(long, value_name = "FILE")]
    pub signing_key_file: Option<PathBuf>,
}

pub fn public_key(args: PublicKeyArgs) -> Result<ExitCode> {
    let PublicKeyArgs { signing_key_file } = args;
    let signing_key = secret::require(
        signing_key_file.as_deref(),
        "PROCTOR_SECRETS__SIGNING_KEY",
        "--signing-key-file",
    )?;
    let key = events::signing_key_from_hex(&signing_key).map_err(anyhow::Error::msg)?;
    println!("{}", hex::encode(key.verifying_key().to_bytes()));
    Ok(ExitCode::SUCCESS)
}

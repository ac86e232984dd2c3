//! `proctor hash`: b3sum- and sha256sum-compatible lines.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use proctor::hashing;

use super::exit;

#[derive(clap::Args)]
pub struct Args {
    /// SHA-256 instead of BLAKE3 (the digest the network's model list publishes).
    #[arg(long)]
    pub sha256: bool,
    /// Files to hash; standard input when none.
    pub files: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args { sha256, files } = args;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if files.is_empty() {
        let stdin = std::io::stdin().lock();
        let hex = if sha256 {
            hashing::sha256_reader(stdin)?
        } else {
            hashing::blake3_reader(stdin)?.to_hex().to_string()
        };
        writeln!(out, "{}", hashing::checksum_line(&hex, "-"))?;
    }
    let mut failed = false;
    for f in &files {
        let digest = if sha256 {
            hashing::sha256_file(f)
        } else {
            hashing::blake3_file(f).map(|h| h.to_hex().to_string())
        };
        match digest {
            Ok(hex) => writeln!(
                out,
                "{}",
                hashing::checksum_line(&hex, &f.to_string_lossy())
            )?,
            Err(e) => {
                eprintln!("proctor: {}: {e}", f.display());
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(exit::RUNTIME)
    } else {
        ExitCode::SUCCESS
    })
}

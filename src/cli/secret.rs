//! Secrets the command line needs (the event signing key, the sampling secret, a
//! review token), read from a file, standard input or the environment, never from an
//! argument: arguments show in `ps`, in `/proc/PID/cmdline` to every local user, and
//! in shell history.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The secret in `file` (`-`: standard input), or, without one, in the environment
/// variable `var`; `None` when neither gives one. Surrounding whitespace (a trailing
/// newline) is not part of it. A file that other users may read is used, with a
/// warning on standard error.
pub fn read(file: Option<&Path>, var: &str) -> Result<Option<String>> {
    let text = match file {
        Some(p) if p == Path::new("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the secret from standard input")?;
            s
        }
        Some(p) => {
            warn_if_shared(p);
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the secret in {}", p.display()))?
        }
        None => match std::env::var(var) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("{var} is not UTF-8")),
        },
    };
    let secret = text.trim();
    if secret.is_empty() {
        bail!(
            "the secret from {} is empty",
            file.map_or_else(|| var.to_owned(), |p| p.display().to_string())
        );
    }
    Ok(Some(secret.to_owned()))
}

/// [`read`], where the command cannot go on without it.
pub fn require(file: Option<&Path>, var: &str, flag: &str) -> Result<String> {
    read(file, var)?
        .with_context(|| format!("no secret: give {flag} FILE (- for standard input) or set {var}"))
}

#[cfg(unix)]
fn warn_if_shared(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(p)
        && m.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} is readable by other users (mode {:o}); chmod 600 it",
            p.display(),
            m.permissions().mode() & 0o777
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_: &Path) {}

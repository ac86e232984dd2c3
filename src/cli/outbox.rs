//! `proctor republish`: signed events put back in the outbox by id, for the publisher
//! to send again.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::{finding_if, open, runtime};

#[derive(clap::Args)]
pub struct RepublishArgs {
    /// Event ids: a slash's id, or `<slash id>:reversed` for its reversal.
    #[arg(required = true)]
    pub event_ids: Vec<String>,
    /// A settings file layered over the defaults (for database.url).
    #[arg(long, env = "PROCTOR_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Exit 1 when an id was not put back (unknown, or not published yet).
pub fn republish(args: RepublishArgs) -> Result<ExitCode> {
    let back = runtime()?.block_on(async {
        let (_, store) = open(args.config.as_deref()).await?;
        anyhow::Ok(store.republish(&args.event_ids).await?)
    })?;
    for id in &args.event_ids {
        if back.contains(id) {
            println!("{id}: back in the outbox; the publisher sends it again");
        } else {
            println!("{id}: not put back (no such event, or not published yet)");
        }
    }
    Ok(finding_if(back.len() < args.event_ids.len()))
}

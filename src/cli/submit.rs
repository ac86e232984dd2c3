//! `proctor submit DIR`: an audit folder sent through the running pipeline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// The audit folder (docs/audit-folder.md), such as fixtures/audit-demo.
    pub dir: PathBuf,
    /// Copies of every valid record, each with new job ids and later times.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Leave out reference/ (the reference hosts or the rerun worker's own model
    /// give the references instead).
    #[arg(long)]
    pub no_references: bool,
    /// A settings file layered over the defaults (brokers, buckets, database.url).
    #[arg(long, env = "PROCTOR_CONFIG")]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args {
        dir,
        rounds,
        no_references,
        config,
    } = args;
    let settings = proctor::settings::Settings::load(config.as_deref())?;
    let opts = proctor::submit::SubmitOptions {
        dir,
        rounds,
        references: !no_references,
    };
    let sent = tokio::runtime::Runtime::new()?.block_on(proctor::submit::run(
        &settings,
        &opts,
        &|msg| eprintln!("submit: {msg}"),
    ))?;
    println!(
        "sent {} job records and {} invalid lines; uploaded {} outputs and {} reference outputs; {} wallets",
        sent.records, sent.invalid, sent.objects, sent.references, sent.wallets
    );
    Ok(ExitCode::SUCCESS)
}

//! `proctor settings`: the effective deployment settings, secrets masked.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// A settings file layered over the defaults.
    #[arg(long, env = "PROCTOR_CONFIG")]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args { config } = args;
    let settings = proctor::settings::Settings::load(config.as_deref())?;
    print!("{}", settings.to_toml_masked());
    Ok(ExitCode::SUCCESS)
}

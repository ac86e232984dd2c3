//! The commands of the `proctor` binary, one module each (`main.rs` only parses and
//! dispatches), and what they share: the exit codes, the rules they load, the parser
//! for the library's enums, and secrets read from files ([`secret`]).

pub mod audit;
pub mod calibrate;
pub mod dlq;
pub mod events;
pub mod hash;
pub mod image_diff;
pub mod model;
pub mod outbox;
pub mod review;
pub mod rules;
pub mod secret;
pub mod serve;
pub mod settings;
pub mod submit;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use proctor::rules::Rules;
use proctor::store::Store;

/// Exit codes, one table for every command (README, "Exit codes"). Usage errors (2)
/// are clap's own.
pub mod exit {
    /// A finding: a failed verdict, rejected records, an invalid event, a check that
    /// does not hold.
    pub const FINDING: u8 = 1;
    /// The command could not do its work: unreadable input, invalid settings or rules,
    /// a service that does not answer.
    pub const RUNTIME: u8 = 3;
}

/// The single-threaded runtime a command's database work runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The settings and the database of a command that talks to Postgres, migrated.
pub async fn open(config: Option<&Path>) -> Result<(proctor::settings::Settings, Store)> {
    let settings = proctor::settings::Settings::load(config)?;
    let store = Store::open(settings.database.url.expose(), 2).await?;
    Ok((settings, store))
}

/// Exit 1 when the command found something, else 0.
pub fn finding_if(found: bool) -> ExitCode {
    if found {
        ExitCode::from(exit::FINDING)
    } else {
        ExitCode::SUCCESS
    }
}

/// The rules in `dir`, or the ones compiled into this binary.
pub fn load_rules(dir: Option<&Path>) -> Result<Rules> {
    Ok(match dir {
        Some(d) => Rules::load_dir(d)?,
        None => Rules::embedded()?,
    })
}

/// A command-line parser for a library enum, by its `as_str` names: the library's core
/// types carry no clap derive (tests/layering.rs), so the command line names them here.
/// `--help` lists the names as clap's own enums would.
pub fn one_of<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser as _;
    let names: Vec<&'static str> = all.iter().map(|v| name(*v)).collect();
    clap::builder::PossibleValuesParser::new(names).map(move |s| {
        *all.iter()
            .find(|v| name(**v) == s)
            .expect("clap passes only a possible value")
    })
}

//! A worker process's start-up: arguments, logging, signals, the context, the run.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Context, Shutdown, judge, publish, rerun, screen};
use crate::rules::Rules;
use crate::settings::Settings;

/// Command-line arguments every worker takes.
#[derive(Debug, clap::Parser)]
pub struct WorkerArgs {
    /// A settings file layered over the defaults (config/default.toml).
    #[arg(long, env = "PROCTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// A rules folder instead of the rules compiled in.
    #[arg(long, env = "PROCTOR_RULES")]
    pub rules: Option<PathBuf>,
}

/// The body of every worker binary: logs, settings, rules, signals, then `work`.
pub async fn main<F, Fut>(worker: &'static str, work: F) -> std::process::ExitCode
where
    F: FnOnce(Arc<Context>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use clap::Parser;
    crate::telemetry::init_logging();
    let args = WorkerArgs::parse();
    let result = async {
        let settings = Settings::load(args.config.as_deref())?;
        let rules = match &args.rules {
            Some(dir) => Rules::load_dir(dir)?,
            None => Rules::embedded()?,
        };
        tracing::info!(worker, rules = &rules.digest()?[..16], "starting");
        let ctx = Context::start(worker, settings, rules, Shutdown::on_signals()).await?;
        let outcome = work(ctx.clone()).await;
        ctx.health.stopping();
        outcome
    }
    .await;
    match result {
        Ok(()) => {
            tracing::info!(worker, "stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(worker, error = format!("{e:#}"), "failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the named worker on the runtime (tests run several in one process).
pub fn spawn(name: &str, ctx: Arc<Context>) -> Option<tokio::task::JoinHandle<anyhow::Result<()>>> {
    Some(match name {
        "screen" => tokio::spawn(screen::run(ctx)),
        "rerun" => tokio::spawn(rerun::run(ctx)),
        "judge" => tokio::spawn(judge::run(ctx)),
        "publish" => tokio::spawn(publish::run(ctx)),
        _ => return None,
    })
}

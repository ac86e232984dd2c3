//! A worker process's start-up: arguments, logging, signals, the context, the run.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Context, Shutdown, judge, publish, rerun, screen};
use crate::rules::Rules;
use crate::settings::Settings;

// The arguments every worker takes (each binary gives its own name and about).
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
    use clap::FromArgMatches;
    let matches = command(worker).get_matches();
    let args = match WorkerArgs::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    crate::telemetry::init_logging();
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
        // Asked to stop before it had started: a clean stop.
        Err(e) if e.is::<super::Stopped>() => {
            tracing::info!(worker, "stopped while starting");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(worker, error = crate::telemetry::error_chain(&e), "failed");
            // The runtime-error code of `proctor`'s exit-code table.
            std::process::ExitCode::from(3)
        }
    }
}

/// The worker's binary name.
fn binary(worker: &str) -> &'static str {
    match worker {
        "screen" => "proctor-screen",
        "rerun" => "proctor-rerun",
        "judge" => "proctor-judge",
        "publish" => "proctor-publish",
        _ => "proctor-worker",
    }
}

/// What each worker does, for its `--help`.
fn about(worker: &str) -> &'static str {
    match worker {
        "screen" => {
            "Consumes proctor.jobs, runs the checks that need no reference run, records verdicts and requests re-runs of sampled jobs"
        }
        "rerun" => {
            "Consumes proctor.rerun, compares each sampled job with its reference run and records the re-run verdict"
        }
        "judge" => {
            "Decides on every miner whose evidence changed: a slash with its signed outbox event, or a review flag"
        }
        "publish" => "Drains the outbox of signed slash events to the ledger topic",
        _ => "A proctor worker",
    }
}

/// The command line of `proctor-<worker>`: its name, version and about, and the
/// arguments every worker takes.
pub fn command(worker: &'static str) -> clap::Command {
    use clap::CommandFactory;
    WorkerArgs::command()
        .name(binary(worker))
        .version(env!("CARGO_PKG_VERSION"))
        .about(about(worker))
        .after_help(
            "Settings: config/default.toml, then --config, then PROCTOR_<SECTION>__<KEY> variables (`proctor settings` prints them). Logs: PROCTOR_LOG, PROCTOR_LOG_FORMAT (docs/OPERATIONS.md). Exit codes: 0 stopped cleanly, 2 usage, 3 runtime error.",
        )
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_worker_has_a_version_an_about_and_help_for_each_option() {
        for worker in ["screen", "rerun", "judge", "publish"] {
            let mut cmd = super::command(worker);
            cmd.build();
            assert_eq!(cmd.get_version(), Some(env!("CARGO_PKG_VERSION")));
            assert_ne!(super::about(worker), "A proctor worker", "{worker}");
            for a in cmd.get_arguments() {
                assert!(
                    a.get_help().is_some(),
                    "proctor-{worker} --{} has no help",
                    a.get_id()
                );
            }
        }
    }
}

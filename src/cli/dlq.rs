//! `proctor dlq list` and `proctor dlq replay`: the dead-letter topic.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Which dead letters a `dlq` command acts on.
#[derive(clap::Args)]
pub struct DlqFilter {
    /// Only letters with this reason (invalid_record, object_missing, ...).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only the letter of this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Only letters after this offset of the dead-letter topic (the last offset an
    /// earlier replay printed).
    #[arg(long)]
    pub after_offset: Option<i64>,
    /// Stop reading once no letter arrived for this many seconds.
    #[arg(long, default_value_t = 5)]
    pub idle_secs: u64,
}

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// Print the letters: where each came from, why, and its job and miner.
    List {
        #[command(flatten)]
        filter: DlqFilter,
        /// One JSON object per letter instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send the chosen letters back to their original topic with their original key.
    Replay {
        #[command(flatten)]
        filter: DlqFilter,
        /// Print what would be sent, and send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DlqCommand,
    /// A settings file layered over the defaults (brokers, kafka.dlq_topic).
    #[arg(long, env = "PROCTOR_CONFIG")]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args { command, config } = args;
    let settings = proctor::settings::Settings::load(config.as_deref())?;
    let k = &settings.kafka;
    let rt = tokio::runtime::Runtime::new()?;
    let read = |f: &DlqFilter| -> Result<(Vec<proctor::dlq::Letter>, proctor::dlq::Filter)> {
        let letters = rt.block_on(proctor::dlq::read(
            k,
            std::time::Duration::from_secs(f.idle_secs),
        ))?;
        let filter = proctor::dlq::Filter {
            reason: f.reason.clone(),
            job_id: f.job.clone(),
            after_offset: f.after_offset,
        };
        Ok((letters, filter))
    };
    match command {
        DlqCommand::List { filter, json } => {
            let (letters, filter) = read(&filter)?;
            let chosen: Vec<_> = letters.iter().filter(|l| filter.admits(l)).collect();
            if json {
                for l in &chosen {
                    println!("{}", serde_json::to_string(l)?);
                }
            } else {
                println!(
                    "{:>9}  {:<18} {:<28} {:<28} error",
                    "letter", "reason", "job", "miner"
                );
                for l in &chosen {
                    let clip = |s: &str, n: usize| s.chars().take(n).collect::<String>();
                    println!(
                        "{:>9}  {:<18} {:<28} {:<28} {}",
                        format!("{}:{}", l.partition, l.offset),
                        clip(&l.reason, 18),
                        clip(l.job_id.as_deref().unwrap_or("-"), 28),
                        clip(l.miner_id.as_deref().unwrap_or("-"), 28),
                        clip(&l.error, 80)
                    );
                }
                println!(
                    "{} of {} letters in {}",
                    chosen.len(),
                    letters.len(),
                    k.dlq_topic
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay { filter, dry_run } => {
            let (letters, filter) = read(&filter)?;
            let chosen: Vec<_> = letters.iter().filter(|l| filter.admits(l)).collect();
            for l in &chosen {
                println!(
                    "{} {}:{} ({}, job {}) to {}",
                    if dry_run { "would replay" } else { "replaying" },
                    l.partition,
                    l.offset,
                    l.reason,
                    l.job_id.as_deref().unwrap_or("-"),
                    l.original_topic
                );
            }
            if !dry_run {
                rt.block_on(proctor::dlq::replay(k, &chosen))?;
            }
            let last = chosen.iter().map(|l| l.offset).max();
            println!(
                "{} {} letters{}",
                if dry_run { "would replay" } else { "replayed" },
                chosen.len(),
                last.map_or(String::new(), |o| format!(
                    "; the last offset was {o} (--after-offset {o} next time)"
                ))
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

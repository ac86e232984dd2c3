//! The `proctor` command line: it parses the arguments and hands each command to its
//! module under `src/cli/`, which does the work over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "proctor",
    version,
    about = "Anti-cheat verification for the Heurist GPU network",
    after_help = "Exit codes: 0 ok, 1 a finding (a failed verdict, rejected records, an invalid event), 2 usage, 3 runtime error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process: `calibrate`'s options cost nothing worth boxing"
)]
enum Command {
    /// Judge a folder of job records and stored objects offline, with no services.
    Audit(cli::audit::Args),
    /// Compare a candidate image with a reference image under the rules; prints JSON.
    ImageDiff(cli::image_diff::Args),
    /// Print b3sum-compatible lines (or sha256sum-compatible ones with --sha256).
    Hash(cli::hash::Args),
    /// Verify signed ledger events (one envelope per line, in the order the ledger
    /// applies them) against the trusted public keys, each for its own kind: each
    /// signature, and for a reversal the ledger's rule, that it names a slash event
    /// seen before it by its payload hash, once, and gives back no more than the slash
    /// took.
    VerifyEvent(cli::events::VerifyArgs),
    /// Print the hex ed25519 public key for a signing key (to publish to the ledger
    /// team): the slash key, the reversal key or the audit checkpoint key.
    PublicKey(cli::events::PublicKeyArgs),
    /// Print the effective deployment settings as TOML (secrets shown only as set or
    /// empty, the database password masked).
    Settings(cli::settings::Args),
    /// Staff accounts and API tokens of the review app.
    Staff {
        #[command(subcommand)]
        command: cli::review::StaffCommand,
        /// A settings file layered over the defaults (for database.url).
        #[arg(long, env = "PROCTOR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Review flagged miners and slashes: the queue, a case, and decisions.
    Review {
        #[command(subcommand)]
        command: cli::review::ReviewCommand,
        /// A settings file layered over the defaults (database.url, secrets.signing_key).
        #[arg(long, env = "PROCTOR_CONFIG")]
        config: Option<PathBuf>,
        /// A file holding a staff API token (`proctor staff token`): who acts (`-`:
        /// standard input; without it, $PROCTOR_REVIEW_TOKEN).
        #[arg(long, value_name = "FILE", global = true)]
        token_file: Option<PathBuf>,
    },
    /// The staff audit log: verify its hash chain, or export it.
    AuditLog {
        #[command(subcommand)]
        command: cli::review::AuditLogCommand,
        /// A settings file layered over the defaults (for database.url).
        #[arg(long, env = "PROCTOR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Send an audit folder through the running pipeline, as the network's services
    /// would: outputs and reference outputs to S3, wallets to Postgres, job records to
    /// the jobs topic. `--rounds` sends copies with new job ids: a demo population.
    Submit(cli::submit::Args),
    /// The dead-letter topic: list its letters, or send some back to their topic.
    Dlq(cli::dlq::Args),
    /// Put published slash and reversal events back in the outbox, by id, for the
    /// publisher to send again (events the broker acknowledged and then lost).
    Republish(cli::outbox::RepublishArgs),
    /// Rules maintenance.
    Rules(cli::rules::Args),
    /// Answer a model-file byte-range challenge from a local file; prints JSON.
    Challenge(cli::model::ChallengeArgs),
    /// Serve a model folder as an OpenAI-compatible /v1/completions endpoint (scoring
    /// with prompt_logprobs, and generation), for a reference host.
    ServeReference(cli::serve::Args),
    /// Calibrate check thresholds on labelled honest and cheating pairs: prints the
    /// detection table, writes calibration.json, detection.md and roc.png, and with
    /// --write-rules updates checks.toml (docs/DETECTION.md).
    Calibrate(cli::calibrate::Args),
    /// Write the model folder the scorer loads (config.json, model.safetensors,
    /// tokenizer.json, tokenizer_config.json) from a llama.cpp GGUF llama model,
    /// dequantized to f32.
    ConvertGguf(cli::model::ConvertGgufArgs),
    /// Write a model derived from a reference model folder: what a cheater would serve
    /// instead (docs/DETECTION.md). Exactly one of --drop-layers, --quantize, --perturb.
    DeriveModel(cli::model::DeriveModelArgs),
    /// Verify model files against the registry's size, SHA-256 and BLAKE3.
    VerifyModel(cli::model::VerifyModelArgs),
}

fn main() -> ExitCode {
    // clap exits 2 on a usage error, 0 after --help and --version.
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("proctor: {}", proctor::telemetry::error_chain(&e));
            ExitCode::from(cli::exit::RUNTIME)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Audit(args) => cli::audit::run(args),
        Command::ImageDiff(args) => cli::image_diff::run(args),
        Command::Hash(args) => cli::hash::run(args),
        Command::VerifyEvent(args) => cli::events::verify(args),
        Command::PublicKey(args) => cli::events::public_key(args),
        Command::Settings(args) => cli::settings::run(args),
        Command::Staff { command, config } => cli::review::staff(command, config.as_deref()),
        Command::Review {
            command,
            config,
            token_file,
        } => cli::review::review(command, config.as_deref(), token_file.as_deref()),
        Command::AuditLog { command, config } => cli::review::audit_log(command, config.as_deref()),
        Command::Submit(args) => cli::submit::run(args),
        Command::Dlq(args) => cli::dlq::run(args),
        Command::Republish(args) => cli::outbox::republish(args),
        Command::Rules(args) => cli::rules::run(args),
        Command::Challenge(args) => cli::model::challenge(args),
        Command::ServeReference(args) => cli::serve::run(args),
        Command::Calibrate(args) => cli::calibrate::run(args),
        Command::ConvertGguf(args) => cli::model::convert_gguf(args),
        Command::DeriveModel(args) => cli::model::derive_model(args),
        Command::VerifyModel(args) => cli::model::verify_model(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand has an about and every argument a help line.
    #[test]
    fn every_command_and_option_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(format!("{path} (about)"));
                }
                walk(sub, &path, missing);
            }
        }
        let mut cmd = super::Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "proctor", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }
}

//! `proctor audit DIR`: the offline judgement of a folder, with no services.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use proctor::case::Reruns;
use proctor::checks::Verdict;
use proctor::sampling::SamplingSecret;
use proctor::{audit, events};

use super::{finding_if, load_rules, one_of, secret};

#[derive(clap::Args)]
pub struct Args {
    /// Folder holding jobs.jsonl, objects/ and reference/.
    pub dir: PathBuf,
    /// Rules folder; the rules compiled into this binary by default.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Where to write verdicts.jsonl, decisions.jsonl, slashes.jsonl, report.html and report/ (the review app's pages, read-only).
    #[arg(long, default_value = "audit-out")]
    pub out: PathBuf,
    /// A file holding the hex ed25519 secret seed (`-`: standard input; without
    /// it, $PROCTOR_SECRETS__SIGNING_KEY); when there is one, also writes signed
    /// slash events to events.jsonl. Never the key itself as an argument.
    #[arg(long, value_name = "FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// A file holding the secret of the re-run draw (`-`: standard input; without
    /// it, $PROCTOR_SECRETS__SAMPLING_SECRET, else the demo's
    /// `proctor-audit-default`).
    #[arg(long, value_name = "FILE")]
    pub sampling_secret_file: Option<PathBuf>,
    /// Which reference outputs count: `present`, every one in the folder (an export
    /// of the jobs that were re-run), or `drawn`, only those of the jobs the
    /// sampling secret draws at the rules' rates, as the pipeline counts them.
    #[arg(long, value_parser = one_of(&Reruns::ALL, Reruns::as_str), default_value = "present")]
    pub reruns: Reruns,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args {
        dir,
        rules,
        out,
        signing_key_file,
        sampling_secret_file,
        reruns,
    } = args;
    let rules = load_rules(rules.as_deref())?;
    let signing_key = secret::read(signing_key_file.as_deref(), "PROCTOR_SECRETS__SIGNING_KEY")?
        .map(|k| events::signing_key_from_hex(&k))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let sampling_secret = secret::read(
        sampling_secret_file.as_deref(),
        "PROCTOR_SECRETS__SAMPLING_SECRET",
    )?
    .unwrap_or_else(|| "proctor-audit-default".to_owned());
    let opts = audit::AuditOptions {
        dir,
        out: out.clone(),
        sampling_secret: SamplingSecret::from_passphrase(&sampling_secret),
        reruns,
        signing_key,
        progress: true,
        report_jobs_per_miner: audit::REPORT_JOBS_PER_MINER,
    };
    let result = audit::run(&opts, rules)?;
    if result.jobs() == 0 && result.rejected.is_empty() {
        bail!(
            "{} holds no job records: nothing to judge",
            opts.dir.join("jobs.jsonl").display()
        );
    }
    print!("{}", audit::summary(&result));
    let events = if opts.signing_key.is_some() {
        ", events.jsonl"
    } else {
        ""
    };
    println!(
        "\nwrote to {}: verdicts.jsonl, decisions.jsonl, slashes.jsonl, rejected.jsonl{events},\nreport.html (open it in a browser) and report/",
        out.display()
    );
    // Exit 1 when there is anything for staff to look at: a failed or invalid
    // verdict, a rejected record, a slash or a flag.
    let found = !result.rejected.is_empty()
        || result.count(Verdict::Fail) + result.count(Verdict::Invalid) > 0
        || result
            .decisions
            .iter()
            .any(|d| d.action != proctor::decide::Action::None);
    Ok(finding_if(found))
}

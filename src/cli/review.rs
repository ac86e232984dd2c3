//! `proctor staff`, `proctor review` and `proctor audit-log`: staff review from the
//! command line, over the same store functions as the review app.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use proctor::review::CaseRow;
use proctor::review::trail;
use proctor::review::{Actor, CaseStatus, Role, StaffAction, Via};
use proctor::settings::Settings;
use proctor::store::Store;
use proctor::store::review::{AuditSnapshot, CaseDetail, CaseFilter, OPERATOR};

#[derive(Subcommand)]
pub enum StaffCommand {
    /// Create an account. The password is read from the first line of standard input;
    /// there is no default password.
    Add {
        /// Lower-case letters, digits, '.', '_' and '-'.
        username: String,
        /// `reviewer` decides cases; `admin` also manages accounts and tokens.
        #[arg(long, value_parser = super::one_of(&Role::ALL, Role::as_str))]
        role: Role,
    },
    /// Disable an account and revoke its API tokens.
    Disable {
        /// The account to disable.
        username: String,
    },
    /// Issue an API token for the JSON API and `proctor review`; printed once.
    Token {
        /// The account the token acts as.
        username: String,
        /// What the token is for, shown in the audit log.
        #[arg(long, default_value = "")]
        label: String,
        /// How many days the token lives (at most 365).
        #[arg(long, default_value_t = proctor::store::review::DEFAULT_TOKEN_DAYS)]
        days: u32,
    },
    /// Revoke one API token, by the id `staff token` and `staff tokens` print.
    RevokeToken {
        /// The token's id: the part of the token between `proctor_` and the next `_`.
        token_id: String,
    },
    /// List the live (unrevoked, unexpired) API tokens: id, holder, label, expiry.
    Tokens {
        /// Only this account's.
        username: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ReviewCommand {
    /// Serve the review app (the same as the proctor-review worker).
    Serve {
        #[command(flatten)]
        args: proctor::web::ServeArgs,
    },
    /// The review queue: strongest evidence first, then the most points at stake.
    List {
        /// Only cases in this state.
        #[arg(long, value_parser = super::one_of(&CaseStatus::ALL, CaseStatus::as_str))]
        status: Option<CaseStatus>,
        /// A check that failed in the case's decision, e.g. image_similarity.
        #[arg(long)]
        check: Option<String>,
        /// A model id the miner ran jobs of.
        #[arg(long)]
        model: Option<String>,
        /// Part of a GPU name the miner reported.
        #[arg(long)]
        gpu: Option<String>,
        /// Part of a miner id (a wallet address finds all its GPUs).
        #[arg(long)]
        miner: Option<String>,
        /// Cases per page.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Cases to skip: the page's start.
        #[arg(long, default_value_t = 0)]
        offset: i64,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One case: its decision, tallies, evidence, actions and appeals.
    Show {
        /// The case's number, as `review list` shows it.
        case_id: i64,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Act on a case as the token's staff member.
    Decide {
        /// The case's number.
        case_id: i64,
        /// What to do: confirm or dismiss a flag; note; appeal a slash; uphold or
        /// reverse an appeal.
        #[arg(value_parser = super::one_of(&StaffAction::ALL, StaffAction::as_str))]
        action: StaffAction,
        /// Required to dismiss, note, appeal, uphold and reverse.
        #[arg(long, default_value = "")]
        reason: String,
        /// Rules folder; the rules compiled into this binary by default.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// The case after the action as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AuditLogCommand {
    /// Recompute the hash chain, from the database or from an export. From the
    /// database, also check that every case action, appeal and reversal is in the log
    /// once, and every case entry has its row.
    Verify {
        /// An export (`proctor audit-log export`) to check instead of the database.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The head hash recorded earlier: also detects entries deleted from the end.
        #[arg(long)]
        head: Option<String>,
        /// Checkpoints (`proctor audit-log checkpoint`, one JSON object per line): each
        /// must verify under `--public-key` and match the log at its position.
        #[arg(long, value_name = "FILE", requires = "public_key")]
        checkpoint: Option<PathBuf>,
        /// The checkpoint key's hex ed25519 public key (`proctor audit-log checkpoint`
        /// prints it to standard error).
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
    },
    /// Read every checkpoint the publisher sent to `kafka.audit_topic` into a file, one
    /// JSON object per line, for `verify --checkpoint`.
    Checkpoints {
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify the log, sign its head with the checkpoint key and append the checkpoint,
    /// one JSON line, to a file kept outside the database (and print it). Run it
    /// periodically from a host that holds the key and not the database's.
    Checkpoint {
        /// A file holding the checkpoint key's hex ed25519 seed (`-`: standard input;
        /// without it, $PROCTOR_SECRETS__AUDIT_CHECKPOINT_KEY). Never the slash key.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Append the checkpoint to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write the log as JSON lines, and print its head hash.
    Export {
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

use super::{open, runtime};

pub fn staff(command: StaffCommand, config: Option<&Path>) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let (_, store) = open(config).await?;
        match command {
            StaffCommand::Add { username, role } => {
                let mut password = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut password)
                    .context("cannot read the password from standard input")?;
                let password = password.trim_end_matches(['\r', '\n']);
                store.add_staff(OPERATOR, &username, role, password).await?;
                println!("added {} {username}", role.as_str());
            }
            StaffCommand::Disable { username } => {
                store.disable_staff(OPERATOR, &username).await?;
                println!("disabled {username} and revoked its tokens");
            }
            StaffCommand::Token {
                username,
                label,
                days,
            } => {
                let t = store
                    .create_token(OPERATOR, &username, &label, days)
                    .await?;
                eprintln!(
                    "token {} for {username}, valid {days} days; it is shown only now:",
                    t.token_id
                );
                println!("{}", t.token);
            }
            StaffCommand::RevokeToken { token_id } => {
                store.revoke_token(OPERATOR, &token_id, true).await?;
                println!("revoked token {token_id}");
            }
            StaffCommand::Tokens { username } => {
                for t in store.live_tokens(username.as_deref()).await? {
                    println!(
                        "{}  {:<16} expires {}  {}",
                        t.token_id,
                        t.username,
                        t.expires_at.format("%Y-%m-%d %H:%M"),
                        t.label
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn actor(store: &Store, token: Option<&str>) -> Result<Actor> {
    let Some(token) = token else {
        bail!(
            "give --token-file FILE (- for standard input) or set PROCTOR_REVIEW_TOKEN: a token from `proctor staff token`"
        );
    };
    let mut actor = store
        .authenticate_token(token)
        .await?
        .context("the review token is not valid, or its account is disabled")?;
    // The same token, but through the command line, not the API.
    if let Via::Api { token_id } = actor.via {
        actor.via = Via::Cli {
            token_id: Some(token_id),
        };
    }
    Ok(actor)
}

fn short(p: f64) -> String {
    if p >= 0.01 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

fn case_line(c: &CaseRow) -> String {
    let checks: Vec<&str> = c
        .decision
        .tallies
        .iter()
        .map(|t| t.check.as_str())
        .collect();
    format!(
        "{:>6}  {:<10} {:<48} {:>8} {:>10.2} {:>10.2}  {}",
        c.case_id,
        c.status.as_str(),
        c.miner_id,
        short(c.evidence_probability),
        c.at_stake.points().waifu,
        c.at_stake.points().llama,
        checks.join(",")
    )
}

fn print_detail(d: &CaseDetail) {
    let c = &d.case;
    println!(
        "case {} · {} · {}",
        c.case_id,
        c.status.as_str(),
        c.miner_id
    );
    println!(
        "opened by {} at {}, updated {}",
        c.opened_by, c.opened_at, c.updated_at
    );
    if let Some(s) = &c.slash_id {
        println!("slash {s}");
    }
    println!(
        "evidence strength (honest probability) {}; at stake {:.2} waifu, {:.2} llama",
        short(c.evidence_probability),
        c.at_stake.points().waifu,
        c.at_stake.points().llama
    );
    println!(
        "\n{:<22} {:>7} {:>7} {:>10} {:>10} {:>10}  can slash",
        "check", "judged", "failed", "rate", "honest p", "at margin"
    );
    for t in &c.decision.tallies {
        println!(
            "{:<22} {:>7} {:>7} {:>10.1e} {:>10} {:>10}  {}",
            t.check.as_str(),
            t.judged,
            t.failed,
            t.false_positive_rate,
            short(t.honest_probability),
            short(t.slash_tail()),
            match (t.can_slash, t.in_scope) {
                (true, _) => "yes",
                (false, false) => "no (rate measured on other models)",
                (false, true) => "no",
            }
        );
    }
    println!("\nevidence:");
    for e in &c.decision.evidence {
        println!("  {} {}: {}", e.job_id, e.check.as_str(), e.summary);
    }
    if !d.actions.is_empty() {
        println!("\nactions:");
        for a in &d.actions {
            println!("  {} {} {}: {}", a.at, a.username, a.action, a.reason);
        }
    }
    for a in &d.appeals {
        println!(
            "\nappeal {} filed by {} at {}: {}",
            a.appeal_id, a.filed_by, a.filed_at, a.statement
        );
        if let (Some(by), Some(outcome)) = (&a.decided_by, &a.outcome) {
            println!(
                "  {outcome} by {by}: {}",
                a.reason.as_deref().unwrap_or_default()
            );
        }
    }
}

pub fn review(
    command: ReviewCommand,
    config: Option<&Path>,
    token_file: Option<&Path>,
) -> Result<ExitCode> {
    let token = super::secret::read(token_file, "PROCTOR_REVIEW_TOKEN")?;
    let token = token.as_deref();
    if let ReviewCommand::Serve { mut args } = command {
        proctor::telemetry::init_logging();
        args.config = args.config.or(config.map(Path::to_path_buf));
        return tokio::runtime::Runtime::new()?.block_on(async {
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            proctor::web::run(&args, stop).await?;
            Ok(ExitCode::SUCCESS)
        });
    }
    runtime()?.block_on(async {
        let (settings, store) = open(config).await?;
        let actor = actor(&store, token).await?;
        match command {
            // Served above, before connecting.
            ReviewCommand::Serve { .. } => {}
            ReviewCommand::List {
                status,
                check,
                model,
                gpu,
                miner,
                limit,
                offset,
                json,
            } => {
                let page = store
                    .cases(&CaseFilter {
                        status,
                        check,
                        model,
                        gpu,
                        miner,
                        since: None,
                        until: None,
                        limit,
                        offset,
                    })
                    .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&page)?);
                } else {
                    println!(
                        "{:>6}  {:<10} {:<48} {:>8} {:>10} {:>10}  checks",
                        "case", "status", "miner", "honest p", "waifu", "llama"
                    );
                    for c in &page.cases {
                        println!("{}", case_line(c));
                    }
                    println!(
                        "{} of {} cases (offset {offset})",
                        page.cases.len(),
                        page.total
                    );
                }
            }
            ReviewCommand::Show { case_id, json } => {
                let d = store
                    .case(case_id)
                    .await?
                    .with_context(|| format!("no case {case_id}"))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&d)?);
                } else {
                    print_detail(&d);
                }
            }
            ReviewCommand::Decide {
                case_id,
                action,
                reason,
                rules,
                json,
            } => {
                let rules = super::load_rules(rules.as_deref())?;
                // A reversal is signed with the reversal key; nothing here signs a slash.
                let reversals = settings.reversal_signer()?;
                let request = proctor::review::workflow::Request {
                    action,
                    actor: &actor,
                    reason: &reason,
                    rules: &rules,
                    reversals: reversals.as_ref(),
                };
                let d = store
                    .act(&actor, case_id, request.reads(), |facts| {
                        request.decide(facts)
                    })
                    .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&d)?);
                } else {
                    println!(
                        "case {case_id}: {} by {}: now {}",
                        action.as_str(),
                        actor.username,
                        d.case.status.as_str()
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// One JSON object per line (blank lines skipped): an export, or checkpoints.
fn read_json_lines<T: serde::de::DeserializeOwned>(file: &Path) -> Result<Vec<T>> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if !line.trim().is_empty() {
            out.push(
                serde_json::from_str(&line)
                    .with_context(|| format!("{} line {}", file.display(), i + 1))?,
            );
        }
    }
    Ok(out)
}

/// The checkpoints of a JSON-lines file, and the key they verify under.
fn read_checkpoints(file: &Path, public_key: &str) -> Result<Checkpoints> {
    let key = proctor::events::verifying_key_from_hex(public_key)
        .map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
    let list = read_json_lines(file)?;
    if list.is_empty() {
        bail!("{} holds no checkpoint", file.display());
    }
    Ok(Checkpoints { list, key })
}

struct Checkpoints {
    list: Vec<trail::Checkpoint>,
    key: ed25519_dalek::VerifyingKey,
}

/// Verifies the chain, then what else was given: the head recorded earlier, the
/// checkpoints, the staff tables (`trail::cross_check`). Prints the verdict; every
/// finding is one `audit log BROKEN:` line.
fn check(
    entries: Vec<trail::Entry>,
    head: Option<&str>,
    checkpoints: Option<&Checkpoints>,
    tables: Option<&AuditSnapshot>,
) -> ExitCode {
    let mut broken: Vec<String> = Vec::new();
    let mut held = String::new();
    match trail::verify(&entries) {
        Err(b) => broken.push(b.to_string()),
        Ok(h) => {
            if let Some(want) = head
                && !h.hash.eq_ignore_ascii_case(want.trim())
            {
                broken.push(format!(
                    "{} entries verify, but the head is {}, not {}: entries were deleted from the end or added",
                    h.entries,
                    h.hash,
                    want.trim()
                ));
            }
            if let Some(c) = checkpoints {
                match trail::check_checkpoints(&entries, &c.list, &c.key) {
                    Ok(n) => held.push_str(&format!("; {n} checkpoints hold")),
                    Err(b) => broken.push(b.to_string()),
                }
            }
            if let Some(t) = tables {
                let found = trail::cross_check(&entries, &t.actions, &t.appeals, &t.reversals);
                if found.is_empty() {
                    held.push_str(&format!(
                        "; {} case actions, {} appeals and {} reversals match it",
                        t.actions.len(),
                        t.appeals.len(),
                        t.reversals.len()
                    ));
                }
                broken.extend(found);
            }
            if broken.is_empty() {
                println!(
                    "audit log valid: {} entries, head {}{held}",
                    h.entries, h.hash
                );
                return ExitCode::SUCCESS;
            }
        }
    }
    for b in &broken {
        println!("audit log BROKEN: {b}");
    }
    ExitCode::FAILURE
}

pub fn audit_log(command: AuditLogCommand, config: Option<&Path>) -> Result<ExitCode> {
    match command {
        AuditLogCommand::Verify {
            file,
            head,
            checkpoint,
            public_key,
        } => {
            let checkpoints = match (&checkpoint, &public_key) {
                (Some(f), Some(k)) => Some(read_checkpoints(f, k)?),
                _ => None,
            };
            let Some(file) = file else {
                return runtime()?.block_on(async {
                    let (_, store) = open(config).await?;
                    let mut snapshot = store.audit_snapshot().await?;
                    let log = std::mem::take(&mut snapshot.log);
                    Ok(check(
                        log,
                        head.as_deref(),
                        checkpoints.as_ref(),
                        Some(&snapshot),
                    ))
                });
            };
            Ok(check(
                read_json_lines(&file)?,
                head.as_deref(),
                checkpoints.as_ref(),
                None,
            ))
        }
        AuditLogCommand::Checkpoints { out } => {
            let settings = Settings::load(config)?;
            let k = &settings.kafka;
            let messages = runtime()?.block_on(proctor::kafka::read_topic(
                k,
                &k.audit_topic,
                "audit-reader",
                std::time::Duration::from_secs(5),
            ))?;
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(&out)
                    .with_context(|| format!("cannot create {}", out.display()))?,
            );
            let (mut written, mut foreign) = (0, 0);
            for m in &messages {
                use rdkafka::Message as _;
                let payload = m.payload().unwrap_or_default();
                // Only checkpoints go to the file: anything else on the topic was not
                // written by a publisher, and is said, not copied.
                match serde_json::from_slice::<trail::Checkpoint>(payload) {
                    Ok(c) => {
                        serde_json::to_writer(&mut w, &c)?;
                        w.write_all(b"\n")?;
                        written += 1;
                    }
                    Err(e) => {
                        foreign += 1;
                        eprintln!(
                            "{}:{}:{} is not a checkpoint: {e}",
                            k.audit_topic,
                            m.partition(),
                            m.offset()
                        );
                    }
                }
            }
            w.flush()?;
            eprintln!("wrote {written} checkpoints to {}", out.display());
            Ok(if foreign > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        AuditLogCommand::Checkpoint { key_file, out } => {
            let seed = super::secret::require(
                key_file.as_deref(),
                "PROCTOR_SECRETS__AUDIT_CHECKPOINT_KEY",
                "--key-file",
            )?;
            let key = proctor::events::signing_key_from_hex(&seed).map_err(anyhow::Error::msg)?;
            runtime()?.block_on(async {
                let (settings, store) = open(config).await?;
                if settings.secrets.is_signing_key(&key) {
                    bail!(
                        "the checkpoint key is the slash signing key: use a key of its own, held apart from the database"
                    );
                }
                let head = match trail::verify(&store.audit_log().await?) {
                    Ok(h) => h,
                    Err(b) => {
                        println!("audit log BROKEN, no checkpoint signed: {b}");
                        return Ok(ExitCode::FAILURE);
                    }
                };
                let c = trail::sign_checkpoint(&head, chrono::Utc::now(), &key);
                let line = serde_json::to_string(&c)?;
                if let Some(out) = &out {
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(out)
                        .with_context(|| format!("cannot open {}", out.display()))?;
                    writeln!(f, "{line}")?;
                    f.sync_all()?;
                }
                println!("{line}");
                eprintln!(
                    "checkpoint of {} entries, signed by {}",
                    c.entries,
                    hex::encode(key.verifying_key().to_bytes())
                );
                Ok(ExitCode::SUCCESS)
            })
        }
        AuditLogCommand::Export { out } => runtime()?.block_on(async {
            let (_, store) = open(config).await?;
            let entries = store.audit_log().await?;
            let head = trail::verify(&entries);
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(&out)
                    .with_context(|| format!("cannot create {}", out.display()))?,
            );
            for e in &entries {
                serde_json::to_writer(&mut w, e)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
            match head {
                Ok(h) => {
                    println!("{}", h.hash);
                    eprintln!("wrote {} entries to {}", h.entries, out.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(b) => {
                    eprintln!(
                        "wrote {} entries to {}, but the chain is BROKEN: {b}",
                        entries.len(),
                        out.display()
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }),
    }
}

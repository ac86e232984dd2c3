//! The `proctor` command line: a thin layer over the library.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use proctor::case::Reruns;
use proctor::checks::Verdict;
use proctor::checks::image;
use proctor::checks::model_file;
use proctor::outcome::Outcome;
use proctor::rules::Rules;
use proctor::sampling::SamplingSecret;
use proctor::{audit, calibrate, events, hashing, sampling};

#[path = "cli/review.rs"]
mod review_cli;

/// A command-line parser for a library enum, by its `as_str` names: the library's core
/// types carry no clap derive (tests/layering.rs), so the command line names them here.
/// `--help` lists the names as clap's own enums would.
fn one_of<T: Copy + Send + Sync + 'static>(
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
#[path = "cli/secret.rs"]
mod secret;

/// Exit codes, one table for every command (README, "Exit codes"). Usage errors (2)
/// are clap's own.
mod exit {
    /// A finding: a failed verdict, rejected records, an invalid event, a check that
    /// does not hold.
    pub const FINDING: u8 = 1;
    /// The command could not do its work: unreadable input, invalid settings or rules,
    /// a service that does not answer.
    pub const RUNTIME: u8 = 3;
}

fn finding_if(found: bool) -> ExitCode {
    if found {
        ExitCode::from(exit::FINDING)
    } else {
        ExitCode::SUCCESS
    }
}

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
    Audit {
        /// Folder holding jobs.jsonl, objects/ and reference/.
        dir: PathBuf,
        /// Rules folder; the rules compiled into this binary by default.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Where to write verdicts.jsonl, decisions.jsonl, slashes.jsonl, report.html and report/ (the review app's pages, read-only).
        #[arg(long, default_value = "audit-out")]
        out: PathBuf,
        /// A file holding the hex ed25519 secret seed (`-`: standard input; without
        /// it, $PROCTOR_SECRETS__SIGNING_KEY); when there is one, also writes signed
        /// slash events to events.jsonl. Never the key itself as an argument.
        #[arg(long, value_name = "FILE")]
        signing_key_file: Option<PathBuf>,
        /// A file holding the secret of the re-run draw (`-`: standard input; without
        /// it, $PROCTOR_SECRETS__SAMPLING_SECRET, else the demo's
        /// `proctor-audit-default`).
        #[arg(long, value_name = "FILE")]
        sampling_secret_file: Option<PathBuf>,
        /// Which reference outputs count: `present`, every one in the folder (an export
        /// of the jobs that were re-run), or `drawn`, only those of the jobs the
        /// sampling secret draws at the rules' rates, as the pipeline counts them.
        #[arg(long, value_parser = one_of(&Reruns::ALL, Reruns::as_str), default_value = "present")]
        reruns: Reruns,
    },
    /// Compare a candidate image with a reference image under the rules; prints JSON.
    ImageDiff {
        /// The image under test (the miner's).
        candidate: PathBuf,
        /// The reference image.
        reference: PathBuf,
        /// Rules folder; the rules compiled into this binary by default.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Print b3sum-compatible lines (or sha256sum-compatible ones with --sha256).
    Hash {
        /// SHA-256 instead of BLAKE3 (the digest the network's model list publishes).
        #[arg(long)]
        sha256: bool,
        /// Files to hash; standard input when none.
        files: Vec<PathBuf>,
    },
    /// Verify signed ledger events (one envelope per line, in the order the ledger
    /// applies them) against the trusted public keys, each for its own kind: each
    /// signature, and for a reversal the ledger's rule, that it names a slash event
    /// seen before it by its payload hash, once, and gives back no more than the slash
    /// took.
    VerifyEvent {
        /// File of envelopes, one JSON object per line; standard input when absent.
        file: Option<PathBuf>,
        /// The slash signer's (the judge's) hex ed25519 public key: trusted for
        /// slashes only.
        #[arg(long)]
        public_key: String,
        /// The reversal signer's (the review app's) hex ed25519 public key: trusted
        /// for reversals only. Without it, every reversal is refused.
        #[arg(long)]
        reversal_public_key: Option<String>,
    },
    /// Print the hex ed25519 public key for a signing key (to publish to the ledger
    /// team): the slash key, the reversal key or the audit checkpoint key.
    PublicKey {
        /// A file holding the hex ed25519 secret seed (32 bytes)
        /// (`-`: standard input; without it, $PROCTOR_SECRETS__SIGNING_KEY).
        #[arg(long, value_name = "FILE")]
        signing_key_file: Option<PathBuf>,
    },
    /// Print the effective deployment settings as TOML (secrets shown only as set or
    /// empty, the database password masked).
    Settings {
        /// A settings file layered over the defaults.
        #[arg(long, env = "PROCTOR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Staff accounts and API tokens of the review app.
    Staff {
        #[command(subcommand)]
        command: review_cli::StaffCommand,
        /// A settings file layered over the defaults (for database.url).
        #[arg(long, env = "PROCTOR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Review flagged miners and slashes: the queue, a case, and decisions.
    Review {
        #[command(subcommand)]
        command: review_cli::ReviewCommand,
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
        command: review_cli::AuditLogCommand,
        /// A settings file layered over the defaults (for database.url).
        #[arg(long, env = "PROCTOR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Send an audit folder through the running pipeline, as the network's services
    /// would: outputs and reference outputs to S3, wallets to Postgres, job records to
    /// the jobs topic. `--rounds` sends copies with new job ids: a demo population.
    Submit {
        /// The audit folder (docs/audit-folder.md), such as fixtures/audit-demo.
        dir: PathBuf,
        /// Copies of every valid record, each with new job ids and later times.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Leave out reference/ (the reference hosts or the rerun worker's own model
        /// give the references instead).
        #[arg(long)]
        no_references: bool,
        /// A settings file layered over the defaults (brokers, buckets, database.url).
        #[arg(long, env = "PROCTOR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The dead-letter topic: list its letters, or send some back to their topic.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
        /// A settings file layered over the defaults (brokers, kafka.dlq_topic).
        #[arg(long, env = "PROCTOR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Rules maintenance.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Answer a model-file byte-range challenge from a local file; prints JSON.
    Challenge {
        /// The model file on disk.
        file: PathBuf,
        /// The file name as the registry and the challenge name it.
        #[arg(long)]
        name: String,
        /// The challenge nonce, hex.
        #[arg(long)]
        nonce: String,
        /// Rules folder; the rules compiled into this binary by default.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Serve a model folder as an OpenAI-compatible /v1/completions endpoint (scoring
    /// with prompt_logprobs, and generation), for a reference host.
    ServeReference {
        /// Model folder: config.json, *.safetensors, tokenizer.json, tokenizer_config.json.
        model: PathBuf,
        /// Where to listen: host (or address) and port, such as localhost:8000 or
        /// 0.0.0.0:8000.
        #[arg(long, default_value = "127.0.0.1:8000")]
        bind: String,
        /// Requests scored at once; more wait their turn.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Requests that may wait beyond those; one more is answered 503 at once.
        #[arg(long, default_value_t = 8)]
        queue: usize,
        /// A file holding the bearer token every /v1 request must carry (`-`: standard
        /// input; without it, $PROCTOR_REFERENCE_TOKEN; neither: no token asked, for a
        /// host on a private network only).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// A request that takes longer than this many seconds is answered 503.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// f32, f16 or bf16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// cpu, or cuda:<n> in a build with the cuda feature.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Rules whose suspect panel (`[llm.panel]`) to score beside the model, from the
        /// folders beside the model's; the rules compiled into this binary by default.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Calibrate check thresholds on labelled honest and cheating pairs: prints the
    /// detection table, writes calibration.json, detection.md and roc.png, and with
    /// --write-rules updates checks.toml (docs/DETECTION.md).
    Calibrate {
        /// Rules to calibrate against (target rate, fixed limits); embedded by default.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Write the thresholds and measured false-positive bounds into this rules folder.
        #[arg(long)]
        write_rules: Option<PathBuf>,
        /// With --write-rules: keep, of each LLM threshold and drift allowance, the more
        /// lenient of the rules' value and this run's (a second reference model's run,
        /// while one set of thresholds serves every model). Rates are this run's.
        #[arg(long, requires = "write_rules")]
        lenient: bool,
        /// Where to write detection.md, calibration.json and roc.png.
        #[arg(long, default_value = "calibration-out")]
        out: PathBuf,
        /// Calibrate only this check family (all three by default).
        #[arg(long, value_parser = ["image", "llm", "latency"])]
        only: Option<String>,
        /// Photos the image pairs are cut from.
        #[arg(long, default_value = "../shared/images")]
        images: PathBuf,
        /// The network's models (ids or categories) whose honest outputs --images
        /// holds, comma-separated: the image rate slashes on these only. None by
        /// default: photographs are no model's outputs, and a rate measured on them
        /// can only flag.
        #[arg(long, value_delimiter = ',')]
        image_models: Vec<String>,
        /// Side of each reference image, in pixels.
        #[arg(long, default_value_t = 256)]
        image_side: u32,
        /// Image jobs; each gives one pair per cheat.
        #[arg(long, default_value_t = 1000)]
        image_jobs: usize,
        /// Honest pairs per image job.
        #[arg(long, default_value_t = 4)]
        image_honest_per_job: usize,
        /// The reference LLM's folder.
        #[arg(long, default_value = "fixtures/models/tiny-alice")]
        llm_reference: PathBuf,
        /// The network's models (ids or categories) --llm-reference is, comma-separated:
        /// the LLM rates slash on these only. By default the reference folder's name,
        /// which slashes on no network model unless it is one's id.
        #[arg(long, value_delimiter = ',')]
        llm_models: Vec<String>,
        /// A model of the same architecture, for the substitution cheats.
        #[arg(long, default_value = "fixtures/models/tiny-alice-alt")]
        llm_substitute: PathBuf,
        /// A smaller model of the same family (`proctor derive-model --drop-layers`),
        /// for the smaller-model cheat; none by default.
        #[arg(long)]
        llm_smaller: Option<PathBuf>,
        /// Plain text the prompts and canned answers come from.
        #[arg(long, default_value = "fixtures/text/alice29.txt")]
        corpus: PathBuf,
        /// Honest texts at the sampled temperatures (0.5, 0.7, 1.0).
        #[arg(long, default_value_t = 4000)]
        llm_honest: usize,
        /// Honest texts at greedy and near-greedy temperatures (0, 0.2).
        #[arg(long, default_value_t = 1000)]
        llm_honest_greedy: usize,
        /// Cheating texts per LLM cheat (substitute, spoof, quantized, hotter, canned).
        #[arg(long, default_value_t = 400)]
        llm_per_cheat: usize,
        /// Output tokens per LLM job: the detection window.
        #[arg(long, default_value_t = 64)]
        max_tokens: u32,
        /// A JSON-lines file of the LLM pairs, written as each batch of 16 is scored
        /// and read back on the next run with the same options: an interrupted
        /// calibration resumes where it stopped.
        #[arg(long)]
        llm_records: Option<PathBuf>,
        /// Seed of every random draw: the same seed gives the same tables.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Published honest GPU timings, for the latency checks.
        #[arg(long, default_value = "fixtures/gpu-timings.toml")]
        timings: PathBuf,
        /// Simulated miners per LLM variant in the suspect panel's per-miner table.
        #[arg(long, default_value_t = 1000)]
        panel_miners: usize,
        /// The most sampled jobs each simulated miner is followed for.
        #[arg(long, default_value_t = 100)]
        panel_max_jobs: usize,
    },
    /// Write the model folder the scorer loads (config.json, model.safetensors,
    /// tokenizer.json, tokenizer_config.json) from a llama.cpp GGUF llama model,
    /// dequantized to f32.
    ConvertGguf {
        /// The .gguf file.
        gguf: PathBuf,
        /// The folder to write; its name is the model id the scorer reports.
        out: PathBuf,
    },
    /// Write a model derived from a reference model folder: what a cheater would serve
    /// instead (docs/DETECTION.md). Exactly one of --drop-layers, --quantize, --perturb.
    DeriveModel {
        /// The reference model's folder.
        reference: PathBuf,
        /// The folder to write; its name is the model id the scorer reports.
        out: PathBuf,
        /// A smaller model: this many decoder layers removed, evenly over the interior.
        #[arg(long, conflicts_with_all = ["quantize", "perturb"])]
        drop_layers: Option<usize>,
        /// Every weight matrix quantized to this many bits (per-row absmax).
        #[arg(long, conflicts_with = "perturb")]
        quantize: Option<u32>,
        /// Another finetune: noise of this share of each matrix's RMS on every matrix.
        #[arg(long)]
        perturb: Option<f64>,
        /// The perturbation's seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Verify model files against the registry's size, SHA-256 and BLAKE3.
    VerifyModel {
        /// The model id in rules/models.toml.
        #[arg(long)]
        model: String,
        /// The model's files on disk, named as the registry names them.
        files: Vec<PathBuf>,
        /// Rules folder; the rules compiled into this binary by default.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
}

/// Which dead letters a `dlq` command acts on.
#[derive(clap::Args)]
struct DlqFilter {
    /// Only letters with this reason (invalid_record, object_missing, ...).
    #[arg(long)]
    reason: Option<String>,
    /// Only the letter of this job.
    #[arg(long)]
    job: Option<String>,
    /// Only letters after this offset of the dead-letter topic (the last offset an
    /// earlier replay printed).
    #[arg(long)]
    after_offset: Option<i64>,
    /// Stop reading once no letter arrived for this many seconds.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
}

#[derive(Subcommand)]
enum DlqCommand {
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

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate the rules and print the deterrence table; fails when cheating pays,
    /// also at the reference capacity the settings describe.
    Check {
        /// Rules folder; the rules compiled into this binary by default.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Settings file whose reference hosts and demand_per_hour give the capacity
        /// table (the built-in settings and PROCTOR_* variables apply as for a worker).
        #[arg(long, env = "PROCTOR_CONFIG")]
        settings: Option<PathBuf>,
    },
}

fn load_rules(dir: Option<&Path>) -> Result<Rules> {
    Ok(match dir {
        Some(d) => Rules::load_dir(d)?,
        None => Rules::embedded()?,
    })
}

fn main() -> ExitCode {
    // clap exits 2 on a usage error, 0 after --help and --version.
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("proctor: {}", proctor::telemetry::error_chain(&e));
            ExitCode::from(exit::RUNTIME)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Staff { command, config } => review_cli::staff(command, config.as_deref()),
        Command::Review {
            command,
            config,
            token_file,
        } => {
            let token = secret::read(token_file.as_deref(), "PROCTOR_REVIEW_TOKEN")?;
            review_cli::review(command, config.as_deref(), token.as_deref())
        }
        Command::AuditLog { command, config } => review_cli::audit_log(command, config.as_deref()),
        Command::Submit {
            dir,
            rounds,
            no_references,
            config,
        } => {
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
        Command::Dlq { command, config } => {
            let settings = proctor::settings::Settings::load(config.as_deref())?;
            let k = &settings.kafka;
            let rt = tokio::runtime::Runtime::new()?;
            let read =
                |f: &DlqFilter| -> Result<(Vec<proctor::dlq::Letter>, proctor::dlq::Filter)> {
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
        Command::ServeReference {
            model,
            bind,
            concurrency,
            queue,
            token_file,
            timeout_secs,
            dtype,
            device,
            rules,
        } => {
            proctor::telemetry::init_logging();
            let token = secret::read(token_file.as_deref(), "PROCTOR_REFERENCE_TOKEN")?;
            let numerics = proctor::llm::model::Numerics::parse(&dtype, "f32")
                .map_err(|e| anyhow::anyhow!("--dtype {dtype}: {e}"))?;
            let device = proctor::llm::device(&device)?;
            let mut scorer = proctor::llm::Scorer::load(&model, numerics, &device)
                .with_context(|| format!("cannot load the model in {}", model.display()))?;
            let rules = load_rules(rules.as_deref())?;
            scorer.panel = proctor::llm::panel::Panel::beside(
                &scorer,
                &rules.checks.llm.panel,
                &model,
                numerics,
                &device,
            );
            let opts = proctor::llm::serve::ServeOptions {
                concurrency,
                queue,
                timeout: std::time::Duration::from_secs(timeout_secs),
                token,
            };
            tokio::runtime::Runtime::new()?
                .block_on(proctor::llm::serve::serve(scorer, &bind, &opts))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Calibrate {
            rules,
            write_rules,
            lenient,
            out,
            only,
            images,
            image_models,
            image_side,
            image_jobs,
            image_honest_per_job,
            llm_reference,
            llm_models,
            llm_substitute,
            llm_smaller,
            corpus,
            llm_honest,
            llm_honest_greedy,
            llm_per_cheat,
            max_tokens,
            llm_records,
            seed,
            timings,
            panel_miners,
            panel_max_jobs,
        } => {
            let rules = load_rules(rules.as_deref())?;
            let wants = |what: &str| only.as_deref().is_none_or(|o| o == what);
            let opts = calibrate::Options {
                image: wants("image").then_some(calibrate::image::ImageOptions {
                    dir: images,
                    side: image_side,
                    references: image_jobs,
                    honest_per_reference: image_honest_per_job,
                    seed,
                    models: image_models,
                }),
                llm: wants("llm").then_some(calibrate::llm::LlmOptions {
                    models: if llm_models.is_empty() {
                        calibrate::llm::models_of(&llm_reference)
                    } else {
                        llm_models
                    },
                    reference: llm_reference,
                    substitute: llm_substitute,
                    smaller: llm_smaller,
                    corpus,
                    honest: llm_honest,
                    honest_greedy: llm_honest_greedy,
                    per_cheat: llm_per_cheat,
                    max_tokens,
                    seed,
                    panel: rules.checks.llm.panel.clone(),
                    records: llm_records,
                }),
                latency: wants("latency").then_some(timings),
                miners: panel_miners,
                max_jobs: panel_max_jobs,
            };
            let result = calibrate::run(&opts, &rules, &|msg| eprintln!("calibrate: {msg}"))?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let table = result.markdown();
            std::fs::write(out.join("detection.md"), &table)?;
            std::fs::write(
                out.join("calibration.json"),
                serde_json::to_vec_pretty(&result)?,
            )?;
            let reports: Vec<&calibrate::CheckReport> = result.checks.iter().collect();
            if !calibrate::plot::roc_png(&out.join("roc.png"), &reports)? {
                eprintln!(
                    "calibrate: no TrueType font found (set PROCTOR_FONT); roc.png has no text"
                );
            }
            print!("{table}");
            eprintln!(
                "calibrate: wrote detection.md, calibration.json and roc.png to {}",
                out.display()
            );
            if let Some(dir) = write_rules {
                let provenance = calibrate::Provenance::of_this_run();
                calibrate::write_rules(&dir, &result, &provenance, lenient)?;
                eprintln!("calibrate: updated {}", dir.join("checks.toml").display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            dir,
            rules,
            out,
            signing_key_file,
            sampling_secret_file,
            reruns,
        } => {
            let rules = load_rules(rules.as_deref())?;
            let signing_key =
                secret::read(signing_key_file.as_deref(), "PROCTOR_SECRETS__SIGNING_KEY")?
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
        Command::VerifyEvent {
            file,
            public_key,
            reversal_public_key,
        } => {
            let slash_key =
                events::verifying_key_from_hex(&public_key).map_err(anyhow::Error::msg)?;
            let reversal_key = reversal_public_key
                .as_deref()
                .map(events::verifying_key_from_hex)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            if reversal_key == Some(slash_key) {
                bail!(
                    "--reversal-public-key is the slash key: each kind of event has a key of its own"
                );
            }
            let trusted = events::LedgerKeys {
                slash: &slash_key,
                reversal: reversal_key.as_ref(),
            };
            let text = match &file {
                Some(f) => {
                    std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?
                }
                None => {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                    buf
                }
            };
            // The ledger's rules, in the file's order: each slash once per id, and a
            // reversal only of a slash event seen before it, named by its payload
            // hash, once, for no more than the slash took.
            let (mut ok, mut bad) = (0, 0);
            let mut slashes = std::collections::HashMap::new();
            let mut reversed = std::collections::HashSet::new();
            for (i, line) in text.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let verdict = match events::verify_ledger_event(line, trusted) {
                    Err(e) => Err(e.to_string()),
                    Ok(events::LedgerEvent::Slash(e)) => {
                        // Verified just above: only the payload's hash is left to take.
                        let signed: events::SignedEvent = serde_json::from_slice(line)?;
                        let sha = events::payload_sha256(&signed.payload);
                        let said = format!(
                            "slash {} of {} ({} jobs)",
                            e.slash_id,
                            e.miner_id,
                            e.jobs.len()
                        );
                        match slashes.get(&e.slash_id) {
                            Some((_, seen)) if *seen != sha => {
                                Err(format!("slash {} again with another payload", e.slash_id))
                            }
                            Some(_) => Ok(format!("{said}, a redelivery")),
                            None => {
                                slashes.insert(e.slash_id.clone(), (e, sha));
                                Ok(said)
                            }
                        }
                    }
                    Ok(events::LedgerEvent::Reversed(r)) => {
                        let applied = slashes.get(&r.slash_id).map(|(e, sha)| (e, sha.as_str()));
                        match events::check_reversal(&r, applied) {
                            Err(e) => Err(format!("reversal: {e}")),
                            Ok(()) if !reversed.insert(r.slash_id.clone()) => {
                                Err(format!("slash {} is reversed twice", r.slash_id))
                            }
                            Ok(()) => Ok(format!("reversal of slash {}", r.slash_id)),
                        }
                    }
                };
                match verdict {
                    Ok(said) => {
                        ok += 1;
                        println!("line {}: valid: {said}", i + 1);
                    }
                    Err(e) => {
                        bad += 1;
                        println!("line {}: INVALID: {e}", i + 1);
                    }
                }
            }
            println!("{ok} valid, {bad} invalid");
            if ok + bad == 0 {
                bail!("no events to verify");
            }
            Ok(finding_if(bad > 0))
        }
        Command::Settings { config } => {
            let settings = proctor::settings::Settings::load(config.as_deref())?;
            print!("{}", settings.to_toml_masked());
            Ok(ExitCode::SUCCESS)
        }
        Command::PublicKey { signing_key_file } => {
            let signing_key = secret::require(
                signing_key_file.as_deref(),
                "PROCTOR_SECRETS__SIGNING_KEY",
                "--signing-key-file",
            )?;
            let key = events::signing_key_from_hex(&signing_key).map_err(anyhow::Error::msg)?;
            println!("{}", hex::encode(key.verifying_key().to_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        Command::ImageDiff {
            candidate,
            reference,
            rules,
        } => {
            let rules = load_rules(rules.as_deref())?;
            let im = &rules.checks.image;
            let read = |p: &Path| -> Result<Vec<u8>> {
                let mut buf = Vec::new();
                let f = std::fs::File::open(p)
                    .with_context(|| format!("cannot open {}", p.display()))?;
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(f, im.max_object_bytes + 1),
                    &mut buf,
                )?;
                Ok(buf)
            };
            let (a, b) = (read(&candidate)?, read(&reference)?);
            let report = match (image::decode(&a, im), image::decode(&b, im)) {
                (Err(e), _) => {
                    serde_json::json!({"verdict": "invalid", "invalid": "candidate", "error": e.to_string()})
                }
                (_, Err(e)) => {
                    serde_json::json!({"verdict": "invalid", "invalid": "reference", "error": e.to_string()})
                }
                (Ok(ca), Ok(re)) => {
                    let sim = image::measure(&ca, &re, im);
                    let outcome = image::judge(&sim, im);
                    let mut v = serde_json::to_value(&sim)?;
                    v["verdict"] = if outcome.is_fail() { "fail" } else { "pass" }.into();
                    v["thresholds"] = serde_json::json!({
                        "phash_max_distance": im.phash_max_distance,
                        "dhash_max_distance": im.dhash_max_distance,
                        "ssim_min": im.ssim_min,
                        "detail_ratio_min": im.detail_ratio_min,
                    });
                    if let Outcome::Fail { evidence } = outcome {
                        v["reason"] = evidence.summary.into();
                    }
                    v
                }
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(finding_if(report["verdict"] != "pass"))
        }
        Command::Hash { sha256, files } => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            if files.is_empty() {
                let stdin = std::io::stdin().lock();
                let hex = if sha256 {
                    hashing::sha256_reader(stdin)?
                } else {
                    hashing::blake3_reader(stdin)?.to_hex().to_string()
                };
                writeln!(out, "{}", hashing::checksum_line(&hex, "-"))?;
            }
            let mut failed = false;
            for f in &files {
                let digest = if sha256 {
                    hashing::sha256_file(f)
                } else {
                    hashing::blake3_file(f).map(|h| h.to_hex().to_string())
                };
                match digest {
                    Ok(hex) => writeln!(
                        out,
                        "{}",
                        hashing::checksum_line(&hex, &f.to_string_lossy())
                    )?,
                    Err(e) => {
                        eprintln!("proctor: {}: {e}", f.display());
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(exit::RUNTIME)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Rules {
            command: RulesCommand::Check { rules, settings },
        } => {
            let rules = load_rules(rules.as_deref())?;
            let settings = proctor::settings::Settings::load(settings.as_deref())?;
            println!("rules valid, digest {}", rules.digest()?);
            println!(
                "\nfalse-positive rates: a slash needs a measured rate, and no declaration below its measurement\n"
            );
            println!(
                "{:<20} {:>10} {:<9} {:>8} {:>9} {:>10} {:>10} {:<11} {:>12} {:>10}  can slash",
                "check",
                "declared",
                "basis",
                "n",
                "failures",
                "95% bound",
                "priced at",
                "measured",
                "effect floor",
                "cal. risk"
            );
            let margin = rules.slashing.effect_margin;
            for (id, p) in &rules.checks.policy {
                let m = p.measured.as_ref();
                let floor = p.effect_floor(margin);
                println!(
                    "{:<20} {:>10.2e} {:<9} {:>8} {:>9} {:>10} {:>10.2e} {:<11} {:>11.1}% {:>10}  {}",
                    id.as_str(),
                    p.false_positive_rate,
                    match p.basis {
                        proctor::rules::Basis::Measured => "measured",
                        proctor::rules::Basis::Assumed => "assumed",
                    },
                    m.map_or(String::new(), |m| m.n.to_string()),
                    m.map_or(String::new(), |m| m.failures.to_string()),
                    m.map_or(String::new(), |m| format!("{:.2e}", m.upper_95)),
                    p.worst_config_rate(),
                    m.map_or("", |m| m.date.as_str()),
                    100.0 * floor,
                    p.calibration_risk(margin)
                        .map_or(String::new(), |r| format!("{r:.1e}")),
                    match rules.slash_scope(*id) {
                        Some(_) if p.independent_across_jobs && floor > 1.0 => {
                            "no (its effect floor is above every job)".to_owned()
                        }
                        Some(scope) => format!("on {scope}"),
                        None if p.can_slash() => {
                            "no (its sample was no model's: flag only)".to_owned()
                        }
                        None if p.flag_only => "no (flag only)".to_owned(),
                        None => "no (assumed)".to_owned(),
                    }
                );
            }
            println!(
                "\nslashing checks by model category: a check slashes only on the models its honest rate was measured on, and flags elsewhere\n"
            );
            for (category, checks) in rules.slashing_by_category() {
                println!(
                    "{:<20} {}",
                    category,
                    if checks.is_empty() {
                        "none: every failure is for review".to_owned()
                    } else {
                        checks.join(", ")
                    }
                );
            }
            println!(
                "\nan automatic slash needs an honest probability of at most {:.2e}: a lifetime budget of {:.0e} over {} decisions a miner-year",
                rules.auto_slash_threshold(),
                rules.slashing.lifetime_false_slash_budget,
                rules.slashing.decisions_per_miner_year
            );
            println!(
                "with each check's tail computed at {} times the rate it is priced at (at most 1): valid for honest miners whose true rate is up to that multiple of the measured one",
                rules.slashing.tail_margin
            );
            println!(
                "and a failure share of at least the check's effect floor: {margin} times the largest rate an honest configuration was measured at"
            );
            println!(
                "lifetime false-slash risk per miner-year: {:.2e} (the budget, plus each slashing check's calibration risk: the chance its honest sample showed so few failures were its rate at the floor)",
                rules.lifetime_risk()
            );
            let broken = rules.broken_promises();
            for b in &broken {
                eprintln!("proctor: {b}");
            }
            println!(
                "\ndeterrence at the sampling floor: p(R+S) >= C must hold for each cheat (points per job; p = floor x the cheat's measured detection on a re-run)\n"
            );
            println!(
                "{:<20} {:<38} {:>9} {:>10} {:>12} {:>10} {:>10}  verdict",
                "category", "cheat", "p", "R", "S", "C", "p(R+S)"
            );
            let table = sampling::deterrence_table(&rules);
            for r in &table {
                println!(
                    "{:<20} {:<38} {:>9.5} {:>10.3} {:>12.3} {:>10.3} {:>10.3}  {}",
                    r.category,
                    r.cheat,
                    r.p_caught,
                    r.reward,
                    r.slash,
                    r.saved,
                    r.expected_loss,
                    r.verdict()
                );
            }
            let paying: BTreeSet<&str> = table
                .iter()
                .filter(|r| !r.deters)
                .map(|r| r.cheat.as_str())
                .collect();
            if !paying.is_empty() {
                println!(
                    "\ncheats that pay at the sampling floor: {}",
                    paying.into_iter().collect::<Vec<_>>().join("; ")
                );
            }
            let capacity = sampling::capacity_table(
                &rules,
                &settings.reference.demand_per_hour,
                &settings.reference.capacity(),
            );
            if capacity.is_empty() {
                println!(
                    "\nreference capacity: no reference hosts or no demand_per_hour in the settings' [reference], so no capacity check"
                );
            } else {
                println!(
                    "\ndeterrence at the reference capacity of the settings (re-runs per hour; the floor times the share served)\n"
                );
                println!(
                    "{:<20} {:>10} {:>10} {:>10} {:>7} {:<34} {:>9} {:>10} {:>10}  verdict",
                    "category",
                    "demand",
                    "wanted",
                    "capacity",
                    "served",
                    "least deterred cheat",
                    "p",
                    "p(R+S)",
                    "C"
                );
                for r in &capacity {
                    let d = &r.deterrence;
                    println!(
                        "{:<20} {:>10.0} {:>10.0} {:>10.0} {:>6.0}% {:<34} {:>9.5} {:>10.3} {:>10.3}  {}",
                        d.category,
                        r.demand_per_hour,
                        r.wanted_per_hour,
                        r.capacity_per_hour,
                        r.served_share * 100.0,
                        d.cheat,
                        d.p_caught,
                        d.expected_loss,
                        d.saved,
                        if r.hosts.is_empty() {
                            "NO REFERENCE HOST".to_owned()
                        } else {
                            d.verdict()
                        }
                    );
                }
            }
            let bad: BTreeSet<&str> = table
                .iter()
                .chain(capacity.iter().map(|c| &c.deterrence))
                .filter(|r| r.fails())
                .map(|r| r.category.as_str())
                .collect();
            let bad: Vec<&str> = bad.into_iter().collect();
            if !bad.is_empty() {
                eprintln!("proctor: cheating is profitable in: {}", bad.join(", "));
            }
            Ok(finding_if(!bad.is_empty() || !broken.is_empty()))
        }
        Command::Challenge {
            file,
            name,
            nonce,
            rules,
        } => {
            let rules = load_rules(rules.as_deref())?;
            let exp = model_file::answer_file(&file, &name, &nonce, &rules.checks.challenge)
                .with_context(|| format!("cannot answer from {}", file.display()))?;
            println!("{}", serde_json::to_string_pretty(&exp)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::ConvertGguf { gguf, out } => {
            let c = proctor::llm::gguf::convert(&gguf, &out)?;
            println!(
                "{}: {} layers, {} tokens, {} parameters{}",
                out.display(),
                c.layers,
                c.vocab,
                c.parameters,
                if c.tied { ", tied embedding" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::DeriveModel {
            reference,
            out,
            drop_layers,
            quantize,
            perturb,
            seed,
        } => {
            use proctor::llm::derive::{Derivation, derive};
            let how = match (drop_layers, quantize, perturb) {
                (Some(layers), None, None) => Derivation::DropLayers { layers },
                (None, Some(bits), None) => Derivation::Quantize { bits },
                (None, None, Some(scale)) => Derivation::Perturb { scale, seed },
                _ => bail!("give one of --drop-layers, --quantize or --perturb"),
            };
            let d = derive(&reference, &out, how)?;
            println!(
                "{}: {} layers, {} parameters",
                out.display(),
                d.layers,
                d.parameters
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyModel {
            model,
            files,
            rules,
        } => {
            let rules = load_rules(rules.as_deref())?;
            if rules.model(&model).is_none() {
                bail!("model {model} is not in the registry");
            }
            let registered = rules.model_files(&model);
            let mut all_ok = true;
            for f in &files {
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let Some(entry) = registered.iter().find(|e| e.name == name) else {
                    println!("{}: not a registered file of {model}", f.display());
                    all_ok = false;
                    continue;
                };
                let digests = hashing::digest_file(f)
                    .with_context(|| format!("cannot hash {}", f.display()))?;
                match model_file::check_file(&digests, entry) {
                    Outcome::Pass { .. } => println!("{}: OK", f.display()),
                    Outcome::Fail { evidence } => {
                        println!("{}: FAILED: {}", f.display(), evidence.summary);
                        all_ok = false;
                    }
                    Outcome::Inconclusive { reason } => println!("{}: {reason}", f.display()),
                }
            }
            if registered.is_empty() {
                eprintln!("proctor: the registry lists no files for {model} yet");
                all_ok = false;
            }
            Ok(finding_if(!all_ok))
        }
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

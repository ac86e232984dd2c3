//! proctor: the anti-cheat verification pipeline of the Heurist GPU inference network.
//!
//! Miners run image (Stable Diffusion) and LLM jobs and earn points. proctor samples
//! their work, re-runs it on trusted reference GPUs, checks outputs, model files and
//! reported device metrics, and decides when a miner must be slashed or reviewed.
//!
//! # Layout
//!
//! The library is three layers, and nothing runs back down: the core imports nothing
//! above it, and no crate that does I/O or belongs to a process (`tests/layering.rs`
//! checks both, through every path of imports).
//!
//! ## The core: what decides, and what it decides on
//!
//! Pure functions and data: no database, broker, object store or network, and no
//! clock but the times it is handed. Two loaders read a file: the rules from a folder
//! ([`rules::Rules::load_dir`]) and the one range of a model file a byte-range
//! challenge names ([`checks::model_file::answer_file`]).
//!
//! - [`ids`]: validated identifiers (`MinerId`, `JobId`, `ModelId`, `ObjectKey`).
//! - [`record`]: the job record, the input contract with the network's job service.
//! - [`outcome`]: `Pass | Fail { evidence } | Inconclusive { reason }` and the check ids.
//! - [`rules`]: versioned policy from `rules/*.toml`, validated, with a digest.
//! - [`checks`]: every check, and [`checks::Checker`], which runs them for a job:
//!   [`checks::image`] (decode limits, size, perceptual similarity),
//!   [`checks::llm`] (teacher-forced token scores), [`checks::model_file`] (digests and
//!   byte-range challenges), [`checks::device`] (GPU minimums and latency bounds),
//!   [`checks::reuse`] (replayed outputs) and [`checks::canary`] (known-answer probes).
//! - [`stats`]: binomial and Poisson-binomial tails, Clopper-Pearson bounds.
//! - [`points`]: the points calculator (Waifu and Llama points, NFT boost).
//! - [`sampling`]: the keyed re-run draw, risk-raised rates, the deterrence and
//!   reference-capacity tables.
//! - [`decide`]: from judged jobs to `none`, `flag for review` or a deterministic slash,
//!   with no independence assumed between checks and a lifetime false-slash budget.
//! - [`case`]: a miner's case as data, and the one function from it to a decision and
//!   its signed effects, shared by the judge worker and `proctor audit`.
//! - [`events`]: slash and reversal events for the ledger, signed with ed25519, and
//!   their verification.
//! - [`review`]: staff review's rules (who may do what to a case, the second-reviewer
//!   rule), a staff action's effects ([`review::workflow`]), credentials, and the
//!   hash-chained audit log.
//! - [`view`]: what a case and a piece of evidence show, and the templates, shared by
//!   the review app and the offline report.
//!
//! ## Instruments: computation the core's inputs are made with
//!
//! - [`llm`]: the reference LLM (teacher-forced scoring and generation, candle).
//! - [`hashing`]: file digests (BLAKE3 memory-mapped and parallel, SHA-256).
//! - [`synth`]: deterministic honest-drift and cheat transforms for fixtures and
//!   calibration.
//! - [`calibrate`]: thresholds from labelled honest and cheating pairs (`proctor
//!   calibrate`), with measured false-positive and detection rates, each written into
//!   the rules with its provenance; the latency envelope from published timings; and
//!   from the same timings, what verification costs in reference GPUs (`cost`).
//! - [`lifetime`]: honest miners simulated through a year of the judge's decisions.
//!
//! ## The edges: settings, storage, the broker, HTTP and the processes
//!
//! - [`settings`]: deployment settings (services, secrets, ports), layered from
//!   `config/default.toml`, a file and `PROCTOR_<SECTION>__<KEY>` variables.
//! - [`store`]: Postgres state (jobs, verdicts, evidence, slashes, flags, outbox, cases),
//!   every write idempotent; the one module that talks to a database.
//! - [`kafka`]: consumers, the idempotent producer, dead letters, offsets, and the
//!   delivery semantics; [`objects`]: bounded S3 reads; [`telemetry`]: JSON logs,
//!   `/metrics`, `/healthz`.
//! - [`reference`](mod@reference): reference runners over HTTP (scoring and image hosts) and their
//!   pool.
//! - [`pipeline`]: the workers (`screen`, `rerun`, `judge`, `publish`) that wrap the
//!   core with Kafka, S3 and Postgres; `workers/` holds their thin binaries.
//! - [`web`]: the staff review app (pages, JSON API, sessions, CSRF), over
//!   `store::review`.
//! - [`audit`]: the offline judgement over a folder, and [`report`], its HTML report;
//!   [`submit`]: an audit folder sent through the running pipeline; [`dlq`]: the
//!   dead-letter topic for operators.
//!
//! The `proctor` binary (`src/main.rs`, commands under `src/cli/`) is a thin CLI over
//! these; the long-running pipeline workers' entry points live in `workers/`.

pub mod audit;
pub mod calibrate;
pub mod case;
pub mod checks;
pub mod decide;
pub mod dlq;
pub mod events;
pub mod hashing;
pub mod ids;
pub mod kafka;
pub mod lifetime;
pub mod llm;
pub mod objects;
pub mod outcome;
pub mod pipeline;
pub mod points;
pub mod record;
pub mod reference;
pub mod report;
pub mod review;
pub mod rules;
pub mod sampling;
pub mod settings;
pub mod stats;
pub mod store;
pub mod submit;
pub mod synth;
pub mod telemetry;
pub mod view;
pub mod web;

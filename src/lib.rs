//! proctor: the anti-cheat verification pipeline of the Heurist GPU inference network.
//!
//! Miners run image (Stable Diffusion) and LLM jobs and earn points. proctor samples
//! their work, re-runs it on trusted reference GPUs, checks outputs, model files and
//! reported device metrics, and decides when a miner must be slashed or reviewed.
//!
//! # Layout
//!
//! The library does no I/O in its judging core; the edges do.
//!
//! - [`ids`]: validated identifiers (`MinerId`, `JobId`, `ModelId`, `ObjectKey`).
//! - [`record`]: the job record, the input contract with the network's job service.
//! - [`rules`]: versioned policy from `rules/*.toml`, validated, with a digest.
//! - [`points`]: the points calculator (Waifu and Llama points, NFT boost).
//! - [`outcome`]: `Pass | Fail { evidence } | Inconclusive { reason }` and the check ids.
//! - [`checks`]: every check, pure, and [`checks::Checker`], which runs them for a job:
//!   [`checks::image`] (decode limits, size, perceptual similarity),
//!   [`checks::llm`] (teacher-forced token scores), [`checks::model_file`] (digests and
//!   byte-range challenges), [`checks::device`] (GPU minimums and latency bounds),
//!   [`checks::reuse`] (replayed outputs) and [`checks::canary`] (known-answer probes).
//! - [`sampling`]: the keyed re-run draw, risk-raised rates, and the deterrence table.
//! - [`decide`]: from judged jobs to `none`, `flag for review` or a deterministic slash,
//!   with no independence assumed between checks and a lifetime false-slash budget;
//!   [`lifetime`] simulates honest miners through its repeated decisions.
//! - [`calibrate`]: thresholds from labelled honest and cheating pairs (`proctor
//!   calibrate`), with measured false-positive and detection rates and a ROC plot, each
//!   rate written into the rules with its provenance; and the latency envelope from
//!   published GPU timings.
//! - [`synth`]: deterministic honest-drift and cheat transforms for fixtures and calibration.
//! - [`events`]: slash events for the ledger, signed with ed25519, and their verification.
//! - [`hashing`]: file digests (BLAKE3 memory-mapped and parallel, SHA-256).
//! - [`settings`]: deployment settings (services, secrets, ports), layered from
//!   `config/default.toml`, a file and `PROCTOR_<SECTION>__<KEY>` variables.
//! - [`store`]: Postgres state (jobs, verdicts, evidence, slashes, flags, outbox), every
//!   write idempotent; the one module that talks to a database.
//! - [`kafka`]: consumers, the idempotent producer, dead letters, offsets, and the
//!   delivery semantics; [`objects`]: bounded S3 reads; [`telemetry`]: JSON logs,
//!   `/metrics`, `/healthz`.
//! - [`pipeline`]: the workers (`screen`, `rerun`, `judge`, `publish`) that wrap the
//!   library with Kafka, S3 and Postgres; `workers/` holds their thin binaries.
//! - [`review`]: staff review's rules (who may do what to a case, the second-reviewer
//!   rule), credentials, and the hash-chained audit log; its SQL is `store::review`.
//! - [`web`]: the staff review app (pages, JSON API, sessions, CSRF), over
//!   `store::review`.
//! - [`audit`]: the offline judgement over a folder (the only module here that reads
//!   files), and [`report`], its HTML report.
//!
//! The `proctor` binary (`src/main.rs`) is a thin CLI over these; the long-running
//! pipeline workers' entry points live in `workers/`.

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
pub mod web;

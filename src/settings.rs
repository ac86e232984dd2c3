//! Deployment settings: where Postgres, the broker and the object store are, the
//! secrets, the HTTP port. Rules (thresholds, rates) are not settings; see `rules`.
//!
//! Layers, later wins: `config/default.toml` (compiled in), an optional file, then
//! environment variables `PROCTOR_<SECTION>__<KEY>` (double underscore between section
//! and key, e.g. `PROCTOR_KAFKA__BROKERS`). Unknown keys are errors at every layer, so a
//! misspelt variable fails the start instead of being ignored. Secrets never appear in
//! `Debug` output or logs.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

const DEFAULTS: &str = include_str!("../config/default.toml");
const ENV_PREFIX: &str = "PROCTOR_";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("settings file {file}: {message}")]
    Parse { file: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("settings: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub s3: S3Settings,
    pub secrets: Secrets,
    pub http: HttpSettings,
    pub pipeline: PipelineSettings,
    pub reference: ReferenceSettings,
    pub review: ReviewSettings,
}

/// The staff review app (`proctor review serve`, `proctor-review`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewSettings {
    /// Where the app listens.
    pub bind: SocketAddr,
    /// Send the session cookie only over HTTPS. Browsers treat http://localhost and
    /// http://127.0.0.1 as secure, so it stays on there too; turn it off only behind a
    /// proxy that terminates TLS on another host name without it.
    pub cookie_secure: bool,
    /// A session ends after this long without a request.
    pub session_idle_minutes: u32,
    /// How often the app deletes the sessions past their expiry.
    pub session_purge_seconds: u64,
    /// Failed logins in a row an account gets before its logins are locked; each
    /// further failure locks them for twice as long as the last, from 1 s up to
    /// `login_lock_max_seconds` (`review::throttle`).
    pub login_free_failures_per_account: u32,
    /// The same for one client address (an IPv6 address by its /64), over every
    /// account it tries.
    pub login_free_failures_per_address: u32,
    pub login_lock_max_seconds: u64,
    /// An account or address with no login attempt for this long starts again.
    pub login_forget_seconds: u64,
    /// Password checks (Argon2id, 19 MiB each) run at once, on the blocking pool; a
    /// login that waits longer than `login_queue_ms` for one is answered 503.
    pub password_checks: usize,
    pub login_queue_ms: u64,
    /// The header a reverse proxy in front of the app puts the client's address in
    /// (e.g. `x-forwarded-for`; its last entry is read, the one the proxy added).
    /// Empty: the address of the TCP peer. Set it only behind a proxy that always
    /// sets it, or any client can name its own address.
    pub client_address_header: String,
    /// The slash signer's (the judge's) hex ed25519 public key (`proctor public-key`).
    /// A reversal is signed only for a slash event that verifies under it.
    pub slash_public_key: String,
}

impl ReviewSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.password_checks == 0
            || self.session_purge_seconds == 0
            || self.login_lock_max_seconds == 0
            || self.login_forget_seconds < self.login_lock_max_seconds
        {
            return Err(SettingsError::Invalid(
                "review: password_checks, session_purge_seconds and login_lock_max_seconds must be at least 1, and login_forget_seconds at least login_lock_max_seconds".into(),
            ));
        }
        if !self.client_address_header.is_empty()
            && axum::http::HeaderName::from_bytes(self.client_address_header.as_bytes()).is_err()
        {
            return Err(SettingsError::Invalid(format!(
                "review.client_address_header: {:?} is not a header name",
                self.client_address_header
            )));
        }
        Ok(())
    }
}

/// The `rerun` worker's reference LLM.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSettings {
    /// A folder of model folders (`config.json`, `*.safetensors`, `tokenizer.json`,
    /// `tokenizer_config.json`), each named by the model id (`rules/models.toml`) of
    /// the jobs it scores in process. Empty, or a job whose model is not there: token
    /// scores are read from `reference/<job_id>/scores.json` in the reference bucket,
    /// as a reference host left them.
    pub llm_models_dir: String,
    /// `cpu`, or `cuda:<n>` in a build with the `cuda` feature.
    pub device: String,
    /// `f32`, `f16` or `bf16`: the precision the miners run (vLLM `--dtype half`).
    pub dtype: String,
    /// Where attention's softmax runs: `f32` or `model` (in `dtype`).
    pub attention: String,
    /// Jobs scored together in one forward pass, at most.
    pub max_batch: usize,
    /// Alternatives kept per scored token.
    pub top_k: usize,
    /// The reference hosts the rerun worker dispatches sampled jobs to
    /// (docs/REFERENCE-HOSTS.md). A job whose model no host serves reads its reference
    /// from the reference bucket instead.
    pub hosts: Vec<HostSettings>,
    /// The share of re-run jobs (0 to 1, drawn by job id) run on two hosts, to measure
    /// reference-vs-reference drift and catch a drifting host.
    pub dual_share: f64,
    /// How long in all a job waits for a host that is down, slow or answers garbage
    /// before its reference checks are left inconclusive with the reason.
    pub max_wait_secs: u64,
    /// Disagreements in which a host was the odd one out (net of its agreements) before
    /// it is taken out of rotation.
    pub quarantine_after: u32,
    /// Two hosts' scores of the same text disagree when their token logprobs differ by
    /// more than this many nats on average (an operational bound, assumed: it can take a
    /// host out of rotation, never judge a miner).
    pub llm_drift_nats: f64,
    /// How often each host's health endpoint is polled.
    pub health_interval_secs: u64,
    /// Jobs per hour the network sends per category, for the capacity table of
    /// `proctor rules check` (empty: no capacity check).
    pub demand_per_hour: std::collections::BTreeMap<String, f64>,
}

/// What a reference host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostKind {
    /// An OpenAI-compatible `/v1/completions` server with vLLM's `prompt_logprobs`:
    /// vLLM itself, or `proctor serve-reference` (which adds the sampling moments).
    Scorer,
    /// A server speaking AUTOMATIC1111's `/sdapi/v1/txt2img`.
    Txt2img,
    /// The candle scorer in the rerun worker's own process; `url` is the model folder.
    Candle,
}

/// One reference host.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// A short name, for logs and the `host` label of `/metrics`.
    pub name: String,
    pub kind: HostKind,
    /// The server's root (`http://gpu-1:8000`); for `candle`, the model folder.
    pub url: String,
    /// The model ids (rules/models.toml) or category names whose jobs it runs.
    pub models: Vec<String>,
    /// Jobs it runs at once.
    pub concurrency: usize,
    /// Jobs that may wait for it beyond those; a job that finds every host's queue full
    /// is shed (its reference checks inconclusive) unless it is a canary or its miner
    /// is at risk, which wait.
    pub queue: usize,
    /// One request's time limit.
    pub timeout_secs: u64,
    /// The reference GPU-seconds one job is expected to take, for capacity planning.
    pub seconds_per_job: f64,
    /// `scorer`: the folder with the model's `tokenizer.json` and
    /// `tokenizer_config.json`, so the worker sends the exact token ids it scores.
    #[serde(default)]
    pub tokenizer: String,
    /// `scorer`: the model name the server serves (vLLM's `--served-model-name`);
    /// the first of `models` when empty.
    #[serde(default)]
    pub served_model: String,
    /// Polled for health; empty: `/health` (scorer) or `/sdapi/v1/progress` (txt2img).
    #[serde(default)]
    pub health_path: String,
    /// The bearer token the host wants (`serve-reference --token-file`, or a proxy in
    /// front of vLLM or the SD server); empty: none is sent.
    #[serde(default)]
    pub token: Secret,
}

impl HostSettings {
    fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() || self.url.is_empty() || self.models.is_empty() {
            return Err(format!(
                "reference.hosts: every host needs a name, a url and models ({name:?})"
            ));
        }
        if self.concurrency == 0 || self.timeout_secs == 0 {
            return Err(format!(
                "reference.hosts {name}: concurrency and timeout_secs must be at least 1"
            ));
        }
        if !(self.seconds_per_job.is_finite() && self.seconds_per_job > 0.0) {
            return Err(format!(
                "reference.hosts {name}: seconds_per_job must be a positive number"
            ));
        }
        if self.kind == HostKind::Scorer && self.tokenizer.is_empty() {
            return Err(format!(
                "reference.hosts {name}: a scorer host needs `tokenizer`, the folder of the model's tokenizer files"
            ));
        }
        Ok(())
    }
}

impl ReferenceSettings {
    /// The hosts as the sampling policy's capacity table reads them
    /// (`sampling::capacity_table`, with `demand_per_hour`).
    pub fn capacity(&self) -> Vec<crate::sampling::HostCapacity> {
        self.hosts
            .iter()
            .map(|h| crate::sampling::HostCapacity {
                name: h.name.clone(),
                runs: match h.kind {
                    HostKind::Txt2img => crate::record::JobKind::Sd,
                    HostKind::Scorer | HostKind::Candle => crate::record::JobKind::Llm,
                },
                models: h.models.clone(),
                concurrency: h.concurrency,
                seconds_per_job: h.seconds_per_job,
            })
            .collect()
    }

    /// Host names unique, each host well-formed, shares and bounds in range.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let mut names = std::collections::HashSet::new();
        for h in &self.hosts {
            h.validate().map_err(SettingsError::Invalid)?;
            if !names.insert(h.name.as_str()) {
                return Err(SettingsError::Invalid(format!(
                    "reference.hosts: two hosts are named {:?}",
                    h.name
                )));
            }
        }
        self.numerics()?;
        crate::llm::parse_device(&self.device)
            .map_err(|e| SettingsError::Invalid(format!("reference.device: {e}")))?;
        if self.max_batch == 0 || self.top_k == 0 {
            return Err(SettingsError::Invalid(
                "reference.max_batch and reference.top_k must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.dual_share) {
            return Err(SettingsError::Invalid(
                "reference.dual_share must be between 0 and 1".into(),
            ));
        }
        if !(self.llm_drift_nats.is_finite() && self.llm_drift_nats > 0.0) {
            return Err(SettingsError::Invalid(
                "reference.llm_drift_nats must be a positive number".into(),
            ));
        }
        if let Some((c, _)) = self
            .demand_per_hour
            .iter()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(SettingsError::Invalid(format!(
                "reference.demand_per_hour.{c} must be a number at least 0"
            )));
        }
        Ok(())
    }

    pub fn numerics(&self) -> Result<crate::llm::model::Numerics, SettingsError> {
        use crate::llm::model::Numerics;
        Numerics::parse(&self.dtype, "f32")
            .map_err(|e| SettingsError::Invalid(format!("reference.dtype: {e}")))?;
        Numerics::parse(&self.dtype, &self.attention)
            .map_err(|e| SettingsError::Invalid(format!("reference.attention: {e}")))
    }

    pub fn device(&self) -> Result<candle_core::Device, SettingsError> {
        crate::llm::device(&self.device)
            .map_err(|e| SettingsError::Invalid(format!("reference.device: {e}")))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub max_connections: u32,
}

/// A broker's known faults that the workers work around. Only the local stand-in
/// needs one; production runs the plain Kafka path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum KafkaCompat {
    /// Apache Kafka or a managed Kafka: no workarounds.
    #[serde(rename = "none")]
    None,
    /// tansu 0.6 (`scripts/services.sh env` sets it): small fetches, because its fetch
    /// answers late while a partition is written steadily (`kafka::consumer`), and the
    /// feed's watch for partitions its group coordinator orphans (`pipeline::Feed`).
    #[serde(rename = "tansu-0.6")]
    Tansu06,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    /// The broker's faults to work around (`none` or `tansu-0.6`).
    pub compat: KafkaCompat,
    /// librdkafka's idempotent producer; see `kafka::producer` for why the local
    /// services turn it off for tansu 0.6.
    pub idempotence: bool,
    /// The replication factor of the topics the workers create.
    pub replication_factor: i32,
    pub group_id: String,
    pub jobs_topic: String,
    pub rerun_topic: String,
    pub dlq_topic: String,
    pub slashes_topic: String,
    /// Signed checkpoints of the audit log's head (`review::trail::Checkpoint`).
    pub audit_topic: String,
    /// How every client connects: librdkafka's `security.protocol`.
    pub security_protocol: SecurityProtocol,
    /// The SASL mechanism, used only with `sasl_plaintext` or `sasl_ssl`.
    pub sasl_mechanism: SaslMechanism,
    /// This process's principal: give each worker its own, so that the broker's ACLs
    /// can hold it to the topics it needs (docs/OPERATIONS.md).
    pub sasl_username: String,
    pub sasl_password: Secret,
    /// PEM file of the CAs that sign the brokers' certificates; empty: the system's.
    pub ssl_ca_location: String,
    /// A client certificate and its key (PEM), for brokers that authenticate clients
    /// by TLS; both or neither.
    pub ssl_certificate_location: String,
    pub ssl_key_location: String,
    pub ssl_key_password: Secret,
}

/// librdkafka's `security.protocol`: whether the connection is TLS, and whether the
/// client authenticates with SASL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// The value librdkafka takes.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism`, of those a Kafka cluster and tansu both offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SaslMechanism {
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// The password itself crosses the connection: only over TLS.
    #[serde(rename = "PLAIN")]
    Plain,
}

impl SaslMechanism {
    /// The value librdkafka takes.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::Plain => "PLAIN",
        }
    }
}

impl KafkaSettings {
    /// Whether the broker learns who this client is: by SASL, or by a TLS client
    /// certificate.
    pub fn authenticates(&self) -> bool {
        self.security_protocol.sasl() || !self.ssl_certificate_location.is_empty()
    }

    /// Refuses security settings that would not do what they say: credentials that a
    /// protocol without SASL would never send, a TLS file a plain connection would
    /// never read, or a PLAIN password sent without TLS.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let protocol = self.security_protocol;
        let invalid = |m: String| Err(SettingsError::Invalid(m));
        if protocol.sasl() {
            if self.sasl_username.is_empty() || !self.sasl_password.is_set() {
                return invalid(format!(
                    "kafka.security_protocol = {:?} needs kafka.sasl_username and kafka.sasl_password",
                    protocol.name()
                ));
            }
            if self.sasl_mechanism == SaslMechanism::Plain && !protocol.tls() {
                return invalid(
                    "kafka.sasl_mechanism = \"PLAIN\" over sasl_plaintext sends the password in clear: use SCRAM-SHA-512, or sasl_ssl".into(),
                );
            }
        } else if !self.sasl_username.is_empty() || self.sasl_password.is_set() {
            return invalid(format!(
                "kafka.sasl_username or kafka.sasl_password is set, but kafka.security_protocol = {:?} never sends them (use sasl_ssl)",
                protocol.name()
            ));
        }
        let tls_files = [
            &self.ssl_ca_location,
            &self.ssl_certificate_location,
            &self.ssl_key_location,
        ];
        if !protocol.tls()
            && (tls_files.iter().any(|f| !f.is_empty()) || self.ssl_key_password.is_set())
        {
            return invalid(format!(
                "kafka.ssl_* is set, but kafka.security_protocol = {:?} is not TLS (use ssl or sasl_ssl)",
                protocol.name()
            ));
        }
        if self.ssl_certificate_location.is_empty() != self.ssl_key_location.is_empty()
            || (self.ssl_key_password.is_set() && self.ssl_key_location.is_empty())
        {
            return invalid(
                "kafka.ssl_certificate_location and kafka.ssl_key_location go together, and kafka.ssl_key_password needs the key".into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub jobs_bucket: String,
    pub reference_bucket: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// Keys the re-run draw (`sampling`).
    pub sampling_secret: Secret,
    /// Hex ed25519 seed that signs slash events (`events`).
    pub signing_key: Secret,
    /// Hex ed25519 seed that signs the audit log's head checkpoints
    /// (`review::trail::Checkpoint`); never the same as `signing_key`.
    pub audit_checkpoint_key: Secret,
    /// Hex ed25519 seed that signs reversals (`events::ReversalSigner`): the review
    /// app's only key. Never the same as `signing_key`, which the review app does not
    /// hold: the ledger trusts this key for reversals only.
    pub reversal_key: Secret,
}

impl Secrets {
    /// The signing key in `secret` (the setting `secrets.<name>`), which must not be the
    /// slash key: whoever holds it must not be able to sign a slash.
    fn key_of_its_own(
        &self,
        secret: &Secret,
        name: &str,
    ) -> Result<ed25519_dalek::SigningKey, SettingsError> {
        let key = crate::events::signing_key_from_hex(secret.expose()).map_err(|e| {
            SettingsError::Invalid(format!(
                "secrets.{name}: {e} (set PROCTOR_SECRETS__{})",
                name.to_ascii_uppercase()
            ))
        })?;
        if self.is_signing_key(&key) {
            return Err(SettingsError::Invalid(format!(
                "secrets.{name} is the slash signing key: give it a key of its own"
            )));
        }
        Ok(key)
    }

    /// Whether `key` is the slash signing key, compared as keys: the same seed written
    /// in other letter case or with other spacing is the same key.
    pub fn is_signing_key(&self, key: &ed25519_dalek::SigningKey) -> bool {
        self.signing_key.is_set()
            && crate::events::signing_key_from_hex(self.signing_key.expose())
                .is_ok_and(|k| k.to_bytes() == key.to_bytes())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub bind: SocketAddr,
}

/// How the workers batch, wait and retry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// Most messages a worker takes into one batch (one Postgres transaction).
    pub batch_size: usize,
    /// The same for `rerun`, whose jobs each wait for a reference run: small batches
    /// commit progress often, so a restart repeats little.
    pub rerun_batch_size: usize,
    /// How long a worker waits to fill a batch once it holds a message.
    pub batch_wait_ms: u64,
    /// Concurrent S3 reads per worker.
    pub fetch_concurrency: usize,
    /// The bound of the exponential backoff on transient failures.
    pub max_backoff_ms: u64,
    /// Reads of an object that S3 says is missing before the record is dead-lettered.
    pub missing_object_attempts: u32,
    /// The judge decides on a miner once its evidence has not changed for this long…
    pub judge_settle_ms: u64,
    /// …and no sampled job of its waits for a re-run, or after this long regardless.
    pub judge_max_wait_secs: u64,
    /// How often the judge and the publisher look for work when idle.
    pub poll_ms: u64,
    /// A sampled job with no re-run verdict this long after its screen verdict has its
    /// re-run request sent again by the publisher (the broker may have lost it)…
    pub rerun_owed_after_secs: u64,
    /// …at most this many times, one bound apart (0: never).
    pub rerun_resends: u32,
    /// Most outbox events one publisher transaction claims.
    pub publish_batch: i64,
    /// The publisher's switch: false holds every slash and reversal event in the
    /// outbox (the judge still decides and writes them) until it is true again.
    pub publish: bool,
    /// How often the publisher signs the audit log's head and sends the checkpoint to
    /// `kafka.audit_topic`, when `secrets.audit_checkpoint_key` is set and the log grew.
    pub audit_checkpoint_seconds: u64,
    /// Shadow mode: the judge decides as it would live but records its decisions in
    /// `shadow_decisions` only: nothing is slashed, flagged or published. For trying
    /// new rules beside a live deployment (docs/OPERATIONS.md).
    pub shadow: bool,
}

/// A string that must not be printed: its `Debug` and its serialized form show only
/// whether it is set (`<set>`, or empty).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.is_set() { "<set>" } else { "" })
    }
}

/// A URL with its password (in the user part or a `password` query parameter) masked,
/// everything else kept: what `proctor settings` shows of `database.url`.
pub fn mask_url_password(text: &str) -> String {
    let Ok(mut u) = url::Url::parse(text) else {
        return "<set, not a URL>".into();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() {
            "Secret(<set>)"
        } else {
            "Secret(<empty>)"
        })
    }
}

fn parse_file(name: &str, text: &str) -> Result<toml::Table, SettingsError> {
    text.parse::<toml::Table>()
        .map_err(|e| SettingsError::Parse {
            file: name.to_owned(),
            message: e.to_string(),
        })
}

/// Adds to an invalid value's error the file or variable that set it (the last layer
/// to set a `section.key` the error names).
fn locate(e: SettingsError, origins: &[(String, String)]) -> SettingsError {
    let SettingsError::Invalid(message) = e else {
        return e;
    };
    // The error names `section.key` (our validation) or, from serde, the key alone in
    // backquotes or quotes.
    let hit = origins.iter().rev().find(|(path, _)| {
        let key = path.split_once('.').map_or(path.as_str(), |(_, k)| k);
        message.contains(path.as_str())
            || message.contains(&format!("`{key}`"))
            || message.contains(&format!("\"{key}\""))
    });
    match hit {
        Some((path, origin)) => {
            SettingsError::Invalid(format!("{message} ({path} set by {origin})"))
        }
        None => SettingsError::Invalid(message),
    }
}

/// Overlays `top` onto `base`, table by table.
fn merge(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl Settings {
    /// Loads the layers from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        Settings::load_from(file, std::env::vars())
    }

    /// Loads the layers with an explicit environment (tests pass their own).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let mut table = parse_file("config/default.toml (built in)", DEFAULTS)?;
        // Where each `section.key` that a layer above the defaults set came from, so an
        // invalid value's error names the file or the variable to fix.
        let mut origins: Vec<(String, String)> = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Io {
                file: path.display().to_string(),
                source,
            })?;
            let name = path.display().to_string();
            let top = parse_file(&name, &text)?;
            for (section, v) in &top {
                if let toml::Value::Table(t) = v {
                    for key in t.keys() {
                        origins.push((format!("{section}.{key}"), name.clone()));
                    }
                }
            }
            merge(&mut table, top);
        }
        for (var, value) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            // Only PROCTOR_<SECTION>__<KEY> are settings; other PROCTOR_ variables (the
            // CLI's flags, the test harness's) are not.
            let Some((section, key)) = rest.split_once("__") else {
                continue;
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let Some(toml::Value::Table(sec)) = table.get_mut(&section) else {
                return Err(SettingsError::Env {
                    var,
                    message: format!("no settings section {section:?}"),
                });
            };
            // Keep the type the layer below gave the key: a port stays a number.
            let parsed = match sec.get(&key) {
                Some(toml::Value::Integer(_)) => value
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .map_err(|_| SettingsError::Env {
                        var: var.clone(),
                        message: "expected an integer".into(),
                    })?,
                Some(toml::Value::Boolean(_)) => value
                    .parse::<bool>()
                    .map(toml::Value::Boolean)
                    .map_err(|_| SettingsError::Env {
                        var: var.clone(),
                        message: "expected true or false".into(),
                    })?,
                Some(toml::Value::Float(_)) => value
                    .parse::<f64>()
                    .map(toml::Value::Float)
                    .map_err(|_| SettingsError::Env {
                        var: var.clone(),
                        message: "expected a number".into(),
                    })?,
                // A list or a table is written as a TOML value: an inline array of
                // inline tables for `reference.hosts`, an inline table for a map.
                Some(toml::Value::Array(_) | toml::Value::Table(_)) => {
                    let mut t = format!("v = {value}").parse::<toml::Table>().map_err(|e| {
                        SettingsError::Env {
                            var: var.clone(),
                            message: format!("expected a TOML inline array or table: {e}"),
                        }
                    })?;
                    t.remove("v").expect("the key just parsed")
                }
                Some(_) => toml::Value::String(value),
                None => {
                    return Err(SettingsError::Env {
                        var,
                        message: format!("no setting {key:?} in [{section}]"),
                    });
                }
            };
            origins.push((format!("{section}.{key}"), var));
            sec.insert(key, parsed);
        }
        let located = |e: SettingsError| locate(e, &origins);
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| located(SettingsError::Invalid(e.to_string())))?;
        settings.reference.validate().map_err(located)?;
        settings.review.validate().map_err(located)?;
        settings.kafka.validate().map_err(located)?;
        Ok(settings)
    }

    /// The effective settings as TOML, secrets shown only as `<set>` or empty and the
    /// database URL with its password masked: what `proctor settings` prints.
    pub fn to_toml_masked(&self) -> String {
        let mut value = toml::Value::try_from(self).expect("settings serialize to TOML");
        if let Some(db) = value
            .get_mut("database")
            .and_then(toml::Value::as_table_mut)
        {
            db.insert(
                "url".into(),
                toml::Value::String(mask_url_password(self.database.url.expose())),
            );
        }
        toml::to_string_pretty(&value).expect("a TOML table prints")
    }

    /// What the review app signs reversals with: `secrets.reversal_key`, and the slash
    /// key's public half (`review.slash_public_key`). None when the reversal key is
    /// not set (reversals are refused); an error when it is set but unusable, or is the
    /// slash key.
    pub fn reversal_signer(&self) -> Result<Option<crate::events::ReversalSigner>, SettingsError> {
        let secret = &self.secrets.reversal_key;
        if !secret.is_set() {
            return Ok(None);
        }
        let key = self.secrets.key_of_its_own(secret, "reversal_key")?;
        if self.review.slash_public_key.trim().is_empty() {
            return Err(SettingsError::Invalid(
                "secrets.reversal_key is set but review.slash_public_key is not: a reversal is signed only for a slash that verifies under the judge's key (proctor public-key)".into(),
            ));
        }
        let slash_key = crate::events::verifying_key_from_hex(&self.review.slash_public_key)
            .map_err(|e| SettingsError::Invalid(format!("review.slash_public_key: {e}")))?;
        crate::events::ReversalSigner::new(key, slash_key)
            .map(Some)
            .map_err(|e| SettingsError::Invalid(format!("secrets.reversal_key: {e}")))
    }

    /// Checks the secrets a worker needs before it starts: `screen` draws re-runs with
    /// the sampling secret, `judge` signs slash events with the signing key, and
    /// `rerun` and `publish` need neither (the outbox holds events signed already).
    pub fn require_secrets(&self, worker: &str) -> Result<(), SettingsError> {
        if worker == "screen" && !self.secrets.sampling_secret.is_set() {
            return Err(SettingsError::Invalid(
                "secrets.sampling_secret is empty (set PROCTOR_SECRETS__SAMPLING_SECRET)".into(),
            ));
        }
        let checkpoint = &self.secrets.audit_checkpoint_key;
        if worker == "publish" && checkpoint.is_set() {
            self.secrets
                .key_of_its_own(checkpoint, "audit_checkpoint_key")?;
        }
        if worker == "judge" {
            crate::events::signing_key_from_hex(self.secrets.signing_key.expose()).map_err(
                |e| {
                    SettingsError::Invalid(format!(
                        "secrets.signing_key: {e} (set PROCTOR_SECRETS__SIGNING_KEY)"
                    ))
                },
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_defaults_load() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.kafka.jobs_topic, "proctor.jobs");
        assert_eq!(s.database.max_connections, 8);
    }

    #[test]
    fn a_file_overrides_the_defaults_and_the_environment_overrides_the_file() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            f.path(),
            "[kafka]\nbrokers = \"file:1\"\ngroup_id = \"from-file\"\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(f.path()),
            env(&[
                ("PROCTOR_KAFKA__BROKERS", "env:2"),
                ("PROCTOR_DATABASE__MAX_CONNECTIONS", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.brokers, "env:2");
        assert_eq!(s.kafka.group_id, "from-file");
        assert_eq!(s.database.max_connections, 3);
        assert_eq!(s.kafka.dlq_topic, "proctor.dlq");
    }

    #[test]
    fn a_misspelt_variable_is_an_error_that_names_it() {
        let err = Settings::load_from(None, env(&[("PROCTOR_KAFKA__BROKRS", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PROCTOR_KAFKA__BROKRS") && err.contains("brokrs"),
            "{err}"
        );
        let err = Settings::load_from(None, env(&[("PROCTOR_KAFAK__BROKERS", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafak"), "{err}");
    }

    #[test]
    fn a_non_number_for_a_number_is_an_error() {
        let err = Settings::load_from(None, env(&[("PROCTOR_DATABASE__MAX_CONNECTIONS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("MAX_CONNECTIONS") && err.contains("integer"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_in_a_file_is_an_error() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "[s3]\nbucket = \"x\"\n").unwrap();
        let err = Settings::load_from(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bucket"), "{err}");
    }

    #[test]
    fn other_proctor_variables_are_not_settings() {
        let s = Settings::load_from(
            None,
            env(&[("PROCTOR_SIGNING_KEY", "x"), ("PROCTOR_CACHE", "/tmp")]),
        );
        assert!(s.is_ok());
    }

    #[test]
    fn reference_hosts_come_from_a_file_or_one_variable_and_are_validated() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            f.path(),
            r#"
[reference]
dual_share = 0.2
[[reference.hosts]]
name = "sd-1"
kind = "txt2img"
url = "http://gpu-1:7860"
models = ["sd15", "sdxl"]
concurrency = 2
queue = 32
timeout_secs = 120
seconds_per_job = 6.5
[reference.demand_per_hour]
sd15 = 1000.0
"#,
        )
        .unwrap();
        let s = Settings::load_from(Some(f.path()), env(&[])).unwrap();
        let h = &s.reference.hosts[0];
        assert_eq!((h.kind, h.concurrency, h.queue), (HostKind::Txt2img, 2, 32));
        assert_eq!(s.reference.dual_share, 0.2);
        assert_eq!(s.reference.demand_per_hour["sd15"], 1000.0);
        assert!(
            format!("{s:?}").contains("gpu-1:7860"),
            "proctor settings shows the hosts"
        );

        let s = Settings::load_from(
            Some(f.path()),
            env(&[
                (
                    "PROCTOR_REFERENCE__HOSTS",
                    r#"[{name = "llm-1", kind = "scorer", url = "http://gpu-2:8000", models = ["llama3_8b"], concurrency = 8, queue = 64, timeout_secs = 60, seconds_per_job = 0.5, tokenizer = "/srv/tok"}]"#,
                ),
                ("PROCTOR_REFERENCE__DUAL_SHARE", "0.5"),
                ("PROCTOR_REFERENCE__DEMAND_PER_HOUR", "{llama3_8b = 500.0}"),
            ]),
        )
        .unwrap();
        assert_eq!(s.reference.hosts.len(), 1);
        assert_eq!(s.reference.hosts[0].name, "llm-1");
        assert_eq!(s.reference.dual_share, 0.5);
        assert!(!s.reference.demand_per_hour.contains_key("sd15"));

        for (var, value, says) in [
            ("PROCTOR_REFERENCE__DUAL_SHARE", "1.5", "dual_share"),
            (
                "PROCTOR_REFERENCE__DUAL_SHARE",
                "half",
                "PROCTOR_REFERENCE__DUAL_SHARE",
            ),
            (
                "PROCTOR_REFERENCE__HOSTS",
                "[{name = ",
                "PROCTOR_REFERENCE__HOSTS",
            ),
            (
                "PROCTOR_REFERENCE__HOSTS",
                r#"[{name = "llm-1", kind = "scorer", url = "http://x", models = ["m"], concurrency = 1, queue = 0, timeout_secs = 1, seconds_per_job = 1.0}]"#,
                "tokenizer",
            ),
            (
                "PROCTOR_REFERENCE__HOSTS",
                r#"[{name = "a", kind = "txt2img", url = "http://x", models = ["m"], concurrency = 1, queue = 0, timeout_secs = 1, seconds_per_job = 1.0}, {name = "a", kind = "txt2img", url = "http://y", models = ["m"], concurrency = 1, queue = 0, timeout_secs = 1, seconds_per_job = 1.0}]"#,
                "two hosts",
            ),
            (
                "PROCTOR_REFERENCE__HOSTS",
                r#"[{name = "a", kind = "gpu", url = "http://x", models = ["m"], concurrency = 1, queue = 0, timeout_secs = 1, seconds_per_job = 1.0}]"#,
                "gpu",
            ),
        ] {
            let err = Settings::load_from(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{var}={value}: {err}");
        }
    }

    #[test]
    fn an_invalid_device_or_dtype_is_refused_naming_its_variable() {
        for (var, value) in [
            ("PROCTOR_REFERENCE__DEVICE", "gpu9"),
            ("PROCTOR_REFERENCE__DEVICE", "cuda:x"),
            ("PROCTOR_REFERENCE__DTYPE", "f8"),
            ("PROCTOR_REFERENCE__ATTENTION", "f64"),
        ] {
            let err = Settings::load_from(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
        }
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "[reference]\ndtype = \"f8\"\n").unwrap();
        let err = Settings::load_from(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&f.path().display().to_string()),
            "names the file: {err}"
        );
        let s = Settings::load_from(None, env(&[("PROCTOR_REFERENCE__DEVICE", "cuda:1")]));
        assert!(s.is_ok(), "a CUDA device is a valid setting on any build");
    }

    #[test]
    fn the_settings_print_as_toml_that_loads_back_with_only_passwords_masked() {
        let s = Settings::load_from(
            None,
            env(&[
                (
                    "PROCTOR_DATABASE__URL",
                    "postgres://proctor:hunter2@db.internal:5432/proctor?sslmode=require",
                ),
                ("PROCTOR_SECRETS__SIGNING_KEY", "deadbeefcafe"),
                ("PROCTOR_KAFKA__BROKERS", "k1:9092,k2:9092"),
            ]),
        )
        .unwrap();
        let text = s.to_toml_masked();
        assert!(
            !text.contains("hunter2") && !text.contains("deadbeefcafe"),
            "{text}"
        );
        assert!(
            text.contains("postgres://proctor:***@db.internal:5432/proctor?sslmode=require"),
            "{text}"
        );
        assert!(text.contains("signing_key = \"<set>\""), "{text}");
        assert!(text.contains("sampling_secret = \"\""), "{text}");
        let back: toml::Table = text.parse().expect("valid TOML");
        assert_eq!(back["kafka"]["brokers"].as_str(), Some("k1:9092,k2:9092"));
        assert_eq!(back["kafka"]["compat"].as_str(), Some("none"));
        assert_eq!(
            mask_url_password("postgres://u@h/db?password=x&a=b"),
            "postgres://u@h/db?password=***&a=b"
        );
    }

    #[test]
    fn kafka_security_that_would_not_do_what_it_says_is_refused() {
        let load = |pairs: &[(&str, &str)]| Settings::load_from(None, env(pairs));
        let sasl = [
            ("PROCTOR_KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
            ("PROCTOR_KAFKA__SASL_USERNAME", "proctor-judge"),
            ("PROCTOR_KAFKA__SASL_PASSWORD", "hunter2"),
        ];
        let s = load(&sasl).unwrap();
        assert!(s.kafka.authenticates());
        assert_eq!(s.kafka.sasl_mechanism, SaslMechanism::ScramSha512);
        assert!(!load(&[]).unwrap().kafka.authenticates());
        let refused = |pairs: &[(&str, &str)], says: &str| {
            let err = load(pairs).unwrap_err().to_string();
            assert!(err.contains(says), "{pairs:?}: {err}");
        };
        // SASL without its password.
        refused(
            &sasl[..2],
            "needs kafka.sasl_username and kafka.sasl_password",
        );
        // A password that plaintext would never send: the operator meant to authenticate.
        refused(&sasl[1..], "never sends them");
        // PLAIN's password in clear.
        refused(
            &[
                ("PROCTOR_KAFKA__SECURITY_PROTOCOL", "sasl_plaintext"),
                ("PROCTOR_KAFKA__SASL_MECHANISM", "PLAIN"),
                sasl[1],
                sasl[2],
            ],
            "sends the password in clear",
        );
        refused(
            &[("PROCTOR_KAFKA__SSL_CA_LOCATION", "/etc/ssl/kafka-ca.pem")],
            "is not TLS",
        );
        refused(
            &[
                ("PROCTOR_KAFKA__SECURITY_PROTOCOL", "ssl"),
                (
                    "PROCTOR_KAFKA__SSL_CERTIFICATE_LOCATION",
                    "/etc/proctor/client.pem",
                ),
            ],
            "go together",
        );
        refused(
            &[("PROCTOR_KAFKA__SECURITY_PROTOCOL", "tls")],
            "security_protocol",
        );
        let mtls = load(&[
            ("PROCTOR_KAFKA__SECURITY_PROTOCOL", "ssl"),
            (
                "PROCTOR_KAFKA__SSL_CERTIFICATE_LOCATION",
                "/etc/proctor/client.pem",
            ),
            ("PROCTOR_KAFKA__SSL_KEY_LOCATION", "/etc/proctor/client.key"),
        ])
        .unwrap();
        assert!(mtls.kafka.authenticates());
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::load_from(
            None,
            env(&[
                ("PROCTOR_SECRETS__SIGNING_KEY", "deadbeefcafe"),
                ("PROCTOR_S3__SECRET_ACCESS_KEY", "hunter2"),
            ]),
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("deadbeefcafe") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("Secret(<set>)"));
    }

    #[test]
    fn the_review_app_signs_reversals_with_a_key_of_their_own_never_the_slash_key() {
        let slash_seed = "42".repeat(32);
        let slash_public = hex::encode(
            crate::events::signing_key_from_hex(&slash_seed)
                .unwrap()
                .verifying_key()
                .as_bytes(),
        );
        let load = |pairs: &[(&str, &str)]| Settings::load_from(None, env(pairs)).unwrap();
        // No reversal key: no signer, and reversals are refused.
        assert!(load(&[]).reversal_signer().unwrap().is_none());
        let (reversal, upper_slash) = ("43".repeat(32), "42".repeat(32).to_uppercase());
        for (pairs, says) in [
            (
                vec![("PROCTOR_SECRETS__REVERSAL_KEY", reversal.as_str())],
                "review.slash_public_key is not",
            ),
            (
                vec![
                    ("PROCTOR_SECRETS__REVERSAL_KEY", "xyz"),
                    ("PROCTOR_REVIEW__SLASH_PUBLIC_KEY", slash_public.as_str()),
                ],
                "secrets.reversal_key: ",
            ),
            // The slash key itself, in the settings beside it or only as its public half.
            (
                vec![
                    ("PROCTOR_SECRETS__SIGNING_KEY", slash_seed.as_str()),
                    ("PROCTOR_SECRETS__REVERSAL_KEY", upper_slash.as_str()),
                    ("PROCTOR_REVIEW__SLASH_PUBLIC_KEY", slash_public.as_str()),
                ],
                "is the slash signing key",
            ),
            (
                vec![
                    ("PROCTOR_SECRETS__REVERSAL_KEY", slash_seed.as_str()),
                    ("PROCTOR_REVIEW__SLASH_PUBLIC_KEY", slash_public.as_str()),
                ],
                "is the slash signing key",
            ),
            (
                vec![
                    ("PROCTOR_SECRETS__REVERSAL_KEY", reversal.as_str()),
                    ("PROCTOR_REVIEW__SLASH_PUBLIC_KEY", "00"),
                ],
                "review.slash_public_key: ",
            ),
        ] {
            let err = load(&pairs).reversal_signer().unwrap_err().to_string();
            assert!(err.contains(says), "{pairs:?}: {err}");
        }
        let signer = load(&[
            ("PROCTOR_SECRETS__REVERSAL_KEY", reversal.as_str()),
            ("PROCTOR_REVIEW__SLASH_PUBLIC_KEY", slash_public.as_str()),
        ])
        .reversal_signer()
        .unwrap()
        .unwrap();
        assert_eq!(hex::encode(signer.slash_key().as_bytes()), slash_public);
    }

    #[test]
    fn each_worker_requires_only_the_secret_it_uses() {
        let missing = Settings::load_from(None, env(&[])).unwrap();
        assert!(
            missing
                .require_secrets("screen")
                .unwrap_err()
                .to_string()
                .contains("SAMPLING_SECRET")
        );
        assert!(
            missing
                .require_secrets("judge")
                .unwrap_err()
                .to_string()
                .contains("SIGNING_KEY")
        );
        assert!(missing.require_secrets("rerun").is_ok());
        assert!(missing.require_secrets("publish").is_ok());
        // The publisher's checkpoint key, when set, must be a key, and not the slash key,
        // however its letters are written.
        let (slash_key, lower, upper) = ("42".repeat(32), "ab".repeat(32), "AB".repeat(32));
        for (signing, value, says) in [
            (slash_key.as_str(), "xyz", "audit_checkpoint_key: "),
            (
                slash_key.as_str(),
                slash_key.as_str(),
                "is the slash signing key",
            ),
            (lower.as_str(), upper.as_str(), "is the slash signing key"),
        ] {
            let s = Settings::load_from(
                None,
                env(&[
                    ("PROCTOR_SECRETS__SIGNING_KEY", signing),
                    ("PROCTOR_SECRETS__AUDIT_CHECKPOINT_KEY", value),
                ]),
            )
            .unwrap();
            let err = s.require_secrets("publish").unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        let bad_key = Settings::load_from(
            None,
            env(&[
                ("PROCTOR_SECRETS__SAMPLING_SECRET", "s"),
                ("PROCTOR_SECRETS__SIGNING_KEY", "abc"),
            ]),
        )
        .unwrap();
        assert!(bad_key.require_secrets("screen").is_ok());
        assert!(
            bad_key
                .require_secrets("judge")
                .unwrap_err()
                .to_string()
                .contains("signing_key")
        );
        let good = Settings::load_from(
            None,
            env(&[
                ("PROCTOR_SECRETS__SAMPLING_SECRET", "s"),
                ("PROCTOR_SECRETS__SIGNING_KEY", &"42".repeat(32)),
            ]),
        )
        .unwrap();
        assert!(good.require_secrets("judge").is_ok());
    }
}

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

use serde::Deserialize;

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

#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
}

/// The `rerun` worker's reference LLM.
#[derive(Debug, Clone, Deserialize)]
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
}

impl ReferenceSettings {
    pub fn numerics(&self) -> Result<crate::llm::model::Numerics, SettingsError> {
        crate::llm::model::Numerics::parse(&self.dtype, &self.attention)
            .map_err(|e| SettingsError::Invalid(format!("reference: {e}")))
    }

    pub fn device(&self) -> Result<candle_core::Device, SettingsError> {
        crate::llm::device(&self.device)
            .map_err(|e| SettingsError::Invalid(format!("reference.device: {e}")))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    /// librdkafka's idempotent producer; see `kafka::producer` for why it is off for
    /// tansu 0.6.
    pub idempotence: bool,
    pub group_id: String,
    pub jobs_topic: String,
    pub rerun_topic: String,
    pub dlq_topic: String,
    pub slashes_topic: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub jobs_bucket: String,
    pub reference_bucket: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// Keys the re-run draw (`sampling`).
    pub sampling_secret: Secret,
    /// Hex ed25519 seed that signs slash events (`events`).
    pub signing_key: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub bind: SocketAddr,
}

/// How the workers batch, wait and retry.
#[derive(Debug, Clone, Deserialize)]
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
    /// Most outbox events one publisher transaction claims.
    pub publish_batch: i64,
}

/// A string that must not be printed: its `Debug` shows only whether it is set.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

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
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Io {
                file: path.display().to_string(),
                source,
            })?;
            merge(&mut table, parse_file(&path.display().to_string(), &text)?);
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
                Some(_) => toml::Value::String(value),
                None => {
                    return Err(SettingsError::Env {
                        var,
                        message: format!("no setting {key:?} in [{section}]"),
                    });
                }
            };
            sec.insert(key, parsed);
        }
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| SettingsError::Invalid(e.to_string()))?;
        Ok(settings)
    }

    /// Checks what a worker needs before it starts: both secrets set and well-formed.
    pub fn require_secrets(&self) -> Result<(), SettingsError> {
        if !self.secrets.sampling_secret.is_set() {
            return Err(SettingsError::Invalid(
                "secrets.sampling_secret is empty (set PROCTOR_SECRETS__SAMPLING_SECRET)".into(),
            ));
        }
        crate::events::signing_key_from_hex(self.secrets.signing_key.expose()).map_err(|e| {
            SettingsError::Invalid(format!(
                "secrets.signing_key: {e} (set PROCTOR_SECRETS__SIGNING_KEY)"
            ))
        })?;
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
    fn workers_require_both_secrets() {
        let missing = Settings::load_from(None, env(&[])).unwrap();
        assert!(
            missing
                .require_secrets()
                .unwrap_err()
                .to_string()
                .contains("SAMPLING_SECRET")
        );
        let bad_key = Settings::load_from(
            None,
            env(&[
                ("PROCTOR_SECRETS__SAMPLING_SECRET", "s"),
                ("PROCTOR_SECRETS__SIGNING_KEY", "abc"),
            ]),
        )
        .unwrap();
        assert!(
            bad_key
                .require_secrets()
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
        assert!(good.require_secrets().is_ok());
    }
}

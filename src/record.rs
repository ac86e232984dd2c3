//! The job record: what the network's job service publishes for every completed job, and
//! the only way miner-controlled data enters proctor.
//!
//! Parsing is strict (unknown fields and enum values are errors) and every error names the
//! field it is about. Parsing never panics, whatever the bytes. Semantic plausibility (is
//! the latency possible, is the image the right size) is not judged here: that is the job
//! of the checks, which can say `Fail` about the miner. A record that does not parse is
//! the job service's fault, not the miner's, and goes to the dead-letter path.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{JobId, MinerId, ModelId, ObjectKey};

/// The record schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Hard ceiling on a whole record, checked before any parsing, by the screen worker and
/// by `proctor audit` alike. Kafka's default `message.max.bytes` (1 MB) is lower
/// still; this protects the parser from a broker configured otherwise.
pub const MAX_RECORD_BYTES: usize = 4 << 20;

/// Hard ceiling on inline LLM text in a record: below the record's own, so that a
/// record holding it still fits. The rules set a lower, policy limit that turns into
/// an `invalid` verdict; this one only protects the parser.
pub const MAX_INLINE_TEXT_BYTES: usize = 3 << 20;

/// How deeply arrays and objects may nest in a record: what serde_json's recursion limit
/// (128) admits, enforced while parsing (a record itself nests four deep). Past it the
/// parse fails with `recursion limit exceeded`, never with a stack overflow.
pub const MAX_JSON_DEPTH: usize = 127;

/// The longest `metrics.hardware` string, in bytes.
pub const MAX_HARDWARE_BYTES: usize = 256;

/// The longest `metrics.miner_version` string, in bytes.
pub const MAX_MINER_VERSION_BYTES: usize = 64;

/// The most entries of `input.stop` (the miner sends four).
pub const MAX_STOP_WORDS: usize = 16;

/// The longest entry of `input.stop`, in bytes.
pub const MAX_STOP_WORD_BYTES: usize = 64;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not JSON, or the JSON is not a job record.
    #[error("{}", malformed(path, message))]
    Malformed { path: String, message: String },
    #[error("field {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// What a malformed record's error says: what is wrong, where.
fn malformed(path: &str, message: &str) -> String {
    // serde_json's own wording for bytes that are not JSON, or JSON that stops short.
    let not_json = [
        "expected value",
        "expected `",
        "trailing characters",
        "control character",
        "invalid escape",
        "invalid unicode",
        "key must be a string",
        "invalid number",
        "lone leading surrogate",
    ];
    // serde_path_to_error writes the root as `.` and an unknown place as `?`.
    let path = path
        .trim_end_matches('?')
        .trim_end_matches('.')
        .trim_start_matches('.');
    if message.starts_with("EOF while parsing") {
        format!("not a whole JSON object (it ends early, {message})")
    } else if not_json.iter().any(|p| message.starts_with(p)) {
        format!("not valid JSON ({message})")
    } else if path.is_empty() {
        format!("not a job record: {message}")
    } else {
        format!("field {path}: {message}")
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> RecordError {
    RecordError::Invalid {
        field,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Sd,
    Llm,
}

/// A validated job record.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job_id: JobId,
    pub miner_id: MinerId,
    pub model_id: ModelId,
    pub submitted_at: DateTime<Utc>,
    pub job: Job,
    pub metrics: Metrics,
    pub challenge: Option<ChallengeResponse>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Sd { input: SdInput, output: SdOutput },
    Llm { input: LlmInput, output: LlmOutput },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdInput {
    pub prompt: String,
    #[serde(default)]
    pub neg_prompt: String,
    pub width: u32,
    pub height: u32,
    pub num_iterations: u32,
    pub guidance_scale: f64,
    /// `-1` asks the miner for a random seed, which makes a reference re-run meaningless.
    pub seed: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdOutput {
    pub image_key: ObjectKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The role's name in the chat API (serde's name too).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmInput {
    /// The chat as the job service meant it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    /// A completion prompt (`/v1/completions`), not a chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The job's encoded `prompt` string exactly as the job service sent it to the miner
    /// (`model_input.LLM.prompt`). The miner decodes it into the messages its server
    /// sees (`crate::llm::miner`), so the reference scores those, quirks and all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_prompt: Option<String>,
    pub temperature: f64,
    pub max_tokens: u32,
    /// `-1` asks for no seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Whether the job asked for a streamed answer (`use_stream`): the miner re-chunks
    /// a stream and appends a space after its last piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_stream: Option<bool>,
    /// The stop words the miner sent its server; absent, the miner's own four.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
}

impl LlmInput {
    /// The text a canary is matched on: the plain prompt, the last user message, or
    /// the raw prompt of a chat that came without its messages.
    pub fn probe_text(&self) -> &str {
        if let Some(p) = &self.prompt {
            return p;
        }
        match &self.messages {
            Some(messages) => messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map_or("", |m| m.content.as_str()),
            None => self.raw_prompt.as_deref().unwrap_or(""),
        }
    }

    /// Every character of input the model had to read, for token estimates: the
    /// messages, else the raw prompt they were encoded in, and a completion prompt.
    pub fn input_chars(&self) -> usize {
        let chat = match (&self.messages, &self.raw_prompt) {
            (Some(msgs), _) => msgs.iter().map(|m| m.content.chars().count()).sum(),
            (None, Some(raw)) => raw.chars().count(),
            (None, None) => 0,
        };
        chat + self.prompt.as_deref().map_or(0, |p| p.chars().count())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_key: Option<ObjectKey>,
    /// Per-token logprobs, only where the miner's software reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<f64>>,
}

/// What the miner reported about itself. Seconds throughout, as the miners report them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub request_latency: f64,
    pub loading_latency: Option<f64>,
    pub inference_latency: f64,
    pub upload_latency: f64,
    pub hardware: String,
    pub miner_version: String,
}

/// The miner's answer to a model-file byte-range challenge (see `checks::model_file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeResponse {
    /// Hex, issued by the job service from proctor's secret.
    pub nonce: String,
    /// The model file the challenge is about, as named in the models registry.
    pub file: String,
    /// Hex BLAKE3 keyed hash of the derived byte range, as computed by the miner.
    pub answer: String,
}

/// The record as it travels on the wire; `input` and `output` depend on `kind`, so they
/// are parsed in a second step that knows which shape to expect.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRecord {
    schema_version: u32,
    job_id: JobId,
    miner_id: MinerId,
    model_id: ModelId,
    kind: JobKind,
    submitted_at: DateTime<Utc>,
    input: Value,
    output: Value,
    metrics: Metrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    challenge: Option<ChallengeResponse>,
}

fn parse_part<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: Value,
) -> Result<T, RecordError> {
    serde_path_to_error::deserialize(value).map_err(|e| RecordError::Malformed {
        path: format!("{prefix}.{}", e.path()),
        message: e.into_inner().to_string(),
    })
}

impl JobRecord {
    /// Parses and validates one record. Never panics, whatever the bytes.
    pub fn from_json(bytes: &[u8]) -> Result<JobRecord, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::Malformed {
                path: String::new(),
                message: format!(
                    "the record is {} bytes, over the {MAX_RECORD_BYTES}-byte limit",
                    bytes.len()
                ),
            });
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let wire: WireRecord =
            serde_path_to_error::deserialize(de).map_err(|e| RecordError::Malformed {
                path: e.path().to_string(),
                message: e.into_inner().to_string(),
            })?;
        if wire.schema_version != SCHEMA_VERSION {
            return Err(invalid(
                "schema_version",
                format!(
                    "version {} is not supported (this build reads {SCHEMA_VERSION})",
                    wire.schema_version
                ),
            ));
        }
        let job = match wire.kind {
            JobKind::Sd => Job::Sd {
                input: parse_part("input", wire.input)?,
                output: parse_part("output", wire.output)?,
            },
            JobKind::Llm => Job::Llm {
                input: parse_part("input", wire.input)?,
                output: parse_part("output", wire.output)?,
            },
        };
        let record = JobRecord {
            job_id: wire.job_id,
            miner_id: wire.miner_id,
            model_id: wire.model_id,
            submitted_at: wire.submitted_at,
            job,
            metrics: wire.metrics,
            challenge: wire.challenge,
        };
        record.validate()?;
        Ok(record)
    }

    pub fn to_json(&self) -> Value {
        let (input, output) = match &self.job {
            Job::Sd { input, output } => (to_value(input), to_value(output)),
            Job::Llm { input, output } => (to_value(input), to_value(output)),
        };
        to_value(&WireRecord {
            schema_version: SCHEMA_VERSION,
            job_id: self.job_id.clone(),
            miner_id: self.miner_id.clone(),
            model_id: self.model_id.clone(),
            kind: self.kind(),
            submitted_at: self.submitted_at,
            input,
            output,
            metrics: self.metrics.clone(),
            challenge: self.challenge.clone(),
        })
    }

    pub fn kind(&self) -> JobKind {
        match self.job {
            Job::Sd { .. } => JobKind::Sd,
            Job::Llm { .. } => JobKind::Llm,
        }
    }

    /// A digest of everything that determines the job's correct output. Two jobs with the
    /// same digest may legitimately return the same output; two with different digests
    /// may not (see `checks::reuse`).
    pub fn input_digest(&self) -> blake3::Hash {
        let input = match &self.job {
            Job::Sd { input, .. } => to_value(input),
            Job::Llm { input, .. } => {
                let mut v = to_value(input);
                // Greedy decoding ignores the seed: two greedy runs of one prompt are the
                // same job, whatever seed the job service attached.
                if input.temperature == 0.0
                    && let Some(m) = v.as_object_mut()
                {
                    m.remove("seed");
                }
                v
            }
        };
        let canonical = serde_json::json!({ "model_id": self.model_id, "input": input });
        blake3::hash(canonical.to_string().as_bytes())
    }

    fn validate(&self) -> Result<(), RecordError> {
        let m = &self.metrics;
        for (field, v) in [
            ("metrics.request_latency", Some(m.request_latency)),
            ("metrics.loading_latency", m.loading_latency),
            ("metrics.inference_latency", Some(m.inference_latency)),
            ("metrics.upload_latency", Some(m.upload_latency)),
        ] {
            if let Some(v) = v
                && !v.is_finite()
            {
                return Err(invalid(field, format!("{v} is not a finite number")));
            }
        }
        if m.hardware.len() > MAX_HARDWARE_BYTES {
            return Err(invalid(
                "metrics.hardware",
                format!("longer than {MAX_HARDWARE_BYTES} bytes"),
            ));
        }
        if m.miner_version.len() > MAX_MINER_VERSION_BYTES {
            return Err(invalid(
                "metrics.miner_version",
                format!("longer than {MAX_MINER_VERSION_BYTES} bytes"),
            ));
        }
        if let Some(c) = &self.challenge {
            if c.nonce.is_empty() || c.nonce.len() > 128 || hex::decode(&c.nonce).is_err() {
                return Err(invalid("challenge.nonce", "expected 1 to 64 bytes as hex"));
            }
            if c.file.is_empty() || c.file.len() > 256 {
                return Err(invalid("challenge.file", "expected 1 to 256 bytes"));
            }
            if c.answer.len() > 128 {
                return Err(invalid("challenge.answer", "longer than 128 characters"));
            }
        }
        match &self.job {
            Job::Sd { input, .. } => {
                if !(1..=16384).contains(&input.width) {
                    return Err(invalid("input.width", "expected 1 to 16384"));
                }
                if !(1..=16384).contains(&input.height) {
                    return Err(invalid("input.height", "expected 1 to 16384"));
                }
                if !(1..=1000).contains(&input.num_iterations) {
                    return Err(invalid("input.num_iterations", "expected 1 to 1000"));
                }
                if !input.guidance_scale.is_finite()
                    || !(0.0..=100.0).contains(&input.guidance_scale)
                {
                    return Err(invalid("input.guidance_scale", "expected 0 to 100"));
                }
                if input.seed < -1 {
                    return Err(invalid("input.seed", "expected -1 (random) or a seed >= 0"));
                }
            }
            Job::Llm { input, output } => {
                let chat = input.messages.is_some() || input.raw_prompt.is_some();
                if chat == input.prompt.is_some() {
                    return Err(invalid(
                        "input.messages",
                        "exactly one of a chat (input.messages, input.raw_prompt or both) and input.prompt is required",
                    ));
                }
                if input.messages.as_ref().is_some_and(Vec::is_empty) {
                    return Err(invalid("input.messages", "is empty"));
                }
                if let Some(problem) = input.stop.as_deref().and_then(stop_words_problem) {
                    return Err(invalid("input.stop", problem));
                }
                if !input.temperature.is_finite() || !(0.0..=2.0).contains(&input.temperature) {
                    return Err(invalid("input.temperature", "expected 0 to 2"));
                }
                if !(1..=131072).contains(&input.max_tokens) {
                    return Err(invalid("input.max_tokens", "expected 1 to 131072"));
                }
                match (&output.text, &output.text_key) {
                    (Some(_), Some(_)) | (None, None) => {
                        return Err(invalid(
                            "output.text",
                            "exactly one of output.text and output.text_key is required",
                        ));
                    }
                    (Some(t), None) if t.len() > MAX_INLINE_TEXT_BYTES => {
                        return Err(invalid(
                            "output.text",
                            format!("inline text larger than {MAX_INLINE_TEXT_BYTES} bytes"),
                        ));
                    }
                    _ => {}
                }
                if let Some(lps) = &output.logprobs
                    && lps.iter().any(|lp| !lp.is_finite() || *lp > 0.0)
                {
                    return Err(invalid(
                        "output.logprobs",
                        "every logprob must be finite and <= 0",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What is wrong with a stop list, if anything: at most [`MAX_STOP_WORDS`] words of 1
/// to [`MAX_STOP_WORD_BYTES`] bytes (the record's `input.stop`, serve-reference's
/// `proctor_stop`).
pub fn stop_words_problem(stop: &[String]) -> Option<String> {
    if stop.len() > MAX_STOP_WORDS {
        return Some(format!("more than {MAX_STOP_WORDS} stop words"));
    }
    if stop
        .iter()
        .any(|w| w.is_empty() || w.len() > MAX_STOP_WORD_BYTES)
    {
        return Some(format!(
            "every stop word must be 1 to {MAX_STOP_WORD_BYTES} bytes"
        ));
    }
    None
}

fn to_value<T: Serialize>(v: &T) -> Value {
    // Serializing these plain structs cannot fail: every map key is a string.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sd_json() -> Value {
        serde_json::json!({
            "schema_version": 1,
            "job_id": "sd-1",
            "miner_id": "0x00000000000000000000000000000000000000aa-gpu0",
            "model_id": "AnimagineXL",
            "kind": "sd",
            "submitted_at": "2026-11-20T12:00:00Z",
            "input": {"prompt": "a cat", "neg_prompt": "", "width": 1024, "height": 1024,
                      "num_iterations": 25, "guidance_scale": 7.0, "seed": 42},
            "output": {"image_key": "jobs/sd-1.png"},
            "metrics": {"request_latency": 6.0, "loading_latency": null, "inference_latency": 4.0,
                        "upload_latency": 0.5, "hardware": "NVIDIA GeForce RTX 4090",
                        "miner_version": "1.0.0"}
        })
    }

    fn parse(v: &Value) -> Result<JobRecord, RecordError> {
        JobRecord::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn a_valid_sd_record_round_trips() {
        let rec = parse(&sd_json()).unwrap();
        assert_eq!(rec.kind(), JobKind::Sd);
        assert_eq!(parse(&rec.to_json()).unwrap(), rec);
    }

    #[test]
    fn an_unknown_field_is_named_in_the_error() {
        let mut v = sd_json();
        v["input"]["sampler"] = "euler".into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("input") && err.contains("sampler"), "{err}");
    }

    #[test]
    fn a_malformed_record_says_what_is_wrong_in_plain_words() {
        let say = |bytes: &[u8]| JobRecord::from_json(bytes).unwrap_err().to_string();
        let cut = sd_json().to_string();
        let truncated = say(&cut.as_bytes()[..45]);
        assert!(
            truncated.starts_with("not a whole JSON object (it ends early"),
            "{truncated}"
        );
        assert!(say(b"garbage").starts_with("not valid JSON ("), "garbage");
        let number = say(b"42");
        assert!(number.starts_with("not a job record: "), "{number}");
        let mut v = sd_json();
        v["input"]["width"] = "wide".into();
        let field = parse(&v).unwrap_err().to_string();
        assert!(field.starts_with("field input.width: "), "{field}");
        assert!(!field.contains('?'), "{field}");
    }

    #[test]
    fn an_unknown_kind_is_rejected() {
        let mut v = sd_json();
        v["kind"] = "video".into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("kind"), "{err}");
    }

    #[test]
    fn a_wrongly_typed_number_names_its_path() {
        let mut v = sd_json();
        v["input"]["width"] = "1024".into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("input.width"), "{err}");
    }

    #[test]
    fn a_bad_miner_id_is_named_in_the_error() {
        let mut v = sd_json();
        v["miner_id"] = "bob".into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("miner_id"), "{err}");
    }

    #[test]
    fn an_llm_record_needs_exactly_one_of_prompt_and_messages() {
        let mut v = sd_json();
        v["kind"] = "llm".into();
        v["model_id"] = "hermes-3-llama3.1-8b".into();
        v["input"] = serde_json::json!({"temperature": 0.7, "max_tokens": 64});
        v["output"] = serde_json::json!({"text": "hi"});
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("input.messages"), "{err}");
        v["input"]["prompt"] = "hello".into();
        assert!(parse(&v).is_ok());
    }

    #[test]
    fn garbage_bytes_are_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"{",
            b"\xff\xfe",
            b"[]",
            b"null",
            b"{\"job_id\": 1e999}",
        ] {
            assert!(JobRecord::from_json(bytes).is_err());
        }
    }

    #[test]
    fn the_input_digest_ignores_the_output() {
        let a = parse(&sd_json()).unwrap();
        let mut v = sd_json();
        v["output"]["image_key"] = "jobs/other.png".into();
        v["job_id"] = "sd-2".into();
        let b = parse(&v).unwrap();
        assert_eq!(a.input_digest(), b.input_digest());
        v["input"]["seed"] = 43.into();
        assert_ne!(a.input_digest(), parse(&v).unwrap().input_digest());
    }

    #[test]
    fn greedy_llm_jobs_ignore_the_seed_in_their_input_digest() {
        let mut v = sd_json();
        v["kind"] = "llm".into();
        v["model_id"] = "hermes-3-llama3.1-8b".into();
        v["input"] =
            serde_json::json!({"prompt": "hi", "temperature": 0.0, "max_tokens": 64, "seed": 1});
        v["output"] = serde_json::json!({"text": "hello"});
        let a = parse(&v).unwrap();
        v["input"]["seed"] = 2.into();
        assert_eq!(a.input_digest(), parse(&v).unwrap().input_digest());
        v["input"]["temperature"] = 0.7.into();
        let hot1 = parse(&v).unwrap();
        v["input"]["seed"] = 1.into();
        assert_ne!(hot1.input_digest(), parse(&v).unwrap().input_digest());
    }
}

//! The reference side of a re-run, as a port ([`ReferenceRunner`]) and its two
//! adapters: [`HostRunner`] dispatches each job to the reference hosts of the settings
//! ([`super::pool`]): SD jobs to a txt2img host, LLM jobs to a scorer (vLLM, `proctor
//! serve-reference`) or to a candle scorer in the process, and writes what a host
//! returned to `reference/<job_id>/{image.png|image.jpg, scores.json}` in the reference
//! bucket, so audit, review and replay read the same bytes. A job whose model no host
//! serves reads those files as another system left them ([`S3Reference`]), and so does
//! every challenge answer (`challenge.json`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::pool::{Drift, Output, Pool, Priority, Work};
use crate::checks::llm::TokenScores;
use crate::checks::model_file::ChallengeExpectation;
use crate::checks::{Object, output_text};
use crate::llm::Scorer;
use crate::llm::miner;
use crate::llm::panel::Panel;
use crate::llm::service::ScoringService;
use crate::objects::{Got, ObjectError, ObjectStore};
use crate::record::{Job, JobRecord};
use crate::rules::Rules;
use crate::settings::{HostKind, HostSettings, ReferenceSettings};
use crate::telemetry::ReferenceMetrics;

/// What a reference run produced for one job. Every part is optional: a job without a
/// fixed seed has no comparable image, an SD job has no token scores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reference {
    pub image: Option<Vec<u8>>,
    pub scores: Option<TokenScores>,
    pub challenge: Option<ChallengeExpectation>,
    /// Why a job sent to reference hosts has no image or scores.
    pub note: Option<String>,
    /// Reference GPU-seconds the hosts spent on the job.
    pub seconds: Option<f64>,
    /// Reference-vs-reference comparisons made on the job.
    pub drift: Vec<Drift>,
}

/// Why a reference output could not be had.
#[derive(Debug, Clone, PartialEq)]
pub enum ReferenceError {
    /// The reference side is down or failing (a reference GPU, the object store): retried;
    /// it delays the verdict and never produces one.
    Unavailable(String),
    /// The reference side refuses this job's request for what it is (an object store's
    /// 400-class answer): no retry can help, so the job becomes a `reference_refused`
    /// dead letter and the partition moves on.
    Refused(String),
}

impl std::fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReferenceError::Unavailable(e) => write!(f, "reference unavailable: {e}"),
            ReferenceError::Refused(e) => write!(f, "reference refused: {e}"),
        }
    }
}

impl From<ObjectError> for ReferenceError {
    fn from(e: ObjectError) -> Self {
        if e.refused {
            ReferenceError::Refused(e.to_string())
        } else {
            ReferenceError::Unavailable(e.to_string())
        }
    }
}

/// Produces reference outputs.
pub trait ReferenceRunner: Send + Sync + 'static {
    /// `output` is the miner's output as fetched from S3, where the record points to
    /// one (an LLM job's text when it is not inline).
    fn reference(
        &self,
        record: &JobRecord,
        output: Option<&Object>,
        priority: Priority,
    ) -> impl Future<Output = Result<Reference, ReferenceError>> + Send;
}

/// Reference outputs a reference host uploaded to S3.
pub struct S3Reference {
    pub objects: ObjectStore,
    pub bucket: String,
    pub max_image_bytes: u64,
}

/// Token-score and challenge files are small; anything larger is not ours.
const MAX_REFERENCE_JSON_BYTES: u64 = 64 << 20;

impl S3Reference {
    async fn get(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, ObjectError> {
        Ok(
            match self.objects.get_bounded(&self.bucket, key, limit).await? {
                Got::Found(b) if b.len() as u64 <= limit => Some(b),
                Got::Found(_) => {
                    tracing::warn!(key, "reference object over its size bound, ignored");
                    None
                }
                Got::NotFound => None,
            },
        )
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, ObjectError> {
        Ok(self.get(key, MAX_REFERENCE_JSON_BYTES).await?.and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| tracing::warn!(key, error = %e, "reference file does not parse, ignored"))
                .ok()
        }))
    }

    fn prefix(record: &JobRecord) -> String {
        format!("reference/{}", record.job_id.as_str())
    }

    /// The reference answer to the job's challenge, for any kind of job; none is
    /// looked for when the miner answered no challenge (the check runs only then).
    async fn challenge(
        &self,
        record: &JobRecord,
    ) -> Result<Option<ChallengeExpectation>, ReferenceError> {
        if record.challenge.is_none() {
            return Ok(None);
        }
        Ok(self
            .json(&format!("{}/challenge.json", Self::prefix(record)))
            .await?)
    }
}

impl ReferenceRunner for S3Reference {
    /// What the job's kind compares: the image for SD, the scores for LLM.
    async fn reference(
        &self,
        record: &JobRecord,
        _: Option<&Object>,
        _: Priority,
    ) -> Result<Reference, ReferenceError> {
        let prefix = Self::prefix(record);
        let mut reference = Reference {
            challenge: self.challenge(record).await?,
            ..Reference::default()
        };
        match &record.job {
            Job::Sd { .. } => {
                for name in ["image.png", "image.jpg"] {
                    reference.image = self
                        .get(&format!("{prefix}/{name}"), self.max_image_bytes)
                        .await?;
                    if reference.image.is_some() {
                        break;
                    }
                }
            }
            Job::Llm { .. } => {
                reference.scores = self.json(&format!("{prefix}/scores.json")).await?;
            }
        }
        Ok(reference)
    }
}

/// Jobs re-run on the reference hosts ([`Pool`]); those whose model no host serves,
/// and every challenge answer, from the reference bucket ([`S3Reference`]).
pub struct HostRunner {
    pub pool: Arc<Pool>,
    pub s3: S3Reference,
    pub rules: Rules,
}

impl HostRunner {
    /// Stores a host's output where audit, review and replay read it.
    async fn keep(
        &self,
        record: &JobRecord,
        name: &str,
        body: Vec<u8>,
    ) -> Result<(), ReferenceError> {
        let key = format!("reference/{}/{name}", record.job_id.as_str());
        self.s3.objects.put(&self.s3.bucket, &key, body).await?;
        Ok(())
    }
}

impl ReferenceRunner for HostRunner {
    async fn reference(
        &self,
        record: &JobRecord,
        output: Option<&Object>,
        priority: Priority,
    ) -> Result<Reference, ReferenceError> {
        let scored;
        let work = match &record.job {
            // A random seed cannot be reproduced: no GPU time is spent on it.
            Job::Sd { input, .. } if input.seed < 0 => None,
            Job::Sd { input, .. } => Some(Work::Image(input)),
            Job::Llm {
                input,
                output: llm_output,
            } => {
                // No text to score (missing, not UTF-8, too long), or a job the miner's
                // server never ran as written: the checks say so.
                let text = output_text(llm_output, output, &self.rules.checks.llm).ok();
                scored = text.and_then(|t| {
                    let (served, generated) = miner::as_generated(
                        record.model_id.as_str(),
                        &record.metrics.miner_version,
                        input,
                        &t,
                    )
                    .ok()?;
                    Some((served, generated.to_owned()))
                });
                scored
                    .as_ref()
                    .map(|(input, text)| Work::Scores { input, text })
            }
        };
        // Not for a host: what the reference bucket holds, as another system left it.
        let Some(work) = work.filter(|w| self.pool.serves(record, w)) else {
            return self.s3.reference(record, output, priority).await;
        };
        let mut reference = Reference {
            challenge: self.s3.challenge(record).await?,
            ..Reference::default()
        };
        let Some(ran) = self.pool.run(record, work, priority).await else {
            return self.s3.reference(record, output, priority).await;
        };
        match ran.output {
            Some(Output::Image(bytes)) => {
                let name = match ::image::guess_format(&bytes) {
                    Ok(::image::ImageFormat::Jpeg) => "image.jpg",
                    _ => "image.png",
                };
                self.keep(record, name, bytes.clone()).await?;
                reference.image = Some(bytes);
            }
            Some(Output::Scores(scores)) => {
                // Scores always serialize; should they not, the scorer is at fault.
                let body = serde_json::to_vec(&scores)
                    .map_err(|e| ReferenceError::Unavailable(e.to_string()))?;
                self.keep(record, "scores.json", body).await?;
                reference.scores = Some(scores);
            }
            None => {
                tracing::warn!(job_id = %record.job_id, note = ?ran.note, "no reference for a re-run job");
            }
        }
        reference.note = ran.note;
        reference.seconds = Some(ran.seconds);
        reference.drift = ran.drift;
        Ok(reference)
    }
}

/// The pool of the settings: its HTTP hosts, its candle hosts, and a candle host for
/// each model folder of `reference.llm_models_dir`.
pub fn pool(
    r: &ReferenceSettings,
    rules: &Rules,
    metrics: Option<ReferenceMetrics>,
) -> anyhow::Result<Pool> {
    let mut pool = Pool::new(r, rules, metrics)?;
    let mut candle: Vec<(HostSettings, PathBuf)> = r
        .hosts
        .iter()
        .filter(|h| h.kind == HostKind::Candle)
        .map(|h| (h.clone(), PathBuf::from(&h.url)))
        .collect();
    if !r.llm_models_dir.is_empty() {
        for dir in model_dirs(Path::new(&r.llm_models_dir))? {
            let id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let host = HostSettings {
                name: format!("candle:{id}"),
                kind: HostKind::Candle,
                url: dir.display().to_string(),
                models: vec![id],
                concurrency: r.max_batch.max(1),
                queue: 1024,
                timeout_secs: 600,
                seconds_per_job: 1.0,
                tokenizer: String::new(),
                served_model: String::new(),
                health_path: String::new(),
                token: Default::default(),
            };
            candle.push((host, dir));
        }
    }
    if !candle.is_empty() {
        let (numerics, device) = (r.numerics()?, r.device()?);
        for (host, dir) in candle {
            let mut scorer = Scorer::load(&dir, numerics, &device)?;
            scorer.top_k = r.top_k;
            // The suspects of the rules' panel, from the folders beside the reference's.
            scorer.panel = Panel::beside(&scorer, &rules.checks.llm.panel, &dir, numerics, &device);
            tracing::info!(host = %host.name, model = %scorer.model_id, dir = %dir.display(), "reference LLM loaded");
            pool = pool.with_candle(&host, ScoringService::start(scorer, r.max_batch));
        }
    }
    for h in pool.hosts() {
        tracing::info!(host = %h.name, kind = ?h.kind, "reference host");
    }
    Ok(pool)
}

/// The model folders under `root`: each subfolder (or link to one) holding a
/// `config.json`, named by the model id of the jobs it scores.
fn model_dirs(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| anyhow::anyhow!("reference.llm_models_dir {}: {e}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        anyhow::bail!(
            "reference.llm_models_dir {}: no model folders",
            root.display()
        );
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object_error(refused: bool) -> ObjectError {
        ObjectError {
            op: "get",
            bucket: "proctor-reference".into(),
            key: "reference/j/image.png".into(),
            message: "HTTP 400".into(),
            refused,
        }
    }

    #[test]
    fn only_a_refused_request_ends_the_retries_for_a_reference() {
        // A refusal is a dead letter at once; an outage (or a 401/403, which the object
        // store does not mark refused) is retried until the reference side is back.
        assert!(matches!(
            ReferenceError::from(object_error(true)),
            ReferenceError::Refused(m) if m.contains("reference/j/image.png")
        ));
        assert!(matches!(
            ReferenceError::from(object_error(false)),
            ReferenceError::Unavailable(_)
        ));
    }
}

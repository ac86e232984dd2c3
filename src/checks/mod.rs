//! Every check, and [`Checker::evaluate`], which runs the ones that apply to a job.
//!
//! Checks are pure and synchronous: they take bytes that were already fetched and the
//! rules, and return an [`Outcome`]. All I/O (object stores, reference runners, the
//! database) happens around them, which is what lets the offline `audit` and the
//! pipeline workers share this code and reach the same verdicts.

pub mod canary;
pub mod device;
pub mod image;
pub mod llm;
pub mod model_file;
pub mod reuse;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{JobId, MinerId, ModelId};
use crate::llm::miner;
use crate::outcome::{CheckId, CheckResult, Outcome};
use crate::points::{self, Points};
use crate::record::{Job, JobKind, JobRecord, LlmInput, LlmOutput, SdInput};
use crate::rules::{Category, Gpu, LlmRules, Model, Rules};
use device::{PeerSpeeds, TokenCounts};
use llm::TokenScores;
use model_file::ChallengeExpectation;
use reuse::ReuseIndex;

/// The state of a fetched object. `Missing` is an infrastructure fact (the store does
/// not have it, or could not be asked), never evidence against the miner.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Found(Vec<u8>),
    Missing(String),
}

/// Everything fetched for one job before judging it.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// SD: the image bytes. LLM: the text bytes when the record holds a `text_key`
    /// (inline text is read from the record itself).
    pub output: Option<Object>,
    /// The reference GPU's image for the same input, where the job was re-run.
    pub reference_image: Option<Vec<u8>>,
    /// The reference model's scores of the miner's tokens, where the job was re-run.
    pub scores: Option<TokenScores>,
    /// The reference host's answer to the job's model-file challenge.
    pub challenge: Option<ChallengeExpectation>,
    /// Why a re-run job has no reference image or scores (hosts down past the bound,
    /// shed for capacity, refused, disagreeing): the comparison check is then
    /// inconclusive with this reason instead of absent.
    pub reference_note: Option<String>,
    /// SD: `output` already decoded and fingerprinted by [`prepare`], so a worker can
    /// do that costly, order-free part on several threads and judge in order after.
    /// When absent, [`Checker::evaluate`] decodes the output itself.
    pub decoded: Option<Arc<Result<DecodedImage, image::InvalidImage>>>,
}

/// A miner image decoded under the rules' limits, with the hashes the reuse index and
/// the canaries compare.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    pub image: ::image::DynamicImage,
    pub phash: image_hasher::ImageHash,
    pub fingerprint: reuse::ImageFingerprint,
}

impl DecodedImage {
    pub fn decode(
        bytes: &[u8],
        rules: &crate::rules::ImageRules,
    ) -> Result<Self, image::InvalidImage> {
        let img = image::decode(bytes, rules)?;
        let luma = image::luma(&img);
        let phash = image::phash(&luma, rules);
        let fingerprint = reuse::ImageFingerprint {
            phash: phash.as_bytes().into(),
            dhash: image::dhash(&luma, rules).as_bytes().into(),
        };
        Ok(DecodedImage {
            image: img,
            phash,
            fingerprint,
        })
    }
}

/// Decodes and fingerprints an SD job's fetched output ahead of [`Checker::evaluate`].
/// Pure and independent of every other job, so it may run on any thread; a no-op for
/// LLM jobs, for outputs that were not found, and for outputs already decoded.
pub fn prepare(rules: &Rules, record: &JobRecord, fetched: &mut Fetched) {
    if matches!(record.job, Job::Sd { .. }) {
        prepare_image(&rules.checks.image, fetched);
    }
}

/// [`prepare`] for an output known to be an SD job's.
pub fn prepare_image(rules: &crate::rules::ImageRules, fetched: &mut Fetched) {
    if let (None, Some(Object::Found(bytes))) = (&fetched.decoded, &fetched.output) {
        fetched.decoded = Some(Arc::new(DecodedImage::decode(bytes, rules)));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check that could run passed.
    Pass,
    /// At least one check failed.
    Fail,
    /// The output itself is unusable (undecodable, oversized, not UTF-8).
    Invalid,
    /// The job could not be judged (unknown model).
    Inconclusive,
}

impl Verdict {
    /// The name the store, the metrics and the pages use (serde's name too).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Invalid => "invalid",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The judgement of one job: every check's outcome and the numbers a reviewer needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobVerdict {
    pub job_id: JobId,
    pub miner_id: MinerId,
    pub model_id: ModelId,
    pub kind: JobKind,
    pub submitted_at: DateTime<Utc>,
    pub verdict: Verdict,
    pub points: Points,
    /// True when token counts were estimated from characters (no reference scores).
    pub points_estimated: bool,
    /// Whether the sampling policy chose this job for reference re-execution.
    pub sampled: bool,
    /// The S3 key of the miner's output, for evidence references.
    pub output_key: Option<String>,
    /// The screen failures this job may show before they raise its miner's sampling
    /// rate (`sampling::allowance`), set where it is drawn; 0 in verdicts stored
    /// before the rate decayed.
    #[serde(default)]
    pub screen_allowance: f64,
    /// Reference GPU-seconds spent re-running the job (on every host it ran on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_seconds: Option<f64>,
    pub checks: Vec<CheckResult>,
    pub rules_digest: String,
}

impl JobVerdict {
    pub fn outcome(&self, check: CheckId) -> Option<&Outcome> {
        self.checks
            .iter()
            .find(|c| c.check == check)
            .map(|c| &c.outcome)
    }

    pub fn failed_checks(&self) -> impl Iterator<Item = CheckId> + '_ {
        self.checks
            .iter()
            .filter(|c| c.outcome.is_fail())
            .map(|c| c.check)
    }
}

/// Holds the rules and their digest. Stateless: what the checks of a job remember of
/// the jobs before it lives in a [`StreamState`] its caller owns.
pub struct Checker {
    rules: Rules,
    digest: String,
}

/// The only state judging needs, both bounded: the index of recent outputs for the
/// reuse check, and the miners' latest speeds per GPU for `latency_peers`. Both see
/// jobs in the order they are judged, so one stage owns it: the screen stage (the
/// audit, for its folder).
#[derive(Default)]
pub struct StreamState {
    reuse: ReuseIndex,
    peers: PeerSpeeds,
}

impl StreamState {
    pub fn new() -> StreamState {
        StreamState::default()
    }
}

/// How a job meets the checks whose outcome depends on the jobs judged before it
/// (`reuse`, `latency_peers`): only the screen stage sees that stream in order, so the
/// re-run stage keeps the screen's outcomes of these.
pub enum Stream<'a> {
    /// Judged against the jobs before it, and remembered for the jobs after it.
    Live(&'a mut StreamState),
    /// The outcomes the screen stage reached, kept as they are (the re-run stage): the
    /// checks are not run again.
    Keep(&'a JobVerdict),
}

impl Checker {
    pub fn new(rules: Rules) -> Result<Checker, crate::rules::RulesError> {
        let digest = rules.digest()?;
        Ok(Checker { rules, digest })
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn rules_digest(&self) -> &str {
        &self.digest
    }

    /// Runs every applicable check on one job. Never panics on miner data.
    pub fn evaluate(
        &self,
        record: &JobRecord,
        fetched: &Fetched,
        stream: Stream<'_>,
    ) -> JobVerdict {
        let rules = &self.rules;
        let output_key = match &record.job {
            Job::Sd { output, .. } => Some(output.image_key.to_string()),
            Job::Llm { output, .. } => output.text_key.as_ref().map(ToString::to_string),
        };
        let mut verdict = JobVerdict {
            job_id: record.job_id.clone(),
            miner_id: record.miner_id.clone(),
            model_id: record.model_id.clone(),
            kind: record.kind(),
            submitted_at: record.submitted_at,
            verdict: Verdict::Inconclusive,
            points: Points::default(),
            points_estimated: false,
            sampled: false,
            output_key,
            screen_allowance: 0.0,
            reference_seconds: None,
            checks: Vec::new(),
            rules_digest: self.digest.clone(),
        };
        let model_and_category = rules.model(record.model_id.as_str()).and_then(|m| {
            rules
                .category(&m.category)
                .filter(|c| c.kind == record.kind())
                .map(|c| (m, c))
        });
        let Some((model, category)) = model_and_category else {
            verdict.checks.push(CheckResult {
                check: CheckId::ModelKnown,
                outcome: Outcome::inconclusive(format!(
                    "model {} is not a known {:?} model in rules/models.toml",
                    record.model_id,
                    record.kind()
                )),
            });
            return verdict;
        };
        let mut out: Vec<(CheckId, Outcome)> = vec![(
            CheckId::ModelKnown,
            Outcome::pass(serde_json::json!({
                "category": model.category,
                // Known but unpriced: judged, worth no points yet.
                "priced": category.priced,
            })),
        )];

        let hardware = &record.metrics.hardware;
        let gpu = device::find_gpu(rules, hardware);
        out.push((CheckId::DeviceKnown, device::check_known(hardware, gpu)));
        out.push((
            CheckId::DeviceSpec,
            device::check_spec(rules, hardware, gpu, &model.category, category),
        ));
        if let Some(resp) = &record.challenge {
            out.push((
                CheckId::ModelChallenge,
                model_file::check_challenge(resp, fetched.challenge.as_ref()),
            ));
        }
        let mut job = JobContext {
            rules,
            record,
            model,
            category,
            gpu,
            stream,
            out,
        };
        match &record.job {
            Job::Sd { input, .. } => verdict.points = evaluate_sd(&mut job, input, fetched),
            Job::Llm { input, output } => {
                (verdict.points, verdict.points_estimated) =
                    evaluate_llm(&mut job, input, output, fetched);
            }
        }
        let out = job.out;

        verdict.checks = out
            .into_iter()
            .map(|(check, outcome)| CheckResult { check, outcome })
            .collect();
        verdict.aggregate();
        verdict
    }
}

impl JobVerdict {
    /// Sets the job's verdict from its check outcomes.
    pub fn aggregate(&mut self) {
        if self
            .outcome(CheckId::ModelKnown)
            .is_some_and(|o| o.status() != crate::outcome::Status::Pass)
        {
            self.verdict = Verdict::Inconclusive;
            return;
        }
        let decode = self.outcome(CheckId::OutputDecode);
        self.verdict = if decode.is_some_and(Outcome::is_fail) {
            Verdict::Invalid
        } else if self.failed_checks().next().is_some() {
            Verdict::Fail
        } else if matches!(decode, Some(Outcome::Inconclusive { .. })) {
            // Nothing was judged about the output itself: that is not a pass.
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        };
    }
}

/// What the per-kind checks of one job share.
struct JobContext<'a> {
    rules: &'a Rules,
    record: &'a JobRecord,
    model: &'a Model,
    category: &'a Category,
    gpu: Option<(&'a str, &'a Gpu)>,
    stream: Stream<'a>,
    out: Vec<(CheckId, Outcome)>,
}

impl JobContext<'_> {
    fn push(&mut self, check: CheckId, outcome: Outcome) {
        self.out.push((check, outcome));
    }

    /// A stream check: run against the stream state, or the screen's outcome kept
    /// (none where the screen reached none).
    fn push_stream(&mut self, check: CheckId, run: impl FnOnce(&mut StreamState) -> Outcome) {
        let outcome = match &mut self.stream {
            Stream::Live(state) => Some(run(state)),
            Stream::Keep(screen) => screen.outcome(check).cloned(),
        };
        if let Some(outcome) = outcome {
            self.push(check, outcome);
        }
    }

    /// The three latency checks. A GPU the table does not know is judged as the
    /// table's fastest card: no claim skips the physical bound by naming no card.
    fn latency(&mut self, tokens: Option<TokenCounts>) {
        let (rules, record, model, category) = (self.rules, self.record, self.model, self.category);
        let fastest;
        let (gpu_id, gpu) = match self.gpu {
            Some(known) => known,
            None => {
                fastest = rules.gpus.fastest();
                ("the table's fastest GPU", &fastest)
            }
        };
        let bound = device::inference_bound(rules, record, model, category, gpu_id, gpu, tokens);
        let known_id = self.gpu.map(|(id, _)| id);
        self.push(
            CheckId::Latency,
            device::check_latency(rules, record, bound.as_ref()),
        );
        self.push(
            CheckId::LatencyEnvelope,
            device::check_envelope(
                rules,
                record,
                bound.as_ref(),
                &model.category,
                category,
                known_id,
            ),
        );
        let claimed = bound
            .as_ref()
            .and_then(|b| device::claimed_efficiency(b, record.metrics.inference_latency));
        self.push_stream(CheckId::LatencyPeers, |state| match (known_id, claimed) {
            (Some(id), Some(claimed)) => {
                state
                    .peers
                    .check(rules, id, &model.category, &record.miner_id, claimed)
            }
            (None, _) => Outcome::inconclusive("unknown GPU: no peers to compare with"),
            (_, None) => Outcome::inconclusive("no claimed speed to compare with peers"),
        });
    }
}

fn submitted(record: &JobRecord) -> reuse::Submitted<'_> {
    reuse::Submitted {
        job_id: &record.job_id,
        miner_id: &record.miner_id,
        input: record.input_digest(),
        at: record.submitted_at,
    }
}

/// The image checks; returns the job's points.
fn evaluate_sd(job: &mut JobContext, input: &SdInput, fetched: &Fetched) -> Points {
    let (rules, record) = (job.rules, job.record);
    let im = &rules.checks.image;
    let (w, h) = image::expected_size(input.width, input.height, im);
    let steps = image::effective_steps(input, im);
    let points = Points {
        waifu: points::image_points(rules, &job.model.category, w, h, steps),
        llama: 0.0,
    };
    job.latency(None);

    let bytes = match &fetched.output {
        Some(Object::Found(bytes)) => bytes,
        Some(Object::Missing(why)) => {
            job.push(CheckId::OutputDecode, Outcome::inconclusive(why.clone()));
            return points;
        }
        None => {
            job.push(
                CheckId::OutputDecode,
                Outcome::inconclusive("output was not fetched"),
            );
            return points;
        }
    };
    let decoded = match &fetched.decoded {
        Some(d) => d.clone(),
        None => Arc::new(DecodedImage::decode(bytes, im)),
    };
    let decoded = match decoded.as_ref() {
        Ok(d) => d,
        Err(e) => {
            job.push(
                CheckId::OutputDecode,
                Outcome::fail(
                    format!("invalid output: {e}"),
                    serde_json::json!({"size_bytes": bytes.len(), "error": e.to_string()}),
                ),
            );
            return points;
        }
    };
    let (img, hash, fingerprint) = (&decoded.image, &decoded.phash, &decoded.fingerprint);
    job.push(
        CheckId::OutputDecode,
        Outcome::pass(serde_json::json!({"width": img.width(), "height": img.height()})),
    );
    job.push(CheckId::OutputSize, image::check_size(img, input, im));
    job.push_stream(CheckId::Reuse, |state| {
        state
            .reuse
            .check_image(submitted(record), fingerprint, &rules.checks.reuse)
    });
    if let Some(c) = canary::find(rules, record) {
        job.push(CheckId::Canary, canary::check_image(c, hash));
    }
    match (&fetched.reference_image, &fetched.reference_note) {
        (Some(ref_bytes), _) => job.push(
            CheckId::ImageSimilarity,
            similarity(img, ref_bytes, input.seed, im),
        ),
        (None, Some(note)) => job.push(CheckId::ImageSimilarity, Outcome::inconclusive(note)),
        (None, None) => {}
    }
    points
}

/// The miner's text (inline, or the fetched `text_key` object), or the outcome of
/// `output_decode` when there is none to judge.
pub fn output_text(
    output: &LlmOutput,
    fetched: Option<&Object>,
    rules: &LlmRules,
) -> Result<String, Outcome> {
    let text = match (&output.text, fetched) {
        (Some(t), _) => t.clone(),
        (None, Some(Object::Found(bytes))) => String::from_utf8(bytes.clone()).map_err(|_| {
            Outcome::fail(
                "invalid output: text is not UTF-8",
                serde_json::json!({"size_bytes": bytes.len()}),
            )
        })?,
        (None, Some(Object::Missing(why))) => return Err(Outcome::inconclusive(why.clone())),
        (None, None) => return Err(Outcome::inconclusive("output text was not fetched")),
    };
    if text.len() as u64 > rules.max_text_bytes {
        return Err(Outcome::fail(
            format!(
                "invalid output: text is {} bytes, over the {}-byte limit",
                text.len(),
                rules.max_text_bytes
            ),
            serde_json::json!({"size_bytes": text.len(), "limit_bytes": rules.max_text_bytes}),
        ));
    }
    Ok(text)
}

/// The LLM checks; returns the job's points and whether they are estimated.
fn evaluate_llm(
    job: &mut JobContext,
    input: &LlmInput,
    output: &LlmOutput,
    fetched: &Fetched,
) -> (Points, bool) {
    let (rules, record) = (job.rules, job.record);
    let lr = &rules.checks.llm;
    let text = output_text(output, fetched.output.as_ref(), lr);
    let text_ref = text.as_deref().ok();
    // The reference scores the job as the miner's server ran it and the text as its
    // model generated it, not the miner software's wrapping of either.
    let served = miner::served(
        record.model_id.as_str(),
        &record.metrics.miner_version,
        input,
    );
    let generated = text_ref.map(|t| miner::generated_text(t, input.use_stream));
    let scores = fetched.scores.as_ref();
    let scores_problem = scores.zip(generated).and_then(|(s, t)| s.problem(t));
    let usable_scores = scores.filter(|_| scores_problem.is_none());

    // Latency bounds need lower bounds on token counts; points use a typical ratio.
    let (counts, tokens_for_points) = match (usable_scores, text_ref) {
        (Some(s), _) => {
            let (input_tokens, output_tokens) = (u64::from(s.prompt_tokens), s.tokens.len() as u64);
            let counts = TokenCounts {
                input: input_tokens,
                output: output_tokens,
                exact: true,
            };
            (Some(counts), Some(input_tokens + output_tokens))
        }
        (None, Some(t)) => {
            let (in_chars, out_chars) = (input.input_chars() as f64, t.chars().count() as f64);
            let counts = TokenCounts {
                input: (in_chars / lr.max_chars_per_token).ceil() as u64,
                output: (out_chars / lr.max_chars_per_token).ceil() as u64,
                exact: false,
            };
            let estimate = ((in_chars + out_chars) / lr.chars_per_token_estimate).ceil() as u64;
            (Some(counts), Some(estimate))
        }
        (None, None) => (None, None),
    };
    let points = Points {
        waifu: 0.0,
        llama: tokens_for_points.map_or(0.0, |t| points::llm_points(rules, &job.model.category, t)),
    };
    let estimated = tokens_for_points.is_some() && usable_scores.is_none();
    job.latency(counts);

    let text = match text {
        Ok(text) => text,
        Err(outcome) => {
            job.push(CheckId::OutputDecode, outcome);
            return (points, estimated);
        }
    };
    job.push(
        CheckId::OutputDecode,
        Outcome::pass(serde_json::json!({"chars": text.chars().count()})),
    );
    job.push_stream(CheckId::Reuse, |state| {
        state
            .reuse
            .check_text(submitted(record), &text, &rules.checks.reuse)
    });
    if let Some(c) = canary::find(rules, record) {
        job.push(CheckId::Canary, canary::check_text(c, &text));
    }
    match (scores, scores_problem, served) {
        (Some(_), Some(problem), _) => job.push(CheckId::LlmRank, Outcome::inconclusive(problem)),
        (Some(_), None, Err(why)) => {
            job.push(CheckId::LlmRank, Outcome::inconclusive(why.to_string()));
        }
        (Some(s), None, Ok(served)) => {
            job.out
                .extend(llm::check(s, &served, output.logprobs.as_deref(), lr))
        }
        // The rerun worker sends such a job to no host: say why it has no scores.
        (None, _, Err(why)) => {
            job.push(CheckId::LlmRank, Outcome::inconclusive(why.to_string()));
        }
        (None, _, Ok(_)) => {
            if let Some(note) = &fetched.reference_note {
                job.push(CheckId::LlmLikelihood, Outcome::inconclusive(note));
            }
        }
    }
    (points, estimated)
}

fn similarity(
    miner: &::image::DynamicImage,
    reference: &[u8],
    seed: i64,
    rules: &crate::rules::ImageRules,
) -> Outcome {
    if seed < 0 {
        return Outcome::inconclusive(
            "the job asked for a random seed, so no reference image can match it",
        );
    }
    match image::decode(reference, rules) {
        // Our own reference being unreadable is an infrastructure problem.
        Err(e) => Outcome::inconclusive(format!("reference image is unusable: {e}")),
        Ok(r) => image::apply_thresholds(&image::measure(miner, &r, rules), rules),
    }
}

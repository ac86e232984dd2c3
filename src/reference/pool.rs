//! The reference hosts of the settings as one pool the rerun worker dispatches to
//! (docs/REFERENCE-HOSTS.md).
//!
//! - **Routing.** A host serves the model ids and categories it lists, and only jobs of
//!   its kind (txt2img: SD; scorer and candle: LLM). Among those, a job goes to the
//!   least loaded host that is healthy (its health endpoint answers), whose breaker is
//!   closed, and that is not quarantined.
//! - **Capacity.** Each host runs `concurrency` jobs at once and lets `queue` more wait.
//!   A job that finds every host full is shed, unless it is high priority (a canary, or
//!   a miner the screen already caught failing), which waits. A shed job's reference
//!   checks are inconclusive: the effective sampling rate drops, and `proctor rules
//!   check` says whether deterrence still holds at the configured capacity.
//! - **Failure is never the miner's.** A host that is down, slow or answers garbage is
//!   retried (another host where there is one) until `max_wait_secs`; then the job has no
//!   reference and the note says why. A 4xx is final at once: the host refuses the job.
//! - **Verifying the hosts.** A `dual_share` of jobs runs on two hosts. Their distance is
//!   recorded as honest reference-vs-reference drift. Two hosts beyond the honest
//!   envelope (the image check's own thresholds; `llm_drift_nats` for scores) are settled
//!   by a third: the odd one out gets a strike, and after `quarantine_after` net strikes
//!   it is taken out of rotation with an error log and the `reference_host_quarantined`
//!   gauge. Unsettled, the job has no reference: the disagreement says nothing about the
//!   miner.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{HttpScorer, Txt2Img, Txt2ImgRequest};
use crate::checks::image;
use crate::checks::llm::TokenScores;
use crate::llm::ScoreError;
use crate::llm::service::ScoringService;
use crate::llm::template::Prompter;
use crate::record::{JobRecord, LlmInput, SdInput};
use crate::rules::{ImageRules, Rules};
use crate::settings::{HostKind, HostSettings, ReferenceSettings};
use crate::telemetry::ReferenceMetrics;

/// What a job asks of a host.
#[derive(Debug, Clone, Copy)]
pub enum Work<'a> {
    Image(&'a SdInput),
    Scores { input: &'a LlmInput, text: &'a str },
}

/// What a host answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Image(Vec<u8>),
    Scores(TokenScores),
}

/// Canaries and miners already caught failing a check go first: they wait for
/// capacity where other jobs are shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Normal,
    High,
}

/// One comparison of two hosts' outputs for the same job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Drift {
    pub job_id: String,
    pub model_id: String,
    /// `image` or `scores`.
    pub kind: &'static str,
    pub host_a: String,
    pub host_b: String,
    /// Within the honest envelope.
    pub within: bool,
    pub measures: serde_json::Value,
}

/// How a job's run on the pool went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ran {
    pub output: Option<Output>,
    /// Why there is no output: shed, hosts unavailable past the bound, refused, hosts
    /// disagreeing.
    pub note: Option<String>,
    /// Reference GPU-seconds spent on the job, on every host it ran on.
    pub seconds: f64,
    /// The hosts whose output it got, in order.
    pub hosts: Vec<String>,
    pub drift: Vec<Drift>,
    /// `rerun`, `shed`, `unavailable`, `refused` or `disagree`.
    pub result: &'static str,
}

enum Client {
    // The scorer holds its tokenizer: boxed, so the other kinds stay small.
    Scorer(Box<HttpScorer>),
    Txt2Img(Txt2Img),
    Candle(ScoringService),
}

/// One host's answer to one call.
enum Call {
    Done(Output),
    /// HTTP 4xx, or a job the model cannot score: final.
    Refused(String),
    /// Down, timed out, 5xx, or garbage: retried until the bound.
    Failed(String),
    /// The host's queue is full.
    Full,
}

pub struct Host {
    pub name: String,
    pub kind: HostKind,
    serves: Vec<String>,
    client: Client,
    concurrency: usize,
    queue: usize,
    timeout: Duration,
    gate: tokio::sync::Semaphore,
    /// Jobs waiting for or running on it.
    load: AtomicUsize,
    healthy: AtomicBool,
    quarantined: AtomicBool,
    /// Net disagreements in which it was the odd one out.
    strikes: AtomicI64,
    health_url: Option<String>,
}

/// The bearer token a host's settings give, if any.
fn token(s: &HostSettings) -> Option<String> {
    s.token.is_set().then(|| s.token.expose().to_owned())
}

impl Host {
    fn from_settings(s: &HostSettings, image_bytes: usize) -> anyhow::Result<Host> {
        let timeout = Duration::from_secs(s.timeout_secs);
        let base = s.url.trim_end_matches('/');
        let (client, health) = match s.kind {
            HostKind::Scorer => {
                let prompter = Prompter::load(std::path::Path::new(&s.tokenizer)).map_err(|e| {
                    anyhow::anyhow!(
                        "reference host {}: tokenizer {}: {e:#}",
                        s.name,
                        s.tokenizer
                    )
                })?;
                let served = if s.served_model.is_empty() {
                    &s.models[0]
                } else {
                    &s.served_model
                };
                let scorer = HttpScorer::new(base, served, prompter, timeout).with_token(token(s));
                (Client::Scorer(Box::new(scorer)), "/health")
            }
            HostKind::Txt2img => (
                Client::Txt2Img(Txt2Img::new(base, timeout, image_bytes).with_token(token(s))),
                "/sdapi/v1/progress",
            ),
            HostKind::Candle => anyhow::bail!(
                "reference host {}: candle hosts are loaded with Pool::with_candle",
                s.name
            ),
        };
        let path = if s.health_path.is_empty() {
            health
        } else {
            &s.health_path
        };
        Ok(Host {
            health_url: Some(format!("{base}{path}")),
            ..Host::new(s, client)
        })
    }

    fn new(s: &HostSettings, client: Client) -> Host {
        Host {
            name: s.name.clone(),
            kind: s.kind,
            serves: s.models.clone(),
            client,
            concurrency: s.concurrency.max(1),
            queue: s.queue,
            timeout: Duration::from_secs(s.timeout_secs.max(1)),
            gate: tokio::sync::Semaphore::new(s.concurrency.max(1)),
            load: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            quarantined: AtomicBool::new(false),
            strikes: AtomicI64::new(0),
            health_url: None,
        }
    }

    fn admits(&self) -> bool {
        let breaker_open = match &self.client {
            Client::Scorer(c) => c.breaker().is_open(),
            Client::Txt2Img(c) => c.breaker().is_open(),
            Client::Candle(_) => false,
        };
        self.healthy.load(Ordering::Relaxed)
            && !self.quarantined.load(Ordering::Relaxed)
            && !breaker_open
    }

    /// Waiting and running jobs over what it can hold.
    fn fill(&self) -> f64 {
        self.load.load(Ordering::Relaxed) as f64 / (self.concurrency + self.queue) as f64
    }

    pub fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Relaxed)
    }

    fn kind_fits(&self, work: &Work<'_>) -> bool {
        matches!(
            (self.kind, work),
            (HostKind::Txt2img, Work::Image(_))
                | (HostKind::Scorer | HostKind::Candle, Work::Scores { .. })
        )
    }

    /// One call, with the queue bound and the concurrency limit; the seconds it held a
    /// slot are added to `seconds`.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        work: Work<'_>,
        category: Option<&str>,
        image_rules: &ImageRules,
        metrics: Option<&ReferenceMetrics>,
        deadline: Instant,
        seconds: &mut f64,
    ) -> Call {
        let held = self.load.fetch_add(1, Ordering::AcqRel);
        let _release = Release(&self.load, metrics.map(|m| (m, self.name.as_str())));
        if let Some(m) = metrics {
            m.queue_depth(&self.name).set((held + 1) as i64);
        }
        if held >= self.concurrency + self.queue {
            if let Some(m) = metrics {
                m.request(&self.name, "full");
            }
            return Call::Full;
        }
        // A queued job waits for a slot no longer than its bound.
        let _permit = match tokio::time::timeout_at(deadline.into(), self.gate.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Call::Failed("the host is closed".into()),
            Err(_) => return Call::Failed(format!("{}: no free slot in time", self.name)),
        };
        let start = Instant::now();
        let result = match tokio::time::timeout(self.timeout + Duration::from_secs(5), async {
            self.run(work, category, image_rules).await
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Call::Failed(format!("no answer within {:?}", self.timeout)),
        };
        let took = start.elapsed().as_secs_f64();
        *seconds += took;
        if let Some(m) = metrics {
            let label = match &result {
                Call::Done(_) => "ok",
                Call::Refused(_) => "refused",
                Call::Failed(_) => "failed",
                Call::Full => "full",
            };
            m.request(&self.name, label);
            m.latency(&self.name).observe(took);
            m.gpu_seconds(&self.name).inc_by(took);
        }
        result
    }

    async fn run(&self, work: Work<'_>, category: Option<&str>, image_rules: &ImageRules) -> Call {
        match (&self.client, work) {
            (Client::Txt2Img(c), Work::Image(input)) => match c
                .generate(&Txt2ImgRequest::for_job(input).with_category(category))
                .await
            {
                Ok(bytes) => match check_image(&bytes, input, image_rules) {
                    Ok(()) => Call::Done(Output::Image(bytes)),
                    Err(e) => {
                        // An answer that is garbage counts against the host's health.
                        c.breaker().record(false);
                        Call::Failed(format!("{}: {e}", self.name))
                    }
                },
                Err(super::CallError::Rejected(m)) => Call::Refused(m),
                Err(super::CallError::Failed(m)) => Call::Failed(m),
            },
            (Client::Scorer(c), Work::Scores { input, text }) => {
                let call = scores_call(&self.name, c.score(input, text).await, text);
                if matches!(call, Call::Failed(_)) {
                    c.breaker().record(false);
                }
                call
            }
            (Client::Candle(c), Work::Scores { input, text }) => scores_call(
                &self.name,
                c.score(input.clone(), text.to_owned()).await,
                text,
            ),
            _ => Call::Refused(format!("{} does not run this kind of job", self.name)),
        }
    }
}

/// Lowers a host's load when a call ends, however it ends.
struct Release<'a>(&'a AtomicUsize, Option<(&'a ReferenceMetrics, &'a str)>);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let was = self.0.fetch_sub(1, Ordering::AcqRel);
        if let Some((m, host)) = self.1 {
            m.queue_depth(host).set(was.saturating_sub(1) as i64);
        }
    }
}

fn scores_call(host: &str, r: Result<TokenScores, ScoreError>, text: &str) -> Call {
    match r {
        Ok(s) => match s.problem(text) {
            None => Call::Done(Output::Scores(s)),
            Some(p) => Call::Failed(format!("{host}: {p}")),
        },
        Err(ScoreError::Unscorable(m)) => Call::Refused(m),
        Err(ScoreError::Failed(m)) => Call::Failed(m),
    }
}

/// A host's image must be an image, of the size the job asked for: anything else is
/// garbage from the host, not a reference.
fn check_image(bytes: &[u8], input: &SdInput, rules: &ImageRules) -> Result<(), String> {
    if bytes.len() as u64 > rules.max_object_bytes {
        return Err(format!(
            "its image is over {} bytes",
            rules.max_object_bytes
        ));
    }
    let dims = ::image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .into_dimensions()
        .map_err(|e| format!("its answer is not an image: {e}"))?;
    let want = Txt2ImgRequest::for_job(input);
    if dims != (want.width, want.height) {
        return Err(format!(
            "its image is {}x{}, the job asked for {}x{}",
            dims.0, dims.1, want.width, want.height
        ));
    }
    Ok(())
}

/// How long a dual-run job waits for its second host (a slot, or a retry) once the
/// first has answered: the second run is a check on the hosts, not the job's reference.
const SECOND_HOST_WAIT: Duration = Duration::from_secs(10);

/// The reference hosts.
pub struct Pool {
    hosts: Vec<Arc<Host>>,
    dual_share: f64,
    dual_key: crate::sampling::SamplingSecret,
    max_wait: Duration,
    max_backoff: Duration,
    quarantine_after: i64,
    llm_drift_nats: f64,
    rules: Rules,
    metrics: Option<ReferenceMetrics>,
}

impl Pool {
    /// The HTTP hosts of `settings` (candle hosts are added with [`Pool::with_candle`]).
    pub fn new(
        settings: &ReferenceSettings,
        rules: &Rules,
        metrics: Option<ReferenceMetrics>,
    ) -> anyhow::Result<Pool> {
        let image_bytes =
            usize::try_from(rules.checks.image.max_object_bytes).unwrap_or(usize::MAX);
        let hosts = settings
            .hosts
            .iter()
            .filter(|h| h.kind != HostKind::Candle)
            .map(|h| Host::from_settings(h, image_bytes).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Pool {
            hosts,
            dual_share: settings.dual_share,
            dual_key: crate::sampling::SamplingSecret::from_passphrase("proctor reference dual v1"),
            max_wait: Duration::from_secs(settings.max_wait_secs),
            max_backoff: Duration::from_secs(5),
            quarantine_after: i64::from(settings.quarantine_after.max(1)),
            llm_drift_nats: settings.llm_drift_nats,
            rules: rules.clone(),
            metrics,
        })
    }

    /// Adds an in-process candle host.
    pub fn with_candle(mut self, s: &HostSettings, service: ScoringService) -> Pool {
        self.hosts
            .push(Arc::new(Host::new(s, Client::Candle(service))));
        self
    }

    /// The shortest and longest pause between retries (tests shorten them).
    pub fn with_max_backoff(mut self, max: Duration) -> Pool {
        self.max_backoff = max;
        self
    }

    pub fn hosts(&self) -> &[Arc<Host>] {
        &self.hosts
    }

    /// Whether any host (quarantined or not) runs jobs of this record's model and kind.
    pub fn serves(&self, record: &JobRecord, work: &Work<'_>) -> bool {
        self.candidates(record, work).next().is_some()
    }

    /// The record's model category, where the registry knows the model.
    fn category<'r>(&'r self, record: &JobRecord) -> Option<&'r str> {
        self.rules
            .model(record.model_id.as_str())
            .map(|m| m.category.as_str())
    }

    /// The hosts (quarantined or not) that run jobs of this record's kind and model id
    /// or category.
    fn candidates<'p>(
        &'p self,
        record: &'p JobRecord,
        work: &'p Work<'_>,
    ) -> impl Iterator<Item = &'p Arc<Host>> {
        let model = record.model_id.as_str();
        let category = self.category(record);
        self.hosts.iter().filter(move |h| {
            h.kind_fits(work)
                && h.serves
                    .iter()
                    .any(|s| s == model || Some(s.as_str()) == category)
        })
    }

    /// Whether this job is one of the `dual_share` run on two hosts: the sampling draw
    /// under its own fixed key, so it is the same on every replay and independent of
    /// the re-run draw.
    fn dual(&self, job_id: &str) -> bool {
        crate::sampling::is_sampled(&self.dual_key, job_id, self.dual_share)
    }

    /// Runs the job on the pool; `None` where no host serves its model (the caller reads
    /// the reference bucket instead).
    pub async fn run(&self, record: &JobRecord, work: Work<'_>, priority: Priority) -> Option<Ran> {
        if !self.serves(record, &work) {
            return None;
        }
        let mut ran = Ran::default();
        let deadline = Instant::now() + self.max_wait;
        let first = self
            .attempt(record, work, priority, deadline, &[], &mut ran.seconds)
            .await;
        let (a, out_a) = match first {
            Ok(done) => done,
            Err(Miss { note, result }) => {
                ran.note = Some(note);
                ran.result = result;
                return Some(self.finish(ran));
            }
        };
        ran.hosts.push(a.name.clone());
        ran.result = "rerun";
        let live = self
            .candidates(record, &work)
            .filter(|h| !h.is_quarantined())
            .count();
        if live < 2 || !self.dual(record.job_id.as_str()) {
            ran.output = Some(out_a);
            return Some(self.finish(ran));
        }
        // The second host: a miss there leaves the first host's answer standing, so
        // the job waits for it only briefly, not for the whole bound.
        let second = self
            .attempt(
                record,
                work,
                priority,
                deadline.min(Instant::now() + SECOND_HOST_WAIT),
                &[&a.name],
                &mut ran.seconds,
            )
            .await;
        let Ok((b, out_b)) = second else {
            ran.output = Some(out_a);
            return Some(self.finish(ran));
        };
        ran.hosts.push(b.name.clone());
        let ab = self.compare(record, &a, &out_a, &b, &out_b);
        let agree = ab.within;
        ran.drift.push(ab);
        if agree {
            for h in [&a, &b] {
                self.absolve(h);
            }
            ran.output = Some(out_a);
            return Some(self.finish(ran));
        }
        // Beyond the envelope: a third host settles which one drifted.
        let third = self
            .attempt(
                record,
                work,
                priority,
                deadline,
                &[&a.name, &b.name],
                &mut ran.seconds,
            )
            .await;
        let settled = match third {
            Ok((c, out_c)) => {
                ran.hosts.push(c.name.clone());
                let ca = self.compare(record, &c, &out_c, &a, &out_a);
                let cb = self.compare(record, &c, &out_c, &b, &out_b);
                let verdict = match (ca.within, cb.within) {
                    (true, false) => Some((b.clone(), out_a)),
                    (false, true) => Some((a.clone(), out_b)),
                    _ => None,
                };
                ran.drift.extend([ca, cb]);
                verdict
            }
            Err(_) => None,
        };
        match settled {
            Some((odd, output)) => {
                self.strike(&odd);
                ran.output = Some(output);
            }
            None => {
                tracing::error!(
                    job_id = %record.job_id,
                    hosts = ?ran.hosts,
                    "reference hosts disagree beyond the honest envelope and no third host settles it"
                );
                ran.note = Some(format!(
                    "the reference hosts {} and {} disagree beyond the honest envelope and no third host settles which drifted",
                    a.name, b.name
                ));
                ran.result = "disagree";
            }
        }
        Some(self.finish(ran))
    }

    fn finish(&self, ran: Ran) -> Ran {
        if let Some(m) = &self.metrics {
            m.job(ran.result);
            if ran.seconds > 0.0 {
                m.seconds_per_verdict.observe(ran.seconds);
            }
        }
        ran
    }

    fn absolve(&self, host: &Host) {
        let _ = host
            .strikes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some((s - 1).max(0))
            });
    }

    fn strike(&self, host: &Host) {
        let strikes = host.strikes.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(m) = &self.metrics {
            m.disagreements(&host.name).inc();
        }
        tracing::warn!(host = %host.name, strikes, "reference host was the odd one out");
        if strikes >= self.quarantine_after && !host.quarantined.swap(true, Ordering::AcqRel) {
            tracing::error!(
                host = %host.name,
                strikes,
                "reference host drifts beyond the honest envelope: taken out of rotation until the worker restarts"
            );
            if let Some(m) = &self.metrics {
                m.quarantined(&host.name).set(1);
            }
        }
    }

    /// Two hosts' outputs for the same job, against the honest envelope.
    fn compare(&self, record: &JobRecord, a: &Host, oa: &Output, b: &Host, ob: &Output) -> Drift {
        let (kind, within, measures) = match (oa, ob) {
            (Output::Image(x), Output::Image(y)) => {
                let r = &self.rules.checks.image;
                match (image::decode(x, r), image::decode(y, r)) {
                    (Ok(x), Ok(y)) => {
                        // The image check is one-sided (a miner's image with less
                        // detail than the reference's fails, more does not), and
                        // either host may be the drifting one: both directions must
                        // pass.
                        let (xy, yx) = (image::measure(&x, &y, r), image::measure(&y, &x, r));
                        let within = !image::apply_thresholds(&xy, r).is_fail()
                            && !image::apply_thresholds(&yx, r).is_fail();
                        (
                            "image",
                            within,
                            serde_json::json!({"a_as_miner": xy, "b_as_miner": yx}),
                        )
                    }
                    (x, y) => (
                        "image",
                        false,
                        serde_json::json!({"undecodable": [x.is_err(), y.is_err()]}),
                    ),
                }
            }
            (Output::Scores(x), Output::Scores(y)) => {
                let (within, m) = scores_drift(x, y, self.llm_drift_nats);
                ("scores", within, m)
            }
            _ => ("mixed", false, serde_json::Value::Null),
        };
        Drift {
            job_id: record.job_id.as_str().to_owned(),
            model_id: record.model_id.as_str().to_owned(),
            kind,
            host_a: a.name.clone(),
            host_b: b.name.clone(),
            within,
            measures,
        }
    }

    /// The best host for the job now, skipping `exclude`.
    fn pick(&self, record: &JobRecord, work: &Work<'_>, exclude: &[&str]) -> Option<Arc<Host>> {
        self.candidates(record, work)
            .filter(|h| !exclude.contains(&h.name.as_str()) && h.admits())
            .min_by(|x, y| x.fill().total_cmp(&y.fill()))
            .cloned()
    }

    /// Calls hosts until one answers, one refuses, or `deadline` passes.
    async fn attempt(
        &self,
        record: &JobRecord,
        work: Work<'_>,
        priority: Priority,
        deadline: Instant,
        exclude: &[&str],
        seconds: &mut f64,
    ) -> Result<(Arc<Host>, Output), Miss> {
        let mut last = String::from("no host is healthy");
        let mut backoff = Duration::from_millis(100).min(self.max_backoff);
        // Hosts that failed this job: the others are tried first.
        let mut failed: Vec<String> = Vec::new();
        let category = self.category(record);
        loop {
            let mut skip: Vec<&str> = exclude.to_vec();
            skip.extend(failed.iter().map(String::as_str));
            let host = self
                .pick(record, &work, &skip)
                .or_else(|| self.pick(record, &work, exclude));
            if let Some(host) = host {
                match host
                    .call(
                        work,
                        category,
                        &self.rules.checks.image,
                        self.metrics.as_ref(),
                        deadline,
                        seconds,
                    )
                    .await
                {
                    Call::Done(out) => return Ok((host, out)),
                    Call::Refused(m) => {
                        return Err(Miss {
                            note: format!("the reference host {} refused the job: {m}", host.name),
                            result: "refused",
                        });
                    }
                    Call::Full if priority == Priority::Normal => {
                        return Err(Miss {
                            note: format!(
                                "shed: every reference host for {} is at capacity",
                                record.model_id
                            ),
                            result: "shed",
                        });
                    }
                    Call::Full => last = format!("{} is at capacity", host.name),
                    Call::Failed(m) => {
                        tracing::warn!(host = %host.name, job_id = %record.job_id, error = %m, "reference call failed");
                        last = m;
                        if !failed.contains(&host.name) {
                            failed.push(host.name.clone());
                            // Another host may answer at once.
                            if self
                                .pick(record, &work, &[exclude, &[host.name.as_str()]].concat())
                                .is_some()
                            {
                                continue;
                            }
                        }
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Miss {
                    note: format!(
                        "no reference host answered within {:?}: {last}",
                        self.max_wait
                    ),
                    result: "unavailable",
                });
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    /// Polls every HTTP host's health endpoint every `interval` until the pool is
    /// dropped.
    pub fn watch_health(self: &Arc<Self>, interval: Duration) {
        let pool: Weak<Pool> = Arc::downgrade(self);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client with default TLS");
        tokio::spawn(async move {
            loop {
                let Some(p) = pool.upgrade() else { break };
                for h in &p.hosts {
                    let Some(url) = &h.health_url else { continue };
                    let up = client
                        .get(url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if h.healthy.swap(up, Ordering::AcqRel) != up {
                        if up {
                            tracing::info!(host = %h.name, "reference host healthy again");
                        } else {
                            tracing::warn!(host = %h.name, %url, "reference host failed its health check");
                        }
                    }
                    if let Some(m) = &p.metrics {
                        m.up(&h.name).set(i64::from(up));
                    }
                }
                drop(p);
                tokio::time::sleep(interval).await;
            }
        });
    }
}

struct Miss {
    note: String,
    result: &'static str,
}

/// Two hosts' scores of the same text: mean and largest absolute difference of the
/// tokens' logprobs, and how often their argmax agrees.
pub fn scores_drift(
    a: &TokenScores,
    b: &TokenScores,
    max_mean_nats: f64,
) -> (bool, serde_json::Value) {
    if a.tokens.len() != b.tokens.len() || a.tokens.iter().zip(&b.tokens).any(|(x, y)| x.id != y.id)
    {
        return (
            false,
            serde_json::json!({"tokens": [a.tokens.len(), b.tokens.len()], "same_tokens": false}),
        );
    }
    let diffs: Vec<f64> = a
        .tokens
        .iter()
        .zip(&b.tokens)
        .map(|(x, y)| (x.logprob - y.logprob).abs())
        .collect();
    let n = diffs.len().max(1) as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let max = diffs.iter().copied().fold(0.0, f64::max);
    let rank1 = a
        .tokens
        .iter()
        .zip(&b.tokens)
        .filter(|(x, y)| (x.rank == 1) == (y.rank == 1))
        .count() as f64
        / n;
    (
        mean <= max_mean_nats,
        serde_json::json!({"tokens": diffs.len(), "mean_abs_nats": mean, "max_abs_nats": max, "argmax_agreement": rank1}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::llm::TokenScore;

    fn scores(logprobs: &[f64]) -> TokenScores {
        TokenScores {
            model_id: "m".into(),
            eos_token_id: 2,
            prompt_tokens: 3,
            output_text_blake3: String::new(),
            tokens: logprobs
                .iter()
                .enumerate()
                .map(|(i, &lp)| TokenScore {
                    id: 10 + i as u32,
                    text: "x".into(),
                    logprob: lp,
                    rank: 1,
                    top: Vec::new(),
                    eos_logprob: -9.0,
                    tempered: None,
                })
                .collect(),
            end_eos_logprob: -1.0,
            end_top_logprob: -0.5,
            end_stop_logprob: None,
            panel: Vec::new(),
        }
    }

    #[test]
    fn scores_drift_is_the_mean_logprob_difference_against_the_bound() {
        let a = scores(&[-1.0, -2.0, -0.5, -3.0]);
        let (within, m) = scores_drift(&a, &scores(&[-1.02, -1.98, -0.5, -3.04]), 0.1);
        assert!(within, "{m}");
        assert!((m["mean_abs_nats"].as_f64().unwrap() - 0.02).abs() < 1e-9);
        assert!((m["max_abs_nats"].as_f64().unwrap() - 0.04).abs() < 1e-9);
        let (within, _) = scores_drift(&a, &scores(&[-1.5, -2.5, -1.0, -3.5]), 0.1);
        assert!(!within);
        let (within, m) = scores_drift(&a, &scores(&[-1.0, -2.0]), 0.1);
        assert!(
            !within && m["same_tokens"] == false,
            "other tokens never agree"
        );
    }
}

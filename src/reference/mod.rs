//! Reference runners over HTTP, for production reference GPUs:
//!
//! - [`HttpScorer`]: token scores from an OpenAI-compatible `/v1/completions` server
//!   running the reference model (vLLM, or `proctor serve-reference`), by teacher
//!   forcing: the prompt + output token ids are sent as the prompt with
//!   `prompt_logprobs`, and one token is generated for the position after the text.
//! - [`Txt2Img`]: a reference image from a server speaking the `/sdapi/v1/txt2img`
//!   wire format.
//!
//! Both sit behind a [`Breaker`]: after repeated failures the host is left alone for
//! a cool-down and every call fails at once, as an infrastructure failure. The
//! `rerun` worker retries those with backoff, so a reference GPU that is down delays
//! verdicts and never produces one.

pub mod pool;
pub mod runner;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;

use crate::checks::llm::{Alternative, TokenScore, TokenScores};
use crate::llm::ScoreError;
use crate::llm::serve::{CompletionRequest, CompletionResponse, Prompt, PromptLogprob};
use crate::llm::template::Prompter;
use crate::record::{LlmInput, SdInput};

/// A circuit breaker: `threshold` consecutive failures open it for `cool_down`; then
/// one call is let through, and its success closes it again.
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err` while open.
    pub fn admit(&self) -> Result<(), String> {
        let mut s = self.lock();
        match s.open_until {
            Some(t) if Instant::now() < t => Err(format!(
                "circuit open after {} failures; retrying the host in {:.0?}",
                s.failures,
                t - Instant::now()
            )),
            Some(_) => {
                // Half-open: this call is the trial; others wait another cool-down.
                s.open_until = Some(Instant::now() + self.cool_down);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Open and still cooling down: a call now would fail at once.
    pub fn is_open(&self) -> bool {
        self.lock().open_until.is_some_and(|t| Instant::now() < t)
    }

    pub fn record(&self, ok: bool) {
        let mut s = self.lock();
        if ok {
            *s = BreakerState::default();
        } else {
            s.failures += 1;
            if s.failures >= self.threshold {
                s.open_until = Some(Instant::now() + self.cool_down);
            }
        }
    }
}

/// What went wrong with one HTTP call.
pub enum CallError {
    /// The request itself is wrong for this host (HTTP 4xx): retrying will not help.
    Rejected(String),
    /// Unreachable, timed out, 5xx, or an answer we cannot read.
    Failed(String),
}

/// The largest answer a scorer host may send: 64 tokens' logprobs and top-k
/// alternatives take a few hundred KiB; anything near this is a broken or hostile host.
pub const MAX_SCORE_ANSWER_BYTES: usize = 16 << 20;

/// How a host is called: its client, its breaker, the bearer token it wants (if any),
/// and the largest answer read from it.
struct Endpoint<'a> {
    client: &'a reqwest::Client,
    breaker: &'a Breaker,
    url: &'a str,
    token: Option<&'a str>,
    max_answer_bytes: usize,
}

async fn post_json<T: Serialize + ?Sized, R: serde::de::DeserializeOwned>(
    at: &Endpoint<'_>,
    body: &T,
) -> Result<R, CallError> {
    let (breaker, url) = (at.breaker, at.url);
    breaker.admit().map_err(CallError::Failed)?;
    let result = async {
        let mut req = at.client.post(url).json(body);
        if let Some(token) = at.token {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CallError::Failed(format!("{url}: {e}")))?;
        let status = resp.status();
        let bytes = read_capped(resp, at.max_answer_bytes)
            .await
            .map_err(|e| CallError::Failed(format!("{url}: {e}")))?;
        if status.is_client_error() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned();
            return Err(CallError::Rejected(format!("{url}: HTTP {status}: {text}")));
        }
        if !status.is_success() {
            return Err(CallError::Failed(format!("{url}: HTTP {status}")));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Failed(format!("{url}: unreadable answer: {e}")))
    }
    .await;
    // A rejected request says nothing about the host's health.
    breaker.record(!matches!(result, Err(CallError::Failed(_))));
    result
}

/// The answer's body, refused (without reading the rest) once it passes `limit` bytes:
/// a host cannot make the worker buffer gigabytes.
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("the answer is over {limit} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is over {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client with default TLS")
}

/// Token scores from an OpenAI-compatible server. The prompt is tokenized here with the
/// model's own tokenizer files, so the server scores exactly the tokens we mean. Where
/// the server is `proctor serve-reference`, its extension fields give the sampling
/// moments and exact EOS logprobs; a plain vLLM gives neither, so `llm_likelihood` is
/// then inconclusive and the EOS checks use top-k bounds.
pub struct HttpScorer {
    client: reqwest::Client,
    url: String,
    pub model_id: String,
    pub prompter: Prompter,
    pub top_k: usize,
    breaker: Breaker,
    token: Option<String>,
}

impl HttpScorer {
    /// `base_url` is the server's root (`http://host:8000`); `model_id` the model it
    /// serves, whose tokenizer files `prompter` holds.
    pub fn new(base_url: &str, model_id: &str, prompter: Prompter, timeout: Duration) -> Self {
        HttpScorer {
            client: client(timeout),
            url: format!("{}/v1/completions", base_url.trim_end_matches('/')),
            model_id: model_id.to_owned(),
            prompter,
            top_k: 5,
            breaker: Breaker::new(3, Duration::from_secs(30)),
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request (`serve-reference
    /// --token-file`, or a proxy in front of vLLM).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    pub fn with_breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = breaker;
        self
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub async fn score(&self, input: &LlmInput, text: &str) -> Result<TokenScores, ScoreError> {
        let unscorable = |e: anyhow::Error| ScoreError::Unscorable(format!("{e:#}"));
        let prompt = self.prompter.prompt_ids(input).map_err(unscorable)?;
        let output = self.prompter.encode(text, false).map_err(unscorable)?;
        let p = prompt.len();
        if p == 0 {
            return Err(ScoreError::Unscorable("the prompt has no tokens".into()));
        }
        let ids: Vec<u32> = prompt.into_iter().chain(output).collect();
        let req = CompletionRequest {
            model: Some(self.model_id.clone()),
            prompt: Prompt::Ids(ids.clone()),
            max_tokens: 1,
            temperature: Some(0.0),
            seed: None,
            logprobs: Some(self.top_k),
            echo: false,
            prompt_logprobs: Some(self.top_k),
            // serve-reference's extension; vLLM ignores it and answers without.
            proctor_temperature: Some(input.temperature),
            // ... and its suspect panel over the miner's tokens, where it has one.
            proctor_panel_from: Some(p),
            // ... and the probability of a stop word after the text.
            proctor_stop: input.stop.clone(),
        };
        let at = Endpoint {
            client: &self.client,
            breaker: &self.breaker,
            url: &self.url,
            token: self.token.as_deref(),
            max_answer_bytes: MAX_SCORE_ANSWER_BYTES,
        };
        let resp: CompletionResponse = post_json(&at, &req).await.map_err(|e| match e {
            CallError::Rejected(m) => ScoreError::Unscorable(m),
            CallError::Failed(m) => ScoreError::Failed(m),
        })?;
        self.scores(&ids, p, text, &resp)
            .map_err(ScoreError::Failed)
    }

    /// [`HttpScorer::score`]'s reading of an answer's bytes, for `ids` (the prompt's
    /// `p` tokens, then the text's): the same parse and mapping, without the request.
    /// The fuzzer's way in.
    pub fn scores_from_answer(
        &self,
        ids: &[u32],
        p: usize,
        text: &str,
        answer: &[u8],
    ) -> Result<TokenScores, String> {
        let resp: CompletionResponse =
            serde_json::from_slice(answer).map_err(|e| format!("unreadable answer: {e}"))?;
        self.scores(ids, p, text, &resp)
    }

    /// Maps vLLM's answer onto [`TokenScores`]. Where EOS is outside the top-k at a
    /// position, its logprob is reported as the k-th best logprob there: an upper
    /// bound, which can only make an honest miner's early stop look more plausible and
    /// never makes EOS look like the argmax it was not.
    fn scores(
        &self,
        ids: &[u32],
        p: usize,
        text: &str,
        resp: &CompletionResponse,
    ) -> Result<TokenScores, String> {
        let choice = resp.choices.first().ok_or("no choices in the answer")?;
        let maps = choice
            .prompt_logprobs
            .as_ref()
            .ok_or("the answer has no prompt_logprobs")?;
        if maps.len() != ids.len() {
            return Err(format!(
                "prompt_logprobs has {} positions for {} tokens",
                maps.len(),
                ids.len()
            ));
        }
        let eos = self.prompter.eos_id;
        let tempered = match &choice.proctor_tempered {
            Some(t) if t.len() != ids.len() => {
                return Err(format!(
                    "proctor_tempered has {} positions for {} tokens",
                    t.len(),
                    ids.len()
                ));
            }
            Some(t) => &t[p..],
            None => &[][..],
        };
        let tokens = ids[p..]
            .iter()
            .zip(&maps[p..])
            .enumerate()
            .map(|(i, (&id, map))| {
                let map = map
                    .as_ref()
                    .ok_or(format!("no logprobs at output token {i}"))?;
                let own = map
                    .get(&id.to_string())
                    .ok_or(format!("output token {i} missing from its own logprobs"))?;
                let top = top_of(map, self.top_k)?;
                let floor = top.last().map_or(own.logprob, |a| a.logprob);
                Ok(TokenScore {
                    id,
                    text: own.decoded_token.clone(),
                    logprob: own.logprob,
                    rank: own.rank,
                    eos_logprob: map.get(&eos.to_string()).map_or(floor, |e| e.logprob),
                    tempered: tempered.get(i).copied().flatten(),
                    top,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        // The position after the text: serve-reference's extension, or else the
        // alternatives of the one generated token.
        let end_stop_logprob = choice.proctor_end.and_then(|e| e.stop_logprob);
        let (end_eos_logprob, end_top_logprob) = match choice.proctor_end {
            Some(e) => (e.eos_logprob, e.top_logprob),
            None => {
                let end = choice
                    .logprobs
                    .as_ref()
                    .and_then(|l| l.top_logprobs.first())
                    .ok_or("the answer has no logprobs for the position after the text")?;
                let end_top = end.values().copied().fold(f64::NEG_INFINITY, f64::max);
                let end_floor = end.values().copied().fold(f64::INFINITY, f64::min);
                let eos_text = self.prompter.token_text(eos);
                (end.get(&eos_text).copied().unwrap_or(end_floor), end_top)
            }
        };
        Ok(TokenScores {
            model_id: self.model_id.clone(),
            eos_token_id: eos,
            prompt_tokens: p as u32,
            output_text_blake3: blake3::hash(text.as_bytes()).to_hex().to_string(),
            tokens,
            end_eos_logprob,
            end_top_logprob,
            end_stop_logprob,
            panel: choice.proctor_panel.clone().unwrap_or_default(),
        })
    }
}

/// The entries of a `prompt_logprobs` map ranked within `k`, best first.
fn top_of(map: &BTreeMap<String, PromptLogprob>, k: usize) -> Result<Vec<Alternative>, String> {
    let mut top = map
        .iter()
        .filter(|(_, e)| e.rank as usize <= k)
        .map(|(id, e)| {
            Ok(Alternative {
                id: id
                    .parse()
                    .map_err(|_| format!("token id {id:?} is not a number"))?,
                logprob: e.logprob,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
    Ok(top)
}

/// The SD reference host's request, in the `/sdapi/v1/txt2img` wire format.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Txt2ImgRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub cfg_scale: f64,
    pub seed: i64,
    pub batch_size: u32,
    pub n_iter: u32,
    /// The network's sampler, in AUTOMATIC1111's names; absent: the checkpoint's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// `randn_source = "CPU"`: the initial noise from a CPU generator seeded with the
    /// job's seed, as the miners draw it, so every GPU starts from the same latents.
    #[serde(default)]
    pub override_settings: BTreeMap<String, String>,
}

impl Txt2ImgRequest {
    /// The job's input with the miner software's clamping: each side rounded down to a
    /// multiple of 8 and capped at 2048, steps capped at 35.
    pub fn for_job(input: &SdInput) -> Self {
        let side = |v: u32| (v.min(2048) / 8) * 8;
        Txt2ImgRequest {
            prompt: input.prompt.clone(),
            negative_prompt: input.neg_prompt.clone(),
            width: side(input.width),
            height: side(input.height),
            steps: input.num_iterations.min(35),
            cfg_scale: input.guidance_scale,
            seed: input.seed,
            batch_size: 1,
            n_iter: 1,
            sampler_name: None,
            scheduler: None,
            override_settings: BTreeMap::from([("randn_source".to_owned(), "CPU".to_owned())]),
        }
    }

    /// With the sampler the network's miners use for the model's category: for the
    /// SD 1.5 and SDXL categories diffusers' `DPMSolverMultistepScheduler` with
    /// `use_karras_sigmas` and `sde-dpmsolver++`, which AUTOMATIC1111 calls "DPM++ 2M
    /// SDE Karras" (the job parameters in heurist-models/examples record it for every
    /// SD 1.5 and SDXL model); Flux keeps its own flow-matching scheduler.
    pub fn with_category(mut self, category: Option<&str>) -> Self {
        if let Some("sd15" | "sd15_lora" | "sdxl" | "sdxl_lora") = category {
            self.sampler_name = Some("DPM++ 2M SDE Karras".into());
            self.scheduler = Some("Karras".into());
        }
        self
    }
}

#[derive(Debug, serde::Deserialize)]
struct Txt2ImgResponse {
    images: Vec<String>,
}

/// Reference images from a `/sdapi/v1/txt2img` server.
pub struct Txt2Img {
    client: reqwest::Client,
    url: String,
    breaker: Breaker,
    /// The largest decoded answer accepted.
    pub max_image_bytes: usize,
    token: Option<String>,
}

impl Txt2Img {
    pub fn new(base_url: &str, timeout: Duration, max_image_bytes: usize) -> Self {
        Txt2Img {
            client: client(timeout),
            url: format!("{}/sdapi/v1/txt2img", base_url.trim_end_matches('/')),
            breaker: Breaker::new(3, Duration::from_secs(30)),
            max_image_bytes,
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request (a proxy in front of
    /// the SD server checks it).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    pub fn with_breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = breaker;
        self
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The reference PNG for a job. A rejected request (HTTP 4xx) is `Ok(None)`: the
    /// image checks then have no reference and say so.
    pub async fn image(&self, input: &SdInput) -> Result<Option<Vec<u8>>, String> {
        match self.generate(&Txt2ImgRequest::for_job(input)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(CallError::Rejected(m)) => {
                tracing::warn!(error = %m, "the SD reference host rejected the job");
                Ok(None)
            }
            Err(CallError::Failed(m)) => Err(m),
        }
    }

    /// The reference image's bytes, or why there are none.
    pub async fn generate(&self, req: &Txt2ImgRequest) -> Result<Vec<u8>, CallError> {
        // The image in base64 (4/3 of its bytes) and the JSON around it.
        let at = Endpoint {
            client: &self.client,
            breaker: &self.breaker,
            url: &self.url,
            token: self.token.as_deref(),
            max_answer_bytes: self.max_image_bytes / 3 * 4 + (64 << 10),
        };
        let resp: Txt2ImgResponse = post_json(&at, req).await?;
        self.image_of(resp)
    }

    /// [`Txt2Img::generate`]'s reading of an answer's bytes, without the request: the
    /// fuzzer's way in.
    pub fn image_from_answer(&self, answer: &[u8]) -> Result<Vec<u8>, CallError> {
        let resp: Txt2ImgResponse = serde_json::from_slice(answer)
            .map_err(|e| CallError::Failed(format!("{}: unreadable answer: {e}", self.url)))?;
        self.image_of(resp)
    }

    fn image_of(&self, resp: Txt2ImgResponse) -> Result<Vec<u8>, CallError> {
        let failed = |m: String| CallError::Failed(format!("{}: {m}", self.url));
        let b64 = resp
            .images
            .first()
            .ok_or_else(|| failed("the answer holds no image".into()))?;
        if b64.len() / 4 * 3 > self.max_image_bytes {
            return Err(failed(format!(
                "the reference image is over {} bytes",
                self.max_image_bytes
            )));
        }
        // Some servers prefix a data URL.
        let b64 = b64.rsplit_once(',').map_or(b64.as_str(), |(_, b)| b);
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| failed(format!("the reference image is not base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_repeated_failures_and_lets_one_trial_through() {
        let b = Breaker::new(2, Duration::from_millis(50));
        assert!(b.admit().is_ok());
        b.record(false);
        assert!(b.admit().is_ok(), "one failure is below the threshold");
        b.record(false);
        assert!(b.admit().is_err(), "open after two");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit().is_ok(), "half-open: one trial");
        assert!(b.admit().is_err(), "the others wait while the trial runs");
        b.record(true);
        assert!(b.admit().is_ok(), "a success closes it");
    }

    #[test]
    fn txt2img_requests_clamp_as_the_miner_software_does() {
        let input = SdInput {
            prompt: "a cat".into(),
            neg_prompt: String::new(),
            width: 1023,
            height: 4096,
            num_iterations: 50,
            guidance_scale: 7.5,
            seed: 42,
        };
        let r = Txt2ImgRequest::for_job(&input);
        assert_eq!((r.width, r.height, r.steps), (1016, 2048, 35));
        let small = Txt2ImgRequest::for_job(&SdInput {
            width: 512,
            height: 519,
            num_iterations: 20,
            ..input
        });
        assert_eq!((small.width, small.height, small.steps), (512, 512, 20));
    }

    #[test]
    fn sd_requests_carry_the_networks_sampler_and_cpu_noise() {
        let input = SdInput {
            prompt: "a cat".into(),
            neg_prompt: String::new(),
            width: 512,
            height: 512,
            num_iterations: 20,
            guidance_scale: 7.0,
            seed: 7,
        };
        let sd15 = Txt2ImgRequest::for_job(&input).with_category(Some("sd15"));
        assert_eq!(sd15.sampler_name.as_deref(), Some("DPM++ 2M SDE Karras"));
        assert_eq!(sd15.override_settings["randn_source"], "CPU");
        let json = serde_json::to_value(&sd15).unwrap();
        assert_eq!(json["scheduler"], "Karras");
        assert_eq!(json["override_settings"]["randn_source"], "CPU");
        let flux = Txt2ImgRequest::for_job(&input).with_category(Some("flux"));
        assert_eq!(flux.sampler_name, None);
        assert!(
            serde_json::to_value(&flux)
                .unwrap()
                .get("sampler_name")
                .is_none()
        );
    }
}

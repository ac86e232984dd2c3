//! `proctor serve-reference`: an OpenAI-compatible `/v1/completions` endpoint backed
//! by the candle scorer, for a reference GPU host, and the server the HTTP scorer is
//! tested against. It speaks the subset of vLLM's dialect that scoring and simulated
//! miners need:
//!
//! - `prompt`: a string (tokenized with the special tokens, as vLLM does) or token ids;
//! - `max_tokens` ≥ 1, `temperature` (default 1; 0 is greedy), `seed`;
//! - `logprobs` = k: the sampled token's logprob and the top-k alternatives at each
//!   generated position (`choices[].logprobs`, OpenAI's legacy completions shape);
//! - `echo`: the prompt's text is prepended to the returned text;
//! - `prompt_logprobs` = k (vLLM): for every prompt position after the first, a map
//!   from token id to `{logprob, rank, decoded_token}` holding the prompt's own token
//!   and the top-k alternatives; `null` for the first position.
//!
//! Logprobs are the model's own, before temperature, as vLLM reports them by default.
//!
//! One extension, which vLLM does not have (it logs and ignores the unknown field):
//! `proctor_temperature` = T with `prompt_logprobs` adds `choices[].proctor_tempered`,
//! aligned with `prompt_logprobs`: for each prompt position after the first, the
//! token's log-probability under the job's own sampling distribution at T, with that
//! distribution's mean and variance ([`Tempered`]), or `null` where there is none (the
//! first position, EOS, a token whose bytes were lost to U+FFFD). These moments are what
//! the `llm_likelihood` check needs; top-k logprobs cannot give them. The extension also
//! puts EOS into every `prompt_logprobs` map, and adds `choices[].proctor_end`: EOS's and
//! the best token's logprob after the whole prompt, so the EOS checks get exact values
//! instead of top-k bounds. With `proctor_panel_from` = the position where the miner's
//! text starts, it adds `choices[].proctor_panel`: each suspect of the server's panel
//! ([`super::panel`], `proctor serve-reference --rules`) against the model over those
//! tokens at T, for `llm_suspect`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::{Sampling, Scorer};
use crate::checks::llm::{SuspectLlr, Tempered};

/// A prompt as text or as token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub logprobs: Option<usize>,
    #[serde(default)]
    pub echo: bool,
    #[serde(default)]
    pub prompt_logprobs: Option<usize>,
    /// proctor's extension: the sampling temperature at which to give each prompt
    /// token's sampling moments (`choices[].proctor_tempered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proctor_temperature: Option<f64>,
    /// proctor's extension: with `proctor_temperature`, score the server's suspect
    /// panel over the prompt tokens from this position on (the miner's text):
    /// `choices[].proctor_panel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proctor_panel_from: Option<usize>,
    /// proctor's extension: with `proctor_temperature`, the probability at that
    /// temperature that the token after the prompt begins one of these stop words
    /// (`choices[].proctor_end.stop_logprob`), at most 16 of 1 to 64 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proctor_stop: Option<Vec<String>>,
}

fn default_max_tokens() -> usize {
    16
}

/// vLLM's per-position prompt logprob entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptLogprob {
    pub logprob: f64,
    pub rank: u32,
    pub decoded_token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f64>,
    pub top_logprobs: Vec<BTreeMap<String, f64>>,
    pub text_offset: Vec<usize>,
    /// Token ids of `tokens` (vLLM returns them with `return_tokens_as_token_ids`;
    /// here always, so a client never re-tokenizes).
    pub token_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: String,
    #[serde(default)]
    pub prompt_logprobs: Option<Vec<Option<BTreeMap<String, PromptLogprob>>>>,
    /// proctor's extension, present when the request set `proctor_temperature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proctor_tempered: Option<Vec<Option<Tempered>>>,
    /// proctor's extension: the position after the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proctor_end: Option<ProctorEnd>,
    /// proctor's extension: each suspect of the server's panel against the model, over
    /// the tokens from `proctor_panel_from` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proctor_panel: Option<Vec<SuspectLlr>>,
}

/// EOS's and the most likely token's logprob after the whole prompt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProctorEnd {
    pub eos_logprob: f64,
    pub top_logprob: f64,
    /// Where the request named `proctor_stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_logprob: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

/// The most prompt tokens or alternatives one request may ask for.
const MAX_TOP: usize = 20;

#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({"error": {"message": self.1, "type": "invalid_request_error"}});
        (self.0, Json(body)).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Runs one request on the scorer (blocking: call it off the async threads).
pub fn complete(scorer: &Scorer, req: &CompletionRequest) -> Result<CompletionResponse, ApiError> {
    if req.max_tokens == 0 {
        return Err(bad("max_tokens must be at least 1"));
    }
    let (k, pk) = (req.logprobs.unwrap_or(0), req.prompt_logprobs);
    if k > MAX_TOP || pk.is_some_and(|k| k > MAX_TOP) {
        return Err(bad(format!("at most {MAX_TOP} logprobs")));
    }
    let ids = match &req.prompt {
        Prompt::Text(t) => scorer
            .prompter
            .encode(t, true)
            .map_err(|e| bad(e.to_string()))?,
        Prompt::Ids(ids) => ids.clone(),
    };
    let vocab = scorer.model.config.vocab_size as u32;
    if ids.is_empty() || ids.iter().any(|&i| i >= vocab) {
        return Err(bad(
            "the prompt is empty or holds token ids outside the vocabulary",
        ));
    }
    if ids.len() + req.max_tokens > scorer.model.config.max_position_embeddings {
        return Err(bad(format!(
            "prompt ({} tokens) + max_tokens ({}) exceed the model's {} positions",
            ids.len(),
            req.max_tokens,
            scorer.model.config.max_position_embeddings
        )));
    }
    let internal = |e: anyhow::Error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    let sampling = Sampling {
        max_tokens: req.max_tokens,
        temperature: req.temperature.unwrap_or(1.0),
        seed: req.seed.unwrap_or(0),
        top_logprobs: k,
    };
    if !sampling.temperature.is_finite() || sampling.temperature < 0.0 {
        return Err(bad("temperature must be a finite number ≥ 0"));
    }
    // KV-cached, as a serving engine generates: the full-pass generator recomputed
    // every position at every step (37 s for 128 tokens of the real 135M model on 2
    // cores, docs/PERFORMANCE.md).
    let g = scorer
        .generate_cached(&ids, &sampling, &[])
        .map_err(internal)?;
    if req
        .proctor_temperature
        .is_some_and(|t| !(t.is_finite() && t >= 0.0))
    {
        return Err(bad("proctor_temperature must be a finite number ≥ 0"));
    }
    if req.proctor_stop.as_ref().is_some_and(|stop| {
        stop.len() > crate::record::MAX_STOP_WORDS
            || stop
                .iter()
                .any(|w| w.is_empty() || w.len() > crate::record::MAX_STOP_WORD_BYTES)
    }) {
        return Err(bad(
            "proctor_stop takes at most 16 stop words of 1 to 64 bytes",
        ));
    }
    if req
        .proctor_panel_from
        .is_some_and(|p| p == 0 || p > ids.len())
    {
        return Err(bad("proctor_panel_from must be a position in the prompt"));
    }
    let (prompt_logprobs, ext) = match pk {
        None => (None, None),
        Some(pk) => {
            let (maps, ext) = prompt_logprob_maps(
                scorer,
                &ids,
                pk,
                req.proctor_temperature,
                req.proctor_panel_from,
                req.proctor_stop.as_deref(),
            )
            .map_err(internal)?;
            (Some(maps), ext)
        }
    };
    let (proctor_tempered, rest): (Option<_>, Option<_>) = ext.map(|(t, e, p)| (t, (e, p))).unzip();
    let (proctor_end, proctor_panel) = match rest {
        Some((e, p)) => (Some(e), p),
        None => (None, None),
    };
    let logprobs = req.logprobs.map(|_| {
        let tokens: Vec<String> = g
            .ids
            .iter()
            .map(|&i| scorer.prompter.token_text(i))
            .collect();
        let mut offset = 0;
        let text_offset = tokens
            .iter()
            .map(|t| {
                let o = offset;
                offset += t.len();
                o
            })
            .collect();
        CompletionLogprobs {
            top_logprobs: g
                .top
                .iter()
                .map(|alts| {
                    alts.iter()
                        .take(k)
                        .map(|a| (scorer.prompter.token_text(a.id), a.logprob))
                        .collect()
                })
                .collect(),
            tokens,
            token_logprobs: g.logprobs.clone(),
            text_offset,
            token_ids: g.ids.clone(),
        }
    });
    let mut text = g.text.clone();
    if req.echo {
        text = scorer.prompter.decode(&ids).map_err(internal)? + &text;
    }
    Ok(CompletionResponse {
        id: format!(
            "cmpl-{}",
            &blake3::hash(format!("{req:?}").as_bytes()).to_hex()[..16]
        ),
        object: "text_completion".into(),
        created: chrono::Utc::now().timestamp(),
        model: scorer.model_id.clone(),
        choices: vec![Choice {
            index: 0,
            text,
            logprobs,
            finish_reason: if g.finished { "stop" } else { "length" }.into(),
            prompt_logprobs,
            proctor_tempered,
            proctor_end,
            proctor_panel,
        }],
        usage: Usage {
            prompt_tokens: ids.len(),
            completion_tokens: g.ids.len(),
            total_tokens: ids.len() + g.ids.len(),
        },
    })
}

type PromptMaps = Vec<Option<BTreeMap<String, PromptLogprob>>>;
type Extension = (Vec<Option<Tempered>>, ProctorEnd, Option<Vec<SuspectLlr>>);

/// vLLM's `prompt_logprobs`: `null`, then for each later position a map holding the
/// prompt's token and the top `k` alternatives; with `temperature`, the extension's
/// sampling moments at the same positions.
fn prompt_logprob_maps(
    scorer: &Scorer,
    ids: &[u32],
    k: usize,
    temperature: Option<f64>,
    panel_from: Option<usize>,
    stop: Option<&[String]>,
) -> anyhow::Result<(PromptMaps, Option<Extension>)> {
    let rows = scorer
        .log_prob_rows(&[(ids, 1)])?
        .pop()
        .expect("one row block per sequence");
    let eos = scorer.prompter.eos_id;
    let lossy = |id: u32| {
        scorer
            .prompter
            .token_text(id)
            .contains(char::REPLACEMENT_CHARACTER)
    };
    // The suspects over the miner's tokens, in the same pass as the tempered scores.
    let panel = match (temperature, panel_from) {
        (Some(t), Some(from)) if t > 0.0 && scorer.panel_runs() => {
            let suspect_rows: Vec<Option<Vec<Vec<f32>>>> =
                super::panel::suspect_rows(scorer, &[(ids, from)])?
                    .into_iter()
                    .map(|r| r.map(|mut r| r.remove(0)))
                    .collect();
            let suspect_rows: Vec<Option<&[Vec<f32>]>> =
                suspect_rows.iter().map(Option::as_deref).collect();
            let tokens = &ids[from..];
            let counted: Vec<bool> = tokens.iter().map(|&id| !lossy(id)).collect();
            Some(
                scorer
                    .panel
                    .llrs(&rows[from - 1..], &suspect_rows, tokens, &counted, t, eos),
            )
        }
        _ => None,
    };
    // As the in-process scorer: a token whose text is U+FFFD lost the bytes the miner
    // sampled, so it carries no moments.
    let extension = temperature.map(|t| {
        let end = rows.last().expect("the row after the prompt");
        let end = ProctorEnd {
            eos_logprob: f64::from(end[eos as usize]),
            top_logprob: f64::from(end.iter().copied().fold(f32::NEG_INFINITY, f32::max)),
            stop_logprob: scorer.end_stop_logprob(end, stop, t),
        };
        let tempered = std::iter::once(None)
            .chain(ids[1..].iter().zip(&rows).map(|(&id, row)| {
                if lossy(id) {
                    None
                } else {
                    super::tempered(row, t, id, eos, &scorer.served)
                }
            }))
            .collect();
        (tempered, end, panel)
    });
    let mut out = vec![None];
    for (&id, row) in ids[1..].iter().zip(&rows) {
        let entry = |t: u32| {
            let lp = row[t as usize];
            PromptLogprob {
                logprob: f64::from(lp),
                rank: super::rank(row, lp),
                decoded_token: scorer.prompter.token_text(t),
            }
        };
        let mut map: BTreeMap<String, PromptLogprob> = super::top_k(row, k)
            .into_iter()
            .map(|a| (a.id.to_string(), entry(a.id)))
            .collect();
        map.insert(id.to_string(), entry(id));
        if extension.is_some() {
            map.insert(eos.to_string(), entry(eos));
        }
        out.push(Some(map));
    }
    Ok((out, extension))
}

/// How `proctor serve-reference` serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Requests scored at once; more wait their turn. The model is shared, not copied:
    /// on a CPU concurrent requests split the cores, on a GPU they interleave.
    pub concurrency: usize,
    /// Requests that may wait beyond `concurrency`; one more is answered 503 at once
    /// (the worker's pool tries another host, or leaves the job inconclusive), so a
    /// burst cannot pile up requests that would only time out.
    pub queue: usize,
    /// A request that takes longer is answered 503.
    pub timeout: std::time::Duration,
    /// The bearer token every `/v1` request must carry; `None`: none asked.
    pub token: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            concurrency: 2,
            queue: 8,
            timeout: std::time::Duration::from_secs(300),
            token: None,
        }
    }
}

#[derive(Clone)]
struct Shared {
    scorer: Arc<Scorer>,
    slots: Arc<tokio::sync::Semaphore>,
    /// Requests admitted, running or waiting: `concurrency + queue` permits.
    admitted: Arc<tokio::sync::Semaphore>,
    /// BLAKE3 of the bearer token, compared in constant time; `None`: none asked.
    token: Option<blake3::Hash>,
    metrics: crate::telemetry::Metrics,
}

/// Parses the body as JSON whatever its content type, so that every refusal comes
/// back in the OpenAI error shape (axum's own `Json` extractor answers 415 and 422 in
/// plain text).
fn parse_request(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not a completion request: {e}")))
}

async fn completions(
    State(shared): State<Shared>,
    body: axum::body::Bytes,
) -> Result<Json<CompletionResponse>, ApiError> {
    let req = parse_request(&body)?;
    // Admission first: a full queue is answered now, not after a wait.
    let admitted = shared.admitted.clone().try_acquire_owned().map_err(|_| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: every scoring slot and queue place is taken; try again or another host".into(),
        )
    })?;
    let permit = shared
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let scorer = shared.scorer.clone();
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let _permits = (permit, admitted);
        complete(&scorer, &req)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) if e.0.is_client_error() => "refused",
        Err(_) => "failed",
    };
    shared.metrics.reference.request("self", outcome);
    shared
        .metrics
        .reference
        .gpu_seconds("self")
        .inc_by(started.elapsed().as_secs_f64());
    result.map(Json)
}

async fn models(State(shared): State<Shared>) -> Json<serde_json::Value> {
    let id = shared.scorer.model_id.clone();
    Json(serde_json::json!({"object": "list", "data": [{"id": id, "object": "model"}]}))
}

/// Refuses a `/v1` request without the server's bearer token (401), where it has one.
/// The token's hash is compared, in constant time (`blake3::Hash`'s equality).
async fn require_token(
    State(shared): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, ApiError> {
    if let Some(want) = shared.token {
        let given = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.map(|t| blake3::hash(t.as_bytes())) != Some(want) {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required".into(),
            ));
        }
    }
    Ok(next.run(req).await)
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint".into())
}

/// The server with the default options and its own metrics (tests).
pub fn router(scorer: Scorer) -> Router {
    let metrics = crate::telemetry::Metrics::new("serve-reference");
    let health = crate::telemetry::Health::new("serve-reference");
    router_with(scorer, &ServeOptions::default(), metrics, health)
}

/// `/v1/completions`, `/v1/models`, vLLM's `/health`, and the `/healthz` and
/// `/metrics` every proctor process serves, with the shared HTTP layers (a tracing
/// span per request, the time limit, request metrics).
pub fn router_with(
    scorer: Scorer,
    opts: &ServeOptions,
    metrics: crate::telemetry::Metrics,
    health: crate::telemetry::Health,
) -> Router {
    let shared = Shared {
        scorer: Arc::new(scorer),
        slots: Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1))),
        admitted: Arc::new(tokio::sync::Semaphore::new(
            opts.concurrency.max(1) + opts.queue,
        )),
        token: opts.token.as_deref().map(|t| blake3::hash(t.as_bytes())),
        metrics: metrics.clone(),
    };
    let v1 = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ));
    let api = v1
        .route("/health", get(|| async { "ok" }))
        .fallback(not_found)
        .with_state(shared);
    crate::telemetry::with_http_layers(
        api.merge(crate::telemetry::router(metrics.clone(), health)),
        &metrics,
        opts.timeout,
    )
}

/// Binds `bind` (a host name or an address, with its port) and serves until the
/// process ends.
pub async fn serve(scorer: Scorer, bind: &str, opts: &ServeOptions) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let metrics = crate::telemetry::Metrics::new("serve-reference");
    let health = crate::telemetry::Health::new("serve-reference");
    tracing::info!(
        addr = %listener.local_addr()?,
        model = %scorer.model_id,
        concurrency = opts.concurrency,
        "serving /v1/completions, /healthz and /metrics"
    );
    axum::serve(listener, router_with(scorer, opts, metrics, health)).await?;
    Ok(())
}

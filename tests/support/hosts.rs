//! Stand-in reference hosts on loopback, for the tests that dispatch re-runs over HTTP.
//!
//! No Stable Diffusion model runs on these machines, so [`txt2img`] stands in for an
//! SD reference GPU: it speaks the `/sdapi/v1/txt2img` wire format (and answers
//! `/sdapi/v1/progress` for health) and renders deterministically from the job's prompt
//! and seed, by replaying the reference image an audit folder holds for that prompt and
//! seed. An input it has no rendering for gets HTTP 422, as a server refuses a job it
//! cannot run. Its [`Behaviour`] makes it a faulty host instead.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine;
use proctor::reference::Txt2ImgRequest;
use proctor::settings::{HostKind, HostSettings};

/// What a stand-in does with a request it can render.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// The replayed image: an honest reference host.
    Honest,
    /// The replayed image, blurred and re-encoded: a host whose GPU or pipeline drifted
    /// beyond the honest envelope.
    Drifting,
    /// HTTP 200 with base64 that is not an image.
    Garbage,
    /// HTTP 500.
    Error,
    /// The honest image after this long.
    Slow(Duration),
}

/// Reference images by (prompt, seed), from an audit folder's jobs and `reference/`.
#[derive(Default)]
pub struct Replay(HashMap<(String, i64), Vec<u8>>);

impl Replay {
    pub fn from_audit_folder(dir: &Path) -> Replay {
        let mut by_input = HashMap::new();
        let jobs = std::fs::read_to_string(dir.join("jobs.jsonl")).unwrap();
        for line in jobs.lines() {
            let Ok(r) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let (Some(id), Some(prompt), Some(seed)) = (
                r["job_id"].as_str(),
                r["input"]["prompt"].as_str(),
                r["input"]["seed"].as_i64(),
            ) else {
                continue;
            };
            if let Some(path) = proctor::audit::reference_image_path(dir, id) {
                by_input.insert((prompt.to_owned(), seed), std::fs::read(path).unwrap());
            }
        }
        Replay(by_input)
    }

    pub fn get(&self, prompt: &str, seed: i64) -> Option<&Vec<u8>> {
        self.0.get(&(prompt.to_owned(), seed))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// A running stand-in: its URL and the requests it has answered.
pub struct StandIn {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    stop: Arc<tokio::sync::Notify>,
    server: tokio::task::JoinHandle<()>,
}

impl StandIn {
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Kills the server: the port stops answering and open connections close.
    pub async fn kill(&mut self) {
        self.stop.notify_one();
        if tokio::time::timeout(Duration::from_secs(5), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serves `router` on a free loopback port.
pub async fn serve(router: axum::Router, requests: Arc<AtomicUsize>) -> StandIn {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stopped.notified().await })
            .await;
    });
    StandIn {
        url: format!("http://{addr}"),
        requests,
        stop,
        server,
    }
}

/// A txt2img stand-in over `replay`.
pub async fn txt2img(replay: Arc<Replay>, behaviour: Behaviour) -> StandIn {
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let router = axum::Router::new()
        .route(
            "/sdapi/v1/txt2img",
            post(move |Json(req): Json<Txt2ImgRequest>| {
                let (replay, count) = (replay.clone(), count.clone());
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    render(&replay, &req, behaviour).await
                }
            }),
        )
        .route(
            "/sdapi/v1/progress",
            get(|| async { Json(serde_json::json!({"progress": 0.0})) }),
        );
    serve(router, requests).await
}

async fn render(
    replay: &Replay,
    req: &Txt2ImgRequest,
    behaviour: Behaviour,
) -> (StatusCode, Json<serde_json::Value>) {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let Some(image) = replay.get(&req.prompt, req.seed) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({"detail": "this stand-in renders only the inputs it replays"})),
        );
    };
    let ok = |bytes: &[u8]| {
        (
            StatusCode::OK,
            Json(serde_json::json!({"images": [b64(bytes)], "parameters": {}, "info": "{}"})),
        )
    };
    match behaviour {
        Behaviour::Honest => ok(image),
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            ok(image)
        }
        Behaviour::Drifting => {
            let img = proctor::synth::decode_trusted(image).unwrap();
            ok(&proctor::synth::encode_png(&proctor::synth::blur(
                &img, 3.0,
            )))
        }
        Behaviour::Garbage => ok(b"not an image at all"),
        Behaviour::Error => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": "CUDA out of memory"})),
        ),
    }
}

/// The settings of a host for the SD categories.
pub fn sd_host(name: &str, url: &str) -> HostSettings {
    HostSettings {
        name: name.to_owned(),
        kind: HostKind::Txt2img,
        url: url.to_owned(),
        models: ["sd15", "sd15_lora", "sdxl", "sdxl_lora", "flux"]
            .map(String::from)
            .to_vec(),
        concurrency: 2,
        queue: 64,
        timeout_secs: 10,
        seconds_per_job: 4.0,
        tokenizer: String::new(),
        served_model: String::new(),
        health_path: String::new(),
        token: Default::default(),
    }
}

/// What a [`fault_proxy`] does to the requests it forwards, switchable while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forwards the upstream answer untouched.
    None = 0,
    /// Answers only after `timeout`: past any host timeout the worker sets.
    Timeout = 1,
    /// HTTP 500.
    Error = 2,
    /// HTTP 200 with JSON that is not the answer asked for.
    Malformed = 3,
    /// HTTP 200 with the first half of the upstream answer.
    Truncated = 4,
}

impl Fault {
    fn from_u8(n: u8) -> Fault {
        match n {
            1 => Fault::Timeout,
            2 => Fault::Error,
            3 => Fault::Malformed,
            4 => Fault::Truncated,
            _ => Fault::None,
        }
    }
}

/// A switch shared by a test and its [`fault_proxy`]s.
#[derive(Clone, Default)]
pub struct FaultSwitch(Arc<std::sync::atomic::AtomicU8>);

impl FaultSwitch {
    pub fn set(&self, f: Fault) {
        self.0.store(f as u8, Ordering::SeqCst);
    }

    pub fn get(&self) -> Fault {
        Fault::from_u8(self.0.load(Ordering::SeqCst))
    }
}

/// A loopback proxy in front of a reference host at `upstream` that injects the
/// switch's fault into every answer (health checks included): a reference GPU that
/// hangs, fails, or answers garbage or half an answer. `timeout` is how long a
/// [`Fault::Timeout`] answer takes.
pub async fn fault_proxy(upstream: &str, switch: FaultSwitch, timeout: Duration) -> StandIn {
    use axum::body::Bytes;
    use axum::http::{Method, Uri};
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let upstream = upstream.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let handler = move |method: Method, uri: Uri, body: Bytes| {
        let (client, upstream, switch, count) = (
            client.clone(),
            upstream.clone(),
            switch.clone(),
            count.clone(),
        );
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            let fault = switch.get();
            if fault == Fault::Error {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    b"injected fault".to_vec(),
                );
            }
            if fault == Fault::Malformed {
                return (
                    StatusCode::OK,
                    br#"{"choices": "injected", "images": [7]}"#.to_vec(),
                );
            }
            let url = format!(
                "{upstream}{}",
                uri.path_and_query().map_or("/", |p| p.as_str())
            );
            let reqwest_method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
            let answer = client
                .request(reqwest_method, url)
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await;
            let (status, bytes) = match answer {
                Ok(r) => (
                    StatusCode::from_u16(r.status().as_u16()).unwrap(),
                    r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                ),
                Err(_) => (StatusCode::BAD_GATEWAY, Vec::new()),
            };
            match fault {
                Fault::Timeout => {
                    tokio::time::sleep(timeout).await;
                    (status, bytes)
                }
                Fault::Truncated => (status, bytes[..bytes.len() / 2].to_vec()),
                _ => (status, bytes),
            }
        }
    };
    let router = axum::Router::new().fallback(handler);
    serve(router, requests).await
}

//! What a process tells its operators: JSON logs on stderr, Prometheus `/metrics`, and
//! `/healthz` (200 while the worker makes progress, 503 while it retries a dependency
//! that is down or is shutting down). The four workers, the review app and
//! `proctor serve-reference` share this one setup.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Logs on stderr. `PROCTOR_LOG` filters them (tracing's `EnvFilter` syntax, such as
/// `info` or `warn,proctor::pipeline=debug`; default `info`; `librdkafka` is the
/// target of the Kafka client's own lines). `PROCTOR_LOG_FORMAT` is `json` (the
/// default: one object per line, with the spans it was logged in, such as a job's
/// `job_id` and `miner_id`) or `text` (for a terminal; coloured only when stderr is
/// one).
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROCTOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = std::env::var("PROCTOR_LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "text" {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    } else {
        builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init()
    };
    if !matches!(format.as_str(), "" | "json" | "text") {
        tracing::warn!(
            PROCTOR_LOG_FORMAT = format,
            "unknown log format (json or text); logging JSON"
        );
    }
}

/// An error and its causes on one line, each said once: a cause whose text the
/// message before it already holds (`cannot read x: No such file or directory`,
/// then `No such file or directory`) is left out.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|p| p.contains(text.as_str())) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// The worker's counters. Cheap to clone; every clone counts into the same registry.
#[derive(Clone)]
pub struct Metrics {
    /// Messages handled, by result (`processed`, `duplicate`, `dead_letter`).
    pub messages: Family<Labels, Counter>,
    /// Verdicts recorded, by stage and verdict.
    pub verdicts: Family<Labels, Counter>,
    pub dead_letters: Family<Labels, Counter>,
    /// Retries of transient failures, by what failed.
    pub retries: Family<Labels, Counter>,
    /// Requests a service refused for their input (never retried), by service.
    pub refusals: Family<Labels, Counter>,
    /// Judge decisions by action.
    pub decisions: Family<Labels, Counter>,
    pub events_published: Counter,
    /// Re-run requests the publisher sent again (`pipeline::publish::resend_owed_reruns`).
    pub reruns_resent: Counter,
    /// From the job record's broker timestamp to its verdict's commit.
    pub record_to_verdict: Histogram,
    /// Wall seconds spent in each stage of a batch (`consume`, `parse`, `lookup`,
    /// `fetch`, `judge`, `write`, `produce`): where a worker's time goes.
    pub stage_seconds: Family<Labels, Counter<f64, AtomicU64>>,
    /// The rerun worker's reference hosts.
    pub reference: ReferenceMetrics,
    /// HTTP requests served, by route and status.
    pub http_requests: Family<Labels, Counter>,
    /// Seconds to answer an HTTP request, by route.
    pub http_request_seconds: HistogramFamily,
    /// Messages of each assigned partition not yet read (the partition's end minus
    /// the consumer's position), by topic and partition: `screen` and `rerun`.
    pub consumer_lag: Family<Labels, Gauge>,
    /// The publisher's view of the pipeline's state.
    pub backlog: BacklogGauges,
    /// The review app's login attempts, by outcome (`ok`, `wrong`, `throttled`,
    /// `busy`): failures are counted here, not one audit-log entry each.
    pub logins: Family<Labels, Counter>,
    /// Argon2id password checks the review app ran.
    pub password_checks: Counter,
    /// Audit-log head checkpoints the publisher signed and the broker acknowledged.
    pub audit_checkpoints: Counter,
    /// 1 while the publisher finds the audit log's hash chain broken (it signs no
    /// checkpoint then), else 0.
    pub audit_log_broken: Gauge,
    registry: Arc<Registry>,
    names: Arc<Vec<String>>,
}

/// What the publisher reports of the pipeline's state (`Store::backlog`).
#[derive(Clone, Default)]
pub struct BacklogGauges {
    pub outbox_unpublished: Gauge,
    pub outbox_oldest_unpublished_seconds: Gauge,
    pub review_open_cases: Gauge,
    pub judge_queue: Gauge,
    pub review_oldest_confirming_seconds: Gauge,
    /// 1 while the publisher publishes, 0 while `pipeline.publish` holds the outbox.
    pub publishing: Gauge,
}

impl BacklogGauges {
    fn register(&self, r: &mut Reg) {
        r.add(
            "outbox_unpublished",
            "Slash and reversal events not yet acknowledged by the broker",
            self.outbox_unpublished.clone(),
        );
        r.add(
            "outbox_oldest_unpublished_seconds",
            "Age of the oldest unpublished outbox event (0 when none)",
            self.outbox_oldest_unpublished_seconds.clone(),
        );
        r.add(
            "review_open_cases",
            "Review cases waiting for staff (open or appealed)",
            self.review_open_cases.clone(),
        );
        r.add(
            "judge_queue",
            "Miners whose evidence changed, waiting for the judge",
            self.judge_queue.clone(),
        );
        r.add(
            "review_oldest_confirming_seconds",
            "Age of the oldest reviewer's confirmation whose slash the judge has not signed (0 when none)",
            self.review_oldest_confirming_seconds.clone(),
        );
        r.add(
            "publishing",
            "1 while the publisher publishes, 0 while pipeline.publish holds the outbox",
            self.publishing.clone(),
        );
    }
}

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Registers metrics and remembers their names, for [`Metrics::names`]: a family
/// without series renders nothing, so the exposition alone cannot say what is
/// exported.
struct Reg {
    registry: Registry,
    names: Vec<String>,
}

impl Reg {
    fn add(&mut self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.names.push(format!("proctor_{name}"));
        self.registry.register(name, help, metric);
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// Per reference host: calls by result, their latency, the GPU-seconds they held, the
/// queue depth, health and quarantine; per job: how its reference run ended and the
/// GPU-seconds it cost.
#[derive(Clone)]
pub struct ReferenceMetrics {
    requests: Family<Labels, Counter>,
    latency: HistogramFamily,
    gpu_seconds: Family<Labels, Counter<f64, AtomicU64>>,
    queue_depth: Family<Labels, Gauge>,
    up: Family<Labels, Gauge>,
    quarantined: Family<Labels, Gauge>,
    disagreements: Family<Labels, Counter>,
    jobs: Family<Labels, Counter>,
    pub seconds_per_verdict: Histogram,
}

impl ReferenceMetrics {
    fn new() -> Self {
        ReferenceMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            gpu_seconds: Family::default(),
            queue_depth: Family::default(),
            up: Family::default(),
            quarantined: Family::default(),
            disagreements: Family::default(),
            jobs: Family::default(),
            seconds_per_verdict: latency_histogram(),
        }
    }

    fn register(&self, r: &mut Reg) {
        r.add(
            "reference_requests",
            "Calls to reference hosts, by host and result (ok, refused, failed, full)",
            self.requests.clone(),
        );
        r.add(
            "reference_request_seconds",
            "Reference host call latency, by host",
            self.latency.clone(),
        );
        r.add(
            "reference_gpu_seconds",
            "Seconds reference hosts spent on calls, by host",
            self.gpu_seconds.clone(),
        );
        r.add(
            "reference_queue_depth",
            "Jobs waiting for or running on a reference host",
            self.queue_depth.clone(),
        );
        r.add(
            "reference_host_up",
            "1 while a reference host passes its health check",
            self.up.clone(),
        );
        r.add(
            "reference_host_quarantined",
            "1 once a reference host is out of rotation for drift",
            self.quarantined.clone(),
        );
        r.add(
            "reference_disagreements",
            "Times a reference host was the odd one out of three",
            self.disagreements.clone(),
        );
        r.add(
            "reference_jobs",
            "Re-run jobs by how their reference run ended (rerun, shed, unavailable, refused, disagree)",
            self.jobs.clone(),
        );
        r.add(
            "reference_seconds_per_verdict",
            "Reference GPU-seconds spent on one job's verdict",
            self.seconds_per_verdict.clone(),
        );
    }

    fn host(host: &str) -> Labels {
        vec![("host", host.to_owned())]
    }

    pub fn request(&self, host: &str, result: &str) {
        self.requests
            .get_or_create(&vec![
                ("host", host.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }

    pub fn latency(&self, host: &str) -> Histogram {
        self.latency.get_or_create(&Self::host(host)).clone()
    }

    pub fn gpu_seconds(&self, host: &str) -> Counter<f64, AtomicU64> {
        self.gpu_seconds.get_or_create(&Self::host(host)).clone()
    }

    pub fn queue_depth(&self, host: &str) -> Gauge {
        self.queue_depth.get_or_create(&Self::host(host)).clone()
    }

    pub fn up(&self, host: &str) -> Gauge {
        self.up.get_or_create(&Self::host(host)).clone()
    }

    pub fn quarantined(&self, host: &str) -> Gauge {
        self.quarantined.get_or_create(&Self::host(host)).clone()
    }

    pub fn disagreements(&self, host: &str) -> Counter {
        self.disagreements.get_or_create(&Self::host(host)).clone()
    }

    pub fn job(&self, result: &str) {
        self.jobs
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// Jobs whose reference run ended as `result`, so far.
    pub fn jobs(&self, result: &str) -> u64 {
        self.jobs
            .get_or_create(&vec![("result", result.to_owned())])
            .get()
    }
}

impl Metrics {
    pub fn new(worker: &str) -> Metrics {
        let mut registry = Reg {
            registry: Registry::with_prefix_and_labels(
                "proctor",
                [(
                    std::borrow::Cow::Borrowed("worker"),
                    std::borrow::Cow::Owned(worker.to_owned()),
                )]
                .into_iter(),
            ),
            names: Vec::new(),
        };
        let m = Metrics {
            messages: Family::default(),
            verdicts: Family::default(),
            dead_letters: Family::default(),
            retries: Family::default(),
            refusals: Family::default(),
            decisions: Family::default(),
            events_published: Counter::default(),
            reruns_resent: Counter::default(),
            record_to_verdict: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            stage_seconds: Family::default(),
            reference: ReferenceMetrics::new(),
            http_requests: Family::default(),
            http_request_seconds: Family::new_with_constructor(latency_histogram),
            consumer_lag: Family::default(),
            backlog: BacklogGauges::default(),
            logins: Family::default(),
            password_checks: Counter::default(),
            audit_checkpoints: Counter::default(),
            audit_log_broken: Gauge::default(),
            registry: Arc::new(Registry::default()),
            names: Arc::default(),
        };
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        registry.add(
            "build_info",
            "1, labelled with the version of the running build",
            build,
        );
        registry.add(
            "http_requests",
            "HTTP requests served, by route and status",
            m.http_requests.clone(),
        );
        registry.add(
            "http_request_seconds",
            "Seconds to answer an HTTP request, by route",
            m.http_request_seconds.clone(),
        );
        registry.add("messages", "Messages handled", m.messages.clone());
        registry.add("verdicts", "Verdicts recorded", m.verdicts.clone());
        registry.add(
            "dead_letters",
            "Messages sent to the dead-letter topic",
            m.dead_letters.clone(),
        );
        registry.add(
            "retries",
            "Retries of transient failures",
            m.retries.clone(),
        );
        registry.add(
            "refusals",
            "Requests a service refused for their input, never retried",
            m.refusals.clone(),
        );
        // Each worker exports what it does, so that no series reads a misleading 0.
        if worker == "judge" {
            registry.add(
                "decisions",
                "Judge decisions, by action and mode (live or shadow)",
                m.decisions.clone(),
            );
        }
        if worker == "publish" {
            registry.add(
                "events_published",
                "Slash events acknowledged by the broker",
                m.events_published.clone(),
            );
            m.backlog.register(&mut registry);
            registry.add(
                "reruns_resent",
                "Re-run requests sent again: sampled jobs with no re-run verdict in time",
                m.reruns_resent.clone(),
            );
        }
        if matches!(worker, "screen" | "rerun") {
            registry.add(
                "record_to_verdict_seconds",
                "From a job record's broker timestamp to its verdict's commit",
                m.record_to_verdict.clone(),
            );
            registry.add(
                "stage_seconds",
                "Wall seconds spent in each stage of a batch",
                m.stage_seconds.clone(),
            );
            registry.add(
                "consumer_lag",
                "Messages of an assigned partition not yet read, by topic and partition",
                m.consumer_lag.clone(),
            );
        }
        if worker == "review" {
            registry.add(
                "logins",
                "Review app login attempts, by outcome (ok, wrong, throttled, busy)",
                m.logins.clone(),
            );
            registry.add(
                "password_checks",
                "Argon2id password checks the review app ran",
                m.password_checks.clone(),
            );
        }
        if worker == "publish" {
            registry.add(
                "audit_checkpoints",
                "Audit-log head checkpoints signed and acknowledged by the broker",
                m.audit_checkpoints.clone(),
            );
            registry.add(
                "audit_log_broken",
                "1 while the audit log's hash chain is broken (no checkpoint is signed)",
                m.audit_log_broken.clone(),
            );
        }
        if matches!(worker, "rerun" | "serve-reference") {
            m.reference.register(&mut registry);
        }
        Metrics {
            registry: Arc::new(registry.registry),
            names: Arc::new(registry.names),
            ..m
        }
    }

    /// Adds the time since `since` to `stage`, and restarts `since`.
    pub fn lap(&self, stage: &'static str, since: &mut Instant) {
        let now = Instant::now();
        self.stage_seconds
            .get_or_create(&vec![("stage", stage.to_owned())])
            .inc_by((now - *since).as_secs_f64());
        *since = now;
    }

    /// Seconds spent in `stage` so far.
    pub fn stage(&self, stage: &'static str) -> f64 {
        self.stage_seconds
            .get_or_create(&vec![("stage", stage.to_owned())])
            .get()
    }

    /// The names of the metrics this process exports (`proctor_…`, without the
    /// `_total` of a counter), whether or not they have series yet.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Whether the worker is making progress.
#[derive(Clone)]
pub struct Health {
    inner: Arc<HealthInner>,
}

struct HealthInner {
    worker: String,
    started: Instant,
    stopping: AtomicBool,
    degraded: Mutex<Option<String>>,
}

impl Health {
    pub fn new(worker: &str) -> Health {
        Health {
            inner: Arc::new(HealthInner {
                worker: worker.to_owned(),
                started: Instant::now(),
                stopping: AtomicBool::new(false),
                degraded: Mutex::new(None),
            }),
        }
    }

    pub fn degraded(&self, why: &str) {
        if let Ok(mut d) = self.inner.degraded.lock() {
            *d = Some(why.to_owned());
        }
    }

    pub fn ok(&self) {
        if let Ok(mut d) = self.inner.degraded.lock() {
            *d = None;
        }
    }

    pub fn stopping(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
    }

    /// The status code and JSON body of `/healthz`.
    pub fn report(&self) -> (StatusCode, String) {
        let degraded = self.inner.degraded.lock().ok().and_then(|d| d.clone());
        let stopping = self.inner.stopping.load(Ordering::Relaxed);
        let status = match (stopping, &degraded) {
            (true, _) => "stopping",
            (false, Some(_)) => "degraded",
            (false, None) => "ok",
        };
        let body = serde_json::json!({
            "worker": self.inner.worker,
            "status": status,
            "error": degraded,
            "uptime_secs": self.inner.started.elapsed().as_secs(),
        });
        let code = if status == "ok" {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, body.to_string())
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Metrics,
    health: Health,
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    let (code, body) = s.health.report();
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

/// `/metrics` and `/healthz`, to merge into a process's router.
pub fn router(metrics_: Metrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(HttpState {
            metrics: metrics_,
            health,
        })
}

/// The layers every HTTP server of proctor has: a tracing span per request (method and
/// path; its status and latency logged at DEBUG, a server error at ERROR), a time
/// limit answered with 503, and the `http_requests` and `http_request_seconds`
/// metrics by route.
pub fn with_http_layers(router: Router, metrics: &Metrics, timeout: std::time::Duration) -> Router {
    router
        .route_layer(axum::middleware::from_fn_with_state(
            metrics.clone(),
            count_request,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

async fn count_request(
    State(m): State<Metrics>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    m.http_requests
        .get_or_create(&vec![
            ("route", route.clone()),
            ("status", response.status().as_u16().to_string()),
        ])
        .inc();
    m.http_request_seconds
        .get_or_create(&vec![("route", route)])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Serves `/metrics` and `/healthz` until the process ends; returns the bound address
/// (bind to port 0 to let the system pick one).
pub async fn serve(
    bind: SocketAddr,
    metrics_: Metrics,
    health: Health,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let app = with_http_layers(
        router(metrics_.clone(), health),
        &metrics_,
        std::time::Duration::from_secs(10),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_the_exposition_format_with_the_worker_label() {
        let m = Metrics::new("screen");
        m.messages
            .get_or_create(&vec![("result", "processed".to_owned())])
            .inc_by(3);
        let text = m.render();
        assert!(
            text.contains(r#"proctor_messages_total{worker="screen",result="processed"} 3"#),
            "{text}"
        );
        assert!(text.contains("proctor_record_to_verdict_seconds_bucket"));
        assert!(m.names().iter().any(|n| n == "proctor_consumer_lag"));
        assert!(
            text.contains(&format!(
                r#"proctor_build_info{{worker="screen",version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn each_worker_exports_only_what_it_counts() {
        let has = |worker: &str, name: &str| {
            Metrics::new(worker)
                .names()
                .iter()
                .any(|n| n == &format!("proctor_{name}"))
        };
        assert!(!has("screen", "events_published"));
        assert!(!has("screen", "decisions"));
        assert!(has("screen", "consumer_lag"));
        assert!(has("rerun", "consumer_lag"));
        assert!(!has("judge", "consumer_lag"));
        assert!(has("publish", "events_published"));
        assert!(has("publish", "reruns_resent"));
        assert!(!has("screen", "reruns_resent"));
        assert!(has("publish", "outbox_oldest_unpublished_seconds"));
        assert!(!has("publish", "record_to_verdict_seconds"));
        assert!(has("judge", "decisions"));
        assert!(has("serve-reference", "reference_requests"));
        let publish = Metrics::new("publish").render();
        assert!(
            publish.contains("proctor_events_published_total{worker=\"publish\"} 0"),
            "{publish}"
        );
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let quoted = anyhow::Error::new(crate::settings::SettingsError::Io {
            file: "x.toml".into(),
            source: io,
        })
        .context("loading the settings");
        assert_eq!(
            error_chain(&quoted),
            "loading the settings: cannot read settings file x.toml: No such file or directory"
        );
        let plain = anyhow::anyhow!("connection refused").context("cannot reach postgres");
        assert_eq!(
            error_chain(&plain),
            "cannot reach postgres: connection refused"
        );
    }

    #[test]
    fn health_is_unavailable_while_degraded_or_stopping() {
        let h = Health::new("judge");
        assert_eq!(h.report().0, StatusCode::OK);
        h.degraded("postgres: connection refused");
        let (code, body) = h.report();
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("connection refused"));
        h.ok();
        assert_eq!(h.report().0, StatusCode::OK);
        h.stopping();
        assert!(h.report().1.contains("stopping"));
    }
}

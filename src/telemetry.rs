//! What a worker tells its operators: JSON logs on stderr, Prometheus `/metrics`, and
//! `/healthz` (200 while the worker makes progress, 503 while it retries a dependency
//! that is down or is shutting down).

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

/// JSON lines on stderr; the level comes from `PROCTOR_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROCTOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .try_init();
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
    /// From the job record's broker timestamp to its verdict's commit.
    pub record_to_verdict: Histogram,
    /// Wall seconds spent in each stage of a batch (`consume`, `parse`, `lookup`,
    /// `fetch`, `judge`, `write`, `produce`): where a worker's time goes.
    pub stage_seconds: Family<Labels, Counter<f64, AtomicU64>>,
    /// The rerun worker's reference hosts.
    pub reference: ReferenceMetrics,
    registry: Arc<Registry>,
}

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

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

    fn register(&self, r: &mut Registry) {
        r.register(
            "reference_requests",
            "Calls to reference hosts, by host and result (ok, refused, failed, full)",
            self.requests.clone(),
        );
        r.register(
            "reference_request_seconds",
            "Reference host call latency, by host",
            self.latency.clone(),
        );
        r.register(
            "reference_gpu_seconds",
            "Seconds reference hosts spent on calls, by host",
            self.gpu_seconds.clone(),
        );
        r.register(
            "reference_queue_depth",
            "Jobs waiting for or running on a reference host",
            self.queue_depth.clone(),
        );
        r.register(
            "reference_host_up",
            "1 while a reference host passes its health check",
            self.up.clone(),
        );
        r.register(
            "reference_host_quarantined",
            "1 once a reference host is out of rotation for drift",
            self.quarantined.clone(),
        );
        r.register(
            "reference_disagreements",
            "Times a reference host was the odd one out of three",
            self.disagreements.clone(),
        );
        r.register(
            "reference_jobs",
            "Re-run jobs by how their reference run ended (rerun, shed, unavailable, refused, disagree)",
            self.jobs.clone(),
        );
        r.register(
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
        let mut registry = Registry::with_prefix_and_labels(
            "proctor",
            [(
                std::borrow::Cow::Borrowed("worker"),
                std::borrow::Cow::Owned(worker.to_owned()),
            )]
            .into_iter(),
        );
        let m = Metrics {
            messages: Family::default(),
            verdicts: Family::default(),
            dead_letters: Family::default(),
            retries: Family::default(),
            refusals: Family::default(),
            decisions: Family::default(),
            events_published: Counter::default(),
            record_to_verdict: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            stage_seconds: Family::default(),
            reference: ReferenceMetrics::new(),
            registry: Arc::new(Registry::default()),
        };
        registry.register("messages", "Messages handled", m.messages.clone());
        registry.register("verdicts", "Verdicts recorded", m.verdicts.clone());
        registry.register(
            "dead_letters",
            "Messages sent to the dead-letter topic",
            m.dead_letters.clone(),
        );
        registry.register(
            "retries",
            "Retries of transient failures",
            m.retries.clone(),
        );
        registry.register(
            "refusals",
            "Requests a service refused for their input, never retried",
            m.refusals.clone(),
        );
        registry.register("decisions", "Judge decisions", m.decisions.clone());
        registry.register(
            "events_published",
            "Slash events acknowledged by the broker",
            m.events_published.clone(),
        );
        registry.register(
            "record_to_verdict_seconds",
            "From a job record's broker timestamp to its verdict's commit",
            m.record_to_verdict.clone(),
        );
        registry.register(
            "stage_seconds",
            "Wall seconds spent in each stage of a batch",
            m.stage_seconds.clone(),
        );
        m.reference.register(&mut registry);
        Metrics {
            registry: Arc::new(registry),
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

/// Serves `/metrics` and `/healthz` until the process ends; returns the bound address
/// (bind to port 0 to let the system pick one).
pub async fn serve(
    bind: SocketAddr,
    metrics_: Metrics,
    health: Health,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(HttpState {
            metrics: metrics_,
            health,
        });
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
        assert!(text.trim_end().ends_with("# EOF"));
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

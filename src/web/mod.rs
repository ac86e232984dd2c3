//! The staff review app: HTML pages for reviewers, a JSON API for scripts, and the
//! objects behind the evidence, all behind authentication.
//!
//! - **Pages** (`/queue`, `/cases/{id}`, `/evidence/{job}/{check}`, `/admin`) need a
//!   login session; without one a page redirects to `/login`. Every form posts the
//!   session's CSRF token; a post without it is refused with 403. `/admin` needs the
//!   admin role (403 otherwise).
//! - **JSON API** (`/api/v1/...`) needs `Authorization: Bearer <token>` from
//!   `proctor staff token`; without one it answers 401. Its OpenAPI document is
//!   `/api/v1/openapi.json` (public: it describes, it discloses nothing).
//! - **Objects** (`/jobs/{job}/output`, `/jobs/{job}/reference`) are read from S3 by the
//!   app and served only to a session, only when they are a PNG or JPEG within the
//!   image check's size bound; never by a public URL.
//!
//! Every decision goes through `review::workflow` and `Store::act`, the same path as
//! `proctor review decide`.

mod api;
pub mod login;
mod pages;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use tower_sessions::cookie::SameSite;
use tower_sessions::cookie::time::Duration as CookieDuration;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::objects::ObjectStore;
use crate::rules::Rules;
use crate::settings::Settings;
use crate::store::Store;
use crate::view;

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    objects: ObjectStore,
    settings: Settings,
    rules: Rules,
    /// Signs reversals; the app holds no key that can sign a slash.
    reversals: Option<crate::events::ReversalSigner>,
    templates: minijinja::Environment<'static>,
    metrics: crate::telemetry::Metrics,
    logins: login::Logins,
}

impl App {
    pub fn new(
        store: Store,
        objects: ObjectStore,
        settings: Settings,
        rules: Rules,
        reversals: Option<crate::events::ReversalSigner>,
    ) -> App {
        let metrics = crate::telemetry::Metrics::new("review");
        App {
            inner: Arc::new(Inner {
                logins: login::Logins::new(&settings.review, metrics.clone()),
                metrics,
                store,
                objects,
                settings,
                rules,
                reversals,
                templates: view::templates(view::Links::App),
            }),
        }
    }
}

/// The session cookie's name: with the `__Host-` prefix wherever the cookie is
/// `Secure`, so that a browser takes it only from this host over HTTPS, for path `/`,
/// and never from a sibling domain that sets one of its own. Without `Secure` (a
/// plain-HTTP deployment on loopback) a browser would refuse a prefixed cookie.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-proctor_session"
    } else {
        "proctor_session"
    }
}

/// The app's routes, with its session layer.
pub fn router(app: App) -> Router {
    let metrics = app.inner.metrics.clone();
    let review = &app.inner.settings.review;
    let sessions = SessionManagerLayer::new(session::PgSessions::new(app.inner.store.clone()))
        .with_name(cookie_name(review.cookie_secure))
        .with_secure(review.cookie_secure)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(CookieDuration::minutes(i64::from(
            review.session_idle_minutes,
        ))))
        // Saved on every request, so the idle expiry really moves with activity: saved
        // only when its data changed, a session ended `session_idle_minutes` after
        // login however busy its reviewer was.
        .with_always_save(true);
    let pages = Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/logout/everywhere", post(pages::logout_everywhere))
        .route("/queue", get(pages::queue))
        .route("/cases/{id}", get(pages::case))
        .route("/cases/{id}/decide", post(pages::decide))
        .route("/evidence/{job}/{check}", get(pages::evidence))
        .route("/jobs/{job}/{which}", get(pages::object))
        .route("/admin", get(pages::admin))
        .route("/admin/staff", post(pages::admin_add))
        .route(
            "/admin/staff/{username}/disable",
            post(pages::admin_disable),
        )
        .route("/admin/tokens", post(pages::admin_token))
        .route(
            "/admin/tokens/{token_id}/revoke",
            post(pages::admin_revoke_token),
        )
        .route("/static/app.css", get(pages::css))
        .route("/static/app.js", get(pages::js))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/cases", get(api::list))
        .route("/api/v1/cases/{id}", get(api::show))
        .route("/api/v1/cases/{id}/decisions", post(api::decide))
        .layer(sessions)
        .with_state(app);
    // /healthz and /metrics as every proctor process serves them (public, like the
    // login page: they hold no case data), and the shared HTTP layers.
    let health = crate::telemetry::Health::new("review");
    crate::telemetry::with_http_layers(
        pages.merge(crate::telemetry::router(metrics.clone(), health)),
        &metrics,
        std::time::Duration::from_secs(60),
    )
    .layer(axum::middleware::map_response(security_headers))
}

/// Headers every response carries: no framing, no sniffing, no referrer, HTTPS only
/// for a year once a browser has seen the app over HTTPS (browsers ignore HSTS over
/// plain HTTP, so loopback is unaffected), and a content security policy that admits
/// only this app's own scripts, styles and images, and no `<base>` that would re-point
/// its relative links.
async fn security_headers(mut r: axum::response::Response) -> axum::response::Response {
    let h = r.headers_mut();
    for (name, value) in [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        (header::CONTENT_SECURITY_POLICY, CSP),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

/// The content security policy of every response.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Serves the app until the process ends or `stop` resolves; returns once bound with
/// the address (bind to port 0 to let the system pick one) and the server's task.
pub async fn serve(
    app: App,
    bind: SocketAddr,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let purge = tokio::spawn(login::purge_sessions(
        app.inner.store.clone(),
        std::time::Duration::from_secs(app.inner.settings.review.session_purge_seconds),
    ));
    let task = tokio::spawn(async move {
        // With the peer's address, for the login throttle (`login::ClientAddress`).
        let served = axum::serve(
            listener,
            router(app).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop)
        .await;
        purge.abort();
        served
    });
    Ok((addr, task))
}

/// What `proctor review serve` and `proctor-review` take.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// A settings file layered over the defaults (config/default.toml): `[review]` for
    /// the address, `database.url`, `[s3]`, `secrets.reversal_key` with
    /// `review.slash_public_key`.
    #[arg(long, env = "PROCTOR_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// A rules folder instead of the rules compiled in.
    #[arg(long, env = "PROCTOR_RULES")]
    pub rules: Option<std::path::PathBuf>,
}

/// Connects to Postgres (migrating it) and S3 from the settings and serves the app
/// until `stop` resolves.
pub async fn run(
    args: &ServeArgs,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let settings = Settings::load(args.config.as_deref())?;
    let rules = match &args.rules {
        Some(dir) => Rules::load_dir(dir)?,
        None => Rules::embedded()?,
    };
    let store = Store::open(
        settings.database.url.expose(),
        settings.database.max_connections,
    )
    .await?;
    if settings.secrets.signing_key.is_set() {
        tracing::warn!(
            "secrets.signing_key is set, and the review app never uses it: keep the slash key out of this process's settings (the judge signs confirmed slashes)"
        );
    }
    let reversals = settings.reversal_signer()?;
    if reversals.is_none() {
        tracing::warn!("secrets.reversal_key is not set: reversals will be refused");
    }
    let objects = ObjectStore::new(&settings.s3);
    let bind = settings.review.bind;
    let app = App::new(store, objects, settings, rules, reversals);
    let (addr, task) = serve(app, bind, stop)
        .await
        .with_context(|| format!("cannot listen on {bind} (review.bind)"))?;
    tracing::info!(%addr, "review app listening");
    task.await??;
    tracing::info!("review app stopped");
    Ok(())
}

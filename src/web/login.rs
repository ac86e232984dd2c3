//! Password logins to the review app: throttled, checked off the async threads, and
//! protected from login CSRF without a session row.
//!
//! - **Throttling** ([`crate::review::throttle`]): per client address and per account,
//!   failures beyond the free ones lock the key with a doubling backoff. A refused
//!   attempt is answered 429 with `Retry-After` before any password check.
//! - **Password checks** (Argon2id, 19 MiB each) run on the blocking pool, at most
//!   `review.password_checks` at once; a login that waits longer than
//!   `review.login_queue_ms` for one is answered 503. The async threads that serve
//!   `/healthz` and the decisions never hash.
//! - **What is recorded.** Every attempt is counted in `proctor_logins_total{outcome}`
//!   and each failure is logged (tracing); the audit log gets one entry per login and
//!   one per lock of an existing account, not one per failure.
//! - **The login form's CSRF token** is a double-submit cookie (`__Host-proctor_login`
//!   where cookies are `Secure`): the form posts the value the cookie holds. An
//!   anonymous visitor therefore costs no session row; the session is created at
//!   login, with a new id and a new CSRF token.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use tokio::sync::Semaphore;
use tower_sessions::cookie::{Cookie, SameSite};

use super::App;
use crate::review::throttle::{Policy, Refused, Throttle};
use crate::review::{Actor, auth};
use crate::settings::ReviewSettings;
use crate::store::Store;
use crate::telemetry::Metrics;

/// Keys each throttle table holds at most (about 100 bytes each).
const THROTTLE_CAP: usize = 100_000;

/// The longest username and password a login considers; longer ones fail unchecked.
const MAX_USERNAME_BYTES: usize = 256;
const MAX_PASSWORD_BYTES: usize = 1024;

/// How a login attempt ended.
#[derive(Debug)]
pub enum Outcome {
    In(Actor),
    Wrong,
    Refused(Refused),
    /// Every password check was taken for longer than `review.login_queue_ms`.
    Busy,
}

/// The review app's logins: the throttle, the password-check slots, the counters.
pub struct Logins {
    throttle: Mutex<Throttle>,
    checks: Arc<Semaphore>,
    queue: Duration,
    metrics: Metrics,
}

impl Logins {
    pub fn new(review: &ReviewSettings, metrics: Metrics) -> Logins {
        let policy = |free| Policy {
            free,
            base: Duration::from_secs(1),
            max: Duration::from_secs(review.login_lock_max_seconds),
            forget: Duration::from_secs(review.login_forget_seconds),
        };
        Logins {
            throttle: Mutex::new(Throttle::new(
                policy(review.login_free_failures_per_address),
                policy(review.login_free_failures_per_account),
                THROTTLE_CAP,
            )),
            checks: Arc::new(Semaphore::new(review.password_checks.max(1))),
            queue: Duration::from_millis(review.login_queue_ms),
            metrics,
        }
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        // The throttle's state is counts: one left half-updated by a panic is still
        // a usable count.
        self.throttle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, outcome: &str) {
        self.metrics
            .logins
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// Tries `username` and `password` from `address`.
    pub async fn attempt(
        &self,
        store: &Store,
        address: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<Outcome, sqlx::Error> {
        let attempt = match self.throttle().admit(address, username, Instant::now()) {
            Ok(a) => a,
            Err(refused) => {
                self.count("throttled");
                tracing::warn!(
                    %address,
                    username = %short(username),
                    by = ?refused.by,
                    retry_after_s = refused.retry_after.as_secs_f64().ceil(),
                    "login refused: too many failures"
                );
                return Ok(Outcome::Refused(refused));
            }
        };
        // Until it succeeds, the attempt counts as a failure; an infrastructure error
        // takes it back, so that an outage locks nobody out.
        let withdraw = || self.throttle().withdraw(address, username);
        let account = if username.len() > MAX_USERNAME_BYTES {
            None
        } else {
            match store.credentials(username).await {
                Ok(a) => a,
                Err(e) => {
                    withdraw();
                    return Err(e);
                }
            }
        };
        let actor = if password.len() > MAX_PASSWORD_BYTES {
            None
        } else {
            let Ok(Ok(permit)) =
                tokio::time::timeout(self.queue, self.checks.clone().acquire_owned()).await
            else {
                withdraw();
                self.count("busy");
                return Ok(Outcome::Busy);
            };
            self.metrics.password_checks.inc();
            let (account, password) = (account.clone(), password.to_owned());
            tokio::task::spawn_blocking(move || {
                let _slot = permit;
                auth::check_login(account.as_ref(), &password)
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "the password check failed");
                None
            })
        };
        match actor {
            Some(actor) => {
                self.throttle().succeeded(address, username);
                store.log_login(&actor).await?;
                self.count("ok");
                Ok(Outcome::In(actor))
            }
            None => {
                self.count("wrong");
                tracing::warn!(
                    %address,
                    username = %short(username),
                    failures = attempt.account_failures,
                    "failed login"
                );
                if let (Some(lock), Some(account)) = (attempt.locks_account, &account) {
                    store
                        .log_login_locked(
                            &account.username,
                            attempt.account_failures,
                            lock.as_secs(),
                        )
                        .await?;
                }
                Ok(Outcome::Wrong)
            }
        }
    }
}

fn short(username: &str) -> String {
    username.chars().take(64).collect()
}

/// The client's address: the last entry of `review.client_address_header` behind a
/// proxy that sets it, otherwise the TCP peer's address.
pub struct ClientAddress(pub IpAddr);

impl FromRequestParts<App> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let name = &app.inner.settings.review.client_address_header;
        if !name.is_empty()
            && let Some(ip) = parts
                .headers
                .get_all(name.as_str())
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return Ok(ClientAddress(ip));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        Ok(ClientAddress(peer))
    }
}

/// The login form's CSRF cookie: `__Host-` prefixed wherever cookies are `Secure`.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-proctor_login"
    } else {
        "proctor_login"
    }
}

/// The login form token the request's cookie holds, when it has the shape of one.
pub fn posted_cookie(headers: &HeaderMap, secure: bool) -> Option<String> {
    let name = cookie_name(secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` that gives the browser `token` for an hour, or (`None`) removes it.
pub fn set_cookie(token: Option<&str>, secure: bool) -> HeaderValue {
    let age = if token.is_some() { 3600 } else { 0 };
    let cookie = Cookie::build((cookie_name(secure), token.unwrap_or("").to_owned()))
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .max_age(tower_sessions::cookie::time::Duration::seconds(age))
        .build();
    HeaderValue::from_str(&cookie.to_string()).expect("a cookie of hex digits is a header value")
}

/// Deletes expired sessions every `every`, for as long as the app runs.
pub async fn purge_sessions(store: Store, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.purge_sessions().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "purged expired sessions"),
            Err(e) => tracing::warn!(error = %e, "cannot purge expired sessions"),
        }
    }
}

//! The reviewer's HTML pages: login, the queue, a miner's case, one piece of evidence,
//! the objects behind it, and the admin page. Templates are minijinja, compiled into
//! the binary, with HTML autoescaping.

use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDate, Utc};
use minijinja::context;
use serde::Deserialize;
use tower_sessions::Session;

use super::App;
use super::login::{self, ClientAddress, Outcome};
use super::session::{self, USER};
use crate::checks::llm::TokenScores;
use crate::objects::Got;
use crate::outcome::CheckId;
use crate::record::Job;
use crate::review::workflow::ActionError;
use crate::review::{self, Actor, CaseStatus, Role, StaffAction, Via};
use crate::store::review::{CaseFilter, ReviewError};
use crate::view::{self, ser};

const PAGE: i64 = 50;

fn render(app: &App, name: &str, status: StatusCode, ctx: minijinja::Value) -> Response {
    match app
        .inner
        .templates
        .get_template(name)
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "cannot render");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render this page").into_response()
        }
    }
}

fn failure(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "review app");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the review app cannot reach its database or object store; try again",
    )
        .into_response()
}

/// The logged-in staff member, or a redirect to the login page.
async fn who(app: &App, session: &Session) -> Result<Actor, Response> {
    let user: Option<String> = session.get(USER).await.ok().flatten();
    let Some(user) = user else {
        return Err(Redirect::to("/login").into_response());
    };
    let via = Via::Web {
        session: session.id().map(|id| session::short_id(&id)),
    };
    match app.inner.store.staff_actor(&user, via).await {
        Ok(Some(actor)) => Ok(actor),
        // Disabled since the login: the session ends here.
        Ok(None) => {
            let _ = session.flush().await;
            Err(Redirect::to("/login").into_response())
        }
        Err(e) => Err(failure(e)),
    }
}

/// The logged-in staff member, as an extractor: a handler that takes it runs only for
/// a session of an enabled account, and anyone else is sent to the login page.
pub struct Staff(pub Actor);

impl FromRequestParts<App> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Staff, Response> {
        let session = Session::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        who(app, &session).await.map(Staff)
    }
}

/// A page for `actor`, with what the layout needs.
async fn page(
    app: &App,
    session: &Session,
    actor: &Actor,
    name: &str,
    status: StatusCode,
    ctx: minijinja::Value,
) -> Response {
    let csrf = match session::csrf_token(session).await {
        Ok(t) => t,
        Err(e) => return failure(e),
    };
    let base = context! { me => ser(actor), csrf => csrf };
    render(app, name, status, context! { ..base, ..ctx })
}

async fn message(
    app: &App,
    session: &Session,
    actor: &Actor,
    status: StatusCode,
    title: &str,
    text: &str,
    back: &str,
) -> Response {
    page(
        app,
        session,
        actor,
        "message.html",
        status,
        context! { title => title, text => text, back => back },
    )
    .await
}

/// Refuses a posted form whose CSRF token is not the session's.
async fn csrf(session: &Session, posted: &str) -> Result<(), Response> {
    if session::check_csrf(session, posted).await {
        Ok(())
    } else {
        Err(forbidden(
            "the form's CSRF token is missing or wrong; reload the page",
        ))
    }
}

fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, why.to_owned()).into_response()
}

pub async fn home() -> Redirect {
    Redirect::to("/queue")
}

pub async fn login_form(State(app): State<App>, headers: HeaderMap) -> Response {
    login_page(&app, &headers, StatusCode::OK, None, None)
}

/// The login page, with the form token of the browser's login cookie (a new one, and
/// the cookie that holds it, when it has none).
fn login_page(
    app: &App,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
    retry_after: Option<std::time::Duration>,
) -> Response {
    let secure = app.inner.settings.review.cookie_secure;
    let (token, fresh) = match login::posted_cookie(headers, secure) {
        Some(t) => (t, false),
        None => (session::random_token(), true),
    };
    let mut r = render(
        app,
        "login.html",
        status,
        context! { csrf => &token, error => error },
    );
    if fresh {
        r.headers_mut()
            .append(header::SET_COOKIE, login::set_cookie(Some(&token), secure));
    }
    if let Some(after) = retry_after {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(after.as_secs().max(1)),
        );
    }
    r
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    username: String,
    password: String,
}

pub async fn login(
    State(app): State<App>,
    ClientAddress(address): ClientAddress,
    session: Session,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let secure = app.inner.settings.review.cookie_secure;
    // The login form's CSRF check: the posted token is the one the browser's login
    // cookie holds, which another site can neither read nor set.
    if !login::posted_cookie(&headers, secure).is_some_and(|c| session::same_token(&c, &f.csrf)) {
        return forbidden("the form's CSRF token is missing or wrong; reload the page");
    }
    let store = &app.inner.store;
    let outcome = app
        .inner
        .logins
        .attempt(store, address, &f.username, &f.password)
        .await;
    match outcome {
        Ok(Outcome::In(actor)) => {
            // A new session id at login: a session fixed before it is worth nothing.
            if let Err(e) = session.cycle_id().await {
                return failure(e);
            }
            // The session's CSRF token is made after the login, on its first page:
            // neither the login form's token (seen by anyone who saw that page) nor
            // one of a session this browser had before is it.
            if let Err(e) = session.remove::<String>(session::CSRF).await {
                return failure(e);
            }
            if let Err(e) = session.insert(USER, &actor.username).await {
                return failure(e);
            }
            let mut r = Redirect::to("/queue").into_response();
            r.headers_mut()
                .append(header::SET_COOKIE, login::set_cookie(None, secure));
            r
        }
        Ok(Outcome::Wrong) => login_page(
            &app,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("wrong username or password, or the account is disabled"),
            None,
        ),
        Ok(Outcome::Refused(r)) => login_page(
            &app,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            Some("too many failed logins: wait and try again"),
            Some(r.retry_after),
        ),
        Ok(Outcome::Busy) => login_page(
            &app,
            &headers,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("too many logins at once: try again in a moment"),
            Some(std::time::Duration::from_secs(1)),
        ),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(app): State<App>,
    session: Session,
    Staff(actor): Staff,
    Form(f): Form<CsrfForm>,
) -> Response {
    end_session(&app, &session, &actor, &f.csrf, false).await
}

/// Ends every session of the signed-in account, this one included.
pub async fn logout_everywhere(
    State(app): State<App>,
    session: Session,
    Staff(actor): Staff,
    Form(f): Form<CsrfForm>,
) -> Response {
    end_session(&app, &session, &actor, &f.csrf, true).await
}

/// Logs out this session, or every session of `actor` when `everywhere`, and sends
/// the browser to the login page.
async fn end_session(
    app: &App,
    session: &Session,
    actor: &Actor,
    posted_csrf: &str,
    everywhere: bool,
) -> Response {
    if let Err(r) = csrf(session, posted_csrf).await {
        return r;
    }
    let store = &app.inner.store;
    let ended = if everywhere {
        store.logout_everywhere(actor).await.map(drop)
    } else {
        store.logout(actor).await
    };
    if let Err(e) = ended {
        return failure(e);
    }
    let _ = session.flush().await;
    Redirect::to("/login").into_response()
}

#[derive(Deserialize, Default)]
pub struct QueueParams {
    status: Option<String>,
    check: Option<String>,
    model: Option<String>,
    gpu: Option<String>,
    since: Option<String>,
    until: Option<String>,
    page: Option<i64>,
}

fn day(s: &Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub async fn queue(
    State(app): State<App>,
    session: Session,
    Staff(actor): Staff,
    Query(q): Query<QueueParams>,
) -> Response {
    let page_no = q.page.unwrap_or(1).max(1);
    let filter = CaseFilter {
        status: q.status.as_deref().and_then(CaseStatus::parse),
        check: nonempty(&q.check),
        model: nonempty(&q.model),
        gpu: nonempty(&q.gpu),
        miner: None,
        since: day(&q.since),
        until: day(&q.until).map(|d| d + chrono::Duration::days(1)),
        limit: PAGE,
        offset: (page_no - 1) * PAGE,
    };
    let cases = match app.inner.store.cases(&filter).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    let pages = (cases.total + PAGE - 1) / PAGE;
    let rows: Vec<_> = cases.cases.iter().map(view::queue_row).collect();
    // The query string without the page, for the pager's links.
    let keep: Vec<(String, String)> = [
        ("status", &q.status),
        ("check", &q.check),
        ("model", &q.model),
        ("gpu", &q.gpu),
        ("since", &q.since),
        ("until", &q.until),
    ]
    .into_iter()
    .filter_map(|(k, v)| nonempty(v).map(|v| (k.to_owned(), v)))
    .collect();
    let query: String = keep
        .iter()
        .map(|(k, v)| format!("{k}={}&", view::urlencode(v)))
        .collect();
    page(
        &app,
        &session,
        &actor,
        "queue.html",
        StatusCode::OK,
        context! {
            rows => rows,
            total => cases.total,
            page => page_no,
            pages => pages,
            query => query,
            statuses => CaseStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            checks => CheckId::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            f => context! {
                status => q.status, check => q.check, model => q.model, gpu => q.gpu,
                since => q.since, until => q.until,
            },
        },
    )
    .await
}

pub async fn case(
    State(app): State<App>,
    session: Session,
    Staff(actor): Staff,
    Path(id): Path<i64>,
) -> Response {
    case_page(&app, &session, &actor, id, StatusCode::OK, None).await
}

async fn case_page(
    app: &App,
    session: &Session,
    actor: &Actor,
    id: i64,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let store = &app.inner.store;
    let rules = &app.inner.rules;
    let detail = match store.case(id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return message(
                app,
                session,
                actor,
                StatusCode::NOT_FOUND,
                "No such case",
                &format!("There is no case {id}."),
                "/queue",
            )
            .await;
        }
        Err(e) => return failure(e),
    };
    let c = &detail.case;
    let jobs = match store.miner_jobs(&c.miner_id, 500).await {
        Ok(j) => j,
        Err(e) => return failure(e),
    };
    let miner = crate::ids::MinerId::parse(&c.miner_id).ok();
    let wallet = miner
        .as_ref()
        .map(|m| m.wallet().to_owned())
        .unwrap_or_default();
    let nfts = store.wallet_nfts(&wallet).await.ok().flatten();
    let factor = match &miner {
        Some(m) => store.points_factor(m, rules).await.unwrap_or(1.0),
        None => 1.0,
    };
    let owner = view::Owner {
        wallet,
        nfts,
        factor,
    };
    let borrowed: Vec<_> = jobs.iter().map(|(r, v)| (r, v.as_ref())).collect();
    let shown = view::case_context(c, &borrowed, &owner, rules);
    let facts = crate::review::workflow::case_facts(
        c,
        detail
            .appeals
            .iter()
            .find(|a| a.outcome.is_none())
            .map(|a| a.filed_by.clone()),
        rules,
    );
    let second_dismissal = matches!(facts.dismissal, review::Dismissal::TwoReviewers { .. });
    let actions: Vec<_> = StaffAction::ALL
        .into_iter()
        .filter(|a| review::next(&facts, *a, actor, "x").is_ok())
        .map(|a| context! { name => a.as_str(), needs_reason => a.needs_reason() })
        .collect();
    page(
        app,
        session,
        actor,
        "case.html",
        status,
        context! {
            error => error,
            history => ser(&detail.actions),
            appeals => ser(&detail.appeals),
            actions => actions,
            second_dismissal => second_dismissal,
            dismiss_proposed_by => &c.dismiss_proposed_by,
            ..shown
        },
    )
    .await
}

#[derive(Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    action: String,
    #[serde(default)]
    reason: String,
}

pub async fn decide(
    State(app): State<App>,
    session: Session,
    Staff(actor): Staff,
    Path(id): Path<i64>,
    Form(f): Form<DecideForm>,
) -> Response {
    if let Err(r) = csrf(&session, &f.csrf).await {
        return r;
    }
    let Some(action) = StaffAction::parse(&f.action) else {
        return case_page(
            &app,
            &session,
            &actor,
            id,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(format!("unknown action {:?}", f.action)),
        )
        .await;
    };
    let inner = &app.inner;
    let request = crate::review::workflow::Request {
        action,
        actor: &actor,
        reason: &f.reason,
        rules: &inner.rules,
        reversals: inner.reversals.as_ref(),
    };
    match inner
        .store
        .act(&actor, id, request.reads(), |facts| request.decide(facts))
        .await
    {
        Ok(_) => Redirect::to(&format!("/cases/{id}")).into_response(),
        Err(ReviewError::NoCase(_)) => {
            message(
                &app,
                &session,
                &actor,
                StatusCode::NOT_FOUND,
                "No such case",
                &format!("There is no case {id}."),
                "/queue",
            )
            .await
        }
        Err(e)
            if e.is_refusal() || matches!(e, ReviewError::Action(ActionError::NoReversalKey)) =>
        {
            let status = super::api::status_of(&e);
            case_page(&app, &session, &actor, id, status, Some(e.to_string())).await
        }
        Err(e) => failure(e),
    }
}

/// One failed (or passed) check of one job, with what a reviewer needs to judge it.
pub async fn evidence(
    State(app): State<App>,
    session: Session,
    Staff(actor): Staff,
    Path((job, check)): Path<(String, String)>,
) -> Response {
    let inner = &app.inner;
    let Some((record, verdict)) = (match inner.store.job(&job).await {
        Ok(j) => j,
        Err(e) => return failure(e),
    }) else {
        return message(
            &app,
            &session,
            &actor,
            StatusCode::NOT_FOUND,
            "No such job",
            &format!("There is no job {job}."),
            "/queue",
        )
        .await;
    };
    let rules = &inner.rules;
    let mut fetched = view::Related::default();
    match view::need(&record, verdict.as_ref(), &check) {
        view::Need::Nothing => {}
        view::Need::SameOutput(original) => match inner.store.same_output(&original).await {
            Ok(g) => fetched.same_output = g,
            Err(e) => return failure(e),
        },
        view::Need::Scores => {
            let key = format!("reference/{}/scores.json", record.job_id.as_str());
            fetched.scores = match inner
                .objects
                .get_bounded(
                    &inner.settings.s3.reference_bucket,
                    &key,
                    rules.checks.llm.max_text_bytes.saturating_mul(64),
                )
                .await
            {
                Ok(Got::Found(bytes)) => serde_json::from_slice::<TokenScores>(&bytes).ok(),
                Ok(Got::NotFound) => None,
                Err(e) => {
                    tracing::warn!(error = %e, job = %record.job_id, "token scores");
                    None
                }
            };
        }
        view::Need::Latencies => {
            let own = match inner
                .store
                .miner_jobs(record.miner_id.to_string().as_str(), 500)
                .await
            {
                Ok(j) => j,
                Err(e) => return failure(e),
            };
            fetched.own_latencies = own
                .iter()
                .filter(|(r, _)| r.model_id == record.model_id)
                .map(|(r, _)| r.metrics.inference_latency)
                .collect();
            fetched.peer_latencies = match inner
                .store
                .peer_latencies(
                    &record.metrics.hardware,
                    record.model_id.as_str(),
                    &record.miner_id.to_string(),
                    2000,
                )
                .await
            {
                Ok(p) => p,
                Err(e) => return failure(e),
            };
        }
    }
    let ctx = view::evidence_context(&record, verdict.as_ref(), &check, rules, &fetched);
    page(&app, &session, &actor, "evidence.html", StatusCode::OK, ctx).await
}

/// The miner's output or the reference image of a job, from S3.
pub async fn object(
    State(app): State<App>,
    _staff: Staff,
    Path((job, which)): Path<(String, String)>,
) -> Response {
    let inner = &app.inner;
    let record = match inner.store.job(&job).await {
        Ok(Some((r, _))) => r,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such job").into_response(),
        Err(e) => return failure(e),
    };
    let s3 = &inner.settings.s3;
    let limit = inner.rules.checks.image.max_object_bytes;
    let keys: Vec<(String, String)> = match (which.as_str(), &record.job) {
        ("output", Job::Sd { output, .. }) => {
            vec![(s3.jobs_bucket.clone(), output.image_key.as_str().to_owned())]
        }
        ("reference", Job::Sd { .. }) => ["image.png", "image.jpg"]
            .iter()
            .map(|n| {
                (
                    s3.reference_bucket.clone(),
                    format!("reference/{}/{n}", record.job_id.as_str()),
                )
            })
            .collect(),
        _ => return (StatusCode::NOT_FOUND, "no such object").into_response(),
    };
    for (bucket, key) in keys {
        match inner.objects.get_bounded(&bucket, &key, limit).await {
            Ok(Got::Found(bytes)) => {
                if bytes.len() as u64 > limit {
                    return (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "larger than the image check reads",
                    )
                        .into_response();
                }
                // Only what the image check reads is served.
                let Some((mime, _)) = view::browser_image(&bytes) else {
                    return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not a PNG or JPEG")
                        .into_response();
                };
                // ... and only what it decoded within its bounds: a PNG declaring
                // 60000×60000 pixels in a few kilobytes would hang a reviewer's tab.
                let image_rules = inner.rules.checks.image.clone();
                let decoded = tokio::task::spawn_blocking(move || {
                    let ok = crate::checks::image::decode(&bytes, &image_rules).map(|_| ());
                    (ok, bytes)
                })
                .await;
                let bytes = match decoded {
                    Ok((Ok(()), bytes)) => bytes,
                    Ok((Err(why), _)) => {
                        return (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            format!("the image check could not decode it: {why}"),
                        )
                            .into_response();
                    }
                    Err(e) => return failure(e),
                };
                return (
                    [
                        (header::CONTENT_TYPE, mime),
                        (header::CACHE_CONTROL, "private, max-age=300"),
                        (header::CONTENT_DISPOSITION, "inline"),
                    ],
                    bytes,
                )
                    .into_response();
            }
            Ok(Got::NotFound) => continue,
            Err(e) => return failure(e),
        }
    }
    (StatusCode::NOT_FOUND, "not in the object store").into_response()
}

async fn admin_page(
    app: &App,
    session: &Session,
    actor: &Actor,
    status: StatusCode,
    note: Option<String>,
    token: Option<String>,
) -> Response {
    let staff = match app.inner.store.staff_list().await {
        Ok(s) => s,
        Err(e) => return failure(e),
    };
    let tokens = match app.inner.store.live_tokens(None).await {
        Ok(t) => t,
        Err(e) => return failure(e),
    };
    page(
        app,
        session,
        actor,
        "admin.html",
        status,
        context! {
            staff => ser(&staff),
            tokens => ser(&tokens),
            note => note,
            token => token,
            default_days => crate::store::review::DEFAULT_TOKEN_DAYS,
            max_days => crate::store::review::MAX_TOKEN_DAYS,
        },
    )
    .await
}

async fn admin_actor(
    app: &App,
    session: &Session,
    posted: Option<&str>,
) -> Result<Actor, Response> {
    let actor = who(app, session).await?;
    if actor.role != Role::Admin {
        return Err(forbidden("this page is for admins"));
    }
    if let Some(posted) = posted {
        csrf(session, posted).await?;
    }
    Ok(actor)
}

pub async fn admin(State(app): State<App>, session: Session) -> Response {
    match admin_actor(&app, &session, None).await {
        Ok(actor) => admin_page(&app, &session, &actor, StatusCode::OK, None, None).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    username: String,
    role: String,
    password: String,
}

pub async fn admin_add(
    State(app): State<App>,
    session: Session,
    Form(f): Form<AddForm>,
) -> Response {
    let actor = match admin_actor(&app, &session, Some(&f.csrf)).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(role) = Role::parse(&f.role) else {
        return admin_page(
            &app,
            &session,
            &actor,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(format!("unknown role {:?}", f.role)),
            None,
        )
        .await;
    };
    match app
        .inner
        .store
        .add_staff(&actor, &f.username, role, &f.password)
        .await
    {
        Ok(()) => {
            admin_page(
                &app,
                &session,
                &actor,
                StatusCode::OK,
                Some(format!("added {} {}", role.as_str(), f.username)),
                None,
            )
            .await
        }
        Err(ReviewError::Db(e)) if crate::store::refuses_input(&e) => {
            admin_page(
                &app,
                &session,
                &actor,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("a username is lower-case letters, digits, '.', '_' and '-'".into()),
                None,
            )
            .await
        }
        Err(e) if e.is_refusal() => {
            admin_page(
                &app,
                &session,
                &actor,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(e.to_string()),
                None,
            )
            .await
        }
        Err(e) => failure(e),
    }
}

pub async fn admin_disable(
    State(app): State<App>,
    session: Session,
    Path(username): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let actor = match admin_actor(&app, &session, Some(&f.csrf)).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match app.inner.store.disable_staff(&actor, &username).await {
        Ok(()) => {
            admin_page(
                &app,
                &session,
                &actor,
                StatusCode::OK,
                Some(format!("disabled {username}")),
                None,
            )
            .await
        }
        Err(ReviewError::NoStaff(u)) => {
            admin_page(
                &app,
                &session,
                &actor,
                StatusCode::NOT_FOUND,
                Some(format!("no account {u}")),
                None,
            )
            .await
        }
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    /// The holder: the admin asking, whom an empty field means. Any other is refused
    /// (a token is issued only to its holder).
    #[serde(default)]
    username: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    days: Option<u32>,
}

pub async fn admin_token(
    State(app): State<App>,
    session: Session,
    Form(f): Form<TokenForm>,
) -> Response {
    let actor = match admin_actor(&app, &session, Some(&f.csrf)).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let holder = if f.username.is_empty() {
        actor.username.as_str()
    } else {
        f.username.as_str()
    };
    let days = f.days.unwrap_or(crate::store::review::DEFAULT_TOKEN_DAYS);
    match app
        .inner
        .store
        .create_token(&actor, holder, &f.label, days)
        .await
    {
        Ok(t) => {
            admin_page(
                &app,
                &session,
                &actor,
                StatusCode::OK,
                Some(format!(
                    "token {} for {holder}, valid {days} days: copy it now, it is not shown again",
                    t.token_id
                )),
                Some(t.token),
            )
            .await
        }
        Err(e @ (ReviewError::NotTheHolder { .. } | ReviewError::TokenLifetime(_))) => {
            let status = super::api::status_of(&e);
            admin_page(&app, &session, &actor, status, Some(e.to_string()), None).await
        }
        Err(ReviewError::NoStaff(u)) => {
            admin_page(
                &app,
                &session,
                &actor,
                StatusCode::NOT_FOUND,
                Some(format!("no enabled account {u}")),
                None,
            )
            .await
        }
        Err(e) => failure(e),
    }
}

pub async fn admin_revoke_token(
    State(app): State<App>,
    session: Session,
    Path(token_id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let actor = match admin_actor(&app, &session, Some(&f.csrf)).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    // An admin may revoke anyone's token: revoking takes power away, never gives it.
    match app.inner.store.revoke_token(&actor, &token_id, true).await {
        Ok(()) => {
            admin_page(
                &app,
                &session,
                &actor,
                StatusCode::OK,
                Some(format!("revoked token {token_id}")),
                None,
            )
            .await
        }
        Err(e @ ReviewError::NoToken(_)) => {
            let status = super::api::status_of(&e);
            admin_page(&app, &session, &actor, status, Some(e.to_string()), None).await
        }
        Err(e) => failure(e),
    }
}

pub async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        view::STYLESHEET,
    )
}

pub async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        view::SCRIPT,
    )
}

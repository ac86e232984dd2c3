//! The reviewer's HTML pages: login, the queue, a miner's case, one piece of evidence,
//! the objects behind it, and the admin page. Templates are minijinja, compiled into
//! the binary, with HTML autoescaping.

use std::collections::BTreeSet;

use axum::extract::{Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDate, Utc};
use minijinja::{Value, context};
use serde::Deserialize;
use tower_sessions::Session;

use super::App;
use super::charts;
use super::session::{self, USER};
use crate::checks::llm::TokenScores;
use crate::objects::Got;
use crate::outcome::{CheckId, Outcome};
use crate::record::{Job, JobRecord};
use crate::review::{self, Actor, CaseFacts, CaseStatus, Role, StaffAction};
use crate::store::review::{CaseFilter, ReviewError};

const PAGE: i64 = 50;

/// A template value of anything serializable.
fn ser<T: serde::Serialize>(x: T) -> Value {
    Value::from(minijinja::value::Serde(x))
}

pub fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("queue.html", include_str!("templates/queue.html")),
        ("case.html", include_str!("templates/case.html")),
        ("evidence.html", include_str!("templates/evidence.html")),
        ("admin.html", include_str!("templates/admin.html")),
        ("message.html", include_str!("templates/message.html")),
    ] {
        // The templates are this crate's own: one that does not parse fails the
        // test suite (`every_template_renders`), never a reviewer.
        if let Err(e) = env.add_template(name, text) {
            tracing::error!(template = name, error = %e, "template does not parse");
        }
    }
    env.add_filter("num", num);
    env.add_filter("prob", prob);
    env
}

/// A number as a person reads it: at most four significant digits, scientific only
/// when tiny or huge.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == v.trunc() && v.abs() < 1e9 {
        return format!("{v:.0}");
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// A probability: "1" when there is no evidence, else scientific below 1 %.
pub fn prob(v: f64) -> String {
    if v >= 1.0 {
        "1".into()
    } else if v >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.1e}")
    }
}

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
    match app.inner.store.staff_actor(&user).await {
        Ok(Some(actor)) => Ok(actor),
        // Disabled since the login: the session ends here.
        Ok(None) => {
            let _ = session.flush().await;
            Err(Redirect::to("/login").into_response())
        }
        Err(e) => Err(failure(e)),
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

fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, why.to_owned()).into_response()
}

pub async fn home() -> Redirect {
    Redirect::to("/queue")
}

pub async fn login_form(State(app): State<App>, session: Session) -> Response {
    login_page(&app, &session, StatusCode::OK, None).await
}

async fn login_page(
    app: &App,
    session: &Session,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    match session::csrf_token(session).await {
        Ok(csrf) => render(
            app,
            "login.html",
            status,
            context! { csrf => csrf, error => error },
        ),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    username: String,
    password: String,
}

pub async fn login(State(app): State<App>, session: Session, Form(f): Form<LoginForm>) -> Response {
    if !session::check_csrf(&session, &f.csrf).await {
        return forbidden("the form's CSRF token is missing or wrong; reload the page");
    }
    match app.inner.store.login(&f.username, &f.password).await {
        Ok(Some(actor)) => {
            // A new session id at login: a session fixed before it is worth nothing.
            if let Err(e) = session.cycle_id().await {
                return failure(e);
            }
            if let Err(e) = session.insert(USER, &actor.username).await {
                return failure(e);
            }
            Redirect::to("/queue").into_response()
        }
        Ok(None) => {
            login_page(
                &app,
                &session,
                StatusCode::UNAUTHORIZED,
                Some("wrong username or password, or the account is disabled"),
            )
            .await
        }
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(State(app): State<App>, session: Session, Form(f): Form<CsrfForm>) -> Response {
    let actor = match who(&app, &session).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if !session::check_csrf(&session, &f.csrf).await {
        return forbidden("the form's CSRF token is missing or wrong; reload the page");
    }
    if let Err(e) = app.inner.store.logout(&actor).await {
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
    Query(q): Query<QueueParams>,
) -> Response {
    let actor = match who(&app, &session).await {
        Ok(a) => a,
        Err(r) => return r,
    };
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
    let rows: Vec<_> = cases
        .cases
        .iter()
        .map(|c| {
            context! {
                case_id => c.case_id,
                miner_id => &c.miner_id,
                status => c.status.as_str(),
                opened_by => &c.opened_by,
                honest_probability => c.honest_probability,
                waifu => c.at_stake.waifu,
                llama => c.at_stake.llama,
                checks => c.decision.tallies.iter().map(|t| t.check.as_str()).collect::<Vec<_>>(),
                updated_at => c.updated_at.format("%Y-%m-%d %H:%M").to_string(),
            }
        })
        .collect();
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
        .map(|(k, v)| format!("{k}={}&", urlencode(v)))
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

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn case(State(app): State<App>, session: Session, Path(id): Path<i64>) -> Response {
    let actor = match who(&app, &session).await {
        Ok(a) => a,
        Err(r) => return r,
    };
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
    let gpus: BTreeSet<String> = jobs
        .iter()
        .map(|(r, _)| r.metrics.hardware.clone())
        .collect();
    let versions: BTreeSet<String> = jobs
        .iter()
        .map(|(r, _)| r.metrics.miner_version.clone())
        .collect();
    let earned = jobs
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .filter(|v| v.verdict != crate::checks::Verdict::Invalid)
        .map(|v| v.points)
        .sum::<crate::points::Points>()
        .scaled(factor);
    let cited: BTreeSet<(&str, &str)> = c
        .decision
        .evidence
        .iter()
        .map(|e| (e.job_id.as_str(), e.check.as_str()))
        .collect();
    let timeline: Vec<_> = jobs
        .iter()
        .map(|(r, v)| {
            let failed: Vec<&str> = v
                .as_ref()
                .map(|v| v.failed_checks().map(|c| c.as_str()).collect())
                .unwrap_or_default();
            context! {
                job_id => r.job_id.as_str(),
                submitted_at => r.submitted_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                model => r.model_id.as_str(),
                kind => match r.job { Job::Sd { .. } => "image", Job::Llm { .. } => "llm" },
                verdict => v.as_ref().map(|v| format!("{:?}", v.verdict).to_lowercase()),
                sampled => v.as_ref().is_some_and(|v| v.sampled),
                failed => failed.iter().map(|c| context! { check => *c, cited => cited.contains(&(r.job_id.as_str(), *c)) }).collect::<Vec<_>>(),
            }
        })
        .collect();
    let tallies: Vec<_> = c
        .decision
        .tallies
        .iter()
        .map(|t| {
            let p = rules.policy(t.check);
            context! {
                check => t.check.as_str(),
                judged => t.judged,
                failed => t.failed,
                declared => p.false_positive_rate,
                basis => format!("{:?}", p.basis).to_lowercase(),
                measured => p.measured.as_ref().map(|m| m.upper_95),
                measured_n => p.measured.as_ref().map(|m| m.n),
                used => t.false_positive_rate,
                honest_probability => t.honest_probability,
                can_slash => t.can_slash,
            }
        })
        .collect();
    let evidence: Vec<_> = c
        .decision
        .evidence
        .iter()
        .map(|e| context! { job_id => e.job_id.as_str(), check => e.check.as_str(), summary => &e.summary })
        .collect();
    let facts = CaseFacts {
        status: c.status,
        confirmed_by: c.confirmed_by.clone(),
        appeal_filed_by: detail
            .appeals
            .iter()
            .find(|a| a.outcome.is_none())
            .map(|a| a.filed_by.clone()),
    };
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
            c => ser(c),
            error => error,
            wallet => wallet,
            nfts => nfts,
            factor => factor,
            gpus => gpus,
            versions => versions,
            earned => ser(earned),
            timeline => timeline,
            tallies => tallies,
            evidence => evidence,
            history => ser(&detail.actions),
            appeals => ser(&detail.appeals),
            actions => actions,
            auto_slash => rules.auto_slash_threshold(),
            review_max => rules.slashing.review_max_honest_probability,
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
    Path(id): Path<i64>,
    Form(f): Form<DecideForm>,
) -> Response {
    let actor = match who(&app, &session).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if !session::check_csrf(&session, &f.csrf).await {
        return forbidden("the form's CSRF token is missing or wrong; reload the page");
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
    match inner
        .store
        .act(
            &actor,
            id,
            action,
            &f.reason,
            &inner.rules,
            inner.key.as_ref(),
        )
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
        Err(e) if e.is_refusal() || matches!(e, ReviewError::NoSigningKey) => {
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
    Path((job, check)): Path<(String, String)>,
) -> Response {
    let actor = match who(&app, &session).await {
        Ok(a) => a,
        Err(r) => return r,
    };
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
    let check_id = CheckId::ALL.into_iter().find(|c| c.as_str() == check);
    let result = verdict
        .as_ref()
        .and_then(|v| v.checks.iter().find(|c| Some(c.check) == check_id));
    let (status, summary, details) = match result.map(|r| &r.outcome) {
        Some(Outcome::Fail { evidence }) => {
            ("fail", evidence.summary.clone(), evidence.details.clone())
        }
        Some(Outcome::Pass { measured }) => ("pass", String::new(), measured.clone()),
        Some(Outcome::Inconclusive { reason }) => {
            ("inconclusive", reason.clone(), serde_json::Value::Null)
        }
        None => ("not judged", String::new(), serde_json::Value::Null),
    };
    let rows = detail_rows(&details);
    let mut ctx = context! {
        job => job_context(&record),
        check => check,
        status => status,
        summary => summary,
        details => rows,
        verdict => verdict.as_ref().map(|v| format!("{:?}", v.verdict).to_lowercase()),
    };
    let rules = &inner.rules;
    match check_id {
        Some(CheckId::ImageSimilarity) => {
            let im = &rules.checks.image;
            let d = |k: &str| details.get(k).and_then(|v| v.as_f64());
            let measures = vec![
                context! { name => "pHash distance", value => d("phash_distance"), limit => format!("≤ {}", im.phash_max_distance), bad => d("phash_distance").is_some_and(|v| v > f64::from(im.phash_max_distance)) },
                context! { name => "dHash distance", value => d("dhash_distance"), limit => format!("≤ {}", im.dhash_max_distance), bad => d("dhash_distance").is_some_and(|v| v > f64::from(im.dhash_max_distance)) },
                context! { name => "SSIM", value => d("ssim"), limit => format!("≥ {}", num(im.ssim_min)), bad => d("ssim").is_some_and(|v| v < im.ssim_min) },
                context! { name => "detail ratio", value => d("detail_ratio"), limit => format!("≥ {}", num(im.detail_ratio_min)), bad => d("detail_ratio").is_some_and(|v| v < im.detail_ratio_min) },
            ];
            ctx = context! { images => true, measures => measures, ..ctx };
        }
        Some(CheckId::Reuse | CheckId::OutputSize | CheckId::OutputDecode | CheckId::Canary) => {
            let matched = details
                .pointer("/matched/job_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            // Everyone who returned this output: the first job and every job that
            // matched it.
            let original = matched
                .clone()
                .unwrap_or_else(|| record.job_id.as_str().to_owned());
            let group = match inner.store.same_output(&original).await {
                Ok(g) => g,
                Err(e) => return failure(e),
            };
            let same: Vec<_> = group
                .iter()
                .map(|(j, m, at)| context! { job_id => j, miner_id => m, submitted_at => at.format("%Y-%m-%d %H:%M:%S").to_string(), this => j == record.job_id.as_str() })
                .collect();
            let n_miners = group
                .iter()
                .map(|(_, m, _)| m)
                .collect::<BTreeSet<_>>()
                .len();
            let same = (check_id == Some(CheckId::Reuse) && same.len() > 1).then_some(same);
            ctx = context! { images => matches!(record.job, Job::Sd { .. }) && check_id != Some(CheckId::Reuse), matched => matched, same => same, n_miners => n_miners, ..ctx };
        }
        Some(c) if c.as_str().starts_with("llm_") => {
            let key = format!("reference/{}/scores.json", record.job_id.as_str());
            let scores = match inner
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
            if let Some(scores) = scores {
                let llm = &rules.checks.llm;
                let limit = details
                    .get("rank_limit")
                    .and_then(|v| v.as_u64())
                    .map(|v| v as u32);
                let listed: BTreeSet<usize> = details
                    .get("positions")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| {
                                p.get("position")
                                    .and_then(|x| x.as_u64())
                                    .or(p.as_u64())
                                    .map(|x| x as usize)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let flagged = |i: usize| {
                    let t = &scores.tokens[i];
                    listed.contains(&i)
                        || limit.is_some_and(|l| t.rank > l)
                        || t.logprob < llm.unlikely_logprob
                };
                let chart = charts::token_chart(&scores, &flagged, Some(llm.unlikely_logprob));
                let n_flagged = (0..scores.tokens.len()).filter(|i| flagged(*i)).count();
                ctx = context! { token_chart => Value::from_safe_string(chart), n_tokens => scores.tokens.len(), n_flagged => n_flagged, ..ctx };
            } else {
                ctx = context! { token_chart_missing => true, ..ctx };
            }
            let z = details.get("z").and_then(|v| v.as_f64());
            let z_min = details
                .get("z_min")
                .or_else(|| details.get("threshold"))
                .and_then(|v| v.as_f64());
            ctx = context! { z => z, z_min => z_min, ..ctx };
        }
        Some(CheckId::Latency | CheckId::LatencyEnvelope | CheckId::LatencyPeers) => {
            let own = match inner
                .store
                .miner_jobs(record.miner_id.to_string().as_str(), 500)
                .await
            {
                Ok(j) => j,
                Err(e) => return failure(e),
            };
            let own: Vec<f64> = own
                .iter()
                .filter(|(r, _)| r.model_id == record.model_id)
                .map(|(r, _)| r.metrics.inference_latency)
                .collect();
            let peers = match inner
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
            let mut bounds = Vec::new();
            for (name, key) in [
                ("physical bound", "bound_s"),
                ("envelope", "fastest_allowed_s"),
            ] {
                if let Some(b) = details.get(key).and_then(|v| v.as_f64()) {
                    bounds.push((name, b));
                }
            }
            let chart = charts::latency_chart(
                &own,
                Some(record.metrics.inference_latency),
                &peers,
                &bounds,
            );
            ctx = context! { latency_chart => Value::from_safe_string(chart), peers => peers.len(), ..ctx };
        }
        _ => {}
    }
    page(&app, &session, &actor, "evidence.html", StatusCode::OK, ctx).await
}

/// The job's parameters a reviewer reads beside the evidence.
fn job_context(r: &JobRecord) -> minijinja::Value {
    let m = &r.metrics;
    let base = context! {
        job_id => r.job_id.as_str(),
        miner_id => r.miner_id.to_string(),
        model => r.model_id.as_str(),
        submitted_at => r.submitted_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        hardware => &m.hardware,
        miner_version => &m.miner_version,
        request_latency => m.request_latency,
        inference_latency => m.inference_latency,
        upload_latency => m.upload_latency,
    };
    match &r.job {
        Job::Sd { input, .. } => context! { kind => "image",
        prompt => &input.prompt, neg_prompt => &input.neg_prompt, width => input.width,
        height => input.height, steps => input.num_iterations, guidance => input.guidance_scale,
        seed => input.seed, ..base },
        Job::Llm { input, output } => {
            let prompt = match (&input.messages, &input.prompt) {
                (Some(msgs), _) => msgs
                    .iter()
                    .map(|m| format!("{}: {}", format!("{:?}", m.role).to_lowercase(), m.content))
                    .collect::<Vec<_>>()
                    .join("\n\n"),
                (None, Some(p)) => p.clone(),
                (None, None) => String::new(),
            };
            context! { kind => "llm", prompt => prompt, text => output.text.clone(),
            temperature => input.temperature, max_tokens => input.max_tokens, ..base }
        }
    }
}

/// A check's details as name/value rows; nested values as indented JSON.
fn detail_rows(details: &serde_json::Value) -> Vec<minijinja::Value> {
    let Some(obj) = details.as_object() else {
        return if details.is_null() {
            Vec::new()
        } else {
            vec![
                context! { name => "value", value => serde_json::to_string_pretty(details).unwrap_or_default() },
            ]
        };
    };
    obj.iter()
        .map(|(k, v)| {
            let value = match v {
                serde_json::Value::Number(n) => {
                    n.as_f64().map(num).unwrap_or_else(|| n.to_string())
                }
                serde_json::Value::String(s) => s.clone(),
                other => serde_json::to_string_pretty(other).unwrap_or_default(),
            };
            context! { name => k, value => value }
        })
        .collect()
}

/// The miner's output or the reference image of a job, from S3.
pub async fn object(
    State(app): State<App>,
    session: Session,
    Path((job, which)): Path<(String, String)>,
) -> Response {
    if let Err(r) = who(&app, &session).await {
        return r;
    }
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
                let mime = match image::guess_format(&bytes) {
                    Ok(image::ImageFormat::Png) => "image/png",
                    Ok(image::ImageFormat::Jpeg) => "image/jpeg",
                    // Only what the image check reads is served: a browser is no
                    // safer a decoder than ours.
                    _ => {
                        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not a PNG or JPEG")
                            .into_response();
                    }
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
    page(
        app,
        session,
        actor,
        "admin.html",
        status,
        context! { staff => ser(&staff), note => note, token => token },
    )
    .await
}

async fn admin_actor(app: &App, session: &Session, csrf: Option<&str>) -> Result<Actor, Response> {
    let actor = who(app, session).await?;
    if actor.role != Role::Admin {
        return Err(forbidden("this page is for admins"));
    }
    if let Some(posted) = csrf
        && !session::check_csrf(session, posted).await
    {
        return Err(forbidden(
            "the form's CSRF token is missing or wrong; reload the page",
        ));
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
        .add_staff(&actor.username, &f.username, role, &f.password)
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
    match app
        .inner
        .store
        .disable_staff(&actor.username, &username)
        .await
    {
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
    username: String,
    #[serde(default)]
    label: String,
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
    match app
        .inner
        .store
        .create_token(&actor.username, &f.username, &f.label)
        .await
    {
        Ok(t) => {
            admin_page(
                &app,
                &session,
                &actor,
                StatusCode::OK,
                Some(format!(
                    "token {} for {}: copy it now, it is not shown again",
                    t.token_id, f.username
                )),
                Some(t.token),
            )
            .await
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

pub async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/app.css"),
    )
}

pub async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/app.js"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_a_person_writes_them() {
        for (v, want) in [
            (0.00004999999999999534, "5.00e-5"),
            (0.25, "0.25"),
            (12.5, "12.5"),
            (3.0, "3"),
            (1234.5678, "1235"),
            (0.123456, "0.1235"),
            (2.5e7, "25000000"),
        ] {
            assert_eq!(num(v), want, "{v}");
        }
        assert_eq!(prob(1.0), "1");
        assert_eq!(prob(1e-30), "1.0e-30");
        assert_eq!(prob(0.5), "0.500");
    }

    #[test]
    fn every_template_parses() {
        let env = templates();
        for name in [
            "base.html",
            "login.html",
            "queue.html",
            "case.html",
            "evidence.html",
            "admin.html",
            "message.html",
        ] {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }
}

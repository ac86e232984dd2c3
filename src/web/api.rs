//! The JSON API, for scripts: the queue, a case, and decisions, with a bearer token
//! from `proctor staff token`. Described by `openapi.json`, served at
//! `/api/v1/openapi.json`.

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::App;
use crate::review::workflow::ActionError;
use crate::review::{Actor, CaseStatus, Refusal, StaffAction};
use crate::store::review::{CaseFilter, ReviewError};

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

/// What a caller is told of a refused or failed decision: the refusal itself, but never
/// the database's own text (table names, constraints, connection details), which goes
/// to the log only.
pub fn message_of(e: &ReviewError) -> String {
    match e {
        ReviewError::Db(_) => "the database is unavailable; try again".to_owned(),
        other => other.to_string(),
    }
}

/// The HTTP status of a refused or failed decision.
pub fn status_of(e: &ReviewError) -> StatusCode {
    match e {
        ReviewError::NoCase(_) | ReviewError::NoStaff(_) | ReviewError::NoToken(_) => {
            StatusCode::NOT_FOUND
        }
        ReviewError::Refused(Refusal::SecondReviewer { .. }) | ReviewError::NotTheHolder { .. } => {
            StatusCode::FORBIDDEN
        }
        ReviewError::Refused(Refusal::WrongStatus { .. })
        | ReviewError::Action(ActionError::SlashEvent { .. } | ActionError::NothingToConfirm)
        | ReviewError::StaffExists(_) => StatusCode::CONFLICT,
        ReviewError::Refused(_) | ReviewError::Credential(_) | ReviewError::TokenLifetime(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ReviewError::Action(_) | ReviewError::Db(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The token's staff member, as an extractor: a handler that takes it runs only for a
/// valid token of an enabled account, and anyone else gets 401.
pub struct Bearer(pub Actor);

impl FromRequestParts<App> for Bearer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Bearer, Response> {
        bearer(app, &parts.headers).await.map(Bearer)
    }
}

async fn bearer(app: &App, headers: &HeaderMap) -> Result<Actor, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return Err((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(
                serde_json::json!({"error": "an API token is required (Authorization: Bearer …)"}),
            ),
        )
            .into_response());
    };
    match app.inner.store.authenticate_token(token).await {
        Ok(Some(actor)) => Ok(actor),
        Ok(None) => Err(error(
            StatusCode::UNAUTHORIZED,
            "the token is not valid, or its account is disabled",
        )),
        Err(e) => {
            tracing::error!(error = %e, "api auth");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable",
            ))
        }
    }
}

pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

#[derive(Deserialize)]
pub struct ListParams {
    status: Option<String>,
    check: Option<String>,
    model: Option<String>,
    gpu: Option<String>,
    miner: Option<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
    limit: Option<i64>,
    offset: Option<i64>,
}

pub async fn list(State(app): State<App>, _staff: Bearer, Query(q): Query<ListParams>) -> Response {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => match CaseStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("unknown status {s:?}"),
                );
            }
        },
    };
    let filter = CaseFilter {
        status,
        check: q.check,
        model: q.model,
        gpu: q.gpu,
        miner: q.miner,
        since: q.since,
        until: q.until,
        limit: q.limit.unwrap_or(50),
        offset: q.offset.unwrap_or(0),
    };
    match app.inner.store.cases(&filter).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "api list");
            error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

pub async fn show(State(app): State<App>, _staff: Bearer, Path(id): Path<i64>) -> Response {
    match app.inner.store.case(id).await {
        Ok(Some(d)) => Json(d).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no case {id}")),
        Err(e) => {
            tracing::error!(error = %e, "api show");
            error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

#[derive(Deserialize)]
pub struct DecisionBody {
    action: String,
    #[serde(default)]
    reason: String,
}

pub async fn decide(
    State(app): State<App>,
    Bearer(actor): Bearer,
    Path(id): Path<i64>,
    body: Result<Json<DecisionBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()),
    };
    let Some(action) = StaffAction::parse(&body.action) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unknown action {:?}", body.action),
        );
    };
    let inner = &app.inner;
    let request = crate::review::workflow::Request {
        action,
        actor: &actor,
        reason: &body.reason,
        rules: &inner.rules,
        reversals: inner.reversals.as_ref(),
    };
    match inner
        .store
        .act(&actor, id, request.reads(), |facts| request.decide(facts))
        .await
    {
        Ok(d) => Json(d).into_response(),
        Err(e) => {
            if matches!(
                e,
                ReviewError::Db(_) | ReviewError::Action(ActionError::SlashEvent { .. })
            ) {
                tracing::error!(error = %e, "api decide");
            }
            error(status_of(&e), message_of(&e))
        }
    }
}

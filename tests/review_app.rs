//! The review app over HTTP, against the real Postgres and S3 (garage, as
//! `scripts/services.sh up` starts it): authentication on every route, roles, CSRF,
//! each decision's effect through the pages and the JSON API, the second-reviewer
//! rule, and the evidence behind a case (images from S3, token and latency charts).

#[path = "support/scope.rs"]
mod scope;
mod support;

#[path = "support/db.rs"]
mod db;

#[path = "support/app.rs"]
mod app;

use app::{PASSWORD, Running};
use proctor::events::{self, LedgerEvent};
use proctor::review::CaseStatus;
use proctor::store::review::CaseFilter;
use reqwest::StatusCode;

/// A client that keeps the session cookie and the login form's cookie itself (both
/// are `Secure`, which a cookie jar would not send over plain HTTP; a browser does on
/// 127.0.0.1) and follows no redirects, so each response is seen as the app sent it.
struct Client {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
    login_cookie: Option<String>,
}

/// A cookie's attributes as the `__Host-` prefix needs them: Secure, path /, no
/// Domain, or a browser refuses it; and HTTP-only, same-site strict.
fn assert_host_cookie(v: &str) {
    assert!(
        v.contains("HttpOnly")
            && v.contains("SameSite=Strict")
            && v.contains("Secure")
            && v.contains("Path=/")
            && !v.to_ascii_lowercase().contains("domain="),
        "cookie attributes: {v}"
    );
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Page {
    /// The CSRF token of the page's first form.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

impl Client {
    fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookie: None,
            login_cookie: None,
        }
    }

    /// A client whose connections come from `address` (any of 127.0.0.0/8 reaches the
    /// app on loopback), to be another client to the login throttle.
    fn from_address(base: &str, address: [u8; 4]) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(std::net::IpAddr::from(address))
                .build()
                .unwrap(),
            ..Client::new(base)
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookies: Vec<&str> = [&self.cookie, &self.login_cookie]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let req = if cookies.is_empty() {
            req
        } else {
            req.header("cookie", cookies.join("; "))
        };
        let resp = req.send().await.unwrap();
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap().to_owned();
            if pair == "__Host-proctor_session=" {
                // The session ended (a logout): the cookie is removed.
                self.cookie = None;
            } else if pair.starts_with("__Host-proctor_session=") {
                assert_host_cookie(v);
                self.cookie = Some(pair);
            } else if pair == "__Host-proctor_login=" {
                self.login_cookie = None;
            } else if pair.starts_with("__Host-proctor_login=") {
                assert_host_cookie(v);
                self.login_cookie = Some(pair);
            } else {
                assert!(!pair.contains("session"), "another session cookie: {v}");
            }
        }
        Page {
            status: resp.status(),
            location: resp
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned()),
            body: resp.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let enc = proctor::view::urlencode;
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"));
        self.send(req).await
    }

    async fn login(&mut self, user: &str) {
        let form = self.get("/login").await;
        let csrf = form.csrf();
        let done = self
            .post(
                "/login",
                &[("csrf", &csrf), ("username", user), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(done.location.as_deref(), Some("/queue"));
    }
}

fn api(
    base: &str,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    let req = reqwest::Client::new().request(method, format!("{base}{path}"));
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

#[tokio::test]
async fn every_route_needs_a_session_or_a_token_and_admin_pages_need_the_admin_role() {
    let app = Running::start("review_auth").await;
    let case = app.case_ids(CaseStatus::Open).await[0];
    let mut anon = Client::new(&app.base);
    let pages = [
        "/queue".to_owned(),
        format!("/cases/{case}"),
        "/evidence/sd-honest-a-0/image_similarity".to_owned(),
        "/jobs/sd-honest-a-0/output".to_owned(),
        "/jobs/sd-honest-a-0/reference".to_owned(),
        "/admin".to_owned(),
    ];
    for p in &pages {
        let r = anon.get(p).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "GET {p}");
        assert_eq!(r.location.as_deref(), Some("/login"), "GET {p}");
    }
    for p in [
        format!("/cases/{case}/decide"),
        "/logout".to_owned(),
        "/logout/everywhere".to_owned(),
        "/admin/staff".to_owned(),
        "/admin/tokens".to_owned(),
        "/admin/tokens/0123456789ab/revoke".to_owned(),
        "/admin/staff/ann/disable".to_owned(),
    ] {
        let r = anon
            .post(
                &p,
                &[
                    ("csrf", "x"),
                    ("action", "confirm"),
                    ("username", "x"),
                    ("role", "admin"),
                    ("password", "x"),
                ],
            )
            .await;
        assert!(
            r.status == StatusCode::SEE_OTHER || r.status == StatusCode::FORBIDDEN,
            "POST {p}: {}",
            r.status
        );
    }
    for status in [CaseStatus::Confirming, CaseStatus::Confirmed] {
        assert_eq!(app.case_ids(status).await.len(), 0);
    }
    // The API answers 401 without a token and with a bad one.
    for token in [None, Some("proctor_000000000000_00"), Some("nonsense")] {
        for (method, path) in [
            (reqwest::Method::GET, "/api/v1/cases".to_owned()),
            (reqwest::Method::GET, format!("/api/v1/cases/{case}")),
            (
                reqwest::Method::POST,
                format!("/api/v1/cases/{case}/decisions"),
            ),
        ] {
            let r = api(&app.base, token, method.clone(), &path)
                .json(&serde_json::json!({"action": "confirm"}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
        }
    }
    // Public: the login page, the stylesheet, the script, health and the API's document.
    for p in [
        "/login",
        "/static/app.css",
        "/static/app.js",
        "/healthz",
        "/metrics",
        "/api/v1/openapi.json",
    ] {
        assert_eq!(anon.get(p).await.status, StatusCode::OK, "{p}");
    }
    // Every answer, a page, a refusal or the API's, carries the security headers.
    for (method, p) in [
        (reqwest::Method::GET, "/login"),
        (reqwest::Method::GET, "/queue"),
        (reqwest::Method::GET, "/api/v1/cases"),
        (reqwest::Method::GET, "/healthz"),
    ] {
        let r = api(&app.base, None, method, p).send().await.unwrap();
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for want in [
            "base-uri 'none'",
            "object-src 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(want), "{p}: {csp}");
        }
        assert_eq!(h["strict-transport-security"], "max-age=31536000", "{p}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{p}");
    }
    let doc: serde_json::Value =
        serde_json::from_str(&anon.get("/api/v1/openapi.json").await.body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/cases/{id}/decisions"]["post"].is_object());

    // A reviewer is refused the admin pages; an admin is not.
    let mut ann = Client::new(&app.base);
    ann.login("ann").await;
    assert_eq!(ann.get("/queue").await.status, StatusCode::OK);
    assert_eq!(ann.get("/admin").await.status, StatusCode::FORBIDDEN);
    let csrf = ann.get("/queue").await.csrf();
    let r = ann
        .post(
            "/admin/staff",
            &[
                ("csrf", &csrf),
                ("username", "eve"),
                ("role", "admin"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = ann
        .post(
            "/admin/tokens",
            &[("csrf", &csrf), ("username", "ann"), ("label", "x")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        app.store()
            .staff_actor("eve", proctor::review::Via::OPERATOR)
            .await
            .unwrap()
            .is_none()
    );
    let mut ada = Client::new(&app.base);
    ada.login("ada").await;
    let admin = ada.get("/admin").await;
    assert_eq!(admin.status, StatusCode::OK);
    let r = ada
        .post(
            "/admin/staff",
            &[
                ("csrf", &admin.csrf()),
                ("username", "eve"),
                ("role", "reviewer"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        app.store()
            .staff_actor("eve", proctor::review::Via::OPERATOR)
            .await
            .unwrap()
            .is_some()
    );

    // An admin issues tokens to itself only: one for eve would act as eve.
    let csrf = ada.get("/admin").await.csrf();
    let r = ada
        .post(
            "/admin/tokens",
            &[("csrf", &csrf), ("username", "eve"), ("label", "x")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(
        app.store()
            .live_tokens(Some("eve"))
            .await
            .unwrap()
            .is_empty()
    );
    let r = ada
        .post(
            "/admin/tokens",
            &[("csrf", &csrf), ("label", "laptop"), ("days", "7")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let live = app.store().live_tokens(Some("ada")).await.unwrap();
    let labels: Vec<&str> = live.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(labels, ["test", "laptop"], "{live:?}");
    let laptop = &live[1];
    assert!(
        r.body.contains(&laptop.token_id) && r.body.contains("valid 7 days"),
        "{}",
        r.body
    );
    // And revokes one token, leaving the account and its other tokens alone.
    let r = ada
        .post(
            &format!("/admin/tokens/{}/revoke", laptop.token_id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let left = app.store().live_tokens(Some("ada")).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].token_id, live[0].token_id);
    let r = ada
        .post(
            &format!("/admin/tokens/{}/revoke", laptop.token_id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    // A wrong password is refused; logging out ends the session.
    let mut mallory = Client::new(&app.base);
    let form = mallory.get("/login").await;
    let r = mallory
        .post(
            "/login",
            &[
                ("csrf", &form.csrf()),
                ("username", "ann"),
                ("password", "wrong password!"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(mallory.get("/queue").await.status, StatusCode::SEE_OTHER);
    let csrf = ann.get("/queue").await.csrf();
    let out = ann.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(ann.get("/queue").await.status, StatusCode::SEE_OTHER);
    // Disabling an account ends its sessions at their next request.
    let mut bob = Client::new(&app.base);
    bob.login("bob").await;
    app.store().disable_staff("operator", "bob").await.unwrap();
    assert_eq!(bob.get("/queue").await.status, StatusCode::SEE_OTHER);
    let actions: Vec<String> = app
        .store()
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.actor, e.action))
        .collect();
    for want in ["ann login", "ada login", "ada staff_add", "ann logout"] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} not in {actions:?}"
        );
    }
    // The wrong password is counted, not logged: one failure locks nothing.
    assert!(!actions.iter().any(|a| a.contains("login_")), "{actions:?}");
    app.finish().await;
}

#[tokio::test]
async fn a_form_without_the_sessions_csrf_token_changes_nothing() {
    let app = Running::start("review_csrf").await;
    let case = app.case_ids(CaseStatus::Open).await[0];
    let mut ann = Client::new(&app.base);
    ann.login("ann").await;
    let page = ann.get(&format!("/cases/{case}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let good = page.csrf();
    // Another session's token is as wrong as none.
    let mut bob = Client::new(&app.base);
    bob.login("bob").await;
    let bobs = bob.get("/queue").await.csrf();
    assert_ne!(good, bobs);
    for csrf in ["", "0000", bobs.as_str()] {
        let r = ann
            .post(
                &format!("/cases/{case}/decide"),
                &[("csrf", csrf), ("action", "confirm")],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "csrf {csrf:?}");
    }
    let r = ann
        .post(&format!("/cases/{case}/decide"), &[("action", "confirm")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no csrf field");
    // The login form is protected too: by the token its cookie holds, which another
    // site can neither read nor set.
    let mut fresh = Client::new(&app.base);
    let r = fresh
        .post("/login", &[("username", "ann"), ("password", PASSWORD)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let token = fresh.get("/login").await.csrf();
    let cookie = fresh.login_cookie.take();
    for (cookie, csrf) in [
        (None, token.as_str()),
        (cookie.clone(), ""),
        (cookie.clone(), &"0".repeat(64)),
    ] {
        fresh.login_cookie = cookie;
        let r = fresh
            .post(
                "/login",
                &[("csrf", csrf), ("username", "ann"), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "csrf {csrf:?}");
        assert_eq!(fresh.cookie, None);
    }
    // The token of the login form is rotated at login: whoever read that page holds
    // nothing the signed-in session accepts.
    let mut cat = Client::new(&app.base);
    let before = cat.get("/login").await.csrf();
    let r = cat
        .post(
            "/login",
            &[
                ("csrf", &before),
                ("username", "cat"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let after = cat.get("/queue").await.csrf();
    assert_ne!(before, after);
    let r = cat
        .post(
            &format!("/cases/{case}/decide"),
            &[("csrf", &before), ("action", "confirm")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "the login form's token");
    assert!(app.case_ids(CaseStatus::Open).await.contains(&case));
    assert_eq!(
        app.store()
            .audit_log()
            .await
            .unwrap()
            .iter()
            .filter(|e| e.subject.starts_with("case:"))
            .count(),
        0,
        "no decision was logged"
    );
    // With its token, the same form confirms.
    let r = ann
        .post(
            &format!("/cases/{case}/decide"),
            &[("csrf", &good), ("action", "confirm")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(app.case_ids(CaseStatus::Confirming).await.contains(&case));
    app.finish().await;
}

#[tokio::test]
async fn decisions_through_the_pages_and_the_api_write_slashes_reversals_and_the_log() {
    let app = Running::start("review_decide").await;
    // The judge's key: the app holds only the reversal key.
    let key = db::key();
    let open = app.case_ids(CaseStatus::Open).await;
    assert!(open.len() >= 2);
    let (confirm, dismiss) = (open[0], open[1]);
    let mut ann = Client::new(&app.base);
    ann.login("ann").await;

    // Confirm on the page: the slash waits for the judge, and the page says so.
    let csrf = ann.get(&format!("/cases/{confirm}")).await.csrf();
    let r = ann
        .post(
            &format!("/cases/{confirm}/decide"),
            &[("csrf", &csrf), ("action", "confirm")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let case = app.store().case(confirm).await.unwrap().unwrap().case;
    assert_eq!(case.status, CaseStatus::Confirming);
    let pending = case.pending_slash_id.clone().unwrap();
    let page = ann.get(&format!("/cases/{confirm}")).await;
    assert!(
        page.body.contains("Slash, pending") && page.body.contains(&pending),
        "{}",
        page.body
    );
    // The judge's round signs it: a slash and its event in the outbox.
    app.judge().await;
    let case = app.store().case(confirm).await.unwrap().unwrap().case;
    assert_eq!(case.status, CaseStatus::Confirmed);
    assert_eq!(case.slash_id.as_deref(), Some(pending.as_str()));
    let slash_id = case.slash_id.clone().unwrap();
    let envelope: String = sqlx::query_scalar("SELECT envelope FROM outbox WHERE event_id = $1")
        .bind(&slash_id)
        .fetch_one(app.store().pool())
        .await
        .unwrap();
    assert_eq!(
        events::verify(envelope.as_bytes(), &key.verifying_key())
            .unwrap()
            .slash_id,
        slash_id
    );
    let page = ann.get(&format!("/cases/{confirm}")).await;
    assert!(page.body.contains("confirmed") && page.body.contains(&slash_id));

    // Dismiss through the API: the reason is required, a repeat conflicts.
    let bob = app.tokens["bob"].clone();
    let post = |token: &str, case: i64, body: serde_json::Value| {
        api(
            &app.base,
            Some(token),
            reqwest::Method::POST,
            &format!("/api/v1/cases/{case}/decisions"),
        )
        .json(&body)
        .send()
    };
    let r = post(&bob, dismiss, serde_json::json!({"action": "dismiss"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = post(
        &bob,
        dismiss,
        serde_json::json!({"action": "dismiss", "reason": "driver update"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["case"]["status"], "dismissed");
    let r = post(
        &bob,
        dismiss,
        serde_json::json!({"action": "dismiss", "reason": "again"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = post(&bob, dismiss, serde_json::json!({"action": "launch"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Bob files the miner's appeal; neither ann (who confirmed) nor bob may decide it.
    let r = post(
        &bob,
        confirm,
        serde_json::json!({"action": "appeal", "reason": "the miner disputes"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csrf = ann.get(&format!("/cases/{confirm}")).await.csrf();
    let r = ann
        .post(
            &format!("/cases/{confirm}/decide"),
            &[
                ("csrf", &csrf),
                ("action", "reverse"),
                ("reason", "mine to reverse"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.status);
    assert!(r.body.contains("second reviewer"));
    let r = post(
        &bob,
        confirm,
        serde_json::json!({"action": "reverse", "reason": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Cat reverses it: one signed reversal naming the slash.
    let cat = app.tokens["cat"].clone();
    let r = post(
        &cat,
        confirm,
        serde_json::json!({"action": "reverse", "reason": "wrong reference VAE"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let envelope: String =
        sqlx::query_scalar("SELECT envelope FROM outbox WHERE kind = 'slash_reversed'")
            .fetch_one(app.store().pool())
            .await
            .unwrap();
    let reversal_key = db::reversal_signer().key().verifying_key();
    let keys = events::LedgerKeys {
        slash: &key.verifying_key(),
        reversal: Some(&reversal_key),
    };
    match events::verify_ledger_event(envelope.as_bytes(), keys).unwrap() {
        LedgerEvent::Reversed(r) => {
            assert_eq!(r.slash_id, slash_id);
            assert_eq!(r.reversed_by, "cat");
        }
        other => panic!("{other:?}"),
    }
    // The API shows the case as the page does.
    let r = api(
        &app.base,
        Some(&cat),
        reqwest::Method::GET,
        &format!("/api/v1/cases/{confirm}"),
    )
    .send()
    .await
    .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["case"]["status"], "reversed");
    assert_eq!(body["appeals"][0]["decided_by"], "cat");
    // Every decision is in the chain, by who made it.
    let log = app.store().audit_log().await.unwrap();
    let decided: Vec<(String, String)> = log
        .iter()
        .filter(|e| e.subject.starts_with("case:"))
        .map(|e| (e.actor.clone(), e.action.clone()))
        .collect();
    let want: Vec<(String, String)> = [
        ("ann", "confirm"),
        ("judge:auto", "confirmation_signed"),
        ("bob", "dismiss"),
        ("bob", "appeal"),
        ("cat", "reverse"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(decided, want);
    // ... and how they came: ann's confirmation from her login session, bob's
    // dismissal with his API token; the case's actions say the same as the log.
    let ann_session: String =
        sqlx::query_scalar("SELECT id_hash FROM staff_sessions WHERE data ->> 'user' = 'ann'")
            .fetch_one(app.store().pool())
            .await
            .unwrap();
    let web = serde_json::json!({"channel": "web", "session": &ann_session[..16]});
    let bobs = serde_json::json!({
        "channel": "api",
        "token_id": app.tokens["bob"].split('_').nth(1).unwrap(),
    });
    let via_of = |action: &str| {
        let e = log.iter().find(|e| e.action == action).unwrap();
        serde_json::from_str::<serde_json::Value>(&e.detail).unwrap()["via"].clone()
    };
    assert_eq!(via_of("confirm"), web);
    assert_eq!(via_of("dismiss"), bobs);
    let actions: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT action, via FROM case_actions ORDER BY action_id")
            .fetch_all(app.store().pool())
            .await
            .unwrap();
    assert_eq!(actions[0], ("confirm".to_owned(), web));
    assert_eq!(actions[1], ("dismiss".to_owned(), bobs));
    proctor::review::trail::verify(&log).unwrap();
    app.finish().await;
}

#[tokio::test]
async fn the_queue_filters_and_pages_and_the_evidence_shows_images_tokens_and_latency() {
    let app = Running::start("review_evidence").await;
    let mut ann = Client::new(&app.base);
    ann.login("ann").await;
    let all = ann.get("/queue").await;
    assert_eq!(all.status, StatusCode::OK);
    let total = app
        .store()
        .cases(&CaseFilter {
            limit: 1000,
            ..CaseFilter::default()
        })
        .await
        .unwrap()
        .total;
    assert!(all.body.contains(&format!("{total} cases")), "{}", all.body);
    let open = ann.get("/queue?status=open").await;
    let n_open = app.case_ids(CaseStatus::Open).await.len();
    assert!(
        open.body.contains(&format!("{n_open} case")),
        "{}",
        open.body
    );
    assert!(open.body.contains("class=\"status-open\""));
    assert!(!open.body.contains("class=\"status-slashed\""));

    // Find one failed check of each kind among the cases' evidence.
    let page = app
        .store()
        .cases(&CaseFilter {
            limit: 1000,
            ..CaseFilter::default()
        })
        .await
        .unwrap();
    let evidence: Vec<(String, String)> = page
        .cases
        .iter()
        .flat_map(|c| c.decision.evidence.iter())
        .map(|e| (e.job_id.as_str().to_owned(), e.check.as_str().to_owned()))
        .collect();
    let find = |check: &str| evidence.iter().find(|(_, c)| c == check).cloned();

    let (job, _) = find("image_similarity").expect("the demo has an image_similarity failure");
    let p = ann.get(&format!("/evidence/{job}/image_similarity")).await;
    assert_eq!(p.status, StatusCode::OK);
    for want in [
        format!("src=\"/jobs/{job}/output\""),
        format!("src=\"/jobs/{job}/reference\""),
        "pHash distance".to_owned(),
        "SSIM".to_owned(),
        "data-swipe".to_owned(),
        "Prompt".to_owned(),
        "Seed".to_owned(),
    ] {
        assert!(p.body.contains(&want), "{want}");
    }
    let out = ann.get(&format!("/jobs/{job}/output")).await;
    assert_eq!(out.status, StatusCode::OK);
    let stored = std::fs::read(db::demo().join(format!("objects/jobs/{job}.png")));
    if let Ok(stored) = stored {
        let got = reqwest::Client::new()
            .get(format!("{}/jobs/{job}/output", app.base))
            .header("cookie", ann.cookie.clone().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(got.headers()["content-type"], "image/png");
        assert_eq!(got.bytes().await.unwrap().as_ref(), stored.as_slice());
    }
    assert_eq!(
        ann.get(&format!("/jobs/{job}/reference")).await.status,
        StatusCode::OK
    );
    // The hostile uploads are not served: a PNG declaring 60000×60000 pixels, a
    // truncated PNG (both decode past the image check's bounds or not at all), and bytes
    // that are no image.
    for (hostile, status) in [
        ("sd-bomb-0", StatusCode::UNPROCESSABLE_ENTITY),
        ("sd-corrupt-0", StatusCode::UNPROCESSABLE_ENTITY),
        ("sd-garbage-0", StatusCode::UNSUPPORTED_MEDIA_TYPE),
    ] {
        let got = ann.get(&format!("/jobs/{hostile}/output")).await;
        assert_eq!(got.status, status, "{hostile}: {}", got.body);
    }

    let llm = evidence
        .iter()
        .find(|(_, c)| c.starts_with("llm_"))
        .cloned()
        .expect("the demo has an LLM failure");
    let p = ann.get(&format!("/evidence/{}/{}", llm.0, llm.1)).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(
        p.body.contains("<svg") && p.body.contains("tok flagged"),
        "{}",
        p.body
    );
    assert!(p.body.contains("Miner&#x27;s text") || p.body.contains("Miner's text"));

    if let Some((job, check)) = evidence
        .iter()
        .find(|(_, c)| c.starts_with("latency"))
        .cloned()
    {
        let p = ann.get(&format!("/evidence/{job}/{check}")).await;
        assert!(
            p.body.contains("reported latency against its bounds"),
            "{}",
            p.body
        );
    }
    // A replayed output lists every job and miner that returned it: here, every job
    // one case cites for reuse.
    let replays: Vec<String> = page
        .cases
        .iter()
        .map(|c| {
            c.decision
                .evidence
                .iter()
                .filter(|e| e.check.as_str() == "reuse")
                .map(|e| e.job_id.as_str().to_owned())
                .collect::<Vec<_>>()
        })
        .find(|jobs| !jobs.is_empty())
        .expect("the demo has a reuse failure");
    let p = ann.get(&format!("/evidence/{}/reuse", replays[0])).await;
    assert!(
        p.body.contains("Every job that returned this output"),
        "{}",
        p.body
    );
    for other in &replays {
        assert!(
            p.body.contains(&format!("/evidence/{other}/reuse")),
            "{other}"
        );
    }
    // Numbers read as numbers, never as 0.00004999999999999534.
    let case = page.cases[0].case_id;
    let p = ann.get(&format!("/cases/{case}")).await;
    assert!(!p.body.contains("999999"), "{}", p.body);
    app.finish().await;
}

/// A stolen session cookie: one taken before login (fixation) is not logged in by the
/// victim's login, and one copied while logged in is dead once its owner logs out or
/// the account is disabled, because the session is ended on the server, not only
/// forgotten by the browser.
#[tokio::test]
async fn a_stolen_session_cookie_dies_at_login_logout_and_account_disable() {
    let app = Running::start("review_stolen").await;
    let stolen = |cookie: &Option<String>| {
        let mut thief = Client::new(&app.base);
        thief.cookie = cookie.clone();
        thief
    };

    // Fixation: the attacker plants a session id of their choosing in the victim's
    // browser (the login form starts no session to plant).
    let mut ann = Client::new(&app.base);
    let form = ann.get("/login").await;
    assert_eq!(ann.cookie, None, "the login form starts no session");
    let planted = Some("__Host-proctor_session=AAAAAAAAAAAAAAAAAAAAAA".to_owned());
    ann.cookie = planted.clone();
    let done = ann
        .post(
            "/login",
            &[
                ("csrf", &form.csrf()),
                ("username", "ann"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_ne!(ann.cookie, planted, "login issues a new session id");
    assert_eq!(
        stolen(&planted).get("/queue").await.status,
        StatusCode::SEE_OTHER
    );

    // A cookie copied from a logged-in browser works until its owner logs out.
    let copy = ann.cookie.clone();
    assert_eq!(stolen(&copy).get("/queue").await.status, StatusCode::OK);
    let csrf = ann.get("/queue").await.csrf();
    assert_eq!(
        ann.post("/logout", &[("csrf", &csrf)]).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        stolen(&copy).get("/queue").await.status,
        StatusCode::SEE_OTHER
    );

    // ... or until an admin disables the account.
    let mut bob = Client::new(&app.base);
    bob.login("bob").await;
    let copy = bob.cookie.clone();
    assert_eq!(stolen(&copy).get("/queue").await.status, StatusCode::OK);
    app.store().disable_staff("operator", "bob").await.unwrap();
    assert_eq!(
        stolen(&copy).get("/queue").await.status,
        StatusCode::SEE_OTHER
    );

    // ... or until its owner logs out everywhere, from any of its browsers; another
    // account's session lives on.
    let (mut laptop, mut phone, mut ann) = (
        Client::new(&app.base),
        Client::new(&app.base),
        Client::new(&app.base),
    );
    laptop.login("cat").await;
    phone.login("cat").await;
    ann.login("ann").await;
    assert_ne!(laptop.cookie, phone.cookie);
    let phones = phone.cookie.clone();
    assert_eq!(
        stolen(&laptop.cookie).get("/queue").await.status,
        StatusCode::OK
    );
    let csrf = phone.get("/queue").await.csrf();
    let r = phone.post("/logout/everywhere", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    for (name, c) in [("laptop", &laptop.cookie), ("phone", &phones)] {
        assert!(c.is_some(), "{name}");
        let r = stolen(c).get("/queue").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{name}");
    }
    assert_eq!(ann.get("/queue").await.status, StatusCode::OK);
    assert!(
        app.store()
            .audit_log()
            .await
            .unwrap()
            .iter()
            .any(|e| e.action == "logout_everywhere" && e.actor == "cat")
    );
    app.finish().await;
}

#[tokio::test]
async fn the_api_answers_a_database_failure_without_the_databases_text() {
    let app = Running::start("review_dberr").await;
    let case = app.case_ids(CaseStatus::Open).await[0];
    // A decision appends to the audit log: without it the database refuses the action.
    sqlx::query("ALTER TABLE audit_log RENAME TO audit_log_gone")
        .execute(app.store().pool())
        .await
        .unwrap();
    let r = api(
        &app.base,
        Some(&app.tokens["ann"]),
        reqwest::Method::POST,
        &format!("/api/v1/cases/{case}/decisions"),
    )
    .json(&serde_json::json!({"action": "confirm"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    for leak in [
        "audit_log",
        "relation",
        "database:",
        "sqlx",
        "error returned from",
    ] {
        assert!(!body.contains(leak), "{leak:?} in {body}");
    }
    assert!(body.contains("try again"), "{body}");
    sqlx::query("ALTER TABLE audit_log_gone RENAME TO audit_log")
        .execute(app.store().pool())
        .await
        .unwrap();
    assert!(app.case_ids(CaseStatus::Open).await.contains(&case));
    app.finish().await;
}

#[tokio::test]
async fn a_sessions_idle_expiry_extends_on_activity() {
    let app = Running::start("review_idle").await;
    let mut ann = Client::new(&app.base);
    ann.login("ann").await;
    assert_eq!(ann.get("/queue").await.status, StatusCode::OK);
    let expiry = || async {
        let at: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT expires_at FROM staff_sessions WHERE data ->> 'user' = 'ann'",
        )
        .fetch_all(app.store().pool())
        .await
        .unwrap();
        assert_eq!(at.len(), 1, "{at:?}");
        at[0]
    };
    let first = expiry().await;
    // Stored to the second: a request two seconds later moves it two seconds on.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(ann.get("/queue").await.status, StatusCode::OK);
    let later = expiry().await;
    assert!(
        later - first >= chrono::Duration::seconds(2),
        "{first} -> {later}: the idle expiry did not move"
    );
    app.finish().await;
}

/// A value of the app's own `/metrics` (a counter's `_total`, labels as written).
async fn metric(base: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The most attempts a key with `free` failures can have admitted in `elapsed`: the
/// free ones, the one that locks, and one more per doubled lock that ran out (a lock
/// of 1 s, then 2 s, 4 s, …: k more need 2^k - 1 seconds).
fn admitted_bound(free: u32, elapsed: std::time::Duration) -> u64 {
    u64::from(free) + 1 + (elapsed.as_secs_f64() + 1.0).log2().floor() as u64
}

#[tokio::test]
async fn a_thousand_wrong_passwords_are_throttled_while_health_and_decisions_stay_fast() {
    use std::time::{Duration, Instant};
    let app = Running::start("review_throttle").await;
    let case = app.case_ids(CaseStatus::Open).await[0];
    let checks = "proctor_password_checks_total{worker=\"review\"}";
    let sessions = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM staff_sessions")
            .fetch_one(app.store().pool())
            .await
            .unwrap()
    };

    // The attacker: one login form, its cookie and token reused for every guess, sixteen
    // connections at once, 1,000 wrong passwords for ann from one address.
    let mut form = Client::new(&app.base);
    let token = form.get("/login").await.csrf();
    let cookie = form.login_cookie.clone().unwrap();
    let url = format!("{}/login", app.base);
    let started = Instant::now();
    let attack: Vec<_> = (0..16)
        .map(|worker| {
            let (url, cookie, token) = (url.clone(), cookie.clone(), token.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut statuses = Vec::new();
                for n in (worker..1000).step_by(16) {
                    let r = http
                        .post(&url)
                        .header("cookie", &cookie)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(format!(
                            "csrf={token}&username=ann&password=guess+number+{n}"
                        ))
                        .send()
                        .await
                        .unwrap();
                    statuses.push(r.status());
                }
                statuses
            })
        })
        .collect();

    // Meanwhile /healthz and a decision through the API answer as they do at rest.
    let health = {
        let base = app.base.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            for _ in 0..50 {
                let t = Instant::now();
                let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                worst = worst.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            worst
        })
    };
    let t = Instant::now();
    let r = api(
        &app.base,
        Some(&app.tokens["bob"]),
        reqwest::Method::POST,
        &format!("/api/v1/cases/{case}/decisions"),
    )
    .json(&serde_json::json!({"action": "note", "reason": "seen during the attack"}))
    .send()
    .await
    .unwrap();
    let decision = t.elapsed();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());

    let mut statuses = Vec::new();
    for a in attack {
        statuses.extend(a.await.unwrap());
    }
    let elapsed = started.elapsed();
    let worst_health = health.await.unwrap();
    let count = |s: StatusCode| statuses.iter().filter(|x| **x == s).count() as u64;
    let (wrong, refused, busy) = (
        count(StatusCode::UNAUTHORIZED),
        count(StatusCode::TOO_MANY_REQUESTS),
        count(StatusCode::SERVICE_UNAVAILABLE),
    );
    assert_eq!(wrong + refused + busy, 1000, "{statuses:?}");
    // Every guess that reached a password check was answered 401; the throttle let
    // through no more than the account's five free guesses and one per expired lock.
    let bound = admitted_bound(5, elapsed);
    let ran = metric(&app.base, checks).await as u64;
    assert_eq!(ran, wrong, "password checks");
    assert!(
        wrong <= bound,
        "{wrong} guesses reached the password check in {elapsed:?} (bound {bound})"
    );
    assert!(refused >= 1000 - bound - busy, "{refused} refused");
    // Liveness, not speed: nothing waited behind the password hashes. Generous bounds
    // for a loaded 2-core CI machine; a hash takes tens of milliseconds.
    assert!(
        worst_health < Duration::from_secs(2),
        "/healthz took {worst_health:?}"
    );
    assert!(
        decision < Duration::from_secs(2),
        "the decision took {decision:?}"
    );
    println!(
        "1000 wrong logins in {elapsed:?}: {wrong} checked, {refused} refused (429), {busy} busy; \
         /healthz worst {worst_health:?}, a decision {decision:?}"
    );

    // Counted, not logged one by one: the log has one entry per lock of the account.
    let log = app.store().audit_log().await.unwrap();
    let locks = log.iter().filter(|e| e.action == "login_locked").count() as u64;
    assert_eq!(locks, wrong.saturating_sub(5), "one entry per lock");
    assert!(log.iter().all(|e| e.action != "login_failed"));
    proctor::review::trail::verify(&log).unwrap();
    // And no session row for any of it.
    assert_eq!(sessions().await, 0, "sessions made by anonymous requests");

    // One address guessing across accounts is held by its own limit: 60 names tried
    // from 127.0.0.3, one at a time.
    let mut spray = Client::from_address(&app.base, [127, 0, 0, 3]);
    let token = spray.get("/login").await.csrf();
    let started = Instant::now();
    let mut wrong = 0;
    for n in 0..60 {
        let r = spray
            .post(
                "/login",
                &[
                    ("csrf", &token),
                    ("username", &format!("user{n}")),
                    ("password", "wrong password!"),
                ],
            )
            .await;
        match r.status {
            StatusCode::UNAUTHORIZED => wrong += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            s => panic!("{s}: {}", r.body),
        }
    }
    let bound = admitted_bound(20, started.elapsed());
    assert!(wrong <= bound, "{wrong} names checked (bound {bound})");
    assert!(
        wrong >= 21,
        "the free twenty and the one that locks: {wrong}"
    );

    // Someone else, from another address, logs in as usual; and a login makes the one
    // session row there is.
    let mut cat = Client::from_address(&app.base, [127, 0, 0, 4]);
    cat.login("cat").await;
    assert_eq!(cat.get("/queue").await.status, StatusCode::OK);
    assert_eq!(sessions().await, 1);
    assert!(
        metric(
            &app.base,
            "proctor_logins_total{worker=\"review\",outcome=\"ok\"}"
        )
        .await
            >= 1.0
    );
    app.finish().await;
}

#[tokio::test]
async fn expired_sessions_are_purged_on_a_schedule() {
    let app = Running::start_with("review_purge", |s| s.review.session_purge_seconds = 1).await;
    let mut ann = Client::new(&app.base);
    ann.login("ann").await;
    let ids = || async {
        sqlx::query_scalar::<_, String>("SELECT id_hash FROM staff_sessions ORDER BY id_hash")
            .fetch_all(app.store().pool())
            .await
            .unwrap()
    };
    let live = ids().await;
    assert_eq!(live.len(), 1);
    // A session that expired and was never used again (its browser closed).
    sqlx::query(
        "INSERT INTO staff_sessions (id_hash, data, expires_at)
         VALUES ('stale', '{\"user\": \"bob\"}', now() - interval '1 minute')",
    )
    .execute(app.store().pool())
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ids().await.len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "never purged: {:?}",
            ids().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(ids().await, live, "only the expired session went");
    assert_eq!(ann.get("/queue").await.status, StatusCode::OK);
    app.finish().await;
}

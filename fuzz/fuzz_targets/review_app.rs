//! The review app's forms and JSON API, driven through its real router on a Postgres
//! database of its own (`proctor_fuzz_review`, made afresh at start; PostgreSQL at
//! `PROCTOR_FUZZ_DATABASE_URL`, else 127.0.0.1:5432): a reviewer's decision as JSON
//! (bearer token) and as a form (session cookie and CSRF token), an admin's staff form,
//! and the case list's query string. The first byte picks the route and the case.
//! Whatever a staff member's browser sends, the app answers without a panic and
//! without a 5xx: a bad request is the sender's error, told as a 4xx.
#![no_main]

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use proctor::review::Role;
use proctor::rules::Rules;
use proctor::sampling::SamplingSecret;
use proctor::settings::Settings;
use proctor::store::Store;
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";

struct World {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    token: String,
    cookie: String,
    csrf: String,
    admin_cookie: String,
    admin_csrf: String,
    cases: Vec<i64>,
}

fn admin_url() -> String {
    std::env::var("PROCTOR_FUZZ_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn call(router: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<String>, String) {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let cookies = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
        .collect();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    (status, cookies, String::from_utf8_lossy(&body).into_owned())
}

fn csrf_in(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

/// Logs `user` in through the pages: the session cookie and its CSRF token.
async fn login(router: &axum::Router, user: &str) -> (String, String) {
    let (_, cookies, page) =
        call(router, Request::get("/login").body(Body::empty()).unwrap()).await;
    let cookie = cookies.first().expect("a session cookie").clone();
    let form = format!(
        "csrf={}&username={user}&password={}",
        csrf_in(&page),
        PASSWORD.replace(' ', "+")
    );
    let (status, cookies, _) = call(
        router,
        Request::post("/login")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap(),
    )
    .await;
    assert!(status.is_redirection(), "login as {user}: {status}");
    let cookie = cookies.first().cloned().unwrap_or(cookie);
    let (_, _, page) = call(
        router,
        Request::get("/admin")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let page = if page.contains("name=\"csrf\"") {
        page
    } else {
        call(
            router,
            Request::get("/queue")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .2
    };
    (cookie, csrf_in(&page))
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let world = rt.block_on(async {
        let admin = sqlx::PgPool::connect(&admin_url())
            .await
            .expect("PostgreSQL for the fuzzer");
        for sql in [
            "DROP DATABASE IF EXISTS proctor_fuzz_review WITH (FORCE)",
            "CREATE DATABASE proctor_fuzz_review",
        ] {
            sqlx::query(sql).execute(&admin).await.unwrap();
        }
        let url = admin_url()
            .rsplit_once('/')
            .map(|(b, _)| format!("{b}/proctor_fuzz_review"))
            .unwrap();
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let rules = Rules::embedded().unwrap();
        let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let result = proctor::audit::judge_dir(
            &repo.join("fixtures/audit-demo"),
            rules.clone(),
            &SamplingSecret::from_passphrase("fuzz"),
            proctor::case::Reruns::Present,
            None,
            false,
        )
        .unwrap();
        store
            .record_judged(&result.records, &result.verdicts)
            .await
            .unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
        store.decide_pending(&rules, Some(&key)).await.unwrap();
        store
            .add_staff("operator", "ada", Role::Admin, PASSWORD)
            .await
            .unwrap();
        store
            .add_staff("operator", "ann", Role::Reviewer, PASSWORD)
            .await
            .unwrap();
        let token = store
            .create_token("operator", "ann", "fuzz", 90)
            .await
            .unwrap()
            .token;
        let cases: Vec<i64> =
            sqlx::query_scalar("SELECT case_id FROM review_cases ORDER BY case_id")
                .fetch_all(store.pool())
                .await
                .unwrap();
        let settings = Settings::load_from(None, Vec::<(String, String)>::new()).unwrap();
        let objects = proctor::objects::ObjectStore::new(&settings.s3);
        let reversals = proctor::events::ReversalSigner::new(
            ed25519_dalek::SigningKey::from_bytes(&[43; 32]),
            key.verifying_key(),
        )
        .unwrap();
        let app = proctor::web::App::new(store, objects, settings, rules, Some(reversals));
        let router = proctor::web::router(app);
        let (cookie, csrf) = login(&router, "ann").await;
        let (admin_cookie, admin_csrf) = login(&router, "ada").await;
        (router, token, cookie, csrf, admin_cookie, admin_csrf, cases)
    });
    let (router, token, cookie, csrf, admin_cookie, admin_csrf, cases) = world;
    World {
        rt,
        router,
        token,
        cookie,
        csrf,
        admin_cookie,
        admin_csrf,
        cases,
    }
});

fuzz_target!(|data: &[u8]| {
    let [pick, case, rest @ ..] = data else {
        return;
    };
    let w = &*WORLD;
    let id = w
        .cases
        .get(*case as usize % (w.cases.len() + 1))
        .copied()
        .unwrap_or(i64::from(*case) << 20);
    let form = |cookie: &str, csrf: &str, uri: String| {
        let mut body = format!("csrf={csrf}&").into_bytes();
        body.extend_from_slice(rest);
        Request::post(uri)
            .header(header::COOKIE, cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
    };
    let req = match pick % 4 {
        0 => Request::post(format!("/api/v1/cases/{id}/decisions"))
            .header(header::AUTHORIZATION, format!("Bearer {}", w.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(rest.to_vec())),
        1 => form(&w.cookie, &w.csrf, format!("/cases/{id}/decide")),
        2 => form(&w.admin_cookie, &w.admin_csrf, "/admin/staff".to_owned()),
        _ => {
            let Ok(query) = std::str::from_utf8(rest) else {
                return;
            };
            Request::get(format!("/api/v1/cases?{query}"))
                .header(header::AUTHORIZATION, format!("Bearer {}", w.token))
                .body(Body::empty())
        }
    };
    // A query string that is not a URI is refused by the HTTP layer before the app.
    let Ok(req) = req else {
        return;
    };
    let (status, _, body) = w.rt.block_on(call(&w.router, req));
    assert!(!status.is_server_error(), "{status}: {body}");
});

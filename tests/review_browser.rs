//! The review app in headless Chromium (Debian's `chromium` and `chromium-driver`, which
//! `scripts/install-tools.sh` installs), driven through WebDriver: log in, open the
//! queue, open a case with image evidence and one with LLM token evidence, confirm one
//! flag and dismiss another, file an appeal and reverse it as a second reviewer. Each
//! step saves a screenshot under `target/tmp/review-browser/`.

#[path = "support/scope.rs"]
mod scope;
mod support;

#[path = "support/db.rs"]
mod db;

#[path = "support/app.rs"]
mod app;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use app::{PASSWORD, Running};
use fantoccini::{Client, ClientBuilder, Locator};
use proctor::review::CaseStatus;
use proctor::store::review::CaseFilter;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: run scripts/install-tools.sh (Debian's chromium and chromium-driver)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Browser {
    c: Client,
    shots: PathBuf,
    n: usize,
    base: String,
}

impl Browser {
    async fn open(driver: &Driver, base: &str) -> Browser {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1100"],
            }),
        );
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("chromedriver session");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("review-browser");
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            c,
            shots,
            n: 0,
            base: base.to_owned(),
        }
    }

    async fn go(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn shot(&mut self, name: &str) -> PathBuf {
        self.n += 1;
        let path = self.shots.join(format!("{:02}-{name}.png", self.n));
        std::fs::write(&path, self.c.screenshot().await.unwrap()).unwrap();
        path
    }

    async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_owned()
    }

    async fn body(&self) -> String {
        self.c.source().await.unwrap()
    }

    async fn login(&mut self, user: &str) {
        self.go("/login").await;
        self.c
            .find(Locator::Css("input[name=username]"))
            .await
            .unwrap()
            .send_keys(user)
            .await
            .unwrap();
        self.c
            .find(Locator::Css("input[name=password]"))
            .await
            .unwrap()
            .send_keys(PASSWORD)
            .await
            .unwrap();
        self.c
            .find(Locator::Id("login"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.c
            .wait()
            .for_element(Locator::Css("table.queue"))
            .await
            .unwrap();
        assert_eq!(self.path().await, "/queue");
    }

    async fn logout(&mut self) {
        self.c
            .find(Locator::Css("form.logout button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.c
            .wait()
            .for_element(Locator::Id("login"))
            .await
            .unwrap();
    }

    /// Types a reason on a case page and presses one action's button.
    async fn act(&self, case: i64, action: &str, reason: &str) {
        self.go(&format!("/cases/{case}")).await;
        if !reason.is_empty() {
            self.c
                .find(Locator::Css("textarea[name=reason]"))
                .await
                .unwrap()
                .send_keys(reason)
                .await
                .unwrap();
        }
        // Mark this page, so that the wait below is for the page the form's POST
        // answers with, not for this one's heading (under load the click returned
        // before the POST was handled, and the test read the old status).
        self.c
            .execute("window.__proctorBefore = true; return null;", vec![])
            .await
            .unwrap();
        self.c
            .find(Locator::Css(&format!("button.act-{action}")))
            .await
            .unwrap_or_else(|e| panic!("no {action} button on case {case}: {e}"))
            .click()
            .await
            .unwrap();
        let started = std::time::Instant::now();
        loop {
            let marked = self
                .c
                .execute("return window.__proctorBefore === true;", vec![])
                .await;
            if matches!(marked, Ok(serde_json::Value::Bool(false))) {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "case {case}: {action} did not load a new page"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.c.wait().for_element(Locator::Css("h1")).await.unwrap();
    }

    /// Whether every image on the page loaded and decoded.
    async fn images_loaded(&self) -> bool {
        let v = self
            .c
            .execute(
                "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0) && document.images.length > 0;",
                vec![],
            )
            .await
            .unwrap();
        v.as_bool().unwrap_or(false)
    }
}

#[tokio::test]
async fn a_reviewer_works_the_queue_in_a_real_browser() {
    let app = Running::start("review_browser").await;
    let driver = Driver::start();
    let mut b = Browser::open(&driver, &app.base).await;
    let cases = app
        .store()
        .cases(&CaseFilter {
            limit: 1000,
            ..CaseFilter::default()
        })
        .await
        .unwrap()
        .cases;
    let with = |check: &str, status: CaseStatus| {
        cases
            .iter()
            .find(|c| {
                c.status == status
                    && c.decision
                        .evidence
                        .iter()
                        .any(|e| e.check.as_str().starts_with(check))
            })
            .map(|c| c.case_id)
    };
    let image_case = with("image_similarity", CaseStatus::Open)
        .or(with("image_similarity", CaseStatus::Slashed))
        .expect("a case with image evidence");
    let llm_case = with("llm_", CaseStatus::Open)
        .or(with("llm_", CaseStatus::Slashed))
        .expect("a case with LLM evidence");
    let open = app.case_ids(CaseStatus::Open).await;
    let to_confirm = open[0];
    let to_dismiss = *open.iter().find(|c| **c != to_confirm).unwrap();

    // 1. Log in.
    b.go("/queue").await;
    assert_eq!(b.path().await, "/login", "no session: the queue redirects");
    b.shot("login").await;
    b.login("ann").await;

    // 2. The queue.
    let rows =
        b.c.find_all(Locator::Css("table.queue tbody tr"))
            .await
            .unwrap();
    assert_eq!(rows.len(), cases.len().min(50));
    b.shot("queue").await;

    // 3. A case with image evidence, and the evidence itself.
    b.go(&format!("/cases/{image_case}")).await;
    assert!(b.body().await.contains("Tallies"));
    b.shot("case-image").await;
    let link =
        b.c.find(Locator::Css("ul.evidence a[href*='/image_similarity']"))
            .await
            .unwrap();
    link.click().await.unwrap();
    b.c.wait()
        .for_element(Locator::Css("[data-swipe]"))
        .await
        .unwrap();
    let start = Instant::now();
    while !b.images_loaded().await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the images did not load from S3"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.shot("evidence-image").await;

    // ... and one with LLM token evidence.
    b.go(&format!("/cases/{llm_case}")).await;
    b.shot("case-llm").await;
    b.c.find(Locator::Css("ul.evidence a[href*='/llm_']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.c.wait()
        .for_element(Locator::Css("svg.chart"))
        .await
        .unwrap();
    let flagged =
        b.c.find_all(Locator::Css("svg.chart g.flagged"))
            .await
            .unwrap();
    assert!(!flagged.is_empty(), "flagged tokens are highlighted");
    b.shot("evidence-llm").await;

    // 4. Confirm one flag (the page shows its slash pending until the judge signs
    // it), dismiss another.
    b.act(to_confirm, "confirm", "").await;
    assert!(b.body().await.contains("Slash, pending"));
    b.shot("confirming").await;
    app.judge().await;
    b.go(&format!("/cases/{to_confirm}")).await;
    let body = b.body().await;
    assert!(body.contains("confirmed") && !body.contains("Slash, pending"));
    b.shot("confirmed").await;
    b.act(to_dismiss, "dismiss", "an honest driver difference")
        .await;
    b.shot("dismissed").await;
    let status = |id: i64| {
        let store = app.store().clone();
        async move { store.case(id).await.unwrap().unwrap().case.status }
    };
    assert_eq!(status(to_confirm).await, CaseStatus::Confirmed);
    assert_eq!(status(to_dismiss).await, CaseStatus::Dismissed);

    // 5. File the miner's appeal; ann may not reverse it; bob does.
    b.act(
        to_confirm,
        "appeal",
        "the miner says the reference was wrong",
    )
    .await;
    assert_eq!(status(to_confirm).await, CaseStatus::Appealed);
    b.go(&format!("/cases/{to_confirm}")).await;
    assert!(
        b.c.find(Locator::Css("button.act-reverse")).await.is_err(),
        "the filer and confirmer is offered no reversal"
    );
    b.shot("appealed").await;
    b.logout().await;
    b.login("bob").await;
    b.act(
        to_confirm,
        "reverse",
        "the reference host used the wrong scheduler",
    )
    .await;
    assert_eq!(status(to_confirm).await, CaseStatus::Reversed);
    assert!(b.body().await.contains("reversed"));
    b.shot("reversed").await;

    let shots: Vec<String> = std::fs::read_dir(&b.shots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(shots.len(), 11, "{shots:?}");
    b.c.close().await.unwrap();
    app.finish().await;
}

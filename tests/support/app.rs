//! The review app running on a test harness: its database and buckets, the demo
//! judged in it, and four accounts. Shared by `tests/review_app.rs` and
//! `tests/review_browser.rs`; include it after `mod support;` and `mod db;`.

#![allow(dead_code)]

use std::collections::BTreeMap;

use proctor::review::{CaseStatus, Role};
use proctor::store::Store;
use proctor::store::review::CaseFilter;

use crate::db;
use crate::support::Harness;

/// A running app on the harness's database and buckets, with the demo judged in it
/// and four accounts: ada (admin), ann, bob and cat (reviewers).
pub struct Running {
    pub h: Harness,
    pub base: String,
    pub tokens: BTreeMap<&'static str, String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

pub const PASSWORD: &str = "correct horse battery staple";

impl Running {
    pub async fn start(tag: &str) -> Running {
        Running::start_with(tag, |_| {}).await
    }

    /// The same, with the app's settings changed by `tweak` first.
    pub async fn start_with(
        tag: &str,
        tweak: impl FnOnce(&mut proctor::settings::Settings),
    ) -> Running {
        let mut h = Harness::new(tag).await;
        tweak(&mut h.settings);
        let s3 = &h.settings.s3;
        let demo = db::demo();
        h.upload_dir(&demo.join("objects"), &s3.jobs_bucket, "")
            .await;
        h.upload_dir(&demo.join("reference"), &s3.reference_bucket, "reference/")
            .await;
        // Rates that hold on the demo's models, so that its cheaters are slashed.
        let rules = db::demo_rules();
        db::load_judged_demo(&h.store, &rules).await;
        let mut tokens = BTreeMap::new();
        for (name, role) in [
            ("ada", Role::Admin),
            ("ann", Role::Reviewer),
            ("bob", Role::Reviewer),
            ("cat", Role::Reviewer),
        ] {
            h.store
                .add_staff("operator", name, role, PASSWORD)
                .await
                .unwrap();
            tokens.insert(
                name,
                h.store
                    .create_token("operator", name, "test", 90)
                    .await
                    .unwrap()
                    .token,
            );
        }
        let app = proctor::web::App::new(
            h.store.clone(),
            h.objects.clone(),
            h.settings.clone(),
            rules,
            Some(db::reversal_signer()),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, _task) = proctor::web::serve(app, "127.0.0.1:0".parse().unwrap(), async {
            let _ = rx.await;
        })
        .await
        .unwrap();
        Running {
            h,
            base: format!("http://{addr}"),
            tokens,
            stop: Some(tx),
        }
    }

    /// The judge's round on every queued miner, with the slash key the demo was judged
    /// with (`db::key`): what signs a reviewer's confirmation.
    pub async fn judge(&self) {
        db::judge_store(&self.h.store, &db::demo_rules()).await;
    }

    pub fn store(&self) -> &Store {
        &self.h.store
    }

    pub async fn case_ids(&self, status: CaseStatus) -> Vec<i64> {
        self.store()
            .cases(&CaseFilter {
                status: Some(status),
                limit: 1000,
                ..CaseFilter::default()
            })
            .await
            .unwrap()
            .cases
            .iter()
            .map(|c| c.case_id)
            .collect()
    }

    pub async fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.h.drop_db().await;
    }
}

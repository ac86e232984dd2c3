//! The scorer as a service for async workers: one thread owns the model and scores
//! whatever requests are waiting together in one forward pass, up to a batch size.
//! The `rerun` worker fetches jobs concurrently, so its requests arrive together and
//! are batched without any coordination on its side.

use std::panic::AssertUnwindSafe;

use tokio::sync::{mpsc, oneshot};

use super::{ScoreError, ScoreJob, Scorer};
use crate::checks::llm::TokenScores;
use crate::record::LlmInput;

struct Request {
    input: LlmInput,
    text: String,
    reply: oneshot::Sender<Result<TokenScores, ScoreError>>,
}

#[derive(Clone)]
pub struct ScoringService {
    tx: mpsc::Sender<Request>,
}

impl ScoringService {
    /// Moves `scorer` to its own thread.
    pub fn start(scorer: Scorer, max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<Request>(max_batch * 4);
        std::thread::Builder::new()
            .name("llm-scorer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < max_batch {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    let jobs: Vec<ScoreJob<'_>> = batch
                        .iter()
                        .map(|r| ScoreJob {
                            input: &r.input,
                            text: &r.text,
                        })
                        .collect();
                    let results =
                        std::panic::catch_unwind(AssertUnwindSafe(|| scorer.score_batch(&jobs)));
                    let results: Vec<Result<TokenScores, ScoreError>> = match results {
                        Ok(r) => r,
                        Err(_) => jobs
                            .iter()
                            .map(|_| Err(ScoreError::Failed("the scorer panicked".into())))
                            .collect(),
                    };
                    for (r, result) in batch.into_iter().zip(results) {
                        let _ = r.reply.send(result);
                    }
                }
            })
            .expect("spawning the scorer thread");
        ScoringService { tx }
    }

    pub async fn score(&self, input: LlmInput, text: String) -> Result<TokenScores, ScoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { input, text, reply })
            .await
            .map_err(|_| ScoreError::Failed("the scorer thread is gone".into()))?;
        rx.await
            .map_err(|_| ScoreError::Failed("the scorer dropped the request".into()))?
    }
}

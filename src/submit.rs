//! `proctor submit`: sends an audit folder (docs/audit-folder.md) through the running
//! pipeline as the network's services would. The miners' outputs go to the jobs
//! bucket under the keys the records name, the reference outputs to the reference
//! bucket (as a reference host leaves them), `wallets.json` to Postgres (the wallet
//! service's feed), and the job records to the jobs topic, keyed by miner id. With
//! `rounds` above one it sends that many copies of every valid record, with new job
//! ids (`<job_id>-r<k>`) and submission times ten minutes apart: a demo population
//! for watching the workers. Lines that are not valid records are sent once, as
//! they are: the screen worker dead-letters them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::StreamExt;

use crate::kafka;
use crate::objects::ObjectStore;
use crate::record::JobRecord;
use crate::settings::Settings;
use crate::store::Store;

/// What to send.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// The audit folder.
    pub dir: PathBuf,
    /// Copies of every valid record (1: the folder as it is).
    pub rounds: usize,
    /// Also upload `reference/` to the reference bucket.
    pub references: bool,
}

/// What was sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub records: usize,
    /// Lines sent as they are because they are not valid job records.
    pub invalid: usize,
    pub objects: usize,
    pub references: usize,
    pub wallets: usize,
}

/// Uploads at most this many objects, and produces at most this many records, at once.
const CONCURRENCY: usize = 32;

/// The job records to send: every valid one `rounds` times (renamed after the first
/// round), then each invalid line once. Each is `(key, payload)`; the key is the miner
/// id, or `unparsable`.
pub fn messages(jsonl: &str, rounds: usize) -> (Vec<(String, Vec<u8>)>, usize) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
        match JobRecord::from_json(line.as_bytes()) {
            Ok(r) => valid.push(r),
            Err(_) => invalid.push(line.as_bytes().to_vec()),
        }
    }
    let mut out = Vec::new();
    for round in 0..rounds.max(1) {
        for r in &valid {
            let mut v = r.to_json();
            if round > 0 {
                v["job_id"] = format!("{}-r{round}", r.job_id).into();
                let at = r.submitted_at + chrono::Duration::minutes(10 * round as i64);
                v["submitted_at"] = at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .into();
            }
            out.push((r.miner_id.to_string(), v.to_string().into_bytes()));
        }
    }
    let n_invalid = invalid.len();
    out.extend(invalid.into_iter().map(|l| ("unparsable".to_owned(), l)));
    (out, n_invalid)
}

/// The files under `dir`, each with its path relative to `dir` (`/`-separated).
fn files_under(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
                out.push((rel, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn upload(objects: &ObjectStore, bucket: &str, files: &[(String, PathBuf)]) -> Result<usize> {
    let puts = files.iter().map(|(key, path)| async move {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        objects
            .put(bucket, key, bytes)
            .await
            .with_context(|| format!("cannot upload s3://{bucket}/{key}"))
    });
    let results: Vec<Result<()>> = futures::stream::iter(puts)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(files.len())
}

/// Sends the folder; `progress` hears what is happening.
pub async fn run(
    settings: &Settings,
    opts: &SubmitOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Submitted> {
    let jsonl_path = opts.dir.join("jobs.jsonl");
    let jsonl = std::fs::read_to_string(&jsonl_path)
        .with_context(|| format!("cannot read {}", jsonl_path.display()))?;
    let (messages, invalid) = messages(&jsonl, opts.rounds);
    if messages.is_empty() {
        anyhow::bail!("{} holds no job records", jsonl_path.display());
    }
    let mut sent = Submitted {
        records: messages.len() - invalid,
        invalid,
        ..Submitted::default()
    };
    let s3 = &settings.s3;
    let objects = ObjectStore::new(s3);
    let outputs = opts.dir.join("objects");
    if outputs.is_dir() {
        sent.objects = upload(&objects, &s3.jobs_bucket, &files_under(&outputs)?).await?;
        progress(&format!(
            "uploaded {} outputs to s3://{}",
            sent.objects, s3.jobs_bucket
        ));
    }
    let references = opts.dir.join("reference");
    if opts.references && references.is_dir() {
        let files = files_under(&references)?;
        let mut keyed: Vec<(String, PathBuf)> = Vec::new();
        for round in 0..opts.rounds.max(1) {
            for (rel, path) in &files {
                let Some((job, file)) = rel.split_once('/') else {
                    continue;
                };
                let job = if round == 0 {
                    job.to_owned()
                } else {
                    format!("{job}-r{round}")
                };
                keyed.push((format!("reference/{job}/{file}"), path.clone()));
            }
        }
        sent.references = upload(&objects, &s3.reference_bucket, &keyed).await?;
        progress(&format!(
            "uploaded {} reference outputs to s3://{}",
            sent.references, s3.reference_bucket
        ));
    }
    let wallets = opts.dir.join("wallets.json");
    if wallets.is_file() {
        let held: std::collections::BTreeMap<String, u32> = serde_json::from_slice(
            &std::fs::read(&wallets)
                .with_context(|| format!("cannot read {}", wallets.display()))?,
        )
        .with_context(|| format!("{} is not a map of wallet to NFTs", wallets.display()))?;
        let store = Store::open(settings.database.url.expose(), 2)
            .await
            .context("cannot record wallets.json")?;
        for (wallet, nfts) in &held {
            store.set_wallet_nfts(wallet, *nfts).await?;
        }
        sent.wallets = held.len();
        progress(&format!("set the NFTs of {} wallets", sent.wallets));
    }
    let k = &settings.kafka;
    kafka::ensure_topics(k, &[(k.jobs_topic.as_str(), 4)])
        .await
        .with_context(|| format!("cannot create {} on {}", k.jobs_topic, k.brokers))?;
    let producer = kafka::producer(k)?;
    let sends = messages.iter().map(|(key, payload)| {
        let producer = &producer;
        async move {
            // Like the job service: a failed send is retried; a duplicate is harmless
            // (every write is idempotent on job_id).
            let mut backoff = kafka::Backoff::new(Duration::from_secs(5));
            loop {
                match kafka::send(producer, &k.jobs_topic, key, payload, None).await {
                    Ok(()) => return Ok(()),
                    Err(e) if backoff.attempts < 10 => {
                        tracing::warn!(error = %e, "send failed; retrying");
                        tokio::time::sleep(backoff.delay()).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    });
    let results: Vec<Result<(), rdkafka::error::KafkaError>> = futures::stream::iter(sends)
        .buffer_unordered(CONCURRENCY * 8)
        .collect()
        .await;
    results
        .into_iter()
        .collect::<Result<Vec<()>, _>>()
        .with_context(|| format!("cannot send job records to {}", k.jobs_topic))?;
    progress(&format!(
        "sent {} job records ({} not valid records) to {}",
        messages.len(),
        invalid,
        k.jobs_topic
    ));
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_copy_the_valid_records_with_new_ids_and_later_times_and_the_invalid_once() {
        let demo = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audit-demo/jobs.jsonl"),
        )
        .unwrap();
        let (one, invalid) = messages(&demo, 1);
        let (three, invalid3) = messages(&demo, 3);
        assert!(invalid > 0, "the demo holds invalid lines");
        assert_eq!(invalid, invalid3);
        let valid = one.len() - invalid;
        assert_eq!(three.len(), 3 * valid + invalid);
        let ids: std::collections::BTreeSet<String> = three[..3 * valid]
            .iter()
            .map(|(_, p)| JobRecord::from_json(p).unwrap().job_id.to_string())
            .collect();
        assert_eq!(ids.len(), 3 * valid, "every copy has its own job id");
        let first = JobRecord::from_json(&three[0].1).unwrap();
        let copy = JobRecord::from_json(&three[2 * valid].1).unwrap();
        assert_eq!(copy.job_id.to_string(), format!("{}-r2", first.job_id));
        assert_eq!(copy.miner_id, first.miner_id);
        assert_eq!(
            copy.submitted_at - first.submitted_at,
            chrono::Duration::minutes(20)
        );
        assert_eq!(three[0].0, first.miner_id.to_string(), "keyed by miner");
        assert!(three[3 * valid..].iter().all(|(k, _)| k == "unparsable"));
    }
}

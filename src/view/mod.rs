//! What a miner's case and a piece of evidence show, built from data alone. The review
//! app fetches that data from Postgres and S3, `proctor audit` from its folder; both
//! render the same templates with these values, so the offline report is the app's
//! view, read-only. Only the links differ ([`Links`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use minijinja::{Value, context};

use crate::checks::JobVerdict;
use crate::checks::llm::TokenScores;
use crate::outcome::{CheckId, Outcome};
use crate::record::{Job, JobRecord};
use crate::review::CaseRow;
use crate::rules::Rules;

mod charts;

/// The app's stylesheet and script, served by the app and written beside the report.
pub const STYLESHEET: &str = include_str!("static/app.css");
pub const SCRIPT: &str = include_str!("static/app.js");

/// A template value of anything serializable.
pub fn ser<T: serde::Serialize>(x: T) -> Value {
    Value::from(minijinja::value::Serde(x))
}

/// The MIME type and file extension of an image a browser may be shown: only a PNG or a
/// JPEG, what the image check reads (a browser is no safer a decoder than ours). Used
/// by the app's object route and the offline report alike.
pub fn browser_image(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => Some(("image/png", "png")),
        Ok(image::ImageFormat::Jpeg) => Some(("image/jpeg", "jpg")),
        _ => None,
    }
}

/// Where the templates' links point: the app's routes, or the report's files.
#[derive(Clone)]
pub enum Links {
    App,
    Report(Arc<ReportFiles>),
}

/// The offline report's files: `report.html` at the top, every other page and image in
/// `report/`, beside it.
#[derive(Default)]
pub struct ReportFiles {
    /// Case pages by case number.
    pub cases: BTreeSet<i64>,
    /// Evidence pages: (job, check).
    pub evidence: BTreeSet<(String, String)>,
    /// Image files in `report/img/`, by (job, "output" | "reference").
    pub images: BTreeMap<(String, String), String>,
}

/// A job id as a file name: job ids are `[A-Za-z0-9_.:-]`, and a ':' would make a
/// relative link read as a URL scheme. '~' is never in a job id, so no two collide.
pub fn file_stem(job: &str) -> String {
    job.replace(':', "~")
}

impl ReportFiles {
    pub fn case_file(id: i64) -> String {
        format!("case-{id}.html")
    }

    pub fn evidence_file(job: &str, check: &str) -> String {
        format!("evidence-{}-{check}.html", file_stem(job))
    }

    /// The link from a page at `depth` (0: `report.html`; 1: inside `report/`), or
    /// `None` when the report has no such page or image.
    fn link(&self, depth: i64, kind: &str, a: &str, b: &str) -> Option<String> {
        let inner = |f: String| {
            if depth == 0 { format!("report/{f}") } else { f }
        };
        match kind {
            "queue" => Some(if depth == 0 {
                "report.html".into()
            } else {
                "../report.html".into()
            }),
            "static" => Some(inner(format!("static/{a}"))),
            "case" => {
                let id: i64 = a.parse().ok()?;
                self.cases.contains(&id).then(|| inner(Self::case_file(id)))
            }
            "evidence" => self
                .evidence
                .contains(&(a.to_owned(), b.to_owned()))
                .then(|| inner(Self::evidence_file(a, b))),
            "output" | "reference" => self
                .images
                .get(&(a.to_owned(), kind.to_owned()))
                .map(|f| inner(format!("img/{f}"))),
            _ => None,
        }
    }
}

fn app_link(kind: &str, a: &str, b: &str) -> Option<String> {
    Some(match kind {
        "queue" => "/queue".into(),
        "static" => format!("/static/{a}"),
        "case" => format!("/cases/{a}"),
        "evidence" => format!("/evidence/{}/{}", urlencode(a), urlencode(b)),
        "output" | "reference" => format!("/jobs/{}/{kind}", urlencode(a)),
        _ => return None,
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The templates, compiled into the binary, with HTML autoescaping, and the `url`
/// function their links go through: `url(kind, a, b)` for `queue`, `static` (a file),
/// `case` (an id), `evidence` (a job and a check), `output` and `reference` (a job).
/// A link the report has no file for is empty, and the templates show plain text.
pub fn templates(links: Links) -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("queue.html", include_str!("templates/queue.html")),
        ("case.html", include_str!("templates/case.html")),
        ("evidence.html", include_str!("templates/evidence.html")),
        ("admin.html", include_str!("templates/admin.html")),
        ("message.html", include_str!("templates/message.html")),
        ("macros.html", include_str!("templates/macros.html")),
    ] {
        // The templates are this crate's own: one that does not parse fails the
        // test suite (`every_template_parses`), never a reviewer.
        if let Err(e) = env.add_template(name, text) {
            tracing::error!(template = name, error = %e, "template does not parse");
        }
    }
    env.add_filter("num", num);
    env.add_filter("prob", prob);
    env.add_function(
        "url",
        move |state: &minijinja::State<'_, '_>,
              kind: String,
              a: Option<Value>,
              b: Option<Value>|
              -> Value {
            let a = a.map(|v| v.to_string()).unwrap_or_default();
            let b = b.map(|v| v.to_string()).unwrap_or_default();
            let link = match &links {
                Links::App => app_link(&kind, &a, &b),
                Links::Report(files) => {
                    let depth = state
                        .lookup("depth")
                        .and_then(|d| i64::try_from(d).ok())
                        .unwrap_or(1);
                    files.link(depth, &kind, &a, &b)
                }
            };
            // Escaped here for an attribute, and only for what HTML needs: the
            // autoescaper would also write every '/' as "&#x2f;".
            let link = link.unwrap_or_default();
            Value::from_safe_string(
                link.replace('&', "&amp;")
                    .replace('"', "&quot;")
                    .replace('\'', "&#39;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;"),
            )
        },
    );
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

/// A case's row in the queue.
pub fn queue_row(c: &CaseRow) -> Value {
    context! {
        case_id => c.case_id,
        miner_id => &c.miner_id,
        status => c.status.as_str(),
        opened_by => &c.opened_by,
        evidence_probability => c.evidence_probability,
        waifu => c.at_stake.points().waifu,
        llama => c.at_stake.points().llama,
        checks => c.decision.tallies.iter().map(|t| t.check.as_str()).collect::<Vec<_>>(),
        updated_at => c.updated_at.format("%Y-%m-%d %H:%M").to_string(),
    }
}

/// Who holds the miner's wallet, for the case page.
pub struct Owner {
    pub wallet: String,
    pub nfts: Option<i32>,
    /// The NFT boost applied to the miner's points.
    pub factor: f64,
}

/// The case page: the miner, the points, the decision's tallies, the cited evidence
/// and the timeline of `jobs` (newest first, as given). The app adds the decision
/// form, the history and the appeals.
pub fn case_context(
    c: &CaseRow,
    jobs: &[(&JobRecord, Option<&JobVerdict>)],
    owner: &Owner,
    rules: &Rules,
) -> Value {
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
        .filter_map(|(_, v)| *v)
        .filter(|v| v.verdict != crate::checks::Verdict::Invalid)
        .map(|v| v.points)
        .sum::<crate::points::Points>()
        .scaled(owner.factor);
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
                kind => kind(r),
                verdict => v.as_ref().map(|v| v.verdict.as_str()),
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
                basis => p.basis.as_str(),
                measured => p.measured.as_ref().map(|m| m.upper_95),
                measured_n => p.measured.as_ref().map(|m| m.n),
                used => t.false_positive_rate,
                honest_probability => t.honest_probability,
                slash_probability => t.slash_tail(),
                can_slash => t.slash_note(rules),
            }
        })
        .collect();
    let evidence: Vec<_> = c
        .decision
        .evidence
        .iter()
        .map(|e| context! { job_id => e.job_id.as_str(), check => e.check.as_str(), summary => &e.summary })
        .collect();
    context! {
        c => ser(c),
        wallet => &owner.wallet,
        nfts => owner.nfts,
        factor => owner.factor,
        gpus => gpus,
        versions => versions,
        earned => ser(earned),
        timeline => timeline,
        tallies => tallies,
        evidence => evidence,
        auto_slash => rules.auto_slash_threshold(),
        review_max => rules.slashing.review_max_honest_probability,
    }
}

fn kind(r: &JobRecord) -> &'static str {
    match r.job {
        Job::Sd { .. } => "image",
        Job::Llm { .. } => "llm",
    }
}

/// What an evidence page needs beyond the job and its verdict.
#[derive(Debug, PartialEq)]
pub enum Need {
    Nothing,
    /// Every job that returned the output first returned by this job.
    SameOutput(String),
    /// The reference's token scores of the job.
    Scores,
    /// The miner's own latencies on the model, and its peers' on the GPU.
    Latencies,
}

/// What one check's outcome on a job is: its status, summary and details.
fn outcome_of(
    verdict: Option<&JobVerdict>,
    check: Option<CheckId>,
) -> (&'static str, String, serde_json::Value) {
    let result = verdict.and_then(|v| v.checks.iter().find(|c| Some(c.check) == check));
    match result.map(|r| &r.outcome) {
        Some(Outcome::Fail { evidence }) => {
            ("fail", evidence.summary.clone(), evidence.details.clone())
        }
        Some(Outcome::Pass { measured }) => ("pass", String::new(), measured.clone()),
        Some(Outcome::Inconclusive { reason }) => {
            ("inconclusive", reason.clone(), serde_json::Value::Null)
        }
        None => ("not judged", String::new(), serde_json::Value::Null),
    }
}

/// What the evidence page of `check` on this job needs fetched.
pub fn need(record: &JobRecord, verdict: Option<&JobVerdict>, check: &str) -> Need {
    let check_id = CheckId::parse(check);
    let (_, _, details) = outcome_of(verdict, check_id);
    match check_id {
        Some(CheckId::Reuse | CheckId::OutputSize | CheckId::OutputDecode | CheckId::Canary) => {
            Need::SameOutput(
                details
                    .pointer("/matched/job_id")
                    .and_then(|v| v.as_str())
                    .unwrap_or(record.job_id.as_str())
                    .to_owned(),
            )
        }
        Some(c) if c.as_str().starts_with("llm_") => Need::Scores,
        Some(CheckId::Latency | CheckId::LatencyEnvelope | CheckId::LatencyPeers) => {
            Need::Latencies
        }
        _ => Need::Nothing,
    }
}

/// The evidence beside a job's own that [`need`] asks for.
#[derive(Default)]
pub struct Related {
    /// (job, miner, submitted) of every job that returned the same output.
    pub same_output: Vec<(String, String, DateTime<Utc>)>,
    pub scores: Option<TokenScores>,
    /// The miner's inference latencies on this model, and its peers' on this GPU.
    pub own_latencies: Vec<f64>,
    pub peer_latencies: Vec<f64>,
}

/// The evidence page of one check on one job.
pub fn evidence_context(
    record: &JobRecord,
    verdict: Option<&JobVerdict>,
    check: &str,
    rules: &Rules,
    related: &Related,
) -> Value {
    let check_id = CheckId::parse(check);
    let (status, summary, details) = outcome_of(verdict, check_id);
    let mut ctx = context! {
        job => job_context(record),
        check => check,
        status => status,
        summary => summary,
        details => detail_rows(&details),
        verdict => verdict.map(|v| v.verdict.as_str()),
    };
    match (check_id, need(record, verdict, check)) {
        (Some(CheckId::ImageSimilarity), _) => {
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
        (Some(CheckId::ModelChallenge), _) => {
            let text = |k: &str| details.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            let range = |k: &str| {
                details
                    .pointer(&format!("/range/{k}"))
                    .and_then(|v| v.as_u64())
            };
            if let (Some(file), Some(expected), Some(answer)) =
                (text("file"), text("expected"), text("answer"))
            {
                let offset = range("offset");
                let length = range("length");
                let same = expected.eq_ignore_ascii_case(&answer);
                ctx = context! {
                    challenge => context! {
                        file => file,
                        nonce => text("nonce"),
                        offset => offset,
                        length => length,
                        end => offset.zip(length).map(|(o, l)| o.saturating_add(l)),
                        expected => expected,
                        answer => answer,
                        same => same,
                    },
                    ..ctx
                };
            }
        }
        (_, Need::SameOutput(_)) => {
            let matched = details
                .pointer("/matched/job_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            let group = &related.same_output;
            let same: Vec<_> = group
                .iter()
                .map(|(j, m, at)| context! { job_id => j, miner_id => m, submitted_at => at.format("%Y-%m-%d %H:%M:%S").to_string(), this => j == record.job_id.as_str() })
                .collect();
            let n_miners = group
                .iter()
                .map(|(_, m, _)| m)
                .collect::<BTreeSet<_>>()
                .len();
            let reuse = check_id == Some(CheckId::Reuse);
            let same = (reuse && same.len() > 1).then_some(same);
            ctx = context! { images => matches!(record.job, Job::Sd { .. }) && !reuse, matched => matched, same => same, n_miners => n_miners, ..ctx };
        }
        (_, Need::Scores) => {
            if let Some(scores) = &related.scores {
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
                let chart = charts::token_chart(scores, &flagged, Some(llm.unlikely_logprob));
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
        (_, Need::Latencies) => {
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
                &related.own_latencies,
                Some(record.metrics.inference_latency),
                &related.peer_latencies,
                &bounds,
            );
            ctx = context! { latency_chart => Value::from_safe_string(chart), peers => related.peer_latencies.len(), ..ctx };
        }
        _ => {}
    }
    ctx
}

/// The job's parameters a reviewer reads beside the evidence.
pub fn job_context(r: &JobRecord) -> Value {
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
                    .map(|m| format!("{}: {}", m.role.as_str(), m.content))
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

/// The most rows a list in a check's details shows.
const MAX_DETAIL_ROWS: usize = 200;

/// A scalar of a check's details as a person reads it.
fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => Some(n.as_f64().map(num).unwrap_or_else(|| n.to_string())),
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Null => Some("—".into()),
        _ => None,
    }
}

/// The same value with every fraction at four significant digits.
fn readable(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => n
            .as_f64()
            .and_then(|f| num(f).parse::<f64>().ok())
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| v.clone(), serde_json::Value::Number),
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(readable).collect()),
        serde_json::Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), readable(v))).collect())
        }
        other => other.clone(),
    }
}

/// A list of flat objects (token positions, matched jobs) as a table.
fn table(list: &[serde_json::Value]) -> Option<Value> {
    let mut columns: Vec<&str> = Vec::new();
    for item in list {
        for (k, v) in item.as_object()? {
            scalar(v)?;
            if !columns.contains(&k.as_str()) {
                columns.push(k);
            }
        }
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .take(MAX_DETAIL_ROWS)
        .map(|item| {
            columns
                .iter()
                .map(|c| item.get(*c).and_then(scalar).unwrap_or_default())
                .collect()
        })
        .collect();
    Some(context! {
        columns => columns.iter().map(|c| (*c).to_owned()).collect::<Vec<String>>(),
        rows => rows,
        more => list.len().saturating_sub(MAX_DETAIL_ROWS),
    })
}

/// A check's details as name/value rows: scalars as a person reads them, a list of
/// flat objects as a table, anything else as indented JSON with readable numbers.
fn detail_rows(details: &serde_json::Value) -> Vec<Value> {
    let Some(obj) = details.as_object() else {
        return if details.is_null() {
            Vec::new()
        } else {
            vec![
                context! { name => "value", value => serde_json::to_string_pretty(&readable(details)).unwrap_or_default() },
            ]
        };
    };
    obj.iter()
        .map(|(k, v)| {
            if let Some(s) = scalar(v) {
                return context! { name => k, value => s };
            }
            if let Some(t) = v.as_array().filter(|a| !a.is_empty()).and_then(|a| table(a)) {
                return context! { name => k, table => t };
            }
            context! { name => k, value => serde_json::to_string_pretty(&readable(v)).unwrap_or_default() }
        })
        .collect()
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
    fn details_read_as_tables_and_short_numbers() {
        let rows = detail_rows(&serde_json::json!({
            "z": -9.933959508340873,
            "positions": [{"index": 5, "logprob": -9.933959508340873}, {"index": 9, "rank": 40}],
            "range": {"offset": 10, "ratio": 0.123456789},
        }));
        let html = templates(Links::App)
            .render_str(
                "{% for d in rows %}{{ d.name }}={% if d.table %}{{ d.table.columns }}{{ d.table.rows }}{% else %}{{ d.value }}{% endif %};{% endfor %}",
                context! { rows => rows },
            )
            .unwrap();
        assert!(html.contains("z=-9.934;"), "{html}");
        // The token positions: a table with every column, short numbers.
        let positions = html.split("positions=").nth(1).unwrap();
        let positions = &positions[..positions.find(';').unwrap()];
        for needle in ["index", "logprob", "rank", "-9.934", "40"] {
            assert!(positions.contains(needle), "{needle}: {positions}");
        }
        assert!(
            html.contains("0.1235") && !html.contains("0.123456789"),
            "{html}"
        );
        assert!(!html.contains("9.933959"), "{html}");
    }

    #[test]
    fn every_template_parses() {
        let env = templates(Links::App);
        for name in [
            "base.html",
            "login.html",
            "queue.html",
            "case.html",
            "evidence.html",
            "admin.html",
            "message.html",
            "macros.html",
        ] {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn links_point_at_the_app_or_at_the_report_files_that_exist() {
        let app = templates(Links::App);
        let render = |env: &minijinja::Environment<'_>, src: &str, depth: i64| {
            env.render_str(src, context! { depth => depth }).unwrap()
        };
        assert_eq!(
            render(&app, "{{ url('evidence', 'job:1', 'reuse') }}", 0),
            "/evidence/job%3A1/reuse"
        );
        assert_eq!(render(&app, "{{ url('case', 7) }}", 0), "/cases/7");
        let mut files = ReportFiles::default();
        files.cases.insert(7);
        files.evidence.insert(("job:1".into(), "reuse".into()));
        files
            .images
            .insert(("job:1".into(), "output".into()), "job~1-output.png".into());
        let report = templates(Links::Report(Arc::new(files)));
        assert_eq!(
            render(&report, "{{ url('evidence', 'job:1', 'reuse') }}", 0),
            "report/evidence-job~1-reuse.html"
        );
        assert_eq!(
            render(&report, "{{ url('evidence', 'job:1', 'reuse') }}", 1),
            "evidence-job~1-reuse.html"
        );
        assert_eq!(render(&report, "{{ url('queue') }}", 1), "../report.html");
        assert_eq!(
            render(&report, "{{ url('case', 7) }}", 0),
            "report/case-7.html"
        );
        assert_eq!(
            render(&report, "{{ url('output', 'job:1') }}", 1),
            "img/job~1-output.png"
        );
        // What the report did not write is no link at all.
        assert_eq!(render(&report, "{{ url('case', 8) }}", 1), "");
        assert_eq!(render(&report, "{{ url('reference', 'job:1') }}", 1), "");
    }
}

//! `report.html`: one self-contained page for staff, with each flagged or slashed miner's
//! failed checks, their evidence, and the miner's and the reference's images side by side.

use std::fmt::Write;
use std::path::Path;

use base64::Engine;

use crate::audit::{AuditResult, reference_image_path};
use crate::checks::JobVerdict;
use crate::decide::{Action, Decision};
use crate::outcome::Outcome;
use crate::record::JobKind;

/// Images larger than this are linked by name instead of embedded.
const MAX_EMBED_BYTES: u64 = 4 << 20;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An `<img>` with the file inlined, or a note when it cannot be shown.
fn img_tag(path: &Path, caption: &str) -> String {
    let shown = match std::fs::metadata(path) {
        Ok(m) if m.len() <= MAX_EMBED_BYTES => std::fs::read(path).ok().map(|bytes| {
            let mime = match image::guess_format(&bytes) {
                Ok(image::ImageFormat::Png) => Some("image/png"),
                Ok(image::ImageFormat::Jpeg) => Some("image/jpeg"),
                _ => None,
            };
            match mime {
                // Only images that decode within limits are embedded: a browser is no
                // safer a decoder than ours.
                Some(mime) => format!(
                    "<img src=\"data:{mime};base64,{}\" alt=\"{}\">",
                    base64::engine::general_purpose::STANDARD.encode(&bytes),
                    esc(caption)
                ),
                None => "<div class=\"missing\">not a PNG or JPEG</div>".to_owned(),
            }
        }),
        Ok(m) => Some(format!(
            "<div class=\"missing\">{} bytes: too large to embed</div>",
            m.len()
        )),
        Err(_) => None,
    };
    format!(
        "<figure>{}<figcaption>{}</figcaption></figure>",
        shown.unwrap_or_else(|| "<div class=\"missing\">not available</div>".to_owned()),
        esc(caption)
    )
}

fn decodes(path: &Path, result_verdict: &JobVerdict) -> bool {
    // Do not put bytes our own decoder rejected in front of a browser.
    path.is_file()
        && !result_verdict
            .outcome(crate::outcome::CheckId::OutputDecode)
            .is_some_and(Outcome::is_fail)
}

fn miner_section(out: &mut String, dir: &Path, d: &Decision, result: &AuditResult) {
    let action = match d.action {
        Action::Slash => "slash",
        Action::FlagForReview => "flag for review",
        Action::None => "none",
    };
    let _ = write!(
        out,
        "<section class=\"{}\"><h2>{} <span class=\"action\">{action}</span></h2>",
        if d.action == Action::Slash {
            "slash"
        } else {
            "flag"
        },
        esc(&d.miner_id.to_string())
    );
    let _ = write!(
        out,
        "<p>Probability that an honest miner shows this evidence: <b>{:.2e}</b> from the checks that can slash, <b>{:.2e}</b> from any check</p>",
        d.honest_probability, d.review_probability
    );
    if let Some(s) = &d.slash {
        let _ = write!(
            out,
            "<p>Slash <code>{}</code> under rule <code>{}</code>: {:.2} Waifu points, {:.3} Llama points over {} jobs.</p>",
            esc(&s.slash_id),
            esc(&s.rule_id),
            s.amount.waifu,
            s.amount.llama,
            s.jobs.len()
        );
    }
    out.push_str("<table><tr><th>check</th><th>judged</th><th>failed</th><th>false-positive rate</th><th>honest p</th><th>can slash</th></tr>");
    for t in &d.tallies {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1e}</td><td>{:.2e}</td><td>{}</td></tr>",
            t.check,
            t.judged,
            t.failed,
            t.false_positive_rate,
            t.honest_probability,
            if t.can_slash { "yes" } else { "no: flag only" }
        );
    }
    out.push_str("</table>");
    let failed_jobs: Vec<&JobVerdict> = result
        .verdicts
        .iter()
        .filter(|v| v.miner_id == d.miner_id && v.failed_checks().next().is_some())
        .collect();
    for v in failed_jobs {
        let _ = write!(
            out,
            "<div class=\"job\"><h3>job {} <small>({})</small></h3>",
            esc(v.job_id.as_str()),
            esc(v.model_id.as_str())
        );
        if v.kind == JobKind::Sd {
            out.push_str("<div class=\"pair\">");
            let miner_path = v.output_key.as_ref().map(|k| dir.join("objects").join(k));
            match &miner_path {
                Some(p) if decodes(p, v) => out.push_str(&img_tag(p, "miner")),
                _ => out.push_str("<figure><div class=\"missing\">miner output not shown (undecodable or missing)</div><figcaption>miner</figcaption></figure>"),
            }
            match reference_image_path(dir, v.job_id.as_str()) {
                Some(p) => out.push_str(&img_tag(&p, "reference")),
                None => out.push_str("<figure><div class=\"missing\">not re-run</div><figcaption>reference</figcaption></figure>"),
            }
            out.push_str("</div>");
        }
        for c in &v.checks {
            if let Outcome::Fail { evidence } = &c.outcome {
                let details = serde_json::to_string_pretty(&evidence.details).unwrap_or_default();
                let _ = write!(
                    out,
                    "<details open><summary><b>{}</b>: {}</summary><pre>{}</pre></details>",
                    c.check,
                    esc(&evidence.summary),
                    esc(&details)
                );
            }
        }
        out.push_str("</div>");
    }
    out.push_str("</section>");
}

pub fn render(dir: &Path, result: &AuditResult) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>proctor audit</title><style>\
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}\
section{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0}\
section.slash{border-left:6px solid #c0392b}section.flag{border-left:6px solid #e67e22}\
.action{font-size:.7em;text-transform:uppercase;color:#555}\
.pair{display:flex;gap:1em}figure{margin:0}figure img{max-width:380px;max-height:380px}\
.missing{width:240px;height:120px;background:#eee;display:flex;align-items:center;justify-content:center;color:#777;text-align:center}\
pre{background:#f6f6f6;padding:.5em;overflow:auto;max-height:300px}table{border-collapse:collapse}\
td,th{border:1px solid #ddd;padding:2px 8px}</style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>proctor audit</h1><p>{} jobs judged, {} records rejected. Rules digest <code>{}</code>.</p>",
        result.verdicts.len(),
        result.rejected.len(),
        esc(&result.rules_digest)
    );
    let mut acted: Vec<&Decision> = result
        .decisions
        .iter()
        .filter(|d| d.action != Action::None)
        .collect();
    acted.sort_by_key(|d| (d.action != Action::Slash, d.miner_id.to_string()));
    if acted.is_empty() {
        out.push_str("<p>No miner was slashed or flagged.</p>");
    }
    for d in acted {
        miner_section(&mut out, dir, d, result);
    }
    if !result.rejected.is_empty() {
        out.push_str("<h2>Rejected records</h2><ul>");
        for r in &result.rejected {
            let _ = write!(out, "<li>line {}: {}</li>", r.line, esc(&r.error));
        }
        out.push_str("</ul>");
    }
    out.push_str("</body></html>\n");
    out
}

//! `report.html`: one self-contained page for staff, with each flagged or slashed miner's
//! failed checks, their evidence, and the miner's and the reference's images side by side.
//!
//! It renders decisions and verdicts, whoever reached them, and takes its images from an
//! [`ImageSource`]: the audit's folder today (`audit::Folder`), the object store for
//! the review app. It imports nothing that imports it.

use std::fmt::Write;

use base64::Engine;

use crate::checks::JobVerdict;
use crate::decide::{Action, Decision};
use crate::ids::JobId;
use crate::outcome::Outcome;
use crate::record::JobKind;

/// Images larger than this are shown as their size instead of embedded.
pub const MAX_EMBED_BYTES: u64 = 4 << 20;

/// An image the report may show.
pub enum Shown {
    /// The file's bytes (at most [`MAX_EMBED_BYTES`]).
    Bytes(Vec<u8>),
    /// A file too large to embed, and its size.
    TooLarge(u64),
}

/// Where the report finds the images it shows. `None` when there is none.
pub trait ImageSource {
    /// The miner's output, by its object key.
    fn output(&self, key: &str) -> Option<Shown>;
    /// The reference GPU's image of a job.
    fn reference(&self, job: &JobId) -> Option<Shown>;
}

/// What the page shows.
pub struct Page<'a> {
    pub rules_digest: &'a str,
    pub verdicts: &'a [JobVerdict],
    pub decisions: &'a [Decision],
    /// Records that were not valid: their line and the reason.
    pub rejected: Vec<(usize, &'a str)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An `<img>` with the file inlined, or a note when it cannot be shown.
fn img_tag(image: Option<Shown>, caption: &str) -> String {
    let shown = match image {
        Some(Shown::Bytes(bytes)) => Some({
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
        Some(Shown::TooLarge(len)) => Some(format!(
            "<div class=\"missing\">{len} bytes: too large to embed</div>"
        )),
        None => None,
    };
    format!(
        "<figure>{}<figcaption>{}</figcaption></figure>",
        shown.unwrap_or_else(|| "<div class=\"missing\">not available</div>".to_owned()),
        esc(caption)
    )
}

fn decodes(verdict: &JobVerdict) -> bool {
    // Do not put bytes our own decoder rejected in front of a browser.
    !verdict
        .outcome(crate::outcome::CheckId::OutputDecode)
        .is_some_and(Outcome::is_fail)
}

fn miner_section(out: &mut String, images: &dyn ImageSource, d: &Decision, page: &Page<'_>) {
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
    let failed_jobs: Vec<&JobVerdict> = page
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
            let output = v
                .output_key
                .as_ref()
                .filter(|_| decodes(v))
                .and_then(|k| images.output(k));
            match output {
                Some(image) => out.push_str(&img_tag(Some(image), "miner")),
                None => out.push_str("<figure><div class=\"missing\">miner output not shown (undecodable or missing)</div><figcaption>miner</figcaption></figure>"),
            }
            match images.reference(&v.job_id) {
                Some(image) => out.push_str(&img_tag(Some(image), "reference")),
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

pub fn render(page: &Page<'_>, images: &dyn ImageSource) -> String {
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
        page.verdicts.len(),
        page.rejected.len(),
        esc(page.rules_digest)
    );
    let mut acted: Vec<&Decision> = page
        .decisions
        .iter()
        .filter(|d| d.action != Action::None)
        .collect();
    acted.sort_by_key(|d| (d.action != Action::Slash, d.miner_id.to_string()));
    if acted.is_empty() {
        out.push_str("<p>No miner was slashed or flagged.</p>");
    }
    for d in acted {
        miner_section(&mut out, images, d, page);
    }
    if !page.rejected.is_empty() {
        out.push_str("<h2>Rejected records</h2><ul>");
        for (line, error) in &page.rejected {
            let _ = write!(out, "<li>line {line}: {}</li>", esc(error));
        }
        out.push_str("</ul>");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::MinerHistory;
    use crate::ids::{MinerId, ModelId};
    use crate::outcome::{CheckId, CheckResult};
    use crate::points::Points;
    use crate::rules::Rules;

    /// A PNG the size of one pixel.
    fn png() -> Vec<u8> {
        let mut out = Vec::new();
        image::RgbImage::new(1, 1)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    /// Outputs by key and references by job, as a folder or the object store would give.
    struct Fake;

    impl ImageSource for Fake {
        fn output(&self, key: &str) -> Option<Shown> {
            match key {
                "out/big.png" => Some(Shown::TooLarge(9 << 20)),
                "out/gone.png" => None,
                _ => Some(Shown::Bytes(png())),
            }
        }

        fn reference(&self, job: &JobId) -> Option<Shown> {
            (job.as_str() == "rerun").then(|| Shown::Bytes(png()))
        }
    }

    fn verdict(job: &str, key: &str, failed: CheckId) -> JobVerdict {
        JobVerdict {
            job_id: JobId::parse(job).unwrap(),
            miner_id: MinerId::parse("0x00000000000000000000000000000000000000aa").unwrap(),
            model_id: ModelId::parse("SDXL").unwrap(),
            kind: JobKind::Sd,
            submitted_at: chrono::DateTime::UNIX_EPOCH,
            verdict: crate::checks::Verdict::Fail,
            points: Points {
                waifu: 1.0,
                llama: 0.0,
            },
            points_estimated: false,
            sampled: true,
            output_key: Some(key.into()),
            checks: vec![CheckResult {
                check: failed,
                outcome: Outcome::fail("bad <b>", ()),
            }],
            rules_digest: "d".into(),
        }
    }

    #[test]
    fn a_page_shows_what_its_image_source_has_and_never_an_undecodable_output() {
        let rules = Rules::embedded().unwrap();
        let verdicts = vec![
            verdict("rerun", "out/rerun.png", CheckId::ImageSimilarity),
            verdict("undecodable", "out/bomb.png", CheckId::OutputDecode),
            verdict("big", "out/big.png", CheckId::ImageSimilarity),
            verdict("gone", "out/gone.png", CheckId::ImageSimilarity),
        ];
        let miner = verdicts[0].miner_id.clone();
        let history = MinerHistory {
            verdicts: verdicts.clone(),
            ..MinerHistory::default()
        };
        let decision = crate::decide::decide(&miner, &history, &[], &rules);
        assert_ne!(decision.action, Action::None);
        let page = Page {
            rules_digest: "digest",
            verdicts: &verdicts,
            decisions: std::slice::from_ref(&decision),
            rejected: vec![(3, "not JSON <here>")],
        };
        let html = render(&page, &Fake);
        let section = |job: &str| {
            let start = html.find(&format!("job {job} ")).unwrap();
            let end = html[start..]
                .find("</div><div class=\"job\">")
                .map_or(html.len(), |e| start + e);
            html[start..end].to_owned()
        };
        // The re-run job: both images embedded.
        assert_eq!(
            section("rerun").matches("data:image/png;base64,").count(),
            2
        );
        // The output our decoder refused is not put in front of a browser, whatever the
        // source holds.
        let bomb = section("undecodable");
        assert!(!bomb.contains("data:image"), "{bomb}");
        assert!(bomb.contains("miner output not shown"));
        assert!(section("big").contains("too large to embed"));
        assert!(section("gone").contains("miner output not shown"));
        assert!(section("gone").contains("not re-run"));
        // Miner-supplied text is escaped.
        assert!(html.contains("bad &lt;b&gt;") && !html.contains("bad <b>"));
        assert!(html.contains("line 3: not JSON &lt;here&gt;"));
    }
}

//! The console summary of an audit: verdict counts and one row per miner with an
//! action.

use super::Findings;
use crate::checks::Verdict;
use crate::decide::{Action, Decision};

/// The stdout summary: verdict counts and one row per miner with an action.
pub fn summary(result: &Findings) -> String {
    let mut s = String::new();
    let count = |v: Verdict| result.count(v);
    s.push_str(&format!(
        "proctor audit: {} jobs judged, {} records rejected, rules {}\n",
        result.jobs(),
        result.rejected.len(),
        &result.rules_digest[..16]
    ));
    s.push_str(&format!(
        "verdicts: {} pass, {} fail, {} invalid, {} inconclusive\n",
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Invalid),
        count(Verdict::Inconclusive)
    ));
    // Why records were rejected: they are the job service's fault, not a miner's.
    const SHOWN: usize = 5;
    for r in result.rejected.iter().take(SHOWN) {
        s.push_str(&format!(
            "  rejected line {}: {}\n",
            r.line,
            clip(&r.error, SUMMARY_WIDTH - 20)
        ));
    }
    if result.rejected.len() > SHOWN {
        s.push_str(&format!(
            "  … and {} more (rejected.jsonl)\n",
            result.rejected.len() - SHOWN
        ));
    }
    s.push_str(&format!(
        "\n{:<22} {:>4} {:>6}  {:<7} {:>12}  failed checks\n",
        "miner", "jobs", "failed", "action", "if honest"
    ));
    let mut rows: Vec<&Decision> = result.decisions.iter().collect();
    rows.sort_by_key(|d| {
        (
            d.action != Action::Slash,
            d.action != Action::FlagForReview,
            d.miner_id.to_string(),
        )
    });
    for d in rows {
        let (jobs, failed) = result
            .miner_counts
            .get(&d.miner_id)
            .copied()
            .unwrap_or_default();
        let (action, p) = match d.action {
            Action::None => ("-", None),
            Action::FlagForReview => ("flag", Some(d.review_probability)),
            Action::Slash => ("SLASH", Some(d.honest_probability)),
        };
        let checks: Vec<&str> = d.tallies.iter().map(|t| t.check.as_str()).collect();
        let line = format!(
            "{:<22} {:>4} {:>6}  {:<7} {:>12}  {}",
            short_miner(&d.miner_id.to_string()),
            jobs,
            failed,
            action,
            p.map_or("-".to_owned(), odds),
            checks.join(", ")
        );
        s.push_str(&clip(&line, SUMMARY_WIDTH));
        s.push('\n');
    }
    s.push_str(&format!(
        "\nif honest: how rarely an honest miner shows evidence this strong. A slash needs rarer\n\
         than {} (from checks whose false-positive rate was measured on the job's model:\n\
         `proctor rules check` lists them), a flag for staff review rarer than {} (from any\n\
         check). Miner ids are shortened; decisions.jsonl, slashes.jsonl and report.html\n\
         have them whole, with the amounts and the evidence.\n",
        odds(result.slash_threshold),
        odds(result.review_threshold)
    ));
    s
}

/// The summary's width: it fits a 100-column terminal.
const SUMMARY_WIDTH: usize = 100;

/// A probability as odds a reader can compare: `1 in 1.5e12`, `1 in 350`.
fn odds(p: f64) -> String {
    if p.is_nan() || p <= 0.0 {
        return "1 in ∞".into();
    }
    if p >= 1.0 {
        return "always".into();
    }
    let n = 1.0 / p;
    if n < 1e4 {
        format!("1 in {n:.0}")
    } else {
        format!("1 in {n:.1e}")
    }
}

/// `0xe82a3a…46bd6dc-gpu0`: a wallet miner id shortened for a table; others as they are
/// when short.
fn short_miner(id: &str) -> String {
    let (wallet, gpu) = id.split_once('-').unwrap_or((id, ""));
    let short = if wallet.len() > 14
        && wallet.is_char_boundary(8)
        && wallet.is_char_boundary(wallet.len() - 6)
    {
        format!("{}…{}", &wallet[..8], &wallet[wallet.len() - 6..])
    } else {
        wallet.to_owned()
    };
    let whole = if gpu.is_empty() {
        short
    } else {
        format!("{short}-{gpu}")
    };
    clip(&whole, 22)
}

/// At most `n` characters, the last an ellipsis when cut.
fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

//! Server-rendered SVG charts for the evidence pages: nothing loads from elsewhere.

use std::fmt::Write;

use crate::checks::llm::TokenScores;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Per-token chart: the reference's logprob of each of the miner's tokens (bars down
/// from 0) and its rank (dots, log scale), flagged tokens in red, with the logprob
/// threshold as a dashed line. Each token has a tooltip with its text and numbers.
pub fn token_chart(
    scores: &TokenScores,
    flagged: &dyn Fn(usize) -> bool,
    logprob_line: Option<f64>,
) -> String {
    let n = scores.tokens.len().max(1);
    let bar = (880.0 / n as f64).clamp(2.0, 24.0);
    let width = 60.0 + bar * n as f64 + 20.0;
    let (top, lp_h, gap, rank_h) = (20.0, 160.0, 30.0, 90.0);
    let floor = scores
        .tokens
        .iter()
        .map(|t| t.logprob)
        .filter(|l| l.is_finite())
        .fold(-1.0_f64, f64::min)
        .max(-30.0)
        .min(logprob_line.unwrap_or(0.0) - 1.0);
    let max_rank = scores
        .tokens
        .iter()
        .map(|t| t.rank)
        .max()
        .unwrap_or(1)
        .max(2);
    let y_lp = |lp: f64| top + lp_h * (lp.max(floor) / floor);
    let rank_top = top + lp_h + gap;
    let y_rank = |r: u32| rank_top + rank_h * (f64::from(r).ln() / f64::from(max_rank).ln());
    let height = rank_top + rank_h + 30.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" role="img" aria-label="per-token logprob and rank" xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}">"#
    );
    let _ = write!(
        s,
        r##"<text x="4" y="14" class="axis">logprob</text><text x="4" y="{:.0}" class="axis">rank (log)</text><line x1="56" x2="{:.0}" y1="{top}" y2="{top}" stroke="#888"/>"##,
        rank_top - 6.0,
        width - 10.0
    );
    let _ = write!(
        s,
        r#"<text x="52" y="{:.0}" text-anchor="end" class="axis">0</text><text x="52" y="{:.0}" text-anchor="end" class="axis">{floor:.0}</text>"#,
        top + 4.0,
        top + lp_h
    );
    if let Some(line) = logprob_line {
        let y = y_lp(line);
        let _ = write!(
            s,
            r##"<line x1="56" x2="{:.0}" y1="{y:.1}" y2="{y:.1}" stroke="#c00" stroke-dasharray="4 3"/><text x="{:.0}" y="{:.1}" class="axis" fill="#c00" text-anchor="end">threshold {line}</text>"##,
            width - 10.0,
            width - 12.0,
            y - 3.0
        );
    }
    for (i, t) in scores.tokens.iter().enumerate() {
        let x = 60.0 + bar * i as f64;
        let bad = flagged(i);
        let color = if bad { "#d62728" } else { "#4c78a8" };
        let tip = format!(
            "#{i} {:?}: logprob {:.3}, rank {}{}",
            t.text,
            t.logprob,
            t.rank,
            if bad { " (flagged)" } else { "" }
        );
        let y = y_lp(t.logprob);
        let _ = write!(
            s,
            r#"<g class="tok{}"><title>{}</title><rect x="{x:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="{color}"/><circle cx="{:.1}" cy="{:.1}" r="{:.1}" fill="{color}"/></g>"#,
            if bad { " flagged" } else { "" },
            esc(&tip),
            (bar - 1.0).max(1.0),
            (y - top).max(0.5),
            x + bar / 2.0,
            y_rank(t.rank.max(1)),
            (bar / 2.5).clamp(1.5, 4.0),
        );
    }
    let _ = write!(
        s,
        r#"<text x="52" y="{:.0}" text-anchor="end" class="axis">1</text><text x="52" y="{:.0}" text-anchor="end" class="axis">{max_rank}</text><text x="60" y="{:.0}" class="axis">token position 0 … {}</text></svg>"#,
        rank_top + 4.0,
        rank_top + rank_h,
        height - 8.0,
        n - 1
    );
    s
}

/// A strip chart of latencies in seconds: peers' as grey dots, the miner's as blue
/// dots (the judged job's larger), with vertical lines at each named bound.
pub fn latency_chart(
    miner: &[f64],
    judged: Option<f64>,
    peers: &[f64],
    bounds: &[(&str, f64)],
) -> String {
    let all = miner
        .iter()
        .chain(peers)
        .chain(judged.iter())
        .chain(bounds.iter().map(|(_, b)| b))
        .copied()
        .filter(|v| v.is_finite() && *v >= 0.0);
    let max = all.fold(0.1_f64, f64::max) * 1.1;
    let (w, left) = (900.0, 90.0);
    let x = |v: f64| left + (w - left - 20.0) * (v.max(0.0) / max);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" role="img" aria-label="reported latency against its bounds" xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="150" viewBox="0 0 {w:.0} 150">"#
    );
    let row = |s: &mut String, y: f64, label: &str, values: &[f64], color: &str, r: f64| {
        let _ = write!(
            s,
            r#"<text x="4" y="{:.0}" class="axis">{}</text>"#,
            y + 4.0,
            esc(label)
        );
        for v in values.iter().filter(|v| v.is_finite()) {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{y:.0}" r="{r}" fill="{color}" fill-opacity="0.7"><title>{v:.3} s</title></circle>"#,
                x(*v)
            );
        }
    };
    row(&mut s, 30.0, "peers", peers, "#999", 3.0);
    row(&mut s, 65.0, "this miner", miner, "#4c78a8", 3.0);
    if let Some(j) = judged {
        row(&mut s, 100.0, "this job", &[j], "#d62728", 5.0);
    }
    for (i, (name, b)) in bounds.iter().enumerate() {
        if !b.is_finite() {
            continue;
        }
        let color = ["#c00", "#e69f00", "#009e73"][i % 3];
        let _ = write!(
            s,
            r#"<line x1="{0:.1}" x2="{0:.1}" y1="12" y2="115" stroke="{color}" stroke-dasharray="5 3"/><text x="{0:.1}" y="{1}" class="axis" fill="{color}" text-anchor="middle">{2} {b:.3} s</text>"#,
            x(*b),
            128 + 12 * (i % 2),
            esc(name)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{left}" y="148" class="axis">0 s</text><text x="{:.0}" y="148" class="axis" text-anchor="end">{max:.2} s</text></svg>"#,
        w - 20.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::llm::TokenScore;

    fn scores() -> TokenScores {
        TokenScores {
            model_id: "m".into(),
            eos_token_id: 0,
            prompt_tokens: 3,
            output_text_blake3: String::new(),
            tokens: (0..5)
                .map(|i| TokenScore {
                    id: i,
                    text: if i == 2 {
                        "<b>&".into()
                    } else {
                        format!("t{i}")
                    },
                    logprob: -(f64::from(i)),
                    rank: i + 1,
                    top: Vec::new(),
                    eos_logprob: -10.0,
                    tempered: None,
                })
                .collect(),
            end_eos_logprob: -1.0,
            end_top_logprob: -0.5,
            end_stop_logprob: None,
            panel: Vec::new(),
        }
    }

    #[test]
    fn the_token_chart_marks_each_flagged_token_and_escapes_text() {
        let svg = token_chart(&scores(), &|i| i == 2 || i == 4, Some(-3.0));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("class=\"tok flagged\"").count(), 2);
        assert_eq!(svg.matches("class=\"tok\"").count(), 3);
        assert!(svg.contains("&lt;b&gt;&amp;") && !svg.contains("<b>"));
        assert!(svg.contains("threshold -3"));
    }

    #[test]
    fn the_latency_chart_draws_every_bound_and_point() {
        let svg = latency_chart(
            &[1.0, 2.0],
            Some(0.2),
            &[3.0, 3.5, 4.0],
            &[("physical bound", 1.5)],
        );
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.contains("physical bound 1.500 s"));
    }
}

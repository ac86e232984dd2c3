//! `scripts/bench-image`: the image check in one process against decoding alone, on the
//! same pairs and the same core.
//!
//! For every pair `DIR/<name>-candidate.{png,jpg}` + `DIR/<name>-reference.png` (as
//! `scripts/bench-image` writes them), with the bytes already in memory:
//!
//! - **decode**: both images decoded under the rules' limits, nothing else;
//! - **check**: what `proctor image-diff` does after reading the files: both decoded,
//!   measured (luma, pHash, dHash, SSIM, fine detail) and judged.
//!
//! Prints the best of `ROUNDS` rounds of each, per group (side and candidate format) and
//! in all, and the ratio check / decode, whose target is at most 1.3.
//!
//!   cargo run --release --example bench_image -- DIR [ROUNDS]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use proctor::checks::image;
use proctor::rules::Rules;

struct Pair {
    group: String,
    candidate: Vec<u8>,
    reference: Vec<u8>,
}

fn pairs(dir: &Path) -> Vec<Pair> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.ends_with("-candidate"))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|candidate| {
            let stem = candidate.file_stem().unwrap().to_str().unwrap();
            let name = stem.trim_end_matches("-candidate");
            let ext = candidate.extension().unwrap().to_str().unwrap().to_owned();
            // `<side>-<n>`: the group is the side and the candidate's format.
            let side = name.split('-').next().unwrap_or(name);
            Pair {
                group: format!("{side}² {ext}"),
                candidate: std::fs::read(&candidate).unwrap(),
                reference: std::fs::read(dir.join(format!("{name}-reference.png"))).unwrap(),
            }
        })
        .collect()
}

/// The best of `rounds` runs of `f` over every pair, per group and in all.
fn best(
    pairs: &[Pair],
    rounds: usize,
    mut f: impl FnMut(&Pair),
) -> (BTreeMap<String, Duration>, Duration) {
    let mut groups: BTreeMap<String, Duration> = BTreeMap::new();
    let mut total = Duration::MAX;
    for _ in 0..rounds {
        let mut round = BTreeMap::<String, Duration>::new();
        let start = Instant::now();
        for p in pairs {
            let t = Instant::now();
            f(p);
            *round.entry(p.group.clone()).or_default() += t.elapsed();
        }
        total = total.min(start.elapsed());
        for (g, d) in round {
            let b = groups.entry(g).or_insert(Duration::MAX);
            *b = (*b).min(d);
        }
    }
    (groups, total)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: bench_image DIR [ROUNDS] (scripts/bench-image writes DIR)");
    let rounds: usize = args.next().map_or(5, |r| r.parse().expect("ROUNDS"));
    let rules = Rules::embedded().unwrap().checks.image;
    let pairs = pairs(Path::new(&dir));
    assert!(!pairs.is_empty(), "{dir} holds no pairs");

    let (decode_groups, decode_total) = best(&pairs, rounds, |p| {
        let a = image::decode(&p.candidate, &rules).unwrap();
        let b = image::decode(&p.reference, &rules).unwrap();
        std::hint::black_box((a, b));
    });
    let mut failed = 0;
    let (check_groups, check_total) = best(&pairs, rounds, |p| {
        let a = image::decode(&p.candidate, &rules).unwrap();
        let b = image::decode(&p.reference, &rules).unwrap();
        let sim = image::measure(&a, &b, &rules);
        if image::apply_thresholds(&sim, &rules).is_fail() {
            failed += 1;
        }
        std::hint::black_box(serde_json::to_string(&sim).unwrap());
    });

    println!(
        "{} pairs, best of {rounds} rounds, one thread; {} failed verdicts in all rounds",
        pairs.len(),
        failed
    );
    println!(
        "{:<12} {:>6} {:>12} {:>12} {:>14}",
        "group", "pairs", "decode ms", "check ms", "check/decode"
    );
    for (g, d) in &decode_groups {
        let c = check_groups[g];
        let n = pairs.iter().filter(|p| &p.group == g).count();
        println!(
            "{:<12} {:>6} {:>12.2} {:>12.2} {:>14.2}",
            g,
            n,
            d.as_secs_f64() * 1e3 / n as f64,
            c.as_secs_f64() * 1e3 / n as f64,
            c.as_secs_f64() / d.as_secs_f64()
        );
    }
    let n = pairs.len() as f64;
    println!(
        "{:<12} {:>6} {:>12.2} {:>12.2} {:>14.2}",
        "all",
        pairs.len(),
        decode_total.as_secs_f64() * 1e3 / n,
        check_total.as_secs_f64() * 1e3 / n,
        check_total.as_secs_f64() / decode_total.as_secs_f64()
    );
    println!(
        "in-process check: {:.1} pairs/s; check / decode-alone ratio {:.2} (target <= 1.3)",
        n / check_total.as_secs_f64(),
        check_total.as_secs_f64() / decode_total.as_secs_f64()
    );
}

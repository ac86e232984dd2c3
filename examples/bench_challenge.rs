//! `scripts/bench-hash`'s second half: the model-file byte-range challenge
//! (`checks::model_file::answer_file`, what a reference host and a miner run) on a large
//! file in the page cache, each challenge a fresh nonce and the longest range the rules
//! allow (1 MiB). Prints the mean, p99 and worst time per challenge (target <= 1 ms).
//!
//!   cargo run --release --example bench_challenge -- FILE [CHALLENGES]

use std::time::{Duration, Instant};

use proctor::checks::model_file;
use proctor::rules::Rules;

fn main() {
    let mut args = std::env::args().skip(1);
    let file = args
        .next()
        .expect("usage: bench_challenge FILE [CHALLENGES]");
    let n: usize = args.next().map_or(1000, |c| c.parse().expect("CHALLENGES"));
    let mut rules = Rules::embedded().unwrap().checks.challenge;
    // Every range as long as the rules allow: the worst case.
    rules.min_len_bytes = rules.max_len_bytes;
    let path = std::path::Path::new(&file);
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let nonce = blake3::hash(&i.to_le_bytes()).to_hex();
            let start = Instant::now();
            let answer =
                model_file::answer_file(path, "model.safetensors", &nonce[..32], &rules).unwrap();
            let took = start.elapsed();
            assert_eq!(answer.range.length, rules.max_len_bytes);
            took
        })
        .collect();
    times.sort();
    let mean = times.iter().sum::<Duration>() / n as u32;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{n} challenges of {} KiB: mean {:.0} us, p99 {:.0} us, worst {:.0} us (target <= 1000 us)",
        rules.max_len_bytes / 1024,
        us(mean),
        us(times[n * 99 / 100]),
        us(times[n - 1])
    );
}

//! `scripts/bench-hash`'s second half: the model-file byte-range challenge
//! (`checks::model_file::answer_file`, what a reference host and a miner run) on a large
//! file in the page cache, each challenge a fresh nonce and the longest range the rules
//! allow (1 MiB). Prints the mean, p99 and worst time per challenge (target <= 1 ms),
//! beside the baseline of a fresh buffer read whole and then hashed, alternated with it.
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
    // The baseline, in the same run: the range read into a fresh buffer, then hashed
    // (what `answer_file` did until 2026-12-07). Alternated with proctor's, challenge by
    // challenge, so both see the same page cache and machine.
    let baseline = |nonce: &str| {
        use std::io::{Read, Seek};
        let s = model_file::seed(&hex::decode(nonce).unwrap(), "model.safetensors");
        let mut f = std::fs::File::open(path).unwrap();
        let size = f.metadata().unwrap().len();
        let range = model_file::derive_range(&s, size, &rules);
        f.seek(std::io::SeekFrom::Start(range.offset)).unwrap();
        let mut buf = vec![0u8; range.length as usize];
        f.read_exact(&mut buf).unwrap();
        model_file::answer(&s, &buf)
    };
    let mut times: Vec<Duration> = Vec::with_capacity(n);
    let mut base: Vec<Duration> = Vec::with_capacity(n);
    for i in 0..n {
        let nonce = blake3::hash(&i.to_le_bytes()).to_hex();
        let nonce = &nonce[..32];
        let start = Instant::now();
        let want = baseline(nonce);
        base.push(start.elapsed());
        let start = Instant::now();
        let answer = model_file::answer_file(path, "model.safetensors", nonce, &rules).unwrap();
        times.push(start.elapsed());
        assert_eq!(answer.range.length, rules.max_len_bytes);
        assert_eq!(answer.expected, want, "the two answers must agree");
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let summary = |times: &mut Vec<Duration>| {
        times.sort();
        let mean = times.iter().sum::<Duration>() / n as u32;
        format!(
            "mean {:.0} us, p99 {:.0} us, worst {:.0} us",
            us(mean),
            us(times[n * 99 / 100]),
            us(times[n - 1])
        )
    };
    println!(
        "{n} challenges of {} KiB (target p99 <= 1000 us)\n  proctor (answer_file, streamed): {}\n  baseline (a fresh buffer, then the hash): {}",
        rules.max_len_bytes / 1024,
        summary(&mut times),
        summary(&mut base)
    );
}

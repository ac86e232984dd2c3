//! Hostile job records: thousands of deterministic mutations of the demo's records (byte
//! flips, truncations, splices of extreme JSON values) go through the parser and, when
//! they still parse, through every check. Nothing may panic; a record either parses or
//! gets an error naming a field.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use proctor::audit;
use proctor::checks::{Checker, Stream, StreamState};
use proctor::record::JobRecord;
use proctor::rules::Rules;

/// Values a miner or a broken job service might put anywhere.
const SPLICES: [&str; 14] = [
    "1e309",
    "-1e309",
    "-0",
    "18446744073709551616",
    "-9223372036854775809",
    "\"NaN\"",
    "null",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "{}",
    "\"../../../etc/passwd\"",
    "\"0x0000000000000000000000000000000000000000-\u{202e}gpu\"",
    "4294967296",
];

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Xorshift, line: &[u8]) -> Vec<u8> {
    let mut bytes = line.to_vec();
    match rng.below(4) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
        }
        1 => bytes.truncate(rng.below(bytes.len())),
        _ => {
            // Replace the value after a random ':' with an extreme one.
            let colons: Vec<usize> = bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b':')
                .map(|(i, _)| i)
                .collect();
            if let Some(&at) = colons.get(rng.below(colons.len())) {
                let end = bytes[at + 1..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']'))
                    .map_or(bytes.len(), |p| at + 1 + p);
                let splice = SPLICES[rng.below(SPLICES.len())].as_bytes();
                bytes.splice(at + 1..end, splice.iter().copied());
            }
        }
    }
    bytes
}

#[test]
fn mutated_records_never_panic_the_parser_or_the_checks() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audit-demo");
    let lines: Vec<Vec<u8>> = std::fs::read(demo.join("jobs.jsonl"))
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let checker = Checker::new(Rules::embedded().unwrap()).unwrap();
    let mut stream = StreamState::new();
    let mut rng = Xorshift(0x5eed_1234_abcd_ef01);
    let (mut parsed, mut rejected, mut panics) = (0, 0, Vec::new());
    for i in 0..3000 {
        let line = &lines[i % lines.len()];
        let bytes = mutate(&mut rng, line);
        let outcome = catch_unwind(AssertUnwindSafe(|| match JobRecord::from_json(&bytes) {
            Ok(record) => {
                let fetched = audit::fetch(&demo, &record, checker.rules());
                checker.evaluate(&record, &fetched, Stream::Live(&mut stream));
                true
            }
            Err(e) => {
                // Every error names where the problem is.
                let msg = e.to_string();
                assert!(
                    [
                        "not valid JSON (",
                        "not a whole JSON object (",
                        "not a job record: ",
                        "field "
                    ]
                    .iter()
                    .any(|p| msg.starts_with(p)),
                    "{msg}"
                );
                false
            }
        }));
        match outcome {
            Ok(true) => parsed += 1,
            Ok(false) => rejected += 1,
            Err(_) => panics.push(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }
    assert!(
        panics.is_empty(),
        "{} inputs panicked, first: {}",
        panics.len(),
        panics[0]
    );
    // The mutations must exercise both paths for this test to mean anything.
    // Measured: about 230 of 3000 still parse (strict parsing rejects the rest).
    assert!(
        parsed >= 150 && rejected >= 1000,
        "parsed {parsed}, rejected {rejected}"
    );
}

#[test]
fn a_raw_prompt_the_miner_s_decoder_cannot_rebuild_is_inconclusive_never_a_failure() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audit-demo");
    let line = std::fs::read_to_string(demo.join("jobs.jsonl"))
        .unwrap()
        .lines()
        .find(|l| l.contains("\"llm-honest-a-0\""))
        .unwrap()
        .to_owned();
    let checker = Checker::new(Rules::embedded().unwrap()).unwrap();
    // A legacy miner decodes hermes-3-llama3.1-8b prompts as Llama-2 markup, which
    // these hold none of, and JSON no release can render; NUL bytes and a deep nest.
    let raw_prompts = [
        (
            "llm-v1.1.0",
            r#"[{"role":"user","content":"Hi"}]"#.to_owned(),
        ),
        (
            "llm-v1.2.0",
            r#"[{"role":"tool","content":"x"}]"#.to_owned(),
        ),
        ("llm-v1.2.0", "\u{0}\u{0}[INST]".to_owned()),
        (
            "llm-v1.2.0",
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
        ),
    ];
    for (version, raw) in raw_prompts {
        let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let input = v["input"].as_object_mut().unwrap();
        input.remove("messages");
        input.insert("raw_prompt".into(), raw.clone().into());
        v["metrics"]["miner_version"] = version.into();
        let record = JobRecord::from_json(v.to_string().as_bytes()).unwrap();
        let with_scores = audit::fetch(&demo, &record, checker.rules());
        assert!(with_scores.scores.is_some(), "the demo holds its scores");
        let without = proctor::checks::Fetched {
            scores: None,
            ..with_scores.clone()
        };
        for fetched in [with_scores, without] {
            let verdict =
                checker.evaluate(&record, &fetched, Stream::Live(&mut StreamState::new()));
            let rank = verdict
                .outcome(proctor::outcome::CheckId::LlmRank)
                .unwrap_or_else(|| panic!("{version} {raw:.40}: no llm_rank outcome"));
            assert_eq!(
                rank.status(),
                proctor::outcome::Status::Inconclusive,
                "{version} {raw:.40}: {rank:?}"
            );
            assert!(
                format!("{rank:?}").contains("miner"),
                "the reason names the miner's decoding: {rank:?}"
            );
            assert!(
                verdict.checks.iter().all(|c| !c.outcome.is_fail()),
                "{version} {raw:.40}: {:?}",
                verdict.checks
            );
        }
    }
}

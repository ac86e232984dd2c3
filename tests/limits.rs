//! Every input a miner controls has a documented limit (docs/THREATS.md, "Limits"),
//! enforced, and tested here at the limit and one unit past it. The token count's limit
//! is the fixture model's length, tested in `llm_scorer.rs`.

use std::io::Cursor;

use proctor::checks::image::{InvalidImage, decode};
use proctor::ids::{JobId, ModelId, ObjectKey};
use proctor::record::{
    self, Job, JobRecord, MAX_HARDWARE_BYTES, MAX_INLINE_TEXT_BYTES, MAX_JSON_DEPTH,
    MAX_MINER_VERSION_BYTES, MAX_RECORD_BYTES, MAX_STOP_WORD_BYTES, MAX_STOP_WORDS,
};
use proctor::rules::Rules;

/// The first record of the demo whose job id starts with `prefix`, as JSON.
fn demo(prefix: &str) -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/audit-demo/jobs.jsonl"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["job_id"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no demo job {prefix}*"))
}

fn parse(v: &serde_json::Value) -> Result<JobRecord, record::RecordError> {
    JobRecord::from_json(v.to_string().as_bytes())
}

#[test]
fn a_record_of_the_byte_limit_parses_and_one_byte_more_does_not() {
    let mut bytes = demo("sd-honest").to_string().into_bytes();
    // Whitespace after the object is valid JSON: it pads the record to the limit.
    bytes.resize(MAX_RECORD_BYTES, b' ');
    assert!(JobRecord::from_json(&bytes).is_ok());
    bytes.push(b' ');
    let e = JobRecord::from_json(&bytes).unwrap_err().to_string();
    assert!(e.contains("over the 4194304-byte limit"), "{e}");
}

#[test]
fn json_nested_to_the_depth_limit_parses_and_one_level_more_is_refused() {
    // The record's object is level 1 and `input` level 2: an unknown field of `input`
    // holding `n` nested arrays reaches level 2 + n.
    let nested = |levels: usize| {
        let text = demo("sd-honest").to_string();
        let n = levels - 2;
        let deep = format!("{}{}", "[".repeat(n), "]".repeat(n));
        text.replacen("\"input\":{", &format!("\"input\":{{\"deep\":{deep},"), 1)
    };
    // At the limit the parser reads it all, and the schema refuses the unknown field.
    let at = JobRecord::from_json(nested(MAX_JSON_DEPTH).as_bytes())
        .unwrap_err()
        .to_string();
    assert!(at.contains("deep") && !at.contains("recursion"), "{at}");
    let past = JobRecord::from_json(nested(MAX_JSON_DEPTH + 1).as_bytes())
        .unwrap_err()
        .to_string();
    assert!(past.contains("recursion limit exceeded"), "{past}");
    // Far past it: refused the same way, never a stack overflow.
    let far = JobRecord::from_json(nested(1_000_000).as_bytes())
        .unwrap_err()
        .to_string();
    assert!(far.contains("recursion limit exceeded"), "{far}");
}

#[test]
fn a_hardware_string_of_the_limit_parses_and_one_byte_more_does_not() {
    let mut v = demo("sd-honest");
    // Multi-byte characters: the limit is in bytes, not characters.
    let at = "é".repeat(MAX_HARDWARE_BYTES / 2);
    assert_eq!(at.len(), MAX_HARDWARE_BYTES);
    v["metrics"]["hardware"] = at.clone().into();
    let r = parse(&v).unwrap();
    assert_eq!(r.metrics.hardware, at);
    v["metrics"]["hardware"] = format!("{at}x").into();
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.contains("metrics.hardware"), "{e}");
}

#[test]
fn a_miner_version_of_the_limit_parses_and_one_byte_more_does_not() {
    let mut v = demo("sd-honest");
    v["metrics"]["miner_version"] = "9".repeat(MAX_MINER_VERSION_BYTES).into();
    assert!(parse(&v).is_ok());
    v["metrics"]["miner_version"] = "9".repeat(MAX_MINER_VERSION_BYTES + 1).into();
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.contains("metrics.miner_version"), "{e}");
}

#[test]
fn stop_words_of_the_limits_parse_and_one_more_or_one_byte_more_do_not() {
    let mut v = demo("llm-honest");
    v["input"]["stop"] = vec!["s".repeat(MAX_STOP_WORD_BYTES); MAX_STOP_WORDS].into();
    assert!(parse(&v).is_ok());
    v["input"]["stop"] = vec!["s"; MAX_STOP_WORDS + 1].into();
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.contains("input.stop"), "{e}");
    // Bytes, not characters: a 2-byte character past 64 bytes is refused.
    v["input"]["stop"] = vec!["é".repeat(MAX_STOP_WORD_BYTES / 2 + 1)].into();
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.contains("input.stop"), "{e}");
}

#[test]
fn ids_and_object_keys_of_the_limit_parse_and_one_byte_more_do_not() {
    assert!(JobId::parse(&"j".repeat(128)).is_ok());
    assert!(JobId::parse(&"j".repeat(129)).is_err());
    assert!(ModelId::parse(&"m".repeat(128)).is_ok());
    assert!(ModelId::parse(&"m".repeat(129)).is_err());
    let key = |n: usize| format!("jobs/{}", "k".repeat(n - 5));
    assert!(ObjectKey::parse(&key(1024)).is_ok());
    assert!(ObjectKey::parse(&key(1025)).is_err());
    // And in a record: the job id names the field.
    let mut v = demo("sd-honest");
    v["job_id"] = "j".repeat(129).into();
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.contains("job_id"), "{e}");
}

#[test]
fn inline_text_of_the_parsers_limit_parses_and_one_byte_more_does_not() {
    let mut v = demo("llm-honest");
    v["output"] = serde_json::json!({"text": "a".repeat(MAX_INLINE_TEXT_BYTES)});
    assert!(parse(&v).is_ok());
    v["output"] = serde_json::json!({"text": "a".repeat(MAX_INLINE_TEXT_BYTES + 1)});
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.contains("output.text"), "{e}");
}

#[test]
fn text_of_the_rules_limit_is_judged_and_one_byte_more_is_invalid() {
    let rules = Rules::embedded().unwrap();
    let limit = rules.checks.llm.max_text_bytes as usize;
    let mut v = demo("llm-honest");
    let output = |v: &serde_json::Value| match parse(v).unwrap().job {
        Job::Llm { output, .. } => output,
        Job::Sd { .. } => unreachable!(),
    };
    v["output"] = serde_json::json!({"text": "a".repeat(limit)});
    let at = proctor::checks::output_text(&output(&v), None, &rules.checks.llm);
    assert_eq!(at.map(|t| t.len()).ok(), Some(limit));
    v["output"] = serde_json::json!({"text": "a".repeat(limit + 1)});
    let past = proctor::checks::output_text(&output(&v), None, &rules.checks.llm).unwrap_err();
    let proctor::outcome::Outcome::Fail { evidence } = &past else {
        panic!("{past:?}")
    };
    assert!(
        evidence
            .summary
            .contains(&format!("over the {limit}-byte limit")),
        "{}",
        evidence.summary
    );
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::GrayImage::from_pixel(width, height, image::Luma([128]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn an_image_of_the_byte_limit_decodes_and_one_byte_more_is_refused() {
    let rules = Rules::embedded().unwrap().checks.image;
    let limit = rules.max_object_bytes as usize;
    let mut bytes = png(64, 64);
    // Bytes after the PNG's end are ignored by its decoder, never by the size check.
    bytes.resize(limit, 0);
    assert!(decode(&bytes, &rules).is_ok());
    bytes.push(0);
    assert!(matches!(
        decode(&bytes, &rules),
        Err(InvalidImage::TooLarge { size_bytes, limit_bytes }) if size_bytes == limit as u64 + 1 && limit_bytes == limit as u64
    ));
}

#[test]
fn an_image_of_the_side_limit_decodes_and_one_pixel_more_is_refused() {
    let rules = Rules::embedded().unwrap().checks.image;
    let side = rules.max_decoded_side;
    assert!(decode(&png(side, 1), &rules).is_ok());
    assert!(decode(&png(1, side), &rules).is_ok());
    for (w, h) in [(side + 1, 1), (1, side + 1)] {
        assert!(
            matches!(decode(&png(w, h), &rules), Err(InvalidImage::OverLimits(_))),
            "{w}x{h}"
        );
    }
}

#[test]
fn an_image_that_fits_the_memory_limit_decodes_and_one_row_more_is_refused() {
    let mut rules = Rules::embedded().unwrap().checks.image;
    // A small allocation limit, so that the test's images stay small: a 1-byte-per-pixel
    // image of `limit` pixels fits it, one more row does not.
    rules.max_decode_alloc_bytes = 256 * 256;
    assert!(decode(&png(256, 256), &rules).is_ok());
    assert!(matches!(
        decode(&png(256, 257), &rules),
        Err(InvalidImage::OverLimits(_))
    ));
}

#[test]
fn a_miner_suffix_of_the_limit_parses_and_one_byte_more_does_not() {
    use proctor::ids::{MAX_MINER_SUFFIX_BYTES, MinerId};
    let address = "0x325e2af24e4cf14f2e48f5f3e8690ff2ac50dfb8";
    let at = format!("{address}-{}", "g".repeat(MAX_MINER_SUFFIX_BYTES));
    assert!(MinerId::parse(&at).is_ok());
    let past = format!("{address}-{}", "g".repeat(MAX_MINER_SUFFIX_BYTES + 1));
    let e = MinerId::parse(&past).unwrap_err().to_string();
    // The error names the value without repeating all of it.
    assert!(
        e.len() < 400 && e.contains(&format!("({} bytes)", past.len())),
        "{e}"
    );
    let mut v = demo("sd-honest");
    v["miner_id"] = past.into();
    assert!(parse(&v).unwrap_err().to_string().contains("miner_id"));
}

#[test]
fn an_error_about_an_oversized_value_stays_small() {
    // A job id of a megabyte: refused, and the refusal (a dead letter's header, a log
    // line) quotes only its start.
    let mut v = demo("sd-honest");
    v["job_id"] = "j".repeat(1 << 20).into();
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.len() < 400, "{} bytes", e.len());
    // An unknown field's name is quoted by the parser in full: the dead letter cuts it.
    let mut text = demo("sd-honest").to_string();
    text.insert_str(1, &format!("\"{}\":1,", "k".repeat(1 << 20)));
    let e = JobRecord::from_json(text.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.len() > 1 << 20);
    assert!(proctor::kafka::dlq_error(&e).len() <= proctor::kafka::MAX_DLQ_ERROR_BYTES);
}

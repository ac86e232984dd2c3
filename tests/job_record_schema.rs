//! docs/job-record.schema.json and the parser agree: every documented example is valid
//! for both, and each kind of invalid record is refused by both.

use std::path::Path;

use proctor::record::JobRecord;
use serde_json::{Value, json};

fn docs(rel: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs").join(rel);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&docs("job-record.schema.json")).unwrap()
}

const EXAMPLES: [&str; 4] = [
    "job-record-sd.json",
    "job-record-llm.json",
    "job-record-llm-text-key.json",
    "job-record-llm-miner.json",
];

#[test]
fn the_documented_examples_are_valid_for_schema_and_parser() {
    let v = validator();
    for ex in EXAMPLES {
        let record = docs(&format!("examples/{ex}"));
        assert!(
            v.is_valid(&record),
            "{ex}: {:?}",
            v.iter_errors(&record)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
        JobRecord::from_json(record.to_string().as_bytes()).unwrap_or_else(|e| panic!("{ex}: {e}"));
    }
}

#[test]
fn schema_and_parser_refuse_the_same_broken_records() {
    let v = validator();
    let sd = docs("examples/job-record-sd.json");
    let llm = docs("examples/job-record-llm.json");
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut with = |name: &'static str, base: &Value, f: &dyn Fn(&mut Value)| {
        let mut r = base.clone();
        f(&mut r);
        cases.push((name, r));
    };
    with("unknown top-level field", &sd, &|r| r["extra"] = json!(1));
    with("unknown input field", &sd, &|r| {
        r["input"]["sampler"] = json!("euler")
    });
    with("unknown kind", &sd, &|r| r["kind"] = json!("video"));
    with("bad miner id", &sd, &|r| r["miner_id"] = json!("0x1234"));
    with("job id with a slash", &sd, &|r| r["job_id"] = json!("a/b"));
    with("zero width", &sd, &|r| r["input"]["width"] = json!(0));
    with("seed below -1", &sd, &|r| r["input"]["seed"] = json!(-2));
    with("key escaping its folder", &sd, &|r| {
        r["output"]["image_key"] = json!("../x.png")
    });
    with("missing metrics field", &sd, &|r| {
        r["metrics"].as_object_mut().unwrap().remove("hardware");
    });
    with("llm input on an sd record", &sd, &|r| {
        r["input"] = llm["input"].clone()
    });
    with("both prompt and messages", &llm, &|r| {
        r["input"]["prompt"] = json!("x")
    });
    with("both prompt and raw_prompt", &llm, &|r| {
        r["input"].as_object_mut().unwrap().remove("messages");
        r["input"]["raw_prompt"] = json!("[]");
        r["input"]["prompt"] = json!("x")
    });
    with("neither prompt nor a chat", &llm, &|r| {
        r["input"].as_object_mut().unwrap().remove("messages");
    });
    with("too many stop words", &llm, &|r| {
        r["input"]["stop"] = json!(vec!["x"; 17])
    });
    with("an empty stop word", &llm, &|r| {
        r["input"]["stop"] = json!([""])
    });
    with("a stop word over 64 bytes", &llm, &|r| {
        r["input"]["stop"] = json!(["x".repeat(65)])
    });
    with("use_stream not a boolean", &llm, &|r| {
        r["input"]["use_stream"] = json!("yes")
    });
    with("neither text nor text_key", &llm, &|r| {
        r["output"] = json!({})
    });
    with("temperature above 2", &llm, &|r| {
        r["input"]["temperature"] = json!(2.5)
    });
    with("positive logprob", &llm, &|r| {
        r["output"]["logprobs"] = json!([0.5])
    });
    with("non-hex nonce", &sd, &|r| {
        r["challenge"]["nonce"] = json!("xyz")
    });
    for (name, record) in cases {
        assert!(!v.is_valid(&record), "schema accepts: {name}");
        assert!(
            JobRecord::from_json(record.to_string().as_bytes()).is_err(),
            "parser accepts: {name}"
        );
    }
}

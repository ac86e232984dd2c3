//! Job-record parsing: any bytes a job service (and through it a miner) can put on the
//! jobs topic. Never a panic; a record that parses is written back as JSON that parses
//! to the same record, and the screen stage's checks judge it without a panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use proctor::checks::{Checker, Fetched, Stream, StreamState};
use proctor::record::JobRecord;
use proctor::rules::Rules;

static CHECKER: LazyLock<Checker> =
    LazyLock::new(|| Checker::new(Rules::embedded().expect("the shipped rules")).unwrap());

fuzz_target!(|data: &[u8]| {
    let Ok(record) = JobRecord::from_json(data) else {
        return;
    };
    let json = serde_json::to_vec(&record.to_json()).expect("a record serializes");
    let again = JobRecord::from_json(&json).expect("a record's own JSON parses");
    assert_eq!(again, record, "the JSON round trip changes nothing");
    // The checks on the record alone (no object fetched, no reference).
    let mut stream = StreamState::new();
    let _ = CHECKER.evaluate(&record, &Fetched::default(), Stream::Live(&mut stream));
});

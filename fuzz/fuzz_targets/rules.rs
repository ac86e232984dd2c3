//! Rules parsing: the text of one rules file (the first byte picks which), loaded with
//! the other five shipped files. A rules change is reviewed, but a typo must be an
//! error that names its file, never a panic or a rule set that loads and misbehaves: a
//! set that loads has a digest and checks a job without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proctor::rules::{RULE_FILES, Rules};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let file = RULE_FILES[pick as usize % RULE_FILES.len()];
    match Rules::embedded_with(file, text) {
        Ok(rules) => {
            rules.digest().expect("loaded rules have a digest");
            let _ = rules.broken_promises();
            let _ = rules.auto_slash_threshold();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

//! Rules whose measured rates cover every model: what an operator's calibration on the
//! network's own models would give.
//!
//! The shipped rates were measured on stand-ins (photographs, SmolLM2-135M), so with
//! the shipped rules every failure on the demo's network models only flags
//! (docs/DETECTION.md, "Where a rate holds"). Tests of what a slash does need rates
//! that hold where the demo's jobs are; these keep every number and widen only where
//! it holds.

#![allow(dead_code)]

use std::path::Path;

use proctor::rules::Rules;

/// `rules` with every measurement's `models` set to every model.
pub fn calibrated_everywhere(mut rules: Rules) -> Rules {
    for p in rules.checks.policy.values_mut() {
        if let Some(m) = &mut p.measured {
            m.models = vec!["*".into()];
        }
    }
    rules
}

/// [`calibrated_everywhere`] for a rules folder's `checks.toml` text, for workers run
/// as child processes: each `measured` table's `models` becomes `["*"]`.
pub fn calibrated_everywhere_toml(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        match line.find(", models = [") {
            Some(at) if line.starts_with("measured = {") => {
                out.push_str(&line[..at]);
                out.push_str(", models = [\"*\"] }");
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A copy of the shipped rules folder with [`calibrated_everywhere_toml`] applied, for
/// `--rules`.
pub fn calibrated_everywhere_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap() {
        let f = f.unwrap().path();
        let mut text = std::fs::read_to_string(&f).unwrap();
        if f.file_name().unwrap() == "checks.toml" {
            text = calibrated_everywhere_toml(&text);
        }
        std::fs::write(dir.path().join(f.file_name().unwrap()), text).unwrap();
    }
    assert_calibrated_everywhere(dir.path());
    dir
}

/// Checks that the folder's rules cover every model, as [`calibrated_everywhere`] does.
pub fn assert_calibrated_everywhere(dir: &Path) {
    let rules = Rules::load_dir(dir).unwrap();
    for (id, p) in &rules.checks.policy {
        if let Some(m) = &p.measured {
            assert_eq!(m.models, ["*"], "{id}");
        }
    }
}

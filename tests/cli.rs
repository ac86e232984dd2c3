//! The `proctor` binary's smaller commands against the tools they must agree with.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/scope.rs"]
mod scope;

fn proctor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proctor"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sample_files(dir: &Path) -> Vec<PathBuf> {
    let files = [
        ("empty", Vec::new()),
        ("small.txt", b"abc".to_vec()),
        (
            "with space.bin",
            (0..200_000u32).map(|i| (i % 251) as u8).collect(),
        ),
        (
            "big.bin",
            (0..5_000_000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
                .collect(),
        ),
        ("back\\slash", b"escaped names".to_vec()),
    ];
    files
        .into_iter()
        .map(|(n, bytes)| {
            let p = dir.join(n);
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect()
}

/// b3sum, as installed by scripts/install-tools.sh (or found on PATH).
fn b3sum() -> PathBuf {
    if let Ok(p) = std::env::var("PROCTOR_B3SUM") {
        return PathBuf::from(p);
    }
    let cached = dirs_home().join(".cache/proctor/b3sum-1.8.7/bin/b3sum");
    if cached.is_file() {
        return cached;
    }
    let on_path = Command::new("b3sum").arg("--version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "b3sum not found: run scripts/install-tools.sh (or set PROCTOR_B3SUM)"
    );
    PathBuf::from("b3sum")
}

fn dirs_home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
}

fn reference_lines(tool: &Path, dir: &Path, files: &[PathBuf]) -> String {
    let names: Vec<&str> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .collect();
    let o = Command::new(tool)
        .args(&names)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}: {}",
        tool.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

fn proctor_lines(dir: &Path, files: &[PathBuf], sha: bool) -> String {
    let names: Vec<&str> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_proctor"));
    cmd.arg("hash");
    if sha {
        cmd.arg("--sha256");
    }
    let o = cmd.args(&names).current_dir(dir).output().unwrap();
    assert!(o.status.success());
    stdout(&o)
}

#[test]
fn hash_agrees_with_b3sum() {
    let dir = tempfile::tempdir().unwrap();
    let files = sample_files(dir.path());
    let want = reference_lines(&b3sum(), dir.path(), &files);
    assert_eq!(proctor_lines(dir.path(), &files, false), want);
    assert!(
        want.lines().any(|l| l.starts_with('\\')),
        "no escaped line was compared"
    );
}

#[test]
fn hash_sha256_agrees_with_sha256sum() {
    let dir = tempfile::tempdir().unwrap();
    let files = sample_files(dir.path());
    let want = reference_lines(Path::new("sha256sum"), dir.path(), &files);
    assert_eq!(proctor_lines(dir.path(), &files, true), want);
}

#[test]
fn hash_of_a_missing_file_fails_but_hashes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a");
    std::fs::write(&f, b"x").unwrap();
    let o = proctor(&["hash", f.to_str().unwrap(), "/nonexistent/file"]);
    assert!(!o.status.success());
    assert_eq!(stdout(&o).lines().count(), 1);
}

#[test]
fn rules_check_passes_on_the_shipped_rules() {
    let o = proctor(&["rules", "check"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(
        out.contains("sdxl") && out.contains("deters") && !out.contains("CHEATING PAYS"),
        "{out}"
    );
    // Each check's effect floor, the share of failures below which it cannot slash.
    let rules = proctor::rules::Rules::embedded().unwrap();
    let floor = rules
        .policy(proctor::outcome::CheckId::ImageSimilarity)
        .effect_floor(rules.slashing.effect_margin);
    let row = out
        .lines()
        .find(|l| l.starts_with("image_similarity "))
        .unwrap_or_else(|| panic!("no image_similarity row: {out}"));
    // Measured on photographs, no model's outputs: it slashes nowhere, and says so.
    assert!(
        row.contains(&format!("{:.1}%", 100.0 * floor))
            && row.ends_with("no (its sample was no model's: flag only)"),
        "{row}"
    );
    // The tail margin a slash's tail is priced at.
    assert!(
        out.contains(&format!(
            "tail computed at {} times the rate",
            rules.slashing.tail_margin
        )),
        "{out}"
    );
    let row = out.lines().find(|l| l.starts_with("llm_suspect ")).unwrap();
    assert!(
        row.ends_with("on smollm2-135m-instruct (not a network model)"),
        "{row}"
    );
    // Per model category, the checks that can slash there: latency's published runs
    // cover SDXL; nothing covers the API-served LLMs.
    let category = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name) && !l.contains("deters"))
            .unwrap_or_else(|| panic!("no {name} row: {out}"))
            .to_owned()
    };
    assert!(category("sdxl").ends_with("latency"), "{out}");
    assert!(
        category("llm").ends_with("none: every failure is for review"),
        "{out}"
    );
}

#[test]
fn rules_check_prints_what_verification_costs_in_reference_gpus() {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "[reference.demand_per_hour]\nsdxl = 36000\n").unwrap();
    let o = proctor(&["rules", "check", "--settings", f.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    let table = out
        .split("what verification costs on the reference GPU")
        .nth(1)
        .unwrap_or_else(|| panic!("no cost table: {out}"));
    let row = |cat: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(cat))
            .unwrap_or_else(|| panic!("no {cat} cost row: {table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // sdxl: "sdxl 680x1024, 25 steps <GPU-s> 36000 <@2%> <@5%> <@20%> <@100%> ...".
    let sdxl = row("sdxl");
    let num = |i: usize| sdxl[i].parse::<f64>().unwrap();
    let seconds = num(4);
    assert_eq!(sdxl[5], "36000");
    // 36,000 jobs an hour is ten jobs a second: at 100 % that is ten times the
    // GPU-seconds of one job in GPUs, at 5 % a twentieth of that.
    assert!((num(9) - 10.0 * seconds).abs() < 0.01, "{sdxl:?}");
    assert!((num(7) - 0.5 * seconds).abs() < 0.01, "{sdxl:?}");
    // A category without a demand is priced per 1,000 jobs an hour.
    assert!(row("sd15").join(" ").contains("1,000 (per)"));
    assert!(row("llama3_8b").join(" ").contains("assumed"));
}

#[test]
fn rules_check_tells_whether_deterrence_holds_at_the_reference_capacity() {
    let settings = |concurrency: u32| {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            f.path(),
            format!(
                r#"
[[reference.hosts]]
name = "sd-1"
kind = "txt2img"
url = "http://gpu-1:7860"
models = ["sd15"]
concurrency = {concurrency}
queue = 64
timeout_secs = 120
seconds_per_job = 6.0
[reference.demand_per_hour]
sd15 = 100000.0
"#
            ),
        )
        .unwrap();
        f
    };
    // 5,000 re-runs wanted an hour; 10 slots of 6 s give 6,000.
    let enough = settings(10);
    let o = proctor(&[
        "rules",
        "check",
        "--settings",
        enough.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("reference capacity of the settings"), "{out}");
    assert!(out.contains("100%"), "{out}");
    // One slot gives 600 an hour: 12 % of the floor is no deterrent.
    let scarce = settings(1);
    let o = proctor(&[
        "rules",
        "check",
        "--settings",
        scarce.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains("12%") && out.contains("CHEATING PAYS"),
        "{out}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("sd15"));
}

/// A copy of the shipped rules with one text replacement applied.
fn rules_with(file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let target = dir.path().join(file);
    let text = std::fs::read_to_string(&target).unwrap();
    let changed = text.replace(from, to);
    assert_ne!(text, changed, "{from:?} not found in {file}");
    std::fs::write(target, changed).unwrap();
    dir
}

#[test]
fn rules_check_fails_when_cheating_pays() {
    let dir = rules_with(
        "slashing.toml",
        "scope = \"miner_window\"",
        "scope = \"failed_jobs\"",
    );
    let o = proctor(&["rules", "check", "--rules", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sdxl") && err.contains("profitable"), "{err}");
    assert!(
        !err.contains("flux"),
        "a disabled category cannot pay: {err}"
    );
}

#[test]
fn rules_check_names_the_file_of_an_invalid_rule() {
    let dir = rules_with("gpus.toml", "vram_gb = 24\n", "vram_gb = 24\nvram_mb = 1\n");
    let o = proctor(&["rules", "check", "--rules", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("gpus.toml") && err.contains("vram_mb"),
        "{err}"
    );
}

fn demo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/audit-demo")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

/// The JSON report of `image-diff`; its exit code says the verdict (0 pass, 1 fail or
/// invalid).
fn image_diff(a: &str, b: &str) -> serde_json::Value {
    let o = proctor(&["image-diff", &demo(a), &demo(b)]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    let want = if report["verdict"] == "pass" { 0 } else { 1 };
    assert_eq!(o.status.code(), Some(want), "{report}");
    report
}

#[test]
fn image_diff_gives_pass_fail_and_invalid() {
    let honest = image_diff(
        "objects/jobs/sd-honest-a-1.jpg",
        "reference/sd-honest-a-1/image.jpg",
    );
    assert_eq!(honest["verdict"], "pass", "{honest}");
    for key in ["phash_distance", "dhash_distance", "ssim", "detail_ratio"] {
        assert!(honest[key].is_number(), "{key} missing: {honest}");
    }
    let blur = image_diff(
        "objects/jobs/sd-blur-0.jpg",
        "reference/sd-blur-0/image.jpg",
    );
    assert_eq!(blur["verdict"], "fail", "{blur}");
    let bomb = image_diff(
        "objects/jobs/sd-bomb-0.png",
        "reference/sd-blur-0/image.jpg",
    );
    assert_eq!(bomb["verdict"], "invalid", "{bomb}");
    assert_eq!(bomb["invalid"], "candidate");
}

#[test]
fn challenge_answers_match_the_reference_host() {
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(demo("reference/sd-honest-b-0/challenge.json")).unwrap(),
    )
    .unwrap();
    // The CLI answers from a file; the demo's file is synthetic, so rebuild the same
    // bytes here the way the generator does.
    let mut bytes = vec![0u8; 3 << 20];
    blake3::Hasher::new_derive_key("proctor demo model file")
        .update(expected["file"].as_str().unwrap().as_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let o = proctor(&[
        "challenge",
        path.to_str().unwrap(),
        "--name",
        expected["file"].as_str().unwrap(),
        "--nonce",
        expected["nonce"].as_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got["expected"], expected["expected"]);
    assert_eq!(got["range"], expected["range"]);
}

const DEMO_SIGNING_KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";

/// `proctor public-key`, the seed on standard input.
fn public_key(seed: &str) -> String {
    let o = proctor_with_stdin(&["public-key", "--signing-key-file", "-"], seed);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    stdout(&o).trim().to_owned()
}

fn proctor_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_proctor"))
        .args(args)
        .env_remove("PROCTOR_SECRETS__SIGNING_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// A secret file only its owner reads.
fn secret_file(dir: &Path, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("secret");
    std::fs::write(&p, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

#[test]
fn secrets_come_from_a_file_stdin_or_the_environment_never_an_argument() {
    // The key as an argument is not an option any more: a usage error, before
    // anything reads it.
    let o = proctor(&["public-key", "--signing-key", DEMO_SIGNING_KEY]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let want = public_key(DEMO_SIGNING_KEY);
    assert_eq!(want.len(), 64, "{want}");
    // From a file, from the environment; the same key.
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), DEMO_SIGNING_KEY);
    let o = proctor(&["public-key", "--signing-key-file", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o).trim(), want);
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_proctor"))
        .args(["public-key"])
        .env("PROCTOR_SECRETS__SIGNING_KEY", DEMO_SIGNING_KEY)
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), want);
    // A file others may read still works, and says so.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let o = proctor(&["public-key", "--signing-key-file", file.to_str().unwrap()]);
    assert_eq!(stdout(&o).trim(), want);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("readable by other users"), "{err}");
    // Neither: a clear error naming both ways. An empty secret is refused.
    let o = proctor_with_stdin(&["public-key"], "");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--signing-key-file") && err.contains("PROCTOR_SECRETS__SIGNING_KEY"),
        "{err}"
    );
    let o = proctor_with_stdin(&["public-key", "--signing-key-file", "-"], "\n");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("empty"));
    // The review token the same way: as an argument, a usage error.
    let o = proctor(&["review", "--token", "x", "list"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
}

fn verify_event(file: &Path, public_key: &str) -> Output {
    proctor(&[
        "verify-event",
        file.to_str().unwrap(),
        "--public-key",
        public_key,
    ])
}

/// `verify-event` trusting a reversal key as well.
fn verify_events(file: &Path, public_key: &str, reversal_public_key: &str) -> Output {
    proctor(&[
        "verify-event",
        file.to_str().unwrap(),
        "--public-key",
        public_key,
        "--reversal-public-key",
        reversal_public_key,
    ])
}

/// The demo audited with the demo signing key, into a fresh folder, under rules whose
/// rates hold on the demo's models (so that it slashes).
fn signed_audit() -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let rules = scope::calibrated_everywhere_dir();
    let key_dir = tempfile::tempdir().unwrap();
    let key = secret_file(key_dir.path(), DEMO_SIGNING_KEY);
    let o = proctor(&[
        "audit",
        &demo(""),
        "--rules",
        rules.path().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--signing-key-file",
        key.to_str().unwrap(),
    ]);
    // The demo's findings: exit 1.
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn audit_events_are_signed_and_verify_event_checks_them() {
    let out = signed_audit();
    let events = out.path().join("events.jsonl");
    let text = std::fs::read_to_string(&events).unwrap();
    let slashes = std::fs::read_to_string(out.path().join("slashes.jsonl")).unwrap();
    assert_eq!(text.lines().count(), slashes.lines().count());
    assert!(text.lines().count() >= 4);

    let trusted = public_key(DEMO_SIGNING_KEY);
    let ok = verify_event(&events, &trusted);
    assert!(ok.status.success(), "{}", stdout(&ok));
    assert!(stdout(&ok).contains(" 0 invalid"), "{}", stdout(&ok));

    let other = public_key(&"17".repeat(32));
    let wrong = verify_event(&events, &other);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stdout(&wrong).contains("not the trusted key"),
        "{}",
        stdout(&wrong)
    );

    // Raise one slash amount inside a signed payload.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut env: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let mut payload: serde_json::Value =
        serde_json::from_str(env["payload"].as_str().unwrap()).unwrap();
    payload["amount"]["waifu_micro"] = serde_json::json!(1_000_000_000_000_000i64);
    env["payload"] = serde_json::Value::String(payload.to_string());
    lines[0] = env.to_string();
    let tampered = out.path().join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n")).unwrap();
    let bad = verify_event(&tampered, &trusted);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stdout(&bad).contains("line 1: INVALID: the signature does not verify"),
        "{}",
        stdout(&bad)
    );

    // Reversals, validly signed with the reversal key, under the ledger's rule: of a
    // slash seen before, by its payload hash, once, for no more than it took.
    let key = proctor::events::signing_key_from_hex(DEMO_SIGNING_KEY).unwrap();
    let reversal_key = ed25519_dalek::SigningKey::from_bytes(&[43; 32]);
    let reversal_trusted = hex::encode(reversal_key.verifying_key().as_bytes());
    let first = text.lines().next().unwrap();
    let (slash, sha) =
        proctor::events::verify_slash(first.as_bytes(), &key.verifying_key()).unwrap();
    let reversal_by = |key: &ed25519_dalek::SigningKey,
                       edit: &dyn Fn(&mut proctor::events::ReversalEvent)| {
        let mut r = proctor::events::ReversalEvent {
            event_version: proctor::events::REVERSAL_EVENT_VERSION,
            event_type: proctor::events::REVERSAL_EVENT_TYPE.into(),
            slash_id: slash.slash_id.clone(),
            slash_payload_sha256: sha.clone(),
            miner_id: slash.miner_id.clone(),
            wallet: slash.wallet.clone(),
            amount: slash.amount,
            appeal_id: 1,
            reversed_by: "cat".into(),
            reason: "appeal upheld".into(),
            reversed_at: chrono::DateTime::UNIX_EPOCH,
        };
        edit(&mut r);
        serde_json::to_string(&proctor::events::sign_reversal(&r, key).unwrap()).unwrap()
    };
    let reversal =
        |edit: &dyn Fn(&mut proctor::events::ReversalEvent)| reversal_by(&reversal_key, edit);
    let good = reversal(&|_| {});
    let file = out.path().join("reversals.jsonl");
    let run = |lines: &[&str]| {
        std::fs::write(&file, lines.join("\n")).unwrap();
        let o = verify_events(&file, &trusted, &reversal_trusted);
        (o.status.code(), stdout(&o))
    };
    let (code, said) = run(&[first, &good]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("line 2: valid: reversal of slash"), "{said}");
    // Without the reversal key a ledger takes no reversal; the slash key signs none.
    std::fs::write(&file, [first, good.as_str()].join("\n")).unwrap();
    let o = verify_event(&file, &trusted);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("line 2: INVALID: signed by"),
        "{}",
        stdout(&o)
    );
    let by_slash_key = reversal_by(&key, &|_| {});
    let (code, said) = run(&[first, &by_slash_key]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("line 2: INVALID"), "{said}");
    // One key for both kinds is refused outright.
    let o = verify_events(&file, &trusted, &trusted);
    assert!(!o.status.success());
    let more = reversal(&|r| r.amount.waifu_micro += 1);
    let other_event = reversal(&|r| r.slash_payload_sha256 = "0".repeat(64));
    for (lines, want) in [
        (vec![good.as_str()], "which this ledger has not applied"),
        (
            vec![good.as_str(), first],
            "which this ledger has not applied",
        ),
        (vec![first, more.as_str()], "more than the slash took"),
        (vec![first, other_event.as_str()], "payload hash is 0000"),
        (vec![first, good.as_str(), good.as_str()], "reversed twice"),
    ] {
        let (code, said) = run(&lines);
        assert_eq!(code, Some(1), "{said}");
        assert!(said.contains(want), "{want}: {said}");
    }
}

#[test]
fn signed_events_match_their_documented_schemas() {
    let out = signed_audit();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let schema = |n: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(docs.join(n)).unwrap()).unwrap()
    };
    let envelope = jsonschema::validator_for(&schema("signed-event.schema.json")).unwrap();
    let payload = jsonschema::validator_for(&schema("slash-event.schema.json")).unwrap();
    let events = std::fs::read_to_string(out.path().join("events.jsonl")).unwrap();
    assert!(events.lines().count() >= 4, "the demo's slashes: {events}");
    for line in events.lines() {
        let env: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(envelope.is_valid(&env), "{env}");
        let p: serde_json::Value = serde_json::from_str(env["payload"].as_str().unwrap()).unwrap();
        let errors: Vec<String> = payload.iter_errors(&p).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
}

#[test]
fn settings_layer_the_environment_and_hide_secrets() {
    let o = Command::new(env!("CARGO_BIN_EXE_proctor"))
        .arg("settings")
        .env("PROCTOR_KAFKA__BROKERS", "127.0.0.1:19092")
        .env("PROCTOR_S3__SECRET_ACCESS_KEY", "very-secret-value")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("brokers = \"127.0.0.1:19092\""), "{out}");
    assert!(!out.contains("very-secret-value"), "{out}");
    assert!(
        out.parse::<toml::Table>().is_ok(),
        "proctor settings prints TOML: {out}"
    );
    let typo = Command::new(env!("CARGO_BIN_EXE_proctor"))
        .arg("settings")
        .env("PROCTOR_KAFKA__BROKER", "x")
        .output()
        .unwrap();
    assert_eq!(
        typo.status.code(),
        Some(3),
        "a runtime error, not a usage error"
    );
    assert!(String::from_utf8_lossy(&typo.stderr).contains("PROCTOR_KAFKA__BROKER"));
}

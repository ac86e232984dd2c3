//! The model registry against the network's public model list
//! (fixtures/heurist-models, a copy of heurist-network/heurist-models), and model-file
//! verification on a real file against a registry entry.

use std::path::{Path, PathBuf};
use std::process::Command;

use proctor::rules::Rules;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn list(file: &str) -> Vec<Value> {
    let path = root().join("fixtures/heurist-models").join(file);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn basename(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

#[test]
fn every_checkpoint_and_lora_of_the_networks_list_is_registered_with_its_sha256() {
    let rules = Rules::embedded().unwrap();
    let loras: Vec<Value> = list("lora.json")
        .into_iter()
        .chain(list("lora-new.json"))
        .collect();
    let mut checked = 0;
    for entry in list("models.json")
        .into_iter()
        .chain(list("models-new.json"))
    {
        let name = entry["name"].as_str().unwrap();
        let kind = entry["type"].as_str().unwrap();
        let model = rules
            .model(name)
            .unwrap_or_else(|| panic!("{name} ({kind}) is not in rules/models.toml"));
        let category = match kind {
            "sd15" => "sd15",
            "sdxl10" => "sdxl",
            "composite15" => "sd15_lora",
            "compositexl" => "sdxl_lora",
            "flux-dev" | "flux-dev-lora" => "flux",
            "llm8b" | "llm8b16b" => "llama3_8b",
            "llm8x7b4b" => "mixtral_8x7b_gptq",
            other => {
                // Known but unpriced: the list's type is the category.
                let c = rules
                    .category(other)
                    .unwrap_or_else(|| panic!("{name}: {other}"));
                assert!(!c.priced, "{name}: {other} should be unpriced");
                other
            }
        };
        assert_eq!(model.category, category, "{name}");
        let Some(checksum) = entry["checksum"].as_str() else {
            continue;
        };
        // A LoRA's file is listed in lora*.json when the model list gives none.
        let url = entry["file_url"]
            .as_str()
            .filter(|u| !u.is_empty())
            .or_else(|| {
                loras
                    .iter()
                    .find(|l| l["name"] == entry["name"])
                    .and_then(|l| l["file_url"].as_str())
            })
            .unwrap();
        let file = rules
            .model_files(name)
            .into_iter()
            .find(|f| f.name == basename(url))
            .unwrap_or_else(|| panic!("{name}: no file {}", basename(url)));
        assert_eq!(file.sha256, checksum.to_ascii_lowercase(), "{name}");
        checked += 1;
    }
    // 19 checkpoints and LoRAs carry a checksum in the copied lists.
    assert!(checked >= 19, "{checked}");
}

#[test]
fn a_loras_files_include_its_base_checkpoint() {
    let rules = Rules::embedded().unwrap();
    let files: Vec<&str> = rules
        .model_files("PepeXL")
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        files,
        ["DD-pepe-v2.safetensors", "aamXLAnimeMix_v10.safetensors"]
    );
}

#[test]
fn an_unpriced_model_is_known_and_earns_nothing() {
    let rules = Rules::embedded().unwrap();
    let m = rules.model("meta-llama/llama-3.3-70b-instruct").unwrap();
    assert!(!rules.category(&m.category).unwrap().priced);
    assert_eq!(proctor::points::llm_points(&rules, &m.category, 1000), 0.0);
}

/// `sha256sum`'s digest: an implementation other than ours.
fn coreutils_sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn verify_model_checks_a_real_file_against_its_registry_entry() {
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir(&rules_dir).unwrap();
    for f in std::fs::read_dir(root().join("rules")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, rules_dir.join(f.file_name().unwrap())).unwrap();
    }
    // A real safetensors file of the repository, registered like a checkpoint.
    let file = dir.path().join("model.safetensors");
    std::fs::copy(
        root().join("fixtures/models/tiny-alice/model.safetensors"),
        &file,
    )
    .unwrap();
    let sha = coreutils_sha256(&file);
    let size = std::fs::metadata(&file).unwrap().len();
    let mut models = std::fs::read_to_string(rules_dir.join("models.toml")).unwrap();
    models.push_str(&format!(
        "\n[models.FixtureCheckpoint]\ncategory = \"sd15\"\nfiles = [{{ name = \"model.safetensors\", size_bytes = {size}, sha256 = \"{sha}\" }}]\n"
    ));
    std::fs::write(rules_dir.join("models.toml"), models).unwrap();
    let proctor = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_proctor"))
            .args(args)
            .output()
            .unwrap()
    };
    let file_s = file.to_str().unwrap();
    let rules_s = rules_dir.to_str().unwrap();
    // `proctor hash --sha256` agrees with the registry entry ...
    let hashed = proctor(&["hash", "--sha256", file_s]);
    assert!(hashed.status.success());
    assert!(String::from_utf8_lossy(&hashed.stdout).starts_with(&sha));
    let verify = || {
        proctor(&[
            "verify-model",
            "--model",
            "FixtureCheckpoint",
            "--rules",
            rules_s,
            file_s,
        ])
    };
    // ... and verify-model accepts the file,
    let ok = verify();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}");
    assert!(stdout.contains(": OK"), "{stdout}");
    // ... and fails it once one byte changed.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let bad = verify();
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAILED") && stdout.contains("SHA-256 differs"),
        "{stdout}"
    );
}

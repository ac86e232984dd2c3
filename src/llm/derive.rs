//! Models derived from a reference model folder: the cheats calibration measures on a
//! real model, and the model suspects of its panel (issue 32).
//!
//! A cheater who saves compute serves something cheaper than the reference. From one
//! real model, [`derive()`] writes the folder of each such model, loadable wherever the
//! reference is:
//! - [`Derivation::DropLayers`]: a smaller model of the same family, some decoder
//!   layers removed (evenly over the interior: the first and the last layer, which
//!   matter most, are kept);
//! - [`Derivation::Quantize`]: every weight matrix round-tripped through `bits`-bit
//!   per-row absmax quantization ([`super::model::quantize_rows`]), stored dequantized;
//! - [`Derivation::Perturb`]: "another finetune" of the same base: every weight matrix
//!   plus independent noise of `scale` times its own root mean square, uniform on
//!   `[-√3, √3]` (unit variance) and seeded per tensor name, so the result does not
//!   depend on the order tensors are stored in.
//!
//! Norm weights (vectors) are left alone by the last two. The tokenizer files travel
//! unchanged, and `derived.json` records what the folder was made from.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// How a model is derived from its reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Derivation {
    DropLayers { layers: usize },
    Quantize { bits: u32 },
    Perturb { scale: f64, seed: u64 },
}

/// The files besides the weights and `config.json` that a derived folder copies.
const COPIED: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

/// The decoder layers that [`Derivation::DropLayers`] removes from `n`: `k` indices
/// spread evenly over `1..n-1`, distinct and ascending.
pub fn dropped_layers(n: usize, k: usize) -> anyhow::Result<Vec<usize>> {
    if n < 3 || k == 0 || k > n - 2 {
        bail!("cannot drop {k} of {n} layers: the first and the last stay, and at least one goes");
    }
    let interior = n - 2;
    // The midpoints of k equal slices of the interior.
    Ok((0..k)
        .map(|i| 1 + (2 * i + 1) * interior / (2 * k))
        .collect())
}

/// `t` plus uniform noise of `scale` times its root mean square, from `seed` and the
/// tensor's name.
fn perturb(name: &str, t: &Tensor, scale: f64, seed: u64) -> anyhow::Result<Tensor> {
    let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
    let rms = (values.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()
        / values.len().max(1) as f64)
        .sqrt();
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let name_hash = blake3::hash(name.as_bytes());
    for (k, h) in key[8..].iter_mut().zip(name_hash.as_bytes()) {
        *k = *h;
    }
    let mut rng = ChaCha8Rng::from_seed(key);
    let half_width = scale * rms * 3f64.sqrt();
    let noisy: Vec<f32> = values
        .iter()
        .map(|v| (f64::from(*v) + rng.random_range(-half_width..=half_width)) as f32)
        .collect();
    Ok(Tensor::from_vec(noisy, t.shape(), t.device())?)
}

/// What [`derive()`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub layers: usize,
    pub parameters: usize,
}

/// Writes the model derived from the folder `reference` by `how` to `out` (created if
/// need be). The folder's name is the model id the scorer reports.
pub fn derive(reference: &Path, out: &Path, how: Derivation) -> anyhow::Result<Derived> {
    let config_path = reference.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("parsing {}", config_path.display()))?;
    let n = config["num_hidden_layers"]
        .as_u64()
        .context("config.json has no num_hidden_layers")? as usize;
    let mut files: Vec<_> = std::fs::read_dir(reference)
        .with_context(|| format!("reading {}", reference.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no *.safetensors weights", reference.display());
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for f in &files {
        tensors.extend(
            candle_core::safetensors::load(f, &Device::Cpu)
                .with_context(|| format!("loading {}", f.display()))?,
        );
    }
    let mut layers = n;
    let tensors: HashMap<String, Tensor> = match how {
        Derivation::DropLayers { layers: k } => {
            let dropped = dropped_layers(n, k)?;
            // Old index -> new index, for the layers that stay.
            let kept: HashMap<usize, usize> = (0..n)
                .filter(|i| !dropped.contains(i))
                .enumerate()
                .map(|(new, old)| (old, new))
                .collect();
            layers = n - k;
            config["num_hidden_layers"] = layers.into();
            tensors
                .into_iter()
                .filter_map(|(name, t)| match layer_of(&name) {
                    None => Some((name, t)),
                    Some((old, rest)) => {
                        let new = kept.get(&old)?;
                        Some((format!("model.layers.{new}.{rest}"), t))
                    }
                })
                .collect()
        }
        Derivation::Quantize { bits } => {
            if !(2..=8).contains(&bits) {
                bail!("{bits}-bit quantization: 2 to 8 bits");
            }
            tensors
                .into_iter()
                .map(|(name, t)| Ok((name, super::model::quantize_rows(t, bits)?)))
                .collect::<anyhow::Result<_>>()?
        }
        Derivation::Perturb { scale, seed } => {
            if !(scale.is_finite() && scale > 0.0 && scale < 1.0) {
                bail!("perturbation scale {scale}: between 0 and 1 (a share of each matrix's RMS)");
            }
            tensors
                .into_iter()
                .map(|(name, t)| {
                    let t = if t.rank() == 2 {
                        perturb(&name, &t, scale, seed)?
                    } else {
                        t
                    };
                    Ok((name, t))
                })
                .collect::<anyhow::Result<_>>()?
        }
    };
    let parameters = tensors.values().map(Tensor::elem_count).sum();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for name in COPIED {
        let from = reference.join(name);
        if from.exists() {
            std::fs::copy(&from, out.join(name))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    let write = |name: &str, bytes: Vec<u8>| -> anyhow::Result<()> {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    write("config.json", serde_json::to_vec_pretty(&config)?)?;
    write(
        "derived.json",
        serde_json::to_vec_pretty(&serde_json::json!({
            "from": reference.file_name().map(|n| n.to_string_lossy().into_owned()),
            "derivation": how,
        }))?,
    )?;
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))
        .context("writing model.safetensors")?;
    Ok(Derived { layers, parameters })
}

/// `model.layers.{i}.{rest}` as `(i, rest)`.
fn layer_of(name: &str) -> Option<(usize, &str)> {
    let tail = name.strip_prefix("model.layers.")?;
    let (i, rest) = tail.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_layers_spread_over_the_interior_and_keep_both_ends() {
        assert_eq!(dropped_layers(30, 2).unwrap(), vec![8, 22]);
        let ten = dropped_layers(30, 10).unwrap();
        assert_eq!(ten.len(), 10);
        assert!(ten.windows(2).all(|w| w[0] < w[1]), "{ten:?}");
        assert!(ten[0] >= 1 && ten[9] <= 28, "{ten:?}");
        assert_eq!(dropped_layers(4, 2).unwrap(), vec![1, 2]);
        assert!(dropped_layers(4, 3).is_err());
        assert!(dropped_layers(30, 0).is_err());
    }

    #[test]
    fn layer_names_parse() {
        assert_eq!(
            layer_of("model.layers.12.self_attn.q_proj.weight"),
            Some((12, "self_attn.q_proj.weight"))
        );
        assert_eq!(layer_of("model.norm.weight"), None);
        assert_eq!(layer_of("model.layers.x.mlp"), None);
    }

    /// The fixture model derived each way: the folder loads and scores, and each
    /// derivation changed what it says it changes.
    #[test]
    fn derived_fixture_models_load_and_differ_as_derived() {
        let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny-alice");
        let tmp = tempfile::tempdir().unwrap();
        let cfg = |dir: &Path| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
        };
        let weights = |dir: &Path| {
            candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
        };
        let base = weights(&reference);
        let n = cfg(&reference)["num_hidden_layers"].as_u64().unwrap() as usize;
        let name = "model.layers.0.mlp.down_proj.weight";
        let diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };

        let q = tmp.path().join("q4");
        derive(&reference, &q, Derivation::Quantize { bits: 4 }).unwrap();
        let qw = weights(&q);
        assert!(
            diff(&qw[name], &base[name]) > 0.0,
            "quantization changed nothing"
        );
        // 4 bits: at most 15 distinct levels in a row.
        let row: Vec<f32> = qw[name].get(0).unwrap().to_vec1().unwrap();
        let mut levels: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
        levels.sort_unstable();
        levels.dedup();
        assert!(levels.len() <= 15, "{} levels", levels.len());
        assert_eq!(
            qw["model.norm.weight"].to_vec1::<f32>().unwrap(),
            base["model.norm.weight"].to_vec1::<f32>().unwrap()
        );

        let p = tmp.path().join("alt");
        let p2 = tmp.path().join("alt-again");
        for dir in [&p, &p2] {
            derive(
                &reference,
                dir,
                Derivation::Perturb {
                    scale: 0.05,
                    seed: 7,
                },
            )
            .unwrap();
        }
        let (pw, pw2) = (weights(&p), weights(&p2));
        let d = diff(&pw[name], &base[name]);
        assert!(d > 0.0, "the perturbation changed nothing");
        assert_eq!(
            diff(&pw[name], &pw2[name]),
            0.0,
            "the same seed, another model"
        );

        // Two layers have no interior to drop from (tests/real_model.rs drops layers of
        // the real model).
        assert_eq!(n, 2);
        let small = tmp.path().join("small");
        assert!(derive(&reference, &small, Derivation::DropLayers { layers: 1 }).is_err());
        assert!(!small.exists(), "a failed derivation wrote a folder");

        let numerics = super::super::model::Numerics {
            dtype: candle_core::DType::F32,
            attention: super::super::model::AttentionPrecision::F32,
        };
        for dir in [&q, &p] {
            let scorer = super::super::Scorer::load(dir, numerics, &Device::Cpu).unwrap();
            assert_eq!(scorer.model.config.num_hidden_layers, n);
            let derived: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("derived.json")).unwrap()).unwrap();
            assert_eq!(derived["from"], "tiny-alice");
        }
    }
}

//! `gpus.toml`: every GPU the rules know, and the index that names a miner's hardware string.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuRules {
    pub version: u32,
    pub gpus: BTreeMap<GpuId, Gpu>,
    /// Normalized name → GPU id, built once at load (not part of the rules' data).
    #[serde(skip)]
    by_name: BTreeMap<String, GpuId>,
}

/// The words a hardware string may carry or omit without naming another card.
const VENDOR_WORDS: [&str; 6] = ["nvidia", "geforce", "tesla", "amd", "radeon", "instinct"];

impl GpuRules {
    /// `"NVIDIA GeForce RTX 4090"` → `"rtx4090"`: lower case, punctuation and the vendor
    /// words dropped, so cosmetic differences in driver strings do not matter but model
    /// suffixes ("Ti", "SUPER", "Laptop GPU", "D") do.
    pub fn normalize_name(name: &str) -> String {
        name.to_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty() && !VENDOR_WORDS.contains(w))
            .collect()
    }

    /// The GPU a hardware string names, if the table knows it.
    pub fn find(&self, hardware: &str) -> Option<(&str, &Gpu)> {
        let id = self.by_name.get(&GpuRules::normalize_name(hardware))?;
        self.gpus.get_key_value(id).map(|(id, g)| (id.as_str(), g))
    }

    /// A card as fast as the fastest in the table on every resource: what a hardware
    /// string the table does not know is judged against, so that a claim no listed GPU
    /// could make still fails.
    pub fn fastest(&self) -> Gpu {
        let max = |f: fn(&Gpu) -> f64| self.gpus.values().map(f).fold(0.0, f64::max);
        Gpu {
            names: Vec::new(),
            vram_gb: max(|g| g.vram_gb),
            fp16_tensor_tflops: max(|g| g.fp16_tensor_tflops),
            memory_bandwidth_gbs: max(|g| g.memory_bandwidth_gbs),
            source: "the fastest figures of rules/gpus.toml".into(),
        }
    }

    pub(super) fn build_index(&mut self) -> Vec<String> {
        let mut clashes = Vec::new();
        self.by_name.clear();
        for (id, g) in &self.gpus {
            for n in &g.names {
                let key = GpuRules::normalize_name(n);
                if key.is_empty() {
                    clashes.push(format!("gpu {id}: name {n:?} is only vendor words"));
                } else if let Some(other) = self.by_name.insert(key, id.clone())
                    && &other != id
                {
                    clashes.push(format!("gpu name {n:?} belongs to both {other} and {id}"));
                }
            }
        }
        clashes
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// Names as drivers report them (`nvidia-smi --query-gpu=name`); matched after
    /// normalization, see [`GpuRules::normalize_name`].
    pub names: Vec<String>,
    pub vram_gb: f64,
    /// Dense FP16 tensor throughput with FP16 accumulate (without tensor cores, the
    /// faster of the FP16 and FP32 rates): the highest rate a miner's kernels could
    /// reach, which keeps latency bounds on the honest side.
    pub fp16_tensor_tflops: f64,
    pub memory_bandwidth_gbs: f64,
    /// Where the figures come from.
    pub source: String,
}

/// Validates what `gpus.toml` promises, against the rest of the set where it
/// refers to it; pushes each problem through `need`.
pub(super) fn validate(rules: &Rules, need: &mut impl FnMut(bool, String)) {
    for (id, g) in &rules.gpus.gpus {
        need(!g.names.is_empty(), format!("gpu {id}: no names"));
        need(!g.source.is_empty(), format!("gpu {id}: no source"));
        need(
            positive(g.vram_gb)
                && positive(g.fp16_tensor_tflops)
                && positive(g.memory_bandwidth_gbs),
            format!("gpu {id}: specs must be > 0"),
        );
    }
}

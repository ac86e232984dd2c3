//! `models.toml`: model categories (their points, minimum GPUs) and the registry of models and their files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::record::JobKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRules {
    pub version: u32,
    pub categories: BTreeMap<CategoryId, Category>,
    pub models: BTreeMap<String, Model>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub kind: JobKind,
    /// False for the network's models the points rules do not price yet: known (their
    /// jobs are judged), but worth no points, with no hardware minimum or work estimate
    /// required.
    #[serde(default = "priced_by_default")]
    pub priced: bool,
    /// SD: the GPU meets the minimum if it matches or beats one of these cards on both
    /// VRAM and FP16 tensor throughput.
    #[serde(default)]
    pub min_gpus: Vec<GpuId>,
    /// LLM: the minimum VRAM.
    #[serde(default)]
    pub min_vram_gb: Option<f64>,
    /// SD: a lower bound on the compute of one denoising step (both CFG branches) per
    /// megapixel of output, in TFLOP.
    #[serde(default)]
    pub tflop_per_megapixel_step: Option<f64>,
}

fn priced_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub category: CategoryId,
    /// For a LoRA: the checkpoint it is applied to.
    #[serde(default)]
    pub base: Option<String>,
    /// LLM: parameters touched per generated token (all of them for a dense model, the
    /// active experts for a mixture), for the prefill FLOP bound.
    #[serde(default)]
    pub active_params_b: Option<f64>,
    /// LLM: bytes of weights read per decode step at batch size 1, for the bandwidth
    /// bound, counting the whole input-embedding table ...
    #[serde(default)]
    pub weight_bytes_per_token_gb: Option<f64>,
    /// ... of which a decode step reads one row only: the bound leaves the table out.
    #[serde(default)]
    pub embedding_bytes_gb: Option<f64>,
    #[serde(default)]
    pub files: Vec<ModelFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub name: String,
    /// The exact size in bytes, where known: checked when present.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// The size the network's list publishes, in MB: rounded there, so never checked.
    #[serde(default)]
    pub published_size_mb: Option<f64>,
    /// Hex SHA-256 as the network's models list publishes it (Hugging Face's LFS oid).
    pub sha256: String,
    /// Hex BLAKE3, where known (Civitai publishes it).
    #[serde(default)]
    pub blake3: Option<String>,
    /// Where the network's miners download it.
    #[serde(default)]
    pub url: Option<String>,
}

/// Validates what `models.toml` promises, against the rest of the set where it
/// refers to it; pushes each problem through `need`.
pub(super) fn validate(rules: &Rules, need: &mut impl FnMut(bool, String)) {
    for (id, c) in rules.models.categories.iter().filter(|(_, c)| c.priced) {
        match c.kind {
            JobKind::Sd => {
                need(
                    !c.min_gpus.is_empty(),
                    format!("category {id}: sd needs min_gpus"),
                );
                need(
                    c.tflop_per_megapixel_step.is_some_and(positive),
                    format!("category {id}: sd needs tflop_per_megapixel_step > 0"),
                );
            }
            JobKind::Llm => need(
                c.min_vram_gb.is_some_and(positive),
                format!("category {id}: llm needs min_vram_gb > 0"),
            ),
        }
        for g in &c.min_gpus {
            need(
                rules.gpus.gpus.contains_key(g),
                format!("category {id}: min_gpus names unknown gpu {g}"),
            );
        }
    }
    for (id, m) in &rules.models.models {
        let Some(cat) = rules.models.categories.get(&m.category) else {
            need(
                false,
                format!("model {id}: unknown category {}", m.category),
            );
            continue;
        };
        if cat.kind == JobKind::Llm && cat.priced {
            need(
                m.active_params_b.is_some_and(positive)
                    && m.weight_bytes_per_token_gb.is_some_and(positive)
                    && m.embedding_bytes_gb.is_some_and(|e| {
                        e >= 0.0 && m.weight_bytes_per_token_gb.is_some_and(|w| e < w)
                    }),
                format!(
                    "model {id}: llm needs active_params_b, weight_bytes_per_token_gb and embedding_bytes_gb below it"
                ),
            );
        }
        need(
            m.base.as_ref().is_none_or(|b| {
                rules
                    .models
                    .models
                    .get(b)
                    .is_some_and(|base| base.base.is_none())
            }),
            format!(
                "model {id}: base {:?} is not a checkpoint of the registry",
                m.base
            ),
        );
        for f in &m.files {
            need(
                f.sha256.len() == 64 && hex::decode(&f.sha256).is_ok(),
                format!("model {id} file {}: sha256 must be 64 hex digits", f.name),
            );
            need(
                f.blake3
                    .as_ref()
                    .is_none_or(|b| b.len() == 64 && hex::decode(b).is_ok()),
                format!("model {id} file {}: blake3 must be 64 hex digits", f.name),
            );
        }
    }
}

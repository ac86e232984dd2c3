//! `points.toml`: what a job earns (Waifu and Llama units, category multipliers, the NFT boost).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::record::JobKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsRules {
    pub version: u32,
    pub waifu_unit: WaifuUnit,
    pub llama_unit: LlamaUnit,
    pub nft: NftBoost,
    /// Points multiplier per category.
    pub multipliers: BTreeMap<CategoryId, f64>,
}

/// 1 Waifu point = one `width`×`height` image at `steps` steps in `category`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaifuUnit {
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub category: CategoryId,
}

/// 1 Llama point = `tokens` input+output tokens in `category`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaUnit {
    pub tokens: u32,
    pub category: CategoryId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NftBoost {
    /// How many GPUs of a wallet one NFT boosts.
    pub gpus_per_nft: u32,
    /// The points factor on a boosted GPU.
    pub boost_factor: f64,
}

/// Validates what `points.toml` promises, against the rest of the set where it
/// refers to it; pushes each problem through `need`.
pub(super) fn validate(rules: &Rules, need: &mut impl FnMut(bool, String)) {
    let p = &rules.points;
    for (cat, m) in &p.multipliers {
        need(
            m.is_finite() && *m >= 0.0,
            format!("points.multipliers.{cat} must be >= 0"),
        );
        need(
            rules.models.categories.get(cat).is_some_and(|c| c.priced),
            format!("points.multipliers.{cat} names no priced category in models.toml"),
        );
    }
    for (cat, c) in &rules.models.categories {
        need(
            !c.priced || p.multipliers.contains_key(cat),
            format!("category {cat} has no points multiplier"),
        );
    }
    for (what, cat, kind) in [
        ("waifu_unit", &p.waifu_unit.category, JobKind::Sd),
        ("llama_unit", &p.llama_unit.category, JobKind::Llm),
    ] {
        let ok = rules.models.categories.get(cat).map(|c| c.kind) == Some(kind)
            && p.multipliers.get(cat).is_some_and(|m| *m > 0.0);
        need(
            ok,
            format!(
                "points.{what}.category {cat} must be a {kind:?} category with a multiplier > 0"
            ),
        );
    }
    need(
        p.waifu_unit.width > 0 && p.waifu_unit.height > 0 && p.waifu_unit.steps > 0,
        "points.waifu_unit sizes must be > 0".into(),
    );
    need(
        p.llama_unit.tokens > 0,
        "points.llama_unit.tokens must be > 0".into(),
    );
    need(
        p.nft.boost_factor.is_finite() && p.nft.boost_factor >= 1.0,
        "points.nft.boost_factor must be >= 1".into(),
    );
}

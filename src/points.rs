//! The points calculator: what a job earned, in 🧚 Waifu points (images) and 🦙 Llama
//! points (LLM tokens). Slashes are sized with it, and the deterrence table reasons with it.

use serde::{Deserialize, Serialize};

use crate::rules::{CategoryId, Rules};

/// Points per kind. Kept apart because the ledger keeps two balances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Points {
    pub waifu: f64,
    pub llama: f64,
}

impl Points {
    pub fn scaled(self, factor: f64) -> Points {
        Points {
            waifu: self.waifu * factor,
            llama: self.llama * factor,
        }
    }

    pub fn total(self) -> f64 {
        self.waifu + self.llama
    }
}

impl std::ops::Add for Points {
    type Output = Points;
    fn add(self, o: Points) -> Points {
        Points {
            waifu: self.waifu + o.waifu,
            llama: self.llama + o.llama,
        }
    }
}

impl std::iter::Sum for Points {
    fn sum<I: Iterator<Item = Points>>(iter: I) -> Points {
        iter.fold(Points::default(), |a, b| a + b)
    }
}

fn multiplier(rules: &Rules, category: &str) -> f64 {
    rules
        .points
        .multipliers
        .get(category)
        .copied()
        .unwrap_or(0.0)
}

/// Waifu points of one image of `width`×`height` at `steps` in `category`.
pub fn image_points(
    rules: &Rules,
    category: &CategoryId,
    width: u32,
    height: u32,
    steps: u32,
) -> f64 {
    let unit = &rules.points.waifu_unit;
    let unit_work = f64::from(unit.width) * f64::from(unit.height) * f64::from(unit.steps);
    let work = f64::from(width) * f64::from(height) * f64::from(steps);
    work * multiplier(rules, category) / (unit_work * multiplier(rules, &unit.category))
}

/// Llama points of `tokens` input+output tokens in `category`.
pub fn llm_points(rules: &Rules, category: &CategoryId, tokens: u64) -> f64 {
    let unit = &rules.points.llama_unit;
    tokens as f64 * multiplier(rules, category)
        / (f64::from(unit.tokens) * multiplier(rules, &unit.category))
}

/// The NFT boost of a GPU: each NFT boosts `gpus_per_nft` GPUs of its wallet, taken in
/// miner-id order. `gpu_index` is the GPU's 0-based position in that order.
pub fn nft_boost_factor(rules: &Rules, gpu_index: usize, nft_count: u32) -> f64 {
    let boosted = nft_count as usize * rules.points.nft.gpus_per_nft as usize;
    if gpu_index < boosted {
        rules.points.nft.boost_factor
    } else {
        1.0
    }
}

/// The NFT boost of `miner`: its wallet's GPUs (`wallet_miners`, every miner id of the
/// wallet that has submitted work) are taken in miner-id order, and the first
/// `gpus_per_nft × NFTs` are boosted. Without NFTs the factor is 1.
pub fn wallet_boost(
    rules: &Rules,
    miner: &crate::ids::MinerId,
    wallet_miners: &[crate::ids::MinerId],
    nfts: Option<u32>,
) -> f64 {
    let Some(count) = nfts else {
        return 1.0;
    };
    let mut same: Vec<&crate::ids::MinerId> = wallet_miners
        .iter()
        .filter(|m| m.wallet() == miner.wallet())
        .collect();
    same.sort();
    same.dedup();
    let index = same.iter().position(|m| *m == miner).unwrap_or(usize::MAX);
    nft_boost_factor(rules, index, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::embedded().unwrap()
    }

    #[test]
    fn one_sd15_512_image_at_20_steps_is_one_waifu_point() {
        let r = rules();
        let p = image_points(&r, &"sd15".into(), 512, 512, 20);
        assert!((p - 1.0).abs() < 1e-12, "{p}");
    }

    #[test]
    fn an_sdxl_1024_image_is_worth_four_sd15_images_over_point_three() {
        let r = rules();
        let p = image_points(&r, &"sdxl".into(), 1024, 1024, 20);
        assert!((p - 4.0 / 0.3).abs() < 1e-9, "{p}");
        let lora = image_points(&r, &"sdxl_lora".into(), 1024, 1024, 20);
        assert!((lora - 1.2 * 4.0 / 0.3).abs() < 1e-9, "{lora}");
    }

    #[test]
    fn flux_earns_nothing_while_disabled() {
        assert_eq!(image_points(&rules(), &"flux".into(), 1024, 1024, 20), 0.0);
    }

    #[test]
    fn a_thousand_mixtral_tokens_is_one_llama_point_and_llama3_half() {
        let r = rules();
        assert!((llm_points(&r, &"mixtral_8x7b_gptq".into(), 1000) - 1.0).abs() < 1e-12);
        assert!((llm_points(&r, &"llama3_8b".into(), 1000) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn each_nft_boosts_three_gpus() {
        let r = rules();
        assert_eq!(nft_boost_factor(&r, 0, 0), 1.0);
        assert_eq!(nft_boost_factor(&r, 2, 1), 1.2);
        assert_eq!(nft_boost_factor(&r, 3, 1), 1.0);
        assert_eq!(nft_boost_factor(&r, 5, 2), 1.2);
    }
}

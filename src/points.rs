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

/// Points in the ledger's unit, per kind: whole millionths of a point. What a slash
/// takes and a reversal returns, exactly, in Postgres (`BIGINT`) and in the ledger
/// events; points are earned as real numbers and rounded to the nearest micro-point
/// only here, at the ledger's boundary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MicroPoints {
    pub waifu_micro: i64,
    pub llama_micro: i64,
}

/// Micro-points in a point.
pub const MICRO_PER_POINT: f64 = 1e6;

impl MicroPoints {
    /// Rounds to the nearest micro-point; a negative or non-finite amount is 0 and an
    /// amount past `i64` saturates (neither can come from the points rules).
    pub fn from_points(p: Points) -> MicroPoints {
        let micro = |x: f64| {
            if x.is_finite() && x > 0.0 {
                // `as` saturates at i64::MAX.
                (x * MICRO_PER_POINT).round() as i64
            } else {
                0
            }
        };
        MicroPoints {
            waifu_micro: micro(p.waifu),
            llama_micro: micro(p.llama),
        }
    }

    /// For display: the amount in points.
    pub fn points(self) -> Points {
        Points {
            waifu: self.waifu_micro as f64 / MICRO_PER_POINT,
            llama: self.llama_micro as f64 / MICRO_PER_POINT,
        }
    }

    pub fn is_zero(self) -> bool {
        self.waifu_micro == 0 && self.llama_micro == 0
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
    fn micro_points_round_to_the_nearest_millionth_and_never_go_negative() {
        let m = MicroPoints::from_points(Points {
            waifu: 13.333_333_333_7,
            llama: 0.000_000_4,
        });
        assert_eq!(
            m,
            MicroPoints {
                waifu_micro: 13_333_333,
                llama_micro: 0
            }
        );
        assert_eq!(
            MicroPoints::from_points(Points {
                waifu: -1.0,
                llama: f64::NAN
            }),
            MicroPoints::default()
        );
        assert_eq!(
            MicroPoints::from_points(Points {
                waifu: 1e30,
                llama: 0.5
            })
            .waifu_micro,
            i64::MAX
        );
        assert_eq!(m.points().waifu, 13.333_333);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"waifu_micro":13333333,"llama_micro":0}"#);
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

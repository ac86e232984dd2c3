//! The sampling a miner's vLLM server applies on its own, from the served model's
//! `generation_config.json`.
//!
//! The network's miner requests `temperature`, `max_tokens`, `stop` and `seed` only
//! ([`super::miner`]). Current vLLM releases (`--generation-config auto`, the default
//! since 0.6.5) take every other sampling parameter they know from the served model's
//! `generation_config.json`: `repetition_penalty`, `top_k`, `top_p` and `min_p`
//! (`ModelConfig.get_diff_sampling_param`). They read the file through transformers'
//! `GenerationConfig.to_diff_dict`, so a value equal to transformers' own default is
//! dropped: a file's `top_k = 50` is not applied, any other `top_k` is.
//!
//! vLLM's V1 sampler then works in this order, and [`ServerDefaults`] reproduces it:
//! 1. the repetition penalty, on the raw logits of every token seen in the prompt or
//!    the output so far: a positive logit is divided by it, any other multiplied;
//! 2. a greedy job takes the argmax of those logits;
//! 3. a sampled job divides them by the temperature, drops every token whose
//!    probability is below `min_p` times the likeliest one's, keeps the `top_k`
//!    likeliest (ties with the k-th kept), and of those the fewest likeliest whose
//!    renormalized probability reaches `top_p`.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;

/// The file a model folder names its sampling defaults in.
pub const FILE: &str = "generation_config.json";

/// transformers' `GenerationConfig` default for `top_k`: a file that states it is read
/// as not stating it (`to_diff_dict`).
const TRANSFORMERS_TOP_K: i64 = 50;

/// The sampling parameters a server applies where the request leaves them out.
/// [`ServerDefaults::default`] is pure temperature sampling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerDefaults {
    /// 1 is none.
    pub repetition_penalty: f64,
    /// `None` keeps every token.
    pub top_k: Option<usize>,
    /// 1 keeps every token.
    pub top_p: f64,
    /// 0 keeps every token.
    pub min_p: f64,
}

impl Default for ServerDefaults {
    fn default() -> Self {
        ServerDefaults {
            repetition_penalty: 1.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
        }
    }
}

impl ServerDefaults {
    /// The defaults of the model folder `dir`: its `generation_config.json`, or none
    /// where it has no such file.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_generation_config(&text)
                .with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The defaults a `generation_config.json` gives vLLM. Keys vLLM does not read
    /// (`do_sample`, `temperature`: the request sets it) are ignored; a value vLLM
    /// would refuse is an error, as it is for the server.
    pub fn from_generation_config(text: &str) -> anyhow::Result<Self> {
        let json: serde_json::Value = serde_json::from_str(text)?;
        let Some(map) = json.as_object() else {
            bail!("a generation config is a JSON object");
        };
        let number = |key: &str| -> anyhow::Result<Option<f64>> {
            match map.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .map(Some)
                    .with_context(|| format!("{key} is not a number: {v}")),
            }
        };
        let mut d = ServerDefaults::default();
        if let Some(r) = number("repetition_penalty")? {
            if r <= 0.0 {
                bail!("repetition_penalty must be positive, got {r}");
            }
            d.repetition_penalty = r;
        }
        if let Some(v) = map.get("top_k").filter(|v| !v.is_null()) {
            let k = v
                .as_i64()
                .with_context(|| format!("top_k is not an integer: {v}"))?;
            // vLLM reads 0 and -1 as "every token".
            d.top_k = match k {
                TRANSFORMERS_TOP_K | -1 | 0 => None,
                k if k > 0 => Some(k as usize),
                k => bail!("top_k must be -1, 0 or positive, got {k}"),
            };
        }
        if let Some(p) = number("top_p")? {
            if !(p > 0.0 && p <= 1.0) {
                bail!("top_p must be in (0, 1], got {p}");
            }
            d.top_p = p;
        }
        if let Some(m) = number("min_p")? {
            if !(0.0..=1.0).contains(&m) {
                bail!("min_p must be in [0, 1], got {m}");
            }
            d.min_p = m;
        }
        Ok(d)
    }

    /// Pure temperature sampling: nothing the scorer must model.
    pub fn is_plain(&self) -> bool {
        !self.penalizes() && !self.truncates()
    }

    /// Whether the repetition penalty changes any logit.
    pub fn penalizes(&self) -> bool {
        self.repetition_penalty != 1.0
    }

    /// Whether sampled jobs draw from fewer than every token.
    pub fn truncates(&self) -> bool {
        self.top_k.is_some() || self.top_p < 1.0 || self.min_p > 0.0
    }

    /// Applies the repetition penalty to raw logits: `seen[id]` for every token of the
    /// prompt and of the output so far.
    pub fn penalize(&self, logits: &mut [f32], seen: &[bool]) {
        if !self.penalizes() {
            return;
        }
        let r = self.repetition_penalty as f32;
        for (x, _) in logits.iter_mut().zip(seen).filter(|(_, s)| **s) {
            *x = if *x > 0.0 { *x / r } else { *x * r };
        }
    }

    /// The smallest value of `row` (logits, or log-probabilities: any shift) that a
    /// sampler at `temperature` keeps: every token at or above it is kept, every one
    /// below dropped. `None` where every token is kept, or the job is greedy.
    pub fn kept_floor(&self, row: &[f32], temperature: f64) -> Option<f32> {
        if !self.truncates() || temperature.is_nan() || temperature <= 0.0 || row.is_empty() {
            return None;
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return None;
        }
        // min_p compares probabilities at the temperature: p ≥ min_p · p_max.
        let min_floor = if self.min_p > 0.0 {
            (f64::from(max) + temperature * self.min_p.ln()) as f32
        } else {
            f32::NEG_INFINITY
        };
        let desc = |a: &f32, b: &f32| b.total_cmp(a);
        let mut kept: Vec<f32> = row.iter().copied().filter(|&x| x >= min_floor).collect();
        let mut floor = kept.iter().copied().fold(f32::INFINITY, f32::min);
        if let Some(k) = self.top_k.filter(|&k| k < kept.len()) {
            // Ties with the k-th value stay, as vLLM masks only what is below it.
            kept.select_nth_unstable_by(k - 1, desc);
            floor = kept[k - 1];
            kept.retain(|&x| x >= floor);
        }
        if self.top_p < 1.0 {
            let weight = |x: f32| (f64::from(x - max) / temperature).exp();
            let total: f64 = kept.iter().map(|&x| weight(x)).sum();
            // A token stays where the mass strictly above it is below top_p: vLLM
            // drops the tail whose ascending cumulative sum is at most 1 - top_p. The
            // nucleus is a few dozen tokens of a vocabulary of 50,000 to 130,000, scored
            // at every position: only a head of the row is sorted, a larger one where
            // the nucleus reaches past it.
            let mut head = kept.len().min(64);
            loop {
                if head < kept.len() {
                    kept.select_nth_unstable_by(head - 1, desc);
                }
                kept[..head].sort_unstable_by(desc);
                let (mut above, mut reached) = (0.0, false);
                for &x in &kept[..head] {
                    if above / total >= self.top_p {
                        reached = true;
                        break;
                    }
                    floor = x;
                    above += weight(x);
                }
                if reached || head == kept.len() {
                    break;
                }
                head = kept.len().min(head * 4);
            }
        }
        (floor > row.iter().copied().fold(f32::INFINITY, f32::min)).then_some(floor)
    }

    /// How many entries of `row` a sampler at `temperature` keeps.
    pub fn kept_count(&self, row: &[f32], temperature: f64) -> Option<u32> {
        let floor = self.kept_floor(row, temperature)?;
        Some(row.iter().filter(|&&x| x >= floor).count() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_read_as_vllm_reads_it() {
        let d = ServerDefaults::from_generation_config(
            r#"{"bos_token_id": 1, "do_sample": true, "temperature": 0.6, "top_p": 0.9}"#,
        )
        .unwrap();
        assert_eq!(
            d,
            ServerDefaults {
                top_p: 0.9,
                ..ServerDefaults::default()
            }
        );
        // transformers' own default top_k is dropped by to_diff_dict; any other is kept.
        let fifty = ServerDefaults::from_generation_config(r#"{"top_k": 50}"#).unwrap();
        assert!(fifty.is_plain());
        let forty = ServerDefaults::from_generation_config(r#"{"top_k": 40}"#).unwrap();
        assert_eq!(forty.top_k, Some(40));
        let off = ServerDefaults::from_generation_config(r#"{"top_k": -1, "min_p": null}"#);
        assert!(off.unwrap().is_plain());
        let rp = ServerDefaults::from_generation_config(r#"{"repetition_penalty": 1.1}"#);
        assert!(rp.unwrap().penalizes());
        for bad in [
            r#"{"top_p": 0}"#,
            r#"{"top_p": 1.5}"#,
            r#"{"top_k": 2.5}"#,
            r#"{"top_k": -3}"#,
            r#"{"min_p": 2}"#,
            r#"{"repetition_penalty": 0}"#,
            r#"{"repetition_penalty": "1.1"}"#,
            "[1]",
            "{",
        ] {
            assert!(
                ServerDefaults::from_generation_config(bad).is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn a_folder_without_the_file_samples_plainly() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ServerDefaults::load(dir.path()).unwrap().is_plain());
        std::fs::write(dir.path().join(FILE), r#"{"top_p": 0.8}"#).unwrap();
        assert_eq!(ServerDefaults::load(dir.path()).unwrap().top_p, 0.8);
    }

    #[test]
    fn the_penalty_divides_positive_logits_and_multiplies_the_rest() {
        let d = ServerDefaults {
            repetition_penalty: 2.0,
            ..ServerDefaults::default()
        };
        let mut logits = [4.0f32, -1.0, 3.0, 0.0];
        d.penalize(&mut logits, &[true, true, false, true]);
        assert_eq!(logits, [2.0, -2.0, 3.0, 0.0]);
    }

    #[test]
    fn truncation_keeps_what_vllm_keeps() {
        // Probabilities 0.5, 0.25, 0.125, 0.125 at temperature 1.
        let row: Vec<f32> = [0.5f64, 0.25, 0.125, 0.125]
            .iter()
            .map(|p| p.ln() as f32)
            .collect();
        let kept = |d: ServerDefaults, t: f64| d.kept_count(&row, t).unwrap_or(4);
        let plain = ServerDefaults::default();
        assert_eq!(kept(plain, 1.0), 4);
        let top_p = |p| ServerDefaults { top_p: p, ..plain };
        // 0.5 is reached by the first token alone; 0.6 needs the second.
        assert_eq!(kept(top_p(0.5), 1.0), 1);
        assert_eq!(kept(top_p(0.6), 1.0), 2);
        assert_eq!(kept(top_p(0.7), 1.0), 2);
        assert_eq!(
            kept(top_p(0.8), 1.0),
            4,
            "the two tied tokens stay together"
        );
        // At temperature 2 the distribution flattens: 0.5 no longer suffices alone.
        assert_eq!(kept(top_p(0.5), 2.0), 2);
        let top_k = |k| ServerDefaults {
            top_k: Some(k),
            ..plain
        };
        assert_eq!(kept(top_k(1), 1.0), 1);
        assert_eq!(kept(top_k(3), 1.0), 4, "ties with the k-th token stay");
        let min_p = |m| ServerDefaults { min_p: m, ..plain };
        assert_eq!(kept(min_p(0.3), 1.0), 2);
        assert_eq!(
            kept(min_p(0.3), 2.0),
            4,
            "min_p is judged at the temperature"
        );
        // Greedy jobs are never truncated: they take the argmax.
        assert_eq!(top_k(1).kept_floor(&row, 0.0), None);
    }

    /// The floor by sorting the whole row, as vLLM's masks are defined.
    fn floor_by_full_sort(d: &ServerDefaults, row: &[f32], t: f64) -> Option<f32> {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min_floor = if d.min_p > 0.0 {
            (f64::from(max) + t * d.min_p.ln()) as f32
        } else {
            f32::NEG_INFINITY
        };
        let mut kept: Vec<f32> = row.iter().copied().filter(|&x| x >= min_floor).collect();
        kept.sort_unstable_by(|a, b| b.total_cmp(a));
        let mut floor = *kept.last().unwrap();
        if let Some(k) = d.top_k.filter(|&k| k < kept.len()) {
            floor = kept[k - 1];
            kept.retain(|&x| x >= floor);
        }
        if d.top_p < 1.0 {
            let w: Vec<f64> = kept
                .iter()
                .map(|&x| (f64::from(x - max) / t).exp())
                .collect();
            let total: f64 = w.iter().sum();
            let mut above = 0.0;
            for (x, w) in kept.iter().zip(&w) {
                if above / total >= d.top_p {
                    break;
                }
                floor = *x;
                above += w;
            }
        }
        (floor > row.iter().copied().fold(f32::INFINITY, f32::min)).then_some(floor)
    }

    #[test]
    fn sorting_only_the_head_keeps_what_sorting_the_whole_row_keeps() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..200 {
            // Logit spreads from flat (a nucleus of thousands) to peaked (a handful).
            let spread = [0.5f32, 2.0, 6.0][case % 3];
            let row: Vec<f32> = (0..5000)
                .map(|_| spread * rng.random::<f32>().ln_1p() * 10.0 - spread * 3.0)
                .collect();
            let d = ServerDefaults {
                top_p: [0.5, 0.8, 0.95, 1.0][case % 4],
                top_k: [None, Some(20), Some(3000)][case % 3],
                min_p: [0.0, 0.05][case % 2],
                ..ServerDefaults::default()
            };
            let t = [0.3, 0.7, 1.0, 1.5][case % 4];
            assert_eq!(
                d.kept_floor(&row, t),
                floor_by_full_sort(&d, &row, t),
                "case {case}: {d:?} at {t}"
            );
        }
    }
}

//! Device and latency plausibility: is the reported GPU real and good enough for the
//! model, and could it have produced the output as fast as the miner says?
//!
//! Latency bounds are lower bounds built from public peak specs (rules/gpus.toml) and
//! rounded-down work estimates (rules/models.toml): an honest miner can only be slower.
//! The evidence always states the bound and how it was computed.

use serde::Serialize;

use crate::outcome::Outcome;
use crate::record::{Job, JobRecord, Metrics};
use crate::rules::{Category, Gpu, Model, Rules};

/// `"NVIDIA GeForce RTX 4090"` → `"rtx4090"`: lower case, punctuation and the vendor words
/// dropped, so cosmetic differences in driver strings do not matter but model suffixes
/// ("Ti", "SUPER", "Laptop GPU") do.
pub fn normalize_gpu_name(name: &str) -> String {
    name.to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty() && *w != "nvidia" && *w != "geforce")
        .collect()
}

/// The GPU a hardware string names, if the table knows it.
pub fn find_gpu<'r>(rules: &'r Rules, hardware: &str) -> Option<(&'r str, &'r Gpu)> {
    let key = normalize_gpu_name(hardware);
    if key.is_empty() {
        return None;
    }
    rules
        .gpus
        .gpus
        .iter()
        .find(|(_, g)| g.names.iter().any(|n| normalize_gpu_name(n) == key))
        .map(|(id, g)| (id.as_str(), g))
}

/// SD: the GPU matches or beats one of the category's minimum cards on both VRAM and
/// tensor throughput. LLM: it has the category's minimum VRAM.
pub fn meets_minimum(rules: &Rules, gpu: &Gpu, category: &Category) -> bool {
    if let Some(min_vram) = category.min_vram_gb {
        return gpu.vram_gb >= min_vram;
    }
    category.min_gpus.iter().any(|id| {
        rules.gpus.gpus.get(id).is_some_and(|min| {
            gpu.vram_gb >= min.vram_gb && gpu.fp16_tensor_tflops >= min.fp16_tensor_tflops
        })
    })
}

pub fn check_spec(
    rules: &Rules,
    hardware: &str,
    category_id: &str,
    category: &Category,
) -> Outcome {
    let Some((gpu_id, gpu)) = find_gpu(rules, hardware) else {
        return Outcome::inconclusive(format!("unknown GPU {hardware:?}: not in rules/gpus.toml"));
    };
    let details = serde_json::json!({
        "hardware": hardware,
        "gpu": gpu_id,
        "vram_gb": gpu.vram_gb,
        "fp16_tensor_tflops": gpu.fp16_tensor_tflops,
        "category": category_id,
        "min_gpus": category.min_gpus,
        "min_vram_gb": category.min_vram_gb,
    });
    if meets_minimum(rules, gpu, category) {
        Outcome::pass(details)
    } else {
        let need = match category.min_vram_gb {
            Some(v) => format!("{v} GB of VRAM"),
            None => format!("at least one of {}", category.min_gpus.join(", ")),
        };
        Outcome::fail(
            format!(
                "{hardware} ({gpu_id}) is below the minimum for {category_id}: it needs {need}"
            ),
            details,
        )
    }
}

/// Token counts for the LLM bound: exact from the reference scorer, or lower bounds from
/// character counts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
    pub exact: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyBound {
    pub gpu: String,
    pub bound_s: f64,
    pub method: String,
}

/// The physical lower bound on inference latency for this job on `gpu`, or `None` where
/// the model lacks the numbers.
pub fn inference_bound(
    rules: &Rules,
    record: &JobRecord,
    model: &Model,
    category: &Category,
    gpu_id: &str,
    gpu: &Gpu,
    tokens: Option<TokenCounts>,
) -> Option<LatencyBound> {
    let lat = &rules.checks.latency;
    match &record.job {
        Job::Sd { input, .. } => {
            let im = &rules.checks.image;
            let (w, h) = crate::checks::image::expected_size(input.width, input.height, im);
            let steps = crate::checks::image::effective_steps(input, im);
            let per_step = category.tflop_per_megapixel_step?;
            let mp = f64::from(w) * f64::from(h) / 1e6;
            let tflop = f64::from(steps) * per_step * mp;
            let rate = gpu.fp16_tensor_tflops * lat.max_compute_efficiency;
            Some(LatencyBound {
                gpu: gpu_id.to_owned(),
                bound_s: tflop / rate,
                method: format!(
                    "{steps} steps x {per_step} TFLOP/MP-step x {mp:.3} MP ({w}x{h}) = {tflop:.2} TFLOP, over {} TFLOPS x {} efficiency = {rate:.1} TFLOPS",
                    gpu.fp16_tensor_tflops, lat.max_compute_efficiency
                ),
            })
        }
        Job::Llm { .. } => {
            let t = tokens?;
            let bytes_gb = model.weight_bytes_per_token_gb?;
            let params_b = model.active_params_b?;
            let bw = gpu.memory_bandwidth_gbs * lat.max_bandwidth_efficiency;
            let decode_s = t.output as f64 * bytes_gb / bw;
            let prefill_tflop = 2.0 * params_b * 1e9 * t.input as f64 / 1e12;
            let prefill_s = prefill_tflop / (gpu.fp16_tensor_tflops * lat.max_compute_efficiency);
            Some(LatencyBound {
                gpu: gpu_id.to_owned(),
                bound_s: decode_s + prefill_s,
                method: format!(
                    "decode: {} output tokens x {bytes_gb} GB of weights / ({} GB/s x {}) = {decode_s:.3} s; prefill: 2 x {params_b}e9 params x {} input tokens = {prefill_tflop:.2} TFLOP / ({} TFLOPS x {}) = {prefill_s:.3} s{}",
                    t.output,
                    gpu.memory_bandwidth_gbs,
                    lat.max_bandwidth_efficiency,
                    t.input,
                    gpu.fp16_tensor_tflops,
                    lat.max_compute_efficiency,
                    if t.exact {
                        ""
                    } else {
                        " (token counts are lower bounds from character counts)"
                    }
                ),
            })
        }
    }
}

/// Latencies that contradict each other or are negative.
fn inconsistencies(m: &Metrics, slack_s: f64) -> Vec<String> {
    let mut problems = Vec::new();
    let parts = [
        ("request_latency", Some(m.request_latency)),
        ("loading_latency", m.loading_latency),
        ("inference_latency", Some(m.inference_latency)),
        ("upload_latency", Some(m.upload_latency)),
    ];
    for (name, v) in parts {
        match v {
            Some(v) if !v.is_finite() => problems.push(format!("{name} is not a number")),
            Some(v) if v < 0.0 => problems.push(format!("{name} is negative ({v})")),
            _ => {}
        }
    }
    for (name, v) in &parts[1..] {
        if let Some(v) = v
            && *v > m.request_latency + slack_s
        {
            problems.push(format!(
                "{name} ({v} s) is longer than the whole request ({} s)",
                m.request_latency
            ));
        }
    }
    problems
}

pub fn check_latency(rules: &Rules, record: &JobRecord, bound: Option<&LatencyBound>) -> Outcome {
    let m = &record.metrics;
    let problems = inconsistencies(m, rules.checks.latency.consistency_slack_s);
    if !problems.is_empty() {
        return Outcome::fail(
            format!("reported latencies are impossible: {}", problems.join("; ")),
            serde_json::json!({"metrics": m, "problems": problems}),
        );
    }
    let Some(bound) = bound else {
        return Outcome::inconclusive("no physical latency bound: unknown GPU or model cost");
    };
    let details = serde_json::json!({
        "inference_latency_s": m.inference_latency,
        "bound_s": bound.bound_s,
        "gpu": bound.gpu,
        "method": bound.method,
    });
    if m.inference_latency < bound.bound_s {
        Outcome::fail(
            format!(
                "inference took {:.3} s, but {} cannot do this job in under {:.3} s",
                m.inference_latency, bound.gpu, bound.bound_s
            ),
            details,
        )
    } else {
        Outcome::pass(details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::embedded().unwrap()
    }

    #[test]
    fn driver_strings_match_their_cards_and_variants_do_not_collide() {
        let r = rules();
        assert_eq!(
            find_gpu(&r, "NVIDIA GeForce RTX 4090").unwrap().0,
            "rtx4090"
        );
        assert_eq!(find_gpu(&r, "rtx 4090").unwrap().0, "rtx4090");
        assert_eq!(
            find_gpu(&r, "NVIDIA GeForce RTX 4070 Ti SUPER").unwrap().0,
            "rtx4070tisuper"
        );
        assert_eq!(
            find_gpu(&r, "NVIDIA A100-SXM4-80GB").unwrap().0,
            "a100_80gb"
        );
        assert!(find_gpu(&r, "NVIDIA GeForce RTX 4090 Laptop GPU").is_none());
        assert!(find_gpu(&r, "").is_none());
        assert!(find_gpu(&r, "NVIDIA").is_none());
    }

    #[test]
    fn the_minimums_follow_the_network_table() {
        let r = rules();
        let gpu = |n: &str| find_gpu(&r, n).unwrap().1;
        let cat = |c: &str| r.category(c).unwrap();
        assert!(meets_minimum(&r, gpu("RTX 3070"), cat("sd15")));
        assert!(!meets_minimum(&r, gpu("RTX 3060"), cat("sd15")));
        assert!(meets_minimum(&r, gpu("RTX 3090"), cat("sdxl")));
        assert!(!meets_minimum(&r, gpu("RTX 3080"), cat("sdxl")));
        assert!(meets_minimum(&r, gpu("RTX 4090"), cat("flux")));
        assert!(!meets_minimum(&r, gpu("RTX 4080"), cat("flux")));
        assert!(meets_minimum(&r, gpu("RTX 4090"), cat("llama3_8b")));
        assert!(!meets_minimum(
            &r,
            gpu("RTX 4090"),
            cat("mixtral_8x7b_gptq")
        ));
        assert!(meets_minimum(
            &r,
            gpu("NVIDIA A100-PCIE-40GB"),
            cat("mixtral_8x7b_gptq")
        ));
    }
}

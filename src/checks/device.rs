//! Device and latency plausibility: is the reported GPU one the rules know, is it good
//! enough for the model, and could it have produced the output as fast as the miner
//! says?
//!
//! Four checks, of two kinds:
//! - **Rules that can slash**, lower bounds from public peak specs (rules/gpus.toml) and
//!   work estimates counted low (rules/models.toml): `device_spec` and `latency`, the
//!   physical bound. An honest miner can only be slower than the bound; the evidence
//!   always states the bound and how it was computed.
//! - **Evidence for review** (`flag_only` in the rules): `device_known`, a hardware
//!   string the table lacks (judged against the table's fastest card meanwhile, so it
//!   never skips the latency checks); `latency_envelope`, a claim faster than any
//!   published honest run on that GPU by more than a calibrated margin; and
//!   `latency_peers`, a claim far faster than the other miners reporting that GPU.

use std::collections::HashMap;

use serde::Serialize;

use crate::ids::MinerId;
use crate::outcome::Outcome;
use crate::record::{Job, JobKind, JobRecord, Metrics};
use crate::rules::{Category, EnvelopeRun, Gpu, Model, Rules};

/// The GPU a hardware string names, if the table knows it.
pub fn find_gpu<'r>(rules: &'r Rules, hardware: &str) -> Option<(&'r str, &'r Gpu)> {
    rules.gpus.find(hardware)
}

/// `device_known`: the hardware string names a GPU of the table. An empty or unknown
/// string is never a pass.
pub fn check_known(hardware: &str, gpu: Option<(&str, &Gpu)>) -> Outcome {
    match gpu {
        Some((id, _)) => Outcome::pass(serde_json::json!({"hardware": hardware, "gpu": id})),
        None if hardware.trim().is_empty() => Outcome::fail(
            "no GPU reported: the hardware string is empty",
            serde_json::json!({"hardware": hardware}),
        ),
        None => Outcome::fail(
            format!(
                "unknown GPU {hardware:?}: not in rules/gpus.toml (latency judged as on the table's fastest card)"
            ),
            serde_json::json!({"hardware": hardware}),
        ),
    }
}

/// SD: the GPU matches or beats one of the category's minimum cards on both VRAM and
/// tensor throughput. LLM: it has the category's minimum VRAM. A category with no
/// minimum (unpriced) accepts any GPU.
pub fn meets_minimum(rules: &Rules, gpu: &Gpu, category: &Category) -> bool {
    if let Some(min_vram) = category.min_vram_gb {
        return gpu.vram_gb >= min_vram;
    }
    if category.min_gpus.is_empty() {
        return true;
    }
    category.min_gpus.iter().any(|id| {
        rules.gpus.gpus.get(id).is_some_and(|min| {
            gpu.vram_gb >= min.vram_gb && gpu.fp16_tensor_tflops >= min.fp16_tensor_tflops
        })
    })
}

/// `device_spec`: the reported GPU meets the category's minimum. An unknown GPU is
/// `device_known`'s finding, not this check's.
pub fn check_spec(
    rules: &Rules,
    hardware: &str,
    gpu: Option<(&str, &Gpu)>,
    category_id: &str,
    category: &Category,
) -> Outcome {
    let Some((gpu_id, gpu)) = gpu else {
        return Outcome::inconclusive(format!(
            "unknown GPU {hardware:?}: its minimum cannot be judged (see device_known)"
        ));
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
    pub exact: bool,
}

/// What one job asks of a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Workload {
    /// An image of `width`×`height` after the miner's clamping, at `steps` steps.
    Sd { width: u32, height: u32, steps: u32 },
    /// Tokens in and out.
    Llm(TokenCounts),
}

/// What an LLM costs per token: the model's active parameters (prefill FLOPs) and the
/// bytes of weights a decode step reads.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LlmCost {
    pub active_params_b: f64,
    pub weight_bytes_per_token_gb: f64,
    pub embedding_bytes_gb: f64,
}

impl LlmCost {
    pub fn of(model: &Model) -> Option<LlmCost> {
        Some(LlmCost {
            active_params_b: model.active_params_b?,
            weight_bytes_per_token_gb: model.weight_bytes_per_token_gb?,
            embedding_bytes_gb: model.embedding_bytes_gb.unwrap_or(0.0),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyBound {
    pub gpu: String,
    pub bound_s: f64,
    pub method: String,
}

/// The job's workload, where its size is known.
pub fn workload(
    rules: &Rules,
    record: &JobRecord,
    tokens: Option<TokenCounts>,
) -> Option<Workload> {
    match &record.job {
        Job::Sd { input, .. } => {
            let im = &rules.checks.image;
            let (width, height) =
                crate::checks::image::expected_size(input.width, input.height, im);
            let steps = crate::checks::image::effective_steps(input, im);
            Some(Workload::Sd {
                width,
                height,
                steps,
            })
        }
        Job::Llm { .. } => tokens.map(Workload::Llm),
    }
}

/// The physical lower bound on the inference latency of `work` on `gpu`, or `None`
/// where the category or model lacks the numbers.
///
/// - SD: steps × the category's TFLOP per megapixel-step (counted low) over the peak
///   tensor rate.
/// - LLM: the prefill's 2 × parameters × input tokens over the peak tensor rate, which
///   also yields the first output token; then one decode step per further output
///   token, each reading every weight but the input-embedding table (a step reads one
///   row of it) over the peak memory bandwidth.
pub fn bound(
    rules: &Rules,
    work: Workload,
    category: &Category,
    llm: Option<LlmCost>,
    gpu_id: &str,
    gpu: &Gpu,
) -> Option<LatencyBound> {
    let lat = &rules.checks.latency;
    let compute = gpu.fp16_tensor_tflops * lat.max_compute_efficiency;
    match work {
        Workload::Sd {
            width,
            height,
            steps,
        } => {
            let per_step = category.tflop_per_megapixel_step?;
            let mp = f64::from(width) * f64::from(height) / 1e6;
            let tflop = f64::from(steps) * per_step * mp;
            Some(LatencyBound {
                gpu: gpu_id.to_owned(),
                bound_s: tflop / compute,
                method: format!(
                    "{steps} steps x {per_step} TFLOP/MP-step x {mp:.3} MP ({width}x{height}) = {tflop:.2} TFLOP, over {} TFLOPS x {} = {compute:.1} TFLOPS",
                    gpu.fp16_tensor_tflops, lat.max_compute_efficiency
                ),
            })
        }
        Workload::Llm(t) => {
            let c = llm?;
            let bandwidth = gpu.memory_bandwidth_gbs * lat.max_bandwidth_efficiency;
            let bytes_gb = c.weight_bytes_per_token_gb - c.embedding_bytes_gb;
            let steps = t.output.saturating_sub(1);
            let decode_s = steps as f64 * bytes_gb / bandwidth;
            let prefill_tflop = 2.0 * c.active_params_b * 1e9 * t.input as f64 / 1e12;
            let prefill_s = prefill_tflop / compute;
            Some(LatencyBound {
                gpu: gpu_id.to_owned(),
                bound_s: decode_s + prefill_s,
                method: format!(
                    "prefill: 2 x {}e9 params x {} input tokens = {prefill_tflop:.2} TFLOP / ({} TFLOPS x {}) = {prefill_s:.3} s, giving the first output token; decode: {steps} more tokens x {bytes_gb:.2} GB of weights ({} GB less the {} GB embedding table, read one row a token) / ({} GB/s x {}) = {decode_s:.3} s{}",
                    c.active_params_b,
                    t.input,
                    gpu.fp16_tensor_tflops,
                    lat.max_compute_efficiency,
                    c.weight_bytes_per_token_gb,
                    c.embedding_bytes_gb,
                    gpu.memory_bandwidth_gbs,
                    lat.max_bandwidth_efficiency,
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

/// [`bound`] for a job record.
pub fn inference_bound(
    rules: &Rules,
    record: &JobRecord,
    model: &Model,
    category: &Category,
    gpu_id: &str,
    gpu: &Gpu,
    tokens: Option<TokenCounts>,
) -> Option<LatencyBound> {
    let work = workload(rules, record, tokens)?;
    let llm = match category.kind {
        JobKind::Sd => None,
        JobKind::Llm => Some(LlmCost::of(model)?),
    };
    bound(rules, work, category, llm, gpu_id, gpu)
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
    if !problems.is_empty() {
        return problems;
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
    // The parts happen one after another inside the request.
    let sum = m.loading_latency.unwrap_or(0.0) + m.inference_latency + m.upload_latency;
    if problems.is_empty() && sum > m.request_latency + slack_s {
        problems.push(format!(
            "loading, inference and upload add up to {sum:.3} s, longer than the whole request ({} s)",
            m.request_latency
        ));
    }
    problems
}

/// `latency`: the reported latencies are consistent, and inference is no faster than
/// the physical bound.
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
        return Outcome::inconclusive("no physical latency bound: the model's cost is unknown");
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

/// How close to the physical bound a claim is: the bound's time over the claimed time
/// (1 is the bound itself). `None` for a latency that is not a positive number, which
/// `latency` fails on its own.
pub fn claimed_efficiency(bound: &LatencyBound, inference_s: f64) -> Option<f64> {
    (inference_s.is_finite() && inference_s > 0.0).then(|| bound.bound_s / inference_s)
}

/// The fastest published run a claim of `category_id` on `gpu_id` is held to: for
/// images the GPU's own where one was published, else the category's best on any GPU
/// (compute efficiency does not carry over between cards: a small image leaves a big GPU
/// idle); for LLMs the category's best on any GPU (a decode step reads the same bytes
/// on every card).
pub fn envelope_run<'r>(
    rules: &'r Rules,
    category_id: &str,
    category: &Category,
    gpu_id: Option<&str>,
) -> Option<&'r EnvelopeRun> {
    let runs = rules
        .checks
        .latency
        .envelope
        .iter()
        .filter(|e| e.category == category_id);
    let best = |it: &mut dyn Iterator<Item = &'r EnvelopeRun>| {
        it.max_by(|a, b| a.efficiency.total_cmp(&b.efficiency))
    };
    let own = match (category.kind, gpu_id) {
        (JobKind::Sd, Some(id)) => best(&mut runs.clone().filter(|e| e.gpu == id)),
        _ => None,
    };
    own.or_else(|| best(&mut runs.clone()))
}

/// `latency_envelope`: the claim is no faster than the fastest published honest run
/// (see [`envelope_run`]) times the calibrated margin, and never faster than the
/// physical bound.
pub fn check_envelope(
    rules: &Rules,
    record: &JobRecord,
    bound: Option<&LatencyBound>,
    category_id: &str,
    category: &Category,
    gpu_id: Option<&str>,
) -> Outcome {
    let Some(bound) = bound else {
        return Outcome::inconclusive("no physical latency bound: the model's cost is unknown");
    };
    let Some(claimed) = claimed_efficiency(bound, record.metrics.inference_latency) else {
        return Outcome::inconclusive("the reported inference latency is not a positive number");
    };
    let Some(run) = envelope_run(rules, category_id, category, gpu_id) else {
        return Outcome::inconclusive(format!("no published run of {category_id} to compare with"));
    };
    let margin = rules.checks.latency.envelope_margin;
    let limit = (run.efficiency * margin).min(1.0);
    let fastest_s = bound.bound_s / limit;
    let details = serde_json::json!({
        "inference_latency_s": record.metrics.inference_latency,
        "fastest_allowed_s": fastest_s,
        "bound_s": bound.bound_s,
        "claimed_share_of_bound_speed": claimed,
        "published_share_of_bound_speed": run.efficiency,
        "published_run": run.run,
        "published_gpu": run.gpu,
        "margin": margin,
        "gpu": bound.gpu,
    });
    if claimed > limit {
        Outcome::fail(
            format!(
                "inference took {:.3} s on {}: {:.1}x faster than the fastest published run ({}) allows, over a margin of {margin}",
                record.metrics.inference_latency,
                bound.gpu,
                claimed / run.efficiency,
                run.run
            ),
            details,
        )
    } else {
        Outcome::pass(details)
    }
}

/// The latest claimed speed of each miner per GPU and category, bounded: the state of
/// `latency_peers`. A speed is a claim's share of the physical bound's speed, so jobs
/// of any size compare.
#[derive(Debug, Default)]
pub struct PeerSpeeds {
    groups: HashMap<(String, String), PeerGroup>,
}

#[derive(Debug, Default)]
struct PeerGroup {
    /// Miner → (its latest claimed speed, when it was seen).
    latest: HashMap<MinerId, (f64, u64)>,
    clock: u64,
}

impl PeerSpeeds {
    pub fn new() -> PeerSpeeds {
        PeerSpeeds::default()
    }

    /// Judges a claim against the other miners reporting the same GPU and category,
    /// then remembers it.
    pub fn check(
        &mut self,
        rules: &Rules,
        gpu_id: &str,
        category_id: &str,
        miner: &MinerId,
        claimed: f64,
    ) -> Outcome {
        let lat = &rules.checks.latency;
        let group = self
            .groups
            .entry((gpu_id.to_owned(), category_id.to_owned()))
            .or_default();
        let mut others: Vec<f64> = group
            .latest
            .iter()
            .filter(|(m, _)| *m != miner)
            .map(|(_, (v, _))| *v)
            .collect();
        let outcome = if others.len() < lat.peer_min_miners {
            Outcome::inconclusive(format!(
                "{} other miners reported {gpu_id} for {category_id}; {} are needed",
                others.len(),
                lat.peer_min_miners
            ))
        } else {
            others.sort_by(f64::total_cmp);
            let at = ((others.len() - 1) as f64 * lat.peer_quantile).round() as usize;
            let quantile = others[at.min(others.len() - 1)];
            let limit = quantile * lat.envelope_margin;
            let details = serde_json::json!({
                "claimed_share_of_bound_speed": claimed,
                "peers": others.len(),
                "peer_quantile": lat.peer_quantile,
                "peer_quantile_share_of_bound_speed": quantile,
                "margin": lat.envelope_margin,
                "gpu": gpu_id,
                "category": category_id,
            });
            if claimed > limit {
                Outcome::fail(
                    format!(
                        "{:.1}x faster than the {:.0}th percentile of the {} other miners reporting {gpu_id} for {category_id}, over a margin of {}",
                        claimed / quantile,
                        lat.peer_quantile * 100.0,
                        others.len(),
                        lat.envelope_margin
                    ),
                    details,
                )
            } else {
                Outcome::pass(details)
            }
        };
        group.clock += 1;
        group.latest.insert(miner.clone(), (claimed, group.clock));
        if group.latest.len() > lat.peer_capacity {
            // Forget the miner seen least recently.
            let oldest = group
                .latest
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(m, _)| m.clone());
            if let Some(m) = oldest {
                group.latest.remove(&m);
            }
        }
        outcome
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
        let id = |n: &str| find_gpu(&r, n).map(|(id, _)| id);
        assert_eq!(id("NVIDIA GeForce RTX 4090"), Some("rtx4090"));
        assert_eq!(id("rtx 4090"), Some("rtx4090"));
        assert_eq!(
            id("NVIDIA GeForce RTX 4070 Ti SUPER"),
            Some("rtx4070tisuper")
        );
        assert_eq!(id("NVIDIA A100-SXM4-80GB"), Some("a100_80gb"));
        assert_eq!(
            id("NVIDIA GeForce RTX 4090 Laptop GPU"),
            Some("rtx4090_laptop")
        );
        assert_eq!(id("NVIDIA GeForce RTX 4090 D"), Some("rtx4090d"));
        assert_eq!(id("Tesla T4"), Some("t4"));
        assert_eq!(id("T4"), Some("t4"));
        assert_eq!(id("AMD Instinct MI300X"), Some("mi300x"));
        assert_eq!(id(""), None);
        assert_eq!(id("NVIDIA"), None);
        assert_eq!(id("3dfx Voodoo5 6000"), None);
    }

    #[test]
    fn every_card_the_issue_found_missing_is_in_the_table() {
        let r = rules();
        for name in [
            "Tesla T4",
            "Tesla V100-SXM2-16GB",
            "NVIDIA L40",
            "NVIDIA A40",
            "NVIDIA A10G",
            "NVIDIA RTX 6000 Ada Generation",
            "NVIDIA RTX 5000 Ada Generation",
            "NVIDIA RTX 4000 Ada Generation",
            "NVIDIA GeForce RTX 2080 Ti",
            "NVIDIA GeForce GTX 1080 Ti",
            "NVIDIA GeForce RTX 3050",
            "NVIDIA RTX A2000",
            "NVIDIA GeForce RTX 4060 Laptop GPU",
            "NVIDIA GeForce RTX 5090",
            "NVIDIA GeForce RTX 4090 D",
            "NVIDIA H100 NVL",
            "NVIDIA H200",
        ] {
            assert!(find_gpu(&r, name).is_some(), "{name}");
        }
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
        assert!(!meets_minimum(&r, gpu("Tesla T4"), cat("sdxl")));
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

    #[test]
    fn an_unknown_or_empty_hardware_string_fails_device_known() {
        let r = rules();
        assert!(check_known("", find_gpu(&r, "")).is_fail());
        assert!(check_known("  ", find_gpu(&r, "  ")).is_fail());
        assert!(check_known("Voodoo", find_gpu(&r, "Voodoo")).is_fail());
        assert!(!check_known("RTX 4090", find_gpu(&r, "RTX 4090")).is_fail());
    }

    #[test]
    fn the_table_s_fastest_card_is_at_least_as_fast_as_every_card() {
        let r = rules();
        let f = r.gpus.fastest();
        for g in r.gpus.gpus.values() {
            assert!(f.fp16_tensor_tflops >= g.fp16_tensor_tflops);
            assert!(f.memory_bandwidth_gbs >= g.memory_bandwidth_gbs);
        }
    }

    #[test]
    fn the_llm_bound_reads_one_embedding_row_and_takes_the_first_token_from_the_prefill() {
        let r = rules();
        let (id, gpu) = find_gpu(&r, "RTX 4090").unwrap();
        let cat = r.category("llama3_8b").unwrap();
        let cost = LlmCost::of(r.model("hermes-3-llama3.1-8b").unwrap()).unwrap();
        let at = |input, output| {
            let t = TokenCounts {
                input,
                output,
                exact: true,
            };
            bound(&r, Workload::Llm(t), cat, Some(cost), id, gpu)
                .unwrap()
                .bound_s
        };
        let lat = &r.checks.latency;
        let step = (16.06 - 1.05) / (1008.0 * lat.max_bandwidth_efficiency);
        // One output token is the prefill's: no decode step at all.
        assert_eq!(at(0, 1), 0.0);
        assert!((at(0, 101) - 100.0 * step).abs() < 1e-12);
        let prefill = 2.0 * 8.03e9 * 512.0 / 1e12 / (330.3 * lat.max_compute_efficiency);
        assert!((at(512, 1) - prefill).abs() < 1e-12);
    }

    fn miner(i: u8) -> MinerId {
        MinerId::parse(&format!("0x{:040x}", i)).unwrap()
    }

    #[test]
    fn a_claim_far_faster_than_its_peers_is_flagged_once_enough_peers_reported() {
        let r = rules();
        let mut peers = PeerSpeeds::new();
        let min = r.checks.latency.peer_min_miners;
        for i in 0..min as u8 {
            let o = peers.check(
                &r,
                "rtx4090",
                "sdxl",
                &miner(i),
                0.10 + 0.001 * f64::from(i),
            );
            assert!(matches!(o, Outcome::Inconclusive { .. }), "{o:?}");
        }
        let fast = r.checks.latency.envelope_margin * 0.2;
        assert!(
            peers
                .check(&r, "rtx4090", "sdxl", &miner(200), fast)
                .is_fail()
        );
        assert!(
            !peers
                .check(&r, "rtx4090", "sdxl", &miner(201), 0.12)
                .is_fail()
        );
        // Another GPU's miners are not this one's peers.
        let o = peers.check(&r, "rtx3090", "sdxl", &miner(202), fast);
        assert!(matches!(o, Outcome::Inconclusive { .. }));
    }

    #[test]
    fn peers_are_bounded_and_a_miner_is_not_its_own_peer() {
        let mut r = rules();
        r.checks.latency.peer_capacity = r.checks.latency.peer_min_miners + 1;
        let mut peers = PeerSpeeds::new();
        for i in 0..200u8 {
            peers.check(&r, "rtx4090", "sdxl", &miner(i), 0.1);
        }
        let g = &peers.groups[&("rtx4090".to_owned(), "sdxl".to_owned())];
        assert_eq!(g.latest.len(), r.checks.latency.peer_capacity);
        // One miner repeating itself never becomes its own crowd.
        let mut alone = PeerSpeeds::new();
        for _ in 0..50 {
            let o = alone.check(&r, "rtx4090", "sdxl", &miner(1), 0.1);
            assert!(matches!(o, Outcome::Inconclusive { .. }));
        }
    }
}

//! Builds `fixtures/audit-demo/`: a population of honest and cheating miners covering
//! every check, deterministically (same bytes on every run and machine).
//!
//!     cargo run --example gen_audit_demo                          # rewrite the demo
//!     cargo run --example gen_audit_demo -- --bases ../shared/images  # refresh fixtures/base first
//!
//! `tests/fixtures_fresh.rs` regenerates into a temporary folder and compares bytes, so
//! the committed demo can never drift from this generator. fixtures/README.md describes
//! every miner and what it proves.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use image::DynamicImage;
use proctor::checks::llm::{Alternative, TokenScore, TokenScores};
use proctor::checks::model_file;
use proctor::rules::Rules;
use proctor::synth;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// The photos from ../shared/images the bases are cut from, and the crop each uses.
const BASES: [(&str, &str); 5] = [
    ("astronaut", "astronaut.png"),
    ("coffee", "coffee.png"),
    ("rocket", "rocket.jpg"),
    ("chelsea", "chelsea.png"),
    ("hubble", "hubble_deep_field.jpg"),
];
/// Bases are BASE_SIDE square; each job's "generated" image is a SIDE-square crop of one,
/// at one of 9 offsets and optionally mirrored: 18 distinct images per base, so that jobs
/// with different inputs never share a picture by accident, as in a real SD network.
const BASE_SIDE: u32 = 512;
const SIDE: u32 = 384;

#[allow(dead_code)]
fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bases") {
        let src = PathBuf::from(args.get(i + 1).expect("--bases needs a folder"));
        make_bases(&src, &root.join("base"));
    }
    let out = root.join("audit-demo");
    let _ = std::fs::remove_dir_all(&out);
    generate(&root.join("base"), &out);
    println!("wrote {}", out.display());
}

/// Centre-crops each photo to a square and resizes it to BASE_SIDE square, as PNG.
#[allow(dead_code)]
fn make_bases(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("create base dir");
    for (name, file) in BASES {
        let img = image::open(src.join(file)).expect("base photo decodes");
        let s = img.width().min(img.height());
        let sq = img.crop_imm((img.width() - s) / 2, (img.height() - s) / 2, s, s);
        let small = sq.resize_exact(BASE_SIDE, BASE_SIDE, image::imageops::FilterType::Lanczos3);
        std::fs::write(dst.join(format!("{name}.png")), synth::encode_png(&small))
            .expect("write base");
    }
}

fn miner(name: &str) -> String {
    let h = blake3::hash(name.as_bytes()).to_hex();
    format!("0x{}-gpu0", &h[..40])
}

/// What the audit must do about each demo miner: honest miners get no action, cheats a
/// slash or at least a review flag. Two answers each: under the shipped rules, and
/// under rules whose measured rates hold on the demo's models.
///
/// Only checks with a measured false-positive rate can slash, only on the models the
/// rate was measured on, and only on evidence an honest miner shows with a probability
/// under the lifetime budget's per-decision threshold, its tail priced at the tail
/// margin: seven failed re-runs of a measured image check do that. The shipped image rate was measured on photographs and the LLM rates
/// on SmolLM2-135M, neither a model the demo's jobs name, so under the shipped rules
/// every cheat is flagged for staff; calibrated on the demo's models, the re-run cheats
/// are slashed. Cheats caught by assumed-rate checks (reuse, canaries, challenges,
/// sizes, hostile uploads, device claims) and single failures are flagged either way.
const EXPECTED: [(&str, &str, &str); 18] = [
    ("honest-sd-a", "none", "none"),
    ("honest-sd-b", "none", "none"),
    ("honest-sd-c", "none", "none"),
    ("honest-llm-a", "none", "none"),
    ("honest-llm-b", "none", "none"),
    ("cheat-fewer-steps", "flag_for_review", "slash"),
    ("cheat-low-resolution", "flag_for_review", "slash"),
    ("cheat-other-image", "flag_for_review", "slash"),
    ("cheat-reused-image", "flag_for_review", "flag_for_review"),
    ("cheat-wrong-size", "flag_for_review", "flag_for_review"),
    (
        "cheat-hostile-uploads",
        "flag_for_review",
        "flag_for_review",
    ),
    (
        "cheat-impossible-latency",
        "flag_for_review",
        "flag_for_review",
    ),
    ("cheat-under-spec-gpu", "flag_for_review", "flag_for_review"),
    ("cheat-unknown-gpu", "flag_for_review", "flag_for_review"),
    ("cheat-tampered-model", "flag_for_review", "flag_for_review"),
    ("cheat-substituted-model", "flag_for_review", "slash"),
    ("cheat-canned-answers", "flag_for_review", "flag_for_review"),
    ("cheat-failed-canary", "flag_for_review", "flag_for_review"),
];

/// Jobs of each cheat a measured check re-runs: enough failures to slash (seven at the
/// image rate times the tail margin; six did at the rate itself).
const RERUN_CHEAT_JOBS: usize = 7;
/// The substituted model's jobs: the LLM rates are the real model's, measured on a
/// smaller honest sample than the fixture's, so their bounds are wider and a slash needs
/// more failed jobs (docs/DETECTION.md). Eight still slash at the tail margin:
/// `llm_eos_skipped` fails all eight, 6 × 0.0216⁸ = 2.8e-13 with six slashing tests.
const SUBSTITUTE_JOBS: usize = 8;

struct Gen {
    out: PathBuf,
    lines: Vec<String>,
    minute: i64,
    rng: ChaCha8Rng,
    bases: BTreeMap<&'static str, DynamicImage>,
    /// Crops already handed out per base.
    variants: BTreeMap<String, u32>,
    rules: Rules,
}

/// The reference GPU's image for a base: what an honest re-run produces.
struct SdJob<'a> {
    id: &'a str,
    miner: &'a str,
    model: &'a str,
    prompt: &'a str,
    size: (u32, u32),
    steps: u32,
    seed: i64,
    hardware: &'a str,
    inference_s: f64,
    /// Bytes uploaded by the miner, and the file extension of the key.
    output: (Vec<u8>, &'a str),
    reference: Option<&'a DynamicImage>,
    challenge: Option<(String, bool)>,
}

struct LlmJob<'a> {
    id: &'a str,
    miner: &'a str,
    model: &'a str,
    prompt: &'a str,
    temperature: f64,
    max_tokens: u32,
    hardware: &'a str,
    seconds_per_token: f64,
    text: &'a str,
    /// Inline text, or an S3 key under objects/.
    inline: bool,
    scores: Option<ScoreStyle>,
}

#[derive(Clone, Copy)]
enum ScoreStyle {
    /// Sampled honestly from the reference at a moderate temperature.
    Honest,
    /// Greedy decoding: every token the reference's argmax.
    Greedy,
    /// Another model's tokens: many ranks and logprobs the reference finds implausible,
    /// and one near-certain EOS run past.
    Substituted,
}

impl Gen {
    fn submitted_at(&mut self) -> String {
        self.minute += 1;
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z").expect("valid")
            + chrono::Duration::minutes(self.minute);
        t.to_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.out.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write fixture");
    }

    /// The reference GPU's output for a job: crop `variant` of a base, stored as JPEG q98.
    fn reference(&mut self, name: &str) -> DynamicImage {
        let used = self.variants.entry(name.to_owned()).or_insert(0);
        let variant = *used;
        *used += 1;
        assert!(variant < 18, "base {name} has no unused crop left");
        let step = (BASE_SIDE - SIDE) / 2;
        let (dx, dy) = (step * (variant % 3), step * (variant / 3 % 3));
        let mut crop = self.bases[name].crop_imm(dx, dy, SIDE, SIDE);
        if variant / 9 % 2 == 1 {
            crop = crop.fliph();
        }
        synth::decode_trusted(&synth::encode_jpeg(&crop, 98)).expect("decodes")
    }

    fn push(&mut self, v: Value) {
        self.lines.push(v.to_string());
    }

    fn sd(&mut self, j: SdJob) {
        let key = format!("jobs/{}.{}", j.id, j.output.1);
        self.write(&format!("objects/{key}"), &j.output.0);
        if let Some(r) = j.reference {
            self.write(
                &format!("reference/{}/image.jpg", j.id),
                &synth::encode_jpeg(r, 98),
            );
        }
        let mut rec = json!({
            "schema_version": 1,
            "job_id": j.id,
            "miner_id": j.miner,
            "model_id": j.model,
            "kind": "sd",
            "submitted_at": self.submitted_at(),
            "input": {"prompt": j.prompt, "neg_prompt": "lowres, bad anatomy", "width": j.size.0,
                      "height": j.size.1, "num_iterations": j.steps, "guidance_scale": 7.0, "seed": j.seed},
            "output": {"image_key": key},
            "metrics": {"request_latency": j.inference_s + 0.9, "loading_latency": null,
                        "inference_latency": j.inference_s, "upload_latency": 0.4,
                        "hardware": j.hardware, "miner_version": "1.4.2"},
        });
        if let Some((file, honest)) = j.challenge {
            rec["challenge"] = self.challenge(j.id, &file, honest);
        }
        self.push(rec);
    }

    /// A synthetic model file stands in for the real one: the reference host answers from
    /// it, an honest miner holds the same bytes, a cheat holds a pruned copy.
    fn challenge(&mut self, job_id: &str, file: &str, honest: bool) -> Value {
        let mut stream = blake3::Hasher::new_derive_key("proctor demo model file")
            .update(file.as_bytes())
            .finalize_xof();
        let mut bytes = vec![0u8; 3 << 20];
        stream.fill(&mut bytes);
        let nonce = hex::encode(&blake3::hash(job_id.as_bytes()).as_bytes()[..16]);
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(tmp.path(), &bytes).expect("write");
        let exp = model_file::answer_file(tmp.path(), file, &nonce, &self.rules.checks.challenge)
            .expect("answer");
        self.write(
            &format!("reference/{job_id}/challenge.json"),
            serde_json::to_string_pretty(&exp).expect("json").as_bytes(),
        );
        let answer = if honest {
            exp.expected.clone()
        } else {
            // The cheat zeroed a slice of weights in its copy.
            let r = exp.range;
            bytes[(r.offset + r.length / 3) as usize..(r.offset + r.length / 2) as usize].fill(0);
            std::fs::write(tmp.path(), &bytes).expect("write");
            model_file::answer_file(tmp.path(), file, &nonce, &self.rules.checks.challenge)
                .expect("answer")
                .expected
        };
        json!({"nonce": nonce, "file": file, "answer": answer})
    }

    fn llm(&mut self, j: LlmJob) {
        let words: Vec<String> = j.text.split_inclusive(' ').map(str::to_owned).collect();
        let n = words.len();
        let prompt_tokens = (j.prompt.len() / 4 + 12) as u32;
        let mut output = json!({});
        if j.inline {
            output["text"] = j.text.into();
        } else {
            let key = format!("jobs/{}.txt", j.id);
            self.write(&format!("objects/{key}"), j.text.as_bytes());
            output["text_key"] = key.into();
        }
        if let Some(style) = j.scores {
            let scores = self.scores(j.text, &words, style, prompt_tokens);
            self.write(
                &format!("reference/{}/scores.json", j.id),
                serde_json::to_string_pretty(&scores)
                    .expect("json")
                    .as_bytes(),
            );
        }
        let inference = (n as f64 * 1.3).ceil() * j.seconds_per_token + 0.15;
        let rec = json!({
            "schema_version": 1,
            "job_id": j.id,
            "miner_id": j.miner,
            "model_id": j.model,
            "kind": "llm",
            "submitted_at": self.submitted_at(),
            "input": {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                                   {"role": "user", "content": j.prompt}],
                      "temperature": j.temperature, "max_tokens": j.max_tokens, "seed": 7},
            "output": output,
            "metrics": {"request_latency": inference + 0.3, "loading_latency": null,
                        "inference_latency": inference, "upload_latency": 0.0,
                        "hardware": j.hardware, "miner_version": "llm-1.1.0"},
        });
        self.push(rec);
    }

    /// Synthetic teacher-forced scores with the statistics of each style. The real scorer
    /// (reference re-execution) replaces these with model output.
    fn scores(
        &mut self,
        text: &str,
        words: &[String],
        style: ScoreStyle,
        prompt_tokens: u32,
    ) -> TokenScores {
        let n = words.len();
        let tokens = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let top1_p: f64 = match style {
                    ScoreStyle::Greedy => self.rng.random_range(0.7..0.99),
                    _ => self.rng.random_range(0.35..0.95),
                };
                let roll: f64 = self.rng.random();
                let (rank, p) = match style {
                    ScoreStyle::Greedy => (1, top1_p),
                    ScoreStyle::Honest if roll < 0.65 => (1, top1_p),
                    ScoreStyle::Honest if roll < 0.95 => (
                        self.rng.random_range(2..6),
                        self.rng.random_range(0.01..0.2),
                    ),
                    ScoreStyle::Honest => (
                        self.rng.random_range(6..60),
                        self.rng.random_range(0.0005..0.01),
                    ),
                    ScoreStyle::Substituted if roll < 0.45 => (1, top1_p),
                    ScoreStyle::Substituted if roll < 0.7 => (
                        self.rng.random_range(2..40),
                        self.rng.random_range(0.001..0.05),
                    ),
                    ScoreStyle::Substituted => (
                        self.rng.random_range(500..8000),
                        self.rng.random_range(1e-7..5e-5),
                    ),
                };
                let mut top = vec![Alternative {
                    id: 1000 + i as u32,
                    logprob: top1_p.ln(),
                }];
                let mut rest = (1.0 - top1_p) * 0.6;
                for k in 0..4u32 {
                    top.push(Alternative {
                        id: 2000 + k,
                        logprob: rest.max(1e-9).ln(),
                    });
                    rest *= 0.4;
                }
                if rank > 1 && rank <= 5 {
                    top[rank as usize - 1].logprob = p.ln().min(top[rank as usize - 2].logprob);
                    top[rank as usize - 1].id = 5000 + i as u32;
                }
                top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
                let eos_p: f64 = match style {
                    ScoreStyle::Substituted if i == n / 2 => 0.99995,
                    _ => self.rng.random_range(1e-7..1e-3),
                };
                TokenScore {
                    id: if rank == 1 {
                        1000 + i as u32
                    } else {
                        5000 + i as u32
                    },
                    text: w.clone(),
                    logprob: p.ln(),
                    rank,
                    top,
                    eos_logprob: eos_p.ln(),
                    tempered: None,
                }
            })
            .collect();
        TokenScores {
            model_id: "reference".into(),
            eos_token_id: 2,
            prompt_tokens,
            output_text_blake3: blake3::hash(text.as_bytes()).to_hex().to_string(),
            tokens,
            end_eos_logprob: (0.9f64).ln(),
            end_top_logprob: (0.9f64).ln(),
            // Every job carries the miner's stop words; one was unlikely after the text.
            end_stop_logprob: Some((1e-6f64).ln()),
            panel: Vec::new(),
        }
    }
}

/// A truncated PNG: the miner's upload broke off.
fn truncated_png(img: &DynamicImage) -> Vec<u8> {
    let bytes = synth::encode_png(img);
    bytes[..bytes.len() / 3].to_vec()
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// A PNG that declares `width`×`height` pixels of 8-bit RGBA (`bit_depth` 8) or 16-bit
/// (`bit_depth` 16) whose IDAT is zlib-compressed zero rows: a few kilobytes that inflate
/// to as much memory as the header claims.
pub fn png_bomb(width: u32, height: u32, bit_depth: u8, rows: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, 6, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    let row = vec![0u8; 1 + width as usize * 4 * (bit_depth as usize / 8)];
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..rows {
        z.write_all(&row).expect("compress");
    }
    png_chunk(&mut out, b"IDAT", &z.finish().expect("compress"));
    png_chunk(&mut out, b"IEND", &[]);
    out
}

pub fn generate(base_dir: &Path, out: &Path) {
    let rules = Rules::embedded().expect("shipped rules");
    let bases = BASES
        .iter()
        .map(|(name, _)| {
            let bytes =
                std::fs::read(base_dir.join(format!("{name}.png"))).expect("base image present");
            (*name, synth::decode_trusted(&bytes).expect("base decodes"))
        })
        .collect();
    let mut g = Gen {
        out: out.to_owned(),
        lines: Vec::new(),
        minute: 0,
        rng: ChaCha8Rng::seed_from_u64(20261120),
        bases,
        variants: BTreeMap::new(),
        rules,
    };
    let s = (SIDE, SIDE);
    let jpeg = |img: &DynamicImage| (synth::encode_jpeg(img, 98), "jpg");
    let png = |img: &DynamicImage| (synth::encode_png(img), "png");
    let honest = |img: &DynamicImage, seed: u64| synth::noise(img, 2.0, seed);
    let prompts = [
        (
            "astronaut",
            "portrait of an astronaut in a white suit, studio light",
        ),
        ("coffee", "a cup of coffee on a saucer, top view"),
        ("rocket", "a rocket on the launch pad at dawn"),
        ("chelsea", "a tabby cat looking at the camera"),
        ("hubble", "deep space, galaxies, hubble photograph"),
    ];

    // ---- honest image miners --------------------------------------------------------
    let m = miner("honest-sd-a");
    for (i, (base, prompt)) in prompts.iter().take(4).enumerate() {
        let r = g.reference(base);
        let id = format!("sd-honest-a-{i}");
        let output = if i == 0 {
            png(&honest(&r, i as u64))
        } else {
            jpeg(&honest(&r, i as u64))
        };
        g.sd(SdJob {
            id: &id,
            miner: &m,
            model: "ChilloutMix",
            prompt,
            size: s,
            steps: 25,
            seed: 1000 + i as i64,
            hardware: "NVIDIA GeForce RTX 4090",
            inference_s: 1.4,
            output,
            reference: Some(&r),
            challenge: None,
        });
    }
    // An honest PNG → JPEG q98 re-encode of the reference image itself, on an SDXL model.
    let m = miner("honest-sd-b");
    for (i, (base, prompt)) in prompts.iter().skip(1).take(3).enumerate() {
        let r = g.reference(base);
        let id = format!("sd-honest-b-{i}");
        g.sd(SdJob {
            id: &id,
            miner: &m,
            model: "AnimagineXL",
            prompt,
            size: s,
            steps: 30,
            seed: 2000 + i as i64,
            hardware: "NVIDIA GeForce RTX 3090",
            inference_s: 2.2,
            output: jpeg(&r),
            reference: Some(&r),
            challenge: Some(("animagine-xl-3.1.safetensors".into(), true)),
        });
    }
    // Honest, not re-run (no reference), one job for a model the registry does not know.
    let m = miner("honest-sd-c");
    let r = g.reference("hubble");
    g.sd(SdJob {
        id: "sd-honest-c-0",
        miner: &m,
        model: "BrainDance",
        prompt: prompts[4].1,
        size: s,
        steps: 20,
        seed: 3000,
        hardware: "NVIDIA RTX A5000",
        inference_s: 1.9,
        output: jpeg(&honest(&r, 30)),
        reference: None,
        challenge: None,
    });
    let out = jpeg(&honest(&g.reference("astronaut"), 31));
    g.sd(SdJob {
        id: "sd-honest-c-1",
        miner: &m,
        model: "MysteryDiffusion",
        prompt: prompts[0].1,
        size: s,
        steps: 20,
        seed: 3001,
        hardware: "NVIDIA RTX A5000",
        inference_s: 1.9,
        output: out,
        reference: None,
        challenge: None,
    });

    // ---- cheating image miners ------------------------------------------------------
    // Fewer steps: a blurred image.
    let m = miner("cheat-fewer-steps");
    for (i, (base, prompt)) in prompts.iter().cycle().take(RERUN_CHEAT_JOBS).enumerate() {
        let r = g.reference(base);
        let id = format!("sd-blur-{i}");
        g.sd(SdJob {
            id: &id,
            miner: &m,
            model: "ChilloutMix",
            prompt,
            size: s,
            steps: 25,
            seed: 4000 + i as i64,
            hardware: "NVIDIA GeForce RTX 4090",
            inference_s: 0.9,
            output: jpeg(&synth::blur(&r, 2.0)),
            reference: Some(&r),
            challenge: None,
        });
    }
    // Lower resolution: generated at half size and upscaled.
    let m = miner("cheat-low-resolution");
    for (i, (base, prompt)) in prompts
        .iter()
        .cycle()
        .skip(1)
        .take(RERUN_CHEAT_JOBS)
        .enumerate()
    {
        let r = g.reference(base);
        let id = format!("sd-lowres-{i}");
        g.sd(SdJob {
            id: &id,
            miner: &m,
            model: "ChilloutMix",
            prompt,
            size: s,
            steps: 25,
            seed: 5000 + i as i64,
            hardware: "NVIDIA GeForce RTX 4090",
            inference_s: 0.7,
            output: png(&synth::down_up(&r, 2)),
            reference: Some(&r),
            challenge: None,
        });
    }
    // A different image: another service's output.
    let m = miner("cheat-other-image");
    for i in 0..RERUN_CHEAT_JOBS {
        let (base, prompt) = prompts[i % prompts.len()];
        let (other, _) = prompts[(i + 2) % prompts.len()];
        let id = format!("sd-other-{i}");
        let r = g.reference(base);
        let wrong = honest(&g.reference(other), 60 + i as u64);
        g.sd(SdJob {
            id: &id,
            miner: &m,
            model: "ChilloutMix",
            prompt,
            size: s,
            steps: 25,
            seed: 6000 + i as i64,
            hardware: "NVIDIA GeForce RTX 4090",
            inference_s: 1.5,
            output: jpeg(&wrong),
            reference: Some(&r),
            challenge: None,
        });
    }
    // Reuse: one image returned for three different prompts (nothing re-run).
    let m = miner("cheat-reused-image");
    let canned = jpeg(&honest(&g.reference("rocket"), 70));
    for (i, (_, prompt)) in prompts.iter().take(3).enumerate() {
        let id = format!("sd-reuse-{i}");
        g.sd(SdJob {
            id: &id,
            miner: &m,
            model: "ChilloutMix",
            prompt,
            size: s,
            steps: 25,
            seed: 7000 + i as i64,
            hardware: "NVIDIA GeForce RTX 4090",
            inference_s: 1.5,
            output: canned.clone(),
            reference: None,
            challenge: None,
        });
    }
    // Wrong dimensions: a 384x384 request answered at 320x320.
    let m = miner("cheat-wrong-size");
    let r = g.reference("chelsea");
    let small = DynamicImage::ImageRgb8(image::imageops::resize(
        &r.to_rgb8(),
        320,
        320,
        image::imageops::FilterType::Triangle,
    ));
    g.sd(SdJob {
        id: "sd-wrong-size-0",
        miner: &m,
        model: "ChilloutMix",
        prompt: prompts[3].1,
        size: s,
        steps: 25,
        seed: 8000,
        hardware: "NVIDIA GeForce RTX 4090",
        inference_s: 1.2,
        output: jpeg(&small),
        reference: Some(&r),
        challenge: None,
    });
    // Hostile uploads: a truncated PNG, a decompression bomb, and bytes that are no image.
    let m = miner("cheat-hostile-uploads");
    let hostile: [(&str, Vec<u8>); 3] = [
        ("sd-corrupt-0", truncated_png(&g.reference("coffee"))),
        ("sd-bomb-0", png_bomb(60000, 60000, 8, 64)),
        (
            "sd-garbage-0",
            b"<html>503 Service Unavailable</html>".to_vec(),
        ),
    ];
    for (i, (id, bytes)) in hostile.into_iter().enumerate() {
        g.sd(SdJob {
            id,
            miner: &m,
            model: "ChilloutMix",
            prompt: prompts[i].1,
            size: s,
            steps: 25,
            seed: 9000 + i as i64,
            hardware: "NVIDIA GeForce RTX 4090",
            inference_s: 1.3,
            output: (bytes, "png"),
            reference: None,
            challenge: None,
        });
    }
    // Impossible latency: 25 steps at 384x384 in 10 ms on an RTX 3070.
    let m = miner("cheat-impossible-latency");
    for (i, (base, prompt)) in prompts.iter().take(2).enumerate() {
        let id = format!("sd-fast-{i}");
        let out = jpeg(&honest(&g.reference(base), 80 + i as u64));
        g.sd(SdJob {
            id: &id,
            miner: &m,
            model: "ChilloutMix",
            prompt,
            size: s,
            steps: 25,
            seed: 10000 + i as i64,
            hardware: "NVIDIA GeForce RTX 3070",
            inference_s: 0.01,
            output: out,
            reference: None,
            challenge: None,
        });
    }
    // Under-spec GPU: SDXL jobs on an RTX 3060.
    let m = miner("cheat-under-spec-gpu");
    for (i, (base, prompt)) in prompts.iter().take(2).enumerate() {
        let id = format!("sd-underspec-{i}");
        let out = jpeg(&honest(&g.reference(base), 90 + i as u64));
        g.sd(SdJob {
            id: &id,
            miner: &m,
            model: "DreamShaperXL",
            prompt,
            size: s,
            steps: 30,
            seed: 11000 + i as i64,
            hardware: "NVIDIA GeForce RTX 3060",
            inference_s: 4.0,
            output: out,
            reference: None,
            challenge: None,
        });
    }
    // A GPU no table knows: never a pass, and flagged once it persists.
    let m = miner("cheat-unknown-gpu");
    for (i, (base, prompt)) in prompts.iter().take(2).enumerate() {
        let id = format!("sd-unknown-gpu-{i}");
        let out = jpeg(&honest(&g.reference(base), 95 + i as u64));
        g.sd(SdJob {
            id: &id,
            miner: &m,
            model: "ChilloutMix",
            prompt,
            size: s,
            steps: 25,
            seed: 11500 + i as i64,
            hardware: "NVIDIA GeForce RTX 9090 Ultra",
            inference_s: 1.1,
            output: out,
            reference: None,
            challenge: None,
        });
    }
    // Tampered model file: a wrong byte-range challenge answer.
    let m = miner("cheat-tampered-model");
    let r = g.reference("astronaut");
    g.sd(SdJob {
        id: "sd-tampered-0",
        miner: &m,
        model: "DreamShaperXL",
        prompt: prompts[0].1,
        size: s,
        steps: 30,
        seed: 12000,
        hardware: "NVIDIA GeForce RTX 4090",
        inference_s: 1.8,
        output: jpeg(&honest(&r, 100)),
        reference: None,
        challenge: Some(("dreamshaper-xl.safetensors".into(), false)),
    });

    // ---- LLM miners -----------------------------------------------------------------
    let answers = [
        (
            "Explain what a hash function is in two sentences.",
            "A hash function maps input data of any size to a fixed-size value called a digest. Good cryptographic hash functions make it infeasible to find two inputs with the same digest or to recover the input from it.",
        ),
        (
            "Give me three tips for growing tomatoes.",
            "Plant them in a sunny spot with at least six hours of direct light. Water deeply and consistently at the base to avoid blossom end rot. Support the vines with stakes or cages so the fruit stays off the ground.",
        ),
        (
            "What causes the seasons on Earth?",
            "The seasons come from the tilt of Earth's axis, about 23.4 degrees, relative to its orbit. As Earth circles the Sun, each hemisphere in turn leans toward the Sun and receives more direct sunlight and longer days.",
        ),
        (
            "Summarize the plot of Romeo and Juliet in one paragraph.",
            "Two young lovers from feuding families in Verona marry in secret. A street fight leads to Romeo's banishment, and a plan to reunite them through a sleeping potion goes wrong, ending in the deaths of both lovers and the reconciliation of their families.",
        ),
    ];
    let m = miner("honest-llm-a");
    for (i, (prompt, text)) in answers.iter().enumerate() {
        let id = format!("llm-honest-a-{i}");
        g.llm(LlmJob {
            id: &id,
            miner: &m,
            model: "hermes-3-llama3.1-8b",
            prompt,
            temperature: 0.7,
            max_tokens: 256,
            hardware: "NVIDIA GeForce RTX 4090",
            seconds_per_token: 0.025,
            text,
            inline: true,
            scores: (i % 2 == 0).then_some(ScoreStyle::Honest),
        });
    }
    g.llm(LlmJob {
        id: "llm-honest-a-canary",
        miner: &m,
        model: "hermes-3-llama3.1-8b",
        prompt: "What is the capital of France? Answer with one word.",
        temperature: 0.7,
        max_tokens: 16,
        hardware: "NVIDIA GeForce RTX 4090",
        seconds_per_token: 0.025,
        text: "Paris.",
        inline: true,
        scores: None,
    });
    let mixtral_answers = [
        "A hash function takes an input of arbitrary length and returns a short fixed-length fingerprint of it. The same input always gives the same fingerprint, while a tiny change to the input changes it completely.",
        "Give tomatoes full sun, ideally eight hours a day. Keep the soil evenly moist with deep watering rather than frequent sprinkles. Prune the suckers and tie the main stem to a stake as it grows.",
        "Earth's axis is tilted by roughly 23 degrees. Over a year this tilt makes one hemisphere face the Sun more directly than the other, which changes both the angle of the sunlight and the length of the day.",
    ];
    let m = miner("honest-llm-b");
    for (i, (prompt, text)) in answers.iter().map(|a| a.0).zip(mixtral_answers).enumerate() {
        let id = format!("llm-honest-b-{i}");
        g.llm(LlmJob {
            id: &id,
            miner: &m,
            model: "openhermes-mixtral-8x7b-gptq",
            prompt,
            temperature: 0.0,
            max_tokens: 256,
            hardware: "NVIDIA A100-SXM4-80GB",
            seconds_per_token: 0.02,
            text,
            inline: false,
            scores: Some(ScoreStyle::Greedy),
        });
    }
    // A substituted model: another model's text, scored by the reference. The last job
    // is greedy, where the rank checks judge it.
    let m = miner("cheat-substituted-model");
    // Its own wording on the greedy job: the same text for another input would be reuse.
    let greedy_text = "A hash function turns input of any length into a short code of fixed length. The same input always gives the same code, and for a good one two inputs with one code are hard to find.";
    for (i, (prompt, text)) in answers.iter().cycle().take(SUBSTITUTE_JOBS).enumerate() {
        let text = if i + 1 == SUBSTITUTE_JOBS {
            &greedy_text
        } else {
            text
        };
        let id = format!("llm-substitute-{i}");
        g.llm(LlmJob {
            id: &id,
            miner: &m,
            model: "hermes-3-llama3.1-8b",
            prompt,
            temperature: if i + 1 == SUBSTITUTE_JOBS { 0.0 } else { 0.7 },
            max_tokens: 256,
            hardware: "NVIDIA GeForce RTX 4090",
            seconds_per_token: 0.025,
            text,
            inline: true,
            scores: Some(ScoreStyle::Substituted),
        });
    }
    // Canned answers: one refusal for every prompt.
    let m = miner("cheat-canned-answers");
    let canned_text = "I'm sorry, but as an AI language model I cannot help with that request. Please ask me something else and I will do my best.";
    for (i, (prompt, _)) in answers.iter().enumerate().take(3) {
        let id = format!("llm-canned-{i}");
        g.llm(LlmJob {
            id: &id,
            miner: &m,
            model: "theia-llama-3.1-8b",
            prompt,
            temperature: 0.7,
            max_tokens: 256,
            hardware: "NVIDIA GeForce RTX 4090",
            seconds_per_token: 0.025,
            text: canned_text,
            inline: true,
            scores: None,
        });
    }
    // A failed canary.
    let m = miner("cheat-failed-canary");
    g.llm(LlmJob {
        id: "llm-canary-0",
        miner: &m,
        model: "dolphin-2.9-llama3-8b",
        prompt: "What is the capital of France? Answer with one word.",
        temperature: 0.7,
        max_tokens: 16,
        hardware: "NVIDIA GeForce RTX 4090",
        seconds_per_token: 0.025,
        text: "Lyon.",
        inline: true,
        scores: None,
    });

    // ---- records the job service got wrong ------------------------------------------
    g.lines
        .push("{\"schema_version\": 1, \"job_id\": \"broken-json\"".into());
    let mut unknown = json!({"schema_version": 1, "job_id": "unknown-field", "miner_id": miner("honest-sd-a"),
        "model_id": "SDXL", "kind": "sd", "submitted_at": "2026-11-20T03:00:00Z",
        "input": {"prompt": "x", "width": 512, "height": 512, "num_iterations": 20, "guidance_scale": 7.0, "seed": 1,
                  "sampler": "euler_a"},
        "output": {"image_key": "jobs/none.png"},
        "metrics": {"request_latency": 2.0, "loading_latency": null, "inference_latency": 1.0, "upload_latency": 0.1,
                    "hardware": "NVIDIA GeForce RTX 4090", "miner_version": "1.4.2"}});
    unknown["input"]["sampler"] = "euler_a".into();
    g.lines.push(unknown.to_string());

    let miners: Vec<Value> = EXPECTED
        .iter()
        .map(|(name, shipped, calibrated)| {
            json!({"name": name, "miner_id": miner(name), "expected_action": shipped,
                   "expected_action_calibrated": calibrated})
        })
        .collect();
    g.write(
        "miners.json",
        serde_json::to_string_pretty(&miners)
            .expect("json")
            .as_bytes(),
    );
    // One NFT on the fewer-steps cheat's wallet: its slash takes the boosted points.
    // Written in upper case: addresses compare case-insensitively.
    let wallet = miner("cheat-fewer-steps")[..42]
        .to_uppercase()
        .replacen("0X", "0x", 1);
    g.write(
        "wallets.json",
        serde_json::to_string_pretty(&json!({ wallet: 1 }))
            .expect("json")
            .as_bytes(),
    );

    let mut jobs = g.lines.join("\n");
    jobs.push('\n');
    g.write("jobs.jsonl", jobs.as_bytes());
}

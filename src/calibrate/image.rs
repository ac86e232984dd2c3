//! Image pairs for calibrating `image_similarity`, from photos.
//!
//! Each job's reference is a random square window of a photo (random side of at least
//! `side` where the photo allows, position and mirror), resized to `side` pixels. Against it:
//!
//! - **honest**: the reference after drift, a tone change (gain within 1.5 %, offset
//!   within 2 levels) and noise (σ up to 3 levels), uploaded as PNG or as JPEG q98. This
//!   stands in for the kernel-level differences between GPUs; it is not measured drift
//!   (docs/DETECTION.md). It has no geometric change: a sub-pixel shift resamples, and
//!   resampling is a low-pass filter, the very signature of the blur cheat; GPUs do not
//!   move the whole image.
//! - **cheats**, each with the same drift on top: fewer steps (a blur of σ 1 to 2.5),
//!   generation at half or quarter size then upscaled, another seed (another window of
//!   the same photo: the same material, another composition), other content (a window
//!   of another photo), and reuse (another job's reference, returned as it was).
//!
//! Every pair is decoded with the production decoder and measured with the production
//! [`measure`]; the suspicion vector is `(pHash distance, dHash distance, -SSIM,
//! -detail ratio)`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use image::imageops::{self, FilterType};
use image::{DynamicImage, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{CheckReport, Label, Pair, RateRow};
use crate::checks::image::{Similarity, apply_thresholds, decode, measure};
use crate::outcome::CheckId;
use crate::rules::ImageRules;
use crate::synth;

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Folder of base photos (PNG or JPEG).
    pub dir: PathBuf,
    /// Side of every reference, in pixels.
    pub side: u32,
    /// Jobs (references); each gives `honest_per_reference` honest pairs and one pair
    /// per cheat.
    pub references: usize,
    pub honest_per_reference: usize,
    pub seed: u64,
    /// The network's models (ids or categories) whose honest outputs `dir` holds: the
    /// measured rate's scope ([`crate::rules::Measurement::models`]). Empty for photos.
    pub models: Vec<String>,
}

/// One measured pair.
#[derive(Debug, Clone)]
pub struct ImagePair {
    pub label: Label,
    pub variant: &'static str,
    pub similarity: Similarity,
}

/// The image detection target of the reference re-execution issue.
pub const DETECTION_TARGET: f64 = 0.99;

/// Loads the photos of `dir`, sorted by name.
pub fn load_bases(dir: &Path) -> anyhow::Result<Vec<(String, RgbImage)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading image folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("png" | "jpg" | "jpeg")
            )
        })
        .collect();
    files.sort();
    anyhow::ensure!(
        files.len() >= 2,
        "{}: need at least two photos",
        dir.display()
    );
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            let img = synth::decode_trusted(&bytes)
                .with_context(|| format!("decoding {}", f.display()))?;
            let name = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            Ok((name, img.to_rgb8()))
        })
        .collect()
}

/// A square window of `base` at `(x, y)` with side `w`, mirrored or not, at `side` px.
fn window(base: &RgbImage, x: u32, y: u32, w: u32, mirror: bool, side: u32) -> RgbImage {
    let crop = imageops::crop_imm(base, x, y, w, w).to_image();
    let mut out = imageops::resize(&crop, side, side, FilterType::CatmullRom);
    if mirror {
        imageops::flip_horizontal_in_place(&mut out);
    }
    out
}

/// A random window: side between `side` (so the reference is downscaled or kept, with
/// the pixel-level detail a generated image has; a photo too small for that gives its
/// whole short side, upscaled) and the photo's short side.
fn random_window(base: &RgbImage, side: u32, rng: &mut ChaCha8Rng) -> (u32, u32, u32, bool) {
    let short = base.width().min(base.height());
    let min = side.min(short);
    let w = rng.random_range(min..=short);
    let x = rng.random_range(0..=base.width() - w);
    let y = rng.random_range(0..=base.height() - w);
    (x, y, w, rng.random_bool(0.5))
}

/// Honest drift and the upload's encoding, decoded as the screen worker decodes.
fn drift(
    img: &DynamicImage,
    rng: &mut ChaCha8Rng,
    rules: &ImageRules,
) -> anyhow::Result<(DynamicImage, bool)> {
    let toned = synth::tone(
        img,
        rng.random_range(0.985..=1.015),
        rng.random_range(-2.0..=2.0),
    );
    let noisy = synth::noise(&toned, rng.random_range(0.0..=3.0), rng.random());
    let jpeg = rng.random_bool(0.5);
    let bytes = if jpeg {
        synth::encode_jpeg(&noisy, 98)
    } else {
        synth::encode_png(&noisy)
    };
    Ok((
        decode(&bytes, rules).context("decoding a synthetic upload")?,
        jpeg,
    ))
}

/// The cheats, in table order.
pub const CHEATS: [&str; 5] = [
    "fewer steps (blur σ 1–2.5)",
    "generated small, upscaled (2× or 4×)",
    "another seed (same photo, other window)",
    "other content (another photo)",
    "reuse (another job's output, as is)",
];

/// What the honest sample was, for the rules' provenance.
pub fn describe(opts: &ImageOptions) -> String {
    format!(
        "{} honest image pairs: {} windows of the photos in {} at {} px, {} honest re-runs each (tone drift, noise up to sigma 3, PNG or JPEG q98); seed {}",
        opts.references * opts.honest_per_reference,
        opts.references,
        opts.dir.display(),
        opts.side,
        opts.honest_per_reference,
        opts.seed
    )
}

/// Builds and measures every pair.
pub fn pairs(opts: &ImageOptions, rules: &ImageRules) -> anyhow::Result<Vec<ImagePair>> {
    let bases = load_bases(&opts.dir)?;
    let side = opts.side;
    let per_job = |i: usize| -> anyhow::Result<Vec<ImagePair>> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(opts.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let b = i % bases.len();
        let base = &bases[b].1;
        let (x, y, w, mirror) = random_window(base, side, &mut rng);
        let reference = DynamicImage::ImageRgb8(window(base, x, y, w, mirror, side));
        let mut out = Vec::new();
        let mut push = |label, variant, miner: &DynamicImage| {
            out.push(ImagePair {
                label,
                variant,
                similarity: measure(miner, &reference, rules),
            });
        };
        for _ in 0..opts.honest_per_reference {
            let (miner, jpeg) = drift(&reference, &mut rng, rules)?;
            let variant = if jpeg {
                "drift, JPEG q98"
            } else {
                "drift, PNG"
            };
            push(Label::Honest, variant, &miner);
        }
        let sigma = rng.random_range(1.0..=2.5);
        push(
            Label::Cheat,
            CHEATS[0],
            &drift(&synth::blur(&reference, sigma), &mut rng, rules)?.0,
        );
        let factor = if rng.random_bool(0.5) { 2 } else { 4 };
        push(
            Label::Cheat,
            CHEATS[1],
            &drift(&synth::down_up(&reference, factor), &mut rng, rules)?.0,
        );
        // Another window of the same photo, moved by at least a quarter of the window
        // or zoomed by a quarter; a mirror image where the photo leaves no room.
        let other = (0..32)
            .map(|_| random_window(base, side, &mut rng))
            .find(|&(x2, y2, w2, _)| {
                let moved = x.abs_diff(x2).max(y.abs_diff(y2)) >= w / 4;
                let zoomed = w.abs_diff(w2) >= w / 4;
                moved || zoomed
            })
            .unwrap_or((x, y, w, !mirror));
        let seed_cheat =
            DynamicImage::ImageRgb8(window(base, other.0, other.1, other.2, other.3, side));
        push(
            Label::Cheat,
            CHEATS[2],
            &drift(&seed_cheat, &mut rng, rules)?.0,
        );
        // A window of any photo but this job's.
        let another_photo = |rng: &mut ChaCha8Rng| {
            let other = &bases[(b + 1 + rng.random_range(0..bases.len() - 1)) % bases.len()].1;
            let (x, y, w, mirror) = random_window(other, side, rng);
            DynamicImage::ImageRgb8(window(other, x, y, w, mirror, side))
        };
        let content = another_photo(&mut rng);
        push(
            Label::Cheat,
            CHEATS[3],
            &drift(&content, &mut rng, rules)?.0,
        );
        let reused = synth::encode_png(&another_photo(&mut rng));
        push(Label::Cheat, CHEATS[4], &decode(&reused, rules)?);
        Ok(out)
    };
    let jobs: Vec<Vec<ImagePair>> = (0..opts.references)
        .into_par_iter()
        .map(per_job)
        .collect::<anyhow::Result<_>>()?;
    Ok(jobs.into_iter().flatten().collect())
}

/// The suspicion vector of a measured pair.
fn suspicion(s: &Similarity) -> Vec<f64> {
    vec![
        f64::from(s.phash_distance),
        f64::from(s.dhash_distance),
        -s.ssim,
        -s.detail_ratio,
    ]
}

/// Calibrates `image_similarity` on measured pairs: returns the report and the rules
/// with the calibrated thresholds.
pub fn calibrate(
    measured: &[ImagePair],
    rules: &ImageRules,
    target: f64,
) -> anyhow::Result<(CheckReport, ImageRules)> {
    let pairs: Vec<Pair> = measured
        .iter()
        .map(|p| Pair {
            label: p.label,
            variant: p.variant.to_string(),
            suspicion: suspicion(&p.similarity),
        })
        .collect();
    let sweep = super::sweep(&pairs, &[f64::NEG_INFINITY; 4], target)?;
    let t = &sweep.thresholds;
    let mut calibrated = rules.clone();
    // Distances are whole bits; the two ratios are rounded down (more lenient).
    calibrated.phash_max_distance = t[0] as u32;
    calibrated.dhash_max_distance = t[1] as u32;
    calibrated.ssim_min = super::floor_to(-t[2], 3);
    calibrated.detail_ratio_min = super::floor_to(-t[3], 3);
    let verdicts: Vec<(Label, String, bool)> = measured
        .iter()
        .map(|p| {
            (
                p.label,
                p.variant.to_string(),
                apply_thresholds(&p.similarity, &calibrated).is_fail(),
            )
        })
        .collect();
    let mut rows = super::rate_rows(&verdicts);
    for r in rows.iter_mut().filter(|r| r.label == Label::Cheat) {
        r.target = Some(DETECTION_TARGET);
        r.met = Some(r.rate >= DETECTION_TARGET);
        if r.met == Some(false) {
            r.note = Some(miss_reason(measured, r, &calibrated));
        }
    }
    Ok((
        CheckReport {
            check: CheckId::ImageSimilarity,
            target_fpr: target,
            thresholds: vec![
                (
                    "phash_max_distance".into(),
                    f64::from(calibrated.phash_max_distance),
                ),
                (
                    "dhash_max_distance".into(),
                    f64::from(calibrated.dhash_max_distance),
                ),
                ("ssim_min".into(), calibrated.ssim_min),
                ("detail_ratio_min".into(), calibrated.detail_ratio_min),
            ],
            rows,
            roc: sweep.roc,
        },
        calibrated,
    ))
}

/// Why the escaping pairs of a cheat escaped: their median measures against the
/// thresholds.
fn miss_reason(measured: &[ImagePair], row: &RateRow, rules: &ImageRules) -> String {
    let escaped: Vec<&Similarity> = measured
        .iter()
        .filter(|p| p.label == Label::Cheat && p.variant == row.variant)
        .map(|p| &p.similarity)
        .filter(|s| !apply_thresholds(s, rules).is_fail())
        .collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    format!(
        "the {} escaping pairs have median pHash {} (≤ {}), dHash {} (≤ {}), SSIM {:.3} (≥ {}), detail {:.3} (≥ {}): within honest drift on every measure",
        escaped.len(),
        median(
            escaped
                .iter()
                .map(|s| f64::from(s.phash_distance))
                .collect()
        ),
        rules.phash_max_distance,
        median(
            escaped
                .iter()
                .map(|s| f64::from(s.dhash_distance))
                .collect()
        ),
        rules.dhash_max_distance,
        median(escaped.iter().map(|s| s.ssim).collect()),
        rules.ssim_min,
        median(escaped.iter().map(|s| s.detail_ratio).collect()),
        rules.detail_ratio_min,
    )
}

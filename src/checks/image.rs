//! Image output checks: decoding miner bytes safely, the output size, and similarity to
//! the reference GPU's image.
//!
//! Miner images are hostile input. Decoding is bounded three ways: the object's byte size,
//! the declared width and height, and the decoder's total allocation (`image::Limits`),
//! so a decompression bomb is refused before it allocates. The `image` crate's changelog
//! warns that decoders can panic on malicious input, so a decoder panic is caught and is
//! an invalid output, never a dead worker.
//!
//! Similarity uses four measures, because no one of them sees every cheat: a DCT hash
//! (pHash) and a gradient hash (dHash) catch a different picture, SSIM on downscaled luma
//! catches structural differences, and the fine-detail ratio catches blur and
//! low-resolution generation, which move 64-bit hashes by only 0-3 bits.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, ImageFormat, ImageReader, Limits};
use image_hasher::{HashAlg, HasherConfig, ImageHash};
use serde::{Deserialize, Serialize};

use crate::outcome::Outcome;
use crate::record::SdInput;
use crate::rules::ImageRules;

/// Why miner bytes are not a usable image. Every variant is the miner's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidImage {
    #[error("object is {size_bytes} bytes, over the {limit_bytes}-byte limit")]
    TooLarge { size_bytes: u64, limit_bytes: u64 },
    #[error("not a PNG or JPEG image")]
    UnknownFormat,
    #[error("image exceeds the decoding limits: {0}")]
    OverLimits(String),
    #[error("image is corrupt: {0}")]
    Corrupt(String),
    #[error("the image decoder panicked on this input")]
    DecoderPanicked,
}

/// Decodes a PNG or JPEG under the limits in `rules`. Never panics.
pub fn decode(bytes: &[u8], rules: &ImageRules) -> Result<DynamicImage, InvalidImage> {
    if bytes.len() as u64 > rules.max_object_bytes {
        return Err(InvalidImage::TooLarge {
            size_bytes: bytes.len() as u64,
            limit_bytes: rules.max_object_bytes,
        });
    }
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        _ => return Err(InvalidImage::UnknownFormat),
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(rules.max_decoded_side);
    limits.max_image_height = Some(rules.max_decoded_side);
    limits.max_alloc = Some(rules.max_decode_alloc_bytes);
    decode_guarded(|| {
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        reader.limits(limits);
        reader.decode()
    })
}

/// Runs a decode, turning a panic inside it into `DecoderPanicked`.
pub fn decode_guarded(
    decode: impl FnOnce() -> image::ImageResult<DynamicImage>,
) -> Result<DynamicImage, InvalidImage> {
    // The closure owns or borrows immutably everything it touches, and a panic leaves
    // nothing half-written that we read afterwards, so unwinding past it is sound.
    match catch_unwind(AssertUnwindSafe(decode)) {
        Ok(Ok(img)) => Ok(img),
        Ok(Err(image::ImageError::Limits(e))) => Err(InvalidImage::OverLimits(e.to_string())),
        Ok(Err(e)) => Err(InvalidImage::Corrupt(e.to_string())),
        Err(_) => Err(InvalidImage::DecoderPanicked),
    }
}

/// The size the miner produces for a request: each side rounded down to a multiple of
/// `clamp_multiple` and capped at `clamp_max_side` (and never below one multiple).
pub fn expected_size(width: u32, height: u32, rules: &ImageRules) -> (u32, u32) {
    let clamp = |side: u32| {
        let m = rules.clamp_multiple;
        (side / m * m).clamp(m, rules.clamp_max_side / m * m)
    };
    (clamp(width), clamp(height))
}

/// The steps the miner runs for a request.
pub fn effective_steps(input: &SdInput, rules: &ImageRules) -> u32 {
    input.num_iterations.min(rules.clamp_max_steps)
}

pub fn check_size(img: &DynamicImage, input: &SdInput, rules: &ImageRules) -> Outcome {
    let expected = expected_size(input.width, input.height, rules);
    let actual = (img.width(), img.height());
    let details = serde_json::json!({
        "requested": [input.width, input.height],
        "expected": [expected.0, expected.1],
        "actual": [actual.0, actual.1],
    });
    if actual == expected {
        Outcome::pass(details)
    } else {
        Outcome::fail(
            format!(
                "image is {}x{}, but a {}x{} request yields {}x{}",
                actual.0, actual.1, input.width, input.height, expected.0, expected.1
            ),
            details,
        )
    }
}

/// Everything measured between a miner's image and the reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Similarity {
    pub phash_distance: u32,
    pub dhash_distance: u32,
    pub hash_bits: u32,
    pub ssim: f64,
    pub detail_ratio: f64,
    pub miner_phash: String,
    pub reference_phash: String,
    pub miner_dhash: String,
    pub reference_dhash: String,
}

/// The DCT hash of an image (the hash the reuse index and canaries use too).
pub fn phash(luma: &GrayImage, rules: &ImageRules) -> ImageHash {
    HasherConfig::new()
        .hash_alg(HashAlg::Mean)
        .preproc_dct()
        .hash_size(rules.hash_side, rules.hash_side)
        .to_hasher()
        .hash_image(luma)
}

/// The gradient hash of an image.
pub fn dhash(luma: &GrayImage, rules: &ImageRules) -> ImageHash {
    HasherConfig::new()
        .hash_alg(HashAlg::Gradient)
        .hash_size(rules.hash_side, rules.hash_side)
        .to_hasher()
        .hash_image(luma)
}

/// Measures `miner` against `reference`. The miner image is resized to the reference's
/// size first when they differ (the size check reports that separately).
pub fn measure(miner: &DynamicImage, reference: &DynamicImage, rules: &ImageRules) -> Similarity {
    let ref_luma = reference.to_luma8();
    let mut miner_luma = miner.to_luma8();
    if miner_luma.dimensions() != ref_luma.dimensions() {
        miner_luma = imageops::resize(
            &miner_luma,
            ref_luma.width(),
            ref_luma.height(),
            FilterType::Triangle,
        );
    }
    let (mp, rp) = (phash(&miner_luma, rules), phash(&ref_luma, rules));
    let (md, rd) = (dhash(&miner_luma, rules), dhash(&ref_luma, rules));
    let ssim = ssim(
        &downscale(&miner_luma, rules.ssim_max_side),
        &downscale(&ref_luma, rules.ssim_max_side),
    );
    // Detail is measured below native size: pixel-sized differences (drift, JPEG
    // ringing, noise) average out there, while what fewer steps or a low-resolution
    // generation lose spans several pixels.
    let longest = ref_luma.width().max(ref_luma.height());
    let detail_side = (longest / rules.detail_downscale.max(1)).min(rules.detail_max_side);
    let detail_ref = detail_energy(&downscale(&ref_luma, detail_side));
    let detail_miner = detail_energy(&downscale(&miner_luma, detail_side));
    // A flat reference has no detail to lose; treat the ratio as perfect then.
    let detail_ratio = if detail_ref < 1e-9 {
        1.0
    } else {
        detail_miner / detail_ref
    };
    Similarity {
        phash_distance: mp.dist(&rp),
        dhash_distance: md.dist(&rd),
        hash_bits: rules.hash_side * rules.hash_side,
        ssim,
        detail_ratio,
        miner_phash: mp.to_base64(),
        reference_phash: rp.to_base64(),
        miner_dhash: md.to_base64(),
        reference_dhash: rd.to_base64(),
    }
}

/// The verdict of the image check for measured similarity.
pub fn judge(sim: &Similarity, rules: &ImageRules) -> Outcome {
    let mut reasons = Vec::new();
    if sim.phash_distance > rules.phash_max_distance {
        reasons.push(format!(
            "pHash distance {} > {}",
            sim.phash_distance, rules.phash_max_distance
        ));
    }
    if sim.dhash_distance > rules.dhash_max_distance {
        reasons.push(format!(
            "dHash distance {} > {}",
            sim.dhash_distance, rules.dhash_max_distance
        ));
    }
    if sim.ssim < rules.ssim_min {
        reasons.push(format!("SSIM {:.3} < {}", sim.ssim, rules.ssim_min));
    }
    if sim.detail_ratio < rules.detail_ratio_min {
        reasons.push(format!(
            "fine-detail ratio {:.3} < {} (blurred or generated at low resolution)",
            sim.detail_ratio, rules.detail_ratio_min
        ));
    }
    if reasons.is_empty() {
        Outcome::pass(sim)
    } else {
        Outcome::fail(
            format!("image differs from the reference: {}", reasons.join("; ")),
            sim,
        )
    }
}

fn downscale(luma: &GrayImage, max_side: u32) -> GrayImage {
    let (w, h) = luma.dimensions();
    let longest = w.max(h);
    if longest <= max_side {
        return luma.clone();
    }
    let scale = f64::from(max_side) / f64::from(longest);
    let nw = ((f64::from(w) * scale).round() as u32).max(1);
    let nh = ((f64::from(h) * scale).round() as u32).max(1);
    imageops::resize(luma, nw, nh, FilterType::Triangle)
}

/// Mean SSIM over 8×8 windows with stride 4, on 8-bit luma (Wang et al. 2004 constants).
fn ssim(a: &GrayImage, b: &GrayImage) -> f64 {
    const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
    const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
    let (w, h) = a.dimensions();
    let win_w = w.min(8);
    let win_h = h.min(8);
    let (mut total, mut count) = (0.0, 0u64);
    let mut y = 0;
    while y + win_h <= h {
        let mut x = 0;
        while x + win_w <= w {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for dy in 0..win_h {
                for dx in 0..win_w {
                    let pa = f64::from(a.get_pixel(x + dx, y + dy)[0]);
                    let pb = f64::from(b.get_pixel(x + dx, y + dy)[0]);
                    sa += pa;
                    sb += pb;
                    saa += pa * pa;
                    sbb += pb * pb;
                    sab += pa * pb;
                }
            }
            let n = f64::from(win_w * win_h);
            let (ma, mb) = (sa / n, sb / n);
            let va = (saa / n - ma * ma).max(0.0);
            let vb = (sbb / n - mb * mb).max(0.0);
            let cov = sab / n - ma * mb;
            total += ((2.0 * ma * mb + C1) * (2.0 * cov + C2))
                / ((ma * ma + mb * mb + C1) * (va + vb + C2));
            count += 1;
            x += 4;
        }
        y += 4;
    }
    if count == 0 {
        1.0
    } else {
        total / count as f64
    }
}

/// Mean squared 4-neighbour Laplacian of luma: the energy of the finest detail.
fn detail_energy(luma: &GrayImage) -> f64 {
    let (w, h) = luma.dimensions();
    if w < 3 || h < 3 {
        return 0.0;
    }
    let px = |x: u32, y: u32| f64::from(luma.get_pixel(x, y)[0]);
    let mut sum = 0.0;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let l = 4.0 * px(x, y) - px(x - 1, y) - px(x + 1, y) - px(x, y - 1) - px(x, y + 1);
            sum += l * l;
        }
    }
    sum / f64::from((w - 2) * (h - 2))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rules::Rules;
    use image::{ImageEncoder, Rgb, RgbImage};

    pub(crate) fn rules() -> ImageRules {
        Rules::embedded().unwrap().checks.image
    }

    /// A deterministic textured test image: smooth gradients plus fine stripes.
    pub(crate) fn textured(w: u32, h: u32, phase: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            let v = ((x * 7 + y * 3 + phase) % 64) as u8 * 3;
            let fine = if (x + y + phase).is_multiple_of(3) {
                40
            } else {
                0
            };
            Rgb([v.saturating_add(fine), (x % 256) as u8, (y % 256) as u8])
        }))
    }

    fn png(img: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    fn jpeg_q98(img: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        let rgb = img.to_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 98)
            .write_image(
                &rgb,
                rgb.width(),
                rgb.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        out
    }

    #[test]
    fn sizes_clamp_like_the_miner() {
        let r = rules();
        assert_eq!(expected_size(1024, 1024, &r), (1024, 1024));
        assert_eq!(expected_size(1023, 777, &r), (1016, 776));
        assert_eq!(expected_size(4096, 3000, &r), (2048, 2048));
        assert_eq!(expected_size(3, 9, &r), (8, 8));
    }

    #[test]
    fn a_jpeg_q98_reencode_passes() {
        let r = rules();
        let img = textured(256, 256, 0);
        let back = decode(&jpeg_q98(&img), &r).unwrap();
        let sim = measure(&back, &img, &r);
        assert!(!judge(&sim, &r).is_fail(), "{sim:?}");
    }

    #[test]
    fn a_different_image_fails() {
        let r = rules();
        let a = textured(256, 256, 0);
        let b = DynamicImage::ImageRgb8(RgbImage::from_fn(256, 256, |x, y| {
            Rgb([((x * y) % 251) as u8, 0, 255 - (y % 256) as u8])
        }));
        assert!(judge(&measure(&b, &a, &r), &r).is_fail());
    }

    #[test]
    fn a_heavy_blur_fails_on_detail() {
        let r = rules();
        let img = textured(256, 256, 1);
        let blurred = DynamicImage::ImageRgba8(imageops::blur(&img, 3.0));
        let sim = measure(&blurred, &img, &r);
        assert!(sim.detail_ratio < r.detail_ratio_min, "{sim:?}");
        assert!(judge(&sim, &r).is_fail());
    }

    #[test]
    fn a_png_round_trip_is_identical() {
        let r = rules();
        let img = textured(64, 48, 2);
        let back = decode(&png(&img), &r).unwrap();
        let sim = measure(&back, &img, &r);
        assert_eq!((sim.phash_distance, sim.dhash_distance), (0, 0));
        assert!((sim.ssim - 1.0).abs() < 1e-9 && (sim.detail_ratio - 1.0).abs() < 1e-9);
    }

    #[test]
    fn non_images_and_truncated_files_are_invalid() {
        let r = rules();
        assert_eq!(decode(b"hello", &r), Err(InvalidImage::UnknownFormat));
        assert_eq!(decode(b"", &r), Err(InvalidImage::UnknownFormat));
        let bytes = png(&textured(64, 64, 0));
        assert!(matches!(
            decode(&bytes[..bytes.len() / 2], &r),
            Err(InvalidImage::Corrupt(_))
        ));
    }

    #[test]
    fn a_decoder_panic_is_an_invalid_output() {
        let got = decode_guarded(|| panic!("simulated decoder bug"));
        assert_eq!(got, Err(InvalidImage::DecoderPanicked));
    }

    #[test]
    fn an_object_over_the_byte_limit_is_refused_before_decoding() {
        let mut r = rules();
        r.max_object_bytes = 10;
        assert!(matches!(
            decode(&[0u8; 11], &r),
            Err(InvalidImage::TooLarge { size_bytes: 11, .. })
        ));
    }

    #[test]
    fn declared_dimensions_over_the_limit_are_refused() {
        let mut r = rules();
        r.max_decoded_side = 32;
        let bytes = png(&textured(64, 16, 0));
        assert!(matches!(
            decode(&bytes, &r),
            Err(InvalidImage::OverLimits(_))
        ));
    }
}

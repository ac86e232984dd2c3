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

use fast_image_resize as fir;
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

/// Luma of an image with the weights `image`'s `to_luma8` uses (BT.709: 0.2126, 0.7152,
/// 0.0722, rounded to the nearest level), in 16-bit fixed point: `to_luma8` widens every channel
/// to `f32` and rounds each pixel through `roundf`, 12 % of an image check's
/// instructions. The two agree to the level but where a pixel's exact luma sits on a
/// rounding edge (`luma_is_the_image_crates_luma`). 8-bit RGB and RGBA, the layouts PNG
/// and JPEG outputs decode to, are converted here; other layouts go through `image`.
pub fn luma(img: &DynamicImage) -> GrayImage {
    fn direct(raw: &[u8], width: u32, height: u32, channels: usize) -> Option<GrayImage> {
        let pixels = width as usize * height as usize;
        let bytes = raw.get(..pixels * channels)?;
        let mut luma = vec![0u8; pixels];
        // The weights in 16-bit fixed point (they sum to 65536), rounded: a form the
        // compiler vectorizes.
        for (l, p) in luma.iter_mut().zip(bytes.chunks_exact(channels)) {
            let sum = 13_933 * u32::from(p[0]) + 46_871 * u32::from(p[1]) + 4_732 * u32::from(p[2]);
            *l = ((sum + 32_768) >> 16) as u8;
        }
        GrayImage::from_raw(width, height, luma)
    }
    let converted = match img {
        DynamicImage::ImageLuma8(l) => return l.clone(),
        DynamicImage::ImageRgb8(i) => direct(i.as_raw(), i.width(), i.height(), 3),
        DynamicImage::ImageRgba8(i) => direct(i.as_raw(), i.width(), i.height(), 4),
        _ => None,
    };
    converted.unwrap_or_else(|| img.to_luma8())
}

/// `luma` resampled to `width`×`height` by convolution with `filter`, its support
/// widened by the scale when downscaling (an antialiasing resize, as `image`'s
/// `resize` does). fast_image_resize's SIMD kernels do it; should they refuse an odd
/// shape, `image`'s own resampler does.
fn resample(luma: &GrayImage, width: u32, height: u32, filter: fir::FilterType) -> GrayImage {
    if luma.dimensions() == (width, height) {
        return luma.clone();
    }
    let options = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(filter));
    let mut dst = fir::images::Image::new(width, height, fir::PixelType::U8);
    let resized = fir::images::ImageRef::new(
        luma.width(),
        luma.height(),
        luma.as_raw(),
        fir::PixelType::U8,
    )
    .ok()
    .and_then(|src| fir::Resizer::new().resize(&src, &mut dst, &options).ok())
    .and_then(|()| GrayImage::from_raw(width, height, dst.into_vec()));
    resized.unwrap_or_else(|| {
        let fallback = match filter {
            fir::FilterType::Lanczos3 => FilterType::Lanczos3,
            _ => FilterType::Triangle,
        };
        imageops::resize(luma, width, height, fallback)
    })
}

/// A hasher of `image_hasher` given its input already at the size it resizes to.
/// `image_hasher` resamples whatever it is given with Lanczos3; handing it the full
/// image made each hash resample every pixel through `image`'s generic path. Here the
/// same filter runs once, in fast_image_resize, and the hasher's own resize is a copy.
///
/// A hash's input is first reduced to [`HASH_BASE`] pixels on its longer side with the
/// triangle filter (a Lanczos3 kernel from 1024 pixels to 16 spans 384 of them; from 256,
/// 96), then to the hash's size with Lanczos3. The similarity check hands in its SSIM
/// image, already at that size, so the reduction runs once per image.
fn hash_at_size(luma: &GrayImage, (width, height): (u32, u32), config: HasherConfig) -> ImageHash {
    let reduced;
    let base = if luma.width().max(luma.height()) <= HASH_BASE {
        luma
    } else {
        reduced = downscale(luma, HASH_BASE);
        &reduced
    };
    let small = resample(base, width, height, fir::FilterType::Lanczos3);
    config.to_hasher().hash_image(&small)
}

/// The longer side a hash's input is reduced to before the hash's own resize.
pub const HASH_BASE: u32 = 256;

/// The DCT hash of an image (the hash the reuse index and canaries use too).
pub fn phash(luma: &GrayImage, rules: &ImageRules) -> ImageHash {
    let side = rules.hash_side;
    // With DCT preprocessing the hasher takes the DCT of twice the hash's side.
    hash_at_size(
        luma,
        (side * 2, side * 2),
        HasherConfig::new()
            .hash_alg(HashAlg::Mean)
            .preproc_dct()
            .hash_size(side, side),
    )
}

/// The gradient hash of an image.
pub fn dhash(luma: &GrayImage, rules: &ImageRules) -> ImageHash {
    let side = rules.hash_side;
    // A gradient hash compares each pixel with its right neighbour: one column more.
    hash_at_size(
        luma,
        (side + 1, side),
        HasherConfig::new()
            .hash_alg(HashAlg::Gradient)
            .hash_size(side, side),
    )
}

/// Measures `miner` against `reference`. The miner image is resized to the reference's
/// size first when they differ (the size check reports that separately).
pub fn measure(miner: &DynamicImage, reference: &DynamicImage, rules: &ImageRules) -> Similarity {
    measure_luma(&luma(miner), &luma(reference), rules)
}

/// [`measure`] on the two images' luma.
pub fn measure_luma(miner: &GrayImage, reference: &GrayImage, rules: &ImageRules) -> Similarity {
    let resized;
    let miner = if miner.dimensions() == reference.dimensions() {
        miner
    } else {
        resized = resample(
            miner,
            reference.width(),
            reference.height(),
            fir::FilterType::Bilinear,
        );
        &resized
    };
    let (miner_small, reference_small) = (
        downscale(miner, rules.ssim_max_side),
        downscale(reference, rules.ssim_max_side),
    );
    // The hashes reduce their input to HASH_BASE first; when SSIM's size is that one,
    // its images are that reduction already (the same function, the same result).
    let (hash_miner, hash_reference) = if rules.ssim_max_side == HASH_BASE {
        (&miner_small, &reference_small)
    } else {
        (miner, reference)
    };
    let (mp, rp) = (phash(hash_miner, rules), phash(hash_reference, rules));
    let (md, rd) = (dhash(hash_miner, rules), dhash(hash_reference, rules));
    let ssim = ssim(&miner_small, &reference_small);
    // Detail is measured below native size: pixel-sized differences (drift, JPEG
    // ringing, noise) average out there, while what fewer steps or a low-resolution
    // generation lose spans several pixels.
    let longest = reference.width().max(reference.height());
    let detail_side = (longest / rules.detail_downscale.max(1)).min(rules.detail_max_side);
    let detail_ref = detail_energy(&downscale(reference, detail_side));
    let detail_miner = detail_energy(&downscale(miner, detail_side));
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
pub fn apply_thresholds(sim: &Similarity, rules: &ImageRules) -> Outcome {
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

/// `luma` scaled down with a triangle filter so its longer side is `max_side`; as it is
/// when already that small.
fn downscale(luma: &GrayImage, max_side: u32) -> GrayImage {
    let (w, h) = luma.dimensions();
    let longest = w.max(h);
    if longest <= max_side {
        return luma.clone();
    }
    let scale = f64::from(max_side) / f64::from(longest);
    let nw = ((f64::from(w) * scale).round() as u32).max(1);
    let nh = ((f64::from(h) * scale).round() as u32).max(1);
    resample(luma, nw, nh, fir::FilterType::Bilinear)
}

/// Mean SSIM over 8×8 windows with stride 4, on 8-bit luma of one size (Wang et al.
/// 2004 constants). A window's sums are integers, added as such: exact, as the `f64`
/// sums were, and several times faster.
fn ssim(a: &GrayImage, b: &GrayImage) -> f64 {
    const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
    const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
    debug_assert_eq!(a.dimensions(), b.dimensions());
    let w = a.width().min(b.width()) as usize;
    let h = a.height().min(b.height()) as usize;
    let (pa, pb) = (a.as_raw(), b.as_raw());
    let (stride_a, stride_b) = (a.width() as usize, b.width() as usize);
    let win_w = w.min(8);
    let win_h = h.min(8);
    let (mut total, mut count) = (0.0, 0u64);
    let mut y = 0;
    while y + win_h <= h {
        let mut x = 0;
        while x + win_w <= w {
            // 64 pixels of at most 255² each: u32 holds every sum.
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0u32, 0u32, 0u32, 0u32, 0u32);
            for dy in 0..win_h {
                let ra = &pa[(y + dy) * stride_a + x..][..win_w];
                let rb = &pb[(y + dy) * stride_b + x..][..win_w];
                for (&p, &q) in ra.iter().zip(rb) {
                    let (p, q) = (u32::from(p), u32::from(q));
                    sa += p;
                    sb += q;
                    saa += p * p;
                    sbb += q * q;
                    sab += p * q;
                }
            }
            let n = (win_w * win_h) as f64;
            let (ma, mb) = (f64::from(sa) / n, f64::from(sb) / n);
            let va = (f64::from(saa) / n - ma * ma).max(0.0);
            let vb = (f64::from(sbb) / n - mb * mb).max(0.0);
            let cov = f64::from(sab) / n - ma * mb;
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

/// Mean squared 4-neighbour Laplacian of luma: the energy of the finest detail. Summed
/// in integers (exact, as before in `f64`).
fn detail_energy(luma: &GrayImage) -> f64 {
    let (w, h) = (luma.width() as usize, luma.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let px = luma.as_raw();
    let mut sum = 0u64;
    for y in 1..h - 1 {
        let (up, row, down) = (
            &px[(y - 1) * w..y * w],
            &px[y * w..(y + 1) * w],
            &px[(y + 1) * w..(y + 2) * w],
        );
        for x in 1..w - 1 {
            let l = 4 * i32::from(row[x])
                - i32::from(row[x - 1])
                - i32::from(row[x + 1])
                - i32::from(up[x])
                - i32::from(down[x]);
            sum += u64::from(l.unsigned_abs()).pow(2);
        }
    }
    sum as f64 / ((w - 2) * (h - 2)) as f64
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
    fn luma_is_the_image_crates_luma() {
        let rgb = textured(37, 23, 4);
        let images = [
            rgb.clone(),
            DynamicImage::ImageRgba8(rgb.to_rgba8()),
            DynamicImage::ImageLuma8(rgb.to_luma8()),
            DynamicImage::ImageLumaA8(rgb.to_luma_alpha8()),
            DynamicImage::ImageRgb16(rgb.to_rgb16()),
        ];
        for img in images {
            let (ours, theirs) = (luma(&img), img.to_luma8());
            let apart: Vec<u8> = ours
                .pixels()
                .zip(theirs.pixels())
                .map(|(a, b)| a[0].abs_diff(b[0]))
                .collect();
            assert!(apart.iter().all(|&d| d <= 1), "{:?}", img.color());
            let differ = apart.iter().filter(|&&d| d > 0).count();
            assert!(
                differ * 100 <= apart.len(),
                "{:?}: {differ} differ",
                img.color()
            );
        }
    }

    #[test]
    fn resampling_agrees_with_the_image_crates_filters() {
        // The thresholds were calibrated on `image`'s resampler; fast_image_resize's
        // triangle and Lanczos3 filters must stay within a grey level or two of it.
        let l = luma(&textured(300, 200, 1));
        for (side, filter, theirs) in [
            (128, fir::FilterType::Bilinear, FilterType::Triangle),
            (16, fir::FilterType::Lanczos3, FilterType::Lanczos3),
        ] {
            let ours = resample(&l, side, side * 2 / 3, filter);
            let theirs = imageops::resize(&l, ours.width(), ours.height(), theirs);
            let worst = ours
                .pixels()
                .zip(theirs.pixels())
                .map(|(a, b)| a[0].abs_diff(b[0]))
                .max()
                .unwrap();
            assert!(worst <= 2, "{filter:?}: {worst} grey levels apart");
        }
    }

    #[test]
    fn the_integer_ssim_and_detail_equal_the_float_formulas() {
        let (a, b) = (
            luma(&textured(61, 45, 0)),
            luma(&DynamicImage::ImageRgba8(imageops::blur(
                &textured(61, 45, 0),
                1.0,
            ))),
        );
        let px = |i: &GrayImage, x: u32, y: u32| f64::from(i.get_pixel(x, y)[0]);
        // Wang et al.'s SSIM on 8x8 windows, stride 4, summed in f64 as written.
        let (mut total, mut n) = (0.0, 0.0);
        for y in (0..=45 - 8).step_by(4) {
            for x in (0..=61 - 8).step_by(4) {
                let w: Vec<(f64, f64)> = (0..64)
                    .map(|i| (px(&a, x + i % 8, y + i / 8), px(&b, x + i % 8, y + i / 8)))
                    .collect();
                let mean = |f: &dyn Fn(&(f64, f64)) -> f64| w.iter().map(f).sum::<f64>() / 64.0;
                let (ma, mb) = (mean(&|p| p.0), mean(&|p| p.1));
                let va = (mean(&|p| p.0 * p.0) - ma * ma).max(0.0);
                let vb = (mean(&|p| p.1 * p.1) - mb * mb).max(0.0);
                let cov = mean(&|p| p.0 * p.1) - ma * mb;
                let (c1, c2) = (6.5025, 58.5225);
                total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                    / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                n += 1.0;
            }
        }
        assert!((ssim(&a, &b) - total / n).abs() < 1e-12);
        let mut sum = 0.0;
        for y in 1..44 {
            for x in 1..60 {
                let l = 4.0 * px(&a, x, y)
                    - px(&a, x - 1, y)
                    - px(&a, x + 1, y)
                    - px(&a, x, y - 1)
                    - px(&a, x, y + 1);
                sum += l * l;
            }
        }
        assert_eq!(detail_energy(&a), sum / (59.0 * 43.0));
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
        assert!(!apply_thresholds(&sim, &r).is_fail(), "{sim:?}");
    }

    #[test]
    fn a_different_image_fails() {
        let r = rules();
        let a = textured(256, 256, 0);
        let b = DynamicImage::ImageRgb8(RgbImage::from_fn(256, 256, |x, y| {
            Rgb([((x * y) % 251) as u8, 0, 255 - (y % 256) as u8])
        }));
        assert!(apply_thresholds(&measure(&b, &a, &r), &r).is_fail());
    }

    #[test]
    fn a_heavy_blur_fails_on_detail() {
        let r = rules();
        let img = textured(256, 256, 1);
        let blurred = DynamicImage::ImageRgba8(imageops::blur(&img, 3.0));
        let sim = measure(&blurred, &img, &r);
        assert!(sim.detail_ratio < r.detail_ratio_min, "{sim:?}");
        assert!(apply_thresholds(&sim, &r).is_fail());
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

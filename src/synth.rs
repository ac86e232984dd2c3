//! Deterministic image transforms that stand in for honest drift and for cheats, shared by
//! the fixture generator, the threshold measurements and calibration.
//!
//! Honest: re-encoding (PNG → JPEG q98) and small pixel noise, standing in for the
//! kernel-level drift between GPUs. Cheats: blur (fewer denoising steps), downscale then
//! upscale (generation at low resolution), another image. Noise is drawn from a BLAKE3
//! stream keyed by a seed, so every run on every machine gives the same bytes.

use std::io::Cursor;

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageEncoder, ImageFormat, RgbImage};

pub fn blur(img: &DynamicImage, sigma: f32) -> DynamicImage {
    DynamicImage::ImageRgb8(imageops::blur(&img.to_rgb8(), sigma))
}

/// Downscale by `factor`, then back up to the original size.
pub fn down_up(img: &DynamicImage, factor: u32) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let small = imageops::resize(
        &img.to_rgb8(),
        (w / factor).max(1),
        (h / factor).max(1),
        FilterType::Triangle,
    );
    DynamicImage::ImageRgb8(imageops::resize(&small, w, h, FilterType::Triangle))
}

/// Adds approximately Gaussian noise of standard deviation `sigma` (in 8-bit levels).
pub fn noise(img: &DynamicImage, sigma: f64, seed: u64) -> DynamicImage {
    let mut rgb: RgbImage = img.to_rgb8();
    let mut stream = blake3::Hasher::new_derive_key("heurist proctor synth noise v1")
        .update(&seed.to_le_bytes())
        .finalize_xof();
    let mut buf = [0u8; 4096];
    let mut pos = buf.len();
    let mut next = || {
        if pos == buf.len() {
            stream.fill(&mut buf);
            pos = 0;
        }
        pos += 1;
        f64::from(buf[pos - 1])
    };
    // The sum of 4 uniform bytes has mean 510 and variance 4 × (256² − 1) / 12.
    let sd4 = (4.0 * (256.0f64 * 256.0 - 1.0) / 12.0).sqrt();
    for p in rgb.pixels_mut() {
        for c in p.0.iter_mut() {
            let z = (next() + next() + next() + next() - 510.0) / sd4;
            *c = (f64::from(*c) + z * sigma).round().clamp(0.0, 255.0) as u8;
        }
    }
    DynamicImage::ImageRgb8(rgb)
}

/// `v * gain + offset` on every channel: a stand-in for the slight tone shifts between
/// VAE decodes in different precisions.
pub fn tone(img: &DynamicImage, gain: f64, offset: f64) -> DynamicImage {
    let mut rgb = img.to_rgb8();
    for p in rgb.pixels_mut() {
        for c in p.0.iter_mut() {
            *c = (f64::from(*c) * gain + offset).round().clamp(0.0, 255.0) as u8;
        }
    }
    DynamicImage::ImageRgb8(rgb)
}

pub fn encode_png(img: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding into memory only fails on unsupported colour types; RGB8 is supported.
    let _ = DynamicImage::ImageRgb8(img.to_rgb8())
        .write_to(&mut Cursor::new(&mut out), ImageFormat::Png);
    out
}

pub fn encode_jpeg(img: &DynamicImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let rgb = img.to_rgb8();
    let _ = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).write_image(
        &rgb,
        rgb.width(),
        rgb.height(),
        image::ExtendedColorType::Rgb8,
    );
    out
}

/// Decodes trusted bytes (our own fixtures); panics are acceptable only in tools and tests.
pub fn decode_trusted(bytes: &[u8]) -> image::ImageResult<DynamicImage> {
    image::load_from_memory(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_deterministic_and_about_the_asked_size() {
        let img =
            DynamicImage::ImageRgb8(RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128])));
        let a = noise(&img, 2.0, 7);
        assert_eq!(a, noise(&img, 2.0, 7));
        assert_ne!(a, noise(&img, 2.0, 8));
        let px: Vec<f64> = a
            .to_rgb8()
            .into_raw()
            .iter()
            .map(|&v| f64::from(v) - 128.0)
            .collect();
        let sd = (px.iter().map(|v| v * v).sum::<f64>() / px.len() as f64).sqrt();
        assert!((sd - 2.0).abs() < 0.2, "{sd}");
    }

    #[test]
    fn tone_scales_and_offsets_every_channel() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(16, 8, |x, y| {
            image::Rgb([(x * 10) as u8, (y * 20) as u8, 7])
        }));
        assert_eq!(tone(&img, 1.0, 0.0), img);
        assert_eq!(tone(&img, 2.0, 1.0).to_rgb8().get_pixel(3, 0).0[0], 61);
        assert_eq!(tone(&img, 100.0, 0.0).to_rgb8().get_pixel(3, 0).0[0], 255);
    }

    #[test]
    fn down_up_keeps_the_size() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(100, 60));
        let d = down_up(&img, 4);
        assert_eq!((d.width(), d.height()), (100, 60));
    }
}

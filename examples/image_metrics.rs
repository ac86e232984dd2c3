//! Prints every image-similarity measure for honest variants and cheats of each photo in a
//! folder, against the thresholds in the shipped rules. This is how the thresholds in
//! rules/checks.toml were chosen until calibration replaces them:
//!
//!     cargo run --release --example image_metrics -- ../shared/images

use std::path::PathBuf;

use proctor::checks::image::{decode, judge, measure};
use proctor::rules::Rules;
use proctor::synth;

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "../shared/images".into()),
    );
    let rules = Rules::embedded().expect("shipped rules load");
    let im = &rules.checks.image;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("image folder readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("png" | "jpg")))
        .collect();
    files.sort();
    println!(
        "{:<24} {:<22} {:>5} {:>5} {:>7} {:>7}  verdict",
        "image", "variant", "pHash", "dHash", "SSIM", "detail"
    );
    let imgs: Vec<_> = files
        .iter()
        .map(|f| synth::decode_trusted(&std::fs::read(f).expect("readable")).expect("decodes"))
        .collect();
    for (i, (f, img)) in files.iter().zip(&imgs).enumerate() {
        let other = &imgs[(i + 1) % imgs.len()];
        let other = synth::decode_trusted(&synth::encode_png(&image::DynamicImage::ImageRgb8(
            image::imageops::resize(
                &other.to_rgb8(),
                img.width(),
                img.height(),
                image::imageops::FilterType::Triangle,
            ),
        )))
        .expect("decodes");
        let variants: Vec<(&str, image::DynamicImage)> = vec![
            (
                "honest: jpeg q98",
                decode(&synth::encode_jpeg(img, 98), im).expect("decodes"),
            ),
            ("honest: noise 2", synth::noise(img, 2.0, 1)),
            (
                "honest: noise 4 + q98",
                decode(&synth::encode_jpeg(&synth::noise(img, 4.0, 2), 98), im).expect("decodes"),
            ),
            ("cheat: blur 1.5", synth::blur(img, 1.5)),
            ("cheat: blur 3", synth::blur(img, 3.0)),
            ("cheat: down-up 2x", synth::down_up(img, 2)),
            ("cheat: down-up 4x", synth::down_up(img, 4)),
            ("cheat: other image", other),
        ];
        for (name, v) in variants {
            let sim = measure(&v, img, im);
            let verdict = if judge(&sim, im).is_fail() {
                "fail"
            } else {
                "pass"
            };
            println!(
                "{:<24} {:<22} {:>5} {:>5} {:>7.3} {:>7.3}  {verdict}",
                f.file_name().unwrap_or_default().to_string_lossy(),
                name,
                sim.phash_distance,
                sim.dhash_distance,
                sim.ssim,
                sim.detail_ratio
            );
        }
    }
}

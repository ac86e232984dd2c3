//! Image decoding under the project's limits: any bytes a miner can upload as its
//! output. Never a panic and never more memory than the rules allow (libFuzzer's
//! `-rss_limit_mb` in scripts/fuzz holds the process to it); an image that decodes is
//! hashed and compared with itself as the checks do, and is identical to itself.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use proctor::checks::image::{decode, luma, measure_luma, phash};
use proctor::rules::{ImageRules, Rules};

static RULES: LazyLock<ImageRules> =
    LazyLock::new(|| Rules::embedded().expect("the shipped rules").checks.image);

fuzz_target!(|data: &[u8]| {
    let Ok(img) = decode(data, &RULES) else {
        return;
    };
    let gray = luma(&img);
    let _ = phash(&gray, &RULES);
    let same = measure_luma(&gray, &gray, &RULES);
    // An image is its own perfect match: a NaN here would pass every `<` threshold.
    assert_eq!(
        (same.phash_distance, same.dhash_distance),
        (0, 0),
        "{same:?}"
    );
    assert!((same.ssim - 1.0).abs() < 1e-9, "{same:?}");
    assert!(same.detail_ratio.is_finite(), "{same:?}");
});

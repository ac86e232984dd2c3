//! Hostile images decode to `invalid` without a panic and under a memory bound that this
//! test measures with a counting global allocator.
//!
//! Everything runs in one test function, in sequence, so no other test's allocations
//! mix into the peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use proctor::checks::image::{InvalidImage, decode};
use proctor::rules::Rules;
use proctor::synth;

#[allow(dead_code, unused_imports)]
#[path = "../examples/gen_audit_demo.rs"]
mod demo_gen;

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are
// only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated above the starting level while running `f`.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// A JPEG whose frame header claims `w`×`h` pixels.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::new(16, 16));
    let mut bytes = synth::encode_jpeg(&img, 90);
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline SOF0 marker");
    bytes[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    bytes
}

#[test]
fn hostile_images_are_invalid_under_a_memory_bound() {
    let rules = Rules::embedded().unwrap().checks.image;
    const MIB: usize = 1 << 20;
    // A decode may not allocate more than the rules' decoder limit plus a little for
    // the decoder's own state; refusals must cost far less.
    let decode_bound = rules.max_decode_alloc_bytes as usize + 8 * MIB;
    let refusal_bound = 4 * MIB;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        // 60000² RGBA8 = 14.4 GB declared, a few KB on disk.
        (
            "png bomb: huge dimensions",
            demo_gen::png_bomb(60000, 60000, 8, 64),
        ),
        // 4096² RGBA16 = 128 MiB: inside the side limit, over the allocation limit.
        (
            "png bomb: over the allocation limit",
            demo_gen::png_bomb(4096, 4096, 16, 4096),
        ),
        ("jpeg claiming 65535x65535", jpeg_claiming(65535, 65535)),
        (
            "jpeg claiming 4000x4000 with 16x16 of data",
            jpeg_claiming(4000, 4000),
        ),
        ("truncated png", {
            let b = synth::encode_png(&image::DynamicImage::ImageRgb8(image::RgbImage::new(
                256, 256,
            )));
            b[..b.len() / 2].to_vec()
        }),
        ("png signature only", b"\x89PNG\r\n\x1a\n".to_vec()),
        ("jpeg SOI only", vec![0xFF, 0xD8, 0xFF]),
        ("empty", Vec::new()),
        ("html", b"<html>502 Bad Gateway</html>".to_vec()),
    ];
    for (name, bytes) in &cases {
        assert!(bytes.len() < 2 * MIB, "{name}: fixture itself too large");
        let (result, peak) = peak_during(|| decode(bytes, &rules));
        assert_ne!(
            result,
            Err(InvalidImage::DecoderPanicked),
            "{name} panicked the decoder"
        );
        if name.starts_with("jpeg claiming 4000") {
            // zune-jpeg decodes truncated scans leniently, filling the missing blocks: a
            // header inside the limits costs at most the decoder bound, and the grey
            // 4000x4000 result then fails the size and similarity checks.
            if let Ok(img) = &result {
                assert_eq!((img.width(), img.height()), (4000, 4000));
            }
            assert!(
                peak <= decode_bound,
                "{name}: peak {peak} bytes > bound {decode_bound}"
            );
        } else {
            assert!(result.is_err(), "{name} decoded");
            assert!(
                peak <= refusal_bound,
                "{name}: peak {peak} bytes > bound {refusal_bound}"
            );
        }
    }

    // The largest honest output: a 2048x2048 image decodes within the decoder bound.
    let big = synth::encode_png(&image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(
        2048,
        2048,
        |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x ^ y) % 256) as u8]),
    )));
    let (result, peak) = peak_during(|| decode(&big, &rules));
    assert!(result.is_ok());
    assert!(peak <= decode_bound, "2048² decode peak {peak}");
}

#[test]
fn mutated_images_never_panic_the_decoder() {
    // A deterministic bit-flip sweep over a PNG and a JPEG: every result is an image or
    // an `InvalidImage`, and the guard never has to catch a panic.
    let rules = Rules::embedded().unwrap().checks.image;
    let img = synth::noise(
        &image::DynamicImage::ImageRgb8(image::RgbImage::new(48, 32)),
        40.0,
        1,
    );
    let mut panics = 0;
    for seed_bytes in [synth::encode_png(&img), synth::encode_jpeg(&img, 98)] {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..1500 {
            let mut bytes = seed_bytes.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state % bytes.len() as u64) as usize;
                bytes[i] ^= 1 << (state >> 61);
            }
            state ^= state << 13;
            let cut = (state % bytes.len() as u64) as usize;
            if state.is_multiple_of(5) {
                bytes.truncate(cut.max(1));
            }
            if decode(&bytes, &rules) == Err(InvalidImage::DecoderPanicked) {
                panics += 1;
            }
        }
    }
    assert_eq!(
        panics, 0,
        "the decoder panicked {panics} times (contained, but report upstream)"
    );
}

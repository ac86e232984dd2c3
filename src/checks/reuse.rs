//! Reused output: the same (or a near-duplicate) image, or the same text, returned for a
//! job whose input differs. Catches canned answers and outputs replayed across jobs or
//! copied between miners.
//!
//! Images match when both their DCT hash (pHash) and their gradient hash (dHash) are
//! within the rules' distances: pHash alone maps distinct smooth images (sky, a plain
//! table) onto the same 64 bits, and the two hashes fail on different images.
//!
//! The index is bounded (`rules.checks.reuse.capacity` entries per kind, oldest evicted
//! first), so memory stays flat however long a worker runs. Jobs with identical inputs
//! (same model, prompt, size, steps, seed) may honestly produce the same output, so a
//! match only counts when the input digests differ.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::ids::{JobId, MinerId};
use crate::outcome::Outcome;
use crate::rules::ReuseRules;

#[derive(Debug, Clone, Serialize)]
struct Seen {
    job_id: JobId,
    miner_id: MinerId,
    #[serde(skip)]
    input: blake3::Hash,
}

#[derive(Debug, Default)]
pub struct ReuseIndex {
    images: VecDeque<(ImageFingerprint, Seen)>,
    texts: HashMap<blake3::Hash, Seen>,
    text_order: VecDeque<blake3::Hash>,
}

/// The two perceptual hashes of an image, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFingerprint {
    pub phash: Box<[u8]>,
    pub dhash: Box<[u8]>,
}

fn hamming(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Whitespace differences do not make a text new.
fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl ReuseIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks an image's perceptual hashes against recent ones, then remembers them.
    pub fn check_image(
        &mut self,
        job_id: &JobId,
        miner_id: &MinerId,
        input: blake3::Hash,
        fp: &ImageFingerprint,
        rules: &ReuseRules,
    ) -> Outcome {
        let hit = self.images.iter().find_map(|(h, seen)| {
            let same_shape = h.phash.len() == fp.phash.len() && h.dhash.len() == fp.dhash.len();
            let dp = hamming(&h.phash, &fp.phash);
            let dd = hamming(&h.dhash, &fp.dhash);
            (same_shape
                && dp <= rules.image_max_distance
                && dd <= rules.image_max_dhash_distance
                && seen.input != input
                && &seen.job_id != job_id)
                .then(|| (dp, dd, seen.clone()))
        });
        if self.images.len() >= rules.capacity {
            self.images.pop_front();
        }
        self.images.push_back((
            fp.clone(),
            Seen {
                job_id: job_id.clone(),
                miner_id: miner_id.clone(),
                input,
            },
        ));
        match hit {
            Some((dp, dd, seen)) => Outcome::fail(
                format!(
                    "image is a near-duplicate (pHash distance {dp}, dHash distance {dd}) of job {} by {}, whose input differs",
                    seen.job_id, seen.miner_id
                ),
                serde_json::json!({
                    "matched": seen,
                    "phash_distance": dp,
                    "dhash_distance": dd,
                    "max_phash_distance": rules.image_max_distance,
                    "max_dhash_distance": rules.image_max_dhash_distance,
                }),
            ),
            None => Outcome::pass(serde_json::json!({"compared_with": self.images.len() - 1})),
        }
    }

    /// Checks a text against recent ones, then remembers it.
    pub fn check_text(
        &mut self,
        job_id: &JobId,
        miner_id: &MinerId,
        input: blake3::Hash,
        text: &str,
        rules: &ReuseRules,
    ) -> Outcome {
        let norm = normalize(text);
        if norm.chars().count() < rules.text_min_chars {
            return Outcome::inconclusive(format!(
                "texts shorter than {} characters repeat honestly",
                rules.text_min_chars
            ));
        }
        let key = blake3::hash(norm.as_bytes());
        let hit = self
            .texts
            .get(&key)
            .filter(|seen| seen.input != input && &seen.job_id != job_id)
            .cloned();
        if !self.texts.contains_key(&key) {
            if self.text_order.len() >= rules.capacity
                && let Some(old) = self.text_order.pop_front()
            {
                self.texts.remove(&old);
            }
            self.text_order.push_back(key);
            self.texts.insert(
                key,
                Seen {
                    job_id: job_id.clone(),
                    miner_id: miner_id.clone(),
                    input,
                },
            );
        }
        match hit {
            Some(seen) => Outcome::fail(
                format!(
                    "the same text was returned for job {} by {}, whose input differs",
                    seen.job_id, seen.miner_id
                ),
                serde_json::json!({"matched": seen, "text_blake3": key.to_hex().as_str()}),
            ),
            None => Outcome::pass(serde_json::json!({"text_blake3": key.to_hex().as_str()})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(capacity: usize) -> ReuseRules {
        ReuseRules {
            capacity,
            image_max_distance: 4,
            image_max_dhash_distance: 6,
            text_min_chars: 10,
        }
    }

    fn fp(p: [u8; 8], d: [u8; 8]) -> ImageFingerprint {
        ImageFingerprint {
            phash: p.into(),
            dhash: d.into(),
        }
    }

    fn ids(j: &str) -> (JobId, MinerId) {
        (
            JobId::parse(j).unwrap(),
            MinerId::parse("0x00000000000000000000000000000000000000aa").unwrap(),
        )
    }

    #[test]
    fn a_near_duplicate_image_for_another_input_fails() {
        let mut idx = ReuseIndex::new();
        let r = rules(10);
        let (j1, m) = ids("a");
        let (j2, _) = ids("b");
        let h1 = [0b1010_1010u8; 8];
        let mut h2 = h1;
        h2[0] ^= 0b11;
        assert!(
            !idx.check_image(&j1, &m, blake3::hash(b"in1"), &fp(h1, h1), &r)
                .is_fail()
        );
        assert!(
            idx.check_image(&j2, &m, blake3::hash(b"in2"), &fp(h2, h2), &r)
                .is_fail()
        );
    }

    #[test]
    fn a_shared_phash_alone_is_not_a_duplicate() {
        let mut idx = ReuseIndex::new();
        let r = rules(10);
        let (j1, m) = ids("a");
        let (j2, _) = ids("b");
        assert!(
            !idx.check_image(&j1, &m, blake3::hash(b"in1"), &fp([7; 8], [0; 8]), &r)
                .is_fail()
        );
        assert!(
            !idx.check_image(&j2, &m, blake3::hash(b"in2"), &fp([7; 8], [0xff; 8]), &r)
                .is_fail()
        );
    }

    #[test]
    fn the_same_input_may_repeat_its_output() {
        let mut idx = ReuseIndex::new();
        let r = rules(10);
        let (j1, m) = ids("a");
        let (j2, _) = ids("b");
        let input = blake3::hash(b"same");
        assert!(
            !idx.check_image(&j1, &m, input, &fp([1; 8], [1; 8]), &r)
                .is_fail()
        );
        assert!(
            !idx.check_image(&j2, &m, input, &fp([1; 8], [1; 8]), &r)
                .is_fail()
        );
        let text = "a long enough answer to count";
        assert!(!idx.check_text(&j1, &m, input, text, &r).is_fail());
        assert!(!idx.check_text(&j2, &m, input, text, &r).is_fail());
    }

    #[test]
    fn a_redelivered_job_is_not_its_own_duplicate() {
        let mut idx = ReuseIndex::new();
        let r = rules(10);
        let (j1, m) = ids("a");
        assert!(
            !idx.check_image(&j1, &m, blake3::hash(b"x"), &fp([1; 8], [1; 8]), &r)
                .is_fail()
        );
        assert!(
            !idx.check_image(&j1, &m, blake3::hash(b"y"), &fp([1; 8], [1; 8]), &r)
                .is_fail()
        );
    }

    #[test]
    fn a_canned_text_fails_even_with_other_whitespace() {
        let mut idx = ReuseIndex::new();
        let r = rules(10);
        let (j1, m) = ids("a");
        let (j2, _) = ids("b");
        let canned = "I'm sorry, but I cannot help with that request.";
        assert!(
            !idx.check_text(&j1, &m, blake3::hash(b"q1"), canned, &r)
                .is_fail()
        );
        let again = canned.replace(' ', "  ");
        assert!(
            idx.check_text(&j2, &m, blake3::hash(b"q2"), &again, &r)
                .is_fail()
        );
    }

    #[test]
    fn the_index_forgets_the_oldest_beyond_capacity() {
        let mut idx = ReuseIndex::new();
        let r = rules(2);
        let (m_job, m) = ids("x");
        let _ = m_job;
        for (i, h) in [[1u8; 8], [2; 8], [3; 8]].iter().enumerate() {
            let (j, _) = ids(&format!("j{i}"));
            idx.check_image(&j, &m, blake3::hash(&[i as u8]), &fp(*h, *h), &r);
        }
        assert_eq!(idx.images.len(), 2);
        let (j, _) = ids("late");
        // [1; 8] was evicted, so its duplicate passes now.
        assert!(
            !idx.check_image(&j, &m, blake3::hash(b"late"), &fp([1; 8], [1; 8]), &r)
                .is_fail()
        );
    }

    #[test]
    fn short_texts_are_not_judged() {
        let mut idx = ReuseIndex::new();
        let (j, m) = ids("a");
        let o = idx.check_text(&j, &m, blake3::hash(b"q"), "Paris", &rules(10));
        assert!(matches!(o, Outcome::Inconclusive { .. }));
    }
}

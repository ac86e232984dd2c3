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

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::{JobId, MinerId};
use crate::outcome::Outcome;
use crate::rules::ReuseRules;

#[derive(Debug, Clone, Serialize)]
struct Seen {
    job_id: JobId,
    miner_id: MinerId,
    submitted_at: DateTime<Utc>,
    #[serde(skip)]
    input: blake3::Hash,
}

/// The job whose output is being checked.
#[derive(Debug, Clone, Copy)]
pub struct Submitted<'a> {
    pub job_id: &'a JobId,
    pub miner_id: &'a MinerId,
    /// The digest of the job's input (`JobRecord::input_digest`).
    pub input: blake3::Hash,
    pub at: DateTime<Utc>,
}

impl Submitted<'_> {
    fn seen(&self) -> Seen {
        Seen {
            job_id: self.job_id.clone(),
            miner_id: self.miner_id.clone(),
            submitted_at: self.at,
            input: self.input,
        }
    }

    /// Whether `seen` is another job, for another input, submitted no later than this
    /// one. Only the later of two jobs is the copy: a pipeline that meets the copy first
    /// (another partition ran ahead) must not blame the original.
    fn copies(&self, seen: &Seen) -> bool {
        seen.input != self.input && &seen.job_id != self.job_id && seen.submitted_at <= self.at
    }
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
        job: Submitted,
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
                && job.copies(seen))
            .then(|| (dp, dd, seen.clone()))
        });
        if self.images.len() >= rules.capacity {
            self.images.pop_front();
        }
        self.images.push_back((fp.clone(), job.seen()));
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
    pub fn check_text(&mut self, job: Submitted, text: &str, rules: &ReuseRules) -> Outcome {
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
            .filter(|seen| job.copies(seen))
            .cloned();
        match self.texts.get_mut(&key) {
            // Keep the earliest submission of a text: it is the one copies are from.
            Some(seen) => {
                if job.at < seen.submitted_at {
                    *seen = job.seen();
                }
            }
            None => {
                if self.text_order.len() >= rules.capacity
                    && let Some(old) = self.text_order.pop_front()
                {
                    self.texts.remove(&old);
                }
                self.text_order.push_back(key);
                self.texts.insert(key, job.seen());
            }
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

    fn sub<'a>(job_id: &'a JobId, miner_id: &'a MinerId, input: blake3::Hash) -> Submitted<'a> {
        // Job ids in these tests sort in submission order.
        let at = DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")
            .unwrap()
            .to_utc()
            + chrono::Duration::seconds(job_id.as_str().bytes().map(i64::from).sum::<i64>());
        Submitted {
            job_id,
            miner_id,
            input,
            at,
        }
    }

    #[test]
    fn the_original_is_not_blamed_when_the_copy_is_seen_first() {
        let mut idx = ReuseIndex::new();
        let r = rules(10);
        let (original, m) = ids("a");
        let (copy, _) = ids("b");
        let h = fp([3; 8], [5; 8]);
        let text = "a canned answer long enough to count";
        // The copy (later submission) arrives first, e.g. from a faster partition.
        assert!(
            !idx.check_image(sub(&copy, &m, blake3::hash(b"q2")), &h, &r)
                .is_fail()
        );
        assert!(
            !idx.check_image(sub(&original, &m, blake3::hash(b"q1")), &h, &r)
                .is_fail()
        );
        assert!(
            !idx.check_text(sub(&copy, &m, blake3::hash(b"q2")), text, &r)
                .is_fail()
        );
        assert!(
            !idx.check_text(sub(&original, &m, blake3::hash(b"q1")), text, &r)
                .is_fail()
        );
        // A later third copy is caught, and names the original.
        let (third, _) = ids("c");
        let o = idx.check_text(sub(&third, &m, blake3::hash(b"q3")), text, &r);
        assert!(o.is_fail());
        assert!(
            serde_json::to_string(&o)
                .unwrap()
                .contains("\"job_id\":\"a\"")
        );
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
            !idx.check_image(sub(&j1, &m, blake3::hash(b"in1")), &fp(h1, h1), &r)
                .is_fail()
        );
        assert!(
            idx.check_image(sub(&j2, &m, blake3::hash(b"in2")), &fp(h2, h2), &r)
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
            !idx.check_image(sub(&j1, &m, blake3::hash(b"in1")), &fp([7; 8], [0; 8]), &r)
                .is_fail()
        );
        assert!(
            !idx.check_image(
                sub(&j2, &m, blake3::hash(b"in2")),
                &fp([7; 8], [0xff; 8]),
                &r
            )
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
            !idx.check_image(sub(&j1, &m, input), &fp([1; 8], [1; 8]), &r)
                .is_fail()
        );
        assert!(
            !idx.check_image(sub(&j2, &m, input), &fp([1; 8], [1; 8]), &r)
                .is_fail()
        );
        let text = "a long enough answer to count";
        assert!(!idx.check_text(sub(&j1, &m, input), text, &r).is_fail());
        assert!(!idx.check_text(sub(&j2, &m, input), text, &r).is_fail());
    }

    #[test]
    fn a_redelivered_job_is_not_its_own_duplicate() {
        let mut idx = ReuseIndex::new();
        let r = rules(10);
        let (j1, m) = ids("a");
        assert!(
            !idx.check_image(sub(&j1, &m, blake3::hash(b"x")), &fp([1; 8], [1; 8]), &r)
                .is_fail()
        );
        assert!(
            !idx.check_image(sub(&j1, &m, blake3::hash(b"y")), &fp([1; 8], [1; 8]), &r)
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
            !idx.check_text(sub(&j1, &m, blake3::hash(b"q1")), canned, &r)
                .is_fail()
        );
        let again = canned.replace(' ', "  ");
        assert!(
            idx.check_text(sub(&j2, &m, blake3::hash(b"q2")), &again, &r)
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
            idx.check_image(sub(&j, &m, blake3::hash(&[i as u8])), &fp(*h, *h), &r);
        }
        assert_eq!(idx.images.len(), 2);
        let (j, _) = ids("late");
        // [1; 8] was evicted, so its duplicate passes now.
        assert!(
            !idx.check_image(sub(&j, &m, blake3::hash(b"late")), &fp([1; 8], [1; 8]), &r)
                .is_fail()
        );
    }

    #[test]
    fn short_texts_are_not_judged() {
        let mut idx = ReuseIndex::new();
        let (j, m) = ids("a");
        let o = idx.check_text(sub(&j, &m, blake3::hash(b"q")), "Paris", &rules(10));
        assert!(matches!(o, Outcome::Inconclusive { .. }));
    }
}

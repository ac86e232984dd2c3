//! Canary jobs: known-answer probes the job service mixes in with ordinary jobs. A job
//! whose prompt equals a canary's prompt exactly must show the canary's property.

use crate::outcome::Outcome;
use crate::record::{Job, JobRecord};
use crate::rules::{Canary, Rules};

/// The canary this job is, if any.
pub fn find<'r>(rules: &'r Rules, record: &JobRecord) -> Option<&'r Canary> {
    let (kind, prompt) = match &record.job {
        Job::Sd { input, .. } => (crate::record::JobKind::Sd, input.prompt.as_str()),
        Job::Llm { input, .. } => (crate::record::JobKind::Llm, input.probe_text()),
    };
    rules
        .checks
        .canaries
        .iter()
        .find(|c| c.kind == kind && c.prompt == prompt)
}

pub fn check_text(canary: &Canary, text: &str) -> Outcome {
    let lower = text.to_lowercase();
    let details = serde_json::json!({"canary": canary.id, "require_any": canary.require_any});
    if canary
        .require_any
        .iter()
        .any(|w| lower.contains(&w.to_lowercase()))
    {
        Outcome::pass(details)
    } else {
        Outcome::fail(
            format!(
                "canary {} answered without any of {:?}",
                canary.id, canary.require_any
            ),
            serde_json::json!({"canary": canary.id, "require_any": canary.require_any, "answer": text}),
        )
    }
}

pub fn check_image(canary: &Canary, phash: &image_hasher::ImageHash) -> Outcome {
    let reference = canary
        .reference_phash
        .as_deref()
        .and_then(|h| image_hasher::ImageHash::<Box<[u8]>>::from_base64(h).ok());
    let (Some(reference), Some(max)) = (reference, canary.max_distance) else {
        return Outcome::inconclusive(format!("canary {} has no usable reference hash", canary.id));
    };
    if reference.as_bytes().len() != phash.as_bytes().len() {
        return Outcome::inconclusive(format!(
            "canary {} hash size differs from the rules' hash size",
            canary.id
        ));
    }
    let distance = reference.dist(phash);
    let details =
        serde_json::json!({"canary": canary.id, "distance": distance, "max_distance": max});
    if distance <= max {
        Outcome::pass(details)
    } else {
        Outcome::fail(
            format!(
                "canary {} image is {distance} bits from the known answer (max {max})",
                canary.id
            ),
            details,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::JobKind;

    fn llm_canary() -> Canary {
        Canary {
            id: "c".into(),
            kind: JobKind::Llm,
            prompt: "q".into(),
            require_any: vec!["Paris".into()],
            reference_phash: None,
            max_distance: None,
        }
    }

    #[test]
    fn a_canary_answer_must_contain_the_required_word() {
        assert!(!check_text(&llm_canary(), "The capital is paris.").is_fail());
        assert!(check_text(&llm_canary(), "The capital is Lyon.").is_fail());
    }

    #[test]
    fn an_image_canary_compares_hashes() {
        let h = image_hasher::ImageHash::<Box<[u8]>>::from_bytes(&[0u8; 8]).unwrap();
        let far = image_hasher::ImageHash::<Box<[u8]>>::from_bytes(&[0xffu8; 8]).unwrap();
        let c = Canary {
            kind: JobKind::Sd,
            reference_phash: Some(h.to_base64()),
            max_distance: Some(5),
            require_any: vec![],
            ..llm_canary()
        };
        assert!(!check_image(&c, &h).is_fail());
        assert!(check_image(&c, &far).is_fail());
    }
}

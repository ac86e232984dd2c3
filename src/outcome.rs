//! What a check says about one job: `Pass`, `Fail` with evidence, or `Inconclusive` with a
//! reason. "Could not check" is never "cheated": only `Fail` counts as evidence against a
//! miner, and no infrastructure error can produce a `Fail`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every check proctor runs. The snake_case name is the key in `rules/checks.toml`, in
/// verdicts and in evidence references, so renaming one is a rules-format change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    /// The model is in the registry at all; unknown models make the job inconclusive.
    ModelKnown,
    /// The output can be read: the image decodes within limits, the text is UTF-8 and bounded.
    OutputDecode,
    /// The image has the size the miner's clamping of the request gives.
    OutputSize,
    /// The image matches the reference GPU's image for the same input and seed.
    ImageSimilarity,
    /// A token ranked beyond what the job's temperature allows.
    LlmRank,
    /// Too many tokens the reference model finds unlikely.
    LlmUnlikelyTokens,
    /// The output ran on where the reference model would almost surely have stopped.
    LlmEosSkipped,
    /// The output stopped where the reference model would almost surely have gone on.
    LlmEarlyEnd,
    /// Too many argmax picks for a sampled (temperature > 0) job.
    LlmGreedyShare,
    /// Sampled text is less likely under the job's sampling distribution than the
    /// reference model's own samples are.
    LlmLikelihood,
    /// Sampled text fits a suspect model of the panel (a cheaper model or sampler a
    /// cheater would serve) better than the reference, by more than honest text does.
    LlmSuspect,
    /// Miner-reported logprobs differ from the reference's.
    LlmLogprobDelta,
    /// The miner's answer to a model-file byte-range challenge.
    ModelChallenge,
    /// The reported hardware string names a GPU the rules know.
    DeviceKnown,
    /// The reported GPU meets the category's minimum.
    DeviceSpec,
    /// The reported latencies are consistent and physically possible on the reported GPU.
    Latency,
    /// The reported speed is within a calibrated margin of the fastest published run
    /// of the category on that GPU.
    LatencyEnvelope,
    /// The reported speed is not an outlier among the other miners reporting that GPU.
    LatencyPeers,
    /// The same output was returned for a job with a different input.
    Reuse,
    /// A known-answer probe job has the required property.
    Canary,
}

impl CheckId {
    pub const ALL: [CheckId; 20] = [
        CheckId::ModelKnown,
        CheckId::OutputDecode,
        CheckId::OutputSize,
        CheckId::ImageSimilarity,
        CheckId::LlmRank,
        CheckId::LlmUnlikelyTokens,
        CheckId::LlmEosSkipped,
        CheckId::LlmEarlyEnd,
        CheckId::LlmGreedyShare,
        CheckId::LlmLikelihood,
        CheckId::LlmSuspect,
        CheckId::LlmLogprobDelta,
        CheckId::ModelChallenge,
        CheckId::DeviceKnown,
        CheckId::DeviceSpec,
        CheckId::Latency,
        CheckId::LatencyEnvelope,
        CheckId::LatencyPeers,
        CheckId::Reuse,
        CheckId::Canary,
    ];

    /// Whether the check needs the reference run's output (the image, the token scores,
    /// the challenge answer), so that only the re-run stage can judge it. The others
    /// judge the miner's output and report alone, at screen, and reach the same outcome
    /// at re-run.
    pub fn needs_reference(self) -> bool {
        matches!(
            self,
            CheckId::ImageSimilarity
                | CheckId::LlmRank
                | CheckId::LlmUnlikelyTokens
                | CheckId::LlmEosSkipped
                | CheckId::LlmEarlyEnd
                | CheckId::LlmGreedyShare
                | CheckId::LlmLikelihood
                | CheckId::LlmSuspect
                | CheckId::LlmLogprobDelta
                | CheckId::ModelChallenge
        )
    }

    /// The check named `name` (as [`CheckId::as_str`] writes it).
    pub fn parse(name: &str) -> Option<CheckId> {
        CheckId::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::ModelKnown => "model_known",
            CheckId::OutputDecode => "output_decode",
            CheckId::OutputSize => "output_size",
            CheckId::ImageSimilarity => "image_similarity",
            CheckId::LlmRank => "llm_rank",
            CheckId::LlmUnlikelyTokens => "llm_unlikely_tokens",
            CheckId::LlmEosSkipped => "llm_eos_skipped",
            CheckId::LlmEarlyEnd => "llm_early_end",
            CheckId::LlmGreedyShare => "llm_greedy_share",
            CheckId::LlmLikelihood => "llm_likelihood",
            CheckId::LlmSuspect => "llm_suspect",
            CheckId::LlmLogprobDelta => "llm_logprob_delta",
            CheckId::ModelChallenge => "model_challenge",
            CheckId::DeviceKnown => "device_known",
            CheckId::DeviceSpec => "device_spec",
            CheckId::Latency => "latency",
            CheckId::LatencyEnvelope => "latency_envelope",
            CheckId::LatencyPeers => "latency_peers",
            CheckId::Reuse => "reuse",
            CheckId::Canary => "canary",
        }
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A check's result for one job. `Pass` keeps what was measured too: calibration and staff
/// review need the distances of honest jobs as much as those of cheats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Pass {
        #[serde(default, skip_serializing_if = "Value::is_null")]
        measured: Value,
    },
    Fail {
        evidence: Evidence,
    },
    Inconclusive {
        reason: String,
    },
}

/// Why a check failed: one line for a person, and the numbers behind it for a reviewer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub summary: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

impl Outcome {
    pub fn pass(measured: impl Serialize) -> Outcome {
        Outcome::Pass {
            measured: serde_json::to_value(measured).unwrap_or(Value::Null),
        }
    }

    pub fn fail(summary: impl Into<String>, details: impl Serialize) -> Outcome {
        Outcome::Fail {
            evidence: Evidence {
                summary: summary.into(),
                details: serde_json::to_value(details).unwrap_or(Value::Null),
            },
        }
    }

    pub fn inconclusive(reason: impl Into<String>) -> Outcome {
        Outcome::Inconclusive {
            reason: reason.into(),
        }
    }

    pub fn is_fail(&self) -> bool {
        matches!(self, Outcome::Fail { .. })
    }

    pub fn status(&self) -> Status {
        match self {
            Outcome::Pass { .. } => Status::Pass,
            Outcome::Fail { .. } => Status::Fail,
            Outcome::Inconclusive { .. } => Status::Inconclusive,
        }
    }
}

/// An outcome without its payload, for tables and expectations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    Inconclusive,
}

/// One check's outcome for one job: the unit of evidence, addressable by (job, check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: CheckId,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_match_their_serde_names() {
        for id in CheckId::ALL {
            let json = serde_json::to_value(id).unwrap();
            assert_eq!(json, Value::String(id.as_str().to_owned()));
        }
    }

    #[test]
    fn a_check_result_serializes_flat() {
        let r = CheckResult {
            check: CheckId::Latency,
            outcome: Outcome::fail("too fast", serde_json::json!({"bound_s": 1.0})),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["check"], "latency");
        assert_eq!(v["status"], "fail");
        assert_eq!(v["evidence"]["details"]["bound_s"], 1.0);
        let back: CheckResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}

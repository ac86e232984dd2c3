//! A miner's case as data, and the rules that turn it into a decision, with no I/O.
//!
//! `proctor audit` and the judge worker both build a [`MinerCase`] here, so the rules
//! that choose what a decision counts are written once:
//!
//! - **Stage precedence.** A job's re-run verdict (every check, with the reference)
//!   supersedes its screen verdict, whichever was stored first. Of two verdicts at one
//!   stage (a redelivered job) the later one counts.
//! - **The window.** A decision counts the jobs submitted in the `window_days` before
//!   the miner's newest job. It ends at that job, not at the clock, so deciding again on
//!   the same data gives the same answer.
//! - **Slashed jobs** count once: a job an earlier slash covers is never evidence again
//!   (`decide::decide` leaves them out).
//! - **The flag id** names a review flag by the miner and the jobs its evidence cites, so
//!   a flag raised twice on the same evidence is one flag.
//!
//! The store reads rows and writes outcomes; the audit reads a folder. Neither decides.

use std::collections::{BTreeMap, BTreeSet};

use std::future::Future;

use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::SigningKey;

use crate::checks::JobVerdict;
use crate::decide::{self, Action, Decision, EvidenceRef};
use crate::events::{self, SignedEvent, SlashEvent};
use crate::ids::{JobId, MinerId};
use crate::rules::Rules;
use crate::sampling::{self, MinerRisk, SamplingSecret};

/// Where a verdict was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Checks that need no reference output.
    Screen,
    /// Every check, with the reference output: supersedes `Screen`.
    Rerun,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Screen => "screen",
            Stage::Rerun => "rerun",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        match s {
            "screen" => Some(Stage::Screen),
            "rerun" => Some(Stage::Rerun),
            _ => None,
        }
    }
}

/// One stored verdict of a job, and the stage that reached it.
#[derive(Debug, Clone)]
pub struct StagedVerdict {
    pub stage: Stage,
    pub verdict: JobVerdict,
}

/// What is known about a miner: its stored verdicts (any stage, any order, possibly
/// more than the window holds), the jobs earlier slashes cover, and its points factor.
#[derive(Debug, Clone)]
pub struct History {
    pub verdicts: Vec<StagedVerdict>,
    pub slashed_jobs: BTreeSet<JobId>,
    /// The factor the ledger applied to this GPU's points (its NFT boost).
    pub points_factor: f64,
}

/// The decision on a miner, and the flag id when it flags.
#[derive(Debug, Clone)]
pub struct MinerCase {
    pub decision: Decision,
    /// Set when the decision flags the miner for review.
    pub flag_id: Option<String>,
}

/// The first submission time inside the window that ends at the miner's newest job.
/// The store selects rows from here on; [`counted`] applies the same bound.
pub fn window_start(newest: DateTime<Utc>, rules: &Rules) -> DateTime<Utc> {
    window_start_days(newest, rules.slashing.window_days)
}

/// [`window_start`] for a window of `days`: what a store reads, given the number.
pub fn window_start_days(newest: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    newest - Duration::days(i64::from(days))
}

/// The verdicts a decision counts: of each job the verdict of its latest stage, of the
/// jobs inside the window. Sorted by job id.
pub fn counted(
    verdicts: impl IntoIterator<Item = StagedVerdict>,
    rules: &Rules,
) -> Vec<JobVerdict> {
    let mut latest: BTreeMap<JobId, StagedVerdict> = BTreeMap::new();
    for v in verdicts {
        match latest.get(&v.verdict.job_id) {
            Some(kept) if kept.stage > v.stage => {}
            _ => {
                latest.insert(v.verdict.job_id.clone(), v);
            }
        }
    }
    let Some(newest) = latest.values().map(|v| v.verdict.submitted_at).max() else {
        return Vec::new();
    };
    let start = window_start(newest, rules);
    latest
        .into_values()
        .map(|v| v.verdict)
        .filter(|v| v.submitted_at >= start)
        .collect()
}

/// A job's re-run verdict, as both the rerun worker and `proctor audit` record it: the
/// checks of the re-run with the reference, marked sampled (a re-run is one, whichever
/// rule chose it), with the screen's allowance (only the screen stage moves the draw).
pub fn rerun_verdict(mut rerun: JobVerdict, screen: &JobVerdict) -> JobVerdict {
    rerun.sampled = true;
    rerun.screen_allowance = screen.screen_allowance;
    rerun
}

/// The failed checks of a verdict that raise its miner's sampling rate: those that
/// need no reference. The screen stage sees each of them for every job, in the
/// partition's order, so the rate a job is drawn at depends on the jobs before it and
/// never on when their re-runs arrived. A re-run failure is evidence for the decision,
/// not for the draw.
pub fn screen_failures(v: &JobVerdict) -> u32 {
    v.failed_checks().filter(|c| !c.needs_reference()).count() as u32
}

/// The re-run draw over jobs in the order the screen stage judges them: each job is
/// drawn at its miner's rate given the screen failures of the miner's earlier jobs,
/// then adds its own.
pub struct Sampler<'a> {
    rules: &'a Rules,
    secret: &'a SamplingSecret,
    risk: BTreeMap<MinerId, MinerRisk>,
}

impl<'a> Sampler<'a> {
    /// `prior`: what is already recorded per miner (the store's `miner_risk`: screen
    /// failures and staff decisions; empty for an audit, which sees every job).
    pub fn new(
        rules: &'a Rules,
        secret: &'a SamplingSecret,
        prior: BTreeMap<MinerId, MinerRisk>,
    ) -> Sampler<'a> {
        Sampler {
            rules,
            secret,
            risk: prior,
        }
    }

    /// Whether the job, screened as `screen`, is re-run: sets its `sampled` and its
    /// `screen_allowance`, and returns the draw. Call once per job, in order.
    pub fn draw(&mut self, screen: &mut JobVerdict) -> bool {
        let risk = self.risk.entry(screen.miner_id.clone()).or_default();
        let drawn = sampling::is_sampled(
            self.secret,
            screen.job_id.as_str(),
            sampling::rate(self.rules, *risk),
        );
        screen.screen_allowance = sampling::allowance(self.rules, &screen.checks);
        *risk = risk.after(screen_failures(screen), screen.screen_allowance);
        screen.sampled = drawn;
        drawn
    }
}

/// Which reference outputs a decision counts (`proctor audit --reruns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reruns {
    /// Those of the jobs the sampler draws, as in the pipeline, whose rerun worker sees
    /// only drawn jobs: a reference of any other job is never read.
    Drawn,
    /// Every reference present: the folder is an export of the jobs that were re-run
    /// (under a sampling secret the reader need not hold).
    Present,
}

impl Reruns {
    pub const ALL: [Reruns; 2] = [Reruns::Drawn, Reruns::Present];

    pub fn as_str(self) -> &'static str {
        match self {
            Reruns::Drawn => "drawn",
            Reruns::Present => "present",
        }
    }

    /// Whether a job is judged with its reference, and so at the re-run stage.
    pub fn counts(self, drawn: bool, has_reference: bool) -> bool {
        has_reference
            && match self {
                Reruns::Drawn => drawn,
                Reruns::Present => true,
            }
    }
}

/// The id of a review flag: the miner and the sorted, distinct jobs its evidence cites.
pub fn flag_id(miner: &MinerId, evidence: &[EvidenceRef]) -> String {
    let jobs: BTreeSet<&str> = evidence.iter().map(|e| e.job_id.as_str()).collect();
    let jobs: Vec<&str> = jobs.into_iter().collect();
    blake3::hash(format!("flag\0{miner}\0{}", jobs.join("\n")).as_bytes())
        .to_hex()
        .to_string()
}

/// Decides on a miner from its history.
pub fn decide(miner: &MinerId, history: History, rules: &Rules) -> MinerCase {
    let verdicts = counted(
        history
            .verdicts
            .into_iter()
            .filter(|v| &v.verdict.miner_id == miner),
        rules,
    );
    let decision = decide::decide(
        miner,
        &verdicts,
        &history.slashed_jobs,
        history.points_factor,
        rules,
    );
    let flag_id =
        (decision.action == Action::FlagForReview).then(|| flag_id(miner, &decision.evidence));
    MinerCase { decision, flag_id }
}

/// What deciding on a miner writes: the case, the signed ledger event of its slash,
/// and the signed event of the slash a reviewer's confirmation of its flag takes.
#[derive(Debug, Clone)]
pub struct Entry {
    pub case: MinerCase,
    /// Set when the case slashes and a signing key was given.
    pub event: Option<SignedEvent>,
    /// Set when the case is a flag (its `decision.confirmation`) and a signing key was
    /// given. The ledger port writes it only for a reviewer's confirmation that names
    /// this very slash: the review app holds no slash key, so this is how a confirmed
    /// slash gets signed, and only if the judge's own decision agrees with it.
    pub confirmation: Option<SignedEvent>,
}

/// Decides on a miner and signs the slash event: everything between reading a
/// history and writing its outcome. The judge worker hands this to [`Ledger::decide`].
pub fn entry(
    miner: &MinerId,
    history: History,
    rules: &Rules,
    key: Option<&SigningKey>,
) -> Result<Entry, serde_json::Error> {
    let case = decide(miner, history, rules);
    let sign = |slash: &Option<crate::decide::Slash>| match (slash, key) {
        (Some(slash), Some(key)) => events::sign(&SlashEvent::from(slash), key).map(Some),
        _ => Ok(None),
    };
    let event = sign(&case.decision.slash)?;
    let confirmation = sign(&case.decision.confirmation)?;
    Ok(Entry {
        case,
        event,
        confirmation,
    })
}

/// Port: where decisions are recorded. One decision is atomic and serialized per
/// miner: the history is read under the miner's lock, `decide` (pure) turns it into
/// an [`Entry`], and the slash with its jobs and its outbox event, or the review flag,
/// is written before the lock is released. Writing the same entry twice changes
/// nothing (slash and flag ids are deterministic).
pub trait Ledger {
    type Error;
    fn decide<F>(
        &self,
        miner: &MinerId,
        rules: &Rules,
        points_factor: f64,
        decide: F,
    ) -> impl Future<Output = Result<MinerCase, Self::Error>> + Send
    where
        F: FnOnce(History) -> Result<Entry, serde_json::Error> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Verdict;
    use crate::outcome::{CheckId, CheckResult, Outcome};
    use crate::points::Points;
    use crate::record::JobKind;

    /// Every measured rate holding on the jobs' model: these tests are about what a
    /// slash does.
    fn rules() -> Rules {
        Rules::measured_everywhere()
    }

    fn miner() -> MinerId {
        MinerId::parse("0x00000000000000000000000000000000000000aa").unwrap()
    }

    fn day(d: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + Duration::days(d)
    }

    /// A job of `miner()` submitted on day `d`, at `stage`, failing the image
    /// comparison when `fails`.
    fn staged(job: &str, d: i64, stage: Stage, fails: bool) -> StagedVerdict {
        let check = |check, fail: bool| CheckResult {
            check,
            outcome: if fail {
                Outcome::fail("bad", ())
            } else {
                Outcome::pass(())
            },
        };
        let mut checks = vec![check(CheckId::OutputSize, false)];
        if stage == Stage::Rerun {
            checks.push(check(CheckId::ImageSimilarity, fails));
        }
        StagedVerdict {
            stage,
            verdict: JobVerdict {
                job_id: JobId::parse(job).unwrap(),
                miner_id: miner(),
                model_id: crate::ids::ModelId::parse("SDXL").unwrap(),
                kind: JobKind::Sd,
                submitted_at: day(d),
                verdict: if fails { Verdict::Fail } else { Verdict::Pass },
                points: Points {
                    waifu: 10.0,
                    llama: 0.0,
                },
                points_estimated: false,
                sampled: true,
                output_key: Some(format!("jobs/{job}.png")),
                screen_allowance: 0.0,
                reference_seconds: None,
                checks,
                rules_digest: "d".into(),
            },
        }
    }

    fn history(verdicts: Vec<StagedVerdict>) -> History {
        History {
            verdicts,
            slashed_jobs: BTreeSet::new(),
            points_factor: 1.0,
        }
    }

    /// Each row: the stored verdicts, in the order they were stored, and the jobs
    /// counted with the stage each one's verdict came from.
    #[test]
    fn counted_keeps_the_latest_stage_of_each_job_inside_the_window() {
        /// The jobs counted, each with whether its verdict is the re-run's.
        type Counted<'a> = Vec<(&'a str, bool)>;
        let window = i64::from(rules().slashing.window_days);
        let cases: Vec<(&str, Vec<StagedVerdict>, Counted)> = vec![
            (
                "a re-run stored after the screen supersedes it",
                vec![
                    staged("a", 0, Stage::Screen, false),
                    staged("a", 0, Stage::Rerun, true),
                ],
                vec![("a", true)],
            ),
            (
                "a screen stored after the re-run (redelivered) does not",
                vec![
                    staged("a", 0, Stage::Rerun, true),
                    staged("a", 0, Stage::Screen, false),
                ],
                vec![("a", true)],
            ),
            (
                "a job older than the window before the newest job is left out",
                vec![
                    staged("old", 0, Stage::Rerun, true),
                    staged("new", window + 1, Stage::Screen, false),
                ],
                vec![("new", false)],
            ),
            (
                "the window ends at the newest job, not at the clock",
                vec![
                    staged("a", 0, Stage::Rerun, true),
                    staged("b", window, Stage::Screen, false),
                ],
                vec![("a", true), ("b", false)],
            ),
            ("no verdicts, nothing counted", vec![], vec![]),
        ];
        for (name, stored, want) in cases {
            let got: Vec<(String, bool)> = counted(stored, &rules())
                .into_iter()
                .map(|v| {
                    let rerun = v.outcome(CheckId::ImageSimilarity).is_some();
                    (v.job_id.as_str().to_owned(), rerun)
                })
                .collect();
            let want: Vec<(String, bool)> =
                want.into_iter().map(|(j, r)| (j.to_owned(), r)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_screen_verdict_stored_after_the_rerun_cannot_hide_its_failure() {
        // The same failing jobs, their screen verdicts redelivered after the re-runs:
        // the decision is the one the re-runs alone give.
        let fails: Vec<StagedVerdict> = (0..7)
            .map(|i| staged(&format!("j{i}"), 0, Stage::Rerun, true))
            .collect();
        let alone = decide(&miner(), history(fails.clone()), &rules());
        assert_eq!(alone.decision.action, Action::Slash);
        let mut redelivered = fails;
        redelivered.extend((0..6).map(|i| staged(&format!("j{i}"), 0, Stage::Screen, false)));
        let again = decide(&miner(), history(redelivered), &rules());
        assert_eq!(again.decision.action, Action::Slash);
        assert_eq!(
            again.decision.slash.as_ref().map(|s| &s.slash_id),
            alone.decision.slash.as_ref().map(|s| &s.slash_id)
        );
    }

    #[test]
    fn a_flag_is_named_by_its_miner_and_jobs_whatever_their_order() {
        let one = decide(
            &miner(),
            history(vec![staged("x", 0, Stage::Rerun, true)]),
            &rules(),
        );
        assert_eq!(one.decision.action, Action::FlagForReview);
        let id = one.flag_id.clone().unwrap();
        // The same evidence cited in another order, or twice, names the same flag.
        let mut evidence = one.decision.evidence.clone();
        evidence.extend(one.decision.evidence.clone());
        evidence.reverse();
        assert_eq!(flag_id(&miner(), &evidence), id);
        // Another miner with the same jobs is another flag.
        let other = MinerId::parse("0x00000000000000000000000000000000000000bb").unwrap();
        assert_ne!(flag_id(&other, &one.decision.evidence), id);
        // A clean miner raises no flag.
        let clean = decide(
            &miner(),
            history(vec![staged("y", 0, Stage::Rerun, false)]),
            &rules(),
        );
        assert_eq!(clean.decision.action, Action::None);
        assert_eq!(clean.flag_id, None);
    }

    #[test]
    fn jobs_an_earlier_slash_covers_are_not_evidence_again() {
        let fails: Vec<StagedVerdict> = (0..7)
            .map(|i| staged(&format!("j{i}"), 0, Stage::Rerun, true))
            .collect();
        let first = decide(&miner(), history(fails.clone()), &rules());
        let slash = first.decision.slash.expect("seven failed re-runs slash");
        let mut h = history(fails);
        h.slashed_jobs = slash.jobs.iter().cloned().collect();
        let again = decide(&miner(), h, &rules());
        assert_eq!(again.decision.action, Action::None);
    }

    /// 40 screened jobs of `miner()`, each failing `screen` screen checks and
    /// `reference` checks that need the reference, as `Sampler::draw` sees them.
    fn drawn(prior: u32, screen: usize, reference: usize) -> Vec<bool> {
        let rules = rules();
        let secret = SamplingSecret::from_passphrase("test");
        let prior = MinerRisk {
            excess_failures: f64::from(prior),
            ..MinerRisk::default()
        };
        let mut sampler = Sampler::new(&rules, &secret, [(miner(), prior)].into());
        (0..40)
            .map(|i| {
                let mut v = staged(&format!("sample-{i}"), 0, Stage::Screen, false).verdict;
                let fail = |check| CheckResult {
                    check,
                    outcome: Outcome::fail("test", ()),
                };
                v.checks = std::iter::repeat_n(fail(CheckId::Canary), screen)
                    .chain(std::iter::repeat_n(
                        fail(CheckId::ImageSimilarity),
                        reference,
                    ))
                    .collect();
                sampler.draw(&mut v)
            })
            .collect()
    }

    #[test]
    fn screen_failures_of_earlier_jobs_raise_the_rate_and_reference_failures_do_not() {
        // The embedded rules reach a rate of 1 at 19 excess failures (base 0.05, +0.05
        // each). Each failing job adds 1 less its allowance (the least, 0.002: a
        // canary's rate is 1e-7), so from the 21st failing job on every job is drawn.
        let risk = MinerRisk {
            excess_failures: 19.0,
            ..MinerRisk::default()
        };
        assert_eq!(sampling::rate(&rules(), risk), 1.0);
        let failing = drawn(0, 1, 0);
        assert!(failing[20..].iter().all(|s| *s), "{failing:?}");
        let passing = drawn(0, 0, 0);
        assert!(!passing[20..].iter().all(|s| *s), "{passing:?}");
        // A failure only a re-run can see never moves the draw: the draw would depend
        // on when the re-run arrived.
        assert_eq!(drawn(0, 0, 3), passing);
        // Failures recorded before (the store's `miner_risk`) count from the first job.
        assert!(drawn(19, 0, 0).iter().all(|s| *s));
    }

    #[test]
    fn a_reference_counts_for_a_drawn_job_or_for_any_job_of_an_export() {
        for (reruns, drawn, has_reference, counts) in [
            (Reruns::Drawn, true, true, true),
            (Reruns::Drawn, false, true, false),
            (Reruns::Drawn, true, false, false),
            (Reruns::Present, false, true, true),
            (Reruns::Present, true, false, false),
        ] {
            assert_eq!(
                reruns.counts(drawn, has_reference),
                counts,
                "{reruns:?} drawn={drawn} reference={has_reference}"
            );
        }
    }

    /// Histories in, cases out: the action, whether it is a flag with an id, and
    /// whether the entry carries a signed event (only a slash, only with a key) or a
    /// signed confirmation (only a flag, only with a key).
    #[test]
    fn an_entry_is_the_case_and_the_signed_event_of_its_slash() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let jobs = |failing: usize, passing: usize| -> Vec<StagedVerdict> {
            (0..failing + passing)
                .map(|i| staged(&format!("j{i}"), 0, Stage::Rerun, i < failing))
                .collect()
        };
        let cases = [
            ("no failure", jobs(0, 10), Some(&key), Action::None, false),
            (
                "one failure in two",
                jobs(1, 1),
                Some(&key),
                Action::FlagForReview,
                false,
            ),
            (
                "one failure in ten",
                jobs(1, 9),
                Some(&key),
                Action::None,
                false,
            ),
            ("ten failures", jobs(10, 0), Some(&key), Action::Slash, true),
            (
                "ten failures, no key",
                jobs(10, 0),
                None,
                Action::Slash,
                false,
            ),
        ];
        for (name, verdicts, key, action, signed) in cases {
            let e = entry(&miner(), history(verdicts), &rules(), key).unwrap();
            assert_eq!(e.case.decision.action, action, "{name}");
            assert_eq!(
                e.case.flag_id.is_some(),
                action == Action::FlagForReview,
                "{name}"
            );
            assert_eq!(e.event.is_some(), signed, "{name}");
            assert_eq!(
                e.confirmation.is_some(),
                action == Action::FlagForReview && key.is_some(),
                "{name}"
            );
            for (event, slash) in [
                (&e.event, &e.case.decision.slash),
                (&e.confirmation, &e.case.decision.confirmation),
            ] {
                if let (Some(event), Some(slash)) = (event, slash) {
                    let checked = events::verify(
                        serde_json::to_string(event).unwrap().as_bytes(),
                        &key.unwrap().verifying_key(),
                    )
                    .unwrap();
                    assert_eq!(checked, SlashEvent::from(slash), "{name}");
                }
            }
        }
    }
}

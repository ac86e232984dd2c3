//! The audit's spill file: every judged verdict, cut to what a decision reads, written
//! as jobs are judged and read back one miner at a time when deciding.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::{Context, Result};

use crate::case::{Stage, StagedVerdict};
use crate::checks::JobVerdict;
use crate::ids::MinerId;
use crate::outcome::{CheckId, Outcome};

/// What the audit holds of a judged job until every miner is decided: where the
/// job's verdict, cut to what a decision reads, lies in the spill file. A million jobs
/// keep 16 MB of these; their verdicts wait on disk.
pub(super) struct Spilled {
    offset: u64,
    len: u32,
    stage: Stage,
}

/// The verdicts of every miner, grouped by miner on disk: an unnamed temporary file
/// written as jobs are judged, read back one miner at a time when deciding.
pub(super) struct Spill {
    file: BufWriter<File>,
    end: u64,
    pub(super) by_miner: BTreeMap<MinerId, Vec<Spilled>>,
}

impl Spill {
    pub(super) fn new() -> Result<Spill> {
        let file = tempfile::tempfile().context("cannot create the audit's spill file")?;
        Ok(Spill {
            file: BufWriter::with_capacity(1 << 20, file),
            end: 0,
            by_miner: BTreeMap::new(),
        })
    }

    pub(super) fn push(&mut self, verdict: &JobVerdict, stage: Stage) -> Result<()> {
        let line = serde_json::to_vec(&for_decision(verdict))?;
        self.file
            .write_all(&line)
            .context("cannot write the audit's spill file")?;
        self.by_miner
            .entry(verdict.miner_id.clone())
            .or_default()
            .push(Spilled {
                offset: self.end,
                len: u32::try_from(line.len()).context("a verdict over 4 GiB")?,
                stage,
            });
        self.end += line.len() as u64;
        Ok(())
    }

    /// The spill file, flushed, and its index: ready to read back.
    pub(super) fn finish(self) -> Result<SpillFile> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| e.into_error())
            .context("cannot write the audit's spill file")?;
        Ok(SpillFile {
            file,
            by_miner: self.by_miner,
        })
    }
}

/// A verdict cut to what `case::decide` reads: outcomes, evidence summaries, points,
/// ids and the rules digest (slash records carry it). The measured numbers of passing checks and the details of failures are for the
/// reader of `verdicts.jsonl` and the report; the suspect panel's, which a decision sums
/// across jobs, stay.
fn for_decision(v: &JobVerdict) -> JobVerdict {
    let mut v = v.clone();
    for c in &mut v.checks {
        if c.check == CheckId::LlmSuspect {
            continue;
        }
        match &mut c.outcome {
            Outcome::Pass { measured } => *measured = serde_json::Value::Null,
            Outcome::Fail { evidence } => evidence.details = serde_json::Value::Null,
            Outcome::Inconclusive { .. } => {}
        }
    }
    v
}

/// The folder's verdicts, read back from the spill file a miner at a time.
pub(super) struct SpillFile {
    file: File,
    pub(super) by_miner: BTreeMap<MinerId, Vec<Spilled>>,
}

impl SpillFile {
    pub(super) fn verdicts(&self, miner: &MinerId) -> std::io::Result<Vec<StagedVerdict>> {
        use std::os::unix::fs::FileExt;
        let spilled = self.by_miner.get(miner).map_or(&[][..], Vec::as_slice);
        let mut buf = Vec::new();
        spilled
            .iter()
            .map(|s| {
                buf.resize(s.len as usize, 0);
                self.file.read_exact_at(&mut buf, s.offset)?;
                Ok(StagedVerdict {
                    stage: s.stage,
                    verdict: serde_json::from_slice(&buf)?,
                })
            })
            .collect()
    }
}

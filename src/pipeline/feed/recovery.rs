//! The recovery a broker that rewrites its log needs, entered only with
//! `kafka.compat = "tansu-0.6"` ([`super::Feed`] holds a [`Recovery`] then, and
//! nothing of this module runs otherwise: against Kafka the feed is a plain consumer).
//!
//! It guards against a broker that skips offsets. tansu 0.6 serves a fetch from the
//! first record batch that *starts* at or after the requested offset (its dynostore
//! `fetch` lists the partition's batch objects and splits at the offset), where Kafka
//! returns the batch that *contains* it. A consumer resuming at a committed offset
//! inside a batch (after a restart, a rebalance or a seek) therefore
//! - is handed the next batch, skipping the rest of the containing one (measured in
//!   the crash test: 23 acknowledged records never delivered), or
//! - is handed nothing at all when the containing batch is the partition's last, and
//!   stalls for good (measured in the back-pressure test: a rebalance during the S3
//!   outage left the rerun group at offset 32 of a 240-record batch).
//!
//! Job topics have no transactions and no compaction, so every offset holds a message
//! and both are the broker's error. A jump is seen when a message arrives past the
//! expected offset; a stall when the partition's end (the high watermark of the last
//! fetch response) is past the expected offset and nothing arrived for
//! [`STALL_AFTER`]. Either way the partition is sought back before the missing offset
//! (64, then 128, 256, ... earlier, until a fetch covers it), messages before the
//! expected offset are dropped as already processed, and the event is logged. In a log
//! rewritten under the feed, a jump that persists over reads from the partition's
//! start is a gap, passed over and counted (`PartitionState::step`).
//!
//! It also guards against a group that orphans partitions. tansu 0.6 drops a member
//! that misses its heartbeats from the group but, when a heartbeat rather than a join
//! notices it, keeps the group formed with the dead member's assignment: the live
//! members rejoin into the old generation and nobody consumes the dead member's
//! partitions again (measured in the crash test: the rerun group's state in S3 held
//! one member and assignments for three). A partition this member does not own, whose
//! commit has not moved for [`ORPHANED_AFTER`] while it has unread messages, makes
//! the feed leave the group and join again: the leave re-forms the group, and the
//! joining member, as leader, assigns every partition to the live members.

use std::time::Duration;

use rdkafka::message::OwnedMessage;

#[cfg(doc)]
use super::WATCH_EVERY;
use super::{Conn, cached_high_watermark, committed_offsets, next_batch};
use crate::kafka;
use crate::pipeline::{Context, Stopped};

/// What the feed knows of its partitions beyond the consumer's own position, to find
/// and recover what the broker skipped, stalled or rewrote.
pub(super) struct Recovery {
    /// The assigned partitions of `topic` seen so far.
    partitions: std::collections::HashMap<i32, PartitionState>,
    /// Partitions assigned away, with what the feed knew of them: taken up again when
    /// one comes back with the group's commit where this feed left it, so that a group
    /// that hands its assignment back and forth (docs/OPERATIONS.md, "The stand-in
    /// broker") does not start every partition's walk back from scratch.
    parked: std::collections::HashMap<i32, PartitionState>,
    /// Partitions this feed has found rewritten under it (their log moved backwards),
    /// for as long as it runs, assigned or not.
    rewritten: std::collections::HashSet<i32>,
    /// Partitions of the topic owned by other members: their commit and since when it
    /// has not moved.
    foreign: std::collections::HashMap<i32, (Option<i64>, std::time::Instant)>,
    last_check: std::time::Instant,
    /// Jumps, stalls and rejoins recovered so far.
    recoveries: u64,
    /// When the partitions' ends were last compared with their commits.
    rewind_check: std::time::Instant,
    /// Partitions whose end was below their commit at the last check.
    rewind_suspects: std::collections::HashSet<i32>,
    /// Each assigned partition's highest end seen in the fetch cache, and since when
    /// it has been seen lower (see [`EndWatch`]).
    ends: std::collections::HashMap<i32, EndWatch>,
    /// Partitions read again since their log moved backwards, with the offset after the
    /// last message handed out since. A batch fetched before the recovery stores no
    /// offset past it: its end would put the group's commit back above the records
    /// still to be read again.
    rereading: std::collections::HashMap<i32, i64>,
    /// Each partition read again since its log moved backwards, with its end then. An
    /// end still below the consumer's position, and the same as then, is the same
    /// rewind (an end that moved, even up, may hide new records below the position): a
    /// restarted tansu hands out its old batch objects whole, past its new end, so the
    /// position can stay above the end until new records pass it. Kept while the
    /// partition is assigned away: after a rebalance the group's commit is where the
    /// re-read's old batches left it, above the same end, and reading it again would
    /// find nothing new. (What the chaos runs showed without it: docs/OPERATIONS.md,
    /// "The stand-in broker".)
    reread_at: std::collections::HashMap<i32, i64>,
    /// Whether every broker connection went down since the last batch.
    broker_lost: bool,
    /// Each partition's last message handed out: its offset and its broker timestamp
    /// (ms since the epoch). What a rewind can have lost was written after it.
    last_seen: std::collections::HashMap<i32, (i64, Option<i64>)>,
    /// The assigned partitions of `topic` at the last look, sorted: a change is logged.
    assignment: Vec<i32>,
}

/// What the feed remembers of a partition's end between two looks at librdkafka's
/// fetch cache (no request to the broker; a look per batch and at least every
/// [`WATCH_EVERY`]). A healthy log's end never goes down. One that went down and stays
/// down for [`ENDS_DOWN_FOR`] moved backwards, even when the consumer has not read past
/// the new end yet: a restarted tansu 0.6 writes new records from offset 0, and once
/// they pass the consumer's position nothing else shows the records below it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndWatch {
    /// The highest end seen since the partition was assigned.
    pub highest: i64,
    /// When the end was first seen below `highest`, if it is now.
    pub below_since: Option<std::time::Instant>,
}

/// How long a partition's end must stay below the highest seen before the feed reads
/// the partition again. Long enough for a new Kafka partition leader's high watermark
/// to catch up with the old leader's (it can lag by a replica fetch), short next to
/// the time new records take to pass the old end.
pub const ENDS_DOWN_FOR: Duration = Duration::from_secs(1);

impl EndWatch {
    /// A partition first seen with this end.
    pub fn new(end: i64) -> EndWatch {
        EndWatch {
            highest: end,
            below_since: None,
        }
    }

    /// Takes a new look at the end; true when it has stayed below the highest seen for
    /// [`ENDS_DOWN_FOR`] (the log moved backwards).
    pub fn look(&mut self, end: i64, now: std::time::Instant) -> bool {
        if end < 0 {
            return false;
        }
        if end >= self.highest {
            *self = EndWatch::new(end);
            return false;
        }
        let since = *self.below_since.get_or_insert(now);
        now.saturating_duration_since(since) >= ENDS_DOWN_FOR
    }
}

/// How often the feed compares each assigned partition's end with the group's commit
/// (a commit request to the broker: cheap next to a batch).
pub const REWIND_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Whether a partition's log moved backwards under its consumer: its end is below the
/// next offset the group is to read. A healthy log's end never goes down, and the
/// consumer never reads past it.
pub fn moved_backwards(end: i64, next: i64) -> bool {
    end >= 0 && end < next
}

/// What the feed knows of one assigned partition's progress.
#[derive(Debug)]
struct PartitionState {
    /// The next offset to process: after the last message handed out, or at first the
    /// committed offset. `None` while the group has no commit for the partition.
    expected: Option<i64>,
    /// Consecutive seeks back: how far back the next one goes.
    retreats: u32,
    /// Consecutive seeks that went to the partition's start with no message continuing
    /// the partition since.
    starts: u32,
    /// When a message last continued the partition, or when it was first seen.
    progress_at: std::time::Instant,
}

/// How many reads from a partition's start must jump past the expected offset before
/// the feed passes over it as a gap, in a log this feed found rewritten under it.
const GAP_AFTER_STARTS: u32 = 3;

/// The same in a log this feed has not seen rewritten: a worker started after a
/// restarted tansu rewrote the log finds the same gaps, and nothing else tells it so
/// (the 10,000-job chaos run: two screen workers started after the broker's restarts
/// held two partitions at offsets no read from the start delivered, for good). Far
/// above the two jumping reads from the start a healthy log was seen to give before
/// it delivered the offset (the crash test, after a seek that an in-flight fetch
/// overtook).
const GAP_AFTER_STARTS_UNSEEN: u32 = 10;

/// What to do with a partition's next message (see [`PartitionState::step`]).
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// It continues the partition: hand it out.
    Keep,
    /// It is before the expected offset: processed already, dropped.
    Processed,
    /// It jumped past the expected offset: seek back to `to` and drop the rest of the
    /// partition's batch.
    Retreat { to: i64 },
    /// It jumped past the expected offset although the partition was read from its
    /// start: the offsets `missing` are not in the broker's log. Hand it out.
    Gap { missing: std::ops::Range<i64> },
}

impl PartitionState {
    /// A partition to be continued at `expected`.
    fn new(expected: Option<i64>, now: std::time::Instant) -> PartitionState {
        PartitionState {
            expected,
            retreats: 0,
            starts: 0,
            progress_at: now,
        }
    }

    /// Decides on the partition's next message, at `offset`. A jump is sought back
    /// from (64, then 128, 256, ... before the expected offset). In a log `rewritten`
    /// under the feed (it moved backwards, or the broker was unreachable), a jump after
    /// [`GAP_AFTER_STARTS`] reads from the partition's start is a gap, passed over, so
    /// that a log with offsets missing cannot hold the partition forever. (A tansu 0.6
    /// restarted over a log it had written blind leaves its old batch objects beside
    /// the new ones, and a fetch hands both out: measured in the chaos run, where one
    /// partition sought back to 0 for nine minutes after offset 45.) In a log the
    /// feed has not seen rewritten, it takes [`GAP_AFTER_STARTS_UNSEEN`] reads from
    /// the start: the crash test saw a read from the start of a healthy log jump twice
    /// before it delivered the offset.
    fn step(&mut self, offset: i64, now: std::time::Instant, rewritten: bool) -> Step {
        let gap_after = if rewritten {
            GAP_AFTER_STARTS
        } else {
            GAP_AFTER_STARTS_UNSEEN
        };
        match self.expected {
            Some(want) if offset > want && self.starts >= gap_after => {
                self.continue_at(offset, now);
                Step::Gap {
                    missing: want..offset,
                }
            }
            Some(want) if offset > want => Step::Retreat {
                to: self.retreat(want, now),
            },
            Some(want) if offset < want => Step::Processed,
            _ => {
                self.continue_at(offset, now);
                Step::Keep
            }
        }
    }

    /// A partition assigned to the feed with the group's commit `committed`, and what
    /// the feed knew of it when it was last assigned away, if it was.
    fn taken_up(
        parked: Option<PartitionState>,
        committed: Option<i64>,
        now: std::time::Instant,
    ) -> PartitionState {
        match parked {
            // Nobody moved it meanwhile: go on from where this feed was, its seeks back
            // and its reads from the start included.
            Some(mut state) if committed.is_some() && state.expected == committed => {
                state.progress_at = now;
                state
            }
            _ => PartitionState::new(committed, now),
        }
    }

    /// Notes a seek back before `want` (a jump, or a stall) and says where to.
    fn retreat(&mut self, want: i64, now: std::time::Instant) -> i64 {
        let back = 64i64 << self.retreats.min(20);
        self.retreats += 1;
        self.progress_at = now;
        let to = (want - back).max(0);
        if to == 0 {
            self.starts += 1;
        }
        to
    }

    /// Notes a seek to `start`, the partition read again from there.
    fn restart_at(&mut self, start: i64, now: std::time::Instant) {
        self.expected = Some(start);
        self.retreats = 0;
        self.starts = u32::from(start == 0);
        self.progress_at = now;
    }

    fn continue_at(&mut self, offset: i64, now: std::time::Instant) {
        self.retreats = 0;
        self.starts = 0;
        self.expected = Some(offset + 1);
        self.progress_at = now;
    }
}

/// How long an assigned partition with unread messages may deliver nothing before the
/// feed seeks back (see `Recovery`). Well above a fetch round trip, well below the
/// rebalance bound.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// How long another member's partition may keep an unmoving commit over unread
/// messages before the feed rejoins the group (see `Recovery`). Twice the consumers'
/// `max.poll.interval.ms`, past which a live owner would have been replaced anyway
/// (for the default interval; a feed with a longer one waits twice that).
pub const ORPHANED_AFTER: Duration = Duration::from_secs(60);

impl Recovery {
    pub(super) fn new() -> Recovery {
        Recovery {
            partitions: Default::default(),
            parked: Default::default(),
            rewritten: Default::default(),
            foreign: Default::default(),
            last_check: std::time::Instant::now(),
            recoveries: 0,
            rewind_check: std::time::Instant::now(),
            rewind_suspects: Default::default(),
            ends: Default::default(),
            rereading: Default::default(),
            reread_at: Default::default(),
            broker_lost: false,
            last_seen: Default::default(),
            assignment: Vec::new(),
        }
    }

    /// The next batch of up to `max` messages that continue their partitions, after
    /// the checks for rewinds, stalls and orphans that are due; empty when nothing
    /// continues them within `wait`.
    pub(super) async fn try_next(
        &mut self,
        conn: &mut Conn,
        ctx: &Context,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<OwnedMessage>, Stopped> {
        if self.rewind_check.elapsed() >= REWIND_CHECK_EVERY {
            self.rewind_check = std::time::Instant::now();
            self.check_rewinds(conn, ctx);
        }
        self.watch_ends(conn, ctx);
        if self.last_check.elapsed() >= STALL_AFTER / 2 {
            self.last_check = std::time::Instant::now();
            self.unstick(conn);
            if self.orphaned(conn) {
                self.rejoin(conn);
            }
        }
        let fetched = next_batch(ctx, &conn.consumer, max, wait).await?;
        self.broker_lost |= fetched.broker_lost;
        let batch = fetched.messages;
        if batch.is_empty() {
            return Ok(batch);
        }
        if std::mem::take(&mut self.broker_lost) {
            // The broker answers again after every connection to it was down: a
            // restarted tansu 0.6 may have written new records below the group's
            // position while this feed could not watch the end go down (the broker-restart
            // test's loss). This batch is read again with the rest.
            self.read_everything_again(conn);
            return Ok(Vec::new());
        }
        let recoveries = self.recoveries;
        let batch = self.filter(conn, ctx, batch);
        self.handed_out(&batch);
        // After the batch: a message of a rewound partition in it is processed (it is a
        // record; re-reading it later is harmless), and its offset is not stored.
        self.watch_ends(conn, ctx);
        if batch.is_empty() && self.recoveries > recoveries {
            // The broker jumped: give it a moment before the re-fetch.
            ctx.idle(Duration::from_millis(100)).await?;
        }
        Ok(batch)
    }

    /// Whether the offset `next` of `partition` may be stored: not past what was handed
    /// out of a partition being read again since its log moved backwards.
    pub(super) fn may_store(&self, partition: i32, next: i64) -> bool {
        self.rereading
            .get(&partition)
            .is_none_or(|handed| next <= *handed)
    }

    /// Looks at each assigned partition's end in the fetch cache (see [`EndWatch`]) and
    /// reads again, from its start, each one whose end stayed down. No request to the
    /// broker.
    fn watch_ends(&mut self, conn: &mut Conn, ctx: &Context) {
        let Some(mut assigned) = conn.assigned() else {
            return;
        };
        assigned.sort_unstable();
        if assigned != self.assignment {
            // What a post-mortem of a recovery needs first: which member read what.
            tracing::info!(
                topic = %conn.topic,
                partitions = ?assigned,
                before = ?self.assignment,
                "assigned partitions changed"
            );
            self.assignment = assigned.clone();
        }
        self.ends.retain(|p, _| assigned.contains(p));
        self.rereading.retain(|p, _| assigned.contains(p));
        let now = std::time::Instant::now();
        for partition in assigned {
            let Some(end) = cached_high_watermark(&conn.consumer, &conn.topic, partition) else {
                continue;
            };
            let watch = self
                .ends
                .entry(partition)
                .or_insert_with(|| EndWatch::new(end));
            let highest = watch.highest;
            if watch.look(end, now) {
                self.ends.insert(partition, EndWatch::new(end));
                self.rewind_suspects.remove(&partition);
                self.recover_rewind(
                    conn,
                    ctx,
                    partition,
                    end,
                    &format!("its end went down from {highest}"),
                );
            }
        }
    }

    /// Notes the messages handed out of partitions being read again.
    fn handed_out(&mut self, batch: &[OwnedMessage]) {
        use rdkafka::Message;
        for m in batch {
            let seen = self.last_seen.entry(m.partition()).or_insert((-1, None));
            if m.offset() > seen.0 {
                *seen = (m.offset(), m.timestamp().to_millis());
            }
        }
        if self.rereading.is_empty() {
            return;
        }
        for m in batch {
            if let Some(next) = self.rereading.get_mut(&m.partition()) {
                *next = (*next).max(m.offset() + 1);
            }
        }
    }

    /// Finds the assigned partitions whose log moved backwards (see [`Recovery`]) and reads
    /// each again from its start. Asks the broker for the group's commits only of the
    /// partitions this consumer has no position in yet (just assigned); elsewhere the
    /// position is at or past the commit.
    fn check_rewinds(&mut self, conn: &mut Conn, ctx: &Context) {
        use rdkafka::consumer::Consumer;
        let Some(assigned) = conn.assigned() else {
            return;
        };
        self.rewind_suspects.retain(|p| assigned.contains(p));
        if assigned.is_empty() {
            return;
        }
        let positions: std::collections::HashMap<i32, i64> = conn
            .consumer
            .position()
            .map(|tpl| {
                tpl.elements_for_topic(&conn.topic)
                    .iter()
                    .filter_map(|e| match e.offset() {
                        rdkafka::Offset::Offset(n) => Some((e.partition(), n)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let unplaced: Vec<i32> = assigned
            .iter()
            .copied()
            .filter(|p| !positions.contains_key(p))
            .collect();
        let committed = if unplaced.is_empty() {
            Default::default()
        } else {
            committed_offsets(&conn.consumer, &conn.topic, &unplaced)
        };
        for partition in assigned {
            let end = cached_high_watermark(&conn.consumer, &conn.topic, partition);
            let commit = committed.get(&partition).copied();
            let next = commit.max(positions.get(&partition).copied());
            let (Some(end), Some(next)) = (end, next) else {
                self.rewind_suspects.remove(&partition);
                continue;
            };
            if !moved_backwards(end, next) || self.reread_at.get(&partition) == Some(&end) {
                self.rewind_suspects.remove(&partition);
                continue;
            }
            // Twice in a row: an end cached from before a rebalance is refreshed by
            // the next fetch response, well within a check.
            if self.rewind_suspects.insert(partition) {
                continue;
            }
            self.rewind_suspects.remove(&partition);
            let why = match commit {
                Some(c) => format!("its end is below the group's commit {c}"),
                None => format!("its end is below the consumer's position {next}"),
            };
            self.recover_rewind(conn, ctx, partition, end, &why);
        }
    }

    /// Commits the start of a partition whose log moved backwards and reads it again.
    fn recover_rewind(
        &mut self,
        conn: &mut Conn,
        ctx: &Context,
        partition: i32,
        end: i64,
        why: &str,
    ) {
        ctx.metrics
            .log_rewinds
            .get_or_create(&vec![
                ("topic", conn.topic.clone()),
                ("partition", partition.to_string()),
            ])
            .inc();
        // Offset 0, not the broker's low watermark: a restarted tansu 0.6 answers
        // ListOffsets(earliest) with its new end (measured: 3 after three records, all
        // of which it still served from 0), which would skip every record written since
        // the restart. On Kafka, 0 below a log that starts later is out of range, and
        // librdkafka resets to the earliest offset (`auto.offset.reset`).
        let start = 0;
        // What the broker can have lost: records it acknowledged past the last one this
        // feed read, written between that one's time and now. The job service replays
        // them from its own log (docs/OPERATIONS.md).
        let (last_offset, last_at) = self
            .last_seen
            .get(&partition)
            .copied()
            .unwrap_or((-1, None));
        let since = last_at
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339());
        tracing::error!(
            topic = %conn.topic,
            partition,
            end,
            why,
            read_again_from = start,
            lost_after_offset = last_offset,
            lost_written_from = since.as_deref().unwrap_or("unknown"),
            lost_written_to = %chrono::Utc::now().to_rfc3339(),
            "the broker's log moved backwards; records written since sit at offsets the \
             group had read. Reading the partition again from its start (re-reading is \
             idempotent). Records the broker acknowledged after the last one read here may \
             be lost: replay what the job service sent to this partition in the time range"
        );
        self.last_seen.remove(&partition);
        self.read_again(conn, partition, start);
        self.reread_at.insert(partition, end);
    }

    /// With `kafka.compat = "tansu-0.6"`, after the broker was unreachable: reads every
    /// assigned partition again from its start (see [`Recovery::try_next`]).
    fn read_everything_again(&mut self, conn: &mut Conn) {
        let Some(assigned) = conn.assigned() else {
            return;
        };
        tracing::warn!(
            topic = %conn.topic,
            partitions = ?assigned,
            "the broker is back after every connection to it was down; a restarted tansu \
             0.6 may have written records below the group's position, so every assigned \
             partition is read again from its start (kafka.compat = tansu-0.6; re-reading \
             is idempotent)"
        );
        for partition in assigned {
            self.read_again(conn, partition, 0);
        }
    }

    /// Commits `start` for the partition and reads it again from there.
    fn read_again(&mut self, conn: &mut Conn, partition: i32, start: i64) {
        use rdkafka::consumer::Consumer;
        // Stored, then committed, so that the next auto-commit does not put the old
        // offset back; sought, so that this consumer reads from there now.
        let mut list = rdkafka::TopicPartitionList::new();
        let stored = list
            .add_partition_offset(&conn.topic, partition, rdkafka::Offset::Offset(start))
            .and_then(|()| conn.consumer.store_offsets(&list))
            .and_then(|()| {
                tokio::task::block_in_place(|| {
                    conn.consumer
                        .commit(&list, rdkafka::consumer::CommitMode::Sync)
                })
            });
        if let Err(e) = stored {
            tracing::error!(error = %e, partition, "cannot commit the partition's start; the seek alone re-reads it");
        }
        self.rereading.insert(partition, start);
        self.rewritten.insert(partition);
        self.parked.remove(&partition);
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.restart_at(start, std::time::Instant::now());
        }
        if let Err(e) = self.seek(conn, partition, start) {
            tracing::error!(error = %e, partition, "cannot seek to the partition's start; its next owner reads from the commit");
        }
        self.recoveries += 1;
    }

    /// Seeks the partition to `to`. When the seek fails, the partition is not read
    /// from there, so a jump that follows is no proof of a gap: its reads from the
    /// start are forgotten.
    fn seek(
        &mut self,
        conn: &mut Conn,
        partition: i32,
        to: i64,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let sought = rdkafka::consumer::Consumer::seek(
            &conn.consumer,
            &conn.topic,
            partition,
            rdkafka::Offset::Offset(to),
            Duration::from_secs(10),
        );
        if sought.is_err()
            && let Some(state) = self.partitions.get_mut(&partition)
        {
            state.starts = 0;
        }
        sought
    }

    fn state(&mut self, conn: &mut Conn, partition: i32) -> &mut PartitionState {
        let (consumer, topic, parked) = (&conn.consumer, conn.topic.as_str(), &mut self.parked);
        self.partitions.entry(partition).or_insert_with(|| {
            let committed = committed_offsets(consumer, topic, &[partition])
                .get(&partition)
                .copied();
            PartitionState::taken_up(
                parked.remove(&partition),
                committed,
                std::time::Instant::now(),
            )
        })
    }

    /// Seeks the partition back before `want`, each time further.
    fn retreat(&mut self, conn: &mut Conn, partition: i32, want: i64, why: &str) {
        let to = self
            .state(conn, partition)
            .retreat(want, std::time::Instant::now());
        self.seek_back(conn, partition, want, to, why);
    }

    /// Seeks the partition back to `to`, before the expected offset `want`.
    fn seek_back(&mut self, conn: &mut Conn, partition: i32, want: i64, to: i64, why: &str) {
        self.recoveries += 1;
        tracing::warn!(
            topic = %conn.topic,
            partition,
            expected = want,
            seek_to = to,
            why,
            "the broker skipped offsets; seeking back"
        );
        if let Err(e) = self.seek(conn, partition, to) {
            tracing::warn!(error = %e, "seek failed; the partition's next owner resumes from its commit");
        }
    }

    /// Keeps the messages that continue their partitions without a jump.
    fn filter(
        &mut self,
        conn: &mut Conn,
        ctx: &Context,
        batch: Vec<OwnedMessage>,
    ) -> Vec<OwnedMessage> {
        use rdkafka::Message;
        let mut halted = std::collections::HashSet::new();
        let mut kept = Vec::with_capacity(batch.len());
        for m in batch {
            if halted.contains(&m.partition()) {
                continue;
            }
            let rewritten = self.rewritten.contains(&m.partition());
            let state = self.state(conn, m.partition());
            let want = state.expected.unwrap_or_default();
            match state.step(m.offset(), std::time::Instant::now(), rewritten) {
                Step::Retreat { to } => {
                    self.seek_back(conn, m.partition(), want, to, "jump");
                    halted.insert(m.partition());
                }
                // Processed already: by this worker, or by the group before the commit.
                Step::Processed => {}
                Step::Keep => kept.push(m),
                Step::Gap { missing } => {
                    tracing::error!(
                        topic = %conn.topic,
                        partition = m.partition(),
                        missing_from = missing.start,
                        missing_to = missing.end,
                        "the broker's log has no messages at these offsets, though the \
                         partition was read from its start: they are lost at the broker. \
                         Passing over them (the runbook's reconciliation with the job \
                         service sends lost records again)"
                    );
                    ctx.metrics
                        .log_gaps
                        .get_or_create(&vec![
                            ("topic", conn.topic.clone()),
                            ("partition", m.partition().to_string()),
                        ])
                        .inc_by((missing.end - missing.start) as u64);
                    kept.push(m);
                }
            }
        }
        kept
    }

    /// Parks the state of every partition no longer in `assigned` (see
    /// [`Recovery::parked`]).
    fn park_unassigned(&mut self, assigned: &[i32]) {
        let gone: Vec<i32> = self
            .partitions
            .keys()
            .copied()
            .filter(|p| !assigned.contains(p))
            .collect();
        for p in gone {
            if let Some(state) = self.partitions.remove(&p) {
                self.parked.insert(p, state);
            }
        }
    }

    /// Seeks back every assigned partition that has unread messages but delivered
    /// nothing for [`STALL_AFTER`]. Parks partitions no longer assigned: one that comes
    /// back goes on from where this feed left it if the group's commit has not moved,
    /// and starts again from the commit otherwise.
    fn unstick(&mut self, conn: &mut Conn) {
        let Some(assigned) = conn.assigned() else {
            return;
        };
        self.park_unassigned(&assigned);
        for partition in assigned {
            let end = cached_high_watermark(&conn.consumer, &conn.topic, partition);
            let state = self.state(conn, partition);
            let (Some(want), Some(end)) = (state.expected, end) else {
                continue;
            };
            if end > want && state.progress_at.elapsed() >= STALL_AFTER {
                self.retreat(conn, partition, want, "stall");
            }
        }
    }

    /// Whether another member's partition looks orphaned (see [`Recovery`]).
    fn orphaned(&mut self, conn: &mut Conn) -> bool {
        use rdkafka::consumer::Consumer;
        let (Ok(assignment), Ok(meta)) = (
            conn.consumer.assignment(),
            tokio::task::block_in_place(|| {
                conn.consumer
                    .fetch_metadata(Some(&conn.topic), Duration::from_secs(10))
            }),
        ) else {
            return false;
        };
        let mine: std::collections::HashSet<i32> = assignment
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        let others: Vec<i32> = meta
            .topics()
            .iter()
            .filter(|t| t.name() == conn.topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .filter(|p| !mine.contains(p))
            .collect();
        self.foreign.retain(|p, _| others.contains(p));
        let commits = committed_offsets(&conn.consumer, &conn.topic, &others);
        let mut orphaned = false;
        for p in others {
            let committed = commits.get(&p).copied();
            let since = match self.foreign.get(&p) {
                Some((c, since)) if *c == committed => *since,
                _ => {
                    self.foreign
                        .insert(p, (committed, std::time::Instant::now()));
                    continue;
                }
            };
            if since.elapsed() < ORPHANED_AFTER.max(conn.max_poll * 2) {
                continue;
            }
            // ListOffsets(latest) from tansu is the start of the newest batch plus one:
            // not the end of the log, but never past it, so enough to prove unread
            // messages.
            let end = tokio::task::block_in_place(|| {
                conn.consumer
                    .fetch_watermarks(&conn.topic, p, Duration::from_secs(10))
            });
            if let Ok((_, end)) = end
                && end > committed.unwrap_or(0)
            {
                tracing::warn!(
                    topic = %conn.topic,
                    partition = p,
                    committed = ?committed,
                    end,
                    "another member's partition has not moved; rejoining the group"
                );
                orphaned = true;
            }
        }
        orphaned
    }

    /// Leaves the group and joins it again with a new consumer. Dropping the old one
    /// commits its stored offsets and sends LeaveGroup.
    fn rejoin(&mut self, conn: &mut Conn) {
        match kafka::consumer(
            &conn.kafka,
            conn.group_suffix,
            &[conn.topic.as_str()],
            conn.max_poll,
        ) {
            Ok(fresh) => {
                self.recoveries += 1;
                let old = std::mem::replace(&mut conn.consumer, fresh);
                tokio::task::block_in_place(|| drop(old));
                self.park_unassigned(&[]);
                self.foreign.clear();
            }
            Err(e) => tracing::error!(error = %e, "cannot create a consumer to rejoin with"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn an_end_that_only_grows_is_never_a_rewind() {
        let t = Instant::now();
        let mut w = EndWatch::new(10);
        for (i, end) in [10, 12, 12, 40, 41].into_iter().enumerate() {
            assert!(!w.look(end, t + Duration::from_secs(i as u64 * 5)));
        }
        assert_eq!(w, EndWatch::new(41));
    }

    #[test]
    fn an_end_that_stays_down_is_a_rewind_once_it_has_for_long_enough() {
        let t = Instant::now();
        let mut w = EndWatch::new(168);
        assert!(!w.look(3, t), "one look is not enough");
        assert!(!w.look(9, t + ENDS_DOWN_FOR / 2));
        // Still below the highest end seen, though past what the first look saw, and
        // perhaps past the consumer's position: the case a position check misses.
        assert!(w.look(150, t + ENDS_DOWN_FOR));
    }

    #[test]
    fn an_end_that_dips_and_recovers_is_not_a_rewind() {
        // A new Kafka partition leader's high watermark can lag the old one's briefly.
        let t = Instant::now();
        let mut w = EndWatch::new(100);
        assert!(!w.look(97, t));
        assert!(!w.look(100, t + Duration::from_millis(200)));
        assert!(!w.look(101, t + ENDS_DOWN_FOR * 3));
        assert_eq!(w.below_since, None);
    }

    #[test]
    fn an_unknown_end_changes_nothing() {
        // librdkafka leaves -1 in its cache before the first fetch and after an error.
        let t = Instant::now();
        let mut w = EndWatch::new(50);
        assert!(!w.look(-1, t));
        assert!(!w.look(-1, t + ENDS_DOWN_FOR * 2));
        assert_eq!(w, EndWatch::new(50));
    }

    #[test]
    fn a_partition_continues_drops_what_it_processed_and_seeks_back_further_each_jump() {
        let t = Instant::now();
        let mut p = PartitionState::new(Some(300), t);
        assert_eq!(p.step(299, t, false), Step::Processed);
        assert_eq!(p.step(300, t, false), Step::Keep);
        assert_eq!(p.step(302, t, false), Step::Retreat { to: 301 - 64 });
        assert_eq!(p.step(305, t, false), Step::Retreat { to: 301 - 128 });
        assert_eq!(p.step(250, t, false), Step::Processed);
        // The missing offset came: the next jump starts from 64 again.
        assert_eq!(p.step(301, t, false), Step::Keep);
        assert_eq!(p.step(310, t, false), Step::Retreat { to: 302 - 64 });
    }

    #[test]
    fn a_jump_after_reads_from_the_start_of_a_rewritten_log_is_a_gap_passed_over() {
        // The chaos run's case: offset 45 is in no batch the broker hands out.
        let t = Instant::now();
        let mut p = PartitionState::new(Some(45), t);
        for _ in 0..GAP_AFTER_STARTS {
            assert_eq!(p.step(47, t, true), Step::Retreat { to: 0 });
            for offset in 0..45 {
                assert_eq!(p.step(offset, t, true), Step::Processed);
            }
        }
        assert_eq!(p.step(46, t, true), Step::Gap { missing: 45..46 });
        assert_eq!(p.step(47, t, true), Step::Keep);
        // A jump from reads that did not reach the start is still sought back.
        let mut p = PartitionState::new(Some(1000), t);
        assert_eq!(p.step(1001, t, true), Step::Retreat { to: 1000 - 64 });
        assert_eq!(p.step(1002, t, true), Step::Retreat { to: 1000 - 128 });
    }

    #[test]
    fn a_log_not_seen_rewritten_has_a_gap_only_after_many_reads_from_its_start() {
        // The crash test's case: a read from the start jumped twice, then delivered.
        let t = Instant::now();
        let mut p = PartitionState::new(Some(2), t);
        for _ in 0..GAP_AFTER_STARTS {
            assert_eq!(p.step(8, t, false), Step::Retreat { to: 0 });
        }
        assert_eq!(p.step(2, t, false), Step::Keep);
        // The 10,000-job chaos run's case: a worker started after the log was
        // rewritten, at an offset no read delivers.
        let mut p = PartitionState::new(Some(200), t);
        let mut reads_from_start = 0;
        while reads_from_start < GAP_AFTER_STARTS_UNSEEN {
            match p.step(260, t, false) {
                Step::Retreat { to: 0 } => reads_from_start += 1,
                Step::Retreat { to } => assert!(to > 0 && to < 200),
                other => panic!("after {reads_from_start} reads from the start: {other:?}"),
            }
        }
        assert_eq!(p.step(260, t, false), Step::Gap { missing: 200..260 });
        assert_eq!(p.step(261, t, false), Step::Keep);
    }

    #[test]
    fn a_partition_back_from_a_rebalance_goes_on_only_where_nobody_moved_it() {
        let t = Instant::now();
        let mut p = PartitionState::new(Some(200), t);
        for _ in 0..3 {
            assert!(matches!(p.step(260, t, true), Step::Retreat { .. }));
        }
        let (retreats, starts) = (p.retreats, p.starts);
        assert!(starts > 0);
        let later = t + Duration::from_secs(12);
        let back = PartitionState::taken_up(Some(p), Some(200), later);
        assert_eq!((back.retreats, back.starts), (retreats, starts));
        assert_eq!(back.progress_at, later, "not a stall at once");
        // Another member got past it meanwhile, or the group has no commit.
        for committed in [Some(230), None] {
            let mut p = PartitionState::new(Some(200), t);
            assert!(matches!(p.step(260, t, true), Step::Retreat { .. }));
            let fresh = PartitionState::taken_up(Some(p), committed, later);
            assert_eq!(
                (fresh.expected, fresh.retreats, fresh.starts),
                (committed, 0, 0)
            );
        }
        assert_eq!(PartitionState::taken_up(None, Some(5), t).expected, Some(5));
    }

    #[test]
    fn a_log_read_again_from_its_start_passes_over_a_missing_start() {
        // Kafka, whose log starts past 0 once old segments are deleted.
        let t = Instant::now();
        let mut p = PartitionState::new(Some(500), t);
        p.restart_at(0, t);
        for _ in 1..GAP_AFTER_STARTS {
            assert_eq!(p.step(120, t, true), Step::Retreat { to: 0 });
        }
        assert_eq!(p.step(120, t, true), Step::Gap { missing: 0..120 });
        assert_eq!(p.step(121, t, true), Step::Keep);
    }

    #[test]
    fn a_log_moved_backwards_when_its_end_is_below_the_next_offset() {
        assert!(moved_backwards(3, 168));
        assert!(!moved_backwards(168, 168), "read to the end");
        assert!(!moved_backwards(-1, 168), "end unknown");
    }
}

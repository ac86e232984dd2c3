//! The one tansu 0.6 fault the feed still works around, entered only under
//! `kafka.compat = "tansu-0.6"`: a consumer group that orphans partitions.
//!
//! tansu 0.6's group coordinator (the same on every storage engine) drops a member that
//! missed its heartbeats, but when a live member's heartbeat is what notices, the group
//! stays formed with the dead member's assignment: the live members are told to rejoin,
//! rejoin into the same generation, and get their old partitions back. Nobody consumes
//! the dead member's partitions again. Measured on the SQLite engine by the crash test
//! (a rerun member held only `rerun/3` until the test's deadline) and read in tansu's
//! source (docs/OPERATIONS.md, "The stand-in broker").
//!
//! The watch: a partition this member does not own, whose group commit has not moved for
//! [`ORPHANED_AFTER`] (or twice the feed's `max.poll.interval.ms`, if longer) while the
//! partition has unread messages, makes the feed leave the group and join again. A leave
//! re-forms the group, and the members' next joins assign every partition to live ones.
//! A live owner whose commit stood still that long would have been replaced by
//! librdkafka anyway, so against a broker that does not orphan, a false alarm costs one
//! rebalance.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::kafka;

/// How long another member's partition may keep an unmoving commit over unread messages
/// before the feed rejoins the group: twice the consumers' default
/// `max.poll.interval.ms`, past which a live owner would have been replaced anyway.
pub const ORPHANED_AFTER: Duration = Duration::from_secs(60);

/// How often the feed looks at the other members' partitions: three requests to the
/// broker (metadata, committed offsets, and the end of a suspect partition).
pub const CHECK_EVERY: Duration = Duration::from_secs(15);

/// What the watch remembers of the partitions this member does not own: each one's
/// commit as last read, and since when it has not moved.
#[derive(Debug, Default)]
pub struct OrphanWatch {
    seen: HashMap<i32, (Option<i64>, Instant)>,
    checked_at: Option<Instant>,
}

impl OrphanWatch {
    /// Whether a look is due at `now` (one every [`CHECK_EVERY`]); marks it taken.
    pub fn due(&mut self, now: Instant) -> bool {
        match self.checked_at {
            Some(at) if now.duration_since(at) < CHECK_EVERY => false,
            _ => {
                self.checked_at = Some(now);
                true
            }
        }
    }

    /// Records the commits of the partitions this member does not own (`None`: never
    /// committed) and returns those whose commit has stood still for at least `after`.
    /// A partition that came back to this member, or whose commit moved, starts over.
    pub fn stale(
        &mut self,
        now: Instant,
        others: &[(i32, Option<i64>)],
        after: Duration,
    ) -> Vec<i32> {
        self.seen.retain(|p, _| others.iter().any(|(o, _)| o == p));
        let mut stale = Vec::new();
        for &(p, committed) in others {
            match self.seen.get(&p) {
                Some(&(c, since)) if c == committed => {
                    if now.duration_since(since) >= after {
                        stale.push(p);
                    }
                }
                _ => {
                    self.seen.insert(p, (committed, now));
                }
            }
        }
        stale
    }

    /// Forgets everything: after a rejoin, the assignment is new.
    pub fn reset(&mut self) {
        self.seen.clear();
    }
}

/// Whether a stale partition is orphaned: it has messages past the group's commit.
/// `end` is what ListOffsets(latest) answered (on tansu never past the log's end).
pub fn orphaned(committed: Option<i64>, end: i64) -> bool {
    end > committed.unwrap_or(0)
}

/// The partitions of `topic` another member owns, with the group's commit of each;
/// `None` when the broker does not answer. Blocking requests to the broker.
pub fn others(consumer: &kafka::Consumer, topic: &str) -> Option<Vec<(i32, Option<i64>)>> {
    use rdkafka::consumer::Consumer;
    let mine: Vec<i32> = consumer
        .assignment()
        .ok()?
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect();
    let meta = blocking(|| consumer.fetch_metadata(Some(topic), Duration::from_secs(10))).ok()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in meta.topics().iter().filter(|t| t.name() == topic) {
        for p in t
            .partitions()
            .iter()
            .map(|p| p.id())
            .filter(|p| !mine.contains(p))
        {
            tpl.add_partition(topic, p);
        }
    }
    if tpl.count() == 0 {
        return Some(Vec::new());
    }
    let committed = blocking(|| consumer.committed_offsets(tpl, Duration::from_secs(10))).ok()?;
    Some(
        committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                rdkafka::Offset::Offset(n) => (e.partition(), Some(n)),
                _ => (e.partition(), None),
            })
            .collect(),
    )
}

/// The end of a partition as ListOffsets(latest) gives it; a blocking request.
pub fn end(consumer: &kafka::Consumer, topic: &str, partition: i32) -> Option<i64> {
    use rdkafka::consumer::Consumer;
    blocking(|| consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)))
        .ok()
        .map(|(_, high)| high)
}

/// Runs a blocking librdkafka call without stalling the other tasks of a multi-threaded
/// runtime (the workers'); on a current-thread runtime it just runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(60);

    #[test]
    fn a_commit_that_stands_still_past_the_bound_is_stale() {
        let t0 = Instant::now();
        let mut w = OrphanWatch::default();
        assert!(w.stale(t0, &[(0, Some(5)), (1, None)], AFTER).is_empty());
        let later = t0 + AFTER - Duration::from_secs(1);
        assert!(w.stale(later, &[(0, Some(5)), (1, None)], AFTER).is_empty());
        assert_eq!(
            w.stale(t0 + AFTER, &[(0, Some(5)), (1, None)], AFTER),
            vec![0, 1]
        );
    }

    #[test]
    fn a_commit_that_moves_starts_over() {
        let t0 = Instant::now();
        let mut w = OrphanWatch::default();
        w.stale(t0, &[(0, Some(5))], AFTER);
        assert!(w.stale(t0 + AFTER / 2, &[(0, Some(6))], AFTER).is_empty());
        assert!(w.stale(t0 + AFTER, &[(0, Some(6))], AFTER).is_empty());
        assert_eq!(w.stale(t0 + AFTER * 3 / 2, &[(0, Some(6))], AFTER), vec![0]);
    }

    #[test]
    fn a_partition_that_came_back_is_forgotten() {
        let t0 = Instant::now();
        let mut w = OrphanWatch::default();
        w.stale(t0, &[(0, Some(5)), (1, Some(2))], AFTER);
        // Partition 0 is this member's for a while, then another's again.
        w.stale(t0 + AFTER / 2, &[(1, Some(2))], AFTER);
        assert_eq!(
            w.stale(t0 + AFTER, &[(0, Some(5)), (1, Some(2))], AFTER),
            vec![1]
        );
        w.reset();
        assert!(
            w.stale(t0 + AFTER * 2, &[(0, Some(5)), (1, Some(2))], AFTER)
                .is_empty()
        );
    }

    #[test]
    fn only_unread_messages_make_an_orphan() {
        assert!(orphaned(Some(5), 6));
        assert!(!orphaned(Some(5), 5));
        assert!(orphaned(None, 1));
        assert!(!orphaned(None, 0));
    }

    #[test]
    fn looks_are_spaced() {
        let t0 = Instant::now();
        let mut w = OrphanWatch::default();
        assert!(w.due(t0));
        assert!(!w.due(t0 + CHECK_EVERY / 2));
        assert!(w.due(t0 + CHECK_EVERY));
    }
}

//! How many password guesses a client and an account get: a pure state machine over a
//! clock the caller passes in.
//!
//! Two keys are counted for every login attempt: the client's address (an IPv6
//! address by its /64, which one host usually holds whole) and the username tried.
//! Each key has `free` failures; every failure after them locks the key for a
//! backoff that doubles from `base` up to `max`. While either key is locked an attempt
//! is refused before the password is checked, and a refusal does not count, so a
//! lock ends when its time is up however often a client knocks. A key that has not
//! failed for `forget` starts again from nothing.
//!
//! An attempt counts as a failure from the moment it is admitted until it succeeds
//! ([`Throttle::succeeded`]): sixteen guesses sent at once are counted one by one as
//! they are admitted, so no more of them reach the password check than one at a time
//! would. A success clears its account's count and takes its own count back from its
//! address; it does not clear the address's other failures, so one valid account does
//! not buy a client unlimited guesses at the others.
//!
//! The account key is a denial of service by design: whoever guesses wrong for an
//! account locks it for everyone, for at most `max` at a time, at the price of one
//! password check per lock. `docs/THREATS.md` weighs it; API tokens and the CLI are
//! not affected.
//!
//! Memory is bounded: each table holds at most `cap` keys. A full table first drops
//! the keys it may forget, then the key idle longest.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The allowance and backoff of one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures in a row before the first lock.
    pub free: u32,
    /// The first lock; each further failure doubles it…
    pub base: Duration,
    /// …up to this.
    pub max: Duration,
    /// A key with no attempt for this long starts again from nothing.
    pub forget: Duration,
}

impl Policy {
    /// The lock that follows the `failures`-th failure in a row: none within the free
    /// ones, then `base`, `2 base`, `4 base`, … up to `max`.
    pub fn lock_after(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.free)?.checked_sub(1)?;
        let doubled = self
            .base
            .checked_mul(1u32.checked_shl(over.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max);
        Some(doubled.min(self.max))
    }
}

#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

impl Count {
    fn forgotten(&self, policy: &Policy, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= policy.forget
            && self.locked_until.is_none_or(|t| t <= now)
    }
}

#[derive(Debug)]
struct Table<K> {
    policy: Policy,
    counts: HashMap<K, Count>,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(policy: Policy, cap: usize) -> Self {
        Table {
            policy,
            counts: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// How long `key` stays locked, if it is.
    fn locked(&mut self, key: &K, now: Instant) -> Option<Duration> {
        let c = self.counts.get(key)?;
        if c.forgotten(&self.policy, now) {
            self.counts.remove(key);
            return None;
        }
        c.locked_until
            .and_then(|t| t.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Counts one failure of `key`; the lock it starts, if any.
    fn fail(&mut self, key: K, now: Instant) -> Option<Duration> {
        if !self.counts.contains_key(&key) {
            self.make_room(now);
        }
        let policy = self.policy;
        let c = self.counts.entry(key).or_insert(Count {
            failures: 0,
            locked_until: None,
            last: now,
        });
        if c.forgotten(&policy, now) {
            c.failures = 0;
        }
        c.failures = c.failures.saturating_add(1);
        c.last = now;
        let lock = policy.lock_after(c.failures);
        if let Some(d) = lock {
            c.locked_until = Some(now + d);
        }
        lock
    }

    /// Takes one failure back (an attempt that succeeded), lifting the lock when what
    /// is left is within the free ones.
    fn take_back(&mut self, key: &K) {
        if let Some(c) = self.counts.get_mut(key) {
            c.failures = c.failures.saturating_sub(1);
            if c.failures <= self.policy.free {
                c.locked_until = None;
            }
            if c.failures == 0 {
                self.counts.remove(key);
            }
        }
    }

    fn clear(&mut self, key: &K) {
        self.counts.remove(key);
    }

    fn make_room(&mut self, now: Instant) {
        if self.counts.len() < self.cap {
            return;
        }
        let policy = self.policy;
        self.counts.retain(|_, c| !c.forgotten(&policy, now));
        while self.counts.len() >= self.cap {
            let Some(oldest) = self
                .counts
                .iter()
                .min_by_key(|(_, c)| c.last)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.counts.remove(&oldest);
        }
    }
}

/// The key of a client address: an IPv4 address whole (an IPv4-mapped IPv6 one as
/// IPv4), an IPv6 address by its /64.
pub fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// The key of a username as tried: trimmed, lower-cased and cut to 64 characters, so
/// that spellings of one name share one count.
pub fn account_key(username: &str) -> String {
    username.trim().to_lowercase().chars().take(64).collect()
}

/// Why an attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    Address,
    Account,
}

/// A refused attempt: which key is locked, and for how long yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub by: Locked,
    pub retry_after: Duration,
}

/// An admitted attempt, counted as a failure until it succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The account's failures in a row, this one included.
    pub account_failures: u32,
    /// The lock this attempt puts on the account if it fails.
    pub locks_account: Option<Duration>,
}

/// The two tables.
#[derive(Debug)]
pub struct Throttle {
    addresses: Table<IpAddr>,
    accounts: Table<String>,
}

impl Throttle {
    pub fn new(address: Policy, account: Policy, cap: usize) -> Throttle {
        Throttle {
            addresses: Table::new(address, cap),
            accounts: Table::new(account, cap),
        }
    }

    /// Admits a login attempt from `address` for `username` at `now`, counting it as
    /// a failure; or refuses it, counting nothing, while either key is locked.
    pub fn admit(
        &mut self,
        address: IpAddr,
        username: &str,
        now: Instant,
    ) -> Result<Attempt, Refused> {
        let (address, account) = (address_key(address), account_key(username));
        for (by, left) in [
            (Locked::Address, self.addresses.locked(&address, now)),
            (Locked::Account, self.accounts.locked(&account, now)),
        ] {
            if let Some(retry_after) = left {
                return Err(Refused { by, retry_after });
            }
        }
        self.addresses.fail(address, now);
        let locks_account = self.accounts.fail(account.clone(), now);
        Ok(Attempt {
            account_failures: self.accounts.counts.get(&account).map_or(0, |c| c.failures),
            locks_account,
        })
    }

    /// The admitted attempt from `address` for `username` succeeded: the account
    /// starts again from nothing, and the address gets this attempt back.
    pub fn succeeded(&mut self, address: IpAddr, username: &str) {
        self.accounts.clear(&account_key(username));
        self.addresses.take_back(&address_key(address));
    }

    /// The admitted attempt never reached a verdict (the database or the password
    /// checks were unavailable): both keys get it back.
    pub fn withdraw(&mut self, address: IpAddr, username: &str) {
        self.accounts.take_back(&account_key(username));
        self.addresses.take_back(&address_key(address));
    }

    /// Keys held, addresses and accounts.
    pub fn len(&self) -> (usize, usize) {
        (self.addresses.counts.len(), self.accounts.counts.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(free: u32) -> Policy {
        Policy {
            free,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            forget: Duration::from_secs(3600),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_lock_doubles_after_the_free_failures_up_to_the_bound() {
        let p = policy(3);
        let locks: Vec<Option<u64>> = (1..=12)
            .map(|n| p.lock_after(n).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            locks,
            [
                None,
                None,
                None,
                Some(1),
                Some(2),
                Some(4),
                Some(8),
                Some(16),
                Some(32),
                Some(60),
                Some(60),
                Some(60)
            ]
        );
        assert_eq!(p.lock_after(u32::MAX), Some(secs(60)));
    }

    #[test]
    fn an_account_is_refused_once_its_free_failures_are_spent_and_until_its_lock_ends() {
        let mut t = Throttle::new(policy(100), policy(3), 1000);
        let t0 = Instant::now();
        for n in 1..=3 {
            let a = t.admit(ip("10.0.0.1"), "ann", t0).unwrap();
            assert_eq!((a.account_failures, a.locks_account), (n, None));
        }
        let fourth = t.admit(ip("10.0.0.2"), "ann", t0).unwrap();
        assert_eq!(fourth.locks_account, Some(secs(1)));
        // From any address, and for any spelling of the name.
        let refused = t.admit(ip("10.0.0.3"), " ANN", t0).unwrap_err();
        assert_eq!(refused.by, Locked::Account);
        assert_eq!(refused.retry_after, secs(1));
        // Refusals do not count: knocking all second long does not lengthen the lock.
        for ms in 0..1000 {
            assert!(
                t.admit(ip("10.0.0.3"), "ann", t0 + Duration::from_millis(ms))
                    .is_err()
            );
        }
        let fifth = t.admit(ip("10.0.0.3"), "ann", t0 + secs(1)).unwrap();
        assert_eq!(fifth.locks_account, Some(secs(2)));
        // Another account is untouched.
        assert!(t.admit(ip("10.0.0.3"), "bob", t0 + secs(1)).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_so_a_burst_gets_no_more_checks_than_a_sequence() {
        let mut t = Throttle::new(policy(100), policy(5), 1000);
        let t0 = Instant::now();
        // Sixteen sent at once, none answered yet.
        let admitted = (0..16)
            .filter(|_| t.admit(ip("10.0.0.1"), "ann", t0).is_ok())
            .count();
        assert_eq!(admitted, 6, "five free and the one that locks");
    }

    #[test]
    fn an_address_is_refused_across_accounts_and_an_ipv6_host_by_its_64() {
        let mut t = Throttle::new(policy(4), policy(100), 1000);
        let t0 = Instant::now();
        for (n, user) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            assert!(
                t.admit(ip(&format!("2001:db8::{n}")), user, t0).is_ok(),
                "{user}"
            );
        }
        let r = t.admit(ip("2001:db8::ffff:1"), "f", t0).unwrap_err();
        assert_eq!((r.by, r.retry_after), (Locked::Address, secs(1)));
        // Another /64 is another client.
        assert!(t.admit(ip("2001:db8:0:1::1"), "f", t0).is_ok());
        assert_eq!(
            address_key(ip("::ffff:10.1.2.3")),
            ip("10.1.2.3"),
            "IPv4-mapped"
        );
    }

    #[test]
    fn a_success_clears_its_account_but_not_its_addresss_other_failures() {
        let mut t = Throttle::new(policy(3), policy(3), 1000);
        let t0 = Instant::now();
        for _ in 0..3 {
            t.admit(ip("10.0.0.1"), "ann", t0).unwrap();
        }
        // The right password: ann starts again, the address keeps its three failures.
        t.admit(ip("10.0.0.9"), "ann", t0).unwrap();
        t.succeeded(ip("10.0.0.9"), "ann");
        for _ in 0..3 {
            assert_eq!(
                t.admit(ip("10.0.0.9"), "ann", t0).unwrap().locks_account,
                None
            );
        }
        // 10.0.0.1's three guesses stand: one more locks it, even with a good login.
        t.admit(ip("10.0.0.1"), "bob", t0).unwrap();
        t.succeeded(ip("10.0.0.1"), "bob");
        assert!(t.admit(ip("10.0.0.1"), "cat", t0).is_ok());
        assert_eq!(
            t.admit(ip("10.0.0.1"), "dan", t0).unwrap_err().by,
            Locked::Address
        );
    }

    #[test]
    fn an_attempt_that_reached_no_verdict_is_taken_back_from_both_keys() {
        let mut t = Throttle::new(policy(2), policy(2), 1000);
        let t0 = Instant::now();
        // A database outage: every attempt is withdrawn, and nothing locks.
        for _ in 0..50 {
            t.admit(ip("10.0.0.1"), "ann", t0).unwrap();
            t.withdraw(ip("10.0.0.1"), "ann");
        }
        assert_eq!(t.len(), (0, 0));
    }

    #[test]
    fn a_key_quiet_for_the_forget_time_starts_again() {
        let mut t = Throttle::new(policy(100), policy(2), 1000);
        let t0 = Instant::now();
        for _ in 0..3 {
            t.admit(ip("10.0.0.1"), "ann", t0).unwrap();
        }
        assert!(t.admit(ip("10.0.0.1"), "ann", t0).is_err());
        let later = t0 + secs(3600);
        let a = t.admit(ip("10.0.0.1"), "ann", later).unwrap();
        assert_eq!((a.account_failures, a.locks_account), (1, None));
    }

    #[test]
    fn the_tables_stay_within_their_cap_dropping_the_idlest_key() {
        let mut t = Throttle::new(policy(1), policy(1), 100);
        let t0 = Instant::now();
        for n in 0..10_000u32 {
            let at = t0 + Duration::from_millis(u64::from(n));
            let _ = t.admit(IpAddr::from(n.to_be_bytes()), &format!("user{n}"), at);
        }
        let (addresses, accounts) = t.len();
        assert!(addresses <= 100 && accounts <= 100, "{:?}", t.len());
        // The newest keys are the ones kept.
        let last = t0 + Duration::from_millis(9999);
        t.admit(ip("0.0.39.15"), "user9999", last).unwrap();
        assert_eq!(
            t.admit(ip("0.0.39.15"), "other", last).unwrap_err().by,
            Locked::Address
        );
    }
}

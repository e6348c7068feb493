//! Limits on failed RADIUS attempts (`[rate_limit]`), per user and per
//! source, on top of the per-token failcounter lockout of the core.
//!
//! * The **user** is the User-Name as the core locates it (`login@realm`,
//!   lower-cased), so `alice`, `ALICE` and `alice@corp` count together.
//!   Unknown users count like known ones: the limiter answers the same way
//!   whether or not a user exists.
//! * The **source** is the Calling-Station-Id (RADIUS attribute 31: the
//!   end user's address or MAC as the NAS reports it); a request without one
//!   has no source. Never the NAS address: one VPN concentrator carries
//!   every user, and an attacker behind it must not lock them all out.
//!
//! A key with `failures_per_*` failed attempts (Access-Rejects) within
//! `window` seconds of its first one is refused until that window ends: the
//! request is answered with an Access-Reject at once, without asking the
//! core (no store read, no PIN hash, no failcounter change), and the block
//! is logged once per window and key. An attempt counts as a failure from
//! the moment it is admitted until the core accepts it (or challenges, or
//! fails internally), so that concurrent attempts cannot outrun the count.
//! A successful login clears the user's own count (as privacyIDEA resets a
//! token's failcounter), never a source's nor anyone else's. A count of 0
//! turns that limit off.
//!
//! Memory is bounded: each table holds at most `MAX_KEYS` keys, stored as
//! 64-bit keyed hashes (a random key per process, so nobody can aim for a
//! collision); when full, expired entries go first, then the oldest.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use otpd_core::config::RateLimitConfig;

/// Keys kept per table (users, sources); about 40 bytes each.
pub const MAX_KEYS: usize = 100_000;

/// The Reply-Message of a rate-limited Access-Reject.
pub const LIMITED_MESSAGE: &str = "too many failed attempts; try again later";

/// What a request is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `login@realm`, lower-cased (or the User-Name as sent, lower-cased,
    /// when it names no realm that exists).
    pub user: String,
    /// The Calling-Station-Id, when the request has a non-empty one.
    pub source: Option<String>,
}

impl Keys {
    /// `located` is the core's `(login, realm)` for the User-Name, if any.
    pub fn new(user_name: &str, located: Option<(&str, &str)>, calling_station: Option<&[u8]>) -> Keys {
        let user = match located {
            Some((login, realm)) => format!("{login}@{realm}").to_lowercase(),
            None => user_name.to_lowercase(),
        };
        let source =
            calling_station.filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned());
        Keys { user, source }
    }
}

/// A refused request: which limit, and whether this is the first refusal
/// of the key's window (then it is to be logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// `user` or `source`.
    pub kind: &'static str,
    pub key: String,
    pub failures: u32,
    pub first: bool,
}

/// An admitted request, counted as a failure until it is settled (and for
/// good if it is dropped unsettled): so a burst of concurrent attempts
/// cannot get more than the limit past the check before the first of them
/// is answered.
#[derive(Debug)]
#[must_use = "settle the admitted request with its outcome"]
pub struct Admitted {
    /// The key's hash and the start of the window the attempt was charged to.
    user: Option<(u64, Instant)>,
    source: Option<(u64, Instant)>,
}

/// How an admitted request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Access-Reject: the attempt stays counted.
    Rejected,
    /// Access-Accept: the user's count is cleared; the source's charge is refunded.
    Accepted,
    /// A challenge, or an internal error: neither a failure nor a success.
    Neither,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The first failure of the current window.
    start: Instant,
    failures: u32,
    /// The block of this window was logged.
    logged: bool,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<u64, Entry>,
}

impl Table {
    fn blocked(&mut self, id: u64, limit: u32, window: Duration, now: Instant) -> Option<(u32, bool)> {
        let entry = self.entries.get_mut(&id)?;
        if entry.failures < limit || now.duration_since(entry.start) >= window {
            return None;
        }
        let first = !entry.logged;
        entry.logged = true;
        Some((entry.failures, first))
    }

    /// Counts one failure; returns the start of the window it counts in.
    fn charge(&mut self, id: u64, window: Duration, now: Instant) -> Instant {
        if !self.entries.contains_key(&id) && self.entries.len() >= MAX_KEYS {
            self.make_room(window, now);
        }
        let fresh = Entry { start: now, failures: 0, logged: false };
        let entry = self.entries.entry(id).or_insert(fresh);
        if now.duration_since(entry.start) >= window {
            *entry = fresh;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.start
    }

    /// Takes back a charge, if its window is still the key's current one.
    fn refund(&mut self, (id, start): (u64, Instant)) {
        if let Some(entry) = self.entries.get_mut(&id)
            && entry.start == start
        {
            entry.failures = entry.failures.saturating_sub(1);
        }
    }

    /// Drops the expired entries; if that frees less than a quarter of the
    /// table, the oldest too, down to half (so a full table is scanned at
    /// most once per `MAX_KEYS / 4` new keys).
    fn make_room(&mut self, window: Duration, now: Instant) {
        self.entries.retain(|_, e| now.duration_since(e.start) < window);
        if self.entries.len() > MAX_KEYS * 3 / 4 {
            let mut starts: Vec<Instant> = self.entries.values().map(|e| e.start).collect();
            let oldest_kept = starts.len() - MAX_KEYS / 2;
            let cut = *starts.select_nth_unstable(oldest_kept).1;
            self.entries.retain(|_, e| e.start >= cut);
        }
    }
}

#[derive(Debug)]
struct Inner {
    settings: RateLimitConfig,
    users: Table,
    sources: Table,
}

/// The failed-attempt counters of one daemon (shared by its threads and
/// kept across configuration reloads).
#[derive(Debug)]
pub struct RateLimiter {
    inner: Mutex<Inner>,
    hasher: RandomState,
}

impl RateLimiter {
    pub fn new(settings: &RateLimitConfig) -> RateLimiter {
        let inner = Inner { settings: *settings, users: Table::default(), sources: Table::default() };
        RateLimiter { inner: Mutex::new(inner), hasher: RandomState::new() }
    }

    /// New settings (a reload); the counts so far are kept.
    pub fn configure(&self, settings: &RateLimitConfig) {
        self.lock().settings = *settings;
    }

    /// Admits a request to the core, counting it as a failure until it is
    /// settled, or refuses it when a limit of its user or source is reached.
    pub fn admit(&self, keys: &Keys) -> Result<Admitted, Limited> {
        self.admit_at(keys, Instant::now())
    }

    /// Settles an admitted request with its outcome.
    pub fn settle(&self, admitted: Admitted, how: Settle) {
        let mut inner = self.lock();
        match how {
            Settle::Rejected => {}
            Settle::Accepted => {
                if let Some((id, _)) = admitted.user {
                    inner.users.entries.remove(&id);
                }
            }
            Settle::Neither => {
                if let Some(user) = admitted.user {
                    inner.users.refund(user);
                }
            }
        }
        if how != Settle::Rejected
            && let Some(source) = admitted.source
        {
            inner.sources.refund(source);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit_at(&self, keys: &Keys, now: Instant) -> Result<Admitted, Limited> {
        let user = self.hasher.hash_one(&keys.user);
        let source = keys.source.as_ref().map(|s| self.hasher.hash_one(s));
        let mut inner = self.lock();
        let settings = inner.settings;
        let window = Duration::from_secs(settings.window.into());
        let per_user = settings.failures_per_user;
        // A request without a Calling-Station-Id has no source to limit.
        let source = source.filter(|_| settings.failures_per_source > 0);
        if let Some(id) = source
            && let Some((failures, first)) =
                inner.sources.blocked(id, settings.failures_per_source, window, now)
        {
            let key = keys.source.clone().unwrap_or_default();
            return Err(Limited { kind: "source", key, failures, first });
        }
        if per_user > 0
            && let Some((failures, first)) = inner.users.blocked(user, per_user, window, now)
        {
            return Err(Limited { kind: "user", key: keys.user.clone(), failures, first });
        }
        Ok(Admitted {
            user: (per_user > 0).then(|| (user, inner.users.charge(user, window, now))),
            source: source.map(|id| (id, inner.sources.charge(id, window, now))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_user: u32, per_source: u32, window: u32) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig {
            failures_per_user: per_user,
            failures_per_source: per_source,
            window,
        })
    }

    fn keys(user: &str, source: Option<&str>) -> Keys {
        Keys::new(user, None, source.map(str::as_bytes))
    }

    /// One attempt at `at` that ends `how`, unless a limit refuses it.
    fn attempt(l: &RateLimiter, keys: &Keys, at: Instant, how: Settle) -> Result<(), Limited> {
        let admitted = l.admit_at(keys, at)?;
        l.settle(admitted, how);
        Ok(())
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn keys_are_normalised() {
        let k = Keys::new("ALICE", Some(("ALICE", "corp")), Some(b"10.1.2.3"));
        assert_eq!(k, Keys { user: "alice@corp".into(), source: Some("10.1.2.3".into()) });
        assert_eq!(Keys::new("Bob@Nowhere", None, Some(b"")).user, "bob@nowhere");
        assert_eq!(Keys::new("bob", None, Some(b"")).source, None, "an empty Calling-Station-Id is none");
    }

    #[test]
    fn a_user_is_refused_after_its_failures_until_the_window_ends() {
        let l = limiter(3, 0, 60);
        let alice = keys("alice@corp", None);
        let t0 = Instant::now();
        for i in 0..3 {
            attempt(&l, &alice, secs(t0, i), Settle::Rejected).unwrap();
        }
        let limited = l.admit_at(&alice, secs(t0, 10)).unwrap_err();
        assert_eq!((limited.kind, limited.key.as_str(), limited.failures), ("user", "alice@corp", 3));
        assert!(limited.first, "the first refusal of the window is logged");
        assert!(!l.admit_at(&alice, secs(t0, 11)).unwrap_err().first, "later ones are not");
        attempt(&l, &keys("bob@corp", None), secs(t0, 11), Settle::Rejected)
            .expect("others are not affected");
        // The window began with the first failure: it ends 60 s later.
        assert!(l.admit_at(&alice, secs(t0, 59)).is_err());
        attempt(&l, &alice, secs(t0, 60), Settle::Rejected).expect("a new window");
        // It counts from its first failure, and its block is logged again.
        for i in 61..63 {
            attempt(&l, &alice, secs(t0, i), Settle::Rejected).unwrap();
        }
        assert!(l.admit_at(&alice, secs(t0, 70)).unwrap_err().first);
    }

    #[test]
    fn concurrent_attempts_cannot_outrun_the_limit() {
        let l = limiter(3, 0, 60);
        let alice = keys("alice", None);
        let t0 = Instant::now();
        let in_flight: Vec<Admitted> = (0..3).map(|_| l.admit_at(&alice, t0).unwrap()).collect();
        assert!(l.admit_at(&alice, t0).is_err(), "3 unanswered attempts count as 3 failures");
        let mut in_flight = in_flight.into_iter();
        l.settle(in_flight.next().unwrap(), Settle::Neither);
        let fourth = l.admit_at(&alice, t0).expect("a challenge or an error is no failure");
        l.settle(fourth, Settle::Rejected);
        l.settle(in_flight.next().unwrap(), Settle::Accepted);
        attempt(&l, &alice, t0, Settle::Rejected).expect("a success clears the user's count");
        // A refund from a window that has ended leaves the new window alone.
        let late = in_flight.next().unwrap();
        for i in 0..3 {
            attempt(&l, &alice, secs(t0, 60 + i), Settle::Rejected).unwrap();
        }
        l.settle(late, Settle::Neither);
        assert!(l.admit_at(&alice, secs(t0, 63)).is_err());
    }

    #[test]
    fn success_clears_the_users_own_count_only() {
        let l = limiter(2, 3, 60);
        let t0 = Instant::now();
        let via = |user: &str| keys(user, Some("198.51.100.7"));
        attempt(&l, &via("alice"), t0, Settle::Rejected).unwrap();
        attempt(&l, &via("bob"), t0, Settle::Rejected).unwrap();
        attempt(&l, &via("bob"), t0, Settle::Accepted).unwrap();
        // bob's count is cleared: two more failures before he is refused.
        let bob = keys("bob", None);
        attempt(&l, &bob, t0, Settle::Rejected).unwrap();
        attempt(&l, &bob, t0, Settle::Rejected).unwrap();
        assert_eq!(l.admit_at(&bob, t0).unwrap_err().kind, "user");
        // The source's failures stay (alice's and bob's first): one more, then refused.
        attempt(&l, &via("carol"), t0, Settle::Rejected).unwrap();
        let limited = l.admit_at(&via("carol"), t0).unwrap_err();
        assert_eq!((limited.kind, limited.failures), ("source", 3));
        // And alice's own count too.
        let alice = keys("alice", None);
        attempt(&l, &alice, t0, Settle::Rejected).unwrap();
        assert_eq!(l.admit_at(&alice, t0).unwrap_err().kind, "user");
    }

    #[test]
    fn requests_without_a_source_are_never_limited_by_source() {
        let l = limiter(0, 2, 60);
        let t0 = Instant::now();
        for i in 0..100 {
            attempt(&l, &keys(&format!("user{i}"), None), t0, Settle::Rejected).unwrap();
        }
        attempt(&l, &keys("user0", None), t0, Settle::Rejected).expect("the per-user limit is off");
        assert!(l.lock().users.entries.is_empty(), "a limit that is off counts nothing");
        assert!(l.lock().sources.entries.is_empty());
        for i in 0..2 {
            attempt(&l, &keys(&format!("user{i}"), Some("aa-bb-cc-dd-ee-ff")), t0, Settle::Rejected).unwrap();
        }
        assert!(l.admit_at(&keys("anyone", Some("aa-bb-cc-dd-ee-ff")), t0).is_err());
        assert!(l.admit_at(&keys("anyone", Some("11-22-33-44-55-66")), t0).is_ok());
        assert!(l.admit_at(&keys("anyone", None), t0).is_ok());
    }

    #[test]
    fn reconfiguring_keeps_the_counts() {
        let l = limiter(5, 0, 60);
        let t0 = Instant::now();
        let alice = keys("alice", None);
        for _ in 0..3 {
            attempt(&l, &alice, t0, Settle::Rejected).unwrap();
        }
        attempt(&l, &alice, t0, Settle::Neither).unwrap();
        l.configure(&RateLimitConfig { failures_per_user: 3, failures_per_source: 0, window: 60 });
        assert!(l.admit_at(&alice, t0).is_err());
        l.configure(&RateLimitConfig { failures_per_user: 0, failures_per_source: 0, window: 60 });
        assert!(l.admit_at(&alice, t0).is_ok(), "0 turns the limit off");
    }

    #[test]
    fn the_tables_are_bounded() {
        let l = limiter(1, 1, 60);
        let t0 = Instant::now();
        attempt(&l, &keys("victim", Some("victim-source")), t0, Settle::Rejected).unwrap();
        // Entries that expired go first.
        let first_fill = |i: u64| t0 + Duration::from_millis(61_000 + i / 1000);
        for i in 0..MAX_KEYS as u64 + 10 {
            let k = keys(&format!("u{i}"), Some(&format!("s{i}")));
            attempt(&l, &k, first_fill(i), Settle::Rejected).unwrap();
        }
        let (users, sources) = {
            let inner = l.lock();
            (inner.users.entries.len(), inner.sources.entries.len())
        };
        assert!(users <= MAX_KEYS && sources <= MAX_KEYS, "{users} {sources}");
        assert!(l.admit_at(&keys("victim", None), secs(t0, 59)).is_ok(), "expired and dropped");
        // When no entry has expired, the oldest go and the newest stay.
        let newest = MAX_KEYS as u64 + 9;
        assert!(l.admit_at(&keys(&format!("u{newest}"), None), first_fill(newest)).is_err());
        let now = secs(t0, 200);
        for i in 0..MAX_KEYS as u64 {
            attempt(
                &l,
                &keys(&format!("v{i}"), None),
                now + Duration::from_millis(i / 2000),
                Settle::Rejected,
            )
            .unwrap();
        }
        assert!(l.lock().users.entries.len() <= MAX_KEYS);
        let last = keys(&format!("v{}", MAX_KEYS - 1), None);
        assert!(l.admit_at(&last, secs(t0, 201)).is_err(), "the newest entry is kept");
    }
}

//! The reply cache: a retransmission (same source address and port,
//! identifier and request authenticator) within 30 s gets the response
//! already sent, without asking the core again, so a retransmitted OTP is
//! not rejected as a replay. Requests still being worked on are in the
//! cache too: a retransmission that arrives meanwhile is dropped instead of
//! being processed a second time, and the NAS's next retransmission gets the
//! cached reply. Entries leave in the order they came: expired ones from the
//! front as requests arrive, and under load the oldest first when the cache
//! is full, so that the latest requests (those a NAS retransmits) are
//! always covered.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const LIFETIME: Duration = Duration::from_secs(30);
/// At most this many entries: 30 s of requests up to 3 600 a second, the
/// last 2.7 s at 40 000 a second. About 20 MiB when full (the table sized
/// below, the order, the replies).
const MAX_ENTRIES: usize = 110_000;
/// The table's room: that of 2^18 slots (8 MiB). Removed entries leave
/// tombstones that use up room; when it is gone, hashbrown rebuilds the
/// table in place if it holds at most half its room, else twice as large.
/// At most half: never larger.
const TABLE_ROOM: usize = (1 << 18) / 8 * 7;
const _: () = assert!(MAX_ENTRIES <= TABLE_ROOM / 2);

pub type Key = (SocketAddr, u8, [u8; 16]);

/// An entry is 24 bytes in the table (its place in `Inner::order` 16
/// more) plus its reply (about 64 bytes): at thousands of logins a second,
/// 30 s of them is a hundred thousand entries, so the table is keyed by a
/// 64-bit keyed hash of the request's key (under a random per-process key,
/// so that nobody can aim for a collision) instead of the 49-byte key
/// itself. Two requests of one client, both with a valid
/// Message-Authenticator, would have to collide within 30 s: less than one
/// chance in 10^9 at the limit, and then the NAS discards the wrong reply
/// (its Response Authenticator does not match). The reply sent (shared, no
/// copy), or `None` while the request is worked on.
type Entry = Option<Arc<[u8]>>;

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// First sight: process it (and `finish` the key).
    New,
    /// Being processed: drop this copy.
    InFlight,
    /// Answered before: send this reply again.
    Answered(Arc<[u8]>),
}

#[derive(Debug)]
pub struct ReplyCache {
    inner: Mutex<Inner>,
    hasher: RandomState,
}

impl Default for ReplyCache {
    fn default() -> Self {
        ReplyCache::with_limit(MAX_ENTRIES, TABLE_ROOM)
    }
}

#[derive(Debug)]
struct Inner {
    entries: HashMap<u64, Entry>,
    /// The entries' ids in the order they came, with the second each came
    /// (since `base`).
    order: VecDeque<(u64, u32)>,
    limit: usize,
    base: Instant,
}

impl Inner {
    fn now(&self) -> u32 {
        u32::try_from(self.base.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// Drops the oldest entry. Entries and places in `order` come and go
    /// together (an id seen again after its entry expired finds the old
    /// one gone, purged before the lookup), so the front is the oldest.
    fn drop_oldest(&mut self) {
        if let Some((id, _)) = self.order.pop_front() {
            self.entries.remove(&id);
        }
    }
}

impl ReplyCache {
    fn with_limit(limit: usize, room: usize) -> Self {
        let inner = Inner {
            entries: HashMap::with_capacity(room),
            order: VecDeque::with_capacity(limit),
            limit,
            base: Instant::now(),
        };
        ReplyCache { inner: Mutex::new(inner), hasher: RandomState::new() }
    }

    fn id(&self, key: &Key) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn lookup(&self, key: Key) -> Lookup {
        let id = self.id(&key);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = inner.now();
        let lifetime = LIFETIME.as_secs() as u32;
        // The expired are all at the front: a few leave per request,
        // instead of a pass over the whole table now and then.
        while inner.order.front().is_some_and(|&(_, at)| now - at >= lifetime) {
            inner.drop_oldest();
        }
        if let Some(entry) = inner.entries.get(&id) {
            return match entry {
                Some(reply) => Lookup::Answered(reply.clone()),
                None => Lookup::InFlight,
            };
        }
        // Every entry has its place in `order`, so this ends; the guard
        // keeps it so should that ever not hold.
        while inner.entries.len() >= inner.limit && !inner.order.is_empty() {
            inner.drop_oldest();
        }
        inner.entries.insert(id, None);
        inner.order.push_back((id, now));
        Lookup::New
    }

    /// Records the reply sent for `key`.
    pub fn finish(&self, key: Key, reply: Arc<[u8]>) {
        let id = self.id(&key);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = inner.entries.get_mut(&id) {
            *entry = Some(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmission_sees_in_flight_then_reply() {
        let cache = ReplyCache::default();
        let key: Key = ("127.0.0.1:5000".parse().unwrap(), 7, [1; 16]);
        assert_eq!(cache.lookup(key), Lookup::New);
        assert_eq!(cache.lookup(key), Lookup::InFlight);
        cache.finish(key, Arc::from(vec![2, 7]));
        assert_eq!(cache.lookup(key), Lookup::Answered(Arc::from(vec![2, 7])));
        let other: Key = ("127.0.0.1:5001".parse().unwrap(), 7, [1; 16]);
        assert_eq!(cache.lookup(other), Lookup::New, "another source port is another request");
    }

    #[test]
    fn entries_expire_after_the_lifetime() {
        let cache = ReplyCache::default();
        let key: Key = ("127.0.0.1:5000".parse().unwrap(), 7, [1; 16]);
        assert_eq!(cache.lookup(key), Lookup::New);
        cache.finish(key, Arc::from(vec![2, 7]));
        // Age the entry: as if it had been made a lifetime ago.
        cache.inner.lock().unwrap().base -= LIFETIME;
        assert_eq!(cache.lookup(key), Lookup::New, "an expired reply is not sent again");
        let inner = cache.inner.lock().unwrap();
        assert_eq!((inner.entries.len(), inner.order.len()), (1, 1), "purged, then the new request entered");
    }

    fn key(n: u16) -> Key {
        (SocketAddr::from(([127, 0, 0, 1], n)), 7, [1; 16])
    }

    #[test]
    fn a_full_cache_drops_its_oldest_entries_and_covers_the_latest() {
        let cache = ReplyCache::with_limit(3, 8);
        for n in 1..=5 {
            assert_eq!(cache.lookup(key(n)), Lookup::New);
            cache.finish(key(n), Arc::from(vec![n as u8]));
        }
        for n in 3..=5 {
            assert_eq!(cache.lookup(key(n)), Lookup::Answered(Arc::from(vec![n as u8])), "kept: {n}");
        }
        assert_eq!(cache.lookup(key(1)), Lookup::New, "the oldest went first");
        let inner = cache.inner.lock().unwrap();
        assert_eq!((inner.entries.len(), inner.order.len()), (3, 3));
    }

    #[test]
    fn a_request_seen_again_after_its_entry_expired_keeps_its_new_entry() {
        let cache = ReplyCache::with_limit(3, 8);
        assert_eq!(cache.lookup(key(1)), Lookup::New);
        cache.inner.lock().unwrap().base -= LIFETIME;
        // Entries made now: key 2, then key 1 again (its old entry purged).
        assert_eq!(cache.lookup(key(2)), Lookup::New);
        assert_eq!(cache.lookup(key(1)), Lookup::New);
        assert_eq!(cache.lookup(key(1)), Lookup::InFlight);
        // Filling up drops key 2 (now the oldest), not key 1's new entry.
        assert_eq!(cache.lookup(key(3)), Lookup::New);
        assert_eq!(cache.lookup(key(4)), Lookup::New);
        assert_eq!(cache.lookup(key(1)), Lookup::InFlight);
        assert_eq!(cache.lookup(key(2)), Lookup::New, "the oldest left");
    }

    #[test]
    fn at_its_limit_the_table_never_grows() {
        // Small, at the same proportions (a limit of half the room): many
        // times the tombstones it takes to make hashbrown rebuild it.
        let cache = ReplyCache::with_limit(56, 112);
        assert_eq!(cache.inner.lock().unwrap().entries.capacity(), 112);
        for n in 0..100_000u32 {
            let key = (
                SocketAddr::from(([127, 0, 0, 1], 1812)),
                7,
                [n.to_be_bytes(); 4].concat().try_into().unwrap(),
            );
            assert_eq!(cache.lookup(key), Lookup::New);
        }
        let inner = cache.inner.lock().unwrap();
        assert_eq!((inner.entries.len(), inner.order.len()), (56, 56));
        assert!(inner.entries.capacity() <= 112, "grown: {}", inner.entries.capacity());
        assert_eq!(ReplyCache::default().inner.lock().unwrap().entries.capacity(), TABLE_ROOM);
    }
}

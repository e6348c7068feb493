//! The reply cache: a retransmission (same source address and port,
//! identifier and request authenticator) within 30 s gets the response
//! already sent, without asking the core again, so a retransmitted OTP is
//! not rejected as a replay. Requests still being worked on are in the
//! cache too: a retransmission that arrives meanwhile is dropped instead of
//! being processed a second time, and the NAS's next retransmission gets the
//! cached reply.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const LIFETIME: Duration = Duration::from_secs(30);
/// Beyond this many entries new requests are processed without caching
/// rather than letting a flood grow memory without limit.
const MAX_ENTRIES: usize = 262_144;

pub type Key = (SocketAddr, u8, [u8; 16]);

/// An entry is 32 bytes in the table plus its reply (about 64 bytes): at
/// thousands of logins a second, 30 s of them is a few hundred thousand
/// entries, so the table is keyed by a 64-bit keyed hash of the request's
/// key (under a random per-process key, so that nobody can aim for a
/// collision) instead of the 49-byte key itself. Two requests of one
/// client, both with a valid Message-Authenticator, would have to collide
/// within 30 s: about one chance in 10^9 at the cap, and then the NAS
/// discards the wrong reply (its Response Authenticator does not match).
#[derive(Debug)]
struct Entry {
    /// Seconds since `Inner::base`.
    at: u32,
    reply: Option<Box<[u8]>>,
}

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
        let inner = Inner { entries: HashMap::new(), base: Instant::now(), last_purge: 0 };
        ReplyCache { inner: Mutex::new(inner), hasher: RandomState::new() }
    }
}

#[derive(Debug)]
struct Inner {
    entries: HashMap<u64, Entry>,
    base: Instant,
    last_purge: u32,
}

impl Inner {
    fn now(&self) -> u32 {
        u32::try_from(self.base.elapsed().as_secs()).unwrap_or(u32::MAX)
    }
}

impl ReplyCache {
    fn id(&self, key: &Key) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn lookup(&self, key: Key) -> Lookup {
        let id = self.id(&key);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = inner.now();
        let lifetime = LIFETIME.as_secs() as u32;
        if now > inner.last_purge {
            inner.entries.retain(|_, e| now - e.at < lifetime);
            inner.last_purge = now;
        }
        match inner.entries.get(&id) {
            Some(e) if now - e.at < lifetime => match &e.reply {
                Some(r) => return Lookup::Answered(Arc::from(&r[..])),
                None => return Lookup::InFlight,
            },
            _ => {}
        }
        if inner.entries.len() < MAX_ENTRIES {
            inner.entries.insert(id, Entry { at: now, reply: None });
        }
        Lookup::New
    }

    /// Records the reply sent for `key`.
    pub fn finish(&self, key: Key, reply: Arc<[u8]>) {
        let id = self.id(&key);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = inner.entries.get_mut(&id) {
            e.reply = Some(Box::from(&reply[..]));
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
        assert_eq!(cache.inner.lock().unwrap().entries.len(), 1, "purged, then the new request entered");
    }
}

//! The reply cache: a retransmission (same source address and port,
//! identifier and request authenticator) within 30 s gets the response
//! already sent, without asking the core again, so a retransmitted OTP is
//! not rejected as a replay. Requests still being worked on are in the
//! cache too: a retransmission that arrives meanwhile is dropped instead of
//! being processed a second time, and the NAS's next retransmission gets the
//! cached reply.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const LIFETIME: Duration = Duration::from_secs(30);
/// Beyond this many entries new requests are processed without caching
/// rather than letting a flood grow memory without limit.
const MAX_ENTRIES: usize = 262_144;

pub type Key = (SocketAddr, u8, [u8; 16]);

#[derive(Debug)]
struct Entry {
    at: Instant,
    reply: Option<Arc<[u8]>>,
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// First sight: process it (and `finish` or `abandon` the key).
    New,
    /// Being processed: drop this copy.
    InFlight,
    /// Answered before: send this reply again.
    Answered(Arc<[u8]>),
}

#[derive(Debug, Default)]
pub struct ReplyCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    last_purge: Option<Instant>,
}

impl ReplyCache {
    pub fn lookup(&self, key: Key) -> Lookup {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.last_purge.is_none_or(|t| now.duration_since(t) > Duration::from_secs(1)) {
            inner.entries.retain(|_, e| now.duration_since(e.at) < LIFETIME);
            inner.last_purge = Some(now);
        }
        match inner.entries.get(&key) {
            Some(e) if now.duration_since(e.at) < LIFETIME => match &e.reply {
                Some(r) => return Lookup::Answered(r.clone()),
                None => return Lookup::InFlight,
            },
            _ => {}
        }
        if inner.entries.len() < MAX_ENTRIES {
            inner.entries.insert(key, Entry { at: now, reply: None });
        }
        Lookup::New
    }

    /// Records the reply sent for `key`.
    pub fn finish(&self, key: Key, reply: Arc<[u8]>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = inner.entries.get_mut(&key) {
            e.reply = Some(reply);
        }
    }

    /// Forgets a request that got no reply (shed under load), so that the
    /// NAS's retransmission is processed.
    pub fn abandon(&self, key: Key) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.entries.remove(&key);
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
        cache.abandon(other);
        assert_eq!(cache.lookup(other), Lookup::New);
    }
}

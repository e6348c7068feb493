//! The tokens of recently seen owners, as the writer connection last read
//! or wrote them, so that a login finds its user's tokens without running
//! SQLite's token query (a fifth of a login's work in the daemon).
//!
//! Correct only as long as every change of a cached row is seen:
//! * changes of other connections (another process: the CLI, the PAM
//!   module, a second daemon) move the writer connection's
//!   `PRAGMA data_version`, which the store checks before it trusts the
//!   cache ([`TokenCache::validate`]);
//! * a login's own counter writes make the same change to the cached row
//!   ([`TokenCache::update`]);
//! * every other write to a token, a member rolled back and a group that
//!   failed empty the cache ([`TokenCache::clear`]).
//!
//! The compare-and-set of the counter stays the guard against a reused OTP:
//! the cache only saves the read before it.
//!
//! Tokens are kept packed ([`Packed`]), so that tens of thousands fit in
//! 15 MiB, and a full cache costs each new owner one old one: the least
//! recently used of a few picked at random (emptying it whole, 32 768
//! tokens, stalled the writer for 25 ms; why so: [`TokenCache::drop_one`]).

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;

use crate::otp::HashAlgorithm;
use crate::token::{Owner, StoredPin, Token, TokenType};

/// Tokens (and owners) held at most: enough for a login storm of some
/// 30 000 users (a TOTP user can log in once per step, so a storm at tens
/// of thousands a second goes round that many). A cached token of one
/// owner costs about 480 bytes with its owner's entry and the tables'
/// room (measured with 32 768 TOTP tokens): at most about 15 MiB, within
/// the daemon's 64 MiB target.
const MAX_TOKENS: usize = 32_768;

#[derive(Default)]
pub(super) struct TokenCache {
    /// The writer connection's `PRAGMA data_version` the entries hold for.
    version: Option<i64>,
    /// Each owner's token ids, in id order (possibly none), and when it
    /// was last used, under the owner's [`owner_key`].
    owners: HashMap<Arc<[u8]>, Cached>,
    /// The owners' keys, each once; the owner kept last is last.
    order: Vec<Arc<[u8]>>,
    /// Counts lookups and inserts: the clock of `Cached::used`.
    uses: u64,
    /// The state of the generator that picks the owners a full cache
    /// chooses from.
    draws: u64,
    tokens: HashMap<i64, Box<Packed>>,
    /// Reused to build the key of a looked-up owner.
    key: Vec<u8>,
}

/// Never the tokens themselves: they hold sealed secrets and PIN hashes.
impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} owners, {} tokens cached", self.owners.len(), self.tokens.len())
    }
}

/// An owner's entry.
struct Cached {
    ids: Box<[i64]>,
    /// `TokenCache::uses` when it was last looked up or kept.
    used: u64,
}

/// Owners a full cache picks at random, to drop the least recently used
/// of them (see `TokenCache::drop_one`).
const PICKS: usize = 3;

/// `(login, realm)` as one unambiguous byte string: the login's length,
/// the login, the realm (a login may hold any byte, so no separator would
/// do).
fn owner_key(buf: &mut Vec<u8>, owner: &(String, String)) {
    buf.clear();
    buf.extend_from_slice(&(owner.0.len() as u64).to_le_bytes());
    buf.extend_from_slice(owner.0.as_bytes());
    buf.extend_from_slice(owner.1.as_bytes());
}

impl TokenCache {
    /// Empties the cache unless it holds for `version` (read from the
    /// writer connection with no other connection able to commit since, or
    /// just before a read that will see at least as much).
    pub fn validate(&mut self, version: i64) {
        if self.version != Some(version) {
            self.clear();
            self.version = Some(version);
        }
    }

    /// Empties the cache, and forgets the version it held for (the writer
    /// connection may be a new one).
    pub fn clear(&mut self) {
        self.drop_entries();
        self.version = None;
    }

    fn drop_entries(&mut self) {
        self.owners.clear();
        self.order.clear();
        self.tokens.clear();
    }

    /// Drops an owner other than the one kept last, with its tokens:
    /// the least recently used of `PICKS` picked at random. Whether there
    /// was one.
    ///
    /// Not simply the oldest (nor the least recently used of all): a login
    /// storm that goes round more users than the cache holds (compare.sh's
    /// TOTP run: 34 000 users, each logging in every few seconds) would
    /// then find none of them cached, since each is dropped just before its
    /// turn comes again. Nor simply one at random: after the users change
    /// (a new storm), owners of the old one would linger and new ones go.
    /// Simulated (11 logins a user, users changing between storms), the
    /// share of logins that miss: 27% for a storm 4% larger than the cache
    /// (100% first in, first out; 31% at random), and 13% for one that fits
    /// (9% first in, first out, which is the first login of each user; 23%
    /// at random). No attacker gains from the choice: a dropped owner
    /// costs a read, never a wrong answer.
    fn drop_one(&mut self) -> bool {
        let others = self.order.len().saturating_sub(1);
        if others == 0 {
            return false;
        }
        let picks: [usize; PICKS] = std::array::from_fn(|_| (self.next_draw() % others as u64) as usize);
        let Some(at) = picks.into_iter().min_by_key(|&at| self.used(at)) else { return false };
        // The owner kept last takes the dropped one's place: back to the end.
        let key = self.order.swap_remove(at);
        let last = self.order.len() - 1;
        self.order.swap(at, last);
        if let Some(owner) = self.owners.remove(&key) {
            for id in owner.ids {
                self.tokens.remove(&id);
            }
        }
        true
    }

    /// When the owner at `at` in the order was last used.
    fn used(&self, at: usize) -> u64 {
        self.order.get(at).and_then(|key| self.owners.get(key)).map_or(0, |owner| owner.used)
    }

    /// The next number of a splitmix64 sequence: cheap, and any state
    /// (even the first, 0) gives well-spread numbers.
    fn next_draw(&mut self) -> u64 {
        self.draws = self.draws.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.draws;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A copy of the owner's tokens, when cached and validated.
    pub fn tokens_of(&mut self, owner: &(String, String)) -> Option<Vec<Token>> {
        self.version?;
        owner_key(&mut self.key, owner);
        self.uses += 1;
        let cached = self.owners.get_mut(self.key.as_slice())?;
        cached.used = self.uses;
        let mut tokens = Vec::with_capacity(cached.ids.len());
        for id in &cached.ids {
            tokens.push(self.tokens.get(id)?.unpack()?);
        }
        Some(tokens)
    }

    /// Keeps the owner's tokens as just read (in id order). A full cache
    /// drops other owners (`drop_one`).
    pub fn insert(&mut self, owner: &(String, String), tokens: &[Token]) {
        if self.version.is_none() || tokens.len() > MAX_TOKENS {
            return;
        }
        let Some(packed) = tokens.iter().map(Packed::pack).collect::<Option<Vec<_>>>() else { return };
        owner_key(&mut self.key, owner);
        self.uses += 1;
        let cached = Cached { ids: tokens.iter().map(|t| t.id).collect(), used: self.uses };
        if let Some(old) = self.owners.get_mut(self.key.as_slice()) {
            // Read again: already in the order.
            for id in std::mem::replace(old, cached).ids {
                self.tokens.remove(&id);
            }
        } else {
            let key: Arc<[u8]> = self.key.as_slice().into();
            self.order.push(Arc::clone(&key));
            self.owners.insert(key, cached);
        }
        for packed in packed {
            self.tokens.insert(packed.id, Box::new(packed));
        }
        // Owners without tokens count too (users of a large userstore). The
        // owner just kept, with at most MAX_TOKENS, stays (unless it was
        // read again: then it is not last, and it may go).
        while (self.tokens.len() > MAX_TOKENS || self.owners.len() > MAX_TOKENS) && self.drop_one() {}
    }

    /// Makes a login's counter write of token `id`, just written to
    /// SQLite, to the cached copy too: in place, since a login writes only
    /// fixed-size fields (the type says which).
    pub fn update(&mut self, id: i64, apply: impl FnOnce(&mut Counters)) {
        let Some(packed) = self.tokens.get_mut(&id) else { return };
        let Some(failcounter_exceeded) = unpack_time(packed.failcounter_exceeded) else {
            // Never packed by us: not to be served.
            return self.drop_entries();
        };
        let mut counters = Counters {
            count: packed.count,
            time_shift: packed.time_shift,
            failcount: packed.failcount,
            failcounter_exceeded,
            count_auth: packed.count_auth,
            count_auth_success: packed.count_auth_success,
            maxfail: packed.maxfail,
        };
        apply(&mut counters);
        let Counters {
            count,
            time_shift,
            failcount,
            failcounter_exceeded,
            count_auth,
            count_auth_success,
            maxfail: _,
        } = counters;
        packed.count = count;
        packed.time_shift = time_shift;
        packed.failcount = failcount;
        // Whole seconds, as SQLite holds it.
        packed.failcounter_exceeded = pack_time(failcounter_exceeded);
        packed.count_auth = count_auth;
        packed.count_auth_success = count_auth_success;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
}

/// The fields of a token that a login's counter writes change
/// (`SqliteTx::write_counters`), to change in a cached token without
/// unpacking it; `maxfail` only to read.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Counters {
    pub count: u64,
    pub time_shift: f64,
    pub failcount: u32,
    pub failcounter_exceeded: Option<Timestamp>,
    pub count_auth: u64,
    pub count_auth_success: u64,
    maxfail: u32,
}

impl Counters {
    pub fn maxfail(&self) -> u32 {
        self.maxfail
    }
}

/// A cached token: its fixed-size fields as they are (its times in whole
/// seconds, as SQLite holds them), and its strings and byte strings
/// (serial, secret, description, PIN, owner, realms) packed into one
/// allocation, each behind its length. A `Token` as it is, 384 bytes (and
/// twice that in a hash table's room) with eight allocations for a TOTP
/// token of one realm, cost 1.36 KiB a cached token.
struct Packed {
    id: i64,
    count: u64,
    count_auth: u64,
    count_auth_success: u64,
    time_shift: f64,
    /// The times in whole seconds, as SQLite holds them ([`NO_TIME`]: none).
    failcounter_exceeded: i64,
    validity_start: i64,
    validity_end: i64,
    created: i64,
    assigned: i64,
    otplen: u32,
    timestep: u32,
    time_window: u32,
    count_window: u32,
    sync_window: u32,
    maxfail: u32,
    failcount: u32,
    token_type: TokenType,
    hash: HashAlgorithm,
    active: bool,
    revoked: bool,
    bytes: Box<[u8]>,
}

/// A packed time that is `None` (out of any `Timestamp`'s range).
const NO_TIME: i64 = i64::MIN;

fn pack_time(t: Option<Timestamp>) -> i64 {
    t.map_or(NO_TIME, |t| t.as_second())
}

/// `Some(None)` for [`NO_TIME`]; `None` for a value `pack_time` never wrote.
fn unpack_time(s: i64) -> Option<Option<Timestamp>> {
    if s == NO_TIME { Some(None) } else { Timestamp::from_second(s).ok().map(Some) }
}

/// Tags of the packed PIN and owner.
const PIN_EMPTY: u8 = 0;
const PIN_HASH: u8 = 1;
const PIN_ENCRYPTED: u8 = 2;
const NO_OWNER: u8 = 0;
const OWNER: u8 = 1;

impl Packed {
    /// `None` for a token too large to pack (never read from SQLite).
    fn pack(token: &Token) -> Option<Packed> {
        // Every field named: a field added to `Token` must be packed too.
        let Token {
            id,
            serial,
            token_type,
            secret,
            otplen,
            hash,
            timestep,
            time_window,
            time_shift,
            count,
            count_window,
            sync_window,
            maxfail,
            failcount,
            failcounter_exceeded,
            active,
            revoked,
            description,
            pin,
            owner,
            realms,
            validity_start,
            validity_end,
            count_auth,
            count_auth_success,
            created,
            assigned,
        } = token;
        // The exact size, so that the boxed slice is the vector's own
        // allocation (a login's counter update packs once more).
        let size = LEN
            + serial.len()
            + LEN
            + secret.len()
            + LEN
            + description.len()
            + 1
            + match pin {
                StoredPin::Empty => 0,
                StoredPin::Hash(hash) => LEN + hash.len(),
                StoredPin::Encrypted(sealed) => LEN + sealed.len(),
            }
            + 1
            + owner.as_ref().map_or(0, |o| 3 * LEN + o.login.len() + o.realm.len() + o.resolver.len())
            + LEN
            + realms.iter().map(|r| LEN + r.len()).sum::<usize>();
        let mut bytes = Vec::with_capacity(size);
        put(&mut bytes, serial.as_bytes())?;
        put(&mut bytes, secret)?;
        put(&mut bytes, description.as_bytes())?;
        match pin {
            StoredPin::Empty => bytes.push(PIN_EMPTY),
            StoredPin::Hash(hash) => {
                bytes.push(PIN_HASH);
                put(&mut bytes, hash.as_bytes())?;
            }
            StoredPin::Encrypted(sealed) => {
                bytes.push(PIN_ENCRYPTED);
                put(&mut bytes, sealed)?;
            }
        }
        match owner {
            None => bytes.push(NO_OWNER),
            Some(Owner { login, realm, resolver }) => {
                bytes.push(OWNER);
                put(&mut bytes, login.as_bytes())?;
                put(&mut bytes, realm.as_bytes())?;
                put(&mut bytes, resolver.as_bytes())?;
            }
        }
        put_len(&mut bytes, realms.len())?;
        for realm in realms {
            put(&mut bytes, realm.as_bytes())?;
        }
        debug_assert_eq!(bytes.len(), size);
        Some(Packed {
            id: *id,
            count: *count,
            count_auth: *count_auth,
            count_auth_success: *count_auth_success,
            time_shift: *time_shift,
            failcounter_exceeded: pack_time(*failcounter_exceeded),
            validity_start: pack_time(*validity_start),
            validity_end: pack_time(*validity_end),
            created: pack_time(Some(*created)),
            assigned: pack_time(*assigned),
            otplen: *otplen,
            timestep: *timestep,
            time_window: *time_window,
            count_window: *count_window,
            sync_window: *sync_window,
            maxfail: *maxfail,
            failcount: *failcount,
            token_type: *token_type,
            hash: *hash,
            active: *active,
            revoked: *revoked,
            bytes: bytes.into_boxed_slice(),
        })
    }

    /// The token again; `None` only for bytes `pack` did not write.
    fn unpack(&self) -> Option<Token> {
        let mut r = Reader(&self.bytes);
        let serial = r.string()?;
        let secret = r.bytes()?.to_vec();
        let description = r.string()?;
        let pin = match r.byte()? {
            PIN_EMPTY => StoredPin::Empty,
            PIN_HASH => StoredPin::Hash(r.string()?),
            PIN_ENCRYPTED => StoredPin::Encrypted(r.bytes()?.to_vec()),
            _ => return None,
        };
        let owner = match r.byte()? {
            NO_OWNER => None,
            OWNER => Some(Owner { login: r.string()?, realm: r.string()?, resolver: r.string()? }),
            _ => return None,
        };
        let n = r.len()?;
        let mut realms = Vec::with_capacity(n.min(r.0.len()));
        for _ in 0..n {
            realms.push(r.string()?);
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(Token {
            id: self.id,
            serial,
            token_type: self.token_type,
            secret,
            otplen: self.otplen,
            hash: self.hash,
            timestep: self.timestep,
            time_window: self.time_window,
            time_shift: self.time_shift,
            count: self.count,
            count_window: self.count_window,
            sync_window: self.sync_window,
            maxfail: self.maxfail,
            failcount: self.failcount,
            failcounter_exceeded: unpack_time(self.failcounter_exceeded)?,
            active: self.active,
            revoked: self.revoked,
            description,
            pin,
            owner,
            realms,
            validity_start: unpack_time(self.validity_start)?,
            validity_end: unpack_time(self.validity_end)?,
            count_auth: self.count_auth,
            count_auth_success: self.count_auth_success,
            created: unpack_time(self.created)??,
            assigned: unpack_time(self.assigned)?,
        })
    }
}

/// Appends `value` behind its length (`None` beyond 4 GiB, which SQLite's
/// rows never reach).
fn put(bytes: &mut Vec<u8>, value: &[u8]) -> Option<()> {
    put_len(bytes, value.len())?;
    bytes.extend_from_slice(value);
    Some(())
}

/// The bytes of the length before each value (a `u32`).
const LEN: usize = size_of::<u32>();

fn put_len(bytes: &mut Vec<u8>, len: usize) -> Option<()> {
    bytes.extend_from_slice(&u32::try_from(len).ok()?.to_le_bytes());
    Some(())
}

/// Reads back what `put` wrote.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn len(&mut self) -> Option<usize> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        usize::try_from(u32::from_le_bytes(*head)).ok()
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        if n > self.0.len() {
            return None;
        }
        let (value, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(value)
    }

    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::sample_token;

    fn owner(n: usize) -> (String, String) {
        (format!("user{n}"), "realm".to_owned())
    }

    fn token(id: i64) -> Token {
        let mut t = sample_token(TokenType::Hotp, &format!("T{id}"));
        t.id = id;
        t
    }

    /// A login of `owner(n)`, who has one token (id n), as the store makes
    /// it: whether it hit; a miss reads the owner and keeps it.
    fn login(cache: &mut TokenCache, n: usize) -> bool {
        let hit = cache.tokens_of(&owner(n)).is_some();
        if !hit {
            cache.insert(&owner(n), &[token(n as i64)]);
        }
        hit
    }

    /// A validated cache full of owners 0..MAX_TOKENS, each logged in once.
    fn full_cache() -> TokenCache {
        let mut cache = TokenCache::default();
        cache.validate(1);
        for n in 0..MAX_TOKENS {
            assert!(!login(&mut cache, n));
        }
        cache
    }

    #[test]
    fn nothing_is_served_before_a_version_is_validated_nor_after_it_moves() {
        let mut cache = TokenCache::default();
        cache.insert(&owner(1), &[token(1)]);
        assert!(cache.tokens_of(&owner(1)).is_none(), "no version yet: nothing kept");
        cache.validate(7);
        cache.insert(&owner(1), &[token(1)]);
        assert_eq!(cache.tokens_of(&owner(1)).map(|t| t.len()), Some(1));
        cache.validate(7);
        assert!(cache.tokens_of(&owner(1)).is_some(), "same version: kept");
        cache.validate(8);
        assert!(cache.tokens_of(&owner(1)).is_none(), "another connection committed");
        cache.insert(&owner(1), &[token(1)]);
        cache.clear();
        assert!(cache.tokens_of(&owner(1)).is_none());
        cache.insert(&owner(1), &[token(1)]);
        assert!(cache.tokens_of(&owner(1)).is_none(), "a clear forgets the version too");
    }

    #[test]
    fn an_update_reaches_the_cached_token_wherever_it_is_listed() {
        let mut cache = TokenCache::default();
        cache.validate(1);
        cache.insert(&owner(1), &[token(1), token(2)]);
        let failed_at = Timestamp::from_second(1_700_000_000).unwrap();
        cache.update(2, |c| {
            assert_eq!(c.maxfail(), token(2).maxfail);
            *c = Counters {
                count: 42,
                time_shift: -30.0,
                failcount: 3,
                failcounter_exceeded: Some(failed_at),
                count_auth: 7,
                count_auth_success: 5,
                maxfail: 0, // not written back
            };
        });
        let tokens = cache.tokens_of(&owner(1)).unwrap();
        // (`Token` has no `PartialEq`; its derived `Debug` shows every field.)
        assert_eq!(format!("{:?}", tokens[0]), format!("{:?}", token(1)), "the other token is untouched");
        let expected = Token {
            count: 42,
            time_shift: -30.0,
            failcount: 3,
            failcounter_exceeded: Some(failed_at),
            count_auth: 7,
            count_auth_success: 5,
            ..token(2)
        };
        assert_eq!(format!("{:?}", tokens[1]), format!("{expected:?}"), "the counters changed, nothing else");
        cache.update(2, |c| c.failcounter_exceeded = None);
        assert_eq!(cache.tokens_of(&owner(1)).unwrap()[1].failcounter_exceeded, None);
        cache.update(99, |_| panic!("not cached: nothing to apply"));
    }

    #[test]
    fn a_full_cache_drops_other_owners_at_random_and_stays_bounded() {
        let mut cache = full_cache();
        assert_eq!(cache.len(), MAX_TOKENS);
        let cached = |cache: &mut TokenCache, owners: std::ops::Range<usize>| {
            owners.filter(|&n| cache.tokens_of(&owner(n)).is_some()).count()
        };
        cache.insert(&owner(MAX_TOKENS), &[token(MAX_TOKENS as i64)]);
        assert_eq!(cache.len(), MAX_TOKENS, "full: one old token out, one new in");
        assert!(cache.tokens_of(&owner(MAX_TOKENS)).is_some(), "the owner kept last stays");
        assert_eq!(cached(&mut cache, 0..MAX_TOKENS), MAX_TOKENS - 1);
        // An owner of three tokens makes room for itself.
        cache.insert(&owner(MAX_TOKENS + 1), &[token(900_000), token(900_001), token(900_002)]);
        assert_eq!(cache.len(), MAX_TOKENS);
        assert_eq!(cache.tokens_of(&owner(MAX_TOKENS + 1)).unwrap().len(), 3);
        assert_eq!(cached(&mut cache, 0..MAX_TOKENS + 1), MAX_TOKENS - 3);
        // An owner read again replaces its old entry, without leaving its
        // old tokens behind.
        let again = (0..MAX_TOKENS).find(|&n| cache.tokens_of(&owner(n)).is_some()).unwrap();
        cache.insert(&owner(again), &[token(800_000), token(800_001)]);
        assert_eq!(cache.tokens_of(&owner(again)).unwrap().len(), 2);
        assert!(!cache.tokens.contains_key(&(again as i64)));
        assert_eq!(cache.len(), MAX_TOKENS, "one more token: another owner made room");
        // Each owner once in the order, and only owners.
        let order: std::collections::HashSet<_> = cache.order.iter().cloned().collect();
        assert_eq!(order.len(), cache.order.len());
        assert!(cache.owners.keys().all(|k| order.contains(k)) && order.len() == cache.owners.len());
    }

    #[test]
    fn a_storm_round_more_owners_than_room_still_mostly_hits() {
        // 2% more owners than room, each logging in once a round, in
        // turn: first in, first out (or least recently used) would drop
        // each just before its turn, and never hit. (92% hit; at random 96%.)
        let mut cache = TokenCache::default();
        cache.validate(1);
        let owners = MAX_TOKENS + MAX_TOKENS / 50;
        let mut hits = 0;
        for round in 0..4 {
            for n in 0..owners {
                hits += usize::from(login(&mut cache, n) && round == 3);
            }
        }
        assert!(hits * 10 > owners * 9, "{hits} hits of {owners} logins in the last round");
        assert_eq!(cache.len(), MAX_TOKENS);
    }

    #[test]
    fn a_new_set_of_users_that_fits_soon_replaces_the_old_one() {
        // A full cache of users seen before, then a storm of other users
        // (fewer than the room): the old ones go first, so by the storm's
        // third round 93% of the logins hit (at random, 71%).
        let mut cache = full_cache();
        let new = MAX_TOKENS..MAX_TOKENS + MAX_TOKENS * 9 / 10;
        let mut misses = 0;
        for round in 0..3 {
            for n in new.clone() {
                misses += usize::from(!login(&mut cache, n) && round == 2);
            }
        }
        assert!(misses * 10 < new.len(), "{misses} misses of {} logins in the third round", new.len());
    }

    #[test]
    fn owners_whose_names_run_together_stay_apart() {
        let mut cache = TokenCache::default();
        cache.validate(1);
        let ab_c = ("ab".to_owned(), "c".to_owned());
        let a_bc = ("a".to_owned(), "bc".to_owned());
        let nul = ("a\0b".to_owned(), "c".to_owned());
        cache.insert(&ab_c, &[token(1)]);
        assert!(cache.tokens_of(&a_bc).is_none());
        assert!(cache.tokens_of(&("a".to_owned(), "\0bc".to_owned())).is_none());
        cache.insert(&a_bc, &[token(2)]);
        cache.insert(&nul, &[token(3)]);
        assert_eq!(cache.tokens_of(&ab_c).unwrap()[0].id, 1);
        assert_eq!(cache.tokens_of(&a_bc).unwrap()[0].id, 2);
        assert_eq!(cache.tokens_of(&nul).unwrap()[0].id, 3);
    }

    /// A token with every field away from its default.
    fn full_token(pin: StoredPin, owner: Option<Owner>) -> Token {
        let at = |s: i64| Some(Timestamp::from_second(s).unwrap());
        Token {
            id: 77,
            serial: "TOTP-ünï-1".into(),
            token_type: TokenType::Totp,
            secret: (0..=255).collect(),
            otplen: 8,
            hash: HashAlgorithm::Sha512,
            timestep: 60,
            time_window: 300,
            time_shift: -42.5,
            count: 56_789_012,
            count_window: 11,
            sync_window: 1234,
            maxfail: 7,
            failcount: 3,
            failcounter_exceeded: at(1_700_000_001),
            active: false,
            revoked: true,
            description: "laptop, 2nd \u{1F511}".into(),
            pin,
            owner,
            realms: vec!["corp".into(), "".into(), "vpn".into()],
            validity_start: at(-86_400),
            validity_end: at(4_102_444_800),
            count_auth: 1 << 40,
            count_auth_success: 99,
            created: Timestamp::from_second(1_600_000_000).unwrap(),
            assigned: at(1_650_000_000),
        }
    }

    #[test]
    fn a_packed_token_unpacks_to_every_field_it_held() {
        let owner = Owner { login: "Ann Lee".into(), realm: "corp".into(), resolver: "ldap-1".into() };
        for token in [
            full_token(
                StoredPin::Hash("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
                Some(owner.clone()),
            ),
            full_token(StoredPin::Encrypted(vec![9; 45]), None),
            full_token(StoredPin::Empty, Some(owner)),
            sample_token(TokenType::Hotp, ""),
        ] {
            let back = Packed::pack(&token).unwrap().unpack().unwrap();
            assert_eq!(format!("{back:?}"), format!("{token:?}"));
        }
    }

    #[test]
    fn a_cached_time_keeps_whole_seconds_as_sqlite_does() {
        let mut token = sample_token(TokenType::Hotp, "T1");
        token.failcounter_exceeded = Some(Timestamp::new(1_700_000_000, 999_999_999).unwrap());
        token.created = Timestamp::new(1_600_000_000, 5).unwrap();
        let back = Packed::pack(&token).unwrap().unpack().unwrap();
        assert_eq!(back.failcounter_exceeded, Some(Timestamp::from_second(1_700_000_000).unwrap()));
        assert_eq!(back.created, Timestamp::from_second(1_600_000_000).unwrap());
    }

    #[test]
    fn damaged_packed_bytes_are_a_miss_never_a_token() {
        let token = full_token(StoredPin::Hash("h".into()), None);
        let packed = Packed::pack(&token).unwrap();
        for cut in 0..packed.bytes.len() {
            let mut short = Packed::pack(&token).unwrap();
            short.bytes = packed.bytes[..cut].into();
            assert!(short.unpack().is_none(), "cut at {cut}");
        }
        let mut longer = Packed::pack(&token).unwrap();
        longer.bytes = [&packed.bytes[..], &[0]].concat().into();
        assert!(longer.unpack().is_none());
        let mut bad_time = Packed::pack(&token).unwrap();
        bad_time.created = NO_TIME;
        assert!(bad_time.unpack().is_none(), "a token always has a creation time");
        // A damaged cached token is dropped with the rest, not served.
        let mut cache = TokenCache::default();
        cache.validate(1);
        cache.insert(&owner(1), std::slice::from_ref(&token));
        cache.tokens.get_mut(&77).unwrap().bytes = packed.bytes[..3].into();
        assert!(cache.tokens_of(&owner(1)).is_none());
        // Its counters are fixed fields, but a damaged time drops it too.
        cache.insert(&owner(1), std::slice::from_ref(&token));
        cache.tokens.get_mut(&77).unwrap().failcounter_exceeded = NO_TIME + 1;
        cache.update(77, |c| c.count = 1);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn owners_without_tokens_are_bounded_too() {
        let mut cache = TokenCache::default();
        cache.validate(1);
        for n in 0..3 * MAX_TOKENS {
            cache.insert(&owner(n), &[]);
        }
        assert!(cache.owners.len() <= MAX_TOKENS);
    }

    #[test]
    fn an_owner_without_tokens_is_cached_as_such() {
        let mut cache = TokenCache::default();
        cache.validate(1);
        cache.insert(&owner(1), &[]);
        assert_eq!(cache.tokens_of(&owner(1)).map(|t| t.len()), Some(0));
    }
}

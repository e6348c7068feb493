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

use std::collections::HashMap;

use crate::token::Token;

/// Tokens (and owners) held at most. A cached token costs about 1.3 KiB
/// with its strings and the maps' share (measured with 8 192 TOTP tokens):
/// at most about 5.5 MiB, well within the daemon's 64 MiB target.
const MAX_TOKENS: usize = 4096;

#[derive(Default)]
pub(super) struct TokenCache {
    /// The writer connection's `PRAGMA data_version` the entries hold for.
    version: Option<i64>,
    /// Each owner's token ids, in id order (possibly none).
    owners: HashMap<(String, String), Vec<i64>>,
    tokens: HashMap<i64, Token>,
}

/// Never the tokens themselves: they hold sealed secrets and PIN hashes.
impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} owners, {} tokens cached", self.owners.len(), self.tokens.len())
    }
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
        self.tokens.clear();
    }

    /// A copy of the owner's tokens, when cached and validated.
    pub fn tokens_of(&self, owner: &(String, String)) -> Option<Vec<Token>> {
        self.version?;
        let ids = self.owners.get(owner)?;
        let mut tokens = Vec::with_capacity(ids.len());
        for id in ids {
            tokens.push(self.tokens.get(id)?.clone());
        }
        Some(tokens)
    }

    /// Keeps the owner's tokens as just read (in id order). A full cache
    /// starts afresh: simpler than tracking use on every hit, and it lets
    /// the cache follow a workload that moves on to other users.
    pub fn insert(&mut self, owner: &(String, String), tokens: &[Token]) {
        if self.version.is_none() || tokens.len() > MAX_TOKENS {
            return;
        }
        // Owners without tokens count too (users of a large userstore).
        if self.tokens.len() + tokens.len() > MAX_TOKENS || self.owners.len() >= MAX_TOKENS {
            self.drop_entries();
        }
        let ids = tokens.iter().map(|t| t.id).collect();
        if let Some(old) = self.owners.insert(owner.clone(), ids) {
            for id in old {
                self.tokens.remove(&id);
            }
        }
        for token in tokens {
            self.tokens.insert(token.id, token.clone());
        }
    }

    /// Makes a change of token `id`, just written to SQLite, to the
    /// cached copy too.
    pub fn update(&mut self, id: i64, apply: impl FnOnce(&mut Token)) {
        if let Some(token) = self.tokens.get_mut(&id) {
            apply(token);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::sample_token;
    use crate::token::TokenType;

    fn owner(n: usize) -> (String, String) {
        (format!("user{n}"), "realm".to_owned())
    }

    fn token(id: i64) -> Token {
        let mut t = sample_token(TokenType::Hotp, &format!("T{id}"));
        t.id = id;
        t
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
        cache.update(2, |t| t.count = 42);
        let tokens = cache.tokens_of(&owner(1)).unwrap();
        assert_eq!((tokens[0].count, tokens[1].count), (token(1).count, 42));
        cache.update(99, |_| panic!("not cached: nothing to apply"));
    }

    #[test]
    fn a_full_cache_starts_afresh_and_stays_bounded() {
        let mut cache = TokenCache::default();
        cache.validate(1);
        for n in 0..MAX_TOKENS {
            cache.insert(&owner(n), &[token(n as i64)]);
        }
        assert_eq!(cache.len(), MAX_TOKENS);
        assert!(cache.tokens_of(&owner(0)).is_some());
        cache.insert(&owner(MAX_TOKENS), &[token(MAX_TOKENS as i64)]);
        assert_eq!(cache.len(), 1, "full: emptied, then the newest kept");
        assert!(cache.tokens_of(&owner(0)).is_none());
        // An owner read again replaces its old entry, without leaving its
        // old tokens behind.
        cache.insert(&owner(MAX_TOKENS), &[token(900_000), token(900_001)]);
        assert_eq!(cache.tokens_of(&owner(MAX_TOKENS)).unwrap().len(), 2);
        assert_eq!(cache.len(), 2);
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

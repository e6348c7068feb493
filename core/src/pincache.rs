//! Remembered PIN verdicts. Verifying an Argon2id PIN hash costs tens of
//! milliseconds by design; without this, a flood of wrong OTPs typed after
//! a PIN would cost one verification each, and the validation flow needs
//! the PIN's verdict for every attempt (it decides between `wrong otp pin`
//! and `wrong otp value` and which failcounters rise). So the first check
//! of a (hash, PIN) pair runs Argon2 and later ones compare a keyed MAC of
//! the PIN, under a key that lives only in this process's memory, against
//! the remembered verdict. A changed PIN has a new hash (a new salt), so
//! its old verdicts are never consulted again. The database keeps only the
//! Argon2 hash: a stolen copy gains nothing from this.

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::crypto;

/// Verdicts kept; past this the table is emptied (cheap, rare, and only
/// costs a few Argon2 runs again).
const MAX_HASHES: usize = 16_384;
/// Wrong PINs remembered per hash.
const MAX_WRONG: usize = 4;

type Tag = [u8; 32];

#[derive(Default)]
struct Verdicts {
    right: Option<Tag>,
    wrong: Vec<Tag>,
}

pub struct PinCache {
    mac_key: [u8; 32],
    table: Mutex<HashMap<Tag, Verdicts>>,
}

impl std::fmt::Debug for PinCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinCache").finish_non_exhaustive()
    }
}

impl PinCache {
    pub fn new() -> Result<Self, crypto::CryptoError> {
        let mut mac_key = [0u8; 32];
        crypto::fill_random(&mut mac_key)?;
        Ok(PinCache { mac_key, table: Mutex::new(HashMap::new()) })
    }

    /// Whether `pin` matches the Argon2id hash `phc`; the same answer as
    /// `crypto::verify_pin_hash`, remembered.
    pub fn verify(&self, pin: &str, phc: &str) -> bool {
        let id: Tag = Sha256::digest(phc.as_bytes()).into();
        let tag = self.tag(pin);
        if let Some(known) = self.lookup(&id, &tag) {
            return known;
        }
        let ok = crypto::verify_pin_hash(pin, phc);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= MAX_HASHES && !table.contains_key(&id) {
            table.clear();
        }
        let verdicts = table.entry(id).or_default();
        if ok {
            verdicts.right = Some(tag);
        } else if !verdicts.wrong.iter().any(|w| crypto::ct_eq(w, &tag)) {
            if verdicts.wrong.len() >= MAX_WRONG {
                verdicts.wrong.remove(0);
            }
            verdicts.wrong.push(tag);
        }
        ok
    }

    fn lookup(&self, id: &Tag, tag: &Tag) -> Option<bool> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let verdicts = table.get(id)?;
        if verdicts.right.as_ref().is_some_and(|r| crypto::ct_eq(r, tag)) {
            return Some(true);
        }
        verdicts.wrong.iter().any(|w| crypto::ct_eq(w, tag)).then_some(false)
    }

    fn tag(&self, pin: &str) -> Tag {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.mac_key).expect("HMAC takes any key length");
        mac.update(pin.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PinHashParams;

    #[test]
    fn remembers_verdicts_per_hash_and_pin() {
        let cache = PinCache::new().unwrap();
        let h1 = crypto::hash_pin("1234", &PinHashParams::default()).unwrap();
        let h2 = crypto::hash_pin("1234", &PinHashParams::default()).unwrap();
        for _ in 0..2 {
            assert!(cache.verify("1234", &h1));
            assert!(!cache.verify("0000", &h1));
            assert!(!cache.verify("", &h1));
        }
        // Another hash of the same PIN (another salt) has verdicts of its own.
        assert!(cache.verify("1234", &h2));
        assert!(!cache.verify("1234", "garbage"));
        let table = cache.table.lock().unwrap();
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn a_remembered_verdict_is_answered_without_argon2() {
        let cache = PinCache::new().unwrap();
        let h = crypto::hash_pin("1234", &PinHashParams::default()).unwrap();
        let id: Tag = Sha256::digest(h.as_bytes()).into();
        assert_eq!(cache.lookup(&id, &cache.tag("1234")), None, "nothing known before the first check");
        assert!(cache.verify("1234", &h));
        assert!(!cache.verify("9999", &h));
        assert_eq!(cache.lookup(&id, &cache.tag("1234")), Some(true));
        assert_eq!(cache.lookup(&id, &cache.tag("9999")), Some(false));
        assert_eq!(cache.lookup(&id, &cache.tag("5555")), None, "an untried PIN runs Argon2");
    }

    #[test]
    fn wrong_pins_are_bounded_per_hash() {
        let cache = PinCache::new().unwrap();
        let h = crypto::hash_pin("1", &PinHashParams { memory_kib: 7168, iterations: 5, parallelism: 1 })
            .unwrap();
        for pin in ["a", "b", "c", "d", "e", "f"] {
            assert!(!cache.verify(pin, &h));
        }
        let table = cache.table.lock().unwrap();
        let v = table.values().next().unwrap();
        assert_eq!(v.wrong.len(), MAX_WRONG);
        assert!(v.right.is_none());
    }
}

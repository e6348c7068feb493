//! Secrets at rest and in comparison: the AES-256-GCM key file that
//! encrypts OTP keys and token passwords, Argon2id PIN hashes, constant-time
//! comparison and random material. Nothing here logs or prints a secret.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::config::PinHashParams;

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("cannot read key file {path}: {source}")]
    KeyRead { path: PathBuf, source: std::io::Error },
    #[error("cannot create key file {path}: {source}")]
    KeyCreate { path: PathBuf, source: std::io::Error },
    #[error("key file {path} is malformed: it must hold 64 hex digits (a 256-bit key)")]
    KeyMalformed { path: PathBuf },
    #[error(
        "key file {path} has mode {mode:04o}, which lets other users read or change it; run `chmod 600 {path}` \
         (640 is allowed, for a group of otpd's own)"
    )]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error(
        "a stored secret cannot be decrypted: the key file does not match this database or the data is corrupt"
    )]
    Decrypt,
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("cannot hash the PIN: {0}")]
    PinHash(String),
}

/// The secrets-at-rest key. Loaded from, or created as, a 0600 key file.
pub struct SecretKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let key = Key::<Aes256Gcm>::from(bytes);
        SecretKey { cipher: Aes256Gcm::new(&key) }
    }

    /// Reads the key file; `Ok(None)` when it does not exist. A key file
    /// that other users may read or write (any of the mode bits 0o007) is
    /// refused: every front (daemon, CLI, PAM) loads the key here. Group
    /// bits are allowed, for a group of otpd's own (PAM may run as one).
    pub fn load(path: &Path) -> Result<Option<Self>, CryptoError> {
        let read_err = |source| CryptoError::KeyRead { path: path.to_owned(), source };
        let mut file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(read_err(source)),
        };
        // The mode of the file opened, not of whatever the path names later.
        let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
        if mode & 0o007 != 0 {
            return Err(CryptoError::KeyExposed { path: path.to_owned(), mode });
        }
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text).map_err(read_err)?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        let hex = text.trim().as_bytes();
        if hex.len() != 64 || data_encoding::HEXLOWER_PERMISSIVE.decode_mut(hex, &mut bytes[..]).is_err() {
            return Err(CryptoError::KeyMalformed { path: path.to_owned() });
        }
        Ok(Some(Self::from_bytes(*bytes)))
    }

    /// Creates a new random key file with mode 0600. Several processes may
    /// race here: the key is written to a private temporary file and linked
    /// into place, so nobody ever reads a half-written key, and the loser of
    /// the race uses the winner's key.
    pub fn create(path: &Path) -> Result<Self, CryptoError> {
        let create_err = |source| CryptoError::KeyCreate { path: path.to_owned(), source };
        let mut bytes = Zeroizing::new([0u8; 32]);
        fill_random(&mut bytes[..])?;
        let hex = Zeroizing::new(data_encoding::HEXLOWER.encode(&bytes[..]));
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(create_err)?;
        let written = file
            .write_all(hex.as_bytes())
            .and_then(|_| file.write_all(b"\n"))
            .and_then(|_| file.sync_all())
            .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(create_err(e));
        }
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(Self::from_bytes(*bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::load(path)?.ok_or_else(|| create_err(e))
            }
            Err(e) => Err(create_err(e)),
        }
    }

    /// Encrypts `plain`, binding it to `context` (serial and field name) so
    /// that a ciphertext moved to another token or field does not decrypt.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let ct = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad: context.as_bytes() })
            .map_err(|_| CryptoError::Decrypt)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| CryptoError::Decrypt)?;
        self.cipher
            .decrypt(&nonce, Payload { msg: ct, aad: context.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Decrypt)
    }
}

pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|e| CryptoError::Random(e.to_string()))
}

/// A uniformly random string of `len` characters from `alphabet`
/// (rejection sampling, so no character is favoured).
pub fn random_string(alphabet: &[u8], len: usize) -> Result<String, CryptoError> {
    let n = alphabet.len();
    assert!((1..=256).contains(&n), "alphabet must have 1 to 256 characters");
    let limit = 256 - (256 % n);
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        fill_random(&mut buf)?;
        for &b in &buf {
            if (b as usize) < limit && out.len() < len {
                out.push(alphabet[b as usize % n] as char);
            }
        }
    }
    Ok(out)
}

/// Constant-time equality of two secrets (OTP values, passwords). The
/// lengths are not secret: OTP lengths are public token parameters.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// An Argon2id hasher with `params` (the configured `[pin_hash]`, by
/// default OWASP's 19 MiB and 2 passes: a few tens of milliseconds).
fn pin_hasher(params: &PinHashParams) -> Result<Argon2<'static>, CryptoError> {
    let params = argon2::Params::new(params.memory_kib, params.iterations, params.parallelism, None)
        .map_err(|e| CryptoError::PinHash(e.to_string()))?;
    Ok(Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params))
}

/// Argon2id runs at once in this process, at most. Each takes its memory
/// cost (19 MiB by default) for its duration: without a bound, a flood of
/// wrong PINs or unknown users on the daemon's 64 core threads would take
/// over a GiB. The runs are CPU-bound, so more than one a core gains nothing.
struct Argon2Slots {
    busy: Mutex<usize>,
    freed: Condvar,
}

static ARGON2_SLOTS: Argon2Slots = Argon2Slots { busy: Mutex::new(0), freed: Condvar::new() };

fn argon2_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

/// Runs `f` (an Argon2id computation) when a slot is free.
fn with_argon2_slot<T>(f: impl FnOnce() -> T) -> T {
    struct Slot;
    impl Drop for Slot {
        fn drop(&mut self) {
            *ARGON2_SLOTS.busy.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
            ARGON2_SLOTS.freed.notify_one();
        }
    }
    let mut busy = ARGON2_SLOTS.busy.lock().unwrap_or_else(|p| p.into_inner());
    while *busy >= argon2_slots() {
        busy = ARGON2_SLOTS.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
    }
    *busy += 1;
    drop(busy);
    let _slot = Slot;
    f()
}

/// Hashes a PIN into a PHC string (`$argon2id$...`).
pub fn hash_pin(pin: &str, params: &PinHashParams) -> Result<String, CryptoError> {
    let hasher = pin_hasher(params)?;
    with_argon2_slot(|| hasher.hash_password(pin.as_bytes()).map(|h| h.to_string()))
        .map_err(|e| CryptoError::PinHash(e.to_string()))
}

/// Checks a PIN against its PHC hash, with the parameters the hash names;
/// a malformed hash never matches.
pub fn verify_pin_hash(pin: &str, phc: &str) -> bool {
    let Ok(hash) = argon2::PasswordHash::new(phc) else { return false };
    with_argon2_slot(|| Argon2::default().verify_password(pin.as_bytes(), &hash).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_with_context() {
        let key = SecretKey::from_bytes([7u8; 32]);
        let sealed = key.seal("OATH1:otpkey", b"secret").unwrap();
        assert_eq!(&key.open("OATH1:otpkey", &sealed).unwrap()[..], b"secret");
        assert!(key.open("OATH2:otpkey", &sealed).is_err(), "wrong context must fail");
        let other = SecretKey::from_bytes([8u8; 32]);
        assert!(other.open("OATH1:otpkey", &sealed).is_err(), "wrong key must fail");
        assert!(key.open("OATH1:otpkey", &sealed[..5]).is_err());
    }

    #[test]
    fn key_file_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpd.key");
        assert!(SecretKey::load(&path).unwrap().is_none());
        let key = SecretKey::create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = key.seal("c", b"x").unwrap();
        let again = SecretKey::load(&path).unwrap().unwrap();
        assert_eq!(&again.open("c", &sealed).unwrap()[..], b"x");
        // A second create keeps the first key.
        let raced = SecretKey::create(&path).unwrap();
        assert_eq!(&raced.open("c", &sealed).unwrap()[..], b"x");
    }

    #[test]
    fn malformed_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        fs::write(&path, "nothex").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(SecretKey::load(&path), Err(CryptoError::KeyMalformed { .. })));
    }

    #[test]
    fn key_file_open_to_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpd.key");
        SecretKey::create(&path).unwrap();
        for mode in [0o644, 0o604, 0o602, 0o601, 0o666] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = SecretKey::load(&path).unwrap_err();
            assert!(matches!(err, CryptoError::KeyExposed { mode: m, .. } if m == mode), "{mode:o}: {err}");
            let text = err.to_string();
            let shown = path.display().to_string();
            assert!(text.contains(&format!("mode {mode:04o}")), "{text}");
            assert!(text.contains(&format!("`chmod 600 {shown}`")), "{text}");
            assert!(text.starts_with(&format!("key file {shown} ")), "{text}");
        }
        // Owner and group bits are the operator's choice (PAM may read
        // the key as a member of otpd's group).
        for mode in [0o600, 0o640, 0o660, 0o400] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            assert!(SecretKey::load(&path).unwrap().is_some(), "{mode:o} is accepted");
        }
    }

    #[test]
    fn pin_hash_verifies_only_the_right_pin() {
        let h = hash_pin("1234", &PinHashParams::default()).unwrap();
        assert!(h.contains("m=19456,t=2,p=1"), "{h}");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_pin_hash("1234", &h));
        assert!(!verify_pin_hash("1235", &h));
        assert!(!verify_pin_hash("1234", "garbage"));
    }

    #[test]
    fn pin_hash_keeps_its_own_parameters() {
        let strong = PinHashParams { memory_kib: 47 * 1024, iterations: 1, parallelism: 2 };
        let h = hash_pin("1234", &strong).unwrap();
        assert!(h.contains("m=48128,t=1,p=2"), "{h}");
        assert!(verify_pin_hash("1234", &h), "verified with the hash's parameters");
        assert!(!verify_pin_hash("4321", &h));
    }

    #[test]
    fn argon2_runs_at_once_are_bounded() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        static PEAK: AtomicUsize = AtomicUsize::new(0);
        let threads: Vec<_> = (0..16)
            .map(|_| {
                std::thread::spawn(|| {
                    with_argon2_slot(|| {
                        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                        PEAK.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        RUNNING.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let peak = PEAK.load(Ordering::SeqCst);
        assert!(peak >= 1 && peak <= argon2_slots(), "peak {peak}, slots {}", argon2_slots());
    }

    #[test]
    fn ct_eq_compares_contents_and_length() {
        assert!(ct_eq(b"123456", b"123456"));
        assert!(!ct_eq(b"123456", b"123457"));
        assert!(!ct_eq(b"12345", b"123456"));
    }

    #[test]
    fn random_string_uses_alphabet() {
        let s = random_string(b"ab", 100).unwrap();
        assert_eq!(s.len(), 100);
        assert!(s.chars().all(|c| c == 'a' || c == 'b'));
    }
}

//! Verification of crypt(3) password hashes, as found in `/etc/shadow` and passwd-style files.
//!
//! [`verify`] reads the `$id$` prefix of a hash string and hands it to the RustCrypto
//! implementation of that scheme; the crates compare digests in constant time, so this module
//! never compares hash bytes itself. Only schemes that are still acceptable are supported:
//! yescrypt, SHA-512-crypt, SHA-256-crypt and bcrypt. Older ones (MD5, DES, ...) are reported
//! as [`CryptError::UnsupportedScheme`] so the operator learns what to re-hash, instead of
//! users silently failing to log in.
//!
//! Hash strings come from files the operator controls, yet a typo or a hostile edit must not
//! take the server down. The cost parameters are therefore checked before any work is done:
//! SHA-crypt at most 10,000,000 rounds, bcrypt at most cost 16, yescrypt at most 1 GiB of
//! memory (libxcrypt's highest cost setting) and a bounded amount of total work.

use sha_crypt::{PasswordHashRef, PasswordVerifier, ShaCrypt};
use yescrypt::Yescrypt;
use yescrypt::password_hash::Error as HashError;

/// Highest SHA-crypt `rounds=` accepted. glibc allows 999,999,999, which is minutes of CPU per
/// attempt; hardening guides stay well below a million.
const MAX_SHA_ROUNDS: u32 = 10_000_000;

/// Highest bcrypt cost (2^cost iterations). Cost 12 is a fraction of a second and every step
/// doubles it, so 16 is already several seconds per attempt.
const MAX_BCRYPT_COST: u32 = 16;

/// Largest yescrypt memory (128·r·N bytes). libxcrypt's highest cost (11) needs exactly 1 GiB.
const MAX_YESCRYPT_MEMORY: u128 = 1 << 30;

/// Upper bound on yescrypt memory × parallelism × time factor; bounds the extra buffers that
/// large `p` values allocate and the loops that large `t` values run.
const MAX_YESCRYPT_WORK: u128 = 4 << 30;

/// Why a hash string cannot be used to check a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// A recognised but unsupported scheme (MD5, DES, scrypt, ...); holds its prefix.
    #[error(
        "unsupported password hash scheme '{0}': use yescrypt ($y$), SHA-512 ($6$), SHA-256 ($5$) or bcrypt ($2b$)"
    )]
    UnsupportedScheme(String),
    /// The string is not a well-formed hash of its scheme; says what is wrong (never the hash).
    #[error("malformed password hash: {0}")]
    Malformed(String),
    /// The hash asks for more CPU or memory than otpd is willing to spend per login attempt.
    #[error("password hash is too expensive to verify: {0}")]
    TooExpensive(String),
}

/// Verifies `password` against a crypt(3) hash string, dispatching on its prefix:
/// `$y$` yescrypt, `$6$` SHA-512-crypt, `$5$` SHA-256-crypt (with or without `rounds=N$`;
/// without it the standard 5000 rounds apply), `$2b$`/`$2a$`/`$2y$` bcrypt.
///
/// Returns `Ok(true)` only when the password matches.
///
/// * An empty hash (account without password), `*...` and `!...` (locked accounts, including
///   `!` put in front of a real hash by `passwd -l`) give `Ok(false)`: a passwordless or locked
///   account must never authenticate.
/// * A password containing a NUL byte gives `Ok(false)`: crypt(3) hashes C strings, so no stored
///   hash can correspond to it.
/// * Any other `$id$` (`$1$` MD5, `$7$` scrypt, `$gy$`, `$2x$`, ...), traditional DES and BSDi
///   `_` hashes give [`CryptError::UnsupportedScheme`].
/// * A string that does not follow its scheme's format gives [`CryptError::Malformed`], and cost
///   parameters above otpd's limits give [`CryptError::TooExpensive`].
pub fn verify(password: &str, hash: &str) -> Result<bool, CryptError> {
    let Some(scheme) = Scheme::parse(hash)? else {
        return Ok(false);
    };
    if password.contains('\0') {
        return Ok(false);
    }
    scheme.verify(password.as_bytes(), hash)
}

/// Checks that `hash` could be used by [`verify`] without hashing anything, so files can be
/// validated when they are loaded instead of at the first login.
pub(crate) fn check(hash: &str) -> Result<(), CryptError> {
    Scheme::parse(hash).map(|_| ())
}

/// The supported schemes, after the hash string's format and costs have been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Yescrypt,
    Sha512,
    Sha256,
    Bcrypt,
}

impl Scheme {
    /// `Ok(None)` for hashes that mean "no login possible" (empty, `*`, `!`).
    fn parse(hash: &str) -> Result<Option<Self>, CryptError> {
        if hash.is_empty() || hash.starts_with('!') || hash.starts_with('*') {
            return Ok(None);
        }
        let Some(rest) = hash.strip_prefix('$') else {
            return Err(classify_non_mcf(hash));
        };
        let mut parts = rest.split('$');
        let id = parts.next().unwrap_or_default();
        let fields: Vec<&str> = parts.collect();
        let scheme = match id {
            "y" => Self::Yescrypt,
            "6" => Self::Sha512,
            "5" => Self::Sha256,
            "2a" | "2b" | "2y" => Self::Bcrypt,
            "" => {
                return Err(CryptError::Malformed("empty scheme identifier after '$'".into()));
            }
            other if is_plausible_id(other) => {
                return Err(CryptError::UnsupportedScheme(format!("${other}$")));
            }
            _ => {
                return Err(CryptError::Malformed(
                    "the scheme identifier after '$' contains unexpected characters".into(),
                ));
            }
        };
        // The generic `$id$field$...` rules (no empty fields, crypt alphabet) are shared by all
        // four schemes; checking them here lets a file be validated fully at load time.
        if PasswordHashRef::new(hash).is_err() {
            return Err(CryptError::Malformed(format!(
                "{} hash has an empty field or a character outside [./0-9A-Za-z+=,-]",
                scheme.name()
            )));
        }
        match scheme {
            Self::Yescrypt => check_yescrypt(&fields)?,
            Self::Sha512 => check_sha(scheme, &fields, 86)?,
            Self::Sha256 => check_sha(scheme, &fields, 43)?,
            Self::Bcrypt => check_bcrypt(&fields)?,
        }
        Ok(Some(scheme))
    }

    fn name(self) -> &'static str {
        match self {
            Self::Yescrypt => "yescrypt ($y$)",
            Self::Sha512 => "SHA-512-crypt ($6$)",
            Self::Sha256 => "SHA-256-crypt ($5$)",
            Self::Bcrypt => "bcrypt ($2b$)",
        }
    }

    fn verify(self, password: &[u8], hash: &str) -> Result<bool, CryptError> {
        let outcome = match self {
            Self::Yescrypt => Yescrypt::default().verify_password(password, hash),
            // The algorithm is taken from the hash's own `$5$`/`$6$` id; the hasher's default
            // only matters when creating hashes.
            Self::Sha512 | Self::Sha256 => ShaCrypt::default().verify_password(password, hash),
            Self::Bcrypt => {
                return bcrypt::verify(password, hash)
                    .map_err(|e| CryptError::Malformed(format!("{}: {e}", self.name())));
            }
        };
        match outcome {
            Ok(()) => Ok(true),
            Err(HashError::PasswordInvalid) => Ok(false),
            Err(e) => Err(CryptError::Malformed(format!("{}: {e}", self.name()))),
        }
    }
}

/// Names the scheme of a hash that lacks the `$id$` prefix, for a helpful error.
fn classify_non_mcf(hash: &str) -> CryptError {
    let crypt_alphabet = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
    if hash.len() == 13 && hash.chars().all(crypt_alphabet) {
        CryptError::UnsupportedScheme("DES".into())
    } else if hash.len() == 20 && hash.starts_with('_') && hash[1..].chars().all(crypt_alphabet) {
        CryptError::UnsupportedScheme("_ (BSDi DES)".into())
    } else {
        CryptError::Malformed("not a crypt(3) hash: expected '$id$...'".into())
    }
}

/// True for identifiers other crypt(3) implementations use (`1`, `md5`, `sha1`, `gy`, ...).
fn is_plausible_id(id: &str) -> bool {
    id.len() <= 16 && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `$5$`/`$6$`: `[rounds=N$]salt$digest`.
fn check_sha(scheme: Scheme, fields: &[&str], digest_len: usize) -> Result<(), CryptError> {
    let name = scheme.name();
    let (rounds, digest) = match fields {
        [_salt, digest] => (None, digest),
        [rounds, _salt, digest] => (Some(rounds), digest),
        _ => {
            return Err(CryptError::Malformed(format!(
                "{name} hash must look like $id$[rounds=N$]salt$digest"
            )));
        }
    };
    if let Some(rounds) = rounds {
        // sha-crypt would treat an unparsable `rounds=` field as the salt and quietly answer
        // "wrong password"; reject it here so the operator sees the real problem.
        let value = rounds
            .strip_prefix("rounds=")
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| CryptError::Malformed(format!("{name} hash has an invalid 'rounds=' field")))?;
        if !(sha_crypt::Params::ROUNDS_MIN..=sha_crypt::Params::ROUNDS_MAX).contains(&value) {
            return Err(CryptError::Malformed(format!("{name} rounds={value} is outside 1000..=999999999")));
        }
        if value > MAX_SHA_ROUNDS {
            return Err(CryptError::TooExpensive(format!(
                "{name} rounds={value} exceeds the limit of {MAX_SHA_ROUNDS}"
            )));
        }
    }
    if digest.len() != digest_len {
        return Err(CryptError::Malformed(format!(
            "{name} digest has {} characters, expected {digest_len} (truncated hash?)",
            digest.len()
        )));
    }
    Ok(())
}

/// `$2b$`: `NN$` cost followed by 22 salt and 31 digest characters.
fn check_bcrypt(fields: &[&str]) -> Result<(), CryptError> {
    let name = Scheme::Bcrypt.name();
    let [cost, salt_digest] = fields else {
        return Err(CryptError::Malformed(format!(
            "{name} hash must look like $2b$NN$ followed by 53 characters"
        )));
    };
    let cost = Some(cost)
        .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u32>().ok())
        .filter(|c| (4..=31).contains(c))
        .ok_or_else(|| CryptError::Malformed(format!("{name} cost must be two digits from 04 to 31")))?;
    if cost > MAX_BCRYPT_COST {
        return Err(CryptError::TooExpensive(format!(
            "{name} cost {cost} exceeds the limit of {MAX_BCRYPT_COST}"
        )));
    }
    if salt_digest.len() != 53 {
        return Err(CryptError::Malformed(format!(
            "{name} salt and digest have {} characters, expected 53 (truncated hash?)",
            salt_digest.len()
        )));
    }
    Ok(())
}

/// `$y$`: `params$salt$digest`; the params decide how much memory and time one check takes.
fn check_yescrypt(fields: &[&str]) -> Result<(), CryptError> {
    let name = Scheme::Yescrypt.name();
    let [params, _salt, digest] = fields else {
        return Err(CryptError::Malformed(format!("{name} hash must look like $y$params$salt$digest")));
    };
    // The crate's parser knows which parameter combinations it supports; ours only exists
    // because the crate does not expose `t`, which we need for the cost bound.
    if params.parse::<yescrypt::Params>().is_err() {
        return Err(CryptError::Malformed(format!(
            "{name} parameters '{params}' are invalid or unsupported"
        )));
    }
    let cost = YescryptCost::decode(params.as_bytes())
        .ok_or_else(|| CryptError::Malformed(format!("{name} parameters '{params}' are invalid")))?;
    let memory = (128 * u128::from(cost.r)) << cost.n_log2;
    if memory > MAX_YESCRYPT_MEMORY {
        return Err(CryptError::TooExpensive(format!(
            "{name} parameters '{params}' need {} MiB of memory, the limit is {} MiB",
            memory >> 20,
            MAX_YESCRYPT_MEMORY >> 20
        )));
    }
    if memory * u128::from(cost.p) * (u128::from(cost.t) + 1) > MAX_YESCRYPT_WORK {
        return Err(CryptError::TooExpensive(format!(
            "{name} parameters '{params}' (p={}, t={}) exceed the work limit",
            cost.p, cost.t
        )));
    }
    if digest.len() != 43 {
        return Err(CryptError::Malformed(format!(
            "{name} digest has {} characters, expected 43 (truncated hash?)",
            digest.len()
        )));
    }
    Ok(())
}

/// The cost-relevant yescrypt parameters: N = 2^`n_log2`, block size `r`, parallelism `p` and
/// time factor `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct YescryptCost {
    n_log2: u32,
    r: u64,
    p: u64,
    t: u64,
}

impl YescryptCost {
    /// Decodes the params field: flavor, log2(N), r, then an optional bit set saying which of
    /// p, t, g and NROM follow. Each number uses yescrypt's variable-length encoding.
    fn decode(field: &[u8]) -> Option<Self> {
        let mut pos = 0;
        let _flavor = decode_number(field, &mut pos, 0)?;
        let n_log2 = u32::try_from(decode_number(field, &mut pos, 1)?).ok().filter(|n| *n < 64)?;
        let r = decode_number(field, &mut pos, 1)?;
        let (mut p, mut t) = (1, 0);
        if pos < field.len() {
            let present = decode_number(field, &mut pos, 1)?;
            // Bits 4 (g) and 8 (NROM) are unsupported by the yescrypt crate; higher bits are
            // undefined. Refusing them keeps us from accepting strings libxcrypt would reject.
            if present & !3 != 0 {
                return None;
            }
            if present & 1 != 0 {
                p = decode_number(field, &mut pos, 2)?;
            }
            if present & 2 != 0 {
                t = decode_number(field, &mut pos, 1)?;
            }
        }
        (pos == field.len()).then_some(Self { n_log2, r, p, t })
    }
}

/// One variable-length number of a yescrypt params field.
///
/// The first symbol's value selects how many symbols follow: 0..=47 none, 48..=55 one,
/// 56..=59 two, 60..=61 three, 62 four, 63 five. Each length class continues the numbering
/// where the previous one ended, and `min` is added to the result.
fn decode_number(field: &[u8], pos: &mut usize, min: u64) -> Option<u64> {
    let first = symbol_value(*field.get(*pos)?)?;
    *pos += 1;
    let mut value = min;
    let (mut low, mut high, mut extra) = (0u64, 47u64, 0u32);
    while first > high {
        value += (high + 1 - low) << (6 * extra);
        low = high + 1;
        high = low + (62 - high) / 2;
        extra += 1;
    }
    value += (first - low) << (6 * extra);
    for shift in (0..extra).rev() {
        let next = symbol_value(*field.get(*pos)?)?;
        *pos += 1;
        value += next << (6 * shift);
    }
    Some(value)
}

/// Value of a character in the crypt base-64 alphabet `./0-9A-Za-z`.
fn symbol_value(c: u8) -> Option<u64> {
    let v = match c {
        b'.' => 0,
        b'/' => 1,
        b'0'..=b'9' => c - b'0' + 2,
        b'A'..=b'Z' => c - b'A' + 12,
        b'a'..=b'z' => c - b'a' + 38,
        _ => return None,
    };
    Some(u64::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with `mkpasswd` (whois 5.x, libxcrypt); all hash the password "secret".
    const YESCRYPT: &str = "$y$j9T$kSVkznd05aGSerlqiGYu8/$1PkvcVoS3Dy5u5gudvyWGxau7W.5hfPnFVhBJJQK0uD";
    const YESCRYPT_COST1: &str = "$y$j75$t3og6tZzys/1O4li2NAx./$nZ1YSis6XgtfVc8p7/dGtames54QaVPBn.tWW16Q2g1";
    const SHA512: &str = "$6$dqmH2xnhIB5hAp7y$RquKW6sNnX5bRu8pmYEXwID1a.YsbXZtWC7F/gYZO1rmUaQMIOh1T7VBIVs7CQTdamM1dJHgsEuAGMXK1E6lc0";
    const SHA512_R1000: &str = "$6$rounds=1000$Jgd22BPjsF5011Z9$QUAqFtkkPGC3xP8e55BcwGf1GIt9OjwM8AVhShZhraKiqAJ7Qf7iPM33yieJ7mSDqJ0B8lmolfswyEPsX0r3C.";
    const SHA256: &str = "$5$FNJsjsPouhMgKhPt$2ilo8JZqcPWepJYgpOZYXBJLw9TZB2mcKBmVxnUVcn7";
    const SHA256_R10000: &str =
        "$5$rounds=10000$18Cw7NCQoO4I/D1/$izbAOy/PDc2moVNzS9DAWpajJWl1W6ifSZK1w4jk7E7";
    const BCRYPT: &str = "$2b$05$JjAwGvqf3Pwsk7QEQv4giOEuT2IIiZ86c.zvqTpj6yeedgQ8NgiNO";
    const BCRYPT_2A: &str = "$2a$05$HszqC5Hr6Gon.7ABjfRRBe6xFmeQ0LL3rDwcCjcjGj6Q/78eBO23e";
    const MD5: &str = "$1$QZlhqW23$5Jy7lS5LbJkEju13twJCE.";

    fn assert_scheme(hash: &str) {
        assert_eq!(verify("secret", hash), Ok(true), "right password for {hash}");
        assert_eq!(verify("Secret", hash), Ok(false), "wrong password for {hash}");
        assert_eq!(verify("", hash), Ok(false), "empty password for {hash}");
    }

    #[test]
    fn yescrypt_default_cost() {
        assert_scheme(YESCRYPT);
    }

    #[test]
    fn yescrypt_low_cost() {
        assert_scheme(YESCRYPT_COST1);
    }

    #[test]
    fn sha512_default_and_explicit_rounds() {
        assert_scheme(SHA512);
        assert_scheme(SHA512_R1000);
        // An explicit `rounds=5000` is the same computation as the implicit default.
        let explicit = SHA512.replacen("$6$", "$6$rounds=5000$", 1);
        assert_scheme(&explicit);
    }

    #[test]
    fn sha512_non_ascii_password() {
        // mkpasswd -m sha-512 'pässwörd'
        let hash = "$6$t.OddyWGk8qwAEK2$i/zooM9S1v50Vfgj/BHY8YC0V6o71AwSL5foLTuZF7H3Dghc6ziT9Cy3cGAFAlhvwAlhWnBTUIjfCtiixd5ZN0";
        assert_eq!(verify("pässwörd", hash), Ok(true));
        assert_eq!(verify("passwort", hash), Ok(false));
    }

    #[test]
    fn sha256_default_and_explicit_rounds() {
        assert_scheme(SHA256);
        assert_scheme(SHA256_R10000);
    }

    #[test]
    fn bcrypt_variants() {
        assert_scheme(BCRYPT);
        assert_scheme(BCRYPT_2A);
        // `$2y$` is the same algorithm as `$2b$` under another name.
        assert_scheme(&BCRYPT.replacen("$2b$", "$2y$", 1));
    }

    #[test]
    fn bcrypt_long_password_is_truncated_like_libxcrypt() {
        // mkpasswd -m bcrypt with 80 times 'x': bcrypt only uses the first 72 bytes.
        let hash = "$2b$05$/Ste8esp/aMEqcoTlX0by.TzRiAwMPs7Ff.XfBM66tGSkIJE1hTZS";
        assert_eq!(verify(&"x".repeat(80), hash), Ok(true));
        assert_eq!(verify(&"x".repeat(72), hash), Ok(true));
        assert_eq!(verify(&"x".repeat(71), hash), Ok(false));
    }

    #[test]
    fn unsupported_schemes() {
        assert_eq!(verify("secret", MD5), Err(CryptError::UnsupportedScheme("$1$".into())));
        let scrypt = "$7$CU..../....k5zu8fmdajFCNSaNgTokL.$KBJiU1QblqfXy5J5o2R9u.aj8wGLQqIbEioQv3T8YXC";
        let gost = "$gy$j9T$ejhPtYJoHb/WQWPQLqFjJ/$VF85qI5fS7Jlrqyy2Xg.pCRrJMEMRkLnhGngAAb67Z8";
        let bcrypt_2x = BCRYPT.replacen("$2b$", "$2x$", 1);
        for hash in [scrypt, gost, bcrypt_2x.as_str(), "$argon2id$v=19$m=65536$x$y"] {
            assert!(matches!(verify("secret", hash), Err(CryptError::UnsupportedScheme(_))), "{hash}");
        }
        assert_eq!(verify("secret", "mvRCcD3ajNmf2"), Err(CryptError::UnsupportedScheme("DES".into())));
        assert!(matches!(verify("secret", "_J9..s101x//eBAD6Mf6"), Err(CryptError::UnsupportedScheme(_))));
        let message = CryptError::UnsupportedScheme("$1$".into()).to_string();
        assert_eq!(
            message,
            "unsupported password hash scheme '$1$': use yescrypt ($y$), SHA-512 ($6$), SHA-256 ($5$) or bcrypt ($2b$)"
        );
    }

    #[test]
    fn locked_and_empty_hashes_never_match() {
        let locked_real = format!("!{SHA512}");
        for hash in ["", "*", "!", "!!", "*LK*", "!*", locked_real.as_str()] {
            assert_eq!(verify("secret", hash), Ok(false), "{hash:?}");
            assert_eq!(verify("", hash), Ok(false), "{hash:?}");
        }
    }

    #[test]
    fn nul_in_password_never_matches() {
        assert_eq!(verify("secret\0", SHA256), Ok(false));
        assert_eq!(verify("secret\0more", BCRYPT), Ok(false));
    }

    #[test]
    fn malformed_hashes_are_errors_not_panics() {
        let cases = [
            "$",
            "$$",
            "$6",
            "$6$",
            "$5$",
            "$y$",
            "$y$j9T$",
            "$y$j9T$salt",
            "$y$$$",
            "$2b$",
            "$2b$99$x",
            "$2b$05$",
            "$2b$5$JjAwGvqf3Pwsk7QEQv4giOEuT2IIiZ86c.zvqTpj6yeedgQ8NgiNO",
            "$6$salt$",
            "$6$salt$short",
            "$6$rounds=$salt$x",
            "$6$rounds=abc$salt$x",
            "$6$rounds=999$salt$x",
            "$6$rounds=99999999999$salt$x",
            "$6$a$b$c$d",
            "$6$sa lt$x",
            "$6$säl$x",
            "$Y$abc$def",
            "$6$\n$x",
            "x",
            "NP",
            "LK",
            "abc$6$",
            "$y$j9T$kSVkznd05aGSerlqiGYu8/$1PkvcVoS3Dy5u5gudvyWGxau7W.5hfPnFVhBJJQK0u",
            "$y$j9T$kSVkznd05aGSerlqiGYu8/$1PkvcVoS3Dy5u5gudvyWGxau7W.5hfPnFVhBJJQK0uDD",
            "$y$~9T$kSVkznd05aGSerlqiGYu8/$1PkvcVoS3Dy5u5gudvyWGxau7W.5hfPnFVhBJJQK0uD",
            "$y$j9T$kSVkznd05aGSerlqiGYu8/$1PkvcVoS3Dy5u5gudvyWGxau7W.5hfPnFVhBJJQK0uD$x",
            "$y$j9TT$kSVkznd05aGSerlqiGYu8/$1PkvcVoS3Dy5u5gudvyWGxau7W.5hfPnFVhBJJQK0uD",
        ];
        for hash in cases {
            let result = verify("secret", hash);
            assert!(matches!(result, Err(CryptError::Malformed(_))), "{hash:?} gave {result:?}");
            assert!(check(hash).is_err(), "{hash:?}");
        }
    }

    #[test]
    fn excessive_costs_are_refused_before_hashing() {
        let sha = SHA512.replacen("$6$", "$6$rounds=999999999$", 1);
        let bcrypt_31 = BCRYPT.replacen("$05$", "$31$", 1);
        // log2(N) = 40 with r = 32: 128 TiB of memory.
        let yescrypt_huge = YESCRYPT.replacen("$j9T$", "$jbT$", 1);
        // N = 4096, r = 32 (16 MiB), but t is about 17 million: the time factor blows up the work.
        let yescrypt_slow = YESCRYPT.replacen("$j9T$", "$j9T/yzzzz$", 1);
        // N = 2^23, r = 1 (1 GiB) with p above 500,000: terabytes of per-thread buffers.
        let yescrypt_wide = YESCRYPT.replacen("$j9T$", "$jK..xzzz$", 1);
        for hash in [&sha, &bcrypt_31, &yescrypt_huge, &yescrypt_slow, &yescrypt_wide] {
            let result = verify("secret", hash);
            assert!(matches!(result, Err(CryptError::TooExpensive(_))), "{hash} gave {result:?}");
        }
        assert_eq!(YescryptCost::decode(b"j9T/yzzzz").map(|c| c.t > 10_000_000), Some(true));
        assert_eq!(
            YescryptCost::decode(b"jK..xzzz").map(|c| (c.n_log2, c.r, c.p > 500_000)),
            Some((23, 1, true))
        );
    }

    #[test]
    fn yescrypt_param_decoding() {
        let decode = |s: &str| YescryptCost::decode(s.as_bytes());
        // What libxcrypt writes for its cost settings 1, 5 (the default) and 11.
        assert_eq!(decode("j75"), Some(YescryptCost { n_log2: 10, r: 8, p: 1, t: 0 }));
        assert_eq!(decode("j9T"), Some(YescryptCost { n_log2: 12, r: 32, p: 1, t: 0 }));
        assert_eq!(decode("jFT"), Some(YescryptCost { n_log2: 18, r: 32, p: 1, t: 0 }));
        assert_eq!(decode("j95.0"), Some(YescryptCost { n_log2: 12, r: 8, p: 4, t: 0 }));
        assert_eq!(decode("j9"), None);
        assert_eq!(decode("j75T"), None);
        assert_eq!(decode("j9T/0."), None);
        assert_eq!(decode("j9T~"), None);
    }

    #[test]
    fn arbitrary_strings_do_not_panic() {
        // A cheap sweep over truncations and single-character edits of every test hash.
        let alphabet = ['$', '.', '/', '0', '9', 'A', 'z', '=', '!', ' ', 'é'];
        for base in [YESCRYPT_COST1, SHA256, BCRYPT, MD5] {
            for end in 0..=base.len() {
                if let Some(prefix) = base.get(..end) {
                    let _ = check(prefix);
                }
            }
            for (i, _) in base.char_indices() {
                for c in alphabet {
                    let mut edited = base.to_string();
                    edited.replace_range(i..i + 1, &c.to_string());
                    let _ = check(&edited);
                }
            }
        }
    }
}

//! The one-time password algorithms: HOTP (RFC 4226) and the TOTP time
//! counter (RFC 6238). Pure functions of key, counter and parameters; the
//! windows, replay rules and drift handling live in `token`.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};

/// The HMAC hash of a token (privacyIDEA's tokeninfo `hashlib`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    #[default]
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "sha1",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    /// The name in any case (`sha1`, `SHA256`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        [HashAlgorithm::Sha1, HashAlgorithm::Sha256, HashAlgorithm::Sha512]
            .into_iter()
            .find(|hash| hash.name().eq_ignore_ascii_case(s))
    }

    /// Key length generated for new tokens: the hash's output size (RFC 4226
    /// recommends 160 bits for SHA1; RFC 6238 uses 32 and 64 bytes).
    pub fn generated_key_len(self) -> usize {
        match self {
            HashAlgorithm::Sha1 => 20,
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha512 => 64,
        }
    }
}

/// One token's key, keyed into its HMAC once: keying hashes the padded key
/// (one block for the inner and one for the outer hash), so a window of
/// counters costs two blocks per value instead of four.
#[derive(Clone)]
pub enum HotpKey {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

impl HotpKey {
    pub fn new(key: &[u8], hash: HashAlgorithm) -> Self {
        // HMAC accepts keys of any length: keying cannot fail.
        const ANY: &str = "HMAC takes any key length";
        match hash {
            HashAlgorithm::Sha1 => HotpKey::Sha1(KeyInit::new_from_slice(key).expect(ANY)),
            HashAlgorithm::Sha256 => HotpKey::Sha256(KeyInit::new_from_slice(key).expect(ANY)),
            HashAlgorithm::Sha512 => HotpKey::Sha512(KeyInit::new_from_slice(key).expect(ANY)),
        }
    }

    /// HOTP value for `counter` (RFC 4226 section 5.3), `digits` long with
    /// leading zeros (at most `Code::MAX_DIGITS`; tokens have 6 or 8).
    pub fn code(&self, counter: u64, digits: u32) -> Code {
        let msg = counter.to_be_bytes();
        let mut digest = [0u8; 64];
        let len = match self {
            HotpKey::Sha1(mac) => finish(mac, &msg, &mut digest),
            HotpKey::Sha256(mac) => finish(mac, &msg, &mut digest),
            HotpKey::Sha512(mac) => finish(mac, &msg, &mut digest),
        };
        let digest = &digest[..len];
        // Dynamic truncation: the low nibble of the last byte picks 4 bytes.
        let offset = (digest[len - 1] & 0x0f) as usize;
        let code = u32::from_be_bytes([
            digest[offset] & 0x7f,
            digest[offset + 1],
            digest[offset + 2],
            digest[offset + 3],
        ]);
        Code::new(code % 10u32.pow(digits.min(9)), digits)
    }
}

/// The keyed MAC's digest of `msg` into `out`; its length.
fn finish<M: Mac + Clone>(mac: &M, msg: &[u8], out: &mut [u8; 64]) -> usize {
    let mut mac = mac.clone();
    mac.update(msg);
    let digest = mac.finalize().into_bytes();
    out[..digest.len()].copy_from_slice(&digest);
    digest.len()
}

/// An HOTP value: its decimal digits, kept without an allocation.
#[derive(Clone, Copy)]
pub struct Code {
    digits: [u8; Code::MAX_DIGITS],
    len: usize,
}

impl Code {
    /// A u32 has 10 decimal digits.
    pub const MAX_DIGITS: usize = 10;

    fn new(mut value: u32, width: u32) -> Code {
        let len = (width as usize).min(Code::MAX_DIGITS);
        let mut digits = [b'0'; Code::MAX_DIGITS];
        for d in digits[..len].iter_mut().rev() {
            *d = b'0' + (value % 10) as u8;
            value /= 10;
        }
        Code { digits, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[..self.len]
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("ASCII digits")
    }
}

/// HOTP value for `counter` (RFC 4226 section 5.3), `digits` long with
/// leading zeros. `digits` is 6 or 8 for OTP tokens. For a window of
/// counters under one key, `HotpKey` keys the MAC once.
pub fn hotp(key: &[u8], counter: u64, digits: u32, hash: HashAlgorithm) -> String {
    HotpKey::new(key, hash).code(counter, digits).as_str().to_owned()
}

/// The TOTP time counter `floor((unix_time + shift) / step)`, never negative.
pub fn time_counter(unix_time: i64, shift: f64, step: u32) -> u64 {
    let t = ((unix_time as f64 + shift) / f64::from(step.max(1))).floor();
    if t.is_finite() && t > 0.0 { t as u64 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA1_KEY: &[u8] = b"12345678901234567890";
    const SHA256_KEY: &[u8] = b"12345678901234567890123456789012";
    const SHA512_KEY: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    #[test]
    fn rfc4226_appendix_d() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
            "520489", "403154", "481090",
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(hotp(SHA1_KEY, counter as u64, 6, HashAlgorithm::Sha1), *want);
        }
    }

    #[test]
    fn hash_names_parse_in_any_case_and_nothing_else() {
        assert_eq!(HashAlgorithm::parse("sha1"), Some(HashAlgorithm::Sha1));
        assert_eq!(HashAlgorithm::parse("SHA256"), Some(HashAlgorithm::Sha256));
        assert_eq!(HashAlgorithm::parse("Sha512"), Some(HashAlgorithm::Sha512));
        for bad in ["", "sha", "md5", "sha1 ", "sha-256"] {
            assert_eq!(HashAlgorithm::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn one_keyed_mac_serves_a_whole_window_unchanged() {
        // The keyed state is cloned per value: computing one value must not
        // change the next (RFC 4226 appendix D, in and out of order).
        let key = HotpKey::new(SHA1_KEY, HashAlgorithm::Sha1);
        assert_eq!(key.code(9, 6).as_str(), "520489");
        assert_eq!(key.code(0, 6).as_str(), "755224");
        assert_eq!(key.code(0, 6).as_str(), "755224");
        assert_eq!(key.code(1, 6).as_str(), "287082");
        // Leading zeros up to the width, and no more digits than a u32 has.
        assert_eq!(Code::new(72768, 6).as_str(), "072768");
        assert_eq!(Code::new(7, 8).as_str(), "00000007");
        assert_eq!(Code::new(u32::MAX, 12).as_str(), "4294967295");
    }

    #[test]
    fn hotp_eight_digits_and_sha256() {
        assert_eq!(hotp(SHA1_KEY, 0, 8, HashAlgorithm::Sha1), "84755224");
        assert_eq!(hotp(SHA1_KEY, 1, 8, HashAlgorithm::Sha1), "94287082");
        assert_eq!(hotp(SHA1_KEY, 2, 8, HashAlgorithm::Sha1), "37359152");
        // semantics.md 8.1 lists 670691/599872/072768 as HMAC-SHA256 values
        // of the 32-byte key; those are its HMAC-SHA1 values (checked with
        // Python's hmac module). The SHA256 values follow, and agree with
        // RFC 6238's SHA256 vector at counter 1 (119246).
        assert_eq!(hotp(SHA256_KEY, 0, 6, HashAlgorithm::Sha1), "670691");
        assert_eq!(hotp(SHA256_KEY, 1, 6, HashAlgorithm::Sha1), "599872");
        assert_eq!(hotp(SHA256_KEY, 2, 6, HashAlgorithm::Sha1), "072768");
        assert_eq!(hotp(SHA256_KEY, 0, 6, HashAlgorithm::Sha256), "920136");
        assert_eq!(hotp(SHA256_KEY, 1, 6, HashAlgorithm::Sha256), "119246");
        assert_eq!(hotp(SHA256_KEY, 2, 6, HashAlgorithm::Sha256), "882438");
    }

    #[test]
    fn rfc6238_appendix_b_all_hashes() {
        let rows: [(i64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, s1, s256, s512) in rows {
            let c = time_counter(t, 0.0, 30);
            assert_eq!(hotp(SHA1_KEY, c, 8, HashAlgorithm::Sha1), s1, "sha1 t={t}");
            assert_eq!(hotp(SHA256_KEY, c, 8, HashAlgorithm::Sha256), s256, "sha256 t={t}");
            assert_eq!(hotp(SHA512_KEY, c, 8, HashAlgorithm::Sha512), s512, "sha512 t={t}");
        }
        assert_eq!(time_counter(1111111109, 0.0, 30), 0x23523EC);
        assert_eq!(time_counter(20000000000, 0.0, 30), 0x27BC86AA);
    }

    #[test]
    fn rfc6238_six_digit_variants() {
        let c = time_counter(59, 0.0, 30);
        assert_eq!(hotp(SHA1_KEY, c, 6, HashAlgorithm::Sha1), "287082");
        assert_eq!(hotp(SHA256_KEY, c, 6, HashAlgorithm::Sha256), "119246");
        assert_eq!(hotp(SHA512_KEY, c, 6, HashAlgorithm::Sha512), "693936");
        let c = time_counter(1234567890, 0.0, 30);
        assert_eq!(hotp(SHA1_KEY, c, 6, HashAlgorithm::Sha1), "005924");
        assert_eq!(hotp(SHA256_KEY, c, 6, HashAlgorithm::Sha256), "819424");
        assert_eq!(hotp(SHA512_KEY, c, 6, HashAlgorithm::Sha512), "441116");
    }

    #[test]
    fn time_counter_handles_shift_and_step() {
        assert_eq!(time_counter(59, 0.0, 60), 0);
        assert_eq!(time_counter(60, 0.0, 60), 1);
        assert_eq!(time_counter(1111111109, -29.0, 30), 37037036);
        assert_eq!(time_counter(10, -100.0, 30), 0);
    }
}

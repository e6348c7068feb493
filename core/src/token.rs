//! The token model: the four token types, the fields privacyIDEA keeps per
//! token, and the per-token rules of the validation flow (usability, PIN
//! check, OTP windows, replay, resync). Everything here is pure: reading and
//! writing tokens is the store's job, combining tokens is `validate`'s.

use jiff::Timestamp;
use serde::Serialize;

use crate::config::PinHashParams;
use crate::crypto::{self, SecretKey};
use crate::otp::{self, HashAlgorithm};
use crate::pincache::PinCache;

pub const DEFAULT_OTPLEN: u32 = 6;
pub const DEFAULT_COUNT_WINDOW: u32 = 10;
pub const DEFAULT_SYNC_WINDOW: u32 = 1000;
pub const DEFAULT_MAXFAIL: u32 = 10;
pub const DEFAULT_TIMESTEP: u32 = 30;
pub const DEFAULT_TIME_WINDOW: u32 = 180;
/// Descriptions longer than this are truncated (privacyIDEA's column size).
pub const MAX_DESCRIPTION: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Hotp,
    Totp,
    Pw,
    Spass,
}

impl TokenType {
    pub const ALL: [TokenType; 4] = [TokenType::Hotp, TokenType::Totp, TokenType::Pw, TokenType::Spass];

    pub fn name(self) -> &'static str {
        match self {
            TokenType::Hotp => "hotp",
            TokenType::Totp => "totp",
            TokenType::Pw => "pw",
            TokenType::Spass => "spass",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// Prefix of generated serials.
    pub fn serial_prefix(self) -> &'static str {
        match self {
            TokenType::Hotp => "OATH",
            TokenType::Totp => "TOTP",
            TokenType::Pw => "PW",
            TokenType::Spass => "PISP",
        }
    }

    /// Types are tried in the order of their name's first letter
    /// (hotp < pw < spass < totp), as privacyIDEA sorts them.
    pub fn weight(self) -> u8 {
        self.name().as_bytes()[0]
    }
}

impl std::fmt::Display for TokenType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The user a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub login: String,
    pub realm: String,
    pub resolver: String,
}

/// How a PIN is stored: nothing (the empty PIN), an Argon2id hash, or
/// (with the `otp_pin_encrypt` policy) encrypted under the secrets key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredPin {
    Empty,
    Hash(String),
    Encrypted(Vec<u8>),
}

/// AES-GCM context of encrypted PINs. Not bound to the serial, because the
/// lost-token process copies a PIN as stored to the replacement token.
pub const PIN_CONTEXT: &str = "pin";

impl StoredPin {
    pub fn hashed(pin: &str, params: &PinHashParams) -> Result<Self, crypto::CryptoError> {
        if pin.is_empty() {
            Ok(StoredPin::Empty)
        } else {
            Ok(StoredPin::Hash(crypto::hash_pin(pin, params)?))
        }
    }

    /// An empty stored PIN matches only an empty given PIN. Hash verdicts
    /// go through `pins`, which remembers them (Argon2id is slow by design).
    pub(crate) fn matches(&self, given: &str, key: &SecretKey, pins: &PinCache) -> bool {
        match self {
            StoredPin::Empty => given.is_empty(),
            StoredPin::Hash(phc) => !given.is_empty() && pins.verify(given, phc),
            StoredPin::Encrypted(sealed) => match key.open(PIN_CONTEXT, sealed) {
                Ok(pin) => crypto::ct_eq(&pin, given.as_bytes()),
                Err(_) => false,
            },
        }
    }
}

/// One token as the store keeps it. `secret` is sealed (AES-GCM): the OTP
/// key of hotp/totp, the password of pw, nothing for spass.
#[derive(Debug, Clone)]
pub struct Token {
    /// Store order (creation order); 0 before the token is stored.
    pub id: i64,
    pub serial: String,
    pub token_type: TokenType,
    pub secret: Vec<u8>,
    /// Digits of hotp/totp; password length of pw; 0 for spass.
    pub otplen: u32,
    pub hash: HashAlgorithm,
    pub timestep: u32,
    pub time_window: u32,
    /// TOTP drift in seconds (privacyIDEA's `timeShift`).
    pub time_shift: f64,
    /// HOTP: the next counter to accept. TOTP: the last used time step.
    pub count: u64,
    pub count_window: u32,
    pub sync_window: u32,
    pub maxfail: u32,
    pub failcount: u32,
    pub failcounter_exceeded: Option<Timestamp>,
    pub active: bool,
    pub revoked: bool,
    pub description: String,
    pub pin: StoredPin,
    pub owner: Option<Owner>,
    /// Lower-cased realm names, sorted.
    pub realms: Vec<String>,
    pub validity_start: Option<Timestamp>,
    pub validity_end: Option<Timestamp>,
    pub count_auth: u64,
    pub count_auth_success: u64,
    pub created: Timestamp,
    pub assigned: Option<Timestamp>,
}

/// The result of a successful OTP check: the counter state to store, and the
/// compare-and-set bound that makes the use one-time across processes (the
/// stored count must still be `<= max_stored` when the update runs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Consume {
    pub new_count: u64,
    pub max_stored: u64,
    pub time_shift: Option<f64>,
}

impl Consume {
    /// pw and spass have no counter: success consumes nothing.
    pub fn nothing(token: &Token) -> Self {
        Consume { new_count: token.count, max_stored: u64::MAX, time_shift: None }
    }
}

impl Token {
    /// The AES-GCM context binding a sealed secret to its token.
    pub fn secret_context(serial: &str) -> String {
        format!("{serial}:secret")
    }

    pub fn open_secret(&self, key: &SecretKey) -> Result<zeroize::Zeroizing<Vec<u8>>, crypto::CryptoError> {
        if self.token_type == TokenType::Spass {
            return Ok(zeroize::Zeroizing::new(Vec::new()));
        }
        key.open(&Self::secret_context(&self.serial), &self.secret)
    }

    /// This token's split of a password into PIN and OTP: spass tokens take
    /// the whole password as PIN; the others split by their OTP length.
    pub fn split_password<'a>(&self, password: &'a str, prepend_pin: bool) -> Option<(&'a str, &'a str)> {
        if self.token_type == TokenType::Spass {
            return Some((password, ""));
        }
        split_pin_otp(password, self.otplen as usize, prepend_pin)
    }

    pub fn is_locked_out(&self) -> bool {
        self.failcount >= self.maxfail
    }

    /// privacyIDEA's `failcounter_clear_timeout` (semantics.md 2.3 step
    /// 4.1): whether the next attempt at `now` clears this token's
    /// failcounter. Only a failcounter exactly at maxfail with its
    /// `failcounter_exceeded` stamp clears, once `now` is later than the
    /// stamp (minute precision, as privacyIDEA stores it) plus the timeout.
    /// A timeout of 0 is off.
    pub fn failcount_clears_at(&self, now: Timestamp, timeout_minutes: u32) -> bool {
        let Some(stamp) = self.failcounter_exceeded else { return false };
        if timeout_minutes == 0 || self.failcount != self.maxfail {
            return false;
        }
        let minute = stamp.as_second().div_euclid(60) * 60;
        now.as_second() > minute + i64::from(timeout_minutes) * 60
    }

    /// Inside the validity period? Both bounds inclusive.
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.validity_start.is_none_or(|s| s <= now) && self.validity_end.is_none_or(|e| e >= now)
    }

    /// privacyIDEA's `check_all`: the first rule that fails says why the
    /// token is skipped entirely (no OTP check, no counter or failcounter change).
    pub fn unusable_reason(&self, now: Timestamp) -> Option<&'static str> {
        if self.revoked {
            return Some("This action is not possible, since the token is locked");
        }
        if !self.active {
            return Some("Token is disabled");
        }
        if self.is_locked_out() {
            return Some("Failcounter exceeded");
        }
        if !self.is_valid_at(now) {
            return Some("Outside validity period");
        }
        None
    }

    /// Checks the OTP part (already split off) against this token. Returns
    /// the counter state to commit on a match.
    pub fn check_otp(&self, secret: &[u8], otp: &str, now: Timestamp) -> Option<Consume> {
        match self.token_type {
            TokenType::Spass => Some(Consume::nothing(self)),
            TokenType::Pw => crypto::ct_eq(secret, otp.as_bytes()).then(|| Consume::nothing(self)),
            TokenType::Hotp => {
                if otp.chars().count() != self.otplen as usize {
                    return None;
                }
                let c = self.find_hotp(secret, otp, self.count, self.count_window)?;
                Some(Consume { new_count: c + 1, max_stored: c, time_shift: None })
            }
            TokenType::Totp => {
                if otp.chars().count() != self.otplen as usize {
                    return None;
                }
                let now_s = now.as_second();
                let t = otp::time_counter(now_s, self.time_shift, self.timestep);
                // privacyIDEA's window: n steps back, n-1 ahead; a window
                // smaller than one step admits nothing.
                let n = u64::from(self.time_window / self.timestep.max(1));
                if n == 0 {
                    return None;
                }
                let first = t.saturating_sub(n);
                let c = self.find_hotp(secret, otp, first, (t + n - first) as u32)?;
                if self.count != 0 && c <= self.count {
                    return None; // replay of the last used step, or an older one
                }
                let shift = (c as f64) * f64::from(self.timestep) - now_s as f64;
                // A never-used token (count 0) accepts any step: bound c-1.
                Some(Consume { new_count: c, max_stored: c.saturating_sub(1), time_shift: Some(shift) })
            }
        }
    }

    /// First counter in `start .. start+len` whose value equals `otp`,
    /// compared in constant time; every candidate is computed, so the time
    /// taken does not tell where (or whether) a match was found.
    fn find_hotp(&self, secret: &[u8], otp: &str, start: u64, len: u32) -> Option<u64> {
        let key = otp::HotpKey::new(secret, self.hash);
        let mut found = None;
        for c in start..start.saturating_add(u64::from(len)) {
            let value = key.code(c, self.otplen);
            if crypto::ct_eq(value.as_bytes(), otp.as_bytes()) && found.is_none() {
                found = Some(c);
            }
        }
        found
    }

    /// Whether `otp` is the value this token accepted last (privacyIDEA's
    /// "previous otp used again" hint on a pin-matching reject).
    pub fn is_previous_otp(&self, secret: &[u8], otp: &str) -> bool {
        let previous = match self.token_type {
            TokenType::Hotp if self.count > 0 => self.count - 1,
            TokenType::Totp if self.count > 0 => self.count,
            _ => return false,
        };
        crypto::ct_eq(otp::hotp(secret, previous, self.otplen, self.hash).as_bytes(), otp.as_bytes())
    }

    /// Resynchronisation with two consecutive OTPs (privacyIDEA 2.5.1/2.5.2).
    pub fn resync(&self, secret: &[u8], otp1: &str, otp2: &str, now: Timestamp) -> Option<Consume> {
        match self.token_type {
            TokenType::Hotp => {
                let c = self.find_hotp(secret, otp1, self.count, self.sync_window)?;
                let next = otp::hotp(secret, c + 1, self.otplen, self.hash);
                crypto::ct_eq(next.as_bytes(), otp2.as_bytes()).then_some(Consume {
                    new_count: c + 2,
                    max_stored: c,
                    time_shift: None,
                })
            }
            TokenType::Totp => {
                let now_s = now.as_second();
                let t = otp::time_counter(now_s, self.time_shift, self.timestep);
                let sync = u64::from(self.sync_window);
                let around = |center: u64, otp: &str| {
                    let first = center.saturating_sub(sync);
                    self.find_hotp(secret, otp, first, (center + sync - first) as u32)
                };
                let res1 = around(t.saturating_sub(1), otp1)?;
                let res2 = around(t, otp2)?;
                if res1 < self.count || res1 + 1 != res2 {
                    return None;
                }
                let shift = (res2 as f64 + 0.5) * f64::from(self.timestep) - now_s as f64;
                Some(Consume { new_count: res2 + 1, max_stored: res2, time_shift: Some(shift) })
            }
            TokenType::Pw | TokenType::Spass => None,
        }
    }
}

/// Splits a password into PIN and OTP for a token whose OTP is `otplen`
/// characters long (Unicode code points, not bytes). `None` when the
/// password is shorter than the OTP: then nothing matches.
pub fn split_pin_otp(password: &str, otplen: usize, prepend_pin: bool) -> Option<(&str, &str)> {
    let chars = password.chars().count();
    if chars < otplen {
        return None;
    }
    let at = if prepend_pin { chars - otplen } else { otplen };
    let byte = password.char_indices().nth(at).map_or(password.len(), |(i, _)| i);
    let (a, b) = password.split_at(byte);
    Some(if prepend_pin { (a, b) } else { (b, a) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::sample_token;

    const RFC_KEY: &[u8] = b"12345678901234567890";

    fn token(token_type: TokenType) -> Token {
        sample_token(token_type, "T1")
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn split_cases_from_the_spec() {
        assert_eq!(split_pin_otp("test287082", 6, true), Some(("test", "287082")));
        assert_eq!(split_pin_otp("287082", 6, true), Some(("", "287082")));
        assert_eq!(split_pin_otp("12345", 6, true), None);
        assert_eq!(split_pin_otp("287082test", 6, false), Some(("test", "287082")));
        assert_eq!(split_pin_otp("12345", 6, false), None);
        assert_eq!(split_pin_otp("secret94287082", 8, true), Some(("secret", "94287082")));
        assert_eq!(split_pin_otp("päß287082", 6, true), Some(("päß", "287082")));
        assert_eq!(split_pin_otp("1234Xk9mQ2rTb7wZcH4n", 16, true), Some(("1234", "Xk9mQ2rTb7wZcH4n")));
        assert_eq!(split_pin_otp("ü12345", 6, true), Some(("", "ü12345")));
        assert_eq!(split_pin_otp("", 0, true), Some(("", "")));
    }

    #[test]
    fn hotp_window_is_count_to_count_plus_nine() {
        let t = token(TokenType::Hotp);
        assert_eq!(t.check_otp(RFC_KEY, "520489", at(0)).unwrap().new_count, 10);
        assert!(t.check_otp(RFC_KEY, "403154", at(0)).is_none(), "counter 10 is outside");
        let c = t.check_otp(RFC_KEY, "969429", at(0)).unwrap();
        assert_eq!((c.new_count, c.max_stored), (4, 3));
        assert!(t.check_otp(RFC_KEY, "96942", at(0)).is_none(), "wrong length never matches");
    }

    #[test]
    fn hotp_previous_otp_and_resync() {
        let mut t = token(TokenType::Hotp);
        t.count = 4;
        assert!(t.is_previous_otp(RFC_KEY, "969429"));
        assert!(!t.is_previous_otp(RFC_KEY, "755224"));
        t.count = 0;
        let r = t.resync(RFC_KEY, "287922", "162583", at(0)).unwrap();
        assert_eq!(r.new_count, 8);
        assert!(t.resync(RFC_KEY, "287922", "399871", at(0)).is_none(), "not consecutive");
    }

    #[test]
    fn totp_window_replay_and_drift_vectors() {
        let mut t = token(TokenType::Totp);
        let now = at(1111111109);
        // T = 37037036; window 180/30 = 6 back, 5 ahead.
        assert!(t.check_otp(RFC_KEY, "257124", now).is_none(), "T-7");
        assert!(t.check_otp(RFC_KEY, "335769", now).is_some(), "T-6");
        assert!(t.check_otp(RFC_KEY, "731029", now).is_some(), "T-1");
        assert!(t.check_otp(RFC_KEY, "754889", now).is_some(), "T+5");
        assert!(t.check_otp(RFC_KEY, "511787", now).is_none(), "T+6");
        let c = t.check_otp(RFC_KEY, "081804", now).unwrap();
        assert_eq!(c.new_count, 37037036);
        assert_eq!(c.time_shift, Some(-29.0));
        t.count = c.new_count;
        t.time_shift = -29.0;
        assert!(t.check_otp(RFC_KEY, "081804", now).is_none(), "replay");
        assert!(t.is_previous_otp(RFC_KEY, "081804"));
        assert!(t.check_otp(RFC_KEY, "731029", now).is_none(), "older step");
        let c = t.check_otp(RFC_KEY, "050471", at(1111111139)).unwrap();
        assert_eq!(c.new_count, 37037037);
        assert_eq!(c.time_shift, Some(-29.0));
        t.time_window = 20;
        assert!(t.check_otp(RFC_KEY, "050471", at(1111111139)).is_none(), "window < step");
    }

    #[test]
    fn totp_resync_sets_count_and_shift() {
        let t = token(TokenType::Totp);
        // Device 10 minutes ahead: codes for steps T+20 and T+21.
        let now = at(1111111109);
        let tc = otp::time_counter(1111111109, 0.0, 30);
        let o1 = otp::hotp(RFC_KEY, tc + 19, 6, HashAlgorithm::Sha1);
        let o2 = otp::hotp(RFC_KEY, tc + 20, 6, HashAlgorithm::Sha1);
        let r = t.resync(RFC_KEY, &o1, &o2, now).unwrap();
        assert_eq!(r.new_count, tc + 21);
        // (res2 + 0.5) * step - now = (T + 20.5) * 30 - (T * 30 + 29)
        assert_eq!(r.time_shift, Some(586.0));
    }

    #[test]
    fn pw_and_spass_checks() {
        let mut t = token(TokenType::Pw);
        t.otplen = 4;
        assert!(t.check_otp(b"abcd", "abcd", at(0)).is_some());
        assert!(t.check_otp(b"abcd", "abce", at(0)).is_none());
        let s = token(TokenType::Spass);
        assert!(s.check_otp(b"", "", at(0)).is_some());
    }

    #[test]
    fn usability_rules_in_order() {
        let mut t = token(TokenType::Hotp);
        assert_eq!(t.unusable_reason(at(100)), None);
        t.validity_end = Some(at(50));
        assert_eq!(t.unusable_reason(at(100)), Some("Outside validity period"));
        t.failcount = 10;
        assert_eq!(t.unusable_reason(at(100)), Some("Failcounter exceeded"));
        t.active = false;
        assert_eq!(t.unusable_reason(at(100)), Some("Token is disabled"));
        t = token(TokenType::Hotp);
        t.validity_start = Some(at(100));
        t.validity_end = Some(at(100));
        assert!(t.is_valid_at(at(100)), "bounds are inclusive");
        assert!(!t.is_valid_at(at(99)));
    }
}

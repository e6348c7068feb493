//! The PIN/OTP split of a password, on arbitrary text, OTP lengths and PIN
//! positions: `split_pin_otp` and `Token::split_password`. When a split is
//! returned, PIN and OTP put back in the configured order are the input,
//! and the OTP has exactly the token's length in characters.
#![no_main]

use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use otpd_core::token::{StoredPin, Token, TokenType, split_pin_otp};

fn token(token_type: TokenType, otplen: u32) -> Token {
    Token {
        id: 0,
        serial: "FUZZ0001".into(),
        token_type,
        secret: Vec::new(),
        otplen,
        hash: Default::default(),
        timestep: 30,
        time_window: 180,
        time_shift: 0.0,
        count: 0,
        count_window: 10,
        sync_window: 1000,
        maxfail: 10,
        failcount: 0,
        failcounter_exceeded: None,
        active: true,
        revoked: false,
        description: String::new(),
        pin: StoredPin::Empty,
        owner: None,
        realms: Vec::new(),
        validity_start: None,
        validity_end: None,
        count_auth: 0,
        count_auth_success: 0,
        created: Timestamp::UNIX_EPOCH,
        assigned: None,
    }
}

fn check(password: &str, otplen: usize, prepend_pin: bool, split: Option<(&str, &str)>) {
    let chars = password.chars().count();
    let Some((pin, otp)) = split else {
        assert!(chars < otplen, "{password:?} ({chars} chars) not split at {otplen}");
        return;
    };
    let joined = if prepend_pin { format!("{pin}{otp}") } else { format!("{otp}{pin}") };
    assert_eq!(joined, password, "otplen {otplen} prepend {prepend_pin}");
    assert_eq!(otp.chars().count(), otplen, "{password:?}: otp {otp:?}");
    assert_eq!(pin.chars().count(), chars - otplen);
}

fuzz_target!(|data: &[u8]| {
    let [len, flags, rest @ ..] = data else { return };
    // Mostly real OTP lengths, sometimes anything.
    let otplen = if flags & 0x80 != 0 { usize::from(*len) } else { usize::from(*len % 10) };
    let prepend_pin = flags & 1 != 0;
    let password = String::from_utf8_lossy(rest);

    check(&password, otplen, prepend_pin, split_pin_otp(&password, otplen, prepend_pin));

    for token_type in TokenType::ALL {
        let t = token(token_type, u32::from(*len));
        let split = t.split_password(&password, prepend_pin);
        if token_type == TokenType::Spass {
            assert_eq!(split, Some((&*password, "")));
        } else {
            assert_eq!(split, split_pin_otp(&password, usize::from(*len), prepend_pin));
            check(&password, usize::from(*len), prepend_pin, split);
        }
    }
});

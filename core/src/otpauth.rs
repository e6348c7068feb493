//! The otpauth:// key URI (Google Authenticator's format) that enrollment
//! prints and shows as a QR code, with privacyIDEA's parameter order and
//! percent-encoding, `creator=otpd` and the real next HOTP counter.

use crate::otp::HashAlgorithm;
use crate::token::{Token, TokenType};

/// Percent-encodes every byte of UTF-8 except `A-Z a-z 0-9 _ . - ~ /`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URI of an hotp or totp token with key `key`; `None` for other types.
pub fn uri(token: &Token, key: &[u8], label: &str, issuer: &str) -> Option<String> {
    let kind = match token.token_type {
        TokenType::Hotp => "hotp",
        TokenType::Totp => "totp",
        TokenType::Pw | TokenType::Spass => return None,
    };
    let mut uri = format!(
        "otpauth://{kind}/{}?secret={}",
        percent_encode(label),
        data_encoding::BASE32_NOPAD.encode(key)
    );
    if token.token_type == TokenType::Hotp {
        uri.push_str(&format!("&counter={}", token.count));
    }
    match token.hash {
        HashAlgorithm::Sha1 => {}
        HashAlgorithm::Sha256 => uri.push_str("&algorithm=SHA256"),
        HashAlgorithm::Sha512 => uri.push_str("&algorithm=SHA512"),
    }
    if token.token_type == TokenType::Totp {
        uri.push_str(&format!("&period={}", token.timestep));
    }
    uri.push_str(&format!(
        "&digits={}&creator=otpd&issuer={}&serial={}",
        token.otplen,
        percent_encode(issuer),
        percent_encode(&token.serial)
    ));
    Some(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::sample_token;

    const KEY: &[u8] = b"12345678901234567890";

    #[test]
    fn hotp_uri() {
        let t = sample_token(TokenType::Hotp, "OATH0001A2B3");
        assert_eq!(
            uri(&t, KEY, "OATH0001A2B3", "otpd").unwrap(),
            "otpauth://hotp/OATH0001A2B3?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&counter=0&digits=6&creator=otpd&issuer=otpd&serial=OATH0001A2B3"
        );
    }

    #[test]
    fn totp_uri_with_algorithm_period_and_encoded_label() {
        let mut t = sample_token(TokenType::Totp, "TOTP0002C4D5");
        t.hash = HashAlgorithm::Sha256;
        t.otplen = 8;
        assert_eq!(
            uri(&t, KEY, "alice@realm1", "ACME realm1").unwrap(),
            "otpauth://totp/alice%40realm1?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&algorithm=SHA256&period=30&digits=8&creator=otpd&issuer=ACME%20realm1&serial=TOTP0002C4D5"
        );
        t.timestep = 60;
        assert!(
            uri(&t, KEY, "Alice Smith/x", "otpd").unwrap().starts_with("otpauth://totp/Alice%20Smith/x?")
        );
        assert!(uri(&t, KEY, "a", "b").unwrap().contains("&period=60&"));
    }

    #[test]
    fn no_uri_for_pw_and_spass() {
        assert!(uri(&sample_token(TokenType::Pw, "P"), KEY, "P", "otpd").is_none());
        assert!(uri(&sample_token(TokenType::Spass, "S"), KEY, "S", "otpd").is_none());
    }
}

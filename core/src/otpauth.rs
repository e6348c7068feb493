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

/// Longest URI prefix a label is cut to fit with (privacyIDEA's rule).
const LABEL_BUDGET: usize = 180;

/// The URI of an hotp or totp token with key `key`; `None` for other types.
/// An empty label (a template of tags with no values) falls back to the
/// serial, since authenticator apps refuse an empty label.
pub fn uri(token: &Token, key: &[u8], label: &str, issuer: &str, image: Option<&str>) -> Option<String> {
    let kind = match token.token_type {
        TokenType::Hotp => "hotp",
        TokenType::Totp => "totp",
        TokenType::Pw | TokenType::Spass => return None,
    };
    let secret = data_encoding::BASE32_NOPAD.encode(key);
    let label = if label.is_empty() { token.serial.as_str() } else { label };
    let room = LABEL_BUDGET.saturating_sub(format!("otpauth://{kind}/?secret={secret}&counter=1").len());
    let label: String = label.chars().take(room.max(1)).collect();
    let mut uri = format!("otpauth://{kind}/{}?secret={secret}", percent_encode(&label));
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
    if let Some(image) = image {
        uri.push_str(&format!("&image={}", percent_encode(image)));
    }
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
            uri(&t, KEY, "OATH0001A2B3", "otpd", None).unwrap(),
            "otpauth://hotp/OATH0001A2B3?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&counter=0&digits=6&creator=otpd&issuer=otpd&serial=OATH0001A2B3"
        );
    }

    #[test]
    fn totp_uri_with_algorithm_period_and_encoded_label() {
        let mut t = sample_token(TokenType::Totp, "TOTP0002C4D5");
        t.hash = HashAlgorithm::Sha256;
        t.otplen = 8;
        assert_eq!(
            uri(&t, KEY, "alice@realm1", "ACME realm1", None).unwrap(),
            "otpauth://totp/alice%40realm1?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&algorithm=SHA256&period=30&digits=8&creator=otpd&issuer=ACME%20realm1&serial=TOTP0002C4D5"
        );
        t.timestep = 60;
        assert!(
            uri(&t, KEY, "Alice Smith/x", "otpd", None)
                .unwrap()
                .starts_with("otpauth://totp/Alice%20Smith/x?")
        );
        assert!(uri(&t, KEY, "a", "b", None).unwrap().contains("&period=60&"));
    }

    #[test]
    fn empty_label_falls_back_to_serial_and_at_sign_stays() {
        let t = sample_token(TokenType::Hotp, "X");
        assert!(uri(&t, KEY, "", "otpd", None).unwrap().starts_with("otpauth://hotp/X?"));
        assert!(uri(&t, KEY, "@", "otpd", None).unwrap().starts_with("otpauth://hotp/%40?"));
        let long = "a".repeat(500);
        let u = uri(&t, KEY, &long, "otpd", Some("https://x/i.png")).unwrap();
        assert_eq!(u.split('?').next().unwrap().len(), "otpauth://hotp/".len() + 115);
        assert!(u.ends_with("&image=https%3A//x/i.png"));
    }

    #[test]
    fn no_uri_for_pw_and_spass() {
        assert!(uri(&sample_token(TokenType::Pw, "P"), KEY, "P", "otpd", None).is_none());
        assert!(uri(&sample_token(TokenType::Spass, "S"), KEY, "S", "otpd", None).is_none());
    }
}

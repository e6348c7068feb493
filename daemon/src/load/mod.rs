//! `otpd-load`, a RADIUS load generator: the request sources, the closed-loop
//! engine and the figures it reports. The binary (`src/bin/otpd-load.rs`) is
//! the command line over this module.

pub mod engine;
pub mod source;
pub mod stats;

use std::time::Duration;

/// `10s`, `500ms`, `2m` or a bare number of seconds (fractions allowed).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 =
        number.trim().parse().map_err(|_| format!("bad duration {text:?} (say 10s, 500ms or 2m)"))?;
    Duration::try_from_secs_f64(value * scale)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("bad duration {text:?} (must be positive)"))
}

/// A key given in hex (upper or lower case, even length, not empty).
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("bad hex key {text:?}");
    let digits = text.trim().as_bytes();
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return Err(bad());
    }
    let nibble = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    digits
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some((nibble(*hi)? << 4) | nibble(*lo)?),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "ten", "-1s", "0s", "1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hex_keys() {
        assert_eq!(parse_hex("3132ff"), Ok(vec![0x31, 0x32, 0xff]));
        assert_eq!(parse_hex("ABcd"), Ok(vec![0xab, 0xcd]));
        for bad in ["", "1", "zz", "12 34", "+1"] {
            assert!(parse_hex(bad).is_err(), "{bad}");
        }
    }
}

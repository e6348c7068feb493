//! The validity-date parser (`otpd token set --validity-start/-end`, the
//! `set validity` event action) on arbitrary text, relative to a `now`
//! picked from the first two bytes: a time zone (with and without DST,
//! odd offsets) and an instant (DST changes, the edges of the supported
//! years). Errors are expected; panics are bugs.
#![no_main]

use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};
use libfuzzer_sys::fuzz_target;
use otpd_core::datetime::{format_minute, parse_time};

const ZONES: [&str; 8] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kathmandu",
    "Pacific/Kiritimati",
    "America/St_Johns",
];

/// Unix seconds: ordinary days, DST changes in Europe and the US, the
/// epoch, and the first and last days jiff represents.
const INSTANTS: [i64; 8] = [
    1_700_000_000,
    1_711_846_800,
    1_730_595_600,
    0,
    -377_705_116_800,
    253_402_207_199,
    253_402_000_000,
    -377_705_000_000,
];

fuzz_target!(|data: &[u8]| {
    let (zone, instant, text) = match data {
        [z, i, rest @ ..] => (usize::from(*z), usize::from(*i), rest),
        _ => (0, 0, data),
    };
    let tz = match zone % (ZONES.len() + 2) {
        n if n < ZONES.len() => TimeZone::get(ZONES[n]).expect("bundled zone"),
        n if n == ZONES.len() => TimeZone::fixed(Offset::from_seconds(-(14 * 3600)).expect("-14h")),
        _ => TimeZone::fixed(Offset::from_seconds(14 * 3600 - 1).expect("+13:59:59")),
    };
    let Ok(at) = Timestamp::from_second(INSTANTS[instant % INSTANTS.len()]) else { return };
    let now = at.to_zoned(tz);
    let _ = format_minute(&now);

    let text = String::from_utf8_lossy(text);
    match parse_time(&text, &now) {
        Ok(t) => {
            // Minute precision, and formatting never fails.
            assert_eq!((t.second(), t.subsec_nanosecond()), (0, 0), "{text:?} -> {t}");
            let shown = format_minute(&t);
            assert!(shown.len() >= 20, "{shown}");
        }
        Err(e) => {
            // The message repeats at most 64 characters of the input
            // (control characters escaped, at most 6 bytes each), so it
            // stays short whatever the input.
            let message = e.to_string();
            assert!(message.len() < 1024, "{} bytes", message.len());
        }
    }
});

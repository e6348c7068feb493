//! Parsing and formatting of the times an operator types for a token's
//! validity period (`otpd token set --validity-start/--validity-end`, and the
//! event handler's `set validity` action).
//!
//! Accepted inputs are offsets from now (`+30m`, `+2h`, `+30d`), ISO 8601 /
//! RFC 3339 timestamps, and the fixed formats privacyIDEA accepts for
//! `set validity` (`2016/12/23 9:30am`, `23.12.2016 23:20`, `23/12/16`, ...).
//! Results are truncated to the minute because validity bounds are stored with
//! minute precision.
//!
//! The input comes straight from users (and is fuzzed), so nothing here may
//! panic: all parsing goes through the non-panicking `Cursor` below, and all
//! arithmetic is checked.

use jiff::Span;
use jiff::Zoned;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, OffsetConflict, TimeZone};

/// At most this many characters of the input are repeated in an error
/// message, so that a huge input does not produce a huge message.
const MAX_SHOWN_CHARS: usize = 64;

/// Why an input could not be turned into a time.
///
/// Every variant carries the (possibly shortened) input so that the message
/// can name it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeParseError {
    /// Nothing but whitespace was given.
    #[error(
        "an empty time is not valid: give an offset such as +30m, +2h or +30d, \
         or a date such as 2024-03-15T09:30 or 15.03.2024 9:30"
    )]
    Empty,
    /// The input starts with '+' but is not a well-formed offset.
    #[error(
        "'{input}' is not a valid time: an offset is '+' followed by a whole number \
         and m, h or d (e.g. +30m, +2h, +30d)"
    )]
    InvalidOffset { input: String },
    /// A well-formed offset that reaches beyond the representable range.
    #[error(
        "'{input}' is not a valid time: the offset is too large \
         (the result must lie between the years -9999 and 9999)"
    )]
    OffsetTooLarge { input: String },
    /// The input has the shape of a date, but the date does not exist.
    #[error("'{input}' is not a valid date: {reason}")]
    InvalidDate { input: String, reason: String },
    /// The date is fine, but the time of day is malformed or does not exist.
    #[error("'{input}' is not a valid time: {reason}")]
    InvalidTime { input: String, reason: String },
    /// A valid date and time that cannot be placed in the time zone because
    /// the instant would lie outside the supported range.
    #[error("'{input}' is not a valid time: it lies outside the supported range of years -9999 to 9999")]
    OutOfRange { input: String },
    /// The input matches none of the accepted formats.
    #[error(
        "'{input}' is not a valid time: use an offset such as +30m, +2h or +30d, \
         an ISO date such as 2024-03-15T09:30+01:00, or a date such as 2024/03/15, \
         15.03.2024 or 15/03/2024 optionally followed by a time such as 9:30 or 9:30pm"
    )]
    Unrecognized { input: String },
}

/// Parses `input` (surrounding whitespace trimmed) relative to `now` (its time zone is the server's local zone;
/// naive dates/times are interpreted in that zone). The result is truncated to the minute (seconds and
/// sub-seconds dropped, not rounded), because validity bounds are stored with minute precision.
pub fn parse_time(input: &str, now: &Zoned) -> Result<Zoned, TimeParseError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(TimeParseError::Empty);
    }
    if let Some(after_plus) = input.strip_prefix('+') {
        return parse_offset(input, after_plus, now);
    }
    // Four digits and a dash can only be the start of an ISO date; the other
    // date formats use '/' or '.'.
    if let Some([a, b, c, d, b'-', ..]) = input.as_bytes().get(..5)
        && [a, b, c, d].iter().all(|x| x.is_ascii_digit())
    {
        return parse_iso(input, now);
    }
    parse_numeric(input, now)
}

/// Formats for storage/display: "YYYY-MM-DDTHH:MM+HHMM" (e.g. "2024-03-15T10:25+0000").
pub fn format_minute(t: &Zoned) -> String {
    // Hand-formatted rather than via strftime, whose `to_string` would panic
    // if formatting ever failed. Offsets with a seconds part (only historic
    // local mean times) lose those seconds, matching the minute precision.
    let year = i32::from(t.year());
    let year_sign = if year < 0 { "-" } else { "" };
    let offset = t.offset().seconds();
    let offset_sign = if offset < 0 { '-' } else { '+' };
    let offset = offset.unsigned_abs();
    format!(
        "{year_sign}{:04}-{:02}-{:02}T{:02}:{:02}{offset_sign}{:02}{:02}",
        year.unsigned_abs(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        offset / 3600,
        offset % 3600 / 60,
    )
}

/// `+<N><unit>`: `now` moved by N minutes, hours or days of local wall-clock
/// time, so `+1d` and `+24h` both keep the time of day across a DST change.
fn parse_offset(input: &str, after_plus: &str, now: &Zoned) -> Result<Zoned, TimeParseError> {
    let invalid = || TimeParseError::InvalidOffset { input: shown(input) };
    let too_large = || TimeParseError::OffsetTooLarge { input: shown(input) };

    let mut c = Cursor::new(after_plus);
    c.skip_whitespace();
    // `+-5d` is how an operator asks for a time in the past.
    let negative = c.eat('-');
    let digits = c.digits(usize::MAX).ok_or_else(invalid)?;
    c.skip_whitespace();
    let unit = c.unit().ok_or_else(invalid)?;
    if !c.is_done() {
        return Err(invalid());
    }

    let magnitude: i64 = decimal(digits).ok_or_else(too_large)?;
    let amount = if negative { magnitude.checked_neg().ok_or_else(too_large)? } else { magnitude };
    let span = match unit {
        OffsetUnit::Minutes => Span::new().try_minutes(amount),
        OffsetUnit::Hours => Span::new().try_hours(amount),
        OffsetUnit::Days => Span::new().try_days(amount),
    }
    .map_err(|_| too_large())?;

    // Civil (not Zoned) arithmetic: adding hours to a Zoned would count real
    // elapsed time, but the operator means the wall clock.
    let local = now.datetime().checked_add(span).map_err(|_| too_large())?;
    let local = truncate_to_minute(local).ok_or_else(too_large)?;
    // Within a repeated hour keep now's offset if it fits, so that `+0m`
    // returns now itself; otherwise this is jiff's compatible disambiguation.
    OffsetConflict::PreferOffset
        .resolve(local, now.offset(), now.time_zone().clone())
        .and_then(|ambiguous| ambiguous.compatible())
        .map_err(|_| too_large())
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|±HHMM|±HH:MM]`. With an explicit
/// offset the result keeps that offset (fixed-offset zone); without one the
/// time is local.
fn parse_iso(input: &str, now: &Zoned) -> Result<Zoned, TimeParseError> {
    let unrecognized = || TimeParseError::Unrecognized { input: shown(input) };
    let bad_time = |reason: String| TimeParseError::InvalidTime { input: shown(input), reason };

    let mut c = Cursor::new(input);
    let year = c.number(4, 4).ok_or_else(unrecognized)?;
    let month = c.expect('-').and_then(|()| c.number(2, 2));
    let month = month.ok_or_else(unrecognized)?;
    let day = c.expect('-').and_then(|()| c.number(2, 2));
    let day = day.ok_or_else(unrecognized)?;
    let date = calendar_date(year, month, day)
        .map_err(|reason| TimeParseError::InvalidDate { input: shown(input), reason })?;

    let mut time = Time::midnight();
    if c.eat('T') || c.eat('t') || c.eat(' ') {
        let hour = c.number(2, 2).ok_or_else(unrecognized)?;
        let minute = c.expect(':').and_then(|()| c.number(2, 2));
        let minute = minute.ok_or_else(unrecognized)?;
        if c.eat(':') {
            let second = c.number(2, 2).ok_or_else(unrecognized)?;
            // RFC 3339 allows a leap second; it is dropped anyway.
            if second > 60 {
                return Err(bad_time(format!("there is no second {second}")));
            }
            if c.eat('.') || c.eat(',') {
                c.digits(9).ok_or_else(unrecognized)?;
            }
        }
        time = clock_time(hour, minute).map_err(bad_time)?;
    }

    let zone = if c.eat('Z') || c.eat('z') {
        Some(TimeZone::UTC)
    } else if let Some(sign) = c.sign() {
        let hours = c.number(2, 2).ok_or_else(unrecognized)?;
        c.eat(':');
        let minutes = c.number(2, 2).ok_or_else(unrecognized)?;
        let offset = utc_offset(sign, hours, minutes).ok_or_else(|| {
            bad_time(format!(
                "the UTC offset {}{hours:02}{minutes:02} is out of range (at most 23 hours and 59 minutes)",
                if sign < 0 { '-' } else { '+' }
            ))
        })?;
        Some(TimeZone::fixed(offset))
    } else {
        None
    };
    if !c.is_done() {
        return Err(unrecognized());
    }

    let tz = zone.unwrap_or_else(|| now.time_zone().clone());
    DateTime::from_parts(date, time)
        .to_zoned(tz)
        .map_err(|_| TimeParseError::OutOfRange { input: shown(input) })
}

/// privacyIDEA's `set validity` formats: `YYYY/MM/DD`, `DD.MM.YYYY`,
/// `DD.MM.YY`, `DD/MM/YYYY`, `DD/MM/YY`, each optionally followed by
/// whitespace and a clock time; always local time.
fn parse_numeric(input: &str, now: &Zoned) -> Result<Zoned, TimeParseError> {
    let (date_text, clock_text) = match input.split_once(char::is_whitespace) {
        Some((date, clock)) => (date, Some(clock.trim_start())),
        None => (input, None),
    };
    let (year, month, day) = numeric_date_fields(date_text, now.year())
        .ok_or_else(|| TimeParseError::Unrecognized { input: shown(input) })?;
    let date = calendar_date(year, month, day)
        .map_err(|reason| TimeParseError::InvalidDate { input: shown(input), reason })?;
    let time = match clock_text {
        Some(text) => {
            parse_clock(text).map_err(|reason| TimeParseError::InvalidTime { input: shown(input), reason })?
        }
        None => Time::midnight(),
    };
    DateTime::from_parts(date, time)
        .to_zoned(now.time_zone().clone())
        .map_err(|_| TimeParseError::OutOfRange { input: shown(input) })
}

/// Splits a numeric date into (year, month, day) without checking the
/// calendar; `None` if it has none of the accepted shapes.
fn numeric_date_fields(text: &str, current_year: i16) -> Option<(i32, i32, i32)> {
    let mut c = Cursor::new(text);
    let first = c.digits(4)?;
    let separator = if c.eat('/') {
        '/'
    } else if c.eat('.') {
        '.'
    } else {
        return None;
    };
    let second = c.digits(2)?;
    c.expect(separator)?;
    let third = c.digits(4)?;
    if !c.is_done() {
        return None;
    }

    if first.len() == 4 {
        // Year first is only accepted as YYYY/MM/DD, and never swapped.
        if separator != '/' || third.len() > 2 {
            return None;
        }
        return Some((decimal(first)?, decimal(second)?, decimal(third)?));
    }
    if first.len() > 2 {
        return None;
    }
    let year = match third.len() {
        4 => decimal(third)?,
        2 => two_digit_year(decimal(third)?, current_year)?,
        _ => return None,
    };
    // privacyIDEA's rule: day first only when the input starts with exactly
    // two digits and a separator; otherwise month first.
    let day_first = first.len() == 2;
    let (first, second) = (decimal(first)?, decimal(second)?);
    let (mut day, mut month) = if day_first { (first, second) } else { (second, first) };
    // A "month" above 12 next to a plausible month can only mean the fields
    // were the other way round (e.g. 01/15/20, 13.1.2024).
    if month > 12 && day <= 12 {
        std::mem::swap(&mut day, &mut month);
    }
    Some((year, month, day))
}

/// The year ending in `yy` within [current year − 50, current year + 49].
fn two_digit_year(yy: i32, current_year: i16) -> Option<i32> {
    let lowest = i32::from(current_year).checked_sub(50)?;
    lowest.checked_add(yy.checked_sub(lowest)?.checked_rem_euclid(100)?)
}

/// `H:MM[:SS][ ][am|pm]` or `H:MM:am|pm`; seconds are accepted but dropped.
fn parse_clock(text: &str) -> Result<Time, String> {
    let syntax = || {
        "the time after the date must be H:MM, optionally followed by :SS and am or pm \
         (e.g. 9:30, 23:20, 9:30pm)"
            .to_string()
    };
    let mut c = Cursor::new(text);
    let hour = c.number(1, 2).ok_or_else(syntax)?;
    c.expect(':').ok_or_else(syntax)?;
    let minute = c.number(2, 2).ok_or_else(syntax)?;
    let mut meridiem = None;
    if c.eat(':') {
        // privacyIDEA also writes `11:20:pm`.
        meridiem = c.meridiem();
        if meridiem.is_none() {
            let second = c.number(2, 2).ok_or_else(syntax)?;
            if second > 59 {
                return Err(format!("there is no second {second}"));
            }
        }
    }
    if meridiem.is_none() {
        c.skip_whitespace();
        meridiem = c.meridiem();
    }
    if !c.is_done() {
        return Err(syntax());
    }

    let hour = match meridiem {
        None => hour,
        Some(pm) => {
            if !(1..=12).contains(&hour) {
                return Err(format!("with am or pm the hour must be 1 to 12, not {hour}"));
            }
            // 12am is midnight and 12pm is noon.
            let hour = if hour == 12 { 0 } else { hour };
            if pm { hour.saturating_add(12) } else { hour }
        }
    };
    clock_time(hour, minute)
}

/// A time of day on the minute, or the reason it does not exist.
fn clock_time(hour: i32, minute: i32) -> Result<Time, String> {
    if !(0..=23).contains(&hour) {
        return Err(format!("there is no hour {hour} (hours are 0 to 23)"));
    }
    if !(0..=59).contains(&minute) {
        return Err(format!("there is no minute {minute} (minutes are 0 to 59)"));
    }
    let (Ok(hour), Ok(minute)) = (i8::try_from(hour), i8::try_from(minute)) else {
        return Err(format!("there is no time {hour}:{minute:02}"));
    };
    Time::new(hour, minute, 0, 0).map_err(|_| format!("there is no time {hour}:{minute:02}"))
}

/// A calendar date, or a reason such as "February 2016 has no day 31".
fn calendar_date(year: i32, month: i32, day: i32) -> Result<Date, String> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let name = usize::try_from(month)
        .ok()
        .and_then(|m| m.checked_sub(1))
        .and_then(|i| MONTHS.get(i))
        .ok_or_else(|| format!("there is no month {month} (months are 1 to 12)"))?;
    if day < 1 {
        return Err(format!("there is no day {day}"));
    }
    let out_of_range = || format!("the year {year} is out of range (years are -9999 to 9999)");
    let y = i16::try_from(year).map_err(|_| out_of_range())?;
    let m = i8::try_from(month).map_err(|_| out_of_range())?;
    let first = Date::new(y, m, 1).map_err(|_| out_of_range())?;
    let d = i8::try_from(day)
        .ok()
        .filter(|d| *d <= first.days_in_month())
        .ok_or_else(|| format!("{name} {year} has no day {day}"))?;
    Date::new(y, m, d).map_err(|_| format!("{name} {year} has no day {day}"))
}

/// A UTC offset from its parts, if it is at most ±23:59.
fn utc_offset(sign: i32, hours: i32, minutes: i32) -> Option<Offset> {
    if !(0..=23).contains(&hours) || !(0..=59).contains(&minutes) {
        return None;
    }
    let seconds = sign.checked_mul(hours.checked_mul(3600)?.checked_add(minutes.checked_mul(60)?)?)?;
    Offset::from_seconds(seconds).ok()
}

/// Drops seconds and sub-seconds (no rounding).
fn truncate_to_minute(dt: DateTime) -> Option<DateTime> {
    dt.with().second(0).subsec_nanosecond(0).build().ok()
}

/// Value of a run of ASCII digits; `None` on overflow.
fn decimal<T>(digits: &str) -> Option<T>
where
    T: TryFrom<i64>,
{
    let value = digits
        .chars()
        .try_fold(0_i64, |acc, ch| acc.checked_mul(10)?.checked_add(i64::from(ch.to_digit(10)?)))?;
    T::try_from(value).ok()
}

/// The input as shown in an error message: shortened, with control
/// characters escaped so the message stays on one line.
fn shown(input: &str) -> String {
    let mut out = String::new();
    for (i, ch) in input.chars().enumerate() {
        if i == MAX_SHOWN_CHARS {
            out.push('…');
            break;
        }
        if ch.is_control() {
            out.extend(ch.escape_default());
        } else {
            out.push(ch);
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum OffsetUnit {
    Minutes,
    Hours,
    Days,
}

/// A read position in the input. Every method either consumes what it
/// matched or leaves the position unchanged, and none can panic.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self { rest: text }
    }

    fn is_done(&self) -> bool {
        self.rest.is_empty()
    }

    fn eat(&mut self, ch: char) -> bool {
        match self.rest.strip_prefix(ch) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// `eat` for use in `Option` chains.
    fn expect(&mut self, ch: char) -> Option<()> {
        self.eat(ch).then_some(())
    }

    fn eat_ignore_case(&mut self, word: &str) -> bool {
        let matched = self.rest.get(..word.len()).is_some_and(|prefix| prefix.eq_ignore_ascii_case(word));
        if matched {
            self.rest = self.rest.get(word.len()..).unwrap_or_default();
        }
        matched
    }

    fn skip_whitespace(&mut self) {
        self.rest = self.rest.trim_start();
    }

    /// Between one and `max` ASCII digits.
    fn digits(&mut self, max: usize) -> Option<&'a str> {
        let count = self.rest.bytes().take(max).take_while(u8::is_ascii_digit).count();
        if count == 0 {
            return None;
        }
        let (digits, rest) = self.rest.split_at_checked(count)?;
        self.rest = rest;
        Some(digits)
    }

    /// Between `min` and `max` digits as a number. On failure the position
    /// may have moved, which is fine because every caller then gives up.
    fn number(&mut self, min: usize, max: usize) -> Option<i32> {
        let digits = self.digits(max)?;
        if digits.len() < min {
            return None;
        }
        decimal(digits)
    }

    /// `+` or `-` of a UTC offset, as 1 or -1.
    fn sign(&mut self) -> Option<i32> {
        if self.eat('+') {
            Some(1)
        } else if self.eat('-') {
            Some(-1)
        } else {
            None
        }
    }

    /// `am` or `pm` in any case; `Some(true)` for pm.
    fn meridiem(&mut self) -> Option<bool> {
        if self.eat_ignore_case("am") {
            Some(false)
        } else if self.eat_ignore_case("pm") {
            Some(true)
        } else {
            None
        }
    }

    fn unit(&mut self) -> Option<OffsetUnit> {
        let unit = if self.eat_ignore_case("m") {
            OffsetUnit::Minutes
        } else if self.eat_ignore_case("h") {
            OffsetUnit::Hours
        } else if self.eat_ignore_case("d") {
            OffsetUnit::Days
        } else {
            return None;
        };
        Some(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    /// 2024-03-15 10:15:42 UTC, independent of the machine's time zone.
    fn now_utc() -> Zoned {
        date(2024, 3, 15).at(10, 15, 42, 0).to_zoned(TimeZone::UTC).unwrap()
    }

    fn berlin(dt: DateTime) -> Zoned {
        dt.to_zoned(TimeZone::get("Europe/Berlin").unwrap()).unwrap()
    }

    #[track_caller]
    fn check_at(now: &Zoned, input: &str, expected: &str) {
        let got = parse_time(input, now).map(|t| format_minute(&t));
        assert_eq!(got, Ok(expected.to_string()), "input {input:?}");
    }

    #[track_caller]
    fn check(input: &str, expected: &str) {
        check_at(&now_utc(), input, expected);
    }

    #[track_caller]
    fn reject(input: &str) -> TimeParseError {
        match parse_time(input, &now_utc()) {
            Ok(t) => panic!("{input:?} was accepted as {}", format_minute(&t)),
            Err(e) => e,
        }
    }

    #[test]
    fn offsets() {
        check("+10m", "2024-03-15T10:25+0000");
        check("+7d", "2024-03-22T10:15+0000");
        check("+0d", "2024-03-15T10:15+0000");
        check("+0m", "2024-03-15T10:15+0000");
        check("+24h", "2024-03-16T10:15+0000");
        check("+1440m", "2024-03-16T10:15+0000");
        check("+90D", "2024-06-13T10:15+0000");
        check("+2H", "2024-03-15T12:15+0000");
        check("+30M", "2024-03-15T10:45+0000");
        check("+48h", "2024-03-17T10:15+0000");
        check("+31d", "2024-04-15T10:15+0000");
        check("+-5d", "2024-03-10T10:15+0000");
        check("+-90m", "2024-03-15T08:45+0000");
        check("+007d", "2024-03-22T10:15+0000");
        check("  +10m  ", "2024-03-15T10:25+0000");
        check("\t+10m\n", "2024-03-15T10:25+0000");
    }

    #[test]
    fn offsets_with_inner_spaces() {
        check("+ 5d", "2024-03-20T10:15+0000");
        check("+5 d", "2024-03-20T10:15+0000");
        check("+ 5 d", "2024-03-20T10:15+0000");
        check("+ -5d", "2024-03-10T10:15+0000");
    }

    #[test]
    fn offsets_rejected() {
        for input in [
            "+5", "+5s", "+5w", "+", "+d", "+xd", "+1.5h", "+5dd", "+5d x", "+--5d", "++5d", "+- 5d", "+5mh",
            "+٥d",
        ] {
            assert_eq!(
                reject(input),
                TimeParseError::InvalidOffset { input: input.to_string() },
                "input {input:?}"
            );
        }
        for input in ["-5d", "5d", "30d", "now", "tomorrow"] {
            assert_eq!(
                reject(input),
                TimeParseError::Unrecognized { input: input.to_string() },
                "input {input:?}"
            );
        }
    }

    #[test]
    fn offsets_too_large() {
        for input in [
            "+99999999999999999999999999999d",
            "+9223372036854775807m",
            "+9223372036854775807h",
            "+-9223372036854775808d",
            "+9999999999d",
            "+3660000d",
            "+-7000000d",
            "+100000000h",
        ] {
            assert_eq!(
                reject(input),
                TimeParseError::OffsetTooLarge { input: input.to_string() },
                "input {input:?}"
            );
        }
    }

    #[test]
    fn offsets_near_the_end_of_time() {
        let now = date(9999, 12, 30).at(10, 0, 0, 0).to_zoned(TimeZone::UTC).unwrap();
        assert!(matches!(parse_time("+2d", &now), Err(TimeParseError::OffsetTooLarge { .. })));
        check_at(&now, "+1h", "9999-12-30T11:00+0000");
    }

    #[test]
    fn empty_is_rejected() {
        assert_eq!(reject(""), TimeParseError::Empty);
        assert_eq!(reject("   \t\n"), TimeParseError::Empty);
    }

    #[test]
    fn year_first_slash_dates() {
        check("2016/12/23", "2016-12-23T00:00+0000");
        check("2024/01/12", "2024-01-12T00:00+0000");
        check("2024/1/2", "2024-01-02T00:00+0000");
        check("2016/12/23 9:30am", "2016-12-23T09:30+0000");
        check("2016/12/23 11:30pm", "2016-12-23T23:30+0000");
        check("2016/12/23 9:30 pm", "2016-12-23T21:30+0000");
        check("2016/12/23 9:30  PM", "2016-12-23T21:30+0000");
        check("2016/12/23 12:00am", "2016-12-23T00:00+0000");
        check("2016/12/23 12:30pm", "2016-12-23T12:30+0000");
        check("2016/12/23 12:59AM", "2016-12-23T00:59+0000");
        check("2016/12/23 11:20:pm", "2016-12-23T23:20+0000");
        check("2016/12/23 11:20:AM", "2016-12-23T11:20+0000");
        check("2016/12/23 11:20:59", "2016-12-23T11:20+0000");
        check("2016/12/23 11:20:59pm", "2016-12-23T23:20+0000");
        check("2016/12/23 11:20:59 pm", "2016-12-23T23:20+0000");
        check("2016/12/23 0:00", "2016-12-23T00:00+0000");
        check("2016/12/23 23:59", "2016-12-23T23:59+0000");
        check("2016/12/23\t09:05", "2016-12-23T09:05+0000");
    }

    #[test]
    fn dotted_dates() {
        check("23.12.2016", "2016-12-23T00:00+0000");
        check("23.12.2016 9:30", "2016-12-23T09:30+0000");
        check("23.12.2016 23:20", "2016-12-23T23:20+0000");
        check("23.12.2016 9:30pm", "2016-12-23T21:30+0000");
        check("23.12.2016 9:30 am", "2016-12-23T09:30+0000");
        check("23.12.16", "2016-12-23T00:00+0000");
        check("23.12.16 18:45", "2016-12-23T18:45+0000");
    }

    #[test]
    fn slashed_day_first_dates() {
        check("03/04/2016", "2016-04-03T00:00+0000");
        check("15/01/20", "2020-01-15T00:00+0000");
        check("01/15/20", "2020-01-15T00:00+0000");
        check("12/01/2024", "2024-01-12T00:00+0000");
        check("01/12/2024", "2024-12-01T00:00+0000");
        check("23/12/2016 9:30pm", "2016-12-23T21:30+0000");
        check("23/12/16 11:20:pm", "2016-12-23T23:20+0000");
    }

    #[test]
    fn day_first_only_with_two_leading_digits() {
        check("01.02.2024", "2024-02-01T00:00+0000");
        check("1.2.2024", "2024-01-02T00:00+0000");
        check("1.02.2024", "2024-01-02T00:00+0000");
        check("1/2/2024", "2024-01-02T00:00+0000");
        check("13.1.2024", "2024-01-13T00:00+0000");
        check("5.13.2024", "2024-05-13T00:00+0000");
        check("01.2.2024", "2024-02-01T00:00+0000");
    }

    #[test]
    fn two_digit_years_pivot_on_the_current_year() {
        // now is 2024: the window is 1974..=2073.
        check("01.01.16", "2016-01-01T00:00+0000");
        check("01.01.80", "1980-01-01T00:00+0000");
        check("01.01.74", "1974-01-01T00:00+0000");
        check("01.01.73", "2073-01-01T00:00+0000");
        check("01.01.00", "2000-01-01T00:00+0000");
        // In 2026 the window is 1976..=2075.
        let now = date(2026, 6, 1).at(0, 0, 0, 0).to_zoned(TimeZone::UTC).unwrap();
        check_at(&now, "01.01.16", "2016-01-01T00:00+0000");
        check_at(&now, "01.01.80", "1980-01-01T00:00+0000");
        check_at(&now, "01.01.75", "2075-01-01T00:00+0000");
        check_at(&now, "01.01.76", "1976-01-01T00:00+0000");
    }

    #[test]
    fn iso_dates() {
        check("2016-12-23T15:30+0600", "2016-12-23T15:30+0600");
        check("2016-12-23T15:30:59+0600", "2016-12-23T15:30+0600");
        check("2016-12-23T15:30+06:00", "2016-12-23T15:30+0600");
        check("2016-12-23T15:30-0930", "2016-12-23T15:30-0930");
        check("2017-04-27T20:00+0200", "2017-04-27T20:00+0200");
        check("2017-04-27T22:00Z", "2017-04-27T22:00+0000");
        check("2024-03-20T08:00:00Z", "2024-03-20T08:00+0000");
        check("2026-12-23T09:30:00Z", "2026-12-23T09:30+0000");
        check("2026-12-23t09:30:00z", "2026-12-23T09:30+0000");
        check("2024-03-20T08:00:00.123456Z", "2024-03-20T08:00+0000");
        check("2024-03-20T08:00:59.999+01:00", "2024-03-20T08:00+0100");
        check("2016-12-31T23:59:60Z", "2016-12-31T23:59+0000");
        check("2016-12-23", "2016-12-23T00:00+0000");
        check("2016-12-23 15:30", "2016-12-23T15:30+0000");
        check("2016-12-23T15:30", "2016-12-23T15:30+0000");
        check("2016-12-23T15:30:45", "2016-12-23T15:30+0000");
    }

    #[test]
    fn iso_offset_gives_a_fixed_offset_zone() {
        let t = parse_time("2016-12-23T15:30+0600", &now_utc()).unwrap();
        assert_eq!(t.offset(), jiff::tz::offset(6));
        assert_eq!(t.time_zone().iana_name(), None);
        assert_eq!(t.timestamp().to_string(), "2016-12-23T09:30:00Z");
    }

    #[test]
    fn iso_rejected() {
        for input in [
            "2016-12-23T15",
            "2016-12-23T1530",
            "2016-1-23",
            "2016-12-23T15:30+06",
            "2016-12-23T15:30+6:00",
            "2016-12-23T15:30 +0600",
            "2016-12-23T15:30:00.",
            "2016-12-23T15:30:00.1234567890Z",
            "2016-12-23T15:30Zx",
            "2016-12-23  15:30",
            "2016-12-23T9:30",
        ] {
            assert!(matches!(reject(input), TimeParseError::Unrecognized { .. }), "input {input:?}");
        }
        assert!(matches!(reject("2016-02-30"), TimeParseError::InvalidDate { .. }));
        for input in [
            "2016-12-23T24:00",
            "2016-12-23T15:60",
            "2016-12-23T15:30:61",
            "2016-12-23T15:30+2400",
            "2016-12-23T15:30+0060",
        ] {
            assert!(matches!(reject(input), TimeParseError::InvalidTime { .. }), "input {input:?}");
        }
    }

    #[test]
    fn invalid_calendar_dates() {
        for input in [
            "31.02.2024",
            "31.02.2016",
            "29.02.2023",
            "2016/13/01",
            "0.1.2024",
            "00.01.2024",
            "2016/00/10",
            "2016/12/00",
            "32/12/2016",
            "15/15/2016",
            "2016/12/32",
        ] {
            assert!(matches!(reject(input), TimeParseError::InvalidDate { .. }), "input {input:?}");
        }
        check("29.02.2024", "2024-02-29T00:00+0000");
    }

    #[test]
    fn invalid_times_of_day() {
        for input in [
            "2016/12/23 25:00",
            "2016/12/23 24:00",
            "2016/12/23 13:00pm",
            "2016/12/23 0:30am",
            "2016/12/23 9:60",
            "2016/12/23 9:30:60",
            "2016/12/23 9:3",
            "2016/12/23 9:300",
            "2016/12/23 9",
            "2016/12/23 9:30 xm",
            "2016/12/23 9:30:pm:00",
            "2016/12/23 9:30pm pm",
            "2016/12/23 123:00",
            "23.12.2016 T9:30",
        ] {
            assert!(matches!(reject(input), TimeParseError::InvalidTime { .. }), "input {input:?}");
        }
    }

    #[test]
    fn unrecognized_inputs() {
        for input in [
            "15/15",
            "garbage",
            "2016.12.23",
            "2016/12/2016",
            "123.1.2024",
            "1.2.024",
            "1.2.20245",
            "1/2.2024",
            "23.12.2016x",
            "23.12.2016.",
            "/12/2016",
            "12//2016",
            "١٢/١٢/٢٠١٦",
        ] {
            assert!(matches!(reject(input), TimeParseError::Unrecognized { .. }), "input {input:?}");
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            reject("31.02.2016").to_string(),
            "'31.02.2016' is not a valid date: February 2016 has no day 31"
        );
        assert_eq!(
            reject("+5x").to_string(),
            "'+5x' is not a valid time: an offset is '+' followed by a whole number \
             and m, h or d (e.g. +30m, +2h, +30d)"
        );
        assert_eq!(
            reject("2016/13/01").to_string(),
            "'2016/13/01' is not a valid date: there is no month 13 (months are 1 to 12)"
        );
        assert_eq!(
            reject("2016/12/23 25:00").to_string(),
            "'2016/12/23 25:00' is not a valid time: there is no hour 25 (hours are 0 to 23)"
        );
        assert_eq!(
            reject("2016/12/23 13:00pm").to_string(),
            "'2016/12/23 13:00pm' is not a valid time: with am or pm the hour must be 1 to 12, not 13"
        );
        // The input is trimmed before it is shown.
        assert!(reject("  garbage ").to_string().starts_with("'garbage' is"));
    }

    #[test]
    fn long_and_odd_inputs_are_shown_shortened() {
        let long = "x".repeat(10_000);
        let message = reject(&long).to_string();
        assert!(message.len() < 400, "{message}");
        assert!(message.contains('…'));
        let message = reject("a\u{1b}[31mb").to_string();
        assert!(!message.contains('\u{1b}'), "{message}");
    }

    /// From the validity_date fuzzer (fuzz/fuzz_targets/validity_date.rs):
    /// control characters are shown escaped, six bytes each, which makes the
    /// longest messages (over 600 bytes); 64 characters at most keep them
    /// bounded.
    #[test]
    fn fuzz_control_characters_are_shown_escaped_and_bounded() {
        let input = format!("{}A29.\u{fffd}2.2\r\0\0\0\u{fffd}\0", "\u{12}".repeat(80));
        let message = reject(&input).to_string();
        assert!(message.len() < 1024, "{} bytes: {message}", message.len());
        assert_eq!(message.matches("\\u{12}").count(), 64, "{message}");
        assert!(!message.contains('\u{12}') && message.contains('…'), "{message}");
    }

    #[test]
    fn dst_offsets_use_the_wall_clock() {
        let now = berlin(date(2024, 3, 15).at(10, 15, 42, 0));
        assert_eq!(format_minute(&now), "2024-03-15T10:15+0100");
        check_at(&now, "+90d", "2024-06-13T10:15+0200");
        let now = berlin(date(2024, 3, 30).at(10, 0, 0, 0));
        check_at(&now, "+24h", "2024-03-31T10:00+0200");
        check_at(&now, "+1d", "2024-03-31T10:00+0200");
        check_at(&now, "+1440m", "2024-03-31T10:00+0200");
        // Autumn: the day has 25 hours but +24h still keeps the wall clock.
        let now = berlin(date(2024, 10, 26).at(10, 0, 0, 0));
        check_at(&now, "+24h", "2024-10-27T10:00+0100");
    }

    #[test]
    fn dst_gap_and_fold() {
        // 02:30 does not exist on 2024-03-31 in Berlin; compatible
        // disambiguation moves it forward by the gap.
        let now = berlin(date(2024, 3, 30).at(2, 30, 0, 0));
        check_at(&now, "+1d", "2024-03-31T03:30+0200");
        check_at(&now, "2024-03-31 02:30", "2024-03-31T03:30+0200");
        // 02:30 happens twice on 2024-10-27; the earlier one is chosen for
        // naive input, but an offset keeps the offset of now when it fits.
        check_at(&now, "27.10.2024 2:30", "2024-10-27T02:30+0200");
        let second_0230 = berlin(date(2024, 10, 27).at(2, 30, 0, 0))
            .checked_add(jiff::SignedDuration::from_hours(1))
            .unwrap();
        assert_eq!(format_minute(&second_0230), "2024-10-27T02:30+0100");
        check_at(&second_0230, "+0m", "2024-10-27T02:30+0100");
        check_at(&second_0230, "+10m", "2024-10-27T02:40+0100");
    }

    #[test]
    fn naive_dates_are_local() {
        let now = berlin(date(2024, 3, 15).at(10, 15, 42, 0));
        check_at(&now, "23.12.2016", "2016-12-23T00:00+0100");
        check_at(&now, "2016/07/01 9:30pm", "2016-07-01T21:30+0200");
        check_at(&now, "2016-07-01T12:00", "2016-07-01T12:00+0200");
        check_at(&now, "2016-07-01T12:00Z", "2016-07-01T12:00+0000");
    }

    #[test]
    fn results_are_truncated_not_rounded() {
        let now = date(2024, 3, 15).at(10, 15, 59, 999_999_999).to_zoned(TimeZone::UTC).unwrap();
        let t = parse_time("+0m", &now).unwrap();
        assert_eq!((t.minute(), t.second(), t.subsec_nanosecond()), (15, 0, 0));
        let t = parse_time("2024-03-20T08:00:59.999Z", &now).unwrap();
        assert_eq!((t.minute(), t.second(), t.subsec_nanosecond()), (0, 0, 0));
    }

    #[test]
    fn extreme_dates_do_not_panic() {
        let late = date(9999, 12, 31).at(0, 0, 0, 0).to_zoned(TimeZone::fixed(jiff::tz::offset(-5)));
        // Such a `now` may not even exist; only panics matter here.
        if let Ok(now) = late {
            let _ = parse_time("01.01.00", &now);
            let _ = parse_time("31.12.99 23:59", &now);
        }
        for input in ["9999-12-31T23:59-2359", "9999/12/31 23:59"] {
            assert!(matches!(reject(input), TimeParseError::OutOfRange { .. }), "input {input:?}");
        }
        check("0000/01/01", "0000-01-01T00:00+0000");
        let now = date(-9999, 1, 3).at(0, 0, 0, 0).to_zoned(TimeZone::UTC).unwrap();
        let _ = parse_time("+-10d", &now);
        let _ = parse_time("01.01.49", &now);
    }

    #[test]
    fn formatting() {
        assert_eq!(format_minute(&now_utc()), "2024-03-15T10:15+0000");
        let t = date(2024, 3, 15).at(10, 25, 0, 0).to_zoned(TimeZone::fixed(jiff::tz::offset(-9))).unwrap();
        assert_eq!(format_minute(&t), "2024-03-15T10:25-0900");
        let t = date(5, 1, 2).at(3, 4, 0, 0).to_zoned(TimeZone::UTC).unwrap();
        assert_eq!(format_minute(&t), "0005-01-02T03:04+0000");
    }

    #[test]
    fn format_round_trips_through_parse() {
        for input in ["2016-12-23T15:30+0600", "2024-03-15T10:25-0930", "+10d"] {
            let t = parse_time(input, &now_utc()).unwrap();
            let again = parse_time(&format_minute(&t), &now_utc()).unwrap();
            assert_eq!(t.timestamp(), again.timestamp(), "input {input:?}");
        }
    }

    /// A cheap stand-in for the fuzzer: many generated inputs from the
    /// characters the grammar cares about must never panic.
    #[test]
    fn generated_inputs_do_not_panic() {
        const ALPHABET: &[char] = &[
            '0', '1', '2', '9', '+', '-', '/', '.', ':', ' ', 'T', 'Z', 'a', 'p', 'm', 'h', 'd', 'M', '\t',
            'é', '٣', '\u{0}',
        ];
        let nows = [now_utc(), berlin(date(2024, 10, 27).at(2, 30, 0, 0))];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let len = next() % 24;
            let input: String = (0..len)
                .filter_map(|_| {
                    let i = usize::try_from(next() % ALPHABET.len() as u64).ok()?;
                    ALPHABET.get(i).copied()
                })
                .collect();
            for now in &nows {
                if let Ok(t) = parse_time(&input, now) {
                    assert_eq!(t.second(), 0, "input {input:?}");
                    let _ = format_minute(&t);
                }
            }
        }
    }
}

//! Comparisons behind event handler conditions and the tags of the
//! `set description` / `set tokeninfo` actions (spec 6.4 and 7.3).
//!
//! * [`int_condition`]: `otp_counter`, `failcounter`, `count_auth*`,
//!   `user_token_number` (`>=5`, `'<'3`, `10`, ...).
//! * [`GenericCondition`]: `tokeninfo` / `user_info` (`key <cmp> value`).
//! * [`check_tags`] / [`render_tags`]: `{now}+7d`, `{client_ip}`, ...
//!
//! Everything here reads operator configuration or user data, so nothing may
//! panic: strings are sliced only at char boundaries just found, arithmetic
//! is checked. What cannot be compared makes a condition false, as in
//! privacyIDEA; the `check_*`/`parse` functions catch at load what never works.

use std::cmp::Ordering;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp, Zoned};
use regex::Regex;

/// At most this many characters of an input are repeated in an error message,
/// so that a huge input does not produce a huge message.
const MAX_SHOWN_CHARS: usize = 64;

/// The (possibly shortened) input for an error message.
fn shown(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(MAX_SHOWN_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------
// Comparators
// ---------------------------------------------------------------------------

/// An ordering relation: what `==`, `!=`, `<`, `<=`, `>`, `>=` (and their
/// aliases) ask of the comparison of the stored value with the condition value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rel {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Rel {
    fn holds(self, ord: Ordering) -> bool {
        match self {
            Rel::Eq => ord == Ordering::Equal,
            Rel::Ne => ord != Ordering::Equal,
            Rel::Lt => ord == Ordering::Less,
            Rel::Le => ord != Ordering::Greater,
            Rel::Gt => ord == Ordering::Greater,
            Rel::Ge => ord != Ordering::Less,
        }
    }
}

/// What a comparator does, before its value is known. The `bool` says
/// "negated" (the `!` forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rel(Rel),
    Matches(bool),
    In(bool),
    Contains(bool),
    StringContains(bool),
    DateBefore,
    DateAfter,
    WithinLast(bool),
}

/// Unquoted symbolic comparators, in the order they are tried: a longer one
/// before any of its prefixes (`<=` before `<`, `==` before `=`).
const SYMBOLS: &[(&str, Rel)] = &[
    ("==", Rel::Eq),
    ("!=", Rel::Ne),
    ("<=", Rel::Le),
    ("=<", Rel::Le),
    (">=", Rel::Ge),
    ("=>", Rel::Ge),
    ("<", Rel::Lt),
    (">", Rel::Gt),
    ("=", Rel::Eq),
];

/// Word comparators. privacyIDEA writes them quoted (`'matches'`); otpd also
/// takes them bare when blanks separate them from key and value.
const WORDS: &[(&str, Kind)] = &[
    ("equals", Kind::Rel(Rel::Eq)),
    ("!equals", Kind::Rel(Rel::Ne)),
    ("matches", Kind::Matches(false)),
    ("!matches", Kind::Matches(true)),
    ("in", Kind::In(false)),
    ("!in", Kind::In(true)),
    ("contains", Kind::Contains(false)),
    ("!contains", Kind::Contains(true)),
    ("string_contains", Kind::StringContains(false)),
    ("!string_contains", Kind::StringContains(true)),
    ("date_before", Kind::DateBefore),
    ("date_after", Kind::DateAfter),
    ("date_within_last", Kind::WithinLast(false)),
    ("!date_within_last", Kind::WithinLast(true)),
];

/// A quoted comparator (`'equals'`, `'<'`, `'matches'`, ...) at the start of
/// `text`: its length including the quotes, and its kind.
fn quoted_at(text: &str) -> Option<(usize, Kind)> {
    let inner = text.strip_prefix('\'')?;
    let close = inner.find('\'')?;
    let name = &inner[..close];
    let kind = WORDS
        .iter()
        .find(|(word, _)| *word == name)
        .map(|(_, kind)| *kind)
        .or_else(|| SYMBOLS.iter().find(|(sym, _)| *sym == name).map(|(_, rel)| Kind::Rel(*rel)))?;
    Some((close + 2, kind))
}

/// An unquoted symbolic comparator at the start of `text`.
fn symbol_at(text: &str) -> Option<(usize, Rel)> {
    SYMBOLS.iter().find(|(sym, _)| text.starts_with(sym)).map(|(sym, rel)| (sym.len(), *rel))
}

/// A bare word comparator at the start of `text`, which must end there or be
/// followed by a blank (so that `in` does not match the start of `internal`).
fn word_at(text: &str) -> Option<(usize, Kind)> {
    WORDS
        .iter()
        .find(|(word, _)| {
            text.strip_prefix(word)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
        })
        .map(|(word, kind)| (word.len(), *kind))
}

// ---------------------------------------------------------------------------
// Integers
// ---------------------------------------------------------------------------

/// Python's `int()` of a string, which privacyIDEA applies to both sides:
/// blanks around, an optional sign, digits with single `_` between them.
fn parse_int(text: &str) -> Option<i64> {
    let text = text.trim();
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    // Accumulated as a negative number so that i64::MIN fits.
    let mut value: i64 = 0;
    let mut after_digit = false;
    for byte in digits.bytes() {
        match byte {
            b'0'..=b'9' => {
                value = value.checked_mul(10)?.checked_sub(i64::from(byte - b'0'))?;
                after_digit = true;
            }
            b'_' if after_digit => after_digit = false,
            _ => return None,
        }
    }
    if !after_digit {
        // Empty, or ending in '_'.
        return None;
    }
    if negative { Some(value) } else { value.checked_neg() }
}

/// Splits an integer condition into relation and number.
fn split_int_condition(value: &str) -> Result<(Rel, i64), String> {
    let text = value.trim();
    if text.is_empty() {
        return Err("an empty integer condition can never be true: give e.g. '>=5', '<8' or '10'".into());
    }
    let (rel, rest) = if let Some((len, kind)) = quoted_at(text) {
        match kind {
            Kind::Rel(rel) => (rel, &text[len..]),
            _ => {
                return Err(format!(
                    "integer condition '{}': only ==, !=, <, <=, >, >=, 'equals' and '!equals' \
                     compare numbers",
                    shown(value)
                ));
            }
        }
    } else if let Some((len, rel)) = symbol_at(text) {
        (rel, &text[len..])
    } else {
        // A bare number means equality.
        (Rel::Eq, text)
    };
    let number = parse_int(rest).ok_or_else(|| {
        format!(
            "integer condition '{}' can never be true: expected a comparator (==, !=, <, <=, >, >=) \
             followed by a whole number, or a bare whole number",
            shown(value)
        )
    })?;
    Ok((rel, number))
}

/// Integer compare of conditions like `otp_counter`, `failcounter`,
/// `count_auth`, `user_token_number`: `value` is `<cmp><int>` or a bare int
/// (equality). Anything unparsable makes the condition false.
pub fn int_condition(value: &str, actual: i64) -> bool {
    match split_int_condition(value) {
        Ok((rel, number)) => rel.holds(actual.cmp(&number)),
        Err(_) => false,
    }
}

/// Checks an integer condition at config load: `Err(reason)` when it can
/// never be true because it does not parse.
pub fn check_int_condition(value: &str) -> Result<(), String> {
    split_int_condition(value).map(|_| ())
}

// ---------------------------------------------------------------------------
// Dates and durations
// ---------------------------------------------------------------------------

/// A parsed ISO date: with or without a UTC offset. The two kinds are never
/// ordered against each other (Python refuses to, and so does privacyIDEA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Naive(DateTime),
    Aware(Timestamp),
}

impl When {
    fn order(self, other: When) -> Option<Ordering> {
        match (self, other) {
            (When::Naive(a), When::Naive(b)) => Some(a.cmp(&b)),
            (When::Aware(a), When::Aware(b)) => Some(a.cmp(&b)),
            _ => None,
        }
    }

    /// The instant, reading a naive time as UTC (`date_within_last`).
    fn as_utc(self) -> Option<Timestamp> {
        match self {
            When::Naive(dt) => Offset::UTC.to_timestamp(dt).ok(),
            When::Aware(ts) => Some(ts),
        }
    }
}

/// A forward-only reader over the bytes of a date.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, wanted: u8) -> bool {
        let hit = self.peek() == Some(wanted);
        if hit {
            self.pos += 1;
        }
        hit
    }

    /// Exactly `count` ASCII digits.
    fn digits(&mut self, count: usize) -> Option<i32> {
        let mut value: i32 = 0;
        for _ in 0..count {
            let byte = self.peek().filter(u8::is_ascii_digit)?;
            value = value * 10 + i32::from(byte - b'0');
            self.pos += 1;
        }
        Some(value)
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

/// ISO 8601 as privacyIDEA's comparators take it (at least `YYYY-MM-DD`):
/// `YYYY-MM-DD[(T| )HH[:MM[:SS[.fff]]]][Z|±HH[[:]MM]]`, blanks around ignored.
fn parse_iso(text: &str) -> Option<When> {
    let mut cur = Cursor { bytes: text.trim().as_bytes(), pos: 0 };
    let year = cur.digits(4)?;
    if !cur.eat(b'-') {
        return None;
    }
    let month = cur.digits(2)?;
    if !cur.eat(b'-') {
        return None;
    }
    let day = cur.digits(2)?;
    let date =
        Date::new(i16::try_from(year).ok()?, i8::try_from(month).ok()?, i8::try_from(day).ok()?).ok()?;
    if cur.done() {
        return Some(When::Naive(date.to_datetime(Time::midnight())));
    }
    if !(cur.eat(b'T') || cur.eat(b' ')) {
        return None;
    }
    let hour = cur.digits(2)?;
    let (mut minute, mut second, mut nanos) = (0, 0, 0);
    if cur.eat(b':') {
        minute = cur.digits(2)?;
        if cur.eat(b':') {
            second = cur.digits(2)?;
            if cur.eat(b'.') || cur.eat(b',') {
                // Digits beyond nanoseconds are read and dropped.
                let mut scale = 100_000_000;
                let start = cur.pos;
                while let Some(byte) = cur.peek().filter(u8::is_ascii_digit) {
                    nanos += scale * i32::from(byte - b'0');
                    scale /= 10;
                    cur.pos += 1;
                }
                if cur.pos == start {
                    return None;
                }
            }
        }
    }
    let time =
        Time::new(i8::try_from(hour).ok()?, i8::try_from(minute).ok()?, i8::try_from(second).ok()?, nanos)
            .ok()?;
    let datetime = date.to_datetime(time);
    if cur.done() {
        return Some(When::Naive(datetime));
    }
    let offset_seconds = if cur.eat(b'Z') || cur.eat(b'z') {
        0
    } else {
        let sign = match cur.peek()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        cur.pos += 1;
        let hours = cur.digits(2)?;
        let minutes = if cur.done() {
            0
        } else {
            cur.eat(b':');
            cur.digits(2)?
        };
        if hours > 23 || minutes > 59 {
            return None;
        }
        sign * (hours * 3600 + minutes * 60)
    };
    if !cur.done() {
        return None;
    }
    let offset = Offset::from_seconds(offset_seconds).ok()?;
    Some(When::Aware(offset.to_timestamp(datetime).ok()?))
}

/// Both sides as dates, ordered; `None` when either is no date or one has an
/// offset and the other has not.
fn order_dates(left: &str, right: &str) -> Option<Ordering> {
    parse_iso(left)?.order(parse_iso(right)?)
}

/// The window of `date_within_last`: `<N><unit>`, unit `s m h d y` (`y` is 365
/// days), as nanoseconds. Wide enough that no `u64` count overflows.
fn parse_window(text: &str) -> Option<i128> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let count: u64 = text[..text.len() - unit.len_utf8()].trim_end().parse().ok()?;
    let seconds: i128 = match unit.to_ascii_lowercase() {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'y' => 365 * 86_400,
        _ => return None,
    };
    Some(i128::from(count) * seconds * 1_000_000_000)
}

/// A time offset `[+-]<digits><s|m|h|d>` at the start of `text`: its length
/// and the duration (`None` when the number is too large).
fn offset_at(text: &str) -> Option<(usize, Option<SignedDuration>)> {
    let bytes = text.as_bytes();
    let sign: i64 = match bytes.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = bytes[1..].iter().take_while(|byte| byte.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let unit: i64 = match bytes.get(1 + digits)? {
        b's' => 1,
        b'm' => 60,
        b'h' => 3_600,
        b'd' => 86_400,
        _ => return None,
    };
    let seconds = text[1..1 + digits]
        .parse::<i64>()
        .ok()
        .and_then(|count| count.checked_mul(unit))
        .and_then(|secs| secs.checked_mul(sign));
    Some((digits + 2, seconds.map(SignedDuration::from_secs)))
}

/// `now` moved by `shift` on the wall clock of its time zone (as Python's
/// aware datetime arithmetic does, and as `set validity` does, spec 6.3).
fn shift_wall(now: &Zoned, shift: SignedDuration) -> Option<Zoned> {
    if shift.is_zero() {
        // Keeps the offset of a repeated hour, which re-zoning might not.
        return Some(now.clone());
    }
    now.datetime().checked_add(shift).ok()?.to_zoned(now.time_zone().clone()).ok()
}

/// A fixed "now" for checking configuration without a clock.
fn reference_now() -> Zoned {
    Timestamp::UNIX_EPOCH.to_zoned(TimeZone::UTC)
}

// ---------------------------------------------------------------------------
// Generic conditions
// ---------------------------------------------------------------------------

/// A compiled full-match pattern. `Regex` has no equality; two patterns are
/// the same when their source text is.
#[derive(Debug, Clone)]
struct FullMatch(Regex);

impl PartialEq for FullMatch {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for FullMatch {}

/// A comparator with whatever of its value could be prepared at load.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Rel(Rel),
    Matches { negated: bool, pattern: FullMatch },
    In { negated: bool },
    Contains { negated: bool },
    StringContains { negated: bool },
    DateBefore,
    DateAfter,
    WithinLast { negated: bool, window_nanos: i128 },
}

/// Generic compare of `tokeninfo` / `user_info` conditions: `key <cmp> value`.
///
/// `==`, `!=`, `<`, `<=`, `>`, `>=` (also `=`, `=<`, `=>`, `equals`,
/// `!equals`) compare as integers when both sides are integers, else as dates
/// when both are ISO dates, else as strings. `matches`/`!matches` (full-match
/// regex), `in`/`!in` (comma list), `contains`/`!contains` (the stored value's
/// comma-separated items), `string_contains`/`!string_contains`
/// (case-insensitive substring), `date_before`/`date_after`,
/// `date_within_last`/`!date_within_last` (`7d`, `12h`, `30m`, `1y`). Every
/// comparator may also be written quoted (`'matches'`). `{now}` in the value,
/// optionally followed by `[+-]N[smhd]`, stands for the event time as
/// `YYYY-MM-DDTHH:MM±HHMM` (not in `matches` patterns, which are compiled at
/// load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericCondition {
    /// The tokeninfo key or userstore attribute whose value is compared.
    pub key: String,
    op: Op,
    value: String,
}

/// The first comparator in `text`: where it starts, its length, its kind.
/// Symbols and quoted comparators may touch key and value; bare words need
/// blanks around them.
fn find_comparator(text: &str) -> Option<(usize, usize, Kind)> {
    for (at, _) in text.char_indices() {
        let rest = &text[at..];
        if let Some((len, kind)) = quoted_at(rest) {
            return Some((at, len, kind));
        }
        if let Some((len, rel)) = symbol_at(rest) {
            return Some((at, len, Kind::Rel(rel)));
        }
        if (at == 0 || text[..at].ends_with(char::is_whitespace))
            && let Some((len, kind)) = word_at(rest)
        {
            return Some((at, len, kind));
        }
    }
    None
}

/// Replaces every `{now}` (each with its own optional offset) by the event
/// time; `None` when an offset leaves the representable range.
fn substitute_now(value: &str, now: &Zoned) -> Option<String> {
    const TAG: &str = "{now}";
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find(TAG) {
        out.push_str(&rest[..at]);
        rest = &rest[at + TAG.len()..];
        let shift = match offset_at(rest) {
            Some((len, shift)) => {
                rest = &rest[len..];
                shift?
            }
            None => SignedDuration::ZERO,
        };
        let time = shift_wall(now, shift)?;
        out.push_str(&jiff::fmt::strtime::format("%Y-%m-%dT%H:%M%z", &time).ok()?);
    }
    out.push_str(rest);
    Some(out)
}

/// Comma-separated items, blanks around each removed.
fn list_items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim)
}

/// `==`, `<`, ... on two texts: as integers, else as dates, else as strings.
fn compare_loose(left: &str, rel: Rel, right: &str) -> bool {
    if let (Some(a), Some(b)) = (parse_int(left), parse_int(right)) {
        return rel.holds(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (parse_iso(left), parse_iso(right)) {
        return match a.order(b) {
            Some(ord) => rel.holds(ord),
            // Naive against aware: Python says "not equal" and refuses to
            // order them (an error in privacyIDEA, false here).
            None => rel == Rel::Ne,
        };
    }
    rel.holds(left.cmp(right))
}

impl GenericCondition {
    /// Parses `key <cmp> value`. Blanks around symbolic and quoted
    /// comparators are optional, bare word comparators need them.
    /// `Err(reason)` for a missing key or comparator, a bad regex, a bad
    /// `date_within_last` window, a `date_before`/`date_after` value that is
    /// no date, or a `{now}` offset out of range.
    pub fn parse(text: &str) -> Result<GenericCondition, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty condition: expected 'key <comparator> value', e.g. 'count_auth >= 5'".into());
        }
        let (at, len, kind) = find_comparator(text).ok_or_else(|| {
            format!(
                "condition '{}' has no comparator: expected 'key <comparator> value' with one of \
                 ==, !=, <, <=, >, >=, matches, in, contains, string_contains, date_before, \
                 date_after, date_within_last (and the ! forms)",
                shown(text)
            )
        })?;
        let key = text[..at].trim();
        if key.is_empty() {
            return Err(format!("condition '{}' names no key before its comparator", shown(text)));
        }
        let value = text[at + len..].trim();
        let op = Self::prepare(kind, value)?;
        Ok(GenericCondition { key: key.to_owned(), op, value: value.to_owned() })
    }

    /// Builds the comparator, refusing values that could never work.
    fn prepare(kind: Kind, value: &str) -> Result<Op, String> {
        let substituted = || {
            substitute_now(value, &reference_now())
                .ok_or_else(|| format!("a {{now}} offset in '{}' is out of range", shown(value)))
        };
        Ok(match kind {
            Kind::Matches(negated) => {
                // Compiled alone first, so that a pattern like `a)|(b` cannot
                // escape the anchoring group below.
                Regex::new(value).map_err(|e| format!("bad regular expression '{}': {e}", shown(value)))?;
                let anchored = Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("bad regular expression '{}': {e}", shown(value)))?;
                Op::Matches { negated, pattern: FullMatch(anchored) }
            }
            Kind::WithinLast(negated) => {
                let window_nanos = parse_window(value).ok_or_else(|| {
                    format!(
                        "'{}' is not a time span for date_within_last: expected a whole number and \
                         s, m, h, d or y (e.g. 7d, 12h, 30m, 1y)",
                        shown(value)
                    )
                })?;
                Op::WithinLast { negated, window_nanos }
            }
            Kind::DateBefore | Kind::DateAfter => {
                if parse_iso(&substituted()?).is_none() {
                    return Err(format!(
                        "'{}' is not a date: expected ISO 8601 (YYYY-MM-DD[THH:MM[:SS]][±HHMM]) or \
                         {{now}} with an optional offset such as {{now}}+7d",
                        shown(value)
                    ));
                }
                if kind == Kind::DateBefore { Op::DateBefore } else { Op::DateAfter }
            }
            Kind::Rel(rel) => {
                substituted()?;
                Op::Rel(rel)
            }
            Kind::In(negated) => {
                substituted()?;
                Op::In { negated }
            }
            Kind::Contains(negated) => {
                substituted()?;
                Op::Contains { negated }
            }
            Kind::StringContains(negated) => {
                substituted()?;
                Op::StringContains { negated }
            }
        })
    }

    /// Whether the condition holds for `stored`, the value of `key` (`None`,
    /// i.e. a missing key, is false). `now` is the event time. What cannot be
    /// compared (no date, naive against aware, ...) is false, for the negated
    /// comparators too.
    pub fn holds(&self, stored: Option<&str>, now: &Zoned) -> bool {
        stored.and_then(|stored| self.evaluate(stored, now)).unwrap_or(false)
    }

    fn evaluate(&self, stored: &str, now: &Zoned) -> Option<bool> {
        let value = || substitute_now(&self.value, now);
        Some(match &self.op {
            Op::Matches { negated, pattern } => pattern.0.is_match(stored) != *negated,
            Op::WithinLast { negated, window_nanos } => {
                let then = parse_iso(stored)?.as_utc()?;
                // Strictly younger than the window; a future time counts as
                // within, as in privacyIDEA.
                let age = now.timestamp().as_nanosecond() - then.as_nanosecond();
                (age < *window_nanos) != *negated
            }
            Op::Rel(rel) => compare_loose(stored, *rel, &value()?),
            Op::In { negated } => list_items(&value()?).any(|item| item == stored) != *negated,
            Op::Contains { negated } => {
                let wanted = value()?;
                list_items(stored).any(|item| item == wanted) != *negated
            }
            Op::StringContains { negated } => {
                stored.to_lowercase().contains(&value()?.to_lowercase()) != *negated
            }
            Op::DateBefore => order_dates(stored, &value()?)? == Ordering::Less,
            Op::DateAfter => order_dates(stored, &value()?)? == Ordering::Greater,
        })
    }
}

// ---------------------------------------------------------------------------
// Tags of `set description` / `set tokeninfo`
// ---------------------------------------------------------------------------

/// What the non-time tags stand for. `None` (or empty) renders as `N/A`.
#[derive(Debug, Clone, Default)]
pub struct TagValues<'a> {
    /// `{client_ip}`.
    pub client_ip: Option<&'a str>,
    /// `{ua_browser}` and `{ua_string}`: the front (`radius`, `pam`, `cli`).
    pub front: &'a str,
    /// `{username}`.
    pub username: Option<&'a str>,
    /// `{realm}`.
    pub realm: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Now,
    CurrentTime,
    ClientIp,
    UaBrowser,
    UaString,
    Username,
    Realm,
}

const TAGS: &[(&str, Tag)] = &[
    ("now", Tag::Now),
    ("current_time", Tag::CurrentTime),
    ("client_ip", Tag::ClientIp),
    ("ua_browser", Tag::UaBrowser),
    ("ua_string", Tag::UaString),
    ("username", Tag::Username),
    ("realm", Tag::Realm),
];

const KNOWN_TAGS: &str = "{now}, {current_time}, {client_ip}, {ua_browser}, {ua_string}, {username}, {realm}";

enum Piece<'t> {
    Text(&'t str),
    /// A tag and the byte position right after its `}`.
    Tag(Tag, usize),
}

/// Splits a template the way Python's `str.format` reads it: `{{` and `}}`
/// are literal braces, `{name}` is a tag, any other brace is an error.
fn tokenize(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    while let Some(found) = template[pos..].find(['{', '}']) {
        let at = pos + found;
        pieces.push(Piece::Text(&template[pos..at]));
        let rest = &template[at..];
        if rest.starts_with("{{") || rest.starts_with("}}") {
            pieces.push(Piece::Text(&template[at..at + 1]));
            pos = at + 2;
        } else if rest.starts_with('}') {
            return Err(format!(
                "unbalanced '}}' before '{}': write '}}}}' for a literal brace",
                shown(&template[at + 1..])
            ));
        } else {
            let close = rest.find('}').ok_or_else(|| {
                format!("unbalanced '{{' at '{}': write '{{{{' for a literal brace", shown(rest))
            })?;
            let name = &rest[1..close];
            let tag =
                TAGS.iter().find(|(known, _)| *known == name).map(|(_, tag)| *tag).ok_or_else(|| {
                    format!(
                        "unknown tag '{{{}}}': known tags are {KNOWN_TAGS}; write '{{{{' and '}}}}' for \
                     literal braces",
                        shown(name)
                    )
                })?;
            pos = at + close + 1;
            pieces.push(Piece::Tag(tag, pos));
        }
    }
    pieces.push(Piece::Text(&template[pos..]));
    Ok(pieces)
}

/// The one time offset privacyIDEA honours: the last `{current_time}`
/// followed by one, else the last `{now}` followed by one. Its byte range
/// and duration (`None` when too large).
fn chosen_offset(template: &str, pieces: &[Piece<'_>]) -> Option<(usize, usize, Option<SignedDuration>)> {
    let last_with_offset = |wanted: Tag| {
        pieces.iter().rev().find_map(|piece| match piece {
            Piece::Tag(tag, end) if *tag == wanted => {
                offset_at(&template[*end..]).map(|(len, shift)| (*end, len, shift))
            }
            _ => None,
        })
    };
    last_with_offset(Tag::CurrentTime).or_else(|| last_with_offset(Tag::Now))
}

/// Checks a template at config load: an unknown `{tag}`, an unbalanced brace
/// or an offset out of range is `Err(reason)` naming it.
pub fn check_tags(template: &str) -> Result<(), String> {
    render_tags(template, &TagValues::default(), &reference_now()).map(|_| ())
}

/// Fills in the tags of a `set description` / `set tokeninfo` value (spec
/// 6.4). `{now}` and `{current_time}` become `now` as
/// `YYYY-MM-DD HH:MM:SS.ffffff±HHMM`, moved by the one honoured offset
/// (`{current_time}`'s before `{now}`'s), whose text is removed; any other
/// offset stays literal. Absent values render as `N/A`.
pub fn render_tags(template: &str, values: &TagValues<'_>, now: &Zoned) -> Result<String, String> {
    let pieces = tokenize(template)?;
    let (text, shift) = match chosen_offset(template, &pieces) {
        Some((start, len, shift)) => {
            let offset_text = &template[start..start + len];
            let shift = shift.ok_or_else(|| format!("time offset '{}' is too large", shown(offset_text)))?;
            (format!("{}{}", &template[..start], &template[start + len..]), shift)
        }
        None => (template.to_owned(), SignedDuration::ZERO),
    };
    // Removing the offset (no braces in it) cannot change the tags.
    let pieces = tokenize(&text)?;
    let mut stamp = None;
    if pieces.iter().any(|piece| matches!(piece, Piece::Tag(Tag::Now | Tag::CurrentTime, _))) {
        let time =
            shift_wall(now, shift).ok_or_else(|| "the time offset leaves the supported range".to_owned())?;
        let formatted = jiff::fmt::strtime::format("%Y-%m-%d %H:%M:%S.%6f%z", &time)
            .map_err(|e| format!("cannot format the time: {e}"))?;
        stamp = Some(formatted);
    }
    let or_na = |value: Option<&str>| value.filter(|v| !v.is_empty()).unwrap_or("N/A").to_owned();
    let mut out = String::with_capacity(text.len() + 32);
    for piece in &pieces {
        match piece {
            Piece::Text(part) => out.push_str(part),
            Piece::Tag(tag, _) => out.push_str(&match tag {
                Tag::Now | Tag::CurrentTime => stamp.clone().unwrap_or_default(),
                Tag::ClientIp => or_na(values.client_ip),
                Tag::UaBrowser | Tag::UaString => or_na(Some(values.front)),
                Tag::Username => or_na(values.username),
                Tag::Realm => or_na(values.realm),
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    /// 2024-03-15 10:15:42.5 UTC, the spec's event time.
    fn event_time() -> Zoned {
        date(2024, 3, 15).at(10, 15, 42, 500_000_000).to_zoned(TimeZone::UTC).unwrap()
    }

    fn cond(text: &str) -> GenericCondition {
        GenericCondition::parse(text).unwrap()
    }

    fn holds(text: &str, stored: &str) -> bool {
        cond(text).holds(Some(stored), &event_time())
    }

    // --- integer compare ---------------------------------------------------

    #[test]
    fn int_spec_table() {
        // Spec 8.10.
        assert!(int_condition(">=5", 5));
        assert!(!int_condition("<8", 8));
        assert!(int_condition("10", 10));
        assert!(int_condition("'=='10", 10));
        assert!(int_condition("!=3", 4));
        assert!(int_condition(">-5", 0));
        assert!(!int_condition("abc", 1));
    }

    #[test]
    fn int_every_comparator() {
        for (cond, actual, want) in [
            ("==5", 5, true),
            ("=5", 5, true),
            ("=5", 6, false),
            ("<=5", 5, true),
            ("=<5", 6, false),
            (">=5", 4, false),
            ("=>5", 5, true),
            ("<5", 4, true),
            (">5", 5, false),
            ("!=5", 5, false),
            ("'equals'3", 3, true),
            ("'!equals'3", 3, false),
            ("'<'3", 2, true),
            ("'>'3", 2, false),
            ("'<='3", 3, true),
            ("'=>'3", 2, false),
            ("'='3", 3, true),
        ] {
            assert_eq!(int_condition(cond, actual), want, "{cond} against {actual}");
        }
    }

    #[test]
    fn int_blanks_signs_and_python_int_syntax() {
        assert!(int_condition("  >= 5  ", 7));
        assert!(int_condition("-3", -3));
        assert!(int_condition("=+4", 4));
        assert!(int_condition("1_000", 1000));
        assert!(int_condition(">=-9223372036854775808", i64::MIN));
        assert!(int_condition("9223372036854775807", i64::MAX));
        for bad in
            ["", "  ", ">", "5>=", "1__0", "_1", "1_", "- 5", "9223372036854775808", "=>=5", "'matches'5"]
        {
            assert!(!int_condition(bad, 5), "{bad:?} must be false");
            assert!(check_int_condition(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(check_int_condition("'<'7").is_ok());
        assert!(check_int_condition("abc").unwrap_err().contains("abc"));
    }

    // --- generic compare: parsing ------------------------------------------

    #[test]
    fn parse_splits_key_comparator_value() {
        let c = cond("count_auth >= 5");
        assert_eq!(c.key, "count_auth");
        assert_eq!(c.op, Op::Rel(Rel::Ge));
        assert_eq!(c.value, "5");
        assert_eq!(cond("count_auth>=5"), c);
        assert_eq!(cond("realm in corp,sales").op, Op::In { negated: false });
        assert_eq!(cond("realm !in corp").op, Op::In { negated: true });
        assert_eq!(cond("realm 'in' corp").value, "corp");
        assert_eq!(cond("realm'!in'corp").op, Op::In { negated: true });
        assert_eq!(cond("a 'equals' b").op, Op::Rel(Rel::Eq));
        assert_eq!(cond("a '<' b").op, Op::Rel(Rel::Lt));
        // A word needs blanks around it: `internal` is not `in ternal`.
        assert_eq!(cond("group == internal").value, "internal");
        // The first comparator splits; the value may contain more.
        let c = cond("note == a==b");
        assert_eq!((c.key.as_str(), c.value.as_str()), ("note", "a==b"));
        // An empty value is a comparison with the empty string.
        assert!(cond("note ==").holds(Some(""), &event_time()));
    }

    #[test]
    fn parse_refusals() {
        for bad in ["", "   ", "== 5", "matches x", "hashlib sha256", "count_auth", "a within 5"] {
            assert!(GenericCondition::parse(bad).is_err(), "{bad:?} must be refused");
        }
        let err = GenericCondition::parse("description matches phone(").unwrap_err();
        assert!(err.contains("regular expression"), "{err}");
        // Would escape the anchors if it were pasted in unchecked.
        assert!(GenericCondition::parse("description matches a)|(b").is_err());
        assert!(GenericCondition::parse("last_auth date_within_last 7w").is_err());
        assert!(GenericCondition::parse("last_auth date_within_last d").is_err());
        assert!(GenericCondition::parse("end date_before tomorrow").is_err());
        assert!(GenericCondition::parse("end date_before {now}+999999999999d").is_err());
        assert!(GenericCondition::parse("end == {now}+99999999999999999999d").is_err());
    }

    // --- generic compare: evaluation ---------------------------------------

    #[test]
    fn generic_examples() {
        assert!(holds("count_auth >= 5", "5"));
        assert!(!holds("count_auth >= 5", "4"));
        assert!(holds("hashlib == sha256", "sha256"));
        assert!(!holds("hashlib == sha256", "sha1"));
        assert!(holds("hashlib != sha256", "sha1"));
        assert!(holds("description matches phone.*", "phone of alice"));
        assert!(!holds("description matches phone.*", "my phone"));
        assert!(holds("description !matches phone.*", "my phone"));
        assert!(holds("description matches (?i)PHONE", "phone"));
        assert!(holds("realm in corp,sales", "sales"));
        assert!(holds("realm in corp, sales", "sales"));
        assert!(!holds("realm in corp,sales", "corporate"));
        assert!(holds("realm !in corp,sales", "dev"));
        assert!(holds("groups contains admins", "users, admins"));
        assert!(!holds("groups contains admin", "users,admins"));
        assert!(holds("groups !contains root", "users,admins"));
        assert!(holds("mail string_contains EXAMPLE.org", "alice@example.ORG"));
        assert!(!holds("mail !string_contains example", "alice@example.org"));
    }

    #[test]
    fn generic_chooses_int_then_date_then_string() {
        // Integers: 10 > 9 (as strings "10" < "9").
        assert!(holds("n > 9", "10"));
        assert!(holds("n == 007", "7"));
        // Not both integers: strings, lexicographic.
        assert!(holds("n < 9a", "10"));
        assert!(holds("name < bob", "alice"));
        assert!(!holds("name > bob", "alice"));
        // Dates: equal instants written differently.
        assert!(holds("d == 2024-03-15T00:00", "2024-03-15"));
        assert!(holds("d == 2024-03-15T12:00+0200", "2024-03-15T10:00:00Z"));
        assert!(holds("d < 2024-03-15T10:00+0000", "2024-03-15 11:00:00+02:00"));
        assert!(holds("d >= 2024-01-01", "2024-03-15T08:00"));
        // Naive against aware: never equal, never ordered.
        assert!(!holds("d == 2024-03-15T00:00Z", "2024-03-15"));
        assert!(holds("d != 2024-03-15T00:00Z", "2024-03-15"));
        assert!(!holds("d < 2025-01-01T00:00Z", "2024-03-15"));
        assert!(!holds("d > 2025-01-01T00:00Z", "2024-03-15"));
    }

    #[test]
    fn generic_missing_key_is_false() {
        let now = event_time();
        for text in
            ["hashlib == sha256", "hashlib != sha256", "x !in a,b", "x !matches y", "d !date_within_last 1d"]
        {
            assert!(!cond(text).holds(None, &now), "{text}");
        }
    }

    #[test]
    fn generic_dates_with_now() {
        // {now}+7d is 2024-03-22T10:15+0000.
        let c = "validity_period_end date_before {now}+7d";
        assert!(holds(c, "2024-03-20T08:00+0000"));
        assert!(!holds(c, "2024-03-22T10:15+0000"));
        assert!(!holds(c, "2024-04-01T00:00+0000"));
        // Naive stored value against the aware {now}: false either way.
        assert!(!holds(c, "2024-03-20T08:00"));
        assert!(!holds("end date_after {now}", "2024-03-20T08:00"));
        assert!(holds("end date_after {now}-5h", "2024-03-15T06:30+0100"));
        assert!(!holds("end date_after {now}-5h", "2024-03-15T06:00+0100"));
        assert!(holds("end date_after 2024-03-01", "2024-03-02"));
        assert!(!holds("end date_after 2024-03-01", "garbage"));
        // Other comparators see the substituted text too.
        assert!(holds("stamp == {now}", "2024-03-15T10:15+0000"));
        assert!(holds("stamp == {now}-1d", "2024-03-14T10:15:00Z"));
        assert!(holds("stamp string_contains {now}+30m", "x 2024-03-15T10:45+0000 y"));
    }

    #[test]
    fn generic_date_within_last() {
        let c = "last_auth date_within_last 7d";
        assert!(holds(c, "2024-03-10T00:00:00+00:00"));
        assert!(holds(c, "2024-03-10 00:00:00.123456+01:00"));
        assert!(!holds(c, "2024-03-01T00:00+0000"));
        // Naive is read as UTC: 7 days minus half a second before now.
        assert!(holds(c, "2024-03-08T10:15:43"));
        assert!(!holds(c, "2024-03-08T10:15:42.5"));
        assert!(holds("last_auth date_within_last 12h", "2024-03-15T00:00Z"));
        assert!(holds("last_auth date_within_last 1y", "2023-03-20"));
        assert!(holds("last_auth date_within_last 30m", "2024-03-15T09:50Z"));
        assert!(holds("last_auth !date_within_last 30m", "2024-03-15T09:40Z"));
        // Unparsable stored value: false for the negation as well.
        assert!(!holds("last_auth !date_within_last 30m", "yesterday"));
        assert!(holds("last_auth date_within_last 18446744073709551615y", "0001-01-01"));
    }

    #[test]
    fn iso_dates() {
        let naive = |s: &str| matches!(parse_iso(s), Some(When::Naive(_)));
        let aware = |s: &str| matches!(parse_iso(s), Some(When::Aware(_)));
        assert!(naive("2024-03-15"));
        assert!(naive("2024-03-15T10"));
        assert!(naive("2024-03-15 10:15"));
        assert!(naive("2024-03-15T10:15:42,25"));
        assert!(aware("2024-03-15T10:15Z"));
        assert!(aware("2024-03-15T10:15-05"));
        assert!(aware("2024-03-15T10:15:42.123456789123+05:30"));
        for bad in [
            "2024-3-15",
            "2024-02-30",
            "2024-03-15T",
            "2024-03-15T25:00",
            "2024-03-15T10:15+24:00",
            "15.03.2024",
            "2024-03-15T10:15:42.",
            "2024-03-15Z",
            "é",
            "",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }

    // --- tags --------------------------------------------------------------

    fn render(template: &str, values: &TagValues<'_>) -> String {
        render_tags(template, values, &event_time()).unwrap()
    }

    #[test]
    fn tags_spec_example_and_offsets() {
        let v = TagValues::default();
        assert_eq!(render("expires {now}+7d", &v), "expires 2024-03-22 10:15:42.500000+0000");
        assert_eq!(render("{now}", &v), "2024-03-15 10:15:42.500000+0000");
        assert_eq!(render("at {current_time}-12h.", &v), "at 2024-03-14 22:15:42.500000+0000.");
        assert_eq!(render("{now}+30s", &v), "2024-03-15 10:16:12.500000+0000");
        assert_eq!(render("{now}+10m", &v), "2024-03-15 10:25:42.500000+0000");
        // One offset applies to every time tag.
        assert_eq!(
            render("{now} / {current_time}+1d", &v),
            "2024-03-16 10:15:42.500000+0000 / 2024-03-16 10:15:42.500000+0000"
        );
        // Both carry one: {current_time}'s wins, {now}'s stays literal.
        assert_eq!(
            render("{now}+1d {current_time}-1h", &v),
            "2024-03-15 09:15:42.500000+0000+1d 2024-03-15 09:15:42.500000+0000"
        );
        // Not an offset: no sign, unknown unit, no digits.
        assert_eq!(render("{now}5d", &v), "2024-03-15 10:15:42.500000+00005d");
        assert_eq!(render("{now}+5w", &v), "2024-03-15 10:15:42.500000+0000+5w");
        assert_eq!(render("{now}+d", &v), "2024-03-15 10:15:42.500000+0000+d");
    }

    #[test]
    fn tags_wall_clock_offset_in_a_zone() {
        // +1d across the start of summer time in Berlin keeps 10:00 local.
        let now = date(2024, 3, 30).at(10, 0, 0, 0).in_tz("Europe/Berlin").unwrap();
        let out = render_tags("{now}+1d", &TagValues::default(), &now).unwrap();
        assert_eq!(out, "2024-03-31 10:00:00.000000+0200");
    }

    #[test]
    fn tags_values_and_absent() {
        let full = TagValues {
            client_ip: Some("10.0.0.7"),
            front: "radius",
            username: Some("alice"),
            realm: Some("corp"),
        };
        assert_eq!(
            render("{client_ip} {ua_browser} {ua_string} {username}@{realm}", &full),
            "10.0.0.7 radius radius alice@corp"
        );
        let empty = TagValues { client_ip: None, front: "", username: None, realm: Some("") };
        assert_eq!(render("{client_ip} {ua_string} {username} {realm}", &empty), "N/A N/A N/A N/A");
    }

    #[test]
    fn tags_braces() {
        let v = TagValues::default();
        assert_eq!(render("{{x}}", &v), "{x}");
        assert_eq!(render("{{now}}+1d", &v), "{now}+1d");
        assert_eq!(render("{{{realm}}}", &v), "{N/A}");
        assert_eq!(render("no tags", &v), "no tags");
        assert_eq!(render("", &v), "");
        assert!(check_tags("expires {now}+7d by {client_ip} {{ok}}").is_ok());
        for (bad, named) in [
            ("{nope}", "{nope}"),
            ("{}", "{}"),
            ("{ now }", "{ now }"),
            ("{now:%Y}", "{now:%Y}"),
            ("a { b", "'{"),
            ("a } b", "'}'"),
            ("{now}}", "'}'"),
            ("{{now}", "'}'"),
            ("{now", "'{"),
        ] {
            let err = check_tags(bad).unwrap_err();
            assert!(err.contains(named), "{bad:?}: {err}");
            assert!(render_tags(bad, &v, &event_time()).is_err());
        }
        assert!(check_tags("{now}+99999999999999999999d").is_err());
        assert!(check_tags("{now}+9999999d").is_err());
        assert!(check_tags("x+99999999999999999999d").is_ok());
    }

    #[test]
    fn nothing_panics_on_odd_input() {
        let now = event_time();
        let odd = [
            "",
            "'",
            "''",
            "'=='",
            "k '",
            "é'é'==é",
            "k == {now}+",
            "k == {now}-9223372036854775808s",
            "k date_within_last 99999999999999999999999y",
            "{",
            "}",
            "{{{",
            "}}}",
            "{é}",
            "k matches ^$",
            "\u{0}",
            "k\u{a0}in\u{a0}x",
            "k !",
            "k !=",
            "k '!'",
            "{now}+1e",
            "{now}-",
            "💥 == 💥",
        ];
        for text in odd {
            let _ = int_condition(text, 0);
            let _ = check_int_condition(text);
            if let Ok(c) = GenericCondition::parse(text) {
                let _ = c.holds(Some(text), &now);
            }
            let _ = check_tags(text);
            let _ = render_tags(text, &TagValues::default(), &now);
            let _ = parse_iso(text);
            let _ = parse_window(text);
        }
    }
}

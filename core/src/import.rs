//! Bulk import of hotp/totp tokens (`otpd token import FILE`): seed files
//! of hardware-token vendors, and the million tokens of a benchmark.
//!
//! The format is privacyIDEA's CSV, one token a line:
//!
//! ```text
//! serial, key, type[, digits[, timestep[, user[, realm[, hash]]]]]
//! ```
//!
//! Fields are separated by commas and trimmed; blank lines and lines whose
//! first non-blank character is `#` are skipped; CRLF line ends and a UTF-8
//! byte-order mark are accepted. `key` is hex as for `token init --otpkey`;
//! `type` is `hotp` or `totp` (any case); empty optional fields take the
//! defaults of `token init` (6 digits, 30-second steps, sha1, no owner).
//! `timestep` applies to totp only; `user` is resolved like `token init
//! --user` with `realm` as `--realm`; `realm` alone puts an unowned token in
//! that realm.
//!
//! Parsing never panics, whatever the input, and bounds what it accepts:
//! lines of at most [`MAX_LINE`] bytes, at most [`MAX_TOKENS`] tokens. Every
//! refusal names the 1-based line. An import is all or nothing: every line
//! is checked (syntax, key, serial, duplicates in the file, serials already
//! in the store, owners, enrollment limits) and the tokens are written in
//! one transaction with one audit record (`token_load`); any refusal
//! leaves the store as it was.

use std::fmt;
use std::io::{BufRead, Read};

use zeroize::Zeroizing;

use crate::Otpd;
use crate::admin::{AdminContext, NewToken, parse_otpkey, validate_serial};
use crate::error::{Error, Result};
use crate::limits;
use crate::otp::HashAlgorithm;
use crate::store::{AuditRecord, StoreError};
use crate::token::{DEFAULT_OTPLEN, DEFAULT_TIMESTEP, Owner, StoredPin, Token, TokenType};

/// The longest line accepted, in bytes (without its line end).
pub const MAX_LINE: usize = 4096;
/// The most tokens one file may hold.
pub const MAX_TOKENS: usize = 10_000_000;
/// `serial, key, type, digits, timestep, user, realm, hash`.
const MAX_FIELDS: usize = 8;
const FORMAT: &str = "serial, key, type[, digits[, timestep[, user[, realm[, hash]]]]]";

/// A refused line of an import file.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ImportError {
    /// 1-based.
    pub line: usize,
    pub reason: Box<Error>,
}

impl ImportError {
    fn new(line: usize, reason: Error) -> Self {
        ImportError { line, reason: Box::new(reason) }
    }
}

/// One token line, checked: a valid serial, a valid key, and options that
/// fit the type. Only the parser makes them. Boxed strings keep a million
/// rows small.
pub struct ImportRow {
    pub(crate) line: usize,
    pub(crate) serial: Box<str>,
    pub(crate) key: Zeroizing<Box<[u8]>>,
    pub(crate) token_type: TokenType,
    pub(crate) digits: u32,
    pub(crate) timestep: u32,
    pub(crate) user: Option<Box<str>>,
    pub(crate) realm: Option<Box<str>>,
    pub(crate) hash: HashAlgorithm,
}

impl ImportRow {
    pub fn line(&self) -> usize {
        self.line
    }
    pub fn serial(&self) -> &str {
        &self.serial
    }
    pub fn token_type(&self) -> TokenType {
        self.token_type
    }
    pub fn digits(&self) -> u32 {
        self.digits
    }
    pub fn timestep(&self) -> u32 {
        self.timestep
    }
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }
    pub fn hash(&self) -> HashAlgorithm {
        self.hash
    }
}

/// Without the key.
impl fmt::Debug for ImportRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportRow")
            .field("line", &self.line)
            .field("serial", &self.serial)
            .field("token_type", &self.token_type)
            .field("digits", &self.digits)
            .field("timestep", &self.timestep)
            .field("user", &self.user)
            .field("realm", &self.realm)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// What an import did: how many tokens, the first and last serial (in
/// file order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub count: usize,
    pub first: String,
    pub last: String,
}

fn invalid(line: usize, message: impl Into<String>) -> ImportError {
    ImportError::new(line, Error::InvalidArgument(message.into()))
}

/// A field as shown in a message: quoted, and cut short.
fn shown(field: &str) -> String {
    const MAX: usize = 40;
    if field.chars().count() <= MAX {
        format!("'{field}'")
    } else {
        format!("'{}...'", field.chars().take(MAX).collect::<String>())
    }
}

/// Parses one line (without its `\n`; a `\r` before it is dropped). `None`
/// for a blank or comment line.
pub fn parse_line(raw: &str, line: usize) -> Result<Option<ImportRow>, ImportError> {
    let raw = raw.strip_suffix('\r').unwrap_or(raw);
    let raw = if line == 1 { raw.strip_prefix('\u{feff}').unwrap_or(raw) } else { raw };
    if raw.len() > MAX_LINE {
        return Err(invalid(line, format!("the line is longer than {MAX_LINE} bytes")));
    }
    let text = raw.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid(line, "the line holds a control character"));
    }
    let mut fields = [""; MAX_FIELDS];
    let mut n = 0;
    for field in text.split(',') {
        if n == MAX_FIELDS {
            return Err(invalid(line, format!("more than {MAX_FIELDS} fields; the format is '{FORMAT}'")));
        }
        fields[n] = field.trim();
        n += 1;
    }
    if n < 3 {
        return Err(invalid(
            line,
            format!("{n} field(s), but serial, key and type are required; the format is '{FORMAT}'"),
        ));
    }
    let [serial, key, kind, digits, timestep, user, realm, hash] = fields;
    validate_serial(serial).map_err(|e| ImportError::new(line, e))?;
    let key = parse_otpkey(key).map_err(|e| ImportError::new(line, e))?;
    let token_type = match TokenType::parse(kind) {
        Some(t @ (TokenType::Hotp | TokenType::Totp)) => t,
        Some(t) => return Err(invalid(line, format!("{t} tokens cannot be imported, only hotp and totp"))),
        None if kind.is_empty() => return Err(invalid(line, "the token type is missing: use hotp or totp")),
        None => return Err(invalid(line, format!("unknown token type {}: use hotp or totp", shown(kind)))),
    };
    let digits = match digits {
        "" => DEFAULT_OTPLEN,
        "6" => 6,
        "8" => 8,
        other => return Err(invalid(line, format!("digits must be 6 or 8, not {}", shown(other)))),
    };
    let timestep = match (timestep, token_type) {
        ("", _) => DEFAULT_TIMESTEP,
        (_, TokenType::Hotp) => {
            return Err(invalid(line, "a timestep applies only to totp tokens, not to hotp"));
        }
        ("30", _) => 30,
        ("60", _) => 60,
        (other, _) => {
            return Err(invalid(line, format!("timestep must be 30 or 60 seconds, not {}", shown(other))));
        }
    };
    let hash = match hash {
        "" => HashAlgorithm::default(),
        other => HashAlgorithm::parse(other).ok_or_else(|| {
            invalid(line, format!("hash must be sha1, sha256 or sha512, not {}", shown(other)))
        })?,
    };
    let optional = |f: &str| (!f.is_empty()).then(|| Box::from(f));
    Ok(Some(ImportRow {
        line,
        serial: serial.into(),
        // A copy of exactly the key's length; `key` is wiped when dropped.
        key: Zeroizing::new(key.to_vec().into_boxed_slice()),
        token_type,
        digits,
        timestep,
        user: optional(user),
        realm: optional(realm),
        hash,
    }))
}

fn push(rows: &mut Vec<ImportRow>, row: Option<ImportRow>, line: usize) -> Result<(), ImportError> {
    if let Some(row) = row {
        if rows.len() == MAX_TOKENS {
            return Err(invalid(line, format!("more than {MAX_TOKENS} tokens; split the file")));
        }
        rows.push(row);
    }
    Ok(())
}

/// Parses a whole file held in memory.
pub fn parse_csv(text: &str) -> Result<Vec<ImportRow>, ImportError> {
    let mut rows = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        push(&mut rows, parse_line(raw, i + 1)?, i + 1)?;
    }
    check_duplicates(&rows)?;
    Ok(rows)
}

/// Parses a file line by line, never reading more than one line of
/// [`MAX_LINE`] bytes at a time besides the rows: text that is not UTF-8
/// and read errors are refused with their line.
pub fn parse_reader(mut reader: impl BufRead) -> Result<Vec<ImportRow>, ImportError> {
    let mut rows = Vec::new();
    let mut buf = Vec::with_capacity(256);
    let mut line = 0;
    loop {
        line += 1;
        buf.clear();
        // One byte more than a line and its CRLF tells a longer line.
        let n = reader
            .by_ref()
            .take(MAX_LINE as u64 + 3)
            .read_until(b'\n', &mut buf)
            .map_err(|e| invalid(line, format!("cannot read the line: {e}")))?;
        if n == 0 {
            break;
        }
        let raw = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if raw.len() > MAX_LINE + 1 {
            return Err(invalid(line, format!("the line is longer than {MAX_LINE} bytes")));
        }
        let raw = std::str::from_utf8(raw).map_err(|_| invalid(line, "the line is not UTF-8 text"))?;
        push(&mut rows, parse_line(raw, line)?, line)?;
    }
    check_duplicates(&rows)?;
    Ok(rows)
}

/// Refuses a serial that appears twice, naming its second line (the
/// earliest such line in the file) and its first.
pub fn check_duplicates(rows: &[ImportRow]) -> Result<(), ImportError> {
    // Sorting indices costs far less memory than a set of the serials.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_unstable_by(|&a, &b| rows[a].serial.cmp(&rows[b].serial).then(a.cmp(&b)));
    let mut found: Option<(&ImportRow, &ImportRow)> = None;
    for pair in order.windows(2) {
        let (a, b) = (&rows[pair[0]], &rows[pair[1]]);
        // Within a group of equal serials (in file order) the earliest
        // repeat is the pair of its first two rows, which comes first.
        if a.serial == b.serial && found.is_none_or(|(_, second)| b.line < second.line) {
            found = Some((a, b));
        }
    }
    match found {
        Some((first, second)) => {
            Err(invalid(second.line, format!("serial '{}' is already on line {}", second.serial, first.line)))
        }
        None => Ok(()),
    }
}

/// Where the tokens of a row go: the owner's resolver and realm, or a realm.
#[derive(PartialEq, Eq)]
enum Place {
    Nowhere,
    Realm(String),
    Owned { realm: String, resolver: String },
}

impl Otpd {
    /// Imports parsed rows (`token import`), all or nothing, between the
    /// pre and post handlers of `token_load`.
    pub fn import_tokens(&self, ctx: &AdminContext, rows: Vec<ImportRow>) -> Result<Imported> {
        self.with_events(&["token_load"], ctx, None, None, || self.import(ctx, rows), |_| None)
    }

    fn import(&self, ctx: &AdminContext, mut rows: Vec<ImportRow>) -> Result<Imported> {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Err(Error::InvalidArgument("nothing to import: the file holds no token lines".into()));
        };
        let (first, last) = (first.serial.to_string(), last.serial.to_string());
        let count = rows.len();
        let at = |line: usize| move |e: Error| Error::from(ImportError::new(line, e));

        // Owners and realms are resolved before the write transaction, so
        // that slow userstores do not hold the store's write lock. A row
        // keeps the owner's login; its realm and resolver go to a table.
        let mut places = vec![Place::Nowhere];
        let mut placement: Vec<u32> = Vec::with_capacity(count);
        for row in &mut rows {
            let place = match (&row.user, &row.realm) {
                (Some(user), realm) => {
                    let u = self.realms.resolve(user, realm.as_deref(), None).map_err(at(row.line))?;
                    row.user = Some(u.login.into());
                    Place::Owned { realm: u.realm, resolver: u.resolver }
                }
                (None, Some(realm)) => Place::Realm(self.realms.canonical(realm).map_err(at(row.line))?),
                (None, None) => Place::Nowhere,
            };
            let index = places.iter().position(|p| *p == place).unwrap_or_else(|| {
                places.push(place);
                places.len() - 1
            });
            placement.push(index as u32);
        }

        let now = self.clock.now();
        let mut tx = self.store.write()?;
        let mut tally = limits::Tally::new(&self.policies, ctx.client_ip());
        for (row, index) in rows.into_iter().zip(placement) {
            let line = row.line;
            let (owner, realms) = match &places[index as usize] {
                Place::Nowhere => (None, Vec::new()),
                Place::Realm(realm) => (None, vec![realm.clone()]),
                Place::Owned { realm, resolver } => {
                    let owner = row.user.map(|login| Owner {
                        login: login.into(),
                        realm: realm.clone(),
                        resolver: resolver.clone(),
                    });
                    (owner, vec![realm.clone()])
                }
            };
            if let Some(owner) = &owner {
                tally.add_user(tx.as_ref(), owner, row.token_type).map_err(at(line))?;
            }
            for realm in &realms {
                tally.add_realm(tx.as_ref(), realm).map_err(at(line))?;
            }
            let secret = self.key.seal(&Token::secret_context(&row.serial), &row.key)?;
            let token = NewToken {
                serial: row.serial.into(),
                token_type: row.token_type,
                secret,
                otplen: row.digits,
                hash: row.hash,
                timestep: row.timestep,
                description: String::new(),
                pin: StoredPin::Empty,
                owner,
                realms,
                created: now,
            }
            .build();
            match tx.insert_token(&token) {
                Ok(_) => {}
                Err(e @ StoreError::DuplicateSerial(_)) => return Err(at(line)(e.into())),
                Err(e) => return Err(e.into()),
            }
        }
        tx.append_audit(&AuditRecord {
            time: now,
            actor: ctx.actor.clone(),
            action: "token_load".into(),
            front: ctx.front.name().into(),
            serial: None,
            user: None,
            realm: None,
            client: ctx.client.clone(),
            success: true,
            message: format!("imported {}", tokens(count)),
        })?;
        tx.commit()?;
        Ok(Imported { count, first, last })
    }
}

/// `1 token`, `2 tokens`.
pub fn tokens(n: usize) -> String {
    if n == 1 { "1 token".into() } else { format!("{n} tokens") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Fixture, RFC_KEY_HEX};

    const KEY: &str = RFC_KEY_HEX;

    fn one(line: &str) -> ImportRow {
        parse_line(line, 1).unwrap().unwrap()
    }

    /// The line and message of a refused file.
    fn refused(text: &str) -> (usize, String) {
        let e = parse_csv(text).unwrap_err();
        (e.line, e.reason.to_string())
    }

    #[test]
    fn import_parses_good_lines_with_defaults() {
        let r = one(&format!("H1,{KEY},hotp"));
        assert_eq!((r.serial(), r.token_type(), r.digits(), r.timestep()), ("H1", TokenType::Hotp, 6, 30));
        assert_eq!((r.user(), r.realm(), r.hash()), (None, None, HashAlgorithm::Sha1));
        assert_eq!(&r.key[..], b"12345678901234567890");

        let r = one(&format!("  T1 , {KEY} , TOTP , 8 , 60 , alice , sales , SHA256 "));
        assert_eq!((r.serial(), r.token_type(), r.digits(), r.timestep()), ("T1", TokenType::Totp, 8, 60));
        assert_eq!((r.user(), r.realm(), r.hash()), (Some("alice"), Some("sales"), HashAlgorithm::Sha256));

        // Empty optional fields take the defaults; an hotp line may leave
        // the timestep empty.
        let r = one(&format!("H2,{KEY},hotp,,,bob,,sha512"));
        assert_eq!((r.digits(), r.timestep(), r.user(), r.realm()), (6, 30, Some("bob"), None));
        assert_eq!(r.hash(), HashAlgorithm::Sha512);
        let r = one(&format!("T2,{KEY},totp,,,,corp"));
        assert_eq!((r.digits(), r.timestep(), r.user(), r.realm()), (6, 30, None, Some("corp")));
        let r = one(&format!("T3,{KEY},totp,8,,,,"));
        assert_eq!((r.digits(), r.timestep(), r.hash()), (8, 30, HashAlgorithm::Sha1));
    }

    #[test]
    fn import_skips_comments_blank_lines_crlf_and_bom() {
        let text = format!(
            "\u{feff}# vendor seed file\r\n\r\n   \r\nH1,{KEY},hotp\r\n  # indented comment\r\nT1,{KEY},totp,6,30\r\n"
        );
        let rows = parse_csv(&text).unwrap();
        assert_eq!(rows.iter().map(|r| (r.line(), r.serial())).collect::<Vec<_>>(), [(4, "H1"), (6, "T1")]);
        // The same through the reader, and a last line without a line end.
        let rows = parse_reader(format!("{text}T2,{KEY},totp").as_bytes()).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].line(), 7);
        assert!(parse_csv("").unwrap().is_empty());
        assert!(parse_csv("# nothing\n\n").unwrap().is_empty());
    }

    #[test]
    fn import_errors_name_their_line() {
        let good = format!("H0,{KEY},hotp\n");
        let cases: &[(String, &str)] = &[
            (format!("bad serial!,{KEY},hotp"), "serial 'bad serial!' is invalid"),
            (format!(",{KEY},hotp"), "serial '' is invalid"),
            (format!("{},{KEY},hotp", "x".repeat(41)), "is invalid"),
            ("H1,3132,hotp".into(), "OTP key is invalid: it is 2 bytes long"),
            ("H1,31323,hotp".into(), "odd number"),
            ("H1,zz,hotp".into(), "hexadecimal"),
            ("H1,,hotp".into(), "hexadecimal"),
            (format!("H1,{KEY},pw"), "pw tokens cannot be imported, only hotp and totp"),
            (format!("H1,{KEY},spass"), "spass tokens cannot be imported"),
            (format!("H1,{KEY},yubikey"), "unknown token type 'yubikey': use hotp or totp"),
            (format!("H1,{KEY},"), "the token type is missing"),
            (format!("H1,{KEY}"), "2 field(s), but serial, key and type are required"),
            ("H1".into(), "1 field(s)"),
            (format!("H1,{KEY},hotp,7"), "digits must be 6 or 8, not '7'"),
            (format!("H1,{KEY},hotp,six"), "digits must be 6 or 8, not 'six'"),
            (format!("H1,{KEY},hotp,6,30"), "a timestep applies only to totp tokens, not to hotp"),
            (format!("T1,{KEY},totp,6,45"), "timestep must be 30 or 60 seconds, not '45'"),
            (format!("T1,{KEY},totp,6,-1"), "not '-1'"),
            (format!("T1,{KEY},totp,6,30,alice,corp,md5"), "hash must be sha1, sha256 or sha512, not 'md5'"),
            (format!("T1,{KEY},totp,6,30,alice,corp,sha1,extra"), "more than 8 fields"),
            (format!("T1,{KEY},totp,6,30,al\u{7}ice"), "control character"),
            (format!("T1,{KEY},totp,6,30,alice\0"), "control character"),
        ];
        for (line, message) in cases {
            let (n, text) = refused(&format!("# header\n{good}\n{line}\n{good}"));
            assert_eq!(n, 4, "{line}: {text}");
            assert!(text.contains(message), "{line}: {text}");
            assert!(!text.contains(KEY), "the key stays out of messages: {text}");
        }
        // A long field is cut short in the message.
        let (_, text) = refused(&format!("H1,{KEY},{}", "h".repeat(1000)));
        assert!(text.len() < 200, "{text}");
    }

    #[test]
    fn import_refuses_duplicate_serials_in_the_file() {
        let text =
            format!("A,{KEY},hotp\nB,{KEY},hotp\nC,{KEY},hotp\nB,{KEY},totp\nA,{KEY},hotp\nB,{KEY},hotp\n");
        let (line, text) = refused(&text);
        assert_eq!(line, 4);
        assert!(text.contains("serial 'B' is already on line 2"), "{text}");
        // Serials are case-sensitive, as in the store.
        assert_eq!(parse_csv(&format!("a,{KEY},hotp\nA,{KEY},hotp\n")).unwrap().len(), 2);
    }

    #[test]
    fn import_bounds_line_length() {
        let long = format!("H1,{KEY},hotp,,,{}", "u".repeat(MAX_LINE));
        let text = format!("H0,{KEY},hotp\n{long}\n");
        assert_eq!(refused(&text).0, 2);
        assert!(refused(&text).1.contains("longer than 4096 bytes"));
        let e = parse_reader(text.as_bytes()).unwrap_err();
        assert_eq!(e.line, 2);
        // A huge line with no line end is refused without reading it all.
        let mut endless = std::io::repeat(b'x').take(1 << 30);
        let e = parse_reader(std::io::BufReader::new(&mut endless)).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(endless.limit() > (1 << 29));
        // Exactly MAX_LINE bytes (with or without CR) is fine.
        let user = "u".repeat(MAX_LINE - format!("H1,{KEY},hotp,,,").len());
        let exact = format!("H1,{KEY},hotp,,,{user}");
        assert_eq!(exact.len(), MAX_LINE);
        assert_eq!(parse_csv(&format!("{exact}\r\n")).unwrap().len(), 1);
        assert_eq!(
            parse_reader(format!("{exact}\r\n{exact}").replace("H1", "H2").as_bytes()).unwrap_err().line,
            2
        );
        assert_eq!(parse_reader(format!("{exact}\r\n").as_bytes()).unwrap().len(), 1);
        assert_eq!(parse_reader(format!("{exact}\n").as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn import_reader_refuses_non_utf8_with_its_line() {
        let mut bytes = format!("H1,{KEY},hotp\n").into_bytes();
        bytes.extend_from_slice(b"H2,\xff\xfe,hotp\n");
        let e = parse_reader(&bytes[..]).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("line 2: the line is not UTF-8 text"), "{e}");
    }

    #[test]
    fn import_parser_survives_arbitrary_input() {
        // A cheap stand-in for the fuzzer: odd bytes and shapes never panic.
        let samples = [
            ",,,,,,,,,,,,,",
            ",",
            "\r",
            "\r\r\n",
            "#",
            "\u{feff}",
            "\u{feff}\u{feff}",
            "é,é,é",
            "H1,ff,hotp,\u{0}",
            "H1, 00000000000000000000 ,totp,8,60,@,@,sha1",
            "H1,ＦＦ,hotp",
            "\t,\t,\t",
        ];
        for s in samples {
            let _ = parse_csv(s);
            let _ = parse_reader(s.as_bytes());
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    b"0123456789abcdefHT,, \r\n#\xff\xc3"[(state % 25) as usize]
                })
                .collect();
            let _ = parse_reader(&bytes[..]);
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let _ = parse_csv(s);
            }
        }
    }

    #[test]
    fn import_row_debug_hides_the_key() {
        let r = one(&format!("H1,{KEY},hotp"));
        let shown = format!("{r:?}");
        assert!(shown.contains("H1") && !shown.contains("49, 50") && !shown.contains(KEY), "{shown}");
    }

    fn import(f: &Fixture, text: &str) -> Result<Imported> {
        let rows = parse_csv(text).map_err(Error::from)?;
        f.otpd.import_tokens(&f.ctx(), rows)
    }

    fn serials(f: &Fixture) -> Vec<String> {
        f.otpd.list_tokens(None, None).unwrap().into_iter().map(|t| t.serial).collect()
    }

    fn line_of(r: Result<Imported>) -> (usize, String) {
        match r {
            Err(Error::Import(e)) => (e.line, e.reason.to_string()),
            other => panic!("expected a refused line, got {other:?}"),
        }
    }

    #[test]
    fn import_writes_tokens_like_enrollment() {
        let f = Fixture::new();
        let text = format!(
            "H1,{KEY},hotp\nT1,{KEY},totp,8,60,alice,,sha256\nP1,{KEY},hotp,,,,sales\nB1,{KEY},hotp,,,bob@sales\n"
        );
        let done = import(&f, &text).unwrap();
        assert_eq!(done, Imported { count: 4, first: "H1".into(), last: "B1".into() });
        assert_eq!(serials(&f), ["H1", "T1", "P1", "B1"]);

        let h = f.otpd.token("H1").unwrap();
        let mut spec = crate::InitSpec::new(TokenType::Hotp);
        spec.serial = Some("E1".into());
        spec.otpkey = Some(Zeroizing::new(KEY.into()));
        let e = f.otpd.init_token(&f.ctx(), &spec).unwrap().token;
        // Same defaults as token init.
        assert_eq!(
            (h.otplen, h.timestep, h.count_window, h.sync_window, h.maxfail, h.time_window, h.active),
            (e.otplen, e.timestep, e.count_window, e.sync_window, e.maxfail, e.time_window, e.active)
        );
        assert_eq!((h.pin.clone(), h.owner.clone(), h.realms.clone()), (StoredPin::Empty, None, vec![]));
        assert_eq!(h.created, f.otpd.now());
        assert_eq!(&h.open_secret(&f.otpd.key).unwrap()[..], b"12345678901234567890");

        let t = f.otpd.token("T1").unwrap();
        assert_eq!(
            (t.token_type, t.otplen, t.timestep, t.hash),
            (TokenType::Totp, 8, 60, HashAlgorithm::Sha256)
        );
        let owner = t.owner.unwrap();
        assert_eq!(
            (owner.login.as_str(), owner.realm.as_str(), owner.resolver.as_str()),
            ("alice", "corp", "corp-users")
        );
        assert_eq!(t.realms, ["corp"]);
        assert_eq!(t.assigned, Some(f.otpd.now()));
        let p = f.otpd.token("P1").unwrap();
        assert_eq!((p.owner, p.realms), (None, vec!["sales".to_string()]));
        let b = f.otpd.token("B1").unwrap();
        assert_eq!(b.owner.unwrap().realm, "sales");

        // alice logs in with the imported totp token (8 digits, 60 s, sha256).
        let code = crate::otp::hotp(
            b"12345678901234567890",
            (f.otpd.now().as_second() / 60) as u64,
            8,
            HashAlgorithm::Sha256,
        );
        assert!(
            f.otpd
                .authenticate(&crate::AuthRequest::new("alice", &code, crate::Front::Cli))
                .unwrap()
                .is_accept()
        );

        // One audit record for the whole import, without serial.
        let audit = f.otpd.audit(10).unwrap();
        let load: Vec<_> = audit.iter().filter(|a| a.action == "token_load").collect();
        assert_eq!(load.len(), 1);
        assert_eq!((load[0].serial.as_deref(), load[0].message.as_str()), (None, "imported 4 tokens"));
    }

    #[test]
    fn import_is_all_or_nothing() {
        let f = Fixture::new();
        import(&f, &format!("OLD,{KEY},hotp\n")).unwrap();
        let audit = f.otpd.audit(100).unwrap().len();
        // A bad last line imports nothing.
        let (line, text) = line_of(import(&f, &format!("N1,{KEY},hotp\nN2,{KEY},hotp\nN3,{KEY},hotp,7\n")));
        assert_eq!(line, 3, "{text}");
        // A serial that exists imports nothing (the tokens before it were
        // inserted in the transaction, and rolled back).
        let (line, text) = line_of(import(&f, &format!("N1,{KEY},hotp\nN2,{KEY},hotp\nOLD,{KEY},totp\n")));
        assert_eq!(line, 3);
        assert!(text.contains("a token with serial 'OLD' already exists"), "{text}");
        // An unknown user or realm.
        let (line, text) = line_of(import(&f, &format!("N1,{KEY},hotp\nN2,{KEY},hotp,,,mallory\n")));
        assert_eq!(line, 2);
        assert!(text.contains("user 'mallory' does not exist in realm 'corp'"), "{text}");
        let (line, text) = line_of(import(&f, &format!("N1,{KEY},hotp,,,alice,atlantis\n")));
        assert_eq!(line, 1);
        assert!(text.contains("realm 'atlantis' does not exist"), "{text}");
        let (line, _) = line_of(import(&f, &format!("N1,{KEY},hotp,,,,atlantis\n")));
        assert_eq!(line, 1);
        // Nothing to import.
        assert!(matches!(import(&f, "# empty\n"), Err(Error::InvalidArgument(_))));
        assert_eq!(serials(&f), ["OLD"]);
        assert_eq!(f.otpd.audit(100).unwrap().len(), audit);
    }

    /// A fixture with one enrollment policy (`head` before its actions).
    fn limited_where(head: &str, actions: &str) -> Fixture {
        Fixture::with_config(
            1_700_000_000,
            &format!(
                "[[policies]]\nname = \"limit\"\nscope = \"enrollment\"\n{head}\n[policies.actions]\n{actions}\n"
            ),
        )
    }

    fn limited(actions: &str) -> Fixture {
        limited_where("", actions)
    }

    #[test]
    fn import_applies_per_user_limits_across_the_file() {
        let f = limited("max_token_per_user = 2");
        let mut spec = crate::InitSpec::new(TokenType::Hotp);
        spec.user = Some("alice".into());
        f.otpd.init_token(&f.ctx(), &spec).unwrap();
        let before = serials(&f);
        // alice has 1; the file gives her 2 more: the second is refused.
        let text = format!(
            "A1,{KEY},hotp,,,alice\nB1,{KEY},hotp,,,bob\nA2,{KEY},totp,,,alice@corp\nB2,{KEY},totp,,,bob\n"
        );
        let (line, text) = line_of(import(&f, &text));
        assert_eq!(line, 3);
        assert!(text.contains("max_token_per_user = 2, policy 'limit'"), "{text}");
        assert_eq!(serials(&f), before);
        // Within the limit it goes through.
        import(&f, &format!("A1,{KEY},hotp,,,alice\nB1,{KEY},hotp,,,bob\nB2,{KEY},totp,,,bob\n")).unwrap();
        assert_eq!(f.otpd.list_tokens(Some("bob"), None).unwrap().len(), 2);
    }

    #[test]
    fn import_applies_type_limits_after_unlimited_tokens() {
        // The hotp tokens before the limited totp one count.
        let f = limited("totp_max_token_per_user = 1\nmax_token_per_user = 3");
        let text = format!(
            "A1,{KEY},hotp,,,alice\nA2,{KEY},totp,,,alice\nA3,{KEY},hotp,,,alice\nA4,{KEY},hotp,,,alice\n"
        );
        let (line, text) = line_of(import(&f, &text));
        assert_eq!(line, 4);
        assert!(text.contains("max_token_per_user = 3"), "{text}");
        let (line, text) = line_of(import(
            &f,
            &format!("A1,{KEY},totp,,,alice\nA2,{KEY},hotp,,,alice\nA3,{KEY},totp,,,alice\n"),
        ));
        assert_eq!(line, 3);
        assert!(text.contains("totp_max_token_per_user = 1"), "{text}");
        assert!(serials(&f).is_empty());
    }

    #[test]
    fn import_applies_realm_limits() {
        let f = limited_where("realms = [\"sales\"]", "max_token_per_realm = 3");
        import(&f, &format!("S1,{KEY},hotp,,,,sales\n")).unwrap();
        // Owned tokens join the owner's realm; pool tokens their realm.
        let text = format!(
            "C1,{KEY},hotp,,,alice\nS2,{KEY},hotp,,,,SALES\nC2,{KEY},hotp,,,,corp\nS3,{KEY},hotp,,,bob,sales\nS4,{KEY},hotp,,,,sales\n"
        );
        let (line, text) = line_of(import(&f, &text));
        assert_eq!(line, 5);
        assert!(text.contains("realm sales holds 3"), "{text}");
        assert_eq!(serials(&f), ["S1"]);
        // Other realms and unrealmed tokens are not limited.
        let text =
            format!("C1,{KEY},hotp,,,,corp\nC2,{KEY},hotp,,,,corp\nC3,{KEY},hotp,,,alice\nX1,{KEY},hotp\n");
        import(&f, &text).unwrap();
        import(&f, &format!("S2,{KEY},hotp,,,,sales\nS3,{KEY},hotp,,,bob,sales\n")).unwrap();
        let (line, _) = line_of(import(&f, &format!("S4,{KEY},hotp,,,,sales\n")));
        assert_eq!(line, 1);
    }

    #[test]
    fn import_fires_token_load_once() {
        let f = Fixture::with_config(
            1_700_000_000,
            "[[events]]\nname = \"loaded\"\nevents = [\"token_load\"]\nhandler = \"token\"\n\
             position = \"post\"\naction = \"enroll\"\noptions = { tokentype = \"pw\", realm = \"corp\" }\n",
        );
        // A refused import runs no post handler.
        assert!(import(&f, &format!("H1,{KEY},hotp\nH1,{KEY},hotp\n")).is_err());
        assert!(serials(&f).is_empty());
        import(&f, &format!("H1,{KEY},hotp\nH2,{KEY},hotp\n")).unwrap();
        let tokens = f.otpd.list_tokens(None, None).unwrap();
        let by_event: Vec<_> =
            tokens.iter().filter(|t| t.description == "enrolled by event 'loaded'").collect();
        assert_eq!(tokens.len(), 3);
        assert_eq!(by_event.len(), 1, "the handler ran once for the whole import");
        assert_eq!(by_event[0].token_type, TokenType::Pw);
    }
}

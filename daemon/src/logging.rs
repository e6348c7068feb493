//! Where the daemon's log lines go: stderr (the default; systemd's journal
//! captures it) or syslog (facility auth, identity `otpd`). Only `otpd serve`
//! installs a logger; the CLI prints its results instead. On stderr, the
//! lines logged while the store calls back a batch of logins (a commit
//! group's replies) are written together when the batch ends.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    Stderr,
    Syslog,
}

/// Installs the global logger. `RUST_LOG` may refine the level (default info).
pub fn init(target: LogTarget) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let failed = |e: &dyn std::fmt::Display| format!("cannot install the logger: {e}");
    match target {
        LogTarget::Stderr => {
            use std::io::IsTerminal;
            otpd_core::store::wrap_callback_batches(batched);
            // tracing escapes terminal control characters in every value
            // one character at a time, which cost more than the rest of a
            // decision line. Without colours a finished line holds no
            // control character of tracing's own, so `BatchedStderr`
            // escapes the same ones in one pass over it instead.
            let terminal = std::io::stderr().is_terminal();
            let layer = tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_timer(LineTime)
                .with_ansi(terminal)
                .with_ansi_sanitization(terminal)
                .with_writer(BatchedStderr { escape: !terminal });
            tracing_subscriber::registry().with(filter).with(layer).try_init().map_err(|e| failed(&e))
        }
        LogTarget::Syslog => {
            let (options, _) = <(syslog_tracing::Options, syslog_tracing::Facility)>::default();
            let syslog = syslog_tracing::Syslog::new(
                c"otpd",
                options | syslog_tracing::Options::LOG_PID,
                syslog_tracing::Facility::Auth,
            )
            .ok_or("syslog is already initialised")?;
            // syslog stamps its own time.
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_target(false)
                .without_time()
                .with_ansi(false)
                .with_writer(syslog)
                .try_init()
                .map_err(|e| failed(&*e))
        }
    }
}

/// The CLI's logger: warnings of the core on stderr, one plain line each.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A line's time as tracing's default timer writes it (RFC 3339, UTC,
/// microseconds: `2026-11-30T00:53:20.123456Z`), with the date and time of
/// day formatted once a second per thread instead of for every line
/// (tracing's timer took 2 300 instructions of each login's decision line).
struct LineTime;

thread_local! {
    static SECOND: RefCell<Second> = const { RefCell::new(Second { secs: u64::MAX, text: String::new() }) };
}

impl FormatTime for LineTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        SECOND.with_borrow_mut(|second| match since_epoch {
            Ok(t) if second.set(t.as_secs()) => {
                w.write_str(&second.text)?;
                // ASCII digits: always UTF-8.
                w.write_str(std::str::from_utf8(&fraction(t.subsec_micros())).unwrap_or_default())
            }
            // Before 1970 or past jiff's years: tracing's own formatting.
            _ => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        })
    }
}

/// The last whole second a thread formatted, up to its fraction.
struct Second {
    secs: u64,
    text: String,
}

impl Second {
    /// Makes `text` hold second `secs` since the epoch (formatting it only
    /// when it changed); `false` beyond jiff's range of years.
    fn set(&mut self, secs: u64) -> bool {
        if self.secs != secs {
            let Some(at) = i64::try_from(secs).ok().and_then(|s| jiff::Timestamp::from_second(s).ok()) else {
                return false;
            };
            self.text.clear();
            // Writing into a String cannot fail.
            let _ = write!(self.text, "{}", at.strftime("%Y-%m-%dT%H:%M:%S"));
            self.secs = secs;
        }
        true
    }
}

/// `.123456Z`: the microseconds and the zone of a line's time.
fn fraction(micros: u32) -> [u8; 8] {
    let mut text = *b".000000Z";
    let mut rest = micros;
    for digit in text[1..7].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    text
}

/// The lines a thread logs inside `batched`, not yet written.
struct Batch {
    lines: Vec<u8>,
    /// `batched` is running on this thread.
    open: bool,
}

thread_local! {
    static BATCH: RefCell<Batch> = const { RefCell::new(Batch { lines: Vec::new(), open: false }) };
}

/// A batch writes early beyond this, so that it never holds much.
const BATCH_BYTES: usize = 16 * 1024;

/// Runs a batch of the store's commit callbacks (the replies of a commit
/// group, each with its decision line) so that its lines reach stderr
/// with one `write` when it ends instead of one each. A line is held back
/// by at most the rest of its batch.
fn batched(batch: &mut dyn FnMut()) {
    if BATCH.with_borrow_mut(|b| std::mem::replace(&mut b.open, true)) {
        return batch(); // nested: the outer batch writes
    }
    /// Writes the batch's lines even when a callback panicked.
    struct Flush;
    impl Drop for Flush {
        fn drop(&mut self) {
            BATCH.with_borrow_mut(|b| {
                b.open = false;
                write_lines(&mut b.lines);
            });
        }
    }
    let _flush = Flush;
    batch();
}

/// Writes whole lines with one `write_all` (stderr's lock keeps other
/// threads' lines out of them) and empties `lines`, keeping its room.
fn write_lines(lines: &mut Vec<u8>) {
    if !lines.is_empty() {
        // Nowhere to report a failed write of the log itself.
        let _ = write_out(lines);
        lines.clear();
    }
}

#[cfg(not(test))]
fn write_out(lines: &[u8]) -> std::io::Result<()> {
    std::io::stderr().write_all(lines)
}

/// The tests see each write instead of stderr.
#[cfg(test)]
fn write_out(lines: &[u8]) -> std::io::Result<()> {
    tests::WRITES.with_borrow_mut(|w| w.push(lines.to_vec()));
    Ok(())
}

/// stderr, through the thread's batch while `batched` runs.
#[derive(Debug, Clone, Copy)]
struct BatchedStderr {
    /// Escape terminal control characters (tracing does not).
    escape: bool,
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = BatchedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

impl Write for BatchedStderr {
    /// tracing hands over one whole line per call.
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let held = BATCH.with_borrow_mut(|b| {
            if !b.open {
                return false;
            }
            if b.lines.len() + line.len() > BATCH_BYTES {
                write_lines(&mut b.lines);
            }
            self.append(line, &mut b.lines);
            true
        });
        if !held {
            if self.needs_escaping(line) {
                let mut escaped = Vec::new();
                escape_controls(line, &mut escaped);
                write_out(&escaped)?;
            } else {
                write_out(line)?;
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BatchedStderr {
    /// Printable ASCII and newlines pass as they are; the test is
    /// branch-free so that it runs over many bytes at a time.
    fn needs_escaping(self, line: &[u8]) -> bool {
        self.escape && !line.iter().fold(true, |p, &b| p & (matches!(b, b' '..=b'~') | (b == b'\n')))
    }

    fn append(self, line: &[u8], out: &mut Vec<u8>) {
        if self.needs_escaping(line) {
            escape_controls(line, out);
        } else {
            out.extend_from_slice(line);
        }
    }
}

/// Appends `line` with the characters that could drive a terminal written
/// as tracing's sanitising writes them: ESC, BEL, BS, FF and DEL as
/// `\x1b`.., the C1 controls U+0080 to U+009F as `\u{9b}`..
fn escape_controls(line: &[u8], out: &mut Vec<u8>) {
    let mut rest = line;
    // 0xc2 leads every C1 control in UTF-8 (and other characters too).
    while let Some(i) = rest.iter().position(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2)) {
        out.extend_from_slice(&rest[..i]);
        let (byte, next) = (rest[i], rest.get(i + 1).copied());
        rest = &rest[i + 1..];
        match (byte, next) {
            (0xc2, Some(c1 @ 0x80..=0x9f)) => {
                let _ = write!(out, "\\u{{{c1:x}}}");
                rest = &rest[1..];
            }
            (0xc2, _) => out.push(byte),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out.extend_from_slice(rest);
}

/// User-supplied text (a user name, messages that quote it) escaped for a
/// log line: a newline or quote typed at a login prompt must not forge a
/// line or a field.
pub fn clean(text: &str) -> String {
    // Most names escape to themselves: copied whole rather than char by
    // char (a decision line has two).
    if text.bytes().all(|b| matches!(b, b' '..=b'~') && !matches!(b, b'\\' | b'"' | b'\'')) {
        return text.to_owned();
    }
    text.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// What this thread wrote, one entry per `write`.
        pub(super) static WRITES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    fn writes() -> Vec<Vec<u8>> {
        WRITES.take()
    }

    fn log(line: &[u8]) {
        BatchedStderr { escape: false }.write_all(line).unwrap();
    }

    #[test]
    fn line_times_read_as_tracing_writes_them() {
        // Expected: Python's datetime, UTC.
        let mut second = Second { secs: u64::MAX, text: String::new() };
        for (secs, nanos, expected) in [
            (1_796_000_000, 123_456_789, "2026-11-30T00:53:20.123456Z"),
            (1_796_000_000, 999_999, "2026-11-30T00:53:20.000999Z"),
            (1_796_000_001, 5_000, "2026-11-30T00:53:21.000005Z"),
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 1_000, "2000-02-29T00:00:00.000001Z"),
        ] {
            assert!(second.set(secs));
            let micros = std::time::Duration::new(secs, nanos).subsec_micros();
            let text = format!("{}{}", second.text, std::str::from_utf8(&fraction(micros)).unwrap());
            assert_eq!(text, expected);
        }
        assert!(!second.set(u64::MAX - 1), "beyond jiff's years");

        // Now, beside tracing's own timer: the same text up to the fraction
        // (again if the second turned in between).
        let format = |timer: &dyn FormatTime| {
            let mut text = String::new();
            timer.format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut text)).unwrap();
            text
        };
        let same_second = (0..3).any(|_| {
            let (ours, theirs) = (format(&LineTime), format(&tracing_subscriber::fmt::time::SystemTime));
            assert_eq!(ours.len(), theirs.len(), "{ours} {theirs}");
            assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
            ours[..19] == theirs[..19]
        });
        assert!(same_second);
    }

    #[test]
    fn a_batch_writes_its_lines_with_one_write_when_it_ends() {
        writes();
        let mut during = Vec::new();
        batched(&mut || {
            log(b"first line\n");
            // A nested batch leaves the writing to the outer one.
            batched(&mut || log(b"second line\n"));
            during = writes();
        });
        assert!(during.is_empty(), "nothing written before the batch ends: {during:?}");
        assert_eq!(writes(), [b"first line\nsecond line\n".to_vec()]);
        assert!(!BATCH.with_borrow(|b| b.open));
        // Outside a batch each line is written at once.
        log(b"a line outside a batch\n");
        assert_eq!(writes(), [b"a line outside a batch\n".to_vec()]);
        batched(&mut || {});
        assert!(writes().is_empty(), "an empty batch writes nothing");
    }

    #[test]
    fn a_large_batch_writes_early_and_only_whole_lines() {
        writes();
        let line = [b"x".repeat(999), b"\n".to_vec()].concat();
        batched(&mut || (0..40).for_each(|_| log(&line)));
        let written = writes();
        assert!(written.len() > 1, "it wrote before the end");
        assert!(written.iter().all(|w| w.len() <= BATCH_BYTES && w.len() % line.len() == 0));
        assert_eq!(written.concat(), line.repeat(40), "every line once, in order");
    }

    #[test]
    fn a_panic_in_a_batch_still_writes_its_lines() {
        writes();
        let panicked = std::panic::catch_unwind(|| {
            batched(&mut || {
                log(b"the line before a panic\n");
                panic!("a callback that panics");
            })
        });
        assert!(panicked.is_err());
        assert_eq!(writes(), [b"the line before a panic\n".to_vec()], "written on the way out");
        assert!(!BATCH.with_borrow(|b| b.open), "the next batch starts afresh");
    }

    /// The line tracing formats for `message`, with or without its own
    /// escaping of control characters.
    fn formatted(sanitize: bool, message: &str) -> Vec<u8> {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .without_time()
            .with_ansi(false)
            .with_ansi_sanitization(sanitize)
            .with_writer(move || Sink(sink.clone()));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!("user={message} result=reject");
        });
        std::mem::take(&mut *out.lock().unwrap())
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn control_characters_are_escaped_as_tracing_escapes_them() {
        for message in [
            "plain alice",
            "\x1b[31mred\x1b[0m \x07\x08\x0c\x7f",
            "c1 \u{80} \u{9b}31m \u{9f} end\u{9b}",
            "not c1: \u{a0} \u{e9} \u{7e} \u{100} \u{1f600}",
            "\u{9b}",
        ] {
            let ours = formatted(false, message);
            let mut escaped = Vec::new();
            escape_controls(&ours, &mut escaped);
            let theirs = formatted(true, message);
            assert_eq!(String::from_utf8_lossy(&escaped), String::from_utf8_lossy(&theirs), "{message:?}");
        }
        assert!(!formatted(true, "\x1b").contains(&0x1b), "tracing's own escaping does escape");
    }

    #[test]
    fn the_writer_escapes_lines_in_a_batch_and_outside_one() {
        writes();
        let mut escaping = BatchedStderr { escape: true };
        escaping.write_all(b"user=\x1b[2J\n").unwrap();
        batched(&mut || escaping.write_all("user=\u{9b}2J\n".as_bytes()).unwrap());
        assert_eq!(writes(), [b"user=\\x1b[2J\n".to_vec(), b"user=\\u{9b}2J\n".to_vec()]);
    }

    #[test]
    fn clean_escapes_as_escape_debug_does() {
        for text in
            ["alice", "alice@corp.example", "", "a b~", "a\"b", "a'b", "a\\b", "a\nb", "\x1b[2J", "é\u{9b}"]
        {
            assert_eq!(clean(text), text.escape_debug().to_string(), "{text:?}");
        }
    }
}

//! Where the daemon's log lines go: stderr (the default; systemd's journal
//! captures it) or syslog (facility auth, identity `otpd`). Only `otpd serve`
//! installs a logger; the CLI prints its results instead. On stderr, the
//! lines logged while the store calls back a batch of logins (a commit
//! group's replies) are written together when the batch ends.

use std::cell::RefCell;
use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    Stderr,
    Syslog,
}

/// Installs the global logger. `RUST_LOG` may refine the level (default info).
pub fn init(target: LogTarget) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = match target {
        LogTarget::Stderr => {
            use std::io::IsTerminal;
            otpd_core::store::wrap_callback_batches(batched);
            builder.with_ansi(std::io::stderr().is_terminal()).with_writer(BatchedStderr).try_init()
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
            builder.without_time().with_ansi(false).with_writer(syslog).try_init()
        }
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
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
struct BatchedStderr;

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = BatchedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        BatchedStderr
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
            b.lines.extend_from_slice(line);
            true
        });
        if !held {
            write_out(line)?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// User-supplied text (a user name, messages that quote it) escaped for a
/// log line: a newline or quote typed at a login prompt must not forge a
/// line or a field.
pub fn clean(text: &str) -> String {
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
        BatchedStderr.write_all(line).unwrap();
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
}

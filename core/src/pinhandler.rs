//! What happens to a random PIN made by the `otp_pin_random` policy (spec 4.2, `pinhandling`).
//! Nobody is shown that PIN, so without a handler it is known to no one: each configured handler
//! passes it on. `log` writes it to the log (privacyIDEA's only built-in behaviour); `command` runs
//! a program of the operator's choosing (a mailer, a letter printer) with the PIN on its stdin.
//! The policy code parses every `pinhandling` value with [`PinHandler::parse`] when it loads the
//! policies; token init calls [`PinHandler::deliver`] on each matching handler.
//!
//! The PIN appears in no error message: whatever a failing program writes to stderr has the PIN
//! masked before its first line becomes part of the error.

use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// How long a `command` handler may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The only environment variable a `command` handler gets: the daemon's environment may hold
/// anything, and the program should not depend on it.
const COMMAND_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Stands for a missing user or realm in the program's arguments.
const ABSENT: &str = "N/A";
/// How often the wait loop looks at the program.
const POLL: Duration = Duration::from_millis(10);
/// How long to wait for stderr after the program failed; a process it left running in the
/// background can hold the pipe open, and the error must not wait for that.
const STDERR_GRACE: Duration = Duration::from_secs(1);
/// Bytes of stderr kept (the rest is read and dropped so the program never blocks on it).
const STDERR_KEEP: usize = 64 * 1024;
/// Characters of stderr's first line quoted in an error.
const STDERR_LINE_MAX: usize = 200;

/// One `pinhandling` policy value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinHandler {
    /// Write the PIN to the log at warn level.
    Log,
    /// Run `program args... SERIAL USER REALM` with the PIN on stdin.
    Command { program: PathBuf, args: Vec<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum PinHandlerError {
    #[error(
        "invalid pinhandling value {value:?}: {reason} \
         (accepted: \"log\", or \"command /absolute/path/to/program [ARG...]\")"
    )]
    BadSpec { value: String, reason: &'static str },
    #[error("pinhandling: cannot start {program}: {source}")]
    Start { program: PathBuf, source: io::Error },
    #[error("pinhandling: cannot run {program}: {source}")]
    Io { program: PathBuf, source: io::Error },
    #[error("pinhandling: {program} failed ({status}){}", stderr_suffix(.stderr))]
    Failed { program: PathBuf, status: ExitStatus, stderr: String },
    #[error("pinhandling: {program} did not finish within {} s and was killed", .timeout.as_secs_f64())]
    Timeout { program: PathBuf, timeout: Duration },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() { ", nothing on stderr".to_string() } else { format!(": {stderr}") }
}

impl PinHandler {
    /// Parses a `pinhandling` policy value: "log", or "command PROGRAM [ARG...]" (split on
    /// whitespace; PROGRAM must be an absolute path, so PATH plays no part in what runs).
    pub fn parse(value: &str) -> Result<PinHandler, PinHandlerError> {
        let bad = |reason| Err(PinHandlerError::BadSpec { value: value.to_string(), reason });
        let mut words = value.split_whitespace();
        match words.next() {
            Some("log") if words.next().is_none() => Ok(PinHandler::Log),
            Some("log") => bad("log takes no arguments"),
            Some("command") => match words.next() {
                None => bad("command needs a program"),
                Some(program) if !Path::new(program).is_absolute() => {
                    bad("the program must be an absolute path")
                }
                Some(program) => Ok(PinHandler::Command {
                    program: PathBuf::from(program),
                    args: words.map(str::to_string).collect(),
                }),
            },
            None => bad("the value is empty"),
            Some(_) => bad("unknown handler"),
        }
    }

    /// Hands the PIN on. `Log` writes one warn line that says plainly it holds a PIN. `Command`
    /// runs PROGRAM ARG... SERIAL USER REALM (user and realm "N/A" when absent) with the PIN and
    /// a newline on stdin, stdout and stderr captured, the environment cleared except
    /// `PATH=/usr/sbin:/usr/bin:/sbin:/bin`, in `/`. It waits at most [`COMMAND_TIMEOUT`], then
    /// kills the program and returns [`PinHandlerError::Timeout`]; a non-zero exit is
    /// [`PinHandlerError::Failed`] with the first line of stderr (after a failure it waits up to
    /// one more second for stderr). Only the program itself is killed, not processes it started.
    ///
    /// The caller must not have SIGPIPE at its default action (Rust programs ignore it), since a
    /// program that exits without reading its stdin would otherwise kill the caller.
    pub fn deliver(
        &self,
        pin: &str,
        serial: &str,
        user: Option<&str>,
        realm: Option<&str>,
        token_type: &str,
    ) -> Result<(), PinHandlerError> {
        self.deliver_within(pin, serial, user, realm, token_type, COMMAND_TIMEOUT)
    }

    fn deliver_within(
        &self,
        pin: &str,
        serial: &str,
        user: Option<&str>,
        realm: Option<&str>,
        token_type: &str,
        timeout: Duration,
    ) -> Result<(), PinHandlerError> {
        let user = user.unwrap_or(ABSENT);
        let realm = realm.unwrap_or(ABSENT);
        match self {
            PinHandler::Log => {
                tracing::warn!(
                    "pinhandling=log: random PIN of token {} (user {}, realm {}, type {}) is {} \
                     — this log line contains a secret",
                    OneLine(serial),
                    OneLine(user),
                    OneLine(realm),
                    OneLine(token_type),
                    OneLine(pin),
                );
                Ok(())
            }
            PinHandler::Command { program, args } => run(program, args, pin, [serial, user, realm], timeout),
        }
    }
}

fn run(
    program: &Path,
    args: &[String],
    pin: &str,
    trailing: [&str; 3],
    timeout: Duration,
) -> Result<(), PinHandlerError> {
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .args(trailing)
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| PinHandlerError::Start { program: program.to_path_buf(), source })?;
    let io_error = |source| PinHandlerError::Io { program: program.to_path_buf(), source };

    let stderr = match start_pipe_threads(&mut child, pin) {
        Ok(stderr) => stderr,
        Err(e) => {
            kill_and_reap(&mut child);
            return Err(io_error(e));
        }
    };

    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                kill_and_reap(&mut child);
                return Err(io_error(e));
            }
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            // The pipe threads are left to finish on their own: a process the program started
            // may keep the pipes open well past this point.
            kill_and_reap(&mut child);
            return Err(PinHandlerError::Timeout { program: program.to_path_buf(), timeout });
        }
        thread::sleep(POLL.min(timeout - elapsed));
    };
    if status.success() {
        return Ok(());
    }
    let stderr = stderr.recv_timeout(STDERR_GRACE).map(|bytes| first_line(&bytes, pin)).unwrap_or_default();
    Err(PinHandlerError::Failed { program: program.to_path_buf(), status, stderr })
}

/// Starts the threads that feed stdin and drain stdout and stderr. They run concurrently with
/// the wait so that a program writing a lot, or reading late, never blocks on a full pipe.
/// Returns where stderr's captured bytes arrive once the program closes it.
fn start_pipe_threads(child: &mut Child, pin: &str) -> io::Result<mpsc::Receiver<Zeroizing<Vec<u8>>>> {
    if let Some(mut stdin) = child.stdin.take() {
        let mut line = Zeroizing::new(Vec::with_capacity(pin.len() + 1));
        line.extend_from_slice(pin.as_bytes());
        line.push(b'\n');
        // A failed write (the program exited without reading) is not checked: the exit status
        // is the verdict on the delivery. Dropping stdin closes it, so the program sees EOF.
        thread::Builder::new().name("pinhandler-stdin".into()).spawn(move || {
            let _ = stdin.write_all(&line);
        })?;
    }
    if let Some(mut stdout) = child.stdout.take() {
        // Read only to keep the program from blocking; it may echo the PIN, so it goes nowhere.
        thread::Builder::new().name("pinhandler-stdout".into()).spawn(move || {
            let _ = io::copy(&mut stdout, &mut io::sink());
        })?;
    }
    let (sender, receiver) = mpsc::channel();
    if let Some(mut stderr) = child.stderr.take() {
        thread::Builder::new().name("pinhandler-stderr".into()).spawn(move || {
            let _ = sender.send(read_capped(&mut stderr, STDERR_KEEP));
        })?;
    }
    Ok(receiver)
}

/// Reads `reader` to its end, keeping the first `keep` bytes.
fn read_capped(reader: &mut impl Read, keep: usize) -> Zeroizing<Vec<u8>> {
    let mut kept = Zeroizing::new(Vec::new());
    let mut buf = Zeroizing::new([0u8; 4096]);
    loop {
        match reader.read(&mut buf[..]) {
            Ok(0) => break,
            Ok(n) => {
                let room = keep.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    kept
}

fn kill_and_reap(child: &mut Child) {
    // kill fails only when the program has already exited; wait then reaps it either way.
    let _ = child.kill();
    let _ = child.wait();
}

/// The first line of `stderr` as it may be shown: the PIN masked (before cutting, so no part of
/// it survives at the edge), cut to [`STDERR_LINE_MAX`] characters, control characters escaped.
fn first_line(stderr: &[u8], pin: &str) -> String {
    let mut text = Zeroizing::new(String::from_utf8_lossy(stderr).into_owned());
    if !pin.is_empty() {
        text = Zeroizing::new(text.replace(pin, "[PIN]"));
    }
    let line: Zeroizing<String> =
        Zeroizing::new(text.lines().next().unwrap_or("").trim().chars().take(STDERR_LINE_MAX).collect());
    OneLine(&line).to_string()
}

/// Displays a string with its control characters escaped, so a value can neither break a log
/// line in two nor forge a second one.
struct OneLine<'a>(&'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Mutex};

    const PIN: &str = "Zq7Xw9pLm2";

    /// Serialises the tests that write a script and run it: a script still open for writing
    /// while another test forks cannot be executed ("text file busy").
    static SCRIPTS: Mutex<()> = Mutex::new(());

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn command(program: PathBuf, args: &[&str]) -> PinHandler {
        PinHandler::Command { program, args: args.iter().map(|a| a.to_string()).collect() }
    }

    #[test]
    fn parse_values() {
        assert_eq!(PinHandler::parse("log").unwrap(), PinHandler::Log);
        assert_eq!(PinHandler::parse("  log ").unwrap(), PinHandler::Log);
        assert_eq!(
            PinHandler::parse("command /usr/bin/env a b").unwrap(),
            PinHandler::Command { program: "/usr/bin/env".into(), args: vec!["a".into(), "b".into()] }
        );
        assert_eq!(
            PinHandler::parse("command\t/usr/local/bin/mail-pin").unwrap(),
            PinHandler::Command { program: "/usr/local/bin/mail-pin".into(), args: vec![] }
        );
    }

    #[test]
    fn parse_refusals() {
        for (value, reason) in [
            ("command relative/x", "absolute"),
            ("command x", "absolute"),
            ("mail", "unknown handler"),
            ("LOG", "unknown handler"),
            ("", "empty"),
            ("command", "needs a program"),
            ("log extra", "no arguments"),
        ] {
            let err = PinHandler::parse(value).unwrap_err();
            assert!(matches!(err, PinHandlerError::BadSpec { .. }), "{value}");
            let msg = err.to_string();
            assert!(msg.contains(reason), "{value}: {msg}");
            assert!(msg.contains("\"log\"") && msg.contains("\"command /absolute"), "{msg}");
        }
    }

    /// Records the message of every event.
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
                    if field.name() == "message" {
                        self.0 = format!("{value:?}");
                    }
                }
            }
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0.lock().unwrap().push(format!("{} {}", event.metadata().level(), message.0));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    fn logged(f: impl FnOnce()) -> Vec<String> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        tracing::subscriber::with_default(Capture(lines.clone()), f);
        lines.lock().unwrap().clone()
    }

    #[test]
    fn log_handler_writes_one_warning() {
        let lines = logged(|| {
            PinHandler::Log.deliver(PIN, "OATH0001A2B3", Some("alice"), Some("realm1"), "hotp").unwrap();
        });
        assert_eq!(
            lines,
            [format!(
                "WARN pinhandling=log: random PIN of token OATH0001A2B3 (user alice, realm realm1, \
                 type hotp) is {PIN} — this log line contains a secret"
            )]
        );

        let lines = logged(|| {
            PinHandler::Log.deliver(PIN, "X", Some("eve\nWARN forged"), None, "totp").unwrap();
        });
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("(user eve\\nWARN forged, realm N/A, type totp)"), "{}", lines[0]);
        assert!(!lines[0].contains('\n'));
    }

    #[test]
    fn command_gets_arguments_and_pin() {
        let _lock = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let program = script(
            dir.path(),
            "deliver",
            "out=\"$1\"; shift\n\
             printf '%s\\n' \"$@\" > \"$out\"\n\
             cat >> \"$out\"\n\
             printf 'HOME=%s PATH=%s\\n' \"${HOME-unset}\" \"$PATH\" >> \"$out\"\n\
             pwd >> \"$out\"\n\
             echo 'to stdout'\n",
        );
        let out = dir.path().join("out");
        let handler = command(program, &[out.to_str().unwrap(), "--extra"]);

        handler.deliver(PIN, "OATH0001A2B3", Some("alice"), Some("realm1"), "hotp").unwrap();
        assert_eq!(
            fs::read_to_string(&out).unwrap(),
            format!(
                "--extra\nOATH0001A2B3\nalice\nrealm1\n{PIN}\n\
                 HOME=unset PATH=/usr/sbin:/usr/bin:/sbin:/bin\n/\n"
            )
        );

        handler.deliver(PIN, "TOTP0002C4D5", None, None, "totp").unwrap();
        let written = fs::read_to_string(&out).unwrap();
        assert!(written.starts_with(&format!("--extra\nTOTP0002C4D5\nN/A\nN/A\n{PIN}\n")), "{written}");
    }

    #[test]
    fn failing_command_names_status_and_hides_pin() {
        let _lock = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let program = script(
            dir.path(),
            "fail",
            "read pin\necho \"cannot mail PIN $pin for $1\" >&2\necho 'second line' >&2\nexit 3\n",
        );
        let err = command(program.clone(), &[]).deliver(PIN, "PW0001", Some("bob"), None, "pw").unwrap_err();
        match &err {
            PinHandlerError::Failed { program: p, status, stderr } => {
                assert_eq!(p, &program);
                assert_eq!(status.code(), Some(3));
                assert_eq!(stderr, "cannot mail PIN [PIN] for PW0001");
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("exit status: 3") && msg.contains(program.to_str().unwrap()), "{msg}");
        assert!(!msg.contains(PIN) && !format!("{err:?}").contains(PIN), "{msg}");
        assert!(!msg.contains("second line"), "{msg}");

        let silent = script(dir.path(), "silent", "exit 1\n");
        let msg = command(silent, &[]).deliver(PIN, "S", None, None, "pw").unwrap_err().to_string();
        assert!(msg.ends_with("failed (exit status: 1), nothing on stderr"), "{msg}");
    }

    #[test]
    fn missing_program_cannot_start() {
        let _lock = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("missing");
        let err = command(program.clone(), &[]).deliver(PIN, "S", None, None, "hotp").unwrap_err();
        assert!(
            matches!(&err, PinHandlerError::Start { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        let msg = err.to_string();
        assert!(msg.contains(program.to_str().unwrap()) && !msg.contains(PIN), "{msg}");
    }

    #[test]
    fn slow_command_is_killed() {
        let _lock = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        // `sleep` runs as a child of the shell and keeps the pipes open after the shell is
        // killed (it ends on its own): the timeout must not wait for the pipes.
        let program = script(dir.path(), "slow", "sleep 60\n");
        let started = Instant::now();
        let err = command(program, &[])
            .deliver_within(PIN, "S", None, None, "hotp", Duration::from_secs(1))
            .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, PinHandlerError::Timeout { .. }), "{err:?}");
        assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(5), "{took:?}");
        let msg = err.to_string();
        assert!(msg.contains("within 1 s") && !msg.contains(PIN), "{msg}");
    }

    #[test]
    fn chatty_command_does_not_block() {
        let _lock = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        // Far more than a pipe holds, on both streams, without reading stdin.
        let program =
            script(dir.path(), "chatty", "head -c 1000000 /dev/zero\nhead -c 1000000 /dev/zero >&2\n");
        command(program, &[]).deliver_within(PIN, "S", None, None, "hotp", Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn stderr_line_is_masked_cut_and_escaped() {
        assert_eq!(first_line(b"a\x07b PIN\nrest", "PIN"), "a\\u{7}b [PIN]");
        assert_eq!(first_line(b"\r\n", "x"), "");
        assert_eq!(first_line(b"", ""), "");
        assert_eq!(first_line(&[0xff, b'o', b'k'], "p"), "\u{fffd}ok");
        let long = "é".repeat(500);
        assert_eq!(first_line(long.as_bytes(), "z").chars().count(), STDERR_LINE_MAX);
        // A PIN straddling the cut is masked before the cut.
        let text = format!("{}{PIN}", "x".repeat(STDERR_LINE_MAX - 3));
        let shown = first_line(text.as_bytes(), PIN);
        assert!(shown.ends_with("[PI") && !shown.contains(&PIN[..3]), "{shown}");
    }
}

//! Where the daemon's log lines go: stderr (the default; systemd's journal
//! captures it) or syslog (facility auth, identity `otpd`). Only `otpd serve`
//! installs a logger; the CLI prints its results instead.

use tracing_subscriber::EnvFilter;

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
            builder.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).try_init()
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

/// User-supplied text (a user name, messages that quote it) escaped for a
/// log line: a newline or quote typed at a login prompt must not forge a
/// line or a field.
pub fn clean(text: &str) -> String {
    text.escape_debug().to_string()
}

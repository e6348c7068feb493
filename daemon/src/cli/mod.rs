//! The command line: argument definitions (clap) and dispatch to the
//! command modules. Names and flags follow design.md section 4 exactly.

/// `println!` that ends the process quietly, like other Unix tools, when
/// the reader of the output went away (`otpd token list | head`), instead of
/// panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_line(format_args!($($arg)*))
    };
}

pub(crate) fn write_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("otpd: cannot write output: {e}");
        std::process::exit(2);
    }
}

mod check;
mod event;
mod output;
mod policy;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use otpd_core::{AdminContext, Config, Front, Otpd};
use otpd_daemon::logging::LogTarget;

#[derive(Debug, Parser)]
#[command(name = "otpd", version, about = "otpd: one-time password authentication for RADIUS and PAM")]
pub struct Args {
    /// Configuration file (default: $OTPD_CONFIG, then /etc/otpd/otpd.toml, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the RADIUS listener in the foreground (SIGHUP reloads, SIGTERM stops).
    Serve {
        /// Where log lines go: stderr (default; systemd's journal captures it) or syslog.
        #[arg(long, value_enum, default_value = "stderr")]
        log: LogTarget,
    },
    /// Check USER's PASSWORD (PIN+OTP): exit 0 accept, 1 reject, 3 challenge.
    Check(check::CheckArgs),
    /// Manage tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Show the policies and what applies to a request.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Show the event handlers and test what they would do.
    #[command(subcommand)]
    Event(event::EventCommand),
}

/// An error of the CLI itself (bad argument) or of the core.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Core(#[from] otpd_core::Error),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Serve(#[from] otpd_daemon::radius::ServeError),
}

pub fn run(args: Args) -> Result<ExitCode, CliError> {
    match args.command {
        Command::Serve { log } => {
            otpd_daemon::logging::init(log).map_err(CliError::Usage)?;
            otpd_daemon::radius::serve(args.config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(c) => check::run(&open(args.config)?, c, args.json),
        Command::Token(t) => token::run(&open(args.config)?, &admin_context(), t, args.json),
        Command::Policy(p) => policy::run(&open(args.config)?, p, args.json),
        Command::Event(e) => event::run(&open(args.config)?, e, args.json),
    }
}

fn open(config: Option<PathBuf>) -> Result<Otpd, CliError> {
    // The core's own log lines (a pinhandling=log PIN, a refused
    // autoassignment) go to stderr.
    otpd_daemon::logging::init_cli();
    let config = Config::locate(config.as_deref()).map_err(otpd_core::Error::from)?;
    Ok(Otpd::open(config)?)
}

/// The operator, for the audit trail: the name of the calling OS user.
fn admin_context() -> AdminContext {
    let uid = nix::unistd::getuid();
    let actor = match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    };
    AdminContext { actor, front: Front::Cli, client: None }
}

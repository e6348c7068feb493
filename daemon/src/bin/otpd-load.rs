//! `otpd-load`: a RADIUS load generator, usable against any RADIUS server
//! (otpd, FreeRADIUS, ...). It keeps N Access-Requests in flight (closed
//! loop) or sends them at a fixed rate (`--rate`, open loop), verifies every answer, and reports requests/s, outcomes, latency
//! percentiles and, given the server's pid, its CPU time per request.
//! Usage errors are one line on stderr with exit status 2.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use otpd_daemon::load::engine::{self, Limit, Settings};
use otpd_daemon::load::source::{Passwords, Source, Users};
use otpd_daemon::load::stats::{Latency, Summary, clock_ticks, process_cpu};
use otpd_daemon::load::{parse_duration, parse_hex};
use otpd_daemon::radius::codec;
use otpd_daemon::usage::usage_error;

#[derive(Debug, Parser)]
#[command(
    name = "otpd-load",
    version,
    about = "RADIUS load generator: N Access-Requests outstanding, verified answers"
)]
#[command(group(ArgGroup::new("users_from").required(true).args(["user_pattern", "user_file"])))]
#[command(group(ArgGroup::new("passwords_from").required(true).args(["password_fixed", "password_file", "hotp_key", "totp_key"])))]
struct Args {
    /// The server, host:port.
    #[arg(long)]
    server: String,
    /// The RADIUS shared secret.
    #[arg(long)]
    secret: String,
    /// Requests kept in flight (at most 256 per socket); with --rate, the most in flight.
    #[arg(long, default_value_t = 32)]
    outstanding: usize,
    /// Open loop: send this many requests per second, evenly paced, whether or not
    /// answers have come (still at most --outstanding in flight). Without it the loop is
    /// closed: a new request as soon as one is answered.
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    rate: Option<f64>,
    /// UDP sockets the requests are spread over.
    #[arg(long, default_value_t = 4)]
    sockets: usize,
    /// How long to send (10s, 500ms, 2m); the default when --requests is not given is 10s.
    #[arg(long, value_parser = parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Send this many requests, then stop.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// How long to wait for an answer before counting a timeout.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    timeout: Duration,
    /// Send requests without Message-Authenticator (answers are then not required to carry one).
    #[arg(long)]
    no_message_authenticator: bool,
    // clap reads the placeholder written plainly in help text as a line break, hence the words.
    /// User names: the pattern with its placeholder, n in braces, replaced by 0..users-1, round robin.
    #[arg(long, value_name = "PATTERN")]
    user_pattern: Option<String>,
    /// Number of users of --user-pattern.
    #[arg(long, default_value_t = 1000, requires = "user_pattern")]
    users: usize,
    /// User names, one a line, taken round robin.
    #[arg(long)]
    user_file: Option<PathBuf>,
    /// The same password for every request.
    #[arg(long)]
    password_fixed: Option<String>,
    /// Passwords one a line, each used once (e.g. one-shot codes); the run ends when they are used up.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// HOTP key (hex, SHA1) shared by every user; each user has its own counter.
    #[arg(long)]
    hotp_key: Option<String>,
    /// First HOTP counter of every user.
    #[arg(long, default_value_t = 0, requires = "hotp_key")]
    hotp_start: u64,
    /// TOTP key (hex, SHA1) shared by every user; each user uses each step at most once.
    #[arg(long)]
    totp_key: Option<String>,
    /// TOTP steps used around the current one: each user logs in with steps now-STEPS to
    /// now+STEPS, each once, in increasing order (0: the current step only). Keep it inside the
    /// server's window (otpd's default: 6 steps back, 5 ahead).
    #[arg(long, value_name = "STEPS", default_value_t = 0, requires = "totp_key", value_parser = clap::value_parser!(u64).range(0..=1000))]
    totp_window: u64,
    /// TOTP step in seconds.
    #[arg(long, default_value_t = 30, requires = "totp_key", value_parser = clap::value_parser!(u32).range(1..))]
    totp_step: u32,
    /// Digits of computed HOTP/TOTP codes.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(6..=8))]
    digits: u32,
    /// PIN put in front of every password.
    #[arg(long, default_value = "")]
    pin: String,
    /// Report the CPU time this process (the server) spends per request.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Worker threads of the generator (1 leaves the other cores to the server).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => return usage_error("otpd-load", e),
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otpd-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn run(args: Args) -> Result<(), String> {
    let server = resolve(&args.server)?;
    if args.sockets == 0 {
        return Err("--sockets must be at least 1".into());
    }
    // Identifiers are one octet: a socket can tell at most 256 requests apart.
    if args.outstanding == 0 || args.outstanding > args.sockets.saturating_mul(256) {
        return Err(format!(
            "--outstanding must be 1 to {} (256 per socket)",
            args.sockets.saturating_mul(256)
        ));
    }

    // clap does not enforce `requires` on a flag that has a default value.
    if args.totp_window > 0 && args.totp_key.is_none() {
        return Err("--totp-window needs --totp-key".into());
    }

    let users = match (&args.user_pattern, &args.user_file) {
        (_, Some(path)) => Users::from_lines(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?,
        (Some(pattern), None) => Users::pattern(pattern, args.users)?,
        (None, None) => return Err("give --user-pattern or --user-file".into()),
    };
    let passwords = if let Some(text) = &args.password_fixed {
        Passwords::Fixed(text.clone())
    } else if let Some(path) = &args.password_file {
        Passwords::from_lines(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?
    } else if let Some(hex) = &args.hotp_key {
        Passwords::hotp(
            parse_hex(hex).map_err(|e| format!("--hotp-key: {e}"))?,
            args.digits,
            args.hotp_start,
            users.len(),
        )
    } else if let Some(hex) = &args.totp_key {
        Passwords::totp(
            parse_hex(hex).map_err(|e| format!("--totp-key: {e}"))?,
            args.digits,
            args.totp_step,
            args.totp_window,
            users.len(),
        )
    } else {
        return Err("give --password-fixed, --password-file, --hotp-key or --totp-key".into());
    };
    let source = Source::new(users, passwords, &args.pin);

    let limit = match (args.requests, args.duration) {
        (Some(n), _) => Limit::Requests(n),
        (None, Some(d)) => Limit::Duration(d),
        (None, None) => Limit::Duration(Duration::from_secs(10)),
    };
    let settings = Settings {
        server,
        secret: codec::Secret::new(args.secret.as_bytes()),
        outstanding: args.outstanding,
        rate: args.rate,
        sockets: args.sockets,
        limit,
        timeout: args.timeout,
        message_authenticator: !args.no_message_authenticator,
        progress: true,
    };

    let ticks = args.server_pid.map(|_| clock_ticks()).unwrap_or(100);
    let cpu = |pid: Option<u32>| pid.map(|pid| process_cpu(pid, ticks)).transpose();
    let cpu_before = cpu(args.server_pid)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::try_from(args.threads).unwrap_or(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let outcome = runtime.block_on(engine::run(settings, source)).map_err(|e| e.to_string())?;

    let cpu_after = cpu(args.server_pid)?;
    let mut latencies = outcome.latencies;
    let summary = Summary {
        elapsed: outcome.elapsed,
        counts: outcome.counts,
        latency: Latency::of(&mut latencies),
        server_cpu: cpu_before.zip(cpu_after).map(|(before, after)| (after - before).max(0.0)),
    };
    if args.json {
        println!("{}", summary.json());
    } else {
        print!("{}", summary.text());
    }
    Ok(())
}

/// A positive, finite number of requests per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("bad rate {text:?} (requests per second, more than 0)"))
}

/// `host:port`, a name resolved once.
fn resolve(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("--server {text:?}: {e} (say host:port)"))?
        .next()
        .ok_or_else(|| format!("--server {text:?} resolves to no address"))
}

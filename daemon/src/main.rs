//! `otpd`: the one binary of otpd. The admin CLI (`otpd token ...`,
//! `otpd check`) lives here as a thin front: it parses the command line,
//! calls otpd-core and prints the result. Errors go to stderr as one
//! sentence with exit status 2.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

fn main() -> ExitCode {
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(e) => return usage_error(e),
    };
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("otpd: {e}");
            ExitCode::from(2)
        }
    }
}

/// Help and version go out as clap writes them; a usage error becomes one
/// line on stderr (clap's message and its list of possible values, without
/// the usage block) and exit status 2, like every other error.
fn usage_error(e: clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
    }
    let text = e.render().to_string();
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(|l| l.trim_start_matches("error: "))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("otpd: {line}");
    ExitCode::from(2)
}

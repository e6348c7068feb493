//! Command-line errors of the daemon's binaries (`otpd`, `otpd-load`):
//! help and version go out as clap writes them; a usage error becomes one
//! line on stderr (clap's message and its list of possible values, without
//! the usage block) and exit status 2, like every other error.

use std::process::ExitCode;

use clap::error::ErrorKind;

pub fn usage_error(program: &str, e: clap::Error) -> ExitCode {
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
    eprintln!("{program}: {line}");
    ExitCode::from(2)
}

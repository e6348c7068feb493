//! `otpd`: the one binary of otpd. The admin CLI (`otpd token ...`,
//! `otpd check`) lives here as a thin front: it parses the command line,
//! calls otpd-core and prints the result. Errors go to stderr as one
//! sentence with exit status 2.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use otpd_daemon::usage::usage_error;

fn main() -> ExitCode {
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(e) => return usage_error("otpd", e),
    };
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("otpd: {e}");
            ExitCode::from(2)
        }
    }
}

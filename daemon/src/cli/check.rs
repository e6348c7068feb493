//! `otpd check USER PASSWORD`: one authentication through the same core
//! call as RADIUS and PAM. Exit 0 accept, 1 reject, 3 challenge.

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Args;
use otpd_core::{AuthRequest, Front, Otpd, Outcome};
use serde_json::json;

use super::CliError;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The user: login, login@realm or realm\login.
    user: String,
    /// PIN followed by the OTP (or as the token's settings say).
    password: String,
    /// The realm (wins over a realm in USER).
    #[arg(long)]
    realm: Option<String>,
    /// The client address the request comes from (policies match on it).
    #[arg(long, value_name = "IP")]
    client: Option<IpAddr>,
    /// The state (transaction id) of a challenge being answered.
    #[arg(long, value_name = "S")]
    state: Option<String>,
}

pub fn run(otpd: &Otpd, args: CheckArgs, json: bool) -> Result<ExitCode, CliError> {
    let mut req = AuthRequest::new(args.user, args.password, Front::Cli);
    req.realm = args.realm;
    req.client = args.client;
    req.state = args.state;
    let outcome = otpd.authenticate(&req)?;
    let (word, code) = match &outcome {
        Outcome::Accept { .. } => ("accept", 0),
        Outcome::Reject { .. } => ("reject", 1),
        Outcome::Challenge { .. } => ("challenge", 3),
    };
    if json {
        let mut doc = json!({
            "result": word,
            "message": outcome.message(),
            "serial": outcome.serial(),
        });
        match &outcome {
            Outcome::Accept { token_type, .. } => doc["type"] = json!(token_type.map(|t| t.name())),
            Outcome::Challenge { state, .. } => doc["state"] = json!(state),
            Outcome::Reject { .. } => {}
        }
        outln!("{doc}");
    } else {
        match &outcome {
            Outcome::Challenge { state, message, .. } => {
                outln!("CHALLENGE: {message}");
                outln!("state: {state}");
            }
            _ => match outcome.serial() {
                Some(serial) => outln!("{}: {} (token {serial})", word.to_uppercase(), outcome.message()),
                None => outln!("{}: {}", word.to_uppercase(), outcome.message()),
            },
        }
    }
    Ok(ExitCode::from(code))
}

//! `otpd event list` and `otpd event test`: the configured event handler
//! entries, and a dry run of what the entries bound to an event would do
//! for a given request.

use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use otpd_core::events::{EVENT_NAMES, EventRequest, EventResult, Position};
use otpd_core::{Front, Otpd};
use serde_json::json;

use super::CliError;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ResultArg {
    Accept,
    Reject,
    Challenge,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PositionArg {
    Pre,
    Post,
}

#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// List the active event handler entries in running order.
    List,
    /// Dry run: would the entries bound to EVENT fire for this request, and what would they do?
    Test {
        /// The event (validate_check, token_init, ...).
        event: String,
        #[arg(long, value_name = "U")]
        user: Option<String>,
        #[arg(long, value_name = "R")]
        realm: Option<String>,
        #[arg(long, value_name = "S")]
        serial: Option<String>,
        #[arg(long, value_name = "IP")]
        client: Option<IpAddr>,
        /// The operation's result, for post entries (validate_check: accept, reject or challenge).
        #[arg(long, value_enum)]
        result: Option<ResultArg>,
        /// The result's message (detail_message conditions).
        #[arg(long, value_name = "TEXT")]
        message: Option<String>,
        /// Only entries in this position.
        #[arg(long, value_enum)]
        position: Option<PositionArg>,
    },
}

pub fn run(otpd: &Otpd, cmd: EventCommand, json: bool) -> Result<ExitCode, CliError> {
    match cmd {
        EventCommand::List => list(otpd, json),
        EventCommand::Test { event, user, realm, serial, client, result, message, position } => {
            let Some(event) = EVENT_NAMES.iter().copied().find(|e| *e == event) else {
                return Err(CliError::Usage(format!(
                    "unknown event '{event}' (known: {})",
                    EVENT_NAMES.join(", ")
                )));
            };
            let user = match &user {
                Some(u) => Some(otpd.realms().resolve(u, realm.as_deref(), None)?),
                None => None,
            };
            let result = result.map(|r| EventResult {
                value: matches!(r, ResultArg::Accept),
                status: true,
                authentication: match r {
                    ResultArg::Accept => "ACCEPT",
                    ResultArg::Reject => "REJECT",
                    ResultArg::Challenge => "CHALLENGE",
                },
                message: message.clone().unwrap_or_default(),
                serial: None,
            });
            let request = EventRequest { event, user, client, front: Front::Cli, serial, result };
            let position = position.map(|p| match p {
                PositionArg::Pre => Position::Pre,
                PositionArg::Post => Position::Post,
            });
            let runs = otpd.event_dry_run(&request, position)?;
            if json {
                let doc: Vec<_> = runs
                    .iter()
                    .map(|r| {
                        json!({
                            "entry": r.entry,
                            "fires": r.fires,
                            "conditions": r.conditions.iter().map(|(c, ok)| json!({"condition": c, "holds": ok})).collect::<Vec<_>>(),
                            "targets": r.targets,
                            "missing": r.missing,
                            "action": r.action,
                        })
                    })
                    .collect();
                outln!("{}", serde_json::Value::Array(doc));
                return Ok(ExitCode::SUCCESS);
            }
            if runs.is_empty() {
                outln!("no entry is bound to {event}");
            }
            for r in &runs {
                outln!("{}: {}", r.entry, if r.fires { "fires" } else { "does not fire" });
                for (c, ok) in &r.conditions {
                    outln!("  condition {c}: {}", if *ok { "holds" } else { "fails" });
                }
                let targets = if r.targets.is_empty() {
                    "no token".to_string()
                } else {
                    shown_targets(&r.targets, &r.missing)
                };
                outln!("  would {} (tokens: {targets})", r.action);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(otpd: &Otpd, json: bool) -> Result<ExitCode, CliError> {
    let defs = otpd.events().all();
    if json {
        let doc: Vec<_> = defs
            .iter()
            .map(|d| {
                json!({
                    "name": d.name,
                    "events": d.events,
                    "position": match d.position { Position::Pre => "pre", Position::Post => "post" },
                    "order": d.order,
                    "line": d.line,
                    "action": d.action.name(),
                    "does": d.action.describe(),
                    "conditions": d.conditions.iter().map(|c| c.name()).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!("{}", serde_json::Value::Array(doc));
        return Ok(ExitCode::SUCCESS);
    }
    if defs.is_empty() {
        outln!("no active event handlers");
    }
    for d in defs {
        let position = match d.position {
            Position::Pre => "pre",
            Position::Post => "post",
        };
        outln!("{} (order {}, {position} {}, line {})", d.name, d.order, d.events.join(","), d.line);
        let conditions: Vec<&str> = d.conditions.iter().map(|c| c.name()).collect();
        if !conditions.is_empty() {
            outln!("  when {}", conditions.join(", "));
        }
        outln!("  {}", d.action.describe());
    }
    Ok(ExitCode::SUCCESS)
}

/// The targets, each serial that names no token marked.
fn shown_targets(targets: &[String], missing: &[String]) -> String {
    targets
        .iter()
        .map(|t| if missing.contains(t) { format!("{t} (does not exist)") } else { t.clone() })
        .collect::<Vec<_>>()
        .join(", ")
}

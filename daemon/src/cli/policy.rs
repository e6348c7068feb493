//! `otpd policy list` and `otpd policy check`: the configured policies,
//! and which of them apply to a user, realm and client, and why.

use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use otpd_core::Otpd;
use otpd_core::policy::report::EffectiveValue;
use otpd_core::policy::{ActionValue, Scope};
use serde_json::json;

use super::CliError;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    Enrollment,
    Authentication,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the active policies.
    List,
    /// Show which policies apply to a request, why the others do not, and the resulting values.
    Check {
        #[arg(long, value_name = "U")]
        user: Option<String>,
        #[arg(long, value_name = "R")]
        realm: Option<String>,
        #[arg(long, value_name = "IP")]
        client: Option<IpAddr>,
        #[arg(long, value_enum, value_name = "S")]
        scope: ScopeArg,
    },
}

pub fn run(otpd: &Otpd, cmd: PolicyCommand, json: bool) -> Result<ExitCode, CliError> {
    match cmd {
        PolicyCommand::List => list(otpd, json),
        PolicyCommand::Check { user, realm, client, scope } => {
            let scope = match scope {
                ScopeArg::Enrollment => Scope::Enrollment,
                ScopeArg::Authentication => Scope::Authentication,
            };
            check(otpd, scope, user.as_deref(), realm.as_deref(), client, json)
        }
    }
}

fn list(otpd: &Otpd, json: bool) -> Result<ExitCode, CliError> {
    let policies = otpd.policies().all();
    if json {
        let doc: Vec<_> = policies
            .iter()
            .map(|p| {
                let mut entry = json!({
                    "name": p.name,
                    "scope": p.scope.name(),
                    "priority": p.priority,
                    "line": p.line,
                    "actions": p.actions.iter().map(|(k, v)| (k.to_string(), action_json(v))).collect::<serde_json::Map<_, _>>(),
                });
                for (filter, values) in &p.filters {
                    entry[*filter] = json!(values);
                }
                entry
            })
            .collect();
        outln!("{}", serde_json::Value::Array(doc));
        return Ok(ExitCode::SUCCESS);
    }
    if policies.is_empty() {
        outln!("no active policies");
    }
    for p in policies {
        outln!("{} (scope {}, priority {}, line {})", p.name, p.scope.name(), p.priority, p.line);
        for (filter, values) in p.filters.iter().filter(|(_, v)| !v.is_empty()) {
            outln!("  {filter}: {}", values.join(", "));
        }
        for (k, v) in &p.actions {
            outln!("  {k} = {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(
    otpd: &Otpd,
    scope: Scope,
    user: Option<&str>,
    realm: Option<&str>,
    client: Option<IpAddr>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let r = otpd.policy_report(scope, user, realm, client)?;
    if json {
        let doc = json!({
            "scope": scope.name(),
            "user": r.user,
            "realm": r.realm,
            "resolver": r.resolver,
            "client": r.client.map(|c| c.to_string()),
            "note": r.note,
            "policies": r.policies.iter().map(|p| json!({
                "name": p.name,
                "priority": p.priority,
                "matches": p.mismatch.is_none(),
                "reason": p.mismatch,
                "actions": p.actions.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
            "effective": r.effective.iter().map(|e| (e.action.clone(), match &e.value {
                EffectiveValue::One(v) => json!({ "value": action_json(v), "policies": e.policies }),
                EffectiveValue::Many(v) => json!({ "value": v, "policies": e.policies }),
                EffectiveValue::Conflict(c) => json!({ "error": c }),
            })).collect::<serde_json::Map<_, _>>(),
        });
        outln!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "scope {}: user {}, realm {}, resolver {}, client {}",
        scope.name(),
        r.user.as_deref().unwrap_or("-"),
        r.realm.as_deref().unwrap_or("-"),
        r.resolver.as_deref().unwrap_or("-"),
        r.client.map_or("-".to_string(), |c| c.to_string())
    );
    if let Some(note) = &r.note {
        outln!("note: {note}");
    }
    for p in &r.policies {
        match &p.mismatch {
            None => outln!("  applies: {} (priority {})", p.name, p.priority),
            Some(why) => outln!("  skipped: {} ({why})", p.name),
        }
    }
    if r.effective.is_empty() {
        outln!("no action applies");
    }
    for e in &r.effective {
        let from = if e.policies.is_empty() {
            String::new()
        } else {
            format!(" (from {})", e.policies.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(", "))
        };
        match &e.value {
            EffectiveValue::One(v) => outln!("  {} = {v}{from}", e.action),
            EffectiveValue::Many(v) => outln!("  {} = {v:?}{from}", e.action),
            EffectiveValue::Conflict(c) => outln!("  {}: ERROR {c}", e.action),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn action_json(v: &ActionValue) -> serde_json::Value {
    match v {
        ActionValue::Int(i) => json!(i),
        ActionValue::Bool(b) => json!(b),
        ActionValue::Text(s) => json!(s),
    }
}

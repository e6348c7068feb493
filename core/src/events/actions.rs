//! The token handler's actions (semantics.md 6.2), with their options
//! checked at config load: `set tokenrealm`, `delete`, `unassign`,
//! `disable`, `enable`, `enroll`, `set description`, `set validity`.

use crate::datetime;
use crate::realm::Realms;
use crate::token::TokenType;

use super::compare;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    SetTokenRealm {
        realm: String,
        only_realm: bool,
    },
    Delete,
    Unassign,
    Disable,
    Enable,
    Enroll {
        token_type: TokenType,
        user: bool,
        realm: Option<String>,
    },
    SetDescription {
        template: String,
    },
    /// Each bound as written (`+30d`, `2016/12/23`, ...); `None` leaves it.
    SetValidity {
        from: Option<String>,
        till: Option<String>,
    },
}

pub const ACTION_NAMES: &[&str] = &[
    "set tokenrealm",
    "delete",
    "unassign",
    "disable",
    "enable",
    "enroll",
    "set description",
    "set validity",
];

fn option_text(key: &str, value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        other => Err(format!("option '{key}' must be a string, not {other}")),
    }
}

fn option_bool(key: &str, value: &toml::Value) -> Result<bool, String> {
    match value {
        toml::Value::Boolean(b) => Ok(*b),
        toml::Value::String(s) if matches!(s.to_ascii_lowercase().as_str(), "true" | "1") => Ok(true),
        toml::Value::String(s) if matches!(s.to_ascii_lowercase().as_str(), "false" | "0" | "") => Ok(false),
        other => Err(format!("option '{key}' must be true or false, not {other}")),
    }
}

/// A `set validity` bound: checked now against a fixed instant, so that
/// a date that cannot parse is refused at load (otpd deviates from
/// privacyIDEA, which fails at run time).
fn validity_bound(key: &str, value: &toml::Value) -> Result<Option<String>, String> {
    let text = option_text(key, value)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let probe = jiff::Timestamp::UNIX_EPOCH.to_zoned(jiff::tz::TimeZone::UTC);
    datetime::parse_time(&text, &probe).map_err(|e| format!("option '{key}': {e}"))?;
    Ok(Some(text))
}

impl EventAction {
    pub fn parse(action: &str, options: &toml::Table, realms: &Realms) -> Result<EventAction, String> {
        let allowed: &[&str] = match action {
            "set tokenrealm" => &["realm", "only_realm"],
            "enroll" => &["tokentype", "user", "realm"],
            "set description" => &["description"],
            "set validity" => &["valid from", "valid till", "valid_from", "valid_till"],
            "delete" | "unassign" | "disable" | "enable" => &[],
            _ => return Err(format!("unknown action '{action}' (known: {})", ACTION_NAMES.join(", "))),
        };
        if let Some(key) = options.keys().find(|k| !allowed.contains(&k.as_str())) {
            let known = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
            return Err(format!("action '{action}' has no option '{key}' (options: {known})"));
        }
        let realm = |key: &str| -> Result<Option<String>, String> {
            match options.get(key) {
                None => Ok(None),
                Some(v) => {
                    let name = option_text(key, v)?;
                    realms
                        .canonical(&name)
                        .map(Some)
                        .map_err(|_| format!("option '{key}': realm '{name}' is not defined"))
                }
            }
        };
        Ok(match action {
            "set tokenrealm" => EventAction::SetTokenRealm {
                realm: realm("realm")?.ok_or("action 'set tokenrealm' needs the option 'realm'")?,
                only_realm: options
                    .get("only_realm")
                    .map(|v| option_bool("only_realm", v))
                    .transpose()?
                    .unwrap_or(false),
            },
            "delete" => EventAction::Delete,
            "unassign" => EventAction::Unassign,
            "disable" => EventAction::Disable,
            "enable" => EventAction::Enable,
            "enroll" => {
                let t = options.get("tokentype").ok_or("action 'enroll' needs the option 'tokentype'")?;
                let t = option_text("tokentype", t)?;
                let token_type = match TokenType::parse(&t) {
                    Some(TokenType::Spass) | None => {
                        return Err(format!(
                            "option 'tokentype': '{t}' cannot be enrolled by an event (use hotp, totp or pw)"
                        ));
                    }
                    Some(tt) => tt,
                };
                EventAction::Enroll {
                    token_type,
                    user: options.get("user").map(|v| option_bool("user", v)).transpose()?.unwrap_or(false),
                    realm: realm("realm")?,
                }
            }
            "set description" => {
                let d = options
                    .get("description")
                    .ok_or("action 'set description' needs the option 'description'")?;
                let template = option_text("description", d)?;
                compare::check_tags(&template).map_err(|e| format!("option 'description': {e}"))?;
                EventAction::SetDescription { template }
            }
            "set validity" => {
                fn get<'t>(
                    options: &'t toml::Table,
                    a: &'static str,
                    b: &'static str,
                ) -> Option<(&'static str, &'t toml::Value)> {
                    options.get(a).map(|v| (a, v)).or_else(|| options.get(b).map(|v| (b, v)))
                }
                let from = get(options, "valid from", "valid_from")
                    .map(|(k, v)| validity_bound(k, v))
                    .transpose()?
                    .flatten();
                let till = get(options, "valid till", "valid_till")
                    .map(|(k, v)| validity_bound(k, v))
                    .transpose()?
                    .flatten();
                if from.is_none() && till.is_none() {
                    return Err("action 'set validity' needs 'valid from' or 'valid till'".into());
                }
                EventAction::SetValidity { from, till }
            }
            _ => return Err(format!("unknown action '{action}' (known: {})", ACTION_NAMES.join(", "))),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            EventAction::SetTokenRealm { .. } => "set tokenrealm",
            EventAction::Delete => "delete",
            EventAction::Unassign => "unassign",
            EventAction::Disable => "disable",
            EventAction::Enable => "enable",
            EventAction::Enroll { .. } => "enroll",
            EventAction::SetDescription { .. } => "set description",
            EventAction::SetValidity { .. } => "set validity",
        }
    }

    /// What the action would do, in words (`otpd event list|test`).
    pub fn describe(&self) -> String {
        match self {
            EventAction::SetTokenRealm { realm, only_realm: true } => {
                format!("make {realm} the token's only realm (besides its owner's)")
            }
            EventAction::SetTokenRealm { realm, .. } => format!("add realm {realm} to the token"),
            EventAction::Delete => "delete the token".into(),
            EventAction::Unassign => "unassign the token (owner and PIN removed)".into(),
            EventAction::Disable => "disable the token".into(),
            EventAction::Enable => "enable the token".into(),
            EventAction::Enroll { token_type, user, realm } => format!(
                "enroll a new {token_type} token{}{}",
                if *user { " for the request's user" } else { "" },
                realm.as_ref().map(|r| format!(" in realm {r}")).unwrap_or_default()
            ),
            EventAction::SetDescription { template } => format!("set the description to {template:?}"),
            EventAction::SetValidity { from, till } => format!(
                "set the validity period: start {}, end {}",
                from.as_deref().unwrap_or("unchanged"),
                till.as_deref().unwrap_or("unchanged")
            ),
        }
    }
}

//! How the CLI shows tokens: the JSON document of design.md section 4 and a
//! readable text form. Times are RFC 3339 (UTC) or null.

use jiff::Timestamp;
use otpd_core::Token;
use otpd_core::token::StoredPin;
use serde_json::{Value, json};

/// RFC 3339 to the second (the store keeps seconds).
fn time(t: Option<Timestamp>) -> Value {
    t.and_then(|t| Timestamp::from_second(t.as_second()).ok())
        .map_or(Value::Null, |t| Value::String(t.to_string()))
}

pub fn token_json(t: &Token) -> Value {
    let mut doc = json!({
        "serial": t.serial,
        "type": t.token_type.name(),
        "user": t.owner.as_ref().map(|o| &o.login),
        "realm": t.owner.as_ref().map(|o| &o.realm),
        "resolver": t.owner.as_ref().map(|o| &o.resolver),
        "realms": t.realms,
        "active": t.active,
        "description": t.description,
        "count": t.count,
        "failcount": t.failcount,
        "maxfail": t.maxfail,
        "locked": t.is_locked_out(),
        "revoked": t.revoked,
        "validity_start": time(t.validity_start),
        "validity_end": time(t.validity_end),
        "pin_set": t.pin != StoredPin::Empty,
        "count_auth": t.count_auth,
        "count_auth_success": t.count_auth_success,
        "failcounter_exceeded": time(t.failcounter_exceeded),
        "created": time(Some(t.created)),
        "assigned": time(t.assigned),
    });
    use otpd_core::TokenType::*;
    match t.token_type {
        Hotp | Totp => {
            doc["digits"] = json!(t.otplen);
            doc["hashlib"] = json!(t.hash.name());
            doc["count_window"] = json!(t.count_window);
            doc["sync_window"] = json!(t.sync_window);
            if t.token_type == Totp {
                doc["timestep"] = json!(t.timestep);
                doc["time_window"] = json!(t.time_window);
                doc["time_shift"] = json!(t.time_shift);
            }
        }
        Pw => doc["otplen"] = json!(t.otplen),
        Spass => {}
    }
    doc
}

fn show_value(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(show_value).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// `key: value` lines, in the JSON document's order.
pub fn token_text(t: &Token) -> String {
    let doc = token_json(t);
    let mut out = String::new();
    if let Value::Object(map) = doc {
        for (k, v) in map {
            out.push_str(&format!("{k:<21} {}\n", show_value(&v)));
        }
    }
    out
}

/// One line per token, with a header.
pub fn token_table(tokens: &[Token]) -> String {
    let mut out = format!(
        "{:<16} {:<5} {:<20} {:<14} {:<6} {:<9} {}\n",
        "SERIAL", "TYPE", "USER", "REALMS", "ACTIVE", "FAIL", "DESCRIPTION"
    );
    for t in tokens {
        let user = t.owner.as_ref().map_or("-".to_string(), |o| format!("{}@{}", o.login, o.realm));
        let realms = if t.realms.is_empty() { "-".to_string() } else { t.realms.join(",") };
        out.push_str(&format!(
            "{:<16} {:<5} {:<20} {:<14} {:<6} {:<9} {}\n",
            t.serial,
            t.token_type.name(),
            user,
            realms,
            if t.active { "yes" } else { "no" },
            format!("{}/{}", t.failcount, t.maxfail),
            t.description
        ));
    }
    out
}

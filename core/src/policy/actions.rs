//! The policy actions otpd knows: for each, its scope, the type of its
//! value, how several matching policies combine (semantics.md 4.1), and
//! the older spelling that names the same action. A policy naming anything
//! else, or giving a value of the wrong type, is refused at config load.

use super::Scope;
use crate::token::TokenType;
use crate::{label, password, pinhandler};

/// How the values of several matching policies combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The policies with the lowest priority number; they must agree.
    Unique,
    /// Every matching policy, whatever its priority (limits take the maximum).
    All,
    /// On if any matching policy sets it.
    Any,
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// Free text checked by a validator (`Ok` or a reason).
    Text(fn(&str) -> Result<(), String>),
    Choice(&'static [&'static str]),
    /// `true`, or one of the words (passthru = true means userstore).
    TrueOr(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub struct ActionDef {
    pub name: &'static str,
    /// The other spelling (privacyIDEA's current name or the documented one).
    pub alias: Option<&'static str>,
    pub scope: Scope,
    pub kind: Kind,
    pub read: Read,
}

/// A validated action value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionValue {
    Int(i64),
    Bool(bool),
    Text(String),
}

impl std::fmt::Display for ActionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionValue::Int(i) => write!(f, "{i}"),
            ActionValue::Bool(b) => write!(f, "{b}"),
            ActionValue::Text(s) => write!(f, "{s:?}"),
        }
    }
}

const LIMIT: Kind = Kind::Int { min: 0, max: i64::MAX };

fn any_text(_: &str) -> Result<(), String> {
    Ok(())
}

fn template(s: &str) -> Result<(), String> {
    label::validate(s).map_err(|e| e.to_string())
}

fn contents(s: &str) -> Result<(), String> {
    password::validate_contents(s).map_err(|e| e.to_string())
}

fn handler(s: &str) -> Result<(), String> {
    pinhandler::PinHandler::parse(s).map(|_| ()).map_err(|e| e.to_string())
}

fn token_types(s: &str) -> Result<(), String> {
    for word in s.split_whitespace() {
        match TokenType::parse(word) {
            Some(TokenType::Spass) => return Err("spass tokens never do challenge-response".into()),
            Some(_) => {}
            None => return Err(format!("'{word}' is not a token type (use hotp, totp, pw)")),
        }
    }
    Ok(())
}

const fn def(name: &'static str, scope: Scope, kind: Kind, read: Read) -> ActionDef {
    ActionDef { name, alias: None, scope, kind, read }
}

const fn aliased(name: &'static str, alias: &'static str, scope: Scope, kind: Kind, read: Read) -> ActionDef {
    ActionDef { name, alias: Some(alias), scope, kind, read }
}

use Read::{All, Any, Unique};
use Scope::{Authentication as Auth, Enrollment as Enroll};

pub const ACTIONS: &[ActionDef] = &[
    def("max_token_per_realm", Enroll, LIMIT, All),
    def("max_token_per_user", Enroll, LIMIT, All),
    def("max_active_token_per_user", Enroll, LIMIT, All),
    def("tokenlabel", Enroll, Kind::Text(template), Unique),
    def("tokenissuer", Enroll, Kind::Text(template), Unique),
    def("appimageurl", Enroll, Kind::Text(any_text), Unique),
    def("autoassignment", Enroll, Kind::Choice(&["any_pin", "userstore"]), Unique),
    def("otp_pin_random", Enroll, Kind::Int { min: 1, max: 31 }, Unique),
    def("pinhandling", Enroll, Kind::Text(handler), All),
    aliased("otp_pin_encrypt", "encrypt_pin", Enroll, Kind::Bool, Any),
    aliased("lostTokenPWLen", "losttoken_PW_length", Enroll, Kind::Int { min: 1, max: 31 }, Unique),
    aliased("lostTokenPWContents", "losttoken_PW_contents", Enroll, Kind::Text(contents), Unique),
    aliased("lostTokenValid", "losttoken_valid", Enroll, Kind::Int { min: 1, max: 60 }, Unique),
    def("pw.length", Enroll, Kind::Int { min: 1, max: 256 }, Unique),
    def("pw.contents", Enroll, Kind::Text(contents), Unique),
    def("otppin", Auth, Kind::Choice(&["tokenpin", "userstore", "none"]), Unique),
    def("challenge_response", Auth, Kind::Text(token_types), All),
    def("challenge_text", Auth, Kind::Text(any_text), Unique),
    def("passthru", Auth, Kind::TrueOr(&["userstore"]), Unique),
    def("passOnNoToken", Auth, Kind::Bool, Any),
    def("passOnNoUser", Auth, Kind::Bool, Any),
    def("reset_all_user_tokens", Auth, Kind::Bool, Any),
];

/// The definition of `key` in `scope`: a listed action or alias, or a
/// per-type limit (`hotp_max_token_per_user`, `totp_max_active_token_per_user`, ...).
pub fn find(scope: Scope, key: &str) -> Option<ActionDef> {
    if let Some(d) = ACTIONS.iter().find(|d| d.scope == scope && (d.name == key || d.alias == Some(key))) {
        return Some(*d);
    }
    if scope != Scope::Enrollment {
        return None;
    }
    let (prefix, rest) = key.split_once('_')?;
    let t = TokenType::parse(prefix).filter(|t| t.name() == prefix)?;
    ["max_token_per_user", "max_active_token_per_user"]
        .into_iter()
        .find(|suffix| *suffix == rest)
        .map(|_| ActionDef { name: type_limit_name(t, rest), alias: None, scope, kind: LIMIT, read: All })
}

/// `'static` names of the per-type limits.
fn type_limit_name(t: TokenType, suffix: &str) -> &'static str {
    const NAMES: [[&str; 2]; 4] = [
        ["hotp_max_token_per_user", "hotp_max_active_token_per_user"],
        ["totp_max_token_per_user", "totp_max_active_token_per_user"],
        ["pw_max_token_per_user", "pw_max_active_token_per_user"],
        ["spass_max_token_per_user", "spass_max_active_token_per_user"],
    ];
    let row = match t {
        TokenType::Hotp => 0,
        TokenType::Totp => 1,
        TokenType::Pw => 2,
        TokenType::Spass => 3,
    };
    NAMES[row][usize::from(suffix != "max_token_per_user")]
}

/// The names an operator may write for `scope`, for error messages.
pub fn known(scope: Scope) -> String {
    let mut names: Vec<&str> = ACTIONS.iter().filter(|d| d.scope == scope).map(|d| d.name).collect();
    if scope == Scope::Enrollment {
        names.push("<type>_max_token_per_user");
        names.push("<type>_max_active_token_per_user");
    }
    names.join(", ")
}

/// Checks a value against its definition.
pub fn validate(def: &ActionDef, value: &toml::Value) -> Result<ActionValue, String> {
    let name = def.name;
    match (def.kind, value) {
        (Kind::Int { min, max }, toml::Value::Integer(i)) => {
            if *i < min || *i > max {
                if max == i64::MAX {
                    Err(format!("{name} must be {min} or more, not {i}"))
                } else {
                    Err(format!("{name} must be {min} to {max}, not {i}"))
                }
            } else {
                Ok(ActionValue::Int(*i))
            }
        }
        (Kind::Int { .. }, v) => Err(format!("{name} must be a whole number, not {v}")),
        (Kind::Bool, toml::Value::Boolean(b)) => Ok(ActionValue::Bool(*b)),
        (Kind::Bool, v) => Err(format!("{name} must be true or false, not {v}")),
        (Kind::Text(check), toml::Value::String(s)) => {
            check(s).map(|_| ActionValue::Text(s.clone())).map_err(|e| format!("{name}: {e}"))
        }
        (Kind::Text(_), v) => Err(format!("{name} must be a string, not {v}")),
        (Kind::Choice(words), toml::Value::String(s)) if words.contains(&s.as_str()) => {
            Ok(ActionValue::Text(s.clone()))
        }
        (Kind::Choice(words), v) => Err(format!("{name} must be one of {}, not {v}", words.join(", "))),
        (Kind::TrueOr(_), toml::Value::Boolean(b)) => Ok(ActionValue::Bool(*b)),
        (Kind::TrueOr(words), toml::Value::String(s)) if words.contains(&s.as_str()) => {
            Ok(ActionValue::Text(s.clone()))
        }
        (Kind::TrueOr(words), v) => Err(format!("{name} must be true or {}, not {v}", words.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_type_limits() {
        assert_eq!(find(Enroll, "encrypt_pin").unwrap().name, "otp_pin_encrypt");
        assert_eq!(find(Enroll, "losttoken_PW_length").unwrap().name, "lostTokenPWLen");
        assert_eq!(find(Enroll, "hotp_max_token_per_user").unwrap().name, "hotp_max_token_per_user");
        assert_eq!(
            find(Enroll, "totp_max_active_token_per_user").unwrap().name,
            "totp_max_active_token_per_user"
        );
        assert!(find(Enroll, "yubikey_max_token_per_user").is_none());
        assert!(find(Enroll, "otppin").is_none(), "otppin is an authentication action");
        assert!(find(Auth, "passOnNoUser").is_some());
        assert!(find(Auth, "nonsense").is_none());
    }

    #[test]
    fn values_are_type_checked() {
        let d = find(Enroll, "max_token_per_user").unwrap();
        assert_eq!(validate(&d, &toml::Value::Integer(2)), Ok(ActionValue::Int(2)));
        assert!(validate(&d, &toml::Value::Integer(-1)).unwrap_err().contains("0 or more"));
        assert!(validate(&d, &toml::Value::String("2".into())).is_err());
        let d = find(Auth, "otppin").unwrap();
        assert!(validate(&d, &toml::Value::String("pin".into())).unwrap_err().contains("tokenpin"));
        let d = find(Auth, "passthru").unwrap();
        assert_eq!(validate(&d, &toml::Value::Boolean(true)), Ok(ActionValue::Bool(true)));
        assert!(validate(&d, &toml::Value::String("radius".into())).is_err());
        let d = find(Auth, "challenge_response").unwrap();
        assert!(validate(&d, &toml::Value::String("hotp yubikey".into())).unwrap_err().contains("yubikey"));
        let d = find(Enroll, "lostTokenPWContents").unwrap();
        assert!(validate(&d, &toml::Value::String("cnx".into())).is_err());
        let d = find(Enroll, "otp_pin_random").unwrap();
        assert!(validate(&d, &toml::Value::Integer(32)).is_err());
    }
}

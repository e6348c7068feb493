//! Event conditions (semantics.md 7.3): tests on the request, its result,
//! its user and its token. All conditions of an entry must hold. As in
//! privacyIDEA, several conditions are skipped (count as true) when the
//! data they look at is missing, e.g. token conditions without a token.

use ipnet::IpNet;
use jiff::Timestamp;
use regex::Regex;

use super::EventRequest;
use super::compare::{GenericCondition, check_int_condition, int_condition};
use crate::token::{Token, TokenType};
use crate::validate::Front;

#[derive(Debug, Clone)]
pub enum Condition {
    Realm(Vec<String>),
    Resolver(Vec<String>),
    User(Vec<String>),
    LoggedInUser(String),
    ClientIp { include: Vec<IpNet>, exclude: Vec<IpNet> },
    Serial(Regex),
    TokenRealm(Vec<String>),
    TokenType(Vec<TokenType>),
    TokenHasOwner(bool),
    TokenLocked(bool),
    TokenValidityPeriod(bool),
    OtpCounter(String),
    Failcounter(String),
    CountAuth(String),
    CountAuthSuccess(String),
    CountAuthFail(String),
    TokenInfo(GenericCondition),
    UserTokenNumber(String),
    ResultValue(bool),
    ResultStatus(bool),
    ResultAuthentication(String),
    DetailMessage(Regex),
}

pub const CONDITION_NAMES: &[&str] = &[
    "realm",
    "resolver",
    "user",
    "logged_in_user",
    "client_ip",
    "serial",
    "tokenrealm",
    "tokentype",
    "token_has_owner",
    "token_locked",
    "token_validity_period",
    "otp_counter",
    "failcounter",
    "count_auth",
    "count_auth_success",
    "count_auth_fail",
    "tokeninfo",
    "user_token_number",
    "result_value",
    "result_status",
    "result_authentication",
    "detail_message",
];

/// What a condition is evaluated against.
pub struct ConditionInput<'a> {
    pub request: &'a EventRequest,
    /// The single target token, if there is exactly one.
    pub token: Option<&'a Token>,
    /// The tokens the request's user owns (`None` without a user).
    pub user_tokens: Option<&'a [Token]>,
    pub now: Timestamp,
}

fn text(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.trim().to_owned()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(if *b { "True".into() } else { "False".into() }),
        other => Err(format!("value {other} must be a string")),
    }
}

fn list(value: &str) -> Vec<String> {
    value.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

fn boolean(name: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("condition {name} must be True or False, not '{value}'")),
    }
}

fn int(name: &str, value: &str) -> Result<String, String> {
    check_int_condition(value).map_err(|e| format!("condition {name}: {e}"))?;
    Ok(value.to_owned())
}

fn regex(name: &str, value: &str, anchored: bool) -> Result<Regex, String> {
    let pattern = if anchored { format!("^(?:{value})") } else { value.to_owned() };
    Regex::new(&pattern).map_err(|e| {
        // regex's message spans several lines; its last line says what is wrong.
        let text = e.to_string();
        let why = text.lines().last().unwrap_or("invalid").trim_start_matches("error: ").to_owned();
        format!("condition {name}: '{value}' is not a regular expression ({why})")
    })
}

impl Condition {
    pub fn parse(name: &str, value: &toml::Value) -> Result<Condition, String> {
        let v = text(value).map_err(|e| format!("condition {name}: {e}"))?;
        Ok(match name {
            "realm" => Condition::Realm(list(&v.to_lowercase())),
            "resolver" => Condition::Resolver(list(&v)),
            "user" => Condition::User(list(&v)),
            "logged_in_user" => match v.as_str() {
                "admin" | "user" => Condition::LoggedInUser(v),
                _ => return Err(format!("condition logged_in_user must be admin or user, not '{v}'")),
            },
            "client_ip" => {
                let (mut include, mut exclude) = (Vec::new(), Vec::new());
                for entry in list(&v) {
                    let (excluded, net) = match entry.strip_prefix('-').or_else(|| entry.strip_prefix('!')) {
                        Some(rest) => (true, rest.trim().to_owned()),
                        None => (false, entry.clone()),
                    };
                    let net = net
                        .parse::<IpNet>()
                        .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            format!("condition client_ip: '{entry}' is not an IP address or CIDR")
                        })?;
                    if excluded { exclude.push(net) } else { include.push(net) }
                }
                Condition::ClientIp { include, exclude }
            }
            "serial" => Condition::Serial(regex(name, &v, true)?),
            "tokenrealm" => Condition::TokenRealm(list(&v.to_lowercase())),
            "tokentype" => Condition::TokenType(
                list(&v)
                    .iter()
                    .map(|t| {
                        TokenType::parse(t).ok_or_else(|| format!("condition tokentype: unknown type '{t}'"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "token_has_owner" => Condition::TokenHasOwner(boolean(name, &v)?),
            "token_locked" => Condition::TokenLocked(boolean(name, &v)?),
            "token_validity_period" => Condition::TokenValidityPeriod(boolean(name, &v)?),
            "otp_counter" => Condition::OtpCounter(int(name, &v)?),
            "failcounter" => Condition::Failcounter(int(name, &v)?),
            "count_auth" => Condition::CountAuth(int(name, &v)?),
            "count_auth_success" => Condition::CountAuthSuccess(int(name, &v)?),
            "count_auth_fail" => Condition::CountAuthFail(int(name, &v)?),
            "user_token_number" => Condition::UserTokenNumber(int(name, &v)?),
            "tokeninfo" => Condition::TokenInfo(
                GenericCondition::parse(&v).map_err(|e| format!("condition tokeninfo: {e}"))?,
            ),
            "result_value" => Condition::ResultValue(boolean(name, &v)?),
            "result_status" => Condition::ResultStatus(boolean(name, &v)?),
            "result_authentication" => match v.to_ascii_uppercase().as_str() {
                a @ ("ACCEPT" | "REJECT" | "CHALLENGE" | "DECLINED") => {
                    Condition::ResultAuthentication(a.to_owned())
                }
                _ => {
                    return Err(format!(
                        "condition result_authentication must be ACCEPT, REJECT or CHALLENGE, not '{v}'"
                    ));
                }
            },
            "detail_message" => Condition::DetailMessage(regex(name, &v, false)?),
            _ => return Err(format!("unknown condition '{name}' (known: {})", CONDITION_NAMES.join(", "))),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Condition::Realm(_) => "realm",
            Condition::Resolver(_) => "resolver",
            Condition::User(_) => "user",
            Condition::LoggedInUser(_) => "logged_in_user",
            Condition::ClientIp { .. } => "client_ip",
            Condition::Serial(_) => "serial",
            Condition::TokenRealm(_) => "tokenrealm",
            Condition::TokenType(_) => "tokentype",
            Condition::TokenHasOwner(_) => "token_has_owner",
            Condition::TokenLocked(_) => "token_locked",
            Condition::TokenValidityPeriod(_) => "token_validity_period",
            Condition::OtpCounter(_) => "otp_counter",
            Condition::Failcounter(_) => "failcounter",
            Condition::CountAuth(_) => "count_auth",
            Condition::CountAuthSuccess(_) => "count_auth_success",
            Condition::CountAuthFail(_) => "count_auth_fail",
            Condition::TokenInfo(_) => "tokeninfo",
            Condition::UserTokenNumber(_) => "user_token_number",
            Condition::ResultValue(_) => "result_value",
            Condition::ResultStatus(_) => "result_status",
            Condition::ResultAuthentication(_) => "result_authentication",
            Condition::DetailMessage(_) => "detail_message",
        }
    }

    /// Whether the condition holds for `input`.
    pub fn holds(&self, input: &ConditionInput<'_>) -> bool {
        let req = input.request;
        let user = req.user.as_ref();
        let token = input.token;
        let result = req.result.as_ref();
        // Token conditions without a token are skipped (count as true).
        let on_token = |f: &dyn Fn(&Token) -> bool| token.is_none_or(f);
        match self {
            Condition::Realm(list) => user.is_some_and(|u| list.contains(&u.realm)),
            Condition::Resolver(list) => user.is_some_and(|u| list.contains(&u.resolver)),
            Condition::User(list) => user.is_some_and(|u| list.contains(&u.login)),
            Condition::LoggedInUser(role) => {
                let actual = if req.front == Front::Cli { "admin" } else { "user" };
                role == actual
            }
            Condition::ClientIp { include, exclude } => match req.client.map(|c| c.to_canonical()) {
                None => true,
                Some(ip) => {
                    !exclude.iter().any(|n| n.contains(&ip))
                        && (include.is_empty() || include.iter().any(|n| n.contains(&ip)))
                }
            },
            Condition::Serial(re) => {
                let serial = req.serial.as_deref().or_else(|| result.and_then(|r| r.serial.as_deref()));
                serial.is_none_or(|s| re.is_match(s))
            }
            Condition::TokenRealm(list) => {
                on_token(&|t| t.realms.is_empty() || t.realms.iter().any(|r| list.contains(r)))
            }
            Condition::TokenType(types) => on_token(&|t| types.contains(&t.token_type)),
            Condition::TokenHasOwner(want) => on_token(&|t| t.owner.is_some() == *want),
            Condition::TokenLocked(want) => match token {
                Some(t) => t.is_locked_out() == *want,
                // privacyIDEA: without a token, whether the user owns a
                // locked token (value ignored); otpd: no user, no match.
                None => input.user_tokens.is_some_and(|ts| ts.iter().any(Token::is_locked_out)),
            },
            Condition::TokenValidityPeriod(want) => on_token(&|t| t.is_valid_at(input.now) == *want),
            Condition::OtpCounter(c) => on_token(&|t| int_condition(c, t.count as i64)),
            Condition::Failcounter(c) => on_token(&|t| int_condition(c, i64::from(t.failcount))),
            Condition::CountAuth(c) => on_token(&|t| int_condition(c, t.count_auth as i64)),
            Condition::CountAuthSuccess(c) => on_token(&|t| int_condition(c, t.count_auth_success as i64)),
            Condition::CountAuthFail(c) => {
                on_token(&|t| int_condition(c, t.count_auth.saturating_sub(t.count_auth_success) as i64))
            }
            Condition::TokenInfo(g) => {
                let now = input.now.to_zoned(jiff::tz::TimeZone::system());
                on_token(&|t| g.holds(tokeninfo(t, &g.key).as_deref(), &now))
            }
            Condition::UserTokenNumber(c) => {
                input.user_tokens.is_none_or(|ts| int_condition(c, ts.len() as i64))
            }
            Condition::ResultValue(want) => result.is_some_and(|r| r.value) == *want,
            Condition::ResultStatus(want) => result.is_none_or(|r| r.status) == *want,
            Condition::ResultAuthentication(want) => result.is_some_and(|r| r.authentication == want),
            Condition::DetailMessage(re) => re.is_match(result.map_or("", |r| r.message.as_str())),
        }
    }
}

/// The token's fields under privacyIDEA's tokeninfo names, for the
/// `tokeninfo` condition.
pub fn tokeninfo(t: &Token, key: &str) -> Option<String> {
    let minute = |ts: Timestamp| crate::datetime::format_minute(&ts.to_zoned(jiff::tz::TimeZone::system()));
    match key {
        "hashlib" => Some(t.hash.name().to_owned()),
        "timeStep" if t.token_type == TokenType::Totp => Some(t.timestep.to_string()),
        "timeWindow" if t.token_type == TokenType::Totp => Some(t.time_window.to_string()),
        "timeShift" if t.token_type == TokenType::Totp => Some(t.time_shift.to_string()),
        "count_auth" => Some(t.count_auth.to_string()),
        "count_auth_success" => Some(t.count_auth_success.to_string()),
        "validity_period_start" => t.validity_start.map(minute),
        "validity_period_end" => t.validity_end.map(minute),
        "failcounter_exceeded" => t.failcounter_exceeded.map(minute),
        "creation_date" => Some(minute(t.created)),
        "assignment_date" => t.assigned.map(minute),
        "description" => Some(t.description.clone()),
        _ => None,
    }
}

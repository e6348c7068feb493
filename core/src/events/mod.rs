//! Token event handlers (semantics.md sections 6 and 7): `[[events]]`
//! entries bind one token-handler action to events (`validate_check`,
//! `token_init`, ...) in `pre` or `post` position; when every condition of
//! an entry holds, its action runs on the request's token(s). Entries run
//! in ascending `order`, ties in configuration order. A failing handler is
//! logged and audited and never changes the operation's outcome; each
//! action commits together with its audit record, or not at all. Actions
//! run by handlers fire no events themselves.
//!
//! * `compare`: integer and generic comparisons, description tags.
//! * `conditions`: the conditions and what they look at.
//! * `actions`: the eight token actions and their options.

pub mod actions;
pub mod compare;
pub mod conditions;
mod run;

pub use run::DryRun;

use std::net::IpAddr;
use std::path::Path;

use crate::config::{ConfigError, EventConfig};
use crate::realm::{Realms, User};
use crate::validate::Front;

pub use actions::EventAction;
pub use conditions::Condition;

/// privacyIDEA's event names. otpd fires those marked in `FIRED`; the
/// others are accepted so that a configuration written for privacyIDEA
/// loads.
pub const EVENT_NAMES: &[&str] = &[
    "validate_check",
    "token_init",
    "token_assign",
    "token_unassign",
    "token_enable",
    "token_disable",
    "token_delete",
    "token_revoke",
    "token_reset",
    "token_resync",
    "token_setpin",
    "token_setrandompin",
    "token_set",
    "token_realm",
    "token_lost",
    "token_copypin",
    "token_copyuser",
    "token_info",
    "token_load",
];

/// The events otpd's operations fire.
pub const FIRED: &[&str] = &[
    "validate_check",
    "token_init",
    "token_assign",
    "token_unassign",
    "token_enable",
    "token_disable",
    "token_delete",
    "token_reset",
    "token_resync",
    "token_setpin",
    "token_set",
    "token_realm",
    "token_lost",
    "token_load",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Pre,
    Post,
}

/// One validated `[[events]]` entry.
#[derive(Debug, Clone)]
pub struct EventDef {
    pub name: String,
    pub events: Vec<String>,
    pub position: Position,
    pub order: i64,
    pub line: usize,
    pub conditions: Vec<Condition>,
    pub action: EventAction,
}

/// The outcome an operation had, for post handlers.
#[derive(Debug, Clone)]
pub struct EventResult {
    /// privacyIDEA's `result.value`: true on accept / success.
    pub value: bool,
    /// privacyIDEA's `result.status`: false when the operation failed with an error.
    pub status: bool,
    /// ACCEPT, REJECT or CHALLENGE for validate_check; empty otherwise.
    pub authentication: &'static str,
    pub message: String,
    /// The token the outcome names (`detail.serial`).
    pub serial: Option<String>,
}

/// What a handler sees of the request.
#[derive(Debug, Clone)]
pub struct EventRequest {
    pub event: &'static str,
    /// The request's user, if it names an existing one.
    pub user: Option<User>,
    pub client: Option<IpAddr>,
    pub front: Front,
    /// The serial the request names (admin operations).
    pub serial: Option<String>,
    /// `None` for pre handlers.
    pub result: Option<EventResult>,
}

/// The active entries of the configuration.
#[derive(Debug, Default)]
pub struct Events {
    defs: Vec<EventDef>,
}

impl Events {
    /// Checks every entry (names, conditions, action, options, dates) and
    /// keeps the active ones in running order.
    pub fn from_config(configs: &[EventConfig], path: &Path, realms: &Realms) -> Result<Self, ConfigError> {
        let mut defs = Vec::new();
        for c in configs {
            let err = |message: String| ConfigError::Invalid {
                path: path.to_owned(),
                line: c.line,
                // One line, whatever the message it wraps.
                message: format!("event '{}': {}", c.name, message.replace('\n', " ")),
            };
            if c.events.is_empty() {
                return Err(err("events must name at least one event".into()));
            }
            for e in &c.events {
                if !EVENT_NAMES.contains(&e.as_str()) {
                    return Err(err(format!("unknown event '{e}' (known: {})", EVENT_NAMES.join(", "))));
                }
            }
            let position = match c.position.as_str() {
                "pre" => Position::Pre,
                _ => Position::Post,
            };
            let conditions = c
                .conditions
                .iter()
                .map(|(k, v)| Condition::parse(k, v).map_err(&err))
                .collect::<Result<Vec<_>, _>>()?;
            let action = EventAction::parse(&c.action, &c.options, realms).map_err(&err)?;
            if !c.events.iter().any(|e| FIRED.contains(&e.as_str())) {
                tracing::warn!(
                    "{} line {}: event '{}' is bound only to events otpd never fires ({})",
                    path.display(),
                    c.line,
                    c.name,
                    c.events.join(", ")
                );
            }
            if !c.active {
                continue;
            }
            defs.push(EventDef {
                name: c.name.clone(),
                events: c.events.clone(),
                position,
                order: c.order,
                line: c.line,
                conditions,
                action,
            });
        }
        // Stable: ties keep configuration order.
        defs.sort_by_key(|d| d.order);
        Ok(Events { defs })
    }

    pub fn all(&self) -> &[EventDef] {
        &self.defs
    }

    /// Whether any entry listens to `event` (so that operations without
    /// handlers pay nothing for them).
    pub fn listens(&self, event: &str) -> bool {
        self.defs.iter().any(|d| d.events.iter().any(|e| e == event))
    }

    /// The entries for `event` at `position`, in running order.
    pub fn bound(&self, event: &str, position: Position) -> impl Iterator<Item = &EventDef> {
        self.defs.iter().filter(move |d| d.position == position && d.events.iter().any(|e| e == event))
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use zeroize::Zeroizing;

    use crate::testutil::{Fixture, RFC_KEY_HEX};
    use crate::{AuthRequest, Config, Front, InitSpec, TokenType};

    fn with_events(entries: &str) -> Fixture {
        Fixture::with_config(1_700_000_000, entries)
    }

    fn entry(name: &str, events: &str, action: &str, conditions: &str, options: &str) -> String {
        format!(
            "[[events]]\nname = \"{name}\"\nevents = [{events}]\nhandler = \"token\"\naction = \"{action}\"\n\
             conditions = {{ {conditions} }}\noptions = {{ {options} }}\n"
        )
    }

    fn alice_hotp(f: &Fixture) {
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.serial = Some("H1".into());
        spec.otpkey = Some(Zeroizing::new(RFC_KEY_HEX.into()));
        spec.user = Some("alice".into());
        f.otpd.init_token(&f.ctx(), &spec).unwrap();
    }

    fn login(f: &Fixture, password: &str, client: Option<&str>) -> crate::Outcome {
        let mut req = AuthRequest::new("alice", password, Front::Radius);
        req.client = client.map(|c| c.parse().unwrap());
        f.otpd.authenticate(&req).unwrap()
    }

    fn load_error(entries: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users"), "alice:*\n").unwrap();
        let text = format!(
            "[[resolvers]]\nname = \"u\"\ntype = \"passwdfile\"\npath = \"users\"\n\
             [[realms]]\nname = \"corp\"\nresolvers = [\"u\"]\n{entries}"
        );
        let config = Config::parse(&dir.path().join("otpd.toml"), &text).unwrap();
        crate::Otpd::open(config).unwrap_err().to_string()
    }

    #[test]
    fn bad_entries_are_refused_at_load() {
        let cases = [
            (entry("e", "\"token_frobnicate\"", "disable", "", ""), "unknown event 'token_frobnicate'"),
            (entry("e", "\"token_init\"", "explode", "", ""), "unknown action 'explode'"),
            (entry("e", "\"token_init\"", "disable", "colour = \"red\"", ""), "unknown condition 'colour'"),
            (entry("e", "\"token_init\"", "disable", "", "realm = \"x\""), "has no option 'realm'"),
            (
                entry("e", "\"token_init\"", "set tokenrealm", "", "realm = \"nowhere\""),
                "'nowhere' is not defined",
            ),
            (
                entry("e", "\"token_init\"", "set validity", "", "\"valid till\" = \"31.02.2016\""),
                "31.02.2016",
            ),
            (
                entry("e", "\"token_init\"", "set validity", "", "\"valid from\" = \"2016/13/01\""),
                "2016/13/01",
            ),
            (entry("e", "\"token_init\"", "set validity", "", "\"valid till\" = \"+5x\""), "+5x"),
            (entry("e", "\"token_init\"", "set validity", "", "\"valid till\" = \"30d\""), "30d"),
            (entry("e", "\"token_init\"", "set description", "", "description = \"{nope}\""), "nope"),
            (entry("e", "\"token_init\"", "disable", "failcounter = \"abc\"", ""), "failcounter"),
        ];
        for (text, needle) in cases {
            let e = load_error(&text);
            assert!(e.contains("line ") && e.contains("event 'e'") && e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn set_tokenrealm_on_init_and_order() {
        let f = with_events(&format!(
            "{}{}{}",
            entry("join", "\"token_init\"", "set tokenrealm", "realm = \"corp\"", "realm = \"sales\""),
            entry("second", "\"token_init\"", "set description", "", "description = \"second\"")
                .replace("[[events]]", "[[events]]\norder = 2"),
            entry("first", "\"token_init\"", "set description", "", "description = \"first {ua_browser}\"")
                .replace("[[events]]", "[[events]]\norder = 1"),
        ));
        alice_hotp(&f);
        let t = f.otpd.token("H1").unwrap();
        assert_eq!(t.realms, vec!["corp".to_string(), "sales".to_string()]);
        assert_eq!(t.description, "second");
        let audit = f.otpd.audit(20).unwrap();
        assert!(audit.iter().any(|a| a.actor == "event:join" && a.success));
    }

    #[test]
    fn disable_after_failure_from_outside() {
        let f = with_events(&entry(
            "outside",
            "\"validate_check\"",
            "disable",
            "result_value = \"False\", client_ip = \"192.0.2.0/24\"",
            "",
        ));
        alice_hotp(&f);
        assert!(!login(&f, "000000", Some("10.0.0.1")).is_accept());
        assert!(f.otpd.token("H1").unwrap().active, "inside: not disabled");
        assert!(login(&f, "755224", Some("192.0.2.7")).is_accept(), "a success does not fire");
        assert!(!login(&f, "000000", Some("192.0.2.7")).is_accept());
        assert!(!f.otpd.token("H1").unwrap().active);
    }

    #[test]
    fn enroll_honours_limits_and_never_fails_the_login() {
        let f = with_events(&format!(
            "{}[[policies]]\nname = \"one\"\nscope = \"enrollment\"\n[policies.actions]\nmax_token_per_user = 1\n",
            entry(
                "spare",
                "\"validate_check\"",
                "enroll",
                "result_value = \"True\"",
                "tokentype = \"totp\", user = true"
            )
        ));
        alice_hotp(&f);
        assert!(login(&f, "755224", None).is_accept());
        assert_eq!(f.otpd.list_tokens(Some("alice"), None).unwrap().len(), 1);
        let audit = f.otpd.audit(5).unwrap();
        assert!(audit.iter().any(|a| a.actor == "event:spare" && !a.success), "{audit:?}");
    }

    #[test]
    fn set_validity_offset_from_the_event() {
        let f = with_events(&entry(
            "validity",
            "\"validate_check\"",
            "set validity",
            "result_value = \"True\"",
            "\"valid till\" = \"+30d\"",
        ));
        alice_hotp(&f);
        assert!(login(&f, "755224", None).is_accept());
        let end = f.otpd.token("H1").unwrap().validity_end.unwrap();
        let expected = Timestamp::from_second(1_700_000_000 + 30 * 86_400).unwrap();
        assert!((end.as_second() - expected.as_second()).abs() <= 3600 + 60, "{end}");
    }

    #[test]
    fn conditions_that_do_not_hold_do_not_fire() {
        let f = with_events(&format!(
            "{}{}",
            entry("sales-only", "\"validate_check\"", "disable", "realm = \"sales\"", ""),
            entry("totp-only", "\"validate_check\"", "disable", "tokentype = \"totp\"", ""),
        ));
        alice_hotp(&f);
        assert!(!login(&f, "000000", None).is_accept());
        assert!(f.otpd.token("H1").unwrap().active);
    }
}

//! Policies: named rules with a scope (`enrollment`, `authentication`), a
//! priority and filters on realm, resolver, user and client address, whose
//! actions the validation flow and enrollment read. Matching and the three
//! ways of reading an action (all, unique, boolean) follow privacyIDEA
//! (semantics.md 4.1): lists match everything when empty, `!x`/`-x` exclude,
//! a list of exclusions only matches nothing, entries are exact names, `*`
//! or anchored regular expressions; the lowest priority number wins.

pub mod actions;
pub mod report;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use regex::Regex;

use crate::config::{ConfigError, PolicyConfig};
pub use actions::ActionValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Enrollment,
    Authentication,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enrollment" => Some(Scope::Enrollment),
            "authentication" => Some(Scope::Authentication),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::Enrollment => "enrollment",
            Scope::Authentication => "authentication",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error(
        "There are policies with conflicting actions: [{}] (action {action}; give them different priorities)",
        quoted(.names)
    )]
    Conflict { action: String, names: Vec<String> },
}

/// `['p1', 'p2']`, privacyIDEA's way of naming conflicting policies.
fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
}

#[derive(Debug)]
enum Pattern {
    Any,
    Exact(String),
    Regex(Regex),
}

impl Pattern {
    fn new(entry: &str) -> Self {
        if entry == "*" {
            return Pattern::Any;
        }
        // An entry that is a plain name compares exactly; anything else is
        // an anchored regular expression (`customer_.*`).
        if entry.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@')) {
            return Pattern::Exact(entry.to_owned());
        }
        match Regex::new(&format!("^(?:{entry})$")) {
            Ok(re) => Pattern::Regex(re),
            Err(_) => Pattern::Exact(entry.to_owned()),
        }
    }

    fn matches(&self, value: &str, case_insensitive: bool) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) if case_insensitive => e.eq_ignore_ascii_case(value),
            Pattern::Exact(e) => e == value,
            Pattern::Regex(re) => re.is_match(value),
        }
    }
}

/// A filter list: `["a", "b.*", "!c"]`.
#[derive(Debug, Default)]
struct NameList {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
    case_insensitive: bool,
}

fn split_exclusion(entry: &str) -> (bool, &str) {
    match entry.strip_prefix('!').or_else(|| entry.strip_prefix('-')) {
        Some(rest) => (true, rest.trim()),
        None => (false, entry.trim()),
    }
}

impl NameList {
    fn new(entries: &[String], case_insensitive: bool) -> Self {
        let mut list = NameList { case_insensitive, ..Default::default() };
        for e in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (excluded, name) = split_exclusion(e);
            let p = Pattern::new(name);
            if excluded { list.exclude.push(p) } else { list.include.push(p) }
        }
        list
    }

    fn matches(&self, value: Option<&str>) -> bool {
        if self.include.is_empty() && self.exclude.is_empty() {
            return true;
        }
        let Some(value) = value else { return false };
        let ci = self.case_insensitive;
        !self.exclude.iter().any(|p| p.matches(value, ci))
            && self.include.iter().any(|p| p.matches(value, ci))
    }
}

#[derive(Debug, Default)]
struct ClientList {
    include: Vec<IpNet>,
    exclude: Vec<IpNet>,
}

impl ClientList {
    fn matches(&self, client: Option<IpAddr>) -> bool {
        if self.include.is_empty() && self.exclude.is_empty() {
            return true;
        }
        let Some(ip) = client.map(|c| c.to_canonical()) else { return false };
        !self.exclude.iter().any(|n| n.contains(&ip)) && self.include.iter().any(|n| n.contains(&ip))
    }
}

#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub scope: Scope,
    pub priority: i64,
    pub line: usize,
    realms: NameList,
    resolvers: NameList,
    users: NameList,
    clients: ClientList,
    /// The filters as written, for `otpd policy list` and explanations.
    pub filters: [(&'static str, Vec<String>); 4],
    /// Validated actions under their primary names.
    pub actions: BTreeMap<&'static str, ActionValue>,
}

/// The strongest limit of matching policies and the policy that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub value: i64,
    pub policy: String,
}

/// What a policy is matched against.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyQuery<'a> {
    pub realm: Option<&'a str>,
    pub resolver: Option<&'a str>,
    pub user: Option<&'a str>,
    pub client: Option<IpAddr>,
    /// Realm-only lookups (`max_token_per_realm`) ignore the user and
    /// resolver filters, as privacyIDEA does.
    pub realm_only: bool,
}

/// The active policies of the configuration.
#[derive(Debug, Default)]
pub struct Policies {
    list: Vec<Policy>,
}

impl Policies {
    /// Builds and checks the policies (actions, values, filters); `path`
    /// names the file in error messages. Inactive policies are checked too.
    pub fn from_config(configs: &[PolicyConfig], path: &Path) -> Result<Self, ConfigError> {
        let mut list = Vec::new();
        for c in configs {
            let err = |message: String| ConfigError::Invalid {
                path: path.to_owned(),
                line: c.line,
                message: format!("policy '{}': {message}", c.name),
            };
            let scope = Scope::parse(&c.scope).ok_or_else(|| err("unknown scope".into()))?;
            let mut clients = ClientList::default();
            for entry in c.clients.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
                let (excluded, text) = split_exclusion(entry);
                let net = text
                    .parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| err(format!("clients entry '{entry}' is not an IP address or CIDR")))?;
                if excluded { clients.exclude.push(net) } else { clients.include.push(net) }
            }
            let mut actions = BTreeMap::new();
            for (key, value) in &c.actions {
                let def = actions::find(scope, key).ok_or_else(|| {
                    err(format!(
                        "unknown action '{key}' for scope {} (known: {})",
                        scope.name(),
                        actions::known(scope)
                    ))
                })?;
                if actions.contains_key(def.name) {
                    return Err(err(format!(
                        "action {} is given twice (as {} and {})",
                        def.name,
                        def.name,
                        def.alias.unwrap_or(def.name)
                    )));
                }
                actions.insert(def.name, actions::validate(&def, value).map_err(&err)?);
            }
            if actions.contains_key("max_token_per_realm") && c.realms.iter().all(|r| r.trim().is_empty()) {
                return Err(err(
                    "max_token_per_realm limits the realms the policy names: give realms = [...]".into(),
                ));
            }
            if !c.active {
                continue;
            }
            list.push(Policy {
                name: c.name.clone(),
                scope,
                priority: c.priority,
                line: c.line,
                realms: NameList::new(&c.realms, true),
                resolvers: NameList::new(&c.resolvers, true),
                users: NameList::new(&c.users, false),
                clients,
                filters: [
                    ("realms", c.realms.clone()),
                    ("resolvers", c.resolvers.clone()),
                    ("users", c.users.clone()),
                    ("clients", c.clients.clone()),
                ],
                actions,
            });
        }
        Ok(Policies { list })
    }

    /// The active policies, in configuration order.
    pub fn all(&self) -> &[Policy] {
        &self.list
    }

    /// Why `policy` does not match `q` (`None` when it matches).
    pub fn mismatch(policy: &Policy, q: &PolicyQuery<'_>) -> Option<String> {
        let shown = |v: Option<&str>| v.map_or("(none)".to_string(), |v| format!("'{v}'"));
        if !policy.realms.matches(q.realm) {
            return Some(format!("realm {} is not in realms {:?}", shown(q.realm), policy.filters[0].1));
        }
        if !q.realm_only && !policy.resolvers.matches(q.resolver) {
            return Some(format!(
                "resolver {} is not in resolvers {:?}",
                shown(q.resolver),
                policy.filters[1].1
            ));
        }
        if !q.realm_only && !policy.users.matches(q.user) {
            return Some(format!("user {} is not in users {:?}", shown(q.user), policy.filters[2].1));
        }
        if !policy.clients.matches(q.client) {
            let client = q.client.map(|c| c.to_string());
            return Some(format!(
                "client {} is not in clients {:?}",
                shown(client.as_deref()),
                policy.filters[3].1
            ));
        }
        None
    }

    /// Active policies of `scope` that set `action` and match `q`.
    pub fn matching<'a>(
        &'a self,
        scope: Scope,
        action: &'a str,
        q: &'a PolicyQuery<'_>,
    ) -> impl Iterator<Item = (&'a Policy, &'a ActionValue)> + 'a {
        self.list
            .iter()
            .filter(move |p| p.scope == scope && Self::mismatch(p, q).is_none())
            .filter_map(move |p| p.actions.get(action).map(|v| (p, v)))
    }

    /// "all" reading of a whitespace-separated list action: the union of the
    /// values of every matching policy, lower-cased, whatever the priority.
    pub fn union(&self, scope: Scope, action: &str, q: &PolicyQuery<'_>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, v) in self.matching(scope, action, q) {
            if let ActionValue::Text(s) = v {
                for word in s.split_whitespace().map(str::to_lowercase) {
                    if !out.contains(&word) {
                        out.push(word);
                    }
                }
            }
        }
        out
    }

    /// "all" reading of a text action: every matching policy's value.
    pub fn texts(&self, scope: Scope, action: &str, q: &PolicyQuery<'_>) -> Vec<(String, String)> {
        self.matching(scope, action, q)
            .filter_map(|(p, v)| match v {
                ActionValue::Text(s) => Some((s.clone(), p.name.clone())),
                _ => None,
            })
            .collect()
    }

    /// "all" reading of a limit: the largest value (priority ignored, as
    /// privacyIDEA documents) and the policy that sets it.
    pub fn limit(&self, action: &str, q: &PolicyQuery<'_>) -> Option<Limit> {
        self.matching(Scope::Enrollment, action, q)
            .filter_map(|(p, v)| match v {
                ActionValue::Int(i) => Some(Limit { value: *i, policy: p.name.clone() }),
                _ => None,
            })
            .max_by_key(|l| l.value)
    }

    /// "boolean" reading: the first matching policy that switches it on.
    pub fn flag(&self, scope: Scope, action: &str, q: &PolicyQuery<'_>) -> Option<String> {
        self.matching(scope, action, q)
            .find(|(_, v)| **v == ActionValue::Bool(true))
            .map(|(p, _)| p.name.clone())
    }

    /// "unique" reading: the value of the matching policies with the lowest
    /// priority number and the first of them; if they disagree, a conflict
    /// naming them.
    pub fn unique(
        &self,
        scope: Scope,
        action: &str,
        q: &PolicyQuery<'_>,
    ) -> Result<Option<(ActionValue, String)>, PolicyError> {
        let matching: Vec<(&Policy, &ActionValue)> = self.matching(scope, action, q).collect();
        let Some(best) = matching.iter().map(|(p, _)| p.priority).min() else { return Ok(None) };
        let winners: Vec<&(&Policy, &ActionValue)> =
            matching.iter().filter(|(p, _)| p.priority == best).collect();
        let (first_policy, first) = winners[0];
        if winners.iter().any(|(_, v)| v != first) {
            return Err(PolicyError::Conflict {
                action: action.to_owned(),
                names: winners.iter().map(|(p, _)| p.name.clone()).collect(),
            });
        }
        Ok(Some(((*first).clone(), first_policy.name.clone())))
    }

    /// `unique` for text actions.
    pub fn unique_text(
        &self,
        scope: Scope,
        action: &str,
        q: &PolicyQuery<'_>,
    ) -> Result<Option<String>, PolicyError> {
        Ok(self.unique(scope, action, q)?.map(|(v, _)| match v {
            ActionValue::Text(s) => s,
            other => other.to_string(),
        }))
    }

    /// `unique` for integer actions.
    pub fn unique_int(
        &self,
        scope: Scope,
        action: &str,
        q: &PolicyQuery<'_>,
    ) -> Result<Option<i64>, PolicyError> {
        Ok(self.unique(scope, action, q)?.and_then(|(v, _)| match v {
            ActionValue::Int(i) => Some(i),
            _ => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_in(name: &str, scope: &str, priority: i64, extra: &str) -> PolicyConfig {
        let text =
            format!("[[policies]]\nname = \"{name}\"\nscope = \"{scope}\"\npriority = {priority}\n{extra}\n");
        crate::config::Config::parse(Path::new("/x.toml"), &text).unwrap().policies.remove(0)
    }

    fn policy(name: &str, priority: i64, extra: &str) -> PolicyConfig {
        policy_in(name, "authentication", priority, extra)
    }

    fn set(list: Vec<PolicyConfig>) -> Policies {
        Policies::from_config(&list, Path::new("/x.toml")).unwrap()
    }

    fn load_error(p: PolicyConfig) -> String {
        Policies::from_config(&[p], Path::new("/x.toml")).unwrap_err().to_string()
    }

    fn q<'a>(realm: &'a str, user: &'a str, client: &str) -> PolicyQuery<'a> {
        PolicyQuery {
            realm: Some(realm),
            resolver: Some("r"),
            user: Some(user),
            client: client.parse().ok(),
            realm_only: false,
        }
    }

    const CR: Scope = Scope::Authentication;

    #[test]
    fn client_filters_with_exclusion() {
        let p = set(vec![policy(
            "P",
            1,
            "clients = [\"10.0.0.0/8\", \"-10.0.0.1\"]\n[policies.actions]\nchallenge_response = \"hotp\"",
        )]);
        assert_eq!(p.union(CR, "challenge_response", &q("r1", "a", "10.0.0.2")), vec!["hotp"]);
        assert!(p.union(CR, "challenge_response", &q("r1", "a", "10.0.0.1")).is_empty());
        assert!(p.union(CR, "challenge_response", &q("r1", "a", "192.168.1.1")).is_empty());
        assert_eq!(p.union(CR, "challenge_response", &q("r1", "a", "::ffff:10.0.0.2")).len(), 1);
    }

    #[test]
    fn user_and_realm_filters() {
        let p = set(vec![
            policy("U", 1, "users = [\"*\", \"-admin\"]\n[policies.actions]\nchallenge_response = \"hotp\""),
            policy("R", 1, "realms = [\"!r1\"]\n[policies.actions]\nchallenge_response = \"totp\""),
            policy("C", 1, "users = [\"customer_.*\"]\n[policies.actions]\nchallenge_response = \"pw\""),
        ]);
        let cr = |realm, user| p.union(CR, "challenge_response", &q(realm, user, "1.2.3.4"));
        assert_eq!(cr("r2", "alice"), vec!["hotp"], "exclusion-only realm list matches nothing");
        assert!(cr("r2", "admin").is_empty());
        assert_eq!(cr("r2", "customer_1"), vec!["hotp", "pw"]);
        assert_eq!(cr("r2", "xcustomer_1"), vec!["hotp"]);
        let why = Policies::mismatch(&p.all()[0], &q("r2", "admin", "1.2.3.4")).unwrap();
        assert!(why.contains("user 'admin'"), "{why}");
    }

    #[test]
    fn unique_takes_best_priority_and_reports_conflicts() {
        let p = set(vec![
            policy("P1", 1, "[policies.actions]\nchallenge_text = \"code?\""),
            policy("P2", 2, "[policies.actions]\nchallenge_text = \"other\""),
        ]);
        let query = q("r", "u", "1.1.1.1");
        assert_eq!(p.unique_text(CR, "challenge_text", &query).unwrap().as_deref(), Some("code?"));
        let p = set(vec![
            policy("P1", 1, "[policies.actions]\nchallenge_text = \"a\""),
            policy("P3", 1, "[policies.actions]\nchallenge_text = \"b\""),
        ]);
        let e = p.unique_text(CR, "challenge_text", &query).unwrap_err();
        assert!(e.to_string().contains("P1") && e.to_string().contains("P3"));
    }

    #[test]
    fn limits_take_the_maximum_whatever_the_priority() {
        let p = set(vec![
            policy_in("P1", "enrollment", 1, "[policies.actions]\nmax_token_per_user = 2"),
            policy_in("P2", "enrollment", 10, "[policies.actions]\nmax_token_per_user = 5"),
        ]);
        let limit = p.limit("max_token_per_user", &q("r", "alice", "1.1.1.1")).unwrap();
        assert_eq!((limit.value, limit.policy.as_str()), (5, "P2"));
    }

    #[test]
    fn realm_only_queries_ignore_user_filters() {
        let p = set(vec![policy_in(
            "R",
            "enrollment",
            1,
            "realms = [\"corp\"]\nusers = [\"bob\"]\n[policies.actions]\nmax_token_per_realm = 3",
        )]);
        let query = PolicyQuery { realm: Some("corp"), realm_only: true, ..Default::default() };
        assert_eq!(p.limit("max_token_per_realm", &query).unwrap().value, 3);
        assert!(p.limit("max_token_per_realm", &q("corp", "alice", "1.1.1.1")).is_none());
    }

    #[test]
    fn flags_and_aliases() {
        let p = set(vec![policy_in("E", "enrollment", 1, "[policies.actions]\nencrypt_pin = true")]);
        assert_eq!(
            p.flag(Scope::Enrollment, "otp_pin_encrypt", &q("r", "u", "1.1.1.1")).as_deref(),
            Some("E")
        );
    }

    #[test]
    fn bad_policies_are_config_errors_with_line_and_name() {
        let e = load_error(policy("P", 1, "clients = [\"10.0.0.0/33\"]"));
        assert!(e.contains("line 1") && e.contains("policy 'P'") && e.contains("10.0.0.0/33"), "{e}");
        let e = load_error(policy("P", 1, "[policies.actions]\nmax_tokens = 2"));
        assert!(e.contains("unknown action 'max_tokens'"), "{e}");
        let e = load_error(policy_in("P", "enrollment", 1, "[policies.actions]\nmax_token_per_user = -1"));
        assert!(e.contains("0 or more"), "{e}");
        let e = load_error(policy_in("P", "enrollment", 1, "[policies.actions]\nmax_token_per_user = \"2\""));
        assert!(e.contains("whole number"), "{e}");
        let e =
            load_error(policy_in("P", "enrollment", 1, "[policies.actions]\nlostTokenPWContents = \"cnq\""));
        assert!(e.contains("lostTokenPWContents"), "{e}");
        let e = load_error(policy_in(
            "P",
            "enrollment",
            1,
            "[policies.actions]\notp_pin_encrypt = true\nencrypt_pin = true",
        ));
        assert!(e.contains("twice"), "{e}");
        let e = load_error(policy_in("P", "enrollment", 1, "[policies.actions]\nmax_token_per_realm = 2"));
        assert!(e.contains("realms"), "{e}");
        let e = load_error(policy_in("P", "enrollment", 1, "[policies.actions]\ntokenlabel = \"{nope}\""));
        assert!(e.contains("tokenlabel"), "{e}");
    }
}

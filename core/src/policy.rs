//! Policies: named rules with a scope (`enrollment`, `authentication`), a
//! priority and filters on realm, resolver, user and client address, whose
//! actions the validation flow and enrollment read. Matching and the three
//! ways of reading an action (all, unique, boolean) follow privacyIDEA
//! (semantics.md 4.1): lists match everything when empty, `!x`/`-x` exclude,
//! a list of exclusions only matches nothing, entries are exact names, `*`
//! or anchored regular expressions; the lowest priority number wins.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use regex::Regex;

use crate::config::{ConfigError, PolicyConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Enrollment,
    Authentication,
}

impl Scope {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "enrollment" => Some(Scope::Enrollment),
            "authentication" => Some(Scope::Authentication),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("There are policies with conflicting actions: {names:?} (action {action})")]
    Conflict { action: String, names: Vec<String> },
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
    realms: NameList,
    resolvers: NameList,
    users: NameList,
    clients: ClientList,
    pub actions: toml::Table,
}

/// What a policy is matched against.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyQuery<'a> {
    pub realm: Option<&'a str>,
    pub resolver: Option<&'a str>,
    pub user: Option<&'a str>,
    pub client: Option<IpAddr>,
}

/// The active policies of the configuration.
#[derive(Debug, Default)]
pub struct Policies {
    list: Vec<Policy>,
}

impl Policies {
    /// Builds the policies; `path` names the file in error messages.
    pub fn from_config(configs: &[PolicyConfig], path: &Path) -> Result<Self, ConfigError> {
        let mut list = Vec::new();
        for c in configs.iter().filter(|c| c.active) {
            let err = |message: String| ConfigError::Invalid { path: path.to_owned(), line: c.line, message };
            let scope =
                Scope::parse(&c.scope).ok_or_else(|| err(format!("policy '{}': unknown scope", c.name)))?;
            let mut clients = ClientList::default();
            for entry in c.clients.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
                let (excluded, text) = split_exclusion(entry);
                let net = text
                    .parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        err(format!(
                            "policy '{}': clients entry '{entry}' is not an IP address or CIDR",
                            c.name
                        ))
                    })?;
                if excluded { clients.exclude.push(net) } else { clients.include.push(net) }
            }
            for (key, value) in &c.actions {
                if key == "challenge_response" && !value.is_str() {
                    return Err(err(format!(
                        "policy '{}': action challenge_response must be a string of token types, e.g. \"hotp totp\"",
                        c.name
                    )));
                }
            }
            list.push(Policy {
                name: c.name.clone(),
                scope,
                priority: c.priority,
                realms: NameList::new(&c.realms, true),
                resolvers: NameList::new(&c.resolvers, true),
                users: NameList::new(&c.users, false),
                clients,
                actions: c.actions.clone(),
            });
        }
        Ok(Policies { list })
    }

    /// Active policies of `scope` that set `action` and match `q`.
    pub fn matching<'a>(
        &'a self,
        scope: Scope,
        action: &'a str,
        q: &'a PolicyQuery<'_>,
    ) -> impl Iterator<Item = &'a Policy> + 'a {
        self.list.iter().filter(move |p| {
            p.scope == scope
                && p.actions.contains_key(action)
                && p.realms.matches(q.realm)
                && p.resolvers.matches(q.resolver)
                && p.users.matches(q.user)
                && p.clients.matches(q.client)
        })
    }

    /// "all" reading of a whitespace-separated list action: the union of the
    /// values of every matching policy, lower-cased, whatever the priority.
    pub fn union(&self, scope: Scope, action: &str, q: &PolicyQuery<'_>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.matching(scope, action, q) {
            if let Some(s) = p.actions.get(action).and_then(|v| v.as_str()) {
                for word in s.split_whitespace().map(str::to_lowercase) {
                    if !out.contains(&word) {
                        out.push(word);
                    }
                }
            }
        }
        out
    }

    /// "unique" reading: the value of the matching policies with the lowest
    /// priority number; if they disagree, a conflict naming them.
    pub fn unique(
        &self,
        scope: Scope,
        action: &str,
        q: &PolicyQuery<'_>,
    ) -> Result<Option<String>, PolicyError> {
        let matching: Vec<&Policy> = self.matching(scope, action, q).collect();
        let Some(best) = matching.iter().map(|p| p.priority).min() else { return Ok(None) };
        let winners: Vec<&&Policy> = matching.iter().filter(|p| p.priority == best).collect();
        let value = |p: &Policy| match p.actions.get(action) {
            Some(toml::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        };
        let first = value(winners[0]);
        if winners.iter().any(|p| value(p) != first) {
            return Err(PolicyError::Conflict {
                action: action.to_owned(),
                names: winners.iter().map(|p| p.name.clone()).collect(),
            });
        }
        Ok(Some(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, priority: i64, extra: &str) -> PolicyConfig {
        let text = format!(
            "[[policies]]\nname = \"{name}\"\nscope = \"authentication\"\npriority = {priority}\n{extra}\n"
        );
        crate::config::Config::parse(Path::new("/x.toml"), &text).unwrap().policies.remove(0)
    }

    fn set(list: Vec<PolicyConfig>) -> Policies {
        Policies::from_config(&list, Path::new("/x.toml")).unwrap()
    }

    fn q<'a>(realm: &'a str, user: &'a str, client: &str) -> PolicyQuery<'a> {
        PolicyQuery { realm: Some(realm), resolver: Some("r"), user: Some(user), client: client.parse().ok() }
    }

    #[test]
    fn client_filters_with_exclusion() {
        let p = set(vec![policy(
            "P",
            1,
            "clients = [\"10.0.0.0/8\", \"-10.0.0.1\"]\n[policies.actions]\nchallenge_response = \"hotp\"",
        )]);
        assert_eq!(
            p.union(Scope::Authentication, "challenge_response", &q("r1", "a", "10.0.0.2")),
            vec!["hotp"]
        );
        assert!(p.union(Scope::Authentication, "challenge_response", &q("r1", "a", "10.0.0.1")).is_empty());
        assert!(
            p.union(Scope::Authentication, "challenge_response", &q("r1", "a", "192.168.1.1")).is_empty()
        );
        assert!(
            p.union(Scope::Authentication, "challenge_response", &q("r1", "a", "::ffff:10.0.0.2")).len() == 1
        );
    }

    #[test]
    fn user_and_realm_filters() {
        let p = set(vec![
            policy("U", 1, "users = [\"*\", \"-admin\"]\n[policies.actions]\nchallenge_response = \"hotp\""),
            policy("R", 1, "realms = [\"!r1\"]\n[policies.actions]\nchallenge_response = \"totp\""),
            policy("C", 1, "users = [\"customer_.*\"]\n[policies.actions]\nchallenge_response = \"pw\""),
        ]);
        let cr =
            |realm, user| p.union(Scope::Authentication, "challenge_response", &q(realm, user, "1.2.3.4"));
        assert_eq!(cr("r2", "alice"), vec!["hotp"], "exclusion-only realm list matches nothing");
        assert!(cr("r2", "admin").is_empty());
        assert_eq!(cr("r2", "customer_1"), vec!["hotp", "pw"]);
        assert_eq!(cr("r2", "xcustomer_1"), vec!["hotp"]);
    }

    #[test]
    fn unique_takes_best_priority_and_reports_conflicts() {
        let p = set(vec![
            policy("P1", 1, "[policies.actions]\nchallenge_text = \"code?\""),
            policy("P2", 2, "[policies.actions]\nchallenge_text = \"other\""),
        ]);
        let query = q("r", "u", "1.1.1.1");
        assert_eq!(
            p.unique(Scope::Authentication, "challenge_text", &query).unwrap().as_deref(),
            Some("code?")
        );
        let p = set(vec![
            policy("P1", 1, "[policies.actions]\nchallenge_text = \"a\""),
            policy("P3", 1, "[policies.actions]\nchallenge_text = \"b\""),
        ]);
        let e = p.unique(Scope::Authentication, "challenge_text", &query).unwrap_err();
        assert!(e.to_string().contains("P1") && e.to_string().contains("P3"));
    }

    #[test]
    fn bad_client_entry_is_a_config_error_with_line() {
        let c = policy("P", 1, "clients = [\"10.0.0.0/33\"]");
        let e = Policies::from_config(&[c], Path::new("/x.toml")).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("10.0.0.0/33"), "{e}");
    }
}

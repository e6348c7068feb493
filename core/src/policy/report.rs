//! What applies to a request and why: the data behind `otpd policy check`.
//! For each policy of a scope, whether it matches the user, realm and
//! client and, if not, the first filter that fails; then the value each
//! action takes once the matching policies are combined (or the conflict).

use std::net::IpAddr;

use super::actions::{self, Read};
use super::{ActionValue, Policies, PolicyQuery, Scope};
use crate::Otpd;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct PolicyMatch {
    pub name: String,
    pub priority: i64,
    pub line: usize,
    /// `None` when the policy matches; else why not.
    pub mismatch: Option<String>,
    pub actions: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct PolicyReport {
    pub scope: Scope,
    pub user: Option<String>,
    pub realm: Option<String>,
    pub resolver: Option<String>,
    pub client: Option<IpAddr>,
    /// A note about the user (e.g. not found in the realm).
    pub note: Option<String>,
    pub policies: Vec<PolicyMatch>,
    /// Each action set by a matching policy, with its combined value.
    pub effective: Vec<Effective>,
}

/// The value an action takes for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectiveValue {
    /// Single-valued actions, limits (the largest) and switches.
    One(ActionValue),
    /// Actions that take every matching policy's value.
    Many(Vec<String>),
    /// Matching policies of the best priority disagree.
    Conflict(String),
}

#[derive(Debug, Clone)]
pub struct Effective {
    pub action: String,
    pub value: EffectiveValue,
    /// The policies the value comes from.
    pub policies: Vec<String>,
}

impl Otpd {
    /// The policies of `scope` as they apply to `user` (may carry `@realm`)
    /// in `realm` from `client`.
    pub fn policy_report(
        &self,
        scope: Scope,
        user: Option<&str>,
        realm: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<PolicyReport> {
        let (login, realm) = match user {
            Some(u) => {
                let (login, realm) = self.realms.locate(u, realm, None)?;
                (Some(login.to_owned()), Some(realm))
            }
            None => (None, realm.map(|r| self.realms.canonical(r)).transpose()?),
        };
        let (resolver, note) = match (&login, &realm) {
            (Some(l), Some(r)) => match self.realms.find(l, r)? {
                Some(u) => (Some(u.resolver), None),
                None => (None, Some(format!("user '{l}' does not exist in realm '{r}'"))),
            },
            _ => (None, None),
        };
        let q = PolicyQuery {
            realm: realm.as_deref(),
            resolver: resolver.as_deref(),
            user: login.as_deref(),
            client,
            realm_only: false,
        };
        let mut policies = Vec::new();
        let mut names: Vec<&'static str> = Vec::new();
        for p in self.policies.all().iter().filter(|p| p.scope == scope) {
            let mismatch = Policies::mismatch(p, &q);
            if mismatch.is_none() {
                for key in p.actions.keys() {
                    if !names.contains(key) {
                        names.push(key);
                    }
                }
            }
            policies.push(PolicyMatch {
                name: p.name.clone(),
                priority: p.priority,
                line: p.line,
                mismatch,
                actions: p.actions.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            });
        }
        names.sort_unstable();
        let effective = names
            .into_iter()
            .map(|name| {
                let read = actions::find(scope, name).map_or(Read::Unique, |d| d.read);
                let (value, policies) = match read {
                    Read::Unique => match self.policies.unique(scope, name, &q) {
                        Ok(Some((v, policy))) => (EffectiveValue::One(v), vec![policy]),
                        Ok(None) => (EffectiveValue::Many(Vec::new()), Vec::new()),
                        Err(e) => (EffectiveValue::Conflict(e.to_string()), Vec::new()),
                    },
                    Read::Any => match self.policies.flag(scope, name, &q) {
                        Some(policy) => (EffectiveValue::One(ActionValue::Bool(true)), vec![policy]),
                        None => (EffectiveValue::One(ActionValue::Bool(false)), Vec::new()),
                    },
                    Read::All => match self.policies.limit(name, &q) {
                        Some(l) => (EffectiveValue::One(ActionValue::Int(l.value)), vec![l.policy]),
                        None => {
                            let texts = self.policies.texts(scope, name, &q);
                            let policies = texts.iter().map(|(_, p)| p.clone()).collect();
                            (EffectiveValue::Many(texts.into_iter().map(|(v, _)| v).collect()), policies)
                        }
                    },
                };
                Effective { action: name.to_owned(), value, policies }
            })
            .collect();
        Ok(PolicyReport { scope, user: login, realm, resolver, client, note, policies, effective })
    }
}

//! Realms and the users in them. A realm is a named list of resolvers
//! (userstores); a user belongs to the realm through the first resolver, in
//! the realm's order, that knows the login. This module also splits
//! `user@realm` (privacyIDEA's `splitAtSign`) and `realm\user`.

use std::sync::Arc;

use crate::config::{Config, ResolverKind};
use crate::error::{Error, Result};
use crate::userstore::{PasswdFile, UnixAccounts, UserStore};

/// A user found in a realm's resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub login: String,
    /// Lower-cased realm name.
    pub realm: String,
    pub resolver: String,
    /// The full name (GECOS), for token labels.
    pub full_name: Option<String>,
}

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.login, self.realm)
    }
}

#[derive(Debug)]
struct Resolver {
    name: String,
    store: Arc<dyn UserStore>,
}

#[derive(Debug)]
struct Realm {
    name: String,
    default: bool,
    resolvers: Vec<Arc<Resolver>>,
}

#[derive(Debug)]
pub struct Realms {
    realms: Vec<Realm>,
}

impl Realms {
    /// Opens every resolver the configuration defines (a passwd file is read
    /// and checked now, so a broken file is reported at start).
    pub fn open(config: &Config) -> Result<Realms> {
        Self::open_with(config, true)
    }

    /// Like `open`, but a passwd file is read when first used: a PAM login
    /// needs its own realm's userstore, not every one (reading a file of
    /// 15 000 users took a third of a login).
    pub fn open_deferred(config: &Config) -> Result<Realms> {
        Self::open_with(config, false)
    }

    fn open_with(config: &Config, read_now: bool) -> Result<Realms> {
        let mut resolvers: Vec<Arc<Resolver>> = Vec::new();
        for r in &config.resolvers {
            let store: Arc<dyn UserStore> = match &r.kind {
                ResolverKind::PasswdFile { path } if read_now => Arc::new(PasswdFile::open(path.clone())?),
                ResolverKind::PasswdFile { path } => Arc::new(PasswdFile::open_deferred(path.clone())),
                ResolverKind::Unix { shadow: None } => Arc::new(UnixAccounts::new()),
                ResolverKind::Unix { shadow: Some(p) } => Arc::new(UnixAccounts::with_shadow_path(p.clone())),
            };
            resolvers.push(Arc::new(Resolver { name: r.name.clone(), store }));
        }
        let realms = config
            .realms
            .iter()
            .map(|r| Realm {
                name: r.name.clone(),
                default: r.default,
                resolvers: r
                    .resolvers
                    .iter()
                    .filter_map(|n| resolvers.iter().find(|x| x.name == *n).cloned())
                    .collect(),
            })
            .collect();
        Ok(Realms { realms })
    }

    fn realm(&self, name: &str) -> Option<&Realm> {
        self.realms.iter().find(|r| r.name.eq_ignore_ascii_case(name))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.realm(name).is_some()
    }

    pub fn default_realm(&self) -> Option<&str> {
        self.realms.iter().find(|r| r.default).map(|r| r.name.as_str())
    }

    /// The canonical (lower-case) name of a configured realm.
    pub fn canonical(&self, name: &str) -> Result<String> {
        self.realm(name).map(|r| r.name.clone()).ok_or_else(|| Error::UnknownRealm(name.to_owned()))
    }

    /// Splits `login@realm` at the last `@`, or `realm\login` at the first
    /// backslash, but only when the realm part names a configured realm;
    /// otherwise the whole input is the login.
    pub fn split<'a>(&self, input: &'a str) -> (&'a str, Option<String>) {
        if let Some((login, realm)) = input.rsplit_once('@')
            && !login.is_empty()
            && let Some(r) = self.realm(realm)
        {
            return (login, Some(r.name.clone()));
        }
        if let Some((realm, login)) = input.split_once('\\')
            && !login.is_empty()
            && let Some(r) = self.realm(realm)
        {
            return (login, Some(r.name.clone()));
        }
        (input, None)
    }

    /// Which login in which (canonical) realm `input` names: `explicit_realm`
    /// wins (and `input` is not split); otherwise a realm in `input`, else
    /// `fallback_realm`, else the default realm.
    pub fn locate<'a>(
        &self,
        input: &'a str,
        explicit_realm: Option<&str>,
        fallback_realm: Option<&str>,
    ) -> Result<(&'a str, String)> {
        Ok(match explicit_realm {
            Some(r) => (input, self.canonical(r)?),
            None => match self.split(input) {
                (login, Some(realm)) => (login, realm),
                (login, None) => match fallback_realm {
                    Some(r) => (login, self.canonical(r)?),
                    None => (login, self.default_realm().ok_or(Error::NoDefaultRealm)?.to_owned()),
                },
            },
        })
    }

    /// Finds the user `input` names (see `locate`) in a resolver of the realm.
    pub fn resolve(
        &self,
        input: &str,
        explicit_realm: Option<&str>,
        fallback_realm: Option<&str>,
    ) -> Result<User> {
        let (login, realm) = self.locate(input, explicit_realm, fallback_realm)?;
        self.find(login, &realm)?
            .ok_or_else(|| Error::UnknownUser { login: login.to_owned(), realm: realm.clone() })
    }

    /// The user `login` in `realm`, if a resolver of the realm knows them.
    pub fn find(&self, login: &str, realm: &str) -> Result<Option<User>> {
        let realm = self.realm(realm).ok_or_else(|| Error::UnknownRealm(realm.to_owned()))?;
        if login.is_empty() {
            return Ok(None);
        }
        for resolver in &realm.resolvers {
            if let Some(entry) = resolver.store.lookup(login)? {
                return Ok(Some(User {
                    login: entry.login,
                    realm: realm.name.clone(),
                    resolver: resolver.name.clone(),
                    full_name: entry.gecos,
                }));
            }
        }
        Ok(None)
    }

    /// Checks the user's userstore password (not the token PIN).
    pub fn check_password(&self, user: &User, password: &str) -> Result<bool> {
        let realm = self.realm(&user.realm).ok_or_else(|| Error::UnknownRealm(user.realm.clone()))?;
        match realm.resolvers.iter().find(|r| r.name == user.resolver) {
            Some(r) => Ok(r.store.check_password(&user.login, password)?),
            None => Ok(false),
        }
    }
}

//! The enrollment limits of the policies (`max_token_per_realm`,
//! `max_token_per_user`, `<type>_max_token_per_user`, and the `active`
//! variants): checked, inside the write transaction that would break them,
//! by enrollment, import, assignment, setting realms, enabling,
//! autoassignment and the `enroll` event action. A refusal names the limit,
//! its value and the policy, and the transaction changes nothing.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::policy::{Limit, Policies, PolicyQuery};
use crate::realm::User;
use crate::store::{StoreRead, TokenFilter};
use crate::token::{Owner, TokenType};

fn refuse(message: String, action: &str, limit: &Limit) -> Error {
    Error::PolicyLimit(format!("{message} ({action} = {}, policy '{}')", limit.value, limit.policy))
}

/// The per-user limits that apply to `q`'s user for a token of `token_type`.
struct UserLimits {
    type_name: &'static str,
    of_type: Option<Limit>,
    all: Option<Limit>,
    active_of_type: Option<Limit>,
    active_all: Option<Limit>,
}

impl UserLimits {
    fn of(policies: &Policies, q: &PolicyQuery<'_>, token_type: TokenType) -> Self {
        let type_name = token_type.name();
        UserLimits {
            type_name,
            of_type: policies.limit(&format!("{type_name}_max_token_per_user"), q),
            all: policies.limit("max_token_per_user", q),
            active_of_type: policies.limit(&format!("{type_name}_max_active_token_per_user"), q),
            active_all: policies.limit("max_active_token_per_user", q),
        }
    }

    fn any(&self) -> bool {
        self.of_type.is_some()
            || self.all.is_some()
            || self.active_of_type.is_some()
            || self.active_all.is_some()
    }

    /// Refuses one more token of `token_type` (active unless `active` is
    /// false) for a user who owns `owned` (type and active flag of each).
    fn judge(&self, owned: &[(TokenType, bool)], token_type: TokenType, active: bool) -> Result<()> {
        let t = self.type_name;
        let of_type = owned.iter().filter(|(k, _)| *k == token_type).count() as i64;
        over(self.of_type.as_ref(), of_type, &format!("{t}_max_token_per_user"), || {
            format!("The number of tokens of type {t} for this user is limited!")
        })?;
        over(self.all.as_ref(), owned.len() as i64, "max_token_per_user", || {
            "The number of tokens for this user is limited!".into()
        })?;
        if !active {
            return Ok(());
        }
        let active_of_type = owned.iter().filter(|(k, a)| *a && *k == token_type).count() as i64;
        let active_all = owned.iter().filter(|(_, a)| *a).count() as i64;
        over(
            self.active_of_type.as_ref(),
            active_of_type,
            &format!("{t}_max_active_token_per_user"),
            || format!("The number of active tokens of type {t} for this user is limited!"),
        )?;
        over(self.active_all.as_ref(), active_all, "max_active_token_per_user", || {
            "The number of active tokens for this user is limited!".into()
        })
    }
}

/// Refuses one more when `count` has reached the limit of `action`.
fn over(limit: Option<&Limit>, count: i64, action: &str, message: impl FnOnce() -> String) -> Result<()> {
    match limit {
        Some(l) if count >= l.value => Err(refuse(message(), action, l)),
        _ => Ok(()),
    }
}

fn user_query<'a>(
    login: &'a str,
    realm: &'a str,
    resolver: &'a str,
    client: Option<IpAddr>,
) -> PolicyQuery<'a> {
    PolicyQuery { realm: Some(realm), resolver: Some(resolver), user: Some(login), client, realm_only: false }
}

/// Type and active flag of each token `login@realm` owns, but `exempt`.
fn owned_by(
    store: &dyn StoreRead,
    login: &str,
    realm: &str,
    exempt: Option<&str>,
) -> Result<Vec<(TokenType, bool)>> {
    let owned = store
        .tokens(&TokenFilter { owner: Some((login.to_owned(), realm.to_owned())), ..Default::default() })?;
    Ok(owned
        .into_iter()
        .filter(|t| Some(t.serial.as_str()) != exempt)
        .map(|t| (t.token_type, t.active))
        .collect())
}

/// A user is about to own one more token of `token_type` (active unless
/// `active` is false). `exempt` is a token the user already owns and that
/// does not count again (re-initialisation, enabling an owned token).
pub(crate) fn check_user(
    policies: &Policies,
    store: &dyn StoreRead,
    user: &User,
    client: Option<IpAddr>,
    token_type: TokenType,
    active: bool,
    exempt: Option<&str>,
) -> Result<()> {
    let q = user_query(&user.login, &user.realm, &user.resolver, client);
    let limits = UserLimits::of(policies, &q, token_type);
    if !limits.any() {
        return Ok(());
    }
    limits.judge(&owned_by(store, &user.login, &user.realm, exempt)?, token_type, active)
}

fn realm_limit(policies: &Policies, realm: &str, client: Option<IpAddr>) -> Option<Limit> {
    let q = PolicyQuery { realm: Some(realm), client, realm_only: true, ..Default::default() };
    policies.limit("max_token_per_realm", &q)
}

fn realm_count(store: &dyn StoreRead, realm: &str) -> Result<i64> {
    Ok(store.tokens(&TokenFilter { realm: Some(realm.to_owned()), ..Default::default() })?.len() as i64)
}

fn judge_realm(limit: &Limit, realm: &str, count: i64) -> Result<()> {
    over(Some(limit), count, "max_token_per_realm", || {
        format!("The number of tokens in this realm is limited! (realm {realm} holds {count})")
    })
}

/// A token joins `realm`, or is assigned within it: a token already in the
/// realm is counted too, as privacyIDEA does (so assigning a pool token
/// fails once the pool alone reaches the limit).
pub(crate) fn check_realm(
    policies: &Policies,
    store: &dyn StoreRead,
    realm: &str,
    client: Option<IpAddr>,
) -> Result<()> {
    let Some(limit) = realm_limit(policies, realm, client) else { return Ok(()) };
    judge_realm(&limit, realm, realm_count(store, realm)?)
}

/// The limits of many enrollments in one transaction (`token import`):
/// each new token is checked as `check_user`/`check_realm` would check it
/// had the tokens before it been enrolled one by one. The counts of a user
/// or realm that a limit applies to are read from the store (inside the
/// transaction, so with the tokens added so far) the first time they are
/// needed and then kept up to date, so a large import costs one query per
/// limited user or realm instead of one per token.
pub(crate) struct Tally<'a> {
    policies: &'a Policies,
    client: Option<IpAddr>,
    /// realm -> login -> type and active flag of each token owned.
    users: HashMap<String, HashMap<String, Vec<(TokenType, bool)>>>,
    /// realm -> its limit and current count, or None without a limit.
    realms: HashMap<String, Option<(Limit, i64)>>,
}

impl<'a> Tally<'a> {
    pub(crate) fn new(policies: &'a Policies, client: Option<IpAddr>) -> Self {
        Tally { policies, client, users: HashMap::new(), realms: HashMap::new() }
    }

    /// `owner` is about to own one more active token of `token_type`.
    pub(crate) fn add_user(
        &mut self,
        store: &dyn StoreRead,
        owner: &Owner,
        token_type: TokenType,
    ) -> Result<()> {
        let q = user_query(&owner.login, &owner.realm, &owner.resolver, self.client);
        let limits = UserLimits::of(self.policies, &q, token_type);
        if let Some(owned) = self.users.get_mut(&owner.realm).and_then(|m| m.get_mut(&owner.login)) {
            limits.judge(owned, token_type, true)?;
            owned.push((token_type, true));
            return Ok(());
        }
        // Not counted yet: without a limit the store counts it when a
        // later token of the user meets one.
        if !limits.any() {
            return Ok(());
        }
        let mut owned = owned_by(store, &owner.login, &owner.realm, None)?;
        limits.judge(&owned, token_type, true)?;
        owned.push((token_type, true));
        self.users.entry(owner.realm.clone()).or_default().insert(owner.login.clone(), owned);
        Ok(())
    }

    /// A new token joins `realm`.
    pub(crate) fn add_realm(&mut self, store: &dyn StoreRead, realm: &str) -> Result<()> {
        if !self.realms.contains_key(realm) {
            let entry = match realm_limit(self.policies, realm, self.client) {
                Some(limit) => Some((limit, realm_count(store, realm)?)),
                None => None,
            };
            self.realms.insert(realm.to_owned(), entry);
        }
        if let Some(Some((limit, count))) = self.realms.get_mut(realm) {
            judge_realm(limit, realm, *count)?;
            *count += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::Fixture;
    use crate::{Error, InitSpec, TokenChanges, TokenType};

    fn fixture(policies: &[&str]) -> Fixture {
        let extra: String = policies
            .iter()
            .enumerate()
            .map(|(i, p)| format!("[[policies]]\nname = \"p{i}\"\nscope = \"enrollment\"\n{p}\n"))
            .collect();
        Fixture::with_config(1_700_000_000, &extra)
    }

    fn init(f: &Fixture, t: TokenType, user: Option<&str>, realm: Option<&str>) -> Result<String, Error> {
        let mut spec = InitSpec::new(t);
        spec.user = user.map(str::to_owned);
        spec.realm = realm.map(str::to_owned);
        f.otpd.init_token(&f.ctx(), &spec).map(|e| e.token.serial)
    }

    fn limited(r: Result<impl std::fmt::Debug, Error>, message: &str) {
        match r {
            Err(Error::PolicyLimit(m)) => assert!(m.contains(message), "{m}"),
            other => panic!("expected a limit refusal, got {other:?}"),
        }
    }

    #[test]
    fn per_user_limits_take_the_largest_value() {
        let f = fixture(&[
            "priority = 1\n[policies.actions]\nmax_token_per_user = 2",
            "priority = 10\n[policies.actions]\nmax_token_per_user = 3",
        ]);
        for _ in 0..3 {
            init(&f, TokenType::Hotp, Some("alice"), None).unwrap();
        }
        limited(
            init(&f, TokenType::Totp, Some("alice"), None),
            "The number of tokens for this user is limited! (max_token_per_user = 3, policy 'p1')",
        );
        assert_eq!(f.otpd.list_tokens(Some("alice"), None).unwrap().len(), 3);
    }

    #[test]
    fn per_type_limit_checked_first() {
        let f = fixture(&["[policies.actions]\nhotp_max_token_per_user = 1"]);
        init(&f, TokenType::Hotp, Some("alice"), None).unwrap();
        limited(init(&f, TokenType::Hotp, Some("alice"), None), "tokens of type hotp for this user");
        init(&f, TokenType::Totp, Some("alice"), None).unwrap();
    }

    #[test]
    fn realm_limit_counts_pool_tokens_and_the_token_itself() {
        let f = fixture(&["realms = [\"corp\"]\n[policies.actions]\nmax_token_per_realm = 3"]);
        let a = init(&f, TokenType::Hotp, None, Some("corp")).unwrap();
        init(&f, TokenType::Hotp, None, Some("corp")).unwrap();
        init(&f, TokenType::Hotp, Some("bob"), None).unwrap();
        limited(init(&f, TokenType::Hotp, None, Some("corp")), "in this realm is limited");
        limited(f.otpd.assign_token(&f.ctx(), &a, "alice", None, None), "in this realm is limited");
        let s = init(&f, TokenType::Hotp, None, Some("sales")).unwrap();
        let changes =
            TokenChanges { realms: Some(vec!["sales".into(), "corp".into()]), ..Default::default() };
        limited(f.otpd.set_token(&f.ctx(), &s, &changes), "in this realm is limited");
        assert_eq!(f.otpd.token(&s).unwrap().realms, vec!["sales".to_string()]);
    }

    #[test]
    fn active_limit_refuses_enabling() {
        let f = fixture(&["[policies.actions]\nmax_active_token_per_user = 1"]);
        let a = init(&f, TokenType::Hotp, Some("alice"), None).unwrap();
        f.otpd.set_active(&f.ctx(), &a, false).unwrap();
        let b = init(&f, TokenType::Hotp, Some("alice"), None).unwrap();
        limited(f.otpd.set_active(&f.ctx(), &a, true), "active tokens for this user");
        f.otpd.set_active(&f.ctx(), &b, true).unwrap();
    }
}

//! The enrollment limits of the policies (`max_token_per_realm`,
//! `max_token_per_user`, `<type>_max_token_per_user`, and the `active`
//! variants): checked, inside the write transaction that would break them,
//! by enrollment, assignment, setting realms, enabling, autoassignment and
//! the `enroll` event action. A refusal names the limit, its value and the
//! policy, and the transaction changes nothing.

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::policy::{Limit, Policies, PolicyQuery};
use crate::realm::User;
use crate::store::{StoreRead, TokenFilter};
use crate::token::TokenType;

fn refuse(message: String, action: &str, limit: &Limit) -> Error {
    Error::PolicyLimit(format!("{message} ({action} = {}, policy '{}')", limit.value, limit.policy))
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
    let q = PolicyQuery {
        realm: Some(&user.realm),
        resolver: Some(&user.resolver),
        user: Some(&user.login),
        client,
        realm_only: false,
    };
    let owned = store.tokens(&TokenFilter {
        owner: Some((user.login.clone(), user.realm.clone())),
        ..Default::default()
    })?;
    let owned: Vec<_> = owned.into_iter().filter(|t| Some(t.serial.as_str()) != exempt).collect();
    let type_name = token_type.name();
    let of_type = owned.iter().filter(|t| t.token_type == token_type).count() as i64;
    let all = owned.len() as i64;
    let type_action = format!("{type_name}_max_token_per_user");
    if let Some(l) = policies.limit(&type_action, &q).filter(|l| of_type >= l.value) {
        return Err(refuse(
            format!("The number of tokens of type {type_name} for this user is limited!"),
            &type_action,
            &l,
        ));
    }
    if let Some(l) = policies.limit("max_token_per_user", &q).filter(|l| all >= l.value) {
        return Err(refuse(
            "The number of tokens for this user is limited!".into(),
            "max_token_per_user",
            &l,
        ));
    }
    if !active {
        return Ok(());
    }
    let active_of_type = owned.iter().filter(|t| t.active && t.token_type == token_type).count() as i64;
    let active_all = owned.iter().filter(|t| t.active).count() as i64;
    let type_action = format!("{type_name}_max_active_token_per_user");
    if let Some(l) = policies.limit(&type_action, &q).filter(|l| active_of_type >= l.value) {
        return Err(refuse(
            format!("The number of active tokens of type {type_name} for this user is limited!"),
            &type_action,
            &l,
        ));
    }
    if let Some(l) = policies.limit("max_active_token_per_user", &q).filter(|l| active_all >= l.value) {
        return Err(refuse(
            "The number of active tokens for this user is limited!".into(),
            "max_active_token_per_user",
            &l,
        ));
    }
    Ok(())
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
    let q = PolicyQuery { realm: Some(realm), client, realm_only: true, ..Default::default() };
    let Some(limit) = policies.limit("max_token_per_realm", &q) else { return Ok(()) };
    let count =
        store.tokens(&TokenFilter { realm: Some(realm.to_owned()), ..Default::default() })?.len() as i64;
    if count >= limit.value {
        return Err(refuse(
            format!("The number of tokens in this realm is limited! (realm {realm} holds {count})"),
            "max_token_per_realm",
            &limit,
        ));
    }
    Ok(())
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

//! Autoassignment (semantics.md section 3): a user who owns no token logs
//! in with PIN (any PIN, or their userstore password) followed by the OTP
//! of an unassigned token of their realm; the one token whose OTP matches
//! becomes theirs, with that PIN. otpd's deviations: unusable candidates
//! are skipped, the limits are checked before anything is consumed, the OTP
//! use, the assignment and the PIN are committed together, and an OTP that
//! matches two candidates assigns nothing.

use jiff::Timestamp;

use crate::Otpd;
use crate::error::{Error, Result};
use crate::limits;
use crate::policy::{PolicyQuery, Scope};
use crate::realm::User;
use crate::store::TokenFilter;
use crate::token::{StoredPin, Token, TokenType};
use crate::validate::{AuthRequest, Outcome, PinCheck};

pub const ASSIGNED_MESSAGE: &str = "Token assigned to user via Autoassignment";

impl Otpd {
    /// `Some` when the policy applies and decides; `None` leaves the
    /// "no tokens" result as it is.
    pub(crate) fn autoassign(
        &self,
        user: &User,
        req: &AuthRequest,
        query: &PolicyQuery<'_>,
        pins: &PinCheck<'_>,
        now: Timestamp,
    ) -> Result<Option<Outcome>> {
        let mode = match self.policies.unique_text(Scope::Enrollment, "autoassignment", query) {
            Ok(Some(mode)) => mode,
            Ok(None) => return Ok(None),
            Err(e) => return Ok(Some(Outcome::Reject { message: e.to_string(), serial: None })),
        };
        if req.state.is_some() {
            return Ok(None);
        }
        let candidates = self.store.read()?.tokens(&TokenFilter {
            realm: Some(user.realm.clone()),
            unassigned: true,
            ..Default::default()
        })?;
        let mut matches: Vec<(Token, crate::token::Consume, String)> = Vec::new();
        for token in candidates {
            if token.unusable_reason(now).is_some() {
                continue;
            }
            let Some((pin, otp)) = token.split_password(&req.password, self.config.prepend_pin) else {
                continue;
            };
            if mode == "userstore" && !pins.userstore_password(pin)? {
                continue;
            }
            let secret = token.open_secret(&self.key)?;
            if let Some(consume) = token.check_otp(&secret, otp, now) {
                matches.push((token, consume, pin.to_owned()));
            }
        }
        let (token, consume, pin) = match matches.len() {
            0 => return Ok(None),
            1 => matches.remove(0),
            n => {
                let serials: Vec<&str> = matches.iter().map(|(t, ..)| t.serial.as_str()).collect();
                tracing::warn!(
                    "autoassignment for {user} refused: the OTP matches {n} unassigned tokens ({})",
                    serials.join(", ")
                );
                return Ok(Some(Outcome::Reject {
                    message: "The OTP matches more than one unassigned token; nothing was assigned.".into(),
                    serial: None,
                }));
            }
        };
        let pin = StoredPin::hashed(&pin, &self.config.pin_hash)?;
        let mut tx = self.store.write()?;
        // privacyIDEA checks the user's limits with the request's token type
        // (hotp unless given), not the candidate's.
        let limited =
            limits::check_user(&self.policies, tx.as_ref(), user, req.client, TokenType::Hotp, true, None)
                .and_then(|_| limits::check_realm(&self.policies, tx.as_ref(), &user.realm, req.client));
        match limited {
            Ok(()) => {}
            Err(Error::PolicyLimit(message)) => return Ok(Some(Outcome::Reject { message, serial: None })),
            Err(e) => return Err(e),
        }
        // The OTP still unused and the token still unassigned: another
        // request may have taken either since the candidates were read.
        // Returning without a commit rolls the consumption back.
        if !tx.consume(token.id, &consume)? {
            return Ok(None);
        }
        let Some(mut fresh) = tx.token(&token.serial)?.filter(|t| t.owner.is_none()) else { return Ok(None) };
        fresh.owner = Some(crate::admin::owner_of(user));
        if !fresh.realms.contains(&user.realm) {
            fresh.realms.push(user.realm.clone());
            fresh.realms.sort();
        }
        fresh.assigned = Some(now);
        fresh.failcount = 0;
        fresh.failcounter_exceeded = None;
        fresh.pin = pin;
        tx.update_token(&fresh)?;
        tx.commit()?;
        Ok(Some(Outcome::Accept {
            message: ASSIGNED_MESSAGE.into(),
            serial: Some(fresh.serial),
            token_type: Some(fresh.token_type),
        }))
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use crate::testutil::{Fixture, RFC_KEY_HEX};
    use crate::token::Token;
    use crate::{AuthRequest, Front, InitSpec, Outcome, TokenType};

    fn fixture(actions: &str) -> Fixture {
        let mut extra = String::new();
        for (i, a) in actions.split(';').filter(|a| !a.trim().is_empty()).enumerate() {
            extra.push_str(&format!("[[policies]]\nname = \"p{i}\"\nscope = \"enrollment\"\n{a}\n"));
        }
        Fixture::with_config(1_700_000_000, &extra)
    }

    fn pool(f: &Fixture, serial: &str, realm: &str) {
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.serial = Some(serial.into());
        spec.otpkey = Some(Zeroizing::new(RFC_KEY_HEX.into()));
        spec.realm = Some(realm.into());
        f.otpd.init_token(&f.ctx(), &spec).unwrap();
    }

    fn check(f: &Fixture, user: &str, password: &str) -> Outcome {
        f.otpd.authenticate(&AuthRequest::new(user, password, Front::Radius)).unwrap()
    }

    fn token(f: &Fixture, serial: &str) -> Token {
        f.otpd.token(serial).unwrap()
    }

    fn untouched(f: &Fixture, serial: &str) {
        let t = token(f, serial);
        assert!(t.owner.is_none() && t.count == 0, "{serial} was changed: {t:?}");
    }

    const ANY_PIN: &str = "[policies.actions]\nautoassignment = \"any_pin\"";
    const USERSTORE: &str = "[policies.actions]\nautoassignment = \"userstore\"";

    #[test]
    fn a1_any_pin_assigns_and_sets_the_pin() {
        let f = fixture(ANY_PIN);
        pool(&f, "UA1", "corp");
        assert_eq!(check(&f, "alice", "mypin287082").message(), super::ASSIGNED_MESSAGE);
        let t = token(&f, "UA1");
        assert_eq!(t.owner.unwrap().login, "alice");
        assert_eq!(t.count, 2);
        assert!(!check(&f, "alice", "mypin287082").is_accept(), "replay");
        assert!(check(&f, "alice", "mypin359152").is_accept(), "the PIN part became the token PIN");
    }

    #[test]
    fn a2_a3_userstore_password_as_pin() {
        let f = fixture(USERSTORE);
        pool(&f, "UA1", "corp");
        assert_eq!(check(&f, "alice", "wrong287082").message(), "The user has no tokens assigned");
        untouched(&f, "UA1");
        assert!(check(&f, "alice", "alicepw287082").is_accept());
        assert!(check(&f, "alice", "alicepw359152").is_accept());
    }

    #[test]
    fn failing_requirements_leave_the_pool_untouched() {
        let f = fixture(ANY_PIN);
        pool(&f, "UA1", "corp");
        assert!(!check(&f, "alice", "mypin000000").is_accept(), "A4 wrong OTP");
        assert!(!check(&f, "alice", "287").is_accept(), "A8 too short");
        assert!(!check(&f, "alice", "mypin403154").is_accept(), "A9 outside the window");
        untouched(&f, "UA1");
        f.otpd.set_active(&f.ctx(), "UA1", false).unwrap();
        assert!(!check(&f, "alice", "mypin287082").is_accept(), "A14 disabled");
        untouched(&f, "UA1");

        let f = fixture(ANY_PIN);
        pool(&f, "UA1", "sales");
        assert!(!check(&f, "alice", "mypin287082").is_accept(), "A6 other realm");
        untouched(&f, "UA1");

        let f = fixture("");
        pool(&f, "UA1", "corp");
        assert!(!check(&f, "alice", "mypin287082").is_accept(), "A10 no policy");
        untouched(&f, "UA1");
    }

    #[test]
    fn a5_a7_owned_tokens_are_not_candidates() {
        let f = fixture(ANY_PIN);
        pool(&f, "UA1", "corp");
        f.otpd.assign_token(&f.ctx(), "UA1", "bob", None, None).unwrap();
        assert!(!check(&f, "alice", "mypin287082").is_accept(), "A7 owned by someone");
        assert_eq!(token(&f, "UA1").count, 0);
        pool(&f, "UA2", "corp");
        assert!(!check(&f, "bob", "mypin287082").is_accept(), "A5 bob owns a token");
        untouched(&f, "UA2");
    }

    #[test]
    fn a11_a12_priorities() {
        let f = fixture(&format!("{ANY_PIN};{USERSTORE}"));
        pool(&f, "UA1", "corp");
        let out = check(&f, "alice", "x287082");
        assert!(out.message().starts_with("There are policies with conflicting actions"), "{out:?}");
        untouched(&f, "UA1");
        let f = fixture(&format!("priority = 1\n{ANY_PIN};priority = 2\n{USERSTORE}"));
        pool(&f, "UA1", "corp");
        assert!(check(&f, "alice", "x287082").is_accept(), "A12 any_pin wins on priority");
    }

    #[test]
    fn a13_limit_refuses_before_consuming() {
        let f =
            fixture(&format!("{ANY_PIN};realms = [\"corp\"]\n[policies.actions]\nmax_token_per_realm = 1"));
        pool(&f, "UA1", "corp");
        let out = check(&f, "alice", "mypin287082");
        assert!(out.message().contains("The number of tokens in this realm is limited!"), "{out:?}");
        untouched(&f, "UA1");
    }

    #[test]
    fn a15_ambiguous_otp_assigns_nothing() {
        let f = fixture(ANY_PIN);
        pool(&f, "UA1", "corp");
        pool(&f, "UA2", "corp");
        let out = check(&f, "alice", "mypin287082");
        assert!(out.message().contains("more than one unassigned token"), "{out:?}");
        untouched(&f, "UA1");
        untouched(&f, "UA2");
    }

    #[test]
    fn a16_pass_on_no_token_comes_first() {
        let mut extra = String::from("[[policies]]\nname = \"aa\"\nscope = \"enrollment\"\n");
        extra.push_str(ANY_PIN);
        extra.push_str("\n[[policies]]\nname = \"pass\"\nscope = \"authentication\"\n[policies.actions]\npassOnNoToken = true\n");
        let f = Fixture::with_config(1_700_000_000, &extra);
        pool(&f, "UA1", "corp");
        assert_eq!(check(&f, "alice", "mypin287082").message(), "user has no token, accepted due to 'pass'");
        untouched(&f, "UA1");
    }
}

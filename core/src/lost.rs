//! The lost-token process (semantics.md section 5): a user who lost their
//! token gets a temporary `pw` token `lost<serial>` with a generated
//! password, their owner, realms and PIN (as stored), valid for a number of
//! days; the lost token is disabled. The policies `lostTokenPWLen`,
//! `lostTokenPWContents` and `lostTokenValid` of the owner shape it.

use jiff::Timestamp;
use zeroize::Zeroizing;

use crate::admin::{AdminContext, query};
use crate::error::{Error, Result};
use crate::policy::Scope;
use crate::token::{Token, TokenType};
use crate::{Otpd, datetime, password};

pub const DEFAULT_LENGTH: i64 = 16;
pub const DEFAULT_CONTENTS: &str = "8";
pub const DEFAULT_VALID_DAYS: i64 = 10;

/// The replacement token and its password (shown once).
#[derive(Debug)]
pub struct Replacement {
    pub token: Token,
    pub password: Zeroizing<String>,
    pub lost_serial: String,
    pub valid_until: Timestamp,
}

impl Otpd {
    /// The lost-token replacement (`Otpd::lost_token` wraps it in events).
    pub(crate) fn replace_lost(&self, ctx: &AdminContext, serial: &str) -> Result<Replacement> {
        let lost = self.token(serial)?;
        let owner = self.owner_user(&lost).ok_or(Error::LostUnassigned)?;
        let q = query(Some(&owner), None, ctx);
        let length =
            self.policies.unique_int(Scope::Enrollment, "lostTokenPWLen", &q)?.unwrap_or(DEFAULT_LENGTH);
        let contents = self.policies.unique_text(Scope::Enrollment, "lostTokenPWContents", &q)?;
        let days =
            self.policies.unique_int(Scope::Enrollment, "lostTokenValid", &q)?.unwrap_or(DEFAULT_VALID_DAYS);
        let password = password::generate(length as usize, contents.as_deref().unwrap_or(DEFAULT_CONTENTS))
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let now = self.clock.now();
        // Wall-clock days in the server's zone, minute precision, as the
        // `+Nd` offsets of the validity formats.
        let local = now.to_zoned(jiff::tz::TimeZone::system());
        let valid_until = datetime::parse_time(&format!("+{days}d"), &local)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?
            .timestamp();
        let new_serial = format!("lost{}", lost.serial);
        crate::admin::validate_serial(&new_serial)?;

        let mut tx = self.store.write()?;
        let lost = tx.token(serial)?.ok_or_else(|| Error::UnknownSerial(serial.to_owned()))?;
        let existing = tx.token(&new_serial)?;
        let sealed = self.key.seal(&Token::secret_context(&new_serial), password.as_bytes())?;
        let mut replacement = match existing {
            Some(t) if t.token_type != TokenType::Pw => return Err(Error::LostSerialTaken(new_serial)),
            // A second loss re-initialises the replacement with a new password.
            Some(t) => t,
            None => {
                let mut t = lost.clone();
                t.id = 0;
                t.serial = new_serial.clone();
                t.token_type = TokenType::Pw;
                t.count = 0;
                t.count_auth = 0;
                t.count_auth_success = 0;
                t.created = now;
                t
            }
        };
        replacement.secret = sealed;
        replacement.otplen = password.chars().count() as u32;
        replacement.owner = lost.owner.clone();
        replacement.realms = lost.realms.clone();
        replacement.pin = lost.pin.clone();
        replacement.description = format!("temporary replacement for {}", lost.serial);
        replacement.active = true;
        replacement.revoked = false;
        replacement.failcount = 0;
        replacement.failcounter_exceeded = None;
        replacement.validity_start = None;
        replacement.validity_end = Some(valid_until);
        replacement.assigned = Some(now);
        if replacement.id == 0 {
            replacement.id = tx.insert_token(&replacement)?;
        } else {
            tx.update_token(&replacement)?;
        }
        let mut disabled = lost;
        disabled.active = false;
        tx.update_token(&disabled)?;
        let message = format!("replaced by {new_serial} until {valid_until}; token disabled");
        tx.append_audit(&self.audit_record(ctx, "token_lost", &disabled, message))?;
        tx.commit()?;
        Ok(Replacement { token: replacement, password, lost_serial: disabled.serial, valid_until })
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use zeroize::Zeroizing;

    use crate::testutil::{Fixture, RFC_KEY_HEX};
    use crate::{AuthRequest, Error, Front, InitSpec, TokenChanges, TokenType};

    fn at(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }

    fn alice_token(f: &Fixture) {
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.serial = Some("OATH0001A2B3".into());
        spec.otpkey = Some(Zeroizing::new(RFC_KEY_HEX.into()));
        spec.user = Some("alice".into());
        spec.pin = Some(Zeroizing::new("1234".into()));
        f.otpd.init_token(&f.ctx(), &spec).unwrap();
        let changes =
            TokenChanges { realms: Some(vec!["corp".into(), "sales".into()]), ..Default::default() };
        f.otpd.set_token(&f.ctx(), "OATH0001A2B3", &changes).unwrap();
    }

    fn check(f: &Fixture, password: &str) -> crate::Outcome {
        f.otpd.authenticate(&AuthRequest::new("alice", password, Front::Cli)).unwrap()
    }

    #[test]
    fn spec_8_6_replacement() {
        let f = Fixture::at(at("2024-03-15T10:15:42Z"));
        alice_token(&f);
        let r = f.otpd.lost_token(&f.ctx(), "OATH0001A2B3").unwrap();
        assert_eq!(r.token.serial, "lostOATH0001A2B3");
        assert_eq!(r.token.token_type, TokenType::Pw);
        assert_eq!(r.password.chars().count(), 16);
        assert!(
            r.password
                .chars()
                .all(|c| "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz".contains(c))
        );
        assert_eq!(r.token.owner.as_ref().unwrap().login, "alice");
        assert_eq!(r.token.realms, vec!["corp".to_string(), "sales".to_string()]);
        assert_eq!(r.valid_until.as_second(), at("2024-03-25T10:15:00Z"));
        assert_eq!(r.token.description, "temporary replacement for OATH0001A2B3");
        let old = f.otpd.token("OATH0001A2B3").unwrap();
        assert!(!old.active && old.owner.is_some(), "the lost token is disabled, still owned");

        let out = check(&f, &format!("1234{}", r.password.as_str()));
        assert_eq!((out.message(), out.serial()), ("matching 1 tokens", Some("lostOATH0001A2B3")));
        assert!(!check(&f, "1234755224").is_accept());
        f.clock.set(Timestamp::from_second(at("2024-03-25T10:16:00Z")).unwrap());
        let out = check(&f, &format!("1234{}", r.password.as_str()));
        assert!(
            out.message().contains("Outside validity period") && out.message().contains("Token is disabled"),
            "{out:?}"
        );
    }

    #[test]
    fn policies_shape_the_password_and_validity() {
        let f = Fixture::with_config(
            at("2024-03-15T10:15:42Z"),
            "[[policies]]\nname = \"lost\"\nscope = \"enrollment\"\n[policies.actions]\n\
             losttoken_PW_length = 10\nlosttoken_PW_contents = \"n\"\nlosttoken_valid = 1\n",
        );
        alice_token(&f);
        let r = f.otpd.lost_token(&f.ctx(), "OATH0001A2B3").unwrap();
        assert_eq!(r.password.len(), 10);
        assert!(r.password.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(r.valid_until.as_second(), at("2024-03-16T10:15:00Z"));
        // A second loss re-initialises the replacement.
        let again = f.otpd.lost_token(&f.ctx(), "OATH0001A2B3").unwrap();
        assert_ne!(again.password.as_str(), r.password.as_str());
        assert_eq!(f.otpd.list_tokens(None, None).unwrap().len(), 2);
    }

    #[test]
    fn unassigned_token_refused() {
        let f = Fixture::new();
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.serial = Some("H1".into());
        f.otpd.init_token(&f.ctx(), &spec).unwrap();
        assert!(matches!(f.otpd.lost_token(&f.ctx(), "H1"), Err(Error::LostUnassigned)));
        assert!(matches!(f.otpd.lost_token(&f.ctx(), "nope"), Err(Error::UnknownSerial(_))));
    }
}

//! Token administration: enrollment and every change an operator makes to a
//! token (assign, unassign, enable, disable, delete, set, resync, reset).
//! Each operation is one write transaction that also appends its audit
//! record, so a refused operation changes nothing and an accepted one is
//! recorded with it. The CLI is a thin front on these calls.

use jiff::Timestamp;
use zeroize::Zeroizing;

use crate::Otpd;
use crate::crypto;
use crate::error::{Error, Result};
use crate::events::{EventRequest, EventResult, Position};
use crate::otp::HashAlgorithm;
use crate::pinhandler::PinHandler;
use crate::policy::{PolicyQuery, Scope};
use crate::realm::User;
use crate::store::{AuditRecord, StoreError, StoreRead, TokenFilter};
use crate::token::{
    self, Consume, DEFAULT_COUNT_WINDOW, DEFAULT_MAXFAIL, DEFAULT_OTPLEN, DEFAULT_SYNC_WINDOW,
    DEFAULT_TIME_WINDOW, DEFAULT_TIMESTEP, Owner, StoredPin, Token, TokenType,
};
use crate::validate::Front;
use crate::{label, limits, otpauth, password};

/// Who performs an administrative operation, for the audit trail.
#[derive(Debug, Clone)]
pub struct AdminContext {
    pub actor: String,
    pub front: Front,
    pub client: Option<String>,
}

/// Parameters of `token init`. `None` means the type's default.
#[derive(Debug, Clone)]
pub struct InitSpec {
    pub token_type: TokenType,
    pub serial: Option<String>,
    /// The OTP key as hex (hotp/totp). The secrets here are `Zeroizing`:
    /// wiped on drop, and their `Debug` shows nothing of them.
    pub otpkey: Option<Zeroizing<String>>,
    pub genkey: bool,
    /// The password of a pw token; generated when absent.
    pub password: Option<Zeroizing<String>>,
    pub digits: Option<u32>,
    pub hash: Option<HashAlgorithm>,
    pub timestep: Option<u32>,
    pub user: Option<String>,
    pub realm: Option<String>,
    pub pin: Option<Zeroizing<String>>,
    pub description: Option<String>,
}

impl InitSpec {
    pub fn new(token_type: TokenType) -> Self {
        InitSpec {
            token_type,
            serial: None,
            otpkey: None,
            genkey: false,
            password: None,
            digits: None,
            hash: None,
            timestep: None,
            user: None,
            realm: None,
            pin: None,
            description: None,
        }
    }
}

/// What enrollment hands back: the token and, for hotp/totp, its otpauth
/// URI (which carries the key: show it once, to the operator).
#[derive(Debug)]
pub struct Enrolled {
    pub token: Token,
    pub otpauth: Option<Zeroizing<String>>,
    /// A password generated for a pw token (shown once).
    pub password: Option<Zeroizing<String>>,
}

/// Changes of `token set`. `None` leaves a field alone; for the validity
/// bounds `Some(None)` clears the bound.
#[derive(Debug, Clone, Default)]
pub struct TokenChanges {
    pub pin: Option<Zeroizing<String>>,
    pub description: Option<String>,
    pub realms: Option<Vec<String>>,
    pub validity_start: Option<Option<Timestamp>>,
    pub validity_end: Option<Option<Timestamp>>,
    pub max_fail: Option<u32>,
}

/// Smallest and largest OTP key accepted, in bytes. 80 bits is what many
/// authenticator apps use; 128 bytes is the SHA-512 block size.
const MIN_KEY: usize = 10;
const MAX_KEY: usize = 128;
/// Generated pw-token passwords without a `pw.length`/`pw.contents` policy.
const PW_LENGTH: usize = 12;
const PW_CONTENTS: &str = "cn";
/// Random PINs of `otp_pin_random` (without a PIN-contents policy).
const RANDOM_PIN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Decodes an `--otpkey` given as hex.
pub fn parse_otpkey(hex: &str) -> Result<Zeroizing<Vec<u8>>> {
    let hex = hex.trim();
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidOtpKey("it must be hexadecimal (0-9, a-f)".into()));
    }
    if !hex.len().is_multiple_of(2) {
        return Err(Error::InvalidOtpKey(format!("it has an odd number of hex digits ({})", hex.len())));
    }
    let bytes = Zeroizing::new(
        data_encoding::HEXLOWER_PERMISSIVE
            .decode(hex.as_bytes())
            .map_err(|_| Error::InvalidOtpKey("it must be hexadecimal (0-9, a-f)".into()))?,
    );
    if !(MIN_KEY..=MAX_KEY).contains(&bytes.len()) {
        return Err(Error::InvalidOtpKey(format!(
            "it is {} bytes long; use {MIN_KEY} to {MAX_KEY} bytes ({} to {} hex digits, 20 bytes is usual)",
            bytes.len(),
            MIN_KEY * 2,
            MAX_KEY * 2
        )));
    }
    Ok(bytes)
}

/// Serials are `[0-9A-Za-z_-]`, 1 to 40 characters.
pub fn validate_serial(serial: &str) -> Result<()> {
    if serial.is_empty()
        || serial.len() > 40
        || !serial.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::InvalidSerial(serial.to_owned()));
    }
    Ok(())
}

/// A new token: what enrollment (`token init`, `token import`) chooses;
/// everything else starts at the defaults of every new token (counter 0,
/// the count, sync and time windows, maxfail, active, no validity period).
pub(crate) struct NewToken {
    pub serial: String,
    pub token_type: TokenType,
    /// The secret, already sealed under `Token::secret_context(serial)`.
    pub secret: Vec<u8>,
    pub otplen: u32,
    pub hash: HashAlgorithm,
    pub timestep: u32,
    pub description: String,
    pub pin: StoredPin,
    pub owner: Option<Owner>,
    pub realms: Vec<String>,
    /// Creation time, and assignment time when owned.
    pub created: Timestamp,
}

impl NewToken {
    pub(crate) fn build(self) -> Token {
        Token {
            id: 0,
            serial: self.serial,
            token_type: self.token_type,
            secret: self.secret,
            otplen: self.otplen,
            hash: self.hash,
            timestep: self.timestep,
            time_window: DEFAULT_TIME_WINDOW,
            time_shift: 0.0,
            count: 0,
            count_window: DEFAULT_COUNT_WINDOW,
            sync_window: DEFAULT_SYNC_WINDOW,
            maxfail: DEFAULT_MAXFAIL,
            failcount: 0,
            failcounter_exceeded: None,
            active: true,
            revoked: false,
            description: self.description,
            pin: self.pin,
            assigned: self.owner.as_ref().map(|_| self.created),
            owner: self.owner,
            realms: self.realms,
            validity_start: None,
            validity_end: None,
            count_auth: 0,
            count_auth_success: 0,
            created: self.created,
        }
    }
}

/// The owner record of a token owned by `user`.
pub(crate) fn owner_of(user: &User) -> Owner {
    Owner { login: user.login.clone(), realm: user.realm.clone(), resolver: user.resolver.clone() }
}

fn truncate_description(d: &str) -> String {
    d.chars().take(token::MAX_DESCRIPTION).collect()
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

impl AdminContext {
    pub(crate) fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.client.as_deref().and_then(|c| c.parse().ok())
    }
}

/// The policy query of an operation on behalf of `user` (or, without a
/// user, of a realm).
pub(crate) fn query<'a>(
    user: Option<&'a User>,
    realm: Option<&'a str>,
    ctx: &AdminContext,
) -> PolicyQuery<'a> {
    match user {
        Some(u) => PolicyQuery {
            realm: Some(&u.realm),
            resolver: Some(&u.resolver),
            user: Some(&u.login),
            client: ctx.client_ip(),
            realm_only: false,
        },
        None => PolicyQuery { realm, client: ctx.client_ip(), ..Default::default() },
    }
}

impl Otpd {
    /// A PIN as the `otp_pin_encrypt` policy wants it stored.
    fn store_pin(&self, pin: &str, q: &PolicyQuery<'_>) -> Result<StoredPin> {
        if !pin.is_empty() && self.policies.flag(Scope::Enrollment, "otp_pin_encrypt", q).is_some() {
            return Ok(StoredPin::Encrypted(self.key.seal(token::PIN_CONTEXT, pin.as_bytes())?));
        }
        Ok(StoredPin::hashed(pin, &self.config.pin_hash)?)
    }

    /// The owner of `token` as a user, for policy queries.
    pub(crate) fn owner_user(&self, token: &Token) -> Option<User> {
        token.owner.as_ref().map(|o| User {
            login: o.login.clone(),
            realm: o.realm.clone(),
            resolver: o.resolver.clone(),
            full_name: None,
        })
    }

    pub(crate) fn audit_record(
        &self,
        ctx: &AdminContext,
        action: &str,
        token: &Token,
        message: String,
    ) -> AuditRecord {
        AuditRecord {
            time: self.clock.now(),
            actor: ctx.actor.clone(),
            action: action.into(),
            front: ctx.front.name().into(),
            serial: Some(token.serial.clone()),
            user: token.owner.as_ref().map(|o| o.login.clone()),
            realm: token.owner.as_ref().map(|o| o.realm.clone()),
            client: ctx.client.clone(),
            success: true,
            message,
        }
    }

    /// Loads `serial`, lets `change` modify it, stores it and its audit
    /// record, all in one transaction. `change` returns the audit message.
    fn modify(
        &self,
        ctx: &AdminContext,
        action: &str,
        serial: &str,
        change: impl FnOnce(&mut Token, &dyn StoreRead) -> Result<String>,
    ) -> Result<Token> {
        let mut tx = self.store.write()?;
        let mut token = tx.token(serial)?.ok_or_else(|| Error::UnknownSerial(serial.to_owned()))?;
        if token.revoked {
            return Err(Error::Revoked(token.serial));
        }
        let message = change(&mut token, tx.as_ref())?;
        tx.update_token(&token)?;
        tx.append_audit(&self.audit_record(ctx, action, &token, message))?;
        tx.commit()?;
        Ok(token)
    }

    /// One token by serial.
    pub fn token(&self, serial: &str) -> Result<Token> {
        self.store.read()?.token(serial)?.ok_or_else(|| Error::UnknownSerial(serial.to_owned()))
    }

    /// Tokens, optionally of one user (`user` may carry `@realm`) and/or in
    /// one realm. The user need not exist any more: an operator looks for the
    /// tokens of a deleted account too.
    pub fn list_tokens(&self, user: Option<&str>, realm: Option<&str>) -> Result<Vec<Token>> {
        let mut filter = TokenFilter::default();
        match user {
            Some(u) => {
                let (login, realm) = self.realms.locate(u, realm, None)?;
                filter.owner = Some((login.to_owned(), realm));
            }
            None => filter.realm = realm.map(|r| self.realms.canonical(r)).transpose()?,
        }
        Ok(self.store.read()?.tokens(&filter)?)
    }

    /// Enrolls a token (`token init`).
    pub(crate) fn enroll(&self, ctx: &AdminContext, spec: &InitSpec) -> Result<Enrolled> {
        let t = spec.token_type;
        let otp_type = matches!(t, TokenType::Hotp | TokenType::Totp);
        let refuse =
            |what: &str, types: &str| invalid(format!("{what} applies only to {types} tokens, not to {t}"));
        if !otp_type {
            if spec.otpkey.is_some() {
                return Err(refuse("--otpkey", "hotp and totp"));
            }
            if spec.genkey {
                return Err(refuse("--genkey", "hotp and totp"));
            }
            if spec.digits.is_some() {
                return Err(refuse("--digits", "hotp and totp"));
            }
            if spec.hash.is_some() {
                return Err(refuse("--hash", "hotp and totp"));
            }
        }
        if spec.timestep.is_some() && t != TokenType::Totp {
            return Err(refuse("--timestep", "totp"));
        }
        if spec.password.is_some() && t != TokenType::Pw {
            return Err(refuse("--password", "pw"));
        }
        if spec.otpkey.is_some() && spec.genkey {
            return Err(invalid("give either --otpkey or --genkey, not both"));
        }
        if let Some(d) = spec.digits
            && d != 6
            && d != 8
        {
            return Err(invalid(format!("--digits must be 6 or 8, not {d}")));
        }
        if let Some(s) = spec.timestep
            && s != 30
            && s != 60
        {
            return Err(invalid(format!("--timestep must be 30 or 60 seconds, not {s}")));
        }
        if let Some(serial) = &spec.serial {
            validate_serial(serial)?;
        }
        let hash = spec.hash.unwrap_or_default();
        // Owner and realms are checked before anything is written.
        let user =
            spec.user.as_deref().map(|u| self.realms.resolve(u, spec.realm.as_deref(), None)).transpose()?;
        let owner = user.as_ref().map(owner_of);
        let realms = match (&user, &spec.realm) {
            (Some(u), _) => vec![u.realm.clone()],
            (None, Some(r)) => vec![self.realms.canonical(r)?],
            (None, None) => Vec::new(),
        };
        let q = query(user.as_ref(), realms.first().map(String::as_str), ctx);

        let mut generated_password = None;
        let (secret, otplen): (Zeroizing<Vec<u8>>, u32) = match t {
            TokenType::Hotp | TokenType::Totp => {
                let key = match &spec.otpkey {
                    Some(hex) => parse_otpkey(hex)?,
                    None => {
                        let mut key = Zeroizing::new(vec![0u8; hash.generated_key_len()]);
                        crypto::fill_random(&mut key)?;
                        key
                    }
                };
                (key, spec.digits.unwrap_or(DEFAULT_OTPLEN))
            }
            TokenType::Pw => {
                let password = match &spec.password {
                    Some(p) if p.is_empty() => return Err(invalid("--password must not be empty")),
                    Some(p) => p.clone(),
                    None => {
                        let length = self.policies.unique_int(Scope::Enrollment, "pw.length", &q)?;
                        let contents = self.policies.unique_text(Scope::Enrollment, "pw.contents", &q)?;
                        let p = password::generate(
                            length.map_or(PW_LENGTH, |l| l as usize),
                            contents.as_deref().unwrap_or(PW_CONTENTS),
                        )
                        .map_err(|e| invalid(e.to_string()))?;
                        generated_password = Some(p.clone());
                        p
                    }
                };
                let len = password.chars().count() as u32;
                (Zeroizing::new(password.as_bytes().to_vec()), len)
            }
            TokenType::Spass => (Zeroizing::new(Vec::new()), 0),
        };
        // otp_pin_random replaces any PIN given; the PIN goes to the
        // pinhandling handlers only (never into the result).
        let random_pin = self.policies.unique_int(Scope::Enrollment, "otp_pin_random", &q)?;
        let pin_text = match random_pin {
            Some(n) => Zeroizing::new(crypto::random_string(RANDOM_PIN_ALPHABET, n as usize)?),
            None => spec.pin.clone().unwrap_or_default(),
        };
        let pin = self.store_pin(&pin_text, &q)?;
        let now = self.clock.now();
        let serial = match &spec.serial {
            Some(s) => s.clone(),
            None => generate_serial(self.store.read()?.as_ref(), t)?,
        };
        let realm = realms.first().map(String::as_str);
        if random_pin.is_some() {
            self.hand_on_pin(&pin_text, &serial, user.as_ref(), realm, t, &q)?;
        }
        let (givenname, surname) =
            label::split_name(user.as_ref().and_then(|u| u.full_name.as_deref()).unwrap_or(""));
        let vars = label::LabelVars {
            serial: &serial,
            user: user.as_ref().map_or("", |u| u.login.as_str()),
            realm: realm.unwrap_or(""),
            givenname,
            surname,
        };
        let render = |action: &str, default: &str| -> Result<String> {
            let template = self.policies.unique_text(Scope::Enrollment, action, &q)?;
            label::render(template.as_deref().unwrap_or(default), &vars)
                .map_err(|e| invalid(format!("{action}: {e}")))
        };
        let token_label = render("tokenlabel", "<s>")?;
        let issuer = render("tokenissuer", "otpd")?;
        let image = self.policies.unique_text(Scope::Enrollment, "appimageurl", &q)?;

        let mut tx = self.store.write()?;
        if let Some(u) = &user {
            limits::check_user(&self.policies, tx.as_ref(), u, ctx.client_ip(), t, true, None)?;
        }
        for r in &realms {
            limits::check_realm(&self.policies, tx.as_ref(), r, ctx.client_ip())?;
        }
        let sealed = if t == TokenType::Spass {
            Vec::new()
        } else {
            self.key.seal(&Token::secret_context(&serial), &secret)?
        };
        let mut token = NewToken {
            serial,
            token_type: t,
            secret: sealed,
            otplen,
            hash,
            timestep: spec.timestep.unwrap_or(DEFAULT_TIMESTEP),
            description: truncate_description(spec.description.as_deref().unwrap_or("")),
            pin,
            owner,
            realms,
            created: now,
        }
        .build();
        token.id = tx.insert_token(&token)?;
        tx.append_audit(&self.audit_record(ctx, "token_init", &token, format!("enrolled {t} token")))?;
        tx.commit()?;
        let otpauth = if otp_type {
            otpauth::uri(&token, &secret, &token_label, &issuer, image.as_deref()).map(Zeroizing::new)
        } else {
            None
        };
        Ok(Enrolled { token, otpauth, password: generated_password })
    }

    /// Gives a random PIN to every `pinhandling` handler of the policies.
    fn hand_on_pin(
        &self,
        pin: &str,
        serial: &str,
        user: Option<&User>,
        realm: Option<&str>,
        t: TokenType,
        q: &PolicyQuery<'_>,
    ) -> Result<()> {
        let handlers = self.policies.texts(Scope::Enrollment, "pinhandling", q);
        if handlers.is_empty() {
            tracing::warn!(
                "otp_pin_random without a pinhandling policy: the random PIN of token {serial} is known to no one"
            );
        }
        for (spec, policy) in handlers {
            let handler =
                PinHandler::parse(&spec).map_err(|e| Error::PinHandler(format!("policy '{policy}': {e}")))?;
            handler
                .deliver(pin, serial, user.map(|u| u.login.as_str()), realm, t.name())
                .map_err(|e| Error::PinHandler(format!("policy '{policy}': {e}")))?;
        }
        Ok(())
    }

    /// Assigns an unassigned token to a user (`token assign`).
    fn assign(
        &self,
        ctx: &AdminContext,
        serial: &str,
        user: &str,
        realm: Option<&str>,
        pin: Option<&str>,
    ) -> Result<Token> {
        let user = self.realms.resolve(user, realm, None)?;
        let q = query(Some(&user), None, ctx);
        let pin = pin.map(|p| self.store_pin(p, &q)).transpose()?;
        let now = self.clock.now();
        self.modify(ctx, "token_assign", serial, |token, tx| {
            if let Some(owner) = &token.owner {
                return Err(Error::AlreadyAssigned {
                    serial: token.serial.clone(),
                    user: format!("{}@{}", owner.login, owner.realm),
                });
            }
            limits::check_realm(&self.policies, tx, &user.realm, ctx.client_ip())?;
            limits::check_user(
                &self.policies,
                tx,
                &user,
                ctx.client_ip(),
                token.token_type,
                token.active,
                None,
            )?;
            if !token.realms.contains(&user.realm) {
                token.realms.push(user.realm.clone());
                token.realms.sort();
            }
            token.owner = Some(owner_of(&user));
            token.assigned = Some(now);
            token.failcount = 0;
            token.failcounter_exceeded = None;
            if let Some(pin) = pin {
                token.pin = pin;
            }
            Ok(format!("assigned to {user}"))
        })
    }

    /// Removes the owner; the PIN becomes empty and the failcounter 0; the
    /// token keeps its realms (`token unassign`).
    fn unassign(&self, ctx: &AdminContext, serial: &str) -> Result<Token> {
        self.modify(ctx, "token_unassign", serial, |token, _| {
            let Some(owner) = token.owner.take() else {
                return Err(Error::NotAssigned(token.serial.clone()));
            };
            token.pin = StoredPin::Empty;
            token.failcount = 0;
            token.failcounter_exceeded = None;
            token.assigned = None;
            Ok(format!("unassigned from {}@{}", owner.login, owner.realm))
        })
    }

    /// Enables or disables a token.
    fn enable(&self, ctx: &AdminContext, serial: &str, active: bool) -> Result<Token> {
        let action = if active { "token_enable" } else { "token_disable" };
        self.modify(ctx, action, serial, |token, tx| {
            if active
                && !token.active
                && let Some(owner) = self.owner_user(token)
            {
                let serial = token.serial.clone();
                limits::check_user(
                    &self.policies,
                    tx,
                    &owner,
                    ctx.client_ip(),
                    token.token_type,
                    true,
                    Some(&serial),
                )?;
            }
            token.active = active;
            Ok(if active { "enabled" } else { "disabled" }.into())
        })
    }

    /// Deletes a token (`token delete`).
    fn delete(&self, ctx: &AdminContext, serial: &str) -> Result<Token> {
        let mut tx = self.store.write()?;
        let token = tx.token(serial)?.ok_or_else(|| Error::UnknownSerial(serial.to_owned()))?;
        tx.delete_token(serial)?;
        tx.append_audit(&self.audit_record(ctx, "token_delete", &token, "deleted".into()))?;
        tx.commit()?;
        Ok(token)
    }

    /// Changes PIN, description, realms, validity period or maxfail (`token set`).
    fn set(&self, ctx: &AdminContext, serial: &str, changes: &TokenChanges) -> Result<Token> {
        let owner = self.token(serial).ok().and_then(|t| self.owner_user(&t));
        let q = query(owner.as_ref(), None, ctx);
        let pin = changes.pin.as_deref().map(|p| self.store_pin(p, &q)).transpose()?;
        let realms = match &changes.realms {
            Some(list) => {
                let mut out = Vec::new();
                for r in list.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
                    let r = self.realms.canonical(r)?;
                    if !out.contains(&r) {
                        out.push(r);
                    }
                }
                out.sort();
                Some(out)
            }
            None => None,
        };
        if changes.max_fail == Some(0) {
            return Err(invalid("--max-fail must be at least 1"));
        }
        self.modify(ctx, "token_set", serial, |token, tx| {
            let mut what = Vec::new();
            if let Some(pin) = pin {
                token.pin = pin;
                what.push("pin");
            }
            if let Some(d) = &changes.description {
                token.description = truncate_description(d);
                what.push("description");
            }
            if let Some(mut realms) = realms {
                for added in realms.iter().filter(|r| !token.realms.contains(r)) {
                    limits::check_realm(&self.policies, tx, added, ctx.client_ip())?;
                }
                // The owner's realm always stays.
                if let Some(o) = &token.owner
                    && !realms.contains(&o.realm)
                {
                    realms.push(o.realm.clone());
                    realms.sort();
                }
                token.realms = realms;
                what.push("realms");
            }
            if let Some(start) = changes.validity_start {
                token.validity_start = start;
                what.push("validity_start");
            }
            if let Some(end) = changes.validity_end {
                token.validity_end = end;
                what.push("validity_end");
            }
            if let (Some(s), Some(e)) = (token.validity_start, token.validity_end)
                && s > e
            {
                return Err(invalid(format!("the validity period would end ({e}) before it starts ({s})")));
            }
            if let Some(m) = changes.max_fail {
                token.maxfail = m;
                what.push("maxfail");
            }
            if what.is_empty() {
                return Err(invalid("nothing to set: give at least one of --pin, --description, --realms, --validity-start, --validity-end, --max-fail"));
            }
            Ok(format!("set {}", what.join(", ")))
        })
    }

    /// Resynchronises an hotp/totp token with two consecutive OTPs.
    fn resync(&self, ctx: &AdminContext, serial: &str, otp1: &str, otp2: &str) -> Result<Token> {
        let now = self.clock.now();
        self.modify(ctx, "token_resync", serial, |token, _| {
            let secret = token.open_secret(&self.key)?;
            let Consume { new_count, time_shift, .. } = token
                .resync(&secret, otp1.trim(), otp2.trim(), now)
                .ok_or_else(|| Error::ResyncFailed(token.serial.clone()))?;
            token.count = new_count;
            if let Some(shift) = time_shift {
                token.time_shift = shift;
            }
            Ok("resynchronised".into())
        })
    }

    /// Sets the failcounter to 0 (`token reset`).
    fn reset(&self, ctx: &AdminContext, serial: &str) -> Result<Token> {
        self.modify(ctx, "token_reset", serial, |token, _| {
            token.failcount = 0;
            token.failcounter_exceeded = None;
            Ok("failcounter reset".into())
        })
    }
}

/// The public operations: each runs between the pre and post handlers of
/// its event(s); without handlers for the event this costs nothing.
impl Otpd {
    /// Enrolls a token (`token init`).
    pub fn init_token(&self, ctx: &AdminContext, spec: &InitSpec) -> Result<Enrolled> {
        let user =
            spec.user.as_deref().and_then(|u| self.realms.resolve(u, spec.realm.as_deref(), None).ok());
        let serial = spec.serial.as_deref();
        self.with_events(
            &["token_init"],
            ctx,
            serial,
            user,
            || self.enroll(ctx, spec),
            |e| Some(e.token.serial.clone()),
        )
    }

    /// Assigns an unassigned token to a user (`token assign`).
    pub fn assign_token(
        &self,
        ctx: &AdminContext,
        serial: &str,
        user: &str,
        realm: Option<&str>,
        pin: Option<&str>,
    ) -> Result<Token> {
        let owner = self.realms.resolve(user, realm, None).ok();
        let op = || self.assign(ctx, serial, user, realm, pin);
        self.with_events(&["token_assign"], ctx, Some(serial), owner, op, |t| Some(t.serial.clone()))
    }

    /// Removes the owner; the PIN becomes empty and the failcounter 0; the
    /// token keeps its realms (`token unassign`).
    pub fn unassign_token(&self, ctx: &AdminContext, serial: &str) -> Result<Token> {
        let op = || self.unassign(ctx, serial);
        self.with_events(&["token_unassign"], ctx, Some(serial), None, op, |t| Some(t.serial.clone()))
    }

    /// Enables or disables a token.
    pub fn set_active(&self, ctx: &AdminContext, serial: &str, active: bool) -> Result<Token> {
        let event = if active { "token_enable" } else { "token_disable" };
        let op = || self.enable(ctx, serial, active);
        self.with_events(&[event], ctx, Some(serial), None, op, |t| Some(t.serial.clone()))
    }

    /// Deletes a token (`token delete`).
    pub fn delete_token(&self, ctx: &AdminContext, serial: &str) -> Result<Token> {
        let op = || self.delete(ctx, serial);
        self.with_events(&["token_delete"], ctx, Some(serial), None, op, |t| Some(t.serial.clone()))
    }

    /// Changes PIN, description, realms, validity period or maxfail (`token
    /// set`): fires token_setpin for a PIN, token_realm for realms and
    /// token_set for the rest.
    pub fn set_token(&self, ctx: &AdminContext, serial: &str, changes: &TokenChanges) -> Result<Token> {
        let mut events = Vec::new();
        if changes.pin.is_some() {
            events.push("token_setpin");
        }
        if changes.realms.is_some() {
            events.push("token_realm");
        }
        if changes.description.is_some()
            || changes.validity_start.is_some()
            || changes.validity_end.is_some()
            || changes.max_fail.is_some()
        {
            events.push("token_set");
        }
        let op = || self.set(ctx, serial, changes);
        self.with_events(&events, ctx, Some(serial), None, op, |t| Some(t.serial.clone()))
    }

    /// Resynchronises an hotp/totp token with two consecutive OTPs.
    pub fn resync_token(&self, ctx: &AdminContext, serial: &str, otp1: &str, otp2: &str) -> Result<Token> {
        let op = || self.resync(ctx, serial, otp1, otp2);
        self.with_events(&["token_resync"], ctx, Some(serial), None, op, |t| Some(t.serial.clone()))
    }

    /// Sets the failcounter to 0 (`token reset`).
    pub fn reset_failcounter(&self, ctx: &AdminContext, serial: &str) -> Result<Token> {
        let op = || self.reset(ctx, serial);
        self.with_events(&["token_reset"], ctx, Some(serial), None, op, |t| Some(t.serial.clone()))
    }

    /// `otpd token lost SERIAL` (see `lost`).
    pub fn lost_token(&self, ctx: &AdminContext, serial: &str) -> Result<crate::lost::Replacement> {
        let op = || self.replace_lost(ctx, serial);
        self.with_events(&["token_lost"], ctx, Some(serial), None, op, |r| Some(r.token.serial.clone()))
    }

    /// Runs `op` between the pre and post handlers of `events`. The
    /// request's user is `user`, else the owner of `serial`'s token. Post
    /// handlers run only when the operation succeeded.
    pub(crate) fn with_events<T>(
        &self,
        events: &[&'static str],
        ctx: &AdminContext,
        serial: Option<&str>,
        user: Option<User>,
        op: impl FnOnce() -> Result<T>,
        result_serial: impl Fn(&T) -> Option<String>,
    ) -> Result<T> {
        let events: Vec<&'static str> = events.iter().copied().filter(|e| self.events.listens(e)).collect();
        if events.is_empty() {
            return op();
        }
        let user = user.or_else(|| serial.and_then(|s| self.token(s).ok()).and_then(|t| self.owner_user(&t)));
        let mut requests: Vec<EventRequest> = events
            .iter()
            .map(|event| EventRequest {
                event,
                user: user.clone(),
                client: ctx.client_ip(),
                front: ctx.front,
                serial: serial.map(str::to_owned),
                result: None,
            })
            .collect();
        for r in &requests {
            self.fire(Position::Pre, r);
        }
        let done = op()?;
        for r in &mut requests {
            r.result = Some(EventResult {
                value: true,
                status: true,
                authentication: "",
                message: String::new(),
                serial: result_serial(&done),
            });
            self.fire(Position::Post, r);
        }
        Ok(done)
    }
}

/// privacyIDEA's serial scheme: type prefix, the number of tokens of the
/// type zero-padded to 4 digits, random upper-case hex filling up to 8
/// characters after the prefix (e.g. `OATH0003A1F2`).
fn generate_serial(tx: &dyn StoreRead, t: TokenType) -> Result<String> {
    let number = format!("{:04}", tx.count_tokens_of_type(t)?);
    for attempt in 0..16 {
        let fill = 8usize.saturating_sub(number.len()).max(attempt / 4);
        let serial =
            format!("{}{number}{}", t.serial_prefix(), crypto::random_string(b"0123456789ABCDEF", fill)?);
        if tx.token(&serial)?.is_none() {
            return Ok(serial);
        }
    }
    Err(Error::Store(StoreError::DuplicateSerial(format!("{}{number}...", t.serial_prefix()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Fixture, RFC_KEY_HEX};

    #[test]
    fn otpkey_validation() {
        assert_eq!(parse_otpkey(RFC_KEY_HEX).unwrap().len(), 20);
        assert!(matches!(parse_otpkey("3132"), Err(Error::InvalidOtpKey(m)) if m.contains("2 bytes")));
        assert!(matches!(parse_otpkey("31323"), Err(Error::InvalidOtpKey(m)) if m.contains("odd")));
        assert!(
            matches!(parse_otpkey("zz313233343536373839"), Err(Error::InvalidOtpKey(m)) if m.contains("hex"))
        );
        assert!(parse_otpkey("").is_err());
    }

    #[test]
    fn serial_rules() {
        assert!(validate_serial("OATH0001A2B3").is_ok());
        assert!(validate_serial("my_token-1").is_ok());
        assert!(validate_serial("bad serial").is_err());
        assert!(validate_serial("").is_err());
        assert!(validate_serial(&"x".repeat(41)).is_err());
    }

    #[test]
    fn printed_enrolments_and_changes_never_show_keys_passwords_or_pins() {
        // The key, PIN and password given, the URI and password handed back
        // and a change's PIN are `Zeroizing`, whose Debug shows nothing.
        let f = Fixture::new();
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.otpkey = Some(Zeroizing::new(RFC_KEY_HEX.into()));
        spec.pin = Some(Zeroizing::new("s3cret-pin".into()));
        let printed = format!("{spec:?}");
        assert!(!printed.contains(RFC_KEY_HEX) && !printed.contains("s3cret-pin"), "{printed}");
        let hotp = f.otpd.init_token(&f.ctx(), &spec).unwrap();
        let pw = f.otpd.init_token(&f.ctx(), &InitSpec::new(TokenType::Pw)).unwrap();
        let password = pw.password.clone().expect("a generated password");
        let printed = format!("{hotp:?} {pw:?}");
        assert!(printed.contains(&hotp.token.serial), "{printed}");
        assert!(!printed.contains("otpauth://") && !printed.contains(password.as_str()), "{printed}");
        let changes = TokenChanges { pin: Some(Zeroizing::new("s3cret-pin".into())), ..Default::default() };
        assert!(!format!("{changes:?}").contains("s3cret-pin"));
    }

    #[test]
    fn generated_serials_follow_the_scheme() {
        let f = Fixture::new();
        let e = f.otpd.init_token(&f.ctx(), &InitSpec::new(TokenType::Hotp)).unwrap();
        let s = &e.token.serial;
        assert!(s.starts_with("OATH0000") && s.len() == 12, "{s}");
        assert!(e.otpauth.unwrap().starts_with("otpauth://hotp/OATH0000"));
        let e = f.otpd.init_token(&f.ctx(), &InitSpec::new(TokenType::Hotp)).unwrap();
        assert!(e.token.serial.starts_with("OATH0001"));
        let e = f.otpd.init_token(&f.ctx(), &InitSpec::new(TokenType::Spass)).unwrap();
        assert!(e.token.serial.starts_with("PISP0000"));
    }

    #[test]
    fn refused_operations_change_nothing() {
        let f = Fixture::new();
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.serial = Some("H1".into());
        f.otpd.init_token(&f.ctx(), &spec).unwrap();
        let audit_before = f.otpd.audit(100).unwrap().len();
        assert!(matches!(
            f.otpd.init_token(&f.ctx(), &spec),
            Err(Error::Store(StoreError::DuplicateSerial(_)))
        ));
        spec.serial = Some("H2".into());
        spec.user = Some("nobody".into());
        assert!(matches!(f.otpd.init_token(&f.ctx(), &spec), Err(Error::UnknownUser { .. })));
        assert!(matches!(f.otpd.token("H2"), Err(Error::UnknownSerial(_))));
        assert!(matches!(f.otpd.set_active(&f.ctx(), "nope", false), Err(Error::UnknownSerial(_))));
        assert!(matches!(f.otpd.unassign_token(&f.ctx(), "H1"), Err(Error::NotAssigned(_))));
        assert_eq!(f.otpd.list_tokens(None, None).unwrap().len(), 1);
        assert_eq!(f.otpd.audit(100).unwrap().len(), audit_before);
    }

    #[test]
    fn assign_unassign_and_realms() {
        let f = Fixture::new();
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.serial = Some("H1".into());
        spec.pin = Some(Zeroizing::new("1234".into()));
        f.otpd.init_token(&f.ctx(), &spec).unwrap();
        let t = f.otpd.assign_token(&f.ctx(), "H1", "alice", None, Some("9999")).unwrap();
        assert_eq!(t.owner.as_ref().unwrap().login, "alice");
        assert_eq!(t.realms, vec!["corp".to_string()]);
        assert!(matches!(
            f.otpd.assign_token(&f.ctx(), "H1", "bob", None, None),
            Err(Error::AlreadyAssigned { .. })
        ));
        let t = f.otpd.unassign_token(&f.ctx(), "H1").unwrap();
        assert!(t.owner.is_none());
        assert_eq!(t.pin, StoredPin::Empty);
        assert_eq!(t.realms, vec!["corp".to_string()], "realms stay");
        let changes =
            TokenChanges { realms: Some(vec!["CORP".into(), "sales".into()]), ..Default::default() };
        let t = f.otpd.set_token(&f.ctx(), "H1", &changes).unwrap();
        assert_eq!(t.realms, vec!["corp".to_string(), "sales".to_string()]);
        let changes = TokenChanges { realms: Some(vec!["nosuch".into()]), ..Default::default() };
        assert!(matches!(f.otpd.set_token(&f.ctx(), "H1", &changes), Err(Error::UnknownRealm(_))));
    }

    #[test]
    fn resync_moves_the_counter() {
        let f = Fixture::new();
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.serial = Some("H1".into());
        spec.otpkey = Some(Zeroizing::new(RFC_KEY_HEX.into()));
        f.otpd.init_token(&f.ctx(), &spec).unwrap();
        assert!(matches!(
            f.otpd.resync_token(&f.ctx(), "H1", "287922", "399871"),
            Err(Error::ResyncFailed(_))
        ));
        assert_eq!(f.otpd.resync_token(&f.ctx(), "H1", "287922", "162583").unwrap().count, 8);
    }

    fn enroll_policy(actions: &str) -> Fixture {
        Fixture::with_config(
            1_700_000_000,
            &format!(
                "[[policies]]\nname = \"enroll\"\nscope = \"enrollment\"\n[policies.actions]\n{actions}\n"
            ),
        )
    }

    fn alice_spec(pin: Option<&str>) -> InitSpec {
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.serial = Some("H1".into());
        spec.otpkey = Some(Zeroizing::new(RFC_KEY_HEX.into()));
        spec.user = Some("alice".into());
        spec.pin = pin.map(|p| Zeroizing::new(p.into()));
        spec
    }

    fn login(f: &Fixture, password: &str) -> bool {
        f.otpd.authenticate(&crate::AuthRequest::new("alice", password, Front::Cli)).unwrap().is_accept()
    }

    #[test]
    fn encrypted_pin_round_trip() {
        let f = enroll_policy("otp_pin_encrypt = true");
        let t = f.otpd.init_token(&f.ctx(), &alice_spec(Some("1234"))).unwrap().token;
        assert!(matches!(t.pin, StoredPin::Encrypted(_)));
        assert!(login(&f, "1234755224"));
        assert!(!login(&f, "1235287082"));
        let t = f
            .otpd
            .set_token(
                &f.ctx(),
                "H1",
                &TokenChanges { pin: Some(Zeroizing::new("99".into())), ..Default::default() },
            )
            .unwrap();
        assert!(matches!(t.pin, StoredPin::Encrypted(_)));
        assert!(login(&f, "99287082"));
    }

    #[test]
    fn random_pin_goes_to_the_command_handler_only() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = dir.path().join("handler.sh");
        std::fs::write(&script, "#!/bin/sh\nout=$1\nshift\necho \"$@\" > \"$out\"\ncat >> \"$out\"\n")
            .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let f = enroll_policy(&format!(
            "otp_pin_random = 8\npinhandling = \"command {} {}\"",
            script.display(),
            out.display()
        ));
        let e = f.otpd.init_token(&f.ctx(), &alice_spec(Some("ignored"))).unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        let mut lines = written.lines();
        assert_eq!(lines.next(), Some("H1 alice corp"));
        let pin = lines.next().unwrap();
        assert_eq!(pin.len(), 8);
        assert!(pin.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(format!("{e:?}").find(pin).is_none(), "the PIN is not in the result");
        assert!(!login(&f, "ignored755224"));
        assert!(login(&f, &format!("{pin}287082")));
    }

    #[test]
    fn failing_pin_handler_refuses_enrollment() {
        let f = enroll_policy("otp_pin_random = 6\npinhandling = \"command /bin/false\"");
        assert!(matches!(f.otpd.init_token(&f.ctx(), &alice_spec(None)), Err(Error::PinHandler(_))));
        assert!(f.otpd.list_tokens(None, None).unwrap().is_empty());
    }

    #[test]
    fn label_and_issuer_from_policies() {
        let f = enroll_policy("tokenlabel = \"{user}@{realm}\"\ntokenissuer = \"ACME {realm}\"");
        let e = f.otpd.init_token(&f.ctx(), &alice_spec(None)).unwrap();
        let uri = e.otpauth.unwrap();
        assert!(uri.starts_with("otpauth://hotp/alice%40corp?"), "{}", uri.as_str());
        assert!(uri.contains("&issuer=ACME%20corp&"), "{}", uri.as_str());
        let mut spec = InitSpec::new(TokenType::Totp);
        spec.serial = Some("T1".into());
        let e = f.otpd.init_token(&f.ctx(), &spec).unwrap();
        assert!(e.otpauth.unwrap().starts_with("otpauth://totp/%40?"), "no user: the label is '@'");
    }

    #[test]
    fn option_type_mismatches_are_refused() {
        let f = Fixture::new();
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.timestep = Some(60);
        assert!(f.otpd.init_token(&f.ctx(), &spec).is_err());
        let mut spec = InitSpec::new(TokenType::Totp);
        spec.digits = Some(7);
        assert!(f.otpd.init_token(&f.ctx(), &spec).is_err());
        let mut spec = InitSpec::new(TokenType::Spass);
        spec.otpkey = Some(Zeroizing::new(RFC_KEY_HEX.into()));
        assert!(f.otpd.init_token(&f.ctx(), &spec).is_err());
        let mut spec = InitSpec::new(TokenType::Pw);
        spec.password = None;
        let e = f.otpd.init_token(&f.ctx(), &spec).unwrap();
        assert_eq!(e.password.unwrap().len(), PW_LENGTH);
    }
}

//! The validation flow (`authenticate`): the one entry point that the RADIUS
//! front, the PAM front and `otpd check` share, so all three answer the same
//! input the same way. It follows privacyIDEA's token-list algorithm: find
//! the user, try each of their tokens (split, PIN, OTP), then decide on the
//! first non-empty branch (valid, challenge-response, challenge-request,
//! pin-matching, invalid, skipped), and commit counters, failcounters,
//! challenges and the audit record in one transaction. `authenticate`
//! waits for that commit; `authenticate_then` hands the outcome to a
//! callback once the commit is durable, so that a thread serving many
//! logins never sleeps through an fsync.

use std::cell::RefCell;
use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use zeroize::Zeroizing;

use crate::Otpd;
use crate::crypto;
use crate::error::{Error, Result};
use crate::events::{EventRequest, EventResult, Position};
use crate::policy::{ActionValue, PolicyQuery, Scope};
use crate::realm::User;
use crate::store::{AuditRecord, Challenge, StoreWrite, TokenFilter};
use crate::token::{Consume, DEFAULT_OTPLEN, Token, TokenType};

/// Which front asked; recorded in the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Cli,
    Radius,
    Pam,
}

impl Front {
    pub fn name(self) -> &'static str {
        match self {
            Front::Cli => "cli",
            Front::Radius => "radius",
            Front::Pam => "pam",
        }
    }
}

/// One authentication attempt.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// `login`, `login@realm` or `realm\login`.
    pub user: String,
    /// A realm that wins over any realm in `user`.
    pub realm: Option<String>,
    /// The realm when neither `realm` nor `user` names one, instead of the
    /// default realm (the RADIUS client's realm).
    pub fallback_realm: Option<String>,
    pub password: Zeroizing<String>,
    /// The requesting client (RADIUS NAS, PAM_RHOST, `--client`).
    pub client: Option<IpAddr>,
    /// The transaction id of a challenge being answered (RADIUS `State`).
    pub state: Option<String>,
    pub front: Front,
    /// The PAM service or RADIUS client name, for the audit trail.
    pub service: Option<String>,
}

impl AuthRequest {
    pub fn new(user: impl Into<String>, password: impl Into<String>, front: Front) -> Self {
        AuthRequest {
            user: user.into(),
            realm: None,
            fallback_realm: None,
            password: Zeroizing::new(password.into()),
            client: None,
            state: None,
            front,
            service: None,
        }
    }
}

/// The verdict. `message` is privacyIDEA's detail message (e.g. `matching 1
/// tokens`, `wrong otp pin`): safe to show and log, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accept { message: String, serial: Option<String>, token_type: Option<TokenType> },
    Reject { message: String, serial: Option<String> },
    Challenge { state: String, message: String, serial: Option<String> },
}

impl Outcome {
    pub fn message(&self) -> &str {
        match self {
            Outcome::Accept { message, .. }
            | Outcome::Reject { message, .. }
            | Outcome::Challenge { message, .. } => message,
        }
    }

    pub fn serial(&self) -> Option<&str> {
        match self {
            Outcome::Accept { serial, .. }
            | Outcome::Reject { serial, .. }
            | Outcome::Challenge { serial, .. } => serial.as_deref(),
        }
    }

    pub fn is_accept(&self) -> bool {
        matches!(self, Outcome::Accept { .. })
    }

    fn reject(message: impl Into<String>, serial: Option<String>) -> Self {
        Outcome::Reject { message: message.into(), serial }
    }
}

/// Whether a user can log in with a token at all (PAM's `nullok` and
/// account management ask this before and besides authenticating).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenStatus {
    /// The user owns no token.
    NoToken,
    /// At least one token can authenticate now; the OTP lengths of the
    /// usable tokens (for fronts that must split a typed text themselves).
    Usable { otp_lengths: Vec<usize> },
    /// Every token is disabled, locked out, revoked or outside its validity
    /// period; the reasons, de-duplicated.
    Unusable { reasons: Vec<String> },
}

/// What one token made of the password.
enum Verdict {
    /// The request answers a challenge of this token; `consume` when the
    /// challenge is still live and the password is the token's OTP.
    ChallengeResponse { consume: Option<Consume> },
    /// The password is the PIN alone and a policy allows challenge-response.
    ChallengeRequest,
    /// Skipped before any check, with the reason (disabled, locked out, ...).
    Skipped(&'static str),
    /// Neither PIN nor OTP matched (or the password was too short to split).
    Invalid,
    /// PIN right, OTP wrong; `previous` when the OTP is the last one accepted.
    PinMatch { previous: bool },
    /// PIN and OTP right: this counter state is to be committed.
    Valid(Consume),
}

/// What `authenticate_then` calls with the outcome, once it is committed.
pub type AuthDone = Box<dyn FnOnce(Result<Outcome>) + Send>;

/// What a decided login leaves to do: append its audit record and commit,
/// in the decision's transaction when it has one.
struct Finish<'a> {
    tx: Option<Box<dyn StoreWrite + 'a>>,
    audit: AuditRecord,
    outcome: Outcome,
}

impl<'a> Finish<'a> {
    fn new(tx: Option<Box<dyn StoreWrite + 'a>>, audit: AuditRecord, outcome: Outcome) -> Self {
        Finish { tx, audit, outcome }
    }
}

impl Otpd {
    /// Authenticates a user with PIN+OTP. `Err` only for faults (store,
    /// userstore, key); every "no" is an `Outcome::Reject` with its reason.
    pub fn authenticate(&self, req: &AuthRequest) -> Result<Outcome> {
        if !self.events.listens("validate_check") {
            return self.finish(self.verdict(req)?);
        }
        let user = self.realms.resolve(&req.user, req.realm.as_deref(), req.fallback_realm.as_deref()).ok();
        let mut event = EventRequest {
            event: "validate_check",
            user,
            client: req.client,
            front: req.front,
            serial: None,
            result: None,
        };
        self.fire(Position::Pre, &event);
        let outcome = self.finish(self.verdict(req)?)?;
        event.result = Some(EventResult {
            value: outcome.is_accept(),
            status: true,
            authentication: match &outcome {
                Outcome::Accept { .. } => "ACCEPT",
                Outcome::Reject { .. } => "REJECT",
                Outcome::Challenge { .. } => "CHALLENGE",
            },
            message: outcome.message().to_owned(),
            serial: outcome.serial().map(str::to_owned),
        });
        // otpd deviates: post handlers see the final outcome, autoassignment included.
        self.fire(Position::Post, &event);
        Ok(outcome)
    }

    /// `authenticate` without waiting for the commit: `done` gets the
    /// outcome once it is durable (or the error), on this thread or on one
    /// of the store's (see `StoreWrite::commit_then`). The caller must `flush` when it has no
    /// more logins at hand. With `validate_check` event handlers, whose
    /// post entries must see a committed outcome, it waits as
    /// `authenticate` does and calls `done` before returning.
    pub fn authenticate_then(&self, req: &AuthRequest, done: AuthDone) {
        if self.events.listens("validate_check") {
            return done(self.authenticate(req));
        }
        let (tx, outcome) = match self.verdict(req).and_then(|finish| self.audited(finish)) {
            Ok(audited) => audited,
            Err(e) => return done(Err(e)),
        };
        tx.commit_then(Box::new(move |committed| done(committed.map(|()| outcome).map_err(Error::from))));
    }

    /// Commits the logins `authenticate_then` left waiting for their group.
    pub fn flush(&self) {
        self.store.flush();
    }

    /// The verdict on a request, without event handlers, and what is left
    /// to commit.
    fn verdict(&self, req: &AuthRequest) -> Result<Finish<'_>> {
        let now = self.clock.now();
        let mut audit = AuditRecord {
            time: now,
            actor: match &req.service {
                Some(s) => format!("{}:{s}", req.front.name()),
                None => req.front.name().to_owned(),
            },
            action: "validate_check".into(),
            front: req.front.name().into(),
            serial: None,
            user: Some(req.user.clone()),
            realm: req.realm.clone(),
            client: req.client.map(|c| c.to_string()),
            success: false,
            message: String::new(),
        };
        let user = match self.realms.resolve(&req.user, req.realm.as_deref(), req.fallback_realm.as_deref()) {
            Ok(u) => u,
            Err(Error::UnknownUser { login, realm }) => {
                let q = PolicyQuery {
                    realm: Some(&realm),
                    user: Some(&login),
                    client: req.client,
                    ..Default::default()
                };
                let outcome = match self.policies.flag(Scope::Authentication, "passOnNoUser", &q) {
                    Some(policy) => Outcome::Accept {
                        message: format!("user does not exist, accepted due to '{policy}'"),
                        serial: None,
                        token_type: None,
                    },
                    None => {
                        self.unknown_user_pin_check(&login, &realm, &req.password, &q);
                        Outcome::reject(format!("User {login}@{realm} does not exist."), None)
                    }
                };
                audit.user = Some(login);
                audit.realm = Some(realm);
                return Ok(Finish::new(None, audit, outcome));
            }
            Err(Error::UnknownRealm(realm)) => {
                return Ok(Finish::new(
                    None,
                    audit,
                    Outcome::reject(format!("Realm {realm} does not exist."), None),
                ));
            }
            Err(Error::NoDefaultRealm) => {
                return Ok(Finish::new(
                    None,
                    audit,
                    Outcome::reject(Error::NoDefaultRealm.to_string(), None),
                ));
            }
            Err(e) => return Err(e),
        };
        audit.user = Some(user.login.clone());
        audit.realm = Some(user.realm.clone());
        let query = PolicyQuery {
            realm: Some(&user.realm),
            resolver: Some(&user.resolver),
            user: Some(&user.login),
            client: req.client,
            realm_only: false,
        };
        let pins = match self.policies.unique_text(Scope::Authentication, "otppin", &query) {
            Ok(mode) => PinCheck::new(self, &user, mode.as_deref()),
            Err(e) => return Ok(Finish::new(None, audit, Outcome::reject(e.to_string(), None))),
        };

        let mut tokens = self.user_tokens(&user)?;
        if tokens.is_empty() {
            let outcome = self.without_token(&user, req, &query, &pins, now)?;
            return Ok(Finish::new(None, audit, outcome));
        }
        // failcounter_clear_timeout (semantics.md 2.3 step 4.1): a token
        // locked out long enough is cleared before it is tried, whatever
        // the password; the clear is committed with the decision.
        let mut cleared = Vec::new();
        for token in &mut tokens {
            if let Some(stamp) = token.failcounter_exceeded
                && token.failcount_clears_at(now, self.config.failcounter_clear_timeout)
            {
                cleared.push((token.id, stamp));
                token.failcount = 0;
                token.failcounter_exceeded = None;
            }
        }
        // Type order hotp < pw < spass < totp, then creation order.
        tokens.sort_by_key(|t| (t.token_type.weight(), t.id));
        let challenge_types = self.policies.union(Scope::Authentication, "challenge_response", &query);
        let challenges = match &req.state {
            Some(state) => self.store.read()?.challenges(state)?,
            None => Vec::new(),
        };
        let mut verdicts = Vec::with_capacity(tokens.len());
        for token in &tokens {
            verdicts.push(self.try_token(token, req, now, &pins, &challenge_types, &challenges)?);
        }
        let challenge_text = match self.policies.unique_text(Scope::Authentication, "challenge_text", &query)
        {
            Ok(text) => text.unwrap_or_else(|| DEFAULT_CHALLENGE_TEXT.to_owned()),
            Err(e) => return Ok(Finish::new(None, audit, Outcome::reject(e.to_string(), None))),
        };

        let mut tx = self.store.write()?;
        let decision = Decision {
            now,
            state: req.state.as_deref(),
            challenge_text: &challenge_text,
            challenge_validity: SignedDuration::from_secs(self.config.challenge_validity_time.into()),
            reset_all: self.policies.flag(Scope::Authentication, "reset_all_user_tokens", &query).is_some(),
            cleared: &cleared,
        };
        let outcome = decision.decide(tx.as_mut(), &tokens, &verdicts)?;
        Ok(Finish::new(Some(tx), audit, outcome))
    }

    /// A user without any token: passOnNoToken, then passthru (the whole
    /// password against the userstore), then autoassignment; else the
    /// plain "no tokens" reject (semantics.md 2.2 steps 2, 4, 5 and 8).
    fn without_token(
        &self,
        user: &User,
        req: &AuthRequest,
        query: &PolicyQuery<'_>,
        pins: &PinCheck<'_>,
        now: Timestamp,
    ) -> Result<Outcome> {
        if let Some(policy) = self.policies.flag(Scope::Authentication, "passOnNoToken", query) {
            return Ok(Outcome::Accept {
                message: format!("user has no token, accepted due to '{policy}'"),
                serial: None,
                token_type: None,
            });
        }
        match self.policies.unique(Scope::Authentication, "passthru", query) {
            Err(_) => return Ok(Outcome::reject("Contradicting passthru policies.", None)),
            Ok(Some((value, policy))) if value != ActionValue::Bool(false) => {
                if pins.userstore_password(&req.password)? {
                    return Ok(Outcome::Accept {
                        message: format!("against userstore due to '{policy}'"),
                        serial: None,
                        token_type: None,
                    });
                }
            }
            Ok(_) => {}
        }
        if let Some(outcome) = self.autoassign(user, req, query, pins, now)? {
            return Ok(outcome);
        }
        Ok(Outcome::reject("The user has no tokens assigned", None))
    }

    /// The state of `user`'s tokens (`user` may carry `@realm`; `realm`
    /// wins). A user unknown to the realm's resolvers owns no token.
    pub fn token_status(&self, user: &str, realm: Option<&str>) -> Result<TokenStatus> {
        let (login, realm) = self.realms.locate(user, realm, None)?;
        let tokens = self
            .store
            .read()?
            .tokens(&TokenFilter { owner: Some((login.to_owned(), realm)), ..Default::default() })?;
        if tokens.is_empty() {
            return Ok(TokenStatus::NoToken);
        }
        let now = self.clock.now();
        let mut otp_lengths = Vec::new();
        let mut reasons = Vec::new();
        for mut t in tokens {
            if t.failcount_clears_at(now, self.config.failcounter_clear_timeout) {
                t.failcount = 0; // the next attempt clears it
            }
            match t.unusable_reason(now) {
                None if !otp_lengths.contains(&(t.otplen as usize)) => otp_lengths.push(t.otplen as usize),
                None => {}
                Some(r) if !reasons.iter().any(|known| known == r) => reasons.push(r.to_owned()),
                Some(_) => {}
            }
        }
        Ok(if otp_lengths.is_empty() {
            TokenStatus::Unusable { reasons }
        } else {
            TokenStatus::Usable { otp_lengths }
        })
    }

    /// For a user that does not exist: the Argon2id PIN verification a known
    /// user's token would cost, against a hash that matches nothing, so that
    /// a reject's time does not tell whether the user exists (issue 8 item
    /// 6). Like a token PIN it is only checked when the password is longer
    /// than a default OTP (else no PIN is left to check) and not with
    /// `otppin=none`; and it goes through the PIN-verdict cache, keyed by
    /// user and password, so a repeated guess is as fast as for a known user.
    fn unknown_user_pin_check(&self, login: &str, realm: &str, password: &str, q: &PolicyQuery<'_>) {
        if password.chars().count() <= DEFAULT_OTPLEN as usize {
            return;
        }
        if let Ok(Some(mode)) = self.policies.unique_text(Scope::Authentication, "otppin", q)
            && mode == "none"
        {
            return;
        }
        let phc = self.dummy_pin.get_or_init(|| {
            crypto::hash_pin("otpd: no such user", &self.config.pin_hash).unwrap_or_default()
        });
        let given = Zeroizing::new(format!("{login}@{realm}\n{password}"));
        let _ = self.pins.verify(&given, phc);
    }

    fn user_tokens(&self, user: &User) -> Result<Vec<Token>> {
        let filter =
            TokenFilter { owner: Some((user.login.clone(), user.realm.clone())), ..Default::default() };
        Ok(self.store.read_tokens(&filter)?)
    }

    /// Splits, checks the PIN, checks the OTP (or the challenge answer).
    /// Writes nothing.
    fn try_token(
        &self,
        token: &Token,
        req: &AuthRequest,
        now: Timestamp,
        pins: &PinCheck<'_>,
        challenge_types: &[String],
        challenges: &[Challenge],
    ) -> Result<Verdict> {
        if let Some(reason) = token.unusable_reason(now) {
            return Ok(Verdict::Skipped(reason));
        }
        if req.state.is_some() {
            // An expired challenge still counts while its row exists; it
            // just never matches.
            let Some(challenge) = challenges.iter().find(|c| c.serial == token.serial) else {
                return Ok(Verdict::Invalid);
            };
            let consume = if challenge.expires >= now {
                let secret = token.open_secret(&self.key)?;
                token.check_otp(&secret, &req.password, now)
            } else {
                None
            };
            return Ok(Verdict::ChallengeResponse { consume });
        }
        if token.token_type != TokenType::Spass
            && challenge_types.iter().any(|t| t == token.token_type.name())
            && pins.matches(token, &req.password)?
        {
            return Ok(Verdict::ChallengeRequest);
        }
        let Some((pin, otp)) = token.split_password(&req.password, self.config.prepend_pin) else {
            return Ok(Verdict::Invalid);
        };
        if !pins.matches(token, pin)? {
            return Ok(Verdict::Invalid);
        }
        let secret = token.open_secret(&self.key)?;
        Ok(match token.check_otp(&secret, otp, now) {
            Some(consume) => Verdict::Valid(consume),
            None => Verdict::PinMatch { previous: token.is_previous_otp(&secret, otp) },
        })
    }

    /// Appends the audit record for the outcome and commits (one fsync for
    /// the counters, failcounters and the audit record together).
    fn finish(&self, finish: Finish<'_>) -> Result<Outcome> {
        let (tx, outcome) = self.audited(finish)?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Appends the audit record, completed with the outcome, to the
    /// decision's transaction (or a new one): the transaction to commit.
    fn audited<'a>(&'a self, finish: Finish<'a>) -> Result<(Box<dyn StoreWrite + 'a>, Outcome)> {
        let Finish { tx, mut audit, outcome } = finish;
        let mut tx = match tx {
            Some(tx) => tx,
            None => self.store.write()?,
        };
        audit.success = outcome.is_accept();
        audit.serial = outcome.serial().map(str::to_owned);
        audit.message = outcome.message().to_owned();
        tx.append_audit(&audit)?;
        Ok((tx, outcome))
    }
}

/// How PINs are checked for one request (the `otppin` policy): against the
/// token's PIN, the user's userstore password (checked once per distinct
/// value: password hashing is slow), or as empty.
pub(crate) struct PinCheck<'a> {
    otpd: &'a Otpd,
    user: &'a User,
    mode: OtpPin,
    checked: RefCell<Vec<(Zeroizing<String>, bool)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OtpPin {
    TokenPin,
    UserStore,
    None,
}

impl<'a> PinCheck<'a> {
    fn new(otpd: &'a Otpd, user: &'a User, mode: Option<&str>) -> Self {
        let mode = match mode {
            Some("userstore") => OtpPin::UserStore,
            Some("none") => OtpPin::None,
            _ => OtpPin::TokenPin,
        };
        PinCheck { otpd, user, mode, checked: RefCell::new(Vec::new()) }
    }

    fn matches(&self, token: &Token, given: &str) -> Result<bool> {
        match self.mode {
            OtpPin::TokenPin => Ok(token.pin.matches(given, &self.otpd.key, &self.otpd.pins)),
            OtpPin::UserStore => self.userstore_password(given),
            OtpPin::None => Ok(given.is_empty()),
        }
    }

    /// Whether `password` is the user's userstore password.
    pub(crate) fn userstore_password(&self, password: &str) -> Result<bool> {
        if let Some((_, ok)) = self.checked.borrow().iter().find(|(p, _)| p.as_str() == password) {
            return Ok(*ok);
        }
        let ok = self.otpd.realms.check_password(self.user, password)?;
        self.checked.borrow_mut().push((Zeroizing::new(password.to_owned()), ok));
        Ok(ok)
    }
}

/// The message of a challenge when no `challenge_text` policy sets one.
pub const DEFAULT_CHALLENGE_TEXT: &str = "please enter otp: ";

/// What the decision needs besides the verdicts.
struct Decision<'a> {
    now: Timestamp,
    state: Option<&'a str>,
    challenge_text: &'a str,
    challenge_validity: SignedDuration,
    /// `reset_all_user_tokens`: a success clears every tried token's failcounter.
    reset_all: bool,
    /// Tokens whose failcounter the clear timeout clears, with the
    /// `failcounter_exceeded` stamp they were read with.
    cleared: &'a [(i64, Timestamp)],
}

/// A new transaction id: 20 random digits (privacyIDEA's format).
fn new_transaction_id() -> Result<String> {
    Ok(crypto::random_string(b"0123456789", 20)?)
}

impl Decision<'_> {
    /// privacyIDEA's decision over the per-token verdicts, applied inside the
    /// write transaction: the first non-empty branch of valid,
    /// challenge-response, challenge-request, pin-matching, invalid, skipped wins.
    fn decide(&self, tx: &mut dyn StoreWrite, tokens: &[Token], verdicts: &[Verdict]) -> Result<Outcome> {
        let now = self.now;
        for (id, exceeded) in self.cleared {
            // False when another request cleared it first: then that one's
            // failure (if any) counts, and so will this one's.
            tx.clear_failcount_exceeded(*id, *exceeded)?;
        }
        let mut accepted: Vec<&Token> = Vec::new();
        let mut responses: Vec<(&Token, Option<Consume>)> = Vec::new();
        let mut requests: Vec<&Token> = Vec::new();
        let mut pin_matching: Vec<(&Token, bool)> = Vec::new();
        let mut invalid: Vec<&Token> = Vec::new();
        let mut skipped: Vec<&'static str> = Vec::new();
        for (token, verdict) in tokens.iter().zip(verdicts) {
            match verdict {
                // The compare-and-set fails when another request consumed this
                // OTP (or locked/disabled the token) since we read it: then the
                // OTP is, for this request, a replay.
                Verdict::Valid(consume) => {
                    if tx.consume(token.id, consume)? {
                        accepted.push(token);
                    } else {
                        pin_matching.push((token, true));
                    }
                }
                Verdict::ChallengeResponse { consume } => responses.push((token, *consume)),
                Verdict::ChallengeRequest => requests.push(token),
                Verdict::PinMatch { previous } => pin_matching.push((token, *previous)),
                Verdict::Invalid => invalid.push(token),
                Verdict::Skipped(reason) => {
                    if !skipped.contains(reason) {
                        skipped.push(reason);
                    }
                }
            }
        }
        if !accepted.is_empty() {
            if self.reset_all {
                for token in tokens {
                    tx.reset_failcount(token.id)?;
                }
            }
            let single = (accepted.len() == 1).then(|| accepted[0]);
            return Ok(Outcome::Accept {
                message: format!("matching {} tokens", accepted.len()),
                serial: single.map(|t| t.serial.clone()),
                token_type: single.map(|t| t.token_type),
            });
        }
        if !responses.is_empty() {
            return self.answer_challenge(tx, &responses);
        }
        if !requests.is_empty() {
            return self.create_challenge(tx, &requests);
        }
        if !pin_matching.is_empty() {
            for (token, _) in &pin_matching {
                tx.record_failure(token.id, now)?;
            }
            let (serial, message) = match pin_matching.as_slice() {
                [(token, true)] => (Some(token.serial.clone()), "wrong otp value. previous otp used again"),
                [(token, false)] => (Some(token.serial.clone()), "wrong otp value"),
                _ => (None, "wrong otp value"),
            };
            return Ok(Outcome::reject(message, serial));
        }
        if !invalid.is_empty() {
            // privacyIDEA's IncFailCountOnFalsePin (default on).
            for token in &invalid {
                tx.record_failure(token.id, now)?;
            }
            return Ok(Outcome::reject("wrong otp pin", None));
        }
        if !skipped.is_empty() {
            return Ok(Outcome::reject(skipped.join(", "), None));
        }
        Ok(Outcome::reject("No suitable token found for authentication.", None))
    }

    /// The first token whose OTP answers the challenge wins; the challenge
    /// is deleted with the acceptance, so it can be answered once only.
    fn answer_challenge(
        &self,
        tx: &mut dyn StoreWrite,
        responses: &[(&Token, Option<Consume>)],
    ) -> Result<Outcome> {
        let state = self.state.unwrap_or_default();
        for (token, consume) in responses {
            let Some(consume) = consume else { continue };
            // Zero rows: another request answered this challenge first.
            if tx.delete_challenges(state)? == 0 {
                break;
            }
            if tx.consume(token.id, consume)? {
                return Ok(Outcome::Accept {
                    message: "Found matching challenge".into(),
                    serial: Some(token.serial.clone()),
                    token_type: Some(token.token_type),
                });
            }
        }
        for (token, _) in responses {
            tx.record_failure(token.id, self.now)?;
            tx.delete_expired_challenges(Some(&token.serial), self.now)?;
        }
        Ok(match responses {
            [(token, _)] => {
                Outcome::reject("Response did not match the challenge.", Some(token.serial.clone()))
            }
            _ => Outcome::reject(format!("Response did not match for {} tokens.", responses.len()), None),
        })
    }

    /// One challenge per token, all under one new transaction id.
    fn create_challenge(&self, tx: &mut dyn StoreWrite, requests: &[&Token]) -> Result<Outcome> {
        let transaction_id = new_transaction_id()?;
        for token in requests {
            tx.delete_expired_challenges(Some(&token.serial), self.now)?;
            tx.insert_challenge(&Challenge {
                transaction_id: transaction_id.clone(),
                serial: token.serial.clone(),
                created: self.now,
                expires: self.now.saturating_add(self.challenge_validity).unwrap_or(self.now),
            })?;
        }
        Ok(Outcome::Challenge {
            state: transaction_id,
            message: self.challenge_text.to_owned(),
            serial: (requests.len() == 1).then(|| requests[0].serial.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Fixture, RFC_KEY_HEX};
    use crate::{InitSpec, TokenChanges};

    fn check(f: &Fixture, password: &str) -> Outcome {
        f.otpd.authenticate(&AuthRequest::new("alice", password, Front::Cli)).unwrap()
    }

    fn token(f: &Fixture, serial: &str) -> Token {
        f.otpd.token(serial).unwrap()
    }

    fn hotp_for_alice(f: &Fixture, serial: &str, pin: &str) {
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.serial = Some(serial.into());
        spec.otpkey = Some(Zeroizing::new(RFC_KEY_HEX.into()));
        spec.user = Some("alice".into());
        spec.pin = Some(Zeroizing::new(pin.into()));
        f.otpd.init_token(&f.ctx(), &spec).unwrap();
    }

    #[test]
    fn a_printed_request_never_shows_its_password() {
        // The password is `Zeroizing`, whose Debug shows nothing of it.
        let printed = format!("{:?}", AuthRequest::new("alice", "1234969429", Front::Radius));
        assert!(printed.contains("alice") && !printed.contains("969429"), "{printed}");
    }

    #[test]
    fn hotp_window_and_replay_sequence_of_the_spec() {
        let f = Fixture::new();
        hotp_for_alice(&f, "H1", "1234");
        let steps: [(&str, &str, u64, u32); 7] = [
            ("1234403154", "wrong otp value", 0, 1),
            ("1234969429", "matching 1 tokens", 4, 0),
            ("1234969429", "wrong otp value. previous otp used again", 4, 1),
            ("1234755224", "wrong otp value", 4, 2),
            ("1234338314", "matching 1 tokens", 5, 0),
            ("9999338314", "wrong otp pin", 5, 1),
            ("1234", "wrong otp pin", 5, 2),
        ];
        for (password, message, count, failcount) in steps {
            let outcome = check(&f, password);
            assert_eq!(outcome.message(), message, "{password}");
            let t = token(&f, "H1");
            assert_eq!((t.count, t.failcount), (count, failcount), "{password}");
        }
    }

    #[test]
    fn last_value_of_window_accepted() {
        let f = Fixture::new();
        hotp_for_alice(&f, "H1", "1234");
        assert!(check(&f, "1234520489").is_accept());
        assert_eq!(token(&f, "H1").count, 10);
    }

    #[test]
    fn user_without_token_and_unknown_user() {
        let f = Fixture::new();
        assert_eq!(check(&f, "x").message(), "The user has no tokens assigned");
        let out = f.otpd.authenticate(&AuthRequest::new("mallory", "x", Front::Cli)).unwrap();
        assert_eq!(out.message(), "User mallory@corp does not exist.");
    }

    #[test]
    fn failcounter_lockout_of_the_spec() {
        let f = Fixture::new();
        hotp_for_alice(&f, "H1", "1234");
        let changes = TokenChanges { max_fail: Some(3), ..Default::default() };
        f.otpd.set_token(&f.ctx(), "H1", &changes).unwrap();
        for _ in 0..3 {
            assert_eq!(check(&f, "1234000000").message(), "wrong otp value");
        }
        let t = token(&f, "H1");
        assert_eq!(t.failcount, 3);
        assert!(t.failcounter_exceeded.is_some());
        let out = check(&f, "1234755224");
        assert_eq!(out.message(), "Failcounter exceeded");
        assert_eq!(token(&f, "H1").count, 0, "a locked token consumes nothing");
        f.otpd.reset_failcounter(&f.ctx(), "H1").unwrap();
        assert!(check(&f, "1234755224").is_accept());
    }

    /// H1 of alice (PIN 1234) with maxfail 3, locked out by three wrong
    /// OTPs at 1_700_000_000 (22:13:20; stamped minute 22:13), under a
    /// `failcounter_clear_timeout` of `minutes`.
    fn locked_out(minutes: u32) -> Fixture {
        let f =
            Fixture::with_top_config(1_700_000_000, &format!("failcounter_clear_timeout = {minutes}\n"), "");
        hotp_for_alice(&f, "H1", "1234");
        let changes = TokenChanges { max_fail: Some(3), ..Default::default() };
        f.otpd.set_token(&f.ctx(), "H1", &changes).unwrap();
        for _ in 0..3 {
            check(&f, "1234000000");
        }
        let t = token(&f, "H1");
        assert_eq!(
            (t.failcount, t.failcounter_exceeded),
            (3, Some(Timestamp::from_second(1_700_000_000).unwrap()))
        );
        f
    }

    fn at(f: &Fixture, unix: i64) {
        f.clock.set(Timestamp::from_second(unix).unwrap());
    }

    #[test]
    fn clear_timeout_of_the_spec_lets_the_right_otp_in_after_the_timeout() {
        let f = locked_out(5);
        // The stamp counts by its minute (22:13): 22:18:00 is not later than
        // 22:13 + 5 minutes, 22:18:01 is.
        at(&f, 1_700_000_280);
        assert_eq!(check(&f, "1234755224").message(), "Failcounter exceeded");
        assert_eq!((token(&f, "H1").failcount, token(&f, "H1").count), (3, 0), "nothing consumed");
        at(&f, 1_700_000_281);
        assert!(check(&f, "1234755224").is_accept());
        let t = token(&f, "H1");
        assert_eq!((t.failcount, t.failcounter_exceeded, t.count), (0, None, 1));
    }

    #[test]
    fn clear_timeout_clears_on_any_attempt_and_the_failure_counts_again() {
        let f = locked_out(5);
        at(&f, 1_700_000_000 + 3600);
        // privacyIDEA clears before trying the token (semantics.md 2.3 step
        // 4.1): a wrong OTP is then checked and counted like any other.
        assert_eq!(check(&f, "1234000000").message(), "wrong otp value");
        let t = token(&f, "H1");
        assert_eq!((t.failcount, t.failcounter_exceeded), (1, None));
        // Two more failures lock it again, with a new stamp and a new timeout.
        check(&f, "9999000000");
        check(&f, "1234000000");
        let t = token(&f, "H1");
        assert_eq!(t.failcount, 3);
        assert_eq!(t.failcounter_exceeded, Some(Timestamp::from_second(1_700_003_600).unwrap()));
        assert_eq!(check(&f, "1234755224").message(), "Failcounter exceeded");
        at(&f, 1_700_003_600 + 301);
        assert!(check(&f, "1234755224").is_accept());
    }

    #[test]
    fn without_clear_timeout_the_lockout_holds() {
        let f = locked_out(0);
        at(&f, 1_700_000_000 + 86_400 * 365);
        assert_eq!(check(&f, "1234755224").message(), "Failcounter exceeded");
        assert_eq!(token(&f, "H1").count, 0);
        assert_eq!(
            f.otpd.token_status("alice", None).unwrap(),
            TokenStatus::Unusable { reasons: vec!["Failcounter exceeded".to_owned()] }
        );
    }

    #[test]
    fn clear_timeout_needs_the_stamp_and_a_failcounter_at_maxfail() {
        let f = locked_out(5);
        at(&f, 1_700_000_000 + 3600);
        assert_eq!(
            f.otpd.token_status("alice", None).unwrap(),
            TokenStatus::Usable { otp_lengths: vec![6] },
            "the next attempt clears it"
        );
        // A failcounter set to maxfail without a stamp (`set failcounter`)
        // never clears; nor one above maxfail (`change failcounter`).
        for (failcount, stamp) in [(3, None), (4, Some(Timestamp::from_second(1_700_000_000).unwrap()))] {
            let mut t = token(&f, "H1");
            (t.failcount, t.failcounter_exceeded) = (failcount, stamp);
            let mut tx = f.otpd.store.write().unwrap();
            tx.update_token(&t).unwrap();
            tx.commit().unwrap();
            assert_eq!(check(&f, "1234755224").message(), "Failcounter exceeded");
            assert_eq!(token(&f, "H1").failcount, failcount);
        }
    }

    #[test]
    fn clear_timeout_clears_once_when_requests_race() {
        let f = locked_out(5);
        let read = token(&f, "H1");
        let stamp = read.failcounter_exceeded.unwrap();
        let mut tx = f.otpd.store.write().unwrap();
        assert!(tx.clear_failcount_exceeded(read.id, stamp).unwrap());
        tx.record_failure(read.id, stamp).unwrap();
        // A second request read the same locked-out row: its clear finds
        // the failcounter no longer at maxfail and changes nothing.
        assert!(!tx.clear_failcount_exceeded(read.id, stamp).unwrap());
        tx.commit().unwrap();
        assert_eq!(token(&f, "H1").failcount, 1);
    }

    /// Issue 8 item 6: a reject for a user that does not exist costs about
    /// what a known user's wrong PIN costs (one Argon2id verification), so
    /// its time does not reveal whether the user exists. Fresh PINs each
    /// time (a repeated one is answered from the PIN-verdict cache), known
    /// and unknown interleaved so that a loaded machine slows both alike;
    /// medians of 15 each must be within a factor of 3 of each other
    /// (without the dummy verification the unknown user answers more than
    /// ten times faster).
    #[test]
    fn unknown_user_reject_costs_about_a_wrong_pin() {
        let f = Fixture::new();
        hotp_for_alice(&f, "H1", "1234");
        let changes = TokenChanges { max_fail: Some(1000), ..Default::default() };
        f.otpd.set_token(&f.ctx(), "H1", &changes).unwrap();
        let time = |user: &str, password: &str| {
            let start = std::time::Instant::now();
            let out = f.otpd.authenticate(&AuthRequest::new(user, password, Front::Cli)).unwrap();
            assert!(!out.is_accept());
            start.elapsed()
        };
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for i in 0..15 {
            known.push(time("alice", &format!("k{i:05}000000")));
            unknown.push(time("mallory", &format!("u{i:05}000000")));
        }
        assert_eq!(token(&f, "H1").failcount, 15, "every attempt was a wrong PIN");
        let median = |v: &mut Vec<std::time::Duration>| {
            v.sort();
            v[v.len() / 2].as_secs_f64()
        };
        let (k, u) = (median(&mut known), median(&mut unknown));
        assert!(k / u < 3.0 && u / k < 3.0, "median reject: known user {k:.4}s, unknown user {u:.4}s");
    }

    #[test]
    fn two_tokens_wrong_pin_raise_both_failcounters() {
        let f = Fixture::new();
        hotp_for_alice(&f, "H1", "1234");
        hotp_for_alice(&f, "H2", "5678");
        assert_eq!(check(&f, "0000755224").message(), "wrong otp pin");
        assert_eq!(token(&f, "H1").failcount, 1);
        assert_eq!(token(&f, "H2").failcount, 1);
        // The right PIN of one token decides: only that token is tried for the OTP.
        assert!(check(&f, "5678755224").is_accept());
        assert_eq!(token(&f, "H2").failcount, 0);
    }

    #[test]
    fn disabled_and_expired_tokens_are_skipped() {
        let f = Fixture::new();
        hotp_for_alice(&f, "H1", "1234");
        f.otpd.set_active(&f.ctx(), "H1", false).unwrap();
        assert_eq!(check(&f, "1234755224").message(), "Token is disabled");
        f.otpd.set_active(&f.ctx(), "H1", true).unwrap();
        let past = f.otpd.now() - jiff::SignedDuration::from_hours(1);
        let changes = TokenChanges { validity_end: Some(Some(past)), ..Default::default() };
        f.otpd.set_token(&f.ctx(), "H1", &changes).unwrap();
        assert_eq!(check(&f, "1234755224").message(), "Outside validity period");
        assert_eq!(token(&f, "H1").count, 0);
    }

    #[test]
    fn totp_sequence_of_the_spec() {
        let f = Fixture::at(1111111109);
        let mut spec = InitSpec::new(TokenType::Totp);
        spec.serial = Some("T1".into());
        spec.otpkey = Some(Zeroizing::new(RFC_KEY_HEX.into()));
        spec.user = Some("alice".into());
        f.otpd.init_token(&f.ctx(), &spec).unwrap();
        assert!(check(&f, "081804").is_accept());
        let t = token(&f, "T1");
        assert_eq!((t.count, t.time_shift), (37037036, -29.0));
        assert_eq!(check(&f, "081804").message(), "wrong otp value. previous otp used again");
        assert!(!check(&f, "731029").is_accept());
        f.clock.set(Timestamp::from_second(1111111139).unwrap());
        assert!(check(&f, "050471").is_accept());
        assert_eq!(token(&f, "T1").count, 37037037);
    }

    #[test]
    fn spass_and_pw_tokens() {
        let f = Fixture::new();
        let mut spec = InitSpec::new(TokenType::Spass);
        spec.user = Some("alice".into());
        spec.pin = Some(Zeroizing::new("static-secret".into()));
        f.otpd.init_token(&f.ctx(), &spec).unwrap();
        assert!(check(&f, "static-secret").is_accept());
        assert!(!check(&f, "static-secreT").is_accept());

        let f = Fixture::new();
        let mut spec = InitSpec::new(TokenType::Pw);
        spec.user = Some("alice".into());
        spec.pin = Some(Zeroizing::new("1234".into()));
        spec.password = Some(Zeroizing::new("Xk9mQ2rTb7wZcH4n".into()));
        f.otpd.init_token(&f.ctx(), &spec).unwrap();
        assert!(check(&f, "1234Xk9mQ2rTb7wZcH4n").is_accept());
        assert!(check(&f, "1234Xk9mQ2rTb7wZcH4n").is_accept(), "a pw token is not one-time");
        assert_eq!(check(&f, "1234Xk9mQ2rTb7wZcH4x").message(), "wrong otp value");
    }

    const CR_POLICY: &str = "[[policies]]\nname = \"cr\"\nscope = \"authentication\"\n\
                             [policies.actions]\nchallenge_response = \"HOTP totp\"\n";

    fn answer(f: &Fixture, state: &str, password: &str) -> Outcome {
        let mut req = AuthRequest::new("alice", password, Front::Radius);
        req.state = Some(state.into());
        f.otpd.authenticate(&req).unwrap()
    }

    fn challenge(f: &Fixture, password: &str) -> String {
        match check(f, password) {
            Outcome::Challenge { state, message, serial } => {
                assert_eq!(message, DEFAULT_CHALLENGE_TEXT);
                assert_eq!(serial.as_deref(), Some("H1"));
                assert_eq!(state.len(), 20);
                assert!(state.bytes().all(|b| b.is_ascii_digit()));
                state
            }
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    #[test]
    fn challenge_response_flow_is_single_use() {
        let f = Fixture::with_config(1_700_000_000, CR_POLICY);
        hotp_for_alice(&f, "H1", "1234");
        let state = challenge(&f, "1234");
        assert_eq!(answer(&f, &state, "755224").message(), "Found matching challenge");
        assert_eq!(token(&f, "H1").count, 1);
        // The challenge is gone: the same state with the next OTP fails.
        assert_eq!(answer(&f, &state, "287082").message(), "wrong otp pin");
        // PIN+OTP still works without a challenge.
        assert!(check(&f, "1234287082").is_accept());
    }

    #[test]
    fn wrong_and_expired_challenge_answers() {
        let f = Fixture::with_config(1_700_000_000, CR_POLICY);
        hotp_for_alice(&f, "H1", "1234");
        let state = challenge(&f, "1234");
        assert_eq!(answer(&f, &state, "000000").message(), "Response did not match the challenge.");
        assert_eq!(token(&f, "H1").failcount, 1);
        assert_eq!(answer(&f, "99999999999999999999", "755224").message(), "wrong otp pin");
        let state = challenge(&f, "1234");
        f.clock.set(Timestamp::from_second(1_700_000_000 + 121).unwrap());
        assert_eq!(answer(&f, &state, "755224").message(), "Response did not match the challenge.");
        assert_eq!(token(&f, "H1").count, 0, "an expired challenge consumes nothing");
    }

    #[test]
    fn no_challenge_without_policy_or_for_other_types() {
        let f = Fixture::new();
        hotp_for_alice(&f, "H1", "1234");
        assert_eq!(check(&f, "1234").message(), "wrong otp pin");
        let policy = CR_POLICY.replace("HOTP totp", "totp");
        let f = Fixture::with_config(1_700_000_000, &policy);
        hotp_for_alice(&f, "H1", "1234");
        assert_eq!(check(&f, "1234").message(), "wrong otp pin");
    }

    fn auth_policy(actions: &str) -> Fixture {
        Fixture::with_config(
            1_700_000_000,
            &format!(
                "[[policies]]\nname = \"auth\"\nscope = \"authentication\"\n[policies.actions]\n{actions}\n"
            ),
        )
    }

    #[test]
    fn otppin_userstore_and_none() {
        let f = auth_policy("otppin = \"userstore\"");
        hotp_for_alice(&f, "H1", "1234");
        assert_eq!(check(&f, "1234755224").message(), "wrong otp pin", "the token PIN no longer counts");
        assert!(check(&f, "alicepw755224").is_accept());
        let f = auth_policy("otppin = \"none\"");
        hotp_for_alice(&f, "H1", "1234");
        assert!(!check(&f, "1234755224").is_accept());
        assert!(check(&f, "755224").is_accept());
    }

    #[test]
    fn passthru_pass_on_no_token_and_no_user() {
        let f = auth_policy("passthru = true");
        assert_eq!(check(&f, "alicepw").message(), "against userstore due to 'auth'");
        assert_eq!(check(&f, "wrong").message(), "The user has no tokens assigned");
        hotp_for_alice(&f, "H1", "");
        assert!(!check(&f, "alicepw").is_accept(), "passthru is only for users without a token");

        let f = auth_policy("passOnNoToken = true");
        assert_eq!(check(&f, "anything").message(), "user has no token, accepted due to 'auth'");
        let f = auth_policy("passOnNoUser = true");
        let out = f.otpd.authenticate(&AuthRequest::new("mallory", "x", Front::Cli)).unwrap();
        assert!(out.is_accept());
        assert_eq!(out.message(), "user does not exist, accepted due to 'auth'");
        assert!(!check(&f, "x").is_accept(), "alice exists and has no token: rejected");
    }

    #[test]
    fn reset_all_user_tokens_clears_every_failcounter() {
        let f = auth_policy("reset_all_user_tokens = true");
        hotp_for_alice(&f, "H1", "1234");
        hotp_for_alice(&f, "H2", "5678");
        check(&f, "0000000000");
        assert_eq!(token(&f, "H2").failcount, 1);
        assert!(check(&f, "1234755224").is_accept());
        assert_eq!(token(&f, "H2").failcount, 0);
    }

    #[test]
    fn token_status_of_users() {
        let f = Fixture::new();
        assert_eq!(f.otpd.token_status("alice", None).unwrap(), TokenStatus::NoToken);
        assert_eq!(f.otpd.token_status("ghost", None).unwrap(), TokenStatus::NoToken);
        hotp_for_alice(&f, "H1", "");
        assert_eq!(
            f.otpd.token_status("alice@corp", None).unwrap(),
            TokenStatus::Usable { otp_lengths: vec![6] }
        );
        f.otpd.set_active(&f.ctx(), "H1", false).unwrap();
        assert_eq!(
            f.otpd.token_status("alice", None).unwrap(),
            TokenStatus::Unusable { reasons: vec!["Token is disabled".to_owned()] }
        );
        assert_eq!(f.otpd.token_status("alice", Some("sales")).unwrap(), TokenStatus::NoToken);
    }

    #[test]
    fn audit_records_every_attempt_without_secrets() {
        let f = Fixture::new();
        hotp_for_alice(&f, "H1", "1234");
        check(&f, "1234755224");
        check(&f, "1234755224");
        let audit = f.otpd.audit(10).unwrap();
        assert_eq!(audit[0].action, "validate_check");
        assert!(!audit[0].success);
        assert!(audit[1].success);
        assert_eq!(audit[1].serial.as_deref(), Some("H1"));
        for record in &audit {
            let text = format!("{record:?}");
            assert!(!text.contains("755224") && !text.contains("1234"), "{text}");
        }
    }
}

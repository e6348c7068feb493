//! Running the handlers: which tokens an entry acts on (semantics.md 6.1),
//! its conditions, and its action, each action in one write transaction
//! with its audit record. Also the dry run behind `otpd event test`.

use jiff::Timestamp;

use super::actions::EventAction;
use super::compare::{TagValues, render_tags};
use super::conditions::ConditionInput;
use super::{EventDef, EventRequest, Position};
use crate::admin::{AdminContext, InitSpec};
use crate::error::{Error, Result};
use crate::store::{AuditRecord, TokenFilter};
use crate::token::{MAX_DESCRIPTION, StoredPin, Token};
use crate::{Otpd, datetime};

/// What an entry would do for a request (`otpd event test`).
#[derive(Debug, Clone)]
pub struct DryRun {
    pub entry: String,
    /// Each condition with whether it holds.
    pub conditions: Vec<(String, bool)>,
    pub fires: bool,
    /// The tokens the action would act on.
    pub targets: Vec<String>,
    /// Targets that name no token (the real run would log a failure).
    pub missing: Vec<String>,
    pub action: String,
}

impl Otpd {
    /// Runs the entries bound to `request.event` at `position`. Failures are
    /// logged and audited; they never change the operation's outcome.
    pub(crate) fn fire(&self, position: Position, request: &EventRequest) {
        for def in self.events.bound(request.event, position) {
            if let Err(e) = self.run_entry(def, request) {
                tracing::warn!("event handler '{}' for {} failed: {e}", def.name, request.event);
                let record = AuditRecord {
                    time: self.clock.now(),
                    actor: format!("event:{}", def.name),
                    action: format!("event {}", def.action.name()),
                    front: request.front.name().into(),
                    serial: None,
                    user: request.user.as_ref().map(|u| u.login.clone()),
                    realm: request.user.as_ref().map(|u| u.realm.clone()),
                    client: request.client.map(|c| c.to_string()),
                    success: false,
                    message: format!("{}: {e}", request.event),
                };
                let audited = self.store.write().and_then(|mut tx| {
                    tx.append_audit(&record)?;
                    tx.commit()
                });
                if let Err(e) = audited {
                    tracing::warn!("cannot audit the failure of event handler '{}': {e}", def.name);
                }
            }
        }
    }

    /// privacyIDEA's target tokens: the request's serial(s), else the
    /// result's serial, else the user's only token.
    fn event_targets(&self, request: &EventRequest, user_tokens: &[Token]) -> Vec<String> {
        let named =
            request.serial.as_deref().or_else(|| request.result.as_ref().and_then(|r| r.serial.as_deref()));
        match named {
            Some(s) => s.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
            None if user_tokens.len() == 1 => vec![user_tokens[0].serial.clone()],
            None => Vec::new(),
        }
    }

    fn request_user_tokens(&self, request: &EventRequest) -> Result<Option<Vec<Token>>> {
        let Some(u) = &request.user else { return Ok(None) };
        let filter = TokenFilter { owner: Some((u.login.clone(), u.realm.clone())), ..Default::default() };
        Ok(Some(self.store.read()?.tokens(&filter)?))
    }

    /// Evaluates an entry: its conditions, targets and whether it fires.
    fn evaluate(&self, def: &EventDef, request: &EventRequest) -> Result<DryRun> {
        let user_tokens = self.request_user_tokens(request)?;
        let targets = self.event_targets(request, user_tokens.as_deref().unwrap_or(&[]));
        let read = self.store.read()?;
        let mut missing = Vec::new();
        let mut token = None;
        for serial in &targets {
            match read.token(serial)? {
                None => missing.push(serial.clone()),
                // Conditions look at a token only when there is exactly one.
                Some(t) if targets.len() == 1 => token = Some(t),
                Some(_) => {}
            }
        }
        drop(read);
        let input = ConditionInput {
            request,
            token: token.as_ref(),
            user_tokens: user_tokens.as_deref(),
            now: self.clock.now(),
        };
        let conditions: Vec<(String, bool)> =
            def.conditions.iter().map(|c| (c.name().to_owned(), c.holds(&input))).collect();
        let fires = conditions.iter().all(|(_, ok)| *ok);
        Ok(DryRun {
            entry: def.name.clone(),
            conditions,
            fires,
            targets,
            missing,
            action: def.action.describe(),
        })
    }

    fn run_entry(&self, def: &EventDef, request: &EventRequest) -> Result<()> {
        let plan = self.evaluate(def, request)?;
        if !plan.fires {
            return Ok(());
        }
        let ctx = AdminContext {
            actor: format!("event:{}", def.name),
            front: request.front,
            client: request.client.map(|c| c.to_string()),
        };
        if let EventAction::Enroll { token_type, user, realm } = &def.action {
            let mut spec = InitSpec::new(*token_type);
            let owner = if *user { request.user.as_ref() } else { None };
            spec.user = owner.map(|u| u.login.clone());
            spec.realm = match (owner, realm) {
                (Some(u), _) => Some(u.realm.clone()),
                (None, r) => r.clone(),
            };
            spec.description = Some(format!("enrolled by event '{}'", def.name));
            self.enroll(&ctx, &spec)?;
            return Ok(());
        }
        if plan.targets.is_empty() {
            tracing::info!("event handler '{}' for {}: No token serials found", def.name, request.event);
            return Ok(());
        }
        for serial in &plan.targets {
            self.apply(def, request, &ctx, serial)?;
        }
        Ok(())
    }

    /// One action on one token, committed with its audit record.
    fn apply(&self, def: &EventDef, request: &EventRequest, ctx: &AdminContext, serial: &str) -> Result<()> {
        let now = self.clock.now();
        let local = now.to_zoned(jiff::tz::TimeZone::system());
        let mut tx = self.store.write()?;
        let mut token = tx.token(serial)?.ok_or_else(|| Error::UnknownSerial(serial.to_owned()))?;
        if token.revoked && def.action != EventAction::Delete {
            return Err(Error::Revoked(token.serial));
        }
        let message = match &def.action {
            EventAction::SetTokenRealm { realm, only_realm } => {
                if *only_realm {
                    token.realms.retain(|r| token.owner.as_ref().is_some_and(|o| &o.realm == r));
                }
                if !token.realms.contains(realm) {
                    token.realms.push(realm.clone());
                }
                token.realms.sort();
                format!("realms now {}", token.realms.join(","))
            }
            EventAction::Delete => {
                tx.delete_token(serial)?;
                "deleted".to_owned()
            }
            EventAction::Unassign => {
                token.owner = None;
                token.pin = StoredPin::Empty;
                token.failcount = 0;
                token.failcounter_exceeded = None;
                token.assigned = None;
                "unassigned".to_owned()
            }
            EventAction::Disable => {
                token.active = false;
                "disabled".to_owned()
            }
            EventAction::Enable => {
                token.active = true;
                "enabled".to_owned()
            }
            EventAction::SetDescription { template } => {
                let client = request.client.map(|c| c.to_string());
                let values = TagValues {
                    client_ip: client.as_deref(),
                    front: request.front.name(),
                    username: request.user.as_ref().map(|u| u.login.as_str()),
                    realm: request.user.as_ref().map(|u| u.realm.as_str()),
                };
                let text = render_tags(template, &values, &local).map_err(Error::InvalidArgument)?;
                token.description = text.chars().take(MAX_DESCRIPTION).collect();
                "description set".to_owned()
            }
            EventAction::SetValidity { from, till } => {
                // Both bounds parse before either is stored: no partial update.
                let parse = |v: &Option<String>| -> Result<Option<Timestamp>> {
                    v.as_deref()
                        .map(|t| datetime::parse_time(t, &local).map(|z| z.timestamp()))
                        .transpose()
                        .map_err(|e| Error::InvalidArgument(e.to_string()))
                };
                let (start, end) = (parse(from)?, parse(till)?);
                if let Some(s) = start {
                    token.validity_start = Some(s);
                }
                if let Some(e) = end {
                    token.validity_end = Some(e);
                }
                format!(
                    "validity {} to {}",
                    token.validity_start.map_or("-".into(), |t| t.to_string()),
                    token.validity_end.map_or("-".into(), |t| t.to_string())
                )
            }
            EventAction::Enroll { .. } => return Ok(()),
        };
        if def.action != EventAction::Delete {
            tx.update_token(&token)?;
        }
        tx.append_audit(&self.audit_record(ctx, &format!("event {}", def.action.name()), &token, message))?;
        tx.commit()?;
        Ok(())
    }

    /// What each entry bound to `request.event` would do, without doing it.
    pub fn event_dry_run(&self, request: &EventRequest, position: Option<Position>) -> Result<Vec<DryRun>> {
        self.events
            .all()
            .iter()
            .filter(|d| d.events.iter().any(|e| e == request.event))
            .filter(|d| position.is_none_or(|p| p == d.position))
            .map(|d| self.evaluate(d, request))
            .collect()
    }
}

//! Where the module's two questions (the user's token status, a login)
//! go: to the running `otpd serve` over `[pam] socket` when the
//! configuration names one and the daemon answers, else to the core opened
//! in this process. Either way the same `Otpd` calls answer, and a
//! consumed OTP is refused by both (one store). When the daemon cannot be
//! asked (not running, a stranger on the socket, no answer), the module
//! opens the store itself and carries on; a login never fails for want of
//! the daemon.

use std::path::PathBuf;

use otpd_core::local_socket::{self, ClientError, Reply, Request};
use otpd_core::{AuthRequest, Config, Otpd, Outcome, TokenStatus};
use zeroize::Zeroizing;

use crate::logic::Level;

/// A log line the caller writes (a `Pam::log` through its filter).
pub type Note<'a> = &'a dyn Fn(Level, &str);

pub struct Validator {
    config: Config,
    /// The daemon's socket, until asking it fails.
    daemon: Option<PathBuf>,
    /// The core in this process, opened when first needed.
    local: Option<Otpd>,
    /// The last login was decided by the daemon (which logs it).
    daemon_decided: bool,
}

impl Validator {
    pub fn new(config: Config) -> Validator {
        Validator { daemon: config.pam_socket.clone(), config, local: None, daemon_decided: false }
    }

    pub fn token_status(
        &mut self,
        user: &str,
        realm: Option<&str>,
        note: Note<'_>,
    ) -> Result<TokenStatus, String> {
        let request = Request::Status { user: user.to_owned(), realm: realm.map(str::to_owned) };
        if let Some(answer) = self.ask(&request, Reply::into_status, note) {
            return answer;
        }
        self.local()?.token_status(user, realm).map_err(|e| e.to_string())
    }

    pub fn authenticate(&mut self, req: &AuthRequest, note: Note<'_>) -> Result<Outcome, String> {
        let request = Request::Authenticate {
            user: req.user.clone(),
            realm: req.realm.clone(),
            password: Zeroizing::new(req.password.as_str().to_owned()),
            client: req.client,
            state: req.state.clone(),
            service: req.service.clone(),
        };
        let answer = self.ask(&request, Reply::into_outcome, note);
        self.daemon_decided = matches!(answer, Some(Ok(_)));
        match answer {
            Some(answer) => answer,
            None => self.local()?.authenticate(req).map_err(|e| e.to_string()),
        }
    }

    /// Whether the daemon decided the last login: its log has the decision
    /// line then.
    pub fn daemon_decided(&self) -> bool {
        self.daemon_decided
    }

    /// The daemon's answer, read by `read`; `None` when it cannot be asked
    /// or its reply does not fit the question (then never again in this
    /// login).
    fn ask<T>(
        &mut self,
        request: &Request,
        read: fn(Reply) -> Option<Result<T, String>>,
        note: Note<'_>,
    ) -> Option<Result<T, String>> {
        let socket = self.daemon.as_ref()?;
        match local_socket::call(socket, &self.config.database, request) {
            Ok(reply) => {
                let answer = read(reply);
                if answer.is_none() {
                    // A daemon of another version, say: not trusted.
                    note(
                        Level::Error,
                        "the daemon's answer does not fit the question; checking in this process instead",
                    );
                    self.daemon = None;
                }
                answer
            }
            Err(e) => {
                let level = match &e {
                    // The daemon is not running: expected, and quietly handled.
                    ClientError::Connect { source, .. }
                        if matches!(
                            source.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                        ) =>
                    {
                        Level::Debug
                    }
                    ClientError::Stranger { .. } => Level::Error,
                    _ => Level::Notice,
                };
                note(level, &format!("{e}; checking in this process instead"));
                self.daemon = None;
                None
            }
        }
    }

    fn local(&mut self) -> Result<&Otpd, String> {
        match &mut self.local {
            Some(otpd) => Ok(otpd),
            slot @ None => {
                Ok(slot.insert(Otpd::open_for_one_login(self.config.clone()).map_err(|e| e.to_string())?))
            }
        }
    }
}

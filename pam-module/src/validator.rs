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
}

impl Validator {
    pub fn new(config: Config) -> Validator {
        Validator { daemon: config.pam_socket.clone(), config, local: None }
    }

    pub fn token_status(
        &mut self,
        user: &str,
        realm: Option<&str>,
        note: Note<'_>,
    ) -> Result<TokenStatus, String> {
        let request = Request::Status { user: user.to_owned(), realm: realm.map(str::to_owned) };
        match self.ask(&request, note) {
            Some(Reply::NoToken) => return Ok(TokenStatus::NoToken),
            Some(Reply::Usable { otp_lengths }) => return Ok(TokenStatus::Usable { otp_lengths }),
            Some(Reply::Unusable { reasons }) => return Ok(TokenStatus::Unusable { reasons }),
            Some(Reply::Error { message }) => return Err(message),
            Some(_) => self.unexpected(note),
            None => {}
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
        match self.ask(&request, note) {
            Some(Reply::Accept { message, serial }) => {
                return Ok(Outcome::Accept { message, serial, token_type: None });
            }
            Some(Reply::Reject { message, serial }) => return Ok(Outcome::Reject { message, serial }),
            Some(Reply::Challenge { state, message, serial }) => {
                return Ok(Outcome::Challenge { state, message, serial });
            }
            Some(Reply::Error { message }) => return Err(message),
            Some(_) => self.unexpected(note),
            None => {}
        }
        self.local()?.authenticate(req).map_err(|e| e.to_string())
    }

    /// The daemon's answer; `None` when it cannot be asked (then never
    /// again in this login).
    fn ask(&mut self, request: &Request, note: Note<'_>) -> Option<Reply> {
        let socket = self.daemon.as_ref()?;
        match local_socket::call(socket, &self.config.database, request) {
            Ok(reply) => Some(reply),
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

    /// A reply of the wrong kind (a status for a login): a daemon of
    /// another version, say. Not trusted; the module asks itself.
    fn unexpected(&mut self, note: Note<'_>) {
        note(Level::Error, "the daemon's answer does not fit the question; checking in this process instead");
        self.daemon = None;
    }

    fn local(&mut self) -> Result<&Otpd, String> {
        if self.local.is_none() {
            self.local = Some(Otpd::open_for_one_login(self.config.clone()).map_err(|e| e.to_string())?);
        }
        Ok(self.local.as_ref().expect("opened above"))
    }
}

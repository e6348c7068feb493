//! pam_otpd: the PAM front of otpd, installed as `pam_otpd.so`. It checks
//! one-time passwords through the same otpd-core call as the RADIUS front,
//! against the same store, so a login through sshd or sudo is judged
//! exactly like one through a VPN: asking the running daemon over
//! `[pam] socket` when configured, else in-process.
//!
//! * `ffi`: the only module that touches libpam (pam-bindings plus the few
//!   raw calls it lacks); it turns a PAM handle into a [`logic::Pam`] and
//!   catches every panic at the boundary.
//! * `logic`: what the module does (arguments, prompts, the core call, the
//!   return code), written against the `Pam` trait and unit-tested with a
//!   fake handle.
//! * `args`: the module arguments of the PAM service line.
//! * `validator`: the daemon over its socket, or the core in-process.
//!
//! The module never installs a logger, never calls `openlog` and starts no
//! threads: it lives inside someone else's process (sshd, sudo, login).

pub mod args;
mod ffi;
pub mod logic;
mod validator;

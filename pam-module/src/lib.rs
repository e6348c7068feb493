//! pam_otpd: the PAM front of otpd (installed as `pam_otpd.so`). It will be
//! a thin FFI layer over otpd-core's `authenticate`, so that logins through
//! PAM and RADIUS answer identically; the module itself comes with the PAM
//! issue. Until then this crate only links the core, which keeps the
//! workspace layout of design.md and proves the core builds into a cdylib.

pub use otpd_core::Front;

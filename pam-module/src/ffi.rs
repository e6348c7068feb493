//! The FFI glue, and the only code that touches libpam: pam-bindings'
//! `pam_hooks!` entry points, a `Pam` implementation over the real handle,
//! and the raw calls pam-bindings lacks (setting PAM_AUTHTOK, pam_syslog).
//! Every hook runs inside `catch_unwind`: a panic becomes PAM_AUTH_ERR and
//! a syslog line, never an unwinding across the C boundary (an abort would
//! kill sshd or sudo).

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use pam::constants::{PAM_PROMPT_ECHO_OFF, PamFlag, PamResultCode};
use pam::conv::Conv;
use pam::items::{AuthTok, RHost, Service};
use pam::module::{PamHandle, PamHooks};
use pam::pam_hooks;
use zeroize::{Zeroize, Zeroizing};

use crate::logic::{self, Level, Pam, PamCode};

const PAM_AUTHTOK: c_int = 6;

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_set_item(pamh: *mut PamHandle, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
}

struct PamOtpd;
pam_hooks!(PamOtpd);

impl PamHooks for PamOtpd {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        guarded(pamh, &args, logic::authenticate)
    }

    fn acct_mgmt(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        guarded(pamh, &args, logic::account)
    }

    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }
}

/// Runs a hook with its arguments as strings, catching any panic.
fn guarded(
    pamh: &mut PamHandle,
    args: &[&CStr],
    hook: fn(&mut dyn Pam, &[&str]) -> PamCode,
) -> PamResultCode {
    let raw: *mut PamHandle = pamh;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut handle = Handle { pamh };
        hook(&mut handle, &args)
    }));
    match result {
        Ok(code) => result_code(code),
        Err(_) => {
            // SAFETY: the handle is valid for the whole hook call; the
            // closure that borrowed it has ended.
            syslog(unsafe { &*raw }, libc::LOG_ERR, "internal error (panic caught); refusing the login");
            PamResultCode::PAM_AUTH_ERR
        }
    }
}

fn result_code(code: PamCode) -> PamResultCode {
    match code {
        PamCode::Success => PamResultCode::PAM_SUCCESS,
        PamCode::ServiceErr => PamResultCode::PAM_SERVICE_ERR,
        PamCode::PermDenied => PamResultCode::PAM_PERM_DENIED,
        PamCode::AuthErr => PamResultCode::PAM_AUTH_ERR,
        PamCode::UserUnknown => PamResultCode::PAM_USER_UNKNOWN,
        PamCode::ConvErr => PamResultCode::PAM_CONV_ERR,
        PamCode::Ignore => PamResultCode::PAM_IGNORE,
    }
}

fn pam_code(code: PamResultCode) -> PamCode {
    match code {
        PamResultCode::PAM_USER_UNKNOWN => PamCode::UserUnknown,
        PamResultCode::PAM_CONV_ERR => PamCode::ConvErr,
        _ => PamCode::AuthErr,
    }
}

fn syslog(pamh: &PamHandle, priority: c_int, message: &str) {
    let Ok(text) = CString::new(message.replace('\0', "\\0")) else { return };
    // SAFETY: a valid handle, a constant "%s" format and one C string argument.
    unsafe { pam_syslog(pamh, priority, c"%s".as_ptr(), text.as_ptr()) };
}

struct Handle<'a> {
    pamh: &'a mut PamHandle,
}

impl Handle<'_> {
    fn text_item<'s, T: pam::items::Item<'s>>(&'s self, get: impl Fn(T) -> &'s CStr) -> Option<String> {
        self.pamh.get_item::<T>().ok().flatten().map(|v| get(v).to_string_lossy().into_owned())
    }
}

impl Pam for Handle<'_> {
    fn user(&mut self) -> Result<String, PamCode> {
        self.pamh.get_user(None).map_err(pam_code)
    }

    fn service(&self) -> Option<String> {
        self.text_item::<Service>(|s| s.0)
    }

    fn rhost(&self) -> Option<String> {
        self.text_item::<RHost>(|h| h.0)
    }

    fn authtok(&self) -> Option<Zeroizing<String>> {
        let tok = self.pamh.get_item::<AuthTok>().ok().flatten()?;
        std::str::from_utf8(tok.as_bytes()).ok().map(|s| Zeroizing::new(s.to_owned()))
    }

    fn set_authtok(&mut self, value: &str) -> Result<(), PamCode> {
        let c = CString::new(value).map_err(|_| PamCode::AuthErr)?;
        // SAFETY: PAM copies the string; we wipe our copy afterwards.
        let rc = unsafe { pam_set_item(self.pamh, PAM_AUTHTOK, c.as_ptr().cast()) };
        c.into_bytes_with_nul().zeroize();
        if rc == 0 { Ok(()) } else { Err(PamCode::AuthErr) }
    }

    fn prompt(&mut self, message: &str) -> Result<Zeroizing<String>, PamCode> {
        let conv = self.pamh.get_item::<Conv>().map_err(pam_code)?.ok_or(PamCode::ConvErr)?;
        let answer = conv.send(PAM_PROMPT_ECHO_OFF, message).map_err(|_| PamCode::ConvErr)?;
        let answer = answer.ok_or(PamCode::ConvErr)?;
        let text = answer.as_str().map_err(|_| PamCode::AuthErr)?;
        Ok(Zeroizing::new(text.to_owned()))
    }

    fn log(&self, level: Level, message: &str) {
        let priority = match level {
            Level::Error => libc::LOG_ERR,
            Level::Notice => libc::LOG_NOTICE,
            Level::Info => libc::LOG_INFO,
            Level::Debug => libc::LOG_DEBUG,
        };
        syslog(self.pamh, priority, message);
    }
}

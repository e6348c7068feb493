//! The arguments of a `pam_otpd.so` service line (design.md section 7):
//! `config=PATH realm=R prompt=TEXT try_first_pass|use_first_pass
//! forward_pass nullok debug`. Anything else is an error, so a typo in a
//! service file is reported instead of silently weakening the login.

use std::path::PathBuf;

/// Where the module gets the password from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirstPass {
    /// Prompt (the default).
    #[default]
    Prompt,
    /// Use PAM_AUTHTOK from an earlier module; prompt if it does not validate.
    Try,
    /// Use PAM_AUTHTOK from an earlier module; fail without one.
    Use,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleArgs {
    /// The configuration file; without it /etc/otpd/otpd.toml (never
    /// `$OTPD_CONFIG` nor built-in defaults).
    pub config: Option<PathBuf>,
    pub realm: Option<String>,
    pub prompt: String,
    pub first_pass: FirstPass,
    pub forward_pass: bool,
    pub nullok: bool,
    pub debug: bool,
}

pub const DEFAULT_PROMPT: &str = "OTP: ";

impl Default for ModuleArgs {
    fn default() -> Self {
        ModuleArgs {
            config: None,
            realm: None,
            prompt: DEFAULT_PROMPT.into(),
            first_pass: FirstPass::Prompt,
            forward_pass: false,
            nullok: false,
            debug: false,
        }
    }
}

impl ModuleArgs {
    /// Parses the arguments; the error is a sentence for the syslog line.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, String> {
        let mut out = ModuleArgs::default();
        for arg in args.iter().map(AsRef::as_ref) {
            let (key, value) = match arg.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (arg, None),
            };
            match (key, value) {
                ("config", Some(v)) if !v.is_empty() => out.config = Some(PathBuf::from(v)),
                ("realm", Some(v)) if !v.is_empty() => out.realm = Some(v.to_owned()),
                ("prompt", Some(v)) => out.prompt = v.to_owned(),
                ("try_first_pass", None) => out.set_first_pass(FirstPass::Try)?,
                ("use_first_pass", None) => out.set_first_pass(FirstPass::Use)?,
                ("forward_pass", None) => out.forward_pass = true,
                ("nullok", None) => out.nullok = true,
                ("debug", None) => out.debug = true,
                ("config" | "realm", _) => {
                    return Err(format!("module argument '{arg}' needs a value ({key}=...)"));
                }
                _ => {
                    return Err(format!(
                        "unknown module argument '{arg}' (known: config=PATH realm=R prompt=TEXT \
                         try_first_pass use_first_pass forward_pass nullok debug)"
                    ));
                }
            }
        }
        Ok(out)
    }

    fn set_first_pass(&mut self, mode: FirstPass) -> Result<(), String> {
        if self.first_pass != FirstPass::Prompt && self.first_pass != mode {
            return Err("try_first_pass and use_first_pass exclude each other".into());
        }
        self.first_pass = mode;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_arguments() {
        let a = ModuleArgs::parse(&[
            "config=/etc/otpd/x.toml",
            "realm=corp",
            "prompt=Code:",
            "use_first_pass",
            "forward_pass",
            "nullok",
            "debug",
        ])
        .unwrap();
        assert_eq!(a.config.as_deref(), Some(std::path::Path::new("/etc/otpd/x.toml")));
        assert_eq!(a.realm.as_deref(), Some("corp"));
        assert_eq!(a.prompt, "Code:");
        assert_eq!(a.first_pass, FirstPass::Use);
        assert!(a.forward_pass && a.nullok && a.debug);
        assert_eq!(ModuleArgs::parse::<&str>(&[]).unwrap(), ModuleArgs::default());
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(ModuleArgs::parse(&["nulok"]).unwrap_err().contains("unknown module argument 'nulok'"));
        assert!(ModuleArgs::parse(&["config="]).unwrap_err().contains("needs a value"));
        assert!(ModuleArgs::parse(&["nullok=yes"]).is_err());
        assert!(ModuleArgs::parse(&["try_first_pass", "use_first_pass"]).is_err());
    }
}

//! What pam_otpd does, independent of libpam: read the user and the
//! module arguments, get the password (stacked or prompted), ask otpd-core,
//! turn a challenge into a second prompt, and map the outcome to a PAM
//! return code. `ffi` provides the real `Pam`; the tests a fake one.

use std::net::IpAddr;
use std::path::PathBuf;

use otpd_core::{AuthRequest, Config, Front, Outcome, TokenStatus};
use zeroize::Zeroizing;

use crate::args::{FirstPass, ModuleArgs};
use crate::validator::Validator;

/// The PAM return codes this module uses (values as in Linux-PAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamCode {
    Success,
    ServiceErr,
    PermDenied,
    AuthErr,
    UserUnknown,
    ConvErr,
    Ignore,
}

/// Severity of a log line (mapped to syslog priorities by `ffi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Notice,
    Info,
    Debug,
}

/// What the module needs from PAM.
pub trait Pam {
    /// PAM_USER (may ask the application through the conversation).
    fn user(&mut self) -> Result<String, PamCode>;
    fn service(&self) -> Option<String>;
    fn rhost(&self) -> Option<String>;
    /// PAM_AUTHTOK as set by an earlier module in the stack.
    fn authtok(&self) -> Option<Zeroizing<String>>;
    fn set_authtok(&mut self, value: &str) -> Result<(), PamCode>;
    /// Asks the user (echo off).
    fn prompt(&mut self, message: &str) -> Result<Zeroizing<String>, PamCode>;
    /// A syslog line (through pam_syslog). Never give it a secret.
    fn log(&self, level: Level, message: &str);
}

/// Longer passwords are refused before any hashing: nobody types this much.
pub const MAX_PASSWORD: usize = 1024;
/// At most this many challenges in one login.
const MAX_CHALLENGES: usize = 3;

/// A log line through `pam`; debug lines only with the `debug` argument.
fn log_to(pam: &dyn Pam, debug: bool, level: Level, message: &str) {
    if level != Level::Debug || debug {
        pam.log(level, message);
    }
}

/// User-supplied text escaped for a log line.
fn clean(text: &str) -> String {
    text.escape_debug().to_string()
}

struct Login<'a> {
    validator: Validator,
    args: ModuleArgs,
    user: String,
    service: Option<String>,
    client: Option<IpAddr>,
    pam: &'a mut dyn Pam,
}

/// `pam_sm_authenticate`.
pub fn authenticate(pam: &mut dyn Pam, raw_args: &[&str]) -> PamCode {
    let mut login = match Login::start(pam, raw_args) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // Asked only where the answer changes what happens next: every other
    // login goes straight to the prompt and the check, one question less.
    let status = if login.args.nullok || login.args.forward_pass {
        match login.token_status() {
            Ok(s) => Some(s),
            Err(e) => {
                return login.fail(&format!("cannot read the tokens of user {}: {e}", clean(&login.user)));
            }
        }
    } else {
        None
    };
    if status == Some(TokenStatus::NoToken) && login.args.nullok {
        login.log(Level::Info, &format!("user={} has no token; nullok: ignoring", clean(&login.user)));
        return PamCode::Ignore;
    }
    let typed = match login.password() {
        Ok(p) => p,
        Err(code) => return code,
    };
    if login.args.forward_pass {
        return login.forward(&typed, status.as_ref());
    }
    let outcome = login.check(&typed, None);
    let outcome = match (outcome, login.args.first_pass, login.pam.authtok().is_some()) {
        // try_first_pass: the stacked password did not do; ask.
        (Some(Outcome::Reject { .. }), FirstPass::Try, true) => match login.ask(&login.args.prompt.clone()) {
            Ok(p) => login.check(&p, None),
            Err(code) => return code,
        },
        (outcome, _, _) => outcome,
    };
    login.finish(outcome)
}

/// `pam_sm_acct_mgmt`: refuses a user whose tokens are all unusable.
pub fn account(pam: &mut dyn Pam, raw_args: &[&str]) -> PamCode {
    let mut login = match Login::start(pam, raw_args) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match login.token_status() {
        Ok(TokenStatus::Usable { .. }) => PamCode::Success,
        Ok(TokenStatus::NoToken) if login.args.nullok => PamCode::Ignore,
        Ok(TokenStatus::NoToken) => {
            login.log(Level::Notice, &format!("account: user={} has no token", clean(&login.user)));
            PamCode::PermDenied
        }
        Ok(TokenStatus::Unusable { reasons }) => {
            login.log(
                Level::Notice,
                &format!("account: user={} has no usable token ({})", clean(&login.user), reasons.join(", ")),
            );
            PamCode::PermDenied
        }
        Err(e) => {
            login.log(
                Level::Error,
                &format!("account: cannot read the tokens of {}: {e}", clean(&login.user)),
            );
            PamCode::AuthErr
        }
    }
}

impl<'a> Login<'a> {
    /// Arguments, user and configuration; errors are logged here.
    fn start(pam: &'a mut dyn Pam, raw_args: &[&str]) -> Result<Login<'a>, PamCode> {
        let args = ModuleArgs::parse(raw_args).map_err(|e| {
            pam.log(Level::Error, &e);
            PamCode::ServiceErr
        })?;
        let user = pam
            .user()
            .inspect_err(|code| pam.log(Level::Error, &format!("cannot get the user ({code:?})")))?;
        if user.is_empty() {
            pam.log(Level::Error, "empty user name");
            return Err(PamCode::UserUnknown);
        }
        // Never the environment or built-in defaults: sudo keeps the
        // caller's environment, and defaults would create a store in the
        // host's working directory.
        let path = args.config.clone().unwrap_or_else(|| PathBuf::from(otpd_core::config::SYSTEM_CONFIG));
        let config = Config::load(&path).map_err(|e| {
            pam.log(Level::Error, &e.to_string());
            PamCode::AuthErr
        })?;
        let service = pam.service();
        let rhost = pam.rhost();
        let client = rhost.as_deref().and_then(|h| h.parse::<IpAddr>().ok());
        Ok(Login { validator: Validator::new(config), args, user, service, client, pam })
    }

    fn log(&self, level: Level, message: &str) {
        log_to(&*self.pam, self.args.debug, level, message);
    }

    fn token_status(&mut self) -> Result<TokenStatus, String> {
        let (pam, debug) = (&*self.pam, self.args.debug);
        let note = |level, message: &str| log_to(pam, debug, level, message);
        self.validator.token_status(&self.user, self.args.realm.as_deref(), &note)
    }

    fn fail(&self, message: &str) -> PamCode {
        self.log(Level::Error, message);
        PamCode::AuthErr
    }

    /// The password: stacked (use/try_first_pass) or prompted.
    fn password(&mut self) -> Result<Zeroizing<String>, PamCode> {
        match (self.args.first_pass, self.pam.authtok()) {
            (FirstPass::Use | FirstPass::Try, Some(tok)) => Ok(tok),
            (FirstPass::Use, None) => {
                self.log(Level::Error, "use_first_pass: no password from an earlier module");
                Err(PamCode::AuthErr)
            }
            _ => {
                let prompt = self.args.prompt.clone();
                self.ask(&prompt)
            }
        }
    }

    fn ask(&mut self, prompt: &str) -> Result<Zeroizing<String>, PamCode> {
        self.pam.prompt(prompt).inspect_err(|code| {
            self.pam.log(Level::Error, &format!("conversation failed ({code:?})"));
        })
    }

    /// One core call; `None` after an error (logged).
    fn check(&mut self, password: &str, state: Option<String>) -> Option<Outcome> {
        if password.len() > MAX_PASSWORD {
            self.log(
                Level::Notice,
                &format!("user={}: password longer than {MAX_PASSWORD} bytes refused", clean(&self.user)),
            );
            return Some(Outcome::Reject { message: "password too long".into(), serial: None });
        }
        let mut req = AuthRequest::new(self.user.clone(), password, Front::Pam);
        req.realm = self.args.realm.clone();
        req.client = self.client;
        req.state = state;
        req.service = self.service.clone();
        let (pam, debug) = (&*self.pam, self.args.debug);
        let note = |level, message: &str| log_to(pam, debug, level, message);
        match self.validator.authenticate(&req, &note) {
            Ok(outcome) => Some(outcome),
            Err(e) => {
                self.log(Level::Error, &format!("user={}: {e}", clean(&self.user)));
                None
            }
        }
    }

    /// Answers challenges with further prompts, then maps the outcome.
    fn finish(&mut self, mut outcome: Option<Outcome>) -> PamCode {
        for _ in 0..MAX_CHALLENGES {
            let Some(Outcome::Challenge { state, message, .. }) = &outcome else { break };
            let state = state.clone();
            let answer = match self.ask(&message.clone()) {
                Ok(a) => a,
                Err(_) => return PamCode::ConvErr,
            };
            outcome = self.check(&answer, Some(state));
        }
        self.verdict(outcome)
    }

    fn verdict(&self, outcome: Option<Outcome>) -> PamCode {
        let Some(outcome) = outcome else { return PamCode::AuthErr };
        let (word, code) = match &outcome {
            Outcome::Accept { .. } => ("accept", PamCode::Success),
            Outcome::Reject { .. } => ("reject", PamCode::AuthErr),
            Outcome::Challenge { .. } => ("reject: too many challenges", PamCode::AuthErr),
        };
        // A login the daemon decided has its line in the daemon's log
        // (`pam: user=...`): here it would be a second one, and a syslog
        // call is a noticeable part of a PAM login.
        let level = if self.validator.daemon_decided() { Level::Debug } else { Level::Info };
        self.log(
            level,
            &format!(
                "user={} rhost={} result={word} reason=\"{}\" serial={}",
                clean(&self.user),
                self.client.map_or("-".to_string(), |c| c.to_string()),
                clean(outcome.message()),
                outcome.serial().unwrap_or("-")
            ),
        );
        code
    }

    /// forward_pass: `typed` is `<password><OTP>`. The OTP is checked alone
    /// (tokens used this way have no PIN) and the password part goes on as
    /// PAM_AUTHTOK for the next module.
    fn forward(&mut self, typed: &str, status: Option<&TokenStatus>) -> PamCode {
        let lengths: &[usize] = match status {
            Some(TokenStatus::Usable { otp_lengths }) => otp_lengths,
            _ => &[otpd_core::token::DEFAULT_OTPLEN as usize],
        };
        let chars = typed.chars().count();
        let mut last = None;
        for &len in lengths.iter().filter(|&&l| l > 0 && l <= chars) {
            let cut = typed.char_indices().nth(chars - len).map_or(typed.len(), |(i, _)| i);
            let (password, otp) = typed.split_at(cut);
            let outcome = self.check(otp, None);
            if let Some(Outcome::Accept { .. }) = outcome {
                if let Err(code) = self.pam.set_authtok(password) {
                    return self.fail(&format!("forward_pass: cannot set PAM_AUTHTOK ({code:?})"));
                }
                return self.verdict(outcome);
            }
            last = outcome;
        }
        match last {
            Some(outcome) => self.verdict(Some(outcome)),
            None => {
                self.log(
                    Level::Info,
                    &format!("user={}: forward_pass input shorter than an OTP", clean(&self.user)),
                );
                PamCode::AuthErr
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use otpd_core::local_socket::{self, Reply, Request};
    use otpd_core::otp::{HashAlgorithm, hotp};
    use otpd_core::{AdminContext, InitSpec, Otpd, TokenType};

    use super::*;

    const KEY: &[u8] = b"12345678901234567890";
    const KEY_HEX: &str = "3132333435363738393031323334353637383930";

    fn code(counter: u64) -> String {
        hotp(KEY, counter, 6, HashAlgorithm::Sha1)
    }

    /// A PAM handle in memory: items, queued answers, recorded prompts and log lines.
    #[derive(Default)]
    struct FakePam {
        user: String,
        rhost: Option<String>,
        authtok: Option<String>,
        answers: VecDeque<String>,
        prompts: Vec<String>,
        log: RefCell<Vec<String>>,
    }

    impl Pam for FakePam {
        fn user(&mut self) -> Result<String, PamCode> {
            Ok(self.user.clone())
        }
        fn service(&self) -> Option<String> {
            Some("test".into())
        }
        fn rhost(&self) -> Option<String> {
            self.rhost.clone()
        }
        fn authtok(&self) -> Option<Zeroizing<String>> {
            self.authtok.clone().map(Zeroizing::new)
        }
        fn set_authtok(&mut self, value: &str) -> Result<(), PamCode> {
            self.authtok = Some(value.to_owned());
            Ok(())
        }
        fn prompt(&mut self, message: &str) -> Result<Zeroizing<String>, PamCode> {
            self.prompts.push(message.to_owned());
            self.answers.pop_front().map(Zeroizing::new).ok_or(PamCode::ConvErr)
        }
        fn log(&self, _level: Level, message: &str) {
            self.log.borrow_mut().push(message.to_owned());
        }
    }

    struct Setup {
        dir: tempfile::TempDir,
        config: String,
    }

    impl Setup {
        fn new(extra: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("users"), "alice:*\nbob:*\n").unwrap();
            let config = dir.path().join("otpd.toml");
            std::fs::write(
                &config,
                format!(
                    "[[resolvers]]\nname = \"u\"\ntype = \"passwdfile\"\npath = \"users\"\n\
                     [[realms]]\nname = \"corp\"\nresolvers = [\"u\"]\n{extra}"
                ),
            )
            .unwrap();
            Setup { config: format!("config={}", config.display()), dir }
        }

        fn enroll(&self, user: &str, pin: &str) {
            let otpd = Otpd::open(Config::load(&self.dir.path().join("otpd.toml")).unwrap()).unwrap();
            let mut spec = InitSpec::new(TokenType::Hotp);
            spec.otpkey = Some(Zeroizing::new(KEY_HEX.into()));
            spec.user = Some(user.into());
            spec.realm = Some("corp".into());
            spec.pin = Some(Zeroizing::new(pin.into()));
            let ctx = AdminContext { actor: "test".into(), front: Front::Cli, client: None };
            otpd.init_token(&ctx, &spec).unwrap();
        }

        fn pam(&self, answers: &[&str]) -> FakePam {
            FakePam {
                user: "alice".into(),
                answers: answers.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            }
        }
    }

    #[test]
    fn prompt_accept_then_replay_refused() {
        let s = Setup::new("");
        s.enroll("alice", "1234");
        let mut pam = s.pam(&[&format!("1234{}", code(0))]);
        assert_eq!(authenticate(&mut pam, &[&s.config]), PamCode::Success);
        assert_eq!(pam.prompts, vec!["OTP: "]);
        let mut pam = s.pam(&[&format!("1234{}", code(0))]);
        assert_eq!(authenticate(&mut pam, &[&s.config, "prompt=Code:"]), PamCode::AuthErr);
        assert_eq!(pam.prompts, vec!["Code:"]);
        let log = pam.log.borrow().join("\n");
        assert!(log.contains("result=reject") && !log.contains(&code(0)), "{log}");
    }

    #[test]
    fn use_and_try_first_pass() {
        let s = Setup::new("");
        s.enroll("alice", "");
        let mut pam = s.pam(&[]);
        pam.authtok = Some(code(0));
        assert_eq!(authenticate(&mut pam, &[&s.config, "use_first_pass"]), PamCode::Success);
        assert!(pam.prompts.is_empty());
        let mut pam = s.pam(&[]);
        assert_eq!(authenticate(&mut pam, &[&s.config, "use_first_pass"]), PamCode::AuthErr);
        let mut pam = s.pam(&[&code(1)]);
        pam.authtok = Some("unix-password".into());
        assert_eq!(authenticate(&mut pam, &[&s.config, "try_first_pass"]), PamCode::Success);
        assert_eq!(pam.prompts.len(), 1, "a stacked password that fails leads to a prompt");
    }

    #[test]
    fn forward_pass_hands_the_password_on() {
        let s = Setup::new("");
        s.enroll("alice", "");
        let mut pam = s.pam(&[&format!("s3cret pässword{}", code(0))]);
        assert_eq!(authenticate(&mut pam, &[&s.config, "forward_pass"]), PamCode::Success);
        assert_eq!(pam.authtok.as_deref(), Some("s3cret pässword"));
        let mut pam = s.pam(&[&format!("s3cret{}", code(0))]);
        assert_eq!(authenticate(&mut pam, &[&s.config, "forward_pass"]), PamCode::AuthErr, "replay");
        assert_eq!(pam.authtok, None);
    }

    #[test]
    fn nullok_and_account_management() {
        let s = Setup::new("");
        let mut pam = s.pam(&["x"]);
        assert_eq!(authenticate(&mut pam, &[&s.config, "nullok"]), PamCode::Ignore);
        assert!(pam.prompts.is_empty());
        let mut pam = s.pam(&["x"]);
        assert_eq!(authenticate(&mut pam, &[&s.config]), PamCode::AuthErr);
        assert_eq!(account(&mut s.pam(&[]), &[&s.config, "nullok"]), PamCode::Ignore);
        assert_eq!(account(&mut s.pam(&[]), &[&s.config]), PamCode::PermDenied);
        s.enroll("alice", "");
        assert_eq!(account(&mut s.pam(&[]), &[&s.config]), PamCode::Success);
    }

    #[test]
    fn challenge_becomes_a_second_prompt() {
        let s = Setup::new(
            "[[policies]]\nname = \"cr\"\nscope = \"authentication\"\n[policies.actions]\nchallenge_response = \"hotp\"\n",
        );
        s.enroll("alice", "1234");
        let mut pam = s.pam(&["1234", &code(0)]);
        assert_eq!(authenticate(&mut pam, &[&s.config]), PamCode::Success);
        assert_eq!(pam.prompts, vec!["OTP: ", "please enter otp: "]);
        let mut pam = s.pam(&["1234", "000000"]);
        assert_eq!(authenticate(&mut pam, &[&s.config]), PamCode::AuthErr);
    }

    #[test]
    fn a_broken_userstore_of_another_realm_does_not_stop_a_login() {
        let s = Setup::new(
            "[[resolvers]]\nname = \"other\"\ntype = \"passwdfile\"\npath = \"other-users\"\n\
             [[realms]]\nname = \"other\"\nresolvers = [\"other\"]\n",
        );
        std::fs::write(s.dir.path().join("other-users"), "carol:*\n").unwrap();
        s.enroll("alice", "");
        std::fs::write(s.dir.path().join("other-users"), "carol:*\nno colon here\n").unwrap();
        let mut pam = s.pam(&[&code(0)]);
        assert_eq!(authenticate(&mut pam, &[&s.config, "realm=corp"]), PamCode::Success);
        // A login of the broken realm fails, naming the file and line.
        let mut pam = s.pam(&[&code(1)]);
        pam.user = "carol".into();
        assert_eq!(authenticate(&mut pam, &[&s.config, "realm=other"]), PamCode::AuthErr);
        let log = pam.log.borrow().join("\n");
        assert!(log.contains("other-users") && log.contains("line 2"), "{log}");
    }

    #[test]
    fn bad_input_gives_codes_and_log_lines() {
        let s = Setup::new("");
        s.enroll("alice", "");
        let mut pam = s.pam(&[]);
        assert_eq!(authenticate(&mut pam, &[&s.config, "bogus"]), PamCode::ServiceErr);
        assert!(pam.log.borrow()[0].contains("unknown module argument 'bogus'"));
        let mut pam = s.pam(&[]);
        assert_eq!(authenticate(&mut pam, &["config=/nonexistent/otpd.toml"]), PamCode::AuthErr);
        assert!(pam.log.borrow()[0].contains("/nonexistent/otpd.toml"));
        let mut pam = s.pam(&[]);
        pam.user = String::new();
        assert_eq!(authenticate(&mut pam, &[&s.config]), PamCode::UserUnknown);
        let mut pam = s.pam(&[&"9".repeat(100_000)]);
        assert_eq!(authenticate(&mut pam, &[&s.config]), PamCode::AuthErr);
        let mut pam = s.pam(&[]);
        assert_eq!(authenticate(&mut pam, &[&s.config]), PamCode::ConvErr, "no answer to the prompt");
    }

    /// A stand-in for `otpd serve` on the socket: answers `n` connections
    /// with `answer` (`local_socket::answer`: what the daemon does).
    fn daemon(s: &Setup, n: usize, answer: fn(&Otpd, Request) -> Reply) -> std::thread::JoinHandle<()> {
        use std::io::Write;
        let listener = std::os::unix::net::UnixListener::bind(s.dir.path().join("pam.sock")).unwrap();
        let otpd = Otpd::open(Config::load(&s.dir.path().join("otpd.toml")).unwrap()).unwrap();
        std::thread::spawn(move || {
            for _ in 0..n {
                let (mut stream, _) = listener.accept().unwrap();
                let reply = answer(&otpd, local_socket::read_frame(&mut stream).unwrap());
                stream.write_all(&local_socket::encode(&reply)).unwrap();
            }
        })
    }

    #[test]
    fn the_daemon_answers_when_it_runs_and_the_module_itself_when_not() {
        let s = Setup::new("[pam]\nsocket = \"pam.sock\"\n");
        s.enroll("alice", "");
        let verdicts = |pam: &FakePam| pam.log.borrow().iter().filter(|l| l.contains("result=")).count();
        // Nobody on the socket: checked in-process, quietly; the verdict
        // line is the module's.
        let mut pam = s.pam(&[&code(0)]);
        assert_eq!(authenticate(&mut pam, &[&s.config]), PamCode::Success);
        assert!(pam.log.borrow().iter().all(|l| !l.contains("pam.sock")), "{:?}", pam.log.borrow());
        assert_eq!(verdicts(&pam), 1, "{:?}", pam.log.borrow());

        // The daemon answers the login (nullok: the status too), replays
        // included. It logs the verdicts; the module only with `debug`.
        let served = daemon(&s, 4, local_socket::answer);
        let mut pam = s.pam(&[&code(1)]);
        assert_eq!(authenticate(&mut pam, &[&s.config, "nullok"]), PamCode::Success);
        assert_eq!(verdicts(&pam), 0, "{:?}", pam.log.borrow());
        let mut pam = s.pam(&[&code(1)]);
        assert_eq!(authenticate(&mut pam, &[&s.config]), PamCode::AuthErr, "replay");
        assert_eq!(verdicts(&pam), 0, "{:?}", pam.log.borrow());
        let mut pam = s.pam(&[&code(2)]);
        assert_eq!(authenticate(&mut pam, &[&s.config, "debug"]), PamCode::Success);
        assert_eq!(verdicts(&pam), 1, "{:?}", pam.log.borrow());
        served.join().unwrap();
        std::fs::remove_file(s.dir.path().join("pam.sock")).unwrap();

        // The daemon's core fails: the login fails with its sentence.
        let failing = daemon(&s, 1, |_, _| Reply::Error { message: "database is locked".into() });
        let mut pam = s.pam(&[&code(3)]);
        assert_eq!(authenticate(&mut pam, &[&s.config]), PamCode::AuthErr);
        assert!(pam.log.borrow().iter().any(|l| l.contains("database is locked")), "{:?}", pam.log.borrow());
        failing.join().unwrap();
        std::fs::remove_file(s.dir.path().join("pam.sock")).unwrap();

        // An answer that does not fit: not trusted, checked in-process.
        let odd = daemon(&s, 1, |_, _| Reply::NoToken);
        let mut pam = s.pam(&[&code(3)]);
        assert_eq!(authenticate(&mut pam, &[&s.config]), PamCode::Success);
        assert!(pam.log.borrow().iter().any(|l| l.contains("does not fit")), "{:?}", pam.log.borrow());
        assert_eq!(verdicts(&pam), 1, "decided in this process: {:?}", pam.log.borrow());
        odd.join().unwrap();
    }

    #[test]
    fn rhost_and_service_reach_the_audit() {
        let s = Setup::new("");
        s.enroll("alice", "");
        let mut pam = s.pam(&[&code(0)]);
        pam.rhost = Some("192.0.2.7".into());
        assert_eq!(authenticate(&mut pam, &[&s.config]), PamCode::Success);
        let otpd = Otpd::open(Config::load(&s.dir.path().join("otpd.toml")).unwrap()).unwrap();
        let audit = otpd.audit(1).unwrap();
        assert_eq!(audit[0].actor, "pam:test");
        assert_eq!(audit[0].client.as_deref(), Some("192.0.2.7"));
    }
}

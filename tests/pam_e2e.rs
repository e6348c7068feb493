//! End-to-end: the PAM front. Every test writes its own PAM service file
//! `/etc/pam.d/otpd-test-*` that names the built `libpam_otpd.so` by absolute
//! path, and logs in with `pamtester` (Linux-PAM's own conversation,
//! answers read from stdin one line per prompt), with OTP values computed by
//! oathtool. Writing /etc/pam.d needs root; run as another user the tests
//! print a note and pass (CI runs them as root).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// How long one pamtester run may take before the test calls it hung.
const PAM_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Fixtures

/// True (after printing why) when the tests cannot run here: pamtester
/// only reads service files from /etc/pam.d, which only root may write.
fn skip() -> bool {
    let uid = Command::new("id").arg("-u").output().expect("cannot run id -u");
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        return false;
    }
    eprintln!(
        "note: PAM end-to-end test skipped: it writes /etc/pam.d/otpd-test-* and needs root \
         (CI runs the tests as root; see .ci/run)"
    );
    true
}

/// The built module, `libpam_otpd.so` beside the `otpd` binary; built with
/// the same profile and target directory if missing (`cargo test
/// --workspace` builds it anyway).
fn module() -> &'static Path {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE.get_or_init(|| {
        let module = pam_module();
        assert!(module.exists(), "{} missing after building pam_otpd", module.display());
        module
    })
}

/// The module's line arguments for `env`: the absolute module path, the
/// configuration, then `args`.
fn otpd(env: &Env, args: &str) -> String {
    format!("{} config={} {args}", module().display(), env.config.display())
}

/// A PAM service file `/etc/pam.d/otpd-test-<pid>-<n>`, removed on drop.
struct Service {
    name: String,
    path: PathBuf,
}

impl Service {
    /// `lines` are full PAM lines (`auth required /path/... args`).
    fn new(lines: &[String]) -> Service {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("otpd-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let path = Path::new("/etc/pam.d").join(&name);
        let mut text = String::from("# written by otpd's tests/pam_e2e.rs; removed when the test ends\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Service { name, path }
    }

    /// One `auth required pam_otpd` line with `args`.
    fn auth(env: &Env, args: &str) -> Service {
        Service::new(&[format!("auth required {}", otpd(env, args))])
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An executable shell script in the test's directory (for pam_exec).
fn script(env: &Env, name: &str, body: &str) -> PathBuf {
    let path = env.path(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A pam_exec line that makes Linux-PAM ask `Password: ` and store the
/// answer as PAM_AUTHTOK (pam_exec's `expose_authtok`) before our module.
/// The script reads the token so that pam_exec never writes to a closed pipe.
fn authtok_setter(env: &Env) -> String {
    let consume = script(env, "consume.sh", "cat >/dev/null\nexit 0\n");
    format!("auth optional pam_exec.so expose_authtok {}", consume.display())
}

/// What one pamtester run did.
#[derive(Debug)]
struct Pam {
    status: ExitStatus,
    stdout: String,
    /// Prompts (misc_conv writes them to stderr) and pamtester's error.
    stderr: String,
}

impl Pam {
    fn accepted(&self) -> bool {
        self.status.code() == Some(0)
    }

    fn assert_accept(&self, what: &str) {
        assert!(
            self.accepted() && self.stdout.contains("successfully authenticated"),
            "{what}: expected success, got {self:?}"
        );
    }

    /// A clean refusal: exit status 1 (never a signal: the host survived)
    /// and pamtester's PAM error message.
    fn assert_reject(&self, what: &str) {
        assert_eq!(self.status.signal(), None, "{what}: pamtester was killed by a signal: {self:?}");
        assert_eq!(self.status.code(), Some(1), "{what}: expected failure, got {self:?}");
        assert!(!self.stdout.contains("successfully"), "{what}: {self:?}");
        assert!(self.stderr.contains("pamtester: "), "{what}: no PAM error reported: {self:?}");
    }

    fn assert_auth_failure(&self, what: &str) {
        self.assert_reject(what);
        assert!(self.stderr.contains("Authentication failure"), "{what}: {self:?}");
    }

    /// How often `prompt` was shown.
    fn prompts(&self, prompt: &str) -> usize {
        self.stderr.matches(prompt).count()
    }
}

/// Starts `pamtester [-I item]... SERVICE USER OP` and writes `answers`,
/// one line each, to its stdin (then closes it).
fn spawn_pamtester(
    pamtester: Command,
    service: &Service,
    user: &str,
    op: &str,
    answers: &[&str],
    items: &[&str],
) -> Child {
    let mut cmd = pamtester;
    for item in items {
        cmd.arg("-I").arg(item);
    }
    let mut child = cmd
        .arg(&service.name)
        .arg(user)
        .arg(op)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run pamtester ({e}); install it (see .ci/run)"));
    let mut stdin = child.stdin.take().unwrap();
    let mut input = String::new();
    for answer in answers {
        input.push_str(answer);
        input.push('\n');
    }
    // pamtester may stop reading early (a refusal before the prompt).
    let _ = stdin.write_all(input.as_bytes());
    child
}

/// Waits (at most PAM_TIMEOUT) for a pamtester started by spawn_pamtester.
fn finish(mut child: Child) -> Pam {
    let deadline = Instant::now() + PAM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pamtester hung for {PAM_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    Pam { status, stdout, stderr }
}

/// One pamtester run as root.
fn pam_op(service: &Service, user: &str, op: &str, answers: &[&str], items: &[&str]) -> Pam {
    finish(spawn_pamtester(Command::new("pamtester"), service, user, op, answers, items))
}

fn login(service: &Service, user: &str, answers: &[&str]) -> Pam {
    pam_op(service, user, "authenticate", answers, &[])
}

fn otp(counter: u64) -> String {
    oath_hotp(RFC_KEY, counter, 6)
}

fn count(env: &Env, serial: &str) -> u64 {
    env.json(&["token", "show", serial])["count"].as_u64().unwrap()
}

/// Appends TOML to the test's configuration.
fn append_config(env: &Env, text: &str) {
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str(text);
    std::fs::write(&env.config, config).unwrap();
}

/// Env with alice's HOTP token H1 (RFC key, counter 0) without PIN.
fn env_without_pin() -> Env {
    let env = Env::new();
    env.init_hotp("H1", "alice", "");
    env
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn pin_and_otp_accepted_with_default_and_custom_prompt() {
    if skip() {
        return;
    }
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let service = Service::auth(&env, "");
    let pam = login(&service, "alice", &[&format!("1234{}", otp(0))]);
    pam.assert_accept("PIN+OTP");
    assert_eq!(pam.prompts("OTP: "), 1, "default prompt: {pam:?}");
    assert_eq!(count(&env, "H1"), 1);

    let custom = Service::auth(&env, "prompt=Passcode:");
    let pam = login(&custom, "alice", &[&format!("1234{}", otp(1))]);
    pam.assert_accept("PIN+OTP, prompt=");
    assert!(pam.stderr.contains("Passcode:") && !pam.stderr.contains("OTP: "), "{pam:?}");
    assert_eq!(count(&env, "H1"), 2);
}

#[test]
fn wrong_otp_and_wrong_pin_rejected() {
    if skip() {
        return;
    }
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let service = Service::auth(&env, "");
    let wrong = if otp(0) == "000000" { "111111" } else { "000000" };
    login(&service, "alice", &[&format!("1234{wrong}")]).assert_auth_failure("wrong OTP");
    login(&service, "alice", &[&format!("9999{}", otp(0))]).assert_auth_failure("wrong PIN");
    login(&service, "alice", &[""]).assert_auth_failure("empty answer");
    assert_eq!(count(&env, "H1"), 0, "a refused login consumed the counter");
    assert_eq!(env.json(&["token", "show", "H1"])["failcount"], 3);
    // The right answer still works afterwards.
    login(&service, "alice", &[&format!("1234{}", otp(0))]).assert_accept("after failures");
}

#[test]
fn replayed_otp_rejected() {
    if skip() {
        return;
    }
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let service = Service::auth(&env, "");
    let first = format!("1234{}", otp(0));
    login(&service, "alice", &[&first]).assert_accept("first use");
    login(&service, "alice", &[&first]).assert_auth_failure("replay");
    let message: String = env
        .db()
        .query_row(
            "SELECT message FROM audit WHERE action = 'validate_check' ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(message, "wrong otp value. previous otp used again");
    login(&service, "alice", &[&format!("1234{}", otp(1))]).assert_accept("next OTP");
    assert_eq!(count(&env, "H1"), 2);
}

#[test]
fn use_first_pass_takes_the_stacked_authtok() {
    if skip() {
        return;
    }
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let stacked =
        Service::new(&[authtok_setter(&env), format!("auth required {}", otpd(&env, "use_first_pass"))]);
    let pam = login(&stacked, "alice", &[&format!("1234{}", otp(0))]);
    pam.assert_accept("use_first_pass after pam_exec");
    assert_eq!(pam.prompts("Password: "), 1, "{pam:?}");
    assert_eq!(pam.prompts("OTP: "), 0, "use_first_pass must not prompt: {pam:?}");

    // A wrong stacked value is final: no second chance at a prompt.
    let pam = login(&stacked, "alice", &["1234000000", &format!("1234{}", otp(1))]);
    pam.assert_auth_failure("use_first_pass, wrong stacked value");
    assert_eq!(pam.prompts("OTP: "), 0, "{pam:?}");

    // Nothing stacked: no PAM_AUTHTOK, so failure without a prompt, even
    // though a valid answer is waiting on stdin.
    let alone = Service::auth(&env, "use_first_pass");
    let pam = login(&alone, "alice", &[&format!("1234{}", otp(1))]);
    pam.assert_auth_failure("use_first_pass without a stacked module");
    assert_eq!(pam.prompts("OTP: "), 0, "{pam:?}");
    assert_eq!(count(&env, "H1"), 1);
}

#[test]
fn try_first_pass_falls_back_to_a_prompt() {
    if skip() {
        return;
    }
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let service =
        Service::new(&[authtok_setter(&env), format!("auth required {}", otpd(&env, "try_first_pass"))]);
    // The stacked value is right: no prompt of ours.
    let pam = login(&service, "alice", &[&format!("1234{}", otp(0))]);
    pam.assert_accept("try_first_pass, right stacked value");
    assert_eq!(pam.prompts("OTP: "), 0, "{pam:?}");
    // The stacked value is wrong: our prompt, and its answer counts.
    let pam = login(&service, "alice", &["1234000000", &format!("1234{}", otp(1))]);
    pam.assert_accept("try_first_pass, wrong stacked value then prompt");
    assert_eq!(pam.prompts("Password: "), 1, "{pam:?}");
    assert_eq!(pam.prompts("OTP: "), 1, "{pam:?}");
    // Both wrong.
    let pam = login(&service, "alice", &["1234000000", "1234000000"]);
    pam.assert_auth_failure("try_first_pass, both wrong");
    assert_eq!(count(&env, "H1"), 2);
}

#[test]
fn forward_pass_hands_the_password_to_the_next_module() {
    if skip() {
        return;
    }
    let env = env_without_pin();
    let received = env.path("received");
    let check = script(
        &env,
        "check-password.sh",
        &format!("tr -d '\\000' > {0}\n[ \"$(cat {0})\" = alicepw ]\n", received.display()),
    );
    let service = Service::new(&[
        format!("auth required {}", otpd(&env, "forward_pass")),
        format!("auth required pam_exec.so expose_authtok quiet {}", check.display()),
    ]);
    let pam = login(&service, "alice", &[&format!("alicepw{}", otp(0))]);
    pam.assert_accept("password+OTP");
    assert_eq!(pam.prompts("OTP: ") + pam.prompts("Password: "), 1, "one prompt only: {pam:?}");
    assert_eq!(std::fs::read_to_string(&received).unwrap(), "alicepw", "PAM_AUTHTOK handed on");
    assert_eq!(count(&env, "H1"), 1);

    // Right OTP, wrong password: our module accepts, the next one refuses.
    std::fs::remove_file(&received).unwrap();
    let pam = login(&service, "alice", &[&format!("wrongpw{}", otp(1))]);
    // pam_exec reports a failing command as PAM_SYSTEM_ERR.
    pam.assert_reject("wrong password");
    assert_eq!(std::fs::read_to_string(&received).unwrap(), "wrongpw");
    assert_eq!(count(&env, "H1"), 2);

    // Wrong OTP: refused by us, and the password part is not handed on
    // (pam_exec, still run after a `required` failure, finds no
    // PAM_AUTHTOK and asks for one, which stdin no longer holds).
    std::fs::remove_file(&received).unwrap();
    let pam = login(&service, "alice", &["alicepw000000"]);
    pam.assert_auth_failure("wrong OTP");
    if let Ok(handed) = std::fs::read_to_string(&received) {
        assert!(!handed.starts_with("alicepw"), "PAM_AUTHTOK set after a wrong OTP: {handed:?}");
    }
    // Too short to hold an OTP.
    login(&service, "alice", &["12345"]).assert_auth_failure("shorter than an OTP");
    assert_eq!(count(&env, "H1"), 2);
}

#[test]
fn nullok_lets_users_without_token_pass_to_the_next_module() {
    if skip() {
        return;
    }
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let permit = "auth required pam_permit.so".to_owned();
    let with = Service::new(&[format!("auth required {}", otpd(&env, "nullok")), permit.clone()]);
    let without = Service::new(&[format!("auth required {}", otpd(&env, "")), permit]);
    // bob owns no token.
    login(&with, "bob", &["123456"]).assert_accept("nullok, no token");
    login(&without, "bob", &["123456"]).assert_auth_failure("no nullok, no token");
    // nullok does nothing for a user who has a token.
    login(&with, "alice", &["1234000000"]).assert_auth_failure("nullok, token, wrong OTP");
    login(&with, "alice", &[&format!("1234{}", otp(0))]).assert_accept("nullok, token, right OTP");
}

#[test]
fn challenge_response_asks_a_second_prompt() {
    if skip() {
        return;
    }
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    append_config(&env, CHALLENGE_POLICY);
    let service = Service::auth(&env, "");
    let pam = login(&service, "alice", &["1234", &otp(0)]);
    pam.assert_accept("PIN, then OTP at the challenge");
    let first = pam.stderr.find("OTP: ").unwrap_or_else(|| panic!("no first prompt: {pam:?}"));
    let second =
        pam.stderr.find("please enter otp: ").unwrap_or_else(|| panic!("no challenge prompt: {pam:?}"));
    assert!(first < second, "{pam:?}");
    assert_eq!(count(&env, "H1"), 1);

    // A wrong answer to the challenge fails; so does no answer.
    login(&service, "alice", &["1234", "000000"]).assert_auth_failure("wrong OTP at the challenge");
    // No answer at all (stdin at its end): a conversation error.
    login(&service, "alice", &["1234"]).assert_reject("no answer to the challenge");
    // PIN+OTP in one go still works with the policy on.
    let pam = login(&service, "alice", &[&format!("1234{}", otp(1))]);
    pam.assert_accept("PIN+OTP with challenge-response on");
    assert_eq!(pam.prompts("please enter otp: "), 0, "{pam:?}");
}

/// actor, front, client, user, realm, success of an audit record.
type AuditRow = (String, String, Option<String>, Option<String>, Option<String>, bool);

#[test]
fn audit_records_service_and_rhost() {
    if skip() {
        return;
    }
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let service = Service::auth(&env, "");
    let typed = format!("1234{}", otp(0));
    pam_op(&service, "alice", "authenticate", &[&typed], &["rhost=192.0.2.7"]).assert_accept("with rhost");
    pam_op(&service, "alice", "authenticate", &["1234000000"], &["rhost=2001:db8::7"])
        .assert_auth_failure("with IPv6 rhost");
    let rows: Vec<AuditRow> = env
        .db()
        .prepare(
            "SELECT actor, front, client, user, realm, success FROM audit \
             WHERE action = 'validate_check' ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let actor = format!("pam:{}", service.name);
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        rows,
        vec![
            (actor.clone(), "pam".into(), some("192.0.2.7"), some("alice"), some("corp"), true),
            (actor, "pam".into(), some("2001:db8::7"), some("alice"), some("corp"), false),
        ]
    );
    let leaked: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM audit WHERE instr(message, ?1) > 0 OR instr(message, ?2) > 0",
            [&typed, &otp(0)],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leaked, 0, "the audit trail holds the typed secret");

    // sshd passes a host name when UseDNS is on: that must not cost the login.
    pam_op(&service, "alice", "authenticate", &[&format!("1234{}", otp(1))], &["rhost=gw.example.org"])
        .assert_accept("host name as rhost");
}

#[test]
fn a_running_daemon_answers_over_the_pam_socket() {
    if skip() {
        return;
    }
    let env = env_without_pin();
    let socket = env.path("pam.sock");
    let port = common::server::free_port();
    append_config(
        &env,
        &format!("{}\n[pam]\nsocket = \"{}\"\n", radius_section(port, "s3cret"), socket.display()),
    );
    let service = Service::auth(&env, "");
    let server = common::server::Server::start(&env, &[format!("127.0.0.1:{port}")]);
    assert!(server.wait_for("answering pam_otpd on", Duration::from_secs(10)), "{}", server.log());
    assert_eq!(mode(&socket), 0o600, "the socket is for root and otpd only");

    pam_op(&service, "alice", "authenticate", &[&otp(0)], &["rhost=192.0.2.7"])
        .assert_accept("through the daemon");
    let accepted = format!("pam: user=alice realm=- service={} rhost=192.0.2.7 result=accept", service.name);
    assert!(server.wait_for(&accepted, Duration::from_secs(5)), "the daemon answered: {}", server.log());
    login(&service, "alice", &[&otp(0)]).assert_auth_failure("replay, through the daemon");
    assert!(server.wait_for("result=reject", Duration::from_secs(5)), "{}", server.log());
    assert!(!server.log().contains(&otp(0)), "the OTP reached the daemon's log: {}", server.log());
    // The audit trail is the one an in-process login writes.
    let (actor, front, client): (String, String, Option<String>) = env
        .db()
        .query_row(
            "SELECT actor, front, client FROM audit WHERE action = 'validate_check' ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (actor, front, client.as_deref()),
        (format!("pam:{}", service.name), "pam".into(), Some("192.0.2.7"))
    );

    // Without the daemon (its socket removed, then a stale one left
    // behind), the module checks in-process: a login never depends on it.
    drop(server);
    assert!(!socket.exists(), "otpd serve removes its socket when it stops");
    login(&service, "alice", &[&otp(1)]).assert_accept("no daemon");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    login(&service, "alice", &[&otp(1)]).assert_auth_failure("replay, in-process");
    login(&service, "alice", &[&otp(2)]).assert_accept("stale socket");
    assert_eq!(count(&env, "H1"), 3);
}

#[test]
fn realm_argument_and_user_at_realm() {
    if skip() {
        return;
    }
    let env = Env::new();
    env.ok(&[
        "token", "init", "--type", "hotp", "--serial", "S1", "--otpkey", RFC_KEY, "--user", "alice",
        "--realm", "sales",
    ]);
    let sales = Service::auth(&env, "realm=sales");
    let default = Service::auth(&env, "");
    login(&sales, "alice", &[&otp(0)]).assert_accept("realm=sales");
    // alice@corp (the default realm) owns no token.
    login(&default, "alice", &[&otp(1)]).assert_auth_failure("default realm");
    login(&default, "alice@sales", &[&otp(1)]).assert_accept("alice@sales");
    assert_eq!(count(&env, "S1"), 2);
}

#[test]
fn account_management() {
    if skip() {
        return;
    }
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let strict = Service::new(&[format!("account required {}", otpd(&env, ""))]);
    let lenient = Service::new(&[
        format!("account required {}", otpd(&env, "nullok")),
        "account required pam_permit.so".to_owned(),
    ]);
    let acct = |service: &Service, user: &str| pam_op(service, user, "acct_mgmt", &[], &[]);
    let pam = acct(&strict, "alice");
    assert!(pam.accepted() && pam.stdout.contains("account management done"), "usable token: {pam:?}");
    let pam = acct(&lenient, "bob");
    assert!(pam.accepted(), "nullok, no token: {pam:?}");
    env.ok(&["token", "disable", "H1"]);
    acct(&strict, "alice").assert_reject("only token disabled");
    acct(&lenient, "alice").assert_reject("only token disabled, nullok");
    env.ok(&["token", "enable", "H1"]);
    env.ok(&["token", "set", "H1", "--validity-end", "2020-01-01T00:00:00Z"]);
    acct(&strict, "alice").assert_reject("only token expired");
}

#[test]
fn bad_arguments_and_config_fail_cleanly() {
    if skip() {
        return;
    }
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let good = format!("1234{}", otp(0));
    let unknown = Service::auth(&env, "no_such_option");
    login(&unknown, "alice", &[&good]).assert_reject("unknown argument");
    let missing =
        Service::new(&[format!("auth required {} config=/nonexistent/otpd.toml", module().display())]);
    login(&missing, "alice", &[&good]).assert_auth_failure("missing config");
    let no_config_value = Service::new(&[format!("auth required {} config=", module().display())]);
    login(&no_config_value, "alice", &[&good]).assert_reject("empty config=");
    let broken = env.path("broken.toml");
    std::fs::write(&broken, "database = \nthis is not toml\n").unwrap();
    let broken_service =
        Service::new(&[format!("auth required {} config={}", module().display(), broken.display())]);
    login(&broken_service, "alice", &[&good]).assert_auth_failure("broken config");
    assert_eq!(count(&env, "H1"), 0, "an OTP was consumed by a misconfigured service");

    // No config= and no /etc/otpd/otpd.toml: refused, and no store is
    // made up in the host's working directory (sshd's is /).
    if !Path::new("/etc/otpd/otpd.toml").exists() {
        let cwd = tempfile::tempdir().unwrap();
        let bare = Service::new(&[format!("auth required {}", module().display())]);
        let mut pamtester = Command::new("pamtester");
        pamtester.current_dir(cwd.path()).env_remove("OTPD_CONFIG");
        finish(spawn_pamtester(pamtester, &bare, "alice", "authenticate", &[&good], &[]))
            .assert_auth_failure("no config at all");
        let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "files created in the working directory: {left:?}");
    }

    // Bad input from the user side: an empty login, an absurdly long
    // answer (misc_conv cuts lines at 511 bytes), an unknown user.
    let service = Service::auth(&env, "");
    login(&service, "", &[&good]).assert_reject("empty user");
    login(&service, "alice", &[&"7".repeat(600)]).assert_auth_failure("long answer");
    login(&service, "mallory", &[&good]).assert_auth_failure("unknown user");
    login(&service, "alice", &[&good]).assert_accept("the module still works");
}

/// sudo is set-uid root and keeps the caller's environment while it runs
/// PAM: `$OTPD_CONFIG` must not let a user pick the configuration (and with
/// it a store and a userstore of their own) for a service line without
/// `config=`.
#[test]
fn environment_cannot_choose_the_configuration() {
    if skip() {
        return;
    }
    let env = env_without_pin();
    let cwd = tempfile::tempdir().unwrap();
    let bare = Service::new(&[format!("auth required {}", module().display())]);
    let mut pamtester = Command::new("pamtester");
    pamtester.current_dir(cwd.path()).env("OTPD_CONFIG", &env.config);
    finish(spawn_pamtester(pamtester, &bare, "alice", "authenticate", &[&otp(0)], &[]))
        .assert_auth_failure("configuration from $OTPD_CONFIG");
    assert_eq!(count(&env, "H1"), 0, "the module used the store named by $OTPD_CONFIG");
}

#[test]
fn unprivileged_caller_fails_cleanly() {
    if skip() {
        return;
    }
    // A world-readable copy of the module: the target dir may not be.
    let public = tempfile::tempdir().unwrap();
    std::fs::set_permissions(public.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = public.path().join("pam_otpd.so");
    std::fs::copy(module(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let service =
        Service::new(&[format!("auth required {} config={}", copy.display(), env.config.display())]);
    let nobody = || {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "pamtester"]);
        cmd
    };
    let as_nobody =
        |answer: &str| finish(spawn_pamtester(nobody(), &service, "alice", "authenticate", &[answer], &[]));
    // The configuration is in a 0700 directory of root's.
    as_nobody(&format!("1234{}", otp(0))).assert_auth_failure("unreadable config");
    // Everything readable, nothing writable: an OTP that cannot be
    // committed as used must not let anyone in.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["otpd.toml", "users", "otpd.db", "otpd.db-wal", "otpd.db-shm"] {
        if env.path(name).exists() {
            std::fs::set_permissions(env.path(name), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    // A key file readable by others is refused outright: nobody gets it
    // as its owner, so that the login reaches the store.
    nix::unistd::chown(&env.path("otpd.key"), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    as_nobody(&format!("1234{}", otp(0))).assert_auth_failure("read-only database");
    assert_eq!(count(&env, "H1"), 0);
    // Root can still log in with that OTP.
    login(&service, "alice", &[&format!("1234{}", otp(0))]).assert_accept("root after nobody");
}

/// A database another process holds locked refuses the login after the
/// store's busy timeout instead of hanging it; the OTP stays unused.
#[test]
fn locked_database_refuses_within_a_bounded_time() {
    if skip() {
        return;
    }
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let service = Service::auth(&env, "");
    let good = format!("1234{}", otp(0));
    let locker = env.db();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let pam = login(&service, "alice", &[&good]);
    let took = started.elapsed();
    locker.execute_batch("ROLLBACK").unwrap();
    pam.assert_reject("database locked");
    assert!(took < Duration::from_secs(20), "the login waited {took:?} on a locked database");
    login(&service, "alice", &[&good]).assert_accept("lock released, same OTP");
}

#[test]
fn pamtester_and_otpd_check_race_for_the_same_otp() {
    if skip() {
        return;
    }
    const ROUNDS: u64 = 20;
    let env = env_without_pin();
    // Each round's loser counts as a failure; keep them from locking H1.
    env.ok(&["token", "set", "H1", "--max-fail", "100000"]);
    let service = Service::auth(&env, "");
    let (mut pam_wins, mut cli_wins) = (0, 0);
    for round in 0..ROUNDS {
        let code = otp(round);
        let pam =
            spawn_pamtester(Command::new("pamtester"), &service, "alice", "authenticate", &[&code], &[]);
        let cli = env
            .command(&["check", "alice", &code])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let cli = cli.wait_with_output().unwrap();
        let pam = finish(pam);
        let cli_accepted = match cli.status.code() {
            Some(0) => true,
            Some(1) => false,
            other => {
                panic!("round {round}: otpd check exit {other:?}: {}", String::from_utf8_lossy(&cli.stderr))
            }
        };
        if pam.accepted() {
            pam.assert_accept("race");
        } else {
            pam.assert_auth_failure("race");
        }
        assert!(pam.accepted() != cli_accepted, "round {round}: pam {pam:?}, check accepted: {cli_accepted}");
        if pam.accepted() {
            pam_wins += 1;
        } else {
            cli_wins += 1;
        }
    }
    eprintln!("race: pamtester won {pam_wins}, otpd check won {cli_wins} of {ROUNDS} rounds");
    assert_eq!(count(&env, "H1"), ROUNDS);
}

// ---------------------------------------------------------------------------
// Syslog

/// A datagram socket bound at /dev/log while no syslog daemon owns it,
/// read on a thread (a full queue would block every syslog(3) caller, the
/// other tests' pamtesters included); removed on drop.
struct SyslogSink {
    log: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl SyslogSink {
    fn bind() -> Option<SyslogSink> {
        if Path::new("/dev/log").exists() {
            return None;
        }
        let socket = UnixDatagram::bind("/dev/log").ok()?;
        std::fs::set_permissions("/dev/log", std::fs::Permissions::from_mode(0o666)).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (Arc::clone(&log), Arc::clone(&stop));
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stopped.load(Ordering::SeqCst) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let mut log = sink.lock().unwrap();
                    log.push_str(&String::from_utf8_lossy(&buf[..n]));
                    log.push('\n');
                }
            }
        });
        Some(SyslogSink { log, stop, reader: Some(reader) })
    }

    /// Everything received so far, one message a line.
    fn text(&self) -> String {
        // Let datagrams already sent arrive.
        std::thread::sleep(Duration::from_millis(200));
        self.log.lock().unwrap().clone()
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file("/dev/log");
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[test]
fn errors_are_logged_without_secrets() {
    if skip() {
        return;
    }
    let Some(sink) = SyslogSink::bind() else {
        eprintln!("note: /dev/log belongs to a syslog daemon here; syslog lines not checked");
        return;
    };
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let typed = format!("1234{}", otp(0));
    let unknown = Service::auth(&env, "debug no_such_option");
    login(&unknown, "alice", &[&typed]).assert_reject("unknown argument");
    let missing =
        Service::new(&[format!("auth required {} config=/nonexistent/otpd.toml", module().display())]);
    login(&missing, "alice", &[&typed]).assert_auth_failure("missing config");
    let debug = Service::auth(&env, "debug");
    login(&debug, "alice", &["1234000000"]).assert_auth_failure("wrong OTP");
    login(&debug, "alice", &[&typed]).assert_accept("right OTP, debug");
    let log = sink.text();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("pam_otpd")).collect();
    assert!(ours.iter().any(|l| l.contains("no_such_option")), "unknown argument not logged: {log}");
    assert!(ours.iter().any(|l| l.contains("/nonexistent/otpd.toml")), "missing config not logged: {log}");
    for secret in [typed.as_str(), &otp(0), "1234000000"] {
        assert!(!log.contains(secret), "syslog holds the secret {secret}: {log}");
    }
}

// ---------------------------------------------------------------------------
// The example service files

/// Every module the examples in config/pam.d name exists on this system
/// (pam_otpd.so aside), every `@include` is a file of /etc/pam.d, and
/// pam_otpd's arguments, also in the commented alternatives, are the ones
/// the module knows.
#[test]
fn example_service_files_are_consistent() {
    let Some(module_dir) = [
        "/lib/x86_64-linux-gnu/security",
        "/usr/lib/x86_64-linux-gnu/security",
        "/usr/lib64/security",
        "/lib/security",
        "/usr/lib/security",
    ]
    .iter()
    .map(Path::new)
    .find(|d| d.join("pam_unix.so").exists()) else {
        eprintln!("note: no PAM module directory with pam_unix.so here; examples not checked");
        return;
    };
    let known = ["try_first_pass", "use_first_pass", "forward_pass", "nullok", "debug"];
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/pam.d");
    for name in ["sshd-otpd", "sudo-otpd"] {
        let text = std::fs::read_to_string(examples.join(name)).unwrap();
        let mut otpd_lines = 0;
        for line in text.lines() {
            let trimmed = line.trim();
            // Commented alternatives look like `#   auth   requisite  pam_otpd.so ...`.
            let body = trimmed.trim_start_matches('#').trim();
            let words: Vec<&str> = body.split_whitespace().collect();
            let is_rule = matches!(words.first(), Some(&("auth" | "account" | "session" | "password")));
            if trimmed.starts_with('#') && !(is_rule && words.contains(&"pam_otpd.so")) {
                continue;
            }
            if let Some(include) = body.strip_prefix("@include") {
                let include = include.trim();
                if !Path::new("/etc/pam.d").join(include).exists() {
                    eprintln!("note: {name}: @include {include}: no such file on this system");
                }
                continue;
            }
            if words.is_empty() {
                continue;
            }
            assert!(is_rule, "{name}: not a PAM rule: {line}");
            // The control is one word or a bracketed list of words.
            let mut rest = &words[1..];
            if rest[0].starts_with('[') {
                let end = rest.iter().position(|w| w.ends_with(']')).expect("unclosed [");
                rest = &rest[end + 1..];
            } else {
                rest = &rest[1..];
            }
            let module = rest[0];
            if module == "pam_otpd.so" {
                otpd_lines += 1;
                for arg in &rest[1..] {
                    let key = arg.split_once('=').map_or(*arg, |(k, _)| k);
                    let valued = matches!(key, "config" | "realm" | "prompt") && arg.contains('=');
                    assert!(valued || known.contains(arg), "{name}: unknown pam_otpd argument {arg}");
                }
            } else {
                assert!(
                    module_dir.join(module).exists(),
                    "{name}: {module} is not in {}",
                    module_dir.display()
                );
            }
        }
        assert!(otpd_lines >= 2, "{name}: expected auth and account lines for pam_otpd");
    }
}

//! End-to-end: policies (issue 5) through the built `otpd` binary. Every
//! test builds its own Env, appends `[[policies]]` tables to its
//! configuration and drives `otpd token ...`, `otpd check`, `otpd policy
//! ...` and once `otpd serve` with radtest; OTP values come from oathtool,
//! userstore hashes from mkpasswd (alice's password is `alicepw`, bob's
//! `bobpw`).

mod common;

use std::process::{Child, Command, Stdio};

use common::server::{Server, free_port};
use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Helpers

/// One `[[policies]]` table: `filters` and `actions` are `key = value` lines.
fn policy(name: &str, scope: &str, filters: &str, actions: &str) -> String {
    format!(
        "\n[[policies]]\nname = \"{name}\"\nscope = \"{scope}\"\n{filters}\n[policies.actions]\n{actions}\n"
    )
}

/// Appends `text` (policy tables) to the configuration of `env`.
fn append(env: &Env, text: &str) {
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str(text);
    std::fs::write(&env.config, config).unwrap();
}

/// An Env whose configuration carries `policies`.
fn env_with(policies: &str) -> Env {
    let env = Env::new();
    append(&env, policies);
    env
}

/// HOTP value of the RFC key at `counter`, by oathtool.
fn hotp(counter: u64) -> String {
    oath_hotp(RFC_KEY, counter, 6)
}

/// `otpd check ARGS --json`: (exit status, the JSON document).
fn check(env: &Env, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = env.run(&all);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "otpd {all:?} printed no JSON (exit {:?}); stdout: {} stderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), doc)
}

fn show(env: &Env, serial: &str) -> Value {
    env.json(&["token", "show", serial])
}

/// The serials of all tokens, sorted.
fn serials(env: &Env) -> Vec<String> {
    let mut all: Vec<String> = env
        .json(&["token", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["serial"].as_str().unwrap().to_owned())
        .collect();
    all.sort();
    all
}

/// A token's realms, sorted.
fn realms(token: &Value) -> Vec<String> {
    let mut all: Vec<String> =
        token["realms"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
    all.sort();
    all
}

/// An unassigned HOTP token with the RFC key in `realm` (a pool token).
fn pool(env: &Env, serial: &str, realm: &str) {
    env.ok(&["token", "init", "--type", "hotp", "--serial", serial, "--otpkey", RFC_KEY, "--realm", realm]);
}

/// The pool token is as `pool` made it: no owner, no PIN, counter 0.
fn assert_untouched(env: &Env, serial: &str) {
    let t = show(env, serial);
    assert_eq!(t["user"], Value::Null, "{serial} must stay unassigned: {t}");
    assert_eq!(t["count"], 0, "{serial} must not have consumed an OTP: {t}");
    assert_eq!(t["failcount"], 0, "{t}");
    assert_eq!(t["pin_set"], false, "{t}");
}

fn message(doc: &Value) -> &str {
    doc["message"].as_str().unwrap_or_else(|| panic!("no message in {doc}"))
}

// ---------------------------------------------------------------------------
// 1. Enrollment limits

#[test]
fn max_token_per_user_refuses_the_third_token() {
    let env = env_with(&policy("two-each", "enrollment", "", "max_token_per_user = 2"));
    env.init_hotp("H1", "alice", "1");
    env.ok(&["token", "init", "--type", "totp", "--genkey", "--serial", "T1", "--user", "alice"]);
    let before = serials(&env);
    let err =
        env.fails(&["token", "init", "--type", "hotp", "--genkey", "--serial", "H3", "--user", "alice"]);
    assert!(err.contains("The number of tokens for this user is limited!"), "{err}");
    assert!(err.contains("(max_token_per_user = 2, policy 'two-each')"), "{err}");
    assert_eq!(serials(&env), before, "a refused init creates nothing");

    // Assigning a pool token counts the same way; the token stays in the pool.
    pool(&env, "P1", "corp");
    let err = env.fails(&["token", "assign", "P1", "--user", "alice", "--pin", "9"]);
    assert!(err.contains("The number of tokens for this user is limited!"), "{err}");
    assert_untouched(&env, "P1");
    // Another user is not limited by alice's tokens.
    env.ok(&["token", "assign", "P1", "--user", "bob"]);
    assert_eq!(show(&env, "P1")["user"], "bob");
}

#[test]
fn type_limit_refuses_a_second_hotp_but_not_a_totp() {
    let env = env_with(&policy("one-hotp", "enrollment", "", "hotp_max_token_per_user = 1"));
    env.init_hotp("H1", "alice", "1");
    let err =
        env.fails(&["token", "init", "--type", "hotp", "--genkey", "--serial", "H2", "--user", "alice"]);
    assert!(err.contains("The number of tokens of type hotp for this user is limited!"), "{err}");
    assert!(err.contains("(hotp_max_token_per_user = 1, policy 'one-hotp')"), "{err}");
    assert_eq!(serials(&env), ["H1"]);
    env.ok(&["token", "init", "--type", "totp", "--genkey", "--serial", "T1", "--user", "alice"]);
    assert_eq!(serials(&env), ["H1", "T1"]);
}

#[test]
fn max_active_token_per_user_on_init_and_enable() {
    let env = env_with(&policy("one-active", "enrollment", "", "max_active_token_per_user = 1"));
    env.init_hotp("H1", "alice", "1");
    let err =
        env.fails(&["token", "init", "--type", "totp", "--genkey", "--serial", "T1", "--user", "alice"]);
    assert!(err.contains("The number of active tokens for this user is limited!"), "{err}");
    assert!(err.contains("(max_active_token_per_user = 1, policy 'one-active')"), "{err}");
    env.ok(&["token", "disable", "H1"]);
    env.ok(&["token", "init", "--type", "totp", "--genkey", "--serial", "T1", "--user", "alice"]);
    let err = env.fails(&["token", "enable", "H1"]);
    assert!(err.contains("The number of active tokens for this user is limited!"), "{err}");
    assert_eq!(show(&env, "H1")["active"], false);
    env.ok(&["token", "enable", "T1"]);
}

#[test]
fn max_token_per_realm_on_init_assign_and_set_realms() {
    let env = env_with(&policy("corp-pool", "enrollment", "realms = [\"corp\"]", "max_token_per_realm = 2"));
    pool(&env, "P1", "corp");
    pool(&env, "P2", "corp");
    pool(&env, "S1", "sales");
    let realm_err = |err: &str| {
        assert!(err.contains("The number of tokens in this realm is limited!"), "{err}");
        assert!(err.contains("(max_token_per_realm = 2, policy 'corp-pool')"), "{err}");
    };
    let before = serials(&env);
    realm_err(
        &env.fails(&["token", "init", "--type", "hotp", "--genkey", "--serial", "P3", "--realm", "corp"]),
    );
    realm_err(
        &env.fails(&["token", "init", "--type", "hotp", "--genkey", "--serial", "P3", "--user", "alice"]),
    );
    assert_eq!(serials(&env), before, "nothing created");

    // Assigning S1 to alice@corp would bring it into corp.
    realm_err(&env.fails(&["token", "assign", "S1", "--user", "alice", "--pin", "1"]));
    // Setting its realms to corp likewise.
    realm_err(&env.fails(&["token", "set", "S1", "--realms", "corp"]));
    let s1 = show(&env, "S1");
    assert_eq!(realms(&s1), ["sales"], "{s1}");
    assert_untouched(&env, "S1");
    // Spec 8.5: a pool token already in the full realm counts itself.
    realm_err(&env.fails(&["token", "assign", "P1", "--user", "alice"]));
    assert_untouched(&env, "P1");
    // The realm policy does not touch sales.
    env.ok(&["token", "assign", "S1", "--user", "alice@sales"]);
    env.ok(&["token", "init", "--type", "hotp", "--genkey", "--serial", "S2", "--realm", "sales"]);
}

// ---------------------------------------------------------------------------
// 2. tokenlabel and tokenissuer

#[test]
fn tokenlabel_and_tokenissuer_in_the_otpauth_uri() {
    let env = env_with(&policy(
        "label",
        "enrollment",
        "",
        "tokenlabel = \"{user}@{realm}\"\ntokenissuer = \"ACME {realm}\"",
    ));
    let doc = env.json(&["token", "init", "--type", "hotp", "--otpkey", RFC_KEY, "--user", "alice"]);
    let uri = doc["otpauth"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://hotp/alice%40corp?"), "{uri}");
    assert!(uri.contains("issuer=ACME%20corp"), "{uri}");
    assert!(uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"), "{uri}");

    let doc = env.json(&["token", "init", "--type", "totp", "--genkey", "--serial", "X"]);
    let uri = doc["otpauth"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/%40?"), "no user: empty substitutions ({uri})");
    assert!(uri.contains("serial=X"), "{uri}");

    let env = env_with(&policy("legacy", "enrollment", "", "tokenlabel = \"<u>/<r>/<s>\""));
    let doc = env.json(&["token", "init", "--type", "hotp", "--genkey", "--serial", "H9", "--user", "bob"]);
    let uri = doc["otpauth"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://hotp/bob/corp/H9?"), "legacy tags, `/` unencoded: {uri}");
}

// ---------------------------------------------------------------------------
// 3. Autoassignment (spec 8.4)

/// An Env with pool token UA1 (RFC key, counter 0) in corp, an
/// autoassignment policy of `mode` and the `extra` policies.
fn autoassign_env(mode: &str, extra: &str) -> Env {
    let env = env_with(&format!(
        "{}{extra}",
        policy("auto", "enrollment", "", &format!("autoassignment = \"{mode}\""))
    ));
    pool(&env, "UA1", "corp");
    env
}

const AUTOASSIGNED: &str = "Token assigned to user via Autoassignment";
const NO_TOKENS: &str = "The user has no tokens assigned";

#[test]
fn autoassign_a1_any_pin() {
    let env = autoassign_env("any_pin", "");
    let (code, doc) = check(&env, &["alice", &format!("mypin{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (0, AUTOASSIGNED), "{doc}");
    assert_eq!(doc["serial"], "UA1");
    let t = show(&env, "UA1");
    assert_eq!((t["user"].as_str(), t["realm"].as_str()), (Some("alice"), Some("corp")), "{t}");
    assert_eq!(t["count"], 2);
    assert_eq!(t["pin_set"], true);
    // The same OTP again is a replay; alice now owns a token, so this is the
    // normal check.
    let (code, doc) = check(&env, &["alice", &format!("mypin{}", hotp(1))]);
    assert_eq!(code, 1, "{doc}");
    assert!(message(&doc).starts_with("wrong otp value"), "{doc}");
    let (code, doc) = check(&env, &["alice", &format!("mypin{}", hotp(2))]);
    assert_eq!((code, message(&doc)), (0, "matching 1 tokens"), "the PIN is now mypin: {doc}");
    let (code, _) = check(&env, &["alice", &format!("other{}", hotp(3))]);
    assert_eq!(code, 1, "another PIN is wrong");
}

#[test]
fn autoassign_a2_userstore() {
    let env = autoassign_env("userstore", "");
    let (code, doc) = check(&env, &["alice", &format!("alicepw{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (0, AUTOASSIGNED), "{doc}");
    assert_eq!(show(&env, "UA1")["user"], "alice");
    // The userstore password became the token PIN (no otppin policy here).
    let (code, doc) = check(&env, &["alice", &format!("alicepw{}", hotp(2))]);
    assert_eq!(code, 0, "{doc}");
}

#[test]
fn autoassign_a3_userstore_wrong_password() {
    let env = autoassign_env("userstore", "");
    let (code, doc) = check(&env, &["alice", &format!("wrong{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (1, NO_TOKENS), "{doc}");
    assert_untouched(&env, "UA1");
}

#[test]
fn autoassign_a4_wrong_otp() {
    let env = autoassign_env("any_pin", "");
    let (code, doc) = check(&env, &["alice", "mypin000000"]);
    assert_eq!((code, message(&doc)), (1, NO_TOKENS), "{doc}");
    assert_untouched(&env, "UA1");
}

#[test]
fn autoassign_a5_user_with_a_token_gets_the_normal_result() {
    let env = autoassign_env("any_pin", "");
    env.ok(&[
        "token", "init", "--type", "hotp", "--genkey", "--serial", "B1", "--user", "bob", "--pin", "bobpin",
    ]);
    let (code, doc) = check(&env, &["bob", &format!("mypin{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (1, "wrong otp pin"), "{doc}");
    assert_untouched(&env, "UA1");
    assert_eq!(env.json(&["token", "list", "--user", "bob"]).as_array().unwrap().len(), 1);
}

#[test]
fn autoassign_a6_pool_token_in_another_realm() {
    let env = env_with(&policy("auto", "enrollment", "", "autoassignment = \"any_pin\""));
    pool(&env, "UA1", "sales");
    let (code, doc) = check(&env, &["alice", &format!("mypin{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (1, NO_TOKENS), "{doc}");
    assert_untouched(&env, "UA1");
    // alice@sales is in the token's realm.
    let (code, doc) = check(&env, &["alice@sales", &format!("mypin{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (0, AUTOASSIGNED), "{doc}");
    let t = show(&env, "UA1");
    assert_eq!((t["user"].as_str(), t["realm"].as_str()), (Some("alice"), Some("sales")), "{t}");
}

#[test]
fn autoassign_a9_otp_outside_the_window() {
    let env = autoassign_env("any_pin", "");
    let (code, doc) = check(&env, &["alice", &format!("mypin{}", hotp(10))]);
    assert_eq!((code, message(&doc)), (1, NO_TOKENS), "{doc}");
    assert_untouched(&env, "UA1");
}

#[test]
fn autoassign_a11_a12_conflict_and_priority() {
    let env =
        autoassign_env("any_pin", &policy("auto-us", "enrollment", "", "autoassignment = \"userstore\""));
    let (code, doc) = check(&env, &["alice", &format!("x{}", hotp(1))]);
    assert_eq!(code, 1, "{doc}");
    assert!(message(&doc).starts_with("There are policies with conflicting actions"), "{doc}");
    assert_untouched(&env, "UA1");

    let env = autoassign_env(
        "any_pin",
        &policy("auto-us", "enrollment", "priority = 2", "autoassignment = \"userstore\""),
    );
    let (code, doc) = check(&env, &["alice", &format!("x{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (0, AUTOASSIGNED), "any_pin wins by priority: {doc}");
}

#[test]
fn autoassign_a13_realm_limit_leaves_the_token_untouched() {
    let env = autoassign_env(
        "any_pin",
        &policy("corp-one", "enrollment", "realms = [\"corp\"]", "max_token_per_realm = 1"),
    );
    let (code, doc) = check(&env, &["alice", &format!("mypin{}", hotp(1))]);
    assert_eq!(code, 1, "{doc}");
    assert!(message(&doc).contains("The number of tokens in this realm is limited!"), "{doc}");
    assert_untouched(&env, "UA1");
}

#[test]
fn autoassign_a14_disabled_pool_token() {
    let env = autoassign_env("any_pin", "");
    env.ok(&["token", "disable", "UA1"]);
    let (code, doc) = check(&env, &["alice", &format!("mypin{}", hotp(1))]);
    assert_eq!(code, 1, "{doc}");
    assert_untouched(&env, "UA1");
    assert_eq!(show(&env, "UA1")["active"], false);
}

#[test]
fn autoassign_a15_ambiguous_otp_assigns_nothing() {
    let env = autoassign_env("any_pin", "");
    pool(&env, "UA2", "corp");
    let (code, doc) = check(&env, &["alice", &format!("mypin{}", hotp(1))]);
    assert_eq!(
        (code, message(&doc)),
        (1, "The OTP matches more than one unassigned token; nothing was assigned."),
        "{doc}"
    );
    assert_untouched(&env, "UA1");
    assert_untouched(&env, "UA2");
}

#[test]
fn autoassign_a16_pass_on_no_token_comes_first() {
    let env = autoassign_env("any_pin", &policy("pont", "authentication", "", "passOnNoToken = true"));
    let (code, doc) = check(&env, &["alice", &format!("mypin{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (0, "user has no token, accepted due to 'pont'"), "{doc}");
    assert_untouched(&env, "UA1");
}

#[test]
fn autoassign_refused_by_the_user_limit() {
    let env = autoassign_env("any_pin", &policy("none-for-you", "enrollment", "", "max_token_per_user = 0"));
    let (code, doc) = check(&env, &["alice", &format!("mypin{}", hotp(1))]);
    assert_eq!(code, 1, "{doc}");
    assert!(message(&doc).contains("The number of tokens for this user is limited!"), "{doc}");
    assert_untouched(&env, "UA1");
}

#[test]
fn autoassign_hashes_the_pin_and_follows_a_failed_passthru() {
    // Spec 3.1 step 5: encrypt_pin is not applied; spec 3.3: passthru with
    // PIN+OTP fails, then autoassignment runs.
    let env = autoassign_env(
        "userstore",
        &[
            policy("enc", "enrollment", "", "otp_pin_encrypt = true"),
            policy("pt", "authentication", "", "passthru = \"userstore\""),
        ]
        .concat(),
    );
    let (code, doc) = check(&env, &["alice", &format!("alicepw{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (0, AUTOASSIGNED), "{doc}");
    let pin: Vec<u8> =
        env.db().query_row("SELECT pin FROM tokens WHERE serial='UA1'", [], |r| r.get(0)).unwrap();
    let pin = String::from_utf8_lossy(&pin);
    assert!(pin.starts_with("$argon2"), "an autoassigned PIN is hashed: {pin}");
}

/// Spec 3.2 (otpd): consumption, assignment and PIN in one transaction, so
/// eight processes for alice and bob sending the same OTP at once assign
/// the pool token once, to the one that was accepted, with its PIN.
#[test]
fn autoassign_race_assigns_once() {
    for round in 0..3 {
        let env = autoassign_env("any_pin", "");
        let code = hotp(1);
        let children: Vec<(String, String, Child)> = (0..8)
            .map(|i| {
                let user = if i % 2 == 0 { "alice" } else { "bob" };
                let password = format!("pin{i}{code}");
                let child = env
                    .command(&["check", user, &password])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                (user.to_owned(), password, child)
            })
            .collect();
        let accepted: Vec<(String, String)> = children
            .into_iter()
            .filter_map(|(user, password, mut child)| {
                let status = child.wait().unwrap();
                (status.code() == Some(0)).then_some((user, password))
            })
            .collect();
        assert_eq!(accepted.len(), 1, "round {round}: exactly one accept, got {accepted:?}");
        let (user, password) = &accepted[0];
        let t = show(&env, "UA1");
        assert_eq!((t["user"].as_str(), t["count"].as_u64()), (Some(user.as_str()), Some(2)), "{t}");
        let pin = password.strip_suffix(&code).unwrap();
        assert_eq!(check(&env, &[user, &format!("{pin}{}", hotp(2))]).0, 0, "the winner's PIN was set");
    }
}

// ---------------------------------------------------------------------------
// Autoassignment over RADIUS

/// Adds a `[radius]` table on a free loopback port with the client
/// 127.0.0.1 (secret testing123) and starts `otpd serve`; returns the
/// server and its `host:port`.
fn serve(env: &Env) -> (Server, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    append(
        env,
        &format!(
            "\n[radius]\nlisten = [\"{listen}\"]\n\n[[radius.clients]]\nname = \"localhost\"\naddress = \"127.0.0.1/32\"\nsecret = \"testing123\"\n"
        ),
    );
    (Server::start(env, std::slice::from_ref(&listen)), listen)
}

/// `radclient -x` sending one PAP request with `attributes` (a
/// Message-Authenticator is added); returns what it printed.
fn radclient(target: &str, attributes: &str) -> String {
    let mut child = Command::new("radclient")
        .args(["-x", "-t", "3", "-r", "1", target, "auth", "testing123"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run radclient; install freeradius-utils");
    let request = format!("{attributes}, Message-Authenticator = 0x00\n");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), request.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn autoassign_over_radius() {
    let env = autoassign_env("any_pin", "");
    let (server, listen) = serve(&env);
    let out = Command::new("radtest")
        .args(["alice", &format!("mypin{}", hotp(1)), &listen, "0", "testing123", "0", "127.0.0.1"])
        .output()
        .expect("cannot run radtest; install freeradius-utils");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("Received Access-Accept"),
        "radtest printed:\n{text}\nserver log:\n{}",
        server.log()
    );
    drop(server);
    let t = show(&env, "UA1");
    assert_eq!((t["user"].as_str(), t["count"].as_u64()), (Some("alice"), Some(2)), "{t}");
}

/// README (RADIUS) and spec 4.1: the client address policies match on is
/// the request's NAS-IP-Address, else the packet's source.
#[test]
fn radius_policy_client_is_the_nas_address() {
    let env =
        env_with(&policy("nas", "authentication", "clients = [\"10.9.9.9/32\"]", "passOnNoUser = true"));
    let (server, listen) = serve(&env);
    let text = radclient(&listen, "User-Name = \"nobody\", User-Password = \"x\", NAS-IP-Address = 10.9.9.9");
    assert!(
        text.contains("Received Access-Accept"),
        "passOnNoUser for NAS 10.9.9.9:\n{text}\n{}",
        server.log()
    );
    let text = radclient(&listen, "User-Name = \"nobody\", User-Password = \"x\", NAS-IP-Address = 10.9.9.8");
    assert!(text.contains("Received Access-Reject"), "no policy for NAS 10.9.9.8:\n{text}");
}

// ---------------------------------------------------------------------------
// 4. otp_pin_random with a command pin handler

/// Writes an executable `#!/bin/sh` script into the Env's directory.
fn script(env: &Env, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = env.path(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn random_pin_reaches_the_command_handler() {
    let env = Env::new();
    let base = std::fs::read_to_string(&env.config).unwrap();
    let out = env.path("letter.txt");
    let out = out.to_str().unwrap();
    // One argument a line, then what came on stdin; the environment apart.
    let handler =
        script(&env, "letter.sh", "printf '%s\\n' \"$@\" > \"$1\"\ncat >> \"$1\"\nenv > \"$1.env\"\n");
    append(
        &env,
        &policy(
            "random",
            "enrollment",
            "",
            &format!("otp_pin_random = 8\npinhandling = \"command {handler} {out}\""),
        ),
    );
    let init = env
        .command(&[
            "token", "init", "--type", "hotp", "--serial", "H1", "--otpkey", RFC_KEY, "--user", "alice",
            "--pin", "1111",
        ])
        .env("OTPD_TEST_LEAK", "must-not-reach-the-handler")
        .output()
        .unwrap();
    assert_eq!(init.status.code(), Some(0), "{}", String::from_utf8_lossy(&init.stderr));
    let letter = std::fs::read_to_string(out).expect("the handler did not run");
    let lines: Vec<&str> = letter.lines().collect();
    assert_eq!(lines.len(), 5, "ARG SERIAL USER REALM then the PIN: {letter:?}");
    assert_eq!(&lines[..4], [out, "H1", "alice", "corp"], "{letter:?}");
    assert!(letter.ends_with('\n'), "the PIN is followed by a newline: {letter:?}");
    let pin = lines[4];
    assert_eq!(pin.len(), 8, "{pin:?}");
    assert!(pin.chars().all(|c| c.is_ascii_alphanumeric()), "{pin:?}");
    let handler_env = std::fs::read_to_string(format!("{out}.env")).unwrap();
    assert!(!handler_env.contains("OTPD_TEST_LEAK"), "the environment is cleared: {handler_env}");
    assert!(handler_env.lines().any(|l| l.starts_with("PATH=")), "PATH stays: {handler_env}");
    assert!(!init.stdout.windows(pin.len()).any(|w| w == pin.as_bytes()), "the PIN is not printed");

    let (code, doc) = check(&env, &["alice", &format!("1111{}", hotp(0))]);
    assert_eq!(code, 1, "the requested PIN was replaced: {doc}");
    let (code, doc) = check(&env, &["alice", &format!("{pin}{}", hotp(0))]);
    assert_eq!((code, message(&doc)), (0, "matching 1 tokens"), "{doc}");

    // A failing handler refuses the enrollment.
    let failing = script(&env, "fail.sh", "cat > /dev/null\nexit 3\n");
    std::fs::write(
        &env.config,
        format!(
            "{base}{}",
            policy(
                "random",
                "enrollment",
                "",
                &format!("otp_pin_random = 8\npinhandling = \"command {failing}\"")
            )
        ),
    )
    .unwrap();
    env.fails(&["token", "init", "--type", "hotp", "--genkey", "--serial", "H2", "--user", "bob"]);
    assert_eq!(serials(&env), ["H1"], "no token was created");
}

#[test]
fn random_pin_with_the_log_handler() {
    let env = env_with(&policy("random", "enrollment", "", "otp_pin_random = 6\npinhandling = \"log\""));
    let out = env
        .run(&["token", "init", "--type", "hotp", "--serial", "H1", "--otpkey", RFC_KEY, "--user", "alice"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("pinhandling") && log.contains("H1"), "the log handler says what it logs: {log}");
    // The PIN is one six-character word of the log line; it authenticates.
    let words: Vec<&str> =
        log.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| w.len() == 6 && *w != "random").collect();
    let mut counter = 0;
    let accepted = words.iter().any(|pin| {
        let (code, _) = check(&env, &["alice", &format!("{pin}{}", hotp(counter))]);
        counter += u64::from(code == 0);
        code == 0
    });
    assert!(accepted, "no word of the log line is the PIN: {log}");
}

// ---------------------------------------------------------------------------
// 5. otp_pin_encrypt

#[test]
fn encrypted_pin_round_trip() {
    for action in ["otp_pin_encrypt", "encrypt_pin"] {
        let env = env_with(&policy("enc", "enrollment", "", &format!("{action} = true")));
        env.init_hotp("H1", "alice", "1234");
        let stored = |env: &Env| -> String {
            let pin: Vec<u8> =
                env.db().query_row("SELECT pin FROM tokens WHERE serial='H1'", [], |r| r.get(0)).unwrap();
            String::from_utf8_lossy(&pin).into_owned()
        };
        let pin = stored(&env);
        assert!(!pin.is_empty(), "{action}: a PIN is stored");
        assert!(!pin.starts_with("$argon2"), "{action}: encrypted, not hashed: {pin}");
        assert!(!pin.contains("1234"), "{action}: not in clear: {pin}");
        let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(0))]);
        assert_eq!(code, 0, "{action}: {doc}");
        assert_eq!(check(&env, &["alice", &format!("4321{}", hotp(1))]).0, 1);
        // A PIN set later is encrypted too.
        env.ok(&["token", "set", "H1", "--pin", "5678"]);
        let pin = stored(&env);
        assert!(!pin.starts_with("$argon2") && !pin.contains("5678"), "{action}: {pin}");
        assert_eq!(check(&env, &["alice", &format!("5678{}", hotp(1))]).0, 0, "{action}");
    }
}

// ---------------------------------------------------------------------------
// 6. Lost token

#[test]
fn lost_token_with_policies() {
    let env = env_with(&policy(
        "lost",
        "enrollment",
        "",
        "lostTokenPWLen = 12\nlostTokenPWContents = \"cn\"\nlostTokenValid = 2",
    ));
    env.init_hotp("H1", "alice", "1234");
    env.ok(&["token", "set", "H1", "--realms", "corp,sales"]);
    let doc = env.json(&["token", "lost", "H1"]);
    let password = doc["password"].as_str().unwrap_or_else(|| panic!("no password in {doc}")).to_owned();
    assert_eq!(password.len(), 12, "{password}");
    assert!(password.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{password}");
    assert!(password.chars().any(|c| c.is_ascii_lowercase()), "a lowercase letter: {password}");
    assert!(password.chars().any(|c| c.is_ascii_digit()), "a digit: {password}");
    assert_eq!(doc["serial"], "lostH1", "{doc}");
    assert_eq!(doc["lost_serial"], "H1", "{doc}");
    assert_eq!(doc["type"], "pw", "{doc}");
    assert_eq!(doc["user"], "alice", "{doc}");
    assert_eq!(realms(&doc), ["corp", "sales"], "{doc}");
    let end: jiff::Timestamp = doc["validity_end"].as_str().unwrap().parse().unwrap();
    let expected = now() + 2 * 86400;
    assert!((end.as_second() - expected).abs() <= 120, "validity_end {end} is not now + 2 days");
    assert!(doc["end_date"].is_string(), "{doc}");
    let old = show(&env, "H1");
    assert_eq!((old["active"].as_bool(), old["user"].as_str()), (Some(false), Some("alice")), "{old}");
    let pins: Vec<Vec<u8>> = env
        .db()
        .prepare("SELECT pin FROM tokens WHERE serial IN ('H1', 'lostH1')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(pins.len(), 2);
    assert_eq!(pins[0], pins[1], "the PIN is copied as stored");

    let (code, out) = check(&env, &["alice", &format!("1234{password}")]);
    assert_eq!((code, out["serial"].as_str()), (0, Some("lostH1")), "the PIN was copied: {out}");
    let (code, out) = check(&env, &["alice", &format!("1234{}", hotp(0))]);
    assert_eq!(code, 1, "the lost token no longer works: {out}");

    // The end of the validity period.
    env.ok(&["token", "set", "lostH1", "--validity-end", "2020-01-01T00:00:00Z"]);
    let (code, out) = check(&env, &["alice", &format!("1234{password}")]);
    assert_eq!(code, 1, "{out}");
    assert!(message(&out).contains("Outside validity period"), "{out}");
    assert!(message(&out).contains("Token is disabled"), "spec 5: both reasons joined: {out}");
}

#[test]
fn lost_token_defaults_and_refusals() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let doc = env.json(&["token", "lost", "H1"]);
    let password = doc["password"].as_str().unwrap().to_owned();
    const BASE58: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    assert_eq!(password.len(), 16, "{password}");
    assert!(password.chars().all(|c| BASE58.contains(c)), "Base58: {password}");
    let end: jiff::Timestamp = doc["validity_end"].as_str().unwrap().parse().unwrap();
    assert!((end.as_second() - (now() + 10 * 86400)).abs() <= 120, "default 10 days: {end}");
    assert_eq!(check(&env, &["alice", &format!("1234{password}")]).0, 0);

    // Spec 5 step 2: losing it again re-initialises the pw token.
    let again = env.json(&["token", "lost", "H1"]);
    let second = again["password"].as_str().unwrap().to_owned();
    assert_eq!(again["serial"], "lostH1");
    assert_eq!(serials(&env), ["H1", "lostH1"]);
    if second != password {
        assert_eq!(check(&env, &["alice", &format!("1234{password}")]).0, 1, "the first password is gone");
    }
    assert_eq!(check(&env, &["alice", &format!("1234{second}")]).0, 0);

    pool(&env, "P1", "corp");
    let err = env.fails(&["token", "lost", "P1"]);
    assert!(err.contains("You can only define a lost token for an assigned token."), "{err}");
    assert_eq!(serials(&env), ["H1", "P1", "lostH1"]);
    assert_eq!(show(&env, "P1")["active"], true);
}

// ---------------------------------------------------------------------------
// 7. otppin

#[test]
fn otppin_userstore_and_none() {
    let env = env_with(&policy("us", "authentication", "", "otppin = \"userstore\""));
    env.init_hotp("H1", "alice", "");
    let (code, doc) = check(&env, &["alice", &format!("alicepw{}", hotp(0))]);
    assert_eq!((code, message(&doc)), (0, "matching 1 tokens"), "{doc}");
    let (code, doc) = check(&env, &["alice", &format!("wrong{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (1, "wrong otp pin"), "{doc}");
    assert_eq!(check(&env, &["alice", &hotp(1)]).0, 1, "the empty token PIN does not count");

    let env = env_with(&policy("none", "authentication", "", "otppin = \"none\""));
    env.init_hotp("H1", "alice", "1234");
    assert_eq!(check(&env, &["alice", &format!("1234{}", hotp(0))]).0, 1, "no PIN part allowed");
    let (code, doc) = check(&env, &["alice", &hotp(0)]);
    assert_eq!((code, message(&doc)), (0, "matching 1 tokens"), "{doc}");
}

#[test]
fn reset_all_user_tokens_clears_the_other_failcounters() {
    for with_policy in [false, true] {
        let env = Env::new();
        if with_policy {
            append(&env, &policy("reset", "authentication", "", "reset_all_user_tokens = true"));
        }
        env.init_hotp("H1", "alice", "1234");
        env.ok(&[
            "token", "init", "--type", "hotp", "--genkey", "--serial", "H2", "--user", "alice", "--pin",
            "5678",
        ]);
        assert_eq!(check(&env, &["alice", "9999000000"]).0, 1);
        assert_eq!(show(&env, "H2")["failcount"], 1, "a wrong PIN counts on both tokens");
        assert_eq!(check(&env, &["alice", &format!("1234{}", hotp(0))]).0, 0);
        let expected = if with_policy { 0 } else { 1 };
        assert_eq!(show(&env, "H2")["failcount"], expected, "reset_all_user_tokens: {with_policy}");
    }
}

// ---------------------------------------------------------------------------
// 8. Challenge-response

#[test]
fn challenge_response_by_policy() {
    let env = env_with(&policy(
        "cr",
        "authentication",
        "",
        "challenge_response = \"hotp totp\"\nchallenge_text = \"Code from your phone: \"",
    ));
    env.init_hotp("H1", "alice", "1234");
    let (code, doc) = check(&env, &["alice", "1234"]);
    assert_eq!((code, doc["result"].as_str()), (3, Some("challenge")), "{doc}");
    assert_eq!(message(&doc), "Code from your phone: ");
    let state = doc["state"].as_str().unwrap().to_owned();
    let (code, doc) = check(&env, &["alice", &hotp(0), "--state", &state]);
    assert_eq!((code, message(&doc)), (0, "Found matching challenge"), "{doc}");
    // Without the policy the PIN alone is just wrong.
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    assert_eq!(check(&env, &["alice", "1234"]).0, 1);
}

// ---------------------------------------------------------------------------
// 9. passthru, passOnNoToken, passOnNoUser

#[test]
fn passthru_against_the_userstore() {
    for value in ["true", "\"userstore\""] {
        let env = Env::new();
        env.init_hotp("H1", "alice", "1234");
        let (code, doc) = check(&env, &["bob", "bobpw"]);
        assert_eq!((code, message(&doc)), (1, NO_TOKENS), "off without the policy: {doc}");
        append(&env, &policy("pt", "authentication", "", &format!("passthru = {value}")));
        let (code, doc) = check(&env, &["bob", "bobpw"]);
        assert_eq!((code, message(&doc)), (0, "against userstore due to 'pt'"), "passthru = {value}: {doc}");
        let (code, doc) = check(&env, &["bob", "wrong"]);
        assert_eq!((code, message(&doc)), (1, NO_TOKENS), "passthru = {value}: {doc}");
        // A user who owns a token is not passed through.
        let (code, doc) = check(&env, &["alice", "alicepw"]);
        assert_eq!(code, 1, "passthru = {value}: {doc}");
    }
}

#[test]
fn pass_on_no_token() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let (code, doc) = check(&env, &["bob", "anything"]);
    assert_eq!((code, message(&doc)), (1, NO_TOKENS), "off without the policy: {doc}");
    append(&env, &policy("pont", "authentication", "", "passOnNoToken = true"));
    let (code, doc) = check(&env, &["bob", "anything"]);
    assert_eq!((code, message(&doc)), (0, "user has no token, accepted due to 'pont'"), "{doc}");
    assert_eq!(check(&env, &["alice", "anything"]).0, 1, "alice owns a token");
    assert_eq!(check(&env, &["nobody", "anything"]).0, 1, "an unknown user is not passed");
}

#[test]
fn pass_on_no_user() {
    let env = Env::new();
    let (code, doc) = check(&env, &["nobody", "x"]);
    assert_eq!((code, message(&doc)), (1, "User nobody@corp does not exist."), "off without the policy");
    append(&env, &policy("ponu", "authentication", "", "passOnNoUser = true"));
    let (code, doc) = check(&env, &["nobody", "x"]);
    assert_eq!((code, message(&doc)), (0, "user does not exist, accepted due to 'ponu'"), "{doc}");
    let (code, doc) = check(&env, &["bob", "x"]);
    assert_eq!((code, message(&doc)), (1, NO_TOKENS), "an existing user without a token: {doc}");
}

#[test]
fn client_filter_decides_on_check() {
    let env = env_with(&policy(
        "ponu-net",
        "authentication",
        "clients = [\"10.0.0.0/8\", \"-10.0.0.1\"]",
        "passOnNoUser = true",
    ));
    for (client, expected) in [("10.0.0.2", 0), ("10.0.0.1", 1), ("192.168.1.1", 1)] {
        let (code, doc) = check(&env, &["nobody", "x", "--client", client]);
        assert_eq!(code, expected, "client {client}: {doc}");
    }
}

// ---------------------------------------------------------------------------
// 10. Configuration errors

#[test]
fn bad_policies_refused_with_file_line_and_name() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (policy name, scope, filters, actions)
        ("unknown-action", "enrollment", "", "frobnicate = 1"),
        ("string-limit", "enrollment", "", "max_token_per_user = \"two\""),
        ("negative-limit", "enrollment", "", "max_token_per_user = -1"),
        ("negative-realm-limit", "enrollment", "realms = [\"corp\"]", "max_token_per_realm = -1"),
        ("bad-class", "enrollment", "", "lostTokenPWContents = \"cnx\""),
        ("realm-limit-no-realms", "enrollment", "", "max_token_per_realm = 2"),
        ("realm-limit-empty-realms", "enrollment", "realms = []", "max_token_per_realm = 2"),
        ("bad-cidr", "authentication", "clients = [\"10.0.0.0/33\"]", "passOnNoUser = true"),
        ("pin-random-0", "enrollment", "", "otp_pin_random = 0"),
        ("pin-random-32", "enrollment", "", "otp_pin_random = 32"),
        ("pw-len-32", "enrollment", "", "lostTokenPWLen = 32"),
        ("valid-61", "enrollment", "", "lostTokenValid = 61"),
        ("unknown-tag", "enrollment", "", "tokenlabel = \"{nope}\""),
        ("autoassign-value", "enrollment", "", "autoassignment = \"sometimes\""),
        ("otppin-value", "authentication", "", "otppin = \"maybe\""),
        ("relative-handler", "enrollment", "", "otp_pin_random = 6\npinhandling = \"command bin/mail\""),
        ("both-spellings", "enrollment", "", "otp_pin_encrypt = true\nencrypt_pin = true"),
        ("bool-as-string", "authentication", "", "passOnNoToken = \"yes\""),
    ];
    let env = Env::new();
    let base = std::fs::read_to_string(&env.config).unwrap();
    let file = env.config.to_str().unwrap();
    let mut wrong = Vec::new();
    for &(name, scope, filters, actions) in cases {
        let head = format!("{base}{}", policy("fine", "authentication", "", "otppin = \"tokenpin\""));
        let text = format!("{head}{}", policy(name, scope, filters, actions));
        // The bad table's `[[policies]]` line: after `head` and the blank line.
        let line = head.lines().count() + 2;
        assert_eq!(text.lines().nth(line - 1), Some("[[policies]]"));
        std::fs::write(&env.config, &text).unwrap();
        for command in [&["token", "list"][..], &["check", "alice", "x"], &["policy", "list"]] {
            let out = env.run(command);
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            let located = err.contains(file)
                && err.contains(&format!("line {line}"))
                && err.contains(&format!("policy '{name}'"))
                && err.lines().count() == 1;
            if out.status.code() != Some(2) || !located {
                wrong.push(format!(
                    "{name} ({actions:?}), otpd {command:?}: exit {:?}, stderr {err:?} (want {file}, line {line})",
                    out.status.code()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "bad policies not refused as specified:\n{}", wrong.join("\n"));
    std::fs::write(&env.config, &base).unwrap();
    env.ok(&["token", "list"]);
}

// ---------------------------------------------------------------------------
// 11. otpd policy list / check

#[test]
fn policy_list_and_check_explain_matching() {
    let policies = [
        policy("limit-low", "enrollment", "", "max_token_per_user = 2"),
        policy("limit-high", "enrollment", "priority = 10", "max_token_per_user = 5"),
        policy("label-a", "enrollment", "", "tokenlabel = \"a\""),
        policy("label-b", "enrollment", "", "tokenlabel = \"b\""),
        policy("label-late", "enrollment", "priority = 2", "tokenlabel = \"late\""),
        policy("office", "enrollment", "clients = [\"192.168.0.0/16\"]", "tokenissuer = \"Office\""),
        policy("bob-only", "enrollment", "users = [\"bob\"]", "autoassignment = \"any_pin\""),
        policy("not-sales", "enrollment", "realms = [\"!sales\"]", "otp_pin_encrypt = true"),
        policy("switched-off", "enrollment", "active = false", "lostTokenValid = 3"),
        policy("auth", "authentication", "", "otppin = \"userstore\""),
    ]
    .concat();
    let env = env_with(&policies);

    let list = env.json(&["policy", "list"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    for name in ["limit-low", "limit-high", "label-a", "label-b", "office", "bob-only", "not-sales", "auth"] {
        assert!(names.contains(&name), "{name} missing from policy list: {list}");
    }
    let high = list.as_array().unwrap().iter().find(|p| p["name"] == "limit-high").unwrap();
    assert_eq!(high["priority"], 10, "{high}");
    assert_eq!(high["scope"], "enrollment", "{high}");
    assert_eq!(high["actions"]["max_token_per_user"], 5, "{high}");

    let doc =
        env.json(&["policy", "check", "--user", "alice", "--scope", "enrollment", "--client", "10.1.2.3"]);
    let entry = |doc: &Value, name: &str| -> Value {
        doc["policies"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap_or(Value::Null)
    };
    for name in ["limit-low", "limit-high", "label-a", "label-b", "label-late"] {
        assert_eq!(entry(&doc, name)["matches"], true, "{name}: {doc}");
    }
    for (name, why) in [("office", "192.168.0.0/16"), ("bob-only", "bob"), ("not-sales", "sales")] {
        let e = entry(&doc, name);
        assert_eq!(e["matches"], false, "{name}: {doc}");
        assert!(
            e["reason"].as_str().is_some_and(|r| r.contains(why)),
            "{name}: reason should name {why}: {e}"
        );
    }
    let auth = entry(&doc, "auth");
    assert!(auth.is_null() || auth["matches"] == false, "another scope does not apply: {auth}");
    let off = entry(&doc, "switched-off");
    assert!(off.is_null() || off["matches"] == false, "an inactive policy does not apply: {off}");

    let effective = &doc["effective"];
    let limit = effective["max_token_per_user"]["value"].to_string();
    assert!(limit.contains('5') && !limit.contains('2'), "the largest limit wins: {effective}");
    let conflict = effective["tokenlabel"]["error"].as_str().unwrap_or_else(|| panic!("{effective}"));
    assert!(conflict.starts_with("There are policies with conflicting actions"), "{conflict}");
    assert!(conflict.contains("label-a") && conflict.contains("label-b"), "{conflict}");
    assert!(!conflict.contains("label-late"), "{conflict}");
    for absent in ["tokenissuer", "autoassignment", "otp_pin_encrypt", "lostTokenValid"] {
        assert!(effective.get(absent).is_none(), "{absent} comes from no matching policy: {effective}");
    }

    // From the office network, as bob: the filtered policies apply.
    let doc =
        env.json(&["policy", "check", "--user", "bob", "--scope", "enrollment", "--client", "192.168.7.7"]);
    assert_eq!(entry(&doc, "office")["matches"], true, "{doc}");
    assert_eq!(entry(&doc, "bob-only")["matches"], true, "{doc}");
    assert!(doc["effective"]["tokenissuer"]["value"].to_string().contains("Office"), "{doc}");
    // alice in sales: the exclusion-only realm list still matches nothing.
    let doc = env.json(&["policy", "check", "--user", "alice", "--realm", "sales", "--scope", "enrollment"]);
    assert_eq!(entry(&doc, "not-sales")["matches"], false, "{doc}");
    let doc = env.json(&["policy", "check", "--user", "alice", "--scope", "authentication"]);
    assert_eq!(entry(&doc, "auth")["matches"], true, "{doc}");
    assert!(doc["effective"]["otppin"]["value"].to_string().contains("userstore"), "{doc}");
}

//! End-to-end: token event handlers (issue 6; semantics.md 6 and 7) through
//! the built `otpd` binary. Every test builds its own Env, appends
//! `[[events]]` tables (and where needed a policy or a `[radius]` table) to
//! its configuration, fires events with `otpd token ...`, `otpd check` or
//! radtest against `otpd serve`, and reads the result back with
//! `otpd token show SERIAL --json`. OTP values come from oathtool. All
//! commands run with TZ=UTC so that fixed validity dates are predictable.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::server::{Server, free_port};
use common::*;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Helpers

/// One `[[events]]` table of the token handler bound to `events`; `body`
/// holds further `key = value` lines (conditions, options, position, order).
fn entry(name: &str, events: &[&str], action: &str, body: &str) -> String {
    entry_of_handler("token", name, events, action, body)
}

/// One `[[events]]` table of `handler`.
fn entry_of_handler(handler: &str, name: &str, events: &[&str], action: &str, body: &str) -> String {
    let events = events.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "\n[[events]]\nname = \"{name}\"\nevents = [{events}]\nhandler = \"{handler}\"\naction = \"{action}\"\n{body}\n"
    )
}

/// One `[[policies]]` table with one action line (`key = value`).
fn policy(name: &str, scope: &str, action: &str) -> String {
    format!("\n[[policies]]\nname = \"{name}\"\nscope = \"{scope}\"\n[policies.actions]\n{action}\n")
}

/// Appends `text` to the configuration of `env`.
fn append(env: &Env, text: &str) {
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str(text);
    std::fs::write(&env.config, config).unwrap();
}

/// An Env (realms corp and sales, users alice and bob) whose configuration
/// carries `extra`.
fn env_with(extra: &str) -> Env {
    let env = Env::new();
    append(&env, extra);
    env
}

/// `s` split at blanks, for command lines without quoting.
fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// `otpd ARGS` with TZ=UTC.
fn run(env: &Env, args: &[&str]) -> Output {
    env.command(args).env("TZ", "UTC").output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}; stdout: {}; stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs and expects exit 0; returns stdout.
fn ok(env: &Env, args: &[&str]) -> String {
    let out = run(env, args);
    assert_eq!(out.status.code(), Some(0), "otpd {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// `otpd ARGS --json`, expecting exit 0.
fn json(env: &Env, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let stdout = ok(env, &all);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("otpd {all:?} printed no JSON ({e}): {stdout}"))
}

/// `otpd check ARGS --json`: (exit status, the JSON document).
fn check(env: &Env, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = run(env, &all);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("otpd {all:?} printed no JSON: {}", text(&out)));
    (out.status.code().unwrap(), doc)
}

fn message(doc: &Value) -> &str {
    doc["message"].as_str().unwrap_or_else(|| panic!("no message in {doc}"))
}

/// `otpd token show SERIAL --json`.
fn show(env: &Env, serial: &str) -> Value {
    json(env, &["token", "show", serial])
}

/// Whether `token show SERIAL` finds the token (exit 0) or not (exit 2).
fn exists(env: &Env, serial: &str) -> bool {
    let out = run(env, &["token", "show", serial, "--json"]);
    match out.status.code() {
        Some(0) => true,
        Some(2) => false,
        _ => panic!("token show {serial}: {}", text(&out)),
    }
}

/// The tokens of `token list ARGS --json`.
fn list(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["token", "list"];
    all.extend_from_slice(args);
    json(env, &all).as_array().unwrap().clone()
}

/// The serials of all tokens, sorted.
fn serials(env: &Env) -> Vec<String> {
    let mut all: Vec<String> =
        list(env, &[]).iter().map(|t| t["serial"].as_str().unwrap().to_owned()).collect();
    all.sort();
    all
}

/// A token's realms, sorted.
fn realms(token: &Value) -> Vec<String> {
    let mut all: Vec<String> = token["realms"]
        .as_array()
        .unwrap_or_else(|| panic!("no realms in {token}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    all.sort();
    all
}

fn description(token: &Value) -> String {
    token["description"].as_str().unwrap_or_default().to_owned()
}

/// HOTP value of the RFC key at `counter`, by oathtool.
fn hotp(counter: u64) -> String {
    oath_hotp(RFC_KEY, counter, 6)
}

/// An HOTP token with the RFC key (counter 0) owned by `user` with `pin`.
fn init_hotp(env: &Env, serial: &str, user: &str, pin: &str) {
    ok(
        env,
        &[
            "token", "init", "--type", "hotp", "--serial", serial, "--otpkey", RFC_KEY, "--user", user,
            "--pin", pin,
        ],
    );
}

/// An unassigned HOTP token with the RFC key in `realm`.
fn pool(env: &Env, serial: &str, realm: &str) {
    ok(env, &["token", "init", "--type", "hotp", "--serial", serial, "--otpkey", RFC_KEY, "--realm", realm]);
}

/// A wrong OTP with alice's right PIN 1234 (000000 is none of the RFC key's
/// first HOTP values).
const WRONG: &str = "1234000000";

/// An RFC 3339 time of the token JSON.
fn time(token: &Value, key: &str) -> Timestamp {
    let value = token[key].as_str().unwrap_or_else(|| panic!("no {key} in {token}"));
    value.parse().unwrap_or_else(|e| panic!("{key} = {value:?} is not RFC 3339: {e}"))
}

/// `a` and `b` differ by at most `secs` seconds.
fn near(a: Timestamp, b: Timestamp, secs: i64) -> bool {
    a.duration_since(b).abs() <= SignedDuration::from_secs(secs)
}

/// Audit rows of `actor` with `success`.
fn audited(env: &Env, actor: &str, success: bool) -> i64 {
    env.db()
        .query_row(
            "SELECT count(*) FROM audit WHERE actor = ?1 AND success = ?2",
            (actor, success as i64),
            |r| r.get(0),
        )
        .unwrap()
}

fn audit_rows(env: &Env) -> i64 {
    env.db().query_row("SELECT count(*) FROM audit", [], |r| r.get(0)).unwrap()
}

// ---------------------------------------------------------------------------
// 1. set tokenrealm

#[test]
fn set_tokenrealm_on_token_init() {
    let env = env_with(&entry(
        "new tokens join sales",
        &["token_init"],
        "set tokenrealm",
        "position = \"post\"\nconditions = { realm = \"corp\" }\noptions = { realm = \"sales\" }",
    ));
    init_hotp(&env, "H1", "alice", "1234");
    let t = show(&env, "H1");
    assert_eq!(t["user"], "alice", "{t}");
    assert_eq!(realms(&t), ["corp", "sales"], "the owner's realm and the handler's: {t}");
    // The token still logs in.
    assert_eq!(check(&env, &["alice", &format!("1234{}", hotp(0))]).0, 0);
    // The realm condition: a token without a user (the condition fails) and
    // a token of bob in sales stay where they were put.
    pool(&env, "P1", "corp");
    assert_eq!(realms(&show(&env, "P1")), ["corp"]);
    let out = run(
        &env,
        &[
            "token", "init", "--type", "totp", "--genkey", "--serial", "T1", "--user", "bob", "--realm",
            "sales",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = show(&env, "T1");
    assert_eq!((t["realm"].as_str(), realms(&t)), (Some("sales"), vec!["sales".to_owned()]), "{t}");
}

#[test]
fn set_tokenrealm_only_realm_keeps_the_owners_realm() {
    let env = env_with(&entry(
        "only sales",
        &["token_init"],
        "set tokenrealm",
        "options = { realm = \"sales\", only_realm = true }",
    ));
    pool(&env, "P1", "corp");
    let t = show(&env, "P1");
    assert_eq!(realms(&t), ["sales"], "a pool token ends up in sales only: {t}");
    init_hotp(&env, "H1", "alice", "1234");
    let t = show(&env, "H1");
    assert_eq!(realms(&t), ["corp", "sales"], "the owner's realm is never removed: {t}");
    assert_eq!((t["user"].as_str(), t["realm"].as_str()), (Some("alice"), Some("corp")), "{t}");
}

// ---------------------------------------------------------------------------
// 2. delete

#[test]
fn delete_after_two_wrong_otps() {
    let env = env_with(&entry(
        "drop guessed tokens",
        &["validate_check"],
        "delete",
        "conditions = { result_value = \"False\", failcounter = \">=2\" }",
    ));
    init_hotp(&env, "H1", "alice", "1234");
    let (code, doc) = check(&env, &["alice", WRONG]);
    assert_eq!((code, message(&doc)), (1, "wrong otp value"), "{doc}");
    let t = show(&env, "H1");
    assert_eq!(t["failcount"], 1, "one failure does not delete: {t}");
    let (code, doc) = check(&env, &["alice", WRONG]);
    assert_eq!(code, 1, "{doc}");
    assert!(!exists(&env, "H1"), "after the second wrong OTP the token is gone");
    assert!(serials(&env).is_empty());
    let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(0))]);
    assert_eq!((code, message(&doc)), (1, "The user has no tokens assigned"), "{doc}");
}

// ---------------------------------------------------------------------------
// 3. unassign

#[test]
fn unassign_on_token_disable() {
    let env = env_with(&entry("disabled tokens go back to the pool", &["token_disable"], "unassign", ""));
    init_hotp(&env, "H1", "alice", "1234");
    init_hotp(&env, "H2", "bob", "5678");
    ok(&env, &["token", "enable", "H2"]);
    assert_eq!(show(&env, "H2")["user"], "bob", "token_enable does not fire the entry");
    ok(&env, &["token", "disable", "H1"]);
    let t = show(&env, "H1");
    assert_eq!(t["user"], Value::Null, "unassigned: {t}");
    assert_eq!(t["active"], false, "{t}");
    assert_eq!(t["pin_set"], false, "unassign clears the PIN: {t}");
    assert_eq!(realms(&t), ["corp"], "the realms stay: {t}");
    let h2 = show(&env, "H2");
    assert_eq!((h2["user"].as_str(), h2["active"].as_bool()), (Some("bob"), Some(true)), "{h2}");
}

// ---------------------------------------------------------------------------
// 4. disable

#[test]
fn disable_on_wrong_otp_from_a_client_range() {
    let env = env_with(&entry(
        "outside attempts disable",
        &["validate_check"],
        "disable",
        "conditions = { client_ip = \"192.0.2.0/24, -192.0.2.9\", result_value = \"False\" }",
    ));
    init_hotp(&env, "H1", "alice", "1234");
    let (code, doc) = check(&env, &["alice", WRONG, "--client", "10.0.0.1"]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(show(&env, "H1")["active"], true, "10.0.0.1 is outside the range");
    let (code, _) = check(&env, &["alice", WRONG, "--client", "192.0.2.9"]);
    assert_eq!(code, 1);
    assert_eq!(show(&env, "H1")["active"], true, "192.0.2.9 is excluded");
    let (code, _) = check(&env, &["alice", WRONG, "--client", "192.0.2.7"]);
    assert_eq!(code, 1);
    let t = show(&env, "H1");
    assert_eq!(t["active"], false, "a wrong OTP from 192.0.2.7 disables: {t}");
    assert_eq!(t["user"], "alice", "{t}");

    // A right OTP from the range does not (result_value True).
    ok(&env, &["token", "enable", "H1"]);
    let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(0)), "--client", "192.0.2.7"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(show(&env, "H1")["active"], true);
    // No client address: the client_ip condition is skipped (counts true).
    let (code, _) = check(&env, &["alice", WRONG]);
    assert_eq!(code, 1);
    assert_eq!(show(&env, "H1")["active"], false, "without a client the condition is skipped");
}

// ---------------------------------------------------------------------------
// 5. enable

#[test]
fn enable_on_token_reset() {
    let env = env_with(&entry(
        "reset re-enables owned tokens",
        &["token_reset"],
        "enable",
        "conditions = { token_has_owner = \"True\" }",
    ));
    init_hotp(&env, "H1", "alice", "1234");
    pool(&env, "P1", "corp");
    check(&env, &["alice", WRONG]);
    check(&env, &["alice", WRONG]);
    ok(&env, &["token", "disable", "H1"]);
    ok(&env, &["token", "disable", "P1"]);
    let t = show(&env, "H1");
    assert_eq!((t["active"].as_bool(), t["failcount"].as_u64()), (Some(false), Some(2)), "{t}");
    ok(&env, &["token", "reset", "H1"]);
    let t = show(&env, "H1");
    assert_eq!((t["active"].as_bool(), t["failcount"].as_u64()), (Some(true), Some(0)), "{t}");
    assert_eq!(check(&env, &["alice", &format!("1234{}", hotp(0))]).0, 0);
    // The pool token has no owner: the condition does not hold.
    ok(&env, &["token", "reset", "P1"]);
    assert_eq!(show(&env, "P1")["active"], false);
}

// ---------------------------------------------------------------------------
// 6. enroll

#[test]
fn enroll_a_totp_when_a_token_is_deleted() {
    let env = env_with(&entry(
        "replacement",
        &["token_delete"],
        "enroll",
        "options = { tokentype = \"totp\", user = true }",
    ));
    init_hotp(&env, "H1", "alice", "1234");
    ok(&env, &["token", "delete", "H1"]);
    assert!(!exists(&env, "H1"));
    let tokens = list(&env, &["--user", "alice"]);
    assert_eq!(tokens.len(), 1, "alice has one new token: {tokens:?}");
    let t = &tokens[0];
    assert_eq!(t["type"], "totp", "{t}");
    assert_eq!((t["user"].as_str(), t["realm"].as_str()), (Some("alice"), Some("corp")), "{t}");
    assert_ne!(t["serial"], "H1");
    assert_eq!(serials(&env).len(), 1, "nothing else was enrolled");
    assert!(audited(&env, "event:replacement", true) >= 1, "the handler's action is audited");
}

#[test]
fn refused_enroll_keeps_the_login_accepted() {
    let config = format!(
        "{}{}",
        policy("one-each", "enrollment", "max_token_per_user = 1"),
        entry(
            "spare on login",
            &["validate_check"],
            "enroll",
            "conditions = { result_value = \"True\" }\noptions = { tokentype = \"hotp\", user = true }",
        )
    );
    let env = env_with(&config);
    init_hotp(&env, "H1", "alice", "1234");
    let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(0))]);
    assert_eq!((code, message(&doc)), (0, "matching 1 tokens"), "the login stays accepted: {doc}");
    assert_eq!(serials(&env), ["H1"], "the limit refused the second token");
    assert!(
        audited(&env, "event:spare on login", false) >= 1,
        "a failed audit row for the handler; audit: {:?}",
        audit_lines(&env)
    );
    let t = show(&env, "H1");
    assert_eq!((t["count"].as_u64(), t["failcount"].as_u64()), (Some(1), Some(0)), "{t}");
}

#[test]
fn token_conditions_without_a_token_hold() {
    // bob owns no token: tokentype is skipped, user_token_number compares 0.
    let env = env_with(&entry(
        "first token",
        &["validate_check"],
        "enroll",
        "conditions = { tokentype = \"totp\", user_token_number = \"0\", result_value = \"False\" }\noptions = { tokentype = \"hotp\", user = true }",
    ));
    let (code, doc) = check(&env, &["bob", "whatever"]);
    assert_eq!((code, message(&doc)), (1, "The user has no tokens assigned"), "{doc}");
    let tokens = list(&env, &["--user", "bob"]);
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["type"], "hotp");
    // Now bob owns an hotp token: neither condition holds any more.
    check(&env, &["bob", "whatever"]);
    assert_eq!(list(&env, &["--user", "bob"]).len(), 1);
}

// ---------------------------------------------------------------------------
// 7. set description

/// Parses `{now}` as written into a description: `YYYY-MM-DD
/// HH:MM:SS.ffffff±HHMM`.
fn tag_time(s: &str) -> Timestamp {
    jiff::fmt::strtime::parse("%Y-%m-%d %H:%M:%S%.f%z", s)
        .and_then(|t| t.to_timestamp())
        .unwrap_or_else(|e| panic!("{s:?} is not YYYY-MM-DD HH:MM:SS.ffffff+HHMM: {e}"))
}

#[test]
fn set_description_with_tags() {
    let config = [
        entry(
            "stamp",
            &["token_init"],
            "set description",
            "options = { description = \"enrolled {now} via {ua_browser}\" }",
        ),
        entry(
            "expiry",
            &["token_assign"],
            "set description",
            "options = { description = \"expires {current_time}+7d\" }",
        ),
    ]
    .concat();
    let env = env_with(&config);
    let init =
        format!("token init --type hotp --serial H1 --otpkey {RFC_KEY} --user alice --description mine");
    ok(&env, &words(&init));
    let d = description(&show(&env, "H1"));
    assert!(d.starts_with("enrolled 20") && d.ends_with(" via cli"), "{d:?}");
    let stamp = tag_time(d.strip_prefix("enrolled ").unwrap().strip_suffix(" via cli").unwrap());
    assert!(near(stamp, Timestamp::now(), 120), "{{now}} is now: {d:?}");

    pool(&env, "P1", "corp");
    ok(&env, &["token", "assign", "P1", "--user", "bob"]);
    let d = description(&show(&env, "P1"));
    let stamp = tag_time(d.strip_prefix("expires ").unwrap_or_else(|| panic!("{d:?}")));
    let week = Timestamp::now() + SignedDuration::from_hours(7 * 24);
    assert!(near(stamp, week, 120), "{{current_time}}+7d is a week ahead: {d:?}");
}

// ---------------------------------------------------------------------------
// 8. set validity

#[test]
fn set_validity_offset_after_a_login() {
    let env = env_with(&entry(
        "thirty days from each login",
        &["validate_check"],
        "set validity",
        "conditions = { result_value = \"True\" }\noptions = { \"valid till\" = \"+30d\" }",
    ));
    init_hotp(&env, "H1", "alice", "1234");
    let (code, doc) = check(&env, &["alice", WRONG]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(show(&env, "H1")["validity_end"], Value::Null, "a reject does not fire");
    let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(0))]);
    assert_eq!(code, 0, "{doc}");
    let t = show(&env, "H1");
    let end = time(&t, "validity_end");
    let expected = Timestamp::now() + SignedDuration::from_hours(30 * 24);
    assert!(near(end, expected, 120), "validity_end {end} should be about {expected}: {t}");
    assert_eq!(t["validity_start"], Value::Null, "the start stays unset: {t}");
    // Inside the period: the next login is accepted.
    let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(1))]);
    assert_eq!(code, 0, "{doc}");
}

#[test]
fn set_validity_fixed_end_in_the_past() {
    let env = env_with(&entry(
        "expire",
        &["validate_check"],
        "set validity",
        "conditions = { result_value = \"True\" }\noptions = { \"valid till\" = \"2020/01/01\" }",
    ));
    init_hotp(&env, "H1", "alice", "1234");
    let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(0))]);
    assert_eq!(code, 0, "the login that fires the handler is accepted: {doc}");
    let t = show(&env, "H1");
    assert_eq!(time(&t, "validity_end"), "2020-01-01T00:00:00Z".parse::<Timestamp>().unwrap(), "{t}");
    let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (1, "Outside validity period"), "{doc}");
}

#[test]
fn set_validity_fixed_start_in_the_future() {
    let env = env_with(&entry(
        "not yet",
        &["validate_check"],
        "set validity",
        "conditions = { result_value = \"True\" }\noptions = { \"valid from\" = \"23.12.2099 23:20\" }",
    ));
    init_hotp(&env, "H1", "alice", "1234");
    let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(0))]);
    assert_eq!(code, 0, "{doc}");
    let t = show(&env, "H1");
    assert_eq!(time(&t, "validity_start"), "2099-12-23T23:20:00Z".parse::<Timestamp>().unwrap(), "{t}");
    assert_eq!(t["validity_end"], Value::Null, "{t}");
    let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (1, "Outside validity period"), "{doc}");
}

#[test]
fn set_validity_both_bounds_on_token_init() {
    let env = env_with(&entry(
        "a window",
        &["token_init"],
        "set validity",
        "options = { \"valid from\" = \"2016/12/23 9:30am\", \"valid till\" = \"2016-12-24T10:00:00Z\" }",
    ));
    init_hotp(&env, "H1", "alice", "1234");
    let t = show(&env, "H1");
    assert_eq!(time(&t, "validity_start"), "2016-12-23T09:30:00Z".parse::<Timestamp>().unwrap(), "{t}");
    assert_eq!(time(&t, "validity_end"), "2016-12-24T10:00:00Z".parse::<Timestamp>().unwrap(), "{t}");
    let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(0))]);
    assert_eq!((code, message(&doc)), (1, "Outside validity period"), "{doc}");
}

// ---------------------------------------------------------------------------
// Conditions

#[test]
fn conditions_that_do_not_hold_do_not_fire() {
    // The control entry fires on alice's wrong OTP (order 0, runs first);
    // every other entry differs from it in one condition that does not hold
    // and would overwrite the description (or delete the token).
    let control = "realm = \"corp\", tokentype = \"hotp\", result_authentication = \"REJECT\", \
                   result_value = \"False\", user = \"alice\", serial = \"H\", logged_in_user = \"admin\", \
                   detail_message = \"otp value\", tokenrealm = \"corp\", failcounter = \"1\", \
                   token_has_owner = \"True\", tokeninfo = \"hashlib == sha1\", user_token_number = \"1\", \
                   count_auth_fail = \"<3\"";
    let mut config = entry(
        "control",
        &["validate_check"],
        "set description",
        &format!("conditions = {{ {control} }}\noptions = {{ description = \"fired\" }}"),
    );
    let wrong: &[(&str, &str)] = &[
        ("realm", "realm = \"sales\""),
        ("tokentype", "tokentype = \"totp\""),
        ("result_authentication", "result_authentication = \"ACCEPT\""),
        ("result_value", "result_value = \"True\""),
        ("user", "user = \"bob\""),
        ("serial", "serial = \"1\""),
        ("logged_in_user", "logged_in_user = \"user\""),
        ("client_ip", "client_ip = \"10.0.0.0/8\""),
        ("detail_message", "detail_message = \"^matching\""),
        ("tokenrealm", "tokenrealm = \"sales\""),
        ("failcounter", "failcounter = \">=5\""),
        ("otp_counter", "otp_counter = \">0\""),
        ("count_auth", "count_auth = \"2\""),
        ("count_auth_success", "count_auth_success = \">0\""),
        ("count_auth_fail", "count_auth_fail = \">3\""),
        ("token_has_owner", "token_has_owner = \"False\""),
        ("token_locked", "token_locked = \"True\""),
        ("token_validity_period", "token_validity_period = \"False\""),
        ("tokeninfo", "tokeninfo = \"hashlib == sha256\""),
        ("user_token_number", "user_token_number = \">=2\""),
        ("resolver", "resolver = \"sales-users\""),
    ];
    for (name, condition) in wrong {
        config.push_str(&entry(
            &format!("not-{name}"),
            &["validate_check"],
            "set description",
            &format!(
                "order = 1\nconditions = {{ {condition} }}\noptions = {{ description = \"WRONG {name}\" }}"
            ),
        ));
    }
    config.push_str(&entry(
        "not-totp-delete",
        &["validate_check"],
        "delete",
        "order = 2\nconditions = { tokentype = \"totp\" }",
    ));
    let env = env_with(&config);
    init_hotp(&env, "H1", "alice", "1234");
    let (code, doc) = check(&env, &["alice", WRONG, "--client", "192.0.2.1"]);
    assert_eq!((code, message(&doc)), (1, "wrong otp value"), "{doc}");
    assert!(exists(&env, "H1"), "tokentype totp does not hold for an hotp token");
    let t = show(&env, "H1");
    let dry = run(
        &env,
        &words(
            "event test validate_check --user alice --serial H1 --client 192.0.2.1 --result reject --json",
        ),
    );
    assert_eq!(description(&t), "fired", "{t}\nevent test says: {}", String::from_utf8_lossy(&dry.stdout));
    assert_eq!(t["active"], true, "{t}");
}

#[test]
fn integer_condition_on_count_auth() {
    let env = env_with(&entry(
        "three strikes",
        &["validate_check"],
        "disable",
        "conditions = { count_auth = \">=3\", result_value = \"True\" }",
    ));
    init_hotp(&env, "H1", "alice", "1234");
    for counter in 0..2 {
        assert_eq!(check(&env, &["alice", &format!("1234{}", hotp(counter))]).0, 0);
        assert_eq!(show(&env, "H1")["active"], true, "after login {}", counter + 1);
    }
    assert_eq!(check(&env, &["alice", &format!("1234{}", hotp(2))]).0, 0, "the firing login stays accepted");
    let t = show(&env, "H1");
    assert_eq!((t["count_auth"].as_u64(), t["active"].as_bool()), (Some(3), Some(false)), "{t}");
    let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(3))]);
    assert_eq!((code, message(&doc)), (1, "Token is disabled"), "{doc}");
}

// ---------------------------------------------------------------------------
// Order, positions, no recursion, every event

#[test]
fn entries_run_in_order_then_config_order() {
    let config = [
        entry(
            "second",
            &["token_init"],
            "set description",
            "order = 2\noptions = { description = \"second\" }",
        ),
        entry(
            "first",
            &["token_init"],
            "set description",
            "order = 1\noptions = { description = \"first\" }",
        ),
        entry("tie-a", &["token_enable"], "set description", "options = { description = \"tie-a\" }"),
        entry("tie-b", &["token_enable"], "set description", "options = { description = \"tie-b\" }"),
        entry(
            "early",
            &["token_enable"],
            "set description",
            "order = -1\noptions = { description = \"early\" }",
        ),
    ]
    .concat();
    let env = env_with(&config);
    init_hotp(&env, "H1", "alice", "1234");
    assert_eq!(description(&show(&env, "H1")), "second", "order 2 runs after order 1");
    ok(&env, &["token", "enable", "H1"]);
    assert_eq!(description(&show(&env, "H1")), "tie-b", "equal order: configuration order");
}

#[test]
fn pre_handlers_run_before_the_check() {
    let config = [
        entry(
            "lock bob first",
            &["validate_check"],
            "disable",
            "position = \"pre\"\nconditions = { user = \"bob\", result_value = \"False\" }",
        ),
        entry(
            "pre sees no result",
            &["validate_check"],
            "delete",
            "position = \"pre\"\nconditions = { user = \"alice\", result_value = \"True\" }",
        ),
    ]
    .concat();
    let env = env_with(&config);
    init_hotp(&env, "H1", "alice", "1234");
    init_hotp(&env, "B1", "bob", "5678");
    let (code, doc) = check(&env, &["bob", &format!("5678{}", hotp(0))]);
    assert_eq!((code, message(&doc)), (1, "Token is disabled"), "the pre handler disabled B1 first: {doc}");
    assert_eq!(show(&env, "B1")["active"], false);
    let (code, doc) = check(&env, &["alice", &format!("1234{}", hotp(0))]);
    assert_eq!(code, 0, "{doc}");
    assert!(exists(&env, "H1"), "pre handlers compare result_value against False");
}

#[test]
fn handler_actions_fire_no_events() {
    let config = [
        entry(
            "disable on reject",
            &["validate_check"],
            "disable",
            "conditions = { result_value = \"False\" }",
        ),
        entry(
            "mark disabled",
            &["token_disable"],
            "set description",
            "options = { description = \"admin disabled\" }",
        ),
    ]
    .concat();
    let env = env_with(&config);
    init_hotp(&env, "H1", "alice", "1234");
    check(&env, &["alice", WRONG]);
    let t = show(&env, "H1");
    assert_eq!(t["active"], false, "{t}");
    assert_eq!(description(&t), "", "the handler's disable fired no token_disable: {t}");
    ok(&env, &["token", "enable", "H1"]);
    ok(&env, &["token", "disable", "H1"]);
    assert_eq!(description(&show(&env, "H1")), "admin disabled", "the admin's disable fires it");
}

#[test]
fn every_admin_operation_fires_its_event() {
    let events = [
        "token_init",
        "token_assign",
        "token_unassign",
        "token_enable",
        "token_disable",
        "token_setpin",
        "token_realm",
        "token_set",
        "token_resync",
        "token_reset",
        "token_lost",
        "validate_check",
    ];
    let config: String = events
        .iter()
        .map(|e| {
            entry(
                &format!("on {e}"),
                &[e],
                "set description",
                &format!("options = {{ description = \"{e}\" }}"),
            )
        })
        .collect();
    let env = env_with(&config);
    let mut wrong = Vec::new();
    let mut expect = |env: &Env, serial: &str, event: &str| {
        let d = description(&show(env, serial));
        if d != event {
            wrong.push(format!("{event}: description of {serial} is {d:?}"));
        }
    };
    pool(&env, "P1", "corp");
    expect(&env, "P1", "token_init");
    ok(&env, &["token", "assign", "P1", "--user", "alice", "--pin", "1234"]);
    expect(&env, "P1", "token_assign");
    check(&env, &["alice", WRONG]);
    expect(&env, "P1", "validate_check");
    ok(&env, &["token", "disable", "P1"]);
    expect(&env, "P1", "token_disable");
    ok(&env, &["token", "enable", "P1"]);
    expect(&env, "P1", "token_enable");
    ok(&env, &["token", "set", "P1", "--pin", "4321"]);
    expect(&env, "P1", "token_setpin");
    ok(&env, &["token", "set", "P1", "--realms", "sales"]);
    expect(&env, "P1", "token_realm");
    ok(&env, &["token", "set", "P1", "--max-fail", "5"]);
    expect(&env, "P1", "token_set");
    ok(&env, &["token", "resync", "P1", &hotp(20), &hotp(21)]);
    expect(&env, "P1", "token_resync");
    ok(&env, &["token", "reset", "P1"]);
    expect(&env, "P1", "token_reset");
    ok(&env, &["token", "lost", "P1"]);
    expect(&env, "P1", "token_lost");
    ok(&env, &["token", "unassign", "P1"]);
    expect(&env, "P1", "token_unassign");
    assert!(wrong.is_empty(), "events that did not fire their entry:\n{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------
// Autoassignment, challenges, failing handlers, edges

#[test]
fn post_handlers_see_autoassignment() {
    let config = [
        policy("auto", "enrollment", "autoassignment = \"any_pin\""),
        entry(
            "thirty days",
            &["validate_check"],
            "set validity",
            "conditions = { result_value = \"True\", token_has_owner = \"True\" }\noptions = { \"valid till\" = \"+30d\" }",
        ),
        entry(
            "owner note",
            &["validate_check"],
            "set description",
            "conditions = { detail_message = \"Autoassignment\" }\noptions = { description = \"owner {username}@{realm}\" }",
        ),
    ]
    .concat();
    let env = env_with(&config);
    pool(&env, "UA1", "corp");
    let (code, doc) = check(&env, &["alice", &format!("mypin{}", hotp(1))]);
    assert_eq!((code, message(&doc)), (0, "Token assigned to user via Autoassignment"), "{doc}");
    let t = show(&env, "UA1");
    assert_eq!(t["user"], "alice", "{t}");
    let expected = Timestamp::now() + SignedDuration::from_hours(30 * 24);
    assert!(near(time(&t, "validity_end"), expected, 120), "the autoassigned token got +30d: {t}");
    assert_eq!(description(&t), "owner alice@corp", "{t}");
}

#[test]
fn challenge_and_answer_fire_with_their_results() {
    let config = [
        policy("cr", "authentication", "challenge_response = \"hotp\""),
        entry(
            "challenged",
            &["validate_check"],
            "set description",
            "conditions = { result_authentication = \"CHALLENGE\" }\noptions = { description = \"challenged\" }",
        ),
        entry(
            "answered",
            &["validate_check"],
            "set description",
            "conditions = { result_authentication = \"ACCEPT\", detail_message = \"challenge\" }\noptions = { description = \"answered\" }",
        ),
    ]
    .concat();
    let env = env_with(&config);
    init_hotp(&env, "H1", "alice", "1234");
    init_hotp(&env, "H2", "bob", "5678");
    let (code, doc) = check(&env, &["alice", "1234"]);
    assert_eq!(code, 3, "the PIN alone gets a challenge: {doc}");
    assert_eq!(description(&show(&env, "H1")), "challenged");
    let state = doc["state"].as_str().unwrap_or_else(|| panic!("no state in {doc}")).to_owned();
    let (code, doc) = check(&env, &["alice", &hotp(0), "--state", &state]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(description(&show(&env, "H1")), "answered", "{doc}");
    assert_eq!(description(&show(&env, "H2")), "", "bob's token is not a target");
}

#[test]
fn a_handler_whose_target_is_gone_fails_without_changing_the_result() {
    let config = [
        entry(
            "delete first",
            &["validate_check"],
            "delete",
            "order = 1\nconditions = { result_value = \"False\" }",
        ),
        entry(
            "disable next",
            &["validate_check"],
            "disable",
            "order = 2\nconditions = { result_value = \"False\" }",
        ),
    ]
    .concat();
    let env = env_with(&config);
    init_hotp(&env, "H1", "alice", "1234");
    let (code, doc) = check(&env, &["alice", WRONG]);
    assert_eq!((code, message(&doc)), (1, "wrong otp value"), "{doc}");
    assert!(!exists(&env, "H1"));
    assert!(audited(&env, "event:delete first", true) >= 1, "{:?}", audit_lines(&env));
    // The second entry's target no longer exists: an error, audited as failed.
    assert!(audited(&env, "event:disable next", false) >= 1, "{:?}", audit_lines(&env));
    assert!(serials(&env).is_empty(), "nothing was recreated");
}

#[test]
fn post_handlers_skip_failed_operations_and_pre_init_has_no_target() {
    let config = [
        policy("one-each", "enrollment", "max_token_per_user = 1"),
        entry(
            "mark assigned",
            &["token_assign"],
            "set description",
            "options = { description = \"assigned\" }",
        ),
        entry("pre init", &["token_init"], "disable", "position = \"pre\""),
    ]
    .concat();
    let env = env_with(&config);
    init_hotp(&env, "H1", "alice", "1234");
    let h1 = show(&env, "H1");
    assert_eq!(h1["active"], true, "a pre token_init entry has no token to act on: {h1}");
    pool(&env, "P1", "corp");
    let out = run(&env, &["token", "assign", "P1", "--user", "alice"]);
    assert_eq!(out.status.code(), Some(2), "the limit refuses: {}", text(&out));
    let p1 = show(&env, "P1");
    assert_eq!((p1["user"].clone(), description(&p1)), (Value::Null, String::new()), "{p1}");
    assert_eq!(show(&env, "H1"), h1, "the user's only token is not a target of a failed assign");
    ok(&env, &["token", "assign", "P1", "--user", "bob"]);
    assert_eq!(description(&show(&env, "P1")), "assigned");
}

#[test]
fn enroll_into_a_realm_without_a_user() {
    let env = env_with(&entry(
        "pool refill",
        &["token_delete"],
        "enroll",
        "options = { tokentype = \"pw\", realm = \"sales\" }",
    ));
    init_hotp(&env, "H1", "alice", "1234");
    ok(&env, &["token", "delete", "H1"]);
    let tokens = list(&env, &[]);
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let t = &tokens[0];
    assert_eq!((t["type"].as_str(), t["user"].clone()), (Some("pw"), Value::Null), "{t}");
    assert_eq!(realms(t), ["sales"], "{t}");
}

#[test]
fn token_locked_and_long_descriptions() {
    let long = "x".repeat(100);
    let env = env_with(&entry(
        "locked",
        &["validate_check"],
        "set description",
        &format!(
            "conditions = {{ token_locked = \"True\" }}\noptions = {{ description = \"locked {long}\" }}"
        ),
    ));
    init_hotp(&env, "H1", "alice", "1234");
    ok(&env, &["token", "set", "H1", "--max-fail", "2"]);
    check(&env, &["alice", WRONG]);
    assert_eq!(description(&show(&env, "H1")), "", "failcount 1 of 2 is not locked");
    check(&env, &["alice", WRONG]);
    let d = description(&show(&env, "H1"));
    assert!(d.starts_with("locked xxx"), "{d:?}");
    assert_eq!(d.chars().count(), 80, "descriptions are cut to 80 characters: {d:?}");
}

// ---------------------------------------------------------------------------
// RADIUS

#[test]
fn radius_login_fires_with_front_and_client() {
    let listen = format!("127.0.0.1:{}", free_port());
    let config = [
        entry(
            "radius note",
            &["validate_check"],
            "set description",
            "conditions = { result_value = \"False\", logged_in_user = \"user\" }\noptions = { description = \"failed via {ua_browser} from {client_ip}\" }",
        ),
        entry("admins only", &["validate_check"], "disable", "conditions = { logged_in_user = \"admin\" }"),
        format!(
            "\n[radius]\nlisten = [\"{listen}\"]\n\n[[radius.clients]]\nname = \"localhost\"\naddress = \"127.0.0.1/32\"\nsecret = \"testing123\"\n"
        ),
    ]
    .concat();
    let env = env_with(&config);
    init_hotp(&env, "H1", "alice", "1234");
    let server = Server::start(&env, std::slice::from_ref(&listen));
    let radtest = |password: &str, expect: &str| {
        let out = Command::new("radtest")
            .args(["alice", password, &listen, "0", "testing123", "0", "127.0.0.1"])
            .output()
            .expect("cannot run radtest; install freeradius-utils");
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(said.contains(expect), "radtest printed:\n{said}\nserver log:\n{}", server.log());
    };
    radtest(WRONG, "Received Access-Reject");
    let t = show(&env, "H1");
    assert_eq!(description(&t), "failed via radius from 127.0.0.1", "{t}\nserver log:\n{}", server.log());
    assert_eq!(t["active"], true, "logged_in_user admin does not hold over RADIUS: {t}");

    // SIGHUP reloads the entries: a new one disables after an accept.
    append(
        &env,
        &entry("off after use", &["validate_check"], "disable", "conditions = { result_value = \"True\" }"),
    );
    server.signal("HUP");
    assert!(
        server.wait_for("reloaded", Duration::from_secs(5)),
        "no `reloaded` line after SIGHUP:\n{}",
        server.log()
    );
    radtest(&format!("1234{}", hotp(0)), "Received Access-Accept");
    let t = show(&env, "H1");
    assert_eq!(t["active"], false, "the reloaded entry fired: {t}\nserver log:\n{}", server.log());
}

// ---------------------------------------------------------------------------
// PAM

/// A service file in /etc/pam.d, removed on drop.
struct PamService(std::path::PathBuf);

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn pam_login_fires_with_front_and_rhost() {
    let uid = Command::new("id").arg("-u").output().expect("cannot run id -u");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("note: PAM event test skipped: it writes a service file into /etc/pam.d and needs root");
        return;
    }
    let env = env_with(&entry(
        "pam note",
        &["validate_check"],
        "set description",
        "conditions = { result_value = \"False\", logged_in_user = \"user\" }\noptions = { description = \"failed via {ua_browser} from {client_ip}\" }",
    ));
    init_hotp(&env, "H1", "alice", "1234");
    let name = format!("otpd-events-test-{}", std::process::id());
    let service = PamService(std::path::Path::new("/etc/pam.d").join(&name));
    std::fs::write(
        &service.0,
        format!("auth required {} config={}\n", pam_module().display(), env.config.display()),
    )
    .unwrap();
    let mut child = Command::new("pamtester")
        .args(["-I", "rhost=198.51.100.4", &name, "alice", "authenticate"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run pamtester; install it (see .ci/run)");
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{WRONG}\n").as_bytes());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "pamtester refuses: {}", text(&out));
    drop(service);
    let t = show(&env, "H1");
    assert_eq!(description(&t), "failed via pam from 198.51.100.4", "{t}");
}

// ---------------------------------------------------------------------------
// Configuration errors

/// Writes `base` plus a harmless entry plus `bad` (one `[[events]]` table)
/// and expects every command to refuse it with exit 2 and one stderr line
/// naming the file, the bad table's `[[events]]` line and the entry.
fn refused(env: &Env, base: &str, name: &str, bad: &str) -> Vec<String> {
    let head = format!("{base}{}", entry("fine", &["token_init"], "disable", ""));
    let text = format!("{head}{bad}");
    let line = head.lines().count() + 2;
    assert_eq!(text.lines().nth(line - 1), Some("[[events]]"), "{text}");
    std::fs::write(&env.config, &text).unwrap();
    let file = env.config.to_str().unwrap();
    let mut wrong = Vec::new();
    for command in [&["token", "list"][..], &["check", "alice", "x"], &["event", "list"]] {
        let out = run(env, command);
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let located = err.contains(file)
            && err.contains(&format!("line {line}:"))
            && err.contains(&format!("event '{name}'"))
            && err.lines().count() == 1;
        if out.status.code() != Some(2) || !located {
            wrong.push(format!(
                "{name}, otpd {command:?}: exit {:?}, stderr {err:?} (want {file}, line {line})",
                out.status.code()
            ));
        }
    }
    wrong
}

/// (entry name, its `[[events]]` table) for `refused`.
fn check_refused(cases: &[(&str, String)]) {
    let env = Env::new();
    let base = std::fs::read_to_string(&env.config).unwrap();
    let mut wrong = Vec::new();
    for (name, table) in cases {
        wrong.extend(refused(&env, &base, name, table));
    }
    assert!(wrong.is_empty(), "bad entries not refused as specified:\n{}", wrong.join("\n"));
    std::fs::write(&env.config, &base).unwrap();
    ok(&env, &["token", "list"]);
}

/// A case of `check_refused`: the token handler entry `name`.
fn bad<'a>(name: &'a str, events: &[&str], action: &str, body: &str) -> (&'a str, String) {
    (name, entry(name, events, action, body))
}

#[test]
fn bad_entries_refused_at_load() {
    check_refused(&[
        bad("unknown-event", &["token_frobnicate"], "disable", ""),
        bad("unknown-action", &["token_init"], "explode", ""),
        bad("unknown-condition", &["validate_check"], "disable", "conditions = { phase_of_moon = \"full\" }"),
        bad("unknown-option", &["token_init"], "set description", "options = { descripton = \"x\" }"),
        bad("option-of-no-option-action", &["token_init"], "disable", "options = { realm = \"sales\" }"),
        bad("feb-31", &["token_init"], "set validity", "options = { \"valid from\" = \"31.02.2016\" }"),
        bad("month-13", &["token_init"], "set validity", "options = { \"valid till\" = \"2016/13/01\" }"),
        bad("offset-unit", &["token_init"], "set validity", "options = { \"valid till\" = \"+5x\" }"),
        bad("offset-no-plus", &["token_init"], "set validity", "options = { \"valid from\" = \"30d\" }"),
        bad(
            "good-start-bad-end",
            &["token_init"],
            "set validity",
            "options = { \"valid from\" = \"+1d\", \"valid till\" = \"31.02.2016\" }",
        ),
    ]);
}

#[test]
fn more_bad_entries_refused_at_load() {
    check_refused(&[
        bad("realm-missing", &["token_init"], "set tokenrealm", ""),
        bad("realm-unknown", &["token_init"], "set tokenrealm", "options = { realm = \"nowhere\" }"),
        bad("tokentype-missing", &["token_delete"], "enroll", "options = { user = true }"),
        bad("tokentype-unknown", &["token_delete"], "enroll", "options = { tokentype = \"sms\" }"),
        bad("description-tag", &["token_init"], "set description", "options = { description = \"{nope}\" }"),
        bad("integer-compare", &["validate_check"], "disable", "conditions = { failcounter = \">>3\" }"),
        bad("result-value", &["validate_check"], "disable", "conditions = { result_value = \"maybe\" }"),
        bad("client-cidr", &["validate_check"], "disable", "conditions = { client_ip = \"10.0.0.0/33\" }"),
        bad("serial-regex", &["validate_check"], "disable", "conditions = { serial = \"(\" }"),
        bad("position", &["token_init"], "disable", "position = \"middle\""),
        ("handler", entry_of_handler("notification", "handler", &["token_init"], "disable", "")),
    ]);
}

// ---------------------------------------------------------------------------
// otpd event list / test

#[test]
fn event_list_and_dry_run_change_nothing() {
    let config = [
        entry(
            "disable on reject",
            &["validate_check"],
            "disable",
            "conditions = { result_value = \"False\", realm = \"corp\" }",
        ),
        entry("sales only", &["validate_check"], "delete", "order = 3\nconditions = { realm = \"sales\" }"),
        entry(
            "on accept",
            &["validate_check", "token_reset"],
            "set description",
            "order = 2\nconditions = { result_authentication = \"ACCEPT\" }\noptions = { description = \"x\" }",
        ),
        entry("init", &["token_init"], "set tokenrealm", "position = \"post\"\noptions = { realm = \"sales\" }"),
    ]
    .concat();
    let env = env_with(&config);
    init_hotp(&env, "H1", "alice", "1234");
    let h1 = show(&env, "H1");

    let listed = json(&env, &["event", "list"]);
    let listed = listed.as_array().unwrap_or_else(|| panic!("event list --json is an array: {listed}"));
    let names: Vec<&str> = listed.iter().filter_map(|e| e["name"].as_str()).collect();
    for name in ["disable on reject", "sales only", "on accept", "init"] {
        assert!(names.contains(&name), "{name} missing from event list: {listed:?}");
    }
    let accept = listed.iter().find(|e| e["name"] == "on accept").unwrap();
    assert_eq!(accept["events"], serde_json::json!(["validate_check", "token_reset"]), "{accept}");
    assert_eq!(accept["position"], "post", "{accept}");
    assert_eq!(accept["order"], 2, "{accept}");
    assert!(accept["action"].to_string().contains("set description"), "{accept}");
    let plain = ok(&env, &["event", "list"]);
    assert!(plain.contains("disable on reject") && plain.contains("sales only"), "{plain}");

    let audit = audit_rows(&env);
    let doc = json(&env, &["event", "test", "validate_check", "--user", "alice", "--result", "reject"]);
    let runs = doc.as_array().unwrap_or_else(|| panic!("event test --json is an array: {doc}"));
    let entry_of = |name: &str| -> &Value {
        runs.iter().find(|r| r["entry"] == name).unwrap_or_else(|| panic!("{name} missing: {doc}"))
    };
    assert!(runs.iter().all(|r| r["entry"] != "init"), "token_init entries are not bound: {doc}");
    let fires = entry_of("disable on reject");
    assert_eq!(fires["fires"], true, "{fires}");
    let conditions = fires["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 2, "{fires}");
    assert!(conditions.iter().all(|c| c["holds"] == true), "{fires}");
    assert!(conditions.iter().any(|c| c["condition"].to_string().contains("result_value")), "{fires}");
    assert!(fires["targets"].to_string().contains("H1"), "alice's only token is the target: {fires}");
    assert!(fires["action"].to_string().contains("disable"), "{fires}");
    let sales = entry_of("sales only");
    assert_eq!(sales["fires"], false, "{sales}");
    let realm = &sales["conditions"][0];
    assert!(realm["condition"].to_string().contains("realm") && realm["holds"] == false, "{sales}");
    assert_eq!(entry_of("on accept")["fires"], false, "{doc}");

    // A reject of alice would disable H1; the dry run did not.
    assert_eq!(show(&env, "H1"), h1, "event test changed the token");
    assert_eq!(audit_rows(&env), audit, "event test wrote to the audit table");
    assert_eq!(serials(&env), ["H1"]);
    let accept = json(&env, &["event", "test", "validate_check", "--user", "alice", "--result", "accept"]);
    let on_accept = accept.as_array().unwrap().iter().find(|r| r["entry"] == "on accept").cloned();
    assert_eq!(on_accept.map(|r| r["fires"].clone()), Some(Value::Bool(true)), "{accept}");
    assert_eq!(show(&env, "H1"), h1);

    let out = run(&env, &["event", "test", "token_frobnicate", "--json"]);
    assert_eq!(out.status.code(), Some(2), "an unknown event: {}", text(&out));
}

//! End-to-end: the load generator `otpd-load` against a real `otpd serve`.
//! HOTP codes it computes from the RFC key must all be accepted (so it keeps
//! each user's codes in order and verifies every answer), and a wrong fixed
//! code must be rejected every time.

mod common;

use std::process::Command;

use common::server::{Server, free_port};
use common::*;

/// Env with HOTP tokens (RFC key, counter 0, no PIN) for alice and bob and an
/// `otpd serve` on a free loopback port for client 127.0.0.1 / testing123.
fn setup() -> (Env, Server) {
    let env = Env::new();
    for (serial, user) in [("H1", "alice"), ("H2", "bob")] {
        env.ok(&["token", "init", "--type", "hotp", "--serial", serial, "--otpkey", RFC_KEY, "--user", user]);
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str(&format!(
        "\n[radius]\nlisten = [\"{addr}\"]\n\n[[radius.clients]]\nname = \"localhost\"\n\
         address = \"127.0.0.1/32\"\nsecret = \"testing123\"\n"
    ));
    std::fs::write(&env.config, config).unwrap();
    std::fs::write(env.path("load-users"), "alice\nbob\n").unwrap();
    let server = Server::start(&env, &[addr]);
    (env, server)
}

/// Runs otpd-load with `extra` flags and returns its JSON summary.
fn load(env: &Env, server: &Server, extra: &[&str]) -> serde_json::Value {
    let users = env.path("load-users");
    let out = Command::new(env!("CARGO_BIN_EXE_otpd-load"))
        .args(["--server", &server.target(), "--secret", "testing123", "--timeout", "5s", "--json"])
        .arg("--user-file")
        .arg(&users)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "otpd-load {extra:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("otpd-load printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

#[test]
fn hotp_accepts_and_wrong_codes_reject() {
    let (env, server) = setup();

    let run = load(&env, &server, &["--hotp-key", RFC_KEY, "--requests", "200", "--outstanding", "8"]);
    assert_eq!(run["sent"], 200, "{run}");
    assert_eq!(run["accept"], 200, "{run}");
    assert_eq!(run["reject"], 0, "{run}");
    assert_eq!(run["timeout"], 0, "{run}");
    assert_eq!(run["bad"], 0, "{run}");
    assert!(run["requests_per_s"].as_f64().unwrap() > 0.0, "{run}");
    let p50 = run["latency_us"]["p50"].as_f64().unwrap();
    let max = run["latency_us"]["max"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= max, "{run}");

    // Every accepted code moved its token's counter on by one (how the 200
    // split between the users depends on which was free first), and each
    // user's next code is the one after the generator's last.
    let count = |serial: &str| env.json(&["token", "show", serial])["count"].as_u64().unwrap();
    let (alice, bob) = (count("H1"), count("H2"));
    assert_eq!(alice + bob, 200, "alice {alice}, bob {bob}");
    let (code, message) = env.check("alice", &oath_hotp(RFC_KEY, alice, 6));
    assert_eq!((code, message.as_str()), (0, "matching 1 tokens"));

    let run = load(&env, &server, &["--password-fixed", "000000", "--requests", "50"]);
    assert_eq!(run["reject"], 50, "{run}");
    assert_eq!(run["accept"], 0, "{run}");
    assert_eq!(run["timeout"], 0, "{run}");
    assert_eq!(run["bad"], 0, "{run}");
}

#[test]
fn totp_window_logs_each_user_in_once_per_step_of_the_window() {
    let (env, server) = setup();
    for (serial, user) in [("T1", "alice"), ("T2", "bob")] {
        env.ok(&["token", "unassign", &format!("H{}", &serial[1..])]);
        env.ok(&["token", "init", "--type", "totp", "--serial", serial, "--otpkey", RFC_KEY, "--user", user]);
    }
    // Window 2: steps now-2 ..= now+2 for each user, 5 logins each (10 if a step begins
    // during the run), all inside otpd's window of 6 steps back and 5 ahead.
    let run = load(&env, &server, &["--totp-key", RFC_KEY, "--totp-window", "2", "--requests", "10"]);
    assert_eq!(run["accept"], 10, "{run}");
    assert_eq!(run["reject"], 0, "{run}");
    assert_eq!(run["timeout"], 0, "{run}");
}

#[test]
fn rate_paces_the_requests() {
    let (env, server) = setup();
    // 40 requests at 100/s: request 39 is due 0.39 s after the start.
    let run = load(&env, &server, &["--password-fixed", "000000", "--requests", "40", "--rate", "100"]);
    assert_eq!(run["reject"], 40, "{run}");
    let elapsed = run["elapsed_s"].as_f64().unwrap();
    assert!(elapsed >= 0.39, "{run}");
}

#[test]
fn bad_flags_are_one_line_and_exit_2() {
    for args in [
        &["--server", "127.0.0.1:1812", "--secret", "s", "--user-pattern", "u", "--password-fixed", "x"][..],
        &["--server", "127.0.0.1:1812", "--secret", "s", "--user-pattern", "u{n}"],
        &["--server", "127.0.0.1:1812", "--secret", "s", "--user-pattern", "u{n}", "--hotp-key", "xyz"],
        &["--server", "nowhere", "--secret", "s", "--user-pattern", "u{n}", "--password-fixed", "x"],
        &[
            "--server",
            "127.0.0.1:1812",
            "--secret",
            "s",
            "--user-pattern",
            "u{n}",
            "--password-fixed",
            "x",
            "--outstanding",
            "300",
            "--sockets",
            "1",
        ],
        &[
            "--server",
            "127.0.0.1:1812",
            "--secret",
            "s",
            "--user-pattern",
            "u{n}",
            "--password-fixed",
            "x",
            "--duration",
            "soon",
        ],
        &[
            "--server",
            "127.0.0.1:1812",
            "--secret",
            "s",
            "--user-pattern",
            "u{n}",
            "--password-fixed",
            "x",
            "--rate",
            "0",
        ],
        &[
            "--server",
            "127.0.0.1:1812",
            "--secret",
            "s",
            "--user-pattern",
            "u{n}",
            "--password-fixed",
            "x",
            "--totp-window",
            "1",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_otpd-load")).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("otpd-load: "), "{err}");
    }
}

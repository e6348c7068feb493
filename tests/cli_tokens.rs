//! End-to-end: enrollment and authentication through the built `otpd`
//! binary, with OTP values computed by oathtool (an independent
//! implementation) and users from a passwd file hashed by mkpasswd.

mod common;

use common::*;

#[test]
fn hotp_accept_replay_wrong_pin_and_window() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let c0 = oath_hotp(RFC_KEY, 0, 6);
    assert_eq!(env.check("alice", &format!("1234{c0}")), (0, "matching 1 tokens".into()));
    assert_eq!(
        env.check("alice", &format!("1234{c0}")),
        (1, "wrong otp value. previous otp used again".into()),
        "a replayed OTP is refused"
    );
    let c1 = oath_hotp(RFC_KEY, 1, 6);
    assert_eq!(env.check("alice", &format!("9999{c1}")), (1, "wrong otp pin".into()));
    // Counter 1 + 10 = 11 is beyond the look-ahead window of 10.
    let far = oath_hotp(RFC_KEY, 11, 6);
    assert_eq!(env.check("alice", &format!("1234{far}")), (1, "wrong otp value".into()));
    // The rejected attempts did not move the counter: counter 1 still works,
    // and user@realm reaches the same user.
    assert_eq!(env.check("alice@corp", &format!("1234{c1}")).0, 0);
    let t = env.json(&["token", "show", "H1"]);
    assert_eq!(t["count"], 2);
    assert_eq!(t["failcount"], 0);
}

#[test]
fn totp_all_hashes_replay_and_out_of_window() {
    let env = Env::new();
    for (serial, key, hash, digits, step) in [
        ("T1", RFC_KEY, "sha1", 6, 30),
        ("T256", RFC_KEY_SHA256, "sha256", 8, 30),
        ("T512", RFC_KEY_SHA512, "sha512", 8, 60),
    ] {
        env.ok(&[
            "token",
            "init",
            "--type",
            "totp",
            "--serial",
            serial,
            "--otpkey",
            key,
            "--hash",
            hash,
            "--digits",
            &digits.to_string(),
            "--timestep",
            &step.to_string(),
        ]);
        env.ok(&["token", "assign", serial, "--user", "bob"]);
        let code = oath_totp(key, now(), digits, hash, step);
        let (status, message) = env.check("bob", &code);
        assert_eq!((status, message.as_str()), (0, "matching 1 tokens"), "{serial}");
        let (status, message) = env.check("bob", &code);
        assert_eq!(status, 1, "{serial} replay");
        assert!(message.starts_with("wrong otp value"), "{serial}: {message}");
        // Ten minutes ago is outside the 180 s window.
        let old = oath_totp(key, now() - 600, digits, hash, step);
        assert_eq!(env.check("bob", &old).0, 1, "{serial} out of window");
        env.ok(&["token", "delete", serial]);
    }
}

#[test]
fn disabled_token_rejected_until_enabled() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "");
    env.ok(&["token", "disable", "H1"]);
    assert_eq!(env.check("alice", &oath_hotp(RFC_KEY, 0, 6)), (1, "Token is disabled".into()));
    assert_eq!(env.json(&["token", "show", "H1"])["active"], false);
    env.ok(&["token", "enable", "H1"]);
    assert_eq!(env.check("alice", &oath_hotp(RFC_KEY, 0, 6)).0, 0);
}

#[test]
fn lockout_after_max_fail_and_reset_unlocks() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    env.ok(&["token", "set", "H1", "--max-fail", "3"]);
    for _ in 0..3 {
        assert_eq!(env.check("alice", "1234000000").0, 1);
    }
    let t = env.json(&["token", "show", "H1"]);
    assert_eq!((t["failcount"].as_u64(), t["maxfail"].as_u64()), (Some(3), Some(3)));
    let good = format!("1234{}", oath_hotp(RFC_KEY, 0, 6));
    assert_eq!(
        env.check("alice", &good),
        (1, "Failcounter exceeded".into()),
        "a locked token refuses the right OTP"
    );
    assert_eq!(env.json(&["token", "show", "H1"])["count"], 0, "and consumes nothing");
    env.ok(&["token", "reset", "H1"]);
    assert_eq!(env.json(&["token", "show", "H1"])["failcount"], 0);
    assert_eq!(env.check("alice", &good).0, 0);
}

#[test]
fn validity_period_honoured() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "");
    env.ok(&["token", "set", "H1", "--validity-end", "2020-01-01T00:00:00Z"]);
    let t = env.json(&["token", "show", "H1"]);
    assert_eq!(t["validity_end"], "2020-01-01T00:00:00Z");
    assert_eq!(env.check("alice", &oath_hotp(RFC_KEY, 0, 6)), (1, "Outside validity period".into()));
    env.ok(&["token", "set", "H1", "--validity-end", "", "--validity-start", "+1d"]);
    assert_eq!(env.check("alice", &oath_hotp(RFC_KEY, 0, 6)), (1, "Outside validity period".into()));
    env.ok(&[
        "token",
        "set",
        "H1",
        "--validity-start",
        "2016/12/23 9:30am",
        "--validity-end",
        "23.12.2099 23:20",
    ]);
    let t = env.json(&["token", "show", "H1"]);
    assert!(t["validity_start"].as_str().unwrap().starts_with("2016-12-23"));
    assert_eq!(env.check("alice", &oath_hotp(RFC_KEY, 0, 6)).0, 0);
}

#[test]
fn resync_moves_counter_to_the_device() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "");
    // The device is 50 presses ahead: outside the window of 10.
    assert_eq!(env.check("alice", &oath_hotp(RFC_KEY, 52, 6)).0, 1);
    env.ok(&["token", "resync", "H1", &oath_hotp(RFC_KEY, 50, 6), &oath_hotp(RFC_KEY, 51, 6)]);
    assert_eq!(env.json(&["token", "show", "H1"])["count"], 52);
    assert_eq!(env.check("alice", &oath_hotp(RFC_KEY, 52, 6)).0, 0);
    let err = env.fails(&["token", "resync", "H1", &oath_hotp(RFC_KEY, 60, 6), &oath_hotp(RFC_KEY, 62, 6)]);
    assert!(err.contains("resynchronisation"), "{err}");
}

#[test]
fn init_prints_uri_qr_and_json_fields() {
    let env = Env::new();
    let text = env.ok(&["token", "init", "--type", "hotp", "--serial", "H1", "--otpkey", RFC_KEY]);
    assert!(text.contains("serial: H1"), "{text}");
    assert!(
        text.contains("otpauth://hotp/H1?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&counter=0&digits=6&creator=otpd&issuer=otpd&serial=H1"),
        "{text}"
    );
    assert!(text.contains('▀') || text.contains('▄') || text.contains('█'), "a QR code is drawn: {text}");

    let doc = env.json(&[
        "token",
        "init",
        "--type",
        "totp",
        "--genkey",
        "--user",
        "alice",
        "--description",
        "phone",
    ]);
    for field in [
        "serial",
        "type",
        "user",
        "realm",
        "realms",
        "active",
        "description",
        "count",
        "failcount",
        "maxfail",
        "validity_start",
        "validity_end",
        "otpauth",
    ] {
        assert!(doc.get(field).is_some(), "field {field} missing in {doc}");
    }
    assert_eq!(doc["type"], "totp");
    assert_eq!(doc["user"], "alice");
    assert_eq!(doc["realm"], "corp");
    assert_eq!(doc["realms"], serde_json::json!(["corp"]));
    assert!(doc["serial"].as_str().unwrap().starts_with("TOTP"));
    assert!(doc["otpauth"].as_str().unwrap().starts_with("otpauth://totp/"));
    assert_eq!(doc["validity_end"], serde_json::Value::Null);

    // The generated key works with an independent generator.
    let uri = doc["otpauth"].as_str().unwrap();
    let secret = uri.split("secret=").nth(1).unwrap().split('&').next().unwrap();
    let code = std::process::Command::new("oathtool").args(["--totp", "-b", secret]).output().unwrap();
    let code = String::from_utf8(code.stdout).unwrap();
    assert_eq!(env.check("alice", code.trim()).0, 0);
}

#[test]
fn passwdfile_yescrypt_user_resolved_and_assignment() {
    let env = Env::new();
    // alice's hash in the users file is yescrypt ($y$), made by mkpasswd.
    let users = std::fs::read_to_string(env.path("users")).unwrap();
    assert!(users.contains("alice:$y$"));
    env.ok(&["token", "init", "--type", "hotp", "--serial", "H1", "--otpkey", RFC_KEY, "--realm", "sales"]);
    let t = env.json(&["token", "assign", "H1", "--user", "alice@sales", "--pin", "77"]);
    assert_eq!((t["user"].as_str(), t["realm"].as_str()), (Some("alice"), Some("sales")));
    assert_eq!(env.check("alice@sales", &format!("77{}", oath_hotp(RFC_KEY, 0, 6))).0, 0);
    // The same login in another realm is another user: no token there.
    assert_eq!(
        env.check("alice", &format!("77{}", oath_hotp(RFC_KEY, 1, 6))),
        (1, "The user has no tokens assigned".into())
    );
    assert_eq!(env.check("carol", "x"), (1, "User carol@corp does not exist.".into()));

    let list = env.json(&["token", "list", "--user", "alice", "--realm", "sales"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let t = env.json(&["token", "unassign", "H1"]);
    assert_eq!(t["user"], serde_json::Value::Null);
    assert_eq!(t["realms"], serde_json::json!(["sales"]));
    assert_eq!(env.json(&["token", "list", "--realm", "sales"]).as_array().unwrap().len(), 1);
    assert_eq!(env.json(&["token", "list", "--realm", "corp"]).as_array().unwrap().len(), 0);
    env.ok(&["token", "delete", "H1"]);
    assert_eq!(env.json(&["token", "list"]).as_array().unwrap().len(), 0);
}

#[test]
fn pw_and_spass_tokens() {
    let env = Env::new();
    env.ok(&["token", "init", "--type", "spass", "--serial", "S1", "--user", "alice", "--pin", "letmein"]);
    assert_eq!(env.check("alice", "letmein").0, 0);
    assert_eq!(env.check("alice", "letmeout").0, 1);
    env.ok(&["token", "delete", "S1"]);
    env.ok(&[
        "token",
        "init",
        "--type",
        "pw",
        "--serial",
        "P1",
        "--user",
        "alice",
        "--pin",
        "12",
        "--password",
        "Xk9mQ2rT",
    ]);
    assert_eq!(env.check("alice", "12Xk9mQ2rT").0, 0);
    assert_eq!(env.check("alice", "12Xk9mQ2rX").0, 1);
}

#[test]
fn secrets_at_rest_and_audit_without_secrets() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "4711");
    let code = oath_hotp(RFC_KEY, 0, 6);
    assert_eq!(env.check("alice", &format!("4711{code}")).0, 0);
    assert_eq!(mode(&env.path("otpd.key")), 0o600);
    assert_eq!(mode(&env.path("otpd.db")), 0o600);
    let raw = std::fs::read(env.path("otpd.db")).unwrap();
    let needle = b"12345678901234567890";
    assert!(!raw.windows(needle.len()).any(|w| w == needle), "the OTP key is not stored in clear");
    let db = env.db();
    let pin: Vec<u8> = db.query_row("SELECT pin FROM tokens WHERE serial='H1'", [], |r| r.get(0)).unwrap();
    assert!(String::from_utf8(pin).unwrap().starts_with("$argon2id$"), "PINs are Argon2id hashes");
    let rows = audit_lines(&env);
    assert!(rows.iter().any(|r| r.contains("token_init")), "{rows:?}");
    assert!(rows.iter().any(|r| r.contains("validate_check") && r.contains("|1|")), "{rows:?}");
    for r in &rows {
        assert!(!r.contains("4711") && !r.contains(&code), "no secret in the audit: {r}");
    }
}

#[test]
fn check_challenge_exit_3_and_answer_with_state() {
    let env = Env::new();
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!("{text}\n[[policies]]\nname = \"cr\"\nscope = \"authentication\"\n[policies.actions]\nchallenge_response = \"hotp\"\n"),
    )
    .unwrap();
    env.init_hotp("H1", "alice", "1234");
    let out = env.run(&["check", "alice", "1234", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["result"], "challenge");
    assert_eq!(doc["message"], "please enter otp: ");
    let state = doc["state"].as_str().unwrap().to_owned();
    // A state no challenge carries matches nothing.
    assert_eq!(
        env.run(&["check", "alice", "755224", "--state", "12345678901234567890"]).status.code(),
        Some(1)
    );
    let code = oath_hotp(RFC_KEY, 0, 6);
    let out = env.run(&["check", "alice", &code, "--state", &state]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Found matching challenge"));
    let out = env.run(&["check", "alice", &oath_hotp(RFC_KEY, 1, 6), "--state", &state]);
    assert_eq!(out.status.code(), Some(1), "a challenge is answered once");
}

#[test]
fn import_seed_file_then_log_in_with_oathtool_codes() {
    let env = Env::new();
    let file = env.path("seeds.csv");
    // CRLF, a comment, defaults for the hotp line, every field for the totp.
    std::fs::write(
        &file,
        format!(
            "# serial, key, type, digits, timestep, user, realm, hash\r\n\
             IMP-H1, {RFC_KEY}, hotp, , , alice\r\n\
             IMP-T1,{RFC_KEY_SHA256},TOTP,8,60,bob,sales,sha256\r\n\
             IMP-P1,{RFC_KEY},hotp\r\n"
        ),
    )
    .unwrap();
    let out = env.ok(&["token", "import", file.to_str().unwrap()]);
    assert_eq!(out, "imported 3 tokens\n");
    assert!(!out.contains(RFC_KEY));

    // No PIN: the OTP alone logs in.
    assert_eq!(env.check("alice", &oath_hotp(RFC_KEY, 0, 6)), (0, "matching 1 tokens".into()));
    let code = oath_totp(RFC_KEY_SHA256, now(), 8, "sha256", 60);
    assert_eq!(env.check("bob@sales", &code), (0, "matching 1 tokens".into()));

    let t = env.json(&["token", "show", "IMP-T1"]);
    assert_eq!(
        (t["type"].as_str(), t["user"].as_str(), t["realm"].as_str()),
        (Some("totp"), Some("bob"), Some("sales"))
    );
    assert_eq!(
        (t["digits"].as_u64(), t["timestep"].as_u64(), t["hashlib"].as_str()),
        (Some(8), Some(60), Some("sha256"))
    );
    assert_eq!((t["pin_set"].as_bool(), t["maxfail"].as_u64()), (Some(false), Some(10)));
    let p = env.json(&["token", "show", "IMP-P1"]);
    assert!(p["user"].is_null() && p["realms"].as_array().unwrap().is_empty(), "{p}");

    // One audit record for the import, without serial or secret.
    let rows = audit_lines(&env);
    let load: Vec<_> = rows.iter().filter(|r| r.contains("|token_load|")).collect();
    assert_eq!(load.len(), 1, "{rows:?}");
    assert!(load[0].ends_with("|token_load|None|None|1|imported 3 tokens"), "{}", load[0]);

    // --json: the count and the first and last serial.
    std::fs::write(&file, format!("J1,{RFC_KEY},hotp\nJ2,{RFC_KEY},totp\n")).unwrap();
    let doc = env.json(&["token", "import", file.to_str().unwrap()]);
    assert_eq!(doc, serde_json::json!({ "imported": 2, "first": "J1", "last": "J2" }));
}

#[test]
fn import_refuses_a_missing_file_and_a_bad_line_importing_nothing() {
    let env = Env::new();
    let err = env.fails(&["token", "import", env.path("nope.csv").to_str().unwrap()]);
    assert!(err.starts_with("otpd: cannot read ") && err.contains("nope.csv"), "{err}");

    let file = env.path("bad.csv");
    std::fs::write(
        &file,
        format!("B1,{RFC_KEY},hotp,,,alice\nB2,{RFC_KEY},totp\nB3,31323334zz,hotp\nB4,{RFC_KEY},hotp\n"),
    )
    .unwrap();
    let err = env.fails(&["token", "import", file.to_str().unwrap()]);
    assert!(err.contains("bad.csv line 3: the OTP key is invalid"), "{err}");
    assert!(!err.contains("31323334zz"), "the key stays out of the message: {err}");
    assert_eq!(env.json(&["token", "list"]), serde_json::json!([]), "nothing was imported");
    assert!(!audit_lines(&env).iter().any(|r| r.contains("token_load")));
}

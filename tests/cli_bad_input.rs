//! End-to-end: every operator mistake gets one clear sentence on stderr,
//! exit status 2, and leaves the store as it was.

mod common;

use common::*;

/// Serials and audit length: what "the store" looks like from outside.
fn snapshot(env: &Env) -> (String, i64) {
    let list = env.ok(&["token", "list", "--json"]);
    let audit: i64 = env.db().query_row("SELECT count(*) FROM audit", [], |r| r.get(0)).unwrap();
    (list, audit)
}

#[test]
fn operator_mistakes_change_nothing() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let before = snapshot(&env);

    let err = env.fails(&["token", "show", "NOPE"]);
    assert!(err.contains("no token with serial 'NOPE'"), "{err}");
    for cmd in ["enable", "disable", "delete", "reset", "unassign"] {
        let err = env.fails(&["token", cmd, "NOPE"]);
        assert!(err.contains("NOPE"), "{cmd}: {err}");
    }
    let err = env.fails(&["token", "set", "NOPE", "--description", "x"]);
    assert!(err.contains("NOPE"), "{err}");
    let err = env.fails(&["token", "assign", "NOPE", "--user", "alice"]);
    assert!(err.contains("NOPE"), "{err}");
    let err = env.fails(&["token", "resync", "NOPE", "123456", "234567"]);
    assert!(err.contains("NOPE"), "{err}");

    let err = env.fails(&["token", "init", "--type", "hotp", "--user", "mallory"]);
    assert!(err.contains("user 'mallory' does not exist in realm 'corp'"), "{err}");
    let err = env.fails(&["token", "assign", "H1", "--user", "bob@nosuchrealm"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = env.fails(&["token", "init", "--type", "hotp", "--user", "alice", "--realm", "nosuch"]);
    assert!(err.contains("realm 'nosuch' does not exist"), "{err}");

    let err = env.fails(&["token", "init", "--type", "hotp", "--otpkey", "3132"]);
    assert!(err.contains("OTP key") && err.contains("2 bytes"), "{err}");
    let err = env.fails(&[
        "token",
        "init",
        "--type",
        "hotp",
        "--otpkey",
        "31323334353637383930313233343536373839zz",
    ]);
    assert!(err.contains("hexadecimal"), "{err}");
    let err = env.fails(&[
        "token",
        "init",
        "--type",
        "hotp",
        "--otpkey",
        "313233343536373839303132333435363738393",
    ]);
    assert!(err.contains("odd"), "{err}");
    let err = env.fails(&["token", "init", "--type", "yubikey"]);
    assert!(err.contains("yubikey"), "{err}");
    let err = env.fails(&["token", "init", "--type", "hotp", "--serial", "H1"]);
    assert!(err.contains("already exists"), "{err}");
    let err = env.fails(&["token", "init", "--type", "hotp", "--serial", "bad serial!"]);
    assert!(err.contains("serial"), "{err}");
    let err = env.fails(&["token", "init", "--type", "totp", "--digits", "7"]);
    assert!(err.contains("6 or 8"), "{err}");
    let err = env.fails(&["token", "init", "--type", "hotp", "--timestep", "60"]);
    assert!(err.contains("totp"), "{err}");
    let err = env.fails(&["token", "assign", "H1", "--user", "bob"]);
    assert!(err.contains("already assigned"), "{err}");
    let err = env.fails(&["token", "set", "H1", "--validity-end", "31.02.2016"]);
    assert!(err.contains("31.02.2016"), "{err}");
    let err = env.fails(&["token", "set", "H1", "--validity-start", "+5x"]);
    assert!(err.contains("+5x"), "{err}");
    let err = env.fails(&["token", "set", "H1", "--realms", "corp,atlantis"]);
    assert!(err.contains("atlantis"), "{err}");
    let err = env.fails(&["check", "alice", "x", "--client", "not-an-ip"]);
    assert!(err.contains("not-an-ip"), "{err}");

    assert_eq!(snapshot(&env), before, "no refused operation changed the store");
}

#[test]
fn missing_or_foreign_key_file_refused() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "");
    let key = std::fs::read(env.path("otpd.key")).unwrap();
    std::fs::remove_file(env.path("otpd.key")).unwrap();
    let err = env.fails(&["token", "list"]);
    assert!(err.contains("key file") && err.contains("missing"), "{err}");
    assert!(!env.path("otpd.key").exists(), "no new key was made for an existing database");
    let err = env.fails(&["check", "alice", &oath_hotp(RFC_KEY, 0, 6)]);
    assert!(err.contains("key file"), "{err}");
    // Another database's key does not fit either.
    std::fs::write(env.path("otpd.key"), "00".repeat(32)).unwrap();
    set_mode(&env.path("otpd.key"), 0o600);
    let err = env.fails(&["token", "list"]);
    assert!(err.contains("does not belong"), "{err}");
    // The right key, but readable by everyone (fs::write leaves 0644 under
    // the usual umask): refused, naming the file, its mode and the fix.
    std::fs::write(env.path("otpd.key"), key).unwrap();
    set_mode(&env.path("otpd.key"), 0o644);
    let shown = env.path("otpd.key").display().to_string();
    for args in [&["token", "list"][..], &["check", "alice", &oath_hotp(RFC_KEY, 0, 6)]] {
        let err = env.fails(args);
        assert!(err.contains(&format!("key file {shown} has mode 0644")), "{err}");
        assert!(err.contains(&format!("chmod 600 {shown}")), "{err}");
    }
    set_mode(&env.path("otpd.key"), 0o640);
    assert_eq!(env.check("alice", &oath_hotp(RFC_KEY, 0, 6)).0, 0, "group-readable is allowed");
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn newer_schema_refused_untouched() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "");
    env.db().pragma_update(None, "user_version", 99).unwrap();
    let before = std::fs::read(env.path("otpd.db")).unwrap();
    let err = env.fails(&["token", "list"]);
    assert!(err.contains("newer") && err.contains("99"), "{err}");
    assert_eq!(std::fs::read(env.path("otpd.db")).unwrap(), before);
}

#[test]
fn broken_config_names_file_line_and_key() {
    let env = Env::new();
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!("{text}\n[[realms]]\nname = \"ops\"\nresolvers = [\"corp-users\"]\ncolour = \"blue\"\n"),
    )
    .unwrap();
    let err = env.fails(&["token", "list"]);
    let line = text.lines().count() + 5;
    assert!(
        err.contains("otpd.toml") && err.contains(&format!("line {line}")) && err.contains("colour"),
        "{err}"
    );

    std::fs::write(&env.config, "[[realms]]\nname = \"ops\"\nresolvers = [\"ghost\"]\n").unwrap();
    let err = env.fails(&["token", "list"]);
    assert!(err.contains("line 3") && err.contains("ghost"), "{err}");

    std::fs::write(&env.config, "database = \n").unwrap();
    let err = env.fails(&["token", "list"]);
    assert!(err.contains("line 1"), "{err}");

    let out = std::process::Command::new(otpd_bin())
        .args(["--config", "/nonexistent/otpd.toml", "token", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("/nonexistent/otpd.toml") && err.lines().count() == 1, "{err}");
}

#[test]
fn broken_passwd_file_is_reported() {
    let env = Env::new();
    std::fs::write(env.path("users"), "alice:*\nthis line has no colon\n").unwrap();
    let err = env.fails(&["token", "list"]);
    assert!(err.contains("users") && err.contains("line 2"), "{err}");
}

#[test]
fn builtin_defaults_work_in_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(otpd_bin())
        .args(["token", "init", "--type", "hotp", "--serial", "D1", "--json"])
        .current_dir(dir.path())
        .env_remove("OTPD_CONFIG")
        .output()
        .unwrap();
    // Unless the machine has /etc/otpd/otpd.toml, the defaults put the
    // store into the working directory.
    if !std::path::Path::new("/etc/otpd/otpd.toml").exists() {
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(dir.path().join("otpd.db").exists() && dir.path().join("otpd.key").exists());
        assert_eq!(mode(&dir.path().join("otpd.key")), 0o600);
        // The default realm is backed by the machine's accounts: root exists.
        let out = std::process::Command::new(otpd_bin())
            .args(["token", "assign", "D1", "--user", "root", "--json"])
            .current_dir(dir.path())
            .env_remove("OTPD_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn import_mistakes_name_file_and_line_and_change_nothing() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let before = snapshot(&env);
    let file = env.path("seeds.csv");
    let path = file.to_str().unwrap();
    let good = format!("N1,{RFC_KEY},hotp\n");
    let cases: &[(Vec<u8>, &str)] = &[
        (
            format!("{good}H1,{RFC_KEY},hotp\n").into_bytes(),
            "seeds.csv line 2: a token with serial 'H1' already exists",
        ),
        (
            format!("{good}N2,{RFC_KEY},hotp,,,mallory\n").into_bytes(),
            "seeds.csv line 2: user 'mallory' does not exist in realm 'corp'",
        ),
        (
            format!("{good}N2,{RFC_KEY},hotp,,,alice,atlantis\n").into_bytes(),
            "seeds.csv line 2: realm 'atlantis' does not exist",
        ),
        (format!("{good}{good}").into_bytes(), "seeds.csv line 2: serial 'N1' is already on line 1"),
        (format!("{good}N2,{RFC_KEY},pw\n").into_bytes(), "seeds.csv line 2: pw tokens cannot be imported"),
        (
            format!("{good}N2,{RFC_KEY},hotp,6,30\n").into_bytes(),
            "seeds.csv line 2: a timestep applies only to totp",
        ),
        (
            format!("{good}N2,{RFC_KEY},totp,7\n").into_bytes(),
            "seeds.csv line 2: digits must be 6 or 8, not '7'",
        ),
        (
            format!("{good}N2 {RFC_KEY} hotp\n").into_bytes(),
            "seeds.csv line 2: 1 field(s), but serial, key and type are required",
        ),
        ([good.as_bytes(), b"N2,\xff,hotp\n"].concat(), "seeds.csv line 2: the line is not UTF-8 text"),
        (
            format!("{good}N2,{RFC_KEY},hotp,,,{}\n", "u".repeat(5000)).into_bytes(),
            "seeds.csv line 2: the line is longer than 4096 bytes",
        ),
        (b"# only a comment\n\n".to_vec(), "seeds.csv holds no tokens"),
    ];
    for (content, message) in cases {
        std::fs::write(&file, content).unwrap();
        let err = env.fails(&["token", "import", path]);
        assert!(err.starts_with("otpd: ") && err.contains(message), "{message}: {err}");
    }
    let err = env.fails(&["token", "import", env.dir.path().to_str().unwrap()]);
    assert!(err.contains("is a directory"), "{err}");
    assert_eq!(snapshot(&env), before, "no refused import changed the store");
}

//! Shared fixtures of the end-to-end tests: a temporary directory with a
//! configuration, a passwd-style user file whose hashes come from the
//! system's `mkpasswd`, and helpers that run the built `otpd` binary and the
//! independent OTP generator `oathtool`.
#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const RFC_KEY: &str = "3132333435363738393031323334353637383930";
pub const RFC_KEY_SHA256: &str = "3132333435363738393031323334353637383930313233343536373839303132";
pub const RFC_KEY_SHA512: &str = "31323334353637383930313233343536373839303132333435363738393031323334353637383930313233343536373839303132333435363738393031323334";

/// The authentication policy that turns on HOTP challenge-response.
pub const CHALLENGE_POLICY: &str = r#"
[[policies]]
name = "cr"
scope = "authentication"
[policies.actions]
challenge_response = "hotp"
"#;

pub fn otpd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_otpd")
}

/// Runs a peer program, failing the test with a clear message if it is
/// missing (CI installs it; see .ci/run).
pub fn peer(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); install it (see .ci/run)"));
    assert!(out.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// HOTP value of `key_hex` at `counter`, computed by oathtool.
pub fn oath_hotp(key_hex: &str, counter: u64, digits: u32) -> String {
    peer("oathtool", &["--hotp", "-c", &counter.to_string(), "-d", &digits.to_string(), key_hex])
}

/// TOTP value at unix time `at`, computed by oathtool.
pub fn oath_totp(key_hex: &str, at: i64, digits: u32, hash: &str, step: u32) -> String {
    peer(
        "oathtool",
        &[
            &format!("--totp={hash}"),
            "-N",
            &format!("@{at}"),
            "-s",
            &format!("{step}s"),
            "-d",
            &digits.to_string(),
            key_hex,
        ],
    )
}

/// A `[radius]` section: listening on 127.0.0.1:`port`, one client
/// `localhost` (127.0.0.1) with `secret`.
pub fn radius_section(port: u16, secret: &str) -> String {
    format!(
        "\n[radius]\nlisten = [\"127.0.0.1:{port}\"]\n\n[[radius.clients]]\nname = \"localhost\"\n\
         address = \"127.0.0.1/32\"\nsecret = \"{secret}\"\n"
    )
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A crypt(3) hash made by the system's mkpasswd (libxcrypt).
pub fn mkpasswd(method: &str, password: &str) -> String {
    peer("mkpasswd", &["-m", method, password])
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Env {
    /// Realm `corp` (default) over a passwd file with alice (yescrypt) and
    /// bob (SHA-512), and realm `sales` over the same file.
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let users = format!(
            "# test users\nalice:{}:1000:1000:Alice Smith:/home/alice:/bin/sh\nbob:{}\n",
            mkpasswd("yescrypt", "alicepw"),
            mkpasswd("sha-512", "bobpw")
        );
        std::fs::write(dir.path().join("users"), users).unwrap();
        let config = dir.path().join("otpd.toml");
        std::fs::write(
            &config,
            r#"database = "otpd.db"
key_file = "otpd.key"

[[resolvers]]
name = "corp-users"
type = "passwdfile"
path = "users"

[[realms]]
name = "corp"
default = true
resolvers = ["corp-users"]

[[realms]]
name = "sales"
resolvers = ["corp-users"]
"#,
        )
        .unwrap();
        Env { dir, config }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(otpd_bin());
        cmd.arg("--config").arg(&self.config).args(args).env_remove("OTPD_CONFIG");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(0), "otpd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// `otpd check`: (exit status, message).
    pub fn check(&self, user: &str, password: &str) -> (i32, String) {
        let out = self.run(&["check", user, password, "--json"]);
        let code = out.status.code().unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("check printed no JSON: {}", String::from_utf8_lossy(&out.stderr)));
        (code, doc["message"].as_str().unwrap().to_owned())
    }

    /// Expects exit 2 with one line on stderr; returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "otpd {args:?} should fail with 2; stderr: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one sentence on stderr, got: {err}");
        err.trim().to_owned()
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path("otpd.db")).unwrap()
    }

    pub fn init_hotp(&self, serial: &str, user: &str, pin: &str) {
        self.ok(&[
            "token", "init", "--type", "hotp", "--serial", serial, "--otpkey", RFC_KEY, "--user", user,
            "--pin", pin,
        ]);
    }
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The PAM module beside the `otpd` binary, built by cargo with the same
/// profile once per test binary (`cargo test` compiles the module's crate
/// only as a test harness, so after a change to the core the module file
/// would test the old core). Only the module's own package is built: a
/// wider selection would link the `otpd` binary again (cargo re-links even
/// an output that is up to date), which another test of this binary may be
/// starting at that moment. Callers meanwhile wait for the build.
pub fn pam_module() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let profile_dir = Path::new(otpd_bin()).parent().unwrap();
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .args(["build", "--quiet", "-p", "pam_otpd", "--lib", "--target-dir"])
                .arg(profile_dir.parent().unwrap());
            match profile_dir.file_name().unwrap().to_str().unwrap() {
                "debug" => {}
                "release" => {
                    cargo.arg("--release");
                }
                other => {
                    cargo.args(["--profile", other]);
                }
            }
            let status = cargo.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("cannot run cargo");
            assert!(status.success(), "cargo build -p pam_otpd failed");
            profile_dir.join("libpam_otpd.so")
        })
        .clone()
}

/// The audit table, one line a row (`actor|action|serial|user|success|message`).
pub fn audit_lines(env: &Env) -> Vec<String> {
    let db = env.db();
    let mut stmt =
        db.prepare("SELECT actor, action, serial, user, success, message FROM audit ORDER BY id").unwrap();
    stmt.query_map([], |r| {
        Ok(format!(
            "{}|{}|{:?}|{:?}|{}|{}",
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, String>(5)?
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

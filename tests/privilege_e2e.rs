//! End-to-end: `otpd serve` started as root with `user` and `group` in its
//! configuration binds its socket, hands the store to that user and runs
//! as it.
//!
//! * A database directory the user could not write stops the start with a
//!   sentence naming the directory and the fix, before any file changes
//!   owner.
//! * Given the directory, every thread of the daemon runs as the user and
//!   group (real, effective, saved and filesystem IDs; no group root), the
//!   database, its `-wal` and `-shm` and the key file (all created by root)
//!   belong to the user with mode 0600, logins are accepted and
//!   committed, root's CLI shares the store with it, and SIGHUP reloads.
//! * An unknown user, `user = "root"`, or a process that is not root and
//!   not the user is refused with a clear message; started as the user
//!   itself, the daemon runs.
//!
//! Switching users needs root: as another user the test passes with a
//! note. It uses the account `nobody` and its group (`nogroup` or `nobody`).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::server::{RadiusClient, Server, free_port};
use common::*;
use nix::unistd::{Group, Uid, User};
use otpd_daemon::radius::codec::code;

const SECRET: &str = "testing123";
const TIMEOUT: Duration = Duration::from_secs(10);

fn skip() -> bool {
    if Uid::effective().is_root() {
        return false;
    }
    eprintln!(
        "note: privilege end-to-end test skipped: switching users needs root (CI runs the tests as root)"
    );
    true
}

/// `nobody` and its group: (uid, gid, group name).
fn nobody() -> (u32, u32, String) {
    let user = User::from_name("nobody").unwrap().expect("the test needs the account nobody");
    let group = Group::from_gid(user.gid).unwrap().expect("nobody's primary group exists");
    (user.uid.as_raw(), user.gid.as_raw(), group.name)
}

/// `base` (the configuration `Env` wrote) with the store in `state/`,
/// RADIUS on `port`, and `head` (top-level keys) first.
fn configure(env: &Env, base: &str, head: &str, port: u16) {
    let base = base.replace("database = \"otpd.db\"", "").replace("key_file = \"otpd.key\"", "");
    let text = format!(
        "{head}\ndatabase = \"state/otpd.db\"\nkey_file = \"state/otpd.key\"\n{base}{}",
        radius_section(port, SECRET)
    );
    std::fs::write(&env.config, text).unwrap();
}

/// Runs `command` (an `otpd serve` expected to refuse to start) and
/// returns its exit code and stderr; fails if it is still running after
/// `TIMEOUT`.
fn refused(mut command: Command) -> (Option<i32>, String) {
    let mut child = command
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("otpd serve did not refuse to start: {}", String::from_utf8_lossy(&out.stderr));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The `Uid:`, `Gid:` and `Groups:` lines of every thread of `pid`.
fn thread_ids(pid: u32) -> Vec<String> {
    let mut lines = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        for line in status.lines() {
            if line.starts_with("Uid:") || line.starts_with("Gid:") || line.starts_with("Groups:") {
                lines.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
    }
    lines
}

fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777)
}

#[test]
fn serve_drops_to_the_configured_user_after_binding() {
    if skip() {
        return;
    }
    let started = Instant::now();
    let (uid, gid, group) = nobody();
    let env = Env::new();
    // nobody must reach the configuration (a reload reads it), the users
    // file and the state directory.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = env.path("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let base = std::fs::read_to_string(&env.config).unwrap();
    configure(&env, &base, &format!("user = \"nobody\"\ngroup = \"{group}\""), port);
    // Root's CLI creates the store: every file is root's.
    env.init_hotp("H1", "alice", "1234");
    let files = ["otpd.db", "otpd.db-wal", "otpd.db-shm", "otpd.key"].map(|f| state.join(f));
    for f in &files {
        assert_eq!(owner_and_mode(f), (0, 0, 0o600), "{}", f.display());
    }

    // The directory is root's 0755: nobody could not create -wal/-shm there.
    let (status, stderr) = refused(env.command(&["serve", "--log", "stderr"]));
    assert_eq!(status, Some(2), "{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(
        line.starts_with(&format!("otpd: {} must be writable by user nobody", state.display())),
        "{stderr}"
    );
    assert!(line.contains(&format!("`chown nobody {}`", state.display())), "{stderr}");
    assert!(line.contains("otpd.db-wal"), "{stderr}");
    for f in &files {
        assert_eq!(owner_and_mode(f).0, 0, "nothing was handed over for a start that failed");
    }

    nix::unistd::chown(&state, Some(Uid::from_raw(uid)), None).unwrap();
    let listen = [format!("127.0.0.1:{port}")];
    let server = Server::start(&env, &listen);
    assert!(
        server.log().contains(&format!("running as user nobody (uid {uid}) and group {group} (gid {gid})"))
    );
    let ids = thread_ids(server.pid());
    assert!(ids.len() >= 3 * 8, "many threads: {ids:?}");
    for line in &ids {
        let want = match line.split(' ').next().unwrap() {
            "Uid:" => format!("Uid: {uid} {uid} {uid} {uid}"),
            "Gid:" => format!("Gid: {gid} {gid} {gid} {gid}"),
            _ => {
                assert!(!line.split(' ').skip(1).any(|g| g == "0"), "no group root: {line}");
                continue;
            }
        };
        assert_eq!(line, &want);
    }
    for f in &files {
        assert_eq!(owner_and_mode(f), (uid, gid, 0o600), "{}", f.display());
    }

    // Logins commit as nobody.
    let mut client = RadiusClient::new(server.addr, SECRET);
    let otp = |c: u64| format!("1234{}", oath_hotp(RFC_KEY, c, 6));
    assert_eq!(client.access("alice", &otp(0), TIMEOUT), Some(code::ACCESS_ACCEPT));
    assert_eq!(client.access("alice", &otp(0), TIMEOUT), Some(code::ACCESS_REJECT), "replay");
    // Root's CLI and the daemon share the store.
    env.ok(&["token", "init", "--type", "hotp", "--serial", "H2", "--otpkey", RFC_KEY, "--user", "bob"]);
    assert_eq!(client.access("bob", &oath_hotp(RFC_KEY, 0, 6), TIMEOUT), Some(code::ACCESS_ACCEPT));
    assert_eq!(env.json(&["token", "show", "H1"])["count"], 1);
    for f in &files {
        assert_eq!(owner_and_mode(f), (uid, gid, 0o600), "{} after root's CLI", f.display());
    }
    // A reload opens everything again, as nobody.
    server.signal("HUP");
    assert!(server.wait_for("configuration reloaded", TIMEOUT), "{}", server.log());
    assert_eq!(client.access("alice", &otp(1), TIMEOUT), Some(code::ACCESS_ACCEPT));
    assert!(!server.log().contains("ERROR"), "{}", server.log());
    drop(server);

    // Started as nobody itself, `user = "nobody"` holds already.
    let as_nobody = || {
        let mut cmd = Command::new("setpriv");
        cmd.args([format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".into()])
            .arg(otpd_bin())
            .arg("--config")
            .arg(&env.config)
            .args(["serve", "--log", "stderr"])
            .env_remove("OTPD_CONFIG");
        cmd
    };
    let server = Server::spawn(as_nobody(), &listen);
    assert!(server.log().contains(&format!("running as user nobody and group {group} (started as them)")));
    assert_eq!(client.access("alice", &otp(2), TIMEOUT), Some(code::ACCESS_ACCEPT));
    drop(server);

    // Not root and another user: it cannot switch.
    configure(&env, &base, "user = \"daemon\"", port);
    let (status, stderr) = refused(as_nobody());
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "user = \"daemon\" is set, but otpd serve runs as uid {uid} (gid {gid}), not as root"
        )),
        "{stderr}"
    );
    // No such user; root.
    configure(&env, &base, "user = \"no-such-otpd-user\"", port);
    let (status, stderr) = refused(env.command(&["serve", "--log", "stderr"]));
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("user = \"no-such-otpd-user\": there is no such user on this machine"),
        "{stderr}"
    );
    configure(&env, &base, "user = \"root\"", port);
    let (status, stderr) = refused(env.command(&["serve", "--log", "stderr"]));
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("user = \"root\" names root (id 0): that drops no privilege"), "{stderr}");
    configure(&env, &base, "user = \"nobody\"\ngroup = \"no-such-otpd-group\"", port);
    let (status, stderr) = refused(env.command(&["serve", "--log", "stderr"]));
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("group = \"no-such-otpd-group\": there is no such group"), "{stderr}");
    eprintln!("privilege_e2e: done in {:?}", started.elapsed());
}

/// A key file that others may read stops every front before it serves:
/// here `otpd serve` (the CLI and PAM load the key through the same call).
#[test]
fn serve_refuses_a_key_file_open_to_others() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "");
    let key = env.path("otpd.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
    let port = free_port();
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{text}{}", radius_section(port, SECRET))).unwrap();
    let (status, stderr) = refused(env.command(&["serve", "--log", "stderr"]));
    assert_eq!(status, Some(2), "{stderr}");
    let shown = key.display().to_string();
    assert!(stderr.contains(&format!("otpd: key file {shown} has mode 0604")), "{stderr}");
    assert!(stderr.contains(&format!("run `chmod 600 {shown}`")), "{stderr}");
}

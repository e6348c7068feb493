//! End-to-end: a store that cannot be written. The database lives on a
//! small tmpfs of its own.
//!
//! * Disk full: with the file system filled up while `otpd serve` runs,
//!   every login is rejected (the counter cannot be committed, so nothing
//!   is accepted), and the daemon logs `store unavailable` once per
//!   interval (10 s) with a count of the rest, not once per login. Once
//!   space returns, logins are accepted again and the recovery is logged;
//!   an OTP rejected while the disk was full was never consumed, so it is
//!   accepted now, once. The database passes `PRAGMA integrity_check`.
//! * Read-only: with the file system remounted read-only, `otpd check`
//!   (the path PAM takes too) fails with an error naming the database and
//!   `otpd serve` refuses to start; remounted read-write, the OTP refused
//!   meanwhile is accepted. (Linux refuses to remount a file system
//!   read-only while a file on it is open for writing, so the daemon is
//!   stopped first: a store turning read-only under a running daemon fails
//!   its commits like the full disk above.)
//!
//! Mounting needs root (and a container that allows it): otherwise the
//! test passes with a note. Every mount is undone on every path.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::server::{RadiusClient, Server, free_port};
use common::*;
use otpd_daemon::radius::codec::code;

const SECRET: &str = "testing123";
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often the daemon logs a persisting store failure.
const STORE_INTERVAL: Duration = Duration::from_secs(10);
/// Logins sent while the disk is full, within one interval.
const FULL_LOGINS: usize = 30;
const FAILURE_LINE: &str = "store unavailable, logins are rejected until it recovers";

/// A tmpfs mounted for the test, unmounted when dropped (lazily, so that
/// a failing test with files still open cannot leave it behind).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "2m") on `path`; `None` with a note
    /// when this is not root or the container does not allow mounting.
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("note: disk-full test skipped: mounting a small file system needs root");
            return None;
        }
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(path)
            .output()
            .expect("cannot run mount");
        if !out.status.success() {
            eprintln!(
                "note: disk-full test skipped: cannot mount a tmpfs here ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs { path: path.to_owned() })
    }

    fn remount(&self, options: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount {options}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system of `dir` with a file `filler` until it refuses
/// another page; returns the file's path and size.
fn fill(dir: &Path) -> (PathBuf, u64) {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut written = 0u64;
    for chunk in [64 * 1024, 4096, 512] {
        let block = vec![0x5au8; chunk];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    (path, written)
}

/// The log lines that contain `needle`, once there are `expected` of them
/// (or after a second): a line logged before a reply was sent may still be
/// on its way through the pipe when the reply arrives.
fn lines_with(server: &Server, needle: &str, expected: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let lines: Vec<String> =
            server.log().lines().filter(|l| l.contains(needle)).map(str::to_owned).collect();
        if lines.len() >= expected || Instant::now() > deadline {
            return lines;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn full_or_read_only_store_rejects_and_recovers() {
    let started = Instant::now();
    let env = Env::new();
    let store = env.path("store");
    let Some(tmpfs) = Tmpfs::mount(&store, "2m") else { return };
    let port = free_port();
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("database = \"otpd.db\"", "database = \"store/otpd.db\"")
        .replace("key_file = \"otpd.key\"", "key_file = \"store/otpd.key\"");
    std::fs::write(&env.config, format!("{text}{}", radius_section(port, SECRET))).unwrap();
    env.init_hotp("H1", "alice", "1234");
    let otp = |c: u64| format!("1234{}", oath_hotp(RFC_KEY, c, 6));
    let listen = [format!("127.0.0.1:{port}")];
    let server = Server::start(&env, &listen);
    let mut client = RadiusClient::new(server.addr, SECRET);
    assert_eq!(client.access("alice", &otp(0), TIMEOUT), Some(code::ACCESS_ACCEPT));

    // Disk full: every login is rejected, right code or not.
    let (filler, size) = fill(&store);
    eprintln!("diskfull_e2e: filled the tmpfs with {size} bytes");
    let full_since = Instant::now();
    for i in 0..FULL_LOGINS {
        let password = match i % 3 {
            0 => otp(1),
            1 => otp(2),
            _ => "1234000000".to_owned(),
        };
        assert_eq!(client.access("alice", &password, TIMEOUT), Some(code::ACCESS_REJECT), "login {i}");
    }
    assert!(full_since.elapsed() < STORE_INTERVAL, "the logins took {:?}", full_since.elapsed());
    let decisions = lines_with(&server, "reason=\"internal error (store)\"", FULL_LOGINS);
    assert_eq!(decisions.len(), FULL_LOGINS, "each login still gets its decision line");
    let lines = lines_with(&server, FAILURE_LINE, 1);
    assert_eq!(lines.len(), 1, "one line for {FULL_LOGINS} failed logins: {lines:#?}");
    assert!(lines[0].contains("database or disk is full"), "{}", lines[0]);
    // The next interval: one more line, counting the logins in between.
    thread::sleep(
        (full_since + STORE_INTERVAL + Duration::from_millis(200)).saturating_duration_since(Instant::now()),
    );
    assert_eq!(client.access("alice", &otp(1), TIMEOUT), Some(code::ACCESS_REJECT));
    let lines = lines_with(&server, FAILURE_LINE, 2);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let more = format!("({} more logins failed on the store since the last such line)", FULL_LOGINS - 1);
    assert!(lines[1].contains(&more), "{}", lines[1]);
    assert_eq!(env.json(&["token", "show", "H1"])["count"], 1, "no counter moved");

    // Space returns: the code rejected meanwhile was not used, so it is
    // accepted now, once.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(client.access("alice", &otp(1), TIMEOUT), Some(code::ACCESS_ACCEPT));
    let recovered = format!(
        "store available again: logins are served ({} failed on the store meanwhile)",
        FULL_LOGINS + 1
    );
    assert!(server.wait_for(&recovered, TIMEOUT), "{}", server.log());
    assert_eq!(client.access("alice", &otp(1), TIMEOUT), Some(code::ACCESS_REJECT), "replay");
    assert_eq!(client.access("alice", &otp(2), TIMEOUT), Some(code::ACCESS_ACCEPT));
    assert_eq!(lines_with(&server, FAILURE_LINE, 3).len(), 2, "{}", server.log());
    drop(server);
    let check: String = env.db().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    assert_eq!(env.json(&["token", "show", "H1"])["count"], 3);

    // Read-only: nothing has the store open now, so it can be remounted.
    tmpfs.remount("ro");
    let out = env.run(&["check", "alice", &otp(3)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "otpd check on a read-only store: {stderr}");
    let db = store.join("otpd.db").display().to_string();
    assert!(stderr.contains(&db) && stderr.contains("Read-only file system"), "{stderr}");
    // (Under timeout(1): a daemon that started anyway would never return.)
    let out = Command::new("timeout")
        .arg("30")
        .arg(otpd_bin())
        .arg("--config")
        .arg(&env.config)
        .args(["serve", "--log", "stderr"])
        .env_remove("OTPD_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "otpd serve on a read-only store: {stderr}");
    assert!(stderr.contains(&db) && stderr.contains("Read-only file system"), "{stderr}");
    tmpfs.remount("rw");
    assert_eq!(env.check("alice", &otp(3)).0, 0, "the OTP refused on the read-only store was not used");
    assert_eq!(env.check("alice", &otp(3)).0, 1, "and now it is");
    eprintln!("diskfull_e2e: done in {:?}", started.elapsed());
}

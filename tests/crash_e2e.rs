//! End-to-end: crash safety of `otpd serve`. A load of valid HOTP logins
//! (many users, one request of each in flight, codes from oathtool) runs
//! against the daemon, which is killed with SIGKILL at a random moment and
//! restarted on the same database, again and again. After each restart:
//!
//! * every OTP that got an Access-Accept before the kill is rejected when
//!   sent again (no replay through a counter lost in the crash), and each
//!   token's counter is past every code it accepted so far;
//! * `PRAGMA integrity_check` returns `ok`;
//! * every token and owner listed before is still there (a token enrolled
//!   by the CLI while the daemon ran included), every audit row read before
//!   is still there, and each user has at least as many successful audit
//!   rows as accepts acknowledged to them (an accept's audit row is
//!   committed with its counter).
//!
//! The kill moments and the tokens' keys come from a seeded RNG; the seed
//! is printed, and `OTPD_TEST_SEED=N` runs with the same keys and delays.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::server::{RadiusClient, Server, free_port};
use common::*;
use otpd_daemon::radius::codec::code;

const SECRET: &str = "testing123";
/// Users, each with one HOTP token and one request in flight.
const USERS: usize = 24;
/// SIGKILLs of the daemon.
const KILLS: usize = 24;
/// The kill comes this long (uniformly drawn, ms) after the load starts.
const DELAY_MS: (u64, u64) = (20, 300);
/// How long a request may wait for its answer while the daemon is up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The HOTP look-ahead of the tokens (otpd's default count_window).
const WINDOW: u64 = 10;
/// oathtool computes this many codes of a user at once.
const CODES_PER_CALL: u64 = 500;

/// splitmix64: small, seeded, good enough to pick moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The seed from `$OTPD_TEST_SEED`, or else from the clock.
fn seed() -> u64 {
    if let Ok(text) = std::env::var("OTPD_TEST_SEED") {
        return text.trim().parse().expect("OTPD_TEST_SEED must be a number");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    now.as_nanos() as u64 ^ u64::from(std::process::id())
}

/// One user of the load: their token and the codes oathtool made for it.
struct User {
    name: String,
    serial: String,
    key: String,
    /// `codes[c]` is the HOTP value at counter c.
    codes: Vec<String>,
    /// The next counter to send: never one sent before.
    next: u64,
    /// Every (counter, code) accepted so far, in all cycles.
    accepted: Vec<(u64, String)>,
}

impl User {
    fn code(&mut self, counter: u64) -> String {
        while self.codes.len() as u64 <= counter {
            let from = self.codes.len() as u64;
            let out = std::process::Command::new("oathtool")
                .args(["--hotp", "-c", &from.to_string(), "-w", &(CODES_PER_CALL - 1).to_string(), &self.key])
                .output()
                .expect("cannot run oathtool; install it (see .ci/run)");
            assert!(out.status.success(), "oathtool failed: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).unwrap();
            let codes: Vec<String> = text.lines().map(str::to_owned).collect();
            assert_eq!(codes.len() as u64, CODES_PER_CALL, "oathtool printed {text}");
            self.codes.extend(codes);
        }
        self.codes[counter as usize].clone()
    }
}

/// What one user's load thread saw in one cycle.
#[derive(Default)]
struct Seen {
    /// (counter, code) that got an Access-Accept.
    accepted: Vec<(u64, String)>,
    /// Answers that must not happen to a fresh code while the daemon is up.
    unexpected: Vec<String>,
    /// Requests in flight at the kill (answer unknown).
    unknown: usize,
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Sends `user`'s next codes, one at a time, until `stop` is set and the
/// request in flight has no answer.
fn load(user: &mut User, server: std::net::SocketAddr, stop: &AtomicBool) -> Seen {
    let mut client = RadiusClient::new(server, SECRET);
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        let counter = user.next;
        let otp = user.code(counter);
        // Whatever happens to this request, its code is never sent again
        // as a fresh one: it may have been used up.
        user.next += 1;
        // A six-digit code equal to one of the ten before it would match
        // that earlier counter if it is still unused (the request in flight
        // at a kill may not have been committed): skip it.
        if (counter.saturating_sub(WINDOW)..counter).any(|c| user.codes[c as usize] == otp) {
            continue;
        }
        let pending = client.send(&user.name, &otp);
        match client.wait(&pending, ANSWER_TIMEOUT, &|| stop.load(Ordering::SeqCst)) {
            Some(code::ACCESS_ACCEPT) => seen.accepted.push((counter, otp)),
            Some(other) => seen.unexpected.push(format!("{} counter {counter}: code {other}", user.name)),
            None if stop.load(Ordering::SeqCst) => {
                seen.unknown += 1;
                break;
            }
            None => seen
                .unexpected
                .push(format!("{} counter {counter}: no answer in {ANSWER_TIMEOUT:?}", user.name)),
        }
    }
    seen
}

/// Sends each of `codes` again as a new request; returns those not
/// rejected, with what came back.
fn replays(user: &str, codes: &[(u64, String)], server: std::net::SocketAddr) -> Vec<String> {
    let mut client = RadiusClient::new(server, SECRET);
    let mut wrong = Vec::new();
    for (counter, otp) in codes {
        match client.access(user, otp, ANSWER_TIMEOUT) {
            Some(code::ACCESS_REJECT) => {}
            Some(code::ACCESS_ACCEPT) => wrong.push(format!("{user} counter {counter}: REPLAY ACCEPTED")),
            other => wrong.push(format!("{user} counter {counter}: answer {other:?} instead of a reject")),
        }
    }
    wrong
}

/// A token as `otpd token list --json` shows it.
struct Listed {
    user: String,
    realm: String,
    /// The next counter the token accepts.
    count: u64,
    /// How many counters from `count` on it accepts.
    count_window: u64,
}

/// `otpd token list --json` by serial.
fn tokens(env: &Env) -> BTreeMap<String, Listed> {
    let list = env.json(&["token", "list"]);
    list.as_array()
        .expect("token list --json is an array")
        .iter()
        .map(|t| {
            let text = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
            let number = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("token without {k}: {t}"));
            let listed = Listed {
                user: text("user"),
                realm: text("realm"),
                count: number("count"),
                count_window: number("count_window"),
            };
            (text("serial"), listed)
        })
        .collect()
}

/// The accepted codes of `user` worth sending again: all of `accepted` but
/// those that equal the code of a counter the token still accepts (a
/// six-digit code repeats about once in a million counters; such a code
/// is rightly accepted for that later counter). Returns them and how many
/// were left out.
fn replayable(user: &mut User, listed: &Listed, accepted: &[(u64, String)]) -> (Vec<(u64, String)>, usize) {
    let open: Vec<String> =
        (listed.count..listed.count + listed.count_window).map(|c| user.code(c)).collect();
    let (keep, left): (Vec<_>, Vec<_>) = accepted.iter().cloned().partition(|(_, otp)| !open.contains(otp));
    (keep, left.len())
}

fn integrity(env: &Env) -> Vec<String> {
    let db = env.db();
    let mut stmt = db.prepare("PRAGMA integrity_check").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
}

/// Successful `validate_check` audit rows per user.
fn audited_accepts(env: &Env) -> BTreeMap<String, u64> {
    let db = env.db();
    let mut stmt = db
        .prepare(
            "SELECT user, count(*) FROM audit WHERE action = 'validate_check' AND success = 1 \
             AND user IS NOT NULL GROUP BY user",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// (number of rows, highest id) of the audit table.
fn audit_extent(env: &Env) -> (i64, i64) {
    env.db()
        .query_row("SELECT count(*), coalesce(max(id), 0) FROM audit", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
}

/// Env's configuration with a `[radius]` table on `addr` and the given
/// durability setting. The per-user rate limit is off: the replays sent to
/// check the daemon after each restart are failures by the hundred.
fn write_config(env: &Env, base: &str, addr: &str, durability: &str) {
    std::fs::write(
        &env.config,
        format!(
            "durability = \"{durability}\"\n{base}\n[rate_limit]\nfailures_per_user = 0\n\n[radius]\nlisten = [\"{addr}\"]\n\n\
             [[radius.clients]]\nname = \"localhost\"\naddress = \"127.0.0.1/32\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
}

#[test]
fn sigkill_under_load_loses_no_counter_token_or_audit_row() {
    let seed = seed();
    eprintln!("crash_e2e: seed {seed} (rerun with OTPD_TEST_SEED={seed})");
    let mut rng = Rng(seed);
    let started = Instant::now();

    let env = Env::new();
    let hash = mkpasswd("sha-512", "pw");
    let mut users_file = std::fs::read_to_string(env.path("users")).unwrap();
    let mut users: Vec<User> = (0..USERS)
        .map(|i| {
            let name = format!("u{i:02}");
            users_file.push_str(&format!("{name}:{hash}\n"));
            // Keys come from the seed too, so that a seed gives the same codes.
            let key = (0..20).map(|_| format!("{:02x}", rng.next() as u8)).collect();
            User { serial: format!("CR{i:02}"), name, key, codes: Vec::new(), next: 0, accepted: Vec::new() }
        })
        .collect();
    std::fs::write(env.path("users"), users_file).unwrap();
    for user in &users {
        env.ok(&[
            "token",
            "init",
            "--type",
            "hotp",
            "--serial",
            &user.serial,
            "--otpkey",
            &user.key,
            "--user",
            &user.name,
        ]);
        // Replays sent to check the daemon are failures: never lock a token.
        env.ok(&["token", "set", &user.serial, "--max-fail", "1000000"]);
    }
    let base = std::fs::read_to_string(&env.config).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    write_config(&env, &base, &addr, "power-loss");
    let mut server = Server::start(&env, std::slice::from_ref(&addr));
    let target = server.addr;

    let mut before = tokens(&env);
    let mut audit_before = audit_extent(&env);
    let mut total_accepts = 0usize;
    for cycle in 0..KILLS {
        let cycle_started = Instant::now();
        let delay = Duration::from_millis(rng.between(DELAY_MS.0, DELAY_MS.1));
        let stop = AtomicBool::new(false);
        // The CLI enrolls and assigns a token while the daemon runs.
        let enrolled = format!("K{cycle:02}");
        let owner = users[cycle % USERS].name.clone();
        let seen = thread::scope(|scope| {
            let load_start = Instant::now();
            let stop = &stop;
            // Also if an assertion below fails: the loads must end.
            let _stop_anyway = StopOnDrop(stop);
            let loads: Vec<_> =
                users.iter_mut().map(|u| scope.spawn(move || load(u, target, stop))).collect();
            let cli = scope.spawn(|| {
                env.run(&[
                    "token", "init", "--type", "hotp", "--serial", &enrolled, "--genkey", "--user", &owner,
                ])
            });
            thread::sleep(delay.saturating_sub(load_start.elapsed()));
            server.signal("KILL");
            let status = server.wait_exit(Duration::from_secs(5)).expect("otpd serve survived SIGKILL");
            assert_eq!(status.signal(), Some(9), "otpd serve ended with {status} instead of SIGKILL");
            stop.store(true, Ordering::SeqCst);
            let seen: Vec<Seen> = loads.into_iter().map(|h| h.join().unwrap()).collect();
            let out = cli.join().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "seed {seed}, cycle {cycle}: the CLI could not enroll {enrolled} beside the daemon: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            seen
        });
        let unexpected: Vec<&String> = seen.iter().flat_map(|s| &s.unexpected).collect();
        assert!(
            unexpected.is_empty(),
            "seed {seed}, cycle {cycle}: fresh codes not accepted: {unexpected:?}"
        );
        let accepts: usize = seen.iter().map(|s| s.accepted.len()).sum();
        let unknown: usize = seen.iter().map(|s| s.unknown).sum();
        total_accepts += accepts;

        // Restart on the same database, alternating the durability setting
        // (both promise to survive a crash of the process).
        drop(server);
        let durability = if cycle % 2 == 0 { "process-crash" } else { "power-loss" };
        write_config(&env, &base, &addr, durability);
        server = Server::start(&env, std::slice::from_ref(&addr));

        assert_eq!(integrity(&env), ["ok"], "seed {seed}, cycle {cycle}: integrity_check after the kill");

        // Tokens and owners.
        let after = tokens(&env);
        let token = after.get(&enrolled);
        assert!(token.is_some(), "seed {seed}, cycle {cycle}: token {enrolled} enrolled by the CLI is gone");
        assert_eq!(token.unwrap().user, owner, "seed {seed}, cycle {cycle}: {enrolled} lost its owner");
        for (serial, listed) in &before {
            let now = after.get(serial);
            assert!(now.is_some(), "seed {seed}, cycle {cycle}: token {serial} is gone after the kill");
            let now = now.unwrap();
            assert_eq!(
                (&now.user, &now.realm),
                (&listed.user, &listed.realm),
                "seed {seed}, cycle {cycle}: {serial} changed owner"
            );
        }

        // Counters and audit rows of the accepts acknowledged before the kill.
        let audited = audited_accepts(&env);
        for (user, seen) in users.iter_mut().zip(&seen) {
            user.accepted.extend(seen.accepted.iter().cloned());
            if let Some((last, _)) = user.accepted.last() {
                let count = after[&user.serial].count;
                assert!(
                    count > *last,
                    "seed {seed}, cycle {cycle}: {} accepted counter {last} but its count is {count} after \
                     the restart (a lost counter)",
                    user.serial
                );
            }
            let rows = audited.get(&user.name).copied().unwrap_or(0);
            assert!(
                rows >= user.accepted.len() as u64,
                "seed {seed}, cycle {cycle}: {} had {} accepts acknowledged but {rows} successful audit rows",
                user.name,
                user.accepted.len()
            );
        }
        let (rows, max_id) = audit_before;
        let kept: i64 =
            env.db().query_row("SELECT count(*) FROM audit WHERE id <= ?1", [max_id], |r| r.get(0)).unwrap();
        assert_eq!(kept, rows, "seed {seed}, cycle {cycle}: audit rows read before the kill are gone");

        // Every code accepted before the kill is now a replay.
        let mut left_out = 0;
        let resend: Vec<(String, Vec<(u64, String)>)> = users
            .iter_mut()
            .zip(&seen)
            .map(|(u, s)| {
                let (codes, left) = replayable(u, &after[&u.serial], &s.accepted);
                left_out += left;
                (u.name.clone(), codes)
            })
            .collect();
        let wrong: Vec<String> = thread::scope(|scope| {
            let handles: Vec<_> = resend
                .iter()
                .map(|(name, codes)| scope.spawn(move || replays(name, codes, target)))
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert!(
            wrong.is_empty(),
            "seed {seed}, cycle {cycle}: accepted codes not refused after restart: {wrong:?}"
        );

        eprintln!(
            "cycle {cycle:2}: kill after {:3} ms, {accepts:3} accepts, {unknown:2} in flight, restarted with \
             {durability}, {left_out} replays left out, checked in {:?}",
            delay.as_millis(),
            cycle_started.elapsed()
        );
        before = tokens(&env);
        audit_before = audit_extent(&env);
    }

    // Finally every code ever accepted is sent once more.
    let mut left_out = 0;
    let resend: Vec<(String, Vec<(u64, String)>)> = users
        .iter_mut()
        .map(|u| {
            let accepted = std::mem::take(&mut u.accepted);
            let (codes, left) = replayable(u, &before[&u.serial], &accepted);
            left_out += left;
            (u.name.clone(), codes)
        })
        .collect();
    let wrong: Vec<String> = thread::scope(|scope| {
        let handles: Vec<_> =
            resend.iter().map(|(name, codes)| scope.spawn(move || replays(name, codes, target))).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(wrong.is_empty(), "seed {seed}: accepted codes not refused at the end: {wrong:?}");
    assert!(total_accepts >= KILLS, "seed {seed}: only {total_accepts} accepts in {KILLS} cycles: no load");
    eprintln!(
        "crash_e2e: {KILLS} kills, {total_accepts} accepts ({left_out} left out of the last replay), all checks \
         passed in {:?}",
        started.elapsed()
    );
}

//! End-to-end: one OTP, many contenders at once, exactly one accept.
//!
//! * Every front: the same HOTP code sent at the same moment over RADIUS
//!   (three sockets to one `otpd serve`), through PAM (`pamtester` with
//!   `pam_otpd.so`) and by `otpd check`, 200 rounds.
//! * Two daemons: two `otpd serve` on different ports over one database
//!   file, the same code sent to both at once (two sockets each), 200 rounds.
//!
//! Each round uses the next counter's code (oathtool). The contenders wait
//! at a barrier, then each after a small random delay (drawn so that
//! every kind of contender wins some rounds) sends or starts its process.
//! The PAM contender writes `/etc/pam.d/otpd-test-*`, which needs root; run
//! as another user the first test races without it and says so.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use common::server::{RadiusClient, Server, free_port};
use common::*;
use otpd_daemon::radius::codec::code;

const SECRET: &str = "testing123";
const ROUNDS: u64 = 200;
/// The HOTP look-ahead of the token (otpd's default count_window).
const WINDOW: u64 = 10;
/// How long one contender may take before the test calls it hung.
const TIMEOUT: Duration = Duration::from_secs(30);

/// splitmix64 for the contenders' delays.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let seed = now.as_nanos() as u64 ^ u64::from(std::process::id());
        eprintln!("race_e2e: delays seeded with {seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A delay of 0 to `max_us` microseconds.
    fn delay(&mut self, max_us: u64) -> Duration {
        Duration::from_micros(self.next() % (max_us + 1))
    }
}

/// How a contender fared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Accept,
    Reject,
    /// Anything else (no answer, an error, a crash): always a failure.
    Other(String),
}

/// The HOTP codes of the RFC key for counters 0..ROUNDS.
fn codes() -> Vec<String> {
    // Ten more: the look-ahead window of the last round.
    let out = Command::new("oathtool")
        .args(["--hotp", "-c", "0", "-w", &(ROUNDS + WINDOW - 1).to_string(), RFC_KEY])
        .output()
        .expect("cannot run oathtool; install it (see .ci/run)");
    assert!(out.status.success());
    let mut codes: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(codes.len() as u64, ROUNDS + WINDOW);
    // After round r's winner, a loser's code would rightly be accepted if
    // it equalled the code of a counter in r+1 ..= r+10: not so for these.
    for r in 0..ROUNDS as usize {
        assert!(
            !codes[r + 1..=r + WINDOW as usize].contains(&codes[r]),
            "code {r} repeats within the window"
        );
    }
    codes.truncate(ROUNDS as usize);
    codes
}

/// Env with alice's HOTP token H1 (RFC key, counter 0, no PIN) that the
/// losers' failures never lock.
fn setup() -> Env {
    let env = Env::new();
    env.init_hotp("H1", "alice", "");
    env.ok(&["token", "set", "H1", "--max-fail", "1000000"]);
    env
}

/// Writes `config`: Env's base configuration with a `[radius]` table on
/// `addr` for the loopback client. The per-user rate limit is off: every
/// round's losers are failures of alice, and what is tested is the race.
fn radius_config(base: &str, config: &std::path::Path, addr: &str) {
    std::fs::write(
        config,
        format!(
            "{base}\n[rate_limit]\nfailures_per_user = 0\n\n[radius]\nlisten = [\"{addr}\"]\n\n[[radius.clients]]\nname = \"localhost\"\n\
             address = \"127.0.0.1/32\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
}

fn radius(client: &mut RadiusClient, otp: &str) -> Verdict {
    match client.access("alice", otp, TIMEOUT) {
        Some(code::ACCESS_ACCEPT) => Verdict::Accept,
        Some(code::ACCESS_REJECT) => Verdict::Reject,
        other => Verdict::Other(format!("RADIUS answer {other:?}")),
    }
}

/// Waits at most TIMEOUT for `child`; returns its exit code and output.
fn finish(mut child: Child) -> (Option<i32>, String, String) {
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{child:?} hung for {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(1));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).unwrap();
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).unwrap();
    }
    (status.code(), stdout, stderr)
}

fn check(env: &Env, otp: &str) -> Verdict {
    let child = env
        .command(&["check", "alice", otp])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    match finish(child) {
        (Some(0), _, _) => Verdict::Accept,
        (Some(1), _, _) => Verdict::Reject,
        (code, out, err) => Verdict::Other(format!("otpd check exit {code:?}: {out} {err}")),
    }
}

/// A PAM service file `/etc/pam.d/otpd-test-race-<pid>` with one
/// `auth required pam_otpd.so config=...` line; removed on drop.
struct Service {
    name: String,
    path: PathBuf,
}

impl Service {
    fn new(env: &Env) -> Service {
        let name = format!("otpd-test-race-{}", std::process::id());
        let path = PathBuf::from("/etc/pam.d").join(&name);
        std::fs::write(
            &path,
            format!(
                "# written by otpd's tests/race_e2e.rs; removed when the test ends\nauth required {} config={}\n",
                pam_module().display(),
                env.config.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Service { name, path }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn pamtester(service: &Service, otp: &str) -> Verdict {
    let mut child = Command::new("pamtester")
        .args([&service.name, "alice", "authenticate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run pamtester; install it (see .ci/run)");
    let _ = child.stdin.take().unwrap().write_all(format!("{otp}\n").as_bytes());
    match finish(child) {
        (Some(0), out, _) if out.contains("successfully authenticated") => Verdict::Accept,
        (Some(1), _, err) if err.contains("Authentication failure") => Verdict::Reject,
        (code, out, err) => Verdict::Other(format!("pamtester exit {code:?}: {out} {err}")),
    }
}

fn is_root() -> bool {
    let uid = Command::new("id").arg("-u").output().expect("cannot run id -u");
    String::from_utf8_lossy(&uid.stdout).trim() == "0"
}

/// Runs the contenders of one round together: each waits at a barrier,
/// sleeps its delay, then runs. Returns their verdicts in order.
fn round(contenders: Vec<(Duration, Box<dyn FnOnce() -> Verdict + Send + '_>)>) -> Vec<Verdict> {
    let barrier = Barrier::new(contenders.len());
    thread::scope(|scope| {
        let handles: Vec<_> = contenders
            .into_iter()
            .map(|(delay, run)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    thread::sleep(delay);
                    run()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Checks a round: exactly one accept, every other contender a clean reject.
fn one_winner(round: u64, names: &[String], verdicts: &[Verdict]) -> usize {
    let report =
        || names.iter().zip(verdicts).map(|(n, v)| format!("{n}: {v:?}")).collect::<Vec<_>>().join(", ");
    assert!(
        verdicts.iter().all(|v| !matches!(v, Verdict::Other(_))),
        "round {round}: a contender failed: {}",
        report()
    );
    let winners: Vec<usize> = (0..verdicts.len()).filter(|&i| verdicts[i] == Verdict::Accept).collect();
    assert_eq!(winners.len(), 1, "round {round}: {} accepts of the same OTP: {}", winners.len(), report());
    winners[0]
}

/// Successful validate_check audit rows, per front.
fn audited_wins(env: &Env) -> std::collections::BTreeMap<String, u64> {
    let db = env.db();
    let mut stmt = db
        .prepare("SELECT front, count(*) FROM audit WHERE action = 'validate_check' AND success = 1 GROUP BY front")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn count(env: &Env) -> u64 {
    env.json(&["token", "show", "H1"])["count"].as_u64().unwrap()
}

#[test]
fn same_otp_over_radius_pam_and_check_accepted_once_per_round() {
    let started = Instant::now();
    let env = setup();
    let base = std::fs::read_to_string(&env.config).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    radius_config(&base, &env.config, &addr);
    let server = Server::start(&env, std::slice::from_ref(&addr));
    let service = if is_root() {
        Some(Service::new(&env))
    } else {
        eprintln!(
            "note: not root: the PAM contender is left out (it writes /etc/pam.d/otpd-test-*; CI runs the \
             tests as root)"
        );
        None
    };
    let mut clients: Vec<RadiusClient> = (0..3).map(|_| RadiusClient::new(server.addr, SECRET)).collect();
    let mut names: Vec<String> = (0..clients.len()).map(|i| format!("radius{i}")).collect();
    names.push("check".into());
    if service.is_some() {
        names.push("pam".into());
    }
    let mut rng = Rng::seeded();
    let codes = codes();
    let mut wins = vec![0u64; names.len()];
    for r in 0..ROUNDS {
        let otp = codes[r as usize].as_str();
        // A process needs some milliseconds to reach the store; a datagram
        // is there at once. Delaying the datagrams by up to that much
        // lets each kind of contender win some rounds.
        let mut contenders: Vec<(Duration, Box<dyn FnOnce() -> Verdict + Send + '_>)> = Vec::new();
        for client in clients.iter_mut() {
            contenders.push((rng.delay(30_000), Box::new(move || radius(client, otp))));
        }
        let env = &env;
        contenders.push((rng.delay(3_000), Box::new(move || check(env, otp))));
        if let Some(service) = &service {
            contenders.push((rng.delay(3_000), Box::new(move || pamtester(service, otp))));
        }
        let verdicts = round(contenders);
        wins[one_winner(r, &names, &verdicts)] += 1;
    }
    let summary: Vec<String> = names.iter().zip(&wins).map(|(n, w)| format!("{n} {w}")).collect();
    eprintln!(
        "race over all fronts: {ROUNDS} rounds in {:?}; wins: {}",
        started.elapsed(),
        summary.join(", ")
    );

    assert_eq!(count(&env), ROUNDS, "the counter moved on by one per round");
    // The audit trail agrees on who won.
    let audited = audited_wins(&env);
    let radius_wins: u64 = wins[..clients.len()].iter().sum();
    assert_eq!(audited.get("radius").copied().unwrap_or(0), radius_wins, "{audited:?}");
    assert_eq!(audited.get("cli").copied().unwrap_or(0), wins[clients.len()], "{audited:?}");
    if service.is_some() {
        assert_eq!(audited.get("pam").copied().unwrap_or(0), wins[clients.len() + 1], "{audited:?}");
    }
    assert_eq!(audited.values().sum::<u64>(), ROUNDS, "{audited:?}");
}

#[test]
fn two_daemons_on_one_database_accept_once_per_round() {
    let started = Instant::now();
    let env = setup();
    let base = std::fs::read_to_string(&env.config).unwrap();
    let (addr_a, addr_b) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    // The second configuration sits beside the first: the same relative
    // database and key file.
    let config_b = env.path("otpd-b.toml");
    radius_config(&base, &env.config, &addr_a);
    radius_config(&base, &config_b, &addr_b);
    let a = Server::start(&env, std::slice::from_ref(&addr_a));
    let b = Server::start_with_config(&config_b, std::slice::from_ref(&addr_b));
    let mut clients: Vec<RadiusClient> =
        [a.addr, a.addr, b.addr, b.addr].into_iter().map(|addr| RadiusClient::new(addr, SECRET)).collect();
    let names: Vec<String> = ["a0", "a1", "b0", "b1"].map(String::from).to_vec();
    let mut rng = Rng::seeded();
    let codes = codes();
    let mut wins = vec![0u64; names.len()];
    for r in 0..ROUNDS {
        let otp = codes[r as usize].as_str();
        let contenders: Vec<(Duration, Box<dyn FnOnce() -> Verdict + Send + '_>)> = clients
            .iter_mut()
            .map(|client| (rng.delay(2_000), Box::new(move || radius(client, otp)) as Box<_>))
            .collect();
        let verdicts = round(contenders);
        wins[one_winner(r, &names, &verdicts)] += 1;
    }
    let (wins_a, wins_b) = (wins[0] + wins[1], wins[2] + wins[3]);
    eprintln!(
        "two daemons: {ROUNDS} rounds in {:?}; daemon A won {wins_a}, daemon B won {wins_b}",
        started.elapsed()
    );
    assert_eq!(count(&env), ROUNDS, "the counter moved on by one per round");
    assert_eq!(audited_wins(&env).get("radius").copied(), Some(ROUNDS));
    for (name, server) in [("A", &a), ("B", &b)] {
        assert!(server.log().contains("result=accept"), "daemon {name} logged no accept");
    }
}

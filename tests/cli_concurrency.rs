//! End-to-end: the same valid OTP sent by several `otpd check` processes at
//! the same moment is accepted exactly once (the counter's compare-and-set
//! in the store, across processes).

mod common;

use std::process::{Child, Stdio};

use common::*;

const PROCESSES: usize = 8;
const ROUNDS: u64 = 50;

#[test]
fn same_otp_from_eight_processes_accepted_once_per_round() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "");
    // Losers of a round count as failures; keep them from locking the token.
    env.ok(&["token", "set", "H1", "--max-fail", "100000"]);
    for round in 0..ROUNDS {
        let code = oath_hotp(RFC_KEY, round, 6);
        let children: Vec<Child> = (0..PROCESSES)
            .map(|_| {
                env.command(&["check", "alice", &code])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut accepts = 0;
        for child in children {
            let out = child.wait_with_output().unwrap();
            match out.status.code() {
                Some(0) => accepts += 1,
                Some(1) => {}
                other => panic!("round {round}: exit {other:?}: {}", String::from_utf8_lossy(&out.stderr)),
            }
        }
        assert_eq!(accepts, 1, "round {round}: {accepts} accepts of the same OTP");
    }
    let t = env.json(&["token", "show", "H1"]);
    assert_eq!(t["count"], ROUNDS);
    let audited: i64 = env
        .db()
        .query_row("SELECT count(*) FROM audit WHERE action = 'validate_check' AND success = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(audited, ROUNDS as i64);
}

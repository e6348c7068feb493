//! End-to-end: the RADIUS front. Every test starts its own `otpd serve` on a
//! free loopback port and talks to it with FreeRADIUS's `radtest` and
//! `radclient` (an independent RADIUS implementation) or with raw datagrams
//! built by the daemon's codec, with OTP values computed by oathtool.

mod common;

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::thread::{self};
use std::time::{Duration, Instant};

use common::server::{RadiusClient, Server, free_port};
use common::*;
use otpd_daemon::radius::codec::{self, attr, code};

const SECRET: &str = "testing123";
/// Read timeout of the raw UDP clients.
const UDP_TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Configuration

/// One `[[radius.clients]]` table; `extra` holds further `key = value` lines.
fn client(name: &str, address: &str, secret: &str, extra: &str) -> String {
    format!(
        "\n[[radius.clients]]\nname = \"{name}\"\naddress = \"{address}\"\nsecret = \"{secret}\"\n{extra}\n"
    )
}

/// The loopback client every test uses unless it says otherwise.
fn localhost() -> String {
    client("localhost", "127.0.0.1/32", SECRET, "")
}

/// Rewrites `env.config`: `base` (Env's realms and resolvers) followed by a
/// `[radius]` table listening on `listen`, the `clients` and `extra`.
fn write_config(env: &Env, base: &str, listen: &[String], clients: &[String], extra: &str) {
    let listen = listen.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    let text = format!("{base}\n[radius]\nlisten = [{listen}]\n{}{extra}", clients.concat());
    std::fs::write(&env.config, text).unwrap();
}

/// Env with one HOTP token (RFC key, counter 0) of alice@corp with PIN
/// 1234, and a server on 127.0.0.1 for `clients` plus the `extra` tables.
fn setup(clients: &[String], extra: &str) -> (Env, Server) {
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let base = std::fs::read_to_string(&env.config).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    write_config(&env, &base, std::slice::from_ref(&addr), clients, extra);
    let server = Server::start(&env, &[addr]);
    (env, server)
}

// ---------------------------------------------------------------------------
// The server under test

// ---------------------------------------------------------------------------
// radtest and radclient

/// What radtest or radclient printed (stdout and stderr) and its exit status.
struct Rad {
    code: Option<i32>,
    text: String,
}

impl Rad {
    fn run(mut cmd: Command, input: Option<&str>) -> Rad {
        cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child =
            cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}); install freeradius-utils"));
        if let Some(input) = input {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Rad { code: out.status.code(), text }
    }

    /// The packet type radclient received (`Access-Accept`, ...), if any.
    fn received(&self) -> Option<&str> {
        self.text.lines().find_map(|l| l.strip_prefix("Received ")).and_then(|l| l.split_whitespace().next())
    }

    /// The value of attribute `name` in the received packet, as radclient
    /// prints it (strings without their quotes).
    fn attr(&self, name: &str) -> Option<String> {
        let mut lines = self.text.lines().skip_while(|l| !l.starts_with("Received "));
        lines.next()?;
        lines.take_while(|l| l.starts_with(char::is_whitespace)).find_map(|l| {
            let (key, value) = l.trim().split_once(" = ")?;
            (key == name).then(|| value.trim_matches('"').to_owned())
        })
    }

    fn expect(&self, packet: &str) -> &Rad {
        assert_eq!(self.received(), Some(packet), "expected {packet}; radclient printed:\n{}", self.text);
        assert!(
            self.attr("Message-Authenticator").is_some(),
            "{packet} without Message-Authenticator:\n{}",
            self.text
        );
        self
    }

    fn expect_no_reply(&self) {
        assert_eq!(self.received(), None, "expected no reply; radclient printed:\n{}", self.text);
        assert!(self.text.contains("No reply"), "radclient printed:\n{}", self.text);
        assert_ne!(self.code, Some(0), "radclient without a reply exits non-zero");
    }
}

/// `radtest USER PASSWORD HOST:PORT 0 SECRET 0 127.0.0.1` (PAP, with a
/// Message-Authenticator; the NAS name is given so radtest needs no DNS).
fn radtest(server: &Server, user: &str, password: &str, secret: &str) -> Rad {
    let mut cmd = Command::new("radtest");
    cmd.args([user, password, &server.target(), "0", secret, "0", "127.0.0.1"]);
    Rad::run(cmd, None)
}

/// `radclient -x -t TIMEOUT -r 1 [FLAGS] TARGET COMMAND SECRET` with
/// `input` (attribute lines) on stdin. FLAGS come after the defaults and
/// override them (`-r 5`: up to five tries).
fn radclient(flags: &[&str], target: &str, command: &str, secret: &str, timeout: u32, input: &str) -> Rad {
    let mut cmd = Command::new("radclient");
    cmd.args(["-x", "-t", &timeout.to_string(), "-r", "1"]).args(flags).args([target, command, secret]);
    Rad::run(cmd, Some(input))
}

/// A PAP request as radclient input; `ma` adds `Message-Authenticator = 0x00`
/// (radclient then computes it).
fn pap(user: &str, password: &str, ma: bool) -> String {
    let ma = if ma { ", Message-Authenticator = 0x00" } else { "" };
    format!("User-Name = \"{user}\", User-Password = \"{password}\"{ma}\n")
}

// ---------------------------------------------------------------------------
// Raw datagrams with the daemon's codec

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

/// A PAP Access-Request with a Message-Authenticator, built by the codec.
fn access_request(id: u8, authenticator: [u8; 16], user: &str, password: &str, secret: &str) -> Vec<u8> {
    let attributes: &[(u8, &[u8])] = &[(attr::USER_NAME, user.as_bytes())];
    codec::encode_request(
        code::ACCESS_REQUEST,
        id,
        authenticator,
        attributes,
        Some(password.as_bytes()),
        secret.as_bytes(),
        true,
    )
    .unwrap()
}

/// Recomputes the Message-Authenticator (RFC 3579: HMAC-MD5 over the packet
/// with the value zeroed) of a request built by `access_request`, where it
/// is the first attribute, after a test changed the packet. Written here
/// with the hash crates rather than the codec, as a second opinion.
fn sign(packet: &mut [u8], secret: &str) {
    use hmac::{Hmac, KeyInit, Mac};
    assert_eq!(packet[20], attr::MESSAGE_AUTHENTICATOR);
    packet[22..38].fill(0);
    let mut mac = <Hmac<md5::Md5> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(packet);
    packet[22..38].copy_from_slice(&mac.finalize().into_bytes());
}

/// A UDP client bound to `local` with the read timeout set.
fn udp(local: &str) -> UdpSocket {
    let socket = UdpSocket::bind(local).unwrap();
    socket.set_read_timeout(Some(UDP_TIMEOUT)).unwrap();
    socket
}

/// Sends `request` and returns the reply, or None after UDP_TIMEOUT.
fn exchange(socket: &UdpSocket, to: SocketAddr, request: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(request, to).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == to => return Some(buf[..n].to_vec()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) => panic!("recv_from: {e}"),
        }
    }
}

/// The code and Reply-Message of the response to `request`, after checking
/// with the codec its Response Authenticator and Message-Authenticator
/// (which must be there) and its identifier.
fn response(response: &[u8], request: &[u8], secret: &str) -> (u8, Option<String>) {
    let authenticator: [u8; 16] = request[4..20].try_into().unwrap();
    let packet = codec::verify_response(response, &authenticator, secret.as_bytes())
        .unwrap_or_else(|e| panic!("response does not verify: {e}"));
    assert_eq!(packet.identifier, request[1], "response to another identifier");
    assert!(packet.attr(attr::MESSAGE_AUTHENTICATOR).is_some(), "response without Message-Authenticator");
    let message = packet.attr(attr::REPLY_MESSAGE).map(|m| String::from_utf8_lossy(m).into_owned());
    (packet.code, message)
}

// ---------------------------------------------------------------------------
// The tests

/// radtest: PIN+OTP accepted, a wrong OTP and a wrong PIN rejected with
/// the reason in Reply-Message, the accepted OTP refused when sent again.
#[test]
fn radtest_accept_reject_and_replay() {
    let (_env, server) = setup(&[localhost()], "");
    let c0 = oath_hotp(RFC_KEY, 0, 6);
    let ok = radtest(&server, "alice", &format!("1234{c0}"), SECRET);
    ok.expect("Access-Accept");
    assert_eq!(ok.code, Some(0), "{}", ok.text);
    assert!(server.wait_for("result=accept", Duration::from_secs(2)), "no decision line logged");
    assert!(server.log().contains("user=alice"), "decision line without the user");

    let far = oath_hotp(RFC_KEY, 40, 6);
    let wrong = radtest(&server, "alice", &format!("1234{far}"), SECRET);
    wrong.expect("Access-Reject");
    assert_eq!(wrong.code, Some(1), "radtest exits 1 on reject");
    assert_eq!(wrong.attr("Reply-Message").as_deref(), Some("wrong otp value"), "{}", wrong.text);

    let c1 = oath_hotp(RFC_KEY, 1, 6);
    let pin = radtest(&server, "alice", &format!("9999{c1}"), SECRET);
    pin.expect("Access-Reject");
    assert_eq!(pin.attr("Reply-Message").as_deref(), Some("wrong otp pin"), "{}", pin.text);

    let replay = radtest(&server, "alice", &format!("1234{c0}"), SECRET);
    replay.expect("Access-Reject");
    let message = replay.attr("Reply-Message").unwrap_or_default();
    assert!(message.starts_with("wrong otp value"), "replay: {}", replay.text);
    assert!(server.wait_for("result=reject", Duration::from_secs(2)), "no reject decision logged");
}

/// The daemon answers from tokens it read before (a cache); every change
/// another process commits (the CLI here) counts from the next request on.
#[test]
fn the_cli_s_changes_count_at_the_running_daemon_s_next_login() {
    let (env, server) = setup(&[localhost()], "");
    let code = |n| format!("1234{}", oath_hotp(RFC_KEY, n, 6));
    radtest(&server, "alice", &code(0), SECRET).expect("Access-Accept");

    env.ok(&["token", "disable", "H1"]);
    let disabled = radtest(&server, "alice", &code(1), SECRET);
    disabled.expect("Access-Reject");
    assert_eq!(disabled.attr("Reply-Message").as_deref(), Some("Token is disabled"), "{}", disabled.text);
    env.ok(&["token", "enable", "H1"]);
    radtest(&server, "alice", &code(1), SECRET).expect("Access-Accept");

    // Another process consumes the next code: the daemon refuses it.
    assert_eq!(env.check("alice", &code(2)).0, 0);
    radtest(&server, "alice", &code(2), SECRET).expect("Access-Reject");

    env.ok(&["token", "set", "H1", "--pin", "5678"]);
    let old_pin = radtest(&server, "alice", &code(3), SECRET);
    old_pin.expect("Access-Reject");
    assert_eq!(old_pin.attr("Reply-Message").as_deref(), Some("wrong otp pin"), "{}", old_pin.text);
    radtest(&server, "alice", &format!("5678{}", oath_hotp(RFC_KEY, 3, 6)), SECRET).expect("Access-Accept");

    env.ok(&["token", "delete", "H1"]);
    let deleted = radtest(&server, "alice", &format!("5678{}", oath_hotp(RFC_KEY, 4, 6)), SECRET);
    deleted.expect("Access-Reject");
    let message = deleted.attr("Reply-Message").unwrap_or_default();
    assert!(message.contains("no token"), "a deleted token: {}", deleted.text);
}

/// A wrong shared secret makes a bad Message-Authenticator: dropped.
#[test]
fn wrong_secret_is_dropped() {
    let (_env, server) = setup(&[localhost()], "");
    let c0 = oath_hotp(RFC_KEY, 0, 6);
    radclient(&[], &server.target(), "auth", "wrongsecret", 1, &pap("alice", &format!("1234{c0}"), true))
        .expect_no_reply();
    assert!(server.wait_for("dropped", Duration::from_secs(2)), "no `dropped` line logged");
    // The OTP was not used up: the right secret still gets it accepted.
    radclient(&[], &server.target(), "auth", SECRET, 2, &pap("alice", &format!("1234{c0}"), true))
        .expect("Access-Accept");
}

/// Without a Message-Authenticator a request is dropped unless the
/// client is configured with `require_message_authenticator = false`.
#[test]
fn missing_message_authenticator() {
    let (env, server) = setup(&[localhost()], "");
    let c0 = oath_hotp(RFC_KEY, 0, 6);
    radclient(&[], &server.target(), "auth", SECRET, 1, &pap("alice", &format!("1234{c0}"), false))
        .expect_no_reply();
    assert!(server.wait_for("dropped", Duration::from_secs(2)), "no `dropped` line logged");
    radclient(&[], &server.target(), "auth", SECRET, 2, &pap("alice", &format!("1234{c0}"), true))
        .expect("Access-Accept");
    drop(server);

    let base = std::fs::read_to_string(&env.config).unwrap();
    let base = &base[..base.find("\n[radius]").unwrap()];
    let addr = format!("127.0.0.1:{}", free_port());
    let lax = client("localhost", "127.0.0.1/32", SECRET, "require_message_authenticator = false");
    write_config(&env, base, std::slice::from_ref(&addr), &[lax], "");
    let server = Server::start(&env, &[addr]);
    let c1 = oath_hotp(RFC_KEY, 1, 6);
    radclient(&[], &server.target(), "auth", SECRET, 2, &pap("alice", &format!("1234{c1}"), false))
        .expect("Access-Accept");
}

/// A retransmission (same socket, identifier and authenticator) gets
/// the cached Access-Accept without asking the core again; a new request
/// with the same OTP is a replay and rejected.
#[test]
fn retransmission_answered_from_cache() {
    let (env, server) = setup(&[localhost()], "");
    let audits = || -> i64 {
        env.db()
            .query_row("SELECT count(*) FROM audit WHERE action = 'validate_check'", [], |r| r.get(0))
            .unwrap()
    };
    let password = format!("1234{}", oath_hotp(RFC_KEY, 0, 6));
    let request = access_request(7, random(), "alice", &password, SECRET);
    let socket = udp("127.0.0.1:0");
    let first = exchange(&socket, server.addr, &request).expect("no answer to the first request");
    assert_eq!(response(&first, &request, SECRET).0, code::ACCESS_ACCEPT);
    // Sent as soon as the reply is in: the server must have cached the
    // reply before sending it, or this copy finds the request "in flight".
    let again = exchange(&socket, server.addr, &request)
        .expect("no answer to a retransmission sent right after the reply arrived");
    assert_eq!(
        response(&again, &request, SECRET).0,
        code::ACCESS_ACCEPT,
        "retransmission not answered from cache"
    );
    assert_eq!(again, first, "the cached response is sent again");
    assert_eq!(audits(), 1, "the core was asked again for a retransmission");

    // The same bytes from another source port are not a retransmission.
    let other = udp("127.0.0.1:0");
    let reply = exchange(&other, server.addr, &request).expect("no answer from another port");
    let (code, message) = response(&reply, &request, SECRET);
    assert_eq!(code, code::ACCESS_REJECT, "{message:?}");
    assert_eq!(message.as_deref(), Some("wrong otp value. previous otp used again"));

    // A new request (new authenticator) with the accepted OTP: a replay.
    let replay = access_request(7, random(), "alice", &password, SECRET);
    let reply = exchange(&socket, server.addr, &replay).expect("no answer to the replay");
    assert_eq!(response(&reply, &replay, SECRET).0, code::ACCESS_REJECT);
    assert_eq!(audits(), 3);
}

/// Challenge-response: the PIN alone gets an Access-Challenge with a
/// State; the OTP alone with that State is accepted; the State is single-use.
#[test]
fn challenge_response_with_state() {
    let (_env, server) = setup(&[localhost()], CHALLENGE_POLICY);
    let challenge = radclient(&[], &server.target(), "auth", SECRET, 2, &pap("alice", "1234", true));
    challenge.expect("Access-Challenge");
    assert_eq!(challenge.attr("Reply-Message").as_deref(), Some("please enter otp: "), "{}", challenge.text);
    let state = challenge.attr("State").unwrap_or_else(|| panic!("no State:\n{}", challenge.text));
    assert!(state.starts_with("0x") && state.len() > 2, "State {state}");
    assert!(server.wait_for("result=challenge", Duration::from_secs(2)), "no challenge decision logged");

    let answer = |otp: &str| {
        let input = format!(
            "User-Name = \"alice\", User-Password = \"{otp}\", State = {state}, Message-Authenticator = 0x00\n"
        );
        radclient(&[], &server.target(), "auth", SECRET, 2, &input)
    };
    answer(&oath_hotp(RFC_KEY, 0, 6)).expect("Access-Accept");
    let again = answer(&oath_hotp(RFC_KEY, 1, 6));
    assert_ne!(again.received(), Some("Access-Accept"), "a challenge answered twice:\n{}", again.text);
    again.expect("Access-Reject");
}

/// Status-Server (RFC 5997) with a Message-Authenticator is answered
/// with Access-Accept; without one (RFC 5997 requires it) it is dropped.
#[test]
fn status_server() {
    let (_env, server) = setup(&[localhost()], "");
    radclient(&[], &server.target(), "status", SECRET, 2, "Message-Authenticator = 0x00\n")
        .expect("Access-Accept");

    let socket = udp("127.0.0.1:0");
    let status = |ma: bool| {
        codec::encode_request(code::STATUS_SERVER, 9, random(), &[], None, SECRET.as_bytes(), ma).unwrap()
    };
    let request = status(true);
    let reply = exchange(&socket, server.addr, &request).expect("no answer to Status-Server");
    assert_eq!(response(&reply, &request, SECRET).0, code::ACCESS_ACCEPT);
    assert_eq!(exchange(&socket, server.addr, &status(false)), None, "Status-Server without M-A answered");
}

/// Over IPv6: listen on [::1], client ::1/128.
#[test]
fn ipv6_loopback() {
    let Ok(probe) = UdpSocket::bind("[::1]:0") else {
        println!("note: no IPv6 loopback on this machine; ipv6_loopback skipped");
        return;
    };
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let base = std::fs::read_to_string(&env.config).unwrap();
    let addr = format!("[::1]:{port}");
    write_config(&env, &base, std::slice::from_ref(&addr), &[client("v6", "::1/128", SECRET, "")], "");
    let server = Server::start(&env, &[addr]);
    let c0 = oath_hotp(RFC_KEY, 0, 6);
    radclient(&["-6"], &server.target(), "auth", SECRET, 2, &pap("alice", &format!("1234{c0}"), true))
        .expect("Access-Accept");
}

/// Two `radius.listen` addresses: the core threads read both, and each
/// reply leaves from the address its request came to (a NAS drops a reply
/// from another), a retransmission to either answered from the cache.
#[test]
fn two_listen_addresses_each_answer_from_their_own() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let base = std::fs::read_to_string(&env.config).unwrap();
    let listen = [format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port())];
    write_config(&env, &base, &listen, &[localhost()], "");
    let server = Server::start(&env, &listen);
    let socket = udp("127.0.0.1:0");
    for (counter, addr) in listen.iter().enumerate() {
        let addr: SocketAddr = addr.parse().unwrap();
        let password = format!("1234{}", oath_hotp(RFC_KEY, counter as u64, 6));
        let request = access_request(counter as u8, random(), "alice", &password, SECRET);
        let reply = exchange(&socket, addr, &request).unwrap_or_else(|| panic!("no answer from {addr}"));
        assert_eq!(response(&reply, &request, SECRET).0, code::ACCESS_ACCEPT, "via {addr}");
        let again = exchange(&socket, addr, &request).expect("the retransmission answered");
        assert_eq!(again, reply, "a retransmission gets the cached reply");
    }
    assert!(server.wait_for_count("result=accept", 2, Duration::from_secs(2)), "{}", server.log());
    assert!(server.log().matches("result=accept").count() == 2, "two logins, no more:\n{}", server.log());
}

/// A xorshift generator: the malformed stream needs many random numbers,
/// seeded from the OS so that every run tries other bytes (the seed is
/// printed to reproduce a failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sets the header's length field to the datagram's length.
fn fix_length(packet: &mut [u8]) {
    let len = packet.len() as u16;
    packet[2..4].copy_from_slice(&len.to_be_bytes());
}

/// The `i`th datagram of the malformed stream. Requests that get through
/// are for `mallory`, who does not exist, so that nothing in the stream can
/// lock alice's token. Where a case changes a valid request it signs it
/// again, so that the change is met past the Message-Authenticator check.
fn malformed(rng: &mut Rng, i: usize) -> Vec<u8> {
    let id = i as u8;
    let valid = || access_request(id, random(), "mallory", "1234755224", SECRET);
    let signed_with = |attributes: &[(u8, &[u8])]| {
        codec::encode_request(code::ACCESS_REQUEST, id, random(), attributes, None, SECRET.as_bytes(), true)
            .unwrap()
    };
    let appended = |tail: &[u8]| {
        let mut p = valid();
        p.extend_from_slice(tail);
        fix_length(&mut p);
        sign(&mut p, SECRET);
        p
    };
    match i % 12 {
        // Random bytes of random length, up to beyond the RADIUS maximum.
        0 => {
            let n = rng.below(4200);
            rng.bytes(n)
        }
        // A valid request cut short.
        1 => {
            let mut p = valid();
            p.truncate(rng.below(p.len()));
            p
        }
        // A length field that is wrong (shorter, longer, below 20, huge).
        2 => {
            let mut p = valid();
            let len = [0u16, 1, 19, 20, p.len() as u16 - 1, p.len() as u16 + 1, 4096, 65535][rng.below(8)];
            p[2..4].copy_from_slice(&len.to_be_bytes());
            p
        }
        // The last attribute claims more bytes than there are.
        3 => appended(&[attr::CALLING_STATION_ID, 200, b'x', b'y']),
        // An attribute of length 0 or 1 (never valid).
        4 => appended(&[rng.below(256) as u8, rng.below(2) as u8, 0, 0]),
        // A User-Password of 130 bytes (at most 128, in 16-byte blocks).
        5 => signed_with(&[(attr::USER_NAME, b"mallory"), (attr::USER_PASSWORD, &rng.bytes(130))]),
        // 300 tiny attributes (Called-Station-Id of one byte each).
        6 => appended(&[30, 3, b'a'].repeat(300)),
        // Codes the server does not serve (and code 0).
        7 => {
            let mut p = valid();
            p[0] = [0u8, 2, 3, 4, 5, 11, 13, 40, 41, 43, 255][rng.below(11)];
            p
        }
        // Random bit flips in a valid request.
        8 => {
            let mut p = valid();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(p.len());
                p[at] ^= 1 << rng.below(8);
            }
            p
        }
        // A second Message-Authenticator, or a User-Password twice.
        9 => {
            if rng.below(2) == 0 {
                appended(&[[attr::MESSAGE_AUTHENTICATOR, 18].as_slice(), &[0; 16]].concat())
            } else {
                appended(&[[attr::USER_PASSWORD, 18].as_slice(), &rng.bytes(16)].concat())
            }
        }
        // Well-formed, but random bytes as user name and password.
        10 => {
            let (user_len, password_len) = (1 + rng.below(60), rng.below(129));
            let (user, password) = (rng.bytes(user_len), rng.bytes(password_len));
            let user = [b"mallory-".as_slice(), &user].concat();
            codec::encode_request(
                code::ACCESS_REQUEST,
                id,
                random(),
                &[(attr::USER_NAME, &user)],
                Some(&password),
                SECRET.as_bytes(),
                true,
            )
            .unwrap()
        }
        // A request header over random attribute bytes.
        _ => {
            let n = rng.below(300);
            let mut p = vec![code::ACCESS_REQUEST, id, 0, 0];
            p.extend(rng.bytes(16 + n));
            fix_length(&mut p);
            p
        }
    }
}

/// A stream of malformed datagrams does not stop or stall the listener.
#[test]
fn malformed_stream_survived() {
    let (_env, mut server) = setup(&[localhost()], "");
    let seed = u64::from_le_bytes(random()) | 1;
    println!("malformed stream seed: {seed:#x}");
    let mut rng = Rng(seed);
    let socket = udp("127.0.0.1:0");
    for i in 0..2400 {
        let datagram = malformed(&mut rng, i);
        // Sending can fail with ENOBUFS under load; the datagram is then lost, as on a network.
        let _ = socket.send_to(&datagram, server.addr);
        if i % 100 == 99 {
            // Let the server breathe a little, as a busy network would.
            thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(server.running(), "otpd serve died in the malformed stream");
    first_login_answered_at_once(&server, "the stream");
    assert!(server.running(), "otpd serve is gone after the stream");
}

/// alice's first login (counter 0) is accepted within 5 s of `after`. It
/// is sent as a NAS sends it, again each second until answered: the kernel
/// may still drop a datagram while the receive buffer holds the flood (lost
/// as on a network, and counted), but a listener that stalled answers none.
fn first_login_answered_at_once(server: &Server, after: &str) {
    let started = Instant::now();
    let c0 = oath_hotp(RFC_KEY, 0, 6);
    let login = pap("alice", &format!("1234{c0}"), true);
    radclient(&["-r", "5"], &server.target(), "auth", SECRET, 1, &login).expect("Access-Accept");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the login after {after} took {took:?}");
}

/// A burst beyond what the socket's receive buffer holds: the kernel drops
/// the rest, otpd logs how many as `overloaded` (counted, never unbounded
/// memory), and answers the next login at once.
#[test]
fn a_burst_beyond_the_receive_buffer_is_dropped_counted_and_survived() {
    let (_env, mut server) = setup(&[localhost(), client("second", "127.0.0.2/32", "second", "")], "");
    // From another client and for a user without tokens: the flood's
    // rejects charge no token and no rate limit the login after needs.
    let socket = udp("127.0.0.2:0");
    for i in 0..30_000u32 {
        let request = access_request(i as u8, random(), "nobody", "000000", "second");
        // ENOBUFS on a full loopback is a datagram lost, as on a network.
        let _ = socket.send_to(&request, server.addr);
    }
    assert!(
        server.wait_for("overloaded (the receive buffer was full", Duration::from_secs(20)),
        "no counted `overloaded` drop logged:\n{}",
        server.log()
    );
    assert!(server.running(), "otpd serve died in the burst");
    first_login_answered_at_once(&server, "the burst");
}

/// A datagram longer than RADIUS allows (4096 bytes), its Length field
/// saying so, is dropped as malformed, not cut to size and answered (bytes
/// beyond a Length field within the limit are padding, RFC 2865 3); the
/// next login is answered as usual.
#[test]
fn an_oversized_datagram_is_dropped() {
    let (_env, mut server) = setup(&[localhost()], "");
    let socket = udp("127.0.0.1:0");
    let password = format!("1234{}", oath_hotp(RFC_KEY, 0, 6));
    let mut request = access_request(1, random(), "alice", &password, SECRET);
    request.resize(codec::MAX_PACKET + 1000, 0);
    let length = request.len() as u16;
    request[2..4].copy_from_slice(&length.to_be_bytes());
    assert_eq!(exchange(&socket, server.addr, &request), None, "an oversized datagram was answered");
    assert!(server.wait_for("malformed packet", Duration::from_secs(2)), "no drop logged:\n{}", server.log());
    assert!(server.running());
    let request = access_request(2, random(), "alice", &password, SECRET);
    let reply = exchange(&socket, server.addr, &request).expect("the login after it is answered");
    assert_eq!(response(&reply, &request, SECRET).0, code::ACCESS_ACCEPT);
}

/// A request from an address no client covers is not answered.
#[test]
fn unknown_client_is_dropped() {
    let (_env, server) = setup(&[localhost()], "");
    let socket = udp("127.0.0.2:0");
    let password = format!("1234{}", oath_hotp(RFC_KEY, 0, 6));
    let request = access_request(1, random(), "alice", &password, SECRET);
    assert_eq!(exchange(&socket, server.addr, &request), None, "a request from 127.0.0.2 was answered");
    assert!(server.wait_for("dropped", Duration::from_secs(2)), "no `dropped` line logged");
}

/// SIGHUP reloads the clients without closing the socket.
#[test]
fn sighup_reloads_clients() {
    let env = Env::new();
    env.init_hotp("H1", "alice", "1234");
    let base = std::fs::read_to_string(&env.config).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    write_config(&env, &base, std::slice::from_ref(&addr), &[localhost()], "");
    let server = Server::start(&env, std::slice::from_ref(&addr));

    let second = udp("127.0.0.2:0");
    let password = format!("1234{}", oath_hotp(RFC_KEY, 0, 6));
    let request = access_request(1, random(), "alice", &password, "second");
    assert_eq!(exchange(&second, server.addr, &request), None, "127.0.0.2 answered before the reload");

    let clients = [localhost(), client("second", "127.0.0.2/32", "second", "")];
    write_config(&env, &base, std::slice::from_ref(&addr), &clients, "");
    server.signal("HUP");
    assert!(server.wait_for("reloaded", Duration::from_secs(5)), "no `reloaded` line after SIGHUP");

    let request = access_request(2, random(), "alice", &password, "second");
    let reply = exchange(&second, server.addr, &request).expect("127.0.0.2 not answered after the reload");
    assert_eq!(response(&reply, &request, "second").0, code::ACCESS_ACCEPT);
    // The first client still works on the same socket.
    let c1 = oath_hotp(RFC_KEY, 1, 6);
    radtest(&server, "alice", &format!("1234{c1}"), SECRET).expect("Access-Accept");
}

/// SIGTERM: the server exits with status 0.
#[test]
fn sigterm_exits_zero() {
    let (_env, mut server) = setup(&[localhost()], "");
    let c0 = oath_hotp(RFC_KEY, 0, 6);
    radtest(&server, "alice", &format!("1234{c0}"), SECRET).expect("Access-Accept");
    server.signal("TERM");
    let status =
        server.wait_exit(Duration::from_secs(5)).expect("otpd serve still running 5 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
}

/// A client's realm applies to users without `@realm`.
#[test]
fn client_realm() {
    let env = Env::new();
    env.ok(&[
        "token", "init", "--type", "hotp", "--serial", "S1", "--otpkey", RFC_KEY, "--user", "alice",
        "--realm", "sales", "--pin", "1234",
    ]);
    let base = std::fs::read_to_string(&env.config).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let sales = client("localhost", "127.0.0.1/32", SECRET, "realm = \"sales\"");
    write_config(&env, &base, std::slice::from_ref(&addr), &[sales], "");
    let server = Server::start(&env, &[addr]);

    let c0 = oath_hotp(RFC_KEY, 0, 6);
    radtest(&server, "alice", &format!("1234{c0}"), SECRET).expect("Access-Accept");
    let c1 = oath_hotp(RFC_KEY, 1, 6);
    let corp = radtest(&server, "alice@corp", &format!("1234{c1}"), SECRET);
    corp.expect("Access-Reject");
    assert!(corp.text.contains("no tokens"), "alice@corp: {}", corp.text);
    radtest(&server, "alice@sales", &format!("1234{c1}"), SECRET).expect("Access-Accept");
}

/// A login stuck in a slow password check does not hold up the logins
/// behind it: the core threads that are busy are watched, and another
/// takes the queue when they make no progress.
#[test]
fn a_slow_login_does_not_hold_up_the_others() {
    let env = Env::new();
    // carol's PIN is her userstore password, a bcrypt hash of cost 15
    // (seconds to check); alice's token has no PIN.
    let mut users = std::fs::read_to_string(env.path("users")).unwrap();
    users.push_str(&format!("carol:{}\n", peer("mkpasswd", &["-m", "bcrypt", "-R", "15", "carolpw"])));
    std::fs::write(env.path("users"), users).unwrap();
    env.init_hotp("C1", "carol", "");
    env.init_hotp("A1", "alice", "");
    let base = std::fs::read_to_string(&env.config).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let slow = "\n[[policies]]\nname = \"slow\"\nscope = \"authentication\"\nusers = [\"carol\"]\n\
                [policies.actions]\notppin = \"userstore\"\n";
    write_config(&env, &base, std::slice::from_ref(&addr), &[localhost()], slow);
    let _server = Server::start(&env, std::slice::from_ref(&addr));
    let target: SocketAddr = addr.parse().unwrap();
    let code = oath_hotp(RFC_KEY, 0, 6);

    let mut carol = RadiusClient::new(target, SECRET);
    let mut alice = RadiusClient::new(target, SECRET);
    let start = Instant::now();
    let slow = carol.send("carol", &format!("carolpw{code}"));
    thread::sleep(Duration::from_millis(50));
    let sent = Instant::now();
    assert_eq!(alice.access("alice", &code, Duration::from_secs(30)), Some(code::ACCESS_ACCEPT));
    let fast = sent.elapsed();
    assert_eq!(carol.wait(&slow, Duration::from_secs(60), &|| false), Some(code::ACCESS_ACCEPT));
    let stuck = start.elapsed();
    assert!(
        fast < Duration::from_secs(1) && fast * 4 < stuck,
        "alice waited {fast:?} behind carol's login of {stuck:?}"
    );
}

/// A User-Name with a newline cannot forge a log line: user-supplied text
/// is escaped in the decision line.
#[test]
fn user_name_cannot_forge_log_lines() {
    let (_env, server) = setup(&[localhost()], "");
    let forged = "mallory\nINFO user=admin realm=corp result=accept reason=\"forged\"";
    let socket = udp("127.0.0.1:0");
    let request = access_request(9, random(), forged, "1234000000", SECRET);
    let reply = exchange(&socket, server.addr, &request).expect("no answer");
    assert_eq!(response(&reply, &request, SECRET).0, code::ACCESS_REJECT);
    assert!(server.wait_for("result=reject", Duration::from_secs(5)));
    let log = server.log();
    assert!(log.contains("user=mallory\\nINFO"), "the newline is escaped: {log}");
    assert!(!log.lines().any(|l| l.starts_with("INFO user=admin")), "a forged line appeared: {log}");
}

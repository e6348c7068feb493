//! The whole RADIUS request handler on arbitrary datagrams: bytes in, a
//! response or a drop out, against a real store in a temporary directory
//! (`State::handle`, which is what the receive loop and a core thread of
//! `otpd serve` do together, without the reply cache). Each input is sent
//! as it is from an unknown source and from both clients, and then once
//! more re-signed: rebuilt with a valid Message-Authenticator and the same
//! attributes, so that mutations get past the MAC check into the core.
//!
//! The store holds alice's HOTP token (PIN 1234, the RFC 4226 key, so the
//! seed `accept` logs in once) and bob's spass token (PIN bobpin), with
//! challenge-response on for hotp. Beyond "never panics", it checks:
//! a datagram that is not a well-formed, authenticated request from a known
//! client is dropped; every response verifies under the client's secret and
//! answers the request's identifier; and no HOTP value is accepted twice.
#![no_main]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use otpd_core::config::{Durability, PinHashParams};
use otpd_core::token::TokenType;
use otpd_core::{AdminContext, Config, Front, InitSpec, Otpd};
use otpd_daemon::radius::State;
use otpd_daemon::radius::codec::{MessageAuthenticator, Packet, attr, code, encode_request, verify_response};

const SECRET: &[u8] = b"testing123";
const HOTP_SERIAL: &str = "FUZZHOTP";
const BOB_PIN: &str = "bobpin";

/// The client that requires a Message-Authenticator (the default) and one
/// that does not; any other source is unknown.
const STRICT: &str = "127.0.0.1:50000";
const LEGACY: &str = "127.0.0.2:50000";
const UNKNOWN: &str = "198.51.100.7:1812";

const CONFIG: &str = r#"
database = "otpd.db"
key_file = "otpd.key"

# The limits on failed attempts stay on, but with a window of one second
# the core still sees some of every user's attempts each second.
[rate_limit]
window = 1

[radius]
listen = ["127.0.0.1:1812"]

[[radius.clients]]
name = "strict"
address = "127.0.0.1/32"
secret = "testing123"

[[radius.clients]]
name = "legacy"
address = "127.0.0.2/32"
secret = "testing123"
realm = "corp"
require_message_authenticator = false

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

[[policies]]
name = "cr"
scope = "authentication"
[policies.actions]
challenge_response = "hotp"
"#;

struct Harness {
    state: State,
    /// A second core on the same store, for the admin calls.
    admin: Otpd,
    /// OTP values (the last six characters of accepted alice passwords).
    accepted: Mutex<HashSet<String>>,
    runs: Mutex<u64>,
    _dir: tempfile::TempDir,
}

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::parse(&dir.join("otpd.toml"), CONFIG).expect("the fuzz configuration parses");
    // Cheap PIN hashes and no fsync: the fuzzer wants executions, and
    // neither setting changes what the handler does.
    config.pin_hash = PinHashParams { memory_kib: 64, iterations: 1, parallelism: 1 };
    config.durability = Durability::ProcessCrash;
    config
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // alice's userstore password is "alicepw" (SHA-256-crypt); bob's account is locked.
        std::fs::write(
            dir.path().join("users"),
            "alice:$5$saltsalt$oQcbnkhLMRqvioe4yl/tmT2Rs.x/ovXywnDfGRPmyH4:1000:1000:Alice:/home/alice:/bin/sh\nbob:*\n",
        )
        .expect("the users file");
        let admin = Otpd::open(config(dir.path())).expect("the store opens");
        let ctx = AdminContext { actor: "fuzz".into(), front: Front::Cli, client: None };
        let mut hotp = InitSpec::new(TokenType::Hotp);
        hotp.serial = Some(HOTP_SERIAL.into());
        hotp.otpkey = Some("3132333435363738393031323334353637383930".to_owned().into());
        hotp.user = Some("alice".into());
        hotp.pin = Some("1234".to_owned().into());
        admin.init_token(&ctx, &hotp).expect("alice's hotp token");
        let mut spass = InitSpec::new(TokenType::Spass);
        spass.serial = Some("FUZZSPASS".into());
        spass.user = Some("bob".into());
        spass.pin = Some(BOB_PIN.to_owned().into());
        admin.init_token(&ctx, &spass).expect("bob's spass token");
        let state = State::open(config(dir.path())).expect("the handler state");
        Harness { state, admin, accepted: Mutex::default(), runs: Mutex::default(), _dir: dir }
    })
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

/// The request rebuilt with the same code, identifier, authenticator,
/// attributes and (decoded) password, and a valid Message-Authenticator.
fn resign(data: &[u8]) -> Option<Vec<u8>> {
    let packet = Packet::parse(data).ok()?;
    let password = packet.user_password(SECRET).ok();
    let attributes: Vec<(u8, &[u8])> = (0..=u8::MAX)
        .filter(|&kind| kind != attr::USER_PASSWORD && kind != attr::MESSAGE_AUTHENTICATOR)
        .flat_map(|kind| packet.attrs(kind).map(move |value| (kind, value)))
        .collect();
    encode_request(
        packet.code,
        packet.identifier,
        packet.authenticator,
        &attributes,
        password.as_deref().map(Vec::as_slice),
        SECRET,
        true,
    )
    .ok()
}

/// One datagram from `source`: what the handler answered must be right.
fn exchange(h: &Harness, data: &[u8], source: &str) {
    let Ok(reply) = h.state.handle(data, addr(source)) else { return };

    let request = Packet::parse(data).expect("an answered datagram parses");
    match request.message_authenticator(SECRET) {
        MessageAuthenticator::Valid => {}
        MessageAuthenticator::Missing => {
            assert!(
                source == LEGACY && request.code == code::ACCESS_REQUEST,
                "answered without a Message-Authenticator"
            )
        }
        MessageAuthenticator::Invalid => panic!("answered with a bad Message-Authenticator"),
    }
    let response = verify_response(&reply, &request.authenticator, SECRET).expect("the reply verifies");
    assert_eq!(response.identifier, request.identifier);
    assert!(response.attr(attr::MESSAGE_AUTHENTICATOR).is_some());
    match request.code {
        code::STATUS_SERVER => assert_eq!(response.code, code::ACCESS_ACCEPT),
        code::ACCESS_REQUEST => {
            assert!(matches!(
                response.code,
                code::ACCESS_ACCEPT | code::ACCESS_REJECT | code::ACCESS_CHALLENGE
            ))
        }
        other => panic!("answered packet code {other}"),
    }
    if response.code == code::ACCESS_ACCEPT && request.code == code::ACCESS_REQUEST {
        let password = request.user_password(SECRET).expect("an accepted request has a password");
        let password = String::from_utf8_lossy(&password);
        if password != BOB_PIN {
            let chars: Vec<char> = password.chars().collect();
            let otp: String = chars[chars.len().saturating_sub(6)..].iter().collect();
            assert!(h.accepted.lock().unwrap().insert(otp.clone()), "OTP {otp} accepted twice");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    {
        // Wrong guesses lock alice's token after ten; unlock it now and
        // then so that the accept and challenge paths stay reachable.
        let mut runs = h.runs.lock().unwrap();
        *runs += 1;
        if runs.is_multiple_of(64) {
            let ctx = AdminContext { actor: "fuzz".into(), front: Front::Cli, client: None };
            h.admin.reset_failcounter(&ctx, HOTP_SERIAL).expect("reset the failcounter");
        }
    }

    assert!(h.state.handle(data, addr(UNKNOWN)).is_err(), "a datagram from an unknown client was answered");
    exchange(h, data, STRICT);
    exchange(h, data, LEGACY);
    if let Some(signed) = resign(data)
        && signed != data
    {
        exchange(h, &signed, STRICT);
    }
});

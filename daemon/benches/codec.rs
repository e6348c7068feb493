//! Benchmark of otpd's RADIUS codec, the per-packet work of `otpd serve`
//! outside the core: decoding an Access-Request, verifying its
//! Message-Authenticator and un-hiding User-Password; encoding an
//! Access-Accept and an Access-Reject with Message-Authenticator and
//! Response Authenticator. Prints packets per second besides criterion's
//! timings.
//!
//! Run: `cargo bench -p otpd --bench codec`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use otpd_daemon::radius::codec::{self, MessageAuthenticator, Packet, attr, code};

const SECRET: &[u8] = b"testing123";
/// The Request Authenticator of every request (its value does not change the work).
const AUTHENTICATOR: [u8; 16] = *b"0123456789abcdef";

/// An Access-Request like a NAS sends: Message-Authenticator first, User-Name,
/// NAS-Identifier, NAS-IP-Address, Calling-Station-Id, and a PIN+OTP hidden
/// as User-Password.
fn request() -> Vec<u8> {
    codec::encode_request(
        code::ACCESS_REQUEST,
        7,
        AUTHENTICATOR,
        &[
            (attr::USER_NAME, b"user42"),
            (attr::NAS_IDENTIFIER, b"vpn-gw-1"),
            (attr::NAS_IP_ADDRESS, &[192, 0, 2, 1]),
            (attr::CALLING_STATION_ID, b"198.51.100.23"),
        ],
        Some(b"1234755224"),
        SECRET,
        true,
    )
    .expect("the request fits")
}

/// What the listener does with a datagram before the core sees it: parse,
/// check the Message-Authenticator, read User-Name and User-Password.
fn decode(datagram: &[u8]) -> usize {
    let packet = Packet::parse(datagram).expect("well-formed");
    assert_eq!(packet.message_authenticator(SECRET), MessageAuthenticator::Valid);
    let user = packet.attr(attr::USER_NAME).expect("User-Name");
    let password = packet.user_password(SECRET).expect("User-Password");
    user.len() + password.len()
}

fn per_second(label: &str, n: u32, elapsed: Duration) {
    println!("{label}: {:.0} per second ({n} in {:.2?})", f64::from(n) / elapsed.as_secs_f64(), elapsed);
}

fn bench(c: &mut Criterion) {
    let datagram = request();
    let packet = Packet::parse(&datagram).expect("well-formed");
    let reject_message: &[u8] = b"wrong otp value";

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_verify_access_request", |b| b.iter(|| decode(black_box(&datagram))));
    group.bench_function("encode_access_accept", |b| {
        b.iter(|| {
            codec::encode_response(
                black_box(&packet),
                code::ACCESS_ACCEPT,
                &[(attr::REPLY_MESSAGE, b"otpd access granted")],
                SECRET,
            )
        })
    });
    group.bench_function("encode_access_reject", |b| {
        b.iter(|| {
            codec::encode_response(
                black_box(&packet),
                code::ACCESS_REJECT,
                &[(attr::REPLY_MESSAGE, reject_message)],
                SECRET,
            )
        })
    });
    group.finish();

    // Plain figures for BENCHMARKS-style reporting; the reply must verify as
    // the NAS would check it.
    let reply = codec::encode_response(&packet, code::ACCESS_ACCEPT, &[], SECRET);
    let checked = codec::verify_response(&reply, &AUTHENTICATOR, SECRET).expect("a valid reply");
    assert!(checked.attr(attr::MESSAGE_AUTHENTICATOR).is_some());

    let n = 200_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(decode(black_box(&datagram)));
    }
    per_second("Access-Request decoded and verified (M-A, User-Password)", n, start.elapsed());
    let start = Instant::now();
    for _ in 0..n {
        black_box(codec::encode_response(
            black_box(&packet),
            code::ACCESS_REJECT,
            &[(attr::REPLY_MESSAGE, reject_message)],
            SECRET,
        ));
    }
    per_second("Access-Reject encoded (M-A, Response Authenticator)", n, start.elapsed());
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);

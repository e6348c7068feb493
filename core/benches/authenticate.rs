//! Benchmark of `Otpd::authenticate` on a SQLite file: the HOTP accept path
//! (a fresh valid code every iteration, its counter committed with fsync),
//! the reject path (a wrong code, failcounter raised and committed), the
//! PIN path (Argon2id at OWASP's minimum: the first check of a PIN, and a
//! repeated one, whose verdict is remembered) beside one bare Argon2id
//! verification, and logins from many threads at once (group commit).
//! Prints accepts/rejects per second besides criterion's timings.
//!
//! Run: `cargo bench -p otpd-core --bench authenticate`

use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use otpd_core::config::PinHashParams;
use otpd_core::crypto;
use otpd_core::otp::{HashAlgorithm, hotp};
use otpd_core::{AdminContext, AuthRequest, Config, Front, InitSpec, Otpd, TokenChanges, TokenType};
use zeroize::Zeroizing;

const KEY: &[u8] = b"12345678901234567890";
const KEY_HEX: &str = "3132333435363738393031323334353637383930";

fn setup() -> (tempfile::TempDir, Otpd) {
    let dir = tempfile::tempdir().unwrap();
    let users: String = ["alice", "bob", "carol"]
        .iter()
        .map(|u| u.to_string())
        .chain((0..16).map(|i| format!("t{i}")))
        .map(|u| format!("{u}:*\n"))
        .collect();
    std::fs::write(dir.path().join("users"), users).unwrap();
    let text = "[[resolvers]]\nname = \"u\"\ntype = \"passwdfile\"\npath = \"users\"\n\
                [[realms]]\nname = \"corp\"\nresolvers = [\"u\"]\n";
    let config = Config::parse(&dir.path().join("otpd.toml"), text).unwrap();
    let otpd = Otpd::open(config).unwrap();
    let ctx = AdminContext { actor: "bench".into(), front: Front::Cli, client: None };
    let threads = (0..16).map(|i| format!("t{i}"));
    for user in ["alice", "bob", "carol"].into_iter().map(str::to_owned).chain(threads) {
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.serial = Some(format!("H-{user}"));
        spec.otpkey = Some(Zeroizing::new(KEY_HEX.into()));
        spec.pin = (user == "carol").then(|| Zeroizing::new("1234".into()));
        spec.user = Some(user);
        otpd.init_token(&ctx, &spec).unwrap();
    }
    // The reject path must not lock the token.
    let changes = TokenChanges { max_fail: Some(u32::MAX), ..Default::default() };
    otpd.set_token(&ctx, "H-bob", &changes).unwrap();
    (dir, otpd)
}

fn per_second(label: &str, n: u64, elapsed: Duration) {
    println!("{label}: {:.0} per second ({n} in {:.2?})", n as f64 / elapsed.as_secs_f64(), elapsed);
}

fn bench(c: &mut Criterion) {
    let (_dir, otpd) = setup();
    let mut counter = 0u64;
    let mut group = c.benchmark_group("authenticate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hotp_accept", |b| {
        b.iter(|| {
            let code = hotp(KEY, counter, 6, HashAlgorithm::Sha1);
            counter += 1;
            let outcome = otpd.authenticate(&AuthRequest::new("alice", code, Front::Cli)).unwrap();
            assert!(outcome.is_accept());
        })
    });
    group.bench_function("hotp_reject", |b| {
        b.iter(|| {
            let outcome = otpd.authenticate(&AuthRequest::new("bob", "000000", Front::Cli)).unwrap();
            assert!(!outcome.is_accept());
        })
    });
    let phc = crypto::hash_pin("1234", &PinHashParams::default()).unwrap();
    group.bench_function("argon2id_verify_alone", |b| {
        b.iter(|| assert!(crypto::verify_pin_hash("1234", &phc)))
    });
    let ctx = AdminContext { actor: "bench".into(), front: Front::Cli, client: None };
    let mut carol = 0u64;
    group.bench_function("pin_accept_first_check", |b| {
        b.iter_batched(
            // A new hash of the PIN (a new salt) each time: nothing remembered.
            || {
                let changes = TokenChanges { pin: Some(Zeroizing::new("1234".into())), ..Default::default() };
                otpd.set_token(&ctx, "H-carol", &changes).unwrap();
                let code = hotp(KEY, carol, 6, HashAlgorithm::Sha1);
                carol += 1;
                format!("1234{code}")
            },
            |password| {
                assert!(
                    otpd.authenticate(&AuthRequest::new("carol", password, Front::Cli)).unwrap().is_accept()
                )
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("pin_accept_repeated", |b| {
        b.iter(|| {
            let code = hotp(KEY, carol, 6, HashAlgorithm::Sha1);
            carol += 1;
            let outcome =
                otpd.authenticate(&AuthRequest::new("carol", format!("1234{code}"), Front::Cli)).unwrap();
            assert!(outcome.is_accept());
        })
    });
    group.finish();

    // Plain figures for BENCHMARKS-style reporting.
    let n = 2000;
    let start = Instant::now();
    for _ in 0..n {
        let code = hotp(KEY, counter, 6, HashAlgorithm::Sha1);
        counter += 1;
        assert!(otpd.authenticate(&AuthRequest::new("alice", code, Front::Cli)).unwrap().is_accept());
    }
    per_second("HOTP accepts (one thread, fsync per commit)", n, start.elapsed());
    let start = Instant::now();
    for _ in 0..n {
        assert!(!otpd.authenticate(&AuthRequest::new("bob", "000000", Front::Cli)).unwrap().is_accept());
    }
    per_second("HOTP rejects (one thread, fsync per commit)", n, start.elapsed());

    // 16 threads, one user each: concurrent logins share commits.
    let otpd = Arc::new(otpd);
    let accepted = Arc::new(AtomicU64::new(0));
    let per_thread = 500u64;
    let start = Instant::now();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let (otpd, accepted) = (otpd.clone(), accepted.clone());
            std::thread::spawn(move || {
                for counter in 0..per_thread {
                    let code = hotp(KEY, counter, 6, HashAlgorithm::Sha1);
                    let req = AuthRequest::new(format!("t{i}"), code, Front::Cli);
                    if otpd.authenticate(&req).unwrap().is_accept() {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 16 * per_thread);
    per_second("HOTP accepts (16 threads, group commit)", 16 * per_thread, start.elapsed());
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);

//! Benchmark of `Otpd::authenticate` on a SQLite file: the HOTP accept path
//! (a fresh valid code every iteration, its counter committed with fsync)
//! and the reject path (a wrong code, failcounter raised and committed).
//! Prints accepts/rejects per second besides criterion's timings.
//!
//! Run: `cargo bench -p otpd-core --bench authenticate`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use otpd_core::otp::{HashAlgorithm, hotp};
use otpd_core::{AdminContext, AuthRequest, Config, Front, InitSpec, Otpd, TokenChanges, TokenType};

const KEY: &[u8] = b"12345678901234567890";
const KEY_HEX: &str = "3132333435363738393031323334353637383930";

fn setup() -> (tempfile::TempDir, Otpd) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), "alice:*\nbob:*\n").unwrap();
    let text = "[[resolvers]]\nname = \"u\"\ntype = \"passwdfile\"\npath = \"users\"\n\
                [[realms]]\nname = \"corp\"\nresolvers = [\"u\"]\n";
    let config = Config::parse(&dir.path().join("otpd.toml"), text).unwrap();
    let otpd = Otpd::open(config).unwrap();
    let ctx = AdminContext { actor: "bench".into(), front: Front::Cli, client: None };
    for user in ["alice", "bob"] {
        let mut spec = InitSpec::new(TokenType::Hotp);
        spec.serial = Some(format!("H-{user}"));
        spec.otpkey = Some(KEY_HEX.into());
        spec.user = Some(user.into());
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
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);

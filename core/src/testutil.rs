//! Test fixtures of the core: an `Otpd` on a temporary SQLite file with a
//! passwd-file realm `corp` (alice, bob) and a fixed clock.

use std::sync::Arc;

use jiff::Timestamp;

use crate::config::Config;
use crate::token::{StoredPin, Token, TokenType};
use crate::{AdminContext, FixedClock, Front, Otpd};

pub const RFC_KEY_HEX: &str = "3132333435363738393031323334353637383930";

pub struct Fixture {
    pub otpd: Otpd,
    pub clock: Arc<FixedClock>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        Self::at(1_700_000_000)
    }

    pub fn at(unix: i64) -> Self {
        Self::with_config(unix, "")
    }

    /// A fixture whose configuration has `extra` appended (policies, ...).
    pub fn with_config(unix: i64, extra: &str) -> Self {
        Self::with_top_config(unix, "", extra)
    }

    /// Like `with_config`, with `top` (top-level keys) put before the tables.
    pub fn with_top_config(unix: i64, top: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // alice's userstore password is "alicepw" (SHA-256-crypt).
        std::fs::write(
            dir.path().join("users"),
            "alice:$5$saltsalt$oQcbnkhLMRqvioe4yl/tmT2Rs.x/ovXywnDfGRPmyH4:1000:1000:Alice:/home/alice:/bin/sh\nbob:*\n",
        )
        .unwrap();
        let config_path = dir.path().join("otpd.toml");
        let text = "[[resolvers]]\nname = \"corp-users\"\ntype = \"passwdfile\"\npath = \"users\"\n\
                    [[realms]]\nname = \"corp\"\ndefault = true\nresolvers = [\"corp-users\"]\n\
                    [[realms]]\nname = \"sales\"\nresolvers = [\"corp-users\"]\n";
        let config = Config::parse(&config_path, &format!("{top}{text}{extra}")).unwrap();
        let clock = Arc::new(FixedClock::new(Timestamp::from_second(unix).unwrap()));
        let otpd = Otpd::open(config).unwrap().with_clock(clock.clone());
        Fixture { otpd, clock, _dir: dir }
    }

    pub fn ctx(&self) -> AdminContext {
        AdminContext { actor: "test".into(), front: Front::Cli, client: None }
    }
}

pub fn sample_token(token_type: TokenType, serial: &str) -> Token {
    Token {
        id: 0,
        serial: serial.into(),
        token_type,
        secret: Vec::new(),
        otplen: 6,
        hash: Default::default(),
        timestep: 30,
        time_window: 180,
        time_shift: 0.0,
        count: 0,
        count_window: 10,
        sync_window: 1000,
        maxfail: 10,
        failcount: 0,
        failcounter_exceeded: None,
        active: true,
        revoked: false,
        description: String::new(),
        pin: StoredPin::Empty,
        owner: None,
        realms: Vec::new(),
        validity_start: None,
        validity_end: None,
        count_auth: 0,
        count_auth_success: 0,
        created: Timestamp::UNIX_EPOCH,
        assigned: None,
    }
}

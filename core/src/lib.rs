//! otpd-core: every rule of otpd. How a password splits into PIN and OTP,
//! which tokens are tried, counters and replay protection, failcounters,
//! validity periods, realms and userstores, secrets at rest, and the token
//! store. The fronts (the RADIUS listener and admin CLI in `otpd`, the PAM
//! module `pam_otpd`) translate their input into calls on [`Otpd`] and its
//! outcomes back; none of them holds a rule of its own.
//!
//! The core is synchronous (no async runtime), so the PAM module and the CLI
//! call it directly and the daemon calls it from blocking worker threads.

pub mod admin;
mod autoassign;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod datetime;
pub mod error;
pub mod events;
pub mod import;
pub mod label;
mod limits;
pub mod local_socket;
pub mod lost;
pub mod otp;
pub mod otpauth;
pub mod password;
mod pincache;
pub mod pinhandler;
pub mod policy;
pub mod realm;
pub mod store;
pub mod token;
pub mod userstore;
pub mod validate;

use std::sync::Arc;

pub use admin::{AdminContext, InitSpec, TokenChanges};
pub use clock::{Clock, FixedClock, SystemClock};
pub use config::Config;
pub use error::{Error, Result};
pub use realm::{Realms, User};
pub use store::{AuditRecord, TokenFilter, TokenStore};
pub use token::{Token, TokenType};
pub use validate::{AuthDone, AuthRequest, Front, Outcome, TokenStatus};

use crypto::SecretKey;
use events::Events;
use policy::Policies;
use store::sqlite::{SqliteConfig, SqliteStore};

/// The `meta` entry that proves a key file belongs to a database: a value
/// sealed under the database's key when the database was created.
const KEY_CHECK: &str = "key_check";
const KEY_CHECK_PLAIN: &[u8] = b"otpd secrets key";

/// One open otpd: configuration, token store, secrets key, realms and clock.
/// Cheap calls take `&self`; it is `Send + Sync`, so one instance can serve
/// many threads.
#[derive(Debug)]
pub struct Otpd {
    config: Config,
    store: Box<dyn TokenStore>,
    key: SecretKey,
    realms: Realms,
    policies: Policies,
    events: Events,
    pins: pincache::PinCache,
    /// The Argon2id hash that unknown users' PINs are checked against (made
    /// on first use with `config.pin_hash`; see `validate`).
    dummy_pin: std::sync::OnceLock<String>,
    clock: Arc<dyn Clock>,
}

impl Otpd {
    /// Opens the store (creating it and its key file on first use) and the
    /// realms' resolvers. Refuses a database whose key file is missing or
    /// does not match, and a database of a newer schema, changing nothing.
    pub fn open(config: Config) -> Result<Otpd> {
        Self::open_with(config, Realms::open)
    }

    /// Like `open`, for a process that serves a single login (the PAM
    /// module): a userstore file is read when the login needs it, and a
    /// broken one is reported then, to that login.
    pub fn open_for_one_login(config: Config) -> Result<Otpd> {
        Self::open_with(config, Realms::open_deferred)
    }

    fn open_with(config: Config, open_realms: fn(&Config) -> Result<Realms>) -> Result<Otpd> {
        let mut store_config = SqliteConfig::new(&config.database);
        store_config.sync = config.durability == config::Durability::PowerLoss;
        let store = SqliteStore::open(store_config)?;
        let key = Self::open_key(&config, &store)?;
        let realms = open_realms(&config)?;
        let source = config.source.clone().unwrap_or_else(|| "built-in defaults".into());
        let policies = Policies::from_config(&config.policies, &source)?;
        let events = Events::from_config(&config.events, &source, &realms)?;
        Ok(Otpd {
            config,
            store: Box::new(store),
            key,
            realms,
            policies,
            events,
            pins: pincache::PinCache::new()?,
            dummy_pin: std::sync::OnceLock::new(),
            clock: Arc::new(SystemClock),
        })
    }

    fn open_key(config: &Config, store: &SqliteStore) -> Result<SecretKey> {
        let check = store.read()?.meta(KEY_CHECK)?;
        let key = match (SecretKey::load(&config.key_file)?, &check) {
            (Some(key), _) => key,
            (None, None) => SecretKey::create(&config.key_file)?,
            (None, Some(_)) => {
                return Err(Error::KeyFileMissing {
                    key: config.key_file.clone(),
                    database: config.database.clone(),
                });
            }
        };
        let mismatch =
            || Error::KeyMismatch { key: config.key_file.clone(), database: config.database.clone() };
        match check {
            Some(sealed) => {
                let plain = key.open(KEY_CHECK, &sealed).map_err(|_| mismatch())?;
                if &plain[..] != KEY_CHECK_PLAIN {
                    return Err(mismatch());
                }
            }
            None => {
                let mut tx = store.write()?;
                // Another process may have bound its key meanwhile.
                match tx.meta(KEY_CHECK)? {
                    Some(sealed) => {
                        key.open(KEY_CHECK, &sealed).map_err(|_| mismatch())?;
                    }
                    None => {
                        tx.set_meta(KEY_CHECK, &key.seal(KEY_CHECK, KEY_CHECK_PLAIN)?)?;
                        tx.commit()?;
                    }
                }
            }
        }
        Ok(key)
    }

    /// Replaces the clock (tests inject a fixed one).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    pub fn realms(&self) -> &Realms {
        &self.realms
    }

    pub fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }

    /// The newest audit records, newest first.
    pub fn audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        Ok(self.store.read()?.audit(limit)?)
    }
}

#[cfg(test)]
pub(crate) mod testutil;

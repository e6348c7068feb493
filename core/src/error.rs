//! The core's error type. Every variant's message is one sentence an
//! operator can act on; the fronts print it as is (the CLI exits 2, RADIUS
//! logs and rejects, PAM logs through pam_syslog).

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::crypto::CryptoError;
use crate::store::StoreError;
use crate::userstore::UserStoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    UserStore(#[from] UserStoreError),
    #[error(
        "key file {key} is missing, but database {database} already holds encrypted secrets; restore the key file (a new key could not decrypt them)"
    )]
    KeyFileMissing { key: PathBuf, database: PathBuf },
    #[error(
        "key file {key} does not belong to database {database}: it cannot decrypt the database's secrets"
    )]
    KeyMismatch { key: PathBuf, database: PathBuf },
    #[error("no token with serial '{0}' exists")]
    UnknownSerial(String),
    #[error("user '{login}' does not exist in realm '{realm}'")]
    UnknownUser { login: String, realm: String },
    #[error("realm '{0}' does not exist")]
    UnknownRealm(String),
    #[error("no realm was given and no default realm is configured")]
    NoDefaultRealm,
    #[error("serial '{0}' is invalid: use 1 to 40 characters from A-Z, a-z, 0-9, '_' and '-'")]
    InvalidSerial(String),
    #[error("the OTP key is invalid: {0}")]
    InvalidOtpKey(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("token {serial} is already assigned to user {user}")]
    AlreadyAssigned { serial: String, user: String },
    #[error("token {0} is not assigned to a user")]
    NotAssigned(String),
    #[error(
        "resynchronisation of token {0} failed: the two OTP values are not consecutive values within the sync window"
    )]
    ResyncFailed(String),
    #[error("token {0} is revoked; it cannot be changed")]
    Revoked(String),
    /// An enrollment limit of a policy refuses the operation.
    #[error("{0}")]
    PolicyLimit(String),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("You can only define a lost token for an assigned token.")]
    LostUnassigned,
    #[error("cannot create the lost-token replacement {0}: a token of another type has that serial")]
    LostSerialTaken(String),
    #[error("the PIN handler refused the random PIN, so the token was not enrolled: {0}")]
    PinHandler(String),
    /// A line of a `token import` file is refused; nothing was imported.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

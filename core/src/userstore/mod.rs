//! Userstores: where otpd learns whether a user exists and whether a static password is theirs.
//!
//! A realm is backed by one or more userstores (privacyIDEA calls them resolvers). The
//! validation flow asks a store to [`UserStore::lookup`] a login before it looks at tokens, and
//! to [`UserStore::check_password`] when a policy wants the user's password in front of the OTP.
//! Two stores exist: [`PasswdFile`], a passwd-style file the operator maintains for otpd alone,
//! and [`UnixAccounts`], the machine's own accounts. Both keep passwords as crypt(3) hashes,
//! which [`crypt::verify`] checks.
//!
//! All calls are synchronous and may block on file I/O and on deliberately slow password
//! hashing, so async callers should run them on a blocking thread.

pub mod crypt;
pub mod passwdfile;
pub mod unix;

pub use passwdfile::PasswdFile;
pub use unix::UnixAccounts;

use std::path::PathBuf;

/// What a userstore knows about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// The login name, exactly as stored.
    pub login: String,
    /// Numeric user id, when the store has one.
    pub uid: Option<u32>,
    /// The GECOS (comment) field, usually the full name; `None` when empty.
    pub gecos: Option<String>,
}

/// Why a userstore could not answer. "No such user" and "wrong password" are not errors.
#[derive(Debug, thiserror::Error)]
pub enum UserStoreError {
    /// A user file could not be read.
    #[error("cannot read user file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A line of a user file (or of the shadow file) is malformed.
    #[error("{} line {line}: {message}", path.display())]
    Parse { path: PathBuf, line: usize, message: String },
    /// A stored password hash cannot be used.
    #[error(transparent)]
    Crypt(#[from] crypt::CryptError),
    /// The shadow file holding the user's hash cannot be read, so the password cannot be checked.
    #[error(
        "cannot read shadow file {}: {source}; otpd needs read access to it to check Unix passwords (run it as root or give its service user read access, e.g. via the 'shadow' group)",
        path.display()
    )]
    ShadowUnreadable { path: PathBuf, source: std::io::Error },
    /// The account exists but neither its passwd entry nor the shadow file holds a hash for it.
    #[error(
        "user '{login}' has no password hash: its passwd entry points to the shadow file, but {} has no line for it",
        path.display()
    )]
    NoPasswordHash { login: String, path: PathBuf },
    /// The system user database (getpwnam) failed, as opposed to not knowing the user.
    #[error("cannot look up user '{login}' in the system user database: {source}")]
    UserDatabase { login: String, source: nix::errno::Errno },
}

/// A source of users and their passwords.
pub trait UserStore: Send + Sync + std::fmt::Debug {
    /// "passwdfile" or "unix"
    fn kind(&self) -> &'static str;

    /// The user with exactly this login, or `None` if the store does not know it.
    fn lookup(&self, login: &str) -> Result<Option<UserEntry>, UserStoreError>;

    /// Ok(false) for an unknown user, a locked/disabled account or a wrong password.
    fn check_password(&self, login: &str, password: &str) -> Result<bool, UserStoreError>;
}

/// GECOS fields are often `Full Name,room,phone,other` with the last parts empty; keep the
/// meaningful part and report an empty field as absent.
fn normalize_gecos(raw: &str) -> Option<String> {
    let trimmed = raw.trim_end_matches(',').trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gecos_normalization() {
        assert_eq!(normalize_gecos("Alice Example,,,"), Some("Alice Example".into()));
        assert_eq!(normalize_gecos("Bob,Room 1,,"), Some("Bob,Room 1".into()));
        assert_eq!(normalize_gecos(",,,"), None);
        assert_eq!(normalize_gecos(""), None);
    }

    #[test]
    fn error_messages_name_the_file_and_line() {
        let io = UserStoreError::Io {
            path: "/x/users".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(io.to_string().starts_with("cannot read user file /x/users: "));
        let parse =
            UserStoreError::Parse { path: "/x/users".into(), line: 3, message: "empty user name".into() };
        assert_eq!(parse.to_string(), "/x/users line 3: empty user name");
    }
}

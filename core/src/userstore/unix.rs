//! A userstore backed by the machine's own accounts, for realms that mirror Unix logins.
//!
//! Existence, uid and GECOS come from the system user database via getpwnam, so NSS sources
//! (files, LDAP, sssd, ...) are honoured. Password hashes come from the shadow file, read afresh
//! on every check so `passwd` changes apply at once. Reading it normally requires root or
//! membership in the `shadow` group; when it cannot be read, checks fail with an error that says
//! so rather than turning every password into a silent "wrong password".

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::unistd::User;

use super::{UserEntry, UserStore, UserStoreError, crypt, normalize_gecos};

const DEFAULT_SHADOW: &str = "/etc/shadow";

/// The machine's accounts: getpwnam (`nix::unistd::User::from_name`) for existence, uid and
/// gecos; the password hash from the shadow file (default /etc/shadow) when it is readable, else
/// from the passwd entry's password field if that is a real hash. If no hash is readable,
/// `check_password` returns an error saying the shadow file cannot be read (run as root or give
/// the service read access), not a silent false.
///
/// Accounts locked with `!`/`*`, without a password, or past their shadow expiry date give
/// `Ok(false)`. Only hashes in the shadow file are consulted; hashes held solely by other NSS
/// backends (e.g. LDAP) are out of reach of this store.
pub struct UnixAccounts {
    shadow_path: PathBuf,
}

impl UnixAccounts {
    /// Uses /etc/shadow.
    pub fn new() -> Self {
        Self::with_shadow_path(DEFAULT_SHADOW)
    }

    /// Reads password hashes from `path` instead of /etc/shadow (for tests and unusual layouts).
    pub fn with_shadow_path(path: impl Into<PathBuf>) -> Self {
        Self { shadow_path: path.into() }
    }

    fn user(&self, login: &str) -> Result<Option<User>, UserStoreError> {
        User::from_name(login)
            .map_err(|source| UserStoreError::UserDatabase { login: login.to_string(), source })
    }
}

impl Default for UnixAccounts {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for UnixAccounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixAccounts").field("shadow_path", &self.shadow_path).finish()
    }
}

impl UserStore for UnixAccounts {
    fn kind(&self) -> &'static str {
        "unix"
    }

    fn lookup(&self, login: &str) -> Result<Option<UserEntry>, UserStoreError> {
        Ok(self.user(login)?.map(|user| UserEntry {
            uid: Some(user.uid.as_raw()),
            gecos: normalize_gecos(&user.gecos.to_string_lossy()),
            login: user.name,
        }))
    }

    fn check_password(&self, login: &str, password: &str) -> Result<bool, UserStoreError> {
        let Some(user) = self.user(login)? else {
            return Ok(false);
        };
        // A passwd field that is not valid UTF-8 cannot be a crypt hash; treat it like "x".
        let passwd_field = user.passwd.to_str().unwrap_or("x").to_string();
        // Look the shadow line up under the name getpwnam matched exactly; `user.name` has been
        // through a lossy UTF-8 conversion.
        match read_shadow_entry(&self.shadow_path, login) {
            Ok(Some(entry)) => {
                if entry.expired(days_since_epoch()) {
                    return Ok(false);
                }
                Ok(crypt::verify(password, &entry.hash)?)
            }
            // No shadow line: a system without shadow passwords keeps the hash (or a lock
            // marker) in passwd itself; "x" promises a shadow line that is not there.
            Ok(None) if passwd_field != "x" => Ok(crypt::verify(password, &passwd_field)?),
            Ok(None) => Err(UserStoreError::NoPasswordHash {
                login: login.to_string(),
                path: self.shadow_path.clone(),
            }),
            Err(ShadowError::Unreadable(_)) if passwd_field.starts_with('$') => {
                Ok(crypt::verify(password, &passwd_field)?)
            }
            Err(ShadowError::Unreadable(source)) => {
                Err(UserStoreError::ShadowUnreadable { path: self.shadow_path.clone(), source })
            }
            Err(ShadowError::Parse { line, message }) => {
                Err(UserStoreError::Parse { path: self.shadow_path.clone(), line, message })
            }
        }
    }
}

/// The parts of a shadow line that decide whether a password may log in.
#[derive(Debug, PartialEq, Eq)]
struct ShadowEntry {
    hash: String,
    /// Account expiry in days since 1970-01-01 (shadow field 8); `None` when unset.
    expires: Option<i64>,
}

impl ShadowEntry {
    /// Same rule as shadow-utils: a positive expiry day that has been reached disables the
    /// account (0 is historically ambiguous and treated as "never").
    fn expired(&self, today: i64) -> bool {
        matches!(self.expires, Some(day) if day > 0 && today >= day)
    }
}

enum ShadowError {
    Unreadable(std::io::Error),
    Parse { line: usize, message: String },
}

fn days_since_epoch() -> i64 {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    i64::try_from(seconds / 86_400).unwrap_or(i64::MAX)
}

/// Finds `login`'s line in the shadow file. Lines of other users are not interpreted, so a
/// malformed line elsewhere does not lock everyone out.
fn read_shadow_entry(path: &Path, login: &str) -> Result<Option<ShadowEntry>, ShadowError> {
    let bytes = fs::read(path).map_err(ShadowError::Unreadable)?;
    let prefix = [login.as_bytes(), b":"].concat();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        if !raw.starts_with(&prefix) {
            continue;
        }
        let line = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| ShadowError::Parse {
            line,
            message: format!("the line of user '{login}' is not valid UTF-8"),
        })?;
        let fields: Vec<&str> = text.split(':').collect();
        let hash = fields.get(1).copied().unwrap_or_default().to_string();
        let expires = match fields.get(7).copied().unwrap_or_default() {
            "" => None,
            day => Some(day.parse::<i64>().map_err(|_| ShadowError::Parse {
                line,
                message: format!("account expiry '{day}' of user '{login}' is not a number"),
            })?),
        };
        return Ok(Some(ShadowEntry { hash, expires }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    // mkpasswd -m yescrypt secret
    const SECRET_YESCRYPT: &str = "$y$j9T$kSVkznd05aGSerlqiGYu8/$1PkvcVoS3Dy5u5gudvyWGxau7W.5hfPnFVhBJJQK0uD";
    // mkpasswd -m sha-512 secret
    const SECRET_SHA512: &str = "$6$dqmH2xnhIB5hAp7y$RquKW6sNnX5bRu8pmYEXwID1a.YsbXZtWC7F/gYZO1rmUaQMIOh1T7VBIVs7CQTdamM1dJHgsEuAGMXK1E6lc0";

    fn shadow_with(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("create temp file");
        file.write_all(contents.as_bytes()).expect("write temp file");
        file
    }

    /// root's passwd field is "x" on every shadow-using system the tests are meant for; the
    /// shadow-specific assertions only make sense then.
    fn root_uses_shadow() -> bool {
        User::from_name("root").ok().flatten().is_some_and(|u| u.passwd.as_bytes() == b"x")
    }

    #[test]
    fn root_exists_and_made_up_user_does_not() {
        let store = UnixAccounts::new();
        assert_eq!(store.kind(), "unix");
        let root = store.lookup("root").expect("lookup").expect("root exists");
        assert_eq!(root.login, "root");
        assert_eq!(root.uid, Some(0));
        assert_eq!(store.lookup("otpd-no-such-user-4711").expect("lookup"), None);
        assert_eq!(store.lookup("").expect("lookup"), None);
        assert_eq!(store.lookup("ro\0ot").expect("lookup"), None);
        assert!(
            !store.check_password("otpd-no-such-user-4711", "secret").expect("unknown user is not an error")
        );
    }

    #[test]
    fn root_password_from_shadow_file() {
        let shadow = shadow_with(&format!(
            "daemon:*:19000:0:99999:7:::\nroot:{SECRET_YESCRYPT}:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n"
        ));
        let store = UnixAccounts::with_shadow_path(shadow.path());
        assert!(store.check_password("root", "secret").expect("check"));
        assert!(!store.check_password("root", "wrong").expect("check"));
    }

    #[test]
    fn locked_and_expired_accounts_are_refused() {
        let locked = shadow_with(&format!("root:!{SECRET_SHA512}:19000:0:99999:7:::\n"));
        let store = UnixAccounts::with_shadow_path(locked.path());
        assert!(!store.check_password("root", "secret").expect("check"));

        let expired = shadow_with(&format!("root:{SECRET_SHA512}:19000:0:99999:7::19001:\n"));
        let store = UnixAccounts::with_shadow_path(expired.path());
        assert!(!store.check_password("root", "secret").expect("check"));

        let far_future = shadow_with(&format!("root:{SECRET_SHA512}:19000:0:99999:7::999999:\n"));
        let store = UnixAccounts::with_shadow_path(far_future.path());
        assert!(store.check_password("root", "secret").expect("check"));

        let garbage = shadow_with(&format!("root:{SECRET_SHA512}:19000:0:99999:7::soon:\n"));
        let store = UnixAccounts::with_shadow_path(garbage.path());
        assert!(matches!(store.check_password("root", "secret"), Err(UserStoreError::Parse { line: 1, .. })));
    }

    #[test]
    fn unusable_hash_in_shadow_is_an_error() {
        let md5 = shadow_with("root:$1$QZlhqW23$5Jy7lS5LbJkEju13twJCE.:19000::::::\n");
        let store = UnixAccounts::with_shadow_path(md5.path());
        assert!(matches!(
            store.check_password("root", "secret"),
            Err(UserStoreError::Crypt(crypt::CryptError::UnsupportedScheme(_)))
        ));
    }

    #[test]
    fn missing_shadow_file_is_a_clear_error() {
        if !root_uses_shadow() {
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("shadow");
        let store = UnixAccounts::with_shadow_path(&path);
        let err = store.check_password("root", "secret").expect_err("no hash is readable");
        assert!(matches!(err, UserStoreError::ShadowUnreadable { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("cannot read shadow file {}: ", path.display())), "{text}");
        assert!(text.contains("run it as root"), "{text}");
        // Existence checks do not need the shadow file.
        assert!(store.lookup("root").expect("lookup").is_some());
    }

    #[test]
    fn user_missing_from_shadow_is_an_error() {
        if !root_uses_shadow() {
            return;
        }
        let shadow = shadow_with("daemon:*:19000:0:99999:7:::\n");
        let store = UnixAccounts::with_shadow_path(shadow.path());
        assert!(matches!(store.check_password("root", "secret"), Err(UserStoreError::NoPasswordHash { .. })));
    }

    #[test]
    fn shadow_parsing() {
        let shadow = shadow_with("rootx:*:1::::::\nroot:$6$x$y:1:0:99999:7::42:\r\nroot:other\n");
        let entry = match read_shadow_entry(shadow.path(), "root") {
            Ok(entry) => entry,
            Err(_) => panic!("readable shadow file"),
        };
        assert_eq!(entry, Some(ShadowEntry { hash: "$6$x$y".into(), expires: Some(42) }));
        assert!(entry.is_some_and(|e| e.expired(42) && !e.expired(41)));
        assert!(!ShadowEntry { hash: String::new(), expires: Some(0) }.expired(20_000));
        assert!(matches!(read_shadow_entry(shadow.path(), "nobody-here"), Ok(None)));
    }
}

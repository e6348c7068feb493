//! A userstore backed by a passwd-style file that the operator maintains for otpd.
//!
//! Each line is `name:crypt-hash`, optionally followed by the remaining /etc/passwd fields
//! `uid:gid:gecos:home:shell` (so an htpasswd-like file and a copy of passwd lines both work).
//! The file is checked completely when it is opened, so mistakes show up at startup with a line
//! number, and it is re-read whenever its modification time, size or inode changes, so users can
//! be added or removed without restarting otpd. It is looked at for changes at most once every
//! `RECHECK` (a millisecond): a login storm then costs one `stat` a millisecond, not one a login.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::{UserEntry, UserStore, UserStoreError, crypt, normalize_gecos};

/// How long a look at the file's stamp stays current: logins within it use the snapshot
/// without looking again. Far below the time an operator takes from saving an edit to the
/// next login, and a few times the file system's own timestamp granularity.
const RECHECK: Duration = Duration::from_millis(1);

/// At most `name:hash:uid:gid:gecos:home:shell`.
const MAX_FIELDS: usize = 7;

/// A passwd-style file: `name:crypt-hash[:more passwd fields]` (the optional further fields are
/// uid:gid:gecos:home:shell like /etc/passwd; uid and gecos are used when present).
///
/// Blank lines and lines starting with '#' are ignored. A malformed line (no ':', empty name,
/// duplicate name, bad uid, unusable hash) is a [`UserStoreError::Parse`] error with the line
/// number. The file is re-read when its modification time (or size, or inode) changes, so
/// operators can edit it without restarting; the parsed map is cached behind a `RwLock`. If an
/// edited file fails to parse, calls return that error until it is fixed (failing closed rather
/// than serving users the operator meant to change).
pub struct PasswdFile {
    path: PathBuf,
    /// `None` until the first lookup of a file opened with `open_deferred`.
    cache: RwLock<Option<Snapshot>>,
    /// When the cached snapshot was last found current, in nanoseconds since `since`.
    checked: AtomicU64,
    since: Instant,
}

/// The parsed file together with the identity of the version it was parsed from.
struct Snapshot {
    stamp: Stamp,
    users: HashMap<String, Account>,
}

/// Changes to any of these mean the file must be read again. The inode catches editors that
/// write a new file and rename it over the old one within the same timestamp tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

struct Account {
    entry: UserEntry,
    hash: String,
    line: usize,
}

impl PasswdFile {
    /// Reads and validates the file at `path`; every later call re-reads it if it has changed.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, UserStoreError> {
        let path = path.into();
        let snapshot = load(&path)?;
        Ok(Self::with_cache(path, Some(snapshot)))
    }

    /// Like `open`, but the file is read (and its errors reported) at the
    /// first lookup: for a process that serves one login and may never
    /// need this userstore.
    pub fn open_deferred(path: impl Into<PathBuf>) -> Self {
        Self::with_cache(path.into(), None)
    }

    fn with_cache(path: PathBuf, snapshot: Option<Snapshot>) -> Self {
        let since = Instant::now();
        Self { path, cache: RwLock::new(snapshot), checked: AtomicU64::new(0), since }
    }

    /// Nanoseconds since `since`, never 0 (0 means "never checked").
    fn clock(&self) -> u64 {
        (self.since.elapsed().as_nanos() as u64).max(1)
    }

    /// Runs `f` on the user's record from an up-to-date snapshot of the file.
    fn with_account<T>(
        &self,
        login: &str,
        f: impl FnOnce(Option<&Account>) -> T,
    ) -> Result<T, UserStoreError> {
        let checked = self.checked.load(Ordering::Relaxed);
        if checked != 0 && self.clock().saturating_sub(checked) < RECHECK.as_nanos() as u64 {
            let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(cache) = cache.as_ref() {
                return Ok(f(cache.users.get(login)));
            }
        }
        // Taken before the stat: a snapshot found current stays so for `RECHECK` from then.
        let now = self.clock();
        let current = stamp(&self.path)?;
        // A panic while holding the lock cannot leave the snapshot half-updated (it is replaced
        // as a whole), so a poisoned lock is safe to keep using.
        {
            let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(cache) = cache.as_ref()
                && cache.stamp == current
            {
                self.checked.store(now, Ordering::Relaxed);
                return Ok(f(cache.users.get(login)));
            }
        }
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have reloaded while this one waited for the write lock.
        let snapshot = match cache.take() {
            Some(snapshot) if snapshot.stamp == current => snapshot,
            _ => load(&self.path)?,
        };
        // The snapshot's stamp is from before its read, at or after `now`.
        self.checked.store(now, Ordering::Relaxed);
        Ok(f(cache.insert(snapshot).users.get(login)))
    }
}

impl fmt::Debug for PasswdFile {
    // Hand-written so that logging the store never prints password hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswdFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl UserStore for PasswdFile {
    fn kind(&self) -> &'static str {
        "passwdfile"
    }

    fn lookup(&self, login: &str) -> Result<Option<UserEntry>, UserStoreError> {
        self.with_account(login, |account| account.map(|a| a.entry.clone()))
    }

    fn check_password(&self, login: &str, password: &str) -> Result<bool, UserStoreError> {
        // Copy the hash out so the slow verification runs without holding the lock.
        let hash = self.with_account(login, |account| account.map(|a| a.hash.clone()))?;
        match hash {
            Some(hash) => Ok(crypt::verify(password, &hash)?),
            None => Ok(false),
        }
    }
}

fn stamp(path: &Path) -> Result<Stamp, UserStoreError> {
    let meta =
        fs::metadata(path).map_err(|source| UserStoreError::Io { path: path.to_path_buf(), source })?;
    Ok(Stamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino(), device: meta.dev() })
}

fn load(path: &Path) -> Result<Snapshot, UserStoreError> {
    // Stat before reading: if the file changes in between, the stored stamp is the older one
    // and the next call reads the file again.
    let stamp = stamp(path)?;
    let bytes = fs::read(path).map_err(|source| UserStoreError::Io { path: path.to_path_buf(), source })?;
    let users = parse(path, &bytes)?;
    Ok(Snapshot { stamp, users })
}

fn parse(path: &Path, bytes: &[u8]) -> Result<HashMap<String, Account>, UserStoreError> {
    let mut users = HashMap::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let error = |message: String| UserStoreError::Parse { path: path.to_path_buf(), line, message };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| error("line is not valid UTF-8".into()))?;
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let account = parse_line(text, line).map_err(error)?;
        match users.entry(account.entry.login.clone()) {
            Entry::Occupied(first) => {
                let first: &Account = first.get();
                return Err(error(format!(
                    "duplicate user '{}' (first defined on line {})",
                    account.entry.login, first.line
                )));
            }
            Entry::Vacant(slot) => {
                slot.insert(account);
            }
        }
    }
    Ok(users)
}

/// Parses one non-blank, non-comment line; the error is the message for the Parse error.
fn parse_line(text: &str, line: usize) -> Result<Account, String> {
    let fields: Vec<&str> = text.split(':').collect();
    let [name, hash, rest @ ..] = fields.as_slice() else {
        return Err("expected 'name:password-hash', found no ':'".into());
    };
    if fields.len() > MAX_FIELDS {
        return Err(format!(
            "too many ':'-separated fields ({}, at most {MAX_FIELDS}: name:hash:uid:gid:gecos:home:shell)",
            fields.len()
        ));
    }
    if name.is_empty() {
        return Err("empty user name".into());
    }
    if name.trim() != *name || name.chars().any(char::is_control) {
        return Err(format!(
            "user name '{}' contains whitespace at either end or control characters",
            name.escape_debug()
        ));
    }
    crypt::check(hash).map_err(|e| format!("password hash of user '{name}': {e}"))?;
    let uid = match rest.first() {
        Some(uid) if !uid.is_empty() => Some(
            uid.parse::<u32>()
                .map_err(|_| format!("uid '{}' of user '{name}' is not a number", uid.escape_debug()))?,
        ),
        _ => None,
    };
    let gecos = rest.get(2).and_then(|g| normalize_gecos(g));
    Ok(Account {
        entry: UserEntry { login: (*name).to_string(), uid, gecos },
        hash: (*hash).to_string(),
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    // mkpasswd -m sha-256 secret / mkpasswd -m bcrypt secret (cheap schemes keep tests fast).
    const SECRET_SHA256: &str = "$5$FNJsjsPouhMgKhPt$2ilo8JZqcPWepJYgpOZYXBJLw9TZB2mcKBmVxnUVcn7";
    const SECRET_BCRYPT: &str = "$2b$05$JjAwGvqf3Pwsk7QEQv4giOEuT2IIiZ86c.zvqTpj6yeedgQ8NgiNO";

    fn file_with(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("create temp file");
        file.write_all(contents.as_bytes()).expect("write temp file");
        file
    }

    fn parse_error(contents: &str) -> (usize, String) {
        let file = file_with(contents);
        match PasswdFile::open(file.path()) {
            Err(UserStoreError::Parse { line, message, path }) => {
                assert_eq!(path, file.path());
                (line, message)
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn deferred_open_reads_the_file_at_the_first_lookup() {
        let file = file_with("alice:*\nno colon\n");
        // Nothing is read yet: the broken line is not an error.
        let store = PasswdFile::open_deferred(file.path());
        match store.lookup("alice") {
            Err(UserStoreError::Parse { line: 2, .. }) => {}
            other => panic!("expected the parse error of line 2, got {other:?}"),
        }
        std::fs::write(file.path(), "alice:*\n").unwrap();
        assert!(store.lookup("alice").unwrap().is_some());
        assert!(store.lookup("bob").unwrap().is_none());
        // A missing file is an error at the first lookup too.
        let missing = PasswdFile::open_deferred("/nonexistent/users");
        assert!(matches!(missing.lookup("alice"), Err(UserStoreError::Io { .. })));
    }

    #[test]
    fn lookup_and_check_password() {
        let contents = format!(
            "# otpd users\n\n   \nalice:{SECRET_SHA256}\n  # indented comment\r\nbob:{SECRET_BCRYPT}:1001:1001:Bob Builder,,,:/home/bob:/bin/sh\r\ncarol:!{SECRET_SHA256}:1002\n"
        );
        let file = file_with(&contents);
        let store = PasswdFile::open(file.path()).expect("valid file");
        assert_eq!(store.kind(), "passwdfile");

        assert_eq!(
            store.lookup("alice").expect("lookup"),
            Some(UserEntry { login: "alice".into(), uid: None, gecos: None })
        );
        assert_eq!(
            store.lookup("bob").expect("lookup"),
            Some(UserEntry { login: "bob".into(), uid: Some(1001), gecos: Some("Bob Builder".into()) })
        );
        assert_eq!(store.lookup("mallory").expect("lookup"), None);
        assert_eq!(store.lookup("Alice").expect("lookup"), None);
        assert_eq!(store.lookup("").expect("lookup"), None);

        assert!(store.check_password("alice", "secret").expect("check"));
        assert!(!store.check_password("alice", "wrong").expect("check"));
        assert!(store.check_password("bob", "secret").expect("check"));
        assert!(!store.check_password("bob", "Secret").expect("check"));
        // Locked with '!': exists, but never authenticates.
        assert!(store.lookup("carol").expect("lookup").is_some());
        assert!(!store.check_password("carol", "secret").expect("check"));
        assert!(!store.check_password("mallory", "secret").expect("check"));

        let debug = format!("{store:?}");
        assert!(!debug.contains("$5$"), "Debug must not print hashes: {debug}");
    }

    #[test]
    fn malformed_lines_are_reported_with_their_line_number() {
        let (line, message) = parse_error(&format!("# users\nalice:{SECRET_SHA256}\nbob\n"));
        assert_eq!(line, 3);
        assert!(message.contains("no ':'"), "{message}");

        let (line, message) = parse_error(&format!("\n:{SECRET_SHA256}\n"));
        assert_eq!(line, 2);
        assert!(message.contains("empty user name"), "{message}");

        let (line, message) = parse_error(&format!("alice:{SECRET_SHA256}:12x\n"));
        assert_eq!(line, 1);
        assert!(message.contains("uid '12x'"), "{message}");

        let (line, message) = parse_error("alice:$1$QZlhqW23$5Jy7lS5LbJkEju13twJCE.\n");
        assert_eq!(line, 1);
        assert!(message.contains("unsupported password hash scheme '$1$'"), "{message}");

        let (line, message) = parse_error(&format!("alice:{SECRET_SHA256}:1:1:A:/:/bin/sh:extra\n"));
        assert_eq!(line, 1);
        assert!(message.contains("too many"), "{message}");

        let (line, _) = parse_error(&format!(" alice:{SECRET_SHA256}\n"));
        assert_eq!(line, 1);

        let file = file_with("ok:*\n");
        std::fs::write(file.path(), b"ok:*\n\xff\xfe:*\n").expect("write");
        match PasswdFile::open(file.path()) {
            Err(UserStoreError::Parse { line: 2, .. }) => {}
            other => panic!("expected a parse error on line 2, got {other:?}"),
        }
    }

    #[test]
    fn duplicate_names_are_reported() {
        let (line, message) = parse_error(&format!("alice:{SECRET_SHA256}\nbob:*\nalice:{SECRET_BCRYPT}\n"));
        assert_eq!(line, 3);
        assert!(message.contains("duplicate user 'alice'"), "{message}");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn error_display_names_file_and_line() {
        let file = file_with("alice:*\n\nbroken\n");
        let err = PasswdFile::open(file.path()).expect_err("line 3 is broken");
        let text = err.to_string();
        assert!(text.starts_with(&format!("{} line 3: ", file.path().display())), "{text}");
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("users");
        match PasswdFile::open(&path) {
            Err(err @ UserStoreError::Io { .. }) => {
                let text = err.to_string();
                assert!(text.starts_with(&format!("cannot read user file {}: ", path.display())), "{text}");
            }
            other => panic!("expected an Io error, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_has_no_users() {
        let file = file_with("");
        let store = PasswdFile::open(file.path()).expect("empty file is valid");
        assert_eq!(store.lookup("alice").expect("lookup"), None);
    }

    #[test]
    fn file_is_reread_after_it_changes() {
        let file = file_with(&format!("alice:{SECRET_SHA256}\n"));
        let store = PasswdFile::open(file.path()).expect("valid file");
        assert!(store.lookup("dave").expect("lookup").is_none());

        let bump = |file: &tempfile::NamedTempFile, contents: &str, seconds: u64| {
            std::fs::write(file.path(), contents).expect("rewrite");
            let later = SystemTime::now() + Duration::from_secs(seconds);
            let handle = std::fs::File::options().write(true).open(file.path()).expect("reopen");
            handle.set_modified(later).expect("set mtime");
            // A login looks at the file again once the last look is `RECHECK` old.
            std::thread::sleep(RECHECK * 2);
        };

        bump(&file, &format!("alice:{SECRET_SHA256}\ndave:{SECRET_BCRYPT}:1004\n"), 10);
        assert_eq!(store.lookup("dave").expect("lookup").and_then(|u| u.uid), Some(1004));
        assert!(store.check_password("dave", "secret").expect("check"));

        // A broken edit fails closed with the parse error instead of serving stale users ...
        bump(&file, "dave\n", 20);
        assert!(matches!(store.lookup("alice"), Err(UserStoreError::Parse { line: 1, .. })));
        assert!(store.check_password("alice", "secret").is_err());

        // ... and the fix is picked up on the next call; removed users are gone.
        bump(&file, &format!("dave:{SECRET_BCRYPT}\n"), 30);
        assert!(store.lookup("alice").expect("lookup").is_none());
        assert!(!store.check_password("alice", "secret").expect("check"));
        assert!(store.check_password("dave", "secret").expect("check"));

        // Deleting the file is an Io error, not an empty store.
        let path = file.path().to_path_buf();
        drop(file);
        std::thread::sleep(RECHECK * 2);
        assert!(matches!(
            store.lookup("dave"),
            Err(UserStoreError::Io { path: p, .. }) if p == path
        ));
    }

    #[test]
    fn concurrent_readers() {
        let file = file_with(&format!("alice:{SECRET_SHA256}\n"));
        let store = std::sync::Arc::new(PasswdFile::open(file.path()).expect("valid file"));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = std::sync::Arc::clone(&store);
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        assert!(store.lookup("alice").expect("lookup").is_some());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("reader thread");
        }
    }
}

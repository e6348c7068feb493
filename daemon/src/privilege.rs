//! Least privilege for `otpd serve`: started as root (to bind port 1812),
//! it switches to the configured `user` and `group` once its sockets are
//! bound, before it answers anything.
//!
//! The store and the key file were opened (and, on a first start, created)
//! as root, so first every one of them that is root's and that the
//! service user could not use is handed to that user: the database, its
//! `-wal` and `-shm` files and the key file. Files the operator gave the
//! user otherwise (a key file `root:otpd` 0640, say) are left alone. Then
//! the supplementary groups become those of the user (`initgroups`, so
//! that membership in `shadow` works for the `unix` resolver), then the
//! group, then the user, all of real, effective and saved IDs; then otpd
//! checks that it can no longer become root, and that the user can do what
//! otpd will ask of it: write the database and create SQLite's `-wal` and
//! `-shm` files in its directory, read the key file. Anything missing
//! stops the start with a sentence naming the path and the fix.
//!
//! A process that is not root runs the same access checks as itself (under
//! systemd's `User=`, say); `user` may then name the account it already
//! runs as, and any other account is refused: it cannot switch.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{self, AccessFlags, Gid, Group, Uid, User};
use otpd_core::Config;
use otpd_core::config::ResolverKind;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "user = \"{0}\": there is no such user on this machine; create it \
         (useradd --system --home-dir /var/lib/otpd --shell /usr/sbin/nologin {0}) or change `user`"
    )]
    NoUser(String),
    #[error(
        "group = \"{0}\": there is no such group on this machine; create it (groupadd --system {0}) or change `group`"
    )]
    NoGroup(String),
    #[error("cannot look up {what} \"{name}\": {source}")]
    Lookup { what: &'static str, name: String, source: nix::Error },
    #[error(
        "user = \"{user}\" is set, but otpd serve runs as uid {uid} (gid {gid}), not as root, and cannot \
         switch to user {user} and group {group}; start it as root, or as that user, or remove `user`"
    )]
    NotRoot { user: String, group: String, uid: u32, gid: u32 },
    #[error(
        "{key} = \"{name}\" names root (id 0): that drops no privilege; name an unprivileged account such as otpd"
    )]
    TargetIsRoot { key: &'static str, name: String },
    #[error("cannot hand {path} to user {user}: {message}")]
    HandOver { path: PathBuf, user: String, message: String },
    #[error("cannot switch to user {user} and group {group}: {step} failed: {source}")]
    Switch { user: String, group: String, step: &'static str, source: nix::Error },
    #[error("privileges were not dropped: running as user {user}, {what} still succeeded; refusing to run")]
    Regained { user: String, what: String },
    #[error("{path} must be {need} by user {user}, which otpd serve runs as{hint}")]
    Access { path: PathBuf, need: &'static str, user: String, hint: String },
}

/// The account `otpd serve` runs as.
struct Account {
    user: String,
    group: String,
    uid: Uid,
    gid: Gid,
    /// `gid` and the user's supplementary groups.
    groups: Vec<Gid>,
}

/// Switches to `config.user` and `config.group` (see the module comment);
/// called once the sockets are bound.
pub fn become_service_user(config: &Config) -> Result<(), PrivilegeError> {
    let euid = Uid::effective();
    let Some(user) = &config.user else {
        if euid.is_root() {
            warn!(
                "running as root: set `user` and `group` in the configuration (or run under systemd's User=) \
                 so that otpd serve runs unprivileged once its sockets are bound"
            );
        } else {
            check_access(config, &current_account())?;
        }
        return Ok(());
    };
    let account = lookup(user, config.group.as_deref())?;
    if !euid.is_root() {
        if euid == account.uid && Gid::effective() == account.gid {
            check_access(config, &account)?;
            info!("running as user {} and group {} (started as them)", account.user, account.group);
            return Ok(());
        }
        return Err(PrivilegeError::NotRoot {
            user: account.user,
            group: account.group,
            uid: euid.as_raw(),
            gid: Gid::effective().as_raw(),
        });
    }
    // Nothing is handed over for a start that cannot succeed.
    let dir = store_dir(config);
    if let Ok(meta) = std::fs::metadata(&dir)
        && !permits(meta.mode(), meta.uid(), meta.gid(), &account, 0o3)
    {
        let detail =
            format!("it is {:04o} and owned by uid {} gid {}", meta.mode() & 0o7777, meta.uid(), meta.gid());
        return Err(dir_denied(config, &account, &detail));
    }
    hand_over(config, &account)?;
    switch(&account)?;
    verify_dropped(&account)?;
    check_access(config, &account)?;
    info!(
        "running as user {} (uid {}) and group {} (gid {})",
        account.user, account.uid, account.group, account.gid
    );
    Ok(())
}

fn lookup_err<'a>(what: &'static str, name: &'a str) -> impl FnOnce(nix::Error) -> PrivilegeError + 'a {
    move |source| PrivilegeError::Lookup { what, name: name.to_owned(), source }
}

fn lookup(user: &str, group: Option<&str>) -> Result<Account, PrivilegeError> {
    let found = User::from_name(user)
        .map_err(lookup_err("user", user))?
        .ok_or_else(|| PrivilegeError::NoUser(user.into()))?;
    if found.uid.is_root() {
        return Err(PrivilegeError::TargetIsRoot { key: "user", name: user.into() });
    }
    let (gid, group) = match group {
        Some(name) => {
            let g = Group::from_name(name)
                .map_err(lookup_err("group", name))?
                .ok_or_else(|| PrivilegeError::NoGroup(name.into()))?;
            (g.gid, name.to_owned())
        }
        None => {
            let name =
                Group::from_gid(found.gid).ok().flatten().map_or_else(|| found.gid.to_string(), |g| g.name);
            (found.gid, name)
        }
    };
    if gid.as_raw() == 0 {
        return Err(PrivilegeError::TargetIsRoot { key: "group", name: group });
    }
    let name = CString::new(user).map_err(|_| PrivilegeError::NoUser(user.into()))?;
    let mut groups = unistd::getgrouplist(&name, gid).map_err(lookup_err("the groups of user", user))?;
    if !groups.contains(&gid) {
        groups.push(gid);
    }
    Ok(Account { user: user.to_owned(), group, uid: found.uid, gid, groups })
}

/// The account this process runs as (for the access checks of a process
/// started unprivileged).
fn current_account() -> Account {
    let (uid, gid) = (Uid::effective(), Gid::effective());
    let user = User::from_uid(uid).ok().flatten().map_or_else(|| format!("uid {uid}"), |u| u.name);
    let group = Group::from_gid(gid).ok().flatten().map_or_else(|| format!("gid {gid}"), |g| g.name);
    let mut groups = unistd::getgroups().unwrap_or_default();
    groups.push(gid);
    Account { user, group, uid, gid, groups }
}

/// The files of the store and the key, with what the user must be able
/// to do with each: read and write (6) or read (4).
fn store_files(config: &Config) -> Vec<(PathBuf, u32)> {
    let db = &config.database;
    let mut files = vec![(db.clone(), 0o6)];
    for suffix in ["-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        files.push((PathBuf::from(name), 0o6));
    }
    files.push((config.key_file.clone(), 0o4));
    files
}

/// Gives root's store files that `account` could not use to it. Opened
/// without following a symbolic link, and only a regular file with one
/// link: the directory is the service user's, and root must not be
/// tricked into handing it another file.
fn hand_over(config: &Config, account: &Account) -> Result<(), PrivilegeError> {
    for (path, want) in store_files(config) {
        let refuse = |message: String| PrivilegeError::HandOver {
            path: path.clone(),
            user: account.user.clone(),
            message,
        };
        let file = match OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(refuse(format!("{e} (a symbolic link is refused)"))),
        };
        let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
        if meta.uid() != 0 || permits(meta.mode(), meta.uid(), meta.gid(), account, want) {
            continue;
        }
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(refuse("it is not a regular file with a single link".into()));
        }
        unistd::fchown(&file, Some(account.uid), Some(account.gid)).map_err(|e| refuse(e.to_string()))?;
        info!("{} now belongs to user {} and group {}", path.display(), account.user, account.group);
    }
    Ok(())
}

/// Whether the permission bits of a file owned by `uid`:`gid` with `mode`
/// grant `want` (rwx bits, e.g. 0o6) to `account`.
fn permits(mode: u32, uid: u32, gid: u32, account: &Account, want: u32) -> bool {
    let bits = if uid == account.uid.as_raw() {
        mode >> 6
    } else if account.groups.iter().any(|g| g.as_raw() == gid) {
        mode >> 3
    } else {
        mode
    };
    bits & want == want
}

fn switch(account: &Account) -> Result<(), PrivilegeError> {
    let failed = |step| {
        move |source| PrivilegeError::Switch {
            user: account.user.clone(),
            group: account.group.clone(),
            step,
            source,
        }
    };
    let name = CString::new(account.user.as_str()).expect("checked by lookup");
    // Process-wide: glibc and musl apply each to every thread.
    unistd::initgroups(&name, account.gid).map_err(failed("initgroups"))?;
    unistd::setgid(account.gid).map_err(failed("setgid"))?;
    unistd::setuid(account.uid).map_err(failed("setuid"))?;
    Ok(())
}

/// Checks that the switch took and cannot be undone.
fn verify_dropped(account: &Account) -> Result<(), PrivilegeError> {
    let regained = |what: &str| PrivilegeError::Regained { user: account.user.clone(), what: what.into() };
    let root = Uid::from_raw(0);
    if unistd::setuid(root).is_ok() {
        return Err(regained("setuid(0)"));
    }
    if unistd::seteuid(root).is_ok() {
        return Err(regained("seteuid(0)"));
    }
    if unistd::setgid(Gid::from_raw(0)).is_ok() {
        return Err(regained("setgid(0)"));
    }
    if unistd::setgroups(&[Gid::from_raw(0)]).is_ok() {
        return Err(regained("setgroups([0])"));
    }
    let ids = (Uid::current(), Uid::effective(), Gid::current(), Gid::effective());
    if ids != (account.uid, account.uid, account.gid, account.gid) {
        return Err(regained(&format!("the process has uid {}/{} gid {}/{}", ids.0, ids.1, ids.2, ids.3)));
    }
    if unistd::getgroups().unwrap_or_default().iter().any(|g| g.as_raw() == 0) {
        return Err(regained("membership in group root"));
    }
    Ok(())
}

/// The directory of the database, where SQLite creates its `-wal` and
/// `-shm` files.
fn store_dir(config: &Config) -> PathBuf {
    match config.database.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn dir_denied(config: &Config, account: &Account, detail: &str) -> PrivilegeError {
    let db = &config.database;
    let dir = store_dir(config);
    PrivilegeError::Access {
        hint: format!(
            " ({detail}): SQLite creates {name}-wal and {name}-shm beside the database {db}; \
             give the directory to the user (`chown {user} {dir}`) or move the database",
            name = db.file_name().unwrap_or(db.as_os_str()).to_string_lossy(),
            db = db.display(),
            user = account.user,
            dir = dir.display(),
        ),
        path: dir,
        need: "writable",
        user: account.user.clone(),
    }
}

/// What the service user must be able to do, checked with access(2) as
/// that user: the store and its directory, the key file. What only a
/// reload or a resolver needs is warned about.
fn check_access(config: &Config, account: &Account) -> Result<(), PrivilegeError> {
    let denied = |path: &Path, need, hint: String| PrivilegeError::Access {
        path: path.to_owned(),
        need,
        user: account.user.clone(),
        hint,
    };
    for (path, want) in store_files(config) {
        if !path.exists() {
            continue;
        }
        let (flags, need) = if want == 0o6 {
            (AccessFlags::R_OK | AccessFlags::W_OK, "readable and writable")
        } else {
            (AccessFlags::R_OK, "readable")
        };
        if let Err(e) = unistd::access(&path, flags) {
            return Err(denied(
                &path,
                need,
                format!(
                    " ({e}); give it to the user (`chown {} {}`) and let the user reach its directory",
                    account.user,
                    path.display()
                ),
            ));
        }
    }
    if let Err(e) = unistd::access(&store_dir(config), AccessFlags::W_OK | AccessFlags::X_OK) {
        return Err(dir_denied(config, account, &e.to_string()));
    }
    let mut readable: Vec<(PathBuf, String)> = Vec::new();
    if let Some(source) = &config.source {
        readable.push((source.clone(), "a reload (SIGHUP) cannot read the configuration".into()));
    }
    for r in &config.resolvers {
        match &r.kind {
            ResolverKind::PasswdFile { path } => {
                readable.push((path.clone(), format!("resolver {} cannot read its users", r.name)));
            }
            ResolverKind::Unix { shadow } => readable.push((
                shadow.clone().unwrap_or_else(|| PathBuf::from("/etc/shadow")),
                format!(
                    "resolver {} cannot check passwords (otppin = userstore); add the user to the file's \
                     group (shadow on Debian)",
                    r.name
                ),
            )),
        }
    }
    for (path, consequence) in readable {
        if unistd::access(&path, AccessFlags::R_OK).is_err() {
            warn!("user {} cannot read {}: {consequence}", account.user, path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(uid: u32, groups: &[u32]) -> Account {
        Account {
            user: "otpd".into(),
            group: "otpd".into(),
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(groups[0]),
            groups: groups.iter().map(|g| Gid::from_raw(*g)).collect(),
        }
    }

    #[test]
    fn permission_bits_of_owner_group_and_others() {
        let otpd = account(999, &[999, 42]);
        // root:root 0600, as otpd creates its files as root: nothing for otpd.
        assert!(!permits(0o600, 0, 0, &otpd, 0o4));
        // otpd's own 0600 file.
        assert!(permits(0o600, 999, 999, &otpd, 0o6));
        // root:otpd 0640 key: readable through the group, not writable.
        assert!(permits(0o640, 0, 999, &otpd, 0o4));
        assert!(!permits(0o640, 0, 999, &otpd, 0o6));
        // A supplementary group counts too.
        assert!(permits(0o660, 0, 42, &otpd, 0o6));
        // The owner's bits decide for the owner, even when others have more.
        assert!(!permits(0o066, 999, 999, &otpd, 0o4));
        assert!(permits(0o604, 0, 0, &otpd, 0o4));
    }

    #[test]
    fn store_files_are_the_database_its_wal_and_shm_and_the_key() {
        let mut config = Config::builtin();
        config.database = PathBuf::from("/var/lib/otpd/otpd.db");
        config.key_file = PathBuf::from("/etc/otpd/otpd.key");
        let files: Vec<(String, u32)> =
            store_files(&config).into_iter().map(|(p, w)| (p.display().to_string(), w)).collect();
        assert_eq!(
            files,
            [
                ("/var/lib/otpd/otpd.db".to_owned(), 0o6),
                ("/var/lib/otpd/otpd.db-wal".to_owned(), 0o6),
                ("/var/lib/otpd/otpd.db-shm".to_owned(), 0o6),
                ("/etc/otpd/otpd.key".to_owned(), 0o4),
            ]
        );
    }

    #[test]
    fn unknown_accounts_are_named() {
        let e = lookup("no-such-user-otpd-test", None).err().unwrap().to_string();
        assert!(e.starts_with("user = \"no-such-user-otpd-test\": there is no such user"), "{e}");
        let e = lookup("root", None).err().unwrap().to_string();
        assert!(e.contains("names root"), "{e}");
        if User::from_name("nobody").ok().flatten().is_some() {
            let e = lookup("nobody", Some("no-such-group-otpd-test")).err().unwrap().to_string();
            assert!(e.starts_with("group = \"no-such-group-otpd-test\": there is no such group"), "{e}");
        }
    }
}

//! The SQLite token store (the embedded default): one database file in WAL
//! mode, shared by the daemon, PAM processes and the CLI at once. Write
//! transactions start with `BEGIN IMMEDIATE` and commits are fsync'd
//! (`synchronous = FULL`, or our own sync of the WAL: see `walsync`), so an
//! acknowledged counter survives a power loss.
//! Reading connections are pooled so that several threads of one process
//! can read in parallel.
//!
//! Group commit: the write transactions of one process share one writer
//! connection. Each runs as a savepoint inside a group transaction; the
//! group commits (one fsync) when no other writer of this process is
//! waiting, or when it is big or old enough, and every member's `commit`
//! returns only after that shared commit, with its result. A member that
//! fails rolls back to its savepoint without touching the others.
//!
//! A member may also commit without waiting (`commit_then`, the RADIUS
//! front's way): its thread goes on to the next login instead of sleeping
//! through the fsync, and its callback runs once the group is durable.
//! Such a group commits when it is full or old, when a waiting member
//! commits it, or at `flush`. The first such commit starts a thread of the
//! store's own (`walsync`): from then on the writer commits without a sync
//! and moves on, and that thread syncs the WAL and runs the callbacks. A
//! group of `GROUP_EARLY_MEMBERS` also commits as soon as that thread has
//! nothing to do: otherwise, under load, every login in flight would end
//! up in one group, and the thread answering them would wait for its sync
//! instead of filling the next group meanwhile.
//!
//! A login's read of its user's tokens is answered from `token_cache`
//! while no other connection has committed since the cache was filled.
//!
//! A process that defers commits also checkpoints the WAL on a thread of
//! its own (`checkpoint`), not in the writer's commits.

mod checkpoint;
mod migrations;
mod token_cache;
mod walsync;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rusqlite::config::DbConfig;
use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, params, params_from_iter};

use self::checkpoint::Checkpoints;
use self::token_cache::{Counters, TokenCache};
use self::walsync::WalSync;
use super::{
    AuditRecord, Challenge, CommitDone, StoreError, StoreRead, StoreWrite, TokenFilter, TokenStore, call_back,
};
use crate::otp::HashAlgorithm;
use crate::token::{Consume, Owner, StoredPin, Token, TokenType};

/// Configuration of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub path: PathBuf,
    /// How long a writer waits for another process's write lock.
    pub busy_timeout: Duration,
    /// Whether a commit is fsync'd (`synchronous = FULL`) or only written
    /// to the WAL (`NORMAL`: survives a crash of otpd, not of the machine).
    pub sync: bool,
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig { path: path.into(), busy_timeout: Duration::from_secs(5), sync: true }
    }
}

/// Reading connections, at most: a thread that finds none idle waits for
/// one (reads are short) rather than opening another, so that their page
/// caches bound the memory however many threads read. A connection dropped
/// and opened again costs a schema parse and its prepared statements, far
/// more than a login, so idle ones are kept.
const POOL_MAX: usize = 16;
/// How long a reader waits for an idle connection before it opens one
/// beyond `POOL_MAX` (so that a thread holding one while asking for a
/// second can never wait forever).
const POOL_WAIT: Duration = Duration::from_millis(20);

/// Page cache per reading connection and of the writer, KiB (pages not
/// cached are read from the operating system's cache).
const READER_CACHE_KIB: i64 = 512;
const WRITER_CACHE_KIB: i64 = 8192;
/// The checkpoint thread's connection reads the WAL and the database
/// directly, past the page cache.
const CHECKPOINT_CACHE_KIB: i64 = 64;

/// A group stays open for more members at most this long...
const GROUP_MAX_AGE: Duration = Duration::from_millis(4);
/// ...and takes at most this many.
const GROUP_MAX_MEMBERS: usize = 128;
/// A deferred group this big commits as soon as `walsync` is idle, so that
/// two groups are in flight: one syncing, the next filling. Smaller groups
/// would each cost a commit and a sync of their own; larger ones leave the
/// sync thread idle longer. 16 did best of 8 to 48 on this project's load
/// generator with 32, 64 and 128 requests outstanding (BENCHMARKS.md).
const GROUP_EARLY_MEMBERS: usize = 16;

#[derive(Debug)]
pub struct SqliteStore {
    config: SqliteConfig,
    display: String,
    pool: Mutex<Pool>,
    /// Signalled when a reading connection is handed back.
    returned: Condvar,
    /// The writer connection and its group transaction. Held for the whole
    /// of one member's work, so this process's writers queue here instead
    /// of in SQLite's busy handler (which polls with sleeps of up to
    /// 100 ms). Other processes still meet the busy timeout.
    group: Mutex<Group>,
    /// Signalled when a group has committed or failed.
    settled: Condvar,
    /// Writers waiting for `group`: while there are some, a finished
    /// member leaves the commit to them, so that they join its group.
    queued: AtomicUsize,
    /// Syncs committed groups, once this process defers commits (with
    /// `sync`); before, commits are `synchronous = FULL`.
    walsync: OnceLock<WalSync>,
    /// Checkpoints the WAL off the writer, once this process defers
    /// commits; `None` when its connection or thread could not start (see
    /// `start_checkpoints`).
    checkpoints: OnceLock<Option<Checkpoints>>,
}

/// The reading connections.
#[derive(Debug, Default)]
struct Pool {
    idle: Vec<Connection>,
    /// Connections handed out or idle.
    open: usize,
    /// Threads waiting for a connection to be handed back: a notify is a
    /// system call even with nobody waiting, and a login hands one back.
    waiting: usize,
}

/// The group transaction of the writer connection.
#[derive(Debug, Default)]
struct Group {
    conn: Option<Connection>,
    /// When the open group began; `None` when no transaction is open.
    opened: Option<Instant>,
    /// The number of the open group (or of the next one).
    epoch: u64,
    /// Members that committed their savepoint into the open group.
    members: usize,
    /// Groups before this number have committed or failed.
    settled: u64,
    /// Recent groups that failed, with the reason.
    failed: Vec<(u64, String)>,
    /// Members that did not wait (`commit_then`), with their group's number.
    deferred: Deferred,
    /// Members waiting on `settled` (the only ones a notify wakes).
    waiting: usize,
    /// Tokens as the writer connection last saw them (see `token_cache`).
    cache: TokenCache,
}

#[derive(Default)]
struct Deferred(Vec<(u64, CommitDone)>);

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} deferred members", self.0.len())
    }
}

/// Columns of `tokens` in the order `token_from_row` reads them.
const TOKEN_COLUMNS: &str = "t.id, t.serial, t.type, t.secret, t.otplen, t.hashlib, t.timestep, \
     t.time_window, t.time_shift, t.count, t.count_window, t.sync_window, t.maxfail, t.failcount, \
     t.failcounter_exceeded, t.active, t.revoked, t.description, t.pin_kind, t.pin, t.owner_login, \
     t.owner_realm, t.owner_resolver, t.validity_start, t.validity_end, t.count_auth, \
     t.count_auth_success, t.created, t.assigned, \
     (SELECT group_concat(realm, ',') FROM token_realms r WHERE r.token_id = t.id)";

impl SqliteStore {
    /// Opens (creating, mode 0600) the database and brings its schema up to
    /// date. A database of a newer schema is refused untouched.
    pub fn open(config: SqliteConfig) -> Result<Self, StoreError> {
        let display = config.path.display().to_string();
        let open_err = |message: String| StoreError::Open { path: display.clone(), message };
        if let Some(parent) = config.path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.is_dir()
        {
            return Err(open_err(format!("directory {} does not exist", parent.display())));
        }
        // Create the file ourselves so that it (and SQLite's -wal and -shm
        // files, which copy its mode) is 0600 from the first byte.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&config.path)
            .map_err(|e| open_err(e.to_string()))?;
        let conn = Self::connect(&config, &display, READER_CACHE_KIB)?;
        let found: i64 =
            conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| map_err(&display, e))?;
        if found > migrations::latest() {
            return Err(StoreError::SchemaTooNew { path: display, found, supported: migrations::latest() });
        }
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| map_err(&display, e))?;
        if found < migrations::latest() {
            migrate(&conn, &display)?;
        }
        Ok(SqliteStore {
            config,
            display,
            pool: Mutex::new(Pool { idle: vec![conn], open: 1, waiting: 0 }),
            returned: Condvar::new(),
            group: Mutex::new(Group::default()),
            settled: Condvar::new(),
            queued: AtomicUsize::new(0),
            walsync: OnceLock::new(),
            checkpoints: OnceLock::new(),
        })
    }

    /// A connection whose page cache holds at most `cache_kib` KiB.
    fn connect(config: &SqliteConfig, display: &str, cache_kib: i64) -> Result<Connection, StoreError> {
        let conn = Connection::open(&config.path)
            .map_err(|e| StoreError::Open { path: display.to_owned(), message: e.to_string() })?;
        conn.busy_timeout(config.busy_timeout).map_err(|e| map_err(display, e))?;
        let sync = if config.sync { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", sync).map_err(|e| map_err(display, e))?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| map_err(display, e))?;
        conn.pragma_update(None, "cache_size", -cache_kib).map_err(|e| map_err(display, e))?;
        // The last connection to close would checkpoint and delete the WAL
        // (four more fsyncs), and the next process would recreate it (two
        // more): a PAM login or CLI call is one short-lived process each.
        // The WAL stays; commits checkpoint it as it grows.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(|e| map_err(display, e))?;
        Ok(conn)
    }

    fn take(&self) -> Result<Pooled<'_>, StoreError> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let mut waited = false;
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(Pooled { store: self, conn: Some(conn) });
            }
            if pool.open < POOL_MAX || waited {
                break;
            }
            pool.waiting += 1;
            let (guard, timeout) =
                self.returned.wait_timeout(pool, POOL_WAIT).unwrap_or_else(|p| p.into_inner());
            pool = guard;
            pool.waiting -= 1;
            waited = timeout.timed_out();
        }
        pool.open += 1;
        drop(pool);
        match Self::connect(&self.config, &self.display, READER_CACHE_KIB) {
            Ok(conn) => Ok(Pooled { store: self, conn: Some(conn) }),
            Err(e) => {
                self.pool.lock().unwrap_or_else(|p| p.into_inner()).open -= 1;
                Err(e)
            }
        }
    }

    fn begin_read(&self) -> Result<SqliteTx<'_>, StoreError> {
        let pooled = self.take()?;
        run(pooled.conn(), "BEGIN DEFERRED").map_err(|e| self.err(e))?;
        Ok(SqliteTx { store: self, conn: TxConn::Read(pooled), open: true })
    }

    /// Joins the open group (opening one when there is none) with a
    /// savepoint of its own.
    fn begin_write(&self) -> Result<SqliteTx<'_>, StoreError> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut group = self.group.lock().unwrap_or_else(|p| p.into_inner());
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if group.conn.is_none() {
            group.cache.clear();
            group.conn = Some(self.writer_connection()?);
        }
        if group.opened.is_some() && group.conn().is_autocommit() {
            // SQLite rolled the group back under its members (it does on
            // some I/O errors): they failed. A savepoint now would start a
            // transaction of its own.
            let e = StoreError::Backend {
                path: self.display.clone(),
                message: "the transaction was rolled back".into(),
            };
            self.fail_group(&mut group, &e);
        }
        if group.opened.is_none() {
            if self.checkpoints().is_some_and(Checkpoints::take_catch_up) {
                // What was committed while the checkpoint thread copied the
                // rest, copied with no group open, so that this group starts
                // the WAL over (see `checkpoint`). A failure loses nothing:
                // the frames stay in the WAL for the next checkpoint.
                let _ = group.conn().query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
            run(group.conn(), "BEGIN IMMEDIATE").map_err(|e| self.err(e))?;
            group.opened = Some(Instant::now());
            // No other connection can commit until the group ends.
            group.check_cache();
        }
        if let Err(e) = run(group.conn(), "SAVEPOINT member") {
            let e = self.err(e);
            self.fail_group(&mut group, &e);
            self.run_deferred(group);
            return Err(e);
        }
        Ok(SqliteTx { store: self, conn: TxConn::Write(Some(group)), open: true })
    }

    /// A connection for the writer: an idle reading one when there is one
    /// (a PAM login or CLI call then opens the database and parses its
    /// schema once, not twice), else a new one.
    fn writer_connection(&self) -> Result<Connection, StoreError> {
        let mut conn = self.idle_or_new_writer()?;
        self.sync_mode(&conn).map_err(|e| self.err(e))?;
        self.checkpoint_mode(&mut conn).map_err(|e| self.err(e))?;
        Ok(conn)
    }

    /// The writer commits without a sync once `walsync` syncs for it.
    fn sync_mode(&self, writer: &Connection) -> rusqlite::Result<()> {
        match self.walsync.get() {
            Some(_) => writer.pragma_update(None, "synchronous", "NORMAL"),
            None => Ok(()),
        }
    }

    /// The writer leaves its checkpoints to `checkpoints` once that runs.
    fn checkpoint_mode(&self, writer: &mut Connection) -> rusqlite::Result<()> {
        match self.checkpoints() {
            Some(checkpoints) => checkpoints.take_over(writer),
            None => Ok(()),
        }
    }

    fn idle_or_new_writer(&self) -> Result<Connection, StoreError> {
        let idle = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let idle = pool.idle.pop();
            if idle.is_some() {
                pool.open -= 1;
            }
            idle
        };
        match idle {
            Some(conn) => {
                conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB).map_err(|e| self.err(e))?;
                Ok(conn)
            }
            None => Self::connect(&self.config, &self.display, WRITER_CACHE_KIB),
        }
    }

    /// After a member ended (committed into the group or rolled back):
    /// commits the group unless other writers are waiting to join it (they
    /// will commit it), then waits until the group of `member` (the epoch of
    /// a committed member) has settled and returns its result.
    fn settle(&self, mut group: MutexGuard<'_, Group>, member: Option<u64>) -> Result<(), StoreError> {
        let due = group.full() || self.queued.load(Ordering::SeqCst) == 0;
        if due {
            self.end_group(&mut group);
        }
        let Some(epoch) = member else {
            self.run_deferred(group);
            return Ok(());
        };
        while group.settled <= epoch {
            group.waiting += 1;
            group = self.settled.wait(group).unwrap_or_else(|p| p.into_inner());
            group.waiting -= 1;
        }
        let result = self.result_of(&group, epoch);
        self.run_deferred(group);
        result
    }

    /// Commits the open group (one fsync), or ends it without a sync when
    /// no member is left in it.
    fn end_group(&self, group: &mut Group) {
        if group.opened.is_none() {
            return;
        }
        if group.members == 0 {
            let _ = run(group.conn(), "ROLLBACK");
            group.opened = None;
            if !group.conn().is_autocommit() {
                group.conn = None;
            }
            return;
        }
        match run(group.conn(), "COMMIT") {
            Ok(()) => {
                group.opened = None;
                group.members = 0;
                group.epoch += 1;
                group.settled = group.epoch;
                if group.waiting > 0 {
                    self.settled.notify_all();
                }
                if !group.deferred.0.is_empty() {
                    if self.config.sync && self.walsync.get().is_none() {
                        self.start_walsync(group);
                    }
                    if self.checkpoints.get().is_none() {
                        self.start_checkpoints(group);
                    }
                }
            }
            Err(e) => {
                let e = self.err(e);
                self.fail_group(group, &e);
            }
        }
    }

    /// This process defers commits: from now on the writer commits without
    /// a sync and `walsync` syncs. Without it (the WAL cannot be opened, no
    /// thread), commits stay `synchronous = FULL`; a writer left in FULL
    /// (the pragma failed) is still durable, with a sync of SQLite's too.
    fn start_walsync(&self, group: &Group) {
        let mut wal = self.config.path.clone().into_os_string();
        wal.push("-wal");
        let Ok(walsync) = WalSync::start(Path::new(&wal), &self.display) else { return };
        let _ = self.walsync.set(walsync);
        let _ = self.sync_mode(group.conn());
    }

    /// This process defers commits: from now on the WAL is checkpointed
    /// off the writer. Tried once: without a thread or its connection, the
    /// writer goes on checkpointing as SQLite does by itself, rather than
    /// open a connection again at the end of every group.
    fn start_checkpoints(&self, group: &mut Group) {
        let started = self.checkpoints.get_or_init(|| {
            let conn = Self::connect(&self.config, &self.display, CHECKPOINT_CACHE_KIB).ok()?;
            Checkpoints::start(conn).ok()
        });
        if let (Some(checkpoints), Some(writer)) = (started, group.conn.as_mut()) {
            let _ = checkpoints.take_over(writer);
        }
    }

    /// The checkpoint thread, when it runs.
    fn checkpoints(&self) -> Option<&Checkpoints> {
        self.checkpoints.get()?.as_ref()
    }

    /// Calls back the deferred members whose group has settled, with the
    /// writer connection released (a callback sends a reply; the next
    /// group need not wait for that). Members of a committed group go to
    /// `walsync` when it runs, to be called back once their group is synced.
    fn run_deferred(&self, mut group: MutexGuard<'_, Group>) {
        let settled = group.settled;
        if !group.deferred.0.iter().any(|(epoch, _)| *epoch < settled) {
            return;
        }
        let (due, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut group.deferred.0).into_iter().partition(|(epoch, _)| *epoch < settled);
        group.deferred.0 = waiting;
        let results: Vec<_> =
            due.into_iter().map(|(epoch, done)| (epoch, done, self.result_of(&group, epoch))).collect();
        drop(group);
        let walsync = self.walsync.get();
        let mut committed = Vec::new();
        let mut now = Vec::new();
        for (epoch, done, result) in results {
            match (result, walsync) {
                (Ok(()), Some(_)) => committed.push((epoch, done)),
                (result, _) => now.push((done, result)),
            }
        }
        if let Some(walsync) = walsync {
            walsync.hand(committed);
        }
        call_back(now);
    }

    /// How the settled group `epoch` ended.
    fn result_of(&self, group: &Group, epoch: u64) -> Result<(), StoreError> {
        match group.failed.iter().find(|(e, _)| *e == epoch) {
            Some((_, message)) => {
                Err(StoreError::Backend { path: self.display.clone(), message: message.clone() })
            }
            None => Ok(()),
        }
    }

    /// Rolls the whole group back: every member of it fails with `error`.
    fn fail_group(&self, group: &mut Group, error: &StoreError) {
        if let Some(conn) = &group.conn
            && !conn.is_autocommit()
            && conn.execute_batch("ROLLBACK").is_err()
        {
            group.conn = None;
        }
        group.cache.clear();
        let epoch = group.epoch;
        group.failed.push((epoch, format!("the commit failed: {error}")));
        if group.failed.len() > 64 {
            group.failed.remove(0);
        }
        group.opened = None;
        group.members = 0;
        group.epoch += 1;
        group.settled = group.epoch;
        if group.waiting > 0 {
            self.settled.notify_all();
        }
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == ErrorCode::DatabaseBusy || f.code == ErrorCode::DatabaseLocked =>
            {
                StoreError::Busy {
                    path: self.display.clone(),
                    timeout_ms: self.config.busy_timeout.as_millis() as u64,
                }
            }
            _ => map_err(&self.display, e),
        }
    }
}

fn map_err(display: &str, e: rusqlite::Error) -> StoreError {
    StoreError::Backend { path: display.to_owned(), message: e.to_string() }
}

/// Applies the missing migrations in one write transaction; re-reads the
/// version under the lock because another process may have migrated first.
fn migrate(conn: &Connection, display: &str) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| map_err(display, e))?;
    let result = (|| {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (index, sql) in migrations::MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            conn.execute_batch(sql)?;
            conn.pragma_update(None, "user_version", index as i64 + 1)?;
        }
        conn.execute_batch("COMMIT")
    })();
    if let Err(e) = result {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(map_err(display, e));
    }
    Ok(())
}

/// Runs one statement, through the statement cache (so `BEGIN` and
/// `COMMIT` are not parsed again for every transaction).
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

impl Group {
    /// Big or old enough to commit whoever else may be coming.
    fn full(&self) -> bool {
        self.members >= GROUP_MAX_MEMBERS || self.opened.is_some_and(|t| t.elapsed() >= GROUP_MAX_AGE)
    }

    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("writer connection opened by begin_write")
    }

    /// Empties the token cache if another connection has committed since
    /// it was filled (the writer's `PRAGMA data_version` moved), or when
    /// that cannot be told: the login then reads SQLite, which reports
    /// what is wrong with the connection.
    fn check_cache(&mut self) {
        let version = self
            .conn()
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)));
        match version {
            Ok(version) => self.cache.validate(version),
            Err(_) => self.cache.clear(),
        }
    }
}

/// A pooled connection, handed back to the pool on drop.
struct Pooled<'a> {
    store: &'a SqliteStore,
    conn: Option<Connection>,
}

impl Pooled<'_> {
    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let mut pool = self.store.pool.lock().unwrap_or_else(|p| p.into_inner());
        match self.conn.take() {
            Some(conn) if pool.open <= POOL_MAX => {
                pool.idle.push(conn);
                if pool.waiting > 0 {
                    self.store.returned.notify_one();
                }
            }
            // One opened beyond the limit, or one dropped after a failure.
            _ => pool.open -= 1,
        }
    }
}

struct SqliteTx<'a> {
    store: &'a SqliteStore,
    conn: TxConn<'a>,
    /// The transaction (read) or savepoint (write) still needs ending.
    open: bool,
}

enum TxConn<'a> {
    Read(Pooled<'a>),
    /// The writer connection, held until the member ends.
    Write(Option<MutexGuard<'a, Group>>),
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        match &mut self.conn {
            TxConn::Read(pooled) => {
                // A failed rollback leaves the connection in a transaction:
                // drop it rather than hand it back to the pool.
                if run(pooled.conn(), "ROLLBACK").is_err() {
                    pooled.conn = None;
                }
            }
            TxConn::Write(group) => {
                let Some(mut group) = group.take() else { return };
                // The member's writes may have reached the cache.
                group.cache.clear();
                let undone = group.conn.as_ref().is_some_and(|c| {
                    !c.is_autocommit()
                        && run(c, "ROLLBACK TO member").is_ok()
                        && run(c, "RELEASE member").is_ok()
                });
                if !undone && group.opened.is_some() {
                    // The savepoint is gone with the whole transaction (SQLite
                    // rolls back on some I/O errors): the group failed.
                    let e = StoreError::Backend {
                        path: self.store.display.clone(),
                        message: "the transaction was rolled back".into(),
                    };
                    self.store.fail_group(&mut group, &e);
                }
                let _ = self.store.settle(group, None);
            }
        }
    }
}

impl<'a> SqliteTx<'a> {
    /// Releases the member's savepoint into the group: the writer and the
    /// group's number, for the commit to settle. On failure the member is
    /// still open, for Drop to roll back.
    fn release(&mut self) -> Result<(MutexGuard<'a, Group>, u64), StoreError> {
        let TxConn::Write(group) = &mut self.conn else {
            return Err(StoreError::Backend {
                path: self.store.display.clone(),
                message: "commit of a read transaction".into(),
            });
        };
        let mut group = group.take().expect("writer held until the member ends");
        if let Err(e) = run(group.conn(), "RELEASE member") {
            let e = self.store.err(e);
            self.conn = TxConn::Write(Some(group));
            return Err(e);
        }
        self.open = false;
        group.members += 1;
        let epoch = group.epoch;
        Ok((group, epoch))
    }

    fn conn(&self) -> &Connection {
        match &self.conn {
            TxConn::Read(pooled) => pooled.conn(),
            TxConn::Write(group) => group.as_ref().expect("writer held until the member ends").conn(),
        }
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        self.store.err(e)
    }

    fn corrupt(&self, message: String) -> StoreError {
        StoreError::Corrupt { path: self.store.display.clone(), message }
    }

    /// The token cache, when this is a member (it holds the writer).
    fn cache(&mut self) -> Option<&mut TokenCache> {
        match &mut self.conn {
            TxConn::Write(Some(group)) => Some(&mut group.cache),
            _ => None,
        }
    }

    /// A write to tokens other than a login's counter updates: the cache
    /// is emptied rather than kept in step with it (these are rare).
    fn forget_cached_tokens(&mut self) {
        if let Some(cache) = self.cache() {
            cache.clear();
        }
    }

    /// Runs one of a login's counter updates of token `id`: whether it
    /// changed the row. If it did, `apply` makes the same change to the
    /// cached token (an `UPDATE ... RETURNING` would cost SQLite a
    /// temporary table per statement, more than the read it saves).
    fn write_counters(
        &mut self,
        sql: &str,
        params: impl rusqlite::Params,
        id: i64,
        apply: impl FnOnce(&mut Counters),
    ) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(params))
            .map(|n| n == 1)
            .map_err(|e| self.err(e))?;
        if changed && let Some(cache) = self.cache() {
            cache.update(id, apply);
        }
        Ok(changed)
    }

    fn write_realms(&self, id: i64, realms: &[String]) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM token_realms WHERE token_id = ?1")
            .and_then(|mut s| s.execute([id]))
            .map_err(|e| self.err(e))?;
        let mut stmt = self
            .conn()
            .prepare_cached("INSERT OR IGNORE INTO token_realms (token_id, realm) VALUES (?1, ?2)")
            .map_err(|e| self.err(e))?;
        for realm in realms {
            stmt.execute(params![id, realm]).map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

fn ts(t: Option<Timestamp>) -> Option<i64> {
    t.map(|t| t.as_second())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A row of `TOKEN_COLUMNS`; `Err(message)` when a column holds a value
/// otpd never writes (a damaged or hand-edited database).
fn token_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Token, String>> {
    let serial: String = row.get(1)?;
    // The names are only compared: read in place, not copied out.
    let text = |i: usize| row.get_ref(i).and_then(|v| v.as_str().map_err(rusqlite::Error::from));
    let type_name = text(2)?;
    let Some(token_type) = TokenType::parse(type_name) else {
        return Ok(Err(format!("token {serial} has unknown type '{type_name}'")));
    };
    let hash_name = text(5)?;
    let Some(hash) = HashAlgorithm::parse(hash_name) else {
        return Ok(Err(format!("token {serial} has unknown hash '{hash_name}'")));
    };
    let pin_kind = text(18)?;
    let pin_blob: Option<Vec<u8>> = row.get(19)?;
    let pin = match (pin_kind, pin_blob) {
        ("empty", _) => StoredPin::Empty,
        ("hash", Some(b)) => match String::from_utf8(b) {
            Ok(s) => StoredPin::Hash(s),
            Err(_) => return Ok(Err(format!("token {serial} has a malformed PIN hash"))),
        },
        ("enc", Some(b)) => StoredPin::Encrypted(b),
        _ => return Ok(Err(format!("token {serial} has an invalid PIN record"))),
    };
    let owner = match (row.get::<_, Option<String>>(20)?, row.get::<_, Option<String>>(21)?) {
        (Some(login), Some(realm)) => {
            Some(Owner { login, realm, resolver: row.get::<_, Option<String>>(22)?.unwrap_or_default() })
        }
        _ => None,
    };
    let time = |i: usize| -> rusqlite::Result<Option<Timestamp>> {
        Ok(row.get::<_, Option<i64>>(i)?.and_then(|s| Timestamp::from_second(s).ok()))
    };
    let u32_at =
        |i: usize| -> rusqlite::Result<u32> { Ok(u32::try_from(row.get::<_, i64>(i)?).unwrap_or(0)) };
    let u64_at =
        |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(row.get::<_, i64>(i)?).unwrap_or(0)) };
    let mut realms: Vec<String> = row
        .get::<_, Option<String>>(29)?
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    realms.sort();
    Ok(Ok(Token {
        id: row.get(0)?,
        serial,
        token_type,
        secret: row.get(3)?,
        otplen: u32_at(4)?,
        hash,
        timestep: u32_at(6)?,
        time_window: u32_at(7)?,
        time_shift: row.get(8)?,
        count: u64_at(9)?,
        count_window: u32_at(10)?,
        sync_window: u32_at(11)?,
        maxfail: u32_at(12)?,
        failcount: u32_at(13)?,
        failcounter_exceeded: time(14)?,
        active: row.get(15)?,
        revoked: row.get(16)?,
        description: row.get(17)?,
        pin,
        owner,
        realms,
        validity_start: time(23)?,
        validity_end: time(24)?,
        count_auth: u64_at(25)?,
        count_auth_success: u64_at(26)?,
        created: time(27)?.unwrap_or(Timestamp::UNIX_EPOCH),
        assigned: time(28)?,
    }))
}

/// What `reset_failcount` and `clear_failcount_exceeded` write.
fn clear_failcount(t: &mut Counters) {
    t.failcount = 0;
    t.failcounter_exceeded = None;
}

fn pin_columns(pin: &StoredPin) -> (&'static str, Option<Vec<u8>>) {
    match pin {
        StoredPin::Empty => ("empty", None),
        StoredPin::Hash(h) => ("hash", Some(h.as_bytes().to_vec())),
        StoredPin::Encrypted(b) => ("enc", Some(b.clone())),
    }
}

/// The columns an update may write, in the order of `mutable_values`
/// (serial, type and creation time never change).
const MUTABLE_COLUMNS: [&str; 25] = [
    "secret",
    "otplen",
    "hashlib",
    "timestep",
    "time_window",
    "time_shift",
    "count",
    "count_window",
    "sync_window",
    "maxfail",
    "failcount",
    "failcounter_exceeded",
    "active",
    "revoked",
    "description",
    "pin_kind",
    "pin",
    "owner_login",
    "owner_realm",
    "owner_resolver",
    "validity_start",
    "validity_end",
    "count_auth",
    "count_auth_success",
    "assigned",
];

fn mutable_values(t: &Token) -> Vec<Value> {
    let (pin_kind, pin) = pin_columns(&t.pin);
    let owner = t.owner.as_ref();
    let text = |s: Option<&String>| s.map_or(Value::Null, |s| Value::Text(s.clone()));
    let time = |t: Option<Timestamp>| ts(t).map_or(Value::Null, Value::Integer);
    vec![
        Value::Blob(t.secret.clone()),
        Value::Integer(t.otplen.into()),
        Value::Text(t.hash.name().into()),
        Value::Integer(t.timestep.into()),
        Value::Integer(t.time_window.into()),
        Value::Real(t.time_shift),
        Value::Integer(to_i64(t.count)),
        Value::Integer(t.count_window.into()),
        Value::Integer(t.sync_window.into()),
        Value::Integer(t.maxfail.into()),
        Value::Integer(t.failcount.into()),
        time(t.failcounter_exceeded),
        Value::Integer(t.active.into()),
        Value::Integer(t.revoked.into()),
        Value::Text(t.description.clone()),
        Value::Text(pin_kind.into()),
        pin.map_or(Value::Null, Value::Blob),
        text(owner.map(|o| &o.login)),
        text(owner.map(|o| &o.realm)),
        text(owner.map(|o| &o.resolver)),
        time(t.validity_start),
        time(t.validity_end),
        Value::Integer(to_i64(t.count_auth)),
        Value::Integer(to_i64(t.count_auth_success)),
        time(t.assigned),
    ]
}

impl StoreRead for SqliteTx<'_> {
    fn token(&self, serial: &str) -> Result<Option<Token>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens t WHERE t.serial = ?1");
        let row = self
            .conn()
            .prepare_cached(&sql)
            .and_then(|mut s| s.query_row([serial], token_from_row).optional())
            .map_err(|e| self.err(e))?;
        row.transpose().map_err(|m| self.corrupt(m))
    }

    fn tokens(&self, filter: &TokenFilter) -> Result<Vec<Token>, StoreError> {
        // The statement of each filter shape is built once (a login asks
        // with the same shape every time).
        static SQL: [OnceLock<String>; 8] = [const { OnceLock::new() }; 8];
        let shape = usize::from(filter.owner.is_some())
            | usize::from(filter.realm.is_some()) << 1
            | usize::from(filter.unassigned) << 2;
        let sql = SQL[shape].get_or_init(|| {
            let mut sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens t WHERE 1");
            let mut n = 0;
            if filter.owner.is_some() {
                n += 2;
                sql.push_str(&format!(" AND t.owner_login = ?{} AND t.owner_realm = ?{n}", n - 1));
            }
            if filter.realm.is_some() {
                n += 1;
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM token_realms r WHERE r.token_id = t.id AND r.realm = ?{n})"
                ));
            }
            if filter.unassigned {
                sql.push_str(" AND t.owner_login IS NULL");
            }
            sql
        });
        let mut args: Vec<&str> = Vec::with_capacity(3);
        if let Some((login, realm)) = &filter.owner {
            args.extend([login.as_str(), realm.as_str()]);
        }
        if let Some(realm) = &filter.realm {
            args.push(realm);
        }
        // Sorted here, not by `ORDER BY t.id`: with that clause SQLite
        // prepares the statement anew after every commit of another
        // connection, which cost more than the rest of a login.
        // Room for one token to start with: a user has one or two, and the
        // four that `collect` would reserve make a block too big for
        // malloc's per-thread cache (a login's costliest allocation).
        let mut tokens = Vec::with_capacity(1);
        let mut corrupt = None;
        self.conn()
            .prepare_cached(sql)
            .and_then(|mut s| {
                let mut rows = s.query(params_from_iter(args.iter()))?;
                while let Some(row) = rows.next()? {
                    match token_from_row(row)? {
                        Ok(token) => tokens.push(token),
                        Err(message) => {
                            corrupt = Some(message);
                            break;
                        }
                    }
                }
                Ok(())
            })
            .map_err(|e| self.err(e))?;
        if let Some(message) = corrupt {
            return Err(self.corrupt(message));
        }
        tokens.sort_by_key(|t| t.id);
        Ok(tokens)
    }

    fn count_tokens_of_type(&self, token_type: TokenType) -> Result<u64, StoreError> {
        self.conn()
            .prepare_cached("SELECT count(*) FROM tokens WHERE type = ?1")
            .and_then(|mut s| s.query_row([token_type.name()], |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    fn audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        self.conn()
            .prepare_cached(
                "SELECT time, actor, action, front, serial, user, realm, client, success, message \
                 FROM audit ORDER BY id DESC LIMIT ?1",
            )
            .and_then(|mut s| {
                s.query_map([limit], |r| {
                    Ok(AuditRecord {
                        time: Timestamp::from_second(r.get(0)?).unwrap_or(Timestamp::UNIX_EPOCH),
                        actor: r.get(1)?,
                        action: r.get(2)?,
                        front: r.get(3)?,
                        serial: r.get(4)?,
                        user: r.get(5)?,
                        realm: r.get(6)?,
                        client: r.get(7)?,
                        success: r.get(8)?,
                        message: r.get(9)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn()
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    fn challenges(&self, transaction_id: &str) -> Result<Vec<Challenge>, StoreError> {
        let time = |s: i64| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
        self.conn()
            .prepare_cached(
                "SELECT transaction_id, serial, created, expires FROM challenges \
                 WHERE transaction_id = ?1 ORDER BY id",
            )
            .and_then(|mut s| {
                s.query_map([transaction_id], |r| {
                    Ok(Challenge {
                        transaction_id: r.get(0)?,
                        serial: r.get(1)?,
                        created: time(r.get(2)?),
                        expires: time(r.get(3)?),
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }
}

impl StoreWrite for SqliteTx<'_> {
    fn insert_token(&mut self, t: &Token) -> Result<i64, StoreError> {
        self.forget_cached_tokens();
        static SQL: OnceLock<String> = OnceLock::new();
        let sql = SQL.get_or_init(|| {
            let columns = MUTABLE_COLUMNS.join(", ");
            let placeholders: Vec<String> =
                (1..=MUTABLE_COLUMNS.len() + 3).map(|i| format!("?{i}")).collect();
            format!(
                "INSERT INTO tokens ({columns}, serial, type, created) VALUES ({})",
                placeholders.join(", ")
            )
        });
        let mut values = mutable_values(t);
        values.push(Value::Text(t.serial.clone()));
        values.push(Value::Text(t.token_type.name().into()));
        values.push(Value::Integer(t.created.as_second()));
        let inserted = self.conn().prepare_cached(sql).and_then(|mut s| s.execute(params_from_iter(values)));
        match inserted {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == ErrorCode::ConstraintViolation => {
                return Err(StoreError::DuplicateSerial(t.serial.clone()));
            }
            Err(e) => return Err(self.err(e)),
        }
        let id = self.conn().last_insert_rowid();
        self.write_realms(id, &t.realms)?;
        Ok(id)
    }

    fn update_token(&mut self, t: &Token) -> Result<(), StoreError> {
        self.forget_cached_tokens();
        static SQL: OnceLock<String> = OnceLock::new();
        let sql = SQL.get_or_init(|| {
            let sets: Vec<String> =
                MUTABLE_COLUMNS.iter().enumerate().map(|(i, c)| format!("{c} = ?{}", i + 1)).collect();
            format!("UPDATE tokens SET {} WHERE id = ?{}", sets.join(", "), MUTABLE_COLUMNS.len() + 1)
        });
        let mut values = mutable_values(t);
        values.push(Value::Integer(t.id));
        self.conn()
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(params_from_iter(values)))
            .map_err(|e| self.err(e))?;
        self.write_realms(t.id, &t.realms)
    }

    fn delete_token(&mut self, serial: &str) -> Result<bool, StoreError> {
        self.forget_cached_tokens();
        self.conn()
            .prepare_cached("DELETE FROM challenges WHERE serial = ?1")
            .and_then(|mut s| s.execute([serial]))
            .map_err(|e| self.err(e))?;
        self.conn()
            .prepare_cached("DELETE FROM tokens WHERE serial = ?1")
            .and_then(|mut s| s.execute([serial]))
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    fn consume(&mut self, id: i64, c: &Consume) -> Result<bool, StoreError> {
        let sql = "UPDATE tokens SET count = ?2, time_shift = coalesce(?3, time_shift), \
             failcount = 0, failcounter_exceeded = NULL, count_auth = count_auth + 1, \
             count_auth_success = count_auth_success + 1 \
             WHERE id = ?1 AND count <= ?4 AND active = 1 AND revoked = 0 \
             AND failcount < maxfail";
        let count = to_i64(c.new_count);
        self.write_counters(sql, params![id, count, c.time_shift, to_i64(c.max_stored)], id, |t| {
            t.count = count as u64;
            t.time_shift = c.time_shift.unwrap_or(t.time_shift);
            t.failcount = 0;
            t.failcounter_exceeded = None;
            t.count_auth = t.count_auth.saturating_add(1);
            t.count_auth_success = t.count_auth_success.saturating_add(1);
        })
    }

    fn record_failure(&mut self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        // SQLite evaluates every SET expression against the old row.
        let sql = "UPDATE tokens SET count_auth = count_auth + 1, \
             failcount = CASE WHEN failcount < maxfail THEN failcount + 1 ELSE failcount END, \
             failcounter_exceeded = CASE WHEN failcount < maxfail AND failcount + 1 >= maxfail \
             THEN ?2 ELSE failcounter_exceeded END WHERE id = ?1";
        let now = now.as_second();
        self.write_counters(sql, params![id, now], id, |t| {
            t.count_auth = t.count_auth.saturating_add(1);
            if t.failcount < t.maxfail() {
                t.failcount += 1;
                if t.failcount >= t.maxfail() {
                    t.failcounter_exceeded = Timestamp::from_second(now).ok();
                }
            }
        })?;
        Ok(())
    }

    fn reset_failcount(&mut self, id: i64) -> Result<(), StoreError> {
        let sql = "UPDATE tokens SET failcount = 0, failcounter_exceeded = NULL WHERE id = ?1";
        self.write_counters(sql, [id], id, clear_failcount)?;
        Ok(())
    }

    fn clear_failcount_exceeded(&mut self, id: i64, exceeded: Timestamp) -> Result<bool, StoreError> {
        let sql = "UPDATE tokens SET failcount = 0, failcounter_exceeded = NULL \
             WHERE id = ?1 AND failcount = maxfail AND failcounter_exceeded = ?2";
        self.write_counters(sql, params![id, exceeded.as_second()], id, clear_failcount)
    }

    fn append_audit(&mut self, a: &AuditRecord) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO audit (time, actor, action, front, serial, user, realm, client, \
                 success, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    a.time.as_second(),
                    a.actor,
                    a.action,
                    a.front,
                    a.serial,
                    a.user,
                    a.realm,
                    a.client,
                    a.success,
                    a.message
                ])
            })
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![key, value]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn insert_challenge(&mut self, c: &Challenge) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO challenges (transaction_id, serial, created, expires) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| {
                s.execute(params![c.transaction_id, c.serial, c.created.as_second(), c.expires.as_second()])
            })
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn delete_challenges(&mut self, transaction_id: &str) -> Result<usize, StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM challenges WHERE transaction_id = ?1")
            .and_then(|mut s| s.execute([transaction_id]))
            .map_err(|e| self.err(e))
    }

    fn delete_expired_challenges(
        &mut self,
        serial: Option<&str>,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM challenges WHERE expires < ?1 AND (?2 IS NULL OR serial = ?2)")
            .and_then(|mut s| s.execute(params![now.as_second(), serial]))
            .map_err(|e| self.err(e))
    }

    /// Releases the savepoint into the group and returns once the group
    /// has committed durably (`synchronous = FULL`, or synced by `walsync`).
    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let (group, epoch) = self.release()?;
        self.store.settle(group, Some(epoch))?;
        match self.store.walsync.get() {
            Some(walsync) => walsync.wait(epoch),
            None => Ok(()),
        }
    }

    fn commit_then(mut self: Box<Self>, done: CommitDone) {
        let (mut group, epoch) = match self.release() {
            Ok(released) => released,
            Err(e) => {
                // Drop rolls the member back (or fails the group).
                drop(self);
                return done(Err(e));
            }
        };
        group.deferred.0.push((epoch, done));
        let early = group.members >= GROUP_EARLY_MEMBERS
            && self.store.walsync.get().is_some_and(|walsync| walsync.idle());
        if early || group.full() {
            self.store.end_group(&mut group);
        }
        self.store.run_deferred(group);
    }
}

impl TokenStore for SqliteStore {
    fn read(&self) -> Result<Box<dyn StoreRead + '_>, StoreError> {
        Ok(Box::new(self.begin_read()?))
    }

    fn write(&self) -> Result<Box<dyn StoreWrite + '_>, StoreError> {
        Ok(Box::new(self.begin_write()?))
    }

    fn read_tokens(&self, filter: &TokenFilter) -> Result<Vec<Token>, StoreError> {
        // The writer reads from a page cache that its own commits do not
        // empty (they do a reading connection's). While this process's
        // group is open, the writer also holds the write lock, so it reads
        // the latest state (with the group's own changes, which commit or
        // fail with it) without a read transaction's locks; between groups
        // the statement reads a snapshot of its own. Never waits for the
        // group: a writer in it (this thread's own, too) sends the read to
        // the pool.
        if let Ok(mut group) = self.group.try_lock()
            && group.conn.is_some()
        {
            // A login's question (the owner's tokens) may be answered from
            // the cache: checked first against other connections' commits,
            // unless the group is open (none can commit meanwhile).
            let owner = filter.owner.as_ref().filter(|_| filter.realm.is_none() && !filter.unassigned);
            if let Some(owner) = owner {
                if group.opened.is_none() {
                    group.check_cache();
                }
                if let Some(tokens) = group.cache.tokens_of(owner) {
                    return Ok(tokens);
                }
            }
            let mut within = SqliteTx { store: self, conn: TxConn::Write(Some(group)), open: false };
            let tokens = within.tokens(filter)?;
            if let (Some(owner), Some(cache)) = (owner, within.cache()) {
                cache.insert(owner, &tokens);
            }
            return Ok(tokens);
        }
        // One statement reads a snapshot of its own: no BEGIN and ROLLBACK around it.
        let once = SqliteTx { store: self, conn: TxConn::Read(self.take()?), open: false };
        once.tokens(filter)
    }

    fn flush(&self) {
        let mut group = self.group.lock().unwrap_or_else(|p| p.into_inner());
        if self.queued.load(Ordering::SeqCst) == 0 {
            self.end_group(&mut group);
        }
        self.run_deferred(group);
    }
}

impl SqliteStore {
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// Empties a large WAL into the database and truncates it, if no other
    /// connection is using the database (waiting at most `TRUNCATE_WAIT`).
    ///
    /// Why: how far a checkpoint got lives in the WAL index, which the
    /// next process rebuilds from scratch when it is the only one with the
    /// database open (a PAM login, a CLI call, without the daemon). It then
    /// finds the whole WAL not yet checkpointed, reads it all, and its
    /// commit checkpoints all of it again: every login would copy the same
    /// megabytes (60 ms a login after a 200 000-token import). An empty
    /// WAL costs the next process nothing.
    fn truncate_large_wal(&self, conn: &Connection) {
        let mut wal = self.config.path.clone().into_os_string();
        wal.push("-wal");
        if !std::fs::metadata(&wal).is_ok_and(|m| m.len() >= WAL_TRUNCATE_BYTES) {
            return;
        }
        // Failing (busy: the daemon or another login is at work) is fine: they keep their own index.
        let _ = conn.busy_timeout(TRUNCATE_WAIT);
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        let _ = conn.busy_timeout(self.config.busy_timeout);
    }
}

/// A WAL at least this large is truncated when the store is dropped: a
/// quarter of the default auto-checkpoint size (1000 pages of 4 KiB).
const WAL_TRUNCATE_BYTES: u64 = 1024 * 1024;
/// How long that waits for other connections to let go.
const TRUNCATE_WAIT: Duration = Duration::from_millis(100);

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // A group left open (deferred members nobody flushed) commits now.
        let mut group = self.group.lock().unwrap_or_else(|p| p.into_inner());
        self.end_group(&mut group);
        let writer = group.conn.take();
        self.run_deferred(group);
        // Syncs and calls back what it holds.
        drop(self.walsync.take());
        drop(self.checkpoints.take());
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conn) = writer.as_ref().or(pool.idle.last()) {
            self.truncate_large_wal(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;
    use jiff::SignedDuration;

    use crate::testutil::sample_token;

    fn store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(SqliteConfig::new(dir.path().join("otpd.db"))).unwrap()
    }

    fn insert(store: &SqliteStore, serial: &str) -> Result<(), StoreError> {
        let mut tx = store.write()?;
        tx.insert_token(&sample_token(TokenType::Hotp, serial))?;
        tx.commit()
    }

    fn serials(store: &SqliteStore) -> Vec<String> {
        let mut s: Vec<String> = store
            .read()
            .unwrap()
            .tokens(&TokenFilter::default())
            .unwrap()
            .into_iter()
            .map(|t| t.serial)
            .collect();
        s.sort();
        s
    }

    #[test]
    fn concurrent_writers_all_commit_and_are_visible_to_another_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(store(&dir));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = Arc::clone(&store);
                thread::spawn(move || {
                    for i in 0..25 {
                        insert(&store, &format!("T{t}-{i}")).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // A second store stands for another process: it sees only what was committed.
        let other = self::store(&dir);
        assert_eq!(serials(&other).len(), 200);
        let g = store.group.lock().unwrap();
        assert!(g.opened.is_none() && g.members == 0, "no group left open");
        assert!(g.epoch >= 1 && g.epoch <= 200, "{} groups", g.epoch);
    }

    #[test]
    fn a_member_that_rolls_back_leaves_its_group_intact() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(store(&dir));
        // The first member holds the writer while the others queue behind
        // it, so that all three land in one group.
        let mut first = store.write().unwrap();
        first.insert_token(&sample_token(TokenType::Hotp, "KEPT1")).unwrap();
        let rolled_back = {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                let mut tx = store.write().unwrap();
                tx.insert_token(&sample_token(TokenType::Hotp, "GONE")).unwrap();
                // A duplicate serial fails; the member gives up (drop = rollback).
                assert!(matches!(
                    tx.insert_token(&sample_token(TokenType::Hotp, "GONE")),
                    Err(StoreError::DuplicateSerial(_))
                ));
            })
        };
        let kept = {
            let store = Arc::clone(&store);
            thread::spawn(move || insert(&store, "KEPT2"))
        };
        thread::sleep(Duration::from_millis(100));
        first.commit().unwrap();
        rolled_back.join().unwrap();
        kept.join().unwrap().unwrap();
        assert_eq!(serials(&self::store(&dir)), ["KEPT1", "KEPT2"]);
    }

    /// A deferred member's callback result, shared with the test.
    fn deferred(store: &SqliteStore, serial: &str) -> Arc<Mutex<Option<Result<(), String>>>> {
        let seen = Arc::new(Mutex::new(None));
        let mut tx = store.write().unwrap();
        tx.insert_token(&sample_token(TokenType::Hotp, serial)).unwrap();
        let slot = Arc::clone(&seen);
        tx.commit_then(Box::new(move |r| *slot.lock().unwrap() = Some(r.map_err(|e| e.to_string()))));
        seen
    }

    /// What a deferred member was called back with, waiting for it (the
    /// WAL sync thread calls back once the group is synced).
    fn called(seen: &Arc<Mutex<Option<Result<(), String>>>>) -> Option<Result<(), String>> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let result = seen.lock().unwrap().clone();
            if result.is_some() || std::time::Instant::now() >= deadline {
                return result;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn reads_during_an_open_group_see_it_and_never_wait_for_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let read = |store: &SqliteStore| {
            let mut s: Vec<_> =
                store.read_tokens(&TokenFilter::default()).unwrap().into_iter().map(|t| t.serial).collect();
            s.sort();
            s
        };
        insert(&store, "DONE").unwrap();
        // A deferred member leaves the group open: the read goes to the
        // writer and sees the member's row, which commits with the group.
        let seen = deferred(&store, "OPEN");
        assert_eq!(read(&store), ["DONE", "OPEN"]);
        assert_eq!(serials(&self::store(&dir)), ["DONE"], "another process sees only what committed");
        // A member in progress holds the writer: a read on the same thread
        // must not wait for it (it would wait forever); it reads what is
        // committed, from the pool.
        let mut tx = store.write().unwrap();
        tx.insert_token(&sample_token(TokenType::Hotp, "MEMBER")).unwrap();
        assert_eq!(read(&store), ["DONE"]);
        tx.commit().unwrap();
        assert_eq!(called(&seen), Some(Ok(())));
        assert_eq!(read(&store), ["DONE", "MEMBER", "OPEN"]);
    }

    #[test]
    fn deferred_members_commit_together_at_flush_or_with_a_waiting_member() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let a = deferred(&store, "A");
        let b = deferred(&store, "B");
        // Neither is committed (another connection sees nothing) nor called back yet.
        assert!(a.lock().unwrap().is_none() && b.lock().unwrap().is_none());
        assert!(serials(&self::store(&dir)).is_empty());
        store.flush();
        assert_eq!(called(&a), Some(Ok(())));
        assert_eq!(called(&b), Some(Ok(())));
        assert!(store.walsync.get().is_some(), "deferring commits started the WAL sync thread");
        assert_eq!(serials(&self::store(&dir)), ["A", "B"]);
        assert_eq!(store.group.lock().unwrap().epoch, 1, "one commit for both");

        // A member that waits commits the deferred ones of its group too.
        let c = deferred(&store, "C");
        insert(&store, "D").unwrap();
        assert_eq!(called(&c), Some(Ok(())));
        assert_eq!(serials(&self::store(&dir)), ["A", "B", "C", "D"]);
        // Nothing left to flush: a flush is harmless.
        store.flush();
        assert_eq!(store.group.lock().unwrap().epoch, 2);

        // The writer commits without a sync of SQLite's, a new writer too.
        let synchronous = |store: &SqliteStore| -> i64 {
            store.group.lock().unwrap().conn().query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap()
        };
        assert_eq!(synchronous(&store), 1, "NORMAL");
        store.group.lock().unwrap().conn = None;
        insert(&store, "E").unwrap();
        assert_eq!(synchronous(&store), 1, "NORMAL");
    }

    #[test]
    fn dropping_the_store_truncates_a_large_wal_and_commits_an_open_group() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("otpd.db-wal");
        let store = store(&dir);
        let mut tx = store.write().unwrap();
        for i in 0..400 {
            let mut token = sample_token(TokenType::Hotp, &format!("T{i}"));
            token.description = "x".repeat(4000);
            tx.insert_token(&token).unwrap();
        }
        tx.commit().unwrap();
        assert!(std::fs::metadata(&wal).unwrap().len() >= WAL_TRUNCATE_BYTES);
        // A deferred member nobody flushed: the drop commits it.
        let late = deferred(&store, "LATE");
        drop(store);
        assert_eq!(*late.lock().unwrap(), Some(Ok(())));
        assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0, "WAL truncated");
        assert_eq!(serials(&self::store(&dir)).len(), 401);
    }

    #[test]
    fn a_process_that_defers_commits_checkpoints_off_the_writer_and_its_wal_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        // 3 000 tokens of a page each, in groups of 10: three times the
        // frames that call for a checkpoint.
        for group in 0..300 {
            let seen: Vec<_> = (0..10)
                .map(|i| {
                    let seen = Arc::new(Mutex::new(None));
                    let mut tx = store.write().unwrap();
                    let mut token = sample_token(TokenType::Hotp, &format!("T{group}-{i}"));
                    token.description = "x".repeat(3000);
                    tx.insert_token(&token).unwrap();
                    let slot = Arc::clone(&seen);
                    tx.commit_then(Box::new(move |r| {
                        *slot.lock().unwrap() = Some(r.map_err(|e| e.to_string()))
                    }));
                    seen
                })
                .collect();
            store.flush();
            assert!(seen.iter().all(|s| called(s) == Some(Ok(()))));
        }
        let checkpoints = store.checkpoints().expect("deferring commits started the checkpoint thread");
        assert!(checkpoints.completed() >= 2, "{checkpoints:?}");
        // The WAL started over instead of growing to all 3 000 pages.
        let wal = std::fs::metadata(dir.path().join("otpd.db-wal")).unwrap().len();
        assert!(wal < 2 * u64::from(checkpoint::CHECKPOINT_FRAMES) * 4200, "WAL of {wal} bytes");
        assert_eq!(serials(&self::store(&dir)).len(), 3000);
    }

    #[test]
    fn a_full_group_of_deferred_members_commits_without_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let seen: Vec<_> = (0..GROUP_MAX_MEMBERS).map(|i| deferred(&store, &format!("T{i}"))).collect();
        assert!(seen.iter().all(|s| called(s) == Some(Ok(()))));
        assert_eq!(serials(&self::store(&dir)).len(), GROUP_MAX_MEMBERS);
    }

    #[test]
    fn a_group_commits_early_once_the_sync_thread_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        // The first deferred commit starts the sync thread.
        let first = deferred(&store, "FIRST");
        store.flush();
        assert_eq!(called(&first), Some(Ok(())));
        // With the thread idle, a group commits at `GROUP_EARLY_MEMBERS`
        // members, without a flush, and not before. A group older than
        // `GROUP_MAX_AGE` commits anyway: on a machine too slow to fill
        // one younger than that, the test cannot tell the two apart.
        let epoch = store.group.lock().unwrap().epoch;
        let began = Instant::now();
        let early: Vec<_> = (1..GROUP_EARLY_MEMBERS).map(|i| deferred(&store, &format!("E{i}"))).collect();
        if began.elapsed() >= GROUP_MAX_AGE {
            return;
        }
        let (now, members) = {
            let group = store.group.lock().unwrap();
            (group.epoch, group.members)
        };
        assert_eq!(
            (now, members),
            (epoch, GROUP_EARLY_MEMBERS - 1),
            "committed before it had enough members"
        );
        let last = deferred(&store, "LAST");
        if began.elapsed() < GROUP_MAX_AGE {
            assert!(store.group.lock().unwrap().opened.is_none(), "a young group of 16 committed at once");
        }
        assert_eq!(called(&last), Some(Ok(())));
        assert!(early.iter().all(|s| called(s) == Some(Ok(()))));
        assert_eq!(serials(&self::store(&dir)).len(), GROUP_EARLY_MEMBERS + 1);
    }

    #[test]
    fn a_group_s_members_are_called_back_in_one_batch_of_the_front_s_wrapper() {
        use std::sync::atomic::AtomicU64;
        static BATCHES: AtomicU64 = AtomicU64::new(1);
        thread_local! {
            /// The batch running on this thread (0: none).
            static RUNNING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        }
        fn wrapper(batch: &mut dyn FnMut()) {
            RUNNING.set(BATCHES.fetch_add(1, Ordering::SeqCst));
            batch();
            RUNNING.set(0);
        }
        // Process-wide; the other tests' callbacks pass through it unchanged.
        crate::store::wrap_callback_batches(wrapper);
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let member = |serial: &str| {
            let mut tx = store.write().unwrap();
            tx.insert_token(&sample_token(TokenType::Hotp, serial)).unwrap();
            let seen = Arc::clone(&seen);
            tx.commit_then(Box::new(move |r| seen.lock().unwrap().push((r.is_ok(), RUNNING.get()))));
        };
        let batches = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while seen.lock().unwrap().len() < n && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            let seen = seen.lock().unwrap();
            assert!(
                seen.iter().all(|(ok, batch)| *ok && *batch != 0),
                "every callback inside a batch: {seen:?}"
            );
            seen.iter().map(|(_, batch)| *batch).collect::<std::collections::BTreeSet<_>>().len()
        };
        // The first commit syncs on this thread (it starts the sync thread).
        member("FIRST");
        store.flush();
        assert_eq!(batches(1), 1);
        // A group of five, synced and called back by the sync thread. (A
        // machine too slow to fill it within `GROUP_MAX_AGE` commits it in
        // parts; then only the first assertion holds.)
        let before = store.group.lock().unwrap().epoch;
        (0..5).for_each(|i| member(&format!("G{i}")));
        store.flush();
        let batches = batches(6);
        if store.group.lock().unwrap().epoch == before + 1 {
            assert_eq!(batches, 2, "the group's five members in one batch");
        }
    }

    #[test]
    fn a_failed_group_commit_reaches_every_deferred_member() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let a = deferred(&store, "A");
        // The group transaction vanishes under the members (as SQLite
        // does on some I/O errors): the next member fails the group.
        store.group.lock().unwrap().conn().execute_batch("ROLLBACK").unwrap();
        // The next member finds out, fails the group and starts a new one.
        insert(&store, "B").unwrap();
        let failed = called(&a).expect("called back");
        assert!(failed.unwrap_err().contains("rolled back"), "an error naming the failure");
        assert_eq!(serials(&self::store(&dir)), ["B"]);
    }

    #[test]
    fn readers_share_a_bounded_pool_and_nested_reads_never_wait_forever() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(store(&dir));
        insert(&store, "A").unwrap();
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let store = Arc::clone(&store);
                thread::spawn(move || {
                    for _ in 0..50 {
                        assert!(store.read().unwrap().token("A").unwrap().is_some());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(store.pool.lock().unwrap().open <= POOL_MAX);
        // One thread holding every pooled connection still gets one more.
        let held: Vec<_> = (0..POOL_MAX + 1).map(|_| store.read().unwrap()).collect();
        assert_eq!(store.pool.lock().unwrap().open, POOL_MAX + 1);
        drop(held);
        let pool = store.pool.lock().unwrap();
        assert_eq!((pool.open, pool.idle.len()), (POOL_MAX, POOL_MAX));
    }

    #[test]
    fn a_login_s_writes_never_reach_a_token_enrolled_again_under_its_serial() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        insert(&store, "H1").unwrap();
        let read = store.read().unwrap().token("H1").unwrap().unwrap();
        // Deleted and enrolled again (a new secret) after the login read it.
        let mut tx = store.write().unwrap();
        assert!(tx.delete_token("H1").unwrap());
        tx.insert_token(&sample_token(TokenType::Hotp, "H1")).unwrap();
        tx.commit().unwrap();
        let mut tx = store.write().unwrap();
        let c = Consume { new_count: 1, max_stored: 0, time_shift: None };
        assert!(!tx.consume(read.id, &c).unwrap(), "an OTP of the old token consumes nothing");
        tx.record_failure(read.id, Timestamp::now()).unwrap();
        tx.commit().unwrap();
        let now = store.read().unwrap().token("H1").unwrap().unwrap();
        assert_ne!(now.id, read.id);
        assert_eq!((now.count, now.failcount, now.count_auth), (0, 0, 0), "the new token is untouched");
    }

    fn alice() -> TokenFilter {
        TokenFilter { owner: Some(("alice".into(), "realm".into())), ..Default::default() }
    }

    /// Alice's token `serial`, with a failcounter limit of 3.
    fn insert_alice_s(store: &SqliteStore, serial: &str) -> i64 {
        let mut token = sample_token(TokenType::Hotp, serial);
        token.owner = Some(Owner { login: "alice".into(), realm: "realm".into(), resolver: "r".into() });
        token.maxfail = 3;
        let mut tx = store.write().unwrap();
        let id = tx.insert_token(&token).unwrap();
        tx.commit().unwrap();
        id
    }

    /// Alice's tokens as a login reads them (the cache, once filled) and
    /// as SQLite holds them, in a form to compare (`Token` has no `Eq`).
    fn cached_and_stored(store: &SqliteStore) -> (String, String) {
        let cached = store.read_tokens(&alice()).unwrap();
        let stored = store.read().unwrap().tokens(&alice()).unwrap();
        (format!("{cached:?}"), format!("{stored:?}"))
    }

    fn cached_tokens(store: &SqliteStore) -> usize {
        store.group.lock().unwrap().cache.len()
    }

    #[test]
    fn the_token_cache_holds_what_sqlite_holds_through_a_login_s_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let id = insert_alice_s(&store, "H1");
        insert_alice_s(&store, "H2");
        let (cached, stored) = cached_and_stored(&store);
        assert_eq!(cached, stored);
        assert_eq!(cached_tokens(&store), 2, "a login's read fills the cache");
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        type Write<'a> = &'a dyn Fn(&mut dyn StoreWrite);
        let writes: [Write<'_>; 7] = [
            &|tx| {
                assert!(tx.consume(id, &Consume { new_count: 5, max_stored: 4, time_shift: None }).unwrap())
            },
            &|tx| {
                assert!(!tx.consume(id, &Consume { new_count: 5, max_stored: 4, time_shift: None }).unwrap())
            },
            &|tx| tx.record_failure(id, now).unwrap(),
            &|tx| {
                // To the limit and past it: the stamp is set once.
                tx.record_failure(id, now).unwrap();
                tx.record_failure(id, now + SignedDuration::from_secs(1)).unwrap();
                tx.record_failure(id, now + SignedDuration::from_secs(2)).unwrap();
            },
            &|tx| assert!(tx.clear_failcount_exceeded(id, now + SignedDuration::from_secs(1)).unwrap()),
            &|tx| {
                tx.record_failure(id, now).unwrap();
                tx.reset_failcount(id).unwrap();
            },
            &|tx| {
                let shift = Consume { new_count: 9, max_stored: 8, time_shift: Some(-30.0) };
                assert!(tx.consume(id, &shift).unwrap());
            },
        ];
        for (n, write) in writes.iter().enumerate() {
            let mut tx = store.write().unwrap();
            write(tx.as_mut());
            tx.commit().unwrap();
            let (cached, stored) = cached_and_stored(&store);
            assert_eq!(cached, stored, "after write {n}");
            assert_eq!(cached_tokens(&store), 2, "kept in step, not emptied, after write {n}");
        }
        let token = store.read_tokens(&alice()).unwrap().remove(0);
        assert_eq!(
            (token.count, token.time_shift, token.count_auth, token.count_auth_success),
            (9, -30.0, 7, 2)
        );
    }

    #[test]
    fn another_connection_s_commit_is_seen_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = store(&dir);
        let id = insert_alice_s(&daemon, "H1");
        assert_eq!(daemon.read_tokens(&alice()).unwrap()[0].count, 0);
        assert_eq!(cached_tokens(&daemon), 1);
        // Another process consumes a counter and disables the token, with
        // no group of the daemon open.
        let cli = store(&dir);
        let mut tx = cli.write().unwrap();
        assert!(tx.consume(id, &Consume { new_count: 3, max_stored: 2, time_shift: None }).unwrap());
        tx.commit().unwrap();
        assert_eq!(daemon.read_tokens(&alice()).unwrap()[0].count, 3);
        let mut token = cli.read().unwrap().token("H1").unwrap().unwrap();
        token.active = false;
        let mut tx = cli.write().unwrap();
        tx.update_token(&token).unwrap();
        tx.commit().unwrap();
        // The daemon's next group opens after it: the read within sees it.
        let mut tx = daemon.write().unwrap();
        tx.set_meta("k", b"v").unwrap();
        tx.commit_then(Box::new(|_| {}));
        assert!(daemon.group.lock().unwrap().opened.is_some(), "the group is still open");
        let (cached, stored) = cached_and_stored(&daemon);
        assert_eq!(cached, stored);
        assert!(!daemon.read_tokens(&alice()).unwrap()[0].active, "the disabled token is not served active");
        daemon.flush();
    }

    #[test]
    fn a_member_rolled_back_or_a_failed_group_leaves_nothing_of_it_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let id = insert_alice_s(&store, "H1");
        store.read_tokens(&alice()).unwrap();
        let consume = Consume { new_count: 5, max_stored: 4, time_shift: None };
        let mut tx = store.write().unwrap();
        assert!(tx.consume(id, &consume).unwrap());
        drop(tx);
        let (cached, stored) = cached_and_stored(&store);
        assert_eq!(cached, stored);
        assert_eq!(store.read_tokens(&alice()).unwrap()[0].count, 0, "rolled back");
        // A group that fails after its member wrote the cache.
        let mut tx = store.write().unwrap();
        assert!(tx.consume(id, &consume).unwrap());
        tx.commit_then(Box::new(|_| {}));
        store.group.lock().unwrap().conn().execute_batch("ROLLBACK").unwrap();
        // The next member finds the group gone (no token write: that alone
        // would empty the cache).
        let mut tx = store.write().unwrap();
        tx.set_meta("k", b"v").unwrap();
        tx.commit().unwrap();
        let (cached, stored) = cached_and_stored(&store);
        assert_eq!(cached, stored);
        assert_eq!(store.read_tokens(&alice()).unwrap()[0].count, 0, "the failed group's consumption");
    }

    #[test]
    fn enrolling_deleting_or_editing_a_token_empties_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        insert_alice_s(&store, "H1");
        store.read_tokens(&alice()).unwrap();
        insert_alice_s(&store, "H2");
        assert_eq!(store.read_tokens(&alice()).unwrap().len(), 2);
        let mut token = store.read().unwrap().token("H2").unwrap().unwrap();
        token.realms = vec!["other".into()];
        token.description = "edited".into();
        let mut tx = store.write().unwrap();
        tx.update_token(&token).unwrap();
        tx.commit().unwrap();
        let (cached, stored) = cached_and_stored(&store);
        assert_eq!(cached, stored);
        let mut tx = store.write().unwrap();
        assert!(tx.delete_token("H1").unwrap());
        tx.commit().unwrap();
        assert_eq!(store.read_tokens(&alice()).unwrap().len(), 1);
        let (cached, stored) = cached_and_stored(&store);
        assert_eq!(cached, stored);
    }

    #[test]
    fn racing_consumes_of_one_counter_succeed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(store(&dir));
        insert(&store, "H1").unwrap();
        let id = store.read().unwrap().token("H1").unwrap().unwrap().id;
        for round in 0..20u64 {
            let threads: Vec<_> = (0..6)
                .map(|_| {
                    let store = Arc::clone(&store);
                    thread::spawn(move || {
                        let mut tx = store.write().unwrap();
                        let c = Consume { new_count: round + 1, max_stored: round, time_shift: None };
                        let won = tx.consume(id, &c).unwrap();
                        tx.commit().unwrap();
                        won
                    })
                })
                .collect();
            let wins = threads.into_iter().map(|t| t.join().unwrap()).filter(|w| *w).count();
            assert_eq!(wins, 1, "round {round}");
        }
        assert_eq!(store.read().unwrap().token("H1").unwrap().unwrap().count, 20);
    }

    #[test]
    fn a_version_2_store_keeps_its_audit_and_challenges_without_autoincrement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpd.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(migrations::MIGRATIONS[0]).unwrap();
            conn.execute_batch(migrations::MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            for (time, action) in [(10, "token_init"), (20, "validate_check"), (30, "token_delete")] {
                conn.execute(
                    "INSERT INTO audit (time, actor, action, front, success, message) VALUES (?1, 'root', ?2, 'cli', 1, '')",
                    params![time, action],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO challenges (transaction_id, serial, created, expires) VALUES ('tx1', 'H1', 1, 2)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        let mut tx = store.write().unwrap();
        tx.append_audit(&AuditRecord {
            time: Timestamp::from_second(40).unwrap(),
            actor: "radius".into(),
            action: "validate_check".into(),
            front: "radius".into(),
            serial: None,
            user: Some("alice".into()),
            realm: None,
            client: None,
            success: true,
            message: "accepted".into(),
        })
        .unwrap();
        tx.commit().unwrap();
        let read = store.read().unwrap();
        let times: Vec<i64> = read.audit(10).unwrap().iter().map(|a| a.time.as_second()).collect();
        assert_eq!(times, [40, 30, 20, 10], "every row kept, the new one newest");
        assert_eq!(read.challenges("tx1").unwrap().len(), 1);
        drop(read);
        let pooled = store.take().unwrap();
        let conn = pooled.conn();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, migrations::latest());
        let hot: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_sequence WHERE name IN ('audit', 'challenges')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(hot, 0, "no high-water row left for a login to rewrite");
        let indexes: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'challenges' AND sql IS NOT NULL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(indexes, 2);
    }

    #[test]
    fn writes_survive_reopening_with_either_durability() {
        for sync in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut config = SqliteConfig::new(dir.path().join("otpd.db"));
            config.sync = sync;
            let store = SqliteStore::open(config.clone()).unwrap();
            insert(&store, "A").unwrap();
            drop(store);
            let reopened = SqliteStore::open(config).unwrap();
            let mode: i64 =
                reopened.take().unwrap().conn().query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
            assert_eq!(mode, if sync { 2 } else { 1 }, "FULL is 2, NORMAL 1");
            assert_eq!(serials(&reopened), ["A"]);
        }
    }
}

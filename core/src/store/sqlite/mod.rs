//! The SQLite token store (the embedded default): one database file in WAL
//! mode, shared by the daemon, PAM processes and the CLI at once. Write
//! transactions start with `BEGIN IMMEDIATE` and commits are fsync'd
//! (`synchronous = FULL`), so an acknowledged counter survives a power loss.
//! Connections are pooled so that several threads of one process can read
//! in parallel.

mod migrations;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, params, params_from_iter};

use super::{AuditRecord, Challenge, StoreError, StoreRead, StoreWrite, TokenFilter, TokenStore};
use crate::otp::HashAlgorithm;
use crate::token::{Consume, Owner, StoredPin, Token, TokenType};

/// Configuration of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub path: PathBuf,
    /// How long a writer waits for another process's write lock.
    pub busy_timeout: Duration,
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig { path: path.into(), busy_timeout: Duration::from_secs(5) }
    }
}

#[derive(Debug)]
pub struct SqliteStore {
    config: SqliteConfig,
    display: String,
    pool: Mutex<Vec<Connection>>,
    /// Serialises this process's writers: threads queue here instead of in
    /// SQLite's busy handler, which polls with sleeps of up to 100 ms.
    /// Other processes still meet the busy timeout.
    writer: Mutex<()>,
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
        let conn = Self::connect(&config, &display)?;
        let found: i64 =
            conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| map_err(&display, e))?;
        if found > migrations::latest() {
            return Err(StoreError::SchemaTooNew { path: display, found, supported: migrations::latest() });
        }
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| map_err(&display, e))?;
        if found < migrations::latest() {
            migrate(&conn, &display)?;
        }
        Ok(SqliteStore { config, display, pool: Mutex::new(vec![conn]), writer: Mutex::new(()) })
    }

    fn connect(config: &SqliteConfig, display: &str) -> Result<Connection, StoreError> {
        let conn = Connection::open(&config.path)
            .map_err(|e| StoreError::Open { path: display.to_owned(), message: e.to_string() })?;
        conn.busy_timeout(config.busy_timeout).map_err(|e| map_err(display, e))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| map_err(display, e))?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| map_err(display, e))?;
        Ok(conn)
    }

    fn take(&self) -> Result<Pooled<'_>, StoreError> {
        let conn = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => Self::connect(&self.config, &self.display)?,
        };
        Ok(Pooled { store: self, conn: Some(conn) })
    }

    fn begin(&self, sql: &str, write: bool) -> Result<SqliteTx<'_>, StoreError> {
        let writer = write.then(|| self.writer.lock().unwrap_or_else(|p| p.into_inner()));
        let pooled = self.take()?;
        pooled.conn().execute_batch(sql).map_err(|e| self.err(e))?;
        Ok(SqliteTx { pooled, open: true, _writer: writer })
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
        if let Some(conn) = self.conn.take() {
            let mut pool = self.store.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < 16 {
                pool.push(conn);
            }
        }
    }
}

struct SqliteTx<'a> {
    pooled: Pooled<'a>,
    open: bool,
    /// Held for the whole write transaction (see `SqliteStore::writer`);
    /// released last, after `Drop` has ended the transaction.
    _writer: Option<std::sync::MutexGuard<'a, ()>>,
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if self.open {
            // A failed rollback leaves the connection in a transaction: drop
            // it rather than hand it back to the pool.
            if self.pooled.conn().execute_batch("ROLLBACK").is_err() {
                self.pooled.conn = None;
            }
        }
    }
}

impl SqliteTx<'_> {
    fn conn(&self) -> &Connection {
        self.pooled.conn()
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        self.pooled.store.err(e)
    }

    fn corrupt(&self, message: String) -> StoreError {
        StoreError::Corrupt { path: self.pooled.store.display.clone(), message }
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
    let type_name: String = row.get(2)?;
    let Some(token_type) = TokenType::parse(&type_name) else {
        return Ok(Err(format!("token {serial} has unknown type '{type_name}'")));
    };
    let hash_name: String = row.get(5)?;
    let Some(hash) = HashAlgorithm::parse(&hash_name) else {
        return Ok(Err(format!("token {serial} has unknown hash '{hash_name}'")));
    };
    let pin_kind: String = row.get(18)?;
    let pin_blob: Option<Vec<u8>> = row.get(19)?;
    let pin = match (pin_kind.as_str(), pin_blob) {
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
        let mut sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens t WHERE 1");
        let mut args: Vec<String> = Vec::new();
        if let Some((login, realm)) = &filter.owner {
            args.push(login.clone());
            args.push(realm.clone());
            sql.push_str(&format!(
                " AND t.owner_login = ?{} AND t.owner_realm = ?{}",
                args.len() - 1,
                args.len()
            ));
        }
        if let Some(realm) = &filter.realm {
            args.push(realm.clone());
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM token_realms r WHERE r.token_id = t.id AND r.realm = ?{})",
                args.len()
            ));
        }
        if filter.unassigned {
            sql.push_str(" AND t.owner_login IS NULL");
        }
        sql.push_str(" ORDER BY t.id");
        let rows = self
            .conn()
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_map(params_from_iter(args.iter()), token_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.err(e))?;
        rows.into_iter().map(|r| r.map_err(|m| self.corrupt(m))).collect()
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
        let columns = MUTABLE_COLUMNS.join(", ");
        let placeholders: Vec<String> = (1..=MUTABLE_COLUMNS.len() + 3).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO tokens ({columns}, serial, type, created) VALUES ({})",
            placeholders.join(", ")
        );
        let mut values = mutable_values(t);
        values.push(Value::Text(t.serial.clone()));
        values.push(Value::Text(t.token_type.name().into()));
        values.push(Value::Integer(t.created.as_second()));
        let inserted = self.conn().prepare_cached(&sql).and_then(|mut s| s.execute(params_from_iter(values)));
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
        let sets: Vec<String> =
            MUTABLE_COLUMNS.iter().enumerate().map(|(i, c)| format!("{c} = ?{}", i + 1)).collect();
        let sql = format!("UPDATE tokens SET {} WHERE id = ?{}", sets.join(", "), MUTABLE_COLUMNS.len() + 1);
        let mut values = mutable_values(t);
        values.push(Value::Integer(t.id));
        self.conn()
            .prepare_cached(&sql)
            .and_then(|mut s| s.execute(params_from_iter(values)))
            .map_err(|e| self.err(e))?;
        self.write_realms(t.id, &t.realms)
    }

    fn delete_token(&mut self, serial: &str) -> Result<bool, StoreError> {
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

    fn consume(&mut self, serial: &str, c: &Consume) -> Result<bool, StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE tokens SET count = ?2, time_shift = coalesce(?3, time_shift), \
                 failcount = 0, failcounter_exceeded = NULL, count_auth = count_auth + 1, \
                 count_auth_success = count_auth_success + 1 \
                 WHERE serial = ?1 AND count <= ?4 AND active = 1 AND revoked = 0 \
                 AND failcount < maxfail",
            )
            .and_then(|mut s| {
                s.execute(params![serial, to_i64(c.new_count), c.time_shift, to_i64(c.max_stored)])
            })
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    fn record_failure(&mut self, serial: &str, now: Timestamp) -> Result<(), StoreError> {
        // SQLite evaluates every SET expression against the old row.
        self.conn()
            .prepare_cached(
                "UPDATE tokens SET count_auth = count_auth + 1, \
                 failcount = CASE WHEN failcount < maxfail THEN failcount + 1 ELSE failcount END, \
                 failcounter_exceeded = CASE WHEN failcount < maxfail AND failcount + 1 >= maxfail \
                 THEN ?2 ELSE failcounter_exceeded END WHERE serial = ?1",
            )
            .and_then(|mut s| s.execute(params![serial, now.as_second()]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn reset_failcount(&mut self, serial: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("UPDATE tokens SET failcount = 0, failcounter_exceeded = NULL WHERE serial = ?1")
            .and_then(|mut s| s.execute([serial]))
            .map(|_| ())
            .map_err(|e| self.err(e))
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

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let result = self.conn().execute_batch("COMMIT").map_err(|e| self.err(e));
        if result.is_ok() {
            self.open = false;
        }
        result
    }
}

impl TokenStore for SqliteStore {
    fn read(&self) -> Result<Box<dyn StoreRead + '_>, StoreError> {
        Ok(Box::new(self.begin("BEGIN DEFERRED", false)?))
    }

    fn write(&self) -> Result<Box<dyn StoreWrite + '_>, StoreError> {
        Ok(Box::new(self.begin("BEGIN IMMEDIATE", true)?))
    }
}

impl SqliteStore {
    pub fn path(&self) -> &Path {
        &self.config.path
    }
}

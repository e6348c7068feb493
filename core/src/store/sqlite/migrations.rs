//! Versioned schema migrations of the SQLite store. Each entry moves the
//! schema from version `index` to `index + 1`; `PRAGMA user_version` records
//! where a database stands. Never edit a released migration: add one.

pub const MIGRATIONS: &[&str] = &[
    // 1: tokens, their realms, the audit trail, store facts.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE tokens (
        id                   INTEGER PRIMARY KEY AUTOINCREMENT,
        serial               TEXT NOT NULL UNIQUE,
        type                 TEXT NOT NULL,
        secret               BLOB NOT NULL,
        otplen               INTEGER NOT NULL,
        hashlib              TEXT NOT NULL,
        timestep             INTEGER NOT NULL,
        time_window          INTEGER NOT NULL,
        time_shift           REAL NOT NULL DEFAULT 0,
        count                INTEGER NOT NULL DEFAULT 0,
        count_window         INTEGER NOT NULL,
        sync_window          INTEGER NOT NULL,
        maxfail              INTEGER NOT NULL,
        failcount            INTEGER NOT NULL DEFAULT 0,
        failcounter_exceeded INTEGER,
        active               INTEGER NOT NULL DEFAULT 1,
        revoked              INTEGER NOT NULL DEFAULT 0,
        description          TEXT NOT NULL DEFAULT '',
        pin_kind             TEXT NOT NULL DEFAULT 'empty',
        pin                  BLOB,
        owner_login          TEXT,
        owner_realm          TEXT,
        owner_resolver       TEXT,
        validity_start       INTEGER,
        validity_end         INTEGER,
        count_auth           INTEGER NOT NULL DEFAULT 0,
        count_auth_success   INTEGER NOT NULL DEFAULT 0,
        created              INTEGER NOT NULL,
        assigned             INTEGER
    );
    CREATE INDEX tokens_owner ON tokens(owner_realm, owner_login);
    CREATE TABLE token_realms (
        token_id INTEGER NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
        realm    TEXT NOT NULL,
        PRIMARY KEY (token_id, realm)
    );
    CREATE INDEX token_realms_realm ON token_realms(realm);
    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        time    INTEGER NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        front   TEXT NOT NULL,
        serial  TEXT,
        user    TEXT,
        realm   TEXT,
        client  TEXT,
        success INTEGER NOT NULL,
        message TEXT NOT NULL
    );
    "#,
    // 2: challenges of challenge-response logins, shared by every process.
    r#"
    CREATE TABLE challenges (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        transaction_id TEXT NOT NULL,
        serial         TEXT NOT NULL,
        created        INTEGER NOT NULL,
        expires        INTEGER NOT NULL
    );
    CREATE INDEX challenges_transaction ON challenges(transaction_id);
    CREATE INDEX challenges_serial ON challenges(serial);
    "#,
    // 3: the audit trail and the challenges without AUTOINCREMENT. Their
    // ids are the store's own (never shown; the audit is read newest
    // first), and AUTOINCREMENT kept each table's high mark in a row of
    // sqlite_sequence that every insert rewrote: a row every login wrote,
    // which design.md rules out, and a tenth of the CPU of a login in
    // `otpd serve`. Rows are only appended, so ids still increase.
    r#"
    CREATE TABLE audit_3 (
        id      INTEGER PRIMARY KEY,
        time    INTEGER NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        front   TEXT NOT NULL,
        serial  TEXT,
        user    TEXT,
        realm   TEXT,
        client  TEXT,
        success INTEGER NOT NULL,
        message TEXT NOT NULL
    );
    INSERT INTO audit_3 (id, time, actor, action, front, serial, user, realm, client, success, message)
        SELECT id, time, actor, action, front, serial, user, realm, client, success, message FROM audit;
    DROP TABLE audit;
    ALTER TABLE audit_3 RENAME TO audit;
    CREATE TABLE challenges_3 (
        id             INTEGER PRIMARY KEY,
        transaction_id TEXT NOT NULL,
        serial         TEXT NOT NULL,
        created        INTEGER NOT NULL,
        expires        INTEGER NOT NULL
    );
    INSERT INTO challenges_3 (id, transaction_id, serial, created, expires)
        SELECT id, transaction_id, serial, created, expires FROM challenges;
    DROP TABLE challenges;
    ALTER TABLE challenges_3 RENAME TO challenges;
    CREATE INDEX challenges_transaction ON challenges(transaction_id);
    CREATE INDEX challenges_serial ON challenges(serial);
    "#,
];

/// The schema version this build writes.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

//! The token store: where tokens, their realms, the audit trail and a few
//! facts about the database live. One trait pair, `TokenStore` (opens read
//! and write transactions) and `StoreRead`/`StoreWrite` (what a transaction
//! can do), so that another backend (PostgreSQL, for several nodes) can sit
//! behind the same calls. Each backend has its own folder and config type;
//! no backend type leaks out of its folder.
//!
//! Concurrency rule: one-time use of an OTP is the single compare-and-set
//! `StoreWrite::consume`, which succeeds for exactly one of any number of
//! racing transactions, in this process or another.

pub mod sqlite;

use jiff::Timestamp;

use crate::token::{Consume, Token, TokenType};

pub use sqlite::{SqliteConfig, SqliteStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {message}")]
    Open { path: String, message: String },
    #[error(
        "database {path} was written by a newer otpd (schema version {found}; this otpd knows up to {supported}); upgrade otpd"
    )]
    SchemaTooNew { path: String, found: i64, supported: i64 },
    #[error("a token with serial '{0}' already exists")]
    DuplicateSerial(String),
    #[error("database {path} is busy: another process held its write lock for longer than {timeout_ms} ms")]
    Busy { path: String, timeout_ms: u64 },
    #[error("database {path}: {message}")]
    Backend { path: String, message: String },
    #[error("database {path} holds an invalid value: {message}")]
    Corrupt { path: String, message: String },
}

/// Which tokens to list. Empty filter: all tokens.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    /// Tokens owned by this user (login, realm).
    pub owner: Option<(String, String)>,
    /// Tokens that have this realm among their realms.
    pub realm: Option<String>,
    /// Only tokens without an owner.
    pub unassigned: bool,
}

/// One audit record: who did what to which token, with what result. Never
/// a secret: no PIN, OTP, password or key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub time: Timestamp,
    /// Who acted: the CLI's operating-system user, or the front for logins.
    pub actor: String,
    /// The event name (`validate_check`, `token_init`, ...).
    pub action: String,
    /// `cli`, `radius` or `pam`.
    pub front: String,
    pub serial: Option<String>,
    pub user: Option<String>,
    pub realm: Option<String>,
    pub client: Option<String>,
    pub success: bool,
    pub message: String,
}

/// A challenge handed out to a token in a challenge-response login; the
/// transaction id travels as RADIUS `State`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub transaction_id: String,
    pub serial: String,
    pub created: Timestamp,
    pub expires: Timestamp,
}

/// Reads, inside a transaction (a consistent snapshot).
pub trait StoreRead {
    fn token(&self, serial: &str) -> Result<Option<Token>, StoreError>;
    /// Tokens matching `filter`, in store (creation) order.
    fn tokens(&self, filter: &TokenFilter) -> Result<Vec<Token>, StoreError>;
    /// How many tokens of this type exist (serial numbering).
    fn count_tokens_of_type(&self, token_type: TokenType) -> Result<u64, StoreError>;
    /// The newest `limit` audit records, newest first.
    fn audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The challenges of a transaction, expired ones included.
    fn challenges(&self, transaction_id: &str) -> Result<Vec<Challenge>, StoreError>;
}

/// Writes, inside one write transaction; nothing is visible to others, and
/// nothing is durable, until `commit`. Dropping without commit rolls back.
pub trait StoreWrite: StoreRead {
    /// Fails with `DuplicateSerial` when the serial exists.
    fn insert_token(&mut self, token: &Token) -> Result<i64, StoreError>;
    /// Writes every field of an existing token (admin operations).
    fn update_token(&mut self, token: &Token) -> Result<(), StoreError>;
    fn delete_token(&mut self, serial: &str) -> Result<bool, StoreError>;
    // A login's writes name the token row it read by its id (`Token::id`),
    // not by serial: ids are never reused, so a token deleted and enrolled
    // again under the same serial since the read is left alone (an OTP
    // checked against the old secret never consumes the new token). It is
    // also the row's own key: one index lookup less per login.

    /// The one-time-use compare-and-set: stores the new counter state, resets
    /// the failcounter and counts a successful authentication, but only if the
    /// token is still active, not locked out and its stored count is at most
    /// `consume.max_stored`. Returns whether the token was updated.
    fn consume(&mut self, id: i64, consume: &Consume) -> Result<bool, StoreError>;
    /// A failed attempt: counts it, and raises the failcounter unless it is
    /// at maxfail already (stamping `failcounter_exceeded` when it gets there).
    fn record_failure(&mut self, id: i64, now: Timestamp) -> Result<(), StoreError>;
    /// Sets the failcounter to 0 (and forgets when it reached maxfail).
    fn reset_failcount(&mut self, id: i64) -> Result<(), StoreError>;
    /// The failcounter clear timeout: sets the failcounter to 0 only if it is
    /// still at maxfail with the `failcounter_exceeded` stamp `exceeded` read
    /// before; false when another request cleared or changed it first.
    fn clear_failcount_exceeded(&mut self, id: i64, exceeded: Timestamp) -> Result<bool, StoreError>;
    fn append_audit(&mut self, record: &AuditRecord) -> Result<(), StoreError>;
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    fn insert_challenge(&mut self, challenge: &Challenge) -> Result<(), StoreError>;
    /// Deletes the challenges of a transaction; returns how many there were
    /// (0 when another request used them first: challenges are single-use).
    fn delete_challenges(&mut self, transaction_id: &str) -> Result<usize, StoreError>;
    /// Deletes challenges that expired before `now`: of one token, or all.
    fn delete_expired_challenges(
        &mut self,
        serial: Option<&str>,
        now: Timestamp,
    ) -> Result<usize, StoreError>;
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
    /// Like `commit`, without waiting: `done` is called once with the
    /// result when the commit is durable (or has failed), possibly on
    /// another thread. A backend that groups commits may hold the member
    /// until its group is full or old, another writer commits it, or
    /// `TokenStore::flush` is called: whoever defers a commit must flush
    /// when it has no more work at hand.
    fn commit_then(self: Box<Self>, done: CommitDone);
}

/// What `StoreWrite::commit_then` calls when the commit has settled.
pub type CommitDone = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Runs a batch of `CommitDone` callbacks (`batch`) on the thread that
/// calls them back: the front's chance to do once per batch what each
/// callback would do alone (the daemon writes a group's log lines with
/// one `write`). It must call `batch` exactly once.
pub type CallbackBatch = fn(batch: &mut dyn FnMut());

static CALLBACK_BATCH: std::sync::OnceLock<CallbackBatch> = std::sync::OnceLock::new();

/// Sets how every store of this process runs its batches of callbacks
/// (once per process, like the logger it serves): `false` if it was set.
pub fn wrap_callback_batches(wrapper: CallbackBatch) -> bool {
    CALLBACK_BATCH.set(wrapper).is_ok()
}

/// Calls back a batch of members, through the wrapper when there is one.
fn call_back(members: Vec<(CommitDone, Result<(), StoreError>)>) {
    if members.is_empty() {
        return;
    }
    let mut members = Some(members);
    let mut batch = || {
        for (done, result) in members.take().into_iter().flatten() {
            // A callback that panics ends its own reply, not this thread
            // (members waiting would wait for it forever).
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| done(result)));
        }
    };
    match CALLBACK_BATCH.get() {
        Some(wrapper) => wrapper(&mut batch),
        None => batch(),
    }
}

pub trait TokenStore: Send + Sync + std::fmt::Debug {
    fn read(&self) -> Result<Box<dyn StoreRead + '_>, StoreError>;
    /// A write transaction that holds the write lock from its start, so that
    /// a read-check-write inside it cannot interleave with another writer.
    fn write(&self) -> Result<Box<dyn StoreWrite + '_>, StoreError>;
    /// `read()?.tokens(filter)` without a transaction around it (one query
    /// is a consistent snapshot by itself): the read of every login. A
    /// store that groups commits may answer with its open group's changes
    /// (a later login of that group then sees an earlier one's counter;
    /// both commit or fail together).
    fn read_tokens(&self, filter: &TokenFilter) -> Result<Vec<Token>, StoreError>;
    /// Commits the deferred members (`commit_then`) waiting for their group,
    /// unless a writer is about to join it (that writer commits it then).
    /// Their callbacks run once the commit is durable, here or on a thread
    /// of the store's.
    fn flush(&self);
}

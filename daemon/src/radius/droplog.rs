//! Rate-limited logging, so that a flood of requests never becomes a flood
//! of log lines:
//!
//! * `DropLog`: dropped datagrams. Each kind of drop is logged at most once
//!   per second, with the number suppressed since the last line, and
//!   counted for the totals logged at shutdown.
//! * `StoreLog`: logins the store could not commit (a full disk, a
//!   read-only or vanished file system, a lock held too long). Each is
//!   rejected (a login is never accepted without its committed counter);
//!   the failure is logged once per 10 s with the number of logins it
//!   failed, and the first login the store serves after a logged failure
//!   logs the recovery.
//!
//! Both count through one `Gate`: the once-per-interval rule lives there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_secs(1);
/// The kind of drop of requests beyond what otpd answers.
const OVERLOADED: &str = "overloaded";
/// How often a persisting store failure is logged.
pub const STORE_INTERVAL: Duration = Duration::from_secs(10);

/// Counts events of one kind and says when the next line is due: at most
/// one per `interval`.
#[derive(Debug, Default)]
struct Gate {
    /// When the last line was logged; `None` before the first.
    logged: Option<Instant>,
    /// Events since the last line that it did not report.
    suppressed: u64,
    total: u64,
}

impl Gate {
    /// Counts one event at `now`: `Some(events suppressed before it)` when
    /// it is to be logged, `None` when it is suppressed.
    fn hit(&mut self, now: Instant, interval: Duration) -> Option<u64> {
        self.hits(now, interval, 1)
    }

    /// Counts `n` events at once (see `hit`).
    fn hits(&mut self, now: Instant, interval: Duration, n: u64) -> Option<u64> {
        self.total += n;
        if self.logged.is_some_and(|t| now.duration_since(t) < interval) {
            self.suppressed += n;
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::replace(&mut self.suppressed, 0))
    }
}

#[derive(Debug, Default)]
pub struct DropLog {
    kinds: Mutex<HashMap<&'static str, Gate>>,
}

impl DropLog {
    /// Logs a drop of kind `kind` from `source`, unless one was logged in
    /// the last second; `detail` says more about this datagram.
    pub fn drop(&self, kind: &'static str, source: SocketAddr, detail: &str) {
        match self.count(kind, 1) {
            None => {}
            Some(0) => tracing::warn!("dropped request from {source}: {kind}{detail}"),
            Some(suppressed) => tracing::warn!(
                "dropped request from {source}: {kind}{detail} ({suppressed} more dropped for this reason in the last interval)"
            ),
        }
    }

    /// Logs `n` requests to `local` that the kernel dropped because the
    /// socket's receive buffer was full (the load beyond what the core
    /// threads answer), as the kind `overloaded`.
    pub fn overflowed(&self, local: SocketAddr, n: u32) {
        match self.count(OVERLOADED, u64::from(n)) {
            None => {}
            Some(0) => tracing::warn!(
                "dropped {n} requests to {local}: {OVERLOADED} (the receive buffer was full; the core threads answer what they can)"
            ),
            Some(suppressed) => tracing::warn!(
                "dropped {n} requests to {local}: {OVERLOADED} (the receive buffer was full; the core threads answer what they can; \
                 {suppressed} more dropped for this reason in the last interval)"
            ),
        }
    }

    /// Counts `n` drops of `kind`: `Some(suppressed before)` when a line is due.
    fn count(&self, kind: &'static str, n: u64) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        kinds.entry(kind).or_default().hits(Instant::now(), INTERVAL, n)
    }

    /// All drops so far by kind, e.g. `dropped 12 (overloaded: 12)`.
    pub fn totals(&self) -> String {
        let kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts: Vec<(&str, u64)> = kinds.iter().map(|(k, g)| (*k, g.total)).collect();
        counts.sort();
        let total: u64 = counts.iter().map(|c| c.1).sum();
        if total == 0 {
            return "no request dropped".into();
        }
        let list: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        format!("dropped {total} ({})", list.join(", "))
    }
}

/// Store failures of logins (see the module comment). A recovery is
/// logged only after a failure line, so even a store that fails every
/// other login logs at most two lines per interval.
#[derive(Debug)]
pub struct StoreLog {
    /// Whether the last login the store answered failed: the one atomic a
    /// login reads while all is well.
    failing: AtomicBool,
    state: Mutex<StoreState>,
    interval: Duration,
}

#[derive(Debug)]
struct StoreState {
    gate: Gate,
    /// A failure line was logged and no recovery line since.
    reported: bool,
    /// Logins failed since the last recovery line.
    failed: u64,
}

impl StoreLog {
    pub const fn new(interval: Duration) -> Self {
        StoreLog {
            failing: AtomicBool::new(false),
            state: Mutex::new(StoreState {
                gate: Gate { logged: None, suppressed: 0, total: 0 },
                reported: false,
                failed: 0,
            }),
            interval,
        }
    }

    /// A login was rejected because the store failed with `error`.
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        self.failing.store(true, Ordering::SeqCst);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.failed += 1;
        let Some(suppressed) = state.gate.hit(Instant::now(), self.interval) else { return };
        state.reported = true;
        drop(state);
        if suppressed == 0 {
            tracing::error!("store unavailable, logins are rejected until it recovers: {error}");
        } else {
            tracing::error!(
                "store unavailable, logins are rejected until it recovers: {error} \
                 ({suppressed} more logins failed on the store since the last such line)"
            );
        }
    }

    /// The store answered a login.
    pub fn served(&self) {
        if !self.failing.load(Ordering::Relaxed) || !self.failing.swap(false, Ordering::SeqCst) {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !std::mem::take(&mut state.reported) {
            return;
        }
        let failed = std::mem::take(&mut state.failed);
        drop(state);
        tracing::warn!("store available again: logins are served ({failed} failed on the store meanwhile)");
    }

    /// Logins failed on the store since the last recovery line.
    #[cfg(test)]
    fn failures(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_is_counted_even_when_not_logged() {
        let log = DropLog::default();
        assert_eq!(log.totals(), "no request dropped");
        let source: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for _ in 0..5 {
            log.drop("overloaded", source, "");
        }
        log.drop("unknown client", source, "");
        assert_eq!(log.totals(), "dropped 6 (overloaded: 5, unknown client: 1)");
        log.overflowed(source, 40);
        assert_eq!(
            log.totals(),
            "dropped 46 (overloaded: 45, unknown client: 1)",
            "kernel drops count as overloaded"
        );
    }

    #[test]
    fn gate_lets_one_line_through_per_interval() {
        let mut gate = Gate::default();
        let start = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(gate.hit(start, second), Some(0), "the first event is logged");
        assert_eq!(gate.hit(start + second / 2, second), None);
        assert_eq!(gate.hit(start + second / 2, second), None);
        assert_eq!(gate.hit(start + second, second), Some(2), "the next interval reports the rest");
        assert_eq!(gate.hit(start + second * 3, second), Some(0));
        assert_eq!(gate.total, 5);
    }

    #[test]
    fn store_log_counts_failures_until_the_store_serves_again() {
        let log = StoreLog::new(Duration::from_secs(3600));
        log.served();
        assert_eq!(log.failures(), 0);
        let error = "database otpd.db: database or disk is full";
        for _ in 0..3 {
            log.failed(&error);
        }
        assert_eq!(log.failures(), 3);
        log.served();
        assert_eq!(log.failures(), 0, "recovered: the count starts afresh");
        // Within the interval the next failure logs no line, and so its
        // recovery none either: the count goes on.
        log.failed(&error);
        log.served();
        assert_eq!(log.failures(), 1);
    }
}

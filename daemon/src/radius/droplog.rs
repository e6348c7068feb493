//! Rate-limited logging of dropped datagrams: a flood of bad packets must
//! not become a flood of log lines. Each kind of drop is logged at most once
//! per second, with the number suppressed since the last line, and counted
//! for the totals logged at shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct DropLog {
    /// Per kind: when it was last logged, drops suppressed since, total.
    kinds: Mutex<HashMap<&'static str, (Instant, u64, u64)>>,
}

impl DropLog {
    /// Logs a drop of kind `kind` from `source`, unless one was logged in
    /// the last second; `detail` says more about this datagram.
    pub fn drop(&self, kind: &'static str, source: SocketAddr, detail: &str) {
        let now = Instant::now();
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let entry = kinds.entry(kind).or_insert((now - INTERVAL * 2, 0, 0));
        entry.2 += 1;
        if now.duration_since(entry.0) < INTERVAL {
            entry.1 += 1;
            return;
        }
        let suppressed = std::mem::replace(&mut entry.1, 0);
        entry.0 = now;
        drop(kinds);
        if suppressed > 0 {
            tracing::warn!(
                "dropped request from {source}: {kind}{detail} ({suppressed} more dropped for this reason in the last interval)"
            );
        } else {
            tracing::warn!("dropped request from {source}: {kind}{detail}");
        }
    }
}

impl DropLog {
    /// All drops so far by kind, e.g. `dropped 12 (overloaded: 12)`.
    pub fn totals(&self) -> String {
        let kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts: Vec<(&str, u64)> = kinds.iter().map(|(k, v)| (*k, v.2)).collect();
        counts.sort();
        let total: u64 = counts.iter().map(|c| c.1).sum();
        if total == 0 {
            return "no request dropped".into();
        }
        let list: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        format!("dropped {total} ({})", list.join(", "))
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
    }
}

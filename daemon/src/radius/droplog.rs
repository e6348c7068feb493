//! Rate-limited logging of dropped datagrams: a flood of bad packets must
//! not become a flood of log lines. Each kind of drop is logged at most once
//! per second, with the number suppressed since the last line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct DropLog {
    kinds: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl DropLog {
    /// Logs a drop of kind `kind` from `source`, unless one was logged in
    /// the last second; `detail` says more about this datagram.
    pub fn drop(&self, kind: &'static str, source: SocketAddr, detail: &str) {
        let now = Instant::now();
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let entry = kinds.entry(kind).or_insert((now - INTERVAL * 2, 0));
        if now.duration_since(entry.0) < INTERVAL {
            entry.1 += 1;
            return;
        }
        let suppressed = std::mem::replace(entry, (now, 0)).1;
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

//! The receive turn: which core thread reads the RADIUS sockets.
//!
//! One core thread at a time holds the turn. It reads a datagram, answers
//! it itself (the core call included), reads the next, and commits the
//! open group when the sockets have nothing more, before it blocks in
//! `poll`. A request thus never passes from thread to thread on its way
//! in, and the one thread taking request after request never waits for
//! the store's writer lock: on two cores every hand-off costs a wake-up,
//! which costs more than the login.
//!
//! A request may be slow (a PIN hash, a userstore that does not answer).
//! While the holder is in a request, one thread standing by watches: when
//! the holder has been in the same request for `stall`, the watcher takes
//! the turn, so that the requests behind it are read and answered; the
//! old holder finishes its request and stands by. Up to every core thread
//! may be stuck this way; beyond, datagrams wait in the socket's receive
//! buffer, and what does not fit there the kernel drops and counts (see
//! `server`). Between requests the holder is not watched (another could
//! only wait for the writer lock it holds while committing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The shortest sleep of the watcher, so that it never spins.
const WATCH_MIN: Duration = Duration::from_micros(50);

#[derive(Debug)]
pub struct Turn {
    inner: Mutex<Inner>,
    /// Threads standing by, not watching.
    standby: Condvar,
    /// The watching thread.
    watch: Condvar,
    stall: Duration,
    /// Mirrors `Inner::stopped`, for the holder's check between requests.
    stopped: AtomicBool,
}

#[derive(Debug)]
struct Inner {
    /// The thread holding the turn...
    holder: Option<usize>,
    /// ...in a request since then (`None`: between requests, or waiting
    /// for datagrams).
    busy_since: Option<Instant>,
    /// A thread watches the holder...
    watching: bool,
    /// ...sleeping until the next request begins (the holder is between
    /// requests: an idle daemon does not wake).
    watcher_idle: bool,
    stopped: bool,
}

impl Inner {
    /// The holder has been in one request for `stall`.
    fn stalled(&self, stall: Duration) -> bool {
        self.busy_since.is_some_and(|since| since.elapsed() >= stall)
    }
}

impl Turn {
    /// A free turn; its holder counts as stuck after `stall` in a request.
    pub fn new(stall: Duration) -> Self {
        Turn {
            inner: Mutex::new(Inner {
                holder: None,
                busy_since: None,
                watching: false,
                watcher_idle: false,
                stopped: false,
            }),
            standby: Condvar::new(),
            watch: Condvar::new(),
            stall,
            stopped: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until thread `me` holds the turn (it was free, or its holder
    /// stuck): `true`, or `false` once stopped.
    pub fn take(&self, me: usize) -> bool {
        let mut inner = self.lock();
        loop {
            if inner.stopped {
                return false;
            }
            if inner.holder.is_none() || inner.stalled(self.stall) {
                inner.holder = Some(me);
                inner.busy_since = None;
                return true;
            }
            if inner.watching {
                inner = self.standby.wait(inner).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            inner.watching = true;
            inner = match inner.busy_since {
                Some(since) => {
                    let left = self.stall.saturating_sub(since.elapsed()).max(WATCH_MIN);
                    self.watch.wait_timeout(inner, left).unwrap_or_else(|p| p.into_inner()).0
                }
                None => {
                    inner.watcher_idle = true;
                    self.watch.wait(inner).unwrap_or_else(|p| p.into_inner())
                }
            };
            inner.watching = false;
            inner.watcher_idle = false;
            if inner.holder.is_none() || inner.stalled(self.stall) || inner.stopped {
                // Leaving the watch (taking the turn, or stopping): another
                // thread standing by takes it over.
                self.standby.notify_one();
            }
        }
    }

    /// The holder `me` begins a request. `false` when `me` does not hold
    /// the turn.
    pub fn begin(&self, me: usize) -> bool {
        let mut inner = self.lock();
        if inner.holder != Some(me) {
            return false;
        }
        inner.busy_since = Some(Instant::now());
        if inner.watcher_idle {
            inner.watcher_idle = false;
            drop(inner);
            self.watch.notify_one();
        }
        true
    }

    /// Thread `me` ended its request: `true` when it still holds the turn,
    /// `false` when a watcher took it meanwhile (`me` then stands by).
    pub fn end(&self, me: usize) -> bool {
        let mut inner = self.lock();
        if inner.holder != Some(me) {
            return false;
        }
        inner.busy_since = None;
        true
    }

    /// No more turns: `take` returns `false` from now on.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.stopped.store(true, Ordering::SeqCst);
        self.standby.notify_all();
        self.watch.notify_all();
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    const STALL: Duration = Duration::from_millis(20);

    /// Thread `me` takes the turn and reports when it got it (or that the
    /// turn stopped).
    fn stand_by(turn: &Arc<Turn>, me: usize) -> mpsc::Receiver<Option<Instant>> {
        let (tx, rx) = mpsc::channel();
        stand_by_to(turn, me, tx);
        rx
    }

    fn stand_by_to(turn: &Arc<Turn>, me: usize, tx: mpsc::Sender<Option<Instant>>) {
        let turn = turn.clone();
        thread::spawn(move || {
            let got = turn.take(me);
            let _ = tx.send(got.then(Instant::now));
        });
    }

    #[test]
    fn a_free_turn_is_taken_at_once_and_a_held_one_kept() {
        let turn = Arc::new(Turn::new(STALL));
        assert!(turn.take(0));
        let other = stand_by(&turn, 1);
        // The holder between requests (waiting for datagrams) is never stuck.
        assert!(other.recv_timeout(STALL * 5).is_err(), "the turn is held");
        assert!(turn.begin(0) && turn.end(0), "the holder keeps its turn");
        assert!(other.try_recv().is_err());
        turn.stop();
        assert_eq!(other.recv_timeout(Duration::from_secs(5)).unwrap(), None);
    }

    #[test]
    fn a_holder_stuck_in_a_request_loses_the_turn_after_the_stall() {
        let turn = Arc::new(Turn::new(STALL));
        assert!(turn.take(0));
        // The holder between requests: the watcher sleeps until one begins.
        let (tx, standing) = mpsc::channel();
        stand_by_to(&turn, 1, tx.clone());
        stand_by_to(&turn, 2, tx);
        thread::sleep(STALL * 2);
        let began = Instant::now();
        assert!(turn.begin(0));
        let got = standing
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .expect("a thread standing by takes the turn");
        assert!(got.duration_since(began) >= STALL, "not before the stall");
        assert!(!turn.end(0), "the stuck holder learns it lost the turn");
        assert!(standing.recv_timeout(STALL * 3).is_err(), "one thread took it, the other stands by");
        turn.stop();
        assert_eq!(
            standing.recv_timeout(Duration::from_secs(5)).unwrap(),
            None,
            "stop ends the other's wait"
        );
    }

    #[test]
    fn a_holder_that_comes_back_in_time_keeps_the_turn() {
        let turn = Arc::new(Turn::new(STALL));
        assert!(turn.take(0));
        let watcher = stand_by(&turn, 1);
        for _ in 0..20 {
            assert!(turn.begin(0));
            thread::sleep(STALL / 10);
            assert!(turn.end(0), "quick requests keep the turn");
        }
        assert!(watcher.try_recv().is_err());
        turn.stop();
        assert_eq!(watcher.recv_timeout(Duration::from_secs(5)).unwrap(), None, "stop ends the wait");
        assert!(!turn.take(2), "no turn after stop");
        assert!(turn.stopped());
    }

    #[test]
    fn every_waiting_thread_ends_at_stop() {
        let turn = Arc::new(Turn::new(STALL));
        assert!(turn.take(0));
        let waiting: Vec<_> = (1..6).map(|me| stand_by(&turn, me)).collect();
        thread::sleep(STALL);
        turn.stop();
        for w in waiting {
            assert_eq!(w.recv_timeout(Duration::from_secs(5)).unwrap(), None);
        }
    }
}

//! The WAL sync thread of a process that defers commits (the daemon): the
//! writer commits a group into the WAL without syncing it
//! (`synchronous = NORMAL`) and goes on with the next group, while this
//! thread makes the committed groups durable (one `fdatasync` of the WAL
//! covers every group written before it) and only then calls back their
//! members. So the disk's sync and the replies of one group overlap with
//! the next group's logins instead of holding up the thread that runs
//! them, and no member hears of a commit before it would survive a power
//! loss. A member that waits (`commit`, one login on a thread of its own)
//! syncs on its own thread when no sync is running, rather than wake this
//! one and be woken back: two thread wake-ups cost more than the sync.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::super::{CommitDone, StoreError, call_back};

pub(super) struct WalSync {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when there is something to sync or call back, or at stop.
    work: Condvar,
    /// Signalled after each sync.
    synced: Condvar,
    wal: File,
    /// The database, for error messages.
    display: String,
}

#[derive(Default)]
struct State {
    /// Groups before this number are committed to the WAL...
    committed: u64,
    /// ...and before this one, synced (or failed to).
    synced: u64,
    /// A sync is running (on this thread or a waiter's).
    syncing: bool,
    /// Recent failed syncs: the groups `[from, to)` and why.
    failed: Vec<(u64, u64, String)>,
    /// Members of committed groups, to call back once synced.
    pending: Vec<(u64, CommitDone)>,
    stop: bool,
}

impl State {
    /// How the sync of group `epoch` (synced already) ended.
    fn result(&self, epoch: u64) -> Result<(), String> {
        match self.failed.iter().find(|(from, to, _)| (*from..*to).contains(&epoch)) {
            Some((_, _, message)) => Err(message.clone()),
            None => Ok(()),
        }
    }
}

impl WalSync {
    /// Opens the WAL file at `wal` and starts the thread.
    pub(super) fn start(wal: &Path, display: &str) -> std::io::Result<WalSync> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            synced: Condvar::new(),
            wal: File::open(wal)?,
            display: display.to_owned(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new().name("otpd-walsync".into()).spawn(move || shared.run())?
        };
        Ok(WalSync { shared, thread: Some(thread) })
    }

    /// Hands over the members of committed groups: each is called back
    /// once its group is synced.
    pub(super) fn hand(&self, members: Vec<(u64, CommitDone)>) {
        let Some(last) = members.iter().map(|(epoch, _)| *epoch).max() else { return };
        let mut state = self.shared.lock();
        state.committed = state.committed.max(last + 1);
        state.pending.extend(members);
        drop(state);
        self.shared.work.notify_one();
    }

    /// Nothing to sync and no sync running: a group committed now is
    /// synced at once (or right after the thread has called back the last
    /// group's members, which counts as idle).
    pub(super) fn idle(&self) -> bool {
        let state = self.shared.lock();
        !state.syncing && state.pending.is_empty() && state.committed <= state.synced
    }

    /// Returns once the committed group `epoch` is synced: by the sync
    /// running now, or else by one on this thread.
    pub(super) fn wait(&self, epoch: u64) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        state.committed = state.committed.max(epoch + 1);
        while state.synced <= epoch {
            state = if state.syncing {
                self.shared.synced.wait(state).unwrap_or_else(|p| p.into_inner())
            } else {
                self.shared.sync(state)
            };
        }
        let result = state.result(epoch).map_err(|message| self.shared.error(message));
        // The thread skipped its turn while this one synced: members handed
        // over meanwhile, or a stop, are its to handle.
        let wake = !state.pending.is_empty() || state.stop;
        drop(state);
        if wake {
            self.shared.work.notify_one();
        }
        result
    }
}

impl std::fmt::Debug for WalSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        write!(f, "WalSync {{ committed: {}, synced: {} }}", state.committed, state.synced)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, message: String) -> StoreError {
        StoreError::Backend { path: self.display.clone(), message }
    }

    /// Syncs every group committed so far (`state.syncing` held meanwhile,
    /// the lock not) and wakes whoever waits for it.
    fn sync<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let (from, to) = (state.synced, state.committed);
        state.syncing = true;
        drop(state);
        let synced = self.wal.sync_data();
        let mut state = self.lock();
        state.syncing = false;
        if let Err(e) = synced {
            state.failed.push((from, to, format!("the commit failed: cannot sync the WAL: {e}")));
            if state.failed.len() > 64 {
                state.failed.remove(0);
            }
        }
        state.synced = state.synced.max(to);
        self.synced.notify_all();
        state
    }

    fn run(&self) {
        loop {
            let mut state = self.lock();
            // Nothing to do, or a waiter is syncing (it wakes us after).
            while (state.pending.is_empty() && state.committed <= state.synced && !state.stop)
                || state.syncing
            {
                state = self.work.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if state.pending.is_empty() && state.committed <= state.synced {
                return; // stopped, with nothing left
            }
            // Every pending member's group is before `committed`: one sync
            // covers them all.
            let pending = std::mem::take(&mut state.pending);
            if state.committed > state.synced {
                state = self.sync(state);
            }
            let calls: Vec<_> = pending
                .into_iter()
                .map(|(epoch, done)| (done, state.result(epoch).map_err(|message| self.error(message))))
                .collect();
            drop(state);
            call_back(calls);
        }
    }
}

impl Drop for WalSync {
    /// Syncs and calls back what is pending, then ends the thread. Dropped
    /// on that very thread (a callback let go of the last owner of the
    /// store), it leaves it to end by itself.
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A WAL sync thread on a WAL file in a temporary directory.
    fn started() -> (tempfile::TempDir, WalSync) {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("db-wal");
        std::fs::write(&wal, b"frames").unwrap();
        let sync = WalSync::start(&wal, "db").unwrap();
        (dir, sync)
    }

    #[test]
    fn members_are_called_back_after_the_sync_and_waiters_return() {
        let (_dir, sync) = started();
        let (tx, rx) = mpsc::channel();
        let members: Vec<(u64, CommitDone)> = (0..3)
            .map(|epoch| {
                let tx = tx.clone();
                let done: CommitDone = Box::new(move |r| tx.send((epoch, r.is_ok())).unwrap());
                (epoch, done)
            })
            .collect();
        sync.hand(members);
        let mut got: Vec<_> = (0..3).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        got.sort();
        assert_eq!(got, [(0, true), (1, true), (2, true)]);
        assert!(sync.wait(5).is_ok(), "a waiting member's group is synced too");
        assert!(sync.shared.lock().synced > 5);
        // Members handed just before the drop are still called back.
        let tx2 = tx.clone();
        sync.hand(vec![(6, Box::new(move |r: Result<(), StoreError>| tx2.send((6, r.is_ok())).unwrap()))]);
        drop(sync);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), (6, true));
    }

    #[test]
    fn waiters_sync_on_their_own_threads_while_members_are_handed_over() {
        let (_dir, sync) = started();
        let sync = Arc::new(sync);
        let (tx, rx) = mpsc::channel();
        let epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let next = || epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (sync, tx) = (sync.clone(), tx.clone());
                scope.spawn(move || {
                    for _ in 0..100 {
                        let e = next();
                        if t % 2 == 0 {
                            assert!(sync.wait(e).is_ok());
                            assert!(sync.shared.lock().synced > e, "group {e} synced when wait returns");
                        } else {
                            let tx = tx.clone();
                            sync.hand(vec![(
                                e,
                                Box::new(move |r: Result<(), StoreError>| tx.send(r.is_ok()).unwrap()),
                            )]);
                        }
                    }
                });
            }
        });
        let called: Vec<bool> = (0..200).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        assert!(called.iter().all(|ok| *ok));
        let state = sync.shared.lock();
        assert!(!state.syncing && state.synced == state.committed, "{:?}", (state.synced, state.committed));
        drop(state);
        // The thread ends at once on drop: no sync of a waiter left it asleep.
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            drop(Arc::into_inner(sync).unwrap());
            done_tx.send(()).unwrap();
        });
        assert!(done_rx.recv_timeout(Duration::from_secs(10)).is_ok(), "the drop hung");
    }

    #[test]
    fn a_panicking_callback_and_a_drop_on_its_own_thread_leave_the_thread_sound() {
        let (_dir, sync) = started();
        let sync = Arc::new(Mutex::new(Some(sync)));
        let (tx, rx) = mpsc::channel();
        let held = sync.lock().unwrap();
        let walsync = held.as_ref().unwrap();
        walsync.hand(vec![(0, Box::new(|_| panic!("a reply that panics")))]);
        assert!(walsync.wait(1).is_ok(), "later groups are still synced");
        // The last owner let go in a callback, on the sync thread itself.
        let owner = sync.clone();
        walsync.hand(vec![(
            2,
            Box::new(move |r: Result<(), StoreError>| {
                drop(owner.lock().unwrap().take());
                tx.send(r.is_ok()).unwrap();
            }),
        )]);
        drop(held);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    }
}

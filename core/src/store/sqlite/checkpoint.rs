//! The checkpoint thread of a process that defers commits (the daemon).
//!
//! SQLite copies the WAL back into the database (a checkpoint) in the
//! connection that commits, once the WAL holds 1 000 frames: on the writer,
//! so every login of the process waits for it (the pages copied, then an
//! fsync of the WAL and one of the database: 2-5 ms, several times a
//! second under load). With `durability = "process-crash"` that set the
//! p99 of a login (about 10 ms, at any rate; BENCHMARKS.md). Here the
//! writer's own checkpoints are off, and the bulk of each checkpoint is
//! copied by a connection of this thread (`PASSIVE`: it waits for no
//! reader or writer) while the writer goes on committing. What the writer
//! committed meanwhile it copies itself, between two groups (`catch_up`):
//! fewer pages, still one fsync of the database.
//!
//! That last part must be the writer's: the WAL starts over at its
//! beginning only when a write transaction begins with every frame
//! copied, and only the writer can be sure that no group commits between
//! that copy and its next group. A WAL that never started over would grow
//! for as long as the load lasts, and each sync of it would also commit
//! its new size: measured, that doubled the median login.
//!
//! Nothing is lost when a checkpoint fails or is skipped: the frames stay in
//! the WAL, and the next request tries again.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rusqlite::Connection;

/// WAL frames (pages) that call for a checkpoint: SQLite's own default.
pub(super) const CHECKPOINT_FRAMES: u32 = 1000;
/// After a failed checkpoint (another process was checkpointing, or an
/// error), the next try waits for this many more frames, so that a
/// checkpoint that keeps failing is not tried on every commit.
const RETRY_FRAMES: u32 = 100;

pub(super) struct Checkpoints {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a checkpoint is requested, and at stop.
    work: Condvar,
}

/// When to checkpoint; the logic of the thread and the writer's hook,
/// apart from SQLite so that it can be tested alone.
#[derive(Debug, PartialEq, Eq)]
struct State {
    /// The WAL's frames after the writer's last commit.
    frames: u32,
    /// Times the WAL started over (seen as fewer frames than before).
    restarts: u64,
    /// The frames that call for the next checkpoint.
    next_at: u32,
    /// A checkpoint is asked for, or running.
    requested: bool,
    /// The thread's checkpoint left frames for the writer to copy.
    catch_up: bool,
    /// Checkpoints the thread completed (for tests and `Debug`).
    completed: u64,
    stop: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            frames: 0,
            restarts: 0,
            next_at: CHECKPOINT_FRAMES,
            requested: false,
            catch_up: false,
            completed: 0,
            stop: false,
        }
    }
}

impl State {
    /// The writer committed and the WAL now holds `frames`: whether the
    /// thread is to be woken for a checkpoint.
    fn committed(&mut self, frames: u32) -> bool {
        if frames < self.frames {
            // Started over: every frame before was copied.
            self.restarts += 1;
            self.next_at = CHECKPOINT_FRAMES;
            self.catch_up = false;
        }
        self.frames = frames;
        let due = frames >= self.next_at && !self.requested;
        self.requested |= due;
        due
    }

    /// The thread's checkpoint, begun after `restarts` restarts, is done.
    /// It copied the frames there were when it began; what the writer
    /// committed since, or commits in the group open now, is the writer's
    /// to copy before its next group. (When nothing is left, the writer's
    /// checkpoint finds so at once, with no sync.)
    fn checkpointed(&mut self, restarts: u64) {
        self.requested = false;
        self.completed += 1;
        if self.restarts != restarts {
            return; // the WAL started over meanwhile: nothing is left
        }
        self.next_at = self.frames.saturating_add(CHECKPOINT_FRAMES);
        self.catch_up = true;
    }

    /// The thread's checkpoint did not run (busy or an error).
    fn failed(&mut self) {
        self.requested = false;
        self.next_at = self.frames.saturating_add(RETRY_FRAMES);
    }
}

impl Checkpoints {
    /// Starts the thread on `conn`, a connection of its own to the database.
    pub(super) fn start(conn: Connection) -> std::io::Result<Checkpoints> {
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), work: Condvar::new() });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new().name("otpd-checkpoint".into()).spawn(move || shared.run(conn))?
        };
        Ok(Checkpoints { shared, thread: Some(thread) })
    }

    /// Makes `writer` leave its checkpoints to this thread: its WAL hook
    /// (which SQLite's automatic checkpoint uses too, and which this
    /// replaces) reports each commit here.
    pub(super) fn take_over(&self, writer: &mut Connection) -> rusqlite::Result<()> {
        let shared = self.shared.clone();
        writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames: std::ffi::c_int| {
            let due = shared.lock().committed(u32::try_from(frames).unwrap_or(0));
            if due {
                shared.work.notify_one();
            }
            Ok(())
        }))
    }

    /// Whether the writer, before its next group, is to copy what the
    /// thread's last checkpoint left (once: this clears it).
    pub(super) fn take_catch_up(&self) -> bool {
        std::mem::take(&mut self.shared.lock().catch_up)
    }

    #[cfg(test)]
    pub(super) fn completed(&self) -> u64 {
        self.shared.lock().completed
    }
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        write!(f, "Checkpoints {{ frames: {}, completed: {} }}", state.frames, state.completed)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, conn: Connection) {
        loop {
            let restarts = {
                let mut state = self.lock();
                while !state.requested && !state.stop {
                    state = self.work.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                if state.stop {
                    return;
                }
                state.restarts
            };
            // Its first column is 1 when another connection (of another
            // process) was checkpointing: this one then did nothing.
            let busy = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
            let mut state = self.lock();
            match busy {
                Ok(0) => state.checkpointed(restarts),
                _ => state.failed(),
            }
        }
    }
}

impl Drop for Checkpoints {
    /// Ends the thread (after the checkpoint it is running, if any).
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_asked_for_once_the_wal_holds_enough_frames_and_once_only() {
        let mut state = State::default();
        assert!(!state.committed(10));
        assert!(!state.committed(CHECKPOINT_FRAMES - 1));
        assert!(state.committed(CHECKPOINT_FRAMES), "due");
        assert!(!state.committed(CHECKPOINT_FRAMES + 5), "asked for already, or running");
        // The thread copied the frames there were when it began; the writer
        // committed more meanwhile: those are the writer's to copy.
        state.checkpointed(0);
        assert!(state.catch_up && !state.requested);
        assert!(!state.committed(CHECKPOINT_FRAMES + 10), "not due again before the WAL grows more");
        assert_eq!(state.next_at, 2 * CHECKPOINT_FRAMES + 5);
    }

    #[test]
    fn a_wal_that_started_over_is_counted_from_its_beginning_again() {
        let mut state = State::default();
        assert!(state.committed(CHECKPOINT_FRAMES));
        state.checkpointed(0);
        assert!(state.catch_up);
        // The writer copied the rest and its next group started the WAL over.
        assert!(!state.committed(4));
        assert_eq!((state.restarts, state.next_at, state.catch_up), (1, CHECKPOINT_FRAMES, false));
        assert!(state.committed(CHECKPOINT_FRAMES), "due again at the same size as the first time");
    }

    #[test]
    fn a_restart_during_the_thread_s_checkpoint_is_not_undone_by_it() {
        let mut state = State::default();
        assert!(state.committed(CHECKPOINT_FRAMES));
        let restarts = state.restarts;
        // The checkpoint copied every frame and, before it reported, the
        // writer's next group started the WAL over.
        assert!(!state.committed(3));
        state.checkpointed(restarts);
        assert_eq!((state.next_at, state.catch_up, state.requested), (CHECKPOINT_FRAMES, false, false));
        assert_eq!(state.completed, 1);
    }

    #[test]
    fn a_failed_checkpoint_is_tried_again_after_a_few_more_frames_not_at_each_commit() {
        let mut state = State::default();
        assert!(state.committed(CHECKPOINT_FRAMES));
        state.failed();
        assert!(!state.committed(CHECKPOINT_FRAMES + 1));
        assert!(!state.committed(CHECKPOINT_FRAMES + RETRY_FRAMES - 1));
        assert!(state.committed(CHECKPOINT_FRAMES + RETRY_FRAMES));
        assert!(!state.catch_up);
    }

    #[test]
    fn the_thread_checkpoints_what_a_writer_commits_and_stops_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let checkpoints = Checkpoints::start(Connection::open(&path).unwrap()).unwrap();
        checkpoints.take_over(&mut writer).unwrap();
        // 1 200 commits of a page each: past `CHECKPOINT_FRAMES`.
        for _ in 0..1200 {
            writer.execute("INSERT INTO t VALUES (zeroblob(3000))", []).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while checkpoints.completed() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(checkpoints.completed() >= 1, "{checkpoints:?}");
        // The writer's automatic checkpoint is off: only the thread's ran,
        // so the WAL grew to about the checkpoint size before it started over.
        let wal = std::fs::metadata(dir.path().join("db-wal")).unwrap().len();
        assert!(wal >= u64::from(CHECKPOINT_FRAMES) * 4096, "WAL of {wal} bytes");
        // Every frame copied: the next write transaction starts the WAL over.
        if checkpoints.take_catch_up() {
            writer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
        }
        writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert!(checkpoints.shared.lock().restarts >= 1, "{checkpoints:?}");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(checkpoints);
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok(), "the drop hung");
    }
}

//! The bounded queue between the receive loops and the core threads: a
//! mutex and condition variables, not a spinning channel (on two cores,
//! the yields of a dozen idle threads cost more than the logins).
//!
//! Work goes to as few threads as keep up with it. A worker that comes
//! back from a request (or from committing a group) takes the next one
//! itself, and a push wakes a sleeping worker only when no worker is busy:
//! one thread taking request after request never waits for the store's
//! writer lock and never hands a request to another thread, which on two
//! cores cuts the CPU a login costs by a third (40 µs instead of 58 µs
//! with sixteen threads taking turns). A request may be slow (a PIN hash,
//! a userstore that does not answer), so while workers are in requests,
//! one sleeper watches: when none of them has come back for `stall`, it
//! takes the next request itself (and the next sleeper watches), up to
//! every worker. A worker committing a group is not watched: another could
//! only wait for the writer lock it holds.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why `push` did not queue the item (handed back).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<T> {
    Full(T),
    Closed(T),
}

/// How a `pop` that does not wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<T> {
    Item(T),
    /// Nothing queued: the worker is expected to commit what it left
    /// open, then `pop_wait`.
    Empty,
    Closed,
}

/// How a `pop_wait` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Wait<T> {
    Item(T),
    /// Workers are stuck in requests (none came back for `stall`) and
    /// nothing is queued: this worker may do what they left waiting
    /// (commit a group).
    Stalled,
    /// The queue is closed and empty.
    Closed,
}

/// The shortest sleep of the watcher, so that it never spins.
const WATCH_MIN: Duration = Duration::from_micros(50);

#[derive(Debug)]
pub struct Queue<T> {
    inner: Mutex<Inner<T>>,
    /// Sleeping workers.
    ready: Condvar,
    /// The watching worker.
    watch: Condvar,
    capacity: usize,
    stall: Duration,
}

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
    /// Workers in a request...
    in_request: usize,
    /// ...and between requests (committing), back at once.
    between: usize,
    /// Workers asleep on `ready`...
    sleeping: usize,
    /// ...and of them, those notified and not yet awake.
    woken: usize,
    /// A worker sleeps on `watch` (with a timeout).
    watching: bool,
    /// The last pop: when a worker last came back for work.
    progress: Instant,
}

impl<T> Inner<T> {
    fn busy(&self) -> bool {
        self.in_request + self.between > 0
    }

    /// Workers are in requests and none has come back for `stall`.
    fn stalled(&self, stall: Duration) -> bool {
        self.in_request > 0 && self.progress.elapsed() >= stall
    }
}

/// What a worker is doing, as the queue counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    InRequest,
    Between,
}

/// One worker's side of the queue.
pub struct Worker<'q, T> {
    queue: &'q Queue<T>,
    state: State,
}

impl<T> Queue<T> {
    /// A queue of at most `capacity` items, whose busy workers count as
    /// stuck when none came back for `stall`.
    pub fn new(capacity: usize, stall: Duration) -> Self {
        Queue {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(capacity),
                closed: false,
                in_request: 0,
                between: 0,
                sleeping: 0,
                woken: 0,
                watching: false,
                progress: Instant::now(),
            }),
            ready: Condvar::new(),
            watch: Condvar::new(),
            capacity,
            stall,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker, idle until it takes an item.
    pub fn worker(&self) -> Worker<'_, T> {
        Worker { queue: self, state: State::Idle }
    }

    pub fn push(&self, item: T) -> Result<(), Refused<T>> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(Refused::Closed(item));
        }
        if inner.items.len() >= self.capacity {
            return Err(Refused::Full(item));
        }
        inner.items.push_back(item);
        if !inner.busy() {
            // Nobody comes back for it: wake a worker, unless one is coming.
            if inner.woken == 0 {
                if inner.sleeping > 0 {
                    inner.woken += 1;
                    drop(inner);
                    self.ready.notify_one();
                } else if inner.watching {
                    drop(inner);
                    self.watch.notify_one();
                }
            }
        } else if inner.in_request > 0 && !inner.watching && inner.sleeping > inner.woken {
            // A busy worker takes it; a sleeper watches in case it is stuck.
            inner.woken += 1;
            drop(inner);
            self.ready.notify_one();
        }
        Ok(())
    }

    /// No more pushes; the items queued are still popped, by any worker.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.watch.notify_all();
    }
}

impl<T> Worker<'_, T> {
    fn set(&mut self, inner: &mut Inner<T>, state: State) {
        match self.state {
            State::Idle => {}
            State::InRequest => inner.in_request -= 1,
            State::Between => inner.between -= 1,
        }
        match state {
            State::Idle => {}
            State::InRequest => inner.in_request += 1,
            State::Between => inner.between += 1,
        }
        self.state = state;
    }

    /// The item this worker may take now: any, when it came back for
    /// more, when no worker is busy, when the busy ones are stuck, or once
    /// the queue is closed.
    fn take(&mut self, inner: &mut Inner<T>) -> Option<T> {
        let may =
            self.state != State::Idle || !inner.busy() || inner.stalled(self.queue.stall) || inner.closed;
        if !may {
            return None;
        }
        let item = inner.items.pop_front()?;
        inner.progress = Instant::now();
        self.set(inner, State::InRequest);
        Some(item)
    }

    /// The next item, without waiting. `Closed` only once the queue is
    /// closed and empty.
    pub fn pop(&mut self) -> Pop<T> {
        let mut inner = self.queue.lock();
        if let Some(item) = self.take(&mut inner) {
            return Pop::Item(item);
        }
        if inner.closed && inner.items.is_empty() {
            return Pop::Closed;
        }
        if self.state == State::InRequest {
            self.set(&mut inner, State::Between);
        }
        Pop::Empty
    }

    /// The next item, waiting for one.
    pub fn pop_wait(&mut self) -> Wait<T> {
        let queue = self.queue;
        let mut inner = queue.lock();
        loop {
            if let Some(item) = self.take(&mut inner) {
                return Wait::Item(item);
            }
            self.set(&mut inner, State::Idle);
            if inner.closed && inner.items.is_empty() {
                return Wait::Closed;
            }
            if !inner.watching && inner.in_request > 0 {
                inner.watching = true;
                let wait = if inner.items.is_empty() {
                    queue.stall
                } else {
                    queue.stall.saturating_sub(inner.progress.elapsed()).max(WATCH_MIN)
                };
                inner = queue.watch.wait_timeout(inner, wait).unwrap_or_else(|p| p.into_inner()).0;
                inner.watching = false;
                if inner.items.is_empty() && inner.stalled(queue.stall) {
                    // Counted from now: once per stall, not at every turn.
                    inner.progress = Instant::now();
                    return Wait::Stalled;
                }
            } else {
                inner.sleeping += 1;
                inner = queue.ready.wait(inner).unwrap_or_else(|p| p.into_inner());
                inner.sleeping -= 1;
                inner.woken = inner.woken.saturating_sub(1);
            }
        }
    }
}

impl<T> Drop for Worker<'_, T> {
    /// A worker that ends busy (a panic) leaves its items to the others.
    fn drop(&mut self) {
        if self.state == State::Idle {
            return;
        }
        let mut inner = self.queue.lock();
        self.set(&mut inner, State::Idle);
        if !inner.busy() && !inner.items.is_empty() {
            drop(inner);
            self.queue.ready.notify_one();
            self.queue.watch.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    const NEVER: Duration = Duration::from_secs(3600);

    #[test]
    fn bounded_in_order_and_closed() {
        let q = Queue::new(2, NEVER);
        let mut w = q.worker();
        assert_eq!(q.push(1), Ok(()));
        assert_eq!(q.push(2), Ok(()));
        assert_eq!(q.push(3), Err(Refused::Full(3)));
        assert_eq!(w.pop(), Pop::Item(1));
        q.close();
        assert_eq!(q.push(4), Err(Refused::Closed(4)));
        assert_eq!(w.pop_wait(), Wait::Item(2));
        assert_eq!(w.pop(), Pop::Closed);
        assert_eq!(w.pop_wait(), Wait::Closed);
    }

    #[test]
    fn sleeping_workers_get_every_item_and_wake_on_close() {
        let q = Arc::new(Queue::new(64, Duration::from_millis(1)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                thread::spawn(move || {
                    let mut w = q.worker();
                    let mut got = Vec::new();
                    loop {
                        match w.pop_wait() {
                            Wait::Item(item) => got.push(item),
                            Wait::Stalled => {}
                            Wait::Closed => return got,
                        }
                    }
                })
            })
            .collect();
        let mut pushed = 0;
        while pushed < 1000 {
            if q.push(pushed).is_ok() {
                pushed += 1;
            } else {
                thread::yield_now();
            }
        }
        q.close();
        let mut all: Vec<i32> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    /// Spawns a worker that sends what it pops (`None` for a stall), with
    /// the time it got it.
    fn idle_worker(q: &Arc<Queue<i32>>) -> (mpsc::Receiver<(Option<i32>, Instant)>, thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let q = q.clone();
        let handle = thread::spawn(move || {
            let mut w = q.worker();
            loop {
                let got = match w.pop_wait() {
                    Wait::Item(item) => Some(item),
                    Wait::Stalled => None,
                    Wait::Closed => return,
                };
                let _ = tx.send((got, Instant::now()));
            }
        });
        // Let it fall asleep.
        thread::sleep(Duration::from_millis(50));
        (rx, handle)
    }

    #[test]
    fn a_running_worker_keeps_the_work_while_it_makes_progress() {
        let q = Arc::new(Queue::new(8, NEVER));
        let mut busy = q.worker();
        q.push(1).unwrap();
        assert_eq!(busy.pop(), Pop::Item(1));
        let (idle, handle) = idle_worker(&q);
        q.push(2).unwrap();
        thread::sleep(Duration::from_millis(50));
        assert!(idle.try_recv().is_err(), "a sleeper took work from a running worker");
        assert_eq!(busy.pop(), Pop::Item(2));
        // With no worker running, a push wakes one.
        drop(busy);
        q.push(4).unwrap();
        assert_eq!(idle.recv_timeout(Duration::from_secs(10)).unwrap().0, Some(4));
        q.close();
        handle.join().unwrap();
    }

    #[test]
    fn work_behind_a_stalled_worker_goes_to_another_after_the_stall() {
        let stall = Duration::from_millis(30);
        let q = Arc::new(Queue::new(8, stall));
        let mut stuck = q.worker();
        q.push(1).unwrap();
        assert_eq!(stuck.pop(), Pop::Item(1));
        let popped = Instant::now();
        let (idle, handle) = idle_worker(&q);
        // Nothing queued: the stall is reported (the worker then commits
        // what the stuck one left in the open group).
        let (got, _) = idle.recv_timeout(Duration::from_secs(10)).expect("the stall was reported");
        assert_eq!(got, None);
        q.push(2).unwrap();
        let taken = loop {
            if let (Some(item), at) =
                idle.recv_timeout(Duration::from_secs(10)).expect("the stall was noticed")
            {
                assert_eq!(item, 2);
                break at;
            }
        };
        assert!(taken.duration_since(popped) >= stall, "taken before the stall");
        q.close();
        drop(stuck);
        handle.join().unwrap();
    }
}

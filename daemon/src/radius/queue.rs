//! The bounded queue between the receive loops and the core threads. A
//! mutex and a condition variable, not a spinning channel: an idle core
//! thread sleeps at once instead of spinning and yielding its core (on two
//! cores, the yields of a dozen idle threads cost more than the logins),
//! and a push wakes a thread only when one sleeps.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

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
    Empty,
    Closed,
}

#[derive(Debug)]
pub struct Queue<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
    capacity: usize,
}

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
    /// Threads asleep in `pop_wait`.
    sleeping: usize,
}

impl<T> Queue<T> {
    pub fn new(capacity: usize) -> Self {
        Queue {
            inner: Mutex::new(Inner { items: VecDeque::with_capacity(capacity), closed: false, sleeping: 0 }),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
        let wake = inner.sleeping > 0;
        drop(inner);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The next item, without waiting. `Closed` only once the queue is
    /// closed and empty.
    pub fn pop(&self) -> Pop<T> {
        let mut inner = self.lock();
        match inner.items.pop_front() {
            Some(item) => Pop::Item(item),
            None if inner.closed => Pop::Closed,
            None => Pop::Empty,
        }
    }

    /// The next item, waiting for one; `None` once the queue is closed and empty.
    pub fn pop_wait(&self) -> Option<T> {
        let mut inner = self.lock();
        loop {
            if let Some(item) = inner.items.pop_front() {
                return Some(item);
            }
            if inner.closed {
                return None;
            }
            inner.sleeping += 1;
            inner = self.ready.wait(inner).unwrap_or_else(|p| p.into_inner());
            inner.sleeping -= 1;
        }
    }

    /// No more pushes; the items queued are still popped.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;

    #[test]
    fn bounded_in_order_and_closed() {
        let q = Queue::new(2);
        assert_eq!(q.push(1), Ok(()));
        assert_eq!(q.push(2), Ok(()));
        assert_eq!(q.push(3), Err(Refused::Full(3)));
        assert_eq!(q.pop(), Pop::Item(1));
        q.close();
        assert_eq!(q.push(4), Err(Refused::Closed(4)));
        assert_eq!(q.pop_wait(), Some(2));
        assert_eq!(q.pop(), Pop::Closed);
        assert_eq!(q.pop_wait(), None);
    }

    #[test]
    fn sleeping_threads_get_every_item_and_wake_on_close() {
        let q = Arc::new(Queue::new(64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(item) = q.pop_wait() {
                        got.push(item);
                    }
                    got
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
}

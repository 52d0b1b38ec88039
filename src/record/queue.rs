//! The bounded queue between sessions and the audit writer.
//!
//! Capacity counts records queued *and* slots reserved: a fail-closed
//! session reserves a slot for each statement before it runs (and one for
//! its session-end record when it starts), so the record can always be
//! queued once the statement ends; a shed session queues only when there is
//! room and counts what it drops. The writer drains in batches on its own
//! thread; room is announced to waiting sessions through a tokio `Notify`.

use super::event::Record;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most records the writer takes at once.
const BATCH: usize = 1024;
/// How long the writer lets a small batch grow before writing it.
const LINGER: Duration = Duration::from_millis(2);

struct Inner {
    records: VecDeque<Record>,
    /// Records queued plus slots reserved.
    used: usize,
    closed: bool,
}

/// The queue.
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    wake: Condvar,
    space: tokio::sync::Notify,
    capacity: usize,
    /// Records dropped because the queue was full (shed).
    pub(crate) dropped: AtomicU64,
}

/// Room for one record, taken in advance.
pub(crate) struct Slot {
    queue: Arc<Queue>,
    armed: bool,
}

impl Slot {
    /// Queues `record` in the room taken.
    pub(crate) fn send(mut self, record: Record) {
        self.armed = false;
        let inner = self.queue.lock();
        self.queue.push(inner, record);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            let mut inner = self.queue.lock();
            inner.used = inner.used.saturating_sub(1);
            drop(inner);
            self.queue.space.notify_waiters();
        }
    }
}

impl Queue {
    /// A queue of `capacity` records.
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                records: VecDeque::new(),
                used: 0,
                closed: false,
            }),
            wake: Condvar::new(),
            space: tokio::sync::Notify::new(),
            capacity,
            dropped: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counts that are still valid.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records queued or reserved now.
    pub(crate) fn depth(&self) -> usize {
        self.lock().used
    }

    /// `n` slots at once, or none if there is not room for all of them.
    pub(crate) fn try_reserve(self: &Arc<Self>, n: usize) -> Option<Vec<Slot>> {
        let mut inner = self.lock();
        if inner.closed || inner.used + n > self.capacity {
            return None;
        }
        inner.used += n;
        drop(inner);
        Some(
            (0..n)
                .map(|_| Slot {
                    queue: Arc::clone(self),
                    armed: true,
                })
                .collect(),
        )
    }

    /// `n` slots, waiting up to `timeout` for room.
    pub(crate) async fn reserve(
        self: &Arc<Self>,
        n: usize,
        timeout: Duration,
    ) -> Option<Vec<Slot>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            // Registered before the check, so room made in between wakes it.
            notified.as_mut().enable();
            if let Some(slots) = self.try_reserve(n) {
                return Some(slots);
            }
            if n > self.capacity || self.lock().closed {
                return None;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Queues `record` if there is room; else counts it as dropped. One
    /// lock, no reservation: this is every shed statement's path.
    pub(crate) fn send_or_drop(&self, record: Record) -> bool {
        let mut inner = self.lock();
        if inner.closed || inner.used >= self.capacity {
            drop(inner);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        inner.used += 1;
        self.push(inner, record);
        true
    }

    /// Queues a record whose room is counted in `used` already.
    fn push(&self, mut inner: MutexGuard<'_, Inner>, record: Record) {
        // The writer sleeps only on an empty queue: wake it only then.
        let was_empty = inner.records.is_empty();
        inner.records.push_back(record);
        drop(inner);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// The writer's side: waits until records arrive, the queue closes, or
    /// `until` passes; returns what arrived (at most a batch) and whether
    /// the queue is closed.
    pub(crate) fn take(&self, until: Instant) -> (Vec<Record>, bool) {
        let mut inner = self.lock();
        while inner.records.is_empty() && !inner.closed {
            let now = Instant::now();
            if now >= until {
                break;
            }
            inner = self
                .wake
                .wait_timeout(inner, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if !inner.records.is_empty() && inner.records.len() < BATCH / 8 && !inner.closed {
            // Let a batch gather: one write for many records rather than a
            // wake-up and a write per statement under steady traffic.
            drop(inner);
            std::thread::sleep(LINGER);
            inner = self.lock();
        }
        let n = inner.records.len().min(BATCH);
        let batch: Vec<Record> = inner.records.drain(..n).collect();
        inner.used = inner.used.saturating_sub(n);
        let closed = inner.closed && inner.records.is_empty();
        drop(inner);
        if n > 0 {
            self.space.notify_waiters();
        }
        (batch, closed)
    }

    /// Whether [`Queue::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// No more reservations; the writer ends once the queue is empty.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
        self.space.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::event::{Event, Record};

    fn record() -> Record {
        Record::now(Event::Reload { rules_version: 1 })
    }

    #[test]
    fn reservations_count_against_capacity_until_used_or_dropped() {
        let q = Queue::new(3);
        let two = q.try_reserve(2).unwrap();
        assert!(q.try_reserve(2).is_none());
        assert!(q.send_or_drop(record()));
        assert!(!q.send_or_drop(record()));
        assert_eq!(q.dropped.load(Ordering::Relaxed), 1);
        drop(two);
        assert_eq!(q.depth(), 1);
        let (batch, closed) = q.take(Instant::now());
        assert_eq!((batch.len(), closed), (1, false));
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test]
    async fn a_waiting_reservation_gets_room_when_the_writer_drains() {
        let q = Queue::new(1);
        assert!(q.send_or_drop(record()));
        let waiting = tokio::spawn({
            let q = Arc::clone(&q);
            async move { q.reserve(1, Duration::from_secs(30)).await.is_some() }
        });
        let drained = std::thread::spawn({
            let q = Arc::clone(&q);
            move || q.take(Instant::now() + Duration::from_secs(30)).0.len()
        });
        assert_eq!(drained.join().unwrap(), 1);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn a_waiting_reservation_gives_up_at_its_timeout() {
        let q = Queue::new(1);
        assert!(q.send_or_drop(record()));
        assert!(q.reserve(1, Duration::from_millis(10)).await.is_none());
        assert!(
            q.reserve(2, Duration::from_secs(30)).await.is_none(),
            "more than capacity"
        );
    }
}

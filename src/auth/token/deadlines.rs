//! Every session's deadline (token expiry, maximum lifetime) in one table
//! with one task: a task and a timer per session would cost each idle
//! session most of a kilobyte (issue 14's per-session budget). The table
//! holds a small entry per session; the task sleeps until the earliest one
//! and starts the ending of each session that is due.

use crate::config::tokens::ExpiryPolicy;
use crate::session::registry::Registry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What happens at one session's deadline.
struct Due {
    /// Shared by every session with the same reason (the maximum lifetime's
    /// is one text for all of them).
    reason: Arc<str>,
    policy: ExpiryPolicy,
    registry: Arc<Registry>,
}

type Key = (Instant, u64);

/// The deadlines not yet due, and the endings under way (each asks its
/// session again until it is gone; aborted when the session's guard drops).
#[derive(Default)]
struct Table {
    pending: BTreeMap<Key, Due>,
    ending: HashMap<Key, JoinHandle<()>>,
}

/// The table of deadlines and its wake-up.
#[derive(Default)]
pub(crate) struct Deadlines {
    table: Mutex<Table>,
    changed: Arc<Notify>,
    started: OnceLock<()>,
}

impl std::fmt::Debug for Deadlines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlines").finish_non_exhaustive()
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        // The task waits on `changed`: it wakes, finds the table gone, ends.
        self.changed.notify_one();
    }
}

/// One session's entry; dropping it (the session ended) removes it and
/// stops an ending under way.
pub(crate) struct DeadlineGuard {
    deadlines: Arc<Deadlines>,
    key: Key,
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        let mut table = self.deadlines.lock();
        if table.pending.remove(&self.key).is_none() {
            if let Some(task) = table.ending.remove(&self.key) {
                task.abort();
            }
        }
    }
}

impl Deadlines {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends session `id` at `at` for `reason`, per `policy`.
    pub(crate) fn add(
        self: &Arc<Self>,
        at: Instant,
        id: u64,
        reason: Arc<str>,
        policy: ExpiryPolicy,
        registry: &Arc<Registry>,
    ) -> DeadlineGuard {
        let key = (at, id);
        let earliest = {
            let mut table = self.lock();
            table.pending.insert(
                key,
                Due {
                    reason,
                    policy,
                    registry: Arc::clone(registry),
                },
            );
            table.pending.keys().next() == Some(&key)
        };
        if self.started.set(()).is_ok() {
            tokio::spawn(run(Arc::downgrade(self), Arc::clone(&self.changed)));
        } else if earliest {
            self.changed.notify_one();
        }
        DeadlineGuard {
            deadlines: Arc::clone(self),
            key,
        }
    }

    /// Starts the ending of every entry due at `now`; the earliest one
    /// left, if any. Under the lock, so a guard dropped meanwhile finds its
    /// entry either still pending or with its ending recorded.
    fn start_due(&self, now: Instant) -> Option<Instant> {
        let mut table = self.lock();
        let later = table.pending.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut table.pending, later);
        for (key, d) in due {
            let task = tokio::spawn(super::expiry::end_session(
                d.registry, key.1, d.reason, d.policy,
            ));
            table.ending.insert(key, task);
        }
        table.pending.keys().next().map(|(at, _)| *at)
    }

    /// Entries pending and endings under way (for tests).
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let table = self.lock();
        (table.pending.len(), table.ending.len())
    }
}

/// The task: sleeps until the earliest deadline (or a new earlier one),
/// ends the sessions due, and stops once the table is gone.
async fn run(deadlines: Weak<Deadlines>, changed: Arc<Notify>) {
    loop {
        let Some(table) = deadlines.upgrade() else {
            return;
        };
        let next = table.start_due(Instant::now());
        drop(table);
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = changed.notified() => {}
                }
            }
            None => changed.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tokens::ExpiryMode;
    use std::time::Duration;

    const AT_ONCE: ExpiryPolicy = ExpiryPolicy {
        mode: ExpiryMode::Immediate,
        grace: Duration::ZERO,
    };

    /// Yields until `f` holds (the table's task runs in between).
    async fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..100_000 {
            if f() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never: {what}");
    }

    #[tokio::test]
    async fn a_guard_takes_its_entry_with_it_pending_or_ending() {
        let deadlines = Arc::new(Deadlines::default());
        let registry = Arc::new(Registry::default());
        let reason: Arc<str> = Arc::from("the session reached its maximum lifetime (1h)");
        let later = Instant::now() + Duration::from_secs(3600);
        // Two sessions share one reason: no text per session.
        let a = deadlines.add(later, 1, Arc::clone(&reason), AT_ONCE, &registry);
        let b = deadlines.add(later, 2, Arc::clone(&reason), AT_ONCE, &registry);
        assert_eq!(Arc::strong_count(&reason), 3);
        assert_eq!(deadlines.len(), (2, 0));
        drop(a);
        assert_eq!(deadlines.len(), (1, 0));
        // One due now: its ending starts and is kept until its guard drops.
        let due = deadlines.add(Instant::now(), 3, Arc::clone(&reason), AT_ONCE, &registry);
        until("the due session's ending starts", || {
            deadlines.len() == (1, 1)
        })
        .await;
        drop(due);
        assert_eq!(deadlines.len(), (1, 0));
        drop(b);
        assert_eq!(deadlines.len(), (0, 0));
        // Nothing holds the reason any more but this test.
        until("the ending task let go of the reason", || {
            Arc::strong_count(&reason) == 1
        })
        .await;
    }
}

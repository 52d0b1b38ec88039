//! Every session's deadline (token expiry, maximum lifetime) in one table
//! with one task: a task and a timer per session would cost each idle
//! session most of a kilobyte (issue 14's per-session budget). The table
//! holds a small entry per session; the task sleeps until the earliest one
//! and starts the ending of each session that is due.

use crate::config::tokens::ExpiryPolicy;
use crate::session::registry::Registry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What happens at one session's deadline.
struct Due {
    reason: String,
    policy: ExpiryPolicy,
    registry: Arc<Registry>,
    /// The ending under way (asks the session again until it is gone);
    /// aborted with the session's guard.
    ending: Arc<Mutex<Option<JoinHandle<()>>>>,
}

type Key = (Instant, u64);

/// The table of deadlines and its wake-up.
#[derive(Default)]
pub(crate) struct Deadlines {
    pending: Mutex<BTreeMap<Key, Due>>,
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
    ending: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        self.deadlines.lock().remove(&self.key);
        if let Some(task) = self.ending.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Deadlines {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Due>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends session `id` at `at` for `reason`, per `policy`.
    pub(crate) fn add(
        self: &Arc<Self>,
        at: Instant,
        id: u64,
        reason: String,
        policy: ExpiryPolicy,
        registry: &Arc<Registry>,
    ) -> DeadlineGuard {
        let ending = Arc::new(Mutex::new(None));
        let key = (at, id);
        let earliest = {
            let mut pending = self.lock();
            pending.insert(
                key,
                Due {
                    reason,
                    policy,
                    registry: Arc::clone(registry),
                    ending: Arc::clone(&ending),
                },
            );
            pending.keys().next() == Some(&key)
        };
        if self.started.set(()).is_ok() {
            tokio::spawn(run(Arc::downgrade(self), Arc::clone(&self.changed)));
        } else if earliest {
            self.changed.notify_one();
        }
        DeadlineGuard {
            deadlines: Arc::clone(self),
            key,
            ending,
        }
    }

    /// Takes the entries due at `now`; the earliest one left, if any.
    fn take_due(&self, now: Instant) -> (Vec<(u64, Due)>, Option<Instant>) {
        let mut pending = self.lock();
        let later = pending.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut *pending, later);
        let next = pending.keys().next().map(|(at, _)| *at);
        (due.into_iter().map(|((_, id), d)| (id, d)).collect(), next)
    }
}

/// The task: sleeps until the earliest deadline (or a new earlier one),
/// ends the sessions due, and stops once the table is gone.
async fn run(deadlines: Weak<Deadlines>, changed: Arc<Notify>) {
    loop {
        let Some(table) = deadlines.upgrade() else {
            return;
        };
        let (due, next) = table.take_due(Instant::now());
        drop(table);
        for (id, d) in due {
            let task = tokio::spawn(super::expiry::end_session(
                d.registry, id, d.reason, d.policy,
            ));
            *d.ending.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
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

//! The embedded store: tickets and grants as JSON snapshots in one
//! append-only file ([`crate::store::AppendLog`]). Every change appends the
//! record's whole new state; the latest line per id wins, replayed at open,
//! so approvals and grants survive a restart.
//!
//! - Updates are read-modify-writes under the file's exclusive lock: catch
//!   up with what any process appended, apply the model's update, append,
//!   fsync, unlock. Two pgward processes on one file therefore never decide
//!   one ticket twice (a ticket-mode approval is used once).
//! - Changes made here are broadcast at once; a follower task reads what
//!   other processes append (every [`FOLLOW_EVERY`]) and broadcasts those.
//! - Memory is bounded: tickets that ended, and grants that ended, more than
//!   [`KEEP_FINISHED`] ago are dropped from memory (they stay in the file;
//!   `ticket(id)` no longer finds them). The file is not compacted: it grows
//!   by one line per change (a few hundred bytes to a few KiB); rotate it
//!   while pgward is stopped if it ever matters.

use super::{ApprovalStore, ApprovalStoreError, Change, GrantUpdate, TicketUpdate};
use crate::approvals::model::{now_ms, ApprovalMode, Grant, Ticket, TicketState, TokenRevocation};
use crate::store::{AppendLog, Follower, Poll};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::broadcast;

/// How often the file is read for other processes' changes.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// Finished tickets and grants are kept in memory this long (milliseconds).
pub const KEEP_FINISHED: u64 = 24 * 60 * 60 * 1000;

/// One line of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum Record {
    Ticket(Box<Ticket>),
    Grant(Box<Grant>),
    Revocation(Box<TokenRevocation>),
}

impl Record {
    /// Its kind and id, for refusals.
    fn named(&self) -> (&'static str, &str) {
        match self {
            Self::Ticket(t) => ("ticket", &t.id),
            Self::Grant(g) => ("grant", &g.id),
            Self::Revocation(r) => ("revocation", &r.id),
        }
    }

    /// Refuses what the PostgreSQL store refuses too: an id that is not a
    /// plain one, a record over the size limit (both stores answer alike).
    fn check(&self) -> Result<(), ApprovalStoreError> {
        let (kind, id) = self.named();
        super::check_id(kind, id)?;
        let size = serde_json::to_vec(self).map_or(usize::MAX, |v| v.len());
        if size > super::MAX_RECORD_BYTES {
            return Err(super::too_large(kind, id));
        }
        Ok(())
    }
}

/// The file store.
#[derive(Debug, Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: AppendLog,
    /// Held across each read or transaction (blocking, in
    /// `spawn_blocking`): in-process updates are serialised here, other
    /// processes' by the file lock.
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
}

#[derive(Debug)]
struct State {
    follower: Follower,
    /// When finished records were last dropped from memory.
    pruned_at: u64,
    tickets: HashMap<String, Ticket>,
    grants: HashMap<String, Grant>,
    /// Never pruned: a revocation must outlive every token it names.
    revocations: HashMap<String, TokenRevocation>,
}

impl State {
    /// Applies what the follower read; returns the records that changed.
    fn absorb(&mut self, poll: Poll<Record>) -> Vec<Change> {
        if poll.reset {
            self.tickets.clear();
            self.grants.clear();
            // Kept: a replaced file does not undo a revocation.
        }
        let mut changes = Vec::new();
        for record in poll.records {
            match record {
                Record::Ticket(t) => {
                    if self.tickets.get(&t.id) != Some(&*t) {
                        changes.push(Change::Ticket(t.id.clone()));
                        self.tickets.insert(t.id.clone(), *t);
                    }
                }
                Record::Grant(g) => {
                    if self.grants.get(&g.id) != Some(&*g) {
                        changes.push(Change::Grant(g.id.clone()));
                        self.grants.insert(g.id.clone(), *g);
                    }
                }
                Record::Revocation(r) => {
                    if !self.revocations.contains_key(&r.id) {
                        changes.push(Change::Revocation(r.id.clone()));
                        self.revocations.insert(r.id.clone(), *r);
                    }
                }
            }
        }
        self.prune(now_ms());
        changes
    }

    /// Drops what ended more than [`KEEP_FINISHED`] ago.
    /// At most once a minute (it reads every record).
    fn prune(&mut self, now: u64) {
        if now < self.pruned_at.saturating_add(60_000) {
            return;
        }
        self.pruned_at = now;
        let horizon = now.saturating_sub(KEEP_FINISHED);
        self.tickets.retain(|_, t| {
            // A hold-mode approval ran (or its session is gone); a
            // ticket-mode one ends with its validity.
            let ended = match t.state {
                TicketState::Pending => t.expires_at < now,
                TicketState::Approved => {
                    t.mode == ApprovalMode::Hold || t.valid_until.is_some_and(|u| u < now)
                }
                _ => true,
            };
            let last = t.votes.iter().map(|v| v.at).max().unwrap_or(0);
            let latest = t
                .created_at
                .max(t.expires_at)
                .max(t.valid_until.unwrap_or(0))
                .max(last);
            !ended || latest >= horizon
        });
        self.grants.retain(|_, g| {
            let ended_at = g.revoked.as_ref().map_or(g.expires_at, |r| r.at);
            ended_at >= horizon
        });
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApprovalStoreError {
    ApprovalStoreError::Unavailable(e.to_string())
}

impl FileStore {
    /// Opens (or starts) the store in `path`, replaying it, and starts the
    /// task that follows other processes' changes (it ends with the store).
    /// Must be called inside a tokio runtime.
    pub async fn open(path: &Path) -> Result<Self, ApprovalStoreError> {
        let path = path.to_owned();
        let store = tokio::task::spawn_blocking(move || Self::open_blocking(&path))
            .await
            .map_err(unavailable)??;
        store.start_following();
        Ok(store)
    }

    /// Opens the store, replaying the file (blocking), without following
    /// it yet ([`FileStore::start_following`]).
    pub fn open_blocking(path: &Path) -> Result<Self, ApprovalStoreError> {
        let log = AppendLog::new(path);
        let mut follower = log.follower();
        let poll = follower.poll::<Record>().map_err(unavailable)?;
        let mut state = State {
            follower,
            pruned_at: 0,
            tickets: HashMap::new(),
            grants: HashMap::new(),
            revocations: HashMap::new(),
        };
        state.absorb(poll);
        let (changes, _) = broadcast::channel(1024);
        Ok(Self {
            inner: Arc::new(Inner {
                log,
                state: Mutex::new(state),
                changes,
            }),
        })
    }

    /// Starts the task that reads other processes' changes every
    /// [`FOLLOW_EVERY`] (it ends with the store). Needs a tokio runtime.
    pub fn start_following(&self) {
        tokio::spawn(follow(Arc::downgrade(&self.inner)));
    }

    /// Runs `f` on the caught-up state, blocking, off the runtime's threads.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> R + Send + 'static,
    ) -> Result<R, ApprovalStoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut state = inner.state.lock().map_err(unavailable)?;
            let poll = state.follower.poll::<Record>().map_err(unavailable)?;
            let changes = state.absorb(poll);
            let out = f(&state);
            drop(state);
            inner.announce(changes);
            Ok(out)
        })
        .await
        .map_err(unavailable)?
    }

    /// A read-modify-write under the file lock: `decide` sees the caught-up
    /// state and returns the record to append, if any (it is applied to the
    /// state and announced), and the result.
    async fn write<R: Send + 'static>(
        &self,
        decide: impl FnOnce(&State) -> Result<(Option<Record>, R), ApprovalStoreError> + Send + 'static,
    ) -> Result<R, ApprovalStoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.state.lock().map_err(unavailable)?;
            let state = &mut *guard;
            let mut changes = Vec::new();
            let mut follower = std::mem::replace(&mut state.follower, inner.log.follower());
            let done = inner.log.transact(&mut follower, |poll: Poll<Record>| {
                changes.extend(state.absorb(poll));
                let (record, out) = decide(state)?;
                if let Some(r) = &record {
                    r.check()?;
                }
                Ok((record.clone(), (record, out)))
            });
            state.follower = follower;
            let result = match done.map_err(unavailable) {
                Ok(Ok((record, out))) => {
                    changes.extend(state.absorb(Poll {
                        reset: false,
                        records: record.into_iter().collect(),
                    }));
                    Ok(out)
                }
                Ok(Err(e)) | Err(e) => Err(e),
            };
            drop(guard);
            inner.announce(changes);
            result
        })
        .await
        .map_err(unavailable)?
    }
}

impl Inner {
    fn announce(&self, changes: Vec<Change>) {
        for change in changes {
            // No receiver is no error.
            let _ = self.changes.send(change);
        }
    }
}

/// Follows the file for other processes' changes until the store is
/// dropped.
async fn follow(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || {
            let Ok(mut state) = strong.state.lock() else {
                return;
            };
            match state.follower.poll::<Record>() {
                Ok(poll) => {
                    let changes = state.absorb(poll);
                    drop(state);
                    strong.announce(changes);
                }
                Err(e) => tracing::warn!(error = %e, "approval store: reading the file failed"),
            }
        })
        .await;
        if done.is_err() {
            return;
        }
    }
}

/// Newest first, at most `limit`.
fn newest<T: Clone>(mut items: Vec<(u64, String, T)>, limit: usize) -> Vec<T> {
    items.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    items.into_iter().take(limit).map(|(_, _, t)| t).collect()
}

#[async_trait::async_trait]
impl ApprovalStore for FileStore {
    async fn create_ticket(&self, ticket: &Ticket) -> Result<(), ApprovalStoreError> {
        let ticket = ticket.clone();
        self.write(move |state| {
            if state.tickets.contains_key(&ticket.id) {
                return Err(ApprovalStoreError::Exists {
                    kind: "ticket",
                    id: ticket.id,
                });
            }
            Ok((Some(Record::Ticket(Box::new(ticket))), ()))
        })
        .await
    }

    async fn ticket(&self, id: &str) -> Result<Option<Ticket>, ApprovalStoreError> {
        let id = id.to_owned();
        let now = now_ms();
        self.read(move |state| {
            state.tickets.get(&id).cloned().map(|mut t| {
                t.expire(now);
                t
            })
        })
        .await
    }

    async fn tickets(
        &self,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<Ticket>, ApprovalStoreError> {
        let now = now_ms();
        self.read(move |state| {
            let items = state
                .tickets
                .values()
                .filter_map(|t| {
                    let mut t = t.clone();
                    t.expire(now);
                    (!pending_only || t.state == TicketState::Pending)
                        .then(|| (t.created_at, t.id.clone(), t))
                })
                .collect();
            newest(items, limit)
        })
        .await
    }

    async fn update_ticket(
        &self,
        id: &str,
        update: TicketUpdate<'_>,
    ) -> Result<Ticket, ApprovalStoreError> {
        // The update is borrowed and the file work runs on another thread:
        // it is applied to a copy here, and the copy is written only if the
        // record is still the one read (compare and set, retried on a lost
        // race, which needs another writer in between).
        loop {
            let key = id.to_owned();
            let current = self
                .read(move |state| state.tickets.get(&key).cloned())
                .await?
                .ok_or_else(|| not_found("ticket", id))?;
            let mut next = current.clone();
            next.expire(now_ms());
            update(&mut next).map_err(ApprovalStoreError::Refused)?;
            let out = next.clone();
            let swapped = self
                .write(move |state| {
                    Ok(if state.tickets.get(&current.id) == Some(&current) {
                        (Some(Record::Ticket(Box::new(next))), true)
                    } else {
                        (None, false)
                    })
                })
                .await?;
            if swapped {
                return Ok(out);
            }
        }
    }

    async fn consume(&self, binding: &str, now: u64) -> Result<Option<Ticket>, ApprovalStoreError> {
        let binding = binding.to_owned();
        self.write(move |state| {
            let mut candidates: Vec<&Ticket> = state
                .tickets
                .values()
                .filter(|t| t.binding == binding && t.state == TicketState::Approved)
                .collect();
            candidates.sort_by_key(|t| (t.created_at, t.id.clone()));
            let used = candidates.into_iter().find_map(|t| {
                let mut t = t.clone();
                t.consume(now).then_some(t)
            });
            Ok((used.clone().map(|t| Record::Ticket(Box::new(t))), used))
        })
        .await
    }

    async fn create_grant(&self, grant: &Grant) -> Result<(), ApprovalStoreError> {
        let grant = grant.clone();
        self.write(move |state| {
            if state.grants.contains_key(&grant.id) {
                return Err(ApprovalStoreError::Exists {
                    kind: "grant",
                    id: grant.id,
                });
            }
            Ok((Some(Record::Grant(Box::new(grant))), ()))
        })
        .await
    }

    async fn grants(
        &self,
        active_at: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Grant>, ApprovalStoreError> {
        self.read(move |state| {
            let items = state
                .grants
                .values()
                .filter(|g| active_at.is_none_or(|now| g.active(now)))
                .map(|g| (g.created_at, g.id.clone(), g.clone()))
                .collect();
            newest(items, limit)
        })
        .await
    }

    async fn update_grant(
        &self,
        id: &str,
        update: GrantUpdate<'_>,
    ) -> Result<Grant, ApprovalStoreError> {
        loop {
            let key = id.to_owned();
            let current = self
                .read(move |state| state.grants.get(&key).cloned())
                .await?
                .ok_or_else(|| not_found("grant", id))?;
            let mut next = current.clone();
            update(&mut next).map_err(ApprovalStoreError::Refused)?;
            let out = next.clone();
            let swapped = self
                .write(move |state| {
                    Ok(if state.grants.get(&current.id) == Some(&current) {
                        (Some(Record::Grant(Box::new(next))), true)
                    } else {
                        (None, false)
                    })
                })
                .await?;
            if swapped {
                return Ok(out);
            }
        }
    }

    async fn revoke_token(&self, revocation: &TokenRevocation) -> Result<(), ApprovalStoreError> {
        let revocation = revocation.clone();
        self.write(move |state| {
            if state.revocations.contains_key(&revocation.id) {
                return Ok((None, ()));
            }
            Ok((Some(Record::Revocation(Box::new(revocation))), ()))
        })
        .await
    }

    async fn token_revocations(&self) -> Result<Vec<TokenRevocation>, ApprovalStoreError> {
        self.read(|state| {
            if state.revocations.len() > super::MAX_REVOCATIONS {
                return Err(unavailable("more token revocations than pgward reads"));
            }
            let mut all: Vec<TokenRevocation> = state.revocations.values().cloned().collect();
            all.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
            Ok(all)
        })
        .await?
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }
}

fn not_found(kind: &'static str, id: &str) -> ApprovalStoreError {
    ApprovalStoreError::NotFound {
        kind,
        id: id.to_owned(),
    }
}

#[cfg(test)]
mod tests;

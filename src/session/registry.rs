//! The session registry: every live session with its id, identity, client
//! address, database, start time and state; cancel keys route through it.
//!
//! A client's BackendKeyData carries the server's real process id (so
//! `pg_backend_pid()`, NotificationResponse pids and the key agree) with a
//! secret of pgward's own; the registry maps (process id, secret) to the
//! session, since two upstreams may hand out the same process id. The
//! server's own secret never leaves pgward.

use super::armed::Armed;
use super::ShutdownPhase;
use crate::auth::backend::Upstream;
use futures::task::AtomicWaker;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

/// Where the server's real cancel key leads.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// The upstream the session is connected to.
    pub upstream: Upstream,
    /// The server's process id.
    pub process_id: i32,
    /// The server's secret key.
    pub secret_key: i32,
}

/// What a session is doing, as the registry shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SessionState {
    /// Waiting for the client, outside a transaction.
    Idle = 0,
    /// Waiting for the client inside a transaction block.
    InTransaction = 1,
    /// The server is working on a request.
    Running = 2,
    /// A request is held by a phase.
    Held = 3,
}

impl SessionState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::InTransaction,
            2 => Self::Running,
            3 => Self::Held,
            _ => Self::Idle,
        }
    }
}

/// A message to a session from outside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The client's CancelRequest: withdraws a held request. When the
    /// registry did not pass it on (the session held its only request,
    /// the server had nothing to stop: a signal then would land on the
    /// next statement), `server_told` is false and the session tells the
    /// server itself if the hold was released to it in the meantime.
    Cancel {
        /// The cancel connection signalled the server.
        server_told: bool,
    },
    /// End the session with a FATAL carrying this reason.
    Terminate(String),
    /// The same, once the session is idle outside a transaction (a
    /// credential that expired lets the current transaction finish).
    TerminateWhenIdle(String),
    /// The server's shutdown moved on a phase ([`Registry::shutdown_phase`]).
    Shutdown,
}

/// A snapshot of one session.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// Registry id.
    pub id: u64,
    /// pgward user name.
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Client address, when known.
    pub client: Option<SocketAddr>,
    /// Database the client opened.
    pub database: String,
    /// When the session started.
    pub started: SystemTime,
    /// What it is doing now.
    pub state: SessionState,
    /// The server's process id (what the client sees as its backend pid).
    pub process_id: i32,
}

struct Entry {
    summary: SessionSummary,
    shared: Arc<Shared>,
    cancel: CancelTarget,
    secret: i32,
}

/// What the registry and a session share: the session's state for
/// listings, and the requests sent to it. A few atomics and a waker rather
/// than a channel: every idle session has one, and a channel's buffer
/// would cost each of them about a kilobyte.
#[derive(Default)]
struct Shared {
    state: AtomicU8,
    /// `CANCEL` and `TERMINATE` requests not yet taken by the session.
    pending: AtomicU8,
    /// The first termination's reason.
    reason: Mutex<Option<String>>,
    /// The first reason of a termination that waits for the session to be
    /// idle outside a transaction.
    idle_reason: Mutex<Option<String>>,
    waker: AtomicWaker,
}

const CANCEL: u8 = 1;
const TERMINATE: u8 = 2;
const SHUTDOWN: u8 = 4;
const TERMINATE_WHEN_IDLE: u8 = 8;
/// A cancel the registry kept from the server (see [`Control::Cancel`]).
const CANCEL_HELD: u8 = 16;

/// Beside the [`SessionState`] in `Shared::state`: the server works on
/// requests the session sent (always so when `Running`; with `Held`, the
/// ones sent before the held request).
const SERVER_BUSY: u8 = 0x80;

/// Where a client's CancelRequest went.
#[derive(Debug)]
pub enum CancelRoute {
    /// No live session has the key.
    Unknown,
    /// Only to the session: it held its only request, and the server had
    /// nothing to stop.
    Session,
    /// To the session, and the server is to be signalled with this key.
    Server(CancelTarget),
}

impl Shared {
    /// Asks for a termination (`what`: `TERMINATE` or
    /// `TERMINATE_WHEN_IDLE`); the first reason of each kind is kept.
    fn terminate(&self, what: u8, reason: &str) {
        let slot = if what == TERMINATE {
            &self.reason
        } else {
            &self.idle_reason
        };
        let mut first = slot.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(reason.to_owned());
        }
        drop(first);
        self.send(what);
    }

    fn send(&self, what: u8) {
        self.pending.fetch_or(what, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// Live sessions, shared by all of them.
#[derive(Default)]
pub struct Registry {
    next_id: AtomicU64,
    /// Boxed: the map's spare slots then cost a pointer each, not an entry.
    sessions: Mutex<HashMap<u64, Box<Entry>>>,
    /// (process id, pgward's secret) -> session id.
    keys: Mutex<HashMap<(i32, i32), u64>>,
    /// The server's [`ShutdownPhase`], as a number: read by every session
    /// on every pass of its loop, so an atomic rather than a channel.
    phase: AtomicU8,
}

/// A session's place in the registry; removes it when dropped.
pub struct Registration {
    registry: Arc<Registry>,
    /// The session's id.
    pub id: u64,
    /// The process id the client is given (the server's own).
    pub process_id: i32,
    /// The secret the client is given (pgward's own).
    pub secret_key: i32,
    shared: Arc<Shared>,
    /// The session's waker stands in `shared.waker` (`armed.rs`).
    armed: Armed,
}

impl Registration {
    /// Where the server's shutdown stands.
    pub(crate) fn shutdown_phase(&self) -> ShutdownPhase {
        self.registry.shutdown_phase()
    }

    /// Records what the session is doing now, and whether the server works
    /// on requests it sent.
    pub fn set_state(&self, state: SessionState, server_busy: bool) {
        let busy = if server_busy { SERVER_BUSY } else { 0 };
        self.shared
            .state
            .store(state as u8 | busy, Ordering::Relaxed);
    }

    /// Signals the server to stop what it runs for this session, in a task
    /// of its own (for a cancel the registry did not pass on).
    pub(crate) fn cancel_server(&self) {
        let target = {
            let sessions = self
                .registry
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            sessions.get(&self.id).map(|e| e.cancel.clone())
        };
        if let Some(t) = target {
            spawn_server_cancel(self.id, t);
        }
    }

    /// The next request sent to the session (a cancel first), or pending
    /// until one is; `cx` is woken when one arrives.
    #[inline]
    pub(crate) fn poll_control(&mut self, cx: &mut Context<'_>) -> Poll<Control> {
        let shared = &self.shared;
        if shared.pending.load(Ordering::Acquire) == 0 {
            // A sender sets `pending` before it takes the waker.
            self.armed.register(&shared.waker, cx);
            // A request sent before the waker was in place.
            if shared.pending.load(Ordering::Acquire) == 0 {
                return Poll::Pending;
            }
        }
        self.armed.disarm();
        Poll::Ready(self.take_control())
    }

    /// The next request, once `pending` was seen to hold one (rare: out of
    /// the inlined poll).
    #[cold]
    fn take_control(&self) -> Control {
        let shared = &self.shared;
        let pending = shared.pending.swap(0, Ordering::AcqRel);
        if pending & (CANCEL | CANCEL_HELD | SHUTDOWN) != 0 {
            // What came with it stays for the next poll.
            let (now, rest) = if pending & (CANCEL | CANCEL_HELD) != 0 {
                let server_told = pending & CANCEL != 0;
                (
                    Control::Cancel { server_told },
                    pending & !(CANCEL | CANCEL_HELD),
                )
            } else {
                (Control::Shutdown, pending & !SHUTDOWN)
            };
            shared.pending.fetch_or(rest, Ordering::AcqRel);
            return now;
        }
        let take = |slot: &Mutex<Option<String>>| {
            slot.lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_default()
        };
        if pending & TERMINATE != 0 {
            shared
                .pending
                .fetch_or(pending & !TERMINATE, Ordering::AcqRel);
            return Control::Terminate(take(&shared.reason));
        }
        Control::TerminateWhenIdle(take(&shared.idle_reason))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut keys = self.registry.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.remove(&(self.process_id, self.secret_key));
        drop(keys);
        let mut sessions = self
            .registry
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sessions.remove(&self.id);
    }
}

/// Who a new session is, for [`Registry::register`].
#[derive(Debug, Clone)]
pub struct NewSession {
    /// pgward user name.
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Client address.
    pub client: Option<SocketAddr>,
    /// Database.
    pub database: String,
}

impl Registry {
    /// Adds a session; its cancel key is the server's process id with a
    /// fresh secret, unique among live sessions with that process id.
    pub fn register(self: &Arc<Self>, who: NewSession, cancel: CancelTarget) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let process_id = cancel.process_id;
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let secret_key = loop {
            let candidate: i32 = rand::random();
            if !keys.contains_key(&(process_id, candidate)) {
                break candidate;
            }
        };
        keys.insert((process_id, secret_key), id);
        drop(keys);
        let shared = Arc::new(Shared::default());
        let entry = Box::new(Entry {
            summary: SessionSummary {
                id,
                user: who.user,
                groups: who.groups,
                client: who.client,
                database: who.database,
                started: SystemTime::now(),
                state: SessionState::Idle,
                process_id,
            },
            shared: Arc::clone(&shared),
            cancel,
            secret: secret_key,
        });
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, entry);
        Registration {
            registry: Arc::clone(self),
            id,
            process_id,
            secret_key,
            shared,
            armed: Armed::default(),
        }
    }

    /// Moves the server's shutdown on to `phase` and tells every live
    /// session; sessions registered later read it on their first pass.
    pub fn set_shutdown(&self, phase: ShutdownPhase) {
        self.phase.store(phase as u8, Ordering::Release);
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        for e in sessions.values() {
            e.shared.send(SHUTDOWN);
        }
    }

    /// Where the server's shutdown stands.
    pub fn shutdown_phase(&self) -> ShutdownPhase {
        match self.phase.load(Ordering::Acquire) {
            1 => ShutdownPhase::Draining,
            2 => ShutdownPhase::Forced,
            _ => ShutdownPhase::Running,
        }
    }

    /// Every live session, by id.
    pub fn list(&self) -> Vec<SessionSummary> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<SessionSummary> = sessions
            .values()
            .map(|e| SessionSummary {
                state: SessionState::from_u8(e.shared.state.load(Ordering::Relaxed) & !SERVER_BUSY),
                ..e.summary.clone()
            })
            .collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// Asks a session to end; false if there is no such session.
    pub fn terminate(&self, id: u64, reason: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(&id) {
            Some(e) => {
                e.shared.terminate(TERMINATE, reason);
                true
            }
            None => false,
        }
    }

    /// The server's cancel key of session `id` while the server is working
    /// on one of its requests (so that ending the session can stop it),
    /// also when a later request is held behind them.
    pub fn running_cancel_target(&self, id: u64) -> Option<CancelTarget> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let e = sessions.get(&id)?;
        (e.shared.state.load(Ordering::Relaxed) & SERVER_BUSY != 0).then(|| e.cancel.clone())
    }

    /// Asks a session to end once it is idle outside a transaction; false
    /// if there is no such session.
    pub fn terminate_when_idle(&self, id: u64, reason: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(&id) {
            Some(e) => {
                e.shared.terminate(TERMINATE_WHEN_IDLE, reason);
                true
            }
            None => false,
        }
    }

    /// A CancelRequest: tells the session (a held request is withdrawn) and
    /// says whether the server is to be signalled too. It is not when the
    /// session holds its only request: the server is idle, and a signal
    /// that reached it late would cancel the client's next statement.
    pub fn cancel(&self, process_id: i32, secret_key: i32) -> CancelRoute {
        let id = {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            match keys.get(&(process_id, secret_key)) {
                Some(id) => *id,
                None => return CancelRoute::Unknown,
            }
        };
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = sessions.get(&id) else {
            return CancelRoute::Unknown;
        };
        // The map lookup matched the secret exactly; compare again in
        // constant time for good measure against a poisoned map.
        if (entry.secret ^ secret_key) != 0 {
            return CancelRoute::Unknown;
        }
        if entry.shared.state.load(Ordering::Relaxed) == SessionState::Held as u8 {
            entry.shared.send(CANCEL_HELD);
            return CancelRoute::Session;
        }
        entry.shared.send(CANCEL);
        CancelRoute::Server(entry.cancel.clone())
    }
}

/// Signals the server with `t` in a task of its own: whoever asked may be
/// a session that ends now, and dropping it must not abort the cancel.
pub(crate) fn spawn_server_cancel(session: u64, t: CancelTarget) {
    tokio::spawn(async move {
        if let Err(e) = t.upstream.cancel(t.process_id, t.secret_key).await {
            tracing::warn!(session, error = %e, "could not cancel the server's statement");
        }
    });
}

#[cfg(test)]
mod tests;

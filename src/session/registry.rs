//! The session registry: every live session with its id, identity, client
//! address, database, start time and state; cancel keys route through it.
//!
//! A client's BackendKeyData carries the server's real process id (so
//! `pg_backend_pid()`, NotificationResponse pids and the key agree) with a
//! secret of pgward's own; the registry maps (process id, secret) to the
//! session, since two upstreams may hand out the same process id. The
//! server's own secret never leaves pgward.

use crate::auth::backend::Upstream;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::mpsc;

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
    /// The client's CancelRequest: withdraws a held request (the cancel
    /// connection itself signals the server).
    Cancel,
    /// End the session with a FATAL carrying this reason.
    Terminate(String),
    /// The same, once the session is idle outside a transaction (a
    /// credential that expired lets the current transaction finish).
    TerminateWhenIdle(String),
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
    state: Arc<AtomicU8>,
    control: mpsc::Sender<Control>,
    cancel: CancelTarget,
    secret: i32,
}

/// Live sessions, shared by all of them.
#[derive(Default)]
pub struct Registry {
    next_id: AtomicU64,
    sessions: Mutex<HashMap<u64, Entry>>,
    /// (process id, pgward's secret) -> session id.
    keys: Mutex<HashMap<(i32, i32), u64>>,
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
    state: Arc<AtomicU8>,
}

impl Registration {
    /// Records what the session is doing now.
    pub fn set_state(&self, state: SessionState) {
        self.state.store(state as u8, Ordering::Relaxed);
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
    pub fn register(
        self: &Arc<Self>,
        who: NewSession,
        cancel: CancelTarget,
        control: mpsc::Sender<Control>,
    ) -> Registration {
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
        let state = Arc::new(AtomicU8::new(SessionState::Idle as u8));
        let entry = Entry {
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
            state: Arc::clone(&state),
            control,
            cancel,
            secret: secret_key,
        };
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, entry);
        Registration {
            registry: Arc::clone(self),
            id,
            process_id,
            secret_key,
            state,
        }
    }

    /// Every live session, by id.
    pub fn list(&self) -> Vec<SessionSummary> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<SessionSummary> = sessions
            .values()
            .map(|e| SessionSummary {
                state: SessionState::from_u8(e.state.load(Ordering::Relaxed)),
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
                let _ = e.control.try_send(Control::Terminate(reason.to_owned()));
                true
            }
            None => false,
        }
    }

    /// The server's cancel key of session `id` while the server is working
    /// on one of its requests (so that ending the session can stop it).
    pub fn running_cancel_target(&self, id: u64) -> Option<CancelTarget> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let e = sessions.get(&id)?;
        (SessionState::from_u8(e.state.load(Ordering::Relaxed)) == SessionState::Running)
            .then(|| e.cancel.clone())
    }

    /// Asks a session to end once it is idle outside a transaction; false
    /// if there is no such session.
    pub fn terminate_when_idle(&self, id: u64, reason: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(&id) {
            Some(e) => {
                let _ = e
                    .control
                    .try_send(Control::TerminateWhenIdle(reason.to_owned()));
                true
            }
            None => false,
        }
    }

    /// A CancelRequest: tells the session (a held request is withdrawn) and
    /// returns the server's real key to signal, if the key is a live one.
    pub fn cancel(&self, process_id: i32, secret_key: i32) -> Option<CancelTarget> {
        let id = {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            *keys.get(&(process_id, secret_key))?
        };
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = sessions.get(&id)?;
        // The map lookup matched the secret exactly; compare again in
        // constant time for good measure against a poisoned map.
        if (entry.secret ^ secret_key) != 0 {
            return None;
        }
        let _ = entry.control.try_send(Control::Cancel);
        Some(entry.cancel.clone())
    }
}

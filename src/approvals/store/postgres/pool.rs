//! A small pool of the store's connections (the upstream's own `user`),
//! with the server-side timeouts set at login so that a stalled pgward
//! cannot keep a row locked, and a set of their backend process ids so the
//! listener can skip the notifications this instance sent itself.

use super::Timeouts;
use crate::approvals::store::ApprovalStoreError;
use crate::auth::backend::Upstream;
use crate::io::FramedStream;
use crate::upstream::query::query_nullable;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Connections open at once: updates of one record serialise on its row
/// lock anyway, so two are enough for a vote and a listing side by side.
const POOL_SIZE: usize = 2;

/// One logged-in connection.
struct Conn {
    stream: FramedStream,
    pid: i32,
}

/// The pool.
pub(super) struct Pool {
    upstream: Upstream,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    /// Backend process ids of this pool's open connections.
    pub(super) own_pids: Arc<Mutex<HashSet<i32>>>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("upstream", &self.upstream.config.name)
            .finish_non_exhaustive()
    }
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> ApprovalStoreError {
    ApprovalStoreError::Unavailable(e.to_string())
}

/// The startup parameters of the store's connections: UTF-8 (records are
/// ASCII JSON anyway), and server-side bounds so that a statement, a wait
/// for a row lock, or a transaction left open by a pgward that stopped
/// answering cannot outlast `timeouts.operation`.
pub(super) fn login_params(timeouts: &Timeouts, application: &str) -> Vec<(String, String)> {
    let ms = |d: std::time::Duration| format!("{}", d.as_millis().max(1));
    vec![
        ("client_encoding".into(), "UTF8".into()),
        ("application_name".into(), application.into()),
        ("statement_timeout".into(), ms(timeouts.operation)),
        ("lock_timeout".into(), ms(timeouts.operation / 2)),
        (
            "idle_in_transaction_session_timeout".into(),
            ms(timeouts.operation),
        ),
    ]
}

impl Pool {
    pub(super) fn new(upstream: Upstream, timeouts: Timeouts) -> Self {
        Self {
            upstream,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(POOL_SIZE),
            own_pids: Arc::default(),
            timeouts,
        }
    }

    /// A connection for one operation: an idle one, or a new login (bounded
    /// by the upstream's `connect_timeout`).
    pub(super) async fn get(&self) -> Result<Lease<'_>, ApprovalStoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| unavailable("the store is closed"))?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(c) => c,
            None => {
                let params = login_params(&self.timeouts, "pgward-approvals");
                let login = self
                    .upstream
                    .login_catalog(&params)
                    .await
                    .map_err(unavailable)?;
                self.own_pids
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(login.process_id);
                Conn {
                    stream: login.conn,
                    pid: login.process_id,
                }
            }
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }
}

/// A connection in use. Dropped without [`Lease::release`] (an error, a
/// timeout, a cancelled future), it is closed rather than reused: its state
/// is unknown, and closing it rolls back any transaction it had open.
pub(super) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    /// Runs one simple query (one or several statements).
    pub(super) async fn run(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ApprovalStoreError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| unavailable("connection already closed"))?;
        query_nullable(&mut conn.stream, sql)
            .await
            .map_err(unavailable)
    }

    /// Puts the connection back for the next operation.
    pub(super) fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool
                .own_pids
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&conn.pid);
        }
    }
}

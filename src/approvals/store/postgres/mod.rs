//! The PostgreSQL store: tickets and grants as rows of a schema pgward
//! creates and migrates (`schema.rs`) on one upstream, over that upstream's
//! own `user` connections (`pool.rs`), so several pgward instances share
//! them (docs/approvals.md).
//!
//! Every read-modify-write is one transaction on the server: the row is
//! read `FOR UPDATE`, the model's closure is applied here, and the row is
//! written back with a `NOTIFY` on the store's channel (named as the
//! schema; payload `ticket:<id>` or `grant:<id>`), delivered at COMMIT.
//! Two instances updating one ticket therefore serialise on its row lock,
//! and the one holding the statement hears of the change through its
//! listener (`listener.rs`).
//!
//! Every value reaches SQL as a literal that cannot be closed by its
//! contents (`literal`, dollar-quoted with a random tag): ticket records
//! hold client SQL. Every operation runs within `Timeouts::operation`,
//! here and on the server (statement, lock and idle-in-transaction
//! timeouts), and a connection whose operation failed or timed out is
//! closed, never reused.

mod listener;
mod pool;
mod record;
mod schema;

use super::{ApprovalStore, ApprovalStoreError, Change, GrantUpdate, TicketUpdate};
use crate::approvals::model::{now_ms, Grant, Ticket, TicketState, TokenRevocation};
use crate::auth::backend::Upstream;
use crate::upstream::query::dollar_quoted as literal;
use pool::{unavailable, Pool};
use record::{check_id, checked, decode, encode, Record};
pub(crate) use record::{column_ms, valid_id};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch, OnceCell};

pub use schema::SCHEMA_VERSION;

/// How long one store operation may take, connecting included.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The store's time limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// One operation (a read, an update's transaction); also the server's
    /// `statement_timeout` and `idle_in_transaction_session_timeout`, and
    /// twice its `lock_timeout`.
    pub operation: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            operation: DEFAULT_OPERATION_TIMEOUT,
        }
    }
}

/// Records listed in one call, at most: a listing reads whole records.
const MAX_LIST: usize = 10_000;

/// Tickets and grants in a PostgreSQL schema shared by every instance.
#[derive(Debug)]
pub struct PgStore {
    pool: Arc<Pool>,
    schema: String,
    timeouts: Timeouts,
    changes: broadcast::Sender<Change>,
    migrated: Arc<OnceCell<()>>,
    listener: OnceLock<tokio::task::JoinHandle<()>>,
    listening: watch::Receiver<u64>,
    listening_tx: watch::Sender<u64>,
    upstream: Upstream,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get() {
            task.abort();
        }
    }
}

impl PgStore {
    /// A store in `schema` on `upstream`. Nothing is connected yet: the
    /// schema is created or migrated by the first operation (or
    /// [`PgStore::open`]), and the listener starts with the first
    /// operation or subscription.
    pub fn new(upstream: Upstream, schema: &str, timeouts: Timeouts) -> Self {
        let (changes, _) = broadcast::channel(1024);
        let (listening_tx, listening) = watch::channel(0);
        Self {
            pool: Arc::new(Pool::new(upstream.clone(), timeouts)),
            schema: schema.to_owned(),
            timeouts,
            changes,
            migrated: Arc::default(),
            listener: OnceLock::new(),
            listening,
            listening_tx,
            upstream,
        }
    }

    /// [`PgStore::new`], then migrates the schema now and waits until the
    /// listener is in force, so a misconfigured store fails at startup.
    pub async fn open(
        upstream: Upstream,
        schema: &str,
        timeouts: Timeouts,
    ) -> Result<Self, ApprovalStoreError> {
        let store = Self::new(upstream, schema, timeouts);
        store.check().await?;
        Ok(store)
    }

    /// Migrates the schema (if not done yet) and waits until the listener
    /// is in force, each within the operation timeout.
    pub async fn check(&self) -> Result<(), ApprovalStoreError> {
        self.bounded(async { Ok(()) }).await?;
        self.listening(self.timeouts.operation).await
    }

    /// Waits until the listener has LISTENed at least once: changes made by
    /// other instances from then on reach [`ApprovalStore::subscribe`].
    pub async fn listening(&self, within: Duration) -> Result<(), ApprovalStoreError> {
        self.start_listener();
        let mut rx = self.listening.clone();
        tokio::time::timeout(within, rx.wait_for(|n| *n > 0))
            .await
            .map_err(|_| {
                unavailable(format!(
                    "the store's listener is not connected after {within:?}"
                ))
            })?
            .map_err(|_| unavailable("the store's listener stopped"))?;
        Ok(())
    }

    /// How many times the listener has connected and LISTENed (more than
    /// once: it reconnected).
    pub fn listener_sessions(&self) -> u64 {
        *self.listening.borrow()
    }

    /// Starts the listener once, when there is a runtime to run it.
    fn start_listener(&self) {
        if self.listener.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let listener = listener::Listener {
            upstream: self.upstream.clone(),
            schema: self.schema.clone(),
            timeouts: self.timeouts,
            changes: self.changes.clone(),
            own_pids: Arc::clone(&self.pool.own_pids),
            listening: self.listening_tx.clone(),
            migration: Migration {
                pool: Arc::clone(&self.pool),
                done: Arc::clone(&self.migrated),
                schema: self.schema.clone(),
            },
        };
        self.listener.get_or_init(|| runtime.spawn(listener.run()));
    }

    /// Migrates once per store object.
    async fn ready(&self) -> Result<(), ApprovalStoreError> {
        self.start_listener();
        migrate_once(&self.pool, &self.migrated, &self.schema).await
    }

    /// Runs `op` within the operation timeout, after the migration.
    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, ApprovalStoreError>>,
    ) -> Result<T, ApprovalStoreError> {
        let limit = self.timeouts.operation;
        tokio::time::timeout(limit, async {
            self.ready().await?;
            op.await
        })
        .await
        .unwrap_or_else(|_| {
            Err(unavailable(format!(
                "no answer from the approval store within {limit:?}"
            )))
        })
    }

    /// Announces `change` here now; other instances hear the NOTIFY (this
    /// instance's listener skips it).
    fn announce(&self, change: Change) {
        let _ = self.changes.send(change);
    }

    fn table<R: Record>(&self) -> String {
        format!("{}.{}", schema::ident(&self.schema), R::TABLE)
    }

    /// `SELECT pg_notify(...)` for `change` (delivered at COMMIT).
    fn notify_sql(&self, change: &Change) -> String {
        format!(
            "SELECT pg_notify({}, {})",
            literal(&self.schema),
            literal(&listener::payload(change))
        )
    }

    async fn create<R: Record>(&self, record: &R) -> Result<(), ApprovalStoreError> {
        check_id(R::KIND, record.id())?;
        let json = encode(R::KIND, record.id(), record)?;
        let change = R::change(record.id().to_owned());
        let mut names = vec!["id", "record"];
        let mut values = vec![literal(record.id()), literal(&json)];
        for (name, value) in record.columns() {
            names.push(name);
            values.push(value);
        }
        // One statement: the NOTIFY happens only if the row was inserted.
        let sql = format!(
            "WITH created AS (INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING              RETURNING id) SELECT id, pg_notify({}, {}) FROM created",
            self.table::<R>(),
            names.join(", "),
            values.join(", "),
            literal(&self.schema),
            literal(&listener::payload(&change)),
        );
        let rows = self
            .bounded(async {
                let mut conn = self.pool.get().await?;
                let rows = conn.run(&sql).await?;
                conn.release();
                Ok(rows)
            })
            .await?;
        match rows.len() {
            0 => Err(ApprovalStoreError::Exists {
                kind: R::KIND,
                id: record.id().to_owned(),
            }),
            1 => {
                self.announce(change);
                Ok(())
            }
            _ => Err(unavailable("unexpected reply to an insert")),
        }
    }

    async fn get<R: Record>(&self, id: &str) -> Result<Option<R>, ApprovalStoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let sql = format!(
            "SELECT record FROM {} WHERE id = {}",
            self.table::<R>(),
            literal(id)
        );
        let rows = self.read(&sql).await?;
        match rows.as_slice() {
            [] => Ok(None),
            [row] => {
                let mut record: R = checked(decode(R::KIND, row.first())?, id)?;
                record.refresh(now_ms());
                Ok(Some(record))
            }
            _ => Err(unavailable(format!("two {}s {id}", R::KIND))),
        }
    }

    /// Newest first, at most `limit`, of those `filter` (SQL) selects.
    async fn list<R: Record>(
        &self,
        filter: &str,
        limit: usize,
    ) -> Result<Vec<R>, ApprovalStoreError> {
        let limit = limit.min(MAX_LIST);
        let sql = format!(
            "SELECT record FROM {} {filter} ORDER BY created_at DESC, id DESC LIMIT {limit}",
            self.table::<R>()
        );
        let rows = self.read(&sql).await?;
        if rows.len() > limit {
            return Err(unavailable("more rows than asked for"));
        }
        let now = now_ms();
        rows.iter()
            .map(|row| {
                let mut record: R = decode(R::KIND, row.first())?;
                record.refresh(now);
                Ok(record)
            })
            .collect()
    }

    async fn read(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ApprovalStoreError> {
        self.bounded(async {
            let mut conn = self.pool.get().await?;
            let rows = conn.run(sql).await?;
            conn.release();
            Ok(rows)
        })
        .await
    }

    /// One transaction: reads the rows `select` picks `FOR UPDATE`, lets
    /// `apply` change them, writes back the changed ones with a NOTIFY
    /// each, and commits (or rolls back when nothing changed or `apply`
    /// refused).
    async fn modify<R: Record, T>(
        &self,
        select: &str,
        apply: impl FnOnce(&mut [R]) -> Result<T, ApprovalStoreError>,
    ) -> Result<T, ApprovalStoreError> {
        let changed = self
            .bounded(async {
                let mut conn = self.pool.get().await?;
                let rows = conn.run(&format!("BEGIN; {select} FOR UPDATE")).await?;
                let before = rows
                    .iter()
                    .map(|row| decode::<R>(R::KIND, row.first()))
                    .collect::<Result<Vec<R>, _>>()?;
                let mut after = before.clone();
                let outcome = apply(&mut after);
                let mut writes = Vec::new();
                let mut changes = Vec::new();
                if outcome.is_ok() {
                    for (old, new) in before.iter().zip(&after) {
                        if old == new {
                            continue;
                        }
                        if new.id() != old.id() {
                            return Err(ApprovalStoreError::Refused(format!(
                                "an update may not change a {}'s id",
                                R::KIND
                            )));
                        }
                        writes.push(self.update_sql(new)?);
                        let change = R::change(new.id().to_owned());
                        writes.push(self.notify_sql(&change));
                        changes.push(change);
                    }
                }
                let end = if writes.is_empty() {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                };
                writes.push(end.to_owned());
                conn.run(&writes.join("; ")).await?;
                conn.release();
                Ok((outcome, changes))
            })
            .await?;
        let (outcome, changes) = changed;
        for change in changes {
            self.announce(change);
        }
        outcome
    }

    fn update_sql<R: Record>(&self, record: &R) -> Result<String, ApprovalStoreError> {
        let json = encode(R::KIND, record.id(), record)?;
        let mut set = vec![format!("record = {}", literal(&json))];
        set.extend(
            record
                .columns()
                .into_iter()
                .map(|(name, value)| format!("{name} = {value}")),
        );
        Ok(format!(
            "UPDATE {} SET {} WHERE id = {}",
            self.table::<R>(),
            set.join(", "),
            literal(record.id())
        ))
    }

    /// Applies `update` to record `id` ([`ApprovalStore::update_ticket`]).
    async fn update_one<R: Record>(
        &self,
        id: &str,
        update: &(dyn Fn(&mut R) -> Result<(), String> + Send + Sync),
    ) -> Result<R, ApprovalStoreError> {
        let not_found = || ApprovalStoreError::NotFound {
            kind: R::KIND,
            id: id.to_owned(),
        };
        if !valid_id(id) {
            return Err(not_found());
        }
        let select = format!(
            "SELECT record FROM {} WHERE id = {}",
            self.table::<R>(),
            literal(id)
        );
        self.modify(&select, |records: &mut [R]| match records {
            [] => Err(not_found()),
            [record] => {
                if record.id() != id {
                    return Err(unavailable(format!(
                        "the stored {} {id} holds the record of {}",
                        R::KIND,
                        record.id()
                    )));
                }
                record.refresh(now_ms());
                update(record).map_err(ApprovalStoreError::Refused)?;
                Ok(record.clone())
            }
            _ => Err(unavailable(format!("two {}s {id}", R::KIND))),
        })
        .await
    }
}

/// What the listener needs to migrate the schema before it reads it (it
/// may start before any operation has).
pub(super) struct Migration {
    pool: Arc<Pool>,
    done: Arc<OnceCell<()>>,
    schema: String,
}

impl Migration {
    /// Migrates, unless this store did already.
    pub(super) async fn ensure(&self) -> Result<(), ApprovalStoreError> {
        migrate_once(&self.pool, &self.done, &self.schema).await
    }
}

/// Creates or migrates `schema` once per store object.
async fn migrate_once(
    pool: &Pool,
    done: &OnceCell<()>,
    schema: &str,
) -> Result<(), ApprovalStoreError> {
    done.get_or_try_init(|| async {
        let mut conn = pool.get().await?;
        schema::migrate(&mut conn, schema).await?;
        conn.release();
        Ok::<_, ApprovalStoreError>(())
    })
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl ApprovalStore for PgStore {
    async fn create_ticket(&self, ticket: &Ticket) -> Result<(), ApprovalStoreError> {
        self.create(ticket).await
    }

    async fn ticket(&self, id: &str) -> Result<Option<Ticket>, ApprovalStoreError> {
        self.get(id).await
    }

    async fn tickets(
        &self,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<Ticket>, ApprovalStoreError> {
        let now = now_ms();
        if !pending_only {
            return self.list("", limit).await;
        }
        let filter = format!(
            "WHERE state = 'pending' AND expires_at > {}",
            column_ms(now)
        );
        let tickets: Vec<Ticket> = self.list(&filter, limit).await?;
        Ok(tickets
            .into_iter()
            .filter(|t| t.state == TicketState::Pending)
            .collect())
    }

    async fn update_ticket(
        &self,
        id: &str,
        update: TicketUpdate<'_>,
    ) -> Result<Ticket, ApprovalStoreError> {
        self.update_one(id, update).await
    }

    async fn consume(&self, binding: &str, now: u64) -> Result<Option<Ticket>, ApprovalStoreError> {
        // Oldest approvals first; a few, so an expired one does not hide a
        // valid one behind it. Rows locked by a concurrent consume are
        // re-read once it commits, and no longer match.
        let select = format!(
            "SELECT record FROM {} WHERE binding = {} AND state = 'approved'              ORDER BY created_at, id LIMIT 8",
            self.table::<Ticket>(),
            literal(binding)
        );
        self.modify(&select, |tickets: &mut [Ticket]| {
            for ticket in tickets.iter_mut() {
                if ticket.binding != binding {
                    return Err(unavailable("the server returned another binding's ticket"));
                }
                if ticket.consume(now) {
                    return Ok(Some(ticket.clone()));
                }
            }
            Ok(None)
        })
        .await
    }

    async fn create_grant(&self, grant: &Grant) -> Result<(), ApprovalStoreError> {
        self.create(grant).await
    }

    async fn grants(
        &self,
        active_at: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Grant>, ApprovalStoreError> {
        let filter = match active_at {
            Some(now) => format!("WHERE NOT revoked AND expires_at > {}", column_ms(now)),
            None => String::new(),
        };
        let grants: Vec<Grant> = self.list(&filter, limit).await?;
        Ok(match active_at {
            Some(now) => grants.into_iter().filter(|g| g.active(now)).collect(),
            None => grants,
        })
    }

    async fn update_grant(
        &self,
        id: &str,
        update: GrantUpdate<'_>,
    ) -> Result<Grant, ApprovalStoreError> {
        self.update_one(id, update).await
    }

    async fn revoke_token(&self, revocation: &TokenRevocation) -> Result<(), ApprovalStoreError> {
        match self.create(revocation).await {
            // Revoked before: the first record stands.
            Ok(()) | Err(ApprovalStoreError::Exists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn token_revocations(&self) -> Result<Vec<TokenRevocation>, ApprovalStoreError> {
        let limit = super::MAX_REVOCATIONS;
        let sql = format!(
            "SELECT record FROM {} ORDER BY created_at, id LIMIT {}",
            self.table::<TokenRevocation>(),
            limit + 1
        );
        let rows = self.read(&sql).await?;
        if rows.len() > limit {
            return Err(unavailable("more token revocations than pgward reads"));
        }
        rows.iter()
            .map(|row| decode(TokenRevocation::KIND, row.first()))
            .collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.start_listener();
        self.changes.subscribe()
    }
}

//! Where tickets and grants live. Two implementations pass one test suite:
//! an embedded file store (the default; survives restarts) and a
//! PostgreSQL store (several instances share approvals; LISTEN / NOTIFY
//! wakes the instance holding a statement when another records the vote).
//!
//! Stores keep records and apply updates atomically; every decision rule
//! is in `model.rs` (updates are closures over the record), so the two
//! stores cannot decide differently.

pub mod file;
pub mod postgres;

use super::model::{Grant, Ticket, TokenRevocation};
use tokio::sync::broadcast;

/// The largest record (a ticket or grant as JSON) a store keeps: a ticket
/// holds its statement text, which a client may make megabytes long, and
/// every listing reads whole records. Larger ones are refused
/// ([`ApprovalStoreError::Refused`]).
pub const MAX_RECORD_BYTES: usize = 4 << 20;

/// An id a store accepts: 1 to 64 of `[A-Za-z0-9_-]` (pgward makes 16 hex
/// digits), so it fits any payload and reads the same in every store.
pub(crate) fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The refusal of a record over [`MAX_RECORD_BYTES`].
pub(crate) fn too_large(kind: &str, id: &str) -> ApprovalStoreError {
    ApprovalStoreError::Refused(format!(
        "{kind} {id} is larger than the approval store's limit of {} MiB \
         (a statement that long cannot be held for approval)",
        MAX_RECORD_BYTES >> 20
    ))
}

/// [`valid_id`], as the error a store answers.
pub(crate) fn check_id(kind: &'static str, id: &str) -> Result<(), ApprovalStoreError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ApprovalStoreError::Refused(format!(
            "{kind} id {:?} is not 1 to 64 letters, digits, _ or -",
            id.chars().take(80).collect::<String>()
        )))
    }
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalStoreError {
    /// The store could not be read or written.
    #[error("approval store: {0}")]
    Unavailable(String),
    /// No record with this id.
    #[error("no {kind} {id}")]
    NotFound {
        /// `ticket` or `grant`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// A record with this id exists already.
    #[error("{kind} {id} exists already")]
    Exists {
        /// `ticket` or `grant`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// The update refused the change (a vote not counted, a revocation of a
    /// grant that ended).
    #[error("{0}")]
    Refused(String),
}

/// A record that changed, in this instance or (for shared stores) another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A ticket was created or updated.
    Ticket(String),
    /// A grant was created or revoked.
    Grant(String),
    /// A token was revoked (its jti).
    Revocation(String),
}

/// The most token revocations a store returns: a longer list is refused
/// (fail closed) rather than read short.
pub const MAX_REVOCATIONS: usize = 100_000;

/// An atomic read-modify-write of one ticket: `Err` leaves it unchanged
/// and is returned as [`ApprovalStoreError::Refused`].
pub type TicketUpdate<'a> = &'a (dyn Fn(&mut Ticket) -> Result<(), String> + Send + Sync);

/// An atomic read-modify-write of one grant.
pub type GrantUpdate<'a> = &'a (dyn Fn(&mut Grant) -> Result<(), String> + Send + Sync);

/// Tickets and grants.
#[async_trait::async_trait]
pub trait ApprovalStore: Send + Sync + std::fmt::Debug {
    /// Stores a new ticket.
    async fn create_ticket(&self, ticket: &Ticket) -> Result<(), ApprovalStoreError>;

    /// One ticket.
    async fn ticket(&self, id: &str) -> Result<Option<Ticket>, ApprovalStoreError>;

    /// Tickets, newest first: only pending ones, or all (at most `limit`).
    async fn tickets(
        &self,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<Ticket>, ApprovalStoreError>;

    /// Applies `update` to ticket `id` atomically (no other update of it
    /// runs in between, in any instance) and returns the result.
    async fn update_ticket(
        &self,
        id: &str,
        update: TicketUpdate<'_>,
    ) -> Result<Ticket, ApprovalStoreError>;

    /// Ticket mode: atomically uses an approved, still valid ticket with
    /// this `binding` ([`Ticket::consume`]); `None` when there is none.
    async fn consume(&self, binding: &str, now: u64) -> Result<Option<Ticket>, ApprovalStoreError>;

    /// Stores a new grant.
    async fn create_grant(&self, grant: &Grant) -> Result<(), ApprovalStoreError>;

    /// Grants, newest first: only those active at `now`, or all (at most
    /// `limit`).
    async fn grants(
        &self,
        active_at: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Grant>, ApprovalStoreError>;

    /// Applies `update` to grant `id` atomically and returns the result.
    async fn update_grant(
        &self,
        id: &str,
        update: GrantUpdate<'_>,
    ) -> Result<Grant, ApprovalStoreError>;

    /// Records a token revocation; revoking a jti again keeps the first
    /// record and succeeds.
    async fn revoke_token(&self, revocation: &TokenRevocation) -> Result<(), ApprovalStoreError>;

    /// Every token revocation, oldest first (at most
    /// [`MAX_REVOCATIONS`]; more is an error, never a silently short list).
    async fn token_revocations(&self) -> Result<Vec<TokenRevocation>, ApprovalStoreError>;

    /// Changes from now on, from every instance sharing the store. A
    /// lagging receiver must re-read what it cares about.
    fn subscribe(&self) -> broadcast::Receiver<Change>;
}

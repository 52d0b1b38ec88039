//! Tickets, votes and grants, and the rules that decide them. Times are
//! milliseconds since the Unix epoch (records outlive the process and are
//! shared between instances, so no `Instant`).

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh random id: 16 hex digits (64 bits), for tickets and grants.
pub fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// One Bind parameter as an approval covers it: its format code, the type
/// OID the Parse declared for it (0: the server infers one from the text),
/// and its bytes (`None`: NULL).
pub type BoundParam<'a> = (i16, u32, Option<&'a [u8]>);

/// What an approval covers, as hex SHA-256: the identity, the database,
/// as which role and how the server runs the bytes (`context`: the
/// upstream and role, the client_encoding and the lexing settings, see
/// `session::rules::approval`), the statement's bytes
/// and each Bind parameter's format, declared type and bytes (NULL distinct
/// from empty), every field length-prefixed so no two inputs collide. A
/// retry that differs in any of them is not covered: the same bytes
/// declared as another type (a float4's four bytes are an int4 too), or
/// read in another encoding, or run as another role, are another statement.
pub fn binding(
    user: &str,
    database: &str,
    context: &str,
    statement: &[u8],
    params: &[BoundParam<'_>],
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"pgward-approval-binding-v2");
    field(user.as_bytes());
    field(database.as_bytes());
    field(context.as_bytes());
    field(statement);
    for (format, type_oid, value) in params {
        field(&format.to_be_bytes());
        field(&type_oid.to_be_bytes());
        match value {
            None => field(b"null"),
            Some(v) => {
                field(b"value");
                field(v);
            }
        }
    }
    let digest = h.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a `require_approval` rule treats a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// The statement waits in the session until decided.
    Hold,
    /// The statement is refused with a ticket; once approved, the identical
    /// statement from the same identity runs within the approval's validity.
    Ticket,
}

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// Waiting for votes.
    Pending,
    /// Approved: a held statement runs; a ticket-mode approval may be used
    /// (once) until `valid_until`.
    Approved,
    /// A ticket-mode approval was used (its statement ran).
    Used,
    /// Denied by an approver.
    Denied,
    /// No decision within its lifetime (or the hold's deadline).
    Expired,
    /// The client cancelled, disconnected, or pgward shut down.
    Withdrawn,
}

impl TicketState {
    /// Whether the ticket can change no more.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Approved)
    }
}

/// Who asked, from where, as what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// The identity's name.
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// The client's address, when known.
    pub client: Option<String>,
    /// The database the client opened.
    pub database: String,
    /// The upstream and the role pgward logged in as.
    pub upstream: String,
    /// The mapped role.
    pub role: String,
    /// The client's `application_name`, when sent.
    pub application_name: Option<String>,
    /// The session's id in its instance's registry.
    pub session: u64,
    /// The pgward instance holding the session.
    pub instance: String,
}

/// One Bind parameter, as shown to approvers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownParam {
    /// The parameter's type name, when known (`int4`, `text`, ...).
    pub type_name: Option<String>,
    /// `text` or `binary`.
    pub format: String,
    /// The value decoded for display; `None` for NULL.
    pub value: Option<String>,
}

/// One approver's vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The approver's identity.
    pub approver: String,
    /// Approve (`true`) or deny.
    pub approve: bool,
    /// Why (required for a denial by the CLI and the page, optional here).
    pub reason: Option<String>,
    /// When.
    pub at: u64,
}

/// A statement waiting for, or decided by, approvers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Its id (16 hex digits).
    pub id: String,
    /// Hold or ticket mode.
    pub mode: ApprovalMode,
    /// Where it stands.
    pub state: TicketState,
    /// Created at.
    pub created_at: u64,
    /// A pending ticket expires at this time (hold mode: the hold's deadline).
    pub expires_at: u64,
    /// Ticket mode, once approved: the approval may be used until then.
    pub valid_until: Option<u64>,
    /// Who asked.
    pub requester: Requester,
    /// The statement text as the client sent it (the Query, or the Parse's).
    pub statement: String,
    /// Its Bind parameters, for display.
    pub params: Vec<ShownParam>,
    /// What an approval covers: hex SHA-256 over the identity, database,
    /// statement bytes and Bind parameter bytes and formats (`binding`).
    pub binding: String,
    /// The session's transaction status when it asked: `idle`,
    /// `transaction` or `failed`.
    pub transaction: String,
    /// The rule that asked for approval (`default_action` for the default).
    pub rule: String,
    /// The rule's message.
    pub rule_message: Option<String>,
    /// The requester's justification (`/* reason: ... */`).
    pub justification: Option<String>,
    /// Groups whose members may vote.
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub threshold: u32,
    /// Votes so far.
    pub votes: Vec<Vote>,
    /// Ran at once by a break-glass identity: recorded as self-approved.
    pub break_glass: bool,
    /// Why it ended, for final states.
    pub end_reason: Option<String>,
    /// A token request's ticket (`pgward token request`): what is asked
    /// for. `None` for statements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenAsk>,
}

/// The token a token request asks for; issued once, to the requester, when
/// the ticket is approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenAsk {
    /// The token user it logs in as.
    pub subject: String,
    /// Its `groups` claim (from the request policy, not the requester).
    pub groups: Vec<String>,
    /// The database it may open.
    pub database: String,
    /// Its lifetime, in seconds.
    pub ttl_secs: u64,
}

/// Why a vote was not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    /// No such ticket.
    #[error("no ticket {0}")]
    NotFound(String),
    /// The ticket is decided or ended.
    #[error("ticket {id} is {state:?}, not pending")]
    NotPending {
        /// The ticket.
        id: String,
        /// Its state.
        state: TicketState,
    },
    /// The approver asked for it.
    #[error("{0} asked for this statement and cannot approve or deny it")]
    SelfApproval(String),
    /// The approver is in none of the ticket's approver groups.
    #[error("{0} is in none of this ticket's approver groups")]
    NotAnApprover(String),
    /// The approver voted on it already.
    #[error("{0} has voted on this ticket already")]
    AlreadyVoted(String),
}

impl Ticket {
    /// Counts `vote` by `approver` (in `groups`) at `now`: a denial ends the
    /// ticket, `threshold` approvals approve it (setting `valid_until` to
    /// `now + validity_ms` in ticket mode). An expired pending ticket
    /// becomes `Expired` and the vote is refused.
    pub fn apply_vote(
        &mut self,
        vote: Vote,
        groups: &[String],
        validity_ms: u64,
    ) -> Result<(), VoteError> {
        self.expire(vote.at);
        if self.state != TicketState::Pending {
            return Err(VoteError::NotPending {
                id: self.id.clone(),
                state: self.state,
            });
        }
        if vote.approver == self.requester.user {
            return Err(VoteError::SelfApproval(vote.approver));
        }
        if !groups.iter().any(|g| self.approvers.contains(g)) {
            return Err(VoteError::NotAnApprover(vote.approver));
        }
        if self.votes.iter().any(|v| v.approver == vote.approver) {
            return Err(VoteError::AlreadyVoted(vote.approver));
        }
        let at = vote.at;
        let approve = vote.approve;
        let reason = vote.reason.clone();
        let approver = vote.approver.clone();
        self.votes.push(vote);
        if !approve {
            self.state = TicketState::Denied;
            self.end_reason = Some(match reason {
                Some(r) => format!("denied by {approver}: {r}"),
                None => format!("denied by {approver}"),
            });
        } else if self.approvals() >= self.threshold.max(1) {
            self.state = TicketState::Approved;
            if self.mode == ApprovalMode::Ticket {
                self.valid_until = Some(at.saturating_add(validity_ms));
            }
        }
        Ok(())
    }

    /// Approvals counted so far.
    pub fn approvals(&self) -> u32 {
        u32::try_from(self.votes.iter().filter(|v| v.approve).count()).unwrap_or(u32::MAX)
    }

    /// A pending ticket past `expires_at`, or an unused ticket-mode approval
    /// past `valid_until`, becomes `Expired`. Returns whether it changed.
    pub fn expire(&mut self, now: u64) -> bool {
        let lapsed = match self.state {
            TicketState::Pending => now >= self.expires_at,
            TicketState::Approved => self.valid_until.is_some_and(|until| now >= until),
            _ => false,
        };
        if lapsed {
            self.state = TicketState::Expired;
            self.end_reason = Some("no decision within the ticket's lifetime".into());
        }
        lapsed
    }

    /// Ends a pending ticket (`Withdrawn` or `Expired`) with a reason.
    /// Returns whether it changed (a decided ticket keeps its decision).
    pub fn end(&mut self, state: TicketState, reason: &str) -> bool {
        if self.state != TicketState::Pending || !state.is_final() {
            return false;
        }
        self.state = state;
        self.end_reason = Some(reason.to_owned());
        true
    }

    /// Uses a ticket-mode approval at `now`: true (and `Used`) when it is
    /// approved and still valid.
    pub fn consume(&mut self, now: u64) -> bool {
        self.expire(now);
        if self.mode != ApprovalMode::Ticket || self.state != TicketState::Approved {
            return false;
        }
        self.state = TicketState::Used;
        true
    }
}

/// A revoked token (`[tokens] revocation_store = "approvals"`): kept for
/// good, so a revocation is never undone by a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevocation {
    /// Its key in the store: hex SHA-256 of the jti (an external issuer's
    /// jti may hold any characters; the key is always a plain id).
    pub id: String,
    /// The token's jti, as the token carries it.
    pub jti: String,
    /// When, in milliseconds since the epoch.
    pub at: u64,
    /// Who revoked it.
    pub by: String,
    /// Why.
    pub reason: Option<String>,
}

impl TokenRevocation {
    /// The revocation of `jti` by `by`, now.
    pub fn new(jti: &str, by: &str, reason: Option<String>) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(jti.as_bytes());
        Self {
            id: digest.iter().map(|b| format!("{b:02x}")).collect(),
            jti: jti.to_owned(),
            at: now_ms(),
            by: by.to_owned(),
            reason,
        }
    }
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantSubject {
    /// One identity.
    User(String),
    /// Every member of a group.
    Group(String),
}

/// What a grant allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantScope {
    /// The statements this `require_approval` rule would hold run at once.
    Rule(String),
    /// On this database, the identity logs in as `role` (elevation).
    Role {
        /// The client-facing database name.
        database: String,
        /// The role (one of the upstream's `[upstreams.X.roles]`).
        role: String,
    },
}

/// A revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Who revoked it.
    pub by: String,
    /// When.
    pub at: u64,
    /// Why.
    pub reason: Option<String>,
}

/// A time-window grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Its id (16 hex digits).
    pub id: String,
    /// Who it is for.
    pub subject: GrantSubject,
    /// What it allows.
    pub scope: GrantScope,
    /// The approver who made it.
    pub created_by: String,
    /// Created at.
    pub created_at: u64,
    /// Ends at (at most `approvals.max_grant` after `created_at`).
    pub expires_at: u64,
    /// Why it was made.
    pub reason: Option<String>,
    /// Set once revoked.
    pub revoked: Option<Revocation>,
}

impl Grant {
    /// Whether it is in force at `now`.
    pub fn active(&self, now: u64) -> bool {
        self.revoked.is_none() && now < self.expires_at
    }

    /// Whether it is for `user` (in `groups`).
    pub fn covers(&self, user: &str, groups: &[String]) -> bool {
        match &self.subject {
            GrantSubject::User(u) => u == user,
            GrantSubject::Group(g) => groups.contains(g),
        }
    }
}

#[cfg(test)]
mod tests;

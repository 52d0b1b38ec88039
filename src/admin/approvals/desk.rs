//! What an approver does, over the approvals store: vote, grant, revoke;
//! and who may grant what. The decision rules of a vote are the model's
//! (`Ticket::apply_vote`); this adds the caller and maps refusals to HTTP.

use super::auth::Approver;
use crate::approvals::model::{
    now_ms, Grant, GrantScope, GrantSubject, Revocation, Ticket, Vote, VoteError,
};
use crate::approvals::store::{ApprovalStore, ApprovalStoreError};
use crate::gateway::Gateway;
use axum::http::StatusCode;
use std::sync::{Arc, Mutex};

/// The longest reason accepted (characters).
pub const MAX_REASON: usize = 1000;

/// A refusal, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the caller.
    pub message: String,
}

impl ApiError {
    /// A refusal with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<ApprovalStoreError> for ApiError {
    fn from(e: ApprovalStoreError) -> Self {
        let status = match &e {
            ApprovalStoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApprovalStoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApprovalStoreError::Exists { .. } | ApprovalStoreError::Refused(_) => {
                StatusCode::CONFLICT
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<VoteError> for ApiError {
    fn from(e: VoteError) -> Self {
        let status = match &e {
            VoteError::NotFound(_) => StatusCode::NOT_FOUND,
            VoteError::SelfApproval(_) | VoteError::NotAnApprover(_) => StatusCode::FORBIDDEN,
            VoteError::NotPending { .. } | VoteError::AlreadyVoted(_) => StatusCode::CONFLICT,
        };
        Self::new(status, e.to_string())
    }
}

/// The store an approver works on.
#[derive(Debug, Clone)]
pub struct Desk {
    /// Tickets and grants.
    pub store: Arc<dyn ApprovalStore>,
}

/// A checked reason: at most [`MAX_REASON`] characters, trimmed, empty as
/// none; `required` refuses none.
pub fn reason(text: Option<&str>, required: bool) -> Result<Option<String>, ApiError> {
    let text = text.map(str::trim).filter(|t| !t.is_empty());
    match text {
        None if required => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a reason is required",
        )),
        Some(t) if t.chars().count() > MAX_REASON => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the reason is longer than {MAX_REASON} characters"),
        )),
        t => Ok(t.map(str::to_owned)),
    }
}

impl Desk {
    /// Counts `who`'s vote on ticket `id` (the model refuses self-approval,
    /// non-approvers, double votes and decided tickets).
    pub async fn vote(
        &self,
        gw: &Gateway,
        id: &str,
        who: &Approver,
        approve: bool,
        reason: Option<String>,
    ) -> Result<Ticket, ApiError> {
        let validity = duration_ms(gw.config.approvals.ticket_validity);
        let refused: Mutex<Option<VoteError>> = Mutex::new(None);
        let update = |t: &mut Ticket| {
            let vote = Vote {
                approver: who.identity.user.clone(),
                approve,
                reason: reason.clone(),
                at: now_ms(),
            };
            t.apply_vote(vote, &who.identity.groups, validity)
                .map_err(|e| {
                    let text = e.to_string();
                    *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    text
                })
        };
        match self.store.update_ticket(id, &update).await {
            Ok(t) => {
                tracing::info!(
                    ticket = id,
                    approver = who.identity.user,
                    approve,
                    state = ?t.state,
                    "approvals: vote counted"
                );
                Ok(t)
            }
            Err(e) => match refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(vote_error) => Err(vote_error.into()),
                None => Err(e.into()),
            },
        }
    }

    /// Creates a grant by `who` (see [`may_grant`]).
    pub async fn create_grant(
        &self,
        gw: &Gateway,
        who: &Approver,
        subject: GrantSubject,
        scope: GrantScope,
        duration: std::time::Duration,
        reason: Option<String>,
    ) -> Result<Grant, ApiError> {
        may_grant(gw, who, &scope)?;
        check_subject(who, &subject)?;
        let max = gw.config.approvals.max_grant;
        if duration.is_zero() || duration > max {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "the duration must be more than zero and at most approvals.max_grant ({max:?})"
                ),
            ));
        }
        let now = now_ms();
        let grant = Grant {
            id: crate::approvals::model::new_id(),
            subject,
            scope,
            created_by: who.identity.user.clone(),
            created_at: now,
            expires_at: now.saturating_add(duration_ms(duration)),
            reason,
            revoked: None,
        };
        self.store.create_grant(&grant).await?;
        tracing::info!(grant = grant.id, by = grant.created_by, subject = ?grant.subject, scope = ?grant.scope, "approvals: grant created");
        Ok(grant)
    }

    /// Revokes grant `id`: its creator, or whoever may make such a grant.
    pub async fn revoke_grant(
        &self,
        gw: &Gateway,
        who: &Approver,
        id: &str,
        reason: Option<String>,
    ) -> Result<Grant, ApiError> {
        let grants = self.store.grants(None, usize::MAX).await?;
        let grant = grants
            .iter()
            .find(|g| g.id == id)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no grant {id}")))?;
        if grant.created_by != who.identity.user {
            may_grant(gw, who, &grant.scope)?;
        }
        let by = who.identity.user.clone();
        let revoked = self
            .store
            .update_grant(id, &|g: &mut Grant| {
                let now = now_ms();
                if !g.active(now) {
                    return Err(format!("grant {} has ended already", g.id));
                }
                g.revoked = Some(Revocation {
                    by: by.clone(),
                    at: now,
                    reason: reason.clone(),
                });
                Ok(())
            })
            .await?;
        tracing::info!(
            grant = id,
            by = who.identity.user,
            "approvals: grant revoked"
        );
        Ok(revoked)
    }
}

/// Who may grant `scope`: for a rule's statements, that rule's approvers;
/// for a role, the admins (elevation changes what every statement may do).
pub fn may_grant(gw: &Gateway, who: &Approver, scope: &GrantScope) -> Result<(), ApiError> {
    match scope {
        GrantScope::Rule(name) => {
            let Some(approvers) = super::auth::rule_approvers(gw, name) else {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("no require_approval rule {name:?}"),
                ));
            };
            if who.in_any(&approvers) {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{} is in none of rule {name:?}'s approver groups",
                        who.identity.user
                    ),
                ))
            }
        }
        GrantScope::Role { database, role } => {
            if !who.admin {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("only admins grant roles; {} is not one", who.identity.user),
                ));
            }
            let known = gw
                .config
                .route(database)
                .filter(|r| !r.catch_all)
                .and_then(|r| gw.config.upstreams.get(r.upstream))
                .is_some_and(|u| u.user == *role || u.roles.credentials.contains_key(role));
            if known {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("database {database:?} has no role {role:?}"),
                ))
            }
        }
    }
}

/// Nobody grants themselves (or a group they are in) anything.
fn check_subject(who: &Approver, subject: &GrantSubject) -> Result<(), ApiError> {
    let own = match subject {
        GrantSubject::User(u) => *u == who.identity.user,
        GrantSubject::Group(g) => who.identity.groups.contains(g),
    };
    let empty = match subject {
        GrantSubject::User(s) | GrantSubject::Group(s) => s.trim().is_empty() || s.len() > 256,
    };
    if empty {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the subject must be a name of 1 to 256 characters",
        ));
    }
    if own {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} cannot grant to themselves or a group they are in",
                who.identity.user
            ),
        ));
    }
    Ok(())
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

//! What an approver does, through the approvals service
//! ([`crate::approvals::Approvals`]): the service and the model decide
//! votes and grants; this adds who may revoke, checks input, and maps
//! refusals to HTTP statuses.

use super::auth::Approver;
use crate::approvals::model::{Grant, GrantScope, GrantSubject, VoteError};
use crate::approvals::store::ApprovalStoreError;
use crate::approvals::ApprovalError;
use crate::gateway::Gateway;
use axum::http::StatusCode;

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

impl From<ApprovalError> for ApiError {
    /// 404 unknown, 403 not this caller's to decide (self-approval, not an
    /// approver, a grant not theirs to make), 409 decided or voted already,
    /// 503 the store is unavailable.
    fn from(e: ApprovalError) -> Self {
        let status = match &e {
            ApprovalError::Store(ApprovalStoreError::Unavailable(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApprovalError::Store(ApprovalStoreError::NotFound { .. })
            | ApprovalError::Vote(VoteError::NotFound(_)) => StatusCode::NOT_FOUND,
            ApprovalError::Store(_)
            | ApprovalError::Vote(VoteError::NotPending { .. })
            | ApprovalError::Vote(VoteError::AlreadyVoted(_)) => StatusCode::CONFLICT,
            ApprovalError::Vote(VoteError::SelfApproval(_))
            | ApprovalError::Vote(VoteError::NotAnApprover(_))
            | ApprovalError::Grant(_) => StatusCode::FORBIDDEN,
            ApprovalError::Unsupported(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
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

/// Makes a grant: the service decides who may; what cannot be granted at
/// all (an unknown rule or role, a bad subject or duration) is a 400, not
/// a 403.
pub async fn create_grant(
    gw: &Gateway,
    who: &Approver,
    subject: GrantSubject,
    scope: GrantScope,
    duration: std::time::Duration,
    reason: Option<String>,
) -> Result<Grant, ApiError> {
    let service = gw.approvals();
    let max = service.config().max_grant;
    if duration.is_zero() || duration > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "a grant lasts more than 0s and at most approvals.max_grant ({}s)",
                max.as_secs()
            ),
        ));
    }
    let name = match &subject {
        GrantSubject::User(s) | GrantSubject::Group(s) => s,
    };
    if name.trim().is_empty() || name.len() > 256 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the subject must be a name of 1 to 256 characters",
        ));
    }
    let rules = gw.rules.load();
    service
        .grant_approvers(&scope, &rules.policy.rules)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let grant = service
        .create_grant(subject, scope, duration, &who.identity, reason)
        .await?;
    tracing::info!(grant = grant.id, by = grant.created_by, subject = ?grant.subject, scope = ?grant.scope, "approvals: grant made through the admin API");
    Ok(grant)
}

/// Revokes grant `id`: its creator, or a member of the groups that may
/// make such a grant.
pub async fn revoke_grant(
    gw: &Gateway,
    who: &Approver,
    id: &str,
    reason: Option<String>,
) -> Result<Grant, ApiError> {
    let service = gw.approvals();
    let grants = service.grants(false, usize::MAX).await?;
    let grant = grants
        .iter()
        .find(|g| g.id == id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no grant {id}")))?;
    if grant.created_by != who.identity.user {
        let rules = gw.rules.load();
        // A rule that is gone leaves its grants to their creators.
        let approvers = service
            .grant_approvers(&grant.scope, &rules.policy.rules)
            .unwrap_or_default();
        if !who.in_any(&approvers) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} neither made grant {id} nor may make such grants",
                    who.identity.user
                ),
            ));
        }
    }
    let revoked = service.revoke_grant(id, &who.identity, reason).await?;
    tracing::info!(
        grant = id,
        by = who.identity.user,
        "approvals: grant revoked through the admin API"
    );
    Ok(revoked)
}

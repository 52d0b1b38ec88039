//! Tokens issued only once approvers agree (`pgward token request`): the
//! request is a ticket like a held statement's (same approvers, votes,
//! thresholds, no self-approval, expiry, webhooks), and the token is minted
//! for the requester once, when they collect an approved ticket within
//! `[approvals] ticket_validity`.

use super::model::{
    binding, new_id, now_ms, ApprovalMode, Requester, Ticket, TicketState, TokenAsk,
};
use super::service::{ApprovalError, Approvals};
use crate::config::token_requests::TokenRequestPolicy;
use crate::policy::rules::Identity;

/// The rule name token request tickets carry.
pub const TOKEN_REQUEST_RULE: &str = "token-request";

/// Most pending token requests of one identity.
const MAX_PENDING_REQUESTS: usize = 20;

impl Approvals {
    /// Records a request by `who` for the token `ask`, decided by
    /// `policy`'s approvers.
    pub async fn request_token(
        &self,
        who: &Identity,
        client: Option<String>,
        upstream: &str,
        policy: &TokenRequestPolicy,
        ask: TokenAsk,
        justification: Option<String>,
    ) -> Result<Ticket, ApprovalError> {
        let pending = self
            .store()
            .tickets(true, 10_000)
            .await?
            .into_iter()
            .filter(|t| t.token.is_some() && t.requester.user == who.user)
            .count();
        if pending >= MAX_PENDING_REQUESTS {
            return Err(ApprovalError::Grant(format!(
                "{} has {MAX_PENDING_REQUESTS} token requests pending already",
                who.user
            )));
        }
        let statement = describe(&ask);
        let now = now_ms();
        let lifetime =
            u64::try_from(self.config().pending_lifetime.as_millis()).unwrap_or(u64::MAX);
        let ticket = Ticket {
            id: new_id(),
            mode: ApprovalMode::Ticket,
            state: TicketState::Pending,
            created_at: now,
            expires_at: now.saturating_add(lifetime),
            valid_until: None,
            requester: Requester {
                user: who.user.clone(),
                groups: who.groups.clone(),
                client,
                database: ask.database.clone(),
                upstream: upstream.to_owned(),
                role: "-".into(),
                application_name: Some("pgward token request".into()),
                session: 0,
                instance: self.instance().to_owned(),
            },
            binding: binding(&who.user, &ask.database, "", statement.as_bytes(), &[]),
            statement,
            params: Vec::new(),
            transaction: "-".into(),
            rule: TOKEN_REQUEST_RULE.into(),
            rule_message: Some(format!(
                "a token for {} on database {}",
                ask.subject, ask.database
            )),
            justification,
            approvers: policy.approvers.clone(),
            threshold: policy.threshold,
            votes: Vec::new(),
            break_glass: false,
            end_reason: None,
            token: Some(ask),
        };
        self.store().create_ticket(&ticket).await?;
        Ok(ticket)
    }

    /// The token request `id` of `who`, checked to be theirs.
    pub async fn token_request(&self, who: &Identity, id: &str) -> Result<Ticket, ApprovalError> {
        let ticket = self.ticket(id).await?;
        match ticket {
            Some(t) if t.token.is_some() && t.requester.user == who.user => Ok(t),
            _ => Err(ApprovalError::Store(
                super::store::ApprovalStoreError::NotFound {
                    kind: "token request",
                    id: id.to_owned(),
                },
            )),
        }
    }

    /// Uses the approval of `who`'s token request `id` once (it becomes
    /// `used`, noting `issued`); the caller mints the token before, so a
    /// failed mint never spends the approval, and hands it out only if this
    /// succeeds.
    pub async fn collect_token(
        &self,
        who: &Identity,
        id: &str,
        issued: &str,
    ) -> Result<Ticket, ApprovalError> {
        let user = who.user.clone();
        let issued = issued.to_owned();
        let update = move |t: &mut Ticket| {
            if t.token.is_none() || t.requester.user != user {
                return Err(format!("no token request {} of {user}", t.id));
            }
            if !t.consume(now_ms()) {
                return Err(format!(
                    "token request {} is {:?}: nothing to collect",
                    t.id, t.state
                ));
            }
            t.end_reason = Some(issued.clone());
            Ok(())
        };
        Ok(self.store().update_ticket(id, &update).await?)
    }
}

/// What approvers read as the ticket's statement.
fn describe(ask: &TokenAsk) -> String {
    let groups = if ask.groups.is_empty() {
        "none".to_owned()
    } else {
        ask.groups.join(", ")
    };
    format!(
        "issue a token for {} (groups: {groups}) on database {}, valid {}s",
        ask.subject, ask.database, ask.ttl_secs
    )
}

//! A statement whose verdict is "needs approval" (`Verdict::Approval`):
//! break-glass identities and active grants run it at once (once its
//! ticket is recorded: a brief hold with no notice); otherwise a ticket is made and the statement is held until it
//! is decided (hold mode) or refused with the ticket (ticket mode; an
//! approved ticket for the identical statement is used instead).
//!
//! Nothing here waits on I/O: the ticket's id is made here, so the notice
//! naming it goes out at once, and the store is written by the approvals
//! service's tasks, which answer through the hold.

use crate::approvals::display::{justification, show_params};
use crate::approvals::model::{
    binding, new_id, now_ms, ApprovalMode, Requester, Ticket, TicketState, Vote,
};
use crate::approvals::note::{self, Note, Notes};
use crate::approvals::Approvals;
use crate::policy::rules::ApprovalNeeded;
use crate::session::phases::{Decision, Hold, Refusal, RequestContext};
use crate::session::tracker::Statement;
use crate::sqlstate::Sqlstate;
use crate::wire::backend::TransactionStatus;
use crate::wire::frontend::BindView;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest statement text held for approval: approvers must be able to
/// read what they approve, and the ticket must fit one store record.
pub const MAX_APPROVAL_TEXT: usize = 32 * 1024;
/// How long a ticket-mode statement waits for the store's answer.
const STORE_WAIT: Duration = Duration::from_secs(30);

/// What the phase knows of approvals for its session.
pub(crate) struct ApprovalSide {
    /// The gateway's service.
    pub(crate) service: Arc<Approvals>,
    /// The identity has masked columns: its parameters are never shown.
    pub(crate) masked: bool,
    /// Notes for the audit trail, when it is on.
    pub(crate) notes: Option<Arc<Notes>>,
}

/// The statement asking: its text, and the Bind that supplies its
/// parameters (extended protocol).
pub(crate) struct Asking<'a> {
    pub(crate) text: &'a [u8],
    pub(crate) bind: Option<(&'a BindView<'a>, &'a Statement)>,
    /// The session's client_encoding: the text and text parameters are
    /// shown to approvers as the server will read them, not as UTF-8.
    pub(crate) encoding: &'a crate::policy::encoding::ClientEncoding,
}

impl ApprovalSide {
    /// The decision on a statement that needs approval.
    pub(crate) fn decide(
        &self,
        ctx: &RequestContext<'_>,
        needed: &ApprovalNeeded,
        asking: &Asking<'_>,
    ) -> Decision {
        let who = &ctx.session.identity;
        let settings = &needed.approval;
        if asking.text.len() > MAX_APPROVAL_TEXT {
            return Decision::Refuse(
                Refusal::new(
                    Sqlstate::from_code("54000"),
                    format!(
                        "statement requires approval by pgward rule \"{}\", but it is longer than {} KiB, too long to be shown to approvers",
                        needed.rule,
                        MAX_APPROVAL_TEXT / 1024
                    ),
                ),
            );
        }
        let mut ticket = self.ticket(ctx, needed, asking);
        let note = self.notes.as_ref().map(|notes| {
            let n = note::note(&ticket.id, "held");
            notes.put(ctx.request_id, Arc::clone(&n));
            n
        });
        if who.groups.iter().any(|g| settings.break_glass.contains(g)) {
            ticket.break_glass = true;
            ticket.votes.push(Vote {
                approver: who.user.clone(),
                approve: true,
                reason: Some("break-glass".into()),
                at: ticket.created_at,
            });
            ticket.state = ran(ticket.mode);
            ticket.end_reason = Some(format!("break-glass: {} ran it at once", who.user));
            tracing::warn!(
                target: "pgward::approvals",
                ticket = %ticket.id,
                user = %who.user,
                rule = %needed.rule,
                "break-glass: a statement needing approval ran at once"
            );
            if let Some(n) = &note {
                note::settle(n, "break_glass", Some(vec![who.user.clone()]));
            }
            return self.recorded(ticket, note);
        }
        if let Some(grant) = self.service.rule_grant(who, &needed.rule) {
            ticket.state = ran(ticket.mode);
            ticket.end_reason = Some(format!(
                "covered by grant {} (made by {})",
                grant.id, grant.created_by
            ));
            if let Some(n) = &note {
                note::settle(n, "granted", Some(vec![grant.created_by.clone()]));
                lock(n).grant = Some(grant.id.clone());
            }
            return self.recorded(ticket, note);
        }
        let config = self.service.config();
        match settings.mode {
            ApprovalMode::Hold => {
                let outside = settings
                    .hold_timeout
                    .unwrap_or(config.hold_timeout)
                    .min(config.pending_lifetime);
                // It holds that transaction's locks (and with requests in
                // flight, the status may be about to be a transaction).
                let in_transaction = ctx.status != TransactionStatus::Idle || ctx.tracker.busy();
                let wait = if in_transaction {
                    outside.min(config.hold_timeout_in_transaction)
                } else {
                    outside
                };
                ticket.expires_at = ticket.created_at.saturating_add(millis(wait));
                let id = ticket.id.clone();
                let url = self
                    .service
                    .ticket_url(&id)
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default();
                let (decision, ended) = self.service.hold(ticket, note);
                Decision::Hold(Hold {
                    notice: Some(format!("statement held for approval: ticket {id}{url}")),
                    ended: Some(ended),
                    timed_out: Some(Refusal::new(
                        Sqlstate::QUERY_CANCELED,
                        format!(
                            "statement held for approval: no decision on ticket {id} within {}s",
                            wait.as_secs()
                        ),
                    )),
                    ..Hold::new(Instant::now() + wait, decision)
                })
            }
            ApprovalMode::Ticket => {
                ticket.expires_at = ticket
                    .created_at
                    .saturating_add(millis(config.pending_lifetime));
                let decision = self.service.ticket_mode(ticket, note);
                Decision::Hold(Hold {
                    timed_out: Some(store_timeout()),
                    ..Hold::new(Instant::now() + STORE_WAIT, decision)
                })
            }
        }
    }

    /// Runs the statement once its ticket (break-glass, grant) is stored:
    /// a brief hold with no notice.
    fn recorded(&self, ticket: Ticket, note: Option<Note>) -> Decision {
        let decision = self.service.record_then_run(ticket, note);
        Decision::Hold(Hold {
            timed_out: Some(store_timeout()),
            ..Hold::new(Instant::now() + STORE_WAIT, decision)
        })
    }

    /// A pending ticket for the statement (its deadline set by the caller).
    fn ticket(
        &self,
        ctx: &RequestContext<'_>,
        needed: &ApprovalNeeded,
        asking: &Asking<'_>,
    ) -> Ticket {
        let info = ctx.session;
        let params: Vec<(i16, Option<&[u8]>)> = match asking.bind {
            Some((bind, _)) => bind
                .params()
                .enumerate()
                .map(|(i, v)| (bind.param_format(i), v))
                .collect(),
            None => Vec::new(),
        };
        let withhold = !params.is_empty()
            && (self.masked
                || crate::record::params::may_touch_masked(
                    asking.text,
                    &info.identity,
                    &ctx.rules.masking,
                ));
        let shown = show_params(
            &params,
            |i| asking.bind.and_then(|(_, s)| s.param_types.of(i)),
            withhold,
            asking.encoding,
        );
        let statement = crate::approvals::display::decoded(asking.text, asking.encoding);
        let now = now_ms();
        Ticket {
            id: new_id(),
            mode: needed.approval.mode,
            state: TicketState::Pending,
            created_at: now,
            expires_at: now,
            valid_until: None,
            requester: Requester {
                user: info.identity.user.clone(),
                groups: info.identity.groups.clone(),
                client: info.client.map(|c| c.to_string()),
                database: info.database.clone(),
                upstream: info.upstream.clone(),
                role: info.role.clone(),
                application_name: info.application_name.clone(),
                session: info.id,
                instance: self.service.instance().to_owned(),
            },
            justification: justification(&statement),
            statement,
            params: shown,
            binding: binding(&info.identity.user, &info.database, asking.text, &params),
            transaction: match ctx.status {
                TransactionStatus::Idle => "idle",
                TransactionStatus::InTransaction => "transaction",
                TransactionStatus::Failed => "failed",
            }
            .into(),
            rule: needed.rule.to_string(),
            rule_message: needed.message.clone(),
            approvers: needed.approval.approvers.clone(),
            threshold: needed.approval.threshold,
            votes: Vec::new(),
            break_glass: false,
            end_reason: None,
            token: None,
        }
    }
}

/// The refusal when the store does not answer within [`STORE_WAIT`].
fn store_timeout() -> Refusal {
    Refusal::new(
        Sqlstate::INSUFFICIENT_RESOURCES,
        "statement needs approval, but the approval store did not answer in time",
    )
}

/// The state of a ticket whose statement ran at once.
fn ran(mode: ApprovalMode) -> TicketState {
    match mode {
        ApprovalMode::Hold => TicketState::Approved,
        ApprovalMode::Ticket => TicketState::Used,
    }
}

fn lock(n: &Note) -> std::sync::MutexGuard<'_, note::ApprovalFields> {
    n.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

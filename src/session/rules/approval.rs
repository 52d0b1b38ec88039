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
    binding, new_id, now_ms, ApprovalMode, BoundParam, Requester, Ticket, TicketState, Vote,
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
    /// The prepared statements a Query's text runs by name (SQL `EXECUTE`)
    /// without preparing them itself, as the server will run them: what
    /// the approver approves, and what the approval covers, is them too.
    pub(crate) runs: Vec<(String, Arc<Statement>)>,
    /// The session's client_encoding: the text and text parameters are
    /// shown to approvers as the server will read them, not as UTF-8.
    pub(crate) encoding: &'a crate::policy::encoding::ClientEncoding,
    /// The session's lexing settings as the server last reported them.
    pub(crate) lexing: crate::policy::Lexing,
}

impl Asking<'_> {
    /// What approvers read: the text, then each prepared statement it runs
    /// by name.
    fn shown(&self) -> String {
        let mut shown = crate::approvals::display::decoded(self.text, self.encoding);
        for (name, statement) in &self.runs {
            shown.push_str(&format!("\n\n-- {name:?} runs the prepared statement:\n"));
            shown.push_str(&crate::approvals::display::decoded(
                &statement.text,
                self.encoding,
            ));
        }
        shown
    }

    /// The bytes an approval covers: the text, then each prepared
    /// statement it runs by name (name, text and declared parameter
    /// types), every field length-prefixed.
    fn covered(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.runs.is_empty() {
            return std::borrow::Cow::Borrowed(self.text);
        }
        let mut out = Vec::new();
        let mut field = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        };
        field(self.text);
        for (name, statement) in &self.runs {
            field(name.as_bytes());
            field(&statement.text);
            for oid in statement.param_types.parsed.iter() {
                field(&oid.to_be_bytes());
            }
        }
        std::borrow::Cow::Owned(out)
    }

    /// How the server reads the bytes, as an approval covers it (the
    /// same bytes in another client_encoding, or with other
    /// `standard_conforming_strings`, are another statement), or `None`
    /// where pgward cannot know it: a prepared statement's text was read
    /// when it was prepared, under the settings of then, and a request
    /// still running may change them before this one runs. Only text with
    /// a byte those settings change (a backslash, a byte above ASCII)
    /// depends on them.
    fn reading(&self, settings_may_change: bool, params: &[BoundParam<'_>]) -> Option<String> {
        let sensitive = |bytes: &[u8]| bytes.iter().any(|&b| b == b'\\' || !b.is_ascii());
        let read_earlier = self
            .runs
            .iter()
            .any(|(_, statement)| sensitive(&statement.text))
            || (self.bind.is_some() && sensitive(self.text));
        let read_now = (self.bind.is_none() && sensitive(self.text))
            || params
                .iter()
                .any(|(_, _, value)| value.is_some_and(|v| !v.is_ascii()));
        if read_earlier || (settings_may_change && read_now) {
            return None;
        }
        let (crate::policy::Lexing::Known(settings) | crate::policy::Lexing::Uncertain(settings)) =
            self.lexing;
        Some(format!(
            "client_encoding={};standard_conforming_strings={}",
            self.encoding.name(),
            if settings.standard_conforming_strings {
                "on"
            } else {
                "off"
            }
        ))
    }
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
        let length =
            asking.text.len() + asking.runs.iter().map(|(_, s)| s.text.len()).sum::<usize>();
        if length > MAX_APPROVAL_TEXT {
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
                user = ?who.user,
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
        let params: Vec<BoundParam<'_>> = match asking.bind {
            Some((bind, statement)) => bind
                .params()
                .enumerate()
                .map(|(i, v)| {
                    let declared = statement.param_types.parsed.get(i).copied().unwrap_or(0);
                    (bind.param_format(i), declared, v)
                })
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
        let id = new_id();
        let covered = asking.covered();
        let reading = asking
            .reading(ctx.tracker.settings_may_change(), &params)
            // Not knowing how the server reads it, no other statement is
            // known to be the same: this ticket's approval is its own only.
            .unwrap_or_else(|| format!("unknown reading: ticket {id}"));
        // The role it runs as too: an elevated session's is another.
        let context = format!(
            "upstream {:?} role {:?} {reading}",
            info.upstream, info.role
        );
        let binding = binding(
            &info.identity.user,
            &info.database,
            &context,
            &covered,
            &params,
        );
        let display: Vec<(i16, Option<&[u8]>)> =
            params.iter().map(|(format, _, v)| (*format, *v)).collect();
        let shown = show_params(
            &display,
            |i| asking.bind.and_then(|(_, s)| s.param_types.of(i)),
            withhold,
            asking.encoding,
        );
        let statement = asking.shown();
        let now = now_ms();
        Ticket {
            id,
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
            binding,
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

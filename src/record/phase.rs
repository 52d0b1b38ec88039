//! The audit phase: last in every session's order, it sees what the phases
//! before it let through (`on_request`), what any phase refused or held
//! (`on_refused`, `on_held`), and the end of every request (`on_outcome`),
//! and turns them into one record per statement: per simple Query
//! statement, per Execute, and per Parse or Bind that failed.
//!
//! Outcomes carry the request's number, so the phase pairs them with the
//! requests it saw without a model of the conversation of its own: an
//! outcome for request N settles every earlier request still open (one the
//! server skipped after an error has no outcome: it is recorded as
//! `skipped` if it would have run a statement).
//!
//! Fail-closed identities reserve queue room for each statement before it
//! runs; without room the statement is held (the hold waits for room, up to
//! `[audit] full_timeout`) and then refused with 53000.

use super::event::{Decision as Recorded, Event, Record, Shared, StatementFields, Text};
use super::queue::Slot;
use super::{Audit, SessionCounters};
use crate::session::phases::{
    Decision, Hold, Outcome, Phase, Refusal, Refused, Release, RequestContext, RequestKind,
};
use crate::sqlstate::Sqlstate;
use crate::wire::backend::TransactionStatus;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Open requests remembered, at most (a client that only ever Parses and
/// Syncs gets no outcomes to settle them; the oldest are let go).
const MAX_PENDING: usize = 4096;
/// Portals whose Bind parameters are remembered for their Execute.
const MAX_BOUND: usize = 16;

/// The SQLSTATE of a statement refused because it could not be recorded.
pub const AUDIT_UNAVAILABLE: Sqlstate = Sqlstate::INSUFFICIENT_RESOURCES;

/// The refusal of a fail-closed statement that found no room in time.
pub(crate) fn unavailable() -> Refusal {
    Refusal::new(
        AUDIT_UNAVAILABLE,
        "statement refused by pgward: the audit trail cannot take its record (the audit queue is full)",
    )
    .with_hint("The audit sink is slow or blocked; retry once it has caught up.")
}

/// Rendered Bind parameters, shared by the Bind, its Execute and records.
type Params = Option<Shared<Vec<Option<String>>>>;
/// A statement's approval note (its ticket, outcome and approvers).
type ApprovalNote = Option<crate::approvals::note::Note>;

/// A request the phase saw and whose end it waits for.
struct Pending {
    id: u64,
    kind: RequestKind,
    text: Option<Arc<[u8]>>,
    /// A multi-statement Query's statements, in order.
    parts: Option<Vec<String>>,
    params: Params,
    approval: ApprovalNote,
    status: TransactionStatus,
    rules_version: u64,
    held: Option<(&'static str, Instant)>,
    outcomes: u32,
    refused: bool,
    slots: Vec<Slot>,
    /// Room a held statement's waiter found for it.
    stash: Option<Arc<Mutex<Vec<Slot>>>>,
}

impl Pending {
    /// A request with nothing settled yet.
    fn new(
        id: u64,
        kind: RequestKind,
        text: Option<Arc<[u8]>>,
        status: TransactionStatus,
        rules_version: u64,
        held: Option<(&'static str, Instant)>,
    ) -> Self {
        Self {
            id,
            kind,
            text,
            parts: None,
            params: None,
            approval: None,
            status,
            rules_version,
            held,
            outcomes: 0,
            refused: false,
            slots: Vec::new(),
            stash: None,
        }
    }
}

/// One session's audit phase.
pub(crate) struct AuditPhase {
    audit: Arc<Audit>,
    fields: Arc<super::SessionRecord>,
    identity: crate::policy::rules::Identity,
    fail_closed: bool,
    counters: Arc<SessionCounters>,
    pending: VecDeque<Pending>,
    bound: VecDeque<(Box<[u8]>, Params, ApprovalNote)>,
    /// Notes from the rules phase on statements that needed approval.
    notes: Option<Arc<crate::approvals::note::Notes>>,
    /// A hold by a phase before this one, until the request comes here.
    held: Option<(u64, &'static str, Instant)>,
    last_bytes: u64,
}

impl AuditPhase {
    pub(crate) fn new(
        audit: Arc<Audit>,
        fields: Arc<super::SessionRecord>,
        identity: crate::policy::rules::Identity,
        fail_closed: bool,
        counters: Arc<SessionCounters>,
    ) -> Self {
        Self {
            audit,
            fields,
            identity,
            fail_closed,
            counters,
            pending: VecDeque::new(),
            bound: VecDeque::new(),
            notes: None,
            held: None,
            last_bytes: 0,
        }
    }

    /// Records approvals from these notes (the rules phase's).
    pub(crate) fn set_approval_notes(&mut self, notes: Arc<crate::approvals::note::Notes>) {
        self.notes = Some(notes);
    }

    fn note_of(&self, request_id: u64) -> ApprovalNote {
        self.notes.as_ref()?.take(request_id)
    }

    fn params_for(&self, ctx: &RequestContext<'_>) -> Params {
        let bind = ctx.bind?;
        let sensitive = self.audit.params.mode == crate::config::audit::ParameterMode::Full
            && super::params::may_touch_masked(
                ctx.text.unwrap_or_default(),
                &self.identity,
                &self.audit.masking.load(),
            );
        Some(Shared(Arc::new(self.audit.params.render(bind, sensitive))))
    }

    /// Sends a record through a reserved slot, else if there is room
    /// (counting it as dropped when there is none).
    fn emit(&self, p: Option<&mut Pending>, statement: StatementFields) {
        self.counters.statements.fetch_add(1, Ordering::Relaxed);
        let record = Record::now(Event::Statement {
            session: super::event::Shared(Arc::clone(&self.fields)),
            statement: Box::new(statement),
        });
        let slot = p.and_then(|p| {
            p.slots.pop().or_else(|| {
                p.stash
                    .as_ref()
                    .and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).pop())
            })
        });
        match slot {
            Some(slot) => slot.send(record),
            None => self.audit.shed(record),
        }
    }

    fn fields(&self, p: &Pending, index: Option<u32>) -> StatementFields {
        let statement = match (&p.parts, index) {
            (Some(parts), Some(i)) => parts.get(i as usize).cloned().map(Text::Owned),
            _ => None,
        }
        .or_else(|| p.text.clone().map(Text::Shared));
        StatementFields {
            message: kind_name(p.kind),
            index: index.filter(|_| p.parts.is_some()),
            statement,
            params: p.params.clone(),
            approval: p.approval.as_ref().map(crate::approvals::note::read),
            decision: Recorded::Allowed,
            refused_by: None,
            rule: None,
            reason: None,
            held_by: p.held.map(|(by, _)| by.to_owned()),
            held_ms: None,
            tag: None,
            rows: None,
            bytes_sent: 0,
            duration_us: None,
            sqlstate: None,
            tx_status: status_name(p.status),
            rules_version: p.rules_version,
        }
    }

    /// A request that got no outcome before a later one did: the server
    /// skipped it (or, for Parse and Bind, completed it).
    fn settle(&self, mut p: Pending) {
        let runs = matches!(p.kind, RequestKind::Execute | RequestKind::Query);
        if runs && p.outcomes == 0 && !p.refused {
            let mut f = self.fields(&p, None);
            f.decision = Recorded::Skipped;
            self.emit(Some(&mut p), f);
        }
    }

    fn hold_for_room(&self, n: usize, stash: Arc<Mutex<Vec<Slot>>>) -> Decision {
        let (tx, rx) = oneshot::channel();
        let timeout = self.audit.config.full_timeout;
        let queue = Arc::clone(&self.audit.queue);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Decision::Refuse(unavailable());
        };
        runtime.spawn(async move {
            let release = match queue.reserve(n, timeout).await {
                Some(slots) => {
                    *stash.lock().unwrap_or_else(|e| e.into_inner()) = slots;
                    Release::Run
                }
                None => Release::Refuse(unavailable()),
            };
            let _ = tx.send(release);
        });
        // The waiter answers at `timeout`; the deadline is only a backstop.
        Decision::Hold(Hold::new(
            Instant::now() + timeout + Duration::from_secs(5),
            rx,
        ))
    }
}

fn kind_name(k: RequestKind) -> &'static str {
    match k {
        RequestKind::Query => "query",
        RequestKind::Parse => "parse",
        RequestKind::Bind => "bind",
        RequestKind::Execute => "execute",
    }
}

fn status_name(s: TransactionStatus) -> &'static str {
    match s {
        TransactionStatus::Idle => "idle",
        TransactionStatus::InTransaction => "transaction",
        TransactionStatus::Failed => "failed",
    }
}

/// The rule a refusal names (`... pgward rule "name" ...`).
pub(crate) fn rule_in(message: &str) -> Option<String> {
    let start = message.find("rule \"")? + 6;
    let len = message[start..].find('"')?;
    Some(message[start..start + len].to_owned())
}

/// A multi-statement Query's statements, when it has more than one.
fn split(text: &[u8]) -> Option<Vec<String>> {
    let body = text.trim_ascii_end().strip_suffix(b";").unwrap_or(text);
    memchr::memchr(b';', body)?;
    let text = std::str::from_utf8(text).ok()?;
    let parts = pg_query::split_with_scanner(text).ok()?;
    (parts.len() > 1).then(|| parts.into_iter().map(|s| s.trim().to_owned()).collect())
}

impl Phase for AuditPhase {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn wants_outcomes(&self) -> bool {
        true
    }

    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        let text: Option<Arc<[u8]>> = match (ctx.kind, ctx.statement) {
            (RequestKind::Execute | RequestKind::Bind, Some(s)) => Some(Arc::clone(&s.text)),
            _ => ctx.text.map(Arc::from),
        };
        let parts = match ctx.kind {
            RequestKind::Query => ctx.text.and_then(split),
            _ => None,
        };
        let mut approval = self.note_of(ctx.request_id);
        let params = match ctx.kind {
            RequestKind::Bind => {
                let params = self.params_for(ctx);
                let portal = ctx.bind.map(|b| b.portal).unwrap_or_default();
                self.bound.retain(|(name, _, _)| **name != *portal);
                if self.bound.len() == MAX_BOUND {
                    self.bound.pop_front();
                }
                // The approval asked at Bind belongs to the Executes of its
                // portal, which the records are of.
                self.bound
                    .push_back((portal.into(), params.clone(), approval.take()));
                params
            }
            RequestKind::Execute => {
                let portal = ctx.portal.unwrap_or_default();
                let bound = self.bound.iter().find(|(name, _, _)| **name == *portal);
                approval = bound.and_then(|(_, _, a)| a.clone());
                bound.and_then(|(_, p, _)| p.clone())
            }
            _ => None,
        };
        let held = match self.held.take() {
            Some((id, by, at)) if id == ctx.request_id => Some((by, at)),
            _ => None,
        };
        let version = self.audit.rules_version.load(Ordering::Relaxed);
        let mut p = Pending::new(ctx.request_id, ctx.kind, text, ctx.status, version, held);
        p.parts = parts;
        p.params = params;
        p.approval = approval;
        let mut decision = Decision::Forward;
        if self.fail_closed {
            let n = p.parts.as_ref().map_or(1, Vec::len);
            match self.audit.queue.try_reserve(n) {
                Some(slots) => p.slots = slots,
                None => {
                    let stash = Arc::new(Mutex::new(Vec::new()));
                    p.stash = Some(Arc::clone(&stash));
                    decision = self.hold_for_room(n, stash);
                }
            }
        }
        if self.pending.len() >= MAX_PENDING {
            if let Some(old) = self.pending.pop_front() {
                self.settle(old);
            }
        }
        self.pending.push_back(p);
        decision
    }

    fn on_held(&mut self, request_id: u64, by: &'static str) {
        match self.pending.back_mut() {
            // This phase's own hold: the request is already pending.
            Some(p) if p.id == request_id => p.held = Some((by, Instant::now())),
            _ => self.held = Some((request_id, by, Instant::now())),
        }
    }

    fn on_refused(&mut self, r: &Refused<'_>) {
        let held = match self.held.take() {
            Some((id, by, at)) if id == r.request_id => Some((by, at)),
            _ => None,
        };
        let mut p = match self.pending.back() {
            Some(p) if p.id == r.request_id => self.pending.pop_back(),
            _ => None,
        }
        .unwrap_or_else(|| {
            let version = self.audit.rules_version.load(Ordering::Relaxed);
            let text = r.text.map(Arc::from);
            Pending::new(
                r.request_id,
                r.kind,
                text,
                TransactionStatus::Idle,
                version,
                held,
            )
        });
        p.refused = true;
        if let Some(note) = self.note_of(r.request_id) {
            p.approval = Some(note);
        }
        let mut f = self.fields(&p, None);
        f.statement = p.text.clone().map(Text::Shared);
        f.index = None;
        f.decision = Recorded::Refused;
        f.refused_by = Some(r.by.to_owned());
        f.rule = rule_in(&r.refusal.message);
        f.reason = Some(r.refusal.message.clone());
        f.sqlstate = Some(r.refusal.code.as_str().to_owned());
        f.held_ms = p.held.map(|(_, at)| at.elapsed().as_millis() as u64);
        self.emit(Some(&mut p), f);
        // Its stand-in's error is still to come; it settles the entry.
        p.slots.clear();
        self.pending.push_back(p);
    }

    fn on_outcome(&mut self, o: &Outcome<'_>) {
        let bytes = o.bytes_to_client.saturating_sub(self.last_bytes);
        self.last_bytes = o.bytes_to_client;
        self.counters
            .bytes
            .store(o.bytes_to_client, Ordering::Relaxed);
        while self.pending.front().is_some_and(|p| p.id < o.request_id) {
            if let Some(p) = self.pending.pop_front() {
                self.settle(p);
            }
        }
        let Some(mut p) = self.pending.pop_front() else {
            return;
        };
        if p.id != o.request_id {
            // A request this phase never saw (a Describe's error, say).
            self.pending.push_front(p);
            return;
        }
        if p.refused {
            return;
        }
        let is_query = p.kind == RequestKind::Query;
        let completed =
            matches!(p.kind, RequestKind::Parse | RequestKind::Bind) && o.sqlstate.is_none();
        if !completed {
            let mut f = self.fields(&p, is_query.then_some(p.outcomes));
            f.tag = o.tag.map(|t| String::from_utf8_lossy(t).into_owned());
            f.rows = o.rows;
            f.bytes_sent = bytes;
            f.duration_us = o.duration.map(|d| d.as_micros() as u64);
            f.sqlstate = o.sqlstate.map(|s| String::from_utf8_lossy(s).into_owned());
            f.held_ms = p.held.map(|(_, at)| {
                at.elapsed()
                    .saturating_sub(o.duration.unwrap_or_default())
                    .as_millis() as u64
            });
            self.emit(Some(&mut p), f);
        }
        p.outcomes += 1;
        if is_query && o.sqlstate.is_some() {
            // The Query ends at its error: the statements after it never ran.
            let parts = p.parts.as_ref().map_or(0, Vec::len) as u32;
            for i in p.outcomes..parts {
                let mut f = self.fields(&p, Some(i));
                f.decision = Recorded::Skipped;
                self.emit(Some(&mut p), f);
            }
        }
        if is_query && o.sqlstate.is_none() {
            // More statements of the Query may follow.
            self.pending.push_front(p);
        }
    }

    fn on_ready(&mut self, _status: TransactionStatus) {
        // A Query that had its answers is over at its ReadyForQuery.
        while self
            .pending
            .front()
            .is_some_and(|p| p.kind == RequestKind::Query && p.outcomes > 0)
        {
            self.pending.pop_front();
        }
    }
}

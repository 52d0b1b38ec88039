//! What the audit trail records of a statement that needed approval: its
//! ticket, how it ended and who approved. The rules phase makes the note
//! when it asks; the approvals service fills in the outcome before it
//! releases the statement, so the audit phase (later in the order) reads
//! the final note when the statement runs or is refused.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Notes kept per session, at most (requests the audit phase never sees
/// let their notes go).
const MAX_NOTES: usize = 64;

/// The approval fields of one statement's audit record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApprovalFields {
    /// The ticket.
    pub ticket: String,
    /// `held` (still), `approved`, `denied`, `expired`, `withdrawn`,
    /// `break_glass`, `granted`, `ticket_used`, `ticket_refused`,
    /// `too_many_pending` or `store_failed`.
    pub outcome: &'static str,
    /// Who approved (or denied); the requester for break-glass; the grant's
    /// maker for a grant.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// The grant that let it run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
}

/// One statement's note, shared by the rules phase, the service and the
/// audit phase.
pub type Note = Arc<Mutex<ApprovalFields>>;

/// A new note.
pub fn note(ticket: &str, outcome: &'static str) -> Note {
    Arc::new(Mutex::new(ApprovalFields {
        ticket: ticket.to_owned(),
        outcome,
        approvers: Vec::new(),
        grant: None,
    }))
}

/// Sets a note's outcome (and approvers, when given).
pub fn settle(note: &Note, outcome: &'static str, approvers: Option<Vec<String>>) {
    let mut n = note
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    n.outcome = outcome;
    if let Some(a) = approvers {
        n.approvers = a;
    }
}

/// A copy of a note as it stands.
pub fn read(note: &Note) -> ApprovalFields {
    note.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// One session's notes by request number, handed from the rules phase to
/// the audit phase.
#[derive(Debug, Default)]
pub struct Notes(Mutex<VecDeque<(u64, Note)>>);

impl Notes {
    /// Adds request `id`'s note.
    pub fn put(&self, id: u64, note: Note) {
        let mut q = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.len() >= MAX_NOTES {
            q.pop_front();
        }
        q.push_back((id, note));
    }

    /// Takes request `id`'s note, if any (and lets older ones go).
    pub fn take(&self, id: u64) -> Option<Note> {
        let mut q = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while q.front().is_some_and(|(n, _)| *n < id) {
            q.pop_front();
        }
        match q.front() {
            Some((n, _)) if *n == id => q.pop_front().map(|(_, note)| note),
            _ => None,
        }
    }
}

//! Projections: what a name will be when the server reaches the message
//! being judged now, from the confirmed state and the requests queued
//! before it.

use super::{Entry, ParamTypes, Req, Statement, Tracker};
use crate::sql::names::NameEffect;
use std::sync::{Arc, OnceLock};

/// What a name will be when the server reaches the next message.
///
/// The queue holds requests not yet answered, and any of them may fail: a
/// Parse of a name that exists fails (42P05), and so does one the server
/// skips after an earlier error in its batch; the name then keeps what it
/// had. A message is judged by what the name holds in every outcome where
/// the message runs; where two outcomes hold different things, the answer
/// is [`Projected::Uncertain`] and the message is refused, since judging
/// either would let the server run the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projected<T> {
    /// It will not exist (the server refuses a use of it).
    Absent,
    /// It will be this, or not exist, whichever earlier requests fail.
    Known(T),
    /// It will be one of two different things, depending on whether
    /// earlier requests not answered yet succeed.
    Uncertain,
}

impl<T> Projected<T> {
    /// What it certainly is, if anything.
    pub fn known(self) -> Option<T> {
        match self {
            Projected::Known(value) => Some(value),
            Projected::Absent | Projected::Uncertain => None,
        }
    }
}

/// What a name may hold: two values of it can be the same for judging.
trait Held {
    fn same(&self, other: &Self) -> bool;
}

/// Two statements are the same for judging when they have the same text,
/// made the same way, with the same declared parameter types (a Query's
/// PREPARE is projected as a new statement on every look).
impl Held for Arc<Statement> {
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
            || (self.sql_prepare == other.sql_prepare
                && self.text == other.text
                && self.param_types.parsed == other.param_types.parsed)
    }
}

/// Two portals are the same for judging when bound from the same
/// statement, or both SQL cursors (judged when declared).
impl Held for Option<&Arc<Statement>> {
    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Some(a), Some(b)) => a.same(b),
            (None, None) => true,
            _ => false,
        }
    }
}

/// One name's possible values, gathered walking the queue back from its
/// newest request.
struct Walk<T> {
    /// The value an uncertain request further on may have given the name.
    found: Option<T>,
}

impl<T: Held> Walk<T> {
    /// A request that makes the name `value`; `certain`: it took effect if
    /// the judged message runs. `Some` when the walk is over.
    #[inline]
    fn set(&mut self, value: T, certain: bool) -> Option<Projected<T>> {
        match &self.found {
            Some(found) if !found.same(&value) => return Some(Projected::Uncertain),
            Some(_) => {}
            None => self.found = Some(value),
        }
        certain.then(|| self.end())
    }

    /// A request that removes the name.
    #[inline]
    fn remove(&mut self, certain: bool) -> Option<Projected<T>> {
        certain.then(|| self.end())
    }

    /// What the server has now, under all the queue.
    #[inline]
    fn confirmed(mut self, value: Option<T>) -> Projected<T> {
        match value {
            Some(value) => self.set(value, true).unwrap_or(Projected::Uncertain),
            None => self.end(),
        }
    }

    #[inline]
    fn end(&mut self) -> Projected<T> {
        match self.found.take() {
            Some(value) => Projected::Known(value),
            None => Projected::Absent,
        }
    }
}

impl Tracker {
    /// The statement `name` as the server will have it when it reaches the
    /// next message (see [`Projected`]).
    pub fn projected_statement(&self, name: &[u8]) -> Projected<Arc<Statement>> {
        let mut walk = Walk { found: None };
        for (entry, certain) in self.back_to_front() {
            let step = match &entry.req {
                Req::Parse { name: n, statement } if n.is(name) => {
                    walk.set(Arc::clone(statement), certain)
                }
                Req::CloseStatement(n) if n.is(name) => walk.remove(certain),
                // A Query drops the unnamed statement before it parses.
                Req::Query { .. } if name.is_empty() => walk.remove(certain),
                // Each statement of a Query may fail on its own.
                Req::Query {
                    names: Some(names), ..
                } => names
                    .effects
                    .iter()
                    .rev()
                    .find_map(|(_, effect)| match effect {
                        NameEffect::Prepare(n) if n == name => walk.set(
                            Arc::new(Statement {
                                text: Arc::clone(&names.text),
                                sql_prepare: true,
                                described: OnceLock::new(),
                                param_types: ParamTypes::default(),
                            }),
                            false,
                        ),
                        NameEffect::Deallocate(n) if n == name => walk.remove(false),
                        NameEffect::DeallocateAll | NameEffect::DiscardAll => walk.remove(false),
                        _ => None,
                    }),
                _ => None,
            };
            if let Some(projected) = step {
                return projected;
            }
        }
        walk.confirmed(self.statements.get(name).cloned())
    }

    /// The portal `name` as the server will have it when it reaches the
    /// next message (see [`Projected`]): what it runs is the statement it
    /// was bound from, none for a SQL cursor. Optimistic about transaction
    /// ends still to come: if the portal is gone by then, the server says
    /// so.
    pub fn projected_portal(&self, name: &[u8]) -> Projected<Option<&Arc<Statement>>> {
        let mut walk = Walk { found: None };
        for (entry, certain) in self.back_to_front() {
            let step = match &entry.req {
                Req::Bind { portal, bound, .. } if portal.is(name) => {
                    walk.set(bound.as_ref(), certain)
                }
                Req::ClosePortal(n) if n.is(name) => walk.remove(certain),
                Req::Query { .. } if name.is_empty() => walk.remove(certain),
                Req::Query {
                    names: Some(names), ..
                } => names
                    .effects
                    .iter()
                    .rev()
                    .find_map(|(_, effect)| match effect {
                        NameEffect::Declare { name: n, .. } if n == name => walk.set(None, false),
                        NameEffect::Close(n) if n == name => walk.remove(false),
                        NameEffect::CloseAll | NameEffect::DiscardAll => walk.remove(false),
                        _ => None,
                    }),
                _ => None,
            };
            if let Some(projected) = step {
                return projected;
            }
        }
        walk.confirmed(self.portals.get(name).map(|p| p.statement.as_ref()))
    }

    /// The earliest request number among the Binds that may have made the
    /// portal `name` the server runs at the next message: the newest
    /// queued Bind of it that certainly took effect, else the queued ones
    /// that may have and the confirmed portal. Removals are not followed
    /// (an earlier number only makes a caller more careful). `None`: no
    /// Bind made it (or no such portal).
    pub(crate) fn portal_bound_at(&self, name: &[u8]) -> Option<u64> {
        let mut earliest: Option<u64> = None;
        for (entry, certain) in self.back_to_front() {
            if let Req::Bind { portal, .. } = &entry.req {
                if portal.is(name) {
                    let at = earliest.map_or(entry.id, |e| e.min(entry.id));
                    if certain {
                        return Some(at);
                    }
                    earliest = Some(at);
                }
            }
        }
        let confirmed = self.portals.get(name).map(|p| p.bound_at);
        match (earliest, confirmed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The queued requests, newest first, each with whether it certainly
    /// took effect if the message judged now runs: a request sent since the
    /// last Sync did (had it failed, the server would skip to that Sync),
    /// one before it may have failed.
    #[inline]
    fn back_to_front(&self) -> impl Iterator<Item = (&Entry, bool)> {
        let mut certain = true;
        self.queue.iter().rev().map(move |entry| {
            if matches!(entry.req, Req::Sync) {
                certain = false;
            }
            (entry, certain)
        })
    }
}

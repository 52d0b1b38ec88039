//! The conversation tracker: one exact model of a session's conversation
//! with PostgreSQL, the only one the session keeps.
//!
//! It follows every frontend message the relay forwards and pairs it with
//! the server's answers the way the server does (src/backend/tcop/postgres.c):
//!
//! - a request's effect happens when its answer arrives, never when it is
//!   sent: ParseComplete creates a statement, BindComplete a portal,
//!   CloseComplete removes one, a CommandComplete applies what that SQL
//!   statement did to the names (PREPARE, DEALLOCATE, DECLARE, CLOSE,
//!   DISCARD ALL). A message the server skipped has no effect.
//! - after an error in an extended-protocol message the server skips every
//!   message up to the next Sync; a simple Query's error ends that Query;
//!   a Query sent while the server skips is skipped too.
//! - a simple Query drops the unnamed statement and portal; portals end with
//!   their transaction (ReadyForQuery `I` or `E`) except WITH HOLD cursors.
//! - during COPY FROM STDIN the server ignores Sync and Flush.
//!
//! Phases judge requests when they are sent, against the *projected* state
//! (what a name holds when the server reaches the message, in every outcome
//! of the requests before it: `projection`); rows are planned when they
//! arrive, against the *confirmed* state. A name the projection does not know is refused; an
//! answer the model cannot pair is the server's (or pgward's) loss of step,
//! and ends the session.

mod name;
mod name_map;
mod projection;
#[cfg(test)]
mod tests;

pub(crate) use name::Name;
use name_map::NameMap;
pub use projection::Projected;

use super::phases::RequestKind;
use crate::sql::names::{self, NameEffect};
use crate::sql::repeat::{ScanAnswer, TextRepeat};
use crate::wire::backend::{row_description, FieldInfo, TransactionStatus};
use crate::wire::frontend::{BindView, Target};
use crate::wire::FrameRef;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// What a statement or portal returns, once described.
#[derive(Debug, Clone)]
pub enum Described {
    /// A RowDescription's columns.
    Rows(Arc<Vec<FieldInfo>>),
    /// NoData: no result columns.
    NoData,
}

/// A prepared statement, protocol-level or SQL-level.
#[derive(Debug)]
pub struct Statement {
    /// Its text: the Parse's SQL, or for `PREPARE` the whole Query text.
    pub text: Arc<[u8]>,
    /// Created by SQL `PREPARE` (its text is the whole message).
    pub sql_prepare: bool,
    /// Set by the first Describe of it (a statement's result shape cannot
    /// change: the server refuses to execute it if it would).
    pub described: OnceLock<Described>,
    /// Parameter type OIDs: the server's (its ParameterDescription) once a
    /// Describe is answered, else the Parse's (0: unspecified). For
    /// showing Bind values to approvers only, never for a decision.
    pub param_types: ParamTypes,
}

/// A statement's parameter types, as far as known.
#[derive(Debug, Default)]
pub struct ParamTypes {
    /// As the Parse sent them.
    pub parsed: Arc<[u32]>,
    /// As the server described them.
    pub described: OnceLock<Arc<[u32]>>,
}

impl ParamTypes {
    /// Parameter `i`'s type OID, when known.
    pub fn of(&self, i: usize) -> Option<u32> {
        self.described
            .get()
            .and_then(|d| d.get(i))
            .or_else(|| self.parsed.get(i))
            .copied()
            .filter(|oid| *oid != 0)
    }
}

/// A portal: a bound statement, or a SQL cursor.
#[derive(Debug)]
pub struct Portal {
    /// The statement it was bound from (none for a SQL cursor).
    pub statement: Option<Arc<Statement>>,
    /// Bind's result formats (none: all text; one: all alike); `None`
    /// where descriptions are not kept (nothing reads them then, and a
    /// shared empty value cost a count up and down per Bind).
    pub formats: Option<Arc<[i16]>>,
    /// Set by the first Describe of the portal (kept only where
    /// descriptions are).
    pub described: Option<Described>,
    /// A cursor declared WITH HOLD outlives its transaction.
    pub holdable: bool,
    /// The session's number of the request that made it: its Bind's (0
    /// for a SQL cursor, whose Query's number is not kept).
    pub bound_at: u64,
}

/// The result whose rows are arriving now.
#[derive(Debug, Clone)]
pub struct ResultInfo {
    /// Its columns, when known.
    pub fields: Option<Arc<Vec<FieldInfo>>>,
    /// Bind's result formats for an Execute; `None` for a simple Query
    /// (the RowDescription carries its own formats) and where descriptions
    /// are not kept.
    pub formats: Option<Arc<[i16]>>,
}

/// Empty request queues kept per thread for the sessions that run on it.
mod spare_queue {
    use super::Entry;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// Queues kept per thread, at most.
    const KEPT: usize = 16;
    /// A queue that grew past this many entries (pipelined bursts) is freed.
    const LARGEST_KEPT: usize = 16;

    thread_local! {
        static POOL: RefCell<Vec<VecDeque<Entry>>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty queue, from the pool when it has one.
    #[inline]
    pub(super) fn take() -> VecDeque<Entry> {
        POOL.try_with(|pool| pool.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keeps an empty `queue` for the next [`take`], when there is room.
    #[inline]
    pub(super) fn give(queue: VecDeque<Entry>) {
        if !queue.is_empty() || queue.capacity() > LARGEST_KEPT {
            return;
        }
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < KEPT {
                pool.push(queue);
            }
        });
    }
}

/// A message the tracker follows, waiting for its answer. (A tag of its
/// own: matched on every answer, a tag folded into a name's niche was
/// decoded with arithmetic at each match.)
#[derive(Debug)]
#[repr(u8)]
enum Req {
    Query {
        /// What its SQL does to names; `None` for most Queries (nothing
        /// is allocated, cloned or dropped for them).
        names: Option<Box<QueryNames>>,
        /// Statements of the Query answered so far.
        done: usize,
        /// The Query's first answer dropped the unnamed statement and portal.
        started: bool,
    },
    Parse {
        name: Name,
        statement: Arc<Statement>,
    },
    Bind {
        portal: Name,
        statement: Name,
        /// What the server will bind from when it reaches this Bind (the
        /// projection when it was sent): what the portal runs, whatever
        /// happens to the name afterwards.
        bound: Option<Arc<Statement>>,
        formats: Option<Arc<[i16]>>,
    },
    DescribeStatement(Name),
    DescribePortal(Name),
    Execute(Name),
    CloseStatement(Name),
    ClosePortal(Name),
    Sync,
    /// A stand-in for a refused message that is not a Query: a Parse the
    /// server fails (the extended protocol then skips to Sync).
    StandInParse,
    /// CopyDone or CopyFail: where the client ended its copy data.
    CopyEnd,
}

/// What a Query's SQL statements do to names.
#[derive(Debug)]
struct QueryNames {
    /// Each effect with the number of the statement (in the Query) that
    /// has it; never empty.
    effects: Vec<(usize, NameEffect)>,
    /// The Query's text (what a PREPARE in it creates).
    text: Arc<[u8]>,
}

impl Req {
    fn is_extended(&self) -> bool {
        !matches!(self, Req::Query { .. } | Req::Sync | Req::CopyEnd)
    }
}

#[derive(Debug)]
struct Entry {
    req: Req,
    /// pgward's own error for a stand-in, sent in place of the server's.
    /// (Boxed: stand-ins are rare, and every entry is moved in and out.)
    refusal: Option<Box<StandInAnswer>>,
    /// When it went out (only while someone wants request outcomes).
    sent: Option<Instant>,
    /// The request's number in the session (see `Tracker::next_request_id`).
    id: u64,
}

/// What a stand-in's ErrorResponse is swapped for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StandInAnswer {
    /// The unique text the server's error quotes; an error without it (a
    /// failed transaction's 25P02) is the server's own and goes through.
    pub(crate) marker: Box<str>,
    /// pgward's ErrorResponse.
    pub(crate) error: Bytes,
}

/// What a backend message is, for the session core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Part of an answer with nothing for the phases (ParseComplete, ...).
    Plain,
    /// A RowDescription that starts a simple Query's result.
    ResultStart,
    /// A DataRow; `first`: the first of an Execute's result (the result
    /// starts here, its description comes from the portal).
    Row {
        /// First row of an Execute.
        first: bool,
    },
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    ResultEnd,
    /// An ErrorResponse; `refusal`: pgward's error for a stand-in.
    Error {
        /// pgward's own error, when this answers a stand-in (boxed: the
        /// event stays small, and the box moves out of the request as is).
        refusal: Option<Box<StandInAnswer>>,
    },
    /// ReadyForQuery.
    Ready(TransactionStatus),
    /// ParameterStatus, NoticeResponse or NotificationResponse: may come at
    /// any time.
    Async,
}

/// The server sent something the conversation cannot contain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected {what} from the server {when}")]
pub(crate) struct OutOfStep {
    what: &'static str,
    when: &'static str,
}

fn out_of_step(what: &'static str, when: &'static str) -> OutOfStep {
    OutOfStep { what, when }
}

/// One session's conversation.
#[derive(Debug)]
pub struct Tracker {
    statements: NameMap<Arc<Statement>>,
    portals: NameMap<Portal>,
    queue: VecDeque<Entry>,
    /// The name keyword scan's last answer (`sql::repeat`).
    may_name: ScanAnswer,
    /// An extended-protocol error was answered and no Sync is queued: the
    /// server ignores everything up to the next Sync.
    skipping: bool,
    /// The server is in COPY FROM STDIN.
    copy_in: bool,
    /// A request went out since the last ReadyForQuery that left nothing
    /// in flight: the server reports changed settings (ParameterStatus)
    /// only just before a ReadyForQuery, so what such a request changed
    /// (a SET run by an Execute and flushed) is not reported yet.
    unreported: bool,
    status: TransactionStatus,
    /// Keep RowDescriptions (masking plans from them).
    keep_descriptions: bool,
    /// The result in progress.
    result: Option<ResultInfo>,
    /// Stamp requests with their send time.
    timing: bool,
    /// A shared empty value, so following a message allocates nothing it
    /// does not need; `None` where descriptions are not kept.
    no_formats: Option<Arc<[i16]>>,
    /// The number the next request gets (phases pair outcomes with the
    /// requests they judged by it).
    next_id: u64,
    /// With kept descriptions: the last RowDescription's body and what was
    /// read from it (`read_description`).
    last_description: Option<Box<LastDescription>>,
}

/// A RowDescription's body and the fields read from it.
type LastDescription = (Box<[u8]>, Arc<Vec<FieldInfo>>);

/// A RowDescription body up to this long is kept for the next one to be
/// compared with (one per session; a wider one is read every time).
const KEPT_DESCRIPTION: usize = 512;

impl Tracker {
    /// A tracker for a session that has just logged in (idle, no names).
    pub(crate) fn new(keep_descriptions: bool) -> Self {
        Self {
            statements: NameMap::default(),
            portals: NameMap::default(),
            queue: VecDeque::new(),
            may_name: ScanAnswer::default(),
            skipping: false,
            copy_in: false,
            unreported: false,
            status: TransactionStatus::Idle,
            keep_descriptions,
            result: None,
            timing: false,
            no_formats: keep_descriptions.then(|| Arc::from(&[][..])),
            next_id: 1,
            last_description: None,
        }
    }

    /// Gives back the request queue's room while nothing is in flight (an
    /// idle session then holds none): to the thread's spare queues, where
    /// the next request of a session on this thread finds it (allocating
    /// and growing a queue per transaction cost about 400 instructions).
    #[inline]
    pub(crate) fn release_idle(&mut self) {
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            spare_queue::give(std::mem::take(&mut self.queue));
        }
    }

    /// Stamps requests with their send time from now on (for durations).
    pub(crate) fn time_requests(&mut self) {
        self.timing = true;
    }

    /// When the request at the front (the one being answered) went out.
    pub(crate) fn front_sent(&self) -> Option<Instant> {
        self.queue.front().and_then(|e| e.sent)
    }

    /// The transaction status from the last ReadyForQuery.
    pub fn status(&self) -> TransactionStatus {
        self.status
    }

    /// Whether the server has requests it has not answered yet (a setting it
    /// reported may then still change before the next message runs).
    pub fn busy(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether a setting the server reported may have changed since: a
    /// request is unanswered, or one was answered without a ReadyForQuery
    /// after it (Parse / Bind / Execute and a Flush, no Sync). The server
    /// sends ParameterStatus only before ReadyForQuery, so an Execute of
    /// `SET standard_conforming_strings = off` that has completed changes
    /// how the next message is lexed before pgward is told.
    pub fn settings_unreported(&self) -> bool {
        self.unreported || !self.queue.is_empty()
    }

    /// Whether a setting may differ from what the server reported when the
    /// next message runs: one was changed and not reported yet
    /// ([`Self::settings_unreported`] without a ReadyForQuery since an
    /// answer), or a request still unanswered may change one (a Query or an
    /// Execute runs SQL, a Sync may end a transaction and its `SET LOCAL`s;
    /// Parse, Bind, Describe and Close change none).
    pub fn settings_may_change(&self) -> bool {
        self.unreported
            || self.queue.iter().any(|e| {
                matches!(
                    e.req,
                    Req::Query { .. } | Req::Execute(_) | Req::Sync | Req::CopyEnd
                )
            })
    }

    /// ReadyForQuery messages the server still owes (one per queued Query
    /// and Sync).
    pub(crate) fn ready_pending(&self) -> u64 {
        self.queue
            .iter()
            .filter(|e| matches!(e.req, Req::Query { .. } | Req::Sync))
            .count() as u64
    }

    /// Whether the server is in COPY FROM STDIN and the client has not
    /// ended its copy data yet: only copy messages (and Sync, Flush, which
    /// the server ignores then) belong here.
    pub(crate) fn in_copy(&self) -> bool {
        self.copy_in && !self.queue.iter().any(|e| matches!(e.req, Req::CopyEnd))
    }

    /// The result whose rows arrive now.
    pub(crate) fn result(&self) -> Option<&ResultInfo> {
        self.result.as_ref()
    }

    /// The number the next message followed gets: what a phase judging a
    /// request now sees as its `request_id`, and what its outcome carries.
    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_id
    }

    /// The number of the request being answered now.
    pub(crate) fn front_id(&self) -> Option<u64> {
        self.queue
            .iter()
            .find(|e| self.copy_in || !matches!(e.req, Req::CopyEnd))
            .map(|e| e.id)
    }

    // Inlined into each message's method, so its request is built in place
    // (a call copied the request twice, into the entry and the queue).
    #[inline(always)]
    fn push(&mut self, req: Req) {
        // Numbered even when skipped, so a number is never reused.
        let id = self.next_id;
        self.next_id += 1;
        // While the server skips to Sync, what it skips has no answer.
        if self.skipping {
            if matches!(req, Req::Sync) {
                self.skipping = false;
            } else {
                return;
            }
        }
        self.unreported = true;
        let sent = self.timing.then(Instant::now);
        if self.queue.capacity() == 0 {
            // A queue without room owns no memory: forgetting it frees
            // nothing and spares its drop glue (about 45 instructions, a
            // call per transaction, as the queue is given back when idle).
            std::mem::forget(std::mem::replace(&mut self.queue, spare_queue::take()));
        }
        self.queue.push_back(Entry {
            req,
            refusal: None,
            sent,
            id,
        });
    }

    // ---- client side: messages as they are forwarded ----

    /// A simple Query goes out.
    pub(crate) fn query(&mut self, text: &[u8], repeat: Option<TextRepeat>) {
        // The keyword scan answers a repeat of the previous text but for
        // its numbers alike (`sql::repeat`); the parse behind a yes might
        // not, so it runs again.
        let effects = if self.may_name.of(text, repeat, names::may_name) {
            names::effects(text)
        } else {
            Vec::new()
        };
        // The text is kept only for what a PREPARE in it creates: most
        // Queries cost no copy.
        let names = (!effects.is_empty()).then(|| {
            Box::new(QueryNames {
                effects,
                text: text.into(),
            })
        });
        self.push(Req::Query {
            names,
            done: 0,
            started: false,
        });
    }

    /// A Parse goes out.
    pub(crate) fn parse(&mut self, name: &[u8], text: &[u8], param_types: &[u8]) {
        let statement = Arc::new(Statement {
            text: text.into(),
            sql_prepare: false,
            described: OnceLock::new(),
            param_types: ParamTypes {
                parsed: oids(param_types),
                described: OnceLock::new(),
            },
        });
        self.push(Req::Parse {
            name: Name::new(name),
            statement,
        });
    }

    /// A Bind goes out; `statement`: what [`Self::projected_statement`]
    /// says it binds from, when the caller has it.
    pub(crate) fn bind(&mut self, bind: &BindView<'_>, statement: Option<Arc<Statement>>) {
        let bound = match statement {
            Some(s) => Some(s),
            None => self.projected_statement(bind.statement).known(),
        };
        self.push(Req::Bind {
            portal: Name::new(bind.portal),
            statement: Name::new(bind.statement),
            bound,
            // Formats matter only where rows are planned.
            formats: self
                .keep_descriptions
                .then(|| bind.result_formats().collect::<Arc<[i16]>>()),
        });
    }

    /// A Describe goes out.
    pub(crate) fn describe(&mut self, target: Target<'_>) {
        self.push(match target {
            Target::Statement(n) => Req::DescribeStatement(Name::new(n)),
            Target::Portal(n) => Req::DescribePortal(Name::new(n)),
        });
    }

    /// An Execute goes out.
    pub(crate) fn execute(&mut self, portal: &[u8]) {
        self.push(Req::Execute(Name::new(portal)));
    }

    /// A Close goes out.
    pub(crate) fn close(&mut self, target: Target<'_>) {
        self.push(match target {
            Target::Statement(n) => Req::CloseStatement(Name::new(n)),
            Target::Portal(n) => Req::ClosePortal(Name::new(n)),
        });
    }

    /// A Sync goes out. During COPY FROM STDIN, before the client's
    /// CopyDone, the server ignores it.
    pub(crate) fn sync(&mut self) {
        if self.in_copy() {
            return;
        }
        self.push(Req::Sync);
    }

    /// A CopyDone or CopyFail goes out.
    pub(crate) fn copy_end(&mut self) {
        self.push(Req::CopyEnd);
    }

    /// A refused message's stand-in goes out: a Query (for a refused Query
    /// or FunctionCall) or a failing Parse (for any extended message).
    /// `error` is what the client gets in place of the server's answer.
    pub(crate) fn stand_in(&mut self, query: bool, error: StandInAnswer) {
        let req = if query {
            Req::Query {
                names: None,
                done: 0,
                started: false,
            }
        } else {
            Req::StandInParse
        };
        let before = self.queue.len();
        self.push(req);
        if self.queue.len() > before {
            if let Some(last) = self.queue.back_mut() {
                last.refusal = Some(Box::new(error));
            }
        }
    }

    // ---- server side: answers ----

    /// Drops copy-end markers the server ignored (no copy was running).
    #[inline]
    fn settle_front(&mut self) {
        if self.copy_in {
            return;
        }
        while matches!(
            self.queue.front(),
            Some(Entry {
                req: Req::CopyEnd,
                ..
            })
        ) {
            self.queue.pop_front();
        }
    }

    #[inline]
    fn front(&mut self) -> Option<&mut Entry> {
        self.settle_front();
        self.queue.front_mut()
    }

    /// Takes the answered request at the front off the queue. The kinds
    /// most answers end (a Query that named nothing, a Sync, a Describe or
    /// Execute of a short name, none a stand-in) hold nothing to free: they
    /// are forgotten, not dropped, which spares the copy of the entry and
    /// the call into its drop glue (about 30 instructions a request). A
    /// match on the popped entry does not: its scrutinee is dropped whole
    /// whatever arm matched. Inlined into each answer's method, where the
    /// forgotten entry is seen to be unread and is not copied out at all.
    #[inline(always)]
    fn pop_answered(&mut self) {
        let holds_nothing = matches!(
            self.queue.front(),
            // Every field named, so that a field added to either must be
            // considered here (forgetting it could leak what it holds).
            Some(Entry {
                req: Req::Query {
                    names: None,
                    done: _,
                    started: _,
                } | Req::Sync
                    | Req::Execute(Name::Inline(..))
                    | Req::DescribePortal(Name::Inline(..))
                    | Req::DescribeStatement(Name::Inline(..)),
                refusal: None,
                sent: _,
                id: _,
            })
        );
        let entry = self.queue.pop_front();
        if holds_nothing {
            std::mem::forget(entry);
        } else {
            drop(entry);
        }
    }

    /// A DataRow arrives (only its tag is needed, so a row may stream).
    pub(crate) fn row(&mut self) -> Result<Event, OutOfStep> {
        if self.result.is_some() {
            return Ok(Event::Row { first: false });
        }
        self.settle_front();
        let Some(Entry {
            req: Req::Execute(portal),
            ..
        }) = self.queue.front()
        else {
            return Err(out_of_step("DataRow", "outside a result"));
        };
        let portal = self
            .portals
            .get(portal.as_bytes())
            .ok_or(out_of_step("DataRow", "for a portal that does not exist"))?;
        self.result = Some(execution_result(portal));
        Ok(Event::Row { first: true })
    }

    /// Server CopyData (only its tag is needed, so it may stream).
    pub(crate) fn copy_data(&mut self) -> Result<(), OutOfStep> {
        match self.front() {
            Some(Entry {
                req: Req::Query { .. } | Req::Execute(_),
                ..
            }) => Ok(()),
            _ => Err(out_of_step("CopyData", "outside a COPY")),
        }
    }

    /// The request being answered now, as the phases name it.
    pub(crate) fn front_kind(&self) -> Option<RequestKind> {
        let front = self
            .queue
            .iter()
            .find(|e| self.copy_in || !matches!(e.req, Req::CopyEnd))?;
        Some(match front.req {
            Req::Query { .. } => RequestKind::Query,
            Req::Parse { .. } | Req::StandInParse => RequestKind::Parse,
            Req::Bind { .. } | Req::DescribeStatement(_) | Req::DescribePortal(_) => {
                RequestKind::Bind
            }
            Req::Execute(_) => RequestKind::Execute,
            Req::CloseStatement(_) | Req::ClosePortal(_) | Req::Sync | Req::CopyEnd => return None,
        })
    }

    /// Any other backend message (complete). The core calls the methods
    /// for the common answers (RowDescription, CommandComplete,
    /// ErrorResponse, ReadyForQuery) directly: the same code, without the
    /// second dispatch on the tag and the event in between.
    pub(crate) fn answer(&mut self, frame: FrameRef<'_>) -> Result<Event, OutOfStep> {
        match frame.tag() {
            b'D' => self.row(),
            b'1' => self.parse_complete(),
            b'2' => self.bind_complete(),
            b'3' => self.close_complete(),
            b't' => {
                self.settle_front();
                let name = match self.queue.front() {
                    Some(Entry {
                        req: Req::DescribeStatement(n),
                        ..
                    }) => n,
                    _ => return Err(out_of_step("ParameterDescription", "without a Describe")),
                };
                // Int16 count, then the OIDs: kept for display only, so a
                // malformed one is simply not kept.
                let body = frame.body();
                let declared = body
                    .get(..2)
                    .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])));
                if let (Some(count), Some(s)) = (declared, self.statements.get(name.as_bytes())) {
                    if body.len() == 2 + 4 * count {
                        let _ = s.param_types.described.set(oids(&body[2..]));
                    }
                }
                Ok(Event::Plain)
            }
            b'T' => Ok(if self.row_description(frame)? {
                Event::ResultStart
            } else {
                Event::Plain
            }),
            b'n' => self.no_data(),
            b'C' | b'I' | b's' => self.result_end(frame.tag()).map(|()| Event::ResultEnd),
            b'E' => Ok(Event::Error {
                refusal: self.error(),
            }),
            b'Z' => self.ready(frame).map(Event::Ready),
            b'G' => self.copy_in_response(),
            b'H' => match self.front() {
                Some(Entry {
                    req: Req::Query { .. } | Req::Execute(_),
                    ..
                }) => {
                    self.query_started();
                    Ok(Event::Plain)
                }
                _ => Err(out_of_step("CopyOutResponse", "outside a statement")),
            },
            b'd' => self.copy_data().map(|()| Event::Plain),
            // The end of copy-out data, inside the statement's answer.
            b'c' => match self.front() {
                Some(Entry {
                    req: Req::Query { .. } | Req::Execute(_),
                    ..
                }) => Ok(Event::Plain),
                _ => Err(out_of_step("CopyData", "outside a COPY")),
            },
            b'S' | b'N' | b'A' => Ok(Event::Async),
            b'W' => Err(out_of_step(
                "CopyBothResponse",
                "(replication is not relayed)",
            )),
            b'R' => Err(out_of_step("authentication message", "after login")),
            b'K' => Err(out_of_step("BackendKeyData", "after login")),
            b'v' => Err(out_of_step("NegotiateProtocolVersion", "after login")),
            b'V' => Err(out_of_step(
                "FunctionCallResponse",
                "(pgward relays no FunctionCall)",
            )),
            _ => Err(out_of_step("message type", "(unknown to the protocol)")),
        }
    }

    /// A Query's first answer: the server dropped the unnamed statement and
    /// portal when it began.
    fn query_started(&mut self) {
        if let Some(Entry {
            req: Req::Query { started, .. },
            ..
        }) = self.queue.front_mut()
        {
            if !*started {
                *started = true;
                self.drop_unnamed();
            }
        }
    }

    /// A Query began: the server dropped the unnamed statement and portal.
    #[inline]
    fn drop_unnamed(&mut self) {
        self.statements.remove(b"");
        self.portals.remove(b"");
    }

    fn parse_complete(&mut self) -> Result<Event, OutOfStep> {
        let Some(Entry {
            req: Req::Parse { .. },
            ..
        }) = self.front()
        else {
            return Err(out_of_step("ParseComplete", "without a Parse"));
        };
        if let Some(Entry {
            req: Req::Parse { name, statement },
            ..
        }) = self.queue.pop_front()
        {
            self.statements.insert(name, statement);
        }
        Ok(Event::Plain)
    }

    fn bind_complete(&mut self) -> Result<Event, OutOfStep> {
        self.settle_front();
        let Some(Entry {
            req: Req::Bind { statement, .. },
            ..
        }) = self.queue.front()
        else {
            return Err(out_of_step("BindComplete", "without a Bind"));
        };
        // The portal gets the statement the server has under the name now
        // (all earlier answers are in): the confirmed one, not the Bind's
        // projection.
        let confirmed = self
            .statements
            .get(statement.as_bytes())
            .ok_or(out_of_step(
                "BindComplete",
                "for a statement that does not exist",
            ))?;
        if let Some(Entry {
            req:
                Req::Bind {
                    portal,
                    formats,
                    bound,
                    ..
                },
            id,
            ..
        }) = self.queue.pop_front()
        {
            // Mostly the projection was that very statement: its reference
            // moves over instead of a second one being counted.
            let statement = match bound {
                Some(bound) if Arc::ptr_eq(&bound, confirmed) => bound,
                _ => Arc::clone(confirmed),
            };
            self.portals.insert(
                portal,
                Portal {
                    statement: Some(statement),
                    formats,
                    described: None,
                    holdable: false,
                    bound_at: id,
                },
            );
        }
        Ok(Event::Plain)
    }

    fn close_complete(&mut self) -> Result<Event, OutOfStep> {
        match self.front().map(|e| &e.req) {
            Some(Req::CloseStatement(_) | Req::ClosePortal(_)) => {}
            _ => return Err(out_of_step("CloseComplete", "without a Close")),
        }
        match self.queue.pop_front().map(|e| e.req) {
            Some(Req::CloseStatement(n)) => {
                self.statements.remove(n.as_bytes());
            }
            Some(Req::ClosePortal(n)) => {
                self.portals.remove(n.as_bytes());
            }
            _ => {}
        }
        Ok(Event::Plain)
    }

    /// The Describe at the front is answered: `described`. (Taken off the
    /// queue whatever the outcome, as an answer out of step ends the
    /// session anyway.)
    fn describe_with(&mut self, described: Described) -> Result<(), OutOfStep> {
        let done = match self.queue.front().map(|e| &e.req) {
            Some(Req::DescribeStatement(n)) => match self.statements.get(n.as_bytes()) {
                Some(s) => {
                    // Read only where rows are planned (and setting a
                    // `OnceLock` is not free).
                    if self.keep_descriptions {
                        let _ = s.described.set(described);
                    }
                    Ok(())
                }
                None => Err(out_of_step(
                    "description",
                    "of a statement that does not exist",
                )),
            },
            Some(Req::DescribePortal(n)) => match self.portals.get_mut(n.as_bytes()) {
                Some(p) => {
                    // The first description stays (a portal's cannot change).
                    p.described.get_or_insert(described);
                    Ok(())
                }
                None => Err(out_of_step(
                    "description",
                    "of a portal that does not exist",
                )),
            },
            _ => Ok(()),
        };
        self.pop_answered();
        done
    }

    /// A RowDescription: a Describe's answer, or the start of a simple
    /// Query's result (`true`: then its rows follow).
    pub(crate) fn row_description(&mut self, frame: FrameRef<'_>) -> Result<bool, OutOfStep> {
        let fields = if self.keep_descriptions {
            Some(self.read_description(frame)?)
        } else {
            None
        };
        match self.front().map(|e| &e.req) {
            Some(Req::DescribeStatement(_) | Req::DescribePortal(_)) => {
                let described = fields.map_or(Described::NoData, Described::Rows);
                // Without kept descriptions the value is never read.
                self.describe_with(described)?;
                Ok(false)
            }
            Some(Req::Query { .. }) => {
                self.query_started();
                self.result = Some(ResultInfo {
                    fields,
                    formats: None,
                });
                Ok(true)
            }
            _ => Err(out_of_step("RowDescription", "outside a Query or Describe")),
        }
    }

    /// The fields of a RowDescription. The same bytes as the last one's
    /// read the same: its fields are shared, not read and allocated again
    /// (a session repeats its statements), and a phase that plans rows
    /// from them sees the same fields (`Arc::ptr_eq`).
    fn read_description(&mut self, frame: FrameRef<'_>) -> Result<Arc<Vec<FieldInfo>>, OutOfStep> {
        let body = frame.body();
        if let Some(last) = &self.last_description {
            if *last.0 == *body {
                return Ok(Arc::clone(&last.1));
            }
        }
        let fields = Arc::new(
            row_description(frame).map_err(|_| out_of_step("RowDescription", "(malformed)"))?,
        );
        if body.len() <= KEPT_DESCRIPTION {
            self.last_description = Some(Box::new((body.into(), Arc::clone(&fields))));
        }
        Ok(fields)
    }

    fn no_data(&mut self) -> Result<Event, OutOfStep> {
        match self.front().map(|e| &e.req) {
            Some(Req::DescribeStatement(_) | Req::DescribePortal(_)) => {
                self.describe_with(Described::NoData)?;
                Ok(Event::Plain)
            }
            _ => Err(out_of_step("NoData", "without a Describe")),
        }
    }

    /// CommandComplete (`C`), EmptyQueryResponse (`I`) or PortalSuspended
    /// (`s`): a result ends.
    pub(crate) fn result_end(&mut self, tag: u8) -> Result<(), OutOfStep> {
        self.result = None;
        let ended_copy = std::mem::replace(&mut self.copy_in, false);
        self.query_started();
        match self.front().map(|e| &mut e.req) {
            Some(Req::Query { names, done, .. }) if tag != b's' => {
                let unit = *done;
                *done += 1;
                // Most Queries name nothing: nothing to collect.
                if let Some(names) = names {
                    let applied: Vec<NameEffect> = names
                        .effects
                        .iter()
                        .filter(|(i, _)| *i == unit)
                        .map(|(_, e)| e.clone())
                        .collect();
                    for effect in applied {
                        self.apply(effect);
                    }
                }
            }
            Some(Req::Execute(_)) => self.pop_answered(),
            _ => {
                return Err(out_of_step(
                    "CommandComplete",
                    "without a statement running",
                ))
            }
        }
        if ended_copy {
            // The client's CopyDone was consumed by the copy.
            if let Some(at) = self
                .queue
                .iter()
                .position(|e| matches!(e.req, Req::CopyEnd))
            {
                self.queue.remove(at);
            }
        }
        Ok(())
    }

    /// What a SQL statement did to the names, once it completed.
    fn apply(&mut self, effect: NameEffect) {
        match effect {
            NameEffect::Prepare(name) => {
                let text = match self.queue.front().map(|e| &e.req) {
                    Some(Req::Query {
                        names: Some(names), ..
                    }) => Arc::clone(&names.text),
                    _ => return,
                };
                self.statements.insert(
                    Name::new(&name),
                    Arc::new(Statement {
                        text,
                        sql_prepare: true,
                        described: OnceLock::new(),
                        param_types: ParamTypes::default(),
                    }),
                );
            }
            NameEffect::Deallocate(name) => {
                self.statements.remove(&name);
            }
            NameEffect::DeallocateAll => self.statements.clear(),
            NameEffect::Declare { name, hold } => {
                self.portals.insert(
                    Name::new(&name),
                    Portal {
                        statement: None,
                        formats: self.no_formats.clone(),
                        described: None,
                        holdable: hold,
                        bound_at: 0,
                    },
                );
            }
            NameEffect::Close(name) => {
                self.portals.remove(&name);
            }
            NameEffect::CloseAll => self.portals.clear(),
            NameEffect::DiscardAll => {
                self.statements.clear();
                self.portals.clear();
            }
        }
    }

    /// An ErrorResponse: pgward's own error, when it answers a stand-in.
    pub(crate) fn error(&mut self) -> Option<Box<StandInAnswer>> {
        self.result = None;
        self.copy_in = false;
        let Some(front) = self.front() else {
            // Not an answer: a FATAL at shutdown, say.
            return None;
        };
        let refusal = front.refusal.take();
        if !front.req.is_extended() {
            // A Query's error ends the Query; its ReadyForQuery follows.
            self.query_started();
            return refusal;
        }
        if let Some(failed) = self.queue.pop_front() {
            // A failed Parse or Bind of the unnamed statement or portal may
            // already have dropped the old one: forget it (at worst a later
            // use is refused rather than guessed).
            match failed.req {
                Req::Parse { name, .. } if name.is_unnamed() => {
                    self.statements.remove(name.as_bytes());
                }
                Req::Bind { portal, .. } if portal.is_unnamed() => {
                    self.portals.remove(portal.as_bytes());
                }
                _ => {}
            }
        }
        // Everything up to the next Sync is skipped by the server.
        while let Some(e) = self.queue.front() {
            if matches!(e.req, Req::Sync) {
                return refusal;
            }
            self.queue.pop_front();
        }
        self.skipping = true;
        refusal
    }

    /// ReadyForQuery: a Query or Sync is answered in full.
    pub(crate) fn ready(&mut self, frame: FrameRef<'_>) -> Result<TransactionStatus, OutOfStep> {
        let status = crate::wire::backend::ready_status(frame)
            .map_err(|_| out_of_step("ReadyForQuery", "(malformed)"))?;
        let began = match self.front().map(|e| &e.req) {
            // A Query answered by nothing else (an empty one) began too.
            Some(Req::Query { started, .. }) => !*started,
            Some(Req::Sync) => false,
            _ => return Err(out_of_step("ReadyForQuery", "without a Query or Sync")),
        };
        if began {
            self.drop_unnamed();
        }
        self.pop_answered();
        // The reports of everything before it came with it; requests still
        // queued behind it set this again when answered (see `push`).
        self.unreported = !self.queue.is_empty();
        self.result = None;
        self.status = status;
        if status != TransactionStatus::InTransaction {
            // The transaction ended: its portals are gone.
            self.portals.retain(|p| p.holdable);
        }
        Ok(status)
    }

    fn copy_in_response(&mut self) -> Result<Event, OutOfStep> {
        match self.front().map(|e| &e.req) {
            Some(Req::Query { .. } | Req::Execute(_)) => {}
            _ => return Err(out_of_step("CopyInResponse", "outside a statement")),
        }
        self.query_started();
        self.copy_in = true;
        // Messages already sent behind the COPY and before the client's
        // CopyDone are read by the server during the copy: Sync and Flush
        // are ignored; anything else would abort the copy in a way pgward
        // does not follow.
        let end = self
            .queue
            .iter()
            .position(|e| matches!(e.req, Req::CopyEnd))
            .unwrap_or(self.queue.len());
        let i = 1;
        let mut end = end;
        while i < end {
            match self.queue[i].req {
                Req::Sync => {
                    self.queue.remove(i);
                    end -= 1;
                }
                _ => {
                    return Err(out_of_step(
                        "CopyInResponse",
                        "with requests pipelined into the copy",
                    ))
                }
            }
        }
        Ok(Event::Plain)
    }
}

/// The result of an Execute of `portal`: its own description, else its
/// statement's with Bind's formats.
fn execution_result(portal: &Portal) -> ResultInfo {
    let own = portal.described.as_ref();
    let from_statement = portal.statement.as_ref().and_then(|s| s.described.get());
    match (own, from_statement) {
        (Some(Described::Rows(f)), _) => ResultInfo {
            fields: Some(Arc::clone(f)),
            formats: None,
        },
        (None, Some(Described::Rows(f))) => ResultInfo {
            fields: Some(Arc::clone(f)),
            formats: portal.formats.clone(),
        },
        _ => ResultInfo {
            fields: None,
            formats: portal.formats.clone(),
        },
    }
}

/// Big-endian OIDs, 4 bytes each (a short tail is ignored).
fn oids(raw: &[u8]) -> Arc<[u32]> {
    raw.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

//! The phase contract: the ordered hooks every request and answer passes
//! through (registered in one place, `stack::build`).
//!
//! For each request (Query, Parse, Bind, Execute) the phases are asked in
//! order; the first that does not forward decides: refuse (one refusal type
//! with a typed SQLSTATE) or hold until a decision or a deadline. Answers
//! pass back through the hooks the phases asked for, and the end of every
//! request is reported to `on_outcome` (pingora's `logging`).
//!
//! Phases never do I/O and never keep their own model of the conversation:
//! they read the session core's tracker through the context.

use super::tracker::{ResultInfo, Statement, Tracker};
use crate::gateway::RuleSnapshot;
use crate::policy::rules::Identity;
use crate::sqlstate::Sqlstate;
use crate::wire::backend::TransactionStatus;
use crate::wire::frontend::BindView;
use crate::wire::FrameRef;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// An error pgward answers in place of a refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SQLSTATE.
    pub code: Sqlstate,
    /// Message.
    pub message: String,
    /// Detail, if any.
    pub detail: Option<String>,
    /// Hint, if any.
    pub hint: Option<String>,
    /// Cursor position in the statement text (1-based, in characters), as
    /// PostgreSQL's parser reports it.
    pub position: Option<u32>,
}

impl Refusal {
    /// A refusal with a message only.
    pub fn new(code: Sqlstate, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
            hint: None,
            position: None,
        }
    }

    /// The same refusal with a detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The same refusal with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// What a phase decides about one request.
#[derive(Debug)]
pub enum Decision {
    /// Let it through (to the next phase, then the server).
    Forward,
    /// Do not run it; the client gets this error in its place, in order.
    Refuse(Refusal),
    /// Keep it back until `decision` answers or `deadline` passes.
    Hold(Hold),
}

/// A request held back.
#[derive(Debug)]
pub struct Hold {
    /// Sent to the client at once as a NoticeResponse.
    pub notice: Option<String>,
    /// When the hold gives up (the request is refused with 57014).
    pub deadline: Instant,
    /// The decision; a dropped sender refuses the request.
    pub decision: oneshot::Receiver<Release>,
    /// Called (at once, with no I/O) when the hold ends without its
    /// decision (cancel, disconnect, shutdown, deadline); dropped uncalled
    /// when the decision ended it or the session ended otherwise.
    pub ended: Option<OnHoldEnd>,
    /// The refusal at the deadline, in place of the generic one.
    pub timed_out: Option<Refusal>,
}

impl Hold {
    /// A hold with nothing but its deadline and decision.
    pub fn new(deadline: Instant, decision: oneshot::Receiver<Release>) -> Self {
        Self {
            notice: None,
            deadline,
            decision,
            ended: None,
            timed_out: None,
        }
    }
}

/// What a holder is told when its hold ends without its decision.
pub struct OnHoldEnd(Box<dyn FnOnce(HoldEnd) + Send>);

impl OnHoldEnd {
    /// Calls `f` with the reason.
    pub fn new(f: impl FnOnce(HoldEnd) + Send + 'static) -> Self {
        Self(Box::new(f))
    }

    /// Tells the holder.
    pub fn call(self, why: HoldEnd) {
        (self.0)(why);
    }
}

impl std::fmt::Debug for OnHoldEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnHoldEnd")
    }
}

/// Why a hold ended without its decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEnd {
    /// The client sent a CancelRequest.
    Cancelled,
    /// The client went away.
    Disconnected,
    /// pgward is shutting down.
    Shutdown,
    /// The deadline passed.
    Deadline,
}

/// How a hold ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Run the request (the later phases still judge it).
    Run,
    /// Refuse it.
    Refuse(Refusal),
}

/// Which request a context describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A simple Query.
    Query,
    /// A Parse.
    Parse,
    /// A Bind.
    Bind,
    /// An Execute.
    Execute,
}

/// Who the session is.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The registry's id for the session.
    pub id: u64,
    /// The authenticated identity.
    pub identity: Identity,
    /// The database the client opened.
    pub database: String,
    /// The client's address, when known.
    pub client: Option<std::net::SocketAddr>,
    /// The client's `application_name`, when it sent one.
    pub application_name: Option<String>,
    /// The upstream the session is connected to.
    pub upstream: String,
    /// The role pgward logged in as on the upstream (the mapped role, or
    /// the one a role grant elevated the session to).
    pub role: String,
    /// The role grant that elevated the session, when one did.
    pub elevation: Option<String>,
    /// What proved the identity (a token's issuer, subject and jti, for
    /// the audit trail).
    pub credential: crate::auth::identity::Credential,
}

impl SessionInfo {
    /// A session of `user` with no client, upstream or credential to speak
    /// of: for driving the core without a connection (tests, fuzzing).
    pub(crate) fn detached(user: &str) -> Self {
        Self {
            id: 1,
            identity: Identity::new(user, Vec::<String>::new()),
            database: "db".into(),
            client: None,
            application_name: None,
            upstream: "db".into(),
            role: "app".into(),
            elevation: None,
            credential: crate::auth::identity::Credential::Password,
        }
    }
}

/// What a phase sees of one request.
pub struct RequestContext<'a> {
    /// The session.
    pub session: &'a SessionInfo,
    /// Which message.
    pub kind: RequestKind,
    /// The request's number in the session: its [`Outcome`] (and a
    /// [`Refused`] note) carry the same number.
    pub request_id: u64,
    /// The portal an Execute runs (Bind's is in `bind`).
    pub portal: Option<&'a [u8]>,
    /// The statement text: the Query's or Parse's own; for Bind and Execute
    /// the text of the statement they run, when the tracker knows it.
    pub text: Option<&'a [u8]>,
    /// For a Query or Parse: whether its text repeats the session's
    /// previous one but for its numbers (word scans may keep an answer).
    pub text_repeat: Option<crate::sql::repeat::TextRepeat>,
    /// The statement (Bind, Execute), as the server will have it.
    pub statement: Option<&'a Arc<Statement>>,
    /// The Bind message itself (Bind only): parameters and formats.
    pub bind: Option<&'a BindView<'a>>,
    /// The transaction status at the last ReadyForQuery.
    pub status: TransactionStatus,
    /// The conversation (for projections of names).
    pub tracker: &'a Tracker,
    /// The statement rules and mask rules this request is judged under:
    /// loaded once per request (and kept across a hold), so a reload
    /// between two phases can never judge one request by two rule sets.
    pub rules: &'a RuleSnapshot,
    /// [`RequestContext::schema_may_change`], once asked (two phases ask).
    pub(crate) schema_change: std::cell::OnceCell<bool>,
}

impl RequestContext<'_> {
    /// Whether the request's text might change the schema
    /// ([`crate::session::masking::schema_may_change`]); `false` without a
    /// text. Scanned once per request, however many phases ask.
    pub fn schema_may_change(&self) -> bool {
        *self.schema_change.get_or_init(|| {
            self.text
                .is_some_and(crate::session::masking::schema_may_change)
        })
    }
}

/// Whether a phase takes the rows of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// Rows stream through untouched.
    Pass,
    /// Every row of the result goes to this phase's `on_row`, whole.
    Inspect,
}

/// The end of one request, for the end-of-request hook. A simple Query
/// has one per statement that completed (the same `request_id`) and ends
/// at its first error; Parse and Bind have one at ParseComplete /
/// BindComplete or their error; an extended-protocol message skipped after
/// an error has none.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    /// The request's number (its `RequestContext::request_id`).
    pub request_id: u64,
    /// The request.
    pub kind: RequestKind,
    /// Its command tag, when it completed (`SELECT 3`).
    pub tag: Option<&'a [u8]>,
    /// Rows, from the command tag.
    pub rows: Option<u64>,
    /// The SQLSTATE, when it failed or was refused.
    pub sqlstate: Option<&'a [u8]>,
    /// Time since it went out, when known.
    pub duration: Option<Duration>,
    /// Bytes sent to the client in the session so far.
    pub bytes_to_client: u64,
    /// Bytes received from the client in the session so far (startup
    /// excluded).
    pub bytes_from_client: u64,
}

/// A request that was refused, for phases that want outcomes (whatever
/// their place in the order: the phases after the one that refused never
/// see the request otherwise).
#[derive(Debug)]
pub struct Refused<'a> {
    /// The request's number.
    pub request_id: u64,
    /// Which message.
    pub kind: RequestKind,
    /// Its statement text, when known.
    pub text: Option<&'a [u8]>,
    /// The phase that refused it (`pgward` for the core's own checks:
    /// unknown names, FunctionCall).
    pub by: &'static str,
    /// The error the client gets.
    pub refusal: &'a Refusal,
}

/// One phase. Every hook has a default that changes nothing.
pub trait Phase: Send {
    /// The phase's name, for logs.
    fn name(&self) -> &'static str;

    /// Judges one request.
    fn on_request(&mut self, _ctx: &RequestContext<'_>) -> Decision {
        Decision::Forward
    }

    /// Whether this phase judges requests of `kind` at all. The core asks
    /// once, when the session starts, and calls `on_request` only for the
    /// kinds a phase judges (a call that only forwards cost a dynamic call
    /// per phase and message); `false` promises `on_request` forwards
    /// every request of the kind.
    fn judges(&self, _kind: RequestKind) -> bool {
        true
    }

    /// Whether this phase may take results' rows (`on_result_start` is
    /// called only then).
    fn takes_rows(&self) -> bool {
        false
    }

    /// A result starts: whether this phase takes its rows.
    fn on_result_start(&mut self, _result: &ResultInfo) -> Rows {
        Rows::Pass
    }

    /// One row of a result this phase took (`raw`: the whole DataRow):
    /// appends what the client gets (the row, a rewrite, or nothing).
    fn on_row(&mut self, raw: FrameRef<'_>, out: &mut BytesMut) {
        out.extend_from_slice(raw.raw());
    }

    /// The end of a result this phase took: what the client gets in place
    /// of the CommandComplete, if not the server's.
    fn on_result_end(&mut self) -> Option<BytesMut> {
        None
    }

    /// Whether this phase rewrites errors, notices and notifications.
    fn rewrites_notices(&self) -> bool {
        false
    }

    /// An ErrorResponse, NoticeResponse or NotificationResponse from the
    /// server: what the client gets instead, if not the message itself.
    fn on_notice(&mut self, _frame: FrameRef<'_>) -> Option<BytesMut> {
        None
    }

    /// A ParameterStatus from the server.
    fn on_parameter_status(&mut self, _name: &[u8], _value: &[u8]) {}

    /// Whether the client must not see this ParameterStatus (asked after
    /// every phase's `on_parameter_status`; any phase's yes drops it).
    fn withholds_parameter(&mut self, _name: &[u8]) -> bool {
        false
    }

    /// An ErrorResponse from the server (every one, whether or not a phase
    /// rewrites it).
    fn on_server_error(&mut self) {}

    /// A ReadyForQuery.
    fn on_ready(&mut self, _status: TransactionStatus) {}

    /// Whether this phase wants `on_outcome`.
    fn wants_outcomes(&self) -> bool {
        false
    }

    /// The end of a request.
    fn on_outcome(&mut self, _outcome: &Outcome<'_>) {}

    /// A request was refused (only on phases that want outcomes).
    fn on_refused(&mut self, _refused: &Refused<'_>) {}

    /// A request was held by phase `by` (only on phases that want
    /// outcomes); it is refused (`on_refused`) or judged by the phases after
    /// `by` once released.
    fn on_held(&mut self, _request_id: u64, _by: &'static str) {}
}

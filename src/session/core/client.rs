//! The core's client side: every frontend message is framed, checked,
//! tracked and judged, then forwarded, refused (a stand-in goes to the
//! server) or held.

use super::{room, ClientStep, Core, CoreError, HoldState, HoldWait, OUTGOING_HIGH};
use crate::gateway::RuleSnapshot;
use crate::session::phases::{Decision, Refusal, Refused, RequestContext, RequestKind};
use crate::session::tracker::{Projected, Statement};
use crate::sqlstate::Sqlstate;
use crate::wire::encode;
use crate::wire::frontend::{
    bind_view, execute_view, parse_view, query_text, target_view, BindView, ParseView, Target,
};
use crate::wire::{FrameError, FrameRef, Framer};
use bytes::{Buf, BytesMut};
use std::sync::Arc;

/// What one client frame came to.
enum Flow {
    /// To go to the server as it is: it joins the run of such frames at
    /// the front of the input (moved out, or written from there, at once).
    Forward,
    /// Handled otherwise (refused: a stand-in is in the outgoing buffer);
    /// go on with the next frame.
    Next,
    /// Held: stop here, the frame stays in the input. (Boxed, as in
    /// [`ClientStep::Hold`].)
    Held(Box<HoldWait>),
    /// Terminate was forwarded.
    Terminate,
}

/// A request message as `client_frame` viewed it (viewed once: the phases
/// and the tracker read the same view).
enum Message<'a> {
    Query,
    Parse(ParseView<'a>),
    Bind(&'a BindView<'a>),
    /// The portal it runs.
    Execute(&'a [u8]),
}

impl Message<'_> {
    fn kind(&self) -> RequestKind {
        match self {
            Message::Query => RequestKind::Query,
            Message::Parse(_) => RequestKind::Parse,
            Message::Bind(_) => RequestKind::Bind,
            Message::Execute(_) => RequestKind::Execute,
        }
    }
}

/// PostgreSQL's limit for the small message types (`PQ_SMALL_MESSAGE_LIMIT`):
/// Close, Describe, Execute, Flush, Sync, Terminate, CopyDone, CopyFail.
const SMALL_MESSAGE_LIMIT: usize = 10_000;

fn malformed(e: impl std::fmt::Display) -> CoreError {
    CoreError::Client(e.to_string())
}

impl Core {
    /// Handles every complete frame at the front of `input`, appending what
    /// goes to the server to `to_server`. Stops at a held request (which
    /// stays in `input`), at Terminate, or when `to_server` is full.
    pub(crate) fn client_input(
        &mut self,
        input: &mut BytesMut,
        to_server: &mut BytesMut,
    ) -> Result<ClientStep, CoreError> {
        let (step, run) = self.client_input_direct(input, to_server)?;
        to_server.extend_from_slice(&input[..run]);
        input.advance(run);
        Ok(step)
    }

    /// [`Self::client_input`], except that frames that go to the server as
    /// they are may be left at the front of `input`: `(step, n)` says the
    /// first `n` bytes of `input` are for the server, untouched, and go
    /// before anything appended to `to_server` later (`n` is 0 unless
    /// `to_server` is empty and the step is `NeedMore`). The loop writes
    /// them from the read buffer, without a copy: most requests leave that
    /// way, and `to_server` is taken only for a stand-in or what a short
    /// write left.
    pub(crate) fn client_input_direct(
        &mut self,
        input: &mut BytesMut,
        to_server: &mut BytesMut,
    ) -> Result<(ClientStep, usize), CoreError> {
        // `run`: frames at the front of `input` already judged and to go
        // out as they are.
        let mut run = 0;
        let step = loop {
            if let HoldState::Waiting { .. } = self.hold {
                // The loop waits on the hold it was given.
                break ClientStep::NeedMore;
            }
            if to_server.len() + run >= OUTGOING_HIGH {
                break ClientStep::NeedMore;
            }
            let Some(header) = Framer::peek_header(&input[run..]).map_err(malformed)? else {
                break ClientStep::NeedMore;
            };
            self.client_framer.check_limit(header).map_err(malformed)?;
            if header.total_len > SMALL_MESSAGE_LIMIT + 1
                && matches!(
                    header.tag,
                    b'C' | b'D' | b'E' | b'H' | b'S' | b'X' | b'c' | b'f'
                )
            {
                return Err(malformed(FrameError::TooLarge {
                    tag: char::from(header.tag),
                    declared: header.total_len - 1,
                    limit: SMALL_MESSAGE_LIMIT,
                }));
            }
            let available = input.len() - run;
            if available < header.total_len {
                input.reserve(header.total_len - available);
                break ClientStep::NeedMore;
            }
            let mark = to_server.len();
            let flow = {
                let frame = FrameRef::new(&input[run..run + header.total_len])
                    .ok_or_else(|| malformed("invalid frame"))?;
                self.client_frame(frame, to_server)?
            };
            if run > 0 && to_server.len() > mark {
                // A stand-in was appended: the run goes out before it.
                let stand_in = to_server.split_off(mark);
                to_server.extend_from_slice(&input[..run]);
                to_server.extend_from_slice(&stand_in);
                input.advance(run);
                run = 0;
            }
            // A held frame stays in `input` and is counted when it is
            // handled after the hold.
            if !matches!(flow, Flow::Held(_)) {
                self.bytes_from_client += header.total_len as u64;
            }
            match flow {
                Flow::Forward => run += header.total_len,
                Flow::Next => input.advance(header.total_len),
                Flow::Held(wait) => break ClientStep::Hold(wait),
                Flow::Terminate => {
                    run += header.total_len;
                    break ClientStep::Terminate;
                }
            }
        };
        if run > 0 && to_server.is_empty() && matches!(step, ClientStep::NeedMore) {
            return Ok((step, run));
        }
        if run > 0 {
            room(to_server);
            to_server.extend_from_slice(&input[..run]);
            input.advance(run);
        }
        Ok((step, 0))
    }

    fn client_frame(
        &mut self,
        frame: FrameRef<'_>,
        to_server: &mut BytesMut,
    ) -> Result<Flow, CoreError> {
        let tag = frame.tag();
        if self.tracker.in_copy() && !matches!(tag, b'd' | b'c' | b'f' | b'S' | b'H' | b'X') {
            return Err(malformed(format!(
                "unexpected message type {:?} during COPY FROM STDIN",
                char::from(tag)
            )));
        }
        match tag {
            b'Q' => {
                let text = query_text(frame).map_err(malformed)?;
                self.request(Message::Query, Some(text), None, to_server)
            }
            b'P' => {
                let parse = parse_view(frame).map_err(malformed)?;
                let text = parse.query;
                self.request(Message::Parse(parse), Some(text), None, to_server)
            }
            b'B' => {
                let bind = bind_view(frame).map_err(malformed)?;
                let statement = match self.tracker.projected_statement(bind.statement) {
                    Projected::Known(statement) => statement,
                    unknown => {
                        let uncertain = matches!(unknown, Projected::Uncertain);
                        let r = unknown_statement(bind.statement, uncertain);
                        return Ok(self.refuse(RequestKind::Bind, None, CORE, &r, to_server));
                    }
                };
                self.request(Message::Bind(&bind), None, Some(statement), to_server)
            }
            b'E' => {
                let (portal, _) = execute_view(frame).map_err(malformed)?;
                let statement = match self.tracker.projected_portal(portal) {
                    Projected::Known(statement) => statement.cloned(),
                    unknown => {
                        let uncertain = matches!(unknown, Projected::Uncertain);
                        let r = unknown_portal(portal, uncertain);
                        return Ok(self.refuse(RequestKind::Execute, None, CORE, &r, to_server));
                    }
                };
                self.request(Message::Execute(portal), None, statement, to_server)
            }
            b'D' => {
                // A Describe is judged by nothing but the name's existence:
                // one the server may have either of two ways goes through.
                let target = target_view(frame).map_err(malformed)?;
                let absent = match target {
                    Target::Statement(n) => {
                        matches!(self.tracker.projected_statement(n), Projected::Absent)
                    }
                    Target::Portal(n) => {
                        matches!(self.tracker.projected_portal(n), Projected::Absent)
                    }
                };
                if absent {
                    let r = match target {
                        Target::Statement(n) => unknown_statement(n, false),
                        Target::Portal(n) => unknown_portal(n, false),
                    };
                    // Refused like an extended-protocol message of its own.
                    return Ok(self.refuse(RequestKind::Bind, None, CORE, &r, to_server));
                }
                self.tracker.describe(target);
                Ok(Flow::Forward)
            }
            b'C' => {
                // Closing a name that does not exist is no error in
                // PostgreSQL either.
                let target = target_view(frame).map_err(malformed)?;
                self.tracker.close(target);
                Ok(Flow::Forward)
            }
            b'S' => {
                if !frame.body().is_empty() {
                    return Err(malformed("malformed Sync message"));
                }
                self.tracker.sync();
                Ok(Flow::Forward)
            }
            b'H' | b'd' => Ok(Flow::Forward),
            b'c' | b'f' => {
                self.tracker.copy_end();
                Ok(Flow::Forward)
            }
            b'F' => {
                let r = Refusal::new(
                    Sqlstate::FEATURE_NOT_SUPPORTED,
                    "pgward does not relay FunctionCall (fast-path) messages",
                )
                .with_hint("Call the function with a SELECT statement instead.");
                Ok(self.refuse(RequestKind::Query, None, CORE, &r, to_server))
            }
            b'X' => Ok(Flow::Terminate),
            other => Err(malformed(format!(
                "invalid frontend message type {}",
                other
            ))),
        }
    }

    /// Runs the phases on a request, then forwards, refuses or holds it.
    /// `text`: a Query's or Parse's; a Bind or Execute has its statement's
    /// (owned here: a Bind's moves into the tracker as is, without a
    /// second count).
    fn request(
        &mut self,
        message: Message<'_>,
        text: Option<&[u8]>,
        statement: Option<Arc<Statement>>,
        to_server: &mut BytesMut,
    ) -> Result<Flow, CoreError> {
        let kind = message.kind();
        let text = match &statement {
            Some(s) => Some(&s.text[..]),
            None => text,
        };
        let (bind, portal) = match message {
            Message::Bind(bind) => (Some(bind), None),
            Message::Execute(portal) => (None, Some(portal)),
            Message::Query | Message::Parse(_) => (None, None),
        };
        // One load of the rules for the whole request; a released request
        // goes on under the snapshot it was held under.
        // (Borrowed from the core's cache, which holds a counted reference:
        // no count per request, where the `ArcSwap`'s own guard cost a
        // debt-list walk.)
        let held;
        // Nothing held is nearly every request: no state is taken out (a
        // replaced state is dropped whole, a call, whatever arm matched).
        let (first, rules): (usize, &Arc<RuleSnapshot>) = if matches!(self.hold, HoldState::None) {
            (0, self.rules.load())
        } else {
            match std::mem::replace(&mut self.hold, HoldState::None) {
                HoldState::Released { phase, rules } => {
                    held = rules;
                    (phase + 1, &held)
                }
                HoldState::Refused { phase, refusal } => {
                    let by = self.phases[phase].name();
                    return Ok(self.refuse(kind, text, by, &refusal, to_server));
                }
                HoldState::None | HoldState::Waiting { .. } => (0, self.rules.load()),
            }
        };
        let request_id = self.tracker.next_request_id();
        // Numbered once per request (a released hold is the same request).
        let text_repeat = match (kind, text) {
            (RequestKind::Query | RequestKind::Parse, Some(text)) if first == 0 => {
                let repeat = self.previous_text.next(text);
                self.text_repeat = Some(repeat);
                Some(repeat)
            }
            (RequestKind::Query | RequestKind::Parse, Some(_)) => self.text_repeat,
            _ => None,
        };
        // One context for every phase: phases read the tracker, never
        // change it, so what it says is the same for each.
        let ctx = RequestContext {
            rules,
            session: &self.info,
            kind,
            request_id,
            portal,
            text,
            text_repeat,
            statement: statement.as_ref(),
            bind,
            status: self.tracker.status(),
            tracker: &self.tracker,
            schema_change: std::cell::OnceCell::new(),
        };
        // The phases that judge this kind (a field, not a method: the
        // rules are borrowed from the core's cache meanwhile).
        let judging = self.judging[kind as usize];
        for index in first..self.phases.len() {
            if index < 64 && judging & (1 << index) == 0 {
                continue;
            }
            match self.phases[index].on_request(&ctx) {
                Decision::Forward => {}
                Decision::Refuse(r) => {
                    let by = self.phases[index].name();
                    return Ok(self.refuse(kind, text, by, &r, to_server));
                }
                Decision::Hold(hold) => {
                    if self.wants_outcomes {
                        let by = self.phases[index].name();
                        for phase in self.phases.iter_mut().filter(|p| p.wants_outcomes()) {
                            phase.on_held(request_id, by);
                        }
                    }
                    if let Some(text) = &hold.notice {
                        encode::notice(
                            &mut self.own_notices,
                            Sqlstate::SUCCESSFUL_COMPLETION.as_str(),
                            text,
                        );
                    }
                    self.hold = HoldState::Waiting {
                        phase: index,
                        rules: Arc::clone(rules),
                    };
                    return Ok(Flow::Held(Box::new(HoldWait {
                        deadline: hold.deadline,
                        decision: hold.decision,
                        ended: hold.ended,
                        timed_out: hold.timed_out,
                    })));
                }
            }
        }
        if let Some(tap) = &mut self.tap {
            match (kind, text, bind) {
                (RequestKind::Bind, _, Some(bind)) => tap.bound(&mut bind.result_formats()),
                (RequestKind::Bind, _, None) => {}
                (_, Some(text), _) => tap.request(kind, text),
                _ => {}
            }
        }
        match message {
            Message::Query => self.tracker.query(text.unwrap_or_default(), text_repeat),
            Message::Parse(parse) => {
                self.tracker
                    .parse(parse.statement, parse.query, parse.param_types);
            }
            Message::Bind(bind) => self.tracker.bind(bind, statement),
            Message::Execute(portal) => self.tracker.execute(portal),
        }
        Ok(Flow::Forward)
    }

    /// Sends a stand-in for a refused request (refused by phase `by`),
    /// and tells the phases that want outcomes.
    fn refuse(
        &mut self,
        kind: RequestKind,
        text: Option<&[u8]>,
        by: &'static str,
        refusal: &Refusal,
        to_server: &mut BytesMut,
    ) -> Flow {
        tracing::debug!(
            session = self.info.id,
            code = %refusal.code,
            message = %refusal.message,
            "request refused"
        );
        if let (Some(tap), Some(text)) = (&mut self.tap, text) {
            if kind != RequestKind::Bind {
                tap.request(kind, text);
            }
        }
        if self.wants_outcomes {
            let note = Refused {
                request_id: self.tracker.next_request_id(),
                kind,
                text,
                by,
                refusal,
            };
            for phase in self.phases.iter_mut().filter(|p| p.wants_outcomes()) {
                phase.on_refused(&note);
            }
        }
        let query = kind == RequestKind::Query;
        room(to_server);
        let answer = self.stand_ins.substitute(refusal, query, to_server);
        self.tracker.stand_in(query, answer);
        Flow::Next
    }
}

/// Who refuses what the core itself refuses (unknown names, FunctionCall).
const CORE: &str = "pgward";

/// The refusal of a use of statement `name`, which the projection does not
/// know: it will be absent, or `uncertain` (one of two statements).
fn unknown_statement(name: &[u8], uncertain: bool) -> Refusal {
    unknown(
        "prepared statement",
        Sqlstate::INVALID_SQL_STATEMENT_NAME,
        name,
        uncertain,
    )
}

/// The refusal of a use of portal `name` (as for a statement).
fn unknown_portal(name: &[u8], uncertain: bool) -> Refusal {
    unknown("portal", Sqlstate::INVALID_CURSOR_NAME, name, uncertain)
}

fn unknown(what: &str, absent: Sqlstate, name: &[u8], uncertain: bool) -> Refusal {
    let name = String::from_utf8_lossy(name);
    if !uncertain {
        return Refusal::new(absent, format!("{what} \"{name}\" does not exist"))
            .with_hint("pgward refuses names it has not seen created in this session.");
    }
    Refusal::new(
        Sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "{what} \"{name}\" names one of two things until the server answers \
             the requests before this one"
        ),
    )
    .with_detail(
        "An earlier request that changes it (a Parse, Bind, Close or PREPARE) may \
         fail, or be skipped after an error in its batch, and the name would then keep \
         what it had.",
    )
    .with_hint(
        "Read the answers to the earlier requests before using the name, or Close and \
         create it in the same batch as its use.",
    )
}

//! The core's server side: every backend message is paired with its
//! request by the tracker, passed to the phases that asked for it, and
//! forwarded, rewritten or withheld.

use super::{room, Core, CoreError, DIRECT_AT_LEAST, OUTGOING_HIGH};
use crate::session::phases::{Outcome, RequestKind, Rows};
use crate::session::refusal::is_stand_in_error;
use crate::session::tracker::{Event, OutOfStep};
use crate::sqlstate::Sqlstate;
use crate::wire::backend::{command_tag, error_summary, parameter_status, tag_rows};
use crate::wire::encode::{self, Severity};
use crate::wire::{FrameRef, Framer};
use bytes::{Buf, BytesMut};

/// What the server side asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerStep {
    /// Every complete frame was handled.
    NeedMore,
    /// Write the first `n` bytes of the input as they are (the outgoing
    /// buffer is empty), advance the input past them, and call again: a
    /// run of at least `DIRECT_AT_LEAST` bytes, or the untouched bytes
    /// that end what the input holds.
    Direct(usize),
    /// The outgoing buffer is full: write it, then call again.
    Full,
    /// The server sent a FATAL error (it is in the outgoing buffer): write
    /// it and close; pgward adds nothing after it.
    Fatal,
}

/// Largest whole row handed to a phase (masked results).
const MAX_INSPECTED_ROW: usize = 64 << 20;
/// Largest error, notice or notification that is inspected whole.
const MAX_INSPECTED_NOTICE: usize = 16 << 20;
/// Largest message of any other type (RowDescription of 1,664 columns with
/// long names stays far below it).
const MAX_OTHER: usize = 1 << 20;
/// Uninspected frames above this size stream as they arrive.
const STREAM_ABOVE: usize = 256 * 1024;

/// What to do with one frame.
enum Disposition {
    /// Forward it untouched (it joins the run); `close`: it is the server's
    /// FATAL, and the session ends after it.
    Forward { close: bool },
    /// Send these bytes instead (possibly none).
    Replace { bytes: BytesMut, close: bool },
    /// A phase took the row: it wrote what the client gets.
    Taken,
}

const FORWARD: Disposition = Disposition::Forward { close: false };

fn replace(bytes: BytesMut) -> Disposition {
    Disposition::Replace {
        bytes,
        close: false,
    }
}

fn backend(e: impl std::fmt::Display) -> CoreError {
    CoreError::Backend(e.to_string())
}

impl From<OutOfStep> for CoreError {
    fn from(e: OutOfStep) -> Self {
        backend(e)
    }
}

impl Core {
    /// Handles the server bytes at the front of `input`, appending what goes
    /// to the client to `to_client`.
    pub(crate) fn server_input(
        &mut self,
        input: &mut BytesMut,
        to_client: &mut BytesMut,
    ) -> Result<ServerStep, CoreError> {
        // `run`: bytes at the front of `input` already handled and to go out
        // untouched; kept across calls so a long run can leave without a
        // copy once the outgoing buffer is empty.
        let mut run = std::mem::take(&mut self.pending_run);
        let step = loop {
            if run >= DIRECT_AT_LEAST {
                if to_client.is_empty() {
                    self.bytes_to_client += run as u64;
                    if let Some(tap) = &mut self.tap {
                        tap.sent(&input[..run]);
                    }
                    return Ok(ServerStep::Direct(run));
                }
                self.pending_run = run;
                return Ok(ServerStep::Full);
            }
            if to_client.len() >= OUTGOING_HIGH {
                self.pending_run = run;
                return Ok(ServerStep::Full);
            }
            if self.streaming > 0 {
                let n = self.streaming.min(input.len() - run);
                if n == 0 {
                    break ServerStep::NeedMore;
                }
                run += n;
                self.streaming -= n;
                continue;
            }
            let Some(header) = Framer::peek_header(&input[run..]).map_err(backend)? else {
                break ServerStep::NeedMore;
            };
            let available = input.len() - run;
            // Frames nothing inspects pass by their header alone.
            if self.passes_unread(header.tag)? {
                if available >= header.total_len {
                    run += header.total_len;
                } else if header.total_len > STREAM_ABOVE {
                    self.streaming = header.total_len;
                } else {
                    break ServerStep::NeedMore;
                }
                continue;
            }
            let limit = match header.tag {
                b'D' => MAX_INSPECTED_ROW,
                b'E' | b'N' | b'A' => MAX_INSPECTED_NOTICE,
                _ => MAX_OTHER,
            };
            if header.total_len > limit {
                return Err(backend(format!(
                    "message type {:?} of {} bytes exceeds pgward's limit of {limit} bytes for it",
                    char::from(header.tag),
                    header.total_len - 1
                )));
            }
            if available < header.total_len {
                input.reserve(header.total_len - available);
                break ServerStep::NeedMore;
            }
            if header.tag == b'D' {
                // A phase writes this row itself: what came before goes first.
                self.move_run(input, run, to_client);
                run = 0;
            }
            let end = run + header.total_len;
            // Bytes handled but not yet moved out count as sent (outcomes).
            self.run_ahead = run as u64;
            let disposition = {
                // `header` was read from these bytes just above.
                let frame = FrameRef::at_front(&input[run..end], header)
                    .ok_or_else(|| backend("invalid frame"))?;
                self.server_frame(frame, to_client)?
            };
            match disposition {
                Disposition::Forward { close } => {
                    run = end;
                    if close {
                        self.move_run(input, run, to_client);
                        return Ok(ServerStep::Fatal);
                    }
                }
                Disposition::Replace { bytes, close } => {
                    self.move_run(input, run, to_client);
                    input.advance(header.total_len);
                    run = 0;
                    self.bytes_to_client += bytes.len() as u64;
                    if let Some(tap) = &mut self.tap {
                        tap.sent(&bytes);
                    }
                    room(to_client);
                    to_client.extend_from_slice(&bytes);
                    if close {
                        return Ok(ServerStep::Fatal);
                    }
                }
                Disposition::Taken => {
                    input.advance(header.total_len);
                    run = 0;
                }
            }
        };
        if step == ServerStep::NeedMore && run > 0 && to_client.is_empty() {
            // Everything handled went untouched and nothing is queued before
            // it: the loop writes it from the read buffer, without a copy
            // (the common answer, RowDescription to ReadyForQuery in one
            // read, takes no outgoing buffer at all).
            self.bytes_to_client += run as u64;
            if let Some(tap) = &mut self.tap {
                tap.sent(&input[..run]);
            }
            return Ok(ServerStep::Direct(run));
        }
        self.move_run(input, run, to_client);
        Ok(step)
    }

    /// Moves the run of untouched bytes into the outgoing buffer.
    fn move_run(&mut self, input: &mut BytesMut, run: usize, to_client: &mut BytesMut) {
        if run > 0 {
            if let Some(tap) = &mut self.tap {
                tap.sent(&input[..run]);
            }
            room(to_client);
            to_client.extend_from_slice(&input[..run]);
            input.advance(run);
            self.bytes_to_client += run as u64;
        }
    }

    /// Whether a frame with this tag goes through without being read whole
    /// (the tracker needs its tag only).
    fn passes_unread(&mut self, tag: u8) -> Result<bool, CoreError> {
        Ok(match tag {
            b'D' => {
                let event = self.tracker.row()?;
                if event == (Event::Row { first: true }) {
                    self.start_result();
                }
                self.rows_to.is_none()
            }
            b'd' => {
                self.tracker.copy_data()?;
                true
            }
            b'N' | b'A' => !self.rewrites_notices,
            _ => false,
        })
    }

    /// A result starts: the first phase that asks takes its rows.
    fn start_result(&mut self) {
        self.rows_to = None;
        if !self.takes_rows {
            return;
        }
        let Some(result) = self.tracker.result() else {
            return;
        };
        for (i, phase) in self.phases.iter_mut().enumerate() {
            if phase.on_result_start(result) == Rows::Inspect {
                self.rows_to = Some(i);
                return;
            }
        }
    }

    fn server_frame(
        &mut self,
        frame: FrameRef<'_>,
        to_client: &mut BytesMut,
    ) -> Result<Disposition, CoreError> {
        match frame.tag() {
            b'D' => {
                // Only rows a phase took come here (see `passes_unread`).
                if let Some(i) = self.rows_to {
                    room(to_client);
                    let before = to_client.len();
                    self.phases[i].on_row(frame, to_client);
                    self.bytes_to_client += (to_client.len() - before) as u64;
                    if let Some(tap) = &mut self.tap {
                        tap.sent(&to_client[before..]);
                    }
                    return Ok(Disposition::Taken);
                }
                Ok(FORWARD)
            }
            b'E' => self.server_error(frame),
            b'N' | b'A' => Ok(self.notice(frame)),
            b'S' => {
                let (name, value) = parameter_status(frame).map_err(backend)?;
                for phase in &mut self.phases {
                    phase.on_parameter_status(name, value);
                }
                let mut withheld = false;
                for phase in &mut self.phases {
                    withheld |= phase.withholds_parameter(name);
                }
                Ok(if withheld {
                    replace(BytesMut::new())
                } else {
                    FORWARD
                })
            }
            b'C' | b'I' | b's' => {
                // What the end-of-request hook reports, read only for it.
                let (kind, sent, tag, id) = if self.wants_outcomes {
                    let tag = if frame.tag() == b'C' {
                        Some(command_tag(frame).map_err(backend)?)
                    } else {
                        None
                    };
                    (
                        self.front_kind(),
                        self.tracker.front_sent(),
                        tag,
                        self.tracker.front_id(),
                    )
                } else {
                    (None, None, None, None)
                };
                self.tracker.result_end(frame.tag())?;
                let replaced = match self.rows_to.take() {
                    Some(i) => self.phases[i].on_result_end(),
                    None => None,
                };
                if self.wants_outcomes {
                    self.report(kind, id, tag, None, sent);
                }
                Ok(replaced.map_or(FORWARD, replace))
            }
            b'1' | b'2' if self.wants_outcomes => {
                // A completed Parse or Bind ends its request too.
                let kind = self.front_kind();
                let id = self.tracker.front_id();
                let sent = self.tracker.front_sent();
                self.tracker.answer(frame)?;
                self.report(kind, id, None, None, sent);
                Ok(FORWARD)
            }
            b'T' => {
                if self.tracker.row_description(frame)? {
                    self.start_result();
                }
                Ok(FORWARD)
            }
            b'Z' => {
                let status = self.tracker.ready(frame)?;
                self.rows_to = None;
                for phase in &mut self.phases {
                    phase.on_ready(status);
                }
                Ok(FORWARD)
            }
            _ => {
                self.tracker.answer(frame)?;
                Ok(FORWARD)
            }
        }
    }

    /// An ErrorResponse: a stand-in's error is swapped for pgward's; a
    /// malformed one is replaced by a well-formed one; a FATAL ends the
    /// session after it.
    fn server_error(&mut self, frame: FrameRef<'_>) -> Result<Disposition, CoreError> {
        let kind = self.front_kind();
        let sent = self.tracker.front_sent();
        let id = self.tracker.front_id();
        let summary = error_summary(frame);
        let refusal = self.tracker.error();
        self.rows_to = None;
        for phase in &mut self.phases {
            phase.on_server_error();
        }
        let fatal = summary.is_some_and(|s| s.fatal);
        let mut replacement = match (&refusal, summary) {
            (Some(answer), _) if is_stand_in_error(frame, answer) => {
                Some(BytesMut::from(&answer.error[..]))
            }
            (_, None) => {
                let mut out = BytesMut::new();
                encode::error_response(
                    &mut out,
                    Severity::Error,
                    Sqlstate::PROTOCOL_VIOLATION.as_str(),
                    "malformed error from the server",
                    None,
                );
                Some(out)
            }
            _ => None,
        };
        if replacement.is_none() && self.rewrites_notices {
            replacement = self.rewrite_notice(frame);
        }
        if self.wants_outcomes {
            let code: [u8; 5] = match (&refusal, summary) {
                (Some(answer), _) if replacement.is_some() => refused_code(&answer.error),
                (_, Some(s)) => s.sqlstate,
                _ => *b"08P01",
            };
            self.report(kind, id, None, Some(&code), sent);
        }
        if fatal {
            // The server ends the session: pgward's own pending notices
            // would only follow its last word.
            self.own_notices.clear();
        }
        Ok(match replacement {
            Some(bytes) => Disposition::Replace {
                bytes,
                close: fatal,
            },
            None => Disposition::Forward { close: fatal },
        })
    }

    fn notice(&mut self, frame: FrameRef<'_>) -> Disposition {
        self.rewrite_notice(frame).map_or(FORWARD, replace)
    }

    fn rewrite_notice(&mut self, frame: FrameRef<'_>) -> Option<BytesMut> {
        for phase in &mut self.phases {
            if let Some(bytes) = phase.on_notice(frame) {
                return Some(bytes);
            }
        }
        None
    }

    fn front_kind(&self) -> Option<RequestKind> {
        self.tracker.front_kind()
    }

    fn report(
        &mut self,
        kind: Option<RequestKind>,
        request_id: Option<u64>,
        tag: Option<&[u8]>,
        sqlstate: Option<&[u8]>,
        sent: Option<std::time::Instant>,
    ) {
        let (Some(kind), Some(request_id)) = (kind, request_id) else {
            return;
        };
        let outcome = Outcome {
            request_id,
            kind,
            tag,
            rows: tag.and_then(tag_rows),
            sqlstate,
            duration: sent.map(|s| s.elapsed()),
            bytes_to_client: self.bytes_to_client + self.run_ahead,
            bytes_from_client: self.bytes_from_client,
        };
        for phase in &mut self.phases {
            if phase.wants_outcomes() {
                phase.on_outcome(&outcome);
            }
        }
    }
}

/// The SQLSTATE of pgward's own error for a refusal.
fn refused_code(error: &[u8]) -> [u8; 5] {
    FrameRef::new(error)
        .and_then(error_summary)
        .map_or(*b"42501", |s| s.sqlstate)
}

//! The relay core: bytes in, phase decisions, bytes out, and no I/O.
//!
//! The socket loop (`relay.rs`) hands the core what it read from either
//! side and writes what the core leaves in the outgoing buffers. The core
//! frames both streams, feeds every message to the conversation tracker,
//! runs the phases in their order, substitutes stand-ins for refused
//! requests, and keeps a held request (and everything the client sent after
//! it) back until the hold ends. Unit tests and fuzz targets drive it
//! directly with arbitrary client and server bytes.
//!
//! Buffers: forwarded frames are gathered into the outgoing buffer, except
//! that a run of untouched server bytes at the front of the input, of
//! `DIRECT_AT_LEAST` or more or reaching the last complete frame read while
//! nothing is queued, is handed back as `Direct(n)` for the loop to write
//! straight from the read buffer (no copy). A server frame that nothing
//! inspects (a DataRow of a result no phase takes, copy data, a notice no
//! phase rewrites) streams through as it arrives, however large; inspected
//! frames are bounded per message type.

mod client;
mod server;
#[cfg(test)]
mod tests;

use super::phases::{Phase, Release, SessionInfo};
use super::refusal::StandIns;
use super::tracker::Tracker;
use crate::gateway::RuleSnapshot;
use crate::wire::Framer;
use arc_swap::{ArcSwap, Cache};
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

pub(crate) use server::ServerStep;

/// Gives `out` a spare buffer of the thread's when it has none, before the
/// core writes to it: the loop takes none for the client ahead of time, as
/// most answers leave straight from the read buffer (`ServerStep::Direct`).
#[inline]
pub(crate) fn room(out: &mut BytesMut) {
    if out.capacity() == 0 {
        *out = crate::session::spare::take();
    }
}

/// A run of untouched server bytes at least this long is written straight
/// from the read buffer.
pub(crate) const DIRECT_AT_LEAST: usize = 32 * 1024;
/// The core stops adding to an outgoing buffer past this size, so the loop
/// writes before reading more (backpressure: memory stays bounded).
pub(crate) const OUTGOING_HIGH: usize = 64 * 1024;

/// Sees what a session's client sends and is sent (session recording):
/// the text of each request as it is forwarded, and every byte handed to
/// the client, after every phase (masked values masked).
pub(crate) trait Tap: Send {
    /// The text of a Query, Parse or Execute, sent to the server (or
    /// refused: the refusal is among the bytes sent next).
    fn request(&mut self, kind: super::phases::RequestKind, text: &[u8]);
    /// A Bind's result formats (how its rows will be encoded).
    fn bound(&mut self, result_formats: &mut dyn Iterator<Item = i16>);
    /// Bytes handed to the client, in order.
    fn sent(&mut self, bytes: &[u8]);
}

/// The core broke off: who broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CoreError {
    /// The client sent something that is not valid protocol.
    #[error("{0}")]
    Client(String),
    /// The server did, or it is out of step with the conversation.
    #[error("{0}")]
    Backend(String),
}

/// What the client side asks of the loop.
#[derive(Debug)]
pub(crate) enum ClientStep {
    /// Every complete frame was handled (or the outgoing buffer is full).
    NeedMore,
    /// The request at the front is held: wait for `decision` or `deadline`
    /// and hand the result to [`Core::release`]. (Boxed: holds are rare,
    /// and a step held inline was a copy of the whole wait on every
    /// request's return.)
    Hold(Box<HoldWait>),
    /// The client sent Terminate (forwarded); the session ends once the
    /// outgoing bytes are written.
    Terminate,
}

/// A held request's decision, for the loop to wait on.
#[derive(Debug)]
pub(crate) struct HoldWait {
    /// The hold gives up at this instant.
    pub(crate) deadline: Instant,
    /// The phase's decision.
    pub(crate) decision: oneshot::Receiver<Release>,
    /// Told why, when the hold ends without its decision.
    pub(crate) ended: Option<super::phases::OnHoldEnd>,
    /// The refusal at the deadline, when the phase chose one.
    pub(crate) timed_out: Option<super::phases::Refusal>,
}

impl HoldWait {
    /// Tells the phase why the hold ended without its decision.
    pub(crate) fn end(self, why: super::phases::HoldEnd) {
        if let Some(ended) = self.ended {
            ended.call(why);
        }
    }
}

/// Where a hold stands.
#[derive(Debug)]
enum HoldState {
    /// Nothing held.
    None,
    /// The front request is held by phase `phase`, judged so far under
    /// `rules`.
    Waiting {
        phase: usize,
        rules: Arc<RuleSnapshot>,
    },
    /// The front request was released by phase `phase`: the phases after it
    /// judge it next, under the same `rules`.
    Released {
        phase: usize,
        rules: Arc<RuleSnapshot>,
    },
    /// The front request is refused (the hold by phase `phase` ended in a
    /// refusal). Boxed: inline, the rare refusal would size every session's
    /// core (and the state moved on every request).
    Refused {
        phase: usize,
        refusal: Box<super::phases::Refusal>,
    },
}

/// One session's protocol state and phases.
pub(crate) struct Core {
    pub(crate) tracker: Tracker,
    phases: Vec<Box<dyn Phase>>,
    /// The rules in force, loaded once per request. Through a cache: a
    /// load is then one read of the current pointer, compared with the one
    /// kept (an `ArcSwap` load cost about 130 instructions a request). What
    /// it keeps is the snapshot this session's last request was judged
    /// under: after a reload, until the session's next request (idle
    /// sessions together keep that one old snapshot, no more).
    rules: Cache<Arc<ArcSwap<RuleSnapshot>>, Arc<RuleSnapshot>>,
    info: SessionInfo,
    client_framer: Framer,
    stand_ins: StandIns,
    hold: HoldState,
    /// The session's previous Query or Parse text (see `sql::repeat`).
    previous_text: crate::sql::repeat::PreviousText,
    /// The last request's place among them (kept for its release).
    text_repeat: Option<crate::sql::repeat::TextRepeat>,
    /// The phase that takes the rows of the result in progress.
    rows_to: Option<usize>,
    /// Bytes of a streamed server frame still to pass through.
    streaming: usize,
    /// Server bytes at the front of the input already handled, to go out
    /// untouched.
    pending_run: usize,
    /// Notices pgward sends itself, put in at the next message boundary.
    own_notices: BytesMut,
    wants_outcomes: bool,
    rewrites_notices: bool,
    /// Some phase may take a result's rows (else results are not offered).
    takes_rows: bool,
    /// By request kind: the phases that judge it, a bit per phase index
    /// (`Phase::judges`; a phase past the 64th judges every kind).
    judging: [u64; 4],
    /// Bytes the core has handed to the client side.
    bytes_to_client: u64,
    /// Client bytes handled (startup excluded).
    bytes_from_client: u64,
    /// Server bytes ahead of the frame being handled, already handled and
    /// bound for the client but not yet counted in `bytes_to_client`.
    run_ahead: u64,
    /// Session recording, when on.
    tap: Option<Box<dyn Tap>>,
}

/// For each request kind, the phases that judge it (see `Core::judging`).
fn judging(phases: &[Box<dyn Phase>]) -> [u64; 4] {
    use super::phases::RequestKind;
    let mut by_kind = [0u64; 4];
    for kind in [
        RequestKind::Query,
        RequestKind::Parse,
        RequestKind::Bind,
        RequestKind::Execute,
    ] {
        for (index, phase) in phases.iter().enumerate().take(64) {
            if phase.judges(kind) {
                by_kind[kind as usize] |= 1 << index;
            }
        }
    }
    by_kind
}

impl Core {
    /// A core for a logged-in session: `phases` in their fixed order, each
    /// request judged under the snapshot `rules` holds when it is sent.
    pub(crate) fn new(
        info: SessionInfo,
        phases: Vec<Box<dyn Phase>>,
        rules: Arc<ArcSwap<RuleSnapshot>>,
        keep_descriptions: bool,
        max_message_size: usize,
    ) -> Self {
        let wants_outcomes = phases.iter().any(|p| p.wants_outcomes());
        let rewrites_notices = phases.iter().any(|p| p.rewrites_notices());
        let takes_rows = phases.iter().any(|p| p.takes_rows());
        let judging = judging(&phases);
        let mut tracker = Tracker::new(keep_descriptions);
        if wants_outcomes {
            tracker.time_requests();
        }
        Self {
            tracker,
            phases,
            rules: Cache::new(rules),
            info,
            client_framer: Framer::new(max_message_size),
            stand_ins: StandIns::default(),
            hold: HoldState::None,
            previous_text: Default::default(),
            text_repeat: None,
            rows_to: None,
            streaming: 0,
            pending_run: 0,
            own_notices: BytesMut::new(),
            wants_outcomes,
            rewrites_notices,
            takes_rows,
            judging,
            bytes_to_client: 0,
            bytes_from_client: 0,
            run_ahead: 0,
            tap: None,
        }
    }

    /// Records the session through `tap` from now on.
    pub(crate) fn set_tap(&mut self, tap: Box<dyn Tap>) {
        self.tap = Some(tap);
    }

    /// Whether nothing is in flight: no request waits for its answer and
    /// none is held (shutdown and idle timeouts act only then).
    pub(crate) fn is_quiet(&self) -> bool {
        !self.tracker.busy() && matches!(self.hold, HoldState::None) && self.streaming == 0
    }

    /// Whether the core can take more server bytes: not while a run of
    /// handled bytes waits at the front of the input for the outgoing
    /// buffer to drain (reading on would grow the input without bound
    /// behind a slow client).
    pub(crate) fn wants_server_bytes(&self) -> bool {
        self.pending_run == 0
    }

    /// Whether the bytes handed to the client so far end at a message
    /// boundary (no frame is streaming through), so pgward may add its own.
    pub(crate) fn at_boundary(&self) -> bool {
        self.streaming == 0
    }

    /// Ends a hold. The front request then runs (judged by the phases after
    /// the one that held it) or is refused; call `client_input` next.
    pub(crate) fn release(&mut self, release: Release) {
        if matches!(self.hold, HoldState::Waiting { .. }) {
            let HoldState::Waiting { phase, rules } =
                std::mem::replace(&mut self.hold, HoldState::None)
            else {
                return;
            };
            self.hold = match release {
                Release::Run => HoldState::Released { phase, rules },
                Release::Refuse(refusal) => HoldState::Refused {
                    phase,
                    refusal: Box::new(refusal),
                },
            };
        }
    }

    /// Moves pgward's own notices into the client's outgoing bytes, at a
    /// message boundary only.
    #[inline]
    pub(crate) fn own_notices_into(&mut self, to_client: &mut BytesMut) {
        if self.streaming == 0 && !self.own_notices.is_empty() {
            if let Some(tap) = &mut self.tap {
                tap.sent(&self.own_notices);
            }
            room(to_client);
            to_client.extend_from_slice(&self.own_notices);
            self.bytes_to_client += self.own_notices.len() as u64;
            self.own_notices.clear();
        }
    }
}

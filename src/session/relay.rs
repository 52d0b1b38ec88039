//! The relay: two pumps, client -> server and server -> client, each moving
//! raw frames in runs and stopping only at frames a phase must see.
//!
//! Buffers: each pump owns one `BytesMut` read buffer, sized per read by a
//! [`ReadSizer`] (small while idle, up to 64 KiB under bulk traffic). A run of untouched
//! frames is written straight from that buffer and then advanced past, so
//! forwarding copies nothing; the allocation is reused once the run is sent.
//! A server frame larger than `STREAM_ABOVE` that no phase inspects is
//! forwarded piecewise as it arrives, so a huge row never sits whole in memory,
//! and since a pump only reads after its last write completed, a slow client
//! slows the server down instead of filling pgward's memory.

use super::inflight::InFlight;
use super::phases::{BackendPhases, FrontendAction, FrontendPhases, Refusal};
use super::read_sizer::ReadSizer;
use super::refusal::{PendingRefusals, StandIn};
use super::{Activity, ShutdownPhase};
use crate::error::SessionError;
use crate::io::{ReadHalf, WriteHalf};
use crate::wire::backend::{ready_status, BackendKind, TransactionStatus};
use crate::wire::encode::{self, Severity};
use crate::wire::frontend::FrontendKind;
use crate::wire::{Frame, Framer};
use bytes::{Buf, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Uninspected server frames above this size are streamed, not buffered.
const STREAM_ABOVE: usize = 256 * 1024;
/// Largest server frame a phase may be asked to inspect whole.
const MAX_INSPECTED_SERVER_FRAME: usize = 1 << 30;
/// Client bytes up to this size are gathered and sent in one write (an
/// extended-protocol batch split by an inspected Parse still leaves as one
/// segment); larger runs, such as COPY data, are written straight from the
/// read buffer.
const COALESCE_BELOW: usize = 16 * 1024;
/// Server bytes gathered before one write: rewritten rows and the small runs
/// between them leave together.
const SERVER_COALESCE_BELOW: usize = 64 * 1024;
/// Client messages that the server answers with one ReadyForQuery each.
const REQUEST_ENDS: &[u8] = b"QS";

/// Everything one session's relay needs.
pub struct Relay {
    /// Client socket, read side.
    pub client_r: ReadHalf,
    /// Client socket, write side.
    pub client_w: WriteHalf,
    /// Server socket, read side.
    pub backend_r: ReadHalf,
    /// Server socket, write side.
    pub backend_w: WriteHalf,
    /// Bytes already read from the server past its first ReadyForQuery.
    pub backend_buf: BytesMut,
    /// Bytes already read from the client past its startup.
    pub client_buf: BytesMut,
    /// Hooks on client messages.
    pub frontend: Box<dyn FrontendPhases>,
    /// Hooks on server messages.
    pub backend: Box<dyn BackendPhases>,
    /// Largest client message.
    pub max_message_size: usize,
    /// Idle timeout, if any.
    pub idle_timeout: Option<Duration>,
    /// Shutdown signal.
    pub shutdown: watch::Receiver<ShutdownPhase>,
    /// Requests and answers, shared with the phases.
    pub inflight: Arc<InFlight>,
}

/// Client-side events the server pump must act on.
enum Control {
    /// Send this FATAL error to the client and end the session.
    Fatal(SessionError),
}

impl Relay {
    /// Runs until either side ends the session. Returns the error that ended
    /// it, if any; FATAL messages have already been sent to the client.
    pub async fn run(self) -> Result<(), SessionError> {
        let Relay {
            mut client_r,
            mut client_w,
            mut backend_r,
            mut backend_w,
            backend_buf,
            client_buf,
            frontend,
            backend,
            max_message_size,
            idle_timeout,
            shutdown,
            inflight,
        } = self;
        let (tx, rx) = mpsc::channel(1);
        let refusals = Arc::new(PendingRefusals::default());
        let activity = Arc::new(Activity::default());
        let mut client = ClientPump {
            framer: Framer::new(max_message_size),
            sizer: ReadSizer::default(),
            phases: frontend,
            refusals: Arc::clone(&refusals),
            control: tx,
            activity: Arc::clone(&activity),
            inflight: Arc::clone(&inflight),
            out: BytesMut::new(),
        };
        let mut server = ServerPump {
            sizer: ReadSizer::default(),
            phases: backend,
            refusals,
            control: rx,
            activity,
            idle_timeout,
            shutdown,
            inflight,
            out: BytesMut::new(),
            streaming: 0,
            // The login's ReadyForQuery (sent before the relay starts) counts
            // as the first one, unless the client already sent more: then the
            // session is busy until the server's next ReadyForQuery.
            last_ready: client_buf
                .is_empty()
                .then_some((TransactionStatus::Idle, 0, 0)),
        };
        tokio::select! {
            r = client.run(&mut client_r, &mut backend_w, client_buf) => r,
            r = server.run(&mut backend_r, &mut client_w, backend_buf) => r,
        }
    }
}

/// Writes a FATAL ErrorResponse for `e`, best effort: the session is ending.
pub async fn send_fatal(w: &mut WriteHalf, e: &SessionError) {
    let mut out = BytesMut::new();
    encode::error_response(
        &mut out,
        Severity::Fatal,
        e.sqlstate(),
        &e.to_string(),
        None,
    );
    let _ = w.write_all(&out).await;
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

struct ClientPump {
    framer: Framer,
    sizer: ReadSizer,
    phases: Box<dyn FrontendPhases>,
    refusals: Arc<PendingRefusals>,
    control: mpsc::Sender<Control>,
    activity: Arc<Activity>,
    inflight: Arc<InFlight>,
    /// Small client messages gathered for one write.
    out: BytesMut,
}

/// What handling one inspected client frame led to.
enum Step {
    Continue,
    Terminated,
}

impl ClientPump {
    /// The tags the relay itself must see, besides the phases' choices.
    fn must_inspect(&self, tag: u8) -> bool {
        match FrontendKind::of(tag) {
            FrontendKind::FunctionCall
            | FrontendKind::Terminate
            | FrontendKind::Password
            | FrontendKind::Unknown(_) => true,
            kind => self.phases.inspects(kind),
        }
    }

    async fn run(
        &mut self,
        r: &mut ReadHalf,
        w: &mut WriteHalf,
        mut buf: BytesMut,
    ) -> Result<(), SessionError> {
        loop {
            match self.drain(w, &mut buf).await {
                Ok(Step::Continue) => {}
                Ok(Step::Terminated) => return Ok(()),
                Err(e @ SessionError::Protocol(_)) => {
                    // The server pump owns the client's write side: it sends
                    // the FATAL and ends the session; this pump waits.
                    let _ = self.control.send(Control::Fatal(e)).await;
                    return std::future::pending().await;
                }
                Err(e) => return Err(e),
            }
            let offered = self.sizer.prepare(&mut buf);
            let n = r.read_buf(&mut buf).await?;
            self.sizer.record(n, offered);
            if n == 0 {
                // Client went away without Terminate: end the server session cleanly.
                let mut x = BytesMut::new();
                encode::terminate(&mut x);
                let _ = w.write_all(&x).await;
                return Ok(());
            }
            self.activity.client_seen();
        }
    }

    /// Forwards every complete frame in `buf`.
    async fn drain(&mut self, w: &mut WriteHalf, buf: &mut BytesMut) -> Result<Step, SessionError> {
        loop {
            let run = self
                .framer
                .complete_prefix(buf, |t| self.must_inspect(t), REQUEST_ENDS)
                .map_err(|e| SessionError::Protocol(e.to_string()))?;
            if run.len > 0 {
                self.inflight.sent(run.counted);
                if run.len >= COALESCE_BELOW {
                    self.flush(w).await?;
                    w.write_all(&buf[..run.len]).await.map_err(backend_lost)?;
                } else {
                    self.out.extend_from_slice(&buf[..run.len]);
                }
                buf.advance(run.len);
            }
            let frame = match self.framer.next_frame(buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    self.flush(w).await?;
                    return Ok(Step::Continue);
                }
                Err(e) => return Err(SessionError::Protocol(e.to_string())),
            };
            let step = self.handle(frame)?;
            if matches!(step, Step::Terminated) || self.out.len() >= COALESCE_BELOW {
                self.flush(w).await?;
            }
            if let Step::Terminated = step {
                return Ok(Step::Terminated);
            }
        }
    }

    async fn flush(&mut self, w: &mut WriteHalf) -> Result<(), SessionError> {
        if !self.out.is_empty() {
            w.write_all(&self.out).await.map_err(backend_lost)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Runs the phases on one inspected frame and queues what goes to the
    /// server in its place.
    fn handle(&mut self, frame: Frame) -> Result<Step, SessionError> {
        let kind = FrontendKind::of(frame.tag());
        let action = match kind {
            FrontendKind::Terminate => {
                self.out.extend_from_slice(frame.raw());
                return Ok(Step::Terminated);
            }
            FrontendKind::FunctionCall => {
                self.phases.on_function_call_refused();
                FrontendAction::Refuse(Refusal {
                    code: "0A000",
                    message: "pgward does not relay FunctionCall (fast-path) messages".into(),
                    detail: None,
                    hint: Some("Call the function with a SELECT statement instead.".into()),
                    position: None,
                })
            }
            FrontendKind::Password | FrontendKind::Unknown(_) => {
                return Err(SessionError::Protocol(format!(
                    "invalid frontend message type {}",
                    frame.tag()
                )))
            }
            FrontendKind::Query => self.phases.on_query(&frame),
            FrontendKind::Parse => self.phases.on_parse(&frame),
            FrontendKind::Bind => self.phases.on_bind(&frame),
            FrontendKind::Describe => self.phases.on_describe(&frame),
            FrontendKind::Execute => self.phases.on_execute(&frame),
            FrontendKind::Close => {
                self.phases.on_close(&frame);
                FrontendAction::Forward
            }
            FrontendKind::Sync => {
                self.phases.on_sync();
                FrontendAction::Forward
            }
            _ => FrontendAction::Forward,
        };
        match action {
            FrontendAction::Forward => {
                self.inflight
                    .sent(u64::from(REQUEST_ENDS.contains(&frame.tag())));
                self.out.extend_from_slice(frame.raw());
            }
            FrontendAction::Refuse(refusal) => {
                // A refused Parse is answered at the batch's Sync; anything
                // else is replaced by a Query, a request of its own.
                let stand_in = if kind == FrontendKind::Parse {
                    StandIn::Parse
                } else {
                    self.inflight.sent(1);
                    StandIn::Query
                };
                let due = self.inflight.sent_total() + u64::from(stand_in == StandIn::Parse);
                self.out
                    .extend_from_slice(&self.refusals.substitute(&refusal, stand_in, due));
            }
        }
        Ok(Step::Continue)
    }
}

fn backend_lost(e: std::io::Error) -> SessionError {
    SessionError::BackendLost(e.to_string())
}

struct ServerPump {
    sizer: ReadSizer,
    phases: Box<dyn BackendPhases>,
    refusals: Arc<PendingRefusals>,
    control: mpsc::Receiver<Control>,
    activity: Arc<Activity>,
    idle_timeout: Option<Duration>,
    shutdown: watch::Receiver<ShutdownPhase>,
    inflight: Arc<InFlight>,
    /// Frames gathered for one write to the client.
    out: BytesMut,
    /// Bytes of an oversized uninspected frame still to pass through.
    streaming: usize,
    /// The last ReadyForQuery: its status, when it was forwarded, and how
    /// many client reads had happened by then.
    last_ready: Option<(TransactionStatus, u64, u64)>,
}

impl ServerPump {
    fn inspects(&self, tag: u8) -> bool {
        let kind = BackendKind::of(tag);
        self.phases.inspects(kind) || (kind == BackendKind::ErrorResponse && self.refusals.any())
    }

    async fn run(
        &mut self,
        r: &mut ReadHalf,
        w: &mut WriteHalf,
        mut buf: BytesMut,
    ) -> Result<(), SessionError> {
        let tick = self
            .idle_timeout
            .map(|d| (d / 4).max(Duration::from_millis(100)));
        let mut ticker = tokio::time::interval(tick.unwrap_or(Duration::from_secs(3600)));
        loop {
            if let Err(e) = self.drain(w, &mut buf).await {
                send_fatal(w, &e).await;
                return Err(e);
            }
            w.flush().await?;
            if let Some(e) = self.should_close() {
                send_fatal(w, &e).await;
                return Err(e);
            }
            let offered = self.sizer.prepare(&mut buf);
            tokio::select! {
                biased;
                Some(Control::Fatal(e)) = self.control.recv() => {
                    send_fatal(w, &e).await;
                    return Err(e);
                }
                _ = self.shutdown.changed() => {}
                _ = ticker.tick(), if tick.is_some() => {}
                read = r.read_buf(&mut buf) => {
                    if let Ok(n) = read {
                        self.sizer.record(n, offered);
                    }
                    let n = read.map_err(backend_lost);
                    if matches!(n, Ok(0) | Err(_)) {
                        let e = n.err().unwrap_or_else(|| {
                            SessionError::BackendLost("the server closed the connection".into())
                        });
                        send_fatal(w, &e).await;
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Shutdown or idle timeout, checked between messages only, so a client
    /// never sees a FATAL in the middle of a result.
    fn should_close(&self) -> Option<SessionError> {
        let phase = *self.shutdown.borrow();
        if phase == ShutdownPhase::Forced {
            return Some(SessionError::Shutdown);
        }
        let (status, at, reads) = self.last_ready?;
        // A client read after the last ReadyForQuery means work in flight.
        // (A pipelining client whose next query was read before that
        // ReadyForQuery is not told apart; it would only be closed between
        // messages, never mid-result.)
        if self.activity.client_reads() != reads {
            return None;
        }
        if phase == ShutdownPhase::Draining && status == TransactionStatus::Idle {
            return Some(SessionError::Shutdown);
        }
        let idle = self.idle_timeout?;
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        (self.activity.now().saturating_sub(at) >= idle_ms).then_some(SessionError::IdleTimeout)
    }

    async fn drain(&mut self, w: &mut WriteHalf, buf: &mut BytesMut) -> Result<(), SessionError> {
        let result = self.drain_frames(w, buf).await;
        // Whatever was gathered leaves before the pump reads again (or
        // before a FATAL, which must come after it).
        self.flush(w).await?;
        result
    }

    async fn flush(&mut self, w: &mut WriteHalf) -> Result<(), SessionError> {
        if !self.out.is_empty() {
            w.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Forwards every complete frame in `buf`: untouched runs straight from
    /// the buffer when large, inspected (possibly rewritten) frames and small
    /// runs gathered in `out`, so a result of rewritten rows leaves in a few
    /// writes rather than one per row.
    async fn drain_frames(
        &mut self,
        w: &mut WriteHalf,
        buf: &mut BytesMut,
    ) -> Result<(), SessionError> {
        let framer = Framer::new(MAX_INSPECTED_SERVER_FRAME);
        loop {
            if self.streaming > 0 {
                let n = self.streaming.min(buf.len());
                if n == 0 {
                    return Ok(());
                }
                self.flush(w).await?;
                w.write_all(&buf[..n]).await?;
                buf.advance(n);
                self.streaming -= n;
                continue;
            }
            let run = framer
                .complete_prefix(buf, |t| self.inspects(t), b"Z")
                .map_err(|e| SessionError::BackendProtocol(e.to_string()))?;
            if run.counted > 0 {
                let answered = self.inflight.answered(run.counted);
                self.refusals.expire(answered);
            }
            if run.len > 0 {
                if let Some(last) = run.last_start {
                    if buf[last] == b'Z' {
                        self.note_ready(buf[last + 5]);
                    }
                }
                if run.len >= SERVER_COALESCE_BELOW {
                    self.flush(w).await?;
                    w.write_all(&buf[..run.len]).await?;
                } else {
                    self.out.extend_from_slice(&buf[..run.len]);
                }
                buf.advance(run.len);
            }
            let Some(header) = Framer::peek_header(buf)
                .map_err(|e| SessionError::BackendProtocol(e.to_string()))?
            else {
                return Ok(());
            };
            if header.tag == b'D' && buf.len() >= header.total_len && self.inspects(b'D') {
                // Inspected rows, handled in place in the read buffer: no
                // split, no reference count, one row after another.
                self.phases
                    .on_data_row(&buf[..header.total_len], &mut self.out);
                buf.advance(header.total_len);
                if self.out.len() >= SERVER_COALESCE_BELOW {
                    self.flush(w).await?;
                }
                continue;
            }
            if !self.inspects(header.tag) {
                // Incomplete and uninspected: stream it if it is large.
                if header.total_len > STREAM_ABOVE {
                    self.streaming = header.total_len;
                    continue;
                }
                return Ok(());
            }
            let Some(frame) = framer
                .next_frame(buf)
                .map_err(|e| SessionError::BackendProtocol(e.to_string()))?
            else {
                return Ok(());
            };
            self.handle(frame)?;
            if self.out.len() >= SERVER_COALESCE_BELOW {
                self.flush(w).await?;
            }
        }
    }

    fn note_ready(&mut self, status: u8) {
        let status = match status {
            b'T' => TransactionStatus::InTransaction,
            b'E' => TransactionStatus::Failed,
            _ => TransactionStatus::Idle,
        };
        self.last_ready = Some((status, self.activity.now(), self.activity.client_reads()));
    }

    /// Runs the phases on one inspected frame and gathers what goes to the
    /// client.
    fn handle(&mut self, frame: Frame) -> Result<(), SessionError> {
        let out = match BackendKind::of(frame.tag()) {
            BackendKind::ErrorResponse => {
                if let Some(own) = self.refusals.take_if_marker(&frame) {
                    // The stand-in's error: the phases see it as the error
                    // it is (the extended protocol skips to Sync), and the
                    // client gets pgward's own.
                    let _ = self.phases.on_error_response(frame);
                    own
                } else {
                    self.phases.on_error_response(frame)
                }
            }
            BackendKind::RowDescription => {
                self.phases.on_row_description(&frame);
                frame.into_raw()
            }
            BackendKind::DataRow => {
                // Written straight into the outgoing buffer.
                self.phases.on_data_row(frame.raw(), &mut self.out);
                return Ok(());
            }
            BackendKind::CommandComplete | BackendKind::Other(b'I' | b's') => {
                self.phases.on_result_end(frame)
            }
            BackendKind::Other(b'n') => {
                self.phases.on_no_data();
                frame.into_raw()
            }
            BackendKind::NoticeResponse | BackendKind::Notification => self.phases.on_notice(frame),
            BackendKind::ReadyForQuery => {
                let status = ready_status(&frame)
                    .map_err(|e| SessionError::BackendProtocol(e.to_string()))?;
                self.note_ready(status.byte());
                self.phases.on_ready_for_query(status);
                let answered = self.inflight.answered(1);
                self.refusals.expire(answered);
                frame.into_raw()
            }
            BackendKind::ParameterStatus => {
                self.phases.on_parameter_status(&frame);
                frame.into_raw()
            }
            _ => frame.into_raw(),
        };
        self.out.extend_from_slice(&out);
        Ok(())
    }
}

//! The socket loop around the relay core: one task per session that reads
//! both sides, hands the bytes to the core, and writes what it returns.
//!
//! Both directions move at once (a select over the reads and the pending
//! writes), so a server blocked writing results never waits on pgward
//! writing to it. Backpressure bounds memory: a side is read only while the
//! buffer towards the other side is below `OUTGOING_HIGH`, and the client is
//! read while a request is held only up to `HELD_INPUT_LIMIT` (enough to
//! notice it leave). Read buffers are sized per read by a [`ReadSizer`]:
//! none while idle (the read waits without a buffer), up to 64 KiB under
//! bulk traffic. Once nothing is in flight the outgoing buffers and the
//! tracker's queue are given back too, so an idle session holds only its
//! protocol state. Buffers given back go to the thread's spare ones
//! (`spare.rs`), where the next busy session finds them.

use super::core::{room, ClientStep, Core, CoreError, ServerStep, OUTGOING_HIGH};
use super::phases::{HoldEnd, Refusal, Release};
use super::registry::{Control, Registration, SessionState};
use super::relay_io::{RelayRead, RelayWrite};
use super::spare::{self, SPARE_ROOM};
use super::ShutdownPhase;
use crate::error::SessionError;
use crate::sqlstate::Sqlstate;
use crate::wire::backend::TransactionStatus;
use crate::wire::encode::{self, Severity};
use bytes::{Buf, BytesMut};
use std::future::poll_fn;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use wait::{write_direct, write_now, Event, PumpState};

mod wait;

/// Client bytes read while a request is held, at most.
const HELD_INPUT_LIMIT: usize = 1 << 20;

/// Everything one session's relay needs.
pub(crate) struct Relay {
    pub(crate) client_r: RelayRead,
    pub(crate) client_w: RelayWrite,
    pub(crate) backend_r: RelayRead,
    pub(crate) backend_w: RelayWrite,
    /// Bytes already read past the login, when there were any (rarely: a
    /// client waits for ReadyForQuery), taken when the relay starts.
    pub(crate) early: Option<Box<EarlyInput>>,
    pub(crate) core: Core,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) registration: Registration,
}

/// Bytes read from either side before the relay started.
pub(crate) struct EarlyInput {
    /// From the client, past its startup.
    pub(crate) client: BytesMut,
    /// From the server, past its first ReadyForQuery.
    pub(crate) backend: BytesMut,
}

impl EarlyInput {
    /// `None` when both are empty: an empty buffer's room is not kept.
    pub(crate) fn of(client: BytesMut, backend: BytesMut) -> Option<Box<Self>> {
        (!client.is_empty() || !backend.is_empty()).then(|| Box::new(Self { client, backend }))
    }
}

/// How a session ended, for the loop's caller.
enum End {
    /// Cleanly (Terminate, client EOF, the server's FATAL forwarded).
    Done,
    /// With this error, which the client gets as a FATAL.
    Fatal(SessionError),
}

/// How a turn of the loop ended, other than by waiting.
enum Exit {
    /// Cleanly (Terminate went out, or the server closed after it).
    Done,
    /// The session ends with this error ([`Relay::fatal`]).
    Fatal(SessionError),
    /// The server's FATAL was gathered for the client: it goes out, then
    /// the session ends.
    ServerFatal,
    /// The client is gone: what was for the server goes, with a Terminate.
    ClientGone,
}

/// What the loop waits for between turns: the reads it offered, and the
/// room each was offered (for the sizers).
#[derive(Clone, Copy)]
struct Waiting {
    read_server: bool,
    read_client: bool,
    client_offer: usize,
    server_offer: usize,
}

impl Relay {
    /// Runs until either side ends the session. Boxed: an `async fn` taking
    /// `self` by value keeps two copies of it in its future, and one taking
    /// it by reference needs a future around it that owns it (one more
    /// level for every poll to pass through).
    pub(crate) async fn run(mut self: Box<Self>) -> Result<(), SessionError> {
        // One struct for the loop's state: the wait borrows it whole (a
        // closure over a dozen locals stored and loaded a reference to each
        // at every wait).
        let mut st = PumpState::new(&mut self);
        // The loop runs inside one poll (`turn`), not as an `async` loop:
        // its locals then stay in registers through a turn instead of
        // being stored in the future and loaded again at every wake-up.
        // It is polled from here, not from an `async fn` of its own: every
        // wake-up passed through that future's state too. Only the endings
        // that write before the session ends wait after it.
        let mut waiting = None;
        let exit = poll_fn(|cx| self.turn(&mut st, &mut waiting, cx)).await;
        match self.finish(exit, &mut st).await {
            Ok(End::Done) => {
                let _ = self.client_w.shutdown().await;
                Ok(())
            }
            Ok(End::Fatal(e)) | Err(e) => {
                if !matches!(e, SessionError::ClientIo(_)) {
                    send_fatal(&mut self.client_w, &e).await;
                }
                // The server session ends with pgward's.
                let mut x = BytesMut::new();
                encode::terminate(&mut x);
                let _ = self.backend_w.write_all(&x).await;
                Err(e)
            }
        }
    }

    /// What the loop's end writes before the session ends.
    async fn finish(
        &mut self,
        exit: Result<Exit, SessionError>,
        // By reference: moved in, the loop's state was counted twice in
        // the session's future (it is held while the session idles).
        st: &mut PumpState,
    ) -> Result<End, SessionError> {
        match exit? {
            Exit::Done => Ok(End::Done),
            Exit::Fatal(e) => self.fatal(e, &st.to_client).await,
            Exit::ServerFatal => {
                self.client_w.write_all(&st.to_client).await?;
                self.client_w.flush().await?;
                Ok(End::Done)
            }
            Exit::ClientGone => {
                let mut x = BytesMut::new();
                encode::terminate(&mut x);
                st.to_server.extend_from_slice(&x);
                self.backend_w
                    .write_all(&st.to_server)
                    .await
                    .map_err(lost)?;
                Ok(End::Done)
            }
        }
    }

    /// Runs the loop until it must wait (`Pending`, with what it waits for
    /// in `waiting`) or the session ends. Polled again with `waiting` set,
    /// it first polls that wait.
    ///
    /// The loop's body is a call of its own (`step`): inlined here, the
    /// compiler computed the address of some thirty fields before the loop
    /// and stored them on the stack, at every poll (about 130 instructions
    /// a transaction), to load them back inside.
    #[inline(always)]
    fn turn(
        &mut self,
        st: &mut PumpState,
        waiting: &mut Option<Waiting>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Exit, SessionError>> {
        if let Some(w) = *waiting {
            // One hand-written poll over everything the session waits on,
            // in this order (a `select!` built and dropped a future per
            // branch on every wake-up).
            let Poll::Ready(event) = self.poll_event(st, w.read_server, w.read_client, cx) else {
                return Poll::Pending;
            };
            *waiting = None;
            if let Some(exit) = self.on_event(st, event, w)? {
                return Poll::Ready(Ok(exit));
            }
        }
        loop {
            match self.step(st, waiting, cx) {
                Poll::Ready(Ok(None)) => {}
                Poll::Ready(Ok(Some(exit))) => return Poll::Ready(Ok(exit)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// One round of the loop: handles what was read, writes what it can,
    /// then polls the wait and handles its event. `Ready(Ok(None))`: go
    /// round again; `Pending`: waiting, with what it waits for in
    /// `waiting`.
    #[inline(never)]
    fn step(
        &mut self,
        st: &mut PumpState,
        waiting: &mut Option<Waiting>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Exit>, SessionError>> {
        // An outgoing buffer is taken from the thread's spare ones by
        // the core once it writes to it (`core::room`; given back below
        // once written): most requests and answers leave from the read
        // buffer. Hand the core what was read.
        // (An empty input is no call: the core has nothing to do with
        // it, as a held frame stays in the input.)
        if st.hold.is_none() && !st.terminating && !st.client_in.is_empty() {
            match self
                .core
                .client_input_direct(&mut st.client_in, &mut st.to_server)
            {
                Ok((ClientStep::NeedMore, 0)) => {}
                Ok((ClientStep::NeedMore, n)) => {
                    // `to_server` is empty: the judged frames leave from
                    // the read buffer as far as the socket takes them
                    // now; what it does not take waits in `to_server`.
                    let written =
                        write_direct(&mut self.backend_w, &st.client_in[..n]).map_err(lost)?;
                    st.flush_server |= written > 0 && self.backend_w.buffers();
                    if written < n {
                        room(&mut st.to_server);
                        st.to_server.extend_from_slice(&st.client_in[written..n]);
                    }
                    consume(&mut st.client_in, n);
                    if written == n && !st.client_in.is_empty() {
                        // The core stopped at the outgoing limit (or a
                        // frame still arriving): the room is there now.
                        return Poll::Ready(Ok(None));
                    }
                }
                Ok((ClientStep::Hold(wait), _)) => {
                    if self.registration.shutdown_phase() == ShutdownPhase::Running {
                        st.hold = Some(wait);
                    } else {
                        // Shutting down: nothing new waits (the holds
                        // already waiting were refused when it began).
                        wait.end(HoldEnd::Shutdown);
                        self.core.release(Release::Refuse(shutdown_refusal()));
                        return Poll::Ready(Ok(None));
                    }
                }
                Ok((ClientStep::Terminate, _)) => st.terminating = true,
                Err(e) => return Poll::Ready(Ok(Some(Exit::Fatal(core_error(e))))),
            }
        }
        while !st.server_in.is_empty() {
            match self.core.server_input(&mut st.server_in, &mut st.to_client) {
                Ok(ServerStep::NeedMore | ServerStep::Full) => break,
                Ok(ServerStep::Direct(n)) => {
                    // `to_client` is empty: write straight from the read
                    // buffer as far as the socket takes it now; what it
                    // does not take waits in `to_client` (so the other
                    // direction never waits on this write).
                    // What the client sees next is already in the
                    // registry (its listings never lag the answer).
                    self.registration
                        .set_state(self.state(st.hold.is_some()), self.core.tracker.busy());
                    let written = write_direct(&mut self.client_w, &st.server_in[..n])?;
                    st.flush_client |= written > 0 && self.client_w.buffers();
                    if written < n {
                        if st.to_client.capacity() == 0 {
                            st.to_client = spare::take();
                        }
                        st.to_client.extend_from_slice(&st.server_in[written..n]);
                    }
                    consume(&mut st.server_in, n);
                }
                Ok(ServerStep::Fatal) => return Poll::Ready(Ok(Some(Exit::ServerFatal))),
                Err(e) => return Poll::Ready(Ok(Some(Exit::Fatal(core_error(e))))),
            }
        }
        if self.registration.shutdown_phase() == ShutdownPhase::Forced && self.core.at_boundary() {
            return Poll::Ready(Ok(Some(Exit::Fatal(SessionError::Shutdown))));
        }
        if let Some(reason) = st.pending_terminate.take() {
            if self.core.at_boundary() {
                return Poll::Ready(Ok(Some(Exit::Fatal(SessionError::Terminated(reason)))));
            }
            st.pending_terminate = Some(reason);
        }
        if st.idle_terminate.is_some()
            && self.core.is_quiet()
            && self.core.at_boundary()
            && st.hold.is_none()
            && self.core.tracker.status() == TransactionStatus::Idle
        {
            let reason = st.idle_terminate.take().unwrap_or_default();
            return Poll::Ready(Ok(Some(Exit::Fatal(SessionError::Terminated(reason)))));
        }
        self.core.own_notices_into(&mut st.to_client);
        self.registration
            .set_state(self.state(st.hold.is_some()), self.core.tracker.busy());
        if st.terminating && st.to_server.is_empty() {
            return Poll::Ready(Ok(Some(Exit::Done)));
        }
        if st.client_gone {
            // Abandoned: a held request is withdrawn by dropping it.
            return Poll::Ready(Ok(Some(Exit::ClientGone)));
        }
        if self.core.is_quiet() && st.client_in.is_empty() {
            // The clock is read only for an idle timeout.
            let since = self
                .idle_timeout
                .map(|_| *st.quiet_since.get_or_insert_with(Instant::now));
            if let Some(e) = self.should_close(since) {
                return Poll::Ready(Ok(Some(Exit::Fatal(e))));
            }
        } else {
            st.quiet_since = None;
        }
        // Most writes complete at once: try them before waiting, so a
        // round trip costs one wake-up per direction.
        let to_server_wrote =
            write_now(&mut self.backend_w, &mut st.to_server, &mut st.flush_server)
                .map_err(lost)?;
        let to_client_wrote =
            write_now(&mut self.client_w, &mut st.to_client, &mut st.flush_client)?;
        let wrote = to_server_wrote || to_client_wrote;
        if st.terminating && st.to_server.is_empty() && !st.flush_server {
            // Terminate is out: the server closes its side, which is
            // no loss of the connection.
            return Poll::Ready(Ok(Some(Exit::Done)));
        }
        if wrote && (!st.client_in.is_empty() || !st.server_in.is_empty()) {
            // Input the core left for want of room in an outgoing
            // buffer: the room is there now.
            return Poll::Ready(Ok(None));
        }
        // Outgoing buffers are given back once written: at once when
        // nothing is in flight (the session may now idle for hours), and
        // under traffic once they grew past a burst's size.
        let quiet = self.core.is_quiet();
        for out in [&mut st.to_server, &mut st.to_client] {
            if out.is_empty() && (quiet || out.capacity() > SPARE_ROOM) && out.capacity() > 0 {
                spare::give(std::mem::take(out));
            }
        }
        if quiet {
            self.core.tracker.release_idle();
        }

        let read_client = !st.terminating
            && st.to_server.len() < OUTGOING_HIGH
            && (st.hold.is_none() || st.client_in.len() < HELD_INPUT_LIMIT);
        let read_server = st.to_client.len() < OUTGOING_HIGH && self.core.wants_server_bytes();
        let client_offer = if read_client {
            st.client_sizer.prepare(&mut st.client_in)
        } else {
            0
        };
        let server_offer = if read_server {
            st.server_sizer.prepare(&mut st.server_in)
        } else {
            0
        };
        // The deadline's timer exists only while a request is held, in
        // a box of its own (inline it would size every task).
        match &st.hold {
            Some(h) if st.hold_timer.as_ref().map(|(at, _)| *at) != Some(h.deadline) => {
                st.hold_timer = Some((
                    h.deadline,
                    Box::pin(tokio::time::sleep_until(Instant::from_std(h.deadline))),
                ));
            }
            Some(_) => {}
            None => st.hold_timer = None,
        }
        let w = Waiting {
            read_server,
            read_client,
            client_offer,
            server_offer,
        };
        let Poll::Ready(event) = self.poll_event(st, read_server, read_client, cx) else {
            *waiting = Some(w);
            return Poll::Pending;
        };
        Poll::Ready(self.on_event(st, event, w))
    }

    /// What an event the loop waited for does; `Some` when it ends the
    /// session.
    #[inline(always)]
    fn on_event(
        &mut self,
        st: &mut PumpState,
        event: Event,
        w: Waiting,
    ) -> Result<Option<Exit>, SessionError> {
        let Waiting {
            client_offer,
            server_offer,
            ..
        } = w;
        match event {
            // A cancel withdraws a held request; the cancel connection
            // signals the server unless the hold was all there was.
            Event::Control(Control::Cancel { server_told }) => {
                if let Some(h) = st.hold.take() {
                    (*h).end(HoldEnd::Cancelled);
                    self.core.release(Release::Refuse(Refusal::new(
                        Sqlstate::QUERY_CANCELED,
                        "canceling statement due to user request",
                    )));
                } else if !server_told && self.core.tracker.busy() {
                    // The hold was released to the server after the
                    // registry looked: that is what the client stops.
                    self.registration.cancel_server();
                }
            }
            Event::Control(Control::Terminate(reason)) if self.core.at_boundary() => {
                return Ok(Some(Exit::Fatal(SessionError::Terminated(reason))));
            }
            Event::Control(Control::Terminate(reason)) => st.pending_terminate = Some(reason),
            Event::Control(Control::TerminateWhenIdle(reason)) => {
                st.idle_terminate = Some(reason);
            }
            // The phase itself is read from the registry at the top of
            // the loop and when quiet.
            Event::Control(Control::Shutdown) => {
                if let Some(h) = st.hold.take() {
                    (*h).end(HoldEnd::Shutdown);
                    self.core.release(Release::Refuse(shutdown_refusal()));
                }
            }
            Event::Decision(decision) => {
                st.hold = None;
                self.core.release(decision.unwrap_or_else(|| {
                    Release::Refuse(Refusal::new(
                        Sqlstate::QUERY_CANCELED,
                        "the held statement was withdrawn",
                    ))
                }));
            }
            Event::Deadline => {
                let refusal = st.hold.take().and_then(|mut h| {
                    let refusal = h.timed_out.take();
                    (*h).end(HoldEnd::Deadline);
                    refusal
                });
                self.core
                    .release(Release::Refuse(refusal.unwrap_or_else(|| {
                        Refusal::new(
                            Sqlstate::QUERY_CANCELED,
                            "canceling statement: it was held longer than its deadline",
                        )
                    })));
            }
            Event::ServerWritten(done) => match done.map_err(lost)? {
                Some(n) => {
                    consume(&mut st.to_server, n);
                    st.flush_server |= st.to_server.is_empty() && self.backend_w.buffers();
                }
                None => st.flush_server = false,
            },
            Event::ClientWritten(done) => match done? {
                Some(n) => {
                    consume(&mut st.to_client, n);
                    st.flush_client |= st.to_client.is_empty() && self.client_w.buffers();
                }
                None => st.flush_client = false,
            },
            Event::ServerRead(read) => {
                let n = read.map_err(lost)?;
                st.server_sizer.record(n, server_offer);
                if n == 0 && st.terminating && st.to_server.is_empty() {
                    // Closed in answer to the Terminate, before its
                    // flush was seen to complete.
                    return Ok(Some(Exit::Done));
                }
                if n == 0 {
                    return Err(SessionError::BackendLost(
                        "the server closed the connection".into(),
                    ));
                }
            }
            Event::ClientRead(read) => {
                let n = match read {
                    Ok(n) => n,
                    Err(e) => {
                        if let Some(h) = st.hold.take() {
                            (*h).end(HoldEnd::Disconnected);
                        }
                        return Err(e.into());
                    }
                };
                st.client_sizer.record(n, client_offer);
                if n == 0 {
                    st.client_gone = true;
                    if let Some(h) = st.hold.take() {
                        (*h).end(HoldEnd::Disconnected);
                    }
                }
            }
            Event::Tick => {}
        }
        Ok(None)
    }

    /// Ends the session with `e`: what was already gathered for the client
    /// leaves first (it ends at a message boundary), then the FATAL.
    async fn fatal(&mut self, e: SessionError, to_client: &[u8]) -> Result<End, SessionError> {
        if self.core.at_boundary() {
            let _ = self.client_w.write_all(to_client).await;
        }
        Ok(End::Fatal(e))
    }

    fn state(&self, held: bool) -> SessionState {
        if held {
            SessionState::Held
        } else if self.core.tracker.busy() {
            SessionState::Running
        } else if self.core.tracker.status() == TransactionStatus::Idle {
            SessionState::Idle
        } else {
            SessionState::InTransaction
        }
    }

    /// Shutdown or idle timeout, checked only while nothing is in flight, so
    /// a client never sees a FATAL in the middle of a result.
    fn should_close(&self, quiet_since: Option<Instant>) -> Option<SessionError> {
        let phase = self.registration.shutdown_phase();
        if phase == ShutdownPhase::Forced {
            return Some(SessionError::Shutdown);
        }
        if phase == ShutdownPhase::Draining && self.core.tracker.status() == TransactionStatus::Idle
        {
            return Some(SessionError::Shutdown);
        }
        let idle = self.idle_timeout?;
        (quiet_since?.elapsed() >= idle).then_some(SessionError::IdleTimeout)
    }
}

fn shutdown_refusal() -> Refusal {
    Refusal::new(
        Sqlstate::ADMIN_SHUTDOWN,
        "pgward is shutting down: the held statement was not run",
    )
}

fn core_error(e: CoreError) -> SessionError {
    match e {
        CoreError::Client(m) => SessionError::Protocol(m),
        CoreError::Backend(m) => SessionError::BackendProtocol(m),
    }
}

fn lost(e: std::io::Error) -> SessionError {
    SessionError::BackendLost(e.to_string())
}

/// Writes a FATAL ErrorResponse for `e`, best effort: the session is ending.
pub(crate) async fn send_fatal(w: &mut RelayWrite, e: &SessionError) {
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

/// Drops the first `n` bytes of a read buffer. All of them (most reads: a
/// whole request or answer went out) is a clear, which also keeps the
/// room at the front for the next read, where `advance` moved the start
/// (a few dozen instructions) and left the room to be reclaimed later.
#[inline]
fn consume(buf: &mut BytesMut, n: usize) {
    if n == buf.len() {
        buf.clear();
    } else {
        buf.advance(n);
    }
}

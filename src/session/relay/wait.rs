//! What the relay loop keeps between its wake-ups, and its one wait over
//! everything a session waits on.

use super::Relay;
use crate::session::core::HoldWait;
use crate::session::phases::Release;
use crate::session::read_sizer::ReadSizer;
use crate::session::registry::Control;
use crate::session::relay_io::{RelayRead, RelayWrite};
use crate::session::side_wake::SideWake;
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::time::Instant;

/// Everything the relay loop keeps between its wake-ups.
pub(super) struct PumpState {
    pub(super) client_in: BytesMut,
    pub(super) server_in: BytesMut,
    pub(super) to_server: BytesMut,
    pub(super) to_client: BytesMut,
    pub(super) client_sizer: ReadSizer,
    pub(super) server_sizer: ReadSizer,
    /// Side wakers, on tokio only: a wake-up polls only the read that may
    /// progress. A read on the relay loop is polled directly: when it
    /// cannot progress that is one flag's load (`event_loop/socket.rs`),
    /// and its socket wakes the task itself, one hop fewer.
    pub(super) client_wake: Option<SideWake>,
    pub(super) server_wake: Option<SideWake>,
    /// Boxed, like the timer below: nearly every session never holds.
    pub(super) hold: Option<Box<HoldWait>>,
    pub(super) terminating: bool,
    pub(super) client_gone: bool,
    /// Since when nothing has been in flight (idle timeout, drain).
    pub(super) quiet_since: Option<Instant>,
    /// A write completed but a TLS stream may still hold it: flush.
    pub(super) flush_server: bool,
    pub(super) flush_client: bool,
    /// A termination asked for mid-frame waits for the frame's end.
    pub(super) pending_terminate: Option<String>,
    /// A termination that waits for the session to be idle outside a
    /// transaction (an expired credential's end_of_transaction mode).
    pub(super) idle_terminate: Option<String>,
    /// The held request's deadline, while one is held.
    pub(super) hold_timer: Option<(std::time::Instant, Pin<Box<tokio::time::Sleep>>)>,
    /// Only with an idle timeout: otherwise no timer exists at all.
    pub(super) ticker: Option<tokio::time::Interval>,
}

impl PumpState {
    /// The state a relay starts with: `client_in` and `server_in` hold what
    /// was read before it started.
    pub(super) fn new(relay: &mut Relay) -> Self {
        let (client_in, server_in) = match relay.early.take() {
            Some(early) => (early.client, early.backend),
            None => (BytesMut::new(), BytesMut::new()),
        };
        let on_loop = matches!(
            (&relay.client_r, &relay.backend_r),
            (RelayRead::Loop(_), RelayRead::Loop(_))
        );
        let (client_wake, server_wake) = if on_loop {
            (None, None)
        } else {
            (Some(SideWake::default()), Some(SideWake::default()))
        };
        Self {
            client_in,
            server_in,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            client_sizer: ReadSizer::default(),
            server_sizer: ReadSizer::default(),
            client_wake,
            server_wake,
            hold: None,
            terminating: false,
            client_gone: false,
            quiet_since: None,
            flush_server: false,
            flush_client: false,
            pending_terminate: None,
            idle_terminate: None,
            hold_timer: None,
            ticker: relay
                .idle_timeout
                .map(|d| tokio::time::interval((d / 4).max(Duration::from_millis(100)))),
        }
    }
}

impl Relay {
    /// One hand-written poll over everything the session waits on, in this
    /// order (a `select!` built and dropped a future per branch on every
    /// wake-up).
    #[inline(always)]
    pub(super) fn poll_event(
        &mut self,
        st: &mut PumpState,
        read_server: bool,
        read_client: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Event> {
        if let Poll::Ready(ctl) = self.registration.poll_control(cx) {
            return Poll::Ready(Event::Control(ctl));
        }
        if let Some(h) = st.hold.as_mut() {
            if let Poll::Ready(decision) = Pin::new(&mut h.decision).poll(cx) {
                return Poll::Ready(Event::Decision(decision.ok()));
            }
        }
        if let Some((_, timer)) = st.hold_timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Deadline);
            }
        }
        if !st.to_server.is_empty() || st.flush_server {
            if let Poll::Ready(done) = poll_write_or_flush(&mut self.backend_w, &st.to_server, cx) {
                return Poll::Ready(Event::ServerWritten(done));
            }
        }
        if !st.to_client.is_empty() || st.flush_client {
            if let Poll::Ready(done) = poll_write_or_flush(&mut self.client_w, &st.to_client, cx) {
                return Poll::Ready(Event::ClientWritten(done));
            }
        }
        if read_server {
            let read = poll_side(
                &mut st.server_wake,
                &mut self.backend_r,
                &mut st.server_in,
                cx,
            );
            if let Poll::Ready(read) = read {
                return Poll::Ready(Event::ServerRead(read));
            }
        }
        if read_client {
            let read = poll_side(
                &mut st.client_wake,
                &mut self.client_r,
                &mut st.client_in,
                cx,
            );
            if let Poll::Ready(read) = read {
                return Poll::Ready(Event::ClientRead(read));
            }
        }
        if let Some(t) = st.ticker.as_mut() {
            if t.poll_tick(cx).is_ready() {
                return Poll::Ready(Event::Tick);
            }
        }
        Poll::Pending
    }
}

/// Writes what `out` holds, then flushes once it is out, as far as both go
/// without waiting; whether bytes went out. A flush that failed is retried
/// by the wait, which reports its error. The first check inlined: most
/// calls find nothing to write (a loop half never needs a flush).
#[inline(always)]
pub(super) fn write_now(
    w: &mut RelayWrite,
    out: &mut BytesMut,
    flush: &mut bool,
) -> std::io::Result<bool> {
    if out.is_empty() && !*flush {
        return Ok(false);
    }
    write_now_slow(w, out, flush)
}

fn write_now_slow(
    w: &mut RelayWrite,
    out: &mut BytesMut,
    flush: &mut bool,
) -> std::io::Result<bool> {
    let mut now = Context::from_waker(Waker::noop());
    let mut wrote = false;
    if !out.is_empty() {
        if let Poll::Ready(written) = Pin::new(&mut *w).poll_write(&mut now, out) {
            out.advance(written?);
            *flush |= out.is_empty() && w.buffers();
            wrote = true;
        }
    }
    if *flush && Pin::new(&mut *w).poll_flush(&mut now).is_ready() {
        *flush = false;
    }
    Ok(wrote)
}

/// Polls one side's read: through its side waker on tokio (`side_wake.rs`),
/// directly on the loop (`wake` is `None` there).
#[inline(always)]
fn poll_side(
    wake: &mut Option<SideWake>,
    r: &mut RelayRead,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    match wake {
        Some(side) => side.poll(cx, |cx| r.poll_read_some(buf, cx)),
        None => r.poll_read_some(buf, cx),
    }
}

/// Writes as much of `bytes` as `w` takes without waiting; how much.
pub(super) fn write_direct(w: &mut RelayWrite, bytes: &[u8]) -> std::io::Result<usize> {
    let mut now = Context::from_waker(Waker::noop());
    match Pin::new(&mut *w).poll_write(&mut now, bytes) {
        Poll::Ready(written) => written,
        Poll::Pending => Ok(0),
    }
}

/// Writes what is pending (`Some(bytes written)`), or flushes once nothing
/// is (`None`).
fn poll_write_or_flush(
    w: &mut RelayWrite,
    pending: &[u8],
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<Option<usize>>> {
    let w = Pin::new(&mut *w);
    if pending.is_empty() {
        w.poll_flush(cx).map_ok(|()| None)
    } else {
        w.poll_write(cx, pending).map_ok(Some)
    }
}

/// What ended one wait of the relay loop.
pub(super) enum Event {
    Control(Control),
    /// The held request's decision (`None`: its sender was dropped).
    Decision(Option<Release>),
    Deadline,
    ServerWritten(std::io::Result<Option<usize>>),
    ClientWritten(std::io::Result<Option<usize>>),
    ServerRead(std::io::Result<usize>),
    ClientRead(std::io::Result<usize>),
    Tick,
}

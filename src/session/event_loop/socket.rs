//! A TCP socket watched by an event loop, split into a read and a write
//! half that implement tokio's `AsyncRead` / `AsyncWrite`, so the relay
//! loop runs over them unchanged.
//!
//! Readiness is two flags per socket, set by the loop when epoll reports
//! the socket readable or writable (edge-triggered) and cleared by a half
//! when the kernel says `EAGAIN` or a read or write came up short. A half
//! that finds its flag clear makes sure its slot keeps the polling task's
//! waker and returns `Pending`; the loop's event wakes it. No readiness
//! tick, and no registration per poll: the slot keeps its waker across
//! wake-ups (`kept_waker.rs`).

use super::kept_waker::{KeptWaker, Registered};
use super::sys;
use super::Shared;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One socket's state, shared by its halves and (through its token) by the
/// loop's epoll.
pub(super) struct SocketState {
    stream: std::net::TcpStream,
    shared: Arc<Shared>,
    /// Halves still alive: the last one to go takes the socket out.
    halves: AtomicU8,
    readable: AtomicBool,
    writable: AtomicBool,
    /// Sticky: once the peer closed (or the socket failed) an edge never
    /// comes again, so a short read must not clear `readable` (the end of
    /// stream, or the error, is still to be read).
    read_closed: AtomicBool,
    write_closed: AtomicBool,
    reader: KeptWaker,
    writer: KeptWaker,
}

impl SocketState {
    /// What an event reported (on the loop's thread).
    pub(super) fn ready(&self, event: &sys::Event) {
        if event.read_closed {
            self.read_closed.store(true, Ordering::Release);
        }
        if event.write_closed {
            self.write_closed.store(true, Ordering::Release);
        }
        let (readable, writable) = (event.readable, event.writable);
        if readable {
            self.readable.store(true, Ordering::Release);
            self.reader.wake();
        }
        if writable {
            self.writable.store(true, Ordering::Release);
            self.writer.wake();
        }
    }
}

/// A half is gone; the last takes the socket out of the epoll. The strong
/// reference its token stands for is given back through the loop, which
/// releases it only where no event of a past wait can still name it.
fn half_dropped(state: &Arc<SocketState>) {
    if state.halves.fetch_sub(1, Ordering::AcqRel) == 1 {
        let _ = state.shared.epoll.delete(state.stream.as_raw_fd());
        state.shared.retire(Arc::clone(state));
    }
}

/// The read half.
pub(crate) struct LoopRead(Arc<SocketState>, Registered);
/// The write half.
pub(crate) struct LoopWrite(Arc<SocketState>, Registered);

impl Drop for LoopRead {
    fn drop(&mut self) {
        half_dropped(&self.0);
    }
}

impl Drop for LoopWrite {
    fn drop(&mut self) {
        half_dropped(&self.0);
    }
}

/// Puts `stream` under the loop's epoll; its halves. On error the stream
/// is closed.
pub(super) fn attach(
    shared: &Arc<Shared>,
    stream: std::net::TcpStream,
) -> io::Result<(LoopRead, LoopWrite)> {
    stream.set_nonblocking(true)?;
    let state = Arc::new(SocketState {
        stream,
        shared: Arc::clone(shared),
        halves: AtomicU8::new(2),
        // Assumed ready: the first read or write finds out.
        readable: AtomicBool::new(true),
        writable: AtomicBool::new(true),
        read_closed: AtomicBool::new(false),
        write_closed: AtomicBool::new(false),
        reader: KeptWaker::default(),
        writer: KeptWaker::default(),
    });
    let token = Arc::into_raw(Arc::clone(&state)) as u64;
    if let Err(e) = shared.epoll.add(state.stream.as_raw_fd(), token) {
        // SAFETY: `token` came from `Arc::into_raw` just above and the
        // kernel never took it: its reference is released here, once.
        drop(unsafe { Arc::from_raw(token as *const SocketState) });
        return Err(e);
    }
    Ok((
        LoopRead(Arc::clone(&state), Registered::default()),
        LoopWrite(state, Registered::default()),
    ))
}

impl LoopRead {
    /// Ready once a read may find bytes (or the end); until then the
    /// task's waker waits for the socket's next event.
    #[inline(always)]
    pub(crate) fn poll_readable(&mut self, cx: &Context<'_>) -> Poll<()> {
        let LoopRead(s, registered) = self;
        if !s.readable.load(Ordering::Acquire) {
            registered.register(&s.reader, cx);
            if !s.readable.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }

    /// Reads into `room` once the socket is readable; bytes read (0: end
    /// of stream). Both reads below come here.
    #[inline]
    fn poll_recv(
        &mut self,
        room: &mut [std::mem::MaybeUninit<u8>],
        cx: &Context<'_>,
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.poll_readable(cx));
            let s = &self.0;
            let len = room.len();
            match sys::recv(s.stream.as_raw_fd(), room) {
                Ok(n) => {
                    if n > 0 && n < len && !s.read_closed.load(Ordering::Acquire) {
                        // Short: the kernel had no more. The next bytes
                        // bring an event.
                        s.readable.store(false, Ordering::Release);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // (A closed socket never says EAGAIN.)
                    s.readable.store(false, Ordering::Release);
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Reads into `buf`'s spare room, growing it first when it has none;
    /// bytes read (0: end of stream). The relay's read on the loop: no
    /// `ReadBuf`, no read through the stack.
    #[inline]
    pub(crate) fn poll_read_into(
        &mut self,
        buf: &mut bytes::BytesMut,
        cx: &Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if buf.capacity() == buf.len() {
            buf.reserve(MIN_ROOM);
        }
        let n = std::task::ready!(self.poll_recv(buf.spare_capacity_mut(), cx))?;
        // SAFETY: `recv` initialised the first `n` bytes of the spare room,
        // which follow the buffer's bytes.
        unsafe { buf.set_len(buf.len() + n) };
        Poll::Ready(Ok(n))
    }
}

/// Room a full buffer is given before a read (the relay's sizer normally
/// leaves room itself).
const MIN_ROOM: usize = 1024;

impl AsyncRead for LoopRead {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // SAFETY (of the slice's use): `recv` only writes into it, and only
        // the `n` bytes it reports are marked initialised.
        let n = std::task::ready!(self.get_mut().poll_recv(unsafe { buf.unfilled_mut() }, cx))?;
        // SAFETY: `recv` initialised the first `n` bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for LoopWrite {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let LoopWrite(s, registered) = self.get_mut();
        if bytes.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            if !s.writable.load(Ordering::Acquire) {
                registered.register(&s.writer, cx);
                if !s.writable.load(Ordering::Acquire) {
                    return Poll::Pending;
                }
            }
            match sys::send(s.stream.as_raw_fd(), bytes) {
                Ok(n) => {
                    if n < bytes.len() && !s.write_closed.load(Ordering::Acquire) {
                        // The socket's buffer is full.
                        s.writable.store(false, Ordering::Release);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.writable.store(false, Ordering::Release);
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here: a write is in the kernel once it returns.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.stream.shutdown(std::net::Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

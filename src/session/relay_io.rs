//! The relay's socket halves: on a relay loop, or on tokio's runtime (TLS,
//! or a server without loops).
//!
//! An enum rather than a boxed trait object: the relay polls its reads and
//! writes several times a transaction, and a virtual call can be neither
//! inlined nor specialised; the loop's halves are a flag load when they
//! cannot progress, cheaper than the call that reaches them.

use super::event_loop::{LoopRead, LoopWrite};
use super::{read_sizer, spare};
use crate::io::{ReadHalf, WriteHalf};
use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A read half of one of the relay's sockets.
pub(crate) enum RelayRead {
    Loop(LoopRead),
    Runtime(ReadHalf),
}

/// A write half of one of the relay's sockets.
pub(crate) enum RelayWrite {
    Loop(LoopWrite),
    Runtime(WriteHalf),
}

impl AsyncRead for RelayRead {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Loop(r) => Pin::new(r).poll_read(cx, buf),
            Self::Runtime(r) => Pin::new(&mut **r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RelayWrite {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Loop(w) => Pin::new(w).poll_write(cx, bytes),
            Self::Runtime(w) => Pin::new(&mut **w).poll_write(cx, bytes),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Loop(w) => Pin::new(w).poll_flush(cx),
            Self::Runtime(w) => Pin::new(&mut **w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Loop(w) => Pin::new(w).poll_shutdown(cx),
            Self::Runtime(w) => Pin::new(&mut **w).poll_shutdown(cx),
        }
    }
}

impl RelayWrite {
    /// Whether a completed write may still sit in the half (a TLS stream's
    /// records) and needs a flush: a loop half writes straight to the
    /// kernel.
    #[inline]
    pub(crate) fn buffers(&self) -> bool {
        matches!(self, Self::Runtime(_))
    }
}

impl RelayRead {
    /// Reads what the socket has into `buf` ([`read_sizer::poll_read_some`]
    /// for tokio's halves). On the loop, a side with no buffer of its own
    /// (idle) waits without one, then reads straight into a spare buffer
    /// once its socket is readable: no read through the stack, no copy.
    /// Always inlined: polled about seven times a transaction, mostly to
    /// find a flag clear, where the call was most of the cost.
    #[inline(always)]
    pub(crate) fn poll_read_some(
        &mut self,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match self {
            Self::Loop(r) => {
                std::task::ready!(r.poll_readable(cx));
                let borrowed = buf.capacity() == 0;
                if borrowed {
                    *buf = spare::take();
                }
                let polled = r.poll_read_into(buf, cx);
                if borrowed && buf.is_empty() {
                    // Nothing after all (or the end): an idle side holds
                    // no buffer.
                    spare::give(std::mem::take(buf));
                }
                polled
            }
            Self::Runtime(r) => read_sizer::poll_read_some(&mut **r, buf, cx),
        }
    }
}

//! How much room a pump gives each socket read, and the read itself.
//!
//! A fixed 64 KiB per read buffer would cost every idle session 128 KiB (one
//! buffer per direction). Instead reads start small and the size adapts: a
//! read that fills all the room offered doubles it (a bulk transfer is under
//! way, fewer larger reads are cheaper), a read that uses under a quarter
//! halves it, and an empty buffer that grew large is given back.
//!
//! At the smallest size an empty buffer is given back altogether: the read
//! waits with no buffer of its own and lands on the poller's stack, then is
//! copied into a spare buffer borrowed from the thread (`spare.rs`) and
//! given back once handled. An idle session (nearly all of them, in a
//! server holding thousands) then holds no read buffer at all; the price is
//! one copy of a small read.

use super::spare;
use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Smallest room offered to a read out of a buffer of its own (a typical
/// request or short answer fits; bulk reads grow).
pub const MIN_READ: usize = 1024;
/// Largest room offered to a read.
pub const MAX_READ: usize = 64 * 1024;
/// Room of a read into the stack, made while the buffer holds nothing.
pub const STACK_READ: usize = 8 * 1024;

/// The adaptive read size of one buffer.
#[derive(Debug, Clone, Copy)]
pub struct ReadSizer {
    chunk: usize,
}

impl Default for ReadSizer {
    fn default() -> Self {
        Self { chunk: MIN_READ }
    }
}

impl ReadSizer {
    /// Makes room in `buf` for the next read; returns the room offered.
    /// An empty buffer at the smallest size is given back instead (the read
    /// goes through the stack, see [`read_some`]). That case, the one of
    /// nearly every poll of a quiet side, is inlined.
    #[inline(always)]
    pub fn prepare(&self, buf: &mut BytesMut) -> usize {
        if buf.is_empty() && self.chunk == MIN_READ {
            if buf.capacity() > 0 {
                // Frames split off earlier may still share the old
                // allocation; giving our handle back only releases our
                // claim on it.
                spare::give(std::mem::take(buf));
            }
            return STACK_READ;
        }
        self.prepare_grown(buf)
    }

    /// [`prepare`](Self::prepare) for a buffer that holds bytes or a read
    /// size that grew.
    fn prepare_grown(&self, buf: &mut BytesMut) -> usize {
        if buf.is_empty() && buf.capacity() > 2 * self.chunk {
            spare::give(std::mem::take(buf));
        }
        buf.reserve(self.chunk);
        buf.capacity() - buf.len()
    }

    /// Adapts to a read of `n` bytes into `offered` bytes of room.
    #[inline]
    pub fn record(&mut self, n: usize, offered: usize) {
        if n >= offered {
            self.chunk = (self.chunk * 2).min(MAX_READ);
        } else if n < self.chunk / 4 {
            self.chunk = (self.chunk / 2).max(MIN_READ);
        }
    }

    /// The current read size.
    pub fn chunk(&self) -> usize {
        self.chunk
    }
}

/// Reads what `r` has into `buf`: straight into its spare room when it has
/// some, else into a stack buffer of [`STACK_READ`] bytes, copied into `buf`
/// once the bytes came (so nothing is allocated while the read waits).
/// Ready with the bytes read; 0 is end of stream. One poll: the relay polls
/// it with the side's own waker (`side_wake.rs`). Never inlined: its stack
/// buffer would make every caller's frame 8 KiB (probed on each call).
#[inline(never)]
pub fn poll_read_some<R>(
    r: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>>
where
    R: AsyncRead + Unpin + ?Sized,
{
    if buf.capacity() > buf.len() {
        // `read_buf` keeps no state between polls: a fresh one per poll
        // is the same read.
        return pin!(r.read_buf(&mut *buf)).poll(cx);
    }
    let mut room = [MaybeUninit::<u8>::uninit(); STACK_READ];
    let mut read = ReadBuf::uninit(&mut room);
    match Pin::new(&mut *r).poll_read(cx, &mut read) {
        Poll::Ready(Ok(())) => {
            if buf.capacity() == 0 && !read.filled().is_empty() {
                // Borrowed, not allocated (given back once handled).
                *buf = spare::take();
            }
            buf.extend_from_slice(read.filled());
            Poll::Ready(Ok(read.filled().len()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// [`poll_read_some`] until it is ready.
    async fn read_some<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
        poll_fn(|cx| poll_read_some(r, buf, cx)).await
    }

    #[test]
    fn grows_under_bulk_and_shrinks_when_reads_are_small() {
        let mut s = ReadSizer::default();
        let mut buf = BytesMut::new();
        for _ in 0..10 {
            let offered = s.prepare(&mut buf);
            s.record(offered, offered);
        }
        assert_eq!(s.chunk(), MAX_READ);
        for _ in 0..10 {
            let offered = s.prepare(&mut buf);
            s.record(10, offered);
        }
        assert_eq!(s.chunk(), MIN_READ);
    }

    #[test]
    fn an_empty_grown_buffer_is_given_back() {
        let mut s = ReadSizer::default();
        s.record(MIN_READ, MIN_READ);
        let mut buf = BytesMut::with_capacity(1 << 20);
        s.prepare(&mut buf);
        assert!(buf.capacity() < 1 << 20);
        assert!(buf.capacity() >= s.chunk());
        // A buffer holding a partial frame keeps its bytes.
        let mut partial = BytesMut::with_capacity(1 << 20);
        partial.extend_from_slice(b"D\0\0");
        s.prepare(&mut partial);
        assert_eq!(&partial[..], b"D\0\0");
    }

    #[test]
    fn an_idle_buffer_holds_nothing_and_reads_through_the_stack() {
        let s = ReadSizer::default();
        let mut buf = BytesMut::with_capacity(4096);
        assert_eq!(s.prepare(&mut buf), STACK_READ);
        assert_eq!(buf.capacity(), 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut input: &[u8] = b"Q\0\0\0\x0dSELECT 1\0";
        let n = rt.block_on(read_some(&mut input, &mut buf)).expect("read");
        assert_eq!(n, 14);
        assert_eq!(&buf[..], b"Q\0\0\0\x0dSELECT 1\0");
        // A partial frame is kept and the next read appends to it.
        let mut more: &[u8] = b"X";
        let offered = s.prepare(&mut buf);
        assert!(offered >= MIN_READ);
        rt.block_on(read_some(&mut more, &mut buf)).expect("read");
        assert_eq!(&buf[14..], b"X");
        // End of stream reads 0 either way.
        let mut empty: &[u8] = b"";
        let mut idle = BytesMut::new();
        assert_eq!(
            rt.block_on(read_some(&mut empty, &mut idle)).expect("eof"),
            0
        );
    }
}

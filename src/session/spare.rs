//! Spare buffers, kept per thread for the sessions that run on it.
//!
//! An idle session holds no buffer (issue 14): its reads wait without one,
//! and its outgoing buffers are given back once written. Allocating a
//! fresh buffer for every read and every answer (four per transaction),
//! and growing each from nothing, cost about six hundred instructions per
//! transaction in the allocator and in `BytesMut`. Instead a session
//! borrows an empty buffer from its thread once bytes came, and gives it
//! back once they are handled, so an idle session still holds none.
//!
//! The pool is bounded ([`KEPT`] buffers per thread); a buffer that grew
//! past [`LARGEST_KEPT`] (bulk transfers) is freed, not kept. A kept
//! buffer is empty: its old bytes lie beyond its length, where safe code
//! never reads them (a read or a copy writes that room before it counts).
//! Room consumed at the front of a buffer is reclaimed by `BytesMut`
//! itself, without allocating, the first time a borrower needs it.

use bytes::BytesMut;
use std::cell::RefCell;

/// Room of a new spare buffer: a typical request or answer fits.
pub(crate) const SPARE_ROOM: usize = 8 * 1024;
/// Buffers kept per thread, at most: a busy session borrows up to four
/// (two reads, two outgoing), and most sessions hold none between their
/// transactions, so a handful serves a thread.
const KEPT: usize = 8;
/// A buffer that grew past this is freed when given back.
const LARGEST_KEPT: usize = 2 * SPARE_ROOM;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer, from the pool when it has one. Inlined, as is
/// [`give`]: called a few times a transaction, a call's own cost (a
/// buffer moved through memory both ways) was most of theirs.
#[inline]
pub(crate) fn take() -> BytesMut {
    POOL.try_with(|pool| pool.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| BytesMut::with_capacity(SPARE_ROOM))
}

/// Gives `buf` back: emptied and kept for the next [`take`] when it has
/// room and the pool has room, else freed.
#[inline]
pub(crate) fn give(mut buf: BytesMut) {
    if buf.capacity() == 0 || buf.capacity() > LARGEST_KEPT {
        return;
    }
    buf.clear();
    // A thread that is ending has no pool left: the buffer is freed.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < KEPT {
            pool.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_comes_back_empty() {
        let mut buf = take();
        assert!(buf.is_empty() && buf.capacity() >= SPARE_ROOM);
        buf.extend_from_slice(b"bytes of another session");
        let at = buf.as_ptr();
        give(buf);
        let again = take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at, "the same room, reused");
    }

    #[test]
    fn consumed_room_is_reclaimed_without_allocating() {
        let mut buf = take();
        let start = buf.as_ptr();
        buf.extend_from_slice(&[1; SPARE_ROOM - 10]);
        bytes::Buf::advance(&mut buf, SPARE_ROOM - 10);
        give(buf);
        let mut again = take();
        assert!(again.capacity() < 100);
        again.extend_from_slice(&[2; 1000]);
        assert_eq!(again.as_ptr(), start, "reclaimed in place");
    }

    #[test]
    fn large_buffers_are_freed_and_the_pool_is_bounded() {
        let kept = POOL.with_borrow(Vec::len);
        give(BytesMut::with_capacity(1 << 20));
        assert_eq!(POOL.with_borrow(Vec::len), kept);
        for _ in 0..4 * KEPT {
            give(BytesMut::with_capacity(SPARE_ROOM));
        }
        assert_eq!(POOL.with_borrow(Vec::len), KEPT);
    }
}

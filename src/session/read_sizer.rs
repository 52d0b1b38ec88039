//! How much room a pump gives each socket read.
//!
//! A fixed 64 KiB per read buffer would cost every idle session 128 KiB (one
//! buffer per direction). Instead reads start small and the size adapts: a
//! read that fills all the room offered doubles it (a bulk transfer is under
//! way, fewer larger reads are cheaper), a read that uses under a quarter
//! halves it, and an empty buffer that grew large is given back, so a session
//! that goes idle after a big result shrinks to the minimum.

use bytes::BytesMut;

/// Smallest room offered to a read: what an idle session holds per
/// direction (a typical request or short answer fits; bulk reads grow).
pub const MIN_READ: usize = 1024;
/// Largest room offered to a read.
pub const MAX_READ: usize = 64 * 1024;

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
    pub fn prepare(&self, buf: &mut BytesMut) -> usize {
        if buf.is_empty() && buf.capacity() > 2 * self.chunk {
            // Frames split off earlier may still share the old allocation;
            // dropping our handle only releases our claim on it.
            *buf = BytesMut::new();
        }
        buf.reserve(self.chunk);
        buf.capacity() - buf.len()
    }

    /// Adapts to a read of `n` bytes into `offered` bytes of room.
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = ReadSizer::default();
        let mut buf = BytesMut::with_capacity(1 << 20);
        s.prepare(&mut buf);
        assert!(buf.capacity() < 1 << 20);
        assert!(buf.capacity() >= MIN_READ);
        // A buffer holding a partial frame keeps its bytes.
        let mut partial = BytesMut::with_capacity(1 << 20);
        partial.extend_from_slice(b"D\0\0");
        s.prepare(&mut partial);
        assert_eq!(&partial[..], b"D\0\0");
    }
}

//! The relay's framer: splits a byte stream into tagged PostgreSQL messages.
//!
//! A regular message is a one-byte tag, a big-endian `i32` length that counts
//! itself but not the tag, and `length - 4` bytes of body. The framer checks the
//! declared length against a limit *before* waiting for (and so buffering) the body,
//! and a frame's body is exactly its declared length: nothing downstream ever reads
//! across a frame boundary.

use bytes::{Buf, Bytes, BytesMut};

/// Size of a regular message header: tag plus length.
pub const HEADER_LEN: usize = 5;

/// A failure to frame a stream; the stream cannot be resynchronised after one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared length is below the minimum of 4 (the length field itself).
    #[error("invalid message length {declared} for message type {tag:?}")]
    InvalidLength {
        /// The message tag as a character.
        tag: char,
        /// The declared length.
        declared: i32,
    },
    /// The declared length exceeds the configured maximum.
    #[error("message type {tag:?} of {declared} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The message tag as a character.
        tag: char,
        /// The declared length.
        declared: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// One complete message: the raw bytes, header included, ready to forward untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    raw: Bytes,
}

impl Frame {
    /// The message tag.
    pub fn tag(&self) -> u8 {
        self.raw[0]
    }

    /// The body, without tag and length.
    pub fn body(&self) -> &[u8] {
        &self.raw[HEADER_LEN..]
    }

    /// The whole message as it came off the wire.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Consumes the frame, giving back its raw bytes.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// A borrowed view of the frame, for the message views.
    pub fn view(&self) -> FrameRef<'_> {
        FrameRef { raw: &self.raw }
    }
}

/// One complete message borrowed in place (from a read buffer): what the
/// relay core and the message views work on, so inspecting a frame copies
/// and allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    raw: &'a [u8],
}

impl<'a> FrameRef<'a> {
    /// Views `raw` as one frame: a tag, a length that matches `raw` exactly,
    /// and the body. `None` when the bytes are not exactly one frame.
    pub fn new(raw: &'a [u8]) -> Option<Self> {
        let header = Framer::peek_header(raw).ok()??;
        (header.total_len == raw.len()).then_some(Self { raw })
    }

    /// The frame at the front of `buf`, whose header [`Framer::peek_header`]
    /// has just read as `header`: its first `header.total_len` bytes, `None`
    /// when they are not all there. Spares reading the header a second time
    /// where every message is framed (the relay's answer side).
    #[inline]
    pub fn at_front(buf: &'a [u8], header: Header) -> Option<Self> {
        if header.total_len < HEADER_LEN {
            return None;
        }
        buf.get(..header.total_len).map(|raw| Self { raw })
    }

    /// The message tag.
    pub fn tag(self) -> u8 {
        self.raw[0]
    }

    /// The body, without tag and length.
    pub fn body(self) -> &'a [u8] {
        &self.raw[HEADER_LEN..]
    }

    /// The whole message, header included.
    pub fn raw(self) -> &'a [u8] {
        self.raw
    }
}

/// What the header at the front of a buffer says, when it is all there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message tag.
    pub tag: u8,
    /// Total size on the wire: tag, length field and body.
    pub total_len: usize,
}

/// Splits a stream into frames, enforcing a maximum message size.
#[derive(Debug, Clone, Copy)]
pub struct Framer {
    max_message_size: usize,
}

impl Framer {
    /// A framer that rejects messages whose declared length exceeds `max_message_size`.
    pub fn new(max_message_size: usize) -> Self {
        Self { max_message_size }
    }

    /// Reads the header at the front of `buf` without consuming anything.
    ///
    /// `Ok(None)` means fewer than five bytes are buffered. The limit is not
    /// applied here, so that a caller may stream an oversized frame it does not
    /// need to inspect.
    pub fn peek_header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let tag = buf[0];
        let declared = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if declared < 4 {
            return Err(FrameError::InvalidLength {
                tag: char::from(tag),
                declared,
            });
        }
        // i32 -> usize cannot fail for a non-negative value on 32/64-bit targets.
        let body_and_len = usize::try_from(declared).unwrap_or(usize::MAX);
        Ok(Some(Header {
            tag,
            total_len: body_and_len.saturating_add(1),
        }))
    }

    /// Checks a header against the size limit.
    pub fn check_limit(&self, header: Header) -> Result<(), FrameError> {
        if header.total_len - 1 > self.max_message_size {
            return Err(FrameError::TooLarge {
                tag: char::from(header.tag),
                declared: header.total_len - 1,
                limit: self.max_message_size,
            });
        }
        Ok(())
    }

    /// Takes the next complete frame off the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed; the buffer is left as it was, and
    /// `buf` has been reserved for the rest of the frame so the next read fills it
    /// without reallocating twice.
    pub fn next_frame(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = Self::peek_header(buf)? else {
            return Ok(None);
        };
        self.check_limit(header)?;
        if buf.len() < header.total_len {
            buf.reserve(header.total_len - buf.len());
            return Ok(None);
        }
        Ok(Some(Frame {
            raw: buf.split_to(header.total_len).freeze(),
        }))
    }

    /// The longest prefix of `buf` made of complete frames, all under the
    /// limit, stopping before a frame whose tag `stop` selects. Frames in the
    /// run whose tag is in `count` are counted (the relay counts the messages
    /// that end a request, and the ReadyForQuery answers, without stopping).
    ///
    /// This lets the relay forward a run of untouched messages in one write
    /// without splitting them into separate `Bytes` first.
    pub fn complete_prefix(
        &self,
        buf: &[u8],
        stop: impl Fn(u8) -> bool,
        count: &[u8],
    ) -> Result<Prefix, FrameError> {
        let mut prefix = Prefix::default();
        while let Some(header) = Self::peek_header(&buf[prefix.len..])? {
            if stop(header.tag) || buf.len() - prefix.len < header.total_len {
                break;
            }
            self.check_limit(header)?;
            prefix.last_start = Some(prefix.len);
            prefix.len += header.total_len;
            prefix.counted += u64::from(count.contains(&header.tag));
        }
        Ok(prefix)
    }
}

/// A run of complete frames at the front of a buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prefix {
    /// Bytes the run covers.
    pub len: usize,
    /// Where the run's last frame starts, if the run is not empty.
    pub last_start: Option<usize>,
    /// Frames in the run with a tag from the `count` list.
    pub counted: u64,
}

/// Reads a big-endian `i32` from the front of `body`, if there are four bytes.
pub fn read_i32(body: &mut &[u8]) -> Option<i32> {
    if body.len() < 4 {
        return None;
    }
    Some(body.get_i32())
}

/// Reads a big-endian `i16` from the front of `body`, if there are two bytes.
pub fn read_i16(body: &mut &[u8]) -> Option<i16> {
    if body.len() < 2 {
        return None;
    }
    Some(body.get_i16())
}

/// Reads a big-endian `u16` from the front of `body` (PostgreSQL reads
/// message counts with `pq_getmsgint(.., 2)`, which is unsigned).
pub fn read_u16(body: &mut &[u8]) -> Option<u16> {
    if body.len() < 2 {
        return None;
    }
    Some(body.get_u16())
}

/// Reads a NUL-terminated string from the front of `body`, within `body` only.
pub fn read_cstr<'a>(body: &mut &'a [u8]) -> Option<&'a [u8]> {
    // Names are short, a byte at a time finds their end soonest; statement
    // texts run to kilobytes, searched many bytes at a time past the start.
    let head = body.len().min(16);
    let nul = match body[..head].iter().position(|b| *b == 0) {
        Some(at) => at,
        None => head + memchr::memchr(0, &body[head..])?,
    };
    let (s, rest) = body.split_at(nul);
    *body = &rest[1..];
    Some(s)
}

#[cfg(test)]
mod tests;

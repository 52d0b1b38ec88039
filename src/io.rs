//! Sockets: a TCP stream that may have been upgraded to TLS, and a buffered
//! reader that hands out whole frames. Used during startup and authentication;
//! the relay splits the stream and drives its own buffers.

use crate::wire::startup::{next_startup_packet, StartupError, StartupPacket};
use crate::wire::{Frame, FrameError, Framer};
use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A connection to a client or a server, in clear or over TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, either side of it.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

/// The read half of a split [`Stream`].
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a split [`Stream`].
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

impl Stream {
    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// Splits into independently owned halves. Plain TCP splits without a lock.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Self::Plain(tcp) => {
                let (r, w) = tcp.into_split();
                (Box::new(r), Box::new(w))
            }
            Self::Tls(tls) => {
                let (r, w) = tokio::io::split(*tls);
                (Box::new(r), Box::new(w))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, b),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// The bytes are not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The bytes are not a valid startup packet.
    #[error(transparent)]
    Startup(#[from] StartupError),
}

/// A stream with a read buffer that yields whole frames.
#[derive(Debug)]
pub struct FramedStream {
    /// The socket.
    pub stream: Stream,
    /// Bytes read but not yet framed.
    pub buf: BytesMut,
}

/// A login's messages, each way, fit in this (a few hundred bytes): the
/// buffer starts here, not at [`READ_ROOM`], since every login under way
/// holds two and the allocator keeps what the busiest moment took.
const FIRST_ROOM: usize = 1024;
/// Room made for a read once the buffer is nearly full (catalog results).
const READ_ROOM: usize = 8 * 1024;

impl FramedStream {
    /// Wraps a stream with an empty buffer.
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(FIRST_ROOM),
        }
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        if self.buf.capacity() - self.buf.len() < FIRST_ROOM / 4 {
            self.buf.reserve(READ_ROOM);
        }
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(ReadError::Closed);
        }
        Ok(())
    }

    /// Reads one tagged frame no larger than `framer` allows.
    pub async fn read_frame(&mut self, framer: &Framer) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = framer.next_frame(&mut self.buf)? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Reads one untagged startup packet.
    pub async fn read_startup(&mut self) -> Result<StartupPacket, ReadError> {
        loop {
            if let Some(p) = next_startup_packet(&mut self.buf)? {
                return Ok(p);
            }
            self.fill().await?;
        }
    }

    /// Reads exactly one byte (the answer to SSLRequest).
    pub async fn read_byte(&mut self) -> Result<u8, ReadError> {
        if self.buf.is_empty() {
            self.fill().await?;
        }
        let b = self.buf[0];
        let _ = self.buf.split_to(1);
        Ok(b)
    }

    /// Writes and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }
}

//! A byte-level client for what tokio-postgres cannot send: malformed,
//! oversized or unusual messages. Login uses postgres-protocol's SCRAM.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a read may wait before the test fails (a hang is a bug).
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// One backend message.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Type byte.
    pub tag: u8,
    /// Body after the length.
    pub body: Bytes,
}

impl Msg {
    /// A field of an ErrorResponse / NoticeResponse (`b'C'` = SQLSTATE).
    pub fn field(&self, code: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if c == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    /// The SQLSTATE of an error, or "" for other messages.
    pub fn sqlstate(&self) -> String {
        self.field(b'C').unwrap_or_default()
    }
}

/// A raw connection.
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawClient {
    /// Opens a TCP connection without any handshake.
    pub async fn open(addr: SocketAddr) -> RawClient {
        RawClient {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
        }
    }

    /// Opens a connection and logs in with SCRAM; returns the client and
    /// the messages from AuthenticationOk to ReadyForQuery.
    pub async fn login(
        addr: SocketAddr,
        user: &str,
        password: &str,
        db: &str,
    ) -> (RawClient, Vec<Msg>) {
        let mut c = RawClient::open(addr).await;
        let mut out = BytesMut::new();
        frontend::startup_message([("user", user), ("database", db)], &mut out).expect("startup");
        c.send(&out).await;
        let sasl = c.recv().await.expect("auth request");
        assert_eq!(
            sasl.tag, b'R',
            "expected an authentication request: {sasl:?}"
        );
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        out.clear();
        frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut out).expect("sasl");
        c.send(&out).await;
        let cont = c.recv().await.expect("sasl continue");
        assert_eq!(cont.tag, b'R', "{cont:?}");
        scram.update(&cont.body[4..]).expect("server-first");
        out.clear();
        frontend::sasl_response(scram.message(), &mut out).expect("sasl response");
        c.send(&out).await;
        let fin = c.recv().await.expect("sasl final");
        assert_eq!(fin.tag, b'R', "{fin:?} {:?}", fin.field(b'M'));
        scram.finish(&fin.body[4..]).expect("server signature");
        let hello = c.until_ready().await;
        (c, hello)
    }

    /// Reads messages up to ReadyForQuery without keeping their bodies (a
    /// huge result never sits in the test's memory); pauses `pause` after
    /// every 64 MiB, like a slow reader. Returns the tags seen (DataRows
    /// collapsed into one `D`) and the bytes read.
    pub async fn skim_until_ready(&mut self, pause: Duration) -> (Vec<u8>, u64) {
        let mut tags = Vec::new();
        let mut total = 0u64;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut pending = std::mem::take(&mut self.buf).to_vec();
        let mut skip = 0usize;
        let mut last_pause = 0u64;
        loop {
            // Walk complete headers in `pending`, skipping bodies.
            loop {
                if skip > 0 {
                    let n = skip.min(pending.len());
                    pending.drain(..n);
                    skip -= n;
                    if skip > 0 {
                        break;
                    }
                }
                if pending.len() < 5 {
                    break;
                }
                let tag = pending[0];
                let len = i32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]);
                let body = usize::try_from(len).expect("length") - 4;
                if !(tag == b'D' && tags.last() == Some(&b'D')) {
                    tags.push(tag);
                }
                pending.drain(..5);
                skip = body;
                if tag == b'Z' {
                    let n = skip.min(pending.len());
                    pending.drain(..n);
                    self.buf = BytesMut::from(&pending[..]);
                    return (tags, total);
                }
            }
            let n = tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut chunk))
                .await
                .expect("pgward did not answer in time")
                .expect("read");
            assert!(n > 0, "connection closed mid-result");
            total += n as u64;
            pending.extend_from_slice(&chunk[..n]);
            if total - last_pause >= 64 << 20 {
                last_pause = total;
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Writes bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Writes, tolerating a peer that already closed.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Ends the sending side (the peer reads end of stream).
    pub async fn finish_sending(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Reads one message; `None` at end of stream.
    pub async fn recv(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = 1 + len as usize;
                if self.buf.len() >= total {
                    let mut frame = self.buf.split_to(total).freeze();
                    let tag = frame.get_u8();
                    frame.advance(4);
                    return Some(Msg { tag, body: frame });
                }
            }
            let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("pgward did not answer in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads a single byte (the answer to SSLRequest / GSSENCRequest).
    pub async fn recv_byte(&mut self) -> u8 {
        tokio::time::timeout(READ_TIMEOUT, self.stream.read_u8())
            .await
            .expect("timely answer")
            .expect("one byte")
    }

    /// Reads messages up to and including ReadyForQuery (or end of stream).
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut got = Vec::new();
        while let Some(m) = self.recv().await {
            let done = m.tag == b'Z';
            got.push(m);
            if done {
                break;
            }
        }
        got
    }

    /// Sends a simple Query and collects the answer up to ReadyForQuery.
    pub async fn simple(&mut self, sql: &str) -> Vec<Msg> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).expect("query");
        self.send(&out).await;
        self.until_ready().await
    }

    /// Reads to the end of the stream and returns the message of the
    /// FATAL that must be the last thing the server sent.
    pub async fn fatal_at_end(&mut self) -> String {
        let mut last = None;
        while let Some(m) = self.recv().await {
            last = Some(m);
        }
        let fatal = last.expect("a last message");
        assert_eq!(fatal.tag, b'E', "{fatal:?}");
        assert_eq!(fatal.field(b'S').as_deref(), Some("FATAL"));
        fatal.field(b'M').unwrap_or_default()
    }

    /// The bare socket, out of the runtime and without the client's buffer:
    /// a connection kept open that holds no heap memory of the test's.
    pub fn into_std(self) -> std::net::TcpStream {
        self.stream.into_std().expect("into_std")
    }

    /// Whether the server closed the connection (after draining messages).
    pub async fn closed(&mut self) -> bool {
        while self.recv().await.is_some() {}
        true
    }
}

/// A simple Query message for `sql`.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// One frontend message: tag, length, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.put_u8(tag);
    out.put_i32(4 + body.len() as i32);
    out.put_slice(body);
    out.to_vec()
}

/// The error of a reply, if any.
pub fn error_of(msgs: &[Msg]) -> Option<&Msg> {
    msgs.iter().find(|m| m.tag == b'E')
}

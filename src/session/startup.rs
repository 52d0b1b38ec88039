//! The client's side of startup: encryption negotiation, the StartupMessage,
//! and which of its parameters may reach the server.

use crate::error::SessionError;
use crate::io::{FramedStream, ReadError, Stream};
use crate::wire::encode;
use crate::wire::startup::{StartupError, StartupMessage, StartupPacket};
use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// What a new connection turned out to be.
#[derive(Debug)]
pub enum Opening {
    /// A session to authenticate.
    Session {
        /// The client connection, possibly upgraded to TLS.
        conn: FramedStream,
        /// Its StartupMessage.
        startup: StartupMessage,
    },
    /// A cancel request for another session.
    Cancel {
        /// The connection it came on (closed once the cancel is through).
        conn: FramedStream,
        /// Process id the client was given.
        process_id: i32,
        /// Secret key the client was given.
        secret_key: i32,
    },
}

/// Reads packets until a StartupMessage or CancelRequest, answering SSLRequest
/// and GSSENCRequest on the way. On error the FATAL has been sent.
pub async fn open(
    tcp: TcpStream,
    tls: Option<&TlsAcceptor>,
    require_tls: bool,
) -> Result<Opening, SessionError> {
    let mut conn = FramedStream::new(Stream::Plain(tcp));
    // At most one SSLRequest and one GSSENCRequest precede the startup packet.
    for _ in 0..3 {
        let packet = match conn.read_startup().await {
            Ok(p) => p,
            Err(e) if is_framing_error(&e) => {
                // PostgreSQL answers nothing to a packet it cannot frame (a
                // bad length, the connection ending part-way): it logs and
                // closes. Clients rely on that: node-postgres writes
                // Terminate before any startup when a client is ended
                // before it connected, and an answer makes it fail with an
                // error event instead of closing quietly.
                if conn.buf.is_empty() && matches!(e, ReadError::Closed) {
                    tracing::debug!("connection closed before a startup packet");
                } else {
                    tracing::info!("startup packet not framed, closing without a reply: {e}");
                }
                return Err(SessionError::from_client_read(e));
            }
            Err(e) => return fail(conn, SessionError::from_client_read(e)).await,
        };
        match packet {
            StartupPacket::SslRequest if !conn.stream.is_tls() => {
                let Some(acceptor) = tls else {
                    conn.send(b"N").await?;
                    continue;
                };
                if !conn.buf.is_empty() {
                    // Bytes sent before the handshake would be taken as if
                    // they came over TLS (CVE-2021-23214): refuse.
                    let e = protocol("received unencrypted data after SSL request");
                    return fail(conn, e).await;
                }
                conn.send(b"S").await?;
                let Stream::Plain(tcp) = conn.stream else {
                    unreachable!("checked plain above")
                };
                let tls = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|e| protocol(&format!("TLS handshake failed: {e}")))?;
                conn =
                    FramedStream::new(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))));
            }
            StartupPacket::GssEncRequest if !conn.stream.is_tls() => conn.send(b"N").await?,
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                return fail(conn, protocol("encryption requested twice")).await;
            }
            StartupPacket::CancelRequest {
                process_id,
                secret_key,
            } => {
                return Ok(Opening::Cancel {
                    conn,
                    process_id,
                    secret_key,
                })
            }
            StartupPacket::Startup(startup) => {
                if require_tls && !conn.stream.is_tls() {
                    return fail(conn, SessionError::TlsRequired).await;
                }
                return Ok(Opening::Session { conn, startup });
            }
        }
    }
    fail(conn, protocol("too many startup packets")).await
}

/// A startup packet that could not be delimited: a length outside the
/// limits, or the end of the connection (or a socket error) before a whole
/// packet. Other startup errors (protocol version, layout) get a FATAL, as
/// PostgreSQL sends one.
fn is_framing_error(e: &ReadError) -> bool {
    matches!(
        e,
        ReadError::Closed | ReadError::Io(_) | ReadError::Startup(StartupError::InvalidLength(_))
    )
}

async fn fail(mut conn: FramedStream, e: SessionError) -> Result<Opening, SessionError> {
    send_fatal(&mut conn, &e).await;
    Err(e)
}

fn protocol(message: &str) -> SessionError {
    SessionError::Protocol(message.to_owned())
}

/// Sends a FATAL ErrorResponse during startup, best effort.
pub async fn send_fatal(conn: &mut FramedStream, e: &SessionError) {
    let mut out = BytesMut::new();
    encode::error_response(
        &mut out,
        encode::Severity::Fatal,
        e.sqlstate(),
        &e.to_string(),
        None,
    );
    let _ = conn.send(&out).await;
}

/// Protocol options the client asked for that pgward does not support.
pub fn unsupported_protocol_options(startup: &StartupMessage) -> Vec<&str> {
    startup
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.as_str())
        .collect()
}

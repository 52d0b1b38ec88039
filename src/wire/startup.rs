//! Untagged startup-phase packets: SSLRequest, GSSENCRequest, CancelRequest and
//! StartupMessage. Each is an `i32` length (counting itself) and an `i32` code.

use super::frame::{read_cstr, read_i32};
use bytes::{Buf, BytesMut};

/// PostgreSQL's own cap on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET: usize = 10_000;
/// The request code of SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The request code of GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// The request code of CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Protocol 3.0 as a StartupMessage version word.
pub const PROTOCOL_3_0: i32 = 196_608;

/// A decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks whether TLS is available.
    SslRequest,
    /// The client asks whether GSSAPI encryption is available.
    GssEncRequest,
    /// A cancel key for a running query of another connection.
    CancelRequest {
        /// The process id from BackendKeyData.
        process_id: i32,
        /// The secret key from BackendKeyData.
        secret_key: i32,
    },
    /// The start of a session.
    Startup(StartupMessage),
}

/// A StartupMessage: protocol version and parameters, in the client's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    /// Major protocol version (3 is the only one accepted).
    pub major: u16,
    /// Minor protocol version requested.
    pub minor: u16,
    /// Parameters as sent, `user` and `database` included.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of a parameter, if the client sent it.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A malformed startup packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// Length outside 8..=MAX_STARTUP_PACKET.
    #[error("invalid length of startup packet ({0} bytes)")]
    InvalidLength(i32),
    /// Protocol major version other than 3.
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol {
        /// Requested major version.
        major: u16,
        /// Requested minor version.
        minor: u16,
    },
    /// A fixed-size request of the wrong size, or a parameter list that is not
    /// properly terminated.
    #[error("invalid startup packet layout: {0}")]
    Layout(&'static str),
    /// A parameter name or value that is not UTF-8.
    #[error("invalid byte sequence in startup packet parameter")]
    NotUtf8,
}

/// Takes one startup packet off `buf`; `Ok(None)` means more bytes are needed.
///
/// The length is checked before any body byte is examined, so an oversized
/// claim is refused without buffering it.
pub fn next_startup_packet(buf: &mut BytesMut) -> Result<Option<StartupPacket>, StartupError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let declared = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = usize::try_from(declared).map_err(|_| StartupError::InvalidLength(declared))?;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(StartupError::InvalidLength(declared));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    decode(&packet[4..]).map(Some)
}

fn decode(mut body: &[u8]) -> Result<StartupPacket, StartupError> {
    let code = body.get_i32();
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            if !body.is_empty() {
                return Err(StartupError::Layout("encryption request with a body"));
            }
            Ok(if code == SSL_REQUEST_CODE {
                StartupPacket::SslRequest
            } else {
                StartupPacket::GssEncRequest
            })
        }
        CANCEL_REQUEST_CODE => {
            let process_id = read_i32(&mut body).ok_or(StartupError::Layout("short cancel"))?;
            let secret_key = read_i32(&mut body).ok_or(StartupError::Layout("short cancel"))?;
            if !body.is_empty() {
                return Err(StartupError::Layout("cancel request too long"));
            }
            Ok(StartupPacket::CancelRequest {
                process_id,
                secret_key,
            })
        }
        version => {
            // The version word is major in the high 16 bits, minor in the low.
            let major = u16::try_from((version >> 16) & 0xffff).unwrap_or(u16::MAX);
            let minor = u16::try_from(version & 0xffff).unwrap_or(u16::MAX);
            if major != 3 {
                return Err(StartupError::UnsupportedProtocol { major, minor });
            }
            Ok(StartupPacket::Startup(StartupMessage {
                major,
                minor,
                params: decode_params(body)?,
            }))
        }
    }
}

fn decode_params(mut body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        let key = read_cstr(&mut body).ok_or(StartupError::Layout("missing terminator"))?;
        if key.is_empty() {
            if !body.is_empty() {
                return Err(StartupError::Layout("bytes after the terminator"));
            }
            return Ok(params);
        }
        let value = read_cstr(&mut body).ok_or(StartupError::Layout("parameter without value"))?;
        let key = std::str::from_utf8(key).map_err(|_| StartupError::NotUtf8)?;
        let value = std::str::from_utf8(value).map_err(|_| StartupError::NotUtf8)?;
        params.push((key.to_owned(), value.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet(code: i32, rest: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&(i32::try_from(rest.len()).unwrap() + 8).to_be_bytes());
        b.extend_from_slice(&code.to_be_bytes());
        b.extend_from_slice(rest);
        b
    }

    #[test]
    fn decodes_each_kind() {
        assert_eq!(
            next_startup_packet(&mut packet(SSL_REQUEST_CODE, b"")),
            Ok(Some(StartupPacket::SslRequest))
        );
        assert_eq!(
            next_startup_packet(&mut packet(GSSENC_REQUEST_CODE, b"")),
            Ok(Some(StartupPacket::GssEncRequest))
        );
        let cancel = [0, 0, 0, 7, 0, 0, 0, 9];
        assert_eq!(
            next_startup_packet(&mut packet(CANCEL_REQUEST_CODE, &cancel)),
            Ok(Some(StartupPacket::CancelRequest {
                process_id: 7,
                secret_key: 9
            }))
        );
        let got = next_startup_packet(&mut packet(PROTOCOL_3_0 + 2, b"user\0al\0database\0db\0\0"));
        let Ok(Some(StartupPacket::Startup(m))) = got else {
            panic!("{got:?}")
        };
        assert_eq!((m.major, m.minor), (3, 2));
        assert_eq!(m.param("user"), Some("al"));
        assert_eq!(m.param("database"), Some("db"));
    }

    #[test]
    fn refuses_bad_packets() {
        let mut huge = BytesMut::from(&[0x7f, 0, 0, 0][..]);
        assert!(matches!(
            next_startup_packet(&mut huge),
            Err(StartupError::InvalidLength(_))
        ));
        assert!(next_startup_packet(&mut packet(PROTOCOL_3_0, b"user\0al\0")).is_err());
        assert!(next_startup_packet(&mut packet(PROTOCOL_3_0, b"user\0al")).is_err());
        assert!(matches!(
            next_startup_packet(&mut packet(2 << 16, b"\0")),
            Err(StartupError::UnsupportedProtocol { major: 2, .. })
        ));
        assert!(next_startup_packet(&mut packet(CANCEL_REQUEST_CODE, &[0; 4])).is_err());
        assert_eq!(
            next_startup_packet(&mut BytesMut::from(&[0, 0][..])),
            Ok(None)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = next_startup_packet(&mut BytesMut::from(&bytes[..]));
        }
    }
}

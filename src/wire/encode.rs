//! Encoders for the messages pgward itself writes. Each appends one complete
//! message to a buffer, so several can leave in one write.

use super::backend::TransactionStatus;
use bytes::{BufMut, BytesMut};

/// Severity of an ErrorResponse pgward writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends after this message.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
        }
    }
}

/// Appends `tag`, a length placeholder, the body `write` produces, and patches
/// the length in.
fn message(buf: &mut BytesMut, tag: u8, write: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    write(buf);
    // Messages pgward writes are small and bounded by their callers; saturate
    // rather than wrap if one ever is not.
    let len = i32::try_from(buf.len() - at).unwrap_or(i32::MAX);
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &[u8]) {
    // A NUL inside would end the field early and shift every later one.
    buf.extend(s.iter().copied().filter(|b| *b != 0));
    buf.put_u8(0);
}

/// ErrorResponse with severity, SQLSTATE, message and an optional hint.
pub fn error_response(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    message_text: &str,
    hint: Option<&str>,
) {
    error_response_detailed(buf, severity, code, message_text, None, hint);
}

/// ErrorResponse with an optional detail and hint too.
pub fn error_response_detailed(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    message_text: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    error_response_at(buf, severity, code, message_text, detail, hint, None);
}

/// An ErrorResponse with detail, hint and the cursor position ('P': a
/// 1-based character index into the statement text, from which psql draws
/// its `LINE 1: ... ^` marker).
pub fn error_response_at(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    message_text: &str,
    detail: Option<&str>,
    hint: Option<&str>,
    position: Option<u32>,
) {
    message(buf, b'E', |b| {
        for field in [b'S', b'V'] {
            b.put_u8(field);
            cstr(b, severity.as_str().as_bytes());
        }
        b.put_u8(b'C');
        cstr(b, code.as_bytes());
        b.put_u8(b'M');
        cstr(b, message_text.as_bytes());
        for (tag, value) in [(b'D', detail), (b'H', hint)] {
            if let Some(value) = value {
                b.put_u8(tag);
                cstr(b, value.as_bytes());
            }
        }
        if let Some(position) = position {
            b.put_u8(b'P');
            cstr(b, position.to_string().as_bytes());
        }
        b.put_u8(0);
    });
}

/// A NoticeResponse pgward sends itself (severity NOTICE).
pub fn notice(buf: &mut BytesMut, code: &str, message_text: &str) {
    let fields: [(u8, &[u8]); 4] = [
        (b'S', b"NOTICE"),
        (b'V', b"NOTICE"),
        (b'C', code.as_bytes()),
        (b'M', message_text.as_bytes()),
    ];
    notice_like(buf, b'N', &fields);
}

/// An ErrorResponse ('E') or NoticeResponse ('N') from (code, value) fields.
pub fn notice_like(buf: &mut BytesMut, tag: u8, fields: &[(u8, &[u8])]) {
    message(buf, tag, |b| {
        for (code, value) in fields {
            b.put_u8(*code);
            cstr(b, value);
        }
        b.put_u8(0);
    });
}

/// ReadyForQuery with a transaction status.
pub fn ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    message(buf, b'Z', |b| b.put_u8(status.byte()));
}

/// AuthenticationOk.
pub fn authentication_ok(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(0));
}

/// AuthenticationCleartextPassword (a token is asked for this way).
pub fn authentication_cleartext_password(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(3));
}

/// AuthenticationSASL listing the mechanisms offered.
pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    message(buf, b'R', |b| {
        b.put_i32(10);
        for m in mechanisms {
            cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

/// AuthenticationSASLContinue carrying the server-first-message.
pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

/// AuthenticationSASLFinal carrying the server-final-message.
pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    message(buf, b'S', |b| {
        cstr(b, name);
        cstr(b, value);
    });
}

/// BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, process_id: i32, secret_key: i32) {
    message(buf, b'K', |b| {
        b.put_i32(process_id);
        b.put_i32(secret_key);
    });
}

/// NegotiateProtocolVersion: the newest minor version pgward speaks and the
/// protocol options it did not recognise.
pub fn negotiate_protocol_version(buf: &mut BytesMut, newest_minor: i32, unknown: &[&str]) {
    message(buf, b'v', |b| {
        b.put_i32((3 << 16) | newest_minor);
        b.put_i32(i32::try_from(unknown.len()).unwrap_or(i32::MAX));
        for option in unknown {
            cstr(b, option.as_bytes());
        }
    });
}

/// A simple Query message.
pub fn query(buf: &mut BytesMut, sql: &str) {
    message(buf, b'Q', |b| cstr(b, sql.as_bytes()));
}

/// A Parse message for the unnamed statement, with no parameter types.
pub fn parse(buf: &mut BytesMut, sql: &str) {
    parse_named(buf, b"", sql);
}

/// A Parse message for statement `name`, with no parameter types.
pub fn parse_named(buf: &mut BytesMut, name: &[u8], sql: &str) {
    message(buf, b'P', |b| {
        cstr(b, name);
        cstr(b, sql.as_bytes());
        b.put_i16(0);
    });
}

/// Terminate.
pub fn terminate(buf: &mut BytesMut) {
    message(buf, b'X', |_| {});
}

/// RowDescription of text columns (type `text`, no table), for result sets
/// pgward answers itself (the admin console).
pub fn row_description_text(buf: &mut BytesMut, names: &[&str]) {
    message(buf, b'T', |b| {
        b.put_i16(i16::try_from(names.len()).unwrap_or(i16::MAX));
        for name in names {
            cstr(b, name.as_bytes());
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_i32(25); // type oid: text
            b.put_i16(-1); // type size
            b.put_i32(-1); // type modifier
            b.put_i16(0); // text format
        }
    });
}

/// DataRow of text values (`None`: NULL).
pub fn data_row_text(buf: &mut BytesMut, values: &[Option<&str>]) {
    message(buf, b'D', |b| {
        b.put_i16(i16::try_from(values.len()).unwrap_or(i16::MAX));
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                    b.extend_from_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// CommandComplete with `tag`.
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    message(buf, b'C', |b| cstr(b, tag.as_bytes()));
}

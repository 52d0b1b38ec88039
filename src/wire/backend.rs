//! Messages a server sends, and read-only views of the ones the relay inspects.

use super::frame::{read_cstr, read_i16, read_i32, read_u16, FrameRef};

/// The kind of a backend message, from its tag alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// 'R' an Authentication* message.
    Authentication,
    /// 'K' BackendKeyData.
    BackendKeyData,
    /// 'S' ParameterStatus.
    ParameterStatus,
    /// 'Z' ReadyForQuery.
    ReadyForQuery,
    /// 'T' RowDescription.
    RowDescription,
    /// 'D' DataRow.
    DataRow,
    /// 'C' CommandComplete.
    CommandComplete,
    /// 'E' ErrorResponse.
    ErrorResponse,
    /// 'N' NoticeResponse.
    NoticeResponse,
    /// 'A' NotificationResponse.
    Notification,
    /// 'v' NegotiateProtocolVersion.
    NegotiateProtocolVersion,
    /// Everything the relay never needs to open (CopyData, ParseComplete, ...).
    Other(u8),
}

impl BackendKind {
    /// Classifies a backend tag.
    pub fn of(tag: u8) -> Self {
        match tag {
            b'R' => Self::Authentication,
            b'K' => Self::BackendKeyData,
            b'S' => Self::ParameterStatus,
            b'Z' => Self::ReadyForQuery,
            b'T' => Self::RowDescription,
            b'D' => Self::DataRow,
            b'C' => Self::CommandComplete,
            b'E' => Self::ErrorResponse,
            b'N' => Self::NoticeResponse,
            b'A' => Self::Notification,
            b'v' => Self::NegotiateProtocolVersion,
            other => Self::Other(other),
        }
    }
}

/// A backend message body that does not match its type's layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0} message from the server")]
pub struct MalformedBackend(pub &'static str);

/// Transaction status reported by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// 'I' not in a transaction block.
    Idle,
    /// 'T' in a transaction block.
    InTransaction,
    /// 'E' in a failed transaction block.
    Failed,
}

impl TransactionStatus {
    /// The status byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Self::Idle => b'I',
            Self::InTransaction => b'T',
            Self::Failed => b'E',
        }
    }
}

/// Reads the transaction status of a ReadyForQuery message.
pub fn ready_status(frame: FrameRef<'_>) -> Result<TransactionStatus, MalformedBackend> {
    match frame.body() {
        b"I" => Ok(TransactionStatus::Idle),
        b"T" => Ok(TransactionStatus::InTransaction),
        b"E" => Ok(TransactionStatus::Failed),
        _ => Err(MalformedBackend("ReadyForQuery")),
    }
}

/// Reads a ParameterStatus message's name and value.
pub fn parameter_status(frame: FrameRef<'_>) -> Result<(&[u8], &[u8]), MalformedBackend> {
    let mut body = frame.body();
    let name = read_cstr(&mut body).ok_or(MalformedBackend("ParameterStatus"))?;
    let value = read_cstr(&mut body).ok_or(MalformedBackend("ParameterStatus"))?;
    if !body.is_empty() {
        return Err(MalformedBackend("ParameterStatus"));
    }
    Ok((name, value))
}

/// Reads BackendKeyData: process id and secret key.
pub fn backend_key_data(frame: FrameRef<'_>) -> Result<(i32, i32), MalformedBackend> {
    let mut body = frame.body();
    let pid = read_i32(&mut body).ok_or(MalformedBackend("BackendKeyData"))?;
    let key = read_i32(&mut body).ok_or(MalformedBackend("BackendKeyData"))?;
    if !body.is_empty() {
        return Err(MalformedBackend("BackendKeyData"));
    }
    Ok((pid, key))
}

/// Reads NotificationResponse: the notifying backend's process id, the
/// channel and the payload.
pub fn notification(frame: FrameRef<'_>) -> Result<(i32, &[u8], &[u8]), MalformedBackend> {
    let mut body = frame.body();
    let bad = MalformedBackend("NotificationResponse");
    let pid = read_i32(&mut body).ok_or(bad.clone())?;
    let channel = read_cstr(&mut body).ok_or(bad.clone())?;
    let payload = read_cstr(&mut body).ok_or(bad.clone())?;
    if !body.is_empty() {
        return Err(bad);
    }
    Ok((pid, channel, payload))
}

/// The fields of an ErrorResponse or NoticeResponse, as (code, value) pairs.
pub fn notice_fields(frame: FrameRef<'_>) -> Result<Vec<(u8, &[u8])>, MalformedBackend> {
    let mut body = frame.body();
    let mut fields = Vec::new();
    loop {
        match body.split_first() {
            Some((0, [])) => return Ok(fields),
            Some((&code, rest)) if code != 0 => {
                body = rest;
                let value = read_cstr(&mut body).ok_or(MalformedBackend("ErrorResponse"))?;
                fields.push((code, value));
            }
            _ => return Err(MalformedBackend("ErrorResponse")),
        }
    }
}

/// One column of a RowDescription, as far as masking needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    /// OID of the table the column comes from, or 0.
    pub table_oid: u32,
    /// Its attribute number in that table, or 0.
    pub attnum: i16,
    /// The column's type.
    pub type_oid: u32,
    /// 0 text, 1 binary (0 in a statement's description: not yet known).
    pub format: i16,
}

/// Reads every column of a RowDescription.
pub fn row_description(frame: FrameRef<'_>) -> Result<Vec<FieldInfo>, MalformedBackend> {
    const WHAT: MalformedBackend = MalformedBackend("RowDescription");
    let mut body = frame.body();
    let count = usize::from(read_u16(&mut body).ok_or(WHAT)?);
    // Each column takes at least 19 bytes: refuse a count the body cannot
    // hold before allocating for it.
    if body.len() < count * 19 {
        return Err(WHAT);
    }
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        read_cstr(&mut body).ok_or(WHAT)?;
        let table_oid = read_i32(&mut body).ok_or(WHAT)? as u32;
        let attnum = read_i16(&mut body).ok_or(WHAT)?;
        let type_oid = read_i32(&mut body).ok_or(WHAT)? as u32;
        read_i16(&mut body).ok_or(WHAT)?;
        read_i32(&mut body).ok_or(WHAT)?;
        let format = read_i16(&mut body).ok_or(WHAT)?;
        fields.push(FieldInfo {
            table_oid,
            attnum,
            type_oid,
            format,
        });
    }
    if !body.is_empty() {
        return Err(WHAT);
    }
    Ok(fields)
}

/// The command tag of a CommandComplete (e.g. `SELECT 3`).
pub fn command_tag(frame: FrameRef<'_>) -> Result<&[u8], MalformedBackend> {
    let mut body = frame.body();
    let tag = read_cstr(&mut body).ok_or(MalformedBackend("CommandComplete"))?;
    if !body.is_empty() {
        return Err(MalformedBackend("CommandComplete"));
    }
    Ok(tag)
}

/// The row count at the end of a command tag (`INSERT 0 5` -> 5), if any.
pub fn tag_rows(tag: &[u8]) -> Option<u64> {
    let last = tag.rsplit(|b| *b == b' ').next()?;
    std::str::from_utf8(last).ok()?.parse().ok()
}

/// What the relay needs of an ErrorResponse: whether it is FATAL (or
/// PANIC), and its SQLSTATE. `None` when it lacks a well-formed SQLSTATE or
/// a message (the caller replaces such an error).
pub fn error_summary(frame: FrameRef<'_>) -> Option<ErrorSummary> {
    let fields = notice_fields(frame).ok()?;
    let mut code = None;
    let mut message = false;
    let mut fatal = false;
    for (c, v) in fields {
        match c {
            b'C' if v.len() == 5 && v.iter().all(u8::is_ascii_alphanumeric) => {
                let mut sqlstate = [0u8; 5];
                sqlstate.copy_from_slice(v);
                code = Some(sqlstate);
            }
            b'M' => message = true,
            // 'V' is the untranslated severity (9.6+); 'S' may be localised.
            b'V' | b'S' => fatal |= v == b"FATAL" || v == b"PANIC",
            _ => {}
        }
    }
    Some(ErrorSummary {
        sqlstate: code?,
        fatal,
    })
    .filter(|_| message)
}

/// See [`error_summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorSummary {
    /// The SQLSTATE.
    pub sqlstate: [u8; 5],
    /// FATAL or PANIC: the server ends the session after it.
    pub fatal: bool,
}

/// The value of one field of an ErrorResponse or NoticeResponse.
pub fn notice_field(frame: FrameRef<'_>, code: u8) -> Option<&[u8]> {
    notice_fields(frame)
        .ok()?
        .into_iter()
        .find(|(c, _)| *c == code)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode;
    use crate::wire::Framer;
    use bytes::BytesMut;

    fn one(mut buf: BytesMut) -> crate::wire::Frame {
        Framer::new(1 << 20).next_frame(&mut buf).unwrap().unwrap()
    }

    #[test]
    fn notifications_read_and_truncated_ones_are_refused() {
        let mut body = 42i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"chan\0ticket:ab\0");
        let mut buf = BytesMut::from(&b"A"[..]);
        buf.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        buf.extend_from_slice(&body);
        let f = one(buf);
        assert_eq!(
            notification(f.view()),
            Ok((42, &b"chan"[..], &b"ticket:ab"[..]))
        );
        for cut in 0..body.len() {
            let mut buf = BytesMut::from(&b"A"[..]);
            buf.extend_from_slice(&(cut as i32 + 4).to_be_bytes());
            buf.extend_from_slice(&body[..cut]);
            assert!(notification(one(buf).view()).is_err(), "{cut}");
        }
    }

    #[test]
    fn error_fields_round_trip() {
        let mut buf = BytesMut::new();
        encode::error_response(&mut buf, encode::Severity::Error, "42501", "nope", None);
        let f = one(buf);
        assert_eq!(notice_field(f.view(), b'C'), Some(&b"42501"[..]));
        assert_eq!(notice_field(f.view(), b'M'), Some(&b"nope"[..]));
        assert_eq!(notice_field(f.view(), b'S'), Some(&b"ERROR"[..]));
        let summary = error_summary(f.view()).unwrap();
        assert_eq!((&summary.sqlstate, summary.fatal), (b"42501", false));
    }

    #[test]
    fn ready_status_reads_the_byte() {
        let mut buf = BytesMut::new();
        encode::ready_for_query(&mut buf, TransactionStatus::Failed);
        assert_eq!(ready_status(one(buf).view()), Ok(TransactionStatus::Failed));
    }

    #[test]
    fn errors_without_code_or_message_are_not_summarised() {
        let mut buf = BytesMut::new();
        encode::notice_like(&mut buf, b'E', &[(b'S', b"FATAL"), (b'M', b"x")]);
        assert_eq!(error_summary(one(buf).view()), None);
        let mut buf = BytesMut::new();
        encode::notice_like(
            &mut buf,
            b'E',
            &[(b'V', b"FATAL"), (b'C', b"57P01"), (b'M', b"bye")],
        );
        assert!(error_summary(one(buf).view()).unwrap().fatal);
        assert_eq!(tag_rows(b"INSERT 0 5"), Some(5));
        assert_eq!(tag_rows(b"BEGIN"), None);
    }
}

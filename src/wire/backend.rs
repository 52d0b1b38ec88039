//! Messages a server sends, and read-only views of the ones the relay inspects.

use super::frame::{read_cstr, read_i32, Frame};

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
pub fn ready_status(frame: &Frame) -> Result<TransactionStatus, MalformedBackend> {
    match frame.body() {
        b"I" => Ok(TransactionStatus::Idle),
        b"T" => Ok(TransactionStatus::InTransaction),
        b"E" => Ok(TransactionStatus::Failed),
        _ => Err(MalformedBackend("ReadyForQuery")),
    }
}

/// Reads a ParameterStatus message's name and value.
pub fn parameter_status(frame: &Frame) -> Result<(&[u8], &[u8]), MalformedBackend> {
    let mut body = frame.body();
    let name = read_cstr(&mut body).ok_or(MalformedBackend("ParameterStatus"))?;
    let value = read_cstr(&mut body).ok_or(MalformedBackend("ParameterStatus"))?;
    Ok((name, value))
}

/// Reads BackendKeyData: process id and secret key.
pub fn backend_key_data(frame: &Frame) -> Result<(i32, i32), MalformedBackend> {
    let mut body = frame.body();
    let pid = read_i32(&mut body).ok_or(MalformedBackend("BackendKeyData"))?;
    let key = read_i32(&mut body).ok_or(MalformedBackend("BackendKeyData"))?;
    Ok((pid, key))
}

/// The fields of an ErrorResponse or NoticeResponse, as (code, value) pairs.
pub fn notice_fields(frame: &Frame) -> Result<Vec<(u8, &[u8])>, MalformedBackend> {
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
pub fn row_description(frame: &Frame) -> Result<Vec<FieldInfo>, MalformedBackend> {
    const WHAT: MalformedBackend = MalformedBackend("RowDescription");
    let mut body = frame.body();
    let count = super::frame::read_i16(&mut body).ok_or(WHAT)?;
    let mut fields = Vec::with_capacity(usize::try_from(count).map_err(|_| WHAT)?);
    for _ in 0..count {
        read_cstr(&mut body).ok_or(WHAT)?;
        let table_oid = read_i32(&mut body).ok_or(WHAT)? as u32;
        let attnum = super::frame::read_i16(&mut body).ok_or(WHAT)?;
        let type_oid = read_i32(&mut body).ok_or(WHAT)? as u32;
        super::frame::read_i16(&mut body).ok_or(WHAT)?;
        read_i32(&mut body).ok_or(WHAT)?;
        let format = super::frame::read_i16(&mut body).ok_or(WHAT)?;
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

/// The value of one field of an ErrorResponse or NoticeResponse.
pub fn notice_field(frame: &Frame, code: u8) -> Option<&[u8]> {
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

    fn one(mut buf: BytesMut) -> Frame {
        Framer::new(1 << 20).next_frame(&mut buf).unwrap().unwrap()
    }

    #[test]
    fn error_fields_round_trip() {
        let mut buf = BytesMut::new();
        encode::error_response(&mut buf, encode::Severity::Error, "42501", "nope", None);
        let f = one(buf);
        assert_eq!(notice_field(&f, b'C'), Some(&b"42501"[..]));
        assert_eq!(notice_field(&f, b'M'), Some(&b"nope"[..]));
        assert_eq!(notice_field(&f, b'S'), Some(&b"ERROR"[..]));
    }

    #[test]
    fn ready_status_reads_the_byte() {
        let mut buf = BytesMut::new();
        encode::ready_for_query(&mut buf, TransactionStatus::Failed);
        assert_eq!(ready_status(&one(buf)), Ok(TransactionStatus::Failed));
    }
}

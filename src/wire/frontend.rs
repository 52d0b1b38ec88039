//! Messages a client sends after startup, and read-only views of the few a
//! relay phase needs to look inside.

use super::frame::{read_cstr, read_i16, read_i32, read_u16, Frame, FrameRef};

/// The kind of a frontend message, from its tag alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendKind {
    /// 'Q' simple query.
    Query,
    /// 'P' extended-protocol Parse.
    Parse,
    /// 'B' Bind.
    Bind,
    /// 'D' Describe.
    Describe,
    /// 'E' Execute.
    Execute,
    /// 'C' Close.
    Close,
    /// 'H' Flush.
    Flush,
    /// 'S' Sync.
    Sync,
    /// 'd' CopyData.
    CopyData,
    /// 'c' CopyDone.
    CopyDone,
    /// 'f' CopyFail.
    CopyFail,
    /// 'F' FunctionCall (fastpath), which pgward refuses.
    FunctionCall,
    /// 'X' Terminate.
    Terminate,
    /// 'p' password / SASL response (only valid during authentication).
    Password,
    /// Any other tag.
    Unknown(u8),
}

impl FrontendKind {
    /// Classifies a frontend tag.
    pub fn of(tag: u8) -> Self {
        match tag {
            b'Q' => Self::Query,
            b'P' => Self::Parse,
            b'B' => Self::Bind,
            b'D' => Self::Describe,
            b'E' => Self::Execute,
            b'C' => Self::Close,
            b'H' => Self::Flush,
            b'S' => Self::Sync,
            b'd' => Self::CopyData,
            b'c' => Self::CopyDone,
            b'f' => Self::CopyFail,
            b'F' => Self::FunctionCall,
            b'X' => Self::Terminate,
            b'p' => Self::Password,
            other => Self::Unknown(other),
        }
    }
}

/// A frontend message body that does not match its type's layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0} message")]
pub struct MalformedFrontend(pub &'static str);

/// The SQL text of a Query message, without its terminating NUL.
pub fn query_text(frame: FrameRef<'_>) -> Result<&[u8], MalformedFrontend> {
    let mut body = frame.body();
    let text = read_cstr(&mut body).ok_or(MalformedFrontend("Query"))?;
    if !body.is_empty() {
        return Err(MalformedFrontend("Query"));
    }
    Ok(text)
}

/// The parts of a Parse message that phases look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseView<'a> {
    /// Prepared statement name; empty for the unnamed statement.
    pub statement: &'a [u8],
    /// The SQL text.
    pub query: &'a [u8],
    /// Parameter type OIDs as sent (raw big-endian, 4 bytes each).
    pub param_types: &'a [u8],
}

/// Views a Parse message: name, text, and parameter types, checked to fill
/// the frame exactly (PostgreSQL rejects trailing bytes too).
pub fn parse_view(frame: FrameRef<'_>) -> Result<ParseView<'_>, MalformedFrontend> {
    const WHAT: MalformedFrontend = MalformedFrontend("Parse");
    let mut body = frame.body();
    let statement = read_cstr(&mut body).ok_or(WHAT)?;
    let query = read_cstr(&mut body).ok_or(WHAT)?;
    let n = usize::from(read_u16(&mut body).ok_or(WHAT)?);
    if body.len() != n * 4 {
        return Err(WHAT);
    }
    Ok(ParseView {
        statement,
        query,
        param_types: body,
    })
}

/// The parts of a Bind message that phases and the tracker look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindView<'a> {
    /// Portal name; empty for the unnamed portal.
    pub portal: &'a [u8],
    /// Prepared statement name.
    pub statement: &'a [u8],
    /// Parameter format codes (none: all text; one: all alike).
    pub param_formats: Vec<i16>,
    /// Parameter values in order; `None` is SQL NULL.
    pub params: Vec<Option<&'a [u8]>>,
    /// Result-column format codes (none: all text; one: all alike).
    pub result_formats: Vec<i16>,
}

/// Views a Bind message. Counts are read unsigned, as PostgreSQL reads them
/// (`pq_getmsgint(.., 2)`); a value length below -1 and trailing bytes are
/// malformed, as on the server.
pub fn bind_view(frame: FrameRef<'_>) -> Result<BindView<'_>, MalformedFrontend> {
    const WHAT: MalformedFrontend = MalformedFrontend("Bind");
    let mut body = frame.body();
    let portal = read_cstr(&mut body).ok_or(WHAT)?;
    let statement = read_cstr(&mut body).ok_or(WHAT)?;
    let param_formats = read_formats(&mut body).ok_or(WHAT)?;
    let n = usize::from(read_u16(&mut body).ok_or(WHAT)?);
    // Each value takes at least its four length bytes: a count the body
    // cannot hold is refused before anything is allocated for it.
    if body.len() < n * 4 {
        return Err(WHAT);
    }
    let mut params = Vec::with_capacity(n);
    for _ in 0..n {
        let len = read_i32(&mut body).ok_or(WHAT)?;
        if len == -1 {
            params.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| WHAT)?;
        let value = body.get(..len).ok_or(WHAT)?;
        body = &body[len..];
        params.push(Some(value));
    }
    let result_formats = read_formats(&mut body).ok_or(WHAT)?;
    if !body.is_empty() {
        return Err(WHAT);
    }
    Ok(BindView {
        portal,
        statement,
        param_formats,
        params,
        result_formats,
    })
}

/// A u16 count followed by that many i16 format codes.
fn read_formats(body: &mut &[u8]) -> Option<Vec<i16>> {
    let n = usize::from(read_u16(body)?);
    if body.len() < n * 2 {
        return None;
    }
    let mut formats = Vec::with_capacity(n);
    for _ in 0..n {
        formats.push(read_i16(body)?);
    }
    Some(formats)
}

/// What a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `S`: a prepared statement.
    Statement(&'a [u8]),
    /// `P`: a portal.
    Portal(&'a [u8]),
}

/// A Describe or Close: `S` (statement) or `P` (portal) and the name; any
/// other kind byte, or trailing bytes, is malformed.
pub fn target_view(frame: FrameRef<'_>) -> Result<Target<'_>, MalformedFrontend> {
    let what = MalformedFrontend(if frame.tag() == b'C' {
        "Close"
    } else {
        "Describe"
    });
    let (&kind, mut rest) = frame.body().split_first().ok_or(what.clone())?;
    let name = read_cstr(&mut rest).ok_or(what.clone())?;
    if !rest.is_empty() {
        return Err(what);
    }
    match kind {
        b'S' => Ok(Target::Statement(name)),
        b'P' => Ok(Target::Portal(name)),
        _ => Err(what),
    }
}

/// An Execute's portal name and row limit (0: all rows).
pub fn execute_view(frame: FrameRef<'_>) -> Result<(&[u8], i32), MalformedFrontend> {
    const WHAT: MalformedFrontend = MalformedFrontend("Execute");
    let mut body = frame.body();
    let portal = read_cstr(&mut body).ok_or(WHAT)?;
    let limit = read_i32(&mut body).ok_or(WHAT)?;
    if !body.is_empty() {
        return Err(WHAT);
    }
    Ok((portal, limit))
}

/// A SASLInitialResponse: mechanism name and the client-first-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitial<'a> {
    /// The chosen mechanism, e.g. `SCRAM-SHA-256`.
    pub mechanism: &'a [u8],
    /// The client-first-message; absent when the length is -1.
    pub data: Option<&'a [u8]>,
}

/// Views a SASLInitialResponse ('p' during SASL authentication).
pub fn sasl_initial(frame: &Frame) -> Result<SaslInitial<'_>, MalformedFrontend> {
    const WHAT: &str = "SASLInitialResponse";
    let mut body = frame.body();
    let mechanism = read_cstr(&mut body).ok_or(MalformedFrontend(WHAT))?;
    let len = read_i32(&mut body).ok_or(MalformedFrontend(WHAT))?;
    let data = match usize::try_from(len) {
        Ok(n) if n == body.len() => Some(body),
        Err(_) if len == -1 && body.is_empty() => None,
        _ => return Err(MalformedFrontend(WHAT)),
    };
    Ok(SaslInitial { mechanism, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Framer;
    use bytes::BytesMut;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[tag]);
        b.extend_from_slice(&(i32::try_from(body.len()).unwrap() + 4).to_be_bytes());
        b.extend_from_slice(body);
        Framer::new(1 << 20).next_frame(&mut b).unwrap().unwrap()
    }

    #[test]
    fn views_stay_inside_their_frame() {
        assert_eq!(
            query_text(frame(b'Q', b"select 1\0").view()).unwrap(),
            b"select 1"
        );
        assert!(query_text(frame(b'Q', b"select 1").view()).is_err());
        assert!(query_text(frame(b'Q', b"a\0b\0").view()).is_err());
        let p = frame(b'P', b"s1\0select $1\0\0\0");
        let v = parse_view(p.view()).unwrap();
        assert_eq!((v.statement, v.query), (&b"s1"[..], &b"select $1"[..]));
        assert!(parse_view(frame(b'P', b"s1\0select").view()).is_err());
        assert!(parse_view(frame(b'P', b"s1\0select\0\0\x01").view()).is_err());
    }

    #[test]
    fn sasl_initial_checks_its_length() {
        let ok = frame(b'p', b"SCRAM-SHA-256\0\0\0\0\x03abc");
        let v = sasl_initial(&ok).unwrap();
        assert_eq!(v.data, Some(&b"abc"[..]));
        assert!(sasl_initial(&frame(b'p', b"SCRAM-SHA-256\0\0\0\0\x09abc")).is_err());
        let none = frame(b'p', b"X\0\xff\xff\xff\xff");
        assert_eq!(sasl_initial(&none).unwrap().data, None);
    }

    #[test]
    fn bind_counts_are_unsigned_like_postgresqls() {
        // 40,000 result formats: negative as an i16, valid for the server.
        let mut body = b"p\0s\0\0\0\0\x01\xff\xff\xff\xff".to_vec();
        body.extend_from_slice(&40_000u16.to_be_bytes());
        for _ in 0..40_000 {
            body.extend_from_slice(&1i16.to_be_bytes());
        }
        let f = frame(b'B', &body);
        let v = bind_view(f.view()).unwrap();
        assert_eq!((v.portal, v.statement), (&b"p"[..], &b"s"[..]));
        assert_eq!(v.params, vec![None]);
        assert_eq!(v.result_formats.len(), 40_000);
        // A length below -1, a count the body cannot hold, trailing bytes.
        assert!(bind_view(frame(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0").view()).is_err());
        assert!(bind_view(frame(b'B', b"\0\0\0\0\xff\xff").view()).is_err());
        assert!(bind_view(frame(b'B', b"\0\0\0\0\0\0\0\0\0").view()).is_err());
        let ok = frame(b'B', b"\0s\0\0\x01\0\x01\0\x01\0\0\0\x02ab\0\0");
        let v = bind_view(ok.view()).unwrap();
        assert_eq!(
            (v.param_formats, v.params),
            (vec![1], vec![Some(&b"ab"[..])])
        );
    }

    #[test]
    fn targets_and_execute_are_exact() {
        let d = frame(b'D', b"Sname\0");
        assert_eq!(target_view(d.view()), Ok(Target::Statement(b"name")));
        assert!(target_view(frame(b'D', b"Xname\0").view()).is_err());
        assert!(target_view(frame(b'C', b"Pname\0x").view()).is_err());
        let e = frame(b'E', b"p\0\0\0\0\x05");
        assert_eq!(execute_view(e.view()), Ok((&b"p"[..], 5)));
        assert!(execute_view(frame(b'E', b"p\0").view()).is_err());
    }

    #[test]
    fn tags_classify() {
        assert_eq!(FrontendKind::of(b'F'), FrontendKind::FunctionCall);
        assert_eq!(FrontendKind::of(b'?'), FrontendKind::Unknown(b'?'));
    }
}

//! Messages a client sends after startup, and read-only views of the few a
//! relay phase needs to look inside.

use super::frame::{read_cstr, Frame};

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
pub fn query_text(frame: &Frame) -> Result<&[u8], MalformedFrontend> {
    let mut body = frame.body();
    let text = read_cstr(&mut body).ok_or(MalformedFrontend("Query"))?;
    if !body.is_empty() {
        return Err(MalformedFrontend("Query"));
    }
    Ok(text)
}

/// The parts of a Parse message that statement rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseView<'a> {
    /// Prepared statement name; empty for the unnamed statement.
    pub statement: &'a [u8],
    /// The SQL text.
    pub query: &'a [u8],
}

/// Views a Parse message's statement name and SQL text.
pub fn parse_view(frame: &Frame) -> Result<ParseView<'_>, MalformedFrontend> {
    let mut body = frame.body();
    let statement = read_cstr(&mut body).ok_or(MalformedFrontend("Parse"))?;
    let query = read_cstr(&mut body).ok_or(MalformedFrontend("Parse"))?;
    Ok(ParseView { statement, query })
}

/// The parts of a Bind message that masking looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindView<'a> {
    /// Portal name; empty for the unnamed portal.
    pub portal: &'a [u8],
    /// Prepared statement name.
    pub statement: &'a [u8],
    /// Result-column format codes (none: all text; one: all alike).
    pub result_formats: Vec<i16>,
}

/// Views a Bind message, skipping its parameter values.
pub fn bind_view(frame: &Frame) -> Result<BindView<'_>, MalformedFrontend> {
    const WHAT: MalformedFrontend = MalformedFrontend("Bind");
    let mut body = frame.body();
    let portal = read_cstr(&mut body).ok_or(WHAT)?;
    let statement = read_cstr(&mut body).ok_or(WHAT)?;
    let n = super::frame::read_i16(&mut body).ok_or(WHAT)?;
    for _ in 0..n {
        super::frame::read_i16(&mut body).ok_or(WHAT)?;
    }
    let n = super::frame::read_i16(&mut body).ok_or(WHAT)?;
    for _ in 0..n {
        let len = super::frame::read_i32(&mut body).ok_or(WHAT)?;
        let len = usize::try_from(len).unwrap_or(0);
        body = body.get(len..).ok_or(WHAT)?;
    }
    let n = super::frame::read_i16(&mut body).ok_or(WHAT)?;
    let mut result_formats = Vec::with_capacity(usize::try_from(n).map_err(|_| WHAT)?);
    for _ in 0..n {
        result_formats.push(super::frame::read_i16(&mut body).ok_or(WHAT)?);
    }
    Ok(BindView {
        portal,
        statement,
        result_formats,
    })
}

/// A Describe or Close: `S` (statement) or `P` (portal), and the name.
pub fn target_view(frame: &Frame) -> Result<(u8, &[u8]), MalformedFrontend> {
    let (&kind, mut rest) = frame
        .body()
        .split_first()
        .ok_or(MalformedFrontend("Describe"))?;
    let name = read_cstr(&mut rest).ok_or(MalformedFrontend("Describe"))?;
    Ok((kind, name))
}

/// An Execute's portal name.
pub fn execute_portal(frame: &Frame) -> Result<&[u8], MalformedFrontend> {
    let mut body = frame.body();
    read_cstr(&mut body).ok_or(MalformedFrontend("Execute"))
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
    let len = super::frame::read_i32(&mut body).ok_or(MalformedFrontend(WHAT))?;
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
            query_text(&frame(b'Q', b"select 1\0")).unwrap(),
            b"select 1"
        );
        assert!(query_text(&frame(b'Q', b"select 1")).is_err());
        assert!(query_text(&frame(b'Q', b"a\0b\0")).is_err());
        let p = frame(b'P', b"s1\0select $1\0\0\0");
        let v = parse_view(&p).unwrap();
        assert_eq!((v.statement, v.query), (&b"s1"[..], &b"select $1"[..]));
        assert!(parse_view(&frame(b'P', b"s1\0select")).is_err());
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
    fn tags_classify() {
        assert_eq!(FrontendKind::of(b'F'), FrontendKind::FunctionCall);
        assert_eq!(FrontendKind::of(b'?'), FrontendKind::Unknown(b'?'));
    }
}

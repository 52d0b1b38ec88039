//! Server ErrorResponses that a client can rely on.
//!
//! A client library keys its behaviour on the SQLSTATE (retry on 40001,
//! reconnect on 57P01, ...) and shows the message to a person. A server that
//! sends an ErrorResponse without them (a broken or hostile server, or bytes
//! that are not PostgreSQL's at all) would hand the client an empty code and
//! an empty message; pgward replaces such an error with a well-formed one,
//! SQLSTATE 08P01 "malformed error from the server", keeping the severity
//! when it can be read (FATAL when it cannot: the server is not behaving).
//!
//! Pure functions over the message body, so the login, the catalog reader
//! and the relay apply the same rule.

use crate::wire::encode::{self, Severity};
use bytes::BytesMut;

/// The SQLSTATE of the replacement.
pub const MALFORMED_CODE: &str = "08P01";
/// The message of the replacement.
pub const MALFORMED_MESSAGE: &str = "malformed error from the server";

/// Why an ErrorResponse body is not well formed; `None` from
/// [`check_error_response`] when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedError {
    /// The severity to give the replacement.
    pub severity: Severity,
    /// What is wrong, for pgward's log.
    pub reason: &'static str,
}

/// Checks an ErrorResponse body (the bytes after the length): fields are
/// NUL-terminated and the list ends with one NUL and nothing after it, a
/// severity (`S`) is present, the SQLSTATE (`C`) is five digits or
/// upper-case letters, and the message (`M`) is not empty.
pub fn check_error_response(body: &[u8]) -> Option<MalformedError> {
    let mut severity: Option<&[u8]> = None;
    let mut unlocalized: Option<&[u8]> = None;
    let (mut code, mut message) = (None, None);
    let mut rest = body;
    let fail = |severity: Option<&[u8]>, reason| {
        Some(MalformedError {
            severity: severity.map_or(Severity::Fatal, severity_of),
            reason,
        })
    };
    loop {
        match rest.split_first() {
            Some((0, [])) => break,
            Some((0, _)) => return fail(unlocalized.or(severity), "bytes after the end of fields"),
            Some((&field, tail)) => {
                let Some(end) = tail.iter().position(|&b| b == 0) else {
                    return fail(unlocalized.or(severity), "an unterminated field");
                };
                let value = &tail[..end];
                match field {
                    b'S' => severity = Some(value),
                    b'V' => unlocalized = Some(value),
                    b'C' => code = Some(value),
                    b'M' => message = Some(value),
                    _ => {}
                }
                rest = &tail[end + 1..];
            }
            None => return fail(unlocalized.or(severity), "no end of fields"),
        }
    }
    let severity = unlocalized.or(severity);
    if severity.is_none_or(<[u8]>::is_empty) {
        return fail(None, "no severity");
    }
    let code_ok = code.is_some_and(|c| {
        c.len() == 5
            && c.iter()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    });
    if !code_ok {
        return fail(severity, "no valid SQLSTATE");
    }
    if message.is_none_or(<[u8]>::is_empty) {
        return fail(severity, "no message");
    }
    None
}

/// ERROR stays ERROR; FATAL, PANIC and anything unreadable become FATAL.
fn severity_of(text: &[u8]) -> Severity {
    match text {
        b"ERROR" => Severity::Error,
        _ => Severity::Fatal,
    }
}

/// Appends the replacement ErrorResponse for `malformed` to `out`.
pub fn write_replacement(out: &mut BytesMut, malformed: MalformedError) {
    encode::error_response(
        out,
        malformed.severity,
        MALFORMED_CODE,
        MALFORMED_MESSAGE,
        None,
    );
}

/// The error to forward for this ErrorResponse: `raw` (the whole frame)
/// unchanged when its body is well formed, else the replacement. Returns the
/// problem, if any, for the caller to log.
pub fn sanitize_error_response(
    raw: &[u8],
    body: &[u8],
    out: &mut BytesMut,
) -> Option<MalformedError> {
    let problem = check_error_response(body);
    match problem {
        None => out.extend_from_slice(raw),
        Some(p) => write_replacement(out, p),
    }
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (c, v) in fields {
            b.push(*c);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn a_postgres_error_is_well_formed() {
        let b = body(&[
            (b'S', "FEHLER"),
            (b'V', "ERROR"),
            (b'C', "42P01"),
            (b'M', "relation \"x\" does not exist"),
            (b'P', "15"),
        ]);
        assert_eq!(check_error_response(&b), None);
        let mut out = BytesMut::new();
        let raw = [&[b'E'][..], &(4 + b.len() as i32).to_be_bytes(), &b].concat();
        assert_eq!(sanitize_error_response(&raw, &b, &mut out), None);
        assert_eq!(&out[..], &raw[..], "forwarded untouched");
    }

    #[test]
    fn broken_errors_are_named_and_replaced() {
        let cases: &[(Vec<u8>, Severity, &str)] = &[
            (
                body(&[(b'S', "FATAL")]),
                Severity::Fatal,
                "no valid SQLSTATE",
            ),
            (
                body(&[(b'S', "ERROR"), (b'C', ""), (b'M', "m")]),
                Severity::Error,
                "no valid SQLSTATE",
            ),
            (
                body(&[(b'S', "ERROR"), (b'C', "4250"), (b'M', "m")]),
                Severity::Error,
                "no valid SQLSTATE",
            ),
            (
                body(&[(b'S', "ERROR"), (b'C', "42501"), (b'M', "")]),
                Severity::Error,
                "no message",
            ),
            (
                body(&[(b'C', "42501"), (b'M', "m")]),
                Severity::Fatal,
                "no severity",
            ),
            (
                body(&[(b'S', "PANIC"), (b'C', "xx000"), (b'M', "m")]),
                Severity::Fatal,
                "no valid SQLSTATE",
            ),
            (b"SERROR".to_vec(), Severity::Fatal, "an unterminated field"),
            (b"SERROR\0".to_vec(), Severity::Error, "no end of fields"),
            (Vec::new(), Severity::Fatal, "no end of fields"),
            (
                [
                    body(&[(b'S', "ERROR"), (b'C', "42501"), (b'M', "m")]),
                    b"x".to_vec(),
                ]
                .concat(),
                Severity::Error,
                "bytes after the end of fields",
            ),
        ];
        for (b, severity, reason) in cases {
            let got = check_error_response(b);
            assert_eq!(
                got,
                Some(MalformedError {
                    severity: *severity,
                    reason
                }),
                "{b:?}"
            );
            let mut out = BytesMut::new();
            sanitize_error_response(b"ignored", b, &mut out);
            let replacement = out.to_vec();
            assert_eq!(replacement[0], b'E');
            assert_eq!(check_error_response(&replacement[5..]), None);
            let text = String::from_utf8_lossy(&replacement);
            assert!(
                text.contains("08P01") && text.contains(MALFORMED_MESSAGE),
                "{text}"
            );
        }
    }
}

//! An HTTP/1.1 response from bytes read so far: complete (status and
//! body), not yet complete, or malformed. Pure, so it is tested (and could
//! be fuzzed) without sockets; every length is checked against what was
//! read before it is used.

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header, when sent.
    pub content_type: Option<String>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (lossy: it is shown, never interpreted).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the bytes so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The whole response.
    Complete(Response),
    /// More bytes are needed.
    Incomplete,
}

/// Parses `bytes`; `ended` says the connection has closed (cleanly), which
/// completes a body that has neither a length nor chunks.
pub fn parse(mut bytes: &[u8], ended: bool) -> Result<Parsed, String> {
    loop {
        let Some(end) = memchr::memmem::find(bytes, b"\r\n\r\n") else {
            return if ended {
                Err("the connection ended inside the response headers".into())
            } else {
                Ok(Parsed::Incomplete)
            };
        };
        let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "response headers not UTF-8")?;
        let body = &bytes[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let code = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") || code.len() != 3 {
            return Err(format!(
                "not an HTTP/1.x status line: {:?}",
                shown(status_line)
            ));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| format!("bad status code {:?}", shown(code)))?;
        if !(100..600).contains(&status) {
            return Err(format!("bad status code {status}"));
        }
        let mut length = None;
        let mut chunked = false;
        let mut content_type = None;
        for line in lines {
            let (name, value) = line.split_once(':').ok_or("malformed response header")?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n = value.parse::<usize>().map_err(|_| "bad Content-Length")?;
                if length.is_some_and(|m| m != n) {
                    return Err("conflicting Content-Length headers".into());
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if !value.eq_ignore_ascii_case("chunked") {
                    return Err(format!(
                        "transfer encoding {:?} is not supported",
                        shown(value)
                    ));
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_owned());
            }
        }
        // Interim responses (100 Continue) precede the real one.
        if (100..200).contains(&status) {
            bytes = body;
            continue;
        }
        let done = |body: Vec<u8>| {
            Ok(Parsed::Complete(Response {
                status,
                content_type: content_type.clone(),
                body,
            }))
        };
        if status == 204 || status == 304 {
            return done(Vec::new());
        }
        return match (chunked, length) {
            (true, _) => match dechunk(body)? {
                Some(b) => done(b),
                None if ended => Err("the connection ended inside a chunked body".into()),
                None => Ok(Parsed::Incomplete),
            },
            (false, Some(n)) if body.len() >= n => done(body[..n].to_vec()),
            (false, Some(_)) if ended => {
                Err("the response body is shorter than its Content-Length".into())
            }
            (false, Some(_)) => Ok(Parsed::Incomplete),
            (false, None) if ended => done(body.to_vec()),
            (false, None) => Ok(Parsed::Incomplete),
        };
    }
}

/// A chunked body: `None` until the last chunk has arrived.
fn dechunk(mut body: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = memchr::memmem::find(body, b"\r\n") else {
            if body.len() > 64 {
                return Err("bad chunk size line".into());
            }
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&body[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        if size_text.is_empty() || size_text.len() > 15 {
            return Err("bad chunk size".into());
        }
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            // Trailers are not read: the body is complete here.
            return Ok(Some(out));
        }
        let Some(after) = size.checked_add(2) else {
            return Err("bad chunk size".into());
        };
        if body.len() < after {
            return Ok(None);
        }
        if &body[size..after] != b"\r\n" {
            return Err("a chunk does not end with CRLF".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[after..];
    }
}

/// A peer's text, shortened for an error message.
fn shown(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::{parse, Parsed};

    fn complete(bytes: &[u8], ended: bool) -> (u16, Vec<u8>) {
        match parse(bytes, ended).expect("parses") {
            Parsed::Complete(r) => (r.status, r.body),
            Parsed::Incomplete => panic!("incomplete: {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn complete_responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra";
        assert_eq!(complete(ok, false), (200, b"{}".to_vec()));
        let chunked = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(complete(chunked, false), (201, b"{\"a\":1}".to_vec()));
        let until_close = b"HTTP/1.0 500 Oops\r\n\r\nbody";
        assert_eq!(complete(until_close, true), (500, b"body".to_vec()));
        let continued = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(complete(continued, false), (204, Vec::new()));
    }

    #[test]
    fn every_prefix_of_a_response_is_incomplete_not_an_error() {
        let whole = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for n in 0..whole.len() - 2 {
            assert_eq!(
                parse(&whole[..n], false),
                Ok(Parsed::Incomplete),
                "{:?}",
                String::from_utf8_lossy(&whole[..n])
            );
            assert!(parse(&whole[..n], true).is_err(), "ended at {n}");
        }
    }

    #[test]
    fn malformed_responses_are_errors() {
        for bad in [
            &b"SSH-2.0-x\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd",
            b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n",
        ] {
            assert!(
                parse(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Cut short by the peer.
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}", true).is_err());
    }
}

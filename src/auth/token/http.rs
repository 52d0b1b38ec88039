//! The one HTTP request pgward makes: GET a JWKS over HTTPS. Bounded in
//! time and size, no redirects, TLS verified (rustls, aws-lc-rs), run on
//! the runtime (never blocking it) by the JWKS fetcher task.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most bytes read for a response (headers and body).
const MAX_RESPONSE: usize = super::jwk::MAX_JWKS_LEN + 16 * 1024;

/// An `https://host[:port]/path` URL, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    /// Host name or address (without brackets).
    pub host: String,
    /// Port (443 by default).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpsUrl {
    /// Parses an HTTPS URL; anything else (http, user info, fragments) is refused.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("{url:?} is not an https:// URL"))?;
        if url.contains('#') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{url:?} has a fragment or white space"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') || authority.is_empty() {
            return Err(format!("{url:?} has no host, or has user info"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed ["))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => 443,
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

/// A TLS client config trusting `ca_file`, or the public web roots.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificates", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// GETs `url`, returning the body of a 200 response.
pub async fn get(
    url: &HttpsUrl,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    tokio::time::timeout(timeout, get_inner(url, tls))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn get_inner(url: &HttpsUrl, tls: Arc<rustls::ClientConfig>) -> Result<Vec<u8>, String> {
    let name = rustls_pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| format!("host {:?}: {e}", url.host))?;
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nAccept: application/json\r\n\
         User-Agent: pgward\r\nConnection: close\r\n\r\n",
        url.path, url.port
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    let read = (&mut stream)
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut response)
        .await;
    let clean_end = match read {
        Ok(_) => true,
        // A server that closes without close_notify: only the body's own
        // length can say whether it is complete.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Err(e) => return Err(format!("read: {e}")),
    };
    if response.len() > MAX_RESPONSE {
        return Err("the response is larger than 1 MiB".into());
    }
    parse_response(&response, clean_end)
}

/// The body of a complete `200` response: Content-Length or chunked, or
/// ended by the connection when it ended cleanly (`clean_end`).
pub fn parse_response(bytes: &[u8], clean_end: bool) -> Result<Vec<u8>, String> {
    let end = memchr::memmem::find(bytes, b"\r\n\r\n").ok_or("incomplete response headers")?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "response headers not UTF-8")?;
    let body = &bytes[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.") || code != "200" {
        return Err(format!("the server answered {status:?}"));
    }
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("malformed response header")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
            if !chunked {
                return Err(format!("transfer encoding {value:?} is not supported"));
            }
        }
    }
    match (chunked, length) {
        (true, _) => dechunk(body),
        (false, Some(n)) if body.len() >= n => Ok(body[..n].to_vec()),
        (false, Some(_)) => Err("the response body is shorter than its Content-Length".into()),
        (false, None) if clean_end => Ok(body.to_vec()),
        (false, None) => Err("the connection ended without TLS close_notify".into()),
    }
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = memchr::memmem::find(body, b"\r\n").ok_or("truncated chunk")?;
        let size_text = std::str::from_utf8(&body[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 || &body[size..size + 2] != b"\r\n" {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpsUrl::parse("https://idp.example:8443/.well-known/jwks.json").expect("ok");
        assert_eq!((u.host.as_str(), u.port), ("idp.example", 8443));
        assert_eq!(u.path, "/.well-known/jwks.json");
        let u = HttpsUrl::parse("https://[::1]/k").expect("ok");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 443, "/k")
        );
        assert_eq!(HttpsUrl::parse("https://h").expect("ok").path, "/");
        for bad in [
            "http://idp/jwks",
            "https://user@idp/jwks",
            "https:///jwks",
            "https://idp:x/",
            "https://idp/a b",
            "https://idp/a#f",
        ] {
            assert!(HttpsUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra";
        assert_eq!(parse_response(ok, false).expect("ok"), b"{}");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked, false).expect("ok"), b"{\"a\":1}");
        for bad in [
            &b"HTTP/1.1 301 Moved\r\nLocation: x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2",
            b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n{}",
        ] {
            assert!(
                parse_response(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

//! The HTTP requests pgward makes (a JWKS, webhooks, the approvals CLI
//! talking to an admin API): one small HTTP/1.1 client, `http://` and
//! `https://` (rustls, aws-lc-rs, verified), one request per connection,
//! no redirects, bounded in time and response size.
//!
//! - `url`: URLs, checked before anything connects.
//! - `response`: bytes into a response (pure).

mod response;
mod url;

pub use response::{parse as parse_response, Parsed, Response};
pub use url::Url;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The whole exchange took longer than allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, TLS or the socket failed.
    #[error("{0}")]
    Io(String),
    /// The server's answer is not a valid HTTP/1.1 response.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The response is larger than allowed.
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
    /// A header or argument that cannot be sent.
    #[error("{0}")]
    Invalid(String),
}

/// One request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// Where.
    pub url: &'a Url,
    /// Extra headers (name, value); CR and LF are refused.
    pub headers: &'a [(&'a str, &'a str)],
    /// A JSON body, sent with `Content-Type: application/json`.
    pub json: Option<&'a [u8]>,
}

/// A client: TLS settings and limits.
#[derive(Debug, Clone)]
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    /// Time allowed for one whole exchange (connect to last byte).
    pub timeout: Duration,
    /// The most bytes read for one response (headers and body).
    pub max_response: usize,
}

impl Client {
    /// A client trusting `ca_file`, or the public web roots.
    pub fn new(
        ca_file: Option<&Path>,
        timeout: Duration,
        max_response: usize,
    ) -> Result<Self, String> {
        Ok(Self {
            tls: client_config(ca_file)?,
            timeout,
            max_response,
        })
    }

    /// A client with a TLS configuration built already.
    pub fn with_tls(
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
        max_response: usize,
    ) -> Self {
        Self {
            tls,
            timeout,
            max_response,
        }
    }

    /// Sends `req` and reads the whole response (any status).
    pub async fn send(&self, req: &Request<'_>) -> Result<Response, HttpError> {
        let head = request_head(req)?;
        tokio::time::timeout(self.timeout, self.exchange(req, &head))
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))?
    }

    /// GETs `url` and returns the body of a 2xx response.
    pub async fn get(&self, url: &Url) -> Result<Vec<u8>, HttpError> {
        let response = self
            .send(&Request {
                method: "GET",
                url,
                headers: &[],
                json: None,
            })
            .await?;
        if !response.is_success() {
            return Err(HttpError::Malformed(format!(
                "the server answered {}",
                response.status
            )));
        }
        Ok(response.body)
    }

    async fn exchange(&self, req: &Request<'_>, head: &str) -> Result<Response, HttpError> {
        let url = req.url;
        let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| HttpError::Io(format!("connect to {}:{}: {e}", url.host, url.port)))?;
        let _ = tcp.set_nodelay(true);
        if !url.tls {
            return self.over(tcp, head, req.json).await;
        }
        let name = rustls_pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| HttpError::Invalid(format!("host {:?}: {e}", url.host)))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| HttpError::Io(format!("TLS: {e}")))?;
        self.over(tls, head, req.json).await
    }

    async fn over<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        head: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, HttpError> {
        let io = |e: std::io::Error| HttpError::Io(e.to_string());
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        if let Some(body) = body {
            stream.write_all(body).await.map_err(io)?;
        }
        stream.flush().await.map_err(io)?;
        let mut buf = Vec::with_capacity(8 * 1024);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let (n, ended) = match stream.read(&mut chunk).await {
                Ok(0) => (0, true),
                Ok(n) => (n, false),
                // A TLS server that closes without close_notify: only the
                // body's own length can say whether it is complete.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return match response::parse(&buf, false).map_err(HttpError::Malformed)? {
                        response::Parsed::Complete(r) => Ok(r),
                        response::Parsed::Incomplete => Err(HttpError::Malformed(
                            "the connection ended without TLS close_notify".into(),
                        )),
                    };
                }
                Err(e) => return Err(io(e)),
            };
            if buf.len() + n > self.max_response {
                return Err(HttpError::TooLarge(self.max_response));
            }
            buf.extend_from_slice(&chunk[..n]);
            match response::parse(&buf, ended).map_err(HttpError::Malformed)? {
                response::Parsed::Complete(r) => return Ok(r),
                response::Parsed::Incomplete if ended => {
                    return Err(HttpError::Malformed("the response is incomplete".into()))
                }
                response::Parsed::Incomplete => {}
            }
        }
    }
}

/// The request line and headers, checked: a value with CR or LF would
/// smuggle headers of its own.
fn request_head(req: &Request<'_>) -> Result<String, HttpError> {
    if req.method.is_empty() || !req.method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Invalid(format!("bad method {:?}", req.method)));
    }
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pgward/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        req.method,
        req.url.path,
        req.url.host_header(),
        env!("CARGO_PKG_VERSION"),
    );
    for (name, value) in req.headers {
        let bad = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        if name.is_empty() || name.contains(':') || bad(name) || bad(value) {
            return Err(HttpError::Invalid(format!(
                "header {name:?} cannot be sent"
            )));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match req.json {
        Some(body) => head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )),
        None if req.method != "GET" => head.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    head.push_str("\r\n");
    Ok(head)
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

#[cfg(test)]
mod tests;

//! The backend leg: connect to an upstream (TLS per sslmode) and log in with
//! the credential pgward holds. The password and the server's cancel key stay
//! in here and in the cancel registry; neither reaches a client or a log line.

use super::require::{AuthMethod, AuthProgress, AuthRefused};
use super::scram_client::{Binding, SaltedPasswordCache, ScramClient, ScramError};
use crate::config::{Secret, SslMode, UpstreamConfig};
use crate::error::SessionError;
use crate::io::{FramedStream, ReadError, Stream};
use crate::wire::backend::{backend_key_data, notice_field, BackendKind};
use crate::wire::frame::{read_cstr, read_i32};
use crate::wire::{Frame, Framer};
use bytes::BytesMut;
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::net::TcpStream;

/// An upstream with its TLS client configuration built once.
///
/// Cloned into every session's cancel route (the registry entry), so a
/// clone shares everything: no copy of the roles or their passwords per
/// session.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The configured upstream.
    pub config: Arc<UpstreamConfig>,
    /// rustls config, unless sslmode is disable.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The upstream's own `user`: pgward's catalog reads log in as it.
    catalog: Arc<LoginRole>,
    /// The roles client identities log in as, by name.
    roles: Arc<BTreeMap<String, LoginRole>>,
}

/// A role pgward logs in as, with its credential and the SCRAM salted
/// password computed once instead of per login.
#[derive(Debug, Clone)]
pub struct LoginRole {
    /// The role name.
    pub name: String,
    password: Option<Secret>,
    salted: SaltedPasswordCache,
}

/// A logged-in server connection.
#[derive(Debug)]
pub struct BackendLogin {
    /// The connection, positioned after the first ReadyForQuery.
    pub conn: FramedStream,
    /// The server's process id.
    pub process_id: i32,
    /// The server's cancel key.
    pub secret_key: i32,
    /// ParameterStatus and NoticeResponse frames from startup, in order, to
    /// replay to the client as they came.
    pub startup_messages: BytesMut,
}

impl Upstream {
    /// Prepares an upstream's logins; `kdf` bounds SCRAM key derivations
    /// across every upstream.
    pub fn new(
        config: Arc<UpstreamConfig>,
        tls: Option<Arc<rustls::ClientConfig>>,
        kdf: &Arc<tokio::sync::Semaphore>,
    ) -> Self {
        let role = |name: &str, password: &Option<Secret>| LoginRole {
            name: name.to_owned(),
            password: password.clone(),
            salted: SaltedPasswordCache::new(Arc::clone(kdf)),
        };
        let catalog = role(&config.user, &config.password);
        let roles = config
            .roles
            .credentials
            .values()
            .map(|c| (c.name.clone(), role(&c.name, &c.password)))
            .collect();
        Self {
            config,
            tls,
            catalog: Arc::new(catalog),
            roles: Arc::new(roles),
        }
    }

    /// The login for `name`: one of the configured roles, or the upstream's
    /// own `user` with its own password.
    pub fn role(&self, name: &str) -> Option<&LoginRole> {
        self.roles
            .get(name)
            .or_else(|| (name == self.catalog.name).then_some(&*self.catalog))
    }

    /// The catalog role's login.
    pub fn catalog_role(&self) -> &LoginRole {
        &self.catalog
    }

    fn unavailable(&self, detail: impl Into<String>) -> SessionError {
        SessionError::BackendUnavailable {
            upstream: self.config.name.clone(),
            detail: detail.into(),
        }
    }

    /// Opens TCP and negotiates TLS as sslmode says.
    pub async fn connect(&self) -> Result<Stream, SessionError> {
        let c = &self.config;
        let tcp = TcpStream::connect((c.host.as_str(), c.port))
            .await
            .map_err(|e| self.unavailable(format!("connect {}:{}: {e}", c.host, c.port)))?;
        // Small protocol messages must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let mut conn = FramedStream::new(Stream::Plain(tcp));
        let mut req = BytesMut::new();
        frontend::ssl_request(&mut req);
        conn.send(&req)
            .await
            .map_err(|e| self.unavailable(e.to_string()))?;
        let answer = conn
            .read_byte()
            .await
            .map_err(|e| self.unavailable(e.to_string()))?;
        let Stream::Plain(tcp) = conn.stream else {
            unreachable!("the stream was built plain just above")
        };
        match answer {
            b'S' if conn.buf.is_empty() => {
                let name = ServerName::try_from(c.host.clone())
                    .map_err(|e| self.unavailable(format!("server name {:?}: {e}", c.host)))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| self.unavailable(format!("TLS handshake: {e}")))?;
                Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
            }
            // Bytes after 'S' before the handshake would be injected into the
            // TLS session's plaintext (CVE-2021-23222): refuse.
            b'S' => Err(self.unavailable("server sent data after accepting TLS")),
            b'N' if c.sslmode == SslMode::Prefer => Ok(Stream::Plain(tcp)),
            b'N' => Err(self.unavailable("server does not support TLS, and sslmode requires it")),
            other => Err(self.unavailable(format!("unexpected answer {other:#x} to SSLRequest"))),
        }
    }

    /// Logs in as the catalog role to the upstream's own database.
    pub async fn login_catalog(
        &self,
        params: &[(String, String)],
    ) -> Result<BackendLogin, SessionError> {
        self.login(&self.catalog, &self.config.dbname, params).await
    }

    /// Connects and logs in as `role` to `dbname`, forwarding `params`
    /// (already filtered) in the StartupMessage besides the user and
    /// database.
    pub async fn login(
        &self,
        role: &LoginRole,
        dbname: &str,
        params: &[(String, String)],
    ) -> Result<BackendLogin, SessionError> {
        let deadline = self.config.connect_timeout;
        tokio::time::timeout(deadline, self.login_inner(role, dbname, params))
            .await
            .map_err(|_| self.unavailable(format!("no login within {deadline:?}")))?
    }

    async fn login_inner(
        &self,
        role: &LoginRole,
        dbname: &str,
        params: &[(String, String)],
    ) -> Result<BackendLogin, SessionError> {
        let c = &self.config;
        let mut conn = FramedStream::new(self.connect().await?);
        let mut out = BytesMut::new();
        let mut startup: Vec<(&str, &str)> = vec![("user", &role.name), ("database", dbname)];
        startup.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        frontend::startup_message(startup, &mut out)
            .map_err(|e| self.unavailable(e.to_string()))?;
        conn.send(&out)
            .await
            .map_err(|e| self.unavailable(e.to_string()))?;

        // Everything before ReadyForQuery counts against one budget: each
        // message is also capped by it before it is buffered, and their sum
        // (a flood of small ParameterStatus) cannot grow past it either.
        let budget = c.login_max_bytes;
        let framer = Framer::new(budget);
        let mut received = 0usize;
        let mut scram: Option<ScramClient> = None;
        let mut progress = AuthProgress::default();
        let refuse = |e: AuthRefused| self.unavailable(e.0);
        let mut key = None;
        let mut startup_messages = BytesMut::new();
        loop {
            let frame = conn
                .read_frame(&framer)
                .await
                .map_err(|e| self.read_failed(e))?;
            received += frame.raw().len();
            if received > budget {
                return Err(self.unavailable(format!(
                    "the server sent more than login_max_bytes ({budget} bytes) before ReadyForQuery"
                )));
            }
            match BackendKind::of(frame.tag()) {
                BackendKind::Authentication => {
                    out.clear();
                    let exchange = (&mut scram, &mut progress);
                    self.answer_auth(role, &frame, &conn.stream, exchange, &mut out)
                        .await?;
                    if !out.is_empty() {
                        conn.send(&out)
                            .await
                            .map_err(|e| self.unavailable(e.to_string()))?;
                    }
                }
                BackendKind::ParameterStatus => {
                    progress.after_ok("ParameterStatus").map_err(refuse)?;
                    startup_messages.extend_from_slice(frame.raw());
                }
                BackendKind::NoticeResponse => startup_messages.extend_from_slice(frame.raw()),
                BackendKind::BackendKeyData => {
                    progress.after_ok("BackendKeyData").map_err(refuse)?;
                    key = Some(
                        backend_key_data(frame.view())
                            .map_err(|e| self.unavailable(e.to_string()))?,
                    );
                }
                BackendKind::NegotiateProtocolVersion => {}
                BackendKind::ReadyForQuery => {
                    // Without this, a server could skip authentication by
                    // going straight to ReadyForQuery.
                    progress.after_ok("ReadyForQuery").map_err(refuse)?;
                    break;
                }
                BackendKind::ErrorResponse => return Err(self.refused(&frame)),
                _ => {
                    return Err(self.unavailable(format!(
                        "unexpected message {:?} during login",
                        char::from(frame.tag())
                    )))
                }
            }
        }
        let (process_id, secret_key) = key.ok_or_else(|| self.unavailable("no BackendKeyData"))?;
        Ok(BackendLogin {
            conn,
            process_id,
            secret_key,
            startup_messages,
        })
    }

    fn read_failed(&self, e: ReadError) -> SessionError {
        self.unavailable(format!("reading login response: {e}"))
    }

    /// Turns a login ErrorResponse into an error for the client. Authentication
    /// failures are pgward's configuration problem, and their wording names the
    /// backend role: the client gets 08001 and the log gets the detail.
    fn refused(&self, frame: &Frame) -> SessionError {
        if let Some(bad) = crate::upstream::error::check_error_response(frame.body()) {
            tracing::warn!(
                upstream = %self.config.name,
                "malformed ErrorResponse during login ({}), replaced", bad.reason
            );
            return SessionError::BackendRefused {
                code: crate::upstream::error::MALFORMED_CODE.to_owned(),
                message: crate::upstream::error::MALFORMED_MESSAGE.to_owned(),
            };
        }
        let field =
            |c| String::from_utf8_lossy(notice_field(frame.view(), c).unwrap_or(b"")).into_owned();
        let (code, message) = (field(b'C'), field(b'M'));
        if code.starts_with("28") || code == "3D000" {
            return self.unavailable(format!("{code}: {message}"));
        }
        SessionError::BackendRefused { code, message }
    }

    fn password<'r>(&self, role: &'r LoginRole) -> Result<&'r [u8], SessionError> {
        role.password
            .as_ref()
            .map(|p| p.expose().as_bytes())
            .ok_or_else(|| {
                self.unavailable(format!(
                    "server asks for a password for role \"{}\" and none is configured",
                    role.name
                ))
            })
    }

    /// Answers one Authentication* message into `out` (empty when there is
    /// nothing to send).
    async fn answer_auth(
        &self,
        role: &LoginRole,
        frame: &Frame,
        stream: &Stream,
        (scram, progress): (&mut Option<ScramClient>, &mut AuthProgress),
        out: &mut BytesMut,
    ) -> Result<(), SessionError> {
        let mut body = frame.body();
        let code = read_i32(&mut body).ok_or_else(|| self.unavailable("short Authentication"))?;
        let io = |e: std::io::Error| self.unavailable(e.to_string());
        let policy = &self.config.auth;
        // Checked before anything is sent: a method require_auth does not
        // allow never sees the password or a hash of it.
        let request = |progress: &mut AuthProgress, m| {
            progress
                .request(policy, m)
                .map_err(|e| self.unavailable(e.0))
        };
        match code {
            0 => progress.ok(policy).map_err(|e| self.unavailable(e.0)),
            3 => {
                request(progress, AuthMethod::Password)?;
                frontend::password_message(self.password(role)?, out).map_err(io)
            }
            5 => {
                request(progress, AuthMethod::Md5)?;
                let salt: [u8; 4] = body
                    .try_into()
                    .map_err(|_| self.unavailable("bad MD5 salt"))?;
                let hash = postgres_protocol::authentication::md5_hash(
                    role.name.as_bytes(),
                    self.password(role)?,
                    salt,
                );
                frontend::password_message(hash.as_bytes(), out).map_err(io)
            }
            10 => {
                request(progress, AuthMethod::ScramSha256)?;
                let mut mechanisms = Vec::new();
                while let Some(m) = read_cstr(&mut body).filter(|m| !m.is_empty()) {
                    mechanisms.push(m);
                }
                let (mechanism, binding) = self.choose_scram(&mechanisms, stream)?;
                let s = ScramClient::new(binding);
                frontend::sasl_initial_response(mechanism, s.client_first().as_bytes(), out)
                    .map_err(io)?;
                *scram = Some(s);
                Ok(())
            }
            11 => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| self.unavailable("SASLContinue before SASL"))?;
                let password = self.password(role)?;
                let scram_err = |e: ScramError| self.unavailable(e.to_string());
                let request = s
                    .server_first(body, self.config.scram_max_iterations)
                    .map_err(scram_err)?;
                let salted = role
                    .salted
                    .salted_password(password, &request)
                    .await
                    .map_err(scram_err)?;
                let client_final = s.client_final(&salted).map_err(scram_err)?;
                frontend::sasl_response(client_final.as_bytes(), out).map_err(io)
            }
            12 => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| self.unavailable("SASLFinal before SASL"))?;
                // Verifies the server's signature: the server knew our verifier.
                s.verify_server_final(body)
                    .map_err(|e| self.unavailable(e.to_string()))?;
                progress.server_verified();
                Ok(())
            }
            other => Err(self.unavailable(format!("unsupported authentication request {other}"))),
        }
    }

    fn choose_scram(
        &self,
        offered: &[&[u8]],
        stream: &Stream,
    ) -> Result<(&'static str, Binding), SessionError> {
        let cert = match stream {
            Stream::Tls(tls) => tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(crate::tls::end_point_hash),
            Stream::Plain(_) => None,
        };
        let plus = offered.contains(&&b"SCRAM-SHA-256-PLUS"[..]);
        match cert {
            Some(hash) if plus => Ok(("SCRAM-SHA-256-PLUS", Binding::EndPoint(hash))),
            _ if self.config.auth.channel_binding => Err(self.unavailable(
                "channel_binding is require, and the server does not offer SCRAM-SHA-256-PLUS \
                 over TLS",
            )),
            Some(_) if offered.contains(&&b"SCRAM-SHA-256"[..]) => {
                Ok(("SCRAM-SHA-256", Binding::NotOffered))
            }
            None if offered.contains(&&b"SCRAM-SHA-256"[..]) => {
                Ok(("SCRAM-SHA-256", Binding::Unsupported))
            }
            _ => Err(self.unavailable("server offers no SASL mechanism pgward supports")),
        }
    }

    /// Sends a CancelRequest with the server's real key.
    pub async fn cancel(&self, process_id: i32, secret_key: i32) -> Result<(), SessionError> {
        let mut conn = FramedStream::new(self.connect().await?);
        let mut out = BytesMut::new();
        frontend::cancel_request(process_id, secret_key, &mut out);
        conn.send(&out)
            .await
            .map_err(|e| self.unavailable(e.to_string()))?;
        // The server closes the connection once it has read the request.
        let _ = conn.read_byte().await;
        Ok(())
    }
}

/// The upstream `main` of a minimal configuration, for unit tests that
/// need one but never connect to it.
#[cfg(test)]
pub(crate) fn test_upstream() -> Upstream {
    let text = format!(
        "[upstreams.main]\nuser = \"app\"\n[users.alice]\nscram_verifier = \"{}\"\n",
        crate::auth::verifier::ScramVerifier::generate("pw")
    );
    let config = crate::config::Config::parse(&text, std::path::Path::new("/etc/pgward.toml"))
        .expect("valid");
    let kdf = crate::auth::scram_client::kdf_pool();
    let u = config.upstreams.get("main").expect("upstream");
    Upstream::new(Arc::clone(u), None, &kdf)
}

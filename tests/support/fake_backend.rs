//! A scripted PostgreSQL stand-in for what a real server will not do:
//! hostile authentication (huge SCRAM iteration counts, a wrong or missing
//! server signature, cleartext requests), floods and stalls during login,
//! and malformed answers (truncated ReadyForQuery, wrong column counts,
//! absurd lengths, unknown message types, authentication out of place).
//!
//! ```ignore
//! let fake = FakeBackend::builder()
//!     .auth(Auth::scram("app-pw").iterations(4096))
//!     .login_message(parameter_status("server_version", "15.0"))
//!     .respond(|req| match req.tag {
//!         b'Q' => Reply::Send(select_one()),
//!         _ => Reply::Default,
//!     })
//!     .start()
//!     .await;
//! let pw = Pgward::start_in(&fake.config(""), fake.dir()).await;
//! ```
//!
//! Every accepted connection runs the same script; [`FakeBackend::seen`]
//! reports what the fake received (startup parameters, passwords, messages),
//! so a test can assert that a secret never reached an impostor.

use super::raw::message;
use super::{APP_ROLE, DB, USER};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The password the fake expects from pgward (written to the password file
/// that [`FakeBackend::config`] names).
pub const FAKE_PASSWORD: &str = "fake-upstream-secret";

/// What the fake asks pgward to authenticate with.
#[derive(Debug, Clone)]
pub enum Auth {
    /// AuthenticationOk at once.
    Trust,
    /// AuthenticationCleartextPassword, then AuthenticationOk.
    Cleartext,
    /// AuthenticationMD5Password with this salt, then AuthenticationOk.
    Md5([u8; 4]),
    /// SCRAM-SHA-256, as scripted.
    Scram(Scram),
    /// These raw bytes instead of any authentication request (e.g. an
    /// Authentication message of an unknown kind); then the fake only
    /// records what it receives.
    Raw(Vec<u8>),
}

impl Auth {
    /// SCRAM-SHA-256 for `password` with 4,096 iterations, a fresh random salt
    /// per connection and a correct server-final (adjust with [`Scram`]'s
    /// methods).
    pub fn scram(password: &str) -> Scram {
        Scram {
            password: password.to_owned(),
            iterations: 4096,
            salt: None,
            server_final: ServerFinal::Correct,
            mechanisms: vec!["SCRAM-SHA-256".to_owned()],
        }
    }
}

/// A scripted SCRAM-SHA-256 exchange (server side).
#[derive(Debug, Clone)]
pub struct Scram {
    /// The password the server-side verifier is derived from.
    pub password: String,
    /// `i=` in server-first.
    pub iterations: u32,
    /// `s=` in server-first; `None` for a fresh random salt per connection.
    pub salt: Option<Vec<u8>>,
    /// What follows pgward's client-final.
    pub server_final: ServerFinal,
    /// Mechanisms offered in AuthenticationSASL.
    pub mechanisms: Vec<String>,
}

impl Scram {
    /// With this iteration count.
    pub fn iterations(self, iterations: u32) -> Self {
        Scram { iterations, ..self }
    }
    /// With this fixed salt.
    pub fn salt(self, salt: &[u8]) -> Self {
        Scram {
            salt: Some(salt.to_vec()),
            ..self
        }
    }
    /// With this server-final behaviour.
    pub fn server_final(self, server_final: ServerFinal) -> Self {
        Scram {
            server_final,
            ..self
        }
    }
    /// Offering these mechanisms (e.g. `SCRAM-SHA-256-PLUS` only).
    pub fn mechanisms(self, mechanisms: &[&str]) -> Self {
        Scram {
            mechanisms: mechanisms.iter().map(|m| (*m).to_owned()).collect(),
            ..self
        }
    }
}

impl From<Scram> for Auth {
    fn from(s: Scram) -> Auth {
        Auth::Scram(s)
    }
}

/// The server's answer to a client-final message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFinal {
    /// The correct signature (after checking the client's proof; a wrong
    /// proof gets 28P01).
    Correct,
    /// A signature of the right form that does not verify.
    Wrong,
    /// No AuthenticationSASLFinal at all: AuthenticationOk straight away.
    Missing,
}

/// What the fake does with one client message after login.
pub enum Reply {
    /// The built-in answer ([`default_reply`]).
    Default,
    /// Send these bytes.
    Send(Vec<u8>),
    /// Send these bytes, then close the connection.
    SendAndClose(Vec<u8>),
    /// Close the connection without a word.
    Close,
    /// Send nothing and keep reading.
    Nothing,
    /// Stop reading and answering, keeping the connection open (a stall).
    Hang,
}

/// One client message after login.
#[derive(Debug, Clone)]
pub struct Request {
    /// Which accepted connection (0, 1, ...).
    pub conn: usize,
    /// Type byte.
    pub tag: u8,
    /// Body after the length.
    pub body: Bytes,
}

impl Request {
    /// The SQL of a Query message ("" for other messages).
    pub fn query(&self) -> String {
        if self.tag != b'Q' {
            return String::new();
        }
        let end = self.body.iter().position(|&b| b == 0).unwrap_or(0);
        String::from_utf8_lossy(&self.body[..end]).into_owned()
    }
}

type Responder = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// What the fake received, over all connections.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Connections accepted.
    pub connections: usize,
    /// StartupMessage parameters of each connection.
    pub startups: Vec<Vec<(String, String)>>,
    /// Bodies of PasswordMessages (cleartext or md5): secrets an impostor
    /// would have collected.
    pub passwords: Vec<String>,
    /// Client messages after login, as (tag, body).
    pub messages: Vec<(u8, Bytes)>,
    /// Logins that reached the end of authentication.
    pub logins_completed: usize,
}

/// Builds a [`FakeBackend`].
pub struct Builder {
    ssl_answer: u8,
    tls: Option<tokio_rustls::TlsAcceptor>,
    auth: Auth,
    login: Vec<Vec<u8>>,
    key_data: bool,
    responder: Responder,
}

impl Builder {
    /// The answer to SSLRequest (default `b'N'`).
    pub fn ssl_answer(mut self, answer: u8) -> Self {
        self.ssl_answer = answer;
        self
    }
    /// Accepts TLS with this certificate (SSLRequest answered 'S').
    pub fn tls(mut self, pki: &super::certs::TestPki) -> Self {
        let certs = rustls_pemfile::certs(&mut pki.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = rustls_pemfile::private_key(&mut pki.key_pem.as_bytes())
            .expect("key PEM")
            .expect("a key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        self.tls = Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        self
    }
    /// The authentication script (default: SCRAM for [`FAKE_PASSWORD`]).
    pub fn auth(mut self, auth: impl Into<Auth>) -> Self {
        self.auth = auth.into();
        self
    }
    /// Appends a message (raw bytes) sent after authentication, before
    /// BackendKeyData and ReadyForQuery.
    pub fn login_message(mut self, bytes: Vec<u8>) -> Self {
        self.login.push(bytes);
        self
    }
    /// Replaces the login tail: after authentication the fake sends exactly
    /// these messages (no automatic BackendKeyData / ReadyForQuery).
    pub fn raw_login(mut self, messages: Vec<Vec<u8>>) -> Self {
        self.login = messages;
        self.key_data = false;
        self
    }
    /// How each client message after login is answered (default:
    /// [`default_reply`] for everything).
    pub fn respond(mut self, f: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        self.responder = Arc::new(f);
        self
    }
    /// Listens on a free loopback port and serves until dropped.
    pub async fn start(self) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let addr = listener.local_addr().expect("fake addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let script = Arc::new(self);
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            async move {
                let mut n = 0;
                while let Ok((tcp, _)) = listener.accept().await {
                    let (script, seen) = (Arc::clone(&script), Arc::clone(&seen));
                    tokio::spawn(serve(tcp, n, script, seen));
                    n += 1;
                }
            }
        });
        let dir = tempfile::tempdir().expect("fake dir");
        std::fs::write(dir.path().join("fake.password"), FAKE_PASSWORD).expect("password");
        FakeBackend {
            addr,
            seen,
            dir,
            task,
        }
    }
}

/// A running fake upstream.
pub struct FakeBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    dir: tempfile::TempDir,
    task: JoinHandle<()>,
}

impl FakeBackend {
    /// A builder: SSLRequest answered 'N', SCRAM-SHA-256 for
    /// [`FAKE_PASSWORD`] (what pgward accepts by default), a BackendKeyData
    /// and ReadyForQuery after login, default replies.
    pub fn builder() -> Builder {
        Builder {
            ssl_answer: b'N',
            tls: None,
            auth: Auth::scram(FAKE_PASSWORD).into(),
            login: Vec::new(),
            key_data: true,
            responder: Arc::new(|_| Reply::Default),
        }
    }

    /// A snapshot of what the fake received so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("seen").clone()
    }

    /// A directory for config files (holds `fake.password`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `[upstreams.NAME]` section for this fake (password file, sslmode
    /// disable unless `extra` sets it), plus `extra` lines.
    pub fn upstream_section(&self, name: &str, extra: &str) -> String {
        let sslmode = if extra.contains("sslmode") {
            ""
        } else {
            "sslmode = \"disable\""
        };
        format!(
            "[upstreams.{name}]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{APP_ROLE}\"\n\
             password_file = \"{pw}\"\n{sslmode}\nrole_map = [{{ users = [\"*\"], role = \"{APP_ROLE}\" }}]\n\
             least_privilege = \"masked_only\"\n\
             {extra}\n",
            port = self.addr.port(),
            pw = self.dir().join("fake.password").display(),
        )
    }

    /// A whole pgward config: the fake as the only upstream behind `appdb`,
    /// alice as the client identity; `upstream_extra` lines go into the
    /// upstream section. Called-code resolution is off: the fake answers
    /// no catalog queries, and its logins are counted (resolution has its
    /// own tests against a real server, tests/rules_called_code.rs).
    pub fn config(&self, upstream_extra: &str) -> String {
        let verifier = pgward::auth::verifier::ScramVerifier::generate(super::PASSWORD);
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n{up}\n[databases]\n{DB} = \"{DB}\"\n\n\
             [users.{USER}]\nscram_verifier = \"{verifier}\"\n\n[policy]\ncalled_code = false\n",
            up = self.upstream_section(DB, upstream_extra),
        )
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one connection; any I/O error ends it.
async fn serve(mut tcp: TcpStream, conn: usize, script: Arc<Builder>, seen: Arc<Mutex<Seen>>) {
    let _ = tcp.set_nodelay(true);
    seen.lock().expect("seen").connections += 1;
    match read_startup(&mut tcp, &script).await {
        Some(Opening::Startup(params)) => session(tcp, params, conn, &script, &seen).await,
        Some(Opening::Tls) => {
            let Some(acceptor) = &script.tls else { return };
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            // Inside TLS only a StartupMessage may follow.
            if let Some(Opening::Startup(params)) = read_startup(&mut tls, &script).await {
                session(tls, params, conn, &script, &seen).await;
            }
        }
        None => {}
    }
}

/// What the startup packets asked for.
enum Opening {
    /// A StartupMessage with these parameters.
    Startup(Vec<(String, String)>),
    /// An SSLRequest the fake answered 'S'.
    Tls,
}

/// Serves one connection after its StartupMessage.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut tcp: S,
    params: Vec<(String, String)>,
    conn: usize,
    script: &Builder,
    seen: &Mutex<Seen>,
) {
    seen.lock().expect("seen").startups.push(params);
    let mut buf = BytesMut::new();
    if authenticate(&mut tcp, &mut buf, &script.auth, seen)
        .await
        .is_none()
    {
        return;
    }
    seen.lock().expect("seen").logins_completed += 1;
    let mut hello = Vec::new();
    for m in &script.login {
        hello.extend_from_slice(m);
    }
    if script.key_data {
        hello.extend(message(b'K', &[0, 0, 0x30, 0x39, 1, 2, 3, 4]));
        hello.extend(ready_for_query(b'I'));
    }
    if tcp.write_all(&hello).await.is_err() {
        return;
    }
    while let Some((tag, body)) = read_message(&mut tcp, &mut buf).await {
        seen.lock()
            .expect("seen")
            .messages
            .push((tag, body.clone()));
        let req = Request { conn, tag, body };
        let reply = match (script.responder)(&req) {
            Reply::Default => default_reply(&req),
            other => other,
        };
        let done = match reply {
            Reply::Default | Reply::Nothing => continue,
            Reply::Send(bytes) => tcp.write_all(&bytes).await.is_err(),
            Reply::SendAndClose(bytes) => {
                let _ = tcp.write_all(&bytes).await;
                true
            }
            Reply::Close => true,
            Reply::Hang => {
                std::future::pending::<()>().await;
                true
            }
        };
        if done {
            return;
        }
    }
}

/// Reads SSLRequest / GSSENCRequest (answering each) and the
/// StartupMessage; `None` for a CancelRequest or a broken packet.
async fn read_startup<S: AsyncRead + AsyncWrite + Unpin>(
    tcp: &mut S,
    script: &Builder,
) -> Option<Opening> {
    loop {
        let len = tcp.read_u32().await.ok()? as usize;
        if !(8..=10_000).contains(&len) {
            return None;
        }
        let mut body = vec![0; len - 4];
        tcp.read_exact(&mut body).await.ok()?;
        match u32::from_be_bytes(body[..4].try_into().ok()?) {
            80_877_103 if script.tls.is_some() => {
                tcp.write_all(b"S").await.ok()?;
                return Some(Opening::Tls);
            }
            80_877_103 => tcp.write_all(&[script.ssl_answer]).await.ok()?,
            80_877_104 => tcp.write_all(b"N").await.ok()?,
            196_608 => {
                let mut fields = body[4..]
                    .split(|&b| b == 0)
                    .map(|s| String::from_utf8_lossy(s).into_owned());
                let mut params = Vec::new();
                while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
                    if k.is_empty() {
                        break;
                    }
                    params.push((k, v));
                }
                return Some(Opening::Startup(params));
            }
            _ => return None,
        }
    }
}

/// Reads one framed message (tag, body); `None` at EOF or on a bad length.
async fn read_message<S: AsyncRead + Unpin>(
    tcp: &mut S,
    buf: &mut BytesMut,
) -> Option<(u8, Bytes)> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if !(4..=(64 << 20)).contains(&len) {
                return None;
            }
            if buf.len() > len {
                let frame = buf.split_to(1 + len).freeze();
                return Some((frame[0], frame.slice(5..)));
            }
        }
        if tcp.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// An Authentication message with this code and data.
pub fn auth_message(code: i32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    message(b'R', &body)
}

/// Runs the authentication script; `None` when the connection should end.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    tcp: &mut S,
    buf: &mut BytesMut,
    auth: &Auth,
    seen: &Mutex<Seen>,
) -> Option<()> {
    let record_password = |body: &Bytes| {
        let text = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body));
        seen.lock().expect("seen").passwords.push(text.into_owned());
    };
    match auth {
        Auth::Trust => {}
        Auth::Raw(bytes) => {
            // Then only listen: whatever pgward sends next is recorded (a
            // statement here means pgward accepted a broken login).
            tcp.write_all(bytes).await.ok()?;
            while let Some((tag, body)) = read_message(tcp, buf).await {
                seen.lock().expect("seen").messages.push((tag, body));
            }
            return None;
        }
        Auth::Cleartext | Auth::Md5(_) => {
            let request = match auth {
                Auth::Md5(salt) => auth_message(5, salt),
                _ => auth_message(3, &[]),
            };
            tcp.write_all(&request).await.ok()?;
            let (tag, body) = read_message(tcp, buf).await?;
            if tag != b'p' {
                return None;
            }
            record_password(&body);
        }
        Auth::Scram(s) => scram_exchange(tcp, buf, s).await?,
    }
    tcp.write_all(&auth_message(0, &[])).await.ok()
}

async fn scram_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    tcp: &mut S,
    buf: &mut BytesMut,
    s: &Scram,
) -> Option<()> {
    let mut offer = Vec::new();
    for m in &s.mechanisms {
        offer.extend_from_slice(m.as_bytes());
        offer.push(0);
    }
    offer.push(0);
    tcp.write_all(&auth_message(10, &offer)).await.ok()?;
    let (_, initial) = read_message(tcp, buf).await?;
    // SASLInitialResponse: mechanism\0, i32 length, client-first.
    let nul = initial.iter().position(|&b| b == 0)?;
    let client_first = std::str::from_utf8(initial.get(nul + 5..)?)
        .ok()?
        .to_owned();
    let bare_at = client_first.match_indices(",,").next()?.0 + 2;
    let client_first_bare = &client_first[bare_at..];
    let client_nonce = client_first_bare
        .split(',')
        .find_map(|p| p.strip_prefix("r="))?;
    let salt = s
        .salt
        .clone()
        .unwrap_or_else(|| rand::random::<[u8; 16]>().to_vec());
    let nonce = format!("{client_nonce}{}", B64.encode(rand::random::<[u8; 12]>()));
    let server_first = format!("r={nonce},s={},i={}", B64.encode(&salt), s.iterations);
    tcp.write_all(&auth_message(11, server_first.as_bytes()))
        .await
        .ok()?;
    let (_, fin) = read_message(tcp, buf).await?;
    let client_final = std::str::from_utf8(&fin).ok()?;
    let (without_proof, proof) = client_final.rsplit_once(",p=")?;
    if s.server_final == ServerFinal::Missing {
        return Some(());
    }
    let salted = hi(s.password.as_bytes(), &salt, s.iterations);
    let auth_message_text = format!("{client_first_bare},{server_first},{without_proof}");
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let signature = hmac(&stored_key, auth_message_text.as_bytes());
    let proof = B64.decode(proof).ok()?;
    let recovered: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
    if Sha256::digest(&recovered)[..] != stored_key[..] {
        let err = error_response(&[(b'S', "FATAL"), (b'C', "28P01"), (b'M', "bad proof")]);
        let _ = tcp.write_all(&err).await;
        return None;
    }
    let mut server_sig = hmac(&hmac(&salted, b"Server Key"), auth_message_text.as_bytes());
    if s.server_final == ServerFinal::Wrong {
        server_sig[0] ^= 0xff;
    }
    let text = format!("v={}", B64.encode(server_sig));
    tcp.write_all(&auth_message(12, text.as_bytes())).await.ok()
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256, one block (RFC 5802's Hi).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut salted_one = salt.to_vec();
    salted_one.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &salted_one);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        out.iter_mut().zip(u).for_each(|(o, b)| *o ^= b);
    }
    out
}

/// The built-in answers: Terminate closes; a Query gets one row with `1`;
/// Sync gets ReadyForQuery; Parse/Bind/Describe/Execute get their usual
/// completions for a one-column `SELECT 1`; anything else is ignored.
pub fn default_reply(req: &Request) -> Reply {
    match req.tag {
        b'X' => Reply::Close,
        b'Q' => {
            let mut out = select_one_rows();
            out.extend(ready_for_query(b'I'));
            Reply::Send(out)
        }
        b'P' => Reply::Send(message(b'1', &[])),
        b'B' => Reply::Send(message(b'2', &[])),
        b'D' => Reply::Send(row_description(&["?column?"])),
        b'E' => {
            let mut out = data_row(&[Some("1")]);
            out.extend(command_complete("SELECT 1"));
            Reply::Send(out)
        }
        b'S' => Reply::Send(ready_for_query(b'I')),
        _ => Reply::Nothing,
    }
}

/// RowDescription, DataRow and CommandComplete of `SELECT 1`.
pub fn select_one_rows() -> Vec<u8> {
    let mut out = row_description(&["?column?"]);
    out.extend(data_row(&[Some("1")]));
    out.extend(command_complete("SELECT 1"));
    out
}

/// ParameterStatus.
pub fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    message(b'S', format!("{name}\0{value}\0").as_bytes())
}

/// ReadyForQuery with this transaction status.
pub fn ready_for_query(status: u8) -> Vec<u8> {
    message(b'Z', &[status])
}

/// CommandComplete.
pub fn command_complete(tag: &str) -> Vec<u8> {
    message(b'C', format!("{tag}\0").as_bytes())
}

/// ErrorResponse (or, with tag changed, NoticeResponse) with these fields.
pub fn error_response(fields: &[(u8, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (code, value) in fields {
        body.push(*code);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

/// RowDescription of text columns with these names (no table).
pub fn row_description(names: &[&str]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i16(names.len() as i16);
    for name in names {
        body.put_slice(name.as_bytes());
        body.put_u8(0);
        body.put_u32(0); // table oid
        body.put_i16(0); // attnum
        body.put_u32(25); // text
        body.put_i16(-1);
        body.put_i32(-1);
        body.put_i16(0);
    }
    message(b'T', &body)
}

/// DataRow with these values (`None` = NULL).
pub fn data_row(values: &[Option<&str>]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(v) => {
                body.put_i32(v.len() as i32);
                body.put_slice(v.as_bytes());
            }
            None => body.put_i32(-1),
        }
    }
    message(b'D', &body)
}

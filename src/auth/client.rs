//! The client leg: SCRAM-SHA-256 (and -PLUS over TLS) against configured
//! verifiers, using pgwire's SCRAM state machine on frames we have already
//! delimited ourselves.

use crate::config::UserConfig;
use crate::error::SessionError;
use crate::io::FramedStream;
use crate::wire::encode;
use crate::wire::frontend::{sasl_initial, FrontendKind};
use crate::wire::Framer;
use bytes::BytesMut;
use hmac::{Hmac, Mac};
use pgwire::api::auth::sasl::scram::{ScramSecret, ScramServerAuth};
use pgwire::error::PgWireError;
use sha2::Sha256;
use std::collections::BTreeMap;

/// SASL messages are tiny; a larger one is an attack or a bug.
const MAX_SASL_MESSAGE: usize = 8 * 1024;

/// The SCRAM engines, one per transport: channel binding needs the server
/// certificate and only applies to TLS connections.
#[derive(Clone)]
pub struct ScramEngines {
    plain: ScramServerAuth,
    tls: Option<ScramServerAuth>,
    /// Key for deterministic fake salts for unknown users.
    mock_key: [u8; 32],
    /// The iteration count unknown users are given.
    mock_iterations: usize,
}

impl std::fmt::Debug for ScramEngines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramEngines")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The key of unknown users' salts: derived from the configured verifiers'
/// secret keys, so it is the same at every start (a salt that changed at a
/// restart while the real users' stay would tell which names exist, as
/// PostgreSQL's mock authentication nonce, kept in pg_control, prevents)
/// and cannot be computed by someone who holds no verifier.
fn mock_key(users: &BTreeMap<String, UserConfig>) -> [u8; 32] {
    use sha2::Digest;
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"pgward-scram-mock-salt-v1");
    for (name, user) in users {
        field(name.as_bytes());
        field(&user.verifier.salt);
        field(&user.verifier.stored_key);
        field(&user.verifier.server_key);
    }
    h.finalize().into()
}

/// The iteration count most configured users have (4096, pgward's and
/// PostgreSQL's default, when there are none): what an unknown user is
/// given, so that the count does not set it apart.
fn mock_iterations(users: &BTreeMap<String, UserConfig>) -> usize {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for user in users.values() {
        *counts.entry(user.verifier.iterations).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(iterations, n)| (n, std::cmp::Reverse(iterations)))
        .map_or(4096, |(iterations, _)| iterations)
}

impl ScramEngines {
    /// Builds the engines; `cert_pem` enables SCRAM-SHA-256-PLUS over TLS.
    /// `users` are the configured ones, whose verifiers unknown names are
    /// made to look like.
    pub fn new(
        cert_pem: Option<&[u8]>,
        users: &BTreeMap<String, UserConfig>,
    ) -> Result<Self, PgWireError> {
        let tls = match cert_pem {
            Some(pem) => {
                let mut auth = ScramServerAuth::new();
                auth.configure_certificate(pem)?;
                Some(auth)
            }
            None => None,
        };
        Ok(Self {
            plain: ScramServerAuth::new(),
            tls,
            mock_key: mock_key(users),
            mock_iterations: mock_iterations(users),
        })
    }

    /// An unknown user goes through the same exchange with a fake verifier, so
    /// the answer does not reveal which user names exist (as PostgreSQL does).
    fn mock_secret(&self, user: &str) -> ScramSecret {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.mock_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(user.as_bytes());
        let salt = mac.finalize().into_bytes()[..16].to_vec();
        ScramSecret::Verifier {
            salt,
            iterations: self.mock_iterations,
            stored_key: rand::random::<[u8; 32]>().to_vec(),
            server_key: rand::random::<[u8; 32]>().to_vec(),
        }
    }
}

fn protocol(message: &str) -> SessionError {
    SessionError::Protocol(message.to_owned())
}

async fn read_sasl_frame(conn: &mut FramedStream) -> Result<crate::wire::Frame, SessionError> {
    let frame = conn
        .read_frame(&Framer::new(MAX_SASL_MESSAGE))
        .await
        .map_err(SessionError::from_client_read)?;
    if FrontendKind::of(frame.tag()) != FrontendKind::Password {
        return Err(protocol("expected SASL response"));
    }
    Ok(frame)
}

/// Runs SCRAM with the client, ending with AuthenticationSASLFinal on success.
/// AuthenticationOk is the caller's to send, once the backend is ready too.
pub async fn authenticate(
    conn: &mut FramedStream,
    engines: &ScramEngines,
    user_name: &str,
    user: Option<&UserConfig>,
) -> Result<(), SessionError> {
    let (engine, mechanisms): (&ScramServerAuth, &[&str]) =
        match (&engines.tls, conn.stream.is_tls()) {
            (Some(tls), true) => (tls, &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]),
            _ => (&engines.plain, &["SCRAM-SHA-256"]),
        };
    let mut out = BytesMut::new();
    encode::authentication_sasl(&mut out, mechanisms);
    conn.send(&out).await?;

    let first = read_sasl_frame(conn).await?;
    let initial = sasl_initial(&first).map_err(|e| protocol(&e.to_string()))?;
    if !mechanisms.iter().any(|m| m.as_bytes() == initial.mechanism) {
        return Err(protocol("SASL authentication mechanism not offered"));
    }
    let data = initial
        .data
        .ok_or_else(|| protocol("SASLInitialResponse without data"))?;
    let secret = match user {
        Some(u) => ScramSecret::Verifier {
            salt: u.verifier.salt.clone(),
            iterations: u.verifier.iterations,
            stored_key: u.verifier.stored_key.clone(),
            server_key: u.verifier.server_key.clone(),
        },
        None => engines.mock_secret(user_name),
    };
    let (server_first, waiting) = engine
        .on_client_first_message_with_secret(data, secret)
        .map_err(|e| scram_error(e, user_name))?;
    out.clear();
    encode::authentication_sasl_continue(&mut out, server_first.as_bytes());
    conn.send(&out).await?;

    let last = read_sasl_frame(conn).await?;
    let server_final = waiting
        .on_client_final_message(last.body())
        .map_err(|e| scram_error(e, user_name))?;
    if user.is_none() {
        // Unreachable in practice (random keys), but fail closed regardless.
        return Err(SessionError::AuthFailed(user_name.to_owned()));
    }
    out.clear();
    encode::authentication_sasl_final(&mut out, server_final.as_bytes());
    conn.send(&out).await?;
    Ok(())
}

fn scram_error(e: PgWireError, user: &str) -> SessionError {
    match e {
        PgWireError::InvalidPassword(_) => SessionError::AuthFailed(user.to_owned()),
        other => {
            tracing::debug!(user, error = %other, "SCRAM exchange refused");
            // Channel-binding mismatches and malformed messages are refused
            // with the same wording PostgreSQL uses for a failed login, so
            // nothing is learned from the difference.
            SessionError::AuthFailed(user.to_owned())
        }
    }
}

//! The client side of SCRAM-SHA-256 (RFC 5802 / 7677), for pgward's login to
//! PostgreSQL, with the salted password cached per upstream.
//!
//! Why not postgres-protocol's `ScramSha256`: it runs PBKDF2 (4,096
//! HMAC-SHA-256 rounds by default) on every login. pgward logs in with the
//! same password against the same stored salt over and over; caching the
//! salted password (as sensitive as the password itself, which pgward holds
//! anyway) removes the dominant CPU cost of opening a backend connection.
//!
//! The server chooses the iteration count, so a hostile or misconfigured
//! server chooses how much CPU a login costs: the count is capped per
//! upstream, and PBKDF2 runs on tokio's blocking pool behind semaphores (a
//! global one, and one per upstream), never on the async workers that relay
//! every other session.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

type HmacSha256 = Hmac<Sha256>;

/// Salted passwords kept per upstream: a real server has one salt per role;
/// more than this only comes from a server changing salts (a password
/// change, or a hostile server defeating the cache), and the oldest goes.
const CACHED_SALTS: usize = 4;

/// PBKDF2 computations one upstream may run at once: a hostile upstream can
/// occupy at most this many blocking threads, however many logins it gets.
const PER_UPSTREAM_KDF: usize = 2;

/// A SCRAM exchange that cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The server's message does not follow RFC 5802.
    #[error("malformed SCRAM message from the server: {0}")]
    Malformed(&'static str),
    /// The server's nonce does not extend ours.
    #[error("the server's SCRAM nonce does not extend the client's")]
    Nonce,
    /// Too many PBKDF2 rounds asked for (asked, allowed).
    #[error("the server asks for {0} SCRAM iterations, more than scram_max_iterations ({1})")]
    Iterations(u32, u32),
    /// The key derivation task did not complete (runtime shutting down).
    #[error("SCRAM key derivation did not complete")]
    Derivation,
    /// The server reported an error (`e=`).
    #[error("the server rejected SCRAM authentication: {0}")]
    Server(String),
    /// The server's signature is wrong: it does not know our verifier.
    #[error("the server's SCRAM signature does not verify")]
    Signature,
}

/// Channel binding, as the client decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// The client cannot bind (no TLS): gs2 header `n,,`.
    Unsupported,
    /// The client could bind but the server did not offer -PLUS: `y,,`.
    NotOffered,
    /// tls-server-end-point with this certificate hash: `p=tls-server-end-point,,`.
    EndPoint(Vec<u8>),
}

impl Binding {
    fn gs2_header(&self) -> &'static str {
        match self {
            Binding::Unsupported => "n,,",
            Binding::NotOffered => "y,,",
            Binding::EndPoint(_) => "p=tls-server-end-point,,",
        }
    }
    fn data(&self) -> &[u8] {
        match self {
            Binding::EndPoint(hash) => hash,
            _ => &[],
        }
    }
}

/// Salted passwords of one upstream, keyed by (salt, iterations) (the
/// upstream is the owner of the cache), plus that upstream's share of the
/// key-derivation pool.
#[derive(Debug, Clone)]
pub struct SaltedPasswordCache {
    entries: Arc<Mutex<Vec<SaltedEntry>>>,
    local: Arc<Semaphore>,
    global: Arc<Semaphore>,
}

#[derive(Debug)]
struct SaltedEntry {
    salt: Vec<u8>,
    iterations: u32,
    salted: [u8; 32],
}

/// Bounds PBKDF2 computations across all upstreams (one per core).
pub fn kdf_pool() -> Arc<Semaphore> {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    Arc::new(Semaphore::new(cores.max(2)))
}

impl SaltedPasswordCache {
    /// An empty cache whose computations share `global` with other upstreams.
    pub fn new(global: Arc<Semaphore>) -> Self {
        Self {
            entries: Arc::default(),
            local: Arc::new(Semaphore::new(PER_UPSTREAM_KDF)),
            global,
        }
    }

    fn get(&self, salt: &[u8], iterations: u32) -> Option<[u8; 32]> {
        let entries = self.entries.lock().ok()?;
        entries
            .iter()
            .find(|e| e.salt == salt && e.iterations == iterations)
            .map(|e| e.salted)
    }

    fn insert(&self, salt: &[u8], iterations: u32, salted: [u8; 32]) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|e| !(e.salt == salt && e.iterations == iterations));
            if entries.len() >= CACHED_SALTS {
                entries.remove(0);
            }
            entries.push(SaltedEntry {
                salt: salt.to_vec(),
                iterations,
                salted,
            });
        }
    }

    /// The salted password for this salt and count: from the cache, or
    /// computed on the blocking pool (waiting for a permit of this upstream
    /// and then of the global pool).
    pub async fn salted_password(
        &self,
        password: &[u8],
        request: &SaltRequest,
    ) -> Result<[u8; 32], ScramError> {
        let (salt, iterations) = (&request.salt, request.iterations);
        if let Some(salted) = self.get(salt, iterations) {
            return Ok(salted);
        }
        let permit = |pool: &Arc<Semaphore>| Arc::clone(pool).acquire_owned();
        let local = permit(&self.local)
            .await
            .map_err(|_| ScramError::Derivation)?;
        // Another login may have computed it while this one waited.
        if let Some(salted) = self.get(salt, iterations) {
            return Ok(salted);
        }
        let global = permit(&self.global)
            .await
            .map_err(|_| ScramError::Derivation)?;
        let (password, salt_owned) = (normalize(password), salt.clone());
        // The permits travel with the computation: a login that times out
        // drops this future, but the thread computes on and must go on
        // counting against both pools until it ends.
        let salted = tokio::task::spawn_blocking(move || {
            let _permits = (local, global);
            hi(&password, &salt_owned, iterations)
        })
        .await
        .map_err(|_| ScramError::Derivation)?;
        self.insert(salt, iterations, salted);
        Ok(salted)
    }
}

/// What server-first asks the client to derive its key with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaltRequest {
    /// The salt.
    pub salt: Vec<u8>,
    /// PBKDF2 rounds (within the upstream's limit).
    pub iterations: u32,
}

/// PostgreSQL applies SASLprep when the password is valid UTF-8 and the
/// preparation succeeds, and uses the raw bytes otherwise.
pub(crate) fn normalize(password: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(password).map(stringprep::saslprep) {
        Ok(Ok(prepared)) => prepared.into_owned().into_bytes(),
        _ => password.to_vec(),
    }
}

pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail here.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one block (RFC 5802's Hi).
pub(crate) fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    out
}

/// One SCRAM-SHA-256 exchange, client side.
#[derive(Debug)]
pub struct ScramClient {
    binding: Binding,
    nonce: String,
    client_first_bare: String,
    /// server-first and its combined nonce, once received.
    server_first: Option<(String, String)>,
    /// ServerSignature expected in server-final, once client-final is built.
    expected_server_signature: Option<[u8; 32]>,
}

impl ScramClient {
    /// Starts an exchange with a fresh random nonce.
    pub fn new(binding: Binding) -> Self {
        let nonce_bytes: [u8; 18] = rand::random();
        Self::with_nonce(binding, "", &B64.encode(nonce_bytes))
    }

    /// Starts an exchange with a given user name and nonce (tests).
    /// PostgreSQL ignores the SCRAM user name; pgward sends an empty one.
    pub fn with_nonce(binding: Binding, user: &str, nonce: &str) -> Self {
        Self {
            binding,
            nonce: nonce.to_owned(),
            client_first_bare: format!("n={user},r={nonce}"),
            server_first: None,
            expected_server_signature: None,
        }
    }

    /// client-first-message.
    pub fn client_first(&self) -> String {
        format!("{}{}", self.binding.gs2_header(), self.client_first_bare)
    }

    /// Takes server-first-message and returns what the key must be derived
    /// with; more than `max_iterations` rounds is refused.
    pub fn server_first(
        &mut self,
        server_first: &[u8],
        max_iterations: u32,
    ) -> Result<SaltRequest, ScramError> {
        if self.server_first.is_some() {
            return Err(ScramError::Malformed("a second server-first message"));
        }
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut parts = server_first.split(',');
        let nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        let salt = parts
            .next()
            .and_then(|p| p.strip_prefix("s="))
            .and_then(|s| B64.decode(s).ok())
            .ok_or(ScramError::Malformed("no salt"))?;
        let iterations: u32 = parts
            .next()
            .and_then(|p| p.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .filter(|&i| i > 0)
            .ok_or(ScramError::Malformed("no iteration count"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        if iterations > max_iterations {
            return Err(ScramError::Iterations(iterations, max_iterations));
        }
        self.server_first = Some((server_first.to_owned(), nonce.to_owned()));
        Ok(SaltRequest { salt, iterations })
    }

    /// client-final-message, with the salted password derived as
    /// [`Self::server_first`] asked.
    pub fn client_final(&mut self, salted: &[u8; 32]) -> Result<String, ScramError> {
        let (server_first, nonce) = self
            .server_first
            .as_ref()
            .ok_or(ScramError::Malformed("client-final before server-first"))?;
        let mut cbind = self.binding.gs2_header().as_bytes().to_vec();
        cbind.extend_from_slice(self.binding.data());
        let without_proof = format!("c={},r={nonce}", B64.encode(cbind));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_key = hmac(salted, &[b"Client Key"]);
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let signature = hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(salted, &[b"Server Key"]);
        self.expected_server_signature = Some(hmac(&server_key, &[auth_message.as_bytes()]));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks server-final-message: the server proves it knows the verifier.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::Server(e.to_owned()));
        }
        let got = text
            .split(',')
            .next()
            .and_then(|v| v.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::Malformed("no server signature"))?;
        match &self.expected_server_signature {
            Some(expected) if constant_time_eq(expected, &got) => Ok(()),
            _ => Err(ScramError::Signature),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677, section 3.
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    /// server-first then client-final, deriving the key through `cache`.
    async fn exchange(
        c: &mut ScramClient,
        server_first: &str,
        password: &[u8],
        cache: &SaltedPasswordCache,
    ) -> Result<String, ScramError> {
        let request = c.server_first(server_first.as_bytes(), 100_000)?;
        let salted = cache.salted_password(password, &request).await?;
        c.client_final(&salted)
    }

    fn cache() -> SaltedPasswordCache {
        SaltedPasswordCache::new(kdf_pool())
    }

    #[tokio::test]
    async fn rfc7677_test_vector() {
        let mut c = ScramClient::with_nonce(Binding::Unsupported, "user", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let cache = cache();
        let fin = exchange(&mut c, SERVER_FIRST, b"pencil", &cache)
            .await
            .expect("final");
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("server signature");
        assert_eq!(
            c.verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::Signature)
        );
        // The cached salted password gives the same proof.
        let mut again =
            ScramClient::with_nonce(Binding::Unsupported, "user", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(
            exchange(&mut again, SERVER_FIRST, b"pencil", &cache).await,
            Ok(fin)
        );
        // The cache is keyed by (salt, iterations): the same salt with another
        // count is another key, and a wrong cached value would show here.
        let mut other =
            ScramClient::with_nonce(Binding::Unsupported, "user", "rOprNGfwEbeRWgbNEkqO");
        let other_count = SERVER_FIRST.replace("i=4096", "i=4097");
        let fin_4097 = exchange(&mut other, &other_count, b"pencil", &cache).await;
        let mut third =
            ScramClient::with_nonce(Binding::Unsupported, "user", "rOprNGfwEbeRWgbNEkqO");
        let fin_4096 = exchange(&mut third, SERVER_FIRST, b"pencil", &cache).await;
        assert!(fin_4096.is_ok() && fin_4097.is_ok());
        assert_ne!(fin_4097, fin_4096);
        // One exchange takes one server-first.
        assert!(third
            .server_first(SERVER_FIRST.as_bytes(), 100_000)
            .is_err());
    }

    #[tokio::test]
    async fn the_cache_keeps_a_few_salts() {
        let cache = cache();
        for n in 0..(CACHED_SALTS as u8 + 2) {
            let request = SaltRequest {
                salt: vec![n],
                iterations: 16,
            };
            let salted = cache
                .salted_password(b"pw", &request)
                .await
                .expect("derive");
            assert_eq!(salted, hi(b"pw", &[n], 16));
        }
        assert_eq!(cache.entries.lock().expect("lock").len(), CACHED_SALTS);
        assert_eq!(cache.get(&[0], 16), None, "the oldest went");
        assert!(cache.get(&[CACHED_SALTS as u8 + 1], 16).is_some());
        assert_eq!(cache.get(&[CACHED_SALTS as u8 + 1], 17), None);
    }

    #[test]
    fn refuses_bad_server_messages() {
        let mut c = ScramClient::with_nonce(Binding::Unsupported, "", "abc");
        let cases: &[(&str, ScramError)] = &[
            ("r=xyz,s=AAAA,i=4096", ScramError::Nonce),
            ("r=abc,s=AAAA,i=4096", ScramError::Nonce),
            ("r=abcd,s=AAAA", ScramError::Malformed("no iteration count")),
            ("r=abcd,i=4096", ScramError::Malformed("no salt")),
            ("s=AAAA,i=4096", ScramError::Malformed("no nonce")),
            (
                "r=abcd,s=AAAA,i=0",
                ScramError::Malformed("no iteration count"),
            ),
            (
                "r=abcd,s=AAAA,i=100001",
                ScramError::Iterations(100_001, 100_000),
            ),
        ];
        for (msg, err) in cases {
            assert_eq!(
                c.server_first(msg.as_bytes(), 100_000).as_ref(),
                Err(err),
                "{msg}"
            );
        }
        assert!(c.server_first(b"r=abcd,s=AAAA,i=100000", 100_000).is_ok());
        assert_eq!(
            c.verify_server_final(b"e=invalid-proof"),
            Err(ScramError::Server("invalid-proof".into()))
        );
        // No client-final yet: nothing verifies.
        assert_eq!(c.verify_server_final(b"v=AAAA"), Err(ScramError::Signature));
    }

    #[tokio::test]
    async fn channel_binding_goes_into_the_c_attribute() {
        let mut c = ScramClient::with_nonce(Binding::EndPoint(vec![1, 2, 3]), "", "n1");
        assert!(c.client_first().starts_with("p=tls-server-end-point,,"));
        let fin = exchange(&mut c, "r=n1n2,s=AAAA,i=16", b"pw", &cache())
            .await
            .expect("final");
        let mut expected = b"p=tls-server-end-point,,".to_vec();
        expected.extend_from_slice(&[1, 2, 3]);
        assert!(fin.starts_with(&format!("c={},r=n1n2,p=", B64.encode(expected))));
    }
}

//! Token test helpers: keys written to files, a `[tokens]` section, pgward
//! with client TLS, minting, TLS clients, and hand-made JWTs for the
//! refusal cases.

use super::certs::TestPki;
use super::{Backend, Pgward};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pgward::auth::token::mint::{self, MintRequest};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// An Ed25519 key written to `dir/<kid>.pem`.
pub struct TestKey {
    /// Key id.
    pub kid: String,
    /// Public key, base64url.
    pub public: String,
    /// Private key file.
    pub file: PathBuf,
}

impl TestKey {
    /// Makes a key.
    pub fn new(dir: &Path, kid: &str) -> TestKey {
        let (pem, public) = mint::keygen().expect("keygen");
        let file = dir.join(format!("{kid}-{:08x}.pem", rand::random::<u32>()));
        std::fs::write(&file, pem).expect("write key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        TestKey {
            kid: kid.to_owned(),
            public,
            file,
        }
    }

    /// Its `[[tokens.keys]]` entry.
    pub fn entry(&self, state: &str) -> String {
        format!(
            "[[tokens.keys]]\nkid = \"{}\"\npublic_key = \"{}\"\nprivate_key_file = \"{}\"\nstate = \"{state}\"\n",
            self.kid,
            self.public,
            self.file.display()
        )
    }

    /// Signs arbitrary claims with this key (for the refusal cases).
    pub fn sign(&self, claims: Value) -> String {
        let pair = mint::load_private_key(&self.file).expect("load key");
        let Value::Object(m) = claims else {
            panic!("claims must be an object")
        };
        pgward::auth::token::jwt::sign_ed25519(&pair, &self.kid, &m)
    }
}

/// pgward with client TLS and this `[tokens]` (plus `extra` sections).
pub struct TokenGateway {
    /// pgward.
    pub pw: Pgward,
    /// Its TLS material.
    pub pki: TestPki,
    /// The signing key.
    pub key: TestKey,
    /// The revocation file.
    pub revocations: PathBuf,
    /// The config file on disk (for the CLI).
    pub config_file: PathBuf,
}

/// The issuer minted test tokens carry.
pub const ISSUER: &str = "pgward-test";

impl TokenGateway {
    /// Starts pgward with tokens for users `ci-*`; `tokens_extra` goes into
    /// `[tokens]`, `extra` after it (more sections).
    pub async fn start(tokens_extra: &str, extra: &str) -> TokenGateway {
        Self::start_with(tokens_extra, extra, false).await
    }

    /// As [`Self::start`], with the revocation list in the approvals store
    /// (`revocation_store = "approvals"`, no revocation file).
    pub async fn start_revoking_in_store(tokens_extra: &str, extra: &str) -> TokenGateway {
        Self::start_with(tokens_extra, extra, true).await
    }

    async fn start_with(tokens_extra: &str, extra: &str, in_store: bool) -> TokenGateway {
        let backend = Backend::shared();
        let dir = backend.cluster.dir();
        let tag = format!("{:08x}", rand::random::<u32>());
        let pki = TestPki::new(dir, &format!("tok-{tag}"));
        let key = TestKey::new(dir, "k1");
        let retired = TestKey::new(dir, "old");
        let revocations = dir.join(format!("revoked-{tag}.log"));
        let tls = format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            pki.cert_file.display(),
            pki.key_file.display()
        );
        let config = format!(
            "{base}\n[tokens]\nissuer = \"{ISSUER}\"\nusers = [\"ci-*\"]\nclock_skew = \"0s\"\n\
             {list}\nrevocation_poll = \"100ms\"\n{tokens_extra}\n\n{k1}\n{old}\n{extra}",
            // Token groups map to roles like configured users' groups: the
            // masked auditors act as the least-privilege role.
            base = backend.config(
                &tls,
                &format!(
                    "role_map = [{{ groups = [\"auditor\"], role = \"{}\" }}, \
                     {{ users = [\"*\"], role = \"{}\" }}]",
                    super::MASKED_ROLE,
                    super::APP_ROLE
                )
            ),
            list = if in_store {
                "revocation_store = \"approvals\"".to_owned()
            } else {
                format!("revocation_file = \"{}\"", revocations.display())
            },
            k1 = key.entry("signing"),
            old = retired.entry("retired"),
        );
        let config_file = dir.join(format!("pgward-{tag}.toml"));
        std::fs::write(&config_file, &config).expect("write config");
        let pw = Pgward::start_in(&config, dir).await;
        TokenGateway {
            pw,
            pki,
            key,
            revocations,
            config_file,
        }
    }

    /// Mints a token for `user` on `appdb`.
    pub fn mint(&self, user: &str, groups: &[&str], ttl: Duration) -> mint::Minted {
        self.mint_with(user, groups, ttl, None)
    }

    /// The same with a reason (to make long tokens).
    pub fn mint_with(
        &self,
        user: &str,
        groups: &[&str],
        ttl: Duration,
        reason: Option<String>,
    ) -> mint::Minted {
        let request = MintRequest {
            user: user.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            databases: vec![super::DB.to_owned()],
            ttl,
            reason,
        };
        mint::mint(&self.pw.gateway.config, &request, SystemTime::now()).expect("mint")
    }

    /// A tokio-postgres config for `user` with this password, TLS required.
    pub fn tls_config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut c = self.pw.client_config(user, password);
        c.host("localhost").ssl_mode(SslMode::Require);
        c
    }

    /// Connects over TLS (verify-full against the test CA).
    pub async fn connect_tls(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self
            .tls_config(user, password)
            .connect(MakeRustlsConnect::new(self.pki.client_config()))
            .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Asserts that `user` with `token` is refused (over TLS) with a message
    /// containing `expected`; returns the error.
    pub async fn refused(&self, user: &str, token: &str, expected: &str) -> tokio_postgres::Error {
        let e = self
            .connect_tls(user, token)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} logged in; expected {expected:?}"));
        let got = super::message(&e);
        assert!(got.contains(expected), "expected {expected:?}, got {got:?}");
        e
    }

    /// The registry ids of `user`'s live sessions.
    pub fn sessions_of(&self, user: &str) -> Vec<u64> {
        self.pw
            .gateway
            .registry
            .list()
            .into_iter()
            .filter(|s| s.user == user)
            .map(|s| s.id)
            .collect()
    }

    /// Polls the registry until `user` has no session (up to `limit`).
    pub async fn wait_gone(&self, user: &str, limit: Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < until {
            if self.sessions_of(user).is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Standard claims of a minted token for `user`, to alter.
    pub fn claims(&self, user: &str) -> Map<String, Value> {
        let now = pgward::auth::token::unix_now();
        let Value::Object(m) = serde_json::json!({
            "iss": ISSUER, "aud": ISSUER, "sub": user, "iat": now, "nbf": now,
            "exp": now + 300, "jti": format!("j-{:016x}", rand::random::<u64>()),
            "groups": [], "databases": [super::DB]
        }) else {
            unreachable!()
        };
        m
    }

    /// [`Self::claims`] for `user` with `changes` (an object) laid over them.
    pub fn claims_with(&self, user: &str, changes: Value) -> Value {
        let mut c = self.claims(user);
        if let Value::Object(ch) = changes {
            c.extend(ch);
        }
        Value::Object(c)
    }
}

/// Waits until the wall clock passes `unix` seconds (a token's expiry).
pub async fn wait_until_unix(unix: i64) {
    while pgward::auth::token::unix_now() < unix {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A JWT from raw header and claims, signed by `sign` over its input.
pub fn hand_made(header: Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let mut t = URL_SAFE_NO_PAD.encode(header.to_string());
    t.push('.');
    t.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = sign(t.as_bytes());
    t.push('.');
    t.push_str(&URL_SAFE_NO_PAD.encode(sig));
    t
}

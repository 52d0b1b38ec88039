//! External issuers: a JWKS served by a local HTTPS server (rcgen
//! certificate) is fetched, rotated to new keys, and an old kid stops
//! working once the issuer retired it; re-reads on unknown kids are rate
//! limited; a SPIFFE JWT-SVID from a JWKS file logs in by its SPIFFE ID.

mod support;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use pgward::auth::token::jwk::to_jwk;
use pgward::auth::token::jwt::PublicKey;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::certs::TestPki;
use support::tokens::{hand_made, TokenGateway};
use support::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A signing key of an external issuer, any of the three types.
enum IdpKey {
    Es(EcdsaKeyPair),
    Rs(Box<aws_lc_rs::rsa::KeyPair>),
    Ed(Ed25519KeyPair),
}

impl IdpKey {
    fn public(&self) -> PublicKey {
        match self {
            Self::Es(k) => PublicKey::EcP256(k.public_key().as_ref().to_vec()),
            Self::Rs(k) => PublicKey::Rsa {
                n: k.public_key()
                    .modulus()
                    .big_endian_without_leading_zero()
                    .to_vec(),
                e: k.public_key()
                    .exponent()
                    .big_endian_without_leading_zero()
                    .to_vec(),
            },
            Self::Ed(k) => PublicKey::Ed25519(k.public_key().as_ref().to_vec()),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Self::Es(_) => "ES256",
            Self::Rs(_) => "RS256",
            Self::Ed(_) => "EdDSA",
        }
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "kid": kid, "typ": "JWT"});
        hand_made(header, claims, |input| match self {
            Self::Es(k) => k
                .sign(&SystemRandom::new(), input)
                .expect("sign")
                .as_ref()
                .to_vec(),
            Self::Rs(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input,
                    &mut sig,
                )
                .expect("sign");
                sig
            }
            Self::Ed(k) => k.sign(input).as_ref().to_vec(),
        })
    }
}

fn es256() -> IdpKey {
    IdpKey::Es(EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec"))
}

fn rs256() -> IdpKey {
    IdpKey::Rs(Box::new(
        aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa"),
    ))
}

fn ed25519() -> IdpKey {
    IdpKey::Ed(Ed25519KeyPair::generate().expect("ed"))
}

fn jwks(keys: &[(&str, &IdpKey)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, k)| to_jwk(kid, &k.public()))
        .collect();
    json!({ "keys": keys }).to_string()
}

/// An HTTPS server answering every request with the current JWKS.
struct JwksServer {
    port: u16,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(pki: &TestPki, body: String) -> JwksServer {
        let certs = rustls_pemfile::certs(&mut pki.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key = rustls_pemfile::private_key(&mut pki.key_pem.as_bytes())
            .expect("key")
            .expect("a key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let body = Arc::new(Mutex::new(body));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (Arc::clone(&body), Arc::clone(&hits));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, b, h) = (acceptor.clone(), Arc::clone(&b), Arc::clone(&h));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = b.lock().expect("lock").clone();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        JwksServer { port, body, hits }
    }

    fn set(&self, body: String) {
        *self.body.lock().expect("lock") = body;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

const IDP: &str = "https://idp.test";

fn issuer_section(server: &JwksServer, pki: &TestPki, min_refetch: &str) -> String {
    format!(
        r#"[[tokens.issuers]]
issuer = "{IDP}"
audience = ["pgward-prod"]
users = ["*@example.org"]
algorithms = ["ES256", "RS256"]
jwks_url = "https://localhost:{port}/.well-known/jwks.json"
jwks_ca_file = "{ca}"
jwks_min_refetch = "{min_refetch}"
user_claim = "email"
groups_claim = "groups"
"#,
        port = server.port,
        ca = pki.ca_file.display()
    )
}

fn idp_claims(email: &str) -> Value {
    let now = pgward::auth::token::unix_now();
    json!({
        "iss": IDP, "aud": ["pgward-prod", "other"], "sub": "00u1", "email": email,
        "groups": ["analyst"], "iat": now, "exp": now + 300
    })
}

async fn wait_for_hits(server: &JwksServer, n: usize) {
    while server.hits() < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_over_https_is_fetched_rotated_and_retired() {
    let dir = Backend::shared().cluster.dir();
    let pki = TestPki::new(dir, "idp");
    let (k1, k2, k3) = (es256(), rs256(), ed25519());
    let server = JwksServer::start(&pki, jwks(&[("k1", &k1)])).await;
    let tg = TokenGateway::start(&issuer_section(&server, &pki, "0s"), "").await;
    let user = "ana@example.org";
    let claims = idp_claims(user);

    // Fetched in the background at startup; the ES256 key logs in, with
    // the groups the claim names.
    let client = tg
        .connect_tls(user, &k1.sign("k1", &claims))
        .await
        .expect("k1");
    client.simple_query("SELECT 1").await.expect("query");
    let s = tg.pw.gateway.registry.list();
    assert_eq!(
        s.iter().find(|s| s.user == user).expect("session").groups,
        ["analyst"]
    );

    // Rotation: the IdP adds k2 (RSA) and k3 (Ed25519, not allowed here).
    server.set(jwks(&[("k1", &k1), ("k2", &k2), ("k3", &k3)]));
    let before = server.hits();
    tg.connect_tls(user, &k2.sign("k2", &claims))
        .await
        .expect("k2 after a re-read");
    assert!(server.hits() > before, "the unknown kid was not re-read");
    tg.refused(
        user,
        &k3.sign("k3", &claims),
        "algorithm EdDSA is not allowed",
    )
    .await;

    // Retirement: k1 leaves the JWKS. Once pgward reads it again (here on
    // the next unknown kid), k1's tokens are refused and k2's still work.
    server.set(jwks(&[("k2", &k2)]));
    tg.refused(user, &k1.sign("k9", &claims), "unknown signing key \"k9\"")
        .await;
    tg.refused(user, &k1.sign("k1", &claims), "unknown signing key \"k1\"")
        .await;
    tg.connect_tls(user, &k2.sign("k2", &claims))
        .await
        .expect("k2");

    // The issuer's other checks: audience, issuer, user mapping.
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("pgward-staging");
    tg.refused(
        user,
        &k2.sign("k2", &wrong_aud),
        "audience does not include pgward-prod",
    )
    .await;
    tg.refused(
        "bob@example.org",
        &k2.sign("k2", &claims),
        "is for user \"ana@example.org\"",
    )
    .await;
    // An IdP token for a name that is not one of its users.
    tg.refused(
        "ci-x",
        &k2.sign("k2", &claims),
        "not accepted for user \"ci-x\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_do_not_make_pgward_fetch_more_than_the_rate_limit() {
    let dir = Backend::shared().cluster.dir();
    let pki = TestPki::new(dir, "idp-limited");
    let k1 = es256();
    let server = JwksServer::start(&pki, jwks(&[("k1", &k1)])).await;
    let tg = TokenGateway::start(&issuer_section(&server, &pki, "1h"), "").await;
    wait_for_hits(&server, 1).await;
    let user = "lim@example.org";
    tg.connect_tls(user, &k1.sign("k1", &idp_claims(user)))
        .await
        .expect("k1");
    for kid in ["x1", "x2", "x3"] {
        tg.refused(
            user,
            &k1.sign(kid, &idp_claims(user)),
            "unknown signing key",
        )
        .await;
    }
    assert_eq!(server.hits(), 1, "re-read within jwks_min_refetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spiffe_jwt_svid_logs_in_by_its_spiffe_id() {
    let dir = Backend::shared().cluster.dir();
    let key = es256();
    let bundle = dir.join(format!("spiffe-{:08x}.jwks", rand::random::<u32>()));
    std::fs::write(&bundle, jwks(&[("spire-1", &key)])).expect("bundle");
    let section = format!(
        r#"[[tokens.issuers]]
issuer = "https://spire.example.org"
audience = ["pgward"]
users = ["spiffe://example.org/ci/*"]
jwks_file = "{}"
user_claim = "sub"
groups = ["ci"]
databases = ["{db}"]
"#,
        bundle.display(),
        db = support::DB
    );
    let tg = TokenGateway::start(&section, "").await;
    let id = "spiffe://example.org/ci/deployer";
    let now = pgward::auth::token::unix_now();
    let svid = json!({"iss": "https://spire.example.org", "sub": id, "aud": ["pgward"], "exp": now + 300, "iat": now});
    let client = tg
        .connect_tls(id, &key.sign("spire-1", &svid))
        .await
        .expect("svid");
    client.simple_query("SELECT 1").await.expect("query");
    let s = tg.pw.gateway.registry.list();
    assert_eq!(
        s.iter().find(|s| s.user == id).expect("session").groups,
        ["ci"]
    );
    // The audience is mandatory for an SVID: one without is refused.
    let mut no_aud = svid.clone();
    no_aud.as_object_mut().expect("object").remove("aud");
    tg.refused(
        id,
        &key.sign("spire-1", &no_aud),
        "audience does not include pgward",
    )
    .await;
    // Only the databases configured for the issuer.
    let mut other = tg.tls_config(id, &key.sign("spire-1", &svid));
    other.dbname("otherdb");
    let e = other
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
            tg.pki.client_config(),
        ))
        .await
        .err()
        .expect("otherdb refused");
    assert_eq!(support::sqlstate(&e), "42501");
}

/// With `user_claim = "email"`, the address is the identity: a token whose
/// IdP says it did not verify that address (`email_verified: false`, or
/// Cognito's `"false"`) would let anyone who typed someone else's address
/// at the IdP log in as them, and is refused. Tokens that say it was
/// verified, or say nothing (some IdPs never send the claim), log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_email_the_idp_did_not_verify_is_refused() {
    let dir = Backend::shared().cluster.dir();
    let pki = TestPki::new(dir, "idp-email");
    let k1 = es256();
    let server = JwksServer::start(&pki, jwks(&[("k1", &k1)])).await;
    let tg = TokenGateway::start(&issuer_section(&server, &pki, "0s"), "").await;
    let user = "dba@example.org";
    for unverified in [json!(false), json!("false")] {
        let mut claims = idp_claims(user);
        claims["email_verified"] = unverified;
        tg.refused(
            user,
            &k1.sign("k1", &claims),
            "the identity provider did not verify the email address",
        )
        .await;
    }
    let mut odd = idp_claims(user);
    odd["email_verified"] = json!(1);
    tg.refused(user, &k1.sign("k1", &odd), "malformed token")
        .await;
    for verified in [json!(true), json!("true"), Value::Null] {
        let mut claims = idp_claims(user);
        if !verified.is_null() {
            claims["email_verified"] = verified;
        }
        tg.connect_tls(user, &k1.sign("k1", &claims))
            .await
            .expect("a verified address logs in");
    }
}

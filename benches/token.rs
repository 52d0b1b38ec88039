//! What a token login costs pgward's CPU: splitting a compact JWT and
//! verifying its signature, per algorithm (a 400-byte token, as minted),
//! plus the claim checks. The rest of a token login (TLS, the backend
//! login) is the same as for a SCRAM login, minus SCRAM's PBKDF2.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pgward::auth::token::claims::{self, Rules};
use pgward::auth::token::jwt::{self, PublicKey};
use serde_json::{json, Value};
use std::time::Duration;

fn claims() -> Value {
    json!({
        "iss": "pgward", "aud": "pgward", "sub": "ci-deploy", "iat": 1_800_000_000,
        "nbf": 1_800_000_000, "exp": 1_800_000_900, "jti": "ckHaSlAjBq8ZFXXef4A5Xg",
        "groups": ["deploy", "dev"], "databases": ["shop"], "reason": "release 42"
    })
}

fn token(alg: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let mut t = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "k1", "typ": "JWT"}).to_string());
    t.push('.');
    t.push_str(&URL_SAFE_NO_PAD.encode(claims().to_string()));
    let sig = sign(t.as_bytes());
    t.push('.');
    t.push_str(&URL_SAFE_NO_PAD.encode(sig));
    t
}

fn bench(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let ed = Ed25519KeyPair::generate().expect("ed25519");
    let es = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("p256");
    let rs = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
    let cases = [
        (
            "EdDSA",
            token("EdDSA", |m| ed.sign(m).as_ref().to_vec()),
            PublicKey::Ed25519(ed.public_key().as_ref().to_vec()),
        ),
        (
            "ES256",
            token("ES256", |m| {
                es.sign(&rng, m).expect("sign").as_ref().to_vec()
            }),
            PublicKey::EcP256(es.public_key().as_ref().to_vec()),
        ),
        (
            "RS256",
            token("RS256", |m| {
                let mut sig = vec![0; rs.public_modulus_len()];
                rs.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
                    .expect("sign");
                sig
            }),
            PublicKey::Rsa {
                n: rs
                    .public_key()
                    .modulus()
                    .big_endian_without_leading_zero()
                    .to_vec(),
                e: rs
                    .public_key()
                    .exponent()
                    .big_endian_without_leading_zero()
                    .to_vec(),
            },
        ),
    ];
    for (alg, token, key) in &cases {
        c.bench_function(&format!("token_verify/{alg}"), |b| {
            b.iter(|| {
                let u = jwt::split(black_box(token)).expect("split");
                u.verify("k1", key).expect("verify");
            })
        });
    }
    let audiences = ["pgward".to_owned()];
    let rules = Rules {
        issuer: "pgward",
        audiences: &audiences,
        skew: Duration::from_secs(30),
        user_claim: "sub",
        groups_claim: Some("groups"),
        databases_claim: Some("databases"),
        require_jti: true,
        max_lifetime: Some(Duration::from_secs(3600)),
    };
    let Value::Object(map) = claims() else {
        unreachable!()
    };
    c.bench_function("token_claims", |b| {
        b.iter(|| claims::check(black_box(&map), &rules, 1_800_000_100).expect("valid"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Arbitrary bytes as a token, a JWKS document and a JWKS HTTP response:
//! every decoder returns an error or a value, never panics; a token that
//! splits goes through signature verification with keys of each type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgward::auth::token::{jwk, jwt};
use pgward::http_client::parse_response;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(u) = jwt::split(text) {
            let keys = [
                jwt::PublicKey::Ed25519(vec![7; 32]),
                jwt::PublicKey::EcP256(vec![4; 65]),
                jwt::PublicKey::Rsa {
                    n: vec![0xc5; 256],
                    e: vec![1, 0, 1],
                },
            ];
            for key in &keys {
                assert!(u.verify("k", key).is_err());
            }
        }
    }
    let _ = jwk::parse_jwks(data);
    let _ = parse_response(data, true);
    let _ = parse_response(data, false);
});

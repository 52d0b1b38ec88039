//! JSON Web Key Sets (RFC 7517) into verification keys, by `kid`.
//!
//! Only signature keys of the three accepted types are kept: RSA (at least
//! 2048 bits), EC P-256 and OKP Ed25519. Keys for encryption (`use: enc`),
//! of other types or curves, or without a `kid` are skipped, so an IdP that
//! publishes more than pgward uses still works; a key whose `alg` names
//! another algorithm than its type's is skipped too.

use super::jwt::{Algorithm, PublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;

/// The largest JWKS document read.
pub const MAX_JWKS_LEN: usize = 1 << 20;

/// Verification keys by `kid`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: BTreeMap<String, PublicKey>,
}

impl KeySet {
    /// The key with this id.
    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.get(kid)
    }

    /// Adds a key (a later one with the same id replaces it).
    pub fn insert(&mut self, kid: String, key: PublicKey) {
        self.keys.insert(kid, key);
    }

    /// The key ids, in order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Parses a JWKS document (`{"keys": [...]}`). Errors only when the
/// document itself is not a key set; unusable keys are skipped.
pub fn parse_jwks(bytes: &[u8]) -> Result<KeySet, String> {
    if bytes.len() > MAX_JWKS_LEN {
        return Err("the key set is larger than 1 MiB".into());
    }
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the key set is not JSON: {e}"))?;
    let Some(Value::Array(keys)) = doc.get("keys") else {
        return Err("the key set has no \"keys\" array".into());
    };
    let mut set = KeySet::default();
    for jwk in keys {
        match parse_jwk(jwk) {
            Ok(Some((kid, key))) => {
                if set.get(&kid).is_some() {
                    // Two keys with one id: which one verifies is ambiguous,
                    // so neither does.
                    return Err(format!("the key set has two keys with kid {kid:?}"));
                }
                set.insert(kid, key);
            }
            Ok(None) => {}
            Err(why) => tracing::debug!(why, "JWKS entry skipped"),
        }
    }
    Ok(set)
}

fn field<'a>(jwk: &'a Value, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

fn bytes(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    let text = field(jwk, name).ok_or_else(|| format!("no {name}"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("{name} is not base64url"))
}

/// One JWK: `Ok(None)` for a key pgward does not use.
fn parse_jwk(jwk: &Value) -> Result<Option<(String, PublicKey)>, String> {
    if field(jwk, "use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let Some(kid) = field(jwk, "kid") else {
        return Err("no kid".into());
    };
    let key = match (field(jwk, "kty"), field(jwk, "crv")) {
        (Some("RSA"), _) => {
            let n = strip_zeros(bytes(jwk, "n")?);
            let e = strip_zeros(bytes(jwk, "e")?);
            if n.len() < 256 {
                return Err("RSA modulus under 2048 bits".into());
            }
            PublicKey::Rsa { n, e }
        }
        (Some("EC"), Some("P-256")) => {
            let (x, y) = (bytes(jwk, "x")?, bytes(jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates are 32 bytes".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            PublicKey::EcP256(point)
        }
        (Some("OKP"), Some("Ed25519")) => {
            let x = bytes(jwk, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 keys are 32 bytes".into());
            }
            PublicKey::Ed25519(x)
        }
        _ => return Ok(None),
    };
    if let Some(alg) = field(jwk, "alg") {
        if Algorithm::from_jose(alg).ok() != Some(key.algorithm()) {
            return Err(format!("alg {alg} does not fit the key type"));
        }
    }
    Ok(Some((kid.to_owned(), key)))
}

/// Big-endian integers may carry leading zero bytes; the verifier wants
/// the minimal form.
fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    v.drain(..first);
    v
}

/// A public key as a JWK (for `pgward token keygen`, and tests).
pub fn to_jwk(kid: &str, key: &PublicKey) -> Value {
    let enc = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    match key {
        PublicKey::Ed25519(x) => serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid, "x": enc(x)
        }),
        PublicKey::EcP256(p) => serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": enc(p.get(1..33).unwrap_or_default()), "y": enc(p.get(33..).unwrap_or_default())
        }),
        PublicKey::Rsa { n, e } => serde_json::json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": enc(n), "e": enc(e)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_each_type_round_trip_and_others_are_skipped() {
        let ed = PublicKey::Ed25519(vec![7; 32]);
        let mut point = vec![4];
        point.extend([1; 64]);
        let ec = PublicKey::EcP256(point);
        let rsa = PublicKey::Rsa {
            n: vec![0xc5; 256],
            e: vec![1, 0, 1],
        };
        let doc = serde_json::json!({"keys": [
            to_jwk("ed", &ed), to_jwk("ec", &ec), to_jwk("rsa", &rsa),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "mislabelled", "alg": "RS256",
             "x": URL_SAFE_NO_PAD.encode([1u8; 32])},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([1u8; 32])}
        ]});
        let set = parse_jwks(doc.to_string().as_bytes()).expect("parses");
        assert_eq!(set.kids().collect::<Vec<_>>(), ["ec", "ed", "rsa"]);
        assert_eq!(set.get("ed"), Some(&ed));
        assert_eq!(set.get("ec"), Some(&ec));
        assert_eq!(set.get("rsa"), Some(&rsa));
    }

    #[test]
    fn documents_that_are_not_key_sets_are_errors() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{\"keys\": 3}",
            b"{\"nokeys\": []}",
        ] {
            assert!(parse_jwks(bad).is_err());
        }
        let twice = serde_json::json!({"keys": [
            to_jwk("k", &PublicKey::Ed25519(vec![1; 32])),
            to_jwk("k", &PublicKey::Ed25519(vec![2; 32]))
        ]});
        assert!(parse_jwks(twice.to_string().as_bytes()).is_err());
        assert!(parse_jwks(&vec![b' '; MAX_JWKS_LEN + 1]).is_err());
    }
}

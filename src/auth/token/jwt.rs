//! Compact JWS (JWT) bytes only: check, then parse; verify a signature with
//! a given key; sign with Ed25519. No I/O, no policy: which key, which
//! issuer and which claims are acceptable is decided by the callers.
//!
//! Only three algorithms exist here: RS256, ES256 and EdDSA (Ed25519).
//! `none` and every HMAC algorithm are refused by name before any key is
//! looked at, so a token "signed" with a public key as an HMAC secret can
//! never reach a verification routine (the classic algorithm-confusion
//! attack), and a key is only ever used with the one algorithm of its type.

use super::TokenError;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// The largest token accepted (the password message limit is above it).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A signature algorithm pgward accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048 to 8192-bit keys).
    Rs256,
    /// ECDSA over P-256 with SHA-256 (signature r || s, 64 bytes).
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Algorithm {
    /// All accepted algorithms, the default for an issuer.
    pub const ALL: [Algorithm; 3] = [Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa];

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The algorithm a JOSE `alg` names, refusing `none` and HMAC by name.
    pub fn from_jose(alg: &str) -> Result<Self, TokenError> {
        match alg {
            "RS256" => Ok(Self::Rs256),
            "ES256" => Ok(Self::Es256),
            "EdDSA" => Ok(Self::EdDsa),
            a if a.eq_ignore_ascii_case("none") => Err(TokenError::AlgorithmNone),
            a if a.starts_with("HS") => Err(TokenError::AlgorithmHmac(a.to_owned())),
            a => Err(TokenError::AlgorithmUnsupported(a.to_owned())),
        }
    }
}

/// A public key for one algorithm family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Ed25519, 32 bytes.
    Ed25519(Vec<u8>),
    /// P-256, the uncompressed point (0x04 || x || y, 65 bytes).
    EcP256(Vec<u8>),
    /// RSA modulus and exponent, big-endian.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
}

impl PublicKey {
    /// The one algorithm this key is used with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed25519(_) => Algorithm::EdDsa,
            Self::EcP256(_) => Algorithm::Es256,
            Self::Rsa { .. } => Algorithm::Rs256,
        }
    }

    /// Whether `sig` signs `message` under this key.
    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::Ed25519(k) => UnparsedPublicKey::new(&signature::ED25519, k)
                .verify(message, sig)
                .is_ok(),
            Self::EcP256(k) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, k)
                .verify(message, sig)
                .is_ok(),
            Self::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
        }
    }
}

/// A token split and decoded, its signature not yet checked.
#[derive(Debug)]
pub struct Unverified<'a> {
    /// The header's `alg`, already known to be one pgward accepts.
    pub alg: Algorithm,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// The payload's claims. Read only `iss` before verification (to pick
    /// the issuer whose keys verify it).
    pub claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

fn malformed(why: &str) -> TokenError {
    TokenError::Malformed(why.to_owned())
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| malformed(&format!("the {what} is not base64url")))
}

fn json_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, TokenError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(malformed(&format!("the {what} is not a JSON object"))),
    }
}

/// Splits a compact JWS: three base64url parts, a JSON header naming an
/// accepted algorithm, a JSON object payload.
pub fn split(token: &str) -> Result<Unverified<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not three dot-separated parts"));
    };
    let header = json_object(&b64(h, "header")?, "header")?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => Algorithm::from_jose(a)?,
        _ => return Err(malformed("the header has no alg")),
    };
    // RFC 7515 4.1.11: extensions a recipient does not understand must be
    // refused, and pgward understands none.
    if header.contains_key("crit") {
        return Err(malformed("critical header extensions are not supported"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(malformed("the header's kid is not a string")),
    };
    let claims = json_object(&b64(p, "payload")?, "payload")?;
    let signature = b64(s, "signature")?;
    Ok(Unverified {
        alg,
        kid,
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
    })
}

impl Unverified<'_> {
    /// Checks the signature with `key`, whose algorithm must be the header's.
    pub fn verify(&self, kid: &str, key: &PublicKey) -> Result<(), TokenError> {
        if key.algorithm() != self.alg {
            return Err(TokenError::KeyAlgorithm {
                kid: kid.to_owned(),
                alg: self.alg.name(),
            });
        }
        if key.verify(self.signing_input.as_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(TokenError::BadSignature)
        }
    }
}

/// Signs `claims` with an Ed25519 key as a compact JWS with this `kid`.
pub fn sign_ed25519(key: &Ed25519KeyPair, kid: &str, claims: &Map<String, Value>) -> String {
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string()));
    let sig = key.sign(out.as_bytes());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
    out
}

/// The Ed25519 public key of a signing key, as a [`PublicKey`].
pub fn ed25519_public(key: &Ed25519KeyPair) -> PublicKey {
    PublicKey::Ed25519(key.public_key().as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;

    fn keypair() -> Ed25519KeyPair {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
        Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("pkcs8")
    }

    fn claims() -> Map<String, Value> {
        let Value::Object(m) = serde_json::json!({"sub": "ci", "exp": 1}) else {
            unreachable!()
        };
        m
    }

    #[test]
    fn signed_token_verifies_and_tampering_does_not() {
        let key = keypair();
        let token = sign_ed25519(&key, "k1", &claims());
        let u = split(&token).expect("split");
        assert_eq!(u.kid.as_deref(), Some("k1"));
        assert_eq!(u.claims["sub"], "ci");
        u.verify("k1", &ed25519_public(&key)).expect("verifies");
        // Another key does not verify it.
        let other = ed25519_public(&keypair());
        assert!(matches!(
            u.verify("k1", &other),
            Err(TokenError::BadSignature)
        ));
        // A changed payload keeps the old signature: refused.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"root","exp":1}"#);
        parts[1] = &forged;
        let tampered = parts.join(".");
        let u = split(&tampered).expect("split");
        assert!(matches!(
            u.verify("k1", &ed25519_public(&key)),
            Err(TokenError::BadSignature)
        ));
    }

    #[test]
    fn none_hmac_and_malformed_are_refused_before_any_key() {
        let p = URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#);
        let with = |header: &str| format!("{}.{p}.", URL_SAFE_NO_PAD.encode(header));
        assert!(matches!(
            split(&with(r#"{"alg":"none"}"#)),
            Err(TokenError::AlgorithmNone)
        ));
        assert!(matches!(
            split(&with(r#"{"alg":"NONE"}"#)),
            Err(TokenError::AlgorithmNone)
        ));
        assert!(matches!(
            split(&with(r#"{"alg":"HS256","kid":"k1"}"#)),
            Err(TokenError::AlgorithmHmac(_))
        ));
        assert!(matches!(
            split(&with(r#"{"alg":"PS256"}"#)),
            Err(TokenError::AlgorithmUnsupported(_))
        ));
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.e30.",
            &with(r#"{"alg":"EdDSA","crit":["x"]}"#),
            &with(r#"{"alg":"EdDSA","kid":7}"#),
            &with(r#"["alg"]"#),
            &with(r#"{"kid":"k"}"#),
            &format!(
                "{}.bm90IGpzb24.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA"}"#)
            ),
        ] {
            assert!(
                matches!(split(bad), Err(TokenError::Malformed(_))),
                "{bad:?}"
            );
        }
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(split(&huge), Err(TokenError::Malformed(_))));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(
            h in "[A-Za-z0-9_-]{0,40}", p in "[A-Za-z0-9_-]{0,60}", s in "[A-Za-z0-9_.-]{0,90}"
        ) {
            let token = format!("{h}.{p}.{s}");
            if let Ok(u) = split(&token) {
                let _ = u.verify("k", &PublicKey::Ed25519(vec![1; 32]));
            }
            // Valid base64url around JSON fragments too.
            let j = |t: &str| URL_SAFE_NO_PAD.encode(t);
            let _ = split(&format!("{}.{}.{}", j(&h), j(&p), j(&s)));
        }
    }

    #[test]
    fn a_key_is_used_only_with_its_own_algorithm() {
        let key = keypair();
        let token = sign_ed25519(&key, "k1", &claims());
        let u = split(&token).expect("split");
        let rsa = PublicKey::Rsa {
            n: vec![1; 256],
            e: vec![1, 0, 1],
        };
        assert!(matches!(
            u.verify("k1", &rsa),
            Err(TokenError::KeyAlgorithm { .. })
        ));
    }
}

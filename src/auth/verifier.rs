//! SCRAM-SHA-256 verifiers in PostgreSQL's format:
//! `SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// A parsed verifier: what the server keeps instead of a password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 iteration count.
    pub iterations: usize,
    /// The salt.
    pub salt: Vec<u8>,
    /// `H(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramVerifier {
    /// Parses PostgreSQL's text form; the error says which part is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or("must start with \"SCRAM-SHA-256$\" (generate one with `pgward passwd USER`)")?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or("missing '$' between parameters and keys")?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or("missing ':' between iterations and salt")?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or("missing ':' between StoredKey and ServerKey")?;
        let iterations: usize = iterations
            .parse()
            .map_err(|_| "iteration count is not a number")?;
        if iterations < 4096 {
            return Err("iteration count below 4096 (RFC 7677 minimum)".into());
        }
        let b64 = |what: &str, s: &str| {
            STANDARD
                .decode(s)
                .map_err(|_| format!("{what} is not valid base64"))
        };
        let v = Self {
            iterations,
            salt: b64("salt", salt)?,
            stored_key: b64("StoredKey", stored)?,
            server_key: b64("ServerKey", server)?,
        };
        if v.stored_key.len() != 32 || v.server_key.len() != 32 {
            return Err("StoredKey and ServerKey must be 32 bytes each".into());
        }
        Ok(v)
    }

    /// Whether `password` is the one this verifier was made from (PBKDF2
    /// with the verifier's salt and count: run it off the async workers).
    /// Used where a password arrives whole (HTTP basic on the admin API).
    pub fn matches_password(&self, password: &str) -> bool {
        use crate::auth::scram_client::{hi, hmac, normalize};
        use sha2::Digest;
        let Ok(iterations) = u32::try_from(self.iterations) else {
            return false;
        };
        let salted = hi(&normalize(password.as_bytes()), &self.salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored: [u8; 32] = sha2::Sha256::digest(client_key).into();
        // Constant time: the comparison does not say how much matched.
        stored
            .iter()
            .zip(&self.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
            && self.stored_key.len() == stored.len()
    }

    /// Derives a verifier for `password` with a fresh random salt.
    pub fn generate(password: &str) -> String {
        postgres_protocol::password::scram_sha_256(password.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_only_its_own_verifier() {
        let v = ScramVerifier::parse(&ScramVerifier::generate("pencil")).unwrap();
        assert!(v.matches_password("pencil"));
        assert!(!v.matches_password("pencil2"));
        assert!(!v.matches_password(""));
    }

    #[test]
    fn generated_verifiers_parse() {
        let v = ScramVerifier::parse(&ScramVerifier::generate("s3cret")).unwrap();
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.stored_key.len(), 32);
        assert!(
            !format!("{v:?}").contains("stored"),
            "keys stay out of logs"
        );
    }

    #[test]
    fn bad_verifiers_say_why() {
        assert!(ScramVerifier::parse("md5abc")
            .unwrap_err()
            .contains("SCRAM-SHA-256$"));
        assert!(ScramVerifier::parse("SCRAM-SHA-256$10:c2FsdA==$a:b")
            .unwrap_err()
            .contains("4096"));
        assert!(ScramVerifier::parse("SCRAM-SHA-256$4096:c2FsdA==$!!:b")
            .unwrap_err()
            .contains("base64"));
    }
}

//! The hash chain and its signed checkpoints.
//!
//! Every line of the trail is a JSON object that starts with
//! `{"seq":N,"prev":"<hex>",`: `seq` counts records across all files,
//! `prev` is the SHA-256 of the previous line's bytes (without its newline),
//! so a file's first line (its `file` header) points at the last line of the
//! file before it. A checkpoint line ends with `,"sig":"<base64>"}`: an
//! Ed25519 signature over [`SIGNED_PREFIX`] followed by the line's bytes up
//! to that `,"sig":`, so it commits to every line before it through `prev`.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use base64::Engine;
use std::path::Path;

/// Domain separation for checkpoint signatures.
pub(crate) const SIGNED_PREFIX: &[u8] = b"pgward-audit-checkpoint-v1\n";
/// Where a checkpoint's signature starts.
pub(crate) const SIG_FIELD: &str = ",\"sig\":\"";

/// A line's hash.
pub(crate) type Hash = [u8; 32];

/// The `prev` of the very first record of a trail.
pub(crate) const GENESIS: Hash = [0; 32];

/// SHA-256 of one line's bytes (aws-lc's: assembly with the CPU's SHA
/// extensions where it has them; every record is hashed once).
pub(crate) fn hash_line(line: &[u8]) -> Hash {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, line);
    let mut hash = GENESIS;
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    hex_into(&mut out, bytes);
    // Hex digits only.
    String::from_utf8_lossy(&out).into_owned()
}

/// Lower-case hex, appended (one table lookup per digit: every line of the
/// trail carries 64 of them).
pub(crate) fn hex_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    out.extend(
        bytes
            .iter()
            .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]),
    );
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a key pgward wrote.
    #[error("{path}: not an Ed25519 key written by `pgward audit keygen`")]
    Invalid {
        /// The file.
        path: String,
    },
}

/// The private key that signs checkpoints.
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<private>)")
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A fresh key pair: the private key file's text (PKCS#8, base64) and the
/// public key's (32 bytes, base64).
pub fn generate_key() -> (String, String) {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    // Generation fails only if the system's random source does.
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("system random source");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a key just generated");
    (
        format!("{}\n", b64().encode(pkcs8.as_ref())),
        format!("{}\n", b64().encode(pair.public_key().as_ref())),
    )
}

fn read_b64(path: &Path) -> Result<Vec<u8>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    b64().decode(text.trim()).map_err(|_| KeyError::Invalid {
        path: path.display().to_string(),
    })
}

impl Signer {
    /// Reads a private key file written by `pgward audit keygen`.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let der = read_b64(path)?;
        let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| KeyError::Invalid {
            path: path.display().to_string(),
        })?;
        Ok(Self { pair })
    }

    /// The public key, base64 (what `audit verify --public-key` reads).
    pub fn public_key(&self) -> String {
        b64().encode(self.pair.public_key().as_ref())
    }

    fn sign(&self, body: &[u8]) -> String {
        let mut msg = Vec::with_capacity(SIGNED_PREFIX.len() + body.len());
        msg.extend_from_slice(SIGNED_PREFIX);
        msg.extend_from_slice(body);
        b64().encode(self.pair.sign(&msg).as_ref())
    }
}

/// The public key that checks checkpoints.
#[derive(Debug, Clone)]
pub struct PublicKey(Vec<u8>);

impl PublicKey {
    /// Reads a public key file (`<key>.pub` from `pgward audit keygen`).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let raw = read_b64(path)?;
        if raw.len() != 32 {
            return Err(KeyError::Invalid {
                path: path.display().to_string(),
            });
        }
        Ok(Self(raw))
    }

    /// Whether `line` (a whole checkpoint line) carries a valid signature.
    pub(crate) fn verify_line(&self, line: &[u8]) -> bool {
        let Some((body, sig)) = split_signature(line) else {
            return false;
        };
        let Ok(sig) = b64().decode(sig) else {
            return false;
        };
        let mut msg = Vec::with_capacity(SIGNED_PREFIX.len() + body.len());
        msg.extend_from_slice(SIGNED_PREFIX);
        msg.extend_from_slice(body);
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(&msg, &sig)
            .is_ok()
    }
}

/// A checkpoint line's signed part and its base64 signature.
fn split_signature(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let field = SIG_FIELD.as_bytes();
    let at = line.windows(field.len()).rposition(|w| w == field)?;
    let sig = line[at + field.len()..].strip_suffix(b"\"}")?;
    Some((&line[..at], sig))
}

/// The fields of a checkpoint line after its `type` (see [`Head::checkpoint`]).
pub(crate) fn checkpoint_fields(file: u64, reason: &str) -> String {
    format!(
        "\"time\":\"{}\",\"file\":{file},\"reason\":\"{reason}\"",
        super::event::rfc3339(std::time::SystemTime::now())
    )
}

/// A file header's JSON object: the first line of each file (and of a
/// stdout or table chain); `extra` is more `,"name":value` pairs.
pub(crate) fn header_object(file: u64, oldest: u64, extra: &str) -> String {
    format!(
        "{{\"type\":\"file\",\"time\":\"{}\",\"file\":{file},\"oldest\":{oldest}{extra}}}",
        super::event::rfc3339(std::time::SystemTime::now())
    )
}

/// Where the chain stands: the next `seq` and the hash of the last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// The next record's sequence number.
    pub(crate) seq: u64,
    /// The last line's hash.
    pub(crate) prev: Hash,
}

impl Head {
    /// The start of a new trail.
    pub(crate) fn genesis() -> Self {
        Self {
            seq: 1,
            prev: GENESIS,
        }
    }

    /// Chains a JSON object (`{...}`, not empty): returns the line (without
    /// newline) and moves the head past it.
    pub(crate) fn chain(&mut self, object: &str) -> String {
        let rest = object.strip_prefix('{').unwrap_or(object);
        let mut line = Vec::with_capacity(88 + rest.len());
        self.begin(&mut line);
        line.extend_from_slice(rest.as_bytes());
        self.seal(&line);
        // A str with ASCII put in front: valid UTF-8.
        String::from_utf8(line)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Starts the next line in `line` (cleared first): `{"seq":N,"prev":"<hex>",`.
    /// The object's members and its closing brace follow, then [`Head::seal`].
    pub(crate) fn begin(&self, line: &mut Vec<u8>) {
        line.clear();
        line.extend_from_slice(b"{\"seq\":");
        line.extend_from_slice(itoa::Buffer::new().format(self.seq).as_bytes());
        line.extend_from_slice(b",\"prev\":\"");
        hex_into(line, &self.prev);
        line.extend_from_slice(b"\",");
    }

    /// Moves the head past `line`, a whole line begun with [`Head::begin`].
    pub(crate) fn seal(&mut self, line: &[u8]) {
        self.prev = hash_line(line);
        self.seq += 1;
    }

    /// A signed checkpoint line (`signer` required): `fields` are extra
    /// `"name":value` pairs.
    pub(crate) fn checkpoint(&mut self, signer: &Signer, fields: &str) -> String {
        let mut line = format!(
            "{{\"seq\":{},\"prev\":\"{}\",\"type\":\"checkpoint\",{fields}",
            self.seq,
            hex(&self.prev)
        );
        let sig = signer.sign(line.as_bytes());
        line.push_str(SIG_FIELD);
        line.push_str(&sig);
        line.push_str("\"}");
        self.seal(line.as_bytes());
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn signer() -> (Signer, PublicKey) {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = generate_key();
        std::fs::write(dir.path().join("k"), private).unwrap();
        std::fs::write(dir.path().join("k.pub"), public).unwrap();
        (
            Signer::load(&dir.path().join("k")).unwrap(),
            PublicKey::load(&dir.path().join("k.pub")).unwrap(),
        )
    }

    #[test]
    fn line_hashes_are_plain_sha256() {
        // FIPS 180-2's "abc" vector: trails written before and after a
        // change of SHA-256 implementation verify alike.
        assert_eq!(
            hex(&hash_line(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&hash_line(b"")), hex(&sha2::Sha256::digest(b"")));
    }

    #[test]
    fn lines_chain_by_the_previous_lines_hash() {
        let mut head = Head::genesis();
        let a = head.chain("{\"type\":\"x\"}");
        assert!(a.starts_with(&format!("{{\"seq\":1,\"prev\":\"{}\",", hex(&GENESIS))));
        let b = head.chain("{\"type\":\"y\"}");
        assert!(b.contains(&hex(&hash_line(a.as_bytes()))));
        assert_eq!(head.seq, 3);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["seq"], 2);
    }

    #[test]
    fn checkpoints_verify_and_any_changed_byte_breaks_them() {
        let (signer, public) = signer();
        let mut head = Head::genesis();
        let line = head.checkpoint(&signer, "\"reason\":\"close\"");
        assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok());
        assert!(public.verify_line(line.as_bytes()));
        let mut bytes = line.clone().into_bytes();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            assert!(
                !public.verify_line(&bytes),
                "byte {i} changed and still valid"
            );
            bytes[i] ^= 1;
        }
        let (_, other) = self::signer();
        assert!(!other.verify_line(line.as_bytes()));
    }

    #[test]
    fn a_garbage_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), "bm90IGEga2V5\n").unwrap();
        assert!(Signer::load(&dir.path().join("k")).is_err());
        assert!(PublicKey::load(&dir.path().join("k")).is_err());
    }
}

//! `pgward token keygen` and `pgward token mint`: Ed25519 keys and the
//! tokens signed with them.

use super::jwt::{self, PublicKey};
use crate::config::tokens::TokensConfig;
use crate::config::Config;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{Map, Value};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PEM_LABEL: &str = "PRIVATE KEY";

/// A new Ed25519 key: the PKCS#8 PEM text and its public key (base64url).
pub fn keygen() -> Result<(String, String), String> {
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| "key generation failed".to_owned())?;
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|e| e.to_string())?;
    let mut pem = format!("-----BEGIN {PEM_LABEL}-----\n");
    let b64 = STANDARD.encode(doc.as_ref());
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    let public = match jwt::ed25519_public(&pair) {
        PublicKey::Ed25519(k) => URL_SAFE_NO_PAD.encode(k),
        _ => unreachable!("an Ed25519 pair has an Ed25519 public key"),
    };
    Ok((pem, public))
}

/// The public key from its config text (base64url, 32 bytes).
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|_| "is not base64url (as `pgward token keygen` prints it)".to_owned())?;
    if bytes.len() != 32 {
        return Err(format!(
            "an Ed25519 public key is 32 bytes, this is {}",
            bytes.len()
        ));
    }
    Ok(PublicKey::Ed25519(bytes))
}

/// Reads a PKCS#8 PEM Ed25519 private key.
pub fn load_private_key(path: &Path) -> Result<Ed25519KeyPair, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // Anyone who reads the key mints tokens: refused unless only its owner
    // can read it, as ssh refuses loose private keys.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: the private key is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != format!("-----BEGIN {PEM_LABEL}-----"))
        .skip(1)
        .take_while(|l| *l != format!("-----END {PEM_LABEL}-----"))
        .collect();
    let der = STANDARD
        .decode(body)
        .map_err(|_| format!("{}: not a PEM private key", path.display()))?;
    Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|e| format!("{}: not an Ed25519 PKCS#8 key: {e}", path.display()))
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// The user name (must match `tokens.users`).
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Databases it may open (at least one).
    pub databases: Vec<String>,
    /// Lifetime (at most `tokens.max_ttl`).
    pub ttl: Duration,
    /// Why it was issued, recorded in the token.
    pub reason: Option<String>,
}

/// A minted token and what identifies it.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The compact JWT.
    pub token: String,
    /// Its unique id.
    pub jti: String,
    /// When it expires (seconds since the epoch).
    pub expires: i64,
    /// The key that signed it.
    pub kid: String,
}

/// Signs a token for `req` with the signing key of `config`, after checking
/// that it could be used: the user is a token user, the databases exist,
/// the TTL is within `max_ttl`.
pub fn mint(config: &Config, req: &MintRequest, now: SystemTime) -> Result<Minted, String> {
    let t: &TokensConfig = &config.tokens;
    if !t.users.iter().any(|g| g.matches(&req.user)) {
        return Err(format!(
            "user {:?} does not match tokens.users, so pgward would not accept its token",
            req.user
        ));
    }
    if req.databases.is_empty() {
        return Err("name at least one --database".into());
    }
    for db in &req.databases {
        if !config.databases.contains_key(db) {
            return Err(format!("database {db:?} is not in [databases]"));
        }
    }
    if req.ttl.is_zero() || req.ttl > t.max_ttl {
        return Err(format!(
            "--ttl must be above 0 and at most tokens.max_ttl ({:?})",
            t.max_ttl
        ));
    }
    let key = t.signing_key().ok_or(
        "no key in [[tokens.keys]] has state = \"signing\" (make one with `pgward token keygen`)",
    )?;
    let path = key
        .private_key_file
        .as_ref()
        .ok_or_else(|| format!("the signing key {:?} has no private_key_file", key.kid))?;
    let pair = load_private_key(path)?;
    let iat = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970")?
        .as_secs() as i64;
    let expires = iat + req.ttl.as_secs().max(1) as i64;
    // Hex: a jti is typed on command lines (`pgward token revoke JTI`),
    // where base64url's leading '-' would read as an option.
    let jti: String = rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut claims = Map::new();
    claims.insert("iss".into(), t.issuer.clone().into());
    claims.insert("aud".into(), t.audience.clone().into());
    claims.insert("sub".into(), req.user.clone().into());
    claims.insert("iat".into(), iat.into());
    claims.insert("nbf".into(), iat.into());
    claims.insert("exp".into(), expires.into());
    claims.insert("jti".into(), jti.clone().into());
    claims.insert("groups".into(), Value::from(req.groups.clone()));
    claims.insert("databases".into(), Value::from(req.databases.clone()));
    if let Some(reason) = &req.reason {
        claims.insert("reason".into(), reason.clone().into());
    }
    Ok(Minted {
        token: jwt::sign_ed25519(&pair, &key.kid, &claims),
        jti,
        expires,
        kid: key.kid.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_output_loads_back() {
        let (pem, public) = keygen().expect("keygen");
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("k.pem");
        std::fs::write(&path, pem).expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let e = load_private_key(&path).err().unwrap_or_default();
            assert!(e.contains("readable by others"), "{e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let pair = load_private_key(&path).expect("load");
        assert_eq!(
            jwt::ed25519_public(&pair),
            parse_public_key(&public).expect("public")
        );
        assert!(parse_public_key("AAAA").is_err());
        assert!(parse_public_key("not base64!").is_err());
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        assert!(load_private_key(&path).is_err());
    }
}

//! `[tokens]`: signed tokens instead of standing passwords (docs/identity.md).
//! The raw section as written, and its conversion to typed values.

use super::{duration, field_err, resolve, ConfigError};
use crate::auth::token::jwk::{parse_jwks, KeySet};
use crate::auth::token::jwt::{Algorithm, PublicKey};
use crate::policy::rules::Glob;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[tokens]` as written.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    /// `iss` of the tokens this pgward mints, and the issuer it accepts
    /// them from. Default `"pgward"`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud` of minted tokens, required in them at login. Default: the issuer.
    #[serde(default)]
    pub audience: Option<String>,
    /// User-name patterns (`*` globs) that log in with a token minted by
    /// `pgward token mint`. Default: none.
    #[serde(default)]
    pub users: Vec<String>,
    /// Longest `--ttl` a minted token may have. Default `"1h"`.
    #[serde(default)]
    pub max_ttl: Option<String>,
    /// Clock difference tolerated on `exp`, `nbf` and `iat`. Default `"30s"`.
    #[serde(default)]
    pub clock_skew: Option<String>,
    /// Ed25519 keys of minted tokens. Default: none.
    #[serde(default)]
    pub keys: Vec<RawTokenKey>,
    /// External issuers (OIDC, SPIFFE). Default: none.
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    /// What happens when a session's token expires: `end_of_transaction`
    /// (the session ends once outside a transaction, or at `expiry_grace`)
    /// or `immediate`. Default `"end_of_transaction"`.
    #[serde(default)]
    pub on_expiry: Option<String>,
    /// The hard limit after expiry for `end_of_transaction`. Default `"30s"`.
    #[serde(default)]
    pub expiry_grace: Option<String>,
    /// Per-group `on_expiry` and `expiry_grace`; an identity in several
    /// groups gets the strictest. Default: none.
    #[serde(default)]
    pub groups: BTreeMap<String, RawGroupExpiry>,
    /// Longest any session lives, token or password (`"0"`: no limit).
    /// Default `"24h"`.
    #[serde(default)]
    pub max_session_lifetime: Option<String>,
    /// The revocation list (an append-only file `pgward token revoke`
    /// writes and every instance watches). Default: none (no revocation).
    #[serde(default)]
    pub revocation_file: Option<PathBuf>,
    /// How often running instances look for new revocations. Default `"1s"`.
    #[serde(default)]
    pub revocation_poll: Option<String>,
    /// `"approvals"`: the revocation list lives in the approvals store
    /// (`[approvals] store`: the embedded file or PostgreSQL, shared by the
    /// instances that share it) instead of `revocation_file`. Default: none.
    #[serde(default)]
    pub revocation_store: Option<String>,
    /// Tokens issued only once approvers agree (`pgward token request`).
    /// Default: none.
    #[serde(default)]
    pub requests: Vec<super::token_requests::RawTokenRequest>,
}

/// `[[tokens.keys]]`: one Ed25519 key of minted tokens.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTokenKey {
    /// Key id, in each token's header. Required, unique.
    pub kid: String,
    /// The public key, base64url (as `pgward token keygen` prints). Required.
    pub public_key: String,
    /// PKCS#8 PEM private key, needed only where tokens are minted.
    /// Default: none.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// `signing` (mints and verifies; at most one), `verify` (verifies
    /// only) or `retired` (its tokens are refused). Default `"verify"`.
    #[serde(default)]
    pub state: Option<String>,
}

/// `[[tokens.issuers]]`: an external issuer of JWTs.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// The `iss` value. Required, unique.
    pub issuer: String,
    /// Accepted `aud` values (one must be in the token). Required.
    #[serde(default)]
    pub audience: Vec<String>,
    /// User-name patterns that log in with this issuer's tokens. Required.
    #[serde(default)]
    pub users: Vec<String>,
    /// Accepted algorithms among RS256, ES256, EdDSA. Default: all three.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// A JWKS file. One of `jwks_file` and `jwks_url` is required.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// An `https://` URL serving the JWKS.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// CA bundle for `jwks_url`. Default: the public web roots.
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
    /// How often the JWKS is read again. Default `"15m"`.
    #[serde(default)]
    pub jwks_refresh: Option<String>,
    /// Least time between two reads (an unknown `kid` asks for one);
    /// `"0s"` lets every unknown kid cause a read (tests only: anyone can
    /// send unknown kids). Default `"30s"`.
    #[serde(default)]
    pub jwks_min_refetch: Option<String>,
    /// Key ids refused even while the JWKS still publishes them. Default: none.
    #[serde(default)]
    pub retired_kids: Vec<String>,
    /// The claim holding the user name. Default `"sub"`.
    #[serde(default)]
    pub user_claim: Option<String>,
    /// The claim holding groups (a string or a list). Default: none.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// The claim holding allowed databases; when set it is required.
    /// Default: none (then `databases` below applies).
    #[serde(default)]
    pub databases_claim: Option<String>,
    /// Groups every identity of this issuer gets. Default: none.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Databases its identities may open when no claim says. Default: all.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Refuse tokens without a `jti` (revocation needs one). Default false.
    #[serde(default)]
    pub require_jti: bool,
}

/// `[tokens.groups.NAME]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawGroupExpiry {
    /// As `tokens.on_expiry`. Default: `tokens.on_expiry`.
    #[serde(default)]
    pub on_expiry: Option<String>,
    /// As `tokens.expiry_grace`. Default: `tokens.expiry_grace`.
    #[serde(default)]
    pub expiry_grace: Option<String>,
}

/// `[tokens]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokensConfig {
    /// `iss` of minted tokens.
    pub issuer: String,
    /// `aud` of minted tokens.
    pub audience: String,
    /// Users who log in with minted tokens.
    pub users: Vec<Glob>,
    /// Longest minted TTL.
    pub max_ttl: Duration,
    /// Clock skew tolerated.
    pub clock_skew: Duration,
    /// Keys of minted tokens.
    pub keys: Vec<TokenKey>,
    /// External issuers.
    pub issuers: Vec<IssuerConfig>,
    /// Expiry handling for identities in no configured group.
    pub expiry: ExpiryPolicy,
    /// Expiry handling by group.
    pub group_expiry: BTreeMap<String, ExpiryPolicy>,
    /// Longest session, any identity.
    pub max_session_lifetime: Option<Duration>,
    /// The revocation list.
    pub revocation_file: Option<PathBuf>,
    /// Revocation polling interval.
    pub revocation_poll: Duration,
    /// The revocation list lives in the approvals store.
    pub revocation_store: bool,
    /// Who may ask for approved tokens, for whom.
    pub requests: Vec<super::token_requests::TokenRequestPolicy>,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Mints and verifies.
    Signing,
    /// Verifies only.
    Verify,
    /// Its tokens are refused.
    Retired,
}

/// One key of minted tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenKey {
    /// Key id.
    pub kid: String,
    /// Ed25519 public key.
    pub public: PublicKey,
    /// Private key file, where minting happens.
    pub private_key_file: Option<PathBuf>,
    /// What it may do.
    pub state: KeyState,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A file, read at startup and again on an unknown kid.
    File {
        /// The file.
        path: PathBuf,
        /// Its keys at startup.
        initial: KeySet,
    },
    /// An HTTPS URL, fetched in the background.
    Url {
        /// The URL.
        url: String,
        /// CA bundle, or the public web roots.
        ca_file: Option<PathBuf>,
    },
}

/// One external issuer, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// `iss`.
    pub issuer: String,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Users who log in with its tokens.
    pub users: Vec<Glob>,
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Its keys.
    pub jwks: JwksSource,
    /// Refresh interval.
    pub jwks_refresh: Duration,
    /// Least time between reads.
    pub jwks_min_refetch: Duration,
    /// Refused key ids.
    pub retired_kids: Vec<String>,
    /// User-name claim.
    pub user_claim: String,
    /// Groups claim.
    pub groups_claim: Option<String>,
    /// Databases claim.
    pub databases_claim: Option<String>,
    /// Static groups.
    pub groups: Vec<String>,
    /// Databases when no claim says (empty: all).
    pub databases: Vec<String>,
    /// Whether `jti` is required.
    pub require_jti: bool,
}

/// What ends a session whose token expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExpiryMode {
    /// At once, even mid-query.
    Immediate,
    /// At the end of the current transaction, at most `grace` later.
    EndOfTransaction,
}

/// An expiry mode and its hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// The mode.
    pub mode: ExpiryMode,
    /// The hard limit after expiry (`EndOfTransaction` only).
    pub grace: Duration,
}

impl TokensConfig {
    /// Whether any user logs in with a token.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty() || !self.issuers.is_empty()
    }

    /// Whether this user name logs in with a token (of any issuer).
    pub fn is_token_user(&self, user: &str) -> bool {
        self.users.iter().any(|g| g.matches(user))
            || self
                .issuers
                .iter()
                .any(|i| i.users.iter().any(|g| g.matches(user)))
    }

    /// The strictest expiry policy among these groups' (the default when
    /// none of them has one).
    pub fn expiry_for(&self, groups: &[String]) -> ExpiryPolicy {
        groups
            .iter()
            .filter_map(|g| self.group_expiry.get(g))
            .copied()
            .reduce(|a, b| ExpiryPolicy {
                mode: a.mode.min(b.mode),
                grace: a.grace.min(b.grace),
            })
            .unwrap_or(self.expiry)
    }

    /// The key minted tokens are signed with.
    pub fn signing_key(&self) -> Option<&TokenKey> {
        self.keys.iter().find(|k| k.state == KeyState::Signing)
    }
}

/// Lines for `check-config` describing `[tokens]` (nothing when unused).
pub fn explain(t: &TokensConfig) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if !t.users.is_empty() || !t.keys.is_empty() {
        let keys: Vec<String> = t
            .keys
            .iter()
            .map(|k| format!("{} ({:?})", k.kid, k.state).to_lowercase())
            .collect();
        let _ = writeln!(
            out,
            "tokens: issuer {:?}, audience {:?}, users [{}], keys [{}], max ttl {:?}",
            t.issuer,
            t.audience,
            t.users
                .iter()
                .map(Glob::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            keys.join(", "),
            t.max_ttl
        );
    }
    for i in &t.issuers {
        let source = match &i.jwks {
            JwksSource::File { path, initial } => {
                format!("{} ({} keys)", path.display(), initial.len())
            }
            JwksSource::Url { url, .. } => url.clone(),
        };
        let _ = writeln!(
            out,
            "token issuer {:?}: audience [{}], users [{}], JWKS {source}, user claim {}",
            i.issuer,
            i.audiences.join(", "),
            i.users
                .iter()
                .map(Glob::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            i.user_claim
        );
    }
    let lifetime = t
        .max_session_lifetime
        .map_or("none".to_owned(), |d| format!("{d:?}"));
    let _ = writeln!(
        out,
        "session lifetime: at most {lifetime}; on token expiry: {:?} (grace {:?}); revocation list: {}",
        t.expiry.mode,
        t.expiry.grace,
        t.revocation_file
            .as_ref()
            .map_or("none".to_owned(), |p| p.display().to_string())
    );
    out
}

fn opt_duration(
    field: &str,
    text: &Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    duration(field, text.as_deref().unwrap_or(default))
}

fn globs(field: &str, patterns: &[String]) -> Result<Vec<Glob>, ConfigError> {
    patterns
        .iter()
        .map(|p| {
            if p.is_empty() || p.chars().all(|c| c == '*') {
                Err(field_err(
                    field,
                    format!("{p:?} would match every user, SCRAM users included"),
                ))
            } else {
                Ok(Glob::new(p))
            }
        })
        .collect()
}

fn expiry_policy(
    field: &str,
    mode: Option<&str>,
    grace: Option<&str>,
    default: ExpiryPolicy,
) -> Result<ExpiryPolicy, ConfigError> {
    let mode = match mode {
        None => default.mode,
        Some("immediate") => ExpiryMode::Immediate,
        Some("end_of_transaction") => ExpiryMode::EndOfTransaction,
        Some(other) => {
            return Err(field_err(
                format!("{field}.on_expiry"),
                format!("{other:?} is not one of immediate, end_of_transaction"),
            ))
        }
    };
    let grace = match grace {
        None => default.grace,
        Some(g) => duration(&format!("{field}.expiry_grace"), g)?,
    };
    Ok(ExpiryPolicy { mode, grace })
}

/// Validates `[tokens]`; `databases` are the client database names.
pub(super) fn from_raw(
    t: RawTokens,
    base: &Path,
    databases: &BTreeMap<String, String>,
) -> Result<TokensConfig, ConfigError> {
    let issuer = t.issuer.unwrap_or_else(|| "pgward".to_owned());
    if issuer.is_empty() {
        return Err(field_err("tokens.issuer", "must not be empty"));
    }
    let audience = t.audience.unwrap_or_else(|| issuer.clone());
    let users = globs("tokens.users", &t.users)?;
    let keys = keys_from_raw(t.keys, base)?;
    if !users.is_empty() && !keys.iter().any(|k| k.state != KeyState::Retired) {
        return Err(field_err(
            "tokens.users",
            "needs a key in [[tokens.keys]] that is not retired",
        ));
    }
    let skew = opt_duration("tokens.clock_skew", &t.clock_skew, "30s")?;
    let mut issuers: Vec<IssuerConfig> = Vec::new();
    for (i, raw) in t.issuers.into_iter().enumerate() {
        let typed = issuer_from_raw(&format!("tokens.issuers[{i}]"), raw, base, databases)?;
        if typed.issuer == issuer || issuers.iter().any(|o| o.issuer == typed.issuer) {
            return Err(field_err(
                format!("tokens.issuers[{i}].issuer"),
                format!("{:?} is configured twice", typed.issuer),
            ));
        }
        issuers.push(typed);
    }
    let expiry = expiry_policy(
        "tokens",
        t.on_expiry.as_deref(),
        t.expiry_grace.as_deref(),
        ExpiryPolicy {
            mode: ExpiryMode::EndOfTransaction,
            grace: Duration::from_secs(30),
        },
    )?;
    let mut group_expiry = BTreeMap::new();
    for (name, g) in t.groups {
        let p = expiry_policy(
            &format!("tokens.groups.{name}"),
            g.on_expiry.as_deref(),
            g.expiry_grace.as_deref(),
            expiry,
        )?;
        group_expiry.insert(name, p);
    }
    let lifetime = opt_duration(
        "tokens.max_session_lifetime",
        &t.max_session_lifetime,
        "24h",
    )?;
    let max_ttl = opt_duration("tokens.max_ttl", &t.max_ttl, "1h")?;
    let requests = super::token_requests::from_raw(&t.requests, &users, max_ttl)?;
    Ok(TokensConfig {
        issuer,
        audience,
        users,
        requests,
        max_ttl,
        clock_skew: skew,
        keys,
        issuers,
        expiry,
        group_expiry,
        max_session_lifetime: (!lifetime.is_zero()).then_some(lifetime),
        revocation_store: match t.revocation_store.as_deref() {
            None => false,
            Some("approvals") if t.revocation_file.is_some() => {
                return Err(field_err(
                    "tokens.revocation_store",
                    "is set together with tokens.revocation_file; the list lives in one place",
                ))
            }
            Some("approvals") => true,
            Some(other) => {
                return Err(field_err(
                    "tokens.revocation_store",
                    format!("{other:?} is not \"approvals\" (leave it out for revocation_file)"),
                ))
            }
        },
        revocation_file: t.revocation_file.map(|p| resolve(base, p)),
        revocation_poll: opt_duration("tokens.revocation_poll", &t.revocation_poll, "1s")?,
    })
}

fn keys_from_raw(raw: Vec<RawTokenKey>, base: &Path) -> Result<Vec<TokenKey>, ConfigError> {
    let mut keys: Vec<TokenKey> = Vec::new();
    for (i, k) in raw.into_iter().enumerate() {
        let f = |leaf: &str| format!("tokens.keys[{i}].{leaf}");
        if k.kid.is_empty() || keys.iter().any(|o| o.kid == k.kid) {
            return Err(field_err(f("kid"), "must be non-empty and unique"));
        }
        let public = crate::auth::token::mint::parse_public_key(&k.public_key)
            .map_err(|m| field_err(f("public_key"), m))?;
        let state = match k.state.as_deref() {
            None | Some("verify") => KeyState::Verify,
            Some("signing") => KeyState::Signing,
            Some("retired") => KeyState::Retired,
            Some(other) => {
                return Err(field_err(
                    f("state"),
                    format!("{other:?} is not one of signing, verify, retired"),
                ))
            }
        };
        if state == KeyState::Signing && keys.iter().any(|o| o.state == KeyState::Signing) {
            return Err(field_err(f("state"), "only one key may be signing"));
        }
        let private_key_file = k.private_key_file.map(|p| resolve(base, p));
        if let Some(path) = &private_key_file {
            // Checked only where the file is configured: minting hosts.
            let pair = crate::auth::token::mint::load_private_key(path)
                .map_err(|m| field_err(f("private_key_file"), m))?;
            if crate::auth::token::jwt::ed25519_public(&pair) != public {
                return Err(field_err(
                    f("private_key_file"),
                    "does not belong to public_key",
                ));
            }
        }
        keys.push(TokenKey {
            kid: k.kid,
            public,
            private_key_file,
            state,
        });
    }
    Ok(keys)
}

fn issuer_from_raw(
    field: &str,
    r: RawIssuer,
    base: &Path,
    databases: &BTreeMap<String, String>,
) -> Result<IssuerConfig, ConfigError> {
    let f = |leaf: &str| format!("{field}.{leaf}");
    if r.issuer.is_empty() {
        return Err(field_err(f("issuer"), "must not be empty"));
    }
    if r.audience.is_empty() || r.audience.iter().any(String::is_empty) {
        return Err(field_err(
            f("audience"),
            "at least one audience is required",
        ));
    }
    if r.users.is_empty() {
        return Err(field_err(
            f("users"),
            "at least one user-name pattern is required",
        ));
    }
    let users = globs(&f("users"), &r.users)?;
    let algorithms = if r.algorithms.is_empty() {
        Algorithm::ALL.to_vec()
    } else {
        r.algorithms
            .iter()
            .map(|a| {
                Algorithm::from_jose(a).map_err(|e| {
                    field_err(
                        f("algorithms"),
                        format!("{a:?}: {e}; use RS256, ES256 or EdDSA"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let jwks = match (r.jwks_file, r.jwks_url) {
        (Some(path), None) => {
            let path = resolve(base, path);
            let bytes = std::fs::read(&path)
                .map_err(|e| field_err(f("jwks_file"), format!("{}: {e}", path.display())))?;
            let initial = parse_jwks(&bytes).map_err(|m| field_err(f("jwks_file"), m))?;
            JwksSource::File { path, initial }
        }
        (None, Some(url)) => {
            crate::http_client::Url::parse_https(&url).map_err(|m| field_err(f("jwks_url"), m))?;
            JwksSource::Url {
                url,
                ca_file: r.jwks_ca_file.map(|p| resolve(base, p)),
            }
        }
        _ => {
            return Err(field_err(
                f("jwks_file"),
                "set jwks_file or jwks_url, exactly one",
            ))
        }
    };
    for db in &r.databases {
        if !databases.contains_key(db) {
            return Err(field_err(
                f("databases"),
                format!("{db:?} is not a database in [databases]"),
            ));
        }
    }
    Ok(IssuerConfig {
        issuer: r.issuer,
        audiences: r.audience,
        users,
        algorithms,
        jwks,
        jwks_refresh: opt_duration(&f("jwks_refresh"), &r.jwks_refresh, "15m")?,
        jwks_min_refetch: opt_duration(&f("jwks_min_refetch"), &r.jwks_min_refetch, "30s")?,
        retired_kids: r.retired_kids,
        user_claim: r.user_claim.unwrap_or_else(|| "sub".to_owned()),
        groups_claim: r.groups_claim,
        databases_claim: r.databases_claim,
        groups: r.groups,
        databases: r.databases,
        require_jti: r.require_jti,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(tokens: &str) -> Result<Config, String> {
        let v = crate::auth::verifier::ScramVerifier::generate("pw");
        let text = format!(
            "[upstreams.db]\nuser = \"app\"\n[users.alice]\nscram_verifier = \"{v}\"\n{tokens}"
        );
        Config::parse(&text, std::path::Path::new("/x/pgward.toml")).map_err(|e| e.to_string())
    }

    const KEY: &str = "public_key = \"l2KoOOA_xk-rjq0B1054dWwXU2rJU3XAv1nMFMpDrwU\"";

    #[test]
    fn invalid_token_settings_name_their_field() {
        let issuer = |extra: &str| {
            format!("[tokens]\n[[tokens.issuers]]\nissuer = \"https://idp\"\njwks_url = \"https://idp/k\"\n{extra}")
        };
        let cases = [
            (issuer("users = [\"*@x\"]"), "tokens.issuers[0].audience"),
            (issuer("audience = [\"a\"]"), "tokens.issuers[0].users"),
            (
                issuer("audience = [\"a\"]\nusers = [\"*@x\"]\nalgorithms = [\"HS256\"]"),
                "tokens.issuers[0].algorithms: \"HS256\": HMAC",
            ),
            (
                issuer("audience = [\"a\"]\nusers = [\"*@x\"]\nalgorithms = [\"none\"]"),
                "tokens.issuers[0].algorithms",
            ),
            (
                issuer("audience = [\"a\"]\nusers = [\"*\"]"),
                "would match every user",
            ),
            (
                issuer("audience = [\"a\"]\nusers = [\"*@x\"]\njwks_file = \"k.json\""),
                "exactly one",
            ),
            (
                "[tokens]\n[[tokens.issuers]]\nissuer = \"i\"\naudience = [\"a\"]\nusers = [\"*@x\"]\njwks_url = \"http://idp/k\"".into(),
                "tokens.issuers[0].jwks_url",
            ),
            ("[tokens]\nusers = [\"ci-*\"]".into(), "tokens.users: needs a key"),
            (
                format!("[tokens]\nusers = [\"al*\"]\n[[tokens.keys]]\nkid = \"k\"\n{KEY}"),
                "users.alice: matches a token user pattern",
            ),
            (
                format!("[tokens]\n[[tokens.keys]]\nkid = \"k\"\n{KEY}\nstate = \"signing\"\n[[tokens.keys]]\nkid = \"j\"\n{KEY}\nstate = \"signing\""),
                "tokens.keys[1].state: only one",
            ),
            (
                "[tokens]\n[[tokens.keys]]\nkid = \"k\"\npublic_key = \"AAAA\"".into(),
                "tokens.keys[0].public_key",
            ),
            ("[tokens]\non_expiry = \"later\"".into(), "tokens.on_expiry"),
            (
                "[tokens]\n[tokens.groups.ops]\nexpiry_grace = \"soon\"".into(),
                "tokens.groups.ops.expiry_grace",
            ),
        ];
        for (text, expected) in cases {
            let e = parse(&text).expect_err(&text);
            assert!(e.contains(expected), "{text}\n=> {e}");
        }
        let ok = parse(&format!(
            "[tokens]\nusers = [\"ci-*\"]\n[[tokens.keys]]\nkid = \"k\"\n{KEY}"
        ))
        .expect("valid");
        assert!(ok.tokens.is_token_user("ci-x") && !ok.tokens.is_token_user("alice"));
        assert_eq!(ok.tokens.audience, "pgward");
    }
}

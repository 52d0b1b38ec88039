//! Signed tokens instead of standing passwords (docs/identity.md): tokens
//! minted by `pgward token mint` (Ed25519, keys in `[[tokens.keys]]`) and
//! JWTs of external issuers (OIDC, SPIFFE JWT-SVIDs; keys from a JWKS).
//!
//! - `jwt`: compact JWS bytes, signatures (pure).
//! - `jwk`: JWKS documents into keys (pure).
//! - `claims`: issuer, audience, validity, identity mapping (pure).
//! - `jwks`: an issuer's key cache and its background fetcher (over
//!   [`crate::http_client`]).
//! - `mint`: keygen and minting (the CLI).
//! - `revocation`: revoked ids, followed from the store.
//! - `expiry`: ends sessions at expiry, revocation or maximum lifetime.
//! - `login`: the password exchange that carries a token.

pub mod claims;
pub(crate) mod deadlines;
pub mod expiry;
pub mod jwk;
pub mod jwks;
pub mod jwt;
pub mod login;
pub mod mint;
pub mod revocation;

use crate::config::tokens::{IssuerConfig, KeyState, TokensConfig};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a login waits for a JWKS re-read after an unknown `kid`.
const REFETCH_WAIT: Duration = Duration::from_secs(5);

/// Why a token was refused. The message goes to the client: it says what
/// is wrong with the token, never anything about keys it does not name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, or a claim of the wrong type.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none`.
    #[error("unsigned tokens (alg \"none\") are never accepted")]
    AlgorithmNone,
    /// An HMAC algorithm.
    #[error("HMAC-signed tokens (alg {0:?}) are never accepted")]
    AlgorithmHmac(String),
    /// Another algorithm pgward does not implement.
    #[error("algorithm {0:?} is not supported (RS256, ES256 and EdDSA are)")]
    AlgorithmUnsupported(String),
    /// An algorithm the issuer is not configured for.
    #[error("algorithm {alg} is not allowed for issuer {issuer:?}")]
    AlgorithmNotAllowed {
        /// The header's algorithm.
        alg: &'static str,
        /// The issuer.
        issuer: String,
    },
    /// The header names no key.
    #[error("the token header has no kid")]
    MissingKid,
    /// The key is not (or no longer) one of the issuer's.
    #[error("unknown signing key {kid:?} for issuer {issuer:?}")]
    UnknownKey {
        /// The header's key id.
        kid: String,
        /// The issuer.
        issuer: String,
    },
    /// The key was retired.
    #[error("signing key {0:?} is retired")]
    RetiredKey(String),
    /// The header's algorithm is not the key's.
    #[error("signing key {kid:?} is not an {alg} key")]
    KeyAlgorithm {
        /// Key id.
        kid: String,
        /// The header's algorithm.
        alg: &'static str,
    },
    /// The signature does not verify.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` passed (beyond the clock skew).
    #[error("the token expired at {}", utc(*.0))]
    Expired(i64),
    /// `nbf` or `iat` is in the future (beyond the clock skew).
    #[error("the token is not valid before {}", utc(*.0))]
    NotYetValid(i64),
    /// `aud` lacks every accepted audience.
    #[error("the token's audience does not include {0}")]
    WrongAudience(String),
    /// `iss` is not the issuer whose key verified it.
    #[error("the token's issuer {0:?} is not the expected one")]
    WrongIssuer(String),
    /// No configured issuer with this `iss` serves this user name.
    #[error("tokens of issuer {issuer:?} are not accepted for user {user:?}")]
    UnknownIssuer {
        /// The token's `iss`.
        issuer: String,
        /// The user name logging in.
        user: String,
    },
    /// The token claims a longer life than its issuer gives any.
    #[error("the token is valid for {lifetime}s, longer than tokens.max_ttl ({max}s)")]
    LifetimeTooLong {
        /// `exp` - `iat`, seconds.
        lifetime: i64,
        /// The most, seconds.
        max: i64,
    },
    /// A required registered claim is missing.
    #[error("the token has no {0} claim")]
    MissingClaim(&'static str),
    /// A mapped claim is missing or empty.
    #[error("the token has no {0} claim")]
    MissingUserClaim(String),
    /// The user claim is an email address the IdP says it did not verify.
    #[error("the identity provider did not verify the email address {0:?}")]
    EmailNotVerified(String),
    /// The token names another user than the one logging in.
    #[error("the token is for user {token:?}, not {user:?}")]
    WrongUser {
        /// The token's user.
        token: String,
        /// The startup packet's user.
        user: String,
    },
    /// The token's id is on the revocation list.
    #[error("the token {0:?} was revoked")]
    Revoked(String),
    /// The revocation list could not be read: refused rather than risk a
    /// revoked token.
    #[error("the revocation list cannot be read")]
    RevocationUnavailable,
}

/// What a client sent, shortened for messages (it may be anything).
fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Days since 1970-01-01 as a proleptic Gregorian (year, month, day):
/// Howard Hinnant's civil-from-days.
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Seconds since the epoch as an RFC 3339 UTC time.
pub fn utc(secs: i64) -> String {
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A verified token's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// The user name.
    pub user: String,
    /// Its groups (claimed, plus the issuer's fixed ones).
    pub groups: Vec<String>,
    /// Databases it may open (`None`: all). An empty list from a claim
    /// opens none.
    pub databases: Option<Vec<String>>,
    /// The issuer.
    pub issuer: String,
    /// `sub`.
    pub subject: Option<String>,
    /// `jti`.
    pub jti: Option<String>,
    /// `exp`, seconds since the epoch.
    pub expires: i64,
}

struct Issuer {
    config: IssuerConfig,
    jwks: Arc<jwks::JwksCache>,
}

/// Token verification for every session, with its background tasks.
pub struct TokenAuth {
    /// `[tokens]`.
    pub config: Arc<TokensConfig>,
    own_audience: [String; 1],
    issuers: Vec<Issuer>,
    /// Revoked ids (kept across reloads while the file stays the same).
    pub revocations: Arc<revocation::RevocationList>,
    /// Live sessions by token id (revocation ends them; kept across reloads).
    pub live: Arc<expiry::LiveTokens>,
    /// Every session's deadline, in one table with one task.
    pub(crate) deadlines: Arc<deadlines::Deadlines>,
    /// What a session is told at `max_session_lifetime`, shared by all.
    lifetime_reason: Option<Arc<str>>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set by `start`: where revocations end sessions.
    pub(crate) registry: std::sync::OnceLock<Arc<crate::session::registry::Registry>>,
}

impl Drop for TokenAuth {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// The revocation list `config` names.
fn revocation_list(config: &TokensConfig) -> revocation::RevocationList {
    if config.revocation_store {
        revocation::RevocationList::in_approvals_store()
    } else {
        revocation::RevocationList::new(config.revocation_file.as_deref())
    }
}

impl TokenAuth {
    /// Prepares verification (TLS configs for JWKS URLs are built here).
    pub fn new(config: Arc<TokensConfig>) -> Result<Self, String> {
        let revocations = Arc::new(revocation_list(&config));
        Self::with_state(config, revocations, Arc::default())
    }

    /// The service for a reloaded `[tokens]`: live sessions carry over, and
    /// so does the revocation list unless its file changed.
    pub fn succeed(config: Arc<TokensConfig>, previous: &TokenAuth) -> Result<Self, String> {
        let same = config.revocation_file == previous.config.revocation_file
            && config.revocation_store == previous.config.revocation_store;
        let revocations = if same {
            Arc::clone(&previous.revocations)
        } else {
            Arc::new(revocation_list(&config))
        };
        Self::with_state(config, revocations, Arc::clone(&previous.live))
    }

    fn with_state(
        config: Arc<TokensConfig>,
        revocations: Arc<revocation::RevocationList>,
        live: Arc<expiry::LiveTokens>,
    ) -> Result<Self, String> {
        let issuers = config
            .issuers
            .iter()
            .map(|c| {
                Ok(Issuer {
                    config: c.clone(),
                    jwks: Arc::new(
                        jwks::JwksCache::new(c)
                            .map_err(|e| format!("tokens.issuers ({}): {e}", c.issuer))?,
                    ),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            lifetime_reason: config.max_session_lifetime.map(expiry::lifetime_reason),
            own_audience: [config.audience.clone()],
            revocations,
            config,
            issuers,
            live,
            deadlines: Arc::default(),
            tasks: std::sync::Mutex::new(Vec::new()),
            registry: std::sync::OnceLock::new(),
        })
    }

    /// Starts the JWKS fetchers and the revocation watcher (which ends live
    /// sessions through `registry`). Call once, inside the runtime.
    pub fn start(self: &Arc<Self>, registry: Arc<crate::session::registry::Registry>) {
        if self.registry.set(registry).is_err() {
            return; // started already
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for issuer in &self.issuers {
            tasks.push(tokio::spawn(Arc::clone(&issuer.jwks).run()));
        }
        if self.revocations.enabled() {
            let weak = Arc::downgrade(self);
            let poll = self.config.revocation_poll;
            tasks.push(tokio::spawn(expiry::watch_revocations(weak, poll)));
        }
    }

    /// Whether this user name logs in with a token.
    pub fn is_token_user(&self, user: &str) -> bool {
        self.config.is_token_user(user)
    }

    /// Verifies `token` presented by `user`, at the current time.
    pub async fn verify(&self, token: &str, user: &str) -> Result<TokenIdentity, TokenError> {
        let token = token.trim();
        let unverified = jwt::split(token)?;
        let iss = match unverified.claims.get("iss") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(TokenError::MissingClaim("iss")),
        };
        let kid = unverified.kid.clone().ok_or(TokenError::MissingKid)?;
        let c = &self.config;
        let now = unix_now();
        let identity = if iss == c.issuer && c.users.iter().any(|g| g.matches(user)) {
            let key =
                c.keys
                    .iter()
                    .find(|k| k.kid == kid)
                    .ok_or_else(|| TokenError::UnknownKey {
                        kid: shown(&kid),
                        issuer: iss.clone(),
                    })?;
            if key.state == KeyState::Retired {
                return Err(TokenError::RetiredKey(kid));
            }
            unverified.verify(&kid, &key.public)?;
            let rules = claims::Rules {
                issuer: &c.issuer,
                audiences: &self.own_audience,
                skew: c.clock_skew,
                user_claim: "sub",
                groups_claim: Some("groups"),
                databases_claim: Some("databases"),
                require_jti: true,
                // pgward mints for at most max_ttl, and key rotation counts
                // on it: a longer-lived token is refused, whoever signed it.
                max_lifetime: Some(c.max_ttl),
            };
            let checked = claims::check(&unverified.claims, &rules, now)?;
            to_identity(checked, &c.issuer, &[], &[])
        } else if let Some(issuer) = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss && i.config.users.iter().any(|g| g.matches(user)))
        {
            self.verify_external(issuer, &unverified, &kid, now).await?
        } else {
            return Err(TokenError::UnknownIssuer {
                issuer: shown(&iss),
                user: user.to_owned(),
            });
        };
        if identity.user != user {
            return Err(TokenError::WrongUser {
                token: shown(&identity.user),
                user: user.to_owned(),
            });
        }
        if let Some(jti) = &identity.jti {
            // Read the list now: a token revoked a moment ago is refused
            // even before the watcher's next poll.
            if let Err(e) = self.refresh_revocations().await {
                tracing::error!(error = %e, "revocation list unreadable; token refused");
                return Err(TokenError::RevocationUnavailable);
            }
            if self.revocations.is_revoked(jti) {
                return Err(TokenError::Revoked(jti.clone()));
            }
        }
        Ok(identity)
    }

    /// Reads new revocations and ends the live sessions they name.
    pub async fn refresh_revocations(&self) -> Result<(), crate::store::StoreError> {
        let new = self.revocations.refresh().await?;
        if let Some(registry) = self.registry.get() {
            expiry::end_revoked(self, registry, &new);
        }
        Ok(())
    }

    async fn verify_external(
        &self,
        issuer: &Issuer,
        unverified: &jwt::Unverified<'_>,
        kid: &str,
        now: i64,
    ) -> Result<TokenIdentity, TokenError> {
        let cfg = &issuer.config;
        if !cfg.algorithms.contains(&unverified.alg) {
            return Err(TokenError::AlgorithmNotAllowed {
                alg: unverified.alg.name(),
                issuer: cfg.issuer.clone(),
            });
        }
        if cfg.retired_kids.iter().any(|k| k == kid) {
            return Err(TokenError::RetiredKey(kid.to_owned()));
        }
        let mut keys = issuer.jwks.keys();
        if keys.get(kid).is_none() && issuer.jwks.refetch(REFETCH_WAIT).await {
            keys = issuer.jwks.keys();
        }
        let key = keys.get(kid).ok_or_else(|| TokenError::UnknownKey {
            kid: shown(kid),
            issuer: cfg.issuer.clone(),
        })?;
        unverified.verify(kid, key)?;
        let rules = claims::Rules {
            issuer: &cfg.issuer,
            audiences: &cfg.audiences,
            skew: self.config.clock_skew,
            user_claim: &cfg.user_claim,
            groups_claim: cfg.groups_claim.as_deref(),
            databases_claim: cfg.databases_claim.as_deref(),
            require_jti: cfg.require_jti,
            max_lifetime: None,
        };
        let checked = claims::check(&unverified.claims, &rules, now)?;
        Ok(to_identity(
            checked,
            &cfg.issuer,
            &cfg.groups,
            &cfg.databases,
        ))
    }
}

fn to_identity(
    c: claims::Checked,
    issuer: &str,
    extra_groups: &[String],
    default_databases: &[String],
) -> TokenIdentity {
    let mut groups = c.groups;
    for g in extra_groups {
        if !groups.contains(g) {
            groups.push(g.clone());
        }
    }
    TokenIdentity {
        user: c.user,
        groups,
        databases: c
            .databases
            .or_else(|| (!default_databases.is_empty()).then(|| default_databases.to_vec())),
        issuer: issuer.to_owned(),
        subject: c.subject,
        jti: c.jti,
        expires: c.expires,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_times() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_800_000_000), "2027-01-15T08:00:00Z");
    }
}

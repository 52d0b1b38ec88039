//! Claim checks and mapping, after the signature verified: a pure function
//! of the claims, what the issuer requires, and the time.

use super::TokenError;
use serde_json::{Map, Value};
use std::time::Duration;

/// What an issuer requires of a token's claims, and where its identity is.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// The `iss` the token must carry.
    pub issuer: &'a str,
    /// `aud` must contain one of these (never empty: audience is required).
    pub audiences: &'a [String],
    /// Tolerance for `exp` and `nbf` between clocks.
    pub skew: Duration,
    /// The claim holding the user name.
    pub user_claim: &'a str,
    /// The claim holding groups, when the issuer sends them.
    pub groups_claim: Option<&'a str>,
    /// The claim holding allowed databases, when the issuer sends them.
    pub databases_claim: Option<&'a str>,
    /// Whether a `jti` is required (always for pgward's own tokens).
    pub require_jti: bool,
    /// The longest life (`exp` - `iat`) a token may claim, when the
    /// issuer has one (pgward's own: `tokens.max_ttl`); `iat` is then
    /// required.
    pub max_lifetime: Option<Duration>,
}

/// The identity a token carries, its claims checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The user name (from `user_claim`).
    pub user: String,
    /// `sub`, when present.
    pub subject: Option<String>,
    /// Groups from `groups_claim` (empty when absent).
    pub groups: Vec<String>,
    /// Databases from `databases_claim`; `None` when the issuer sends none.
    pub databases: Option<Vec<String>>,
    /// `jti`, when present.
    pub jti: Option<String>,
    /// `exp`, seconds since the epoch.
    pub expires: i64,
}

/// A NumericDate (RFC 7519 2): seconds, possibly fractional.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => match v.as_i64().or_else(|| {
            v.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f.floor() as i64)
        }) {
            Some(t) => Ok(Some(t)),
            None => Err(TokenError::Malformed(format!(
                "the {name} claim is not a date"
            ))),
        },
    }
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::Malformed(format!(
            "the {name} claim is not a string"
        ))),
    }
}

/// A claim holding one string or an array of strings.
fn strings_claim(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<Vec<String>>, TokenError> {
    let bad = || TokenError::Malformed(format!("the {name} claim is not a list of strings"));
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// An address as the identity is only as good as the IdP's check of it:
/// `email_verified` false (a boolean, or Cognito's string) means anyone
/// could have typed it, and is refused. Absent, the IdP vouches for the
/// address by sending it (some never send the claim).
fn email_verified(claims: &Map<String, Value>, user: &str) -> Result<(), TokenError> {
    let unverified = || TokenError::EmailNotVerified(user.chars().take(80).collect());
    match claims.get("email_verified") {
        None | Some(Value::Bool(true)) => Ok(()),
        Some(Value::String(s)) if s == "true" => Ok(()),
        Some(Value::Bool(false)) => Err(unverified()),
        Some(Value::String(s)) if s == "false" => Err(unverified()),
        Some(_) => Err(TokenError::Malformed(
            "the email_verified claim is not a boolean".into(),
        )),
    }
}

/// Checks issuer, audience and validity period at `now` (seconds since
/// the epoch), then maps the identity claims.
pub fn check(
    claims: &Map<String, Value>,
    rules: &Rules<'_>,
    now: i64,
) -> Result<Checked, TokenError> {
    let iss = string_claim(claims, "iss")?.unwrap_or_default();
    if iss != rules.issuer {
        return Err(TokenError::WrongIssuer(iss));
    }
    let audiences = strings_claim(claims, "aud")?.unwrap_or_default();
    if !audiences.iter().any(|a| rules.audiences.contains(a)) {
        return Err(TokenError::WrongAudience(rules.audiences.join(", ")));
    }
    let skew = i64::try_from(rules.skew.as_secs()).unwrap_or(i64::MAX);
    let expires = numeric_date(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    if now >= expires.saturating_add(skew) {
        return Err(TokenError::Expired(expires));
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if now.saturating_add(skew) < nbf {
            return Err(TokenError::NotYetValid(nbf));
        }
    }
    // A token issued in the future is as suspect as one not yet valid.
    let issued = numeric_date(claims, "iat")?;
    if let Some(iat) = issued {
        if now.saturating_add(skew) < iat {
            return Err(TokenError::NotYetValid(iat));
        }
    }
    if let Some(max) = rules.max_lifetime {
        let iat = issued.ok_or(TokenError::MissingClaim("iat"))?;
        let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        let lifetime = expires.saturating_sub(iat);
        if lifetime > max.saturating_add(skew) {
            return Err(TokenError::LifetimeTooLong { lifetime, max });
        }
    }
    let jti = string_claim(claims, "jti")?;
    if rules.require_jti && jti.as_deref().is_none_or(str::is_empty) {
        return Err(TokenError::MissingClaim("jti"));
    }
    let user = match string_claim(claims, rules.user_claim)? {
        Some(u) if !u.is_empty() => u,
        _ => return Err(TokenError::MissingUserClaim(rules.user_claim.to_owned())),
    };
    if rules.user_claim == "email" {
        email_verified(claims, &user)?;
    }
    let groups = match rules.groups_claim {
        Some(name) => strings_claim(claims, name)?.unwrap_or_default(),
        None => Vec::new(),
    };
    let databases = match rules.databases_claim {
        Some(name) => Some(
            strings_claim(claims, name)?
                .ok_or_else(|| TokenError::MissingUserClaim(name.to_owned()))?,
        ),
        None => None,
    };
    Ok(Checked {
        user,
        subject: string_claim(claims, "sub")?,
        groups,
        databases,
        jti,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn rules(aud: &[String]) -> Rules<'_> {
        Rules {
            issuer: "https://idp",
            audiences: aud,
            skew: Duration::from_secs(30),
            user_claim: "email",
            groups_claim: Some("groups"),
            databases_claim: None,
            require_jti: false,
            max_lifetime: None,
        }
    }

    fn claims(extra: Value) -> Map<String, Value> {
        let mut base = serde_json::json!({
            "iss": "https://idp", "aud": ["other", "pgward"], "sub": "u-1",
            "email": "ci@example.org", "groups": ["dev", "ops"],
            "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 60
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
            b.extend(e);
        }
        match base {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_valid_token_maps_to_its_identity() {
        let aud = vec!["pgward".to_owned()];
        let got = check(&claims(serde_json::json!({})), &rules(&aud), NOW).expect("valid");
        assert_eq!(got.user, "ci@example.org");
        assert_eq!(got.subject.as_deref(), Some("u-1"));
        assert_eq!(got.groups, ["dev", "ops"]);
        assert_eq!(got.expires, NOW + 60);
        // A single-string audience and fractional dates are valid too.
        let c = claims(serde_json::json!({"aud": "pgward", "exp": (NOW + 60) as f64 + 0.5}));
        assert!(check(&c, &rules(&aud), NOW).is_ok());
        // Within the skew, a just-expired token still passes.
        let c = claims(serde_json::json!({"exp": NOW - 29}));
        assert!(check(&c, &rules(&aud), NOW).is_ok());
    }

    #[test]
    fn each_failed_check_has_its_own_error() {
        let aud = vec!["pgward".to_owned()];
        let r = rules(&aud);
        type Expect = fn(&TokenError) -> bool;
        let cases: Vec<(Value, Expect)> = vec![
            (serde_json::json!({"exp": NOW - 31}), |e| {
                matches!(e, TokenError::Expired(_))
            }),
            (serde_json::json!({"nbf": NOW + 31}), |e| {
                matches!(e, TokenError::NotYetValid(_))
            }),
            (serde_json::json!({"iat": NOW + 31}), |e| {
                matches!(e, TokenError::NotYetValid(_))
            }),
            (serde_json::json!({"aud": "someone-else"}), |e| {
                matches!(e, TokenError::WrongAudience(_))
            }),
            (serde_json::json!({"aud": []}), |e| {
                matches!(e, TokenError::WrongAudience(_))
            }),
            (serde_json::json!({"iss": "https://evil"}), |e| {
                matches!(e, TokenError::WrongIssuer(_))
            }),
            (serde_json::json!({"exp": "tomorrow"}), |e| {
                matches!(e, TokenError::Malformed(_))
            }),
            (serde_json::json!({"exp": null}), |e| {
                matches!(e, TokenError::Malformed(_))
            }),
            (serde_json::json!({"groups": [1]}), |e| {
                matches!(e, TokenError::Malformed(_))
            }),
            (serde_json::json!({"email": ""}), |e| {
                matches!(e, TokenError::MissingUserClaim(_))
            }),
        ];
        for (extra, expected) in cases {
            let text = extra.to_string();
            let e = check(&claims(extra), &r, NOW).expect_err(&text);
            assert!(expected(&e), "{text}: {e}");
        }
        let mut no_exp = claims(serde_json::json!({}));
        no_exp.remove("exp");
        assert!(matches!(
            check(&no_exp, &r, NOW),
            Err(TokenError::MissingClaim("exp"))
        ));
        let strict = Rules {
            require_jti: true,
            databases_claim: Some("dbs"),
            ..r
        };
        assert!(matches!(
            check(&claims(serde_json::json!({})), &strict, NOW),
            Err(TokenError::MissingClaim("jti"))
        ));
        let c = claims(serde_json::json!({"jti": "j1", "dbs": ["shop"]}));
        let got = check(&c, &strict, NOW).expect("valid");
        // A life longer than the issuer's maximum, or none to measure.
        let bounded = Rules {
            max_lifetime: Some(Duration::from_secs(60)),
            ..r
        };
        assert!(check(&claims(serde_json::json!({})), &bounded, NOW).is_ok());
        let long = claims(serde_json::json!({"exp": NOW + 3600}));
        assert!(matches!(
            check(&long, &bounded, NOW),
            Err(TokenError::LifetimeTooLong {
                lifetime: 3610,
                max: 60
            })
        ));
        // The address as identity needs the IdP's word that it is theirs.
        for (verified, ok) in [
            (serde_json::json!(true), true),
            (serde_json::json!("true"), true),
            (serde_json::json!(false), false),
            (serde_json::json!("false"), false),
        ] {
            let c = claims(serde_json::json!({ "email_verified": verified }));
            assert_eq!(check(&c, &r, NOW).is_ok(), ok, "{verified}");
        }
        let mut no_iat = claims(serde_json::json!({}));
        no_iat.remove("iat");
        assert!(matches!(
            check(&no_iat, &bounded, NOW),
            Err(TokenError::MissingClaim("iat"))
        ));
        assert_eq!(got.databases, Some(vec!["shop".to_owned()]));
        assert_eq!(got.jti.as_deref(), Some("j1"));
    }
}

//! `[[tokens.requests]]`: who may ask for a token that is issued only once
//! approvers agree (`pgward token request`, docs/identity.md).

use super::{duration, field_err, ConfigError};
use crate::policy::rules::Glob;
use serde::Deserialize;
use std::time::Duration;

/// `[[tokens.requests]]` as written.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTokenRequest {
    /// Token user names that may be asked for (`*` globs; each must also
    /// match `tokens.users`). Required.
    pub subjects: Vec<String>,
    /// Groups of the pgward identities who may ask. Required.
    pub requesters: Vec<String>,
    /// Groups whose members approve. Required.
    pub approvers: Vec<String>,
    /// Approvals needed (any one denial ends the request). Default 1.
    #[serde(default)]
    pub approvals_required: Option<u32>,
    /// The `groups` claim of the tokens issued (the requester cannot
    /// choose them). Default: none.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Longest TTL asked for (at most `tokens.max_ttl`). Default: `max_ttl`.
    #[serde(default)]
    pub max_ttl: Option<String>,
}

/// `[[tokens.requests]]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequestPolicy {
    /// Token users that may be asked for.
    pub subjects: Vec<Glob>,
    /// Groups that may ask.
    pub requesters: Vec<String>,
    /// Groups that approve.
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub threshold: u32,
    /// The issued tokens' groups.
    pub groups: Vec<String>,
    /// Longest TTL.
    pub max_ttl: Duration,
}

impl TokenRequestPolicy {
    /// Whether `subject` may be asked for by an identity in `groups`.
    pub fn allows(&self, subject: &str, groups: &[String]) -> bool {
        self.subjects.iter().any(|g| g.matches(subject))
            && groups.iter().any(|g| self.requesters.contains(g))
    }
}

/// Validates the entries; `token_users` are `tokens.users`.
pub(super) fn from_raw(
    raw: &[RawTokenRequest],
    token_users: &[Glob],
    max_ttl: Duration,
) -> Result<Vec<TokenRequestPolicy>, ConfigError> {
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let at = |leaf: &str| format!("tokens.requests[{i}].{leaf}");
        for (leaf, list) in [
            ("subjects", &r.subjects),
            ("requesters", &r.requesters),
            ("approvers", &r.approvers),
        ] {
            if list.is_empty() || list.iter().any(String::is_empty) {
                return Err(field_err(at(leaf), "must name at least one, none empty"));
            }
        }
        if token_users.is_empty() {
            return Err(field_err(
                at("subjects"),
                "tokens.users is empty, so no requested token could log in",
            ));
        }
        let threshold = r.approvals_required.unwrap_or(1);
        if !(1..=16).contains(&threshold) {
            return Err(field_err(
                at("approvals_required"),
                "must be between 1 and 16",
            ));
        }
        let ttl = match &r.max_ttl {
            Some(t) => {
                let d = duration(&at("max_ttl"), t)?;
                if d.is_zero() || d > max_ttl {
                    return Err(field_err(
                        at("max_ttl"),
                        format!("must be above 0 and at most tokens.max_ttl ({max_ttl:?})"),
                    ));
                }
                d
            }
            None => max_ttl,
        };
        out.push(TokenRequestPolicy {
            subjects: r.subjects.iter().map(|s| Glob::new(s)).collect(),
            requesters: r.requesters.clone(),
            approvers: r.approvers.clone(),
            threshold,
            groups: r.groups.clone(),
            max_ttl: ttl,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(requesters: &[&str], max_ttl: Option<&str>) -> RawTokenRequest {
        RawTokenRequest {
            subjects: vec!["ci-*".into()],
            requesters: requesters.iter().map(|s| s.to_string()).collect(),
            approvers: vec!["dba".into()],
            approvals_required: None,
            groups: vec!["deploy".into()],
            max_ttl: max_ttl.map(str::to_owned),
        }
    }

    fn field(r: Result<Vec<TokenRequestPolicy>, ConfigError>) -> String {
        match r {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn entries_are_checked_and_allow_only_their_subjects_and_requesters() {
        let users = [Glob::new("ci-*")];
        let hour = Duration::from_secs(3600);
        let ok = from_raw(&[raw(&["dev"], Some("30m"))], &users, hour).expect("valid");
        assert_eq!(ok[0].max_ttl, Duration::from_secs(1800));
        assert!(ok[0].allows("ci-agent", &["dev".into()]));
        assert!(!ok[0].allows("ci-agent", &["ops".into()]));
        assert!(!ok[0].allows("prod-agent", &["dev".into()]));
        assert_eq!(
            field(from_raw(&[raw(&[], None)], &users, hour)),
            "tokens.requests[0].requesters"
        );
        assert_eq!(
            field(from_raw(&[raw(&["dev"], Some("2h"))], &users, hour)),
            "tokens.requests[0].max_ttl"
        );
        assert_eq!(
            field(from_raw(&[raw(&["dev"], None)], &[], hour)),
            "tokens.requests[0].subjects"
        );
    }
}

//! Elevation: a role grant ([`GrantScope::Role`]) makes the identity's
//! sessions on that database log in as the granted role, and each such
//! session ends, with a FATAL that says why, when its grant expires or is
//! revoked.
//!
//! Expiry uses the shared deadline table of the token deadlines (one task
//! for every session's deadline, no timer per session); revocation is
//! noticed when the store announces the grant's change (from any instance
//! sharing the store) and ends the sessions the grant elevated.

use super::model::{now_ms, Grant, GrantScope};
use crate::auth::token::deadlines::{DeadlineGuard, Deadlines};
use crate::config::tokens::{ExpiryMode, ExpiryPolicy};
use crate::session::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// Ending an elevated session does not wait for its transaction: the
/// access the grant gave ends with it.
const AT_ONCE: ExpiryPolicy = ExpiryPolicy {
    mode: ExpiryMode::Immediate,
    grace: Duration::ZERO,
};

/// The sessions in this instance elevated by each grant, with the role.
#[derive(Default)]
pub(crate) struct Elevations {
    live: Mutex<HashMap<String, Vec<(u64, String)>>>,
    registry: OnceLock<Arc<Registry>>,
}

/// A session's elevation; dropping it (the session ended) forgets it and
/// takes its deadline out of the table.
pub struct ElevationGuard {
    elevations: Arc<Elevations>,
    grant: String,
    session: u64,
    _deadline: DeadlineGuard,
}

impl std::fmt::Debug for ElevationGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElevationGuard")
            .field("grant", &self.grant)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl Drop for ElevationGuard {
    fn drop(&mut self) {
        let mut live = self.elevations.lock();
        if let Some(ids) = live.get_mut(&self.grant) {
            ids.retain(|(id, _)| *id != self.session);
            if ids.is_empty() {
                live.remove(&self.grant);
            }
        }
    }
}

/// The role a grant elevates to on `database`, if it is a role grant for
/// that database.
pub(crate) fn granted_role<'g>(grant: &'g Grant, database: &str) -> Option<&'g str> {
    match &grant.scope {
        GrantScope::Role { database: d, role } if d == database => Some(role),
        _ => None,
    }
}

/// The FATAL's reason once `grant` no longer elevates sessions to `role`
/// (`None` while it does).
pub(crate) fn ended_reason(grant: &Grant, role: &str, now: u64) -> Option<String> {
    if let Some(r) = &grant.revoked {
        let why = r
            .reason
            .as_deref()
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        return Some(format!(
            "the grant {} that elevated this session to role {role} was revoked by {}{why}",
            grant.id, r.by
        ));
    }
    (now >= grant.expires_at).then(|| {
        format!(
            "the grant {} that elevated this session to role {role} expired",
            grant.id
        )
    })
}

impl std::fmt::Debug for Elevations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elevations")
            .field("live", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl Elevations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(u64, String)>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `grant` elevated session `session` to `role`, and
    /// schedules its end at the grant's expiry.
    pub(crate) fn add(
        self: &Arc<Self>,
        grant: &Grant,
        role: &str,
        session: u64,
        registry: &Arc<Registry>,
        deadlines: &Arc<Deadlines>,
    ) -> ElevationGuard {
        let _ = self.registry.set(Arc::clone(registry));
        self.lock()
            .entry(grant.id.clone())
            .or_default()
            .push((session, role.to_owned()));
        let left = Duration::from_millis(grant.expires_at.saturating_sub(now_ms()));
        let reason = Arc::from(format!(
            "the grant {} that elevated this session to role {role} expired",
            grant.id
        ));
        let deadline = deadlines.add(
            tokio::time::Instant::now() + left,
            session,
            reason,
            AT_ONCE,
            registry,
        );
        ElevationGuard {
            elevations: Arc::clone(self),
            grant: grant.id.clone(),
            session,
            _deadline: deadline,
        }
    }

    /// The grants that elevated live sessions here.
    pub(crate) fn grants(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Ends the sessions `grant` elevated, when it has ended (revoked, or
    /// expired and not yet ended by its deadline).
    pub(crate) fn settle(&self, grant: &Grant) {
        let sessions = self.lock().get(&grant.id).cloned().unwrap_or_default();
        let now = now_ms();
        for (id, role) in sessions {
            if let Some(reason) = ended_reason(grant, &role, now) {
                self.end(id, reason);
            }
        }
    }

    /// Ends the sessions of a grant that is no longer in the store.
    pub(crate) fn forget(&self, grant: &str) {
        let sessions = self.lock().get(grant).cloned().unwrap_or_default();
        for (id, role) in sessions {
            self.end(
                id,
                format!(
                    "the grant {grant} that elevated this session to role {role} no longer exists"
                ),
            );
        }
    }

    /// Ends elevated session `id` now, for `reason` (asking again until it
    /// is gone, as at a token's expiry).
    pub(crate) fn end(&self, id: u64, reason: String) {
        let Some(registry) = self.registry.get() else {
            return;
        };
        tracing::info!(session = id, reason, "ending elevated session");
        tokio::spawn(crate::auth::token::expiry::end_session(
            Arc::clone(registry),
            id,
            Arc::from(reason),
            AT_ONCE,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::model::{GrantSubject, Revocation};

    fn role_grant(expires_at: u64) -> Grant {
        Grant {
            id: "g1".into(),
            subject: GrantSubject::Group("oncall".into()),
            scope: GrantScope::Role {
                database: "db".into(),
                role: "admin".into(),
            },
            created_by: "boss".into(),
            created_at: 0,
            expires_at,
            reason: None,
            revoked: None,
        }
    }

    #[test]
    fn role_grants_elevate_on_their_database_only() {
        let g = role_grant(10);
        assert_eq!(granted_role(&g, "db"), Some("admin"));
        assert_eq!(granted_role(&g, "other"), None);
        let mut rule = g.clone();
        rule.scope = GrantScope::Rule("r".into());
        assert_eq!(granted_role(&rule, "db"), None);
    }

    #[test]
    fn the_reason_names_the_grant_the_role_and_who_revoked_it() {
        let mut g = role_grant(10);
        assert_eq!(ended_reason(&g, "admin", 9), None);
        assert_eq!(
            ended_reason(&g, "admin", 10).as_deref(),
            Some("the grant g1 that elevated this session to role admin expired")
        );
        g.revoked = Some(Revocation {
            by: "carol".into(),
            at: 5,
            reason: Some("incident closed".into()),
        });
        assert_eq!(
            ended_reason(&g, "admin", 6).as_deref(),
            Some(
                "the grant g1 that elevated this session to role admin was revoked by carol: \
                 incident closed"
            )
        );
    }
}

//! Credentials end inside live sessions: at a token's expiry, at the
//! session's maximum lifetime (any identity), and on revocation. Each goes
//! through the session registry's control channel, so the relay ends the
//! session between messages with a FATAL naming the reason.

use super::TokenAuth;
use crate::auth::identity::Authenticated;
use crate::config::tokens::ExpiryMode;
use crate::session::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How often a session that was asked to end is asked again.
const RETRY: Duration = Duration::from_secs(1);

/// Live sessions by token id.
#[derive(Debug, Default)]
pub struct LiveTokens {
    map: Mutex<HashMap<String, Vec<u64>>>,
}

impl LiveTokens {
    fn add(&self, jti: &str, id: u64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(jti.to_owned()).or_default().push(id);
    }

    fn remove(&self, jti: &str, id: u64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ids) = map.get_mut(jti) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                map.remove(jti);
            }
        }
    }

    /// The sessions using this token id.
    pub fn sessions(&self, jti: &str) -> Vec<u64> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(jti).cloned().unwrap_or_default()
    }

    /// Every live (token id, session) pair.
    fn all(&self) -> Vec<(String, u64)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .flat_map(|(jti, ids)| ids.iter().map(move |id| (jti.clone(), *id)))
            .collect()
    }
}

/// A session's deadline watch; dropping it (the session ended) stops it.
pub struct SessionWatch {
    task: Option<super::deadlines::DeadlineGuard>,
    live: Option<(Arc<LiveTokens>, String, u64)>,
}

impl Drop for SessionWatch {
    fn drop(&mut self) {
        drop(self.task.take());
        if let Some((live, jti, id)) = self.live.take() {
            live.remove(&jti, id);
        }
    }
}

/// The earlier of the token's expiry and the maximum lifetime, with the
/// reason the session is given: `None` when neither applies.
fn deadline(auth: &TokenAuth, who: &Authenticated, now_unix: i64) -> Option<(Duration, Arc<str>)> {
    let lifetime = auth
        .config
        .max_session_lifetime
        .zip(auth.lifetime_reason.clone());
    // A token is valid up to `exp` plus the clock skew, at login as here:
    // otherwise a login within the skew would be ended the moment it began.
    let skew = i64::try_from(auth.config.clock_skew.as_secs()).unwrap_or(i64::MAX);
    let token = who.token().map(|t| {
        let end = t.expires.saturating_add(skew);
        let left = u64::try_from(end.saturating_sub(now_unix)).unwrap_or(0);
        (
            Duration::from_secs(left),
            Arc::from(format!(
                "credential expired: the token expired at {}",
                super::utc(t.expires)
            )),
        )
    });
    match (lifetime, token) {
        (Some(l), Some(t)) => Some(if t.0 <= l.0 { t } else { l }),
        (l, t) => l.or(t),
    }
}

/// What a session is told at its maximum lifetime `d`: one text, shared by
/// every session's deadline.
pub(super) fn lifetime_reason(d: Duration) -> Arc<str> {
    Arc::from(format!(
        "the session reached its maximum lifetime ({})",
        human(d)
    ))
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Watches session `id` of `who`: at its deadline the session ends (at once
/// or at the end of its transaction, per its groups), and a token's id is
/// listed so that revocation finds the session.
pub fn watch_session(
    auth: &Arc<TokenAuth>,
    registry: &Arc<Registry>,
    id: u64,
    who: &Authenticated,
) -> SessionWatch {
    let live = who.token().and_then(|t| t.jti.clone()).map(|jti| {
        auth.live.add(&jti, id);
        // Revoked between the login's check and now: no read of the list
        // will report it as new again.
        if auth.revocations.is_revoked(&jti) {
            registry.terminate(id, &revoked_reason(&jti));
        }
        (Arc::clone(&auth.live), jti, id)
    });
    let task = deadline(auth, who, super::unix_now()).map(|(after, reason)| {
        let policy = auth.config.expiry_for(&who.identity.groups);
        auth.deadlines
            .add(Instant::now() + after, id, reason, policy, registry)
    });
    SessionWatch { task, live }
}

/// What happens at a session's deadline: ended at once, or asked to end
/// at the end of its transaction and ended after the grace period; then
/// asked again every second until it is gone (the control channel is
/// bounded, and a request to end is not queued when it is full).
pub(crate) async fn end_session(
    registry: Arc<Registry>,
    id: u64,
    reason: Arc<str>,
    policy: crate::config::tokens::ExpiryPolicy,
) {
    let reason = &*reason;
    tracing::info!(session = id, reason, "ending session");
    if policy.mode == ExpiryMode::EndOfTransaction {
        registry.terminate_when_idle(id, reason);
        tokio::time::sleep(policy.grace).await;
    }
    end_now(&registry, id, reason);
    loop {
        tokio::time::sleep(RETRY).await;
        if !registry.terminate(id, reason) {
            return;
        }
    }
}

/// Ends a session now, and stops the statement its server is running (the
/// server would otherwise run it to its end for a credential that is gone).
/// The cancel runs in its own task: ending the session drops the watch
/// that called this, which would abort it half-way.
fn end_now(registry: &Registry, id: u64, reason: &str) {
    let running = registry.running_cancel_target(id);
    registry.terminate(id, reason);
    if let Some(t) = running {
        crate::session::registry::spawn_server_cancel(id, t);
    }
}

/// Follows the revocation list every `poll` until the token service is
/// gone (each read ends the sessions of newly revoked ids).
pub(super) async fn watch_revocations(auth: Weak<TokenAuth>, poll: Duration) {
    let mut failing = false;
    loop {
        let Some(auth) = auth.upgrade() else { return };
        match auth.refresh_revocations().await {
            Ok(()) => {
                failing = false;
                // Sessions asked to end but still there (their control
                // channel was full) are asked again.
                if let Some(registry) = auth.registry.get() {
                    for (jti, id) in auth.live.all() {
                        if auth.revocations.is_revoked(&jti) {
                            registry.terminate(id, &revoked_reason(&jti));
                        }
                    }
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::error!(error = %e, "revocation list unreadable");
            }
            Err(_) => {}
        }
        drop(auth);
        tokio::time::sleep(poll).await;
    }
}

/// Ends the live sessions of these newly revoked ids.
pub(super) fn end_revoked(auth: &TokenAuth, registry: &Registry, revoked: &[String]) {
    for jti in revoked {
        for id in auth.live.sessions(jti) {
            tracing::info!(session = id, jti, "ending session: token revoked");
            end_now(registry, id, &revoked_reason(jti));
        }
    }
}

fn revoked_reason(jti: &str) -> String {
    format!("credential revoked: the token {jti:?} was revoked")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::{Credential, Identity, TokenCredential};

    fn auth(tokens: &str) -> TokenAuth {
        let text = format!(
            "[upstreams.db]\nuser = \"app\"\n[users.alice]\nscram_verifier = \"{}\"\n[tokens]\n{tokens}",
            crate::auth::verifier::ScramVerifier::generate("pw")
        );
        let config = crate::config::Config::parse(&text, std::path::Path::new("/x/pgward.toml"))
            .expect("config");
        TokenAuth::new(Arc::clone(&config.tokens)).expect("tokens")
    }

    fn token_user(expires: i64) -> Authenticated {
        Authenticated {
            identity: Identity::new("ci", ["dev"]),
            databases: None,
            credential: Credential::Token(Box::new(TokenCredential {
                issuer: "pgward".into(),
                subject: None,
                jti: None,
                expires,
            })),
        }
    }

    #[test]
    fn the_earlier_of_expiry_plus_skew_and_lifetime_ends_the_session() {
        let a = auth("clock_skew = \"30s\"\nmax_session_lifetime = \"1h\"\n");
        let (after, why) = deadline(&a, &token_user(1_000 + 60), 1_000).expect("deadline");
        // Valid up to exp + skew, as at login.
        assert_eq!(after, Duration::from_secs(90));
        assert!(why.starts_with("credential expired"), "{why}");
        let (after, why) = deadline(&a, &token_user(1_000 + 7_200), 1_000).expect("deadline");
        assert_eq!(after, Duration::from_secs(3_600));
        assert_eq!(&*why, "the session reached its maximum lifetime (1h)");
        // Already past: at once.
        let (after, _) = deadline(&a, &token_user(0), 1_000).expect("deadline");
        assert_eq!(after, Duration::ZERO);
        // No lifetime and a password user: nothing to watch.
        let none = auth("max_session_lifetime = \"0\"\n");
        let password = Authenticated {
            credential: Credential::Password,
            ..token_user(0)
        };
        assert!(deadline(&none, &password, 1_000).is_none());
    }

    #[test]
    fn the_strictest_group_policy_applies() {
        let a = auth(
            "expiry_grace = \"60s\"\n[tokens.groups.a]\nexpiry_grace = \"5s\"\n\
             [tokens.groups.b]\non_expiry = \"immediate\"\n",
        );
        let c = &a.config;
        let p = c.expiry_for(&["x".into()]);
        assert_eq!(
            (p.mode, p.grace),
            (ExpiryMode::EndOfTransaction, Duration::from_secs(60))
        );
        let p = c.expiry_for(&["a".into()]);
        assert_eq!(p.grace, Duration::from_secs(5));
        let p = c.expiry_for(&["a".into(), "b".into()]);
        assert_eq!(
            (p.mode, p.grace),
            (ExpiryMode::Immediate, Duration::from_secs(5))
        );
    }
}

//! The `code` phase, just before `rules`: keeps the database's code catalog
//! (what statements run without naming it, `policy::called`) fresh enough
//! for the rules to judge with.
//!
//! - DDL that goes through a session (as the rules phase judged it: in
//!   the text, or in code it calls) marks the catalog stale once the server
//!   has answered it, and again when its transaction ends, for every
//!   session on the database (the `rules` phase marks it).
//! - A Query or Parse of an identity the rules apply to waits (a hold,
//!   bounded by `policy.catalog_timeout`) while the catalog is stale: never
//!   read, read before the last DDL, or not refreshed for twice
//!   `policy.catalog_refresh`. A catalog that cannot be read refuses the
//!   statement (fail closed). An ageing one is refreshed in the background.
//! - Identities no rule applies to never wait, and with no rule at all (or
//!   `policy.called_code = false`) no catalog is ever read.

use crate::policy::rules::Identity;
use crate::policy::Policy;
use crate::session::phases::{
    Decision, Hold, Phase, Refusal, Release, RequestContext, RequestKind,
};
use crate::sqlstate::Sqlstate;
use crate::upstream::code::{CodeStore, Freshness, State};
use std::sync::Arc;

/// The code phase of one session.
pub(crate) struct CodePhase {
    store: Arc<CodeStore>,
    identity: Identity,
    /// Whether the identity needs the catalog, under the rule set last seen.
    needs: Option<(Arc<Policy>, Option<Freshness>)>,
    /// Until when the catalog is fresh for that freshness, as the store
    /// last said ([`CodeStore::still_fresh`]); forgotten with the rule set.
    fresh_until: Option<std::time::Instant>,
}

impl CodePhase {
    pub(crate) fn new(store: Arc<CodeStore>, identity: Identity) -> Self {
        Self {
            store,
            identity,
            needs: None,
            fresh_until: None,
        }
    }

    /// The freshness `policy` asks for this identity (remembered per rule
    /// set: one pointer comparison per request).
    fn freshness(&mut self, policy: &Arc<Policy>) -> Option<Freshness> {
        match &self.needs {
            Some((p, f)) if Arc::ptr_eq(p, policy) => *f,
            _ => {
                let f = policy.needs_code(&self.identity);
                self.needs = Some((Arc::clone(policy), f));
                // The deadline was for the old rule set's freshness.
                self.fresh_until = None;
                f
            }
        }
    }

    /// The catalog is not known fresh: read how it stands, and start a
    /// read (in the background while it is aging, or held for when it is
    /// stale). Out of line: inlined, its task and hold set-up made every
    /// request's call save and restore registers it never used.
    #[cold]
    #[inline(never)]
    fn catalog_due(&mut self, freshness: Freshness) -> Decision {
        match self.store.state(freshness) {
            State::Fresh => {
                self.fresh_until = self.store.fresh_until(freshness);
                Decision::Forward
            }
            State::Aging => {
                self.store.refresh_in_background(freshness);
                Decision::Forward
            }
            State::Stale => {
                let (release, decision) = tokio::sync::oneshot::channel();
                let store = Arc::clone(&self.store);
                tokio::spawn(async move {
                    let outcome = match store.ensure(freshness).await {
                        Ok(_) => Release::Run,
                        Err(e) => Release::Refuse(unavailable(&e)),
                    };
                    let _ = release.send(outcome);
                });
                let mut hold = Hold::new(std::time::Instant::now() + freshness.timeout, decision);
                hold.timed_out = Some(unavailable(&format!(
                    "no catalog read within policy.catalog_timeout ({:?})",
                    freshness.timeout
                )));
                Decision::Hold(hold)
            }
        }
    }
}

/// The refusal when the catalog cannot be read in time.
pub(crate) fn unavailable(e: &dyn std::fmt::Display) -> Refusal {
    Refusal::new(
        Sqlstate::INSUFFICIENT_RESOURCES,
        format!(
            "statement refused by pgward: the database's code catalog (functions, operators, \
             triggers the statement may run) cannot be read, so the statement cannot be judged: {e}"
        ),
    )
    .with_hint(
        "Retry in a moment; if it persists, check pgward's catalog connection to the database.",
    )
}

impl Phase for CodePhase {
    fn name(&self) -> &'static str {
        "code"
    }

    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        // Every kind that runs a statement: a Bind or Execute is judged
        // again with the catalog of now (the code a statement calls may
        // have been redefined since its Parse), so it must be fresh then
        // too. One with no statement (a SQL cursor's Execute) runs
        // nothing the rules judge again.
        if matches!(ctx.kind, RequestKind::Bind | RequestKind::Execute) && ctx.statement.is_none() {
            return Decision::Forward;
        }
        // None when called code is off or no rule applies to the identity.
        let Some(freshness) = self.freshness(&ctx.rules.policy) else {
            return Decision::Forward;
        };
        if self
            .fresh_until
            .is_some_and(|until| self.store.still_fresh(until))
        {
            return Decision::Forward;
        }
        self.catalog_due(freshness)
    }
}

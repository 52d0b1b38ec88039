//! A session's phases, registered here and nowhere else, in their fixed
//! order:
//!
//! 1. `schema` - refuses statements of an unmasked session that a reload
//!    has since masked (it must reconnect), and refreshes the upstream's
//!    mask map after statements that may change the schema, whoever runs
//!    them.
//! 2. `code` - keeps the database's code catalog fresh for the rules
//!    (functions, operators, triggers statements run without naming them):
//!    marks it stale after DDL, holds a statement while it is read again.
//! 3. `rules` - statement rules: a refused statement reaches nothing after.
//! 4. `masking` - for identities with masked columns: the guard on
//!    statements, then the rows of results that hold masked columns.
//! 5. phases added to the gateway (`Gateway::add_phase`), in the order they
//!    were added: approvals and recording plug in here.
//! 6. `audit` (when `[audit]` is on): last, so it records what the phases
//!    before it decided; it holds a fail-closed statement while the audit
//!    queue has no room.
//!
//! To add a phase: implement [`Phase`] and push it in `build` (or register
//! a factory with the gateway); nothing in the relay changes.

use super::masking::MaskPhase;
use super::phases::{Decision, Phase, Refusal, RequestContext, RequestKind, SessionInfo};
use super::rules::called::CodePhase;
use super::rules::{ReportedSettings, RulesPhase};
use crate::error::SessionError;
use crate::gateway::Gateway;
use crate::mask::rules::MaskConfig;
use crate::mask::store::UpstreamMap;
use crate::policy::rules::Identity;
use crate::sql::repeat::ScanAnswer;
use crate::sqlstate::Sqlstate;
use crate::wire::backend::TransactionStatus;
use std::sync::Arc;

/// A session's phases and whether the tracker must keep descriptions.
pub(crate) struct Stack {
    /// The phases in order.
    pub(crate) phases: Vec<Box<dyn Phase>>,
    /// Some phase plans rows from descriptions (masking).
    pub(crate) keep_descriptions: bool,
    /// The session's end record, when the audit trail is on.
    pub(crate) audit: Option<crate::record::SessionAudit>,
}

/// Builds a session's phases. A masked identity waits for its upstream's
/// column map; if it cannot be read, the session does not start (fail
/// closed).
pub(crate) async fn build(
    gw: &Gateway,
    upstream: &str,
    info: &SessionInfo,
    startup_messages: &[u8],
    startup_effects: &[crate::policy::facts::Effect],
) -> Result<Stack, SessionError> {
    let identity = &info.identity;
    let rules = gw.rules.load_full();
    let settings = Arc::new(ReportedSettings::from_startup(startup_messages));
    settings.apply_startup(startup_effects);
    let map = gw.masks.get(upstream);
    let mask = map.and_then(|m| {
        MaskPhase::for_identity(
            Arc::clone(m),
            identity.clone(),
            Arc::clone(&settings),
            Arc::clone(&gw.metrics),
        )
    });
    if let (Some(_), Some(map)) = (&mask, map) {
        map.ensure().await.map_err(|e| {
            tracing::error!(upstream, "mask map unavailable: {e}");
            SessionError::BackendUnavailable {
                upstream: upstream.to_owned(),
                detail: format!("pgward cannot read the column map for masking: {e}"),
            }
        })?;
    }
    let keep_descriptions = mask.is_some();
    // The audit trail records what became of statements that needed
    // approval: the rules phase hands it notes.
    let notes = gw
        .audit
        .as_ref()
        .map(|_| Arc::new(crate::approvals::note::Notes::default()));
    let mut phases: Vec<Box<dyn Phase>> = vec![Box::new(SchemaPhase {
        started_under: Arc::clone(&rules.masking),
        masked: mask.is_some(),
        // Only where masking is on: watching costs a scan per statement.
        map: map.filter(|_| !rules.masking.rules.is_empty()).cloned(),
        ddl_sent: false,
        role_checks: Arc::clone(&gw.role_checks),
        grants_sent: false,
        privileges: ScanAnswer::default(),
    })];
    // The code catalog of the database the session opened, where the
    // rules resolve called code.
    let code = gw
        .upstreams
        .get(upstream)
        .zip(gw.config.route(&info.database))
        .map(|(u, route)| gw.code.store(u, route.dbname));
    if let Some(store) = &code {
        phases.push(Box::new(CodePhase::new(
            Arc::clone(store),
            identity.clone(),
        )));
    }
    phases.push(Box::new(RulesPhase::new(
        identity.clone(),
        settings,
        Some(super::rules::ApprovalSide {
            service: Arc::clone(gw.approvals()),
            masked: keep_descriptions,
            notes: notes.clone(),
        }),
        code,
    )));
    if let Some(mask) = mask {
        phases.push(Box::new(mask));
    }
    for factory in gw.phase_factories() {
        phases.push(factory(info));
    }
    if gw.config.admin.is_some() {
        phases.push(Box::new(crate::admin::metrics::MetricsPhase::new(
            Arc::clone(&gw.metrics),
        )));
    }
    // Last, so it records what every phase before it decided.
    let audit = match &gw.audit {
        Some(audit) => {
            let (session, mut phase) = audit.session(info).await?;
            if let Some(notes) = notes {
                phase.set_approval_notes(notes);
            }
            phases.push(Box::new(phase));
            Some(session)
        }
        None => None,
    };
    Ok(Stack {
        phases,
        keep_descriptions,
        audit,
    })
}

/// Whether `text` is `ROLLBACK` or `ABORT` (optionally `WORK` or
/// `TRANSACTION`, a `;`, blanks) and nothing else: no comment, savepoint,
/// chain or second statement. Matched by its words rather than parsed, so
/// that no difference between a parser and the server's can widen it;
/// blanks are the server's (space, tab, newline, carriage return, form
/// feed: ASCII whitespace as Rust counts it).
fn is_bare_rollback(text: &[u8]) -> bool {
    let text = text.trim_ascii();
    let text = text.strip_suffix(b";").unwrap_or(text);
    let mut words = text
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty());
    let (first, second) = (words.next(), words.next());
    words.next().is_none()
        && first.is_some_and(|w| {
            w.eq_ignore_ascii_case(b"ROLLBACK") || w.eq_ignore_ascii_case(b"ABORT")
        })
        && second.is_none_or(|w| {
            w.eq_ignore_ascii_case(b"WORK") || w.eq_ignore_ascii_case(b"TRANSACTION")
        })
}

/// Keeps the mask map in step with the schema, and unmasked sessions in
/// step with reloads that mask them.
struct SchemaPhase {
    started_under: Arc<MaskConfig>,
    /// (The identity is the request's session's: no copy of it here.)
    masked: bool,
    map: Option<Arc<UpstreamMap>>,
    ddl_sent: bool,
    /// Least-privilege reports, forgotten after statements that may change
    /// privileges (whoever runs them), so the next masked login checks again.
    role_checks: Arc<crate::privileges::RoleChecks>,
    grants_sent: bool,
    /// The privilege-word scan's last answer (`sql::repeat`).
    privileges: ScanAnswer,
}

impl SchemaPhase {
    /// Whether a reload has since masked columns for this unmasked session
    /// (`now`: the mask rules the request is judged under).
    fn newly_masked(&self, now: &Arc<MaskConfig>, identity: &Identity) -> bool {
        if self.masked {
            return false;
        }
        !Arc::ptr_eq(now, &self.started_under) && now.rules.iter().any(|r| r.applies_to(identity))
    }
}

impl Phase for SchemaPhase {
    fn name(&self) -> &'static str {
        "schema"
    }

    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        // Every kind: a statement parsed (or a portal bound) before the
        // reload would otherwise go on reading in clear through Bind and
        // Execute.
        // A bare ROLLBACK reads nothing, and refusing it would leave the
        // session's transaction (and its locks) open until it reconnects.
        if self.newly_masked(&ctx.rules.masking, &ctx.session.identity)
            && !ctx.text.is_some_and(is_bare_rollback)
        {
            return Decision::Refuse(
                Refusal::new(
                    Sqlstate::INSUFFICIENT_PRIVILEGE,
                    "statement denied by pgward masking: the masking rules changed and now cover this identity",
                )
                .with_hint(
                    "Reconnect: new sessions apply the new rules (ROLLBACK still ends the open \
                     transaction).",
                ),
            );
        }
        if !matches!(ctx.kind, RequestKind::Query | RequestKind::Parse) {
            return Decision::Forward;
        }
        if self.map.is_some() && ctx.schema_may_change() {
            self.ddl_sent = true;
        }
        // Once one such statement is out, the others change nothing; a
        // repeat of the previous text but for its numbers has its answer.
        if let (false, Some(text)) = (self.grants_sent, ctx.text) {
            self.grants_sent = self.privileges.of(
                text,
                ctx.text_repeat,
                crate::privileges::may_change_privileges,
            );
        }
        Decision::Forward
    }

    fn on_ready(&mut self, _status: TransactionStatus) {
        if std::mem::take(&mut self.grants_sent) {
            self.role_checks.invalidate();
        }
        if std::mem::take(&mut self.ddl_sent) {
            if let Some(map) = &self.map {
                map.invalidate();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::privileges::may_change_privileges;
    use crate::sql::repeat::{PreviousText, ScanAnswer};

    #[test]
    fn a_repeat_keeps_the_scans_answer_and_anything_else_is_scanned() {
        let mut previous = PreviousText::default();
        let mut words = ScanAnswer::default();
        let mut judge = |sql: &str| {
            words.of(
                sql.as_bytes(),
                Some(previous.next(sql.as_bytes())),
                may_change_privileges,
            )
        };
        assert!(!judge("SELECT * FROM t WHERE id = 1"));
        assert!(!judge("SELECT * FROM t WHERE id = 22"));
        assert!(judge("GRANT SELECT ON t1 TO r1"));
        assert!(
            judge("GRANT SELECT ON t2 TO r2"),
            "a repeat of a yes is a yes"
        );
        assert!(!judge("SELECT 3"));
        assert!(judge("ALTER TABLE t4 OWNER TO r4"));
    }

    #[test]
    fn only_a_bare_rollback_is_one() {
        for yes in [
            "ROLLBACK",
            "rollback;",
            " Abort  Work ;",
            "ROLLBACK\tTRANSACTION\r\n",
            "abort transaction",
        ] {
            assert!(super::is_bare_rollback(yes.as_bytes()), "{yes:?}");
        }
        for no in [
            "",
            ";",
            "ROLLBACK; SELECT ssn FROM t",
            "ROLLBACK;;",
            "ROLLBACK TO SAVEPOINT s",
            "ROLLBACK TO s",
            "ROLLBACK AND CHAIN",
            "ROLLBACK PREPARED 'x'",
            "ROLLBACK WORK TRANSACTION",
            "ROLLBACK /* */",
            "ROLLBACK -- done",
            "ROLLBACK\u{0b}",
            "ROLLBACKS",
            "COMMIT",
            "SELECT 1",
        ] {
            assert!(!super::is_bare_rollback(no.as_bytes()), "{no:?}");
        }
    }
}

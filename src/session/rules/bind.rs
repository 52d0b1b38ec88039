//! The rules at Bind and Execute: a statement parsed earlier is judged
//! again with its parameters' values, for an approval, and under the rules
//! and the session as they are when it runs (the server resolves its names
//! again then).

use super::{approval, RulesPhase, Snapshot};
use crate::policy::called::CodeCatalog;
use crate::policy::facts::Effect;
use crate::policy::rules::{Denial, Verdict};
use crate::policy::{Param, Policy};
use crate::session::phases::{Decision, RequestContext};
use crate::session::tracker::Statement;
use crate::wire::frontend::BindView;
use std::sync::Arc;

/// What a Bind (or Execute) of a statement judges again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtBind {
    /// Nothing: the Parse's verdict stands.
    Nothing,
    /// The verdict depends on the parameters: judged with their values.
    Values,
    /// It needs approval: asked for at Bind, where the parameters (which
    /// the approval covers) are known.
    Approval,
    /// Denied now: the rules were reloaded since its Parse, or what the
    /// session's names resolve to changed (a temporary table of its own
    /// dropped, the database's code redefined), and the server resolves
    /// the statement's names again when it runs it.
    Denied,
}

/// One statement's judgement at Bind, with what it was judged under: the
/// rule set, the code catalog and the generation of the session's own
/// temporary tables. Any other value of them judges it afresh.
#[derive(Debug)]
pub(super) struct BindChecked {
    statement: Arc<Statement>,
    policy: Arc<Policy>,
    /// The catalog's generation (unique to each catalog; 0: none).
    code: u64,
    temp_generation: u64,
    at_bind: AtBind,
    /// What running it does to the session (temporary tables, search_path,
    /// rollback): applied at each Execute, when it runs, never at Parse.
    effects: Vec<Effect>,
    /// It may change the database's code: the catalog is stale once the
    /// batch of an Execute of it is answered.
    changes_schema: bool,
    /// It may change client_encoding, or ends a transaction (`encoding`).
    sets_client_encoding: bool,
    ends_transaction: bool,
}

impl BindChecked {
    fn judged_under(
        &self,
        statement: &Arc<Statement>,
        policy: &Arc<Policy>,
        code: u64,
        temp_generation: u64,
    ) -> bool {
        Arc::ptr_eq(&self.statement, statement)
            && Arc::ptr_eq(&self.policy, policy)
            && self.code == code
            && self.temp_generation == temp_generation
    }
}

/// The type OIDs of `text` and `varchar`, which take a value as it is.
const TEXT: u32 = 25;
const VARCHAR: u32 = 1043;
/// The type OID of `unknown`.
const UNKNOWN: u32 = 705;

/// Statements remembered in `bind_checked`.
const BIND_CHECKED: usize = 16;

impl RulesPhase {
    /// What a Bind or Execute of `statement` judges again, under the rules
    /// and the session as they are now (remembered per statement: drivers
    /// bind the same statements over and over, and most pass here with
    /// pointer comparisons).
    fn at_bind(
        &mut self,
        policy: &Arc<Policy>,
        statement: &Arc<Statement>,
        snapshot: &Snapshot,
    ) -> AtBind {
        let index = self.checked(policy, statement, snapshot);
        self.bind_checked[index].at_bind
    }

    /// Where `bind_checked` holds `statement` judged as now (judged here
    /// when it does not).
    fn checked(
        &mut self,
        policy: &Arc<Policy>,
        statement: &Arc<Statement>,
        snapshot: &Snapshot,
    ) -> usize {
        let code = snapshot.code.as_deref().map_or(0, CodeCatalog::generation);
        if let Some(index) = self.recall_bind(statement, policy, code, snapshot.temp_generation) {
            return index;
        }
        let outcome = policy.judge_in(&statement.text, &self.identity, &snapshot.session());
        let at_bind = if outcome.depends_on_parameters() {
            AtBind::Values
        } else {
            match outcome.verdict {
                Verdict::Approval(_) => AtBind::Approval,
                Verdict::Deny(_) => AtBind::Denied,
                Verdict::Allow(_) => AtBind::Nothing,
            }
        };
        if self.bind_checked.len() >= BIND_CHECKED {
            self.bind_checked.remove(0);
        }
        self.bind_checked.push(BindChecked {
            statement: Arc::clone(statement),
            policy: Arc::clone(policy),
            code,
            temp_generation: snapshot.temp_generation,
            at_bind,
            effects: outcome.effects.clone(),
            changes_schema: outcome.changes_schema(),
            sets_client_encoding: outcome.sets_client_encoding(),
            ends_transaction: outcome.ends_transaction(),
        });
        self.bind_checked.len() - 1
    }

    /// What `at_bind` remembers for `statement` under these.
    fn recall_bind(
        &self,
        statement: &Arc<Statement>,
        policy: &Arc<Policy>,
        code: u64,
        temp_generation: u64,
    ) -> Option<usize> {
        self.bind_checked
            .iter()
            .position(|c| c.judged_under(statement, policy, code, temp_generation))
    }

    /// An Execute of a portal bound from `statement`: refused if the rules
    /// or the session changed since so that the statement is denied now
    /// (values and approvals were judged at the portal's Bind); else what
    /// running the statement does to the session takes effect with the
    /// answer to its batch.
    pub(super) fn judge_execute(
        &mut self,
        ctx: &RequestContext<'_>,
        statement: &Arc<Statement>,
    ) -> Decision {
        let policy = &ctx.rules.policy;
        if policy.is_inert() {
            return Decision::Forward;
        }
        // Most Executes answer from the memo without a whole snapshot.
        let temp_generation = self.settings.temp.generation();
        let code = self.code_generation(policy);
        let mut snapshot = None;
        let index = match self.recall_bind(statement, policy, code, temp_generation) {
            Some(index) => index,
            None => {
                let taken = self.snapshot(ctx.tracker, policy);
                let index = self.checked(policy, statement, &taken);
                snapshot = Some(taken);
                index
            }
        };
        let at_bind = self.bind_checked[index].at_bind;
        if matches!(at_bind, AtBind::Values | AtBind::Approval) && self.bound_under_other_rules(ctx)
        {
            // Its values (or its approval) were judged at a Bind under the
            // rules before a reload: they are judged under these only at
            // a Bind again.
            return self.refused(
                &String::from_utf8_lossy(&statement.text),
                Denial {
                    code: "42501",
                    message:
                        "statement refused by pgward: the rules were reloaded since this portal \
                              was bound, and they judge the statement by its parameter values"
                            .into(),
                    detail: None,
                    hint: Some("Bind the statement again.".into()),
                    position: None,
                },
                "portal bound under replaced rules refused at Execute",
            );
        }
        if at_bind == AtBind::Denied {
            let snapshot = match snapshot {
                Some(taken) => taken,
                None => self.snapshot(ctx.tracker, policy),
            };
            let outcome = policy.judge_in(&statement.text, &self.identity, &snapshot.session());
            if let Verdict::Deny(d) = &outcome.verdict {
                return self.refused(&outcome.text, d.clone(), "statement refused at Execute");
            }
        }
        let checked = &self.bind_checked[index];
        if checked.effects.is_empty()
            && !checked.changes_schema
            && !checked.sets_client_encoding
            && !checked.ends_transaction
        {
            return Decision::Forward;
        }
        // The ReadyForQuery that ends this Execute's batch (a refusal by a
        // later phase is an error before it, which undoes the effects).
        let due = self.answered + ctx.tracker.ready_pending() + 1;
        let (sets, ends) = (checked.sets_client_encoding, checked.ends_transaction);
        self.encoding_may_change(sets, ends, due);
        let checked = &self.bind_checked[index];
        for effect in &checked.effects {
            self.settings.temp.apply(effect, due);
        }
        if checked.changes_schema {
            self.ddl_due = Some(due);
        }
        Decision::Forward
    }

    /// Whether the portal this Execute runs may have been bound before the
    /// rules it is judged under took over (a Bind's number earlier than the
    /// first request judged under them), or by nothing pgward saw.
    fn bound_under_other_rules(&self, ctx: &RequestContext<'_>) -> bool {
        let since = self
            .policy_seen
            .as_ref()
            .map_or(u64::MAX, |(_, since)| *since);
        ctx.portal
            .and_then(|name| ctx.tracker.portal_bound_at(name))
            .is_none_or(|at| at < since)
    }

    /// A Bind of a statement whose verdict depends on its parameters: judged
    /// again with the values it brings (text format; binary values stay
    /// unknown, the worst), refused if they make it a denied statement; a
    /// Bind of a statement that needs approval asks for it here; and a Bind
    /// of a statement denied now (see [`AtBind::Denied`]) is refused.
    pub(super) fn judge_bind(
        &mut self,
        ctx: &RequestContext<'_>,
        statement: &Arc<Statement>,
        bind: &BindView<'_>,
    ) -> Decision {
        let policy = &ctx.rules.policy;
        if policy.is_inert() {
            return Decision::Forward;
        }
        let text = &statement.text[..];
        // Most Binds answer from the memo without a whole snapshot, as
        // Executes do: the memo is asked with the same catalog and
        // temporary-table generation the snapshot would hold (read in the
        // same order), and a statement with nothing to judge at Bind reads
        // nothing else of it.
        let code = self.code_generation(policy);
        let temp_generation = self.settings.temp.generation();
        if self
            .recall_bind(statement, policy, code, temp_generation)
            .is_some_and(|index| self.bind_checked[index].at_bind == AtBind::Nothing)
        {
            return Decision::Forward;
        }
        let snapshot = self.snapshot(ctx.tracker, policy);
        let session = snapshot.session();
        let outcome = match self.at_bind(policy, statement, &snapshot) {
            AtBind::Nothing => return Decision::Forward,
            AtBind::Approval | AtBind::Denied => policy.judge_in(text, &self.identity, &session),
            AtBind::Values => {
                let unsettled = self.encoding_unsettled();
                let params: Vec<Param<'_>> = bind
                    .params()
                    .enumerate()
                    .map(|(i, value)| match (value, bind.param_format(i)) {
                        (None, _) => Param::Null,
                        // The server reads a value through its type (see
                        // `Param`): described by the server, else as the
                        // Parse declared it (0: left to the server).
                        // Converted from an encoding that may be changing.
                        (Some(v), 0) if unsettled && !v.is_ascii() => Param::Binary,
                        (Some(v), 0) => match statement.param_types.of(i) {
                            Some(TEXT | VARCHAR) => Param::Text(v),
                            // `unknown` is what the server makes of an
                            // unspecified type: inferred alike.
                            Some(0 | UNKNOWN) | None => Param::Inferred(v),
                            Some(_) => Param::Binary,
                        },
                        (Some(_), _) => Param::Binary,
                    })
                    .collect();
                policy.judge_bound(text, &self.identity, &session, &params)
            }
        };
        match &outcome.verdict {
            Verdict::Allow(_) => Decision::Forward,
            Verdict::Deny(d) => self.refused(
                &outcome.text,
                d.clone(),
                "statement refused with its Bind parameters",
            ),
            Verdict::Approval(a) => self.approval(
                ctx,
                a,
                &approval::Asking {
                    text,
                    bind: Some((bind, statement)),
                    runs: Vec::new(),
                    encoding: &snapshot.client_encoding,
                    lexing: snapshot.lexing,
                },
                &outcome.text,
            ),
        }
    }
}

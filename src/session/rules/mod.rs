//! The statement-rules phase: every Query and Parse is judged by the policy
//! before it may reach the server, under the settings the server last
//! reported (`settings.rs`); EXECUTE inherits the verdict of what the
//! conversation tracker says was prepared.

pub(crate) mod approval;
mod bind;
pub(crate) mod called;
mod encoding;
mod settings;

pub(crate) use approval::ApprovalSide;
pub use settings::ReportedSettings;

use super::phases::{Decision, Phase, Refusal, RequestContext, RequestKind};
use super::tracker::{Projected, Statement, Tracker};
use crate::policy::called::CodeCatalog;
use crate::policy::encoding::ClientEncoding;
use crate::policy::facts::{Effect, Unit};
use crate::policy::rules::{Denial, Identity, Verdict};
use crate::policy::{KnownAudience, Lexing, Outcome, Policy, Session};
use crate::sqlstate::Sqlstate;
use crate::wire::backend::TransactionStatus;
use bind::BindChecked;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Judges client statements.
pub struct RulesPhase {
    identity: Identity,
    settings: Arc<ReportedSettings>,
    /// ReadyForQuery messages seen: the number of the request answered
    /// last (temporary tables count once their request is answered).
    answered: u64,
    /// Statements lately bound, under what they were judged, and what
    /// their Bind must judge again.
    bind_checked: Vec<BindChecked>,
    /// Approvals, when the session can ask for them.
    approvals: Option<ApprovalSide>,
    /// The database's code catalog (kept fresh by the `code` phase).
    code: Option<Arc<crate::upstream::code::CodeStore>>,
    /// The catalog this session last took from `code`.
    code_seen: crate::upstream::code::SeenCatalog,
    /// The ReadyForQuery that ends the last statement sent that may change
    /// the database's code: the catalog is stale once it is answered.
    ddl_due: Option<u64>,
    /// Such a statement ran in the open transaction: the catalog is stale
    /// again when it ends (pgward's catalog reads see only what committed).
    ddl_in_transaction: bool,
    /// The ReadyForQuery by which a request sent that may change
    /// client_encoding is answered (the server reports the new encoding
    /// just before it): until then non-ASCII text cannot be read as the
    /// server will read it (`encoding`).
    encoding_due: Option<u64>,
    /// Such a request was sent since the session was last idle: a COMMIT
    /// or ROLLBACK may undo it.
    encoding_in_transaction: bool,
    /// The rules that apply to `identity` under the policy last judged with
    /// (the policy tells its own from another's).
    audience: Option<KnownAudience>,
    /// The policy the last request was judged under (held, so that a new
    /// one is never mistaken for it at a reused address), and the number
    /// of the first request judged under it: a portal bound before that
    /// was bound under other rules.
    policy_seen: Option<(Arc<Policy>, u64)>,
}

impl RulesPhase {
    /// The phase for one session. The rules come with each request (the
    /// snapshot in force when it was sent).
    pub(crate) fn new(
        identity: Identity,
        settings: Arc<ReportedSettings>,
        approvals: Option<ApprovalSide>,
        code: Option<Arc<crate::upstream::code::CodeStore>>,
    ) -> Self {
        Self {
            identity,
            settings,
            answered: 0,
            bind_checked: Vec::new(),
            approvals,
            code,
            code_seen: Default::default(),
            ddl_due: None,
            ddl_in_transaction: false,
            encoding_due: None,
            encoding_in_transaction: false,
            audience: None,
            policy_seen: None,
        }
    }

    /// A statement that needs approval: asked for, or refused where the
    /// session has no approvals.
    fn approval(
        &self,
        ctx: &RequestContext<'_>,
        needed: &crate::policy::rules::ApprovalNeeded,
        asking: &approval::Asking<'_>,
        normalized: &str,
    ) -> Decision {
        tracing::info!(
            target: "pgward::policy",
            user = ?self.identity.user,
            statement = ?normalized,
            rule = %needed.rule,
            "statement needs approval"
        );
        match &self.approvals {
            Some(side) => side.decide(ctx, needed, asking),
            None => Decision::Refuse(refusal(needed.denial())),
        }
    }

    fn judge(&mut self, ctx: &RequestContext<'_>, text: &[u8], parse: bool) -> Decision {
        let policy = &ctx.rules.policy;
        let tracker = ctx.tracker;
        if policy.is_inert() {
            // Prepared statements made now are judged again at EXECUTE, so
            // rules that arrive later still apply to them.
            return Decision::Forward;
        }
        if let Some(refused) = self.encoding_changing(text) {
            return refused;
        }
        // Most Queries answer from the verdict memo, asked with only what
        // its key holds: the whole snapshot is taken for the rest.
        let mut snapshot = None;
        let outcome = match self.remembered(tracker, policy, text) {
            Some(hit) => hit,
            None => {
                let taken = snapshot.insert(self.snapshot(tracker, policy));
                policy.judge_in(text, &self.identity, &taken.session())
            }
        };
        if outcome.changes_schema() && !matches!(outcome.verdict, Verdict::Deny(_)) {
            // Approved, bound or allowed, it may run: read the code catalog
            // again once it has.
            self.ddl_due = Some(self.answered + tracker.ready_pending() + 1);
        }
        if parse
            && (outcome.depends_on_parameters() || matches!(outcome.verdict, Verdict::Approval(_)))
        {
            // Judged with its parameters unknown (the worst): the Bind that
            // supplies them is judged with their values instead. An
            // approval is asked for at Bind too: it covers the parameters.
            return Decision::Forward;
        }
        let verdict = match &outcome.verdict {
            Verdict::Deny(d) => Verdict::Deny(d.clone()),
            Verdict::Approval(a) => Verdict::Approval(a.clone()),
            // Nothing run by name (nearly every statement): nothing to
            // look up.
            Verdict::Allow(logged) if !runs_by_name(&outcome) => Verdict::Allow(logged.clone()),
            Verdict::Allow(logged) => {
                let taken = snapshot.get_or_insert_with(|| self.snapshot(tracker, policy));
                self.executed(policy, &outcome, logged.clone(), tracker, &taken.session())
            }
        };
        match verdict {
            Verdict::Allow(logged) => {
                for rule in logged {
                    tracing::info!(
                        target: "pgward::policy",
                        rule = %rule,
                        user = ?self.identity.user,
                        statement = ?outcome.text,
                        "statement matched a log rule"
                    );
                }
                // The request this message is answered with: the next
                // ReadyForQuery after those already due.
                // What a Query does to the session takes effect with its
                // answer; a Parse's when an Execute runs it (`bind`).
                if !parse {
                    let due = self.answered + tracker.ready_pending() + 1;
                    for effect in &outcome.effects {
                        self.settings.temp.apply(effect, due);
                    }
                    self.encoding_may_change(
                        outcome.sets_client_encoding(),
                        outcome.ends_transaction(),
                        due,
                    );
                }
                Decision::Forward
            }
            Verdict::Deny(d) => self.refused(&outcome.text, d, "statement refused"),
            Verdict::Approval(a) => {
                let taken = snapshot.get_or_insert_with(|| self.snapshot(tracker, policy));
                self.approval(
                    ctx,
                    &a,
                    &approval::Asking {
                        text,
                        bind: None,
                        runs: run_by_name(&outcome, tracker),
                        encoding: &taken.client_encoding,
                        lexing: taken.lexing,
                    },
                    &outcome.text,
                )
            }
        }
    }

    /// Logs a refusal and makes it the decision.
    fn refused(&self, text: &str, d: Denial, what: &'static str) -> Decision {
        tracing::info!(
            target: "pgward::policy",
            user = ?self.identity.user,
            statement = ?text,
            reason = ?d.message,
            "{what}"
        );
        Decision::Refuse(refusal(d))
    }

    /// EXECUTE inherits the verdict of what was prepared, judged by today's
    /// rules: the statement comes from the conversation tracker (as the
    /// server will have it), or from an earlier PREPARE in the same text.
    fn executed(
        &self,
        policy: &Policy,
        outcome: &Outcome,
        mut logged: Vec<Arc<str>>,
        tracker: &Tracker,
        session: &Session<'_>,
    ) -> Verdict {
        if !runs_by_name(outcome) {
            // No map to build, whose hasher's keys cost a thread-local read.
            return Verdict::Allow(logged);
        }
        let mut added: HashMap<&str, &Arc<Vec<Unit>>> = HashMap::new();
        let mut approval = None;
        for effect in &outcome.effects {
            match effect {
                Effect::Prepare { name, units } => {
                    added.insert(name, units);
                }
                Effect::Execute(name) => {
                    let verdict = if let Some(units) = added.get(name.as_str()) {
                        policy.rules.judge(
                            units.iter().map(|u| (u, &*outcome.text)),
                            &policy.rules.audience(&self.identity),
                        )
                    } else {
                        match tracker.projected_statement(name.as_bytes()) {
                            Projected::Known(statement) => {
                                self.prepared_verdict(policy, name, &statement, session)
                            }
                            Projected::Absent => Verdict::Deny(unprepared(
                                name,
                                "was not prepared through pgward's rules",
                            )),
                            Projected::Uncertain => Verdict::Deny(unprepared(
                                name,
                                "names one of two statements until the server answers \
                                 the requests before this one (an earlier PREPARE, Parse \
                                 or DEALLOCATE may fail)",
                            )),
                        }
                    };
                    match verdict {
                        Verdict::Deny(d) => return Verdict::Deny(d),
                        Verdict::Approval(a) => {
                            approval.get_or_insert(a);
                        }
                        Verdict::Allow(more) => logged.extend(more),
                    }
                }
                _ => {}
            }
        }
        match approval {
            Some(a) => Verdict::Approval(a),
            None => Verdict::Allow(logged),
        }
    }

    /// The verdict for running prepared statement `name`: its own units
    /// when it was made by SQL PREPARE, else its Parse text as a whole.
    fn prepared_verdict(
        &self,
        policy: &Policy,
        name: &str,
        statement: &Statement,
        session: &Session<'_>,
    ) -> Verdict {
        let judged = policy.judge_in(&statement.text, &self.identity, session);
        if !statement.sql_prepare {
            return judged.verdict.clone();
        }
        for effect in &judged.effects {
            if let Effect::Prepare { name: n, units } = effect {
                if n == name {
                    return policy.rules.judge(
                        units.iter().map(|u| (u, &*judged.text)),
                        &policy.rules.audience(&self.identity),
                    );
                }
            }
        }
        Verdict::Deny(unprepared(name, "cannot be judged"))
    }
}

/// The session's code store, where the rules resolve called code.
fn code_store<'a>(
    policy: &Policy,
    code: &'a Option<Arc<crate::upstream::code::CodeStore>>,
) -> Option<&'a crate::upstream::code::CodeStore> {
    policy.rules.called_code.and(code.as_deref())
}

/// Whether running the statement runs prepared statements by name
/// (EXECUTE), whose verdicts it inherits.
fn runs_by_name(outcome: &Outcome) -> bool {
    outcome
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Execute(_)))
}

/// The prepared statements `outcome`'s text runs by name (SQL `EXECUTE`)
/// that it does not prepare itself, as the server will have them (names
/// the tracker cannot tell were refused by `executed` already).
fn run_by_name(outcome: &Outcome, tracker: &Tracker) -> Vec<(String, Arc<Statement>)> {
    let mut prepared_here = Vec::new();
    let mut runs = Vec::new();
    for effect in &outcome.effects {
        match effect {
            Effect::Prepare { name, .. } => prepared_here.push(name.as_str()),
            Effect::Execute(name) if !prepared_here.contains(&name.as_str()) => {
                if let Projected::Known(statement) = tracker.projected_statement(name.as_bytes()) {
                    runs.push((name.clone(), statement));
                }
            }
            _ => {}
        }
    }
    runs
}

/// What the policy is told about the session for one judgement.
struct Snapshot {
    lexing: Lexing,
    /// `None`: the session has none (most; nothing to build or drop).
    own_temp_tables: Option<BTreeSet<String>>,
    /// Read before `own_temp_tables`: a change between the two reads then
    /// only makes the next judgement afresh.
    temp_generation: u64,
    client_encoding: ClientEncoding,
    server_major: u32,
    code: Option<Arc<CodeCatalog>>,
    audience: KnownAudience,
}

/// The temporary tables of a session that has none.
static NO_TEMP_TABLES: BTreeSet<String> = BTreeSet::new();

impl Snapshot {
    fn session(&self) -> Session<'_> {
        Session {
            lexing: self.lexing,
            own_pid: None,
            own_temp_tables: self.own_temp_tables.as_ref().unwrap_or(&NO_TEMP_TABLES),
            server_major: self.server_major,
            client_encoding: &self.client_encoding,
            code: self.code.as_deref(),
            audience: Some(&self.audience),
        }
    }
}

impl RulesPhase {
    /// The session as the server last reported it. A request still
    /// unanswered (in this batch or an earlier one) may change a setting
    /// before the text is lexed: then every reading counts.
    fn snapshot(&mut self, tracker: &Tracker, policy: &Policy) -> Snapshot {
        let lexing = self.lexing(tracker);
        let code = self.code_now(policy);
        let temp_generation = self.settings.temp.generation();
        let own_temp_tables = self.settings.temp.usable();
        let audience = self.audience(policy).clone();
        Snapshot {
            audience,
            lexing,
            own_temp_tables,
            temp_generation,
            client_encoding: self.settings.client_encoding(),
            server_major: self.settings.server_major.load(Ordering::Acquire),
            code,
        }
    }

    /// What [`Policy::judge_in`] would answer from its verdict memo under
    /// the snapshot ([`Policy::recall`]): the parts of it the memo's key
    /// holds, read as `snapshot` reads them, without the rest (the
    /// temporary tables, a count of the catalog and of the audience).
    fn remembered(
        &mut self,
        tracker: &Tracker,
        policy: &Policy,
        text: &[u8],
    ) -> Option<Arc<Outcome>> {
        let lexing = self.lexing(tracker);
        let generation = self.code_generation(policy);
        let encoding = self.settings.client_encoding();
        let server_major = self.settings.server_major.load(Ordering::Acquire);
        let audience = self.audience(policy);
        policy.recall(text, lexing, &encoding, server_major, generation, audience)
    }

    /// The generation of [`Self::code_now`]'s catalog (0: none), taking no
    /// count of it.
    fn code_generation(&mut self, policy: &Policy) -> u64 {
        code_store(policy, &self.code).map_or(0, |store| store.seen_generation(&mut self.code_seen))
    }

    /// The settings the server last reported, and whether a request still
    /// unanswered, or answered but not yet followed by a ReadyForQuery
    /// (which the server's reports come just before), may have changed
    /// them before the text is lexed.
    fn lexing(&self, tracker: &Tracker) -> Lexing {
        let settings = self.settings.current();
        if tracker.settings_unreported() {
            Lexing::Uncertain(settings)
        } else {
            Lexing::Known(settings)
        }
    }

    /// The rules that apply to the identity under `policy`.
    fn audience(&mut self, policy: &Policy) -> &KnownAudience {
        if !self
            .audience
            .as_ref()
            .is_some_and(|known| policy.made(known))
        {
            // Worked out by another policy (a reload), or not yet.
            self.audience = None;
        }
        self.audience
            .get_or_insert_with(|| policy.audience_of(&self.identity))
    }

    /// The code catalog, only where the rules resolve called code (the
    /// `code` phase has read it by now for identities the rules apply to).
    fn code_now(&mut self, policy: &Policy) -> Option<Arc<CodeCatalog>> {
        code_store(policy, &self.code).and_then(|store| store.current_seen(&mut self.code_seen))
    }
}

fn unprepared(name: &str, why: &str) -> Denial {
    Denial {
        code: "42501",
        message: format!("statement denied by pgward: prepared statement \"{name}\" {why}"),
        detail: None,
        hint: Some("PREPARE it again in this session.".into()),
        position: None,
    }
}

fn refusal(d: Denial) -> Refusal {
    Refusal {
        code: Sqlstate::from_code(d.code),
        message: d.message,
        detail: d.detail,
        hint: d.hint,
        position: d.position,
    }
}

impl Phase for RulesPhase {
    fn name(&self) -> &'static str {
        "rules"
    }

    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        if !self
            .policy_seen
            .as_ref()
            .is_some_and(|(p, _)| Arc::ptr_eq(p, &ctx.rules.policy))
        {
            self.policy_seen = Some((Arc::clone(&ctx.rules.policy), ctx.request_id));
        }
        match (ctx.kind, ctx.text) {
            (RequestKind::Query, Some(text)) => self.judge(ctx, text, false),
            (RequestKind::Parse, Some(text)) => self.judge(ctx, text, true),
            (RequestKind::Bind, Some(_)) => match (ctx.statement, ctx.bind) {
                (Some(statement), Some(bind)) => self.judge_bind(ctx, statement, bind),
                _ => Decision::Forward,
            },
            (RequestKind::Execute, Some(_)) => match ctx.statement {
                Some(statement) => self.judge_execute(ctx, statement),
                None => Decision::Forward,
            },
            _ => Decision::Forward,
        }
    }

    fn on_parameter_status(&mut self, name: &[u8], value: &[u8]) {
        self.settings.record(name, value);
    }

    fn on_server_error(&mut self) {
        self.settings.temp.error();
    }

    fn on_ready(&mut self, status: TransactionStatus) {
        self.answered += 1;
        self.encoding_answered(status);
        self.settings.temp.ready(self.answered, status);
        let ddl_ran = self.ddl_due.is_some_and(|due| self.answered >= due);
        if ddl_ran {
            self.ddl_due = None;
        }
        let ended = self.ddl_in_transaction && status == TransactionStatus::Idle;
        if ddl_ran || ended {
            self.ddl_in_transaction = ddl_ran && status != TransactionStatus::Idle;
            if let Some(store) = &self.code {
                store.invalidate();
            }
        }
    }
}

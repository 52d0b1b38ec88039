//! The statement-rules phase: every Query and Parse is judged by the policy
//! before it may reach the server. Its backend half follows the settings
//! that change how PostgreSQL lexes (standard_conforming_strings) from the
//! server's own ParameterStatus reports, never from the client's SET, which
//! may fail or be rolled back. It also follows the session's own temporary
//! tables (which the built-in rules let it drop and truncate), from the
//! CREATEs pgward allowed as confirmed by the server's answers.

use super::inflight::InFlight;
use super::phases::{BackendPhases, FrontendAction, FrontendPhases, Refusal};
use crate::policy::encoding::ClientEncoding;
use crate::policy::facts::{Effect, Unit};
use crate::policy::lexer::LexSettings;
use crate::policy::rules::{Denial, Identity, Verdict};
use crate::policy::{Lexing, Outcome, Policy, Session};
use crate::wire::backend::{parameter_status, BackendKind, TransactionStatus};
use crate::wire::frontend::{parse_view, query_text, FrontendKind};
use crate::wire::Frame;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The session's lexing settings as the server last reported them, and the
/// temporary tables it confirmed creating: what both halves of the rules
/// phase share.
#[derive(Debug)]
pub struct ReportedSettings {
    standard_conforming_strings: AtomicBool,
    /// The server's major version (0 until reported: the strictest reading).
    server_major: AtomicU32,
    /// The session's client_encoding as last reported.
    client_encoding: Mutex<ClientEncoding>,
    temp: TempTables,
}

impl ReportedSettings {
    /// Settings from the ParameterStatus messages of the server's login.
    pub fn from_startup(messages: &[u8]) -> Self {
        let settings = Self {
            standard_conforming_strings: AtomicBool::new(true),
            server_major: AtomicU32::new(0),
            client_encoding: Mutex::new(ClientEncoding::Utf8),
            temp: TempTables::default(),
        };
        let mut rest = bytes::BytesMut::from(messages);
        let framer = crate::wire::Framer::new(messages.len());
        while let Ok(Some(frame)) = framer.next_frame(&mut rest) {
            if frame.tag() == b'S' {
                settings.record(&frame);
            }
        }
        settings
    }

    /// Records one ParameterStatus.
    fn record(&self, frame: &Frame) {
        if let Ok((name, value)) = parameter_status(frame) {
            if name == b"standard_conforming_strings" {
                self.standard_conforming_strings
                    .store(value == b"on", Ordering::Release);
            } else if name == b"server_version" {
                self.server_major
                    .store(server_major(value), Ordering::Release);
            } else if name == b"client_encoding" {
                // Whatever the server now converts from, pgward reads with;
                // an encoding it cannot judge refuses all but ASCII text.
                let encoding = ClientEncoding::named(&String::from_utf8_lossy(value));
                if let Ok(mut current) = self.client_encoding.lock() {
                    *current = encoding;
                }
            }
        }
    }

    /// The settings as last reported.
    pub fn lexing(&self) -> LexSettings {
        self.current()
    }

    fn current(&self) -> LexSettings {
        LexSettings {
            standard_conforming_strings: self.standard_conforming_strings.load(Ordering::Acquire),
        }
    }
}

/// The major version in a `server_version` report ("15.4", "16beta1",
/// "17.2 (Debian 17.2-1)"); 0 when it does not start with one.
fn server_major(value: &[u8]) -> u32 {
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&value[..digits])
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// Where a temporary table the session created stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Temp {
    /// Sent; the server answers the request with this number.
    Pending(u64),
    /// Created inside a transaction that is still open.
    InTransaction,
    /// Created and committed: it lives until dropped or the session ends.
    Committed,
}

/// The session's temporary tables, shared by both halves of the phase. A
/// table counts as the session's own only once the server has answered its
/// CREATE without an error; a rollback, an error in its transaction or a
/// DISCARD forgets it; a change of search_path stops the tracking for good
/// (a bare name could then resolve to a permanent table first). Every doubt
/// forgets, so a table pgward counts is one the session certainly has.
#[derive(Debug, Default)]
struct TempTables {
    /// Lets the server half inspect nothing while no table is tracked.
    active: AtomicBool,
    state: Mutex<TempState>,
}

#[derive(Debug, Default)]
struct TempState {
    tables: BTreeMap<String, Temp>,
    /// An ErrorResponse since the last ReadyForQuery.
    error: bool,
    /// search_path changed: bare names are never the session's own again.
    disabled: bool,
}

impl TempTables {
    /// Names the policy may treat as the session's own temporary tables.
    fn usable(&self) -> BTreeSet<String> {
        if !self.active.load(Ordering::Acquire) {
            return BTreeSet::new();
        }
        let Ok(state) = self.state.lock() else {
            return BTreeSet::new();
        };
        state
            .tables
            .iter()
            .filter(|(_, t)| !matches!(t, Temp::Pending(_)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Applies an allowed message's effect; `due` numbers its request.
    fn apply(&self, effect: &Effect, due: u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match effect {
            Effect::CreateTemp(name) if !state.disabled => {
                state.tables.insert(name.clone(), Temp::Pending(due));
            }
            Effect::ForgetTemp(name) => {
                state.tables.remove(name);
            }
            Effect::ForgetAllTemp | Effect::DiscardAll => state.tables.clear(),
            Effect::SearchPathChanged => {
                state.disabled = true;
                state.tables.clear();
            }
            Effect::Rollback => state.tables.retain(|_, t| *t == Temp::Committed),
            _ => {}
        }
        self.active
            .store(!state.tables.is_empty(), Ordering::Release);
    }

    /// The server answered request `answered` (a ReadyForQuery).
    fn ready(&self, answered: u64, status: TransactionStatus) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let error = std::mem::take(&mut state.error);
        state.tables.retain(|_, t| {
            let next = match (*t, status) {
                (Temp::Pending(due), _) if due > answered => Some(*t),
                (Temp::Committed, _) => Some(Temp::Committed),
                // Its CREATE, or its transaction, may have failed.
                _ if error => None,
                (_, TransactionStatus::Failed) => None,
                (_, TransactionStatus::Idle) => Some(Temp::Committed),
                (_, TransactionStatus::InTransaction) => Some(Temp::InTransaction),
            };
            if let Some(next) = next {
                *t = next;
            }
            next.is_some()
        });
        self.active
            .store(!state.tables.is_empty(), Ordering::Release);
    }

    fn error(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.error = true;
        }
    }
}

/// A prepared statement (SQL-level PREPARE) and what running it does.
struct Prepared {
    units: Arc<Vec<Unit>>,
    text: Arc<str>,
}

/// Judges client statements.
pub struct RulesFrontend {
    policy: Arc<ArcSwap<Policy>>,
    identity: Identity,
    settings: Arc<ReportedSettings>,
    inflight: Arc<InFlight>,
    prepared: HashMap<String, Prepared>,
}

impl RulesFrontend {
    /// The phase for one session.
    pub fn new(
        policy: Arc<ArcSwap<Policy>>,
        identity: Identity,
        settings: Arc<ReportedSettings>,
        inflight: Arc<InFlight>,
    ) -> Self {
        Self {
            policy,
            identity,
            settings,
            inflight,
            prepared: HashMap::new(),
        }
    }

    fn judge(&mut self, text: Option<&[u8]>, what: &str) -> FrontendAction {
        let policy = self.policy.load();
        if policy.is_inert() {
            // Prepared statements made now must still be judged if rules
            // arrive later: without facts they are refused then (fail closed).
            return FrontendAction::Forward;
        }
        let Some(text) = text else {
            return refuse(Denial {
                code: "08P01",
                message: format!("malformed {what} message"),
                detail: None,
                hint: None,
                position: None,
            });
        };
        let settings = self.settings.current();
        let lexing = if self.inflight.busy() {
            Lexing::Uncertain(settings)
        } else {
            Lexing::Known(settings)
        };
        let own_temp_tables = self.settings.temp.usable();
        let client_encoding = self.settings.client_encoding.lock().map_or_else(
            |_| ClientEncoding::Unjudgeable("unknown".into()),
            |e| e.clone(),
        );
        let session = Session {
            lexing,
            own_pid: None,
            own_temp_tables: &own_temp_tables,
            server_major: self.settings.server_major.load(Ordering::Acquire),
            client_encoding: &client_encoding,
        };
        let outcome = policy.judge_in(text, &self.identity, &session);
        let verdict = match &outcome.verdict {
            Verdict::Deny(d) => Verdict::Deny(d.clone()),
            Verdict::Allow(logged) => self.apply_effects(&policy, &outcome, logged.clone()),
        };
        match verdict {
            Verdict::Allow(logged) => {
                for rule in logged {
                    tracing::info!(
                        target: "pgward::policy",
                        rule = %rule,
                        user = %self.identity.user,
                        statement = %outcome.text,
                        "statement matched a log rule"
                    );
                }
                FrontendAction::Forward
            }
            Verdict::Deny(d) => {
                tracing::info!(
                    target: "pgward::policy",
                    user = %self.identity.user,
                    statement = %outcome.text,
                    reason = %d.message,
                    "statement refused"
                );
                refuse(d)
            }
        }
    }

    /// EXECUTE inherits the verdict of what was prepared, judged by today's
    /// rules; PREPARE / DEALLOCATE / DISCARD ALL keep the table in step.
    /// Effects apply only if the whole message is allowed.
    fn apply_effects(
        &mut self,
        policy: &Policy,
        outcome: &Outcome,
        mut logged: Vec<Arc<str>>,
    ) -> Verdict {
        if outcome.effects.is_empty() {
            return Verdict::Allow(logged);
        }
        // Within one message, later statements see earlier PREPAREs.
        let mut added: HashMap<&str, (&Arc<Vec<Unit>>, &Arc<str>)> = HashMap::new();
        for effect in &outcome.effects {
            match effect {
                Effect::Prepare { name, units } => {
                    added.insert(name, (units, &outcome.text));
                }
                Effect::Execute(name) => {
                    let found = added
                        .get(name.as_str())
                        .map(|(u, t)| (Arc::clone(u), Arc::clone(t)))
                        .or_else(|| {
                            self.prepared
                                .get(name)
                                .map(|p| (Arc::clone(&p.units), Arc::clone(&p.text)))
                        });
                    let Some((units, text)) = found else {
                        return Verdict::Deny(Denial {
                            code: "42501",
                            message: format!(
                                "statement denied by pgward: prepared statement \"{name}\" was not prepared through pgward's rules"
                            ),
                            detail: None,
                            hint: Some("PREPARE it again in this session.".into()),
                            position: None,
                        });
                    };
                    match policy.rules.judge(
                        units.iter().map(|u| (u, &*text)),
                        &policy.rules.audience(&self.identity),
                    ) {
                        Verdict::Deny(d) => return Verdict::Deny(d),
                        Verdict::Allow(more) => logged.extend(more),
                    }
                }
                _ => {}
            }
        }
        for effect in &outcome.effects {
            match effect {
                Effect::Prepare { name, units } => {
                    self.prepared.insert(
                        name.clone(),
                        Prepared {
                            units: Arc::clone(units),
                            text: Arc::clone(&outcome.text),
                        },
                    );
                }
                Effect::Deallocate(Some(name)) => {
                    self.prepared.remove(name);
                }
                Effect::Deallocate(None) | Effect::DiscardAll => self.prepared.clear(),
                _ => {}
            }
            // The request this message is counted in, once forwarded.
            let due = self.inflight.sent_total() + 1;
            self.settings.temp.apply(effect, due);
        }
        Verdict::Allow(logged)
    }
}

fn refuse(d: Denial) -> FrontendAction {
    FrontendAction::Refuse(Refusal {
        code: d.code,
        message: d.message,
        detail: d.detail,
        hint: d.hint,
        position: d.position,
    })
}

impl FrontendPhases for RulesFrontend {
    fn inspects(&self, kind: FrontendKind) -> bool {
        matches!(kind, FrontendKind::Query | FrontendKind::Parse)
    }

    fn on_query(&mut self, frame: &Frame) -> FrontendAction {
        self.judge(query_text(frame).ok(), "Query")
    }

    fn on_parse(&mut self, frame: &Frame) -> FrontendAction {
        self.judge(parse_view(frame).ok().map(|p| p.query), "Parse")
    }
}

/// Follows the server's reports of lexing settings, and its answers to the
/// CREATEs of temporary tables.
pub struct RulesBackend {
    settings: Arc<ReportedSettings>,
    inflight: Arc<InFlight>,
}

impl RulesBackend {
    /// The backend half, sharing `settings` with the frontend half.
    pub fn new(settings: Arc<ReportedSettings>, inflight: Arc<InFlight>) -> Self {
        Self { settings, inflight }
    }
}

impl RulesBackend {
    /// The server sent an ErrorResponse (the caller forwards it).
    pub fn note_error(&mut self) {
        self.settings.temp.error();
    }
}

impl BackendPhases for RulesBackend {
    fn inspects(&self, kind: BackendKind) -> bool {
        kind == BackendKind::ParameterStatus
            || (matches!(
                kind,
                BackendKind::ErrorResponse | BackendKind::ReadyForQuery
            ) && self.settings.temp.active.load(Ordering::Acquire))
    }

    fn on_ready_for_query(&mut self, status: TransactionStatus) {
        // Called before the relay counts this answer.
        let answered = self.inflight.answered_total() + 1;
        self.settings.temp.ready(answered, status);
    }

    fn on_parameter_status(&mut self, frame: &Frame) {
        self.settings.record(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_read_as_majors() {
        for (text, major) in [
            (&b"15.4"[..], 15),
            (b"16beta1", 16),
            (b"17.2 (Debian 17.2-1.pgdg120+1)", 17),
            (b"9.6.24", 9),
            (b"", 0),
            (b"x15", 0),
        ] {
            assert_eq!(server_major(text), major, "{text:?}");
        }
    }

    fn names(t: &TempTables) -> Vec<String> {
        t.usable().into_iter().collect()
    }

    #[test]
    fn temp_tables_count_once_the_server_created_and_kept_them() {
        let t = TempTables::default();
        t.apply(&Effect::CreateTemp("a".into()), 1);
        assert!(names(&t).is_empty(), "not before the server answered");
        t.ready(1, TransactionStatus::Idle);
        assert_eq!(names(&t), ["a"]);

        // A CREATE whose request failed creates nothing.
        t.apply(&Effect::CreateTemp("b".into()), 2);
        t.error();
        t.ready(2, TransactionStatus::Idle);
        assert_eq!(names(&t), ["a"]);

        // Created inside a transaction: usable there, gone with a rollback.
        t.apply(&Effect::CreateTemp("c".into()), 3);
        t.ready(3, TransactionStatus::InTransaction);
        assert_eq!(names(&t), ["a", "c"]);
        t.apply(&Effect::Rollback, 4);
        t.ready(4, TransactionStatus::Idle);
        assert_eq!(names(&t), ["a"]);

        // ... or with an error that fails the transaction (COMMIT then
        // rolls back).
        t.apply(&Effect::CreateTemp("d".into()), 5);
        t.ready(5, TransactionStatus::InTransaction);
        t.error();
        t.ready(6, TransactionStatus::Failed);
        t.ready(7, TransactionStatus::Idle);
        assert_eq!(names(&t), ["a"]);

        // Committed at the transaction's end.
        t.apply(&Effect::CreateTemp("e".into()), 8);
        t.ready(8, TransactionStatus::InTransaction);
        t.ready(9, TransactionStatus::Idle);
        assert_eq!(names(&t), ["a", "e"]);

        // Pipelined: not counted until its own answer.
        t.apply(&Effect::CreateTemp("f".into()), 11);
        t.ready(10, TransactionStatus::Idle);
        assert_eq!(names(&t), ["a", "e"]);
        t.ready(11, TransactionStatus::Idle);
        assert_eq!(names(&t), ["a", "e", "f"]);

        t.apply(&Effect::ForgetTemp("e".into()), 12);
        assert_eq!(names(&t), ["a", "f"]);
        t.apply(&Effect::ForgetAllTemp, 13);
        assert!(names(&t).is_empty());
        assert!(!t.active.load(Ordering::Acquire));

        // After a search_path change, nothing is tracked again.
        t.apply(&Effect::SearchPathChanged, 14);
        t.apply(&Effect::CreateTemp("g".into()), 15);
        t.ready(15, TransactionStatus::Idle);
        assert!(names(&t).is_empty());
    }
}

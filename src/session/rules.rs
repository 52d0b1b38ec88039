//! The statement-rules phase: every Query and Parse is judged by the policy
//! before it may reach the server. Its backend half follows the settings
//! that change how PostgreSQL lexes (standard_conforming_strings) from the
//! server's own ParameterStatus reports, never from the client's SET, which
//! may fail or be rolled back.

use super::inflight::InFlight;
use super::phases::{BackendPhases, FrontendAction, FrontendPhases, Refusal};
use crate::policy::facts::{Effect, Unit};
use crate::policy::lexer::LexSettings;
use crate::policy::rules::{Denial, Identity, Verdict};
use crate::policy::{Lexing, Outcome, Policy};
use crate::wire::backend::{parameter_status, BackendKind};
use crate::wire::frontend::{parse_view, query_text, FrontendKind};
use crate::wire::Frame;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The session's lexing settings as the server last reported them.
#[derive(Debug)]
pub struct ReportedSettings {
    standard_conforming_strings: AtomicBool,
}

impl ReportedSettings {
    /// Settings from the ParameterStatus messages of the server's login.
    pub fn from_startup(messages: &[u8]) -> Self {
        let settings = Self {
            standard_conforming_strings: AtomicBool::new(true),
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
            });
        };
        let settings = self.settings.current();
        let lexing = if self.inflight.busy() {
            Lexing::Uncertain(settings)
        } else {
            Lexing::Known(settings)
        };
        let outcome = policy.judge(text, &self.identity, lexing);
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
                Effect::Execute(_) => {}
            }
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

/// Follows the server's reports of lexing settings.
pub struct RulesBackend {
    settings: Arc<ReportedSettings>,
}

impl RulesBackend {
    /// The backend half, sharing `settings` with the frontend half.
    pub fn new(settings: Arc<ReportedSettings>) -> Self {
        Self { settings }
    }
}

impl BackendPhases for RulesBackend {
    fn inspects(&self, kind: BackendKind) -> bool {
        kind == BackendKind::ParameterStatus
    }

    fn on_parameter_status(&mut self, frame: &Frame) {
        self.settings.record(frame);
    }
}

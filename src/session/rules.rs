//! The statement-rules phase: every Query and Parse is judged by the policy
//! before it may reach the server. Its backend half follows the settings
//! that change how PostgreSQL lexes (standard_conforming_strings) from the
//! server's own ParameterStatus reports, never from the client's SET, which
//! may fail or be rolled back.

use super::phases::{Decision, Phase, Refusal, RequestContext, RequestKind};
use super::tracker::{Statement, Tracker};
use crate::policy::facts::{Effect, Unit};
use crate::policy::lexer::LexSettings;
use crate::policy::rules::{Denial, Identity, Verdict};
use crate::policy::{Lexing, Outcome, Policy};
use crate::sqlstate::Sqlstate;
use crate::wire::backend::parameter_status;
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
                if let Ok((name, value)) = parameter_status(frame.view()) {
                    settings.record(name, value);
                }
            }
        }
        settings
    }

    /// Records one ParameterStatus.
    pub(crate) fn record(&self, name: &[u8], value: &[u8]) {
        if name == b"standard_conforming_strings" {
            self.standard_conforming_strings
                .store(value == b"on", Ordering::Release);
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

/// Judges client statements.
pub struct RulesPhase {
    policy: Arc<ArcSwap<Policy>>,
    identity: Identity,
    settings: Arc<ReportedSettings>,
}

impl RulesPhase {
    /// The phase for one session.
    pub fn new(
        policy: Arc<ArcSwap<Policy>>,
        identity: Identity,
        settings: Arc<ReportedSettings>,
    ) -> Self {
        Self {
            policy,
            identity,
            settings,
        }
    }

    fn judge(&mut self, text: &[u8], tracker: &Tracker) -> Decision {
        let policy = self.policy.load();
        if policy.is_inert() {
            // Prepared statements made now are judged again at EXECUTE, so
            // rules that arrive later still apply to them.
            return Decision::Forward;
        }
        let settings = self.settings.current();
        // A request still unanswered (in this batch or an earlier one) may
        // change the setting before this text is lexed.
        let lexing = if tracker.busy() {
            Lexing::Uncertain(settings)
        } else {
            Lexing::Known(settings)
        };
        let outcome = policy.judge(text, &self.identity, lexing);
        let verdict = match &outcome.verdict {
            Verdict::Deny(d) => Verdict::Deny(d.clone()),
            Verdict::Allow(logged) => {
                self.executed(&policy, &outcome, logged.clone(), tracker, lexing)
            }
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
                Decision::Forward
            }
            Verdict::Deny(d) => {
                tracing::info!(
                    target: "pgward::policy",
                    user = %self.identity.user,
                    statement = %outcome.text,
                    reason = %d.message,
                    "statement refused"
                );
                Decision::Refuse(refusal(d))
            }
        }
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
        lexing: Lexing,
    ) -> Verdict {
        let mut added: HashMap<&str, &Arc<Vec<Unit>>> = HashMap::new();
        for effect in &outcome.effects {
            match effect {
                Effect::Prepare { name, units } => {
                    added.insert(name, units);
                }
                Effect::Execute(name) => {
                    let verdict = if let Some(units) = added.get(name.as_str()) {
                        policy
                            .rules
                            .judge(units.iter().map(|u| (u, &*outcome.text)), &self.identity)
                    } else if let Some(statement) = tracker.projected_statement(name.as_bytes()) {
                        self.prepared_verdict(policy, name, &statement, lexing)
                    } else {
                        Verdict::Deny(Denial {
                            code: "42501",
                            message: format!(
                                "statement denied by pgward: prepared statement \"{name}\" was not prepared through pgward's rules"
                            ),
                            detail: None,
                            hint: Some("PREPARE it again in this session.".into()),
                        })
                    };
                    match verdict {
                        Verdict::Deny(d) => return Verdict::Deny(d),
                        Verdict::Allow(more) => logged.extend(more),
                    }
                }
                _ => {}
            }
        }
        Verdict::Allow(logged)
    }

    /// The verdict for running prepared statement `name`: its own units
    /// when it was made by SQL PREPARE, else its Parse text as a whole.
    fn prepared_verdict(
        &self,
        policy: &Policy,
        name: &str,
        statement: &Statement,
        lexing: Lexing,
    ) -> Verdict {
        let judged = policy.judge(&statement.text, &self.identity, lexing);
        if !statement.sql_prepare {
            return judged.verdict.clone();
        }
        for effect in &judged.effects {
            if let Effect::Prepare { name: n, units } = effect {
                if n == name {
                    return policy
                        .rules
                        .judge(units.iter().map(|u| (u, &*judged.text)), &self.identity);
                }
            }
        }
        Verdict::Deny(Denial {
            code: "42501",
            message: format!(
                "statement denied by pgward: prepared statement \"{name}\" cannot be judged"
            ),
            detail: None,
            hint: Some("PREPARE it again in this session.".into()),
        })
    }
}

fn refusal(d: Denial) -> Refusal {
    Refusal {
        code: Sqlstate::from_code(d.code),
        message: d.message,
        detail: d.detail,
        hint: d.hint,
        position: None,
    }
}

impl Phase for RulesPhase {
    fn name(&self) -> &'static str {
        "rules"
    }

    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        match (ctx.kind, ctx.text) {
            (RequestKind::Query | RequestKind::Parse, Some(text)) => self.judge(text, ctx.tracker),
            _ => Decision::Forward,
        }
    }

    fn on_parameter_status(&mut self, name: &[u8], value: &[u8]) {
        self.settings.record(name, value);
    }
}

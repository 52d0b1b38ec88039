//! The audit trail (docs/audit.md): one record per statement and per
//! session start and end, chained by hash, with signed checkpoints.
//!
//! - `event`: what a record says.
//! - `params`: Bind parameters, redacted, in full or keyed-hashed.
//! - `phase`: the session phase that makes statement records.
//! - `queue`: the bounded queue (reservations for fail-closed identities).
//! - `writer`, `files`: the writer thread, the chained files.
//! - [`chain`]: the hash chain and Ed25519 checkpoints.
//! - [`verify`]: the verifier behind `pgward audit verify`.
//! - [`ocsf`]: `pgward audit export --format ocsf`.
//! - `recording`, [`replay`]: session recording and `pgward replay`.

pub mod chain;
pub mod event;
mod files;
mod json;
pub use json::SessionRecord;
pub mod ocsf;
pub(crate) mod params;
mod pg;
pub(crate) mod phase;
mod queue;
mod recording;
pub mod recordings;
pub mod replay;
pub mod verify;
mod writer;

use crate::config::audit::{AuditConfig, OnFull};
use crate::mask::rules::MaskConfig;
use crate::policy::rules::{Action, DefaultAction, Identity};
use crate::policy::Policy;
use crate::session::phases::SessionInfo;
use arc_swap::ArcSwap;
use event::{Event, Record, SessionFields};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use phase::AUDIT_UNAVAILABLE;

/// The lines of the audit files in `paths` (files, or directories of
/// them), in file order, parsed; a line that does not parse is an error.
pub fn read_trail(paths: &[std::path::PathBuf]) -> std::io::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for p in paths {
        let files = if p.is_dir() {
            files::list(p)?.into_iter().map(|(_, f)| f).collect()
        } else {
            vec![p.clone()]
        };
        for f in files {
            for (i, line) in std::fs::read_to_string(&f)?.lines().enumerate() {
                let v = serde_json::from_str(line).map_err(|e| {
                    std::io::Error::other(format!("{}:{}: {e}", f.display(), i + 1))
                })?;
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// The audit trail could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The signing key.
    #[error("audit.signing_key_file: {0}")]
    Key(#[from] chain::KeyError),
    /// The sink could not be opened.
    #[error("audit: cannot open the sink: {0}")]
    Sink(std::io::Error),
}

/// The audit trail shared by all sessions.
pub struct Audit {
    config: AuditConfig,
    queue: Arc<queue::Queue>,
    params: params::ParamPolicy,
    masking: Arc<ArcSwap<MaskConfig>>,
    policy: Arc<ArcSwap<Policy>>,
    /// The rule-set version in force (the gateway sets it on reload).
    rules_version: AtomicU64,
    written: Arc<writer::Written>,
    signer: Mutex<Option<chain::Signer>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    last_drop_log: Mutex<Option<Instant>>,
    recorder: std::sync::OnceLock<recording::Recorder>,
}

/// What a session's phase counts, for its end record.
#[derive(Debug, Default)]
pub(crate) struct SessionCounters {
    pub(crate) statements: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditStats {
    /// Records queued or reserved now.
    pub queue_depth: usize,
    /// Records dropped because the queue was full.
    pub dropped: u64,
    /// Records written.
    pub written: u64,
    /// Failed writes.
    pub write_errors: u64,
}

impl Audit {
    /// Checks the key; nothing is written until [`Audit::start`].
    pub fn new(
        config: AuditConfig,
        masking: Arc<ArcSwap<MaskConfig>>,
        policy: Arc<ArcSwap<Policy>>,
    ) -> Result<Self, AuditError> {
        let signer = match &config.signing_key_file {
            Some(path) => Some(chain::Signer::load(path)?),
            None => None,
        };
        Ok(Self {
            queue: queue::Queue::new(config.queue_capacity),
            params: params::ParamPolicy {
                mode: config.parameters.clone(),
                key: config
                    .parameter_key
                    .as_ref()
                    .map(|k| k.expose().as_bytes().to_vec()),
            },
            config,
            masking,
            policy,
            rules_version: AtomicU64::new(1),
            written: Arc::default(),
            signer: Mutex::new(signer),
            thread: Mutex::new(None),
            last_drop_log: Mutex::new(None),
            recorder: std::sync::OnceLock::new(),
        })
    }

    /// Opens the sink and starts the writer thread (once); `upstreams`
    /// for the postgres sink.
    pub fn start(
        &self,
        upstreams: &std::collections::BTreeMap<String, crate::auth::backend::Upstream>,
    ) -> Result<(), AuditError> {
        let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if thread.is_some() {
            return Ok(());
        }
        let signer = self.signer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (queue, written) = (Arc::clone(&self.queue), Arc::clone(&self.written));
        let interval = self.config.checkpoint_interval;
        let (config, upstreams) = (self.config.clone(), upstreams.clone());
        // The sink is opened on the writer's thread (the postgres sink runs
        // its own small runtime there); startup waits for the outcome, so
        // a sink that cannot be opened stops pgward from serving.
        let (opened_tx, opened) = std::sync::mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name("pgward-audit".into())
            .spawn(move || {
                let mut head = chain::Head::genesis();
                match writer::Sink::open(&config, &mut head, &upstreams) {
                    Ok(sink) => {
                        let _ = opened_tx.send(Ok(()));
                        writer::run(queue, sink, head, signer, interval, written);
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                    }
                }
            })
            .map_err(AuditError::Sink)?;
        if !self.config.record_groups.is_empty() && self.recorder.get().is_none() {
            let recorder = recording::Recorder::start(
                self.config.recordings_directory.clone(),
                self.config.record_groups.clone(),
                self.config.record_max_bytes,
            )
            .map_err(AuditError::Sink)?;
            let _ = self.recorder.set(recorder);
        }
        match opened.recv() {
            Ok(Ok(())) => *thread = Some(handle),
            Ok(Err(e)) => return Err(AuditError::Sink(e)),
            Err(_) => {
                return Err(AuditError::Sink(std::io::Error::other(
                    "the audit writer died",
                )))
            }
        }
        Ok(())
    }

    /// Stops taking records, writes what is queued and the closing
    /// checkpoint, and waits for the writer.
    pub async fn close(&self) {
        self.queue.close();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    /// A recording tap for this session, when its identity is recorded.
    pub(crate) fn recording_tap(
        &self,
        info: &SessionInfo,
    ) -> Option<Box<dyn crate::session::core::Tap>> {
        let tap = self.recorder.get()?.tap(info)?;
        Some(Box::new(tap))
    }

    /// Counters for metrics.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            queue_depth: self.queue.depth(),
            dropped: self.queue.dropped.load(Ordering::Relaxed),
            written: self.written.records.load(Ordering::Relaxed),
            write_errors: self.written.errors.load(Ordering::Relaxed),
        }
    }

    /// A reload was accepted: later statements carry `version`.
    pub fn reloaded(&self, version: u64) {
        self.rules_version.store(version, Ordering::Relaxed);
        self.shed(Record::now(Event::Reload {
            rules_version: version,
        }));
    }

    /// Queues a record if there is room; a dropped one is counted and
    /// logged (at most once a second, with the count so far).
    fn shed(&self, record: Record) {
        if self.queue.send_or_drop(record) {
            return;
        }
        let mut last = self.last_drop_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed().as_secs() >= 1) {
            *last = Some(Instant::now());
            tracing::error!(
                dropped = self.queue.dropped.load(Ordering::Relaxed),
                "audit queue full: record dropped (identity's audit policy is shed)"
            );
        }
    }

    /// Whether `who`'s statements wait for room (fail closed) rather than
    /// shed records when the queue is full.
    pub fn fail_closed_for(&self, who: &Identity) -> bool {
        let in_any = |groups: &[String]| who.groups.iter().any(|g| groups.contains(g));
        if in_any(&self.config.fail_closed_groups) {
            return true;
        }
        if in_any(&self.config.shed_groups) {
            return false;
        }
        match self.config.on_full {
            OnFull::FailClosed => true,
            OnFull::Shed => false,
            OnFull::Auto => {
                let masked = self.masking.load().rules.iter().any(|r| r.applies_to(who));
                let policy = self.policy.load();
                let approval = policy.rules.default_action == DefaultAction::RequireApproval
                    || policy
                        .rules
                        .rules
                        .iter()
                        .any(|r| r.action == Action::RequireApproval && r.applies_to(who));
                masked || approval
            }
        }
    }

    /// A session starts: its start record is queued (a fail-closed one
    /// waits for room, with a slot kept for its end record) and its phase
    /// is made.
    pub(crate) async fn session(
        self: &Arc<Self>,
        info: &SessionInfo,
    ) -> Result<(SessionAudit, phase::AuditPhase), crate::error::SessionError> {
        let fields = Arc::new(SessionRecord::new(SessionFields {
            session: info.id,
            user: info.identity.user.clone(),
            groups: info.identity.groups.clone(),
            role: info.role.clone(),
            client: info.client.map(|c| c.to_string()),
            database: info.database.clone(),
            upstream: info.upstream.clone(),
            application_name: info.application_name.clone(),
            token: match &info.credential {
                crate::auth::identity::Credential::Token(t) => Some(event::TokenFields {
                    issuer: t.issuer.clone(),
                    subject: t.subject.clone(),
                    jti: t.jti.clone(),
                }),
                crate::auth::identity::Credential::Password => None,
            },
        }));
        let fail_closed = self.fail_closed_for(&info.identity);
        let start = Record::now(Event::SessionStart {
            session: event::Shared(Arc::clone(&fields)),
        });
        let end_slot = if fail_closed {
            let mut slots = self
                .queue
                .reserve(2, self.config.full_timeout)
                .await
                .ok_or(crate::error::SessionError::AuditUnavailable)?;
            let end = slots.pop();
            if let Some(s) = slots.pop() {
                s.send(start);
            }
            end
        } else {
            self.shed(start);
            None
        };
        let counters = Arc::new(SessionCounters::default());
        let phase = phase::AuditPhase::new(
            Arc::clone(self),
            Arc::clone(&fields),
            info.identity.clone(),
            fail_closed,
            Arc::clone(&counters),
        );
        Ok((
            SessionAudit {
                audit: Arc::clone(self),
                fields,
                end_slot,
                counters,
                started: Instant::now(),
                ended: false,
            },
            phase,
        ))
    }
}

/// A session's end record, to be written when it ends.
pub(crate) struct SessionAudit {
    audit: Arc<Audit>,
    fields: Arc<SessionRecord>,
    end_slot: Option<queue::Slot>,
    counters: Arc<SessionCounters>,
    started: Instant,
    ended: bool,
}

impl SessionAudit {
    /// The session ended, for `reason`.
    pub(crate) fn ended(&mut self, reason: &str) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let record = Record::now(Event::SessionEnd {
            session: event::Shared(Arc::clone(&self.fields)),
            reason: reason.to_owned(),
            statements: self.counters.statements.load(Ordering::Relaxed),
            bytes_sent: self.counters.bytes.load(Ordering::Relaxed),
            duration_ms: self.started.elapsed().as_millis() as u64,
        });
        match self.end_slot.take() {
            Some(slot) => slot.send(record),
            None => self.audit.shed(record),
        }
    }
}

impl Drop for SessionAudit {
    fn drop(&mut self) {
        self.ended("session ended before its relay began");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::verifier::ScramVerifier;
    use crate::config::Config;

    fn audit(on_full: &str) -> Audit {
        let v = ScramVerifier::generate("x");
        let text = format!(
            r#"[upstreams.db]
host = "127.0.0.1"
port = 5432
user = "app"
sslmode = "disable"

[users.alice]
scram_verifier = "{v}"
groups = ["dev"]
[users.bob]
scram_verifier = "{v}"
groups = ["support"]
[users.carol]
scram_verifier = "{v}"
groups = ["ops", "dev"]

[policy]
[[policy.rules]]
name = "ask"
action = "require_approval"
approvers = ["ops"]
users = ["carol"]
kinds = ["update"]

[[masking.rules]]
name = "m"
columns = ["customers.email"]
strategy = "redact"
groups = ["support"]

[audit]
enabled = true
sink = "stdout"
on_full = "{on_full}"
shed_groups = ["ops"]
"#
        );
        let c = Config::parse(&text, std::path::Path::new("/tmp/pgward.toml")).expect("config");
        Audit::new(
            c.audit.clone().expect("audit on"),
            Arc::new(ArcSwap::from(Arc::clone(&c.masking))),
            Arc::new(ArcSwap::from_pointee(Policy::new(Arc::clone(&c.policy)))),
        )
        .expect("audit")
    }

    fn who(user: &str, groups: &[&str]) -> Identity {
        Identity::new(
            user.to_owned(),
            groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn auto_fails_closed_for_masked_and_approval_identities_and_groups_override() {
        let a = audit("auto");
        assert!(
            !a.fail_closed_for(&who("alice", &["dev"])),
            "neither masked nor approval"
        );
        assert!(a.fail_closed_for(&who("bob", &["support"])), "masked");
        // carol is under an approval rule but in a shed group.
        assert!(!a.fail_closed_for(&who("carol", &["ops", "dev"])));
        assert!(a.fail_closed_for(&who("carol", &["dev"])), "approval rule");
        let a = audit("fail_closed");
        assert!(a.fail_closed_for(&who("alice", &["dev"])));
        assert!(!a.fail_closed_for(&who("carol", &["ops"])));
    }
}

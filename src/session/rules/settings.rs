//! What the rules phase follows from the server's answers: the settings
//! that change how PostgreSQL lexes and what it accepts (standard_conforming_strings,
//! client_encoding, server_version), from its ParameterStatus reports
//! (never from the client's SET, which may fail or be rolled back), and the
//! session's own temporary tables, from the CREATEs the server confirmed.

use crate::policy::encoding::ClientEncoding;
use crate::policy::facts::Effect;
use crate::policy::lexer::LexSettings;
use crate::wire::backend::{parameter_status, TransactionStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// The session's lexing settings as the server last reported them, and the
/// temporary tables it confirmed creating: what both halves of the rules
/// phase share.
#[derive(Debug)]
pub struct ReportedSettings {
    standard_conforming_strings: AtomicBool,
    /// The server's major version (0 until reported: the strictest reading).
    pub(super) server_major: AtomicU32,
    /// The session's client_encoding as last reported.
    client_encoding: Mutex<ClientEncoding>,
    /// `client_encoding` is UTF8, the common case, read without the lock
    /// (stored under it, after the encoding).
    client_encoding_utf8: AtomicBool,
    pub(super) temp: TempTables,
}

impl ReportedSettings {
    /// Settings from the ParameterStatus messages of the server's login.
    pub fn from_startup(messages: &[u8]) -> Self {
        let settings = Self {
            standard_conforming_strings: AtomicBool::new(true),
            server_major: AtomicU32::new(0),
            client_encoding: Mutex::new(ClientEncoding::Utf8),
            client_encoding_utf8: AtomicBool::new(true),
            temp: TempTables::default(),
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

    /// Applies what the startup settings (judged as SETs) do, before the
    /// first request.
    pub(crate) fn apply_startup(&self, effects: &[Effect]) {
        for effect in effects {
            self.temp.apply(effect, 0);
        }
    }

    /// Records one ParameterStatus.
    pub(crate) fn record(&self, name: &[u8], value: &[u8]) {
        {
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
                let utf8 = encoding == ClientEncoding::Utf8;
                if let Ok(mut current) = self.client_encoding.lock() {
                    *current = encoding;
                    self.client_encoding_utf8.store(utf8, Ordering::Release);
                } else {
                    // A poisoned lock: judge as an unknown encoding.
                    self.client_encoding_utf8.store(false, Ordering::Release);
                }
            }
        }
    }

    /// The client encoding as last reported (an unknown one if its lock
    /// was poisoned: that refuses all but ASCII text).
    pub(crate) fn client_encoding(&self) -> ClientEncoding {
        if self.client_encoding_utf8.load(Ordering::Acquire) {
            return ClientEncoding::Utf8;
        }
        self.client_encoding.lock().map_or_else(
            |_| ClientEncoding::Unjudgeable("unknown".into()),
            |e| e.clone(),
        )
    }

    /// The settings as last reported.
    pub fn lexing(&self) -> LexSettings {
        self.current()
    }

    pub(super) fn current(&self) -> LexSettings {
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
pub(super) struct TempTables {
    /// Lets the server half inspect nothing while no table is tracked.
    active: AtomicBool,
    /// Moves on whenever what [`Self::usable`] returns may have changed:
    /// a judgement made under one value holds while it stays.
    generation: AtomicU64,
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
    /// The current generation (see the field).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Names the policy may treat as the session's own temporary tables.
    /// (Inlined up to the lock: most sessions have no temporary table, and
    /// every judged statement asks.)
    #[inline]
    /// `None` for none.
    pub(super) fn usable(&self) -> Option<BTreeSet<String>> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        Some(self.usable_locked())
    }

    fn usable_locked(&self) -> BTreeSet<String> {
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
    pub(super) fn apply(&self, effect: &Effect, due: u64) {
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
            // Prepared statements and the rest: no table changes, so the
            // judgements made under this generation still hold.
            _ => return,
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.active
            .store(!state.tables.is_empty(), Ordering::Release);
    }

    /// The server answered request `answered` (a ReadyForQuery). (Inlined
    /// up to the lock, as `usable`.)
    #[inline]
    pub(super) fn ready(&self, answered: u64, status: TransactionStatus) {
        if self.active.load(Ordering::Acquire) {
            self.ready_locked(answered, status);
        }
    }

    fn ready_locked(&self, answered: u64, status: TransactionStatus) {
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
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.active
            .store(!state.tables.is_empty(), Ordering::Release);
    }

    pub(super) fn error(&self) {
        // An error while nothing is tracked concerns no table; kept, it
        // would outlive the ReadyForQuery that ends it (which then skips
        // the lock) and make the next table created count as failed.
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut state) = self.state.lock() {
            state.error = true;
        }
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
        t.usable().unwrap_or_default().into_iter().collect()
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

    #[test]
    fn an_error_while_no_table_is_tracked_does_not_fail_the_next_one() {
        let t = TempTables::default();
        t.error();
        t.ready(1, TransactionStatus::Idle);
        t.apply(&Effect::CreateTemp("a".into()), 2);
        t.ready(2, TransactionStatus::Idle);
        assert_eq!(names(&t), ["a"]);
    }
}

//! Counting requests and their answers, so a session knows whether the
//! server is still working on something the client sent.
//!
//! Each simple Query and each Sync is answered by exactly one ReadyForQuery.
//! The client pump counts the ones it forwards, the server pump counts the
//! ReadyForQuery messages it relays; while the first count is ahead, work is
//! in flight, and a setting reported so far may still change.

use std::sync::atomic::{AtomicU64, Ordering};

/// Requests sent and answered, shared by both pumps and the phases.
#[derive(Debug, Default)]
pub struct InFlight {
    sent: AtomicU64,
    answered: AtomicU64,
}

impl InFlight {
    /// Counts `n` Query / Sync messages about to go to the server (before
    /// they are written, so answers never outnumber requests).
    pub fn sent(&self, n: u64) {
        if n > 0 {
            self.sent.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Counts `n` ReadyForQuery messages from the server; returns the total.
    pub fn answered(&self, n: u64) -> u64 {
        // Release: whatever the server pump recorded before this answer (a
        // ParameterStatus) is visible to whoever sees the new count.
        self.answered.fetch_add(n, Ordering::AcqRel) + n
    }

    /// Requests sent so far.
    pub fn sent_total(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// Requests answered so far.
    pub fn answered_total(&self) -> u64 {
        self.answered.load(Ordering::Acquire)
    }

    /// Whether the server has requests it has not answered yet.
    pub fn busy(&self) -> bool {
        self.answered.load(Ordering::Acquire) < self.sent.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_until_every_request_is_answered() {
        let f = InFlight::default();
        assert!(!f.busy());
        f.sent(2);
        assert!(f.busy());
        assert_eq!(f.answered(1), 1);
        assert!(f.busy());
        assert_eq!(f.answered(1), 2);
        assert!(!f.busy());
        assert_eq!(f.sent_total(), 2);
    }
}

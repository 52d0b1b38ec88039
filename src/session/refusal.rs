//! Refusing a client message while keeping the protocol exactly in step.
//!
//! pgward does not answer a refused message itself: replies to earlier
//! pipelined messages may still be on their way from the server, and the
//! server must see the error too (so an open transaction fails, as it would
//! had PostgreSQL raised it). Instead the refused message is replaced by a
//! statement that fails on the server with a unique marker in its message;
//! when that ErrorResponse comes back, the backend pump swaps in pgward's own
//! error. Ordering, transaction state and ReadyForQuery all stay the server's.

use super::phases::Refusal;
use crate::wire::backend::notice_field;
use crate::wire::encode::{self, Severity};
use crate::wire::Frame;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Refusals sent to the server and not yet answered, shared by both pumps.
#[derive(Debug)]
pub struct PendingRefusals {
    /// Random per session, so a client cannot forge a marker.
    nonce: u64,
    next_id: AtomicUsize,
    /// Lets the backend pump skip all inspection while nothing is pending.
    count: AtomicUsize,
    /// Marker, pgward's error, and the request count by whose answer the
    /// server's error must have come (a refused statement inside a failed
    /// transaction gets the server's 25P02 instead, and no marker).
    queue: Mutex<VecDeque<(String, Bytes, u64)>>,
}

/// What stands in for a refused message on its way to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandIn {
    /// A simple Query (for a refused Query or FunctionCall): the server
    /// answers it with the error and a ReadyForQuery.
    Query,
    /// A Parse (for a refused Parse): the error puts the server into the
    /// extended protocol's skip-until-Sync state, as any failed Parse does.
    Parse,
}

impl Default for PendingRefusals {
    fn default() -> Self {
        Self {
            nonce: rand::random(),
            next_id: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
        }
    }
}

impl PendingRefusals {
    /// Records a refusal and returns the message that stands in for the
    /// refused one. The cast of the marker to int4 fails on the server (at
    /// parse analysis, so a Parse fails too) with the marker quoted in the
    /// error message. `due` is the request count whose ReadyForQuery ends
    /// the wait for that error.
    pub fn substitute(&self, refusal: &Refusal, stand_in: StandIn, due: u64) -> Bytes {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let marker = format!("pgward-refusal-{:016x}-{id}", self.nonce);
        let mut error = BytesMut::new();
        encode::error_response_at(
            &mut error,
            Severity::Error,
            refusal.code,
            &refusal.message,
            refusal.detail.as_deref(),
            refusal.hint.as_deref(),
            refusal.position,
        );
        let mut query = BytesMut::new();
        let sql = format!("SELECT '{marker}'::pg_catalog.int4");
        match stand_in {
            StandIn::Query => encode::query(&mut query, &sql),
            StandIn::Parse => encode::parse(&mut query, &sql),
        }
        if let Ok(mut q) = self.queue.lock() {
            q.push_back((marker, error.freeze(), due));
        }
        self.count.fetch_add(1, Ordering::Release);
        query.freeze()
    }

    /// Whether any refusal awaits its error.
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// If `frame` is the server's error for a pending refusal, returns pgward's
    /// error to send instead.
    pub fn take_if_marker(&self, frame: &Frame) -> Option<Bytes> {
        let message = notice_field(frame, b'M')?;
        let mut queue = self.queue.lock().ok()?;
        let at = queue.iter().position(|(marker, _, _)| {
            message
                .windows(marker.len())
                .any(|w| w == marker.as_bytes())
        })?;
        let (_, error, _) = queue.remove(at)?;
        self.count.fetch_sub(1, Ordering::Release);
        Some(error)
    }

    /// Forgets refusals whose answer window closed: `answered` requests have
    /// had their ReadyForQuery.
    pub fn expire(&self, answered: u64) {
        if !self.any() {
            return;
        }
        if let Ok(mut queue) = self.queue.lock() {
            let before = queue.len();
            queue.retain(|(_, _, due)| *due > answered);
            self.count
                .fetch_sub(before - queue.len(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Framer;

    #[test]
    fn marker_error_is_swapped_once() {
        let pending = PendingRefusals::default();
        let refusal = Refusal {
            code: "0A000",
            message: "no".into(),
            detail: None,
            hint: None,
            position: None,
        };
        let query = pending.substitute(&refusal, StandIn::Query, 1);
        let sql = String::from_utf8_lossy(&query[5..query.len() - 1]).into_owned();
        let marker = sql.split('\'').nth(1).unwrap().to_owned();
        assert!(pending.any());

        let mut server_error = BytesMut::new();
        let text = format!("invalid input syntax for type integer: \"{marker}\"");
        encode::error_response(&mut server_error, Severity::Error, "22P02", &text, None);
        let frame = Framer::new(1 << 16)
            .next_frame(&mut server_error)
            .unwrap()
            .unwrap();
        let swapped = pending.take_if_marker(&frame).expect("marker recognised");
        assert!(swapped.windows(5).any(|w| w == b"0A000"));
        assert!(!pending.any());
        assert!(pending.take_if_marker(&frame).is_none(), "only once");
    }

    #[test]
    fn unanswered_refusals_expire_with_their_ready_for_query() {
        let pending = PendingRefusals::default();
        let refusal = Refusal {
            code: "42501",
            message: "no".into(),
            detail: None,
            hint: None,
            position: None,
        };
        let parse = pending.substitute(&refusal, StandIn::Parse, 3);
        assert_eq!(parse[0], b'P');
        pending.expire(2);
        assert!(pending.any());
        pending.expire(3);
        assert!(!pending.any());
    }
}

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
    queue: Mutex<VecDeque<(String, Bytes)>>,
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
    /// Records a refusal and returns the simple Query that stands in for the
    /// refused message. The cast of the marker to int4 fails on the server
    /// with the marker quoted in the error message.
    pub fn substitute(&self, refusal: &Refusal) -> Bytes {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let marker = format!("pgward-refusal-{:016x}-{id}", self.nonce);
        let mut error = BytesMut::new();
        encode::error_response(
            &mut error,
            Severity::Error,
            refusal.code,
            &refusal.message,
            refusal.hint.as_deref(),
        );
        let mut query = BytesMut::new();
        encode::query(&mut query, &format!("SELECT '{marker}'::pg_catalog.int4"));
        if let Ok(mut q) = self.queue.lock() {
            q.push_back((marker, error.freeze()));
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
        let at = queue.iter().position(|(marker, _)| {
            message
                .windows(marker.len())
                .any(|w| w == marker.as_bytes())
        })?;
        let (_, error) = queue.remove(at)?;
        self.count.fetch_sub(1, Ordering::Release);
        Some(error)
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
            hint: None,
        };
        let query = pending.substitute(&refusal);
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
}

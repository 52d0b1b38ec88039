//! Refusing a client message while keeping the protocol exactly in step.
//!
//! pgward does not answer a refused message itself: replies to earlier
//! pipelined messages may still be on their way from the server, and the
//! server must see the error too (so an open transaction fails, as it would
//! had PostgreSQL raised it). Instead the refused message is replaced by a
//! stand-in that fails on the server with a unique marker in its message:
//! a Query for a refused Query or FunctionCall (answered by an error and a
//! ReadyForQuery), and for any extended-protocol message a Parse of a
//! statement name of pgward's own (its error makes the server skip to Sync,
//! as the refused message's own error would have; a failed Parse creates
//! nothing). The tracker pairs the stand-in with its answer; pgward's error
//! is sent in place of the server's. A stand-in answered without its marker
//! (a failed transaction's 25P02) gets the server's error, as the refused
//! message would have.

use super::phases::Refusal;
use super::tracker::StandInAnswer;
use crate::wire::backend::notice_field;
use crate::wire::encode::{self, Severity};
use crate::wire::FrameRef;
use bytes::BytesMut;

/// Makes stand-ins for one session.
#[derive(Debug)]
pub(crate) struct StandIns {
    /// Random per session, so a client cannot forge a marker.
    nonce: u64,
    next_id: u64,
}

impl Default for StandIns {
    fn default() -> Self {
        Self {
            nonce: rand::random(),
            next_id: 0,
        }
    }
}

impl StandIns {
    /// Appends the stand-in for a refused message to `out` and returns what
    /// its error is to be swapped for. `query`: the refused message was a
    /// Query or FunctionCall.
    pub(crate) fn substitute(
        &mut self,
        refusal: &Refusal,
        query: bool,
        out: &mut BytesMut,
    ) -> StandInAnswer {
        self.next_id += 1;
        let marker = format!("pgward-refusal-{:016x}-{}", self.nonce, self.next_id);
        // The cast fails at parse analysis, so a Parse fails too, with the
        // marker quoted in the server's message.
        let sql = format!("SELECT '{marker}'::pg_catalog.int4");
        if query {
            encode::query(out, &sql);
        } else {
            let name = format!("pgward_refused_{:016x}", self.nonce);
            encode::parse_named(out, name.as_bytes(), &sql);
        }
        StandInAnswer {
            marker: marker.into(),
            error: error_for(refusal).freeze(),
        }
    }
}

/// pgward's ErrorResponse for a refusal.
pub(crate) fn error_for(refusal: &Refusal) -> BytesMut {
    let mut error = BytesMut::new();
    encode::error_response_at(
        &mut error,
        Severity::Error,
        refusal.code.as_str(),
        &refusal.message,
        refusal.detail.as_deref(),
        refusal.hint.as_deref(),
        refusal.position,
    );
    error
}

/// Whether the server's error `frame` is the stand-in's own (it quotes the
/// marker in its message).
pub(crate) fn is_stand_in_error(frame: FrameRef<'_>, answer: &StandInAnswer) -> bool {
    notice_field(frame, b'M').is_some_and(|m| {
        m.windows(answer.marker.len())
            .any(|w| w == answer.marker.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::backend::notice_fields;
    use crate::wire::Framer;

    fn refusal() -> Refusal {
        Refusal::new(crate::sqlstate::Sqlstate::FEATURE_NOT_SUPPORTED, "no")
    }

    #[test]
    fn stand_ins_carry_a_marker_only_their_error_quotes() {
        let mut stand_ins = StandIns::default();
        let mut out = BytesMut::new();
        let answer = stand_ins.substitute(&refusal(), true, &mut out);
        assert_eq!(out[0], b'Q');
        let text = format!(
            "invalid input syntax for type integer: \"{}\"",
            answer.marker
        );
        let mut server_error = BytesMut::new();
        encode::error_response(&mut server_error, Severity::Error, "22P02", &text, None);
        let frame = Framer::new(1 << 16)
            .next_frame(&mut server_error)
            .unwrap()
            .unwrap();
        assert!(is_stand_in_error(frame.view(), &answer));
        let mut other = BytesMut::new();
        encode::error_response(&mut other, Severity::Error, "25P02", "aborted", None);
        let other = Framer::new(1 << 16)
            .next_frame(&mut other)
            .unwrap()
            .unwrap();
        assert!(!is_stand_in_error(other.view(), &answer));
        let mut parse = BytesMut::new();
        let second = stand_ins.substitute(&refusal(), false, &mut parse);
        assert_eq!(parse[0], b'P');
        assert_ne!(second.marker, answer.marker);
        assert_ne!(
            &parse[5..6],
            b"\0",
            "a named statement, never the unnamed one"
        );
    }

    #[test]
    fn positions_are_carried() {
        let mut r = refusal();
        r.position = Some(12);
        let mut e = error_for(&r);
        let frame = Framer::new(1 << 16).next_frame(&mut e).unwrap().unwrap();
        let fields = notice_fields(frame.view()).unwrap();
        assert!(fields.contains(&(b'P', &b"12"[..])));
        assert!(fields.contains(&(b'C', &b"0A000"[..])));
    }
}

//! Text sent while client_encoding may be changing. The server converts
//! each message from the client_encoding in force when it reads it, and
//! reports a change (ParameterStatus) only just before its next
//! ReadyForQuery: a message pipelined behind `SET client_encoding = ...`
//! (or a ROLLBACK undoing one) is read in the new encoding while pgward
//! knows only the old one. ASCII reads alike in every client encoding;
//! other text is refused until the change is reported (a LATIN1 session
//! switching to UTF8 would have `gardé` read as `gardÃ©`, beside any rule
//! naming it, and in SJIS valid UTF-8 `E'ぁ\'` loses its backslash).

use super::RulesPhase;
use crate::session::phases::{Decision, Refusal};
use crate::sqlstate::Sqlstate;
use crate::wire::backend::TransactionStatus;

impl RulesPhase {
    /// Notes a request sent that `sets` client_encoding or `ends` a
    /// transaction, answered by ReadyForQuery number `due`.
    pub(super) fn encoding_may_change(&mut self, sets: bool, ends: bool, due: u64) {
        if sets {
            self.encoding_in_transaction = true;
        }
        if sets || (ends && self.encoding_in_transaction) {
            self.encoding_due = Some(self.encoding_due.map_or(due, |d| d.max(due)));
        }
    }

    /// A ReadyForQuery (number `self.answered`) arrived with `status`.
    pub(super) fn encoding_answered(&mut self, status: TransactionStatus) {
        if self.encoding_due.is_some_and(|due| self.answered >= due) {
            self.encoding_due = None;
        }
        if self.encoding_due.is_none() && status == TransactionStatus::Idle {
            self.encoding_in_transaction = false;
        }
    }

    /// Whether client_encoding may change before the server reads a
    /// message sent now.
    pub(super) fn encoding_unsettled(&self) -> bool {
        self.encoding_due.is_some()
    }

    /// The refusal of a non-ASCII `text` sent while client_encoding may
    /// be changing, if it is.
    pub(super) fn encoding_changing(&self, text: &[u8]) -> Option<Decision> {
        if !self.encoding_unsettled() || text.is_ascii() {
            return None;
        }
        tracing::info!(
            target: "pgward::policy",
            user = %self.identity.user,
            "non-ASCII statement refused while client_encoding may be changing"
        );
        Some(Decision::Refuse(Refusal {
            code: Sqlstate::from_code("55000"),
            message: "statement refused by pgward: client_encoding may change before the \
                      server reads this text (a request before it sets client_encoding or \
                      ends the transaction that set it), and the text is not ASCII"
                .into(),
            detail: None,
            hint: Some("Send non-ASCII text after the answers to the requests before it.".into()),
            position: None,
        }))
    }
}

//! The relay's named phases: the hooks later layers (rules, masking,
//! recording) fill in. They are called in a fixed order for each message, and
//! only for message kinds they declare an interest in: every other frame is
//! forwarded as raw bytes, in runs, without being looked at.
//!
//! Client -> server, per message: `on_query`, `on_parse`, `on_bind`,
//! `on_describe`, `on_execute`, `on_close`, `on_sync`.
//! Server -> client, per message: `on_row_description`, `on_no_data`,
//! `on_data_row`, `on_result_end`, `on_error_response`, `on_notice`,
//! `on_ready_for_query`, `on_parameter_status`.

use crate::wire::backend::{BackendKind, TransactionStatus};
use crate::wire::frontend::FrontendKind;
use crate::wire::Frame;
use bytes::{Bytes, BytesMut};

/// What a client-side phase decides about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendAction {
    /// Forward the frame untouched.
    Forward,
    /// Do not run it; the client gets this error in its place, in order.
    Refuse(Refusal),
}

/// An error pgward answers in place of a refused message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SQLSTATE.
    pub code: &'static str,
    /// Message.
    pub message: String,
    /// Detail, if any.
    pub detail: Option<String>,
    /// Hint, if any.
    pub hint: Option<String>,
    /// Cursor position in the statement text (1-based, in characters), if any.
    pub position: Option<u32>,
}

/// Hooks on messages from the client.
pub trait FrontendPhases: Send {
    /// Whether frames of this kind must be shown to a hook.
    fn inspects(&self, kind: FrontendKind) -> bool;
    /// A simple Query.
    fn on_query(&mut self, _frame: &Frame) -> FrontendAction {
        FrontendAction::Forward
    }
    /// A Parse.
    fn on_parse(&mut self, _frame: &Frame) -> FrontendAction {
        FrontendAction::Forward
    }
    /// A Bind.
    fn on_bind(&mut self, _frame: &Frame) -> FrontendAction {
        FrontendAction::Forward
    }
    /// A Describe.
    fn on_describe(&mut self, _frame: &Frame) -> FrontendAction {
        FrontendAction::Forward
    }
    /// An Execute.
    fn on_execute(&mut self, _frame: &Frame) -> FrontendAction {
        FrontendAction::Forward
    }
    /// A Close (forwarded as is).
    fn on_close(&mut self, _frame: &Frame) {}
    /// A Sync (forwarded as is).
    fn on_sync(&mut self) {}
    /// The relay refused a FunctionCall: a Query stands in for it.
    fn on_function_call_refused(&mut self) {}
}

/// Hooks on messages from the server.
pub trait BackendPhases: Send {
    /// Whether frames of this kind must be shown to a hook.
    fn inspects(&self, kind: BackendKind) -> bool;
    /// A RowDescription: the start of a result's column layout.
    fn on_row_description(&mut self, _frame: &Frame) {}
    /// A DataRow, whole (`raw`: tag, length, body), still in the read
    /// buffer: appends what to send to `out` (the row itself when untouched,
    /// nothing when withheld).
    fn on_data_row(&mut self, raw: &[u8], out: &mut BytesMut) {
        out.extend_from_slice(raw);
    }
    /// The end of a result: CommandComplete, EmptyQueryResponse ('I') or
    /// PortalSuspended ('s'); returns the bytes to send.
    fn on_result_end(&mut self, frame: Frame) -> Bytes {
        frame.into_raw()
    }
    /// NoData ('n').
    fn on_no_data(&mut self) {}
    /// An ErrorResponse; returns the bytes to send.
    fn on_error_response(&mut self, frame: Frame) -> Bytes {
        frame.into_raw()
    }
    /// A NoticeResponse or NotificationResponse; returns the bytes to send.
    fn on_notice(&mut self, frame: Frame) -> Bytes {
        frame.into_raw()
    }
    /// A ReadyForQuery.
    fn on_ready_for_query(&mut self, _status: TransactionStatus) {}
    /// A ParameterStatus: a reported setting changed.
    fn on_parameter_status(&mut self, _frame: &Frame) {}
}

/// The phases of a session with no rules and no masking: nothing is inspected.
#[derive(Debug, Default, Clone, Copy)]
pub struct Passthrough;

impl FrontendPhases for Passthrough {
    fn inspects(&self, _kind: FrontendKind) -> bool {
        false
    }
}

impl BackendPhases for Passthrough {
    fn inspects(&self, _kind: BackendKind) -> bool {
        false
    }
}

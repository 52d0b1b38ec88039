//! Approvals: a person approves or denies one held statement inside a live
//! session (hold mode), or a statement refused with a ticket that runs once
//! approved (ticket mode); and time-window grants (docs/approvals.md).
//!
//! The model (`model.rs`) holds every decision rule (who may vote, when a
//! ticket is decided, when it expires, what an approval covers) as pure
//! functions, so the stores (`store/`) only keep records and apply updates
//! atomically, and the file and PostgreSQL stores cannot disagree.

pub mod display;
pub mod elevation;
pub mod metrics;
pub mod model;
pub mod note;
pub mod service;
pub mod store;
pub mod token_request;

pub use service::{ApprovalError, Approvals};
#[cfg(test)]
pub(crate) mod testkit;
pub mod webhook;

//! Bytes only: framing, frontend and backend message views, encoders.
//!
//! This layer knows the PostgreSQL v3 wire format and nothing else: no tokio, no
//! policy, no masking. Every decoder checks that a frame is complete and under its
//! length limit before it allocates, and returns an error on malformed input.
#![forbid(unsafe_code)]

pub mod backend;
pub mod encode;
pub mod frame;
pub mod frontend;
pub mod startup;

pub use frame::{Frame, FrameError, FrameRef, Framer, Prefix};

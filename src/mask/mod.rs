//! Inline masking: strategies and the DataRow rewrite.
//!
//! - [`strategy`]: what a masked value becomes, in text and binary format.
//! - [`rewrite`]: applying a result's plan to each DataRow.

pub mod rewrite;
pub mod strategy;

//! Inline masking: strategies and the DataRow rewrite.
//!
//! - [`catalog`]: the mask map, read from each database's catalog.
//! - [`guard`]: the request side: statements that could leak a masked column.
//! - [`store`]: the shared maps, one per upstream, and their refreshes.
//! - [`strategy`]: what a masked value becomes, in text and binary format.
//! - [`rewrite`]: applying a result's plan to each DataRow.
//! - [`rules`]: `[masking]` config, typed.

pub mod catalog;
pub mod exposure;
pub mod guard;
pub mod memo;
pub mod rewrite;
pub mod rules;
pub mod store;
pub mod strategy;

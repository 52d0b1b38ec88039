//! libpg_query glue shared by the session core, policy and masking.

pub(crate) mod names;
pub(crate) mod repeat;

//! Authentication: SCRAM towards clients, the stored credential towards servers.

pub mod backend;
pub mod client;
pub mod identity;
pub mod require;
pub mod scram_client;
pub mod verifier;

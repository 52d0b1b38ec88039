//! The upstream leg as seen from the messages it sends: checks that apply
//! to a server's answers wherever they are read (login, catalog, relay).
//! Connecting and logging in still live in `auth::backend`.

pub mod code;
pub mod error;
pub mod query;

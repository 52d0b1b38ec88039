//! pgward: a PostgreSQL wire-protocol gateway.
//!
//! Module map, in the order a connection meets them:
//!
//! - [`server`]: the listener, connection limit and graceful shutdown.
//! - [`session`]: one client connection: startup, authentication hand-off,
//!   then the relay core (the conversation tracker, the ordered phases,
//!   holds) behind a thin socket loop, and the session registry.
//! - [`auth`]: SCRAM or signed tokens towards clients (`auth::token`); the
//!   held credential towards servers.
//! - [`store`]: an embedded append-only record store (token revocations).
//! - [`wire`]: bytes only: framing, message views, encoders.
//! - [`policy`]: statement classification and rules (pure).
//! - `sql`: libpg_query glue shared by the tracker, policy and masking.
//! - [`sqlstate`]: the SQLSTATEs pgward sends, by name.
//! - [`mask`]: mask strategies and the DataRow rewrite (pure).
//! - [`admin`]: the admin HTTP listener: metrics, health, sessions, reload.
//! - [`record`]: the audit trail: records, hash chain, signed checkpoints,
//!   the writer and the verifier.
//! - `io`: sockets (plain or TLS) and a frame-reading buffer.
//! - `tls`: rustls configurations (aws-lc-rs).
//! - [`http_client`]: the one small HTTP/1.1 client (JWKS, webhooks, the
//!   approvals CLI).
//! - [`upstream`]: checks on what a server sends (malformed errors).
//! - [`config`]: the TOML file, parsed once into typed values.
//! - [`gateway`]: shared state built from the config.
//! - `error`: session errors, their origin and their SQLSTATEs.
//! - [`cluster`]: a throwaway PostgreSQL cluster (demo and tests).
//!
//! The pipeline:
//!
//! ```text
//! client TCP/TLS -> startup (SSL/GSS negotiation, StartupMessage) -> SCRAM
//!   -> backend login (held credential) -> AuthenticationOk, ParameterStatus,
//!      pgward's BackendKeyData, ReadyForQuery
//!   -> relay core: client frames -> tracker -> phases (forward / refuse / hold) -> server
//!                  server frames -> tracker (paired with requests) -> phases -> client
//! ```

pub mod admin;
pub mod approvals;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod doctor;
pub(crate) mod error;
pub mod gateway;
pub mod http_client;
pub(crate) mod io;
pub mod mask;
pub mod policy;
pub mod privileges;
pub mod record;
pub mod server;
pub mod session;
pub(crate) mod sql;
pub mod sqlstate;
pub mod store;
pub(crate) mod tls;
pub mod upstream;
pub mod wire;

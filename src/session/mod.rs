//! One client connection: startup, authentication, backend login, then the
//! relay.

mod core;
#[doc(hidden)]
pub mod fuzzing;
pub mod masking;
pub mod phases;
pub mod read_sizer;
mod refusal;
pub mod registry;
mod relay;
pub mod rules;
mod stack;
pub mod startup;
pub mod tracker;

use crate::error::SessionError;
use crate::gateway::Gateway;
use crate::io::FramedStream;
use crate::wire::backend::TransactionStatus;
use crate::wire::encode;
use bytes::BytesMut;
use registry::{CancelTarget, NewSession};
use startup::Opening;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Where the server is in its shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ShutdownPhase {
    /// Serving.
    Running = 0,
    /// No new connections; sessions close at their next idle moment.
    Draining = 1,
    /// The drain timeout passed: sessions close now, between messages.
    Forced = 2,
}

/// Serves one accepted connection to its end, logging how it ended.
/// Sessions learn of the server's shutdown through the registry
/// ([`registry::Registry::set_shutdown`]).
pub async fn serve(tcp: TcpStream, gw: Arc<Gateway>) {
    let peer = tcp.peer_addr().ok();
    let _ = tcp.set_nodelay(true);
    match run(tcp, peer, &gw).await {
        Ok(()) => tracing::debug!(?peer, "session ended"),
        Err(e) => {
            tracing::info!(?peer, origin = ?e.origin(), error = %e, "session ended with error")
        }
    }
}

async fn run(tcp: TcpStream, peer: Option<SocketAddr>, gw: &Gateway) -> Result<(), SessionError> {
    // Startup, login and the phases are built in a boxed future that is gone
    // before the relay starts: inline, their largest state (TLS and SCRAM
    // exchanges, the mask-map read) would size the session's task for its
    // whole life, idle or not.
    // The relay is boxed too: moved out of a returned value, it would be
    // kept in the task twice over.
    let relay = Box::pin(open(tcp, peer, gw)).await?;
    match relay {
        Some(mut relay) => relay.run().await,
        None => Ok(()),
    }
}

/// Everything before the relay: startup, authentication, backend login,
/// the phases and the client's hello. `None`: the connection was a
/// CancelRequest, now served.
async fn open(
    tcp: TcpStream,
    peer: Option<SocketAddr>,
    gw: &Gateway,
) -> Result<Option<Box<relay::Relay>>, SessionError> {
    let deadline = tokio::time::Instant::now() + gw.config.server.startup_timeout;
    let opening = tokio::time::timeout_at(
        deadline,
        startup::open(tcp, gw.tls.as_ref(), gw.config.server.require_client_tls),
    )
    .await
    .map_err(|_| SessionError::StartupTimeout)??;
    let (mut conn, startup) = match opening {
        Opening::Cancel {
            conn,
            process_id,
            secret_key,
        } => {
            return forward_cancel(gw, conn, process_id, secret_key)
                .await
                .map(|()| None)
        }
        Opening::Session { conn, startup } => (conn, startup),
    };
    let established = tokio::time::timeout_at(deadline, establish(&mut conn, &startup, gw))
        .await
        .unwrap_or(Err(SessionError::StartupTimeout));
    let (login, target, identity, database) = match established {
        Ok(ok) => ok,
        Err(e) => {
            startup::send_fatal(&mut conn, &e).await;
            return Err(e);
        }
    };
    let upstream_name = target.upstream.config.name.clone();
    let registration = gw.registry.register(
        NewSession {
            user: identity.user.clone(),
            groups: identity.groups.clone(),
            client: peer,
            database: database.clone(),
        },
        target,
    );
    let info = phases::SessionInfo {
        id: registration.id,
        identity,
        database,
    };
    let stack = match stack::build(gw, &upstream_name, &info, &login.startup_messages).await {
        Ok(s) => s,
        Err(e) => {
            startup::send_fatal(&mut conn, &e).await;
            return Err(e);
        }
    };
    let mut hello = BytesMut::new();
    encode::authentication_ok(&mut hello);
    hello.extend_from_slice(&login.startup_messages);
    encode::backend_key_data(&mut hello, registration.process_id, registration.secret_key);
    encode::ready_for_query(&mut hello, TransactionStatus::Idle);
    conn.send(&hello).await?;

    let core = core::Core::new(
        info,
        stack.phases,
        Arc::clone(&gw.rules),
        stack.keep_descriptions,
        gw.config.server.max_message_size,
    );
    let (client_r, client_w) = conn.stream.into_split();
    let (backend_r, backend_w) = login.conn.stream.into_split();
    Ok(Some(Box::new(relay::Relay {
        client_r,
        client_w,
        backend_r,
        backend_w,
        backend_buf: login.conn.buf,
        client_buf: conn.buf,
        core,
        idle_timeout: gw.config.server.idle_timeout,
        registration,
    })))
}

/// Authenticates the client and logs in to its upstream.
async fn establish(
    conn: &mut FramedStream,
    startup: &crate::wire::startup::StartupMessage,
    gw: &Gateway,
) -> Result<
    (
        crate::auth::backend::BackendLogin,
        CancelTarget,
        crate::policy::rules::Identity,
        String,
    ),
    SessionError,
> {
    let user_name = startup
        .param("user")
        .filter(|u| !u.is_empty())
        .ok_or(SessionError::MissingUser)?
        .to_owned();
    let unknown_options = startup::unsupported_protocol_options(startup);
    if startup.minor > 0 || !unknown_options.is_empty() {
        let mut out = BytesMut::new();
        encode::negotiate_protocol_version(&mut out, 0, &unknown_options);
        conn.send(&out).await?;
    }
    let params = startup::forwarded_params(startup)?;
    let user = gw.config.users.get(&user_name);
    crate::auth::client::authenticate(conn, &gw.scram, &user_name, user).await?;
    let user = user.ok_or_else(|| SessionError::AuthFailed(user_name.clone()))?;

    // As in PostgreSQL, the database is checked only after authentication, so
    // strangers learn nothing about which databases exist.
    let database = startup
        .param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user_name)
        .to_owned();
    let database = database.as_str();
    let upstream_name = gw
        .config
        .databases
        .get(database)
        .ok_or_else(|| SessionError::UnknownDatabase(database.to_owned()))?;
    if !user.databases.is_empty() && !user.databases.iter().any(|d| d == database) {
        return Err(SessionError::DatabaseNotAllowed(database.to_owned()));
    }
    let upstream = gw
        .upstreams
        .get(upstream_name)
        .ok_or_else(|| SessionError::UnknownDatabase(database.to_owned()))?;
    let login = upstream.login(&params).await.inspect_err(|e| {
        if let SessionError::BackendUnavailable { upstream, detail } = e {
            tracing::warn!(upstream, detail, "upstream login failed");
        }
    })?;
    let target = CancelTarget {
        upstream: upstream.clone(),
        process_id: login.process_id,
        secret_key: login.secret_key,
    };
    tracing::info!(user = %user_name, database, upstream = upstream_name, "session established");
    let identity = crate::policy::rules::Identity::new(user_name, user.groups.clone());
    let database = database.to_owned();
    Ok((login, target, identity, database))
}

/// A CancelRequest: routed through the registry to the session (a held
/// request is withdrawn) and to the server. The client's cancel connection
/// stays open until the server has taken the request, as PostgreSQL keeps
/// it (libpq returns from a cancel when the connection closes), and a TLS
/// connection ends with close_notify.
async fn forward_cancel(
    gw: &Gateway,
    mut conn: FramedStream,
    process_id: i32,
    secret_key: i32,
) -> Result<(), SessionError> {
    // An unknown key is ignored silently, as PostgreSQL does.
    let result = match gw.registry.cancel(process_id, secret_key) {
        Some(target) => {
            target
                .upstream
                .cancel(target.process_id, target.secret_key)
                .await
        }
        None => {
            tracing::debug!("cancel request with an unknown key");
            Ok(())
        }
    };
    let _ = conn.stream.shutdown().await;
    result
}

//! One client connection: startup, authentication, backend login, then the
//! relay.

pub mod cancel;
pub mod inflight;
pub mod masking;
pub mod phases;
pub mod read_sizer;
pub mod refusal;
pub mod relay;
pub mod rules;
pub mod stack;
pub mod startup;

use crate::error::SessionError;
use crate::gateway::Gateway;
use crate::io::FramedStream;
use crate::wire::backend::TransactionStatus;
use crate::wire::encode;
use bytes::BytesMut;
use cancel::CancelTarget;
use startup::Opening;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Where the server is in its shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownPhase {
    /// Serving.
    Running,
    /// No new connections; sessions close at their next idle moment.
    Draining,
    /// The drain timeout passed: sessions close now, between messages.
    Forced,
}

/// Client activity, shared by a session's two pumps.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    client_reads: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            client_reads: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Records a read from the client.
    pub fn client_seen(&self) {
        self.client_reads.fetch_add(1, Ordering::Relaxed);
    }
    /// How many reads from the client so far.
    pub fn client_reads(&self) -> u64 {
        self.client_reads.load(Ordering::Relaxed)
    }
    /// Milliseconds since the session started.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Serves one accepted connection to its end, logging how it ended.
pub async fn serve(tcp: TcpStream, gw: Arc<Gateway>, shutdown: watch::Receiver<ShutdownPhase>) {
    let peer = tcp.peer_addr().ok();
    let _ = tcp.set_nodelay(true);
    match run(tcp, &gw, shutdown).await {
        Ok(()) => tracing::debug!(?peer, "session ended"),
        Err(e) => {
            tracing::info!(?peer, origin = ?e.origin(), error = %e, "session ended with error")
        }
    }
}

async fn run(
    tcp: TcpStream,
    gw: &Gateway,
    shutdown: watch::Receiver<ShutdownPhase>,
) -> Result<(), SessionError> {
    let deadline = tokio::time::Instant::now() + gw.config.server.startup_timeout;
    let opening = tokio::time::timeout_at(
        deadline,
        startup::open(tcp, gw.tls.as_ref(), gw.config.server.require_client_tls),
    )
    .await
    .map_err(|_| SessionError::StartupTimeout)??;
    let (mut conn, startup) = match opening {
        Opening::Cancel {
            process_id,
            secret_key,
        } => return forward_cancel(gw, process_id, secret_key).await,
        Opening::Session { conn, startup } => (conn, startup),
    };
    let established = tokio::time::timeout_at(deadline, establish(&mut conn, &startup, gw))
        .await
        .unwrap_or(Err(SessionError::StartupTimeout));
    let (login, target, identity) = match established {
        Ok(ok) => ok,
        Err(e) => {
            startup::send_fatal(&mut conn, &e).await;
            return Err(e);
        }
    };
    let upstream_name = target.upstream.config.name.clone();
    let inflight = Arc::new(inflight::InFlight::default());
    let phases = stack::build(
        gw,
        &upstream_name,
        identity,
        &login.startup_messages,
        &inflight,
    )
    .await;
    let (frontend, backend) = match phases {
        Ok(p) => p,
        Err(e) => {
            startup::send_fatal(&mut conn, &e).await;
            return Err(e);
        }
    };
    let key = gw.cancels.register(target);
    let mut hello = BytesMut::new();
    encode::authentication_ok(&mut hello);
    hello.extend_from_slice(&login.startup_messages);
    encode::backend_key_data(&mut hello, key.process_id, key.secret_key);
    encode::ready_for_query(&mut hello, TransactionStatus::Idle);
    conn.send(&hello).await?;

    let (client_r, client_w) = conn.stream.into_split();
    let (backend_r, backend_w) = login.conn.stream.into_split();
    let relay = relay::Relay {
        client_r,
        client_w,
        backend_r,
        backend_w,
        backend_buf: login.conn.buf,
        client_buf: conn.buf,
        frontend: Box::new(frontend),
        backend: Box::new(backend),
        max_message_size: gw.config.server.max_message_size,
        idle_timeout: gw.config.server.idle_timeout,
        shutdown,
        inflight,
    };
    let result = relay.run().await;
    drop(key);
    result
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
        .unwrap_or(&user_name);
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
    Ok((login, target, identity))
}

async fn forward_cancel(
    gw: &Gateway,
    process_id: i32,
    secret_key: i32,
) -> Result<(), SessionError> {
    // An unknown key is ignored silently, as PostgreSQL does.
    let Some(target) = gw.cancels.lookup(process_id, secret_key) else {
        tracing::debug!("cancel request with an unknown key");
        return Ok(());
    };
    target
        .upstream
        .cancel(target.process_id, target.secret_key)
        .await
}

//! The listener: accepts clients under a connection limit, runs a session per
//! client, and drains gracefully on shutdown.

use crate::config::{RelayMode, RuntimeMode};
use crate::error::SessionError;
use crate::gateway::Gateway;
use crate::session::event_loop::EventLoop;
use crate::session::{self, ShutdownPhase};
use crate::wire::encode;
use bytes::BytesMut;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

/// A bound listener (or one per session thread), ready to serve.
pub struct Server {
    gw: Arc<Gateway>,
    listeners: Listeners,
    addr: SocketAddr,
}

/// The sockets sessions are accepted on.
enum Listeners {
    /// One, on the runtime `run` is called on.
    Shared(TcpListener),
    /// One per session thread, all bound to the same address with
    /// `SO_REUSEPORT` (the kernel spreads connections over them); each is
    /// handed to its thread's runtime there.
    PerCore(Vec<std::net::TcpListener>),
}

/// How long sessions get to close after the drain timeout forced them.
const FORCED_GRACE: Duration = Duration::from_secs(2);

/// What the coordinator tells the accepting loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Serving,
    /// Accept no more; wait for the sessions to end.
    Draining,
    /// End the sessions still left.
    Abort,
}

impl Server {
    /// Binds the configured listen address.
    pub async fn bind(gw: Gateway) -> std::io::Result<Self> {
        let listen = gw.config.server.listen;
        let (listeners, addr) = match gw.config.server.runtime {
            RuntimeMode::Shared => {
                let listener = TcpListener::bind(listen).await?;
                let addr = listener.local_addr()?;
                (Listeners::Shared(listener), addr)
            }
            RuntimeMode::PerCore => {
                let threads = session_threads(&gw.config.server);
                let (listeners, addr) = bind_reuseport(listen, threads)?;
                (Listeners::PerCore(listeners), addr)
            }
        };
        // JWKS fetchers and the revocation watcher run from here on.
        gw.tokens.load_full().start(Arc::clone(&gw.registry));
        // Held statements are woken, and grants read, from here on.
        gw.approvals().start();
        if let Some(audit) = &gw.audit {
            // Records are written from the first session on, or not at all.
            audit.start(&gw.upstreams).map_err(std::io::Error::other)?;
        }
        Ok(Self {
            gw: Arc::new(gw),
            listeners,
            addr,
        })
    }

    /// The shared state sessions use (for reloads).
    pub fn gateway(&self) -> Arc<Gateway> {
        Arc::clone(&self.gw)
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }

    /// Serves until `stop` completes, then drains: no new connections, idle
    /// sessions close at once, busy ones at their next idle moment, and all
    /// remaining ones after `server.shutdown_timeout`.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let limit = Arc::new(Semaphore::new(self.gw.config.server.max_client_connections));
        let (stage_tx, stage) = watch::channel(Stage::Serving);
        // Each accepting loop holds a sender until its sessions are gone:
        // `recv` answers None once every one has finished.
        let (done_tx, mut done) = mpsc::channel::<()>(1);
        match self.listeners {
            Listeners::Shared(listener) => {
                let gw = Arc::clone(&self.gw);
                tokio::spawn(async move {
                    accept_loop(listener, gw, limit, stage).await;
                    drop(done_tx);
                });
            }
            Listeners::PerCore(listeners) => {
                for (i, listener) in listeners.into_iter().enumerate() {
                    let (gw, limit, stage) =
                        (Arc::clone(&self.gw), Arc::clone(&limit), stage.clone());
                    let done_tx = done_tx.clone();
                    let spawned = std::thread::Builder::new()
                        .name(format!("pgward-sessions-{i}"))
                        .spawn(move || session_thread(i, listener, gw, limit, stage, done_tx));
                    if let Err(e) = spawned {
                        // Its listener is closed with it: the kernel sends
                        // new connections to the others.
                        tracing::error!(error = %e, thread = i, "cannot start a session thread");
                    }
                }
                drop((done_tx, stage));
            }
        }
        stop.await;
        let _ = stage_tx.send(Stage::Draining);
        tracing::info!(
            sessions = self.gw.registry.list().len(),
            "shutting down: draining sessions"
        );
        self.gw.registry.set_shutdown(ShutdownPhase::Draining);
        let drained =
            tokio::time::timeout(self.gw.config.server.shutdown_timeout, done.recv()).await;
        if drained.is_err() {
            tracing::warn!(
                sessions = self.gw.registry.list().len(),
                "drain timeout: closing remaining sessions"
            );
            self.gw.registry.set_shutdown(ShutdownPhase::Forced);
            if tokio::time::timeout(FORCED_GRACE, done.recv())
                .await
                .is_err()
            {
                let _ = stage_tx.send(Stage::Abort);
                // A thread stuck in a session's computation cannot abort
                // it: the process ends without waiting for it.
                if tokio::time::timeout(FORCED_GRACE, done.recv())
                    .await
                    .is_err()
                {
                    tracing::warn!("a session thread did not stop in time");
                }
            }
        }
        if let Some(audit) = &self.gw.audit {
            // Every session has ended: their last records are queued.
            audit.close().await;
        }
        tracing::info!("shutdown complete");
    }
}

/// The number of session threads `server` asks for.
fn session_threads(server: &crate::config::ServerConfig) -> usize {
    server.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        std::num::NonZeroUsize::get,
    )
}

/// `threads` listeners on `listen`, all with `SO_REUSEPORT`; a port 0 is
/// chosen by the first, and the others bind the same one.
fn bind_reuseport(
    listen: SocketAddr,
    threads: usize,
) -> std::io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let socket = |addr: SocketAddr| {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As tokio's own `TcpListener::bind` does: a restart need not wait
        // for TIME_WAIT sockets to clear.
        socket.set_reuseaddr(true)?;
        std::io::Result::Ok(socket)
    };
    if listen.port() != 0 {
        // Another process of this user listening on the port with
        // SO_REUSEPORT (a second pgward started by mistake) would share
        // it silently: a plain bind fails on it, as it would without.
        socket(listen)?.bind(listen)?;
    }
    let mut addr = listen;
    let mut listeners = Vec::with_capacity(threads);
    for _ in 0..threads.max(1) {
        let socket = socket(addr)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?.into_std()?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok((listeners, addr))
}

/// One session thread: a single-threaded runtime that accepts on its own
/// listener and runs the sessions it accepted, until told to stop; with
/// `server.relay = "event-loop"`, the relays of its plain-TCP sessions run
/// on a loop thread of its own (`session::event_loop`).
fn session_thread(
    index: usize,
    listener: std::net::TcpListener,
    gw: Arc<Gateway>,
    limit: Arc<Semaphore>,
    stage: watch::Receiver<Stage>,
    done: mpsc::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a session runtime");
            return;
        }
    };
    let relay_loop = match gw.config.server.relay {
        RelayMode::EventLoop => {
            match EventLoop::start(format!("pgward-relay-{index}"), runtime.handle().clone()) {
                Ok(relay_loop) => {
                    relay_loop.install();
                    Some(relay_loop)
                }
                Err(e) => {
                    // Its sessions relay on the runtime instead.
                    tracing::error!(error = %e, "cannot start a relay loop");
                    None
                }
            }
        }
        RelayMode::Runtime => None,
    };
    runtime.block_on(async move {
        match TcpListener::from_std(listener) {
            Ok(listener) => accept_loop(listener, gw, limit, stage).await,
            Err(e) => tracing::error!(error = %e, "cannot listen on a session thread"),
        }
        // Tasks the sessions spawned and left running (a held statement's
        // ticket being withdrawn, a record being written) would be dropped
        // with this runtime: they get a while to finish first.
        let metrics = tokio::runtime::Handle::current().metrics();
        let deadline = tokio::time::Instant::now() + FORCED_GRACE;
        while metrics.num_alive_tasks() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(done);
    });
    // Stopped before the runtime its tasks' timers run on.
    drop(relay_loop);
}

/// Accepts clients until the stage moves past serving, then waits for its
/// sessions to end (or aborts them when told to).
async fn accept_loop(
    listener: TcpListener,
    gw: Arc<Gateway>,
    limit: Arc<Semaphore>,
    mut stage: watch::Receiver<Stage>,
) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            changed = stage.changed() => {
                // A closed channel: the coordinator is gone (its runtime
                // ended); nothing will drain these sessions but us.
                if changed.is_err() || *stage.borrow() != Stage::Serving {
                    break;
                }
            }
            accepted = listener.accept() => {
                let (tcp, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match Arc::clone(&limit).try_acquire_owned() {
                    Ok(permit) => {
                        let gw = Arc::clone(&gw);
                        sessions.spawn(async move {
                            session::serve(tcp, gw).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        sessions.spawn(reject(tcp, SessionError::TooManyClients));
                    }
                }
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    loop {
        // Read before waiting: Draining and Abort may both have been sent
        // before this loop saw either (a thread kept busy past the drain).
        if *stage.borrow_and_update() != Stage::Abort {
            tokio::select! {
                joined = sessions.join_next() => match joined {
                    None => break,
                    Some(_) => continue,
                },
                changed = stage.changed() => if changed.is_ok() { continue },
            }
        }
        // Told to abort, or the coordinator is gone: end what is left.
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
        break;
    }
}

/// Answers a connection pgward will not serve with a FATAL error.
async fn reject(mut tcp: TcpStream, e: SessionError) {
    let mut out = BytesMut::new();
    encode::error_response(
        &mut out,
        encode::Severity::Fatal,
        e.sqlstate(),
        &e.to_string(),
        None,
    );
    let _ = tcp.write_all(&out).await;
    let _ = tcp.shutdown().await;
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A multi-line message (TOML errors draw the line and a caret) as one log
/// line, so a rejected reload is one line to grep for.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Re-reads the rules from `path` on every SIGHUP, for as long as the
/// process runs. Sessions stay up; each judges its next message under the
/// new rules. A file that does not validate is rejected with one log line
/// and the rules in force stay.
#[cfg(unix)]
pub async fn reload_rules_on_hangup(gw: Arc<Gateway>, path: std::path::PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: rules will not be reloaded");
        return;
    };
    while hangup.recv().await.is_some() {
        match gw.reload(&path) {
            Ok(r) => tracing::info!(
                version = r.version,
                rules = r.rules,
                mask_rules = r.mask_rules,
                path = %path.display(),
                "rules reloaded"
            ),
            Err(e) => tracing::error!(
                path = %path.display(),
                version = gw.rules_version(),
                "rules reload rejected, the rules in force stay: {}",
                one_line(&e.to_string())
            ),
        }
    }
}

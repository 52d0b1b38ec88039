//! The listener: accepts clients under a connection limit, runs a session per
//! client, and drains gracefully on shutdown.

use crate::error::SessionError;
use crate::gateway::Gateway;
use crate::session::{self, ShutdownPhase};
use crate::wire::encode;
use bytes::BytesMut;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// A bound listener, ready to serve.
pub struct Server {
    gw: Arc<Gateway>,
    listener: TcpListener,
}

/// How long sessions get to close after the drain timeout forced them.
const FORCED_GRACE: Duration = Duration::from_secs(2);

impl Server {
    /// Binds the configured listen address.
    pub async fn bind(gw: Gateway) -> std::io::Result<Self> {
        let listener = TcpListener::bind(gw.config.server.listen).await?;
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
            listener,
        })
    }

    /// The shared state sessions use (for reloads).
    pub fn gateway(&self) -> Arc<Gateway> {
        Arc::clone(&self.gw)
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` completes, then drains: no new connections, idle
    /// sessions close at once, busy ones at their next idle moment, and all
    /// remaining ones after `server.shutdown_timeout`.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let limit = Arc::new(Semaphore::new(self.gw.config.server.max_client_connections));
        let mut sessions = JoinSet::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                accepted = self.listener.accept() => {
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
                            let gw = Arc::clone(&self.gw);
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
        drop(self.listener);
        tracing::info!(
            sessions = sessions.len(),
            "shutting down: draining sessions"
        );
        self.gw.registry.set_shutdown(ShutdownPhase::Draining);
        let drained = tokio::time::timeout(self.gw.config.server.shutdown_timeout, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                sessions = sessions.len(),
                "drain timeout: closing remaining sessions"
            );
            self.gw.registry.set_shutdown(ShutdownPhase::Forced);
            let _ = tokio::time::timeout(FORCED_GRACE, async {
                while sessions.join_next().await.is_some() {}
            })
            .await;
            sessions.abort_all();
        }
        if let Some(audit) = &self.gw.audit {
            // Every session has ended: their last records are queued.
            audit.close().await;
        }
        tracing::info!("shutdown complete");
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

//! Memory of a proxy holding many idle client connections.

use crate::targets::{rss_anon_bytes, rss_bytes, Target, DB};
use anyhow::{bail, Context};
use futures::StreamExt;
use std::time::Duration;

/// What holding `n` idle sessions cost a proxy.
#[derive(Debug, Clone)]
pub struct IdleResult {
    /// Sessions that logged in and stayed open.
    pub sessions: usize,
    /// Proxy RSS before, bytes.
    pub rss_before: u64,
    /// Proxy RSS with all sessions open, bytes.
    pub rss_with_sessions: u64,
    /// The anonymous part of `rss_before` (what the proxy allocated, not
    /// the pages of its code), bytes.
    pub anon_before: u64,
    /// The anonymous part of `rss_with_sessions`, bytes.
    pub anon_with_sessions: u64,
}

impl IdleResult {
    /// Bytes of resident memory per idle session.
    pub fn per_session(&self) -> f64 {
        self.rss_with_sessions.saturating_sub(self.rss_before) as f64 / self.sessions.max(1) as f64
    }

    /// The anonymous part of [`Self::per_session`]: the rest is code and
    /// data pages of the binary first run by the sessions' logins.
    pub fn anon_per_session(&self) -> f64 {
        self.anon_with_sessions.saturating_sub(self.anon_before) as f64
            / self.sessions.max(1) as f64
    }
}

/// Opens `n` authenticated sessions through `target`, each having run one
/// query, and reads the proxy's resident memory while they sit idle (and
/// holds them `hold` longer, for inspection from outside).
pub async fn measure(target: &Target, n: usize, hold: Duration) -> anyhow::Result<IdleResult> {
    let pid = target.pid.context("idle memory needs a proxy process")?;
    let rss_before = rss_bytes(pid).context("cannot read the proxy's memory")?;
    let anon_before = rss_anon_bytes(pid).unwrap_or(0);
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(target.port)
        .user(&target.user)
        .password(&target.password)
        .dbname(DB)
        .connect_timeout(Duration::from_secs(30));
    let connects = futures::stream::iter(0..n)
        .map(|_| {
            let config = config.clone();
            async move {
                let session = async {
                    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                    let task = tokio::spawn(connection);
                    client.simple_query("SELECT 1").await?;
                    Ok::<_, tokio_postgres::Error>((client, task))
                };
                // A proxy that stops accepting must not hang the harness.
                match tokio::time::timeout(Duration::from_secs(30), session).await {
                    Ok(Ok(pair)) => Ok(pair),
                    Ok(Err(e)) => Err(e
                        .as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_owned())),
                    Err(_) => Err("no session within 30 s".to_owned()),
                }
            }
        })
        .buffer_unordered(32);
    let sessions: Vec<_> = connects.collect().await;
    let mut held = Vec::with_capacity(n);
    for s in sessions {
        match s {
            Ok(pair) => held.push(pair),
            Err(e) => bail!(
                "idle session {} through {} failed: {e}",
                held.len() + 1,
                target.name
            ),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with_sessions = rss_bytes(pid).context("cannot read the proxy's memory")?;
    let anon_with_sessions = rss_anon_bytes(pid).unwrap_or(0);
    if !hold.is_zero() {
        eprintln!(
            "holding: {} pid {pid} with {n} idle sessions for {} s",
            target.name,
            hold.as_secs()
        );
        tokio::time::sleep(hold).await;
    }
    let result = IdleResult {
        sessions: held.len(),
        rss_before,
        rss_with_sessions,
        anon_before,
        anon_with_sessions,
    };
    for (client, task) in held {
        drop(client);
        let _ = task.await;
    }
    Ok(result)
}

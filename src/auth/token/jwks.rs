//! An external issuer's keys: cached, re-read in the background every
//! `jwks_refresh`, and on an unknown `kid` at most once per
//! `jwks_min_refetch`. A login never fetches anything itself: it may wake
//! the fetcher and wait (asynchronously, bounded) for its next result.

use super::jwk::{parse_jwks, KeySet};
use crate::config::tokens::{IssuerConfig, JwksSource};
use crate::http_client::{Client, Url};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Deadline of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes read for a JWKS response (headers and body).
const MAX_RESPONSE: usize = super::jwk::MAX_JWKS_LEN + 16 * 1024;

enum Source {
    File(std::path::PathBuf),
    Url(Url, Client),
}

/// One issuer's key cache and the state its fetcher shares with logins.
pub struct JwksCache {
    issuer: String,
    source: Source,
    keys: ArcSwap<KeySet>,
    refresh: Duration,
    min_refetch: Duration,
    wake: Notify,
    /// Bumped after every attempt, successful or not.
    attempts: watch::Sender<u64>,
    in_flight: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
}

impl JwksCache {
    /// A cache for `issuer`; a file's keys are there at once, a URL's after
    /// the first fetch.
    pub fn new(issuer: &IssuerConfig) -> Result<Self, String> {
        let (source, initial) = match &issuer.jwks {
            JwksSource::File { path, initial } => (Source::File(path.clone()), initial.clone()),
            JwksSource::Url { url, ca_file } => {
                let client = Client::new(ca_file.as_deref(), FETCH_TIMEOUT, MAX_RESPONSE)?;
                (
                    Source::Url(Url::parse_https(url)?, client),
                    KeySet::default(),
                )
            }
        };
        Ok(Self {
            issuer: issuer.issuer.clone(),
            source,
            keys: ArcSwap::from_pointee(initial),
            refresh: issuer.jwks_refresh,
            min_refetch: issuer.jwks_min_refetch,
            wake: Notify::new(),
            attempts: watch::channel(0).0,
            in_flight: AtomicBool::new(false),
            last_attempt: Mutex::new(None),
        })
    }

    /// The keys now in the cache.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Asks the fetcher for a fresh read (unless one happened within
    /// `jwks_min_refetch`) and waits up to `wait` for it; true when a read
    /// finished meanwhile.
    pub async fn refetch(&self, wait: Duration) -> bool {
        let mut attempts = self.attempts.subscribe();
        if !self.in_flight.load(Ordering::Acquire) {
            let last = *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
                return false;
            }
            self.wake.notify_one();
        }
        matches!(
            tokio::time::timeout(wait, attempts.changed()).await,
            Ok(Ok(()))
        )
    }

    async fn read(&self) -> Result<KeySet, String> {
        let bytes = match &self.source {
            Source::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?,
            Source::Url(url, client) => client.get(url).await.map_err(|e| e.to_string())?,
        };
        parse_jwks(&bytes)
    }

    async fn attempt(&self) {
        self.in_flight.store(true, Ordering::Release);
        *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        match self.read().await {
            Ok(keys) => {
                tracing::info!(issuer = %self.issuer, keys = keys.len(), "JWKS read");
                self.keys.store(Arc::new(keys));
            }
            // The keys read before stay: an IdP outage does not lock
            // everyone out at once.
            Err(e) => tracing::warn!(issuer = %self.issuer, error = %e, "JWKS read failed"),
        }
        self.in_flight.store(false, Ordering::Release);
        self.attempts.send_modify(|n| *n += 1);
    }

    /// The fetcher: reads now, then every `refresh` or when woken, never
    /// twice within `min_refetch`.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.attempt().await;
            let started = Instant::now();
            tokio::select! {
                () = tokio::time::sleep(self.refresh) => {}
                () = self.wake.notified() => {}
            }
            tokio::time::sleep_until(started + self.min_refetch).await;
        }
    }
}

//! The shared mask maps, one per upstream: read from the catalog over
//! pgward's own connection, swapped atomically, refreshed on a timer, on
//! demand (DDL, a relation newer than the map) and on config reload.

use super::catalog::{self, CatalogError, MaskMap};
use super::rules::MaskConfig;
use crate::auth::backend::Upstream;
use crate::wire::encode;
use arc_swap::{ArcSwap, ArcSwapOption, Cache};
use bytes::BytesMut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A session's view of one upstream's current map: a read is one load of
/// the map's pointer, compared with the one kept (an `ArcSwap` load and a
/// reference count cost about 120 instructions, twice a statement of a
/// masked session). It keeps the map it read last until the next read.
pub struct MapCache(Cache<MapSlot, Option<Arc<MaskMap>>>);

/// The map slot of an upstream, for [`MapCache`].
struct MapSlot(Arc<UpstreamMap>);

impl std::ops::Deref for MapSlot {
    type Target = ArcSwapOption<MaskMap>;
    fn deref(&self) -> &Self::Target {
        &self.0.map
    }
}

impl MapCache {
    /// A cache of `map`'s current map.
    pub fn new(map: Arc<UpstreamMap>) -> Self {
        Self(Cache::new(MapSlot(map)))
    }

    /// [`UpstreamMap::current`].
    pub fn current(&mut self) -> Option<&Arc<MaskMap>> {
        self.0.load().as_ref()
    }
}

/// One upstream's map and its freshness.
pub struct UpstreamMap {
    upstream: Upstream,
    config: Arc<ArcSwap<MaskConfig>>,
    map: ArcSwapOption<MaskMap>,
    loaded_at: Mutex<Option<Instant>>,
    stale: AtomicBool,
    refreshing: tokio::sync::Mutex<()>,
    /// A background refresh is started and not yet done: while it runs,
    /// asking for another starts none (each masked statement asks while
    /// the map is due, and a task apiece waiting on a slow catalog was
    /// memory growing with the load).
    background: AtomicBool,
}

impl UpstreamMap {
    /// A map for `upstream`, not loaded yet.
    pub fn new(upstream: Upstream, config: Arc<ArcSwap<MaskConfig>>) -> Self {
        Self {
            upstream,
            config,
            map: ArcSwapOption::empty(),
            loaded_at: Mutex::new(None),
            stale: AtomicBool::new(true),
            refreshing: tokio::sync::Mutex::new(()),
            background: AtomicBool::new(false),
        }
    }

    /// The mask rules in force.
    pub fn config(&self) -> Arc<MaskConfig> {
        self.config.load_full()
    }

    /// The current map, if one was ever read.
    pub fn current(&self) -> Option<Arc<MaskMap>> {
        self.map.load_full()
    }

    /// Whether the map should be read again (marked stale, or older than
    /// `masking.refresh`).
    pub fn due(&self) -> bool {
        self.due_after(self.config.load().refresh)
    }

    /// [`Self::due`] with the refresh interval of rules the caller holds
    /// already (a session's request), sparing the load of the rules.
    pub fn due_after(&self, refresh: std::time::Duration) -> bool {
        self.stale.load(Ordering::Acquire)
            || self
                .loaded_at
                .lock()
                .map(|at| at.is_none_or(|t| t.elapsed() >= refresh))
                .unwrap_or(true)
    }

    /// Marks the map stale (DDL went through, a relation was not in it, or
    /// the rules changed) and starts a refresh in the background.
    pub fn invalidate(self: &Arc<Self>) {
        self.stale.store(true, Ordering::Release);
        self.refresh_in_background();
    }

    /// Starts a refresh in the background unless one started so is still
    /// running. (One that began before a change it missed leaves the map
    /// due or not answering for the new rules: the next ask after it starts
    /// another, and sessions wait for a map that answers for their rules.)
    pub fn refresh_in_background(self: &Arc<Self>) {
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the flag however the task ends (done, failed, dropped
        /// with its runtime).
        struct Running(Arc<UpstreamMap>);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.background.store(false, Ordering::Release);
            }
        }
        let running = Running(Arc::clone(self));
        tokio::spawn(async move {
            let this = &running.0;
            if let Err(e) = this.refresh().await {
                tracing::warn!(upstream = %this.upstream.config.name, "mask map refresh failed: {e}");
            }
        });
    }

    /// A map that is loaded, not due and read under the mask rules in force,
    /// reading the catalog first if needed. Sessions of masked identities
    /// wait for this before they start (their role is checked against its
    /// masked tables).
    pub async fn ensure(&self) -> Result<Arc<MaskMap>, CatalogError> {
        if let (Some(map), false) = (self.current(), self.due()) {
            if self.answers_now(&map) {
                return Ok(map);
            }
        }
        self.refresh().await?;
        match self.current() {
            Some(map) if self.answers_now(&map) => Ok(map),
            // The rules changed again while this read ran: what it read
            // does not say which columns they mask.
            Some(_) => Err(CatalogError::Query(
                "the masking rules changed while the column map was read; try again".into(),
            )),
            None => Err(CatalogError::Malformed("no map after a refresh")),
        }
    }

    /// Whether `map` was read under the mask rules in force (its columns
    /// name rules by their place in them).
    fn answers_now(&self, map: &MaskMap) -> bool {
        map.answers_for(&self.config.load_full())
    }

    /// Reads the catalog and swaps the new map in, within
    /// `masking.catalog_timeout` (waiting for a read already under way
    /// counts against the same deadline, so a stalled server cannot queue
    /// every masked login behind it). A read already under way is waited
    /// for and used, unless it began under rules since replaced (a reload
    /// while it ran): then this call reads again, under the new ones.
    pub async fn refresh(&self) -> Result<(), CatalogError> {
        let limit = self.config.load().catalog_timeout;
        let late = || CatalogError::Timeout(limit);
        let deadline = tokio::time::Instant::now() + limit;
        let _guard = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Someone else is reading it; wait for them and use theirs.
                let guard = tokio::time::timeout_at(deadline, self.refreshing.lock())
                    .await
                    .map_err(|_| late())?;
                if self.current().is_some_and(|map| self.answers_now(&map)) {
                    return Ok(());
                }
                guard
            }
        };
        let read = tokio::time::timeout_at(deadline, self.read_catalog()).await;
        if !matches!(read, Ok(Ok(()))) {
            // Read again next time (the map in force, if any, stays).
            self.stale.store(true, Ordering::Release);
        }
        read.map_err(|_| late())?
    }

    async fn read_catalog(&self) -> Result<(), CatalogError> {
        // Cleared first: DDL that lands while we read marks it again.
        self.stale.store(false, Ordering::Release);
        let params = [("application_name".to_owned(), "pgward-catalog".to_owned())];
        let mut login = self
            .upstream
            .login_catalog(&params)
            .await
            .map_err(|e| CatalogError::Io(e.to_string()))?;
        let config = self.config.load_full();
        let result = catalog::load(&mut login.conn, &config).await;
        let mut bye = BytesMut::new();
        encode::terminate(&mut bye);
        let _ = login.conn.send(&bye).await;
        let mut map = result?;
        map.built_under = Some(config);
        self.map.store(Some(Arc::new(map)));
        if let Ok(mut at) = self.loaded_at.lock() {
            *at = Some(Instant::now());
        }
        Ok(())
    }
}

//! The code catalogs: per (upstream, database), the user-defined code the
//! statement rules resolve calls against ([`crate::policy::called`]), read
//! over pgward's own metadata connection like the mask map, shared by the
//! sessions on that database and swapped whole.
//!
//! Freshness: DDL through any pgward session on the database bumps the
//! wanted version, and every session's next statement waits (bounded by
//! `policy.catalog_timeout`) for a catalog read after it. Every
//! `policy.catalog_refresh` the catalog is read again in the background
//! (DDL made outside pgward is known from then); a catalog that has not
//! been refreshed for twice that long is not used (statements wait for a
//! read, and are refused if it fails).

mod load;

use crate::auth::backend::Upstream;
use crate::policy::called::CodeCatalog;
pub use crate::upstream::query::CatalogError;
use crate::wire::encode;
use arc_swap::ArcSwapOption;
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where [`clock`] counts from.
fn clock_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the first call (a monotonic clock an atomic can hold).
fn clock() -> u64 {
    u64::try_from(clock_start().elapsed().as_millis()).unwrap_or(u64::MAX)
}

pub use crate::policy::called::Freshness;

/// One database's catalog and its freshness.
pub struct CodeStore {
    upstream: Upstream,
    dbname: String,
    current: ArcSwapOption<CodeCatalog>,
    /// When the catalog in force was read, in [`clock`] milliseconds
    /// (0: never). An atomic, not a lock: every statement reads it.
    loaded_at: AtomicU64,
    /// Bumped by each DDL statement that went through pgward.
    wanted: AtomicU64,
    /// The `wanted` the catalog in force was read after.
    have: AtomicU64,
    refreshing: tokio::sync::Mutex<()>,
    /// A background read is under way: statements that find the catalog
    /// ageing meanwhile start no other (no task per statement).
    background: AtomicBool,
    /// Catalogs stored so far: a [`SeenCatalog`] reloads only when it moved.
    stored: AtomicU64,
}

/// The catalog one session last took from a [`CodeStore`], reused while no
/// other was stored (a load from the swap cell cost about 200 instructions
/// per statement; this is one atomic read).
#[derive(Default)]
pub struct SeenCatalog {
    stored: u64,
    catalog: Option<Arc<CodeCatalog>>,
}

/// Whether a catalog may be used as it is, must be read again in the
/// background, or must be read before a statement is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Fresh.
    Fresh,
    /// Older than `refresh`: usable while a read runs in the background.
    Aging,
    /// None read yet, DDL went through since, or older than twice
    /// `refresh`: statements wait for a read.
    Stale,
}

impl CodeStore {
    fn new(upstream: Upstream, dbname: String) -> Self {
        Self {
            upstream,
            dbname,
            current: ArcSwapOption::empty(),
            loaded_at: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            have: AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
            background: AtomicBool::new(false),
            stored: AtomicU64::new(0),
        }
    }

    /// [`Self::current`], through the session's `seen`.
    pub fn current_seen(&self, seen: &mut SeenCatalog) -> Option<Arc<CodeCatalog>> {
        self.see(seen).clone()
    }

    /// The generation of [`Self::current_seen`]'s catalog (0: none), taking
    /// no count of it.
    pub fn seen_generation(&self, seen: &mut SeenCatalog) -> u64 {
        self.see(seen).as_ref().map_or(0, |c| c.generation())
    }

    fn see<'a>(&self, seen: &'a mut SeenCatalog) -> &'a Option<Arc<CodeCatalog>> {
        // Read before the catalog: a store in between is caught next time.
        // Nothing stored yet (0) is no catalog, which `seen` starts with.
        let stored = self.stored.load(Ordering::Acquire);
        if stored != seen.stored {
            seen.catalog = self.current();
            seen.stored = stored;
        }
        &seen.catalog
    }

    /// The catalog in force, if one was ever read.
    pub fn current(&self) -> Option<Arc<CodeCatalog>> {
        self.current.load_full()
    }

    /// Where the catalog in force stands.
    /// Every statement asks, so only atomics are read: a catalog is in
    /// force once `loaded_at` is set (it is stored after the catalog, and
    /// the catalog is never taken away).
    pub fn state(&self, freshness: Freshness) -> State {
        if self.have.load(Ordering::Acquire) != self.wanted.load(Ordering::Acquire) {
            return State::Stale;
        }
        let at = self.loaded_at.load(Ordering::Acquire);
        let age = Duration::from_millis(clock().saturating_sub(at));
        match age {
            _ if at == 0 => State::Stale,
            age if age < freshness.refresh => State::Fresh,
            age if age < freshness.refresh.saturating_mul(2) => State::Aging,
            _ => State::Stale,
        }
    }

    /// When the catalog in force stops being [`State::Fresh`] for
    /// `freshness`, if it is fresh now: a session keeps the deadline and
    /// asks [`Self::still_fresh`], which reads the clock but does no
    /// arithmetic on it (the age in milliseconds cost about 100
    /// instructions a statement).
    pub fn fresh_until(&self, freshness: Freshness) -> Option<Instant> {
        // `loaded_at` is read after `state` saw it fresh: a refresh in
        // between only moves it later, and the deadline from a later one is
        // no later than the truth (see `still_fresh`).
        if self.state(freshness) != State::Fresh {
            return None;
        }
        let at = Duration::from_millis(self.loaded_at.load(Ordering::Acquire));
        clock_start()
            .checked_add(at)?
            .checked_add(freshness.refresh)
    }

    /// Whether the catalog is fresh, by a deadline from
    /// [`Self::fresh_until`] for the same freshness. Never fresh where
    /// [`Self::state`] is not:
    /// - DDL since (`have` behind `wanted`) is stale here too;
    /// - the deadline is `start + at + refresh` for an `at` that
    ///   `loaded_at` held then; `loaded_at` only grows (each read stores the
    ///   monotonic clock, one read at a time) and was not 0 (fresh then).
    ///   `now < start + at + refresh` makes the exact age under `at +
    ///   refresh`, and [`clock`] (whole milliseconds, rounded down) is no
    ///   more than the exact age: `clock() - loaded_at < refresh`, which
    ///   `state` calls fresh.
    pub fn still_fresh(&self, until: Instant) -> bool {
        self.have.load(Ordering::Acquire) == self.wanted.load(Ordering::Acquire)
            && Instant::now() < until
    }

    /// DDL went through: the next statements wait for a catalog read
    /// after it.
    pub fn invalidate(&self) {
        self.wanted.fetch_add(1, Ordering::AcqRel);
    }

    /// Starts a read unless one is running.
    pub fn refresh_in_background(self: &Arc<Self>, freshness: Freshness) {
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = this.refresh(freshness).await;
            this.background.store(false, Ordering::Release);
            if let Err(e) = result {
                tracing::warn!(
                    upstream = %this.upstream.config.name,
                    database = %this.dbname,
                    "code catalog refresh failed: {e}"
                );
            }
        });
    }

    /// A catalog read after the last DDL, reading it first if needed,
    /// within `freshness.timeout` (waiting for a read under way counts
    /// against the same deadline).
    pub async fn ensure(&self, freshness: Freshness) -> Result<Arc<CodeCatalog>, CatalogError> {
        let limit = freshness.timeout;
        tokio::time::timeout(limit, async {
            loop {
                if self.state(freshness) != State::Stale {
                    if let Some(c) = self.current() {
                        return Ok(c);
                    }
                }
                self.refresh(freshness).await?;
            }
        })
        .await
        .map_err(|_| CatalogError::Timeout(limit))?
    }

    /// Reads the catalog and swaps it in (one read at a time; a caller that
    /// finds one under way waits for it).
    pub async fn refresh(&self, freshness: Freshness) -> Result<(), CatalogError> {
        let limit = freshness.timeout;
        let _guard = tokio::time::timeout(limit, self.refreshing.lock())
            .await
            .map_err(|_| CatalogError::Timeout(limit))?;
        let target = self.wanted.load(Ordering::Acquire);
        if self.state(freshness) == State::Fresh {
            // Someone read it while we waited.
            return Ok(());
        }
        let parts = tokio::time::timeout(limit, self.read())
            .await
            .map_err(|_| CatalogError::Timeout(limit))??;
        // The same code as before keeps its generation, and with it the
        // verdicts cached under it.
        let same = self.current().filter(|c| c.parts() == &parts);
        if same.is_none() {
            self.current.store(Some(Arc::new(CodeCatalog::new(parts))));
            self.stored.fetch_add(1, Ordering::AcqRel);
        }
        self.loaded_at.store(clock().max(1), Ordering::Release);
        self.have.store(target, Ordering::Release);
        Ok(())
    }

    async fn read(&self) -> Result<crate::policy::called::CatalogParts, CatalogError> {
        let params = [("application_name".to_owned(), "pgward-catalog".to_owned())];
        let mut login = self
            .upstream
            .login(self.upstream.catalog_role(), &self.dbname, &params)
            .await
            .map_err(|e| CatalogError::Io(e.to_string()))?;
        let result = load::load(&mut login.conn).await;
        let mut bye = BytesMut::new();
        encode::terminate(&mut bye);
        let _ = login.conn.send(&bye).await;
        result
    }
}

/// Every database's code catalog, created on first use.
#[derive(Default)]
pub struct CodeCatalogs {
    stores: Mutex<HashMap<(String, String), Arc<CodeStore>>>,
}

impl CodeCatalogs {
    /// The store of database `dbname` on `upstream`.
    pub fn store(&self, upstream: &Upstream, dbname: &str) -> Arc<CodeStore> {
        let key = (upstream.config.name.clone(), dbname.to_owned());
        let mut stores = match self.stores.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(
            stores
                .entry(key)
                .or_insert_with(|| Arc::new(CodeStore::new(upstream.clone(), dbname.to_owned()))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> CodeStore {
        CodeStore::new(crate::auth::backend::test_upstream(), "db".into())
    }

    /// The catalog as read `age` ago (the clock having run at least that
    /// long).
    fn read_ago(store: &CodeStore, age: Duration) {
        std::thread::sleep(age.saturating_sub(Duration::from_millis(clock())));
        let at = clock().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(0));
        store.loaded_at.store(at.max(1), Ordering::Release);
    }

    #[test]
    fn a_kept_deadline_is_never_fresher_than_the_state() {
        let store = store();
        let freshness = Freshness {
            refresh: Duration::from_millis(300),
            timeout: Duration::from_secs(1),
        };
        // Never read: no deadline.
        assert_eq!(store.state(freshness), State::Stale);
        assert!(store.fresh_until(freshness).is_none());
        read_ago(&store, Duration::ZERO);
        assert_eq!(store.state(freshness), State::Fresh);
        let until = store.fresh_until(freshness).expect("fresh");
        assert!(store.still_fresh(until));
        // DDL since: stale at once, by the deadline too.
        store.invalidate();
        assert!(!store.still_fresh(until));
        assert_eq!(store.state(freshness), State::Stale);
        assert!(store.fresh_until(freshness).is_none());
        store
            .have
            .store(store.wanted.load(Ordering::Acquire), Ordering::Release);
        assert!(store.still_fresh(until));
        // Past the refresh interval: the state ages, the deadline has passed.
        std::thread::sleep(freshness.refresh + Duration::from_millis(20));
        assert!(!store.still_fresh(until));
        assert_eq!(store.state(freshness), State::Aging);
        assert!(store.fresh_until(freshness).is_none());
        // Whenever the deadline says fresh, so does the state.
        read_ago(&store, Duration::from_millis(250));
        let until = store.fresh_until(freshness).expect("fresh");
        for _ in 0..100 {
            // The state first: fresh by the deadline later is fresh by the
            // state later, and so earlier.
            let state = store.state(freshness);
            if store.still_fresh(until) {
                assert_eq!(state, State::Fresh);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!store.still_fresh(until));
    }
}

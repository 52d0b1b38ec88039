//! Revoked token ids: `pgward token revoke` appends to the store file, or
//! (`revocation_store = "approvals"`) the admin API records them in the
//! approvals store (the embedded file, or PostgreSQL shared by several
//! instances); every instance follows the list, refuses the ids at login
//! from then on, and ends the live sessions that use them.

use crate::store::{AppendLog, Follower, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// One revocation, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revocation {
    /// Always `"revoke"` (the file may hold other kinds later).
    pub kind: String,
    /// The token id.
    pub jti: String,
    /// When it was revoked (seconds since the epoch).
    pub at: i64,
    /// Why, for the audit trail.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Writes a revocation to the store (the `pgward token revoke` command).
pub fn revoke(path: &Path, jti: &str, reason: Option<&str>) -> Result<(), StoreError> {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    AppendLog::new(path).append(&Revocation {
        kind: "revoke".into(),
        jti: jti.to_owned(),
        at,
        reason: reason.map(str::to_owned),
    })
}

/// Where the list is read from.
enum Source {
    /// Nowhere: nothing is ever revoked.
    None,
    /// The revocation file.
    File(Arc<Mutex<Follower>>),
    /// The approvals store, set once it is open (until then a refresh
    /// fails, and token logins with it: fail closed).
    Store(std::sync::OnceLock<Arc<dyn crate::approvals::store::ApprovalStore>>),
}

/// The revoked ids known to this instance.
pub struct RevocationList {
    source: Source,
    revoked: RwLock<HashSet<String>>,
}

impl RevocationList {
    /// Follows the store at `path`, or none (nothing is ever revoked).
    pub fn new(path: Option<&Path>) -> Self {
        Self {
            source: match path {
                Some(p) => Source::File(Arc::new(Mutex::new(AppendLog::new(p).follower()))),
                None => Source::None,
            },
            revoked: RwLock::new(HashSet::new()),
        }
    }

    /// A list kept in the approvals store, connected by [`Self::use_store`].
    pub fn in_approvals_store() -> Self {
        Self {
            source: Source::Store(std::sync::OnceLock::new()),
            revoked: RwLock::new(HashSet::new()),
        }
    }

    /// Connects a list kept in the approvals store to it (once).
    pub fn use_store(&self, store: Arc<dyn crate::approvals::store::ApprovalStore>) {
        if let Source::Store(cell) = &self.source {
            let _ = cell.set(store);
        }
    }

    /// Where revocations are written: the approvals store, when the list
    /// lives there.
    pub fn store(&self) -> Option<&Arc<dyn crate::approvals::store::ApprovalStore>> {
        match &self.source {
            Source::Store(cell) => cell.get(),
            _ => None,
        }
    }

    /// Whether anything can ever be revoked.
    pub fn enabled(&self) -> bool {
        !matches!(self.source, Source::None)
    }

    /// Whether this id is revoked (as of the last refresh).
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(jti)
    }

    /// Reads what was appended since the last refresh (off the runtime's
    /// threads) and returns the newly revoked ids. An unreadable store is
    /// an error: callers fail closed.
    pub async fn refresh(&self) -> Result<Vec<String>, StoreError> {
        let follower = match &self.source {
            Source::None => return Ok(Vec::new()),
            Source::File(follower) => follower,
            Source::Store(cell) => {
                let store = cell
                    .get()
                    .ok_or_else(|| StoreError::Approvals("not connected".into()))?;
                let all = store
                    .token_revocations()
                    .await
                    .map_err(|e| StoreError::Approvals(e.to_string()))?;
                let mut set = self.revoked.write().unwrap_or_else(|p| p.into_inner());
                return Ok(all
                    .into_iter()
                    .filter(|r| set.insert(r.jti.clone()))
                    .map(|r| r.jti)
                    .collect());
            }
        };
        let follower = Arc::clone(follower);
        let poll = tokio::task::spawn_blocking(move || {
            follower
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .poll::<Revocation>()
        })
        .await
        .map_err(|e| StoreError::Record {
            path: Default::default(),
            message: e.to_string(),
        })??;
        let mut set = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        // A replaced file is the whole list again; ids revoked before are
        // kept regardless (revocation is never undone by losing a file).
        let mut new = Vec::new();
        for r in poll.records.into_iter().filter(|r| r.kind == "revoke") {
            if set.insert(r.jti.clone()) {
                new.push(r.jti);
            }
        }
        Ok(new)
    }
}

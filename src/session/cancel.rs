//! Cancel keys: pgward gives each client its own BackendKeyData and maps it to
//! the server's real key, which never leaves pgward.

use crate::auth::backend::Upstream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where a client's cancel key leads.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// The upstream the session is connected to.
    pub upstream: Upstream,
    /// The server's process id.
    pub process_id: i32,
    /// The server's secret key.
    pub secret_key: i32,
}

/// Live sessions' cancel keys, shared by all sessions.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<i32, (i32, CancelTarget)>>,
}

/// Removes a session's key when the session ends.
#[derive(Debug)]
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    /// The process id the client sees.
    pub process_id: i32,
    /// The secret the client sees.
    pub secret_key: i32,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.map.lock() {
            map.remove(&self.process_id);
        }
    }
}

impl CancelRegistry {
    /// Issues a fresh random key for `target`.
    pub fn register(self: &Arc<Self>, target: CancelTarget) -> CancelKey {
        let secret_key: i32 = rand::random();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let process_id = loop {
            // Positive, like real process ids, and unique among live sessions.
            let candidate = rand::random::<i32>() & i32::MAX;
            if candidate != 0 && !map.contains_key(&candidate) {
                break candidate;
            }
        };
        map.insert(process_id, (secret_key, target));
        CancelKey {
            registry: Arc::clone(self),
            process_id,
            secret_key,
        }
    }

    /// The target of a cancel request, if the key matches a live session.
    pub fn lookup(&self, process_id: i32, secret_key: i32) -> Option<CancelTarget> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (secret, target) = map.get(&process_id)?;
        // Constant-time compare: the secret is the only thing guarding cancel.
        let diff = (secret ^ secret_key).count_ones();
        (diff == 0).then(|| target.clone())
    }
}
